//! `twoway-server check`: every problem in config, policy and certificate
//! files at once, each naming its file and key.

use std::path::Path;

use twoway_common::config_file::ConfigErrors;
use twoway_common::tls;

use crate::config::ServerConfig;
use crate::policy::Policy;

/// Every problem found, one message each; empty when all is well.
pub fn check(config_path: &Path) -> Vec<String> {
    let config = match ServerConfig::load(config_path) {
        Ok(c) => c,
        Err(ConfigErrors(errors)) => return errors.iter().map(ToString::to_string).collect(),
    };
    let mut problems = Vec::new();
    if let Err(ConfigErrors(errors)) = Policy::load(&config.policy, &config.tunnel) {
        problems.extend(errors.iter().map(ToString::to_string));
    }
    if let Err(e) = tls::server_config(&config.tls_files()) {
        problems.push(format!("{e} (keys `tls.*` in {})", config_path.display()));
    }
    problems
}

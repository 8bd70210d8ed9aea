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
    for (key, path) in [("tls.cert", &config.tls.cert), ("tls.ca", &config.tls.ca)] {
        if let Some(p) = validity_problem(path) {
            problems.push(format!("{}: key `{key}`: {p}", path.display()));
        }
    }
    problems
}

/// Whether the first certificate in `path` is outside its validity period now.
fn validity_problem(path: &Path) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let certs = tls::load_certs(path).ok()?;
    let (_, cert) = X509Certificate::from_der(certs.first()?).ok()?;
    let v = cert.validity();
    if v.is_valid() {
        None
    } else {
        Some(format!(
            "certificate is not valid now (valid from {} to {})",
            v.not_before, v.not_after
        ))
    }
}

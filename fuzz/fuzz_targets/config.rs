//! Configuration files: arbitrary UTF-8 parsed as server.toml, policy.toml and
//! a client config, each followed by the validation the loaders run.
//! Errors are expected; panics are not.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use twoway_client::config::ClientConfig;
use twoway_common::config_file;
use twoway_server::config::{ServerConfig, TunnelSection};
use twoway_server::policy::Policy;

fuzz_target!(|text: &str| {
    let dir = Path::new("/etc/twoway");
    let mut tunnel = TunnelSection::default();
    let server_path = dir.join("server.toml");
    if let Ok(mut c) = config_file::parse::<ServerConfig>(&server_path, text) {
        c.path = server_path;
        if c.validate().is_empty() {
            let _ = c.tunnel.server_address();
            let _ = c.tunnel.server_address6();
            let _ = c.keepalive.keepalive();
            tunnel = c.tunnel;
        }
    }
    let policy_path = dir.join("policy.toml");
    if let Ok(p) = config_file::parse::<Policy>(&policy_path, text) {
        if p.validate(&policy_path, &tunnel).is_empty() {
            let _ = p.static_addresses().count();
            for c in &p.clients {
                let _ = p.grant(&c.identity);
            }
            let _ = p.grant("not-listed");
        }
    }
    let client_path = dir.join("client.toml");
    if let Ok(mut c) = config_file::parse::<ClientConfig>(&client_path, text) {
        c.path = client_path;
        if c.validate().is_empty() {
            let _ = c.device_name();
        }
    }
});

//! `twoway-server check`: every problem in config, policy and certificate
//! files at once, each naming its file and key.

use std::path::Path;

use twoway_common::config_file::ConfigErrors;
use twoway_common::tls;

use crate::config::ServerConfig;
use crate::policy::Policy;

/// Every problem found, one message each; empty when all is well. Only a
/// server.toml that cannot be parsed stops the check early: problems in its
/// values do not keep the policy and certificate files from being checked.
pub fn check(config_path: &Path) -> Vec<String> {
    let (config, invalid) = match ServerConfig::load_unchecked(config_path) {
        Ok(c) => c,
        Err(ConfigErrors(errors)) => return errors.iter().map(ToString::to_string).collect(),
    };
    let mut problems: Vec<String> = invalid.iter().map(ToString::to_string).collect();
    let at = |key: &str| format!("key `{key}` in {}", config_path.display());
    if let Err(errors) = Policy::load(&config.policy, &config.tunnel) {
        // A policy file that cannot be read is named by server.toml's `policy`.
        problems.extend(crate::loaded::policy_problems(&errors, config_path));
    }
    let t = &config.tls;
    let each = [
        ("tls.ca", tls::load_certs(&t.ca).err()),
        ("tls.cert", tls::load_certs(&t.cert).err()),
        ("tls.key", tls::load_key(&t.key).err()),
        ("tls.crl", tls::load_crls(&t.crl).err()),
    ];
    let unreadable = each.iter().any(|(_, e)| e.is_some());
    for (key, e) in each {
        if let Some(e) = e {
            problems.push(format!("{e} ({})", at(key)));
        }
    }
    // Files that each load can still not fit together (a key that is not the
    // certificate's, a CRL of another CA).
    if !unreadable {
        if let Err(e) = tls::server_config(&config.tls_files()) {
            problems.push(format!("{e} (keys `tls.*` in {})", config_path.display()));
        }
        // The serials a reload cuts live sessions by; `run` refuses to start without them.
        if let Err(e) = crate::revocation::revoked_serials(&t.crl) {
            problems.push(format!("{e} ({})", at("tls.crl")));
        }
    }
    for (key, path) in [("tls.cert", &config.tls.cert), ("tls.ca", &config.tls.ca)] {
        if let Some(p) = validity_problem(path) {
            problems.push(format!("{}: {p} ({})", path.display(), at(key)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, InitOptions};

    fn init(dir: &Path) -> std::path::PathBuf {
        pki::init(&InitOptions {
            dir: dir.to_owned(),
            name: "vpn.test".into(),
            ips: vec![],
            port: 4433,
            days: 30,
        })
        .expect("pki init");
        dir.join("server.toml")
    }

    fn replace(path: &Path, from: &str, to: &str) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from:?} not in {}", path.display());
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    #[test]
    fn files_from_pki_init_pass() {
        let dir = tempfile::tempdir().unwrap();
        let config = init(&dir.path().join("pki"));
        assert_eq!(check(&config), Vec::<String>::new());
    }

    #[test]
    fn problems_in_every_file_are_reported_at_once_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let config = init(&dir.path().join("pki"));
        replace(&config, "10.77.0.128/25", "10.99.0.0/25");
        replace(&config, "\"server.key\"", "\"missing.key\"");
        std::fs::write(
            dir.path().join("pki/policy.toml"),
            "[[client]]\nidentity = \"a\"\naddress = \"192.0.2.1\"\n",
        )
        .unwrap();
        let problems = check(&config);
        let all = problems.join("\n");
        assert_eq!(problems.len(), 3, "{all}");
        assert!(all.contains("key `tunnel.pool`"), "{all}");
        assert!(
            all.contains("missing.key") && all.contains("key `tls.key` in "),
            "{all}"
        );
        assert!(all.contains("key `client[0].address`"), "{all}");
    }

    #[test]
    fn a_key_other_users_can_read_is_reported_with_its_chmod() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config = init(&dir.path().join("pki"));
        let key = dir.path().join("pki/server.key");
        let set =
            |mode| std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        set(0o644);
        let problems = check(&config);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let k = key.display();
        assert!(
            problems[0].starts_with(&format!(
                "private key {k} is readable by other users (mode 0644); run: chmod 640 {k}"
            )),
            "{problems:?}"
        );
        assert!(problems[0].contains("key `tls.key` in "), "{problems:?}");
        // Readable by the group (the unit's group `twoway`) is fine.
        set(0o640);
        assert_eq!(check(&config), Vec::<String>::new());
    }
}

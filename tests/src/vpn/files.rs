//! The files of a [`Vpn`] lab: the PKI made by the real `pki init` and
//! `pki issue`, server.toml and the client configs rewritten for the lab, the
//! policy, and helpers to read paths and keys out of config files.

use std::path::{Path, PathBuf};

use crate::toml_files::{self, edit_toml};
use crate::CmdOutput;

use super::{
    Vpn, ALICE_ADDR, CORP_NET, FAST_CONNECT_TIMEOUT, SERVER_ADDR, SERVER_NAME, TUNNEL_NET,
    TUNNEL_POOL,
};

impl Vpn {
    /// `twoway-server pki ARGS` on the host.
    pub fn pki(&self, args: &[&str]) -> CmdOutput {
        let mut full = vec!["pki"];
        full.extend_from_slice(args);
        self.server_cmd(&full)
    }

    /// `twoway-server pki VERB --dir D ARGS` on the fixture's PKI folder D.
    pub fn pki_on_lab(&self, verb: &str, args: &[&str]) -> CmdOutput {
        self.pki(&[&[verb, "--dir", path_str(&self.pki)], args].concat())
    }

    /// `pki revoke NAME`, which must succeed (the server learns of it at its
    /// next reload).
    pub fn pki_revoke(&self, name: &str) {
        let out = self.pki_on_lab("revoke", &[name]);
        self.check(out.success(), &format!("`pki revoke {name}`"), &out);
    }

    pub fn pki_init(&self, dir: &Path, step: &str) {
        let out = self.server_cmd(&[
            "pki",
            "init",
            "--dir",
            path_str(dir),
            "--name",
            SERVER_NAME,
            "--ip",
            "198.18.1.2",
        ]);
        self.check(out.success(), step, &out);
        for f in [
            "ca.pem",
            "ca.key",
            "server.pem",
            "server.key",
            "crl.pem",
            "server.toml",
        ] {
            self.check(
                dir.join(f).is_file(),
                step,
                format_args!("`pki init` did not write {f} in {}\n{out}", dir.display()),
            );
        }
    }

    pub fn pki_issue(&self, dir: &Path, name: &str) {
        let step = format!("pki issue {name}");
        let out = self.server_cmd(&["pki", "issue", "--dir", path_str(dir), name]);
        self.check(out.success(), &step, &out);
        let config = dir.join(format!("{name}.toml"));
        self.check(
            config.is_file(),
            &step,
            format_args!("`pki issue` did not write {}\n{out}", config.display()),
        );
    }

    /// Point the example server.toml at this test's paths and tunnel network,
    /// and write the policy.
    pub(super) fn configure_server(&self) {
        let step = "edit server.toml written by pki init";
        let path = self.server_config();
        let original = std::fs::read_to_string(&path).unwrap_or_default();
        edit_toml(&path, |t| {
            for key in [
                "listen",
                "control.socket",
                "state.dir",
                "tunnel.network",
                "tunnel.pool",
            ] {
                if toml_files::get(t, key).is_none() {
                    self.fail(
                        step,
                        format_args!("server.toml has no `{key}` (DESIGN.md names it)\n{original}"),
                    );
                }
            }
            toml_files::set(t, "listen", "0.0.0.0:4433");
            toml_files::set(t, "control.socket", path_str(&self.tmp("run/server.sock")));
            toml_files::set(t, "state.dir", path_str(&self.tmp("state")));
            toml_files::set(t, "tunnel.network", TUNNEL_NET);
            toml_files::set(t, "tunnel.pool", TUNNEL_POOL);
            // Keep every address of the test inside 198.18.0.0/15: no IPv6 in the tunnel.
            if let Some(tunnel) = t.get_mut("tunnel").and_then(|v| v.as_table_mut()) {
                tunnel.remove("network6");
            }
        });
        std::fs::write(self.policy_path(), base_policy("")).expect("write policy.toml");
    }

    /// Rewrite server.toml (takes effect at the next start).
    pub fn edit_server_config(&self, edit: impl FnOnce(&mut toml::Table)) {
        edit_toml(&self.server_config(), edit);
    }

    /// The policy file named by server.toml.
    pub fn policy_path(&self) -> PathBuf {
        match toml_str(&self.server_config(), "policy") {
            Some(p) => self.pki.join(p),
            None => self.pki.join("policy.toml"),
        }
    }

    /// Replace the policy file (takes effect at the next reload).
    pub fn write_policy(&self, text: &str) {
        std::fs::write(self.policy_path(), text).expect("write policy.toml");
    }

    /// Make an issued client config usable in the lab: its own control socket,
    /// the server address as seen from its namespace, optionally another CA.
    pub fn configure_client(&self, config: &Path, name: &str, server: &str, ca: Option<&Path>) {
        let step = format!("edit {name}.toml written by pki issue");
        let original = std::fs::read_to_string(config).unwrap_or_default();
        edit_toml(config, |t| {
            for key in [
                "server",
                "server_name",
                "tls.ca",
                "tls.cert",
                "tls.key",
                "control.socket",
            ] {
                if toml_files::get(t, key).is_none() {
                    self.fail(
                        &step,
                        format_args!("{name}.toml has no `{key}` (DESIGN.md names it)\n{original}"),
                    );
                }
            }
            let server_name = toml_files::get(t, "server_name").and_then(|v| v.as_str());
            if server_name != Some(SERVER_NAME) {
                self.fail(
                    &step,
                    format_args!("server_name is {server_name:?}, expected {SERVER_NAME:?} (the --name of pki init)\n{original}"),
                );
            }
            toml_files::set(t, "server", server);
            toml_files::set(
                t,
                "control.socket",
                path_str(&self.tmp(&format!("run/{name}.sock"))),
            );
            if let Some(ca) = ca {
                toml_files::set(t, "tls.ca", path_str(ca));
            }
        });
    }

    /// A client of a foreign CA: `pki init` with the same server name in
    /// another folder, `pki issue NAME` there. Its config trusts the REAL CA,
    /// so the server certificate verifies and only the client's is at issue.
    pub fn foreign_client(&self, name: &str) -> PathBuf {
        let foreign = self.tmp("foreign");
        self.pki_init(
            &foreign,
            "pki init (a foreign CA with the same server name)",
        );
        self.pki_issue(&foreign, name);
        let config = foreign.join(format!("{name}.toml"));
        let real_ca = self.pki.join("ca.pem");
        self.configure_client(&config, name, SERVER_ADDR, Some(&real_ca));
        config
    }

    /// A new client NAME issued by the real CA, configured for `server`.
    pub fn issue_client(&self, name: &str, server: &str) -> std::path::PathBuf {
        self.pki_issue(&self.pki, name);
        let config = self.client_config(name);
        self.configure_client(&config, name, server, None);
        self.fast_client(name);
        config
    }

    /// Set [`FAST_CONNECT_TIMEOUT`] in NAME.toml.
    pub fn fast_client(&self, name: &str) {
        edit_toml(&self.client_config(name), |t| {
            toml_files::set(t, "connect_timeout_secs", i64::from(FAST_CONNECT_TIMEOUT));
        });
    }

    /// Set keys of a client's config (`("tunnel.allow_lan", true.into())`).
    pub fn set_client_keys(&self, name: &str, keys: &[(&str, toml::Value)]) {
        edit_toml(&self.client_config(name), |t| {
            for (k, v) in keys {
                toml_files::set(t, k, v.clone());
            }
        });
    }

    /// The state file of a client (next to its control socket).
    pub fn client_state_file(&self, name: &str) -> PathBuf {
        self.tmp(&format!("run/{name}.state"))
    }
}

/// The policy of the tests: no client-to-client traffic, the corporate
/// network routed, alice at a static address; `extra` is appended.
pub fn base_policy(extra: &str) -> String {
    format!(
        "client_to_client = false\n\n[defaults]\nroutes = [\"{CORP_NET}\"]\n\n\
         [[client]]\nidentity = \"alice\"\naddress = \"{ALICE_ADDR}\"\n{extra}"
    )
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A path from a config file, resolved against the file's folder.
pub fn toml_path(config: &Path, key: &str) -> PathBuf {
    let value =
        toml_str(config, key).unwrap_or_else(|| panic!("{} has no `{key}`", config.display()));
    config.parent().expect("config folder").join(value)
}

pub fn toml_str(path: &Path, key: &str) -> Option<String> {
    let table: toml::Table = std::fs::read_to_string(path).ok()?.parse().ok()?;
    toml_files::get(&table, key)?.as_str().map(String::from)
}

pub fn list_dir(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Read a file, empty if missing.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Copy `from` into `dir` under the same file name; the new path.
pub fn copy_into(from: &Path, dir: &Path) -> std::path::PathBuf {
    let to = dir.join(from.file_name().expect("file name"));
    std::fs::copy(from, &to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    to
}

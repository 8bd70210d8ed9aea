//! Locating (and building, once per test process) the real binaries.
//!
//! The test crate cannot depend on another package's binaries, so the first
//! test that needs them runs `cargo build --bins -p twoway-server -p
//! twoway-client` with the same cargo, profile and target directory as the
//! test itself, and takes the executable paths from cargo's JSON messages.
//! That keeps plain `cargo test --workspace` self-sufficient.
//!
//! Set `TWOWAY_BIN_DIR` to a folder holding `twoway-server` and `twoway` to
//! skip the build and test those binaries instead.
//!
//! Also: running either binary on the host, and a PKI made by it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{proc, CmdOutput};

/// How long [`server`] and [`client`] may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Paths to the two binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `twoway-server`
    pub server: PathBuf,
    /// `twoway` (the client)
    pub client: PathBuf,
}

impl Bins {
    pub fn server_str(&self) -> &str {
        self.server.to_str().expect("utf-8 path")
    }

    pub fn client_str(&self) -> &str {
        self.client.to_str().expect("utf-8 path")
    }
}

/// The workspace root (the folder holding the virtual Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `twoway-server ARGS` on the host (no namespace), as root or whoever runs
/// the test.
pub fn server(args: &[&str]) -> CmdOutput {
    run(bins().server_str(), args)
}

/// `twoway ARGS` on the host.
pub fn client(args: &[&str]) -> CmdOutput {
    run(bins().client_str(), args)
}

fn run(bin: &str, args: &[&str]) -> CmdOutput {
    let mut full = vec![bin];
    full.extend_from_slice(args);
    proc::run(&full, TIMEOUT)
}

/// A PKI made by the real binary: `pki init --name vpn.test` in `dir/pki`,
/// then `pki issue` for each of `clients`. Returns the PKI folder; panics
/// with the command's output if one fails.
pub fn pki_in(dir: &Path, clients: &[&str]) -> PathBuf {
    let pki = dir.join("pki");
    let pki_str = pki.to_str().expect("utf-8 path");
    let out = server(&["pki", "init", "--dir", pki_str, "--name", "vpn.test"]);
    assert!(out.success(), "pki init:\n{out}");
    for name in clients {
        let out = server(&["pki", "issue", "--dir", pki_str, name]);
        assert!(out.success(), "pki issue {name}:\n{out}");
    }
    pki
}

/// Build the binaries once per process and return their paths.
/// Panics with cargo's diagnostics if the build fails.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(locate) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn locate() -> Result<Bins, String> {
    if let Some(dir) = std::env::var_os("TWOWAY_BIN_DIR") {
        let dir = PathBuf::from(dir);
        let bins = Bins {
            server: dir.join("twoway-server"),
            client: dir.join("twoway"),
        };
        for p in [&bins.server, &bins.client] {
            if !p.is_file() {
                return Err(format!(
                    "TWOWAY_BIN_DIR is set but {} is missing",
                    p.display()
                ));
            }
        }
        return Ok(bins);
    }
    build()
}

fn build() -> Result<Bins, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--bins",
        "-p",
        "twoway-server",
        "-p",
        "twoway-client",
        "--message-format=json-render-diagnostics",
    ]);
    if !cfg!(debug_assertions) {
        // The test was built with --release: test the release binaries.
        cmd.arg("--release");
    }
    // CARGO_TARGET_DIR, if set, is inherited and honoured by cargo itself.
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{cargo} build`: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "building the twoway binaries failed ({}):\n{stderr}",
            out.status
        ));
    }
    let mut server = None;
    let mut client = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(exe) = msg["executable"].as_str() else {
            continue;
        };
        match msg["target"]["name"].as_str() {
            Some("twoway-server") => server = Some(PathBuf::from(exe)),
            Some("twoway") => client = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    match (server, client) {
        (Some(server), Some(client)) => Ok(Bins { server, client }),
        (s, c) => Err(format!(
            "cargo built, but did not report both executables \
             (twoway-server: {s:?}, twoway: {c:?}); check the [[bin]] names.\n{stderr}"
        )),
    }
}

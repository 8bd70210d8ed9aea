//! The client's command-line contract (DESIGN.md, "Contract added in the
//! second round"), driven through the real `twoway` binary as a script
//! would: `status`/`down` of a tunnel that is not running, `up NAME`,
//! `list [--json]`, the error of a failed `up --detach`, and control-socket
//! errors that say the OS error once with a hint that fits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use twoway_tests::proc::AS_NOBODY;
use twoway_tests::vpn::copy_into;
use twoway_tests::vpn::{net, path_str, toml_path, Vpn, TUNNEL_POOL};
use twoway_tests::{bins, proc, toml_files, CmdOutput};

const T: Duration = Duration::from_secs(30);

fn twoway(args: &[&str]) -> CmdOutput {
    let mut full = vec![bins().client_str()];
    full.extend_from_slice(args);
    proc::run(&full, T)
}

/// A client config whose socket is in `dir` and nothing runs behind it.
fn idle_config(dir: &Path, name: &str) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    let socket = dir.join(format!("{name}.sock"));
    std::fs::write(
        &config,
        format!(
            "server = \"127.0.0.1:1\"\nserver_name = \"vpn.test\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n\
             [control]\nsocket = \"{}\"\n",
            socket.display()
        ),
    )
    .expect("write config");
    config
}

/// How often `needle` occurs in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Without a running tunnel: `status --json` is exactly `{"state":"down"}`
/// with exit 0, plain `status` says down, `down` exits 0 and says so (twice),
/// `list` prints `[]` / "no tunnels"; NAME and --config together, or `up`
/// with neither, are usage errors (exit 2); `twoway-server status` of a
/// server that is not running names the OS error at most once. Needs no root.
#[test]
fn nothing_running_is_down_with_exit_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = idle_config(dir.path(), "alice");
    let c = path_str(&config);

    for args in [
        &["status", "--json", "--config", c][..],
        &["status", "--json", c][..],
    ] {
        let out = twoway(args);
        assert!(
            out.code() == Some(0) && out.stdout.trim() == r#"{"state":"down"}"#,
            "`twoway {}` must print exactly {{\"state\":\"down\"}} and exit 0:\n{out}",
            args.join(" ")
        );
    }
    let out = twoway(&["status", c]);
    assert!(
        out.code() == Some(0) && out.stdout.contains("state: down"),
        "plain `status` of a stopped tunnel says down, exit 0:\n{out}"
    );
    for _ in 0..2 {
        let out = twoway(&["down", c]);
        assert!(
            out.code() == Some(0) && out.stdout.contains("not running"),
            "`down` when nothing runs exits 0 and says so:\n{out}"
        );
    }
    let d = path_str(dir.path());
    let out = twoway(&["list", "--json", "--config-dir", d, "--run-dir", d]);
    assert!(
        out.code() == Some(0) && out.stdout.trim() == "[]",
        "`list --json` with nothing running prints []:\n{out}"
    );
    let out = twoway(&["list", "--config-dir", d, "--run-dir", d]);
    assert!(
        out.code() == Some(0) && out.stdout.trim() == "no tunnels",
        "`list` with nothing running says so:\n{out}"
    );
    for args in [
        &["status", "alice", "--config", c][..],
        &["down", "alice", "--config", c][..],
        &["up", "alice", "--config", c][..],
        &["up"][..],
    ] {
        let out = twoway(args);
        assert_eq!(
            out.code(),
            Some(2),
            "`twoway {}` is a usage error:\n{out}",
            args.join(" ")
        );
    }

    // The server's control client shares the message of a failed connect.
    let pki = dir.path().join("pki");
    let server = bins().server_str();
    let out = proc::run(
        &[
            server,
            "pki",
            "init",
            "--dir",
            path_str(&pki),
            "--name",
            "vpn.test",
        ],
        T,
    );
    assert!(out.success(), "pki init:\n{out}");
    let server_toml = pki.join("server.toml");
    let socket = dir.path().join("server.sock");
    toml_files::edit_toml(&server_toml, |t| {
        toml_files::set(t, "control.socket", path_str(&socket))
    });
    let out = proc::run(&[server, "status", "--config", path_str(&server_toml)], T);
    assert!(
        !out.success()
            && out.stderr.contains("server.sock")
            && count(&out.stderr, "is it running?") == 1
            && count(&out.stderr, "os error") <= 1,
        "`twoway-server status` with no server: one message, the OS error at most once:\n{out}"
    );
}

/// Puts a copy of a lab client config at /etc/twoway/NAME.toml (absolute
/// paths, the lab's socket) for `up NAME`; removed on drop.
struct EtcConfig(PathBuf);

impl EtcConfig {
    fn new(vpn: &Vpn, from: &str, name: &str) -> EtcConfig {
        let original = vpn.client_config(from);
        std::fs::create_dir_all("/etc/twoway").expect("create /etc/twoway");
        let path = Path::new("/etc/twoway").join(format!("{name}.toml"));
        std::fs::copy(&original, &path).expect("copy config to /etc/twoway");
        let etc = EtcConfig(path);
        toml_files::edit_toml(&etc.0, |t| {
            for key in ["tls.ca", "tls.cert", "tls.key"] {
                toml_files::set(t, key, path_str(&toml_path(&original, key)));
            }
            toml_files::set(t, "tunnel.name", "tw-short");
        });
        etc
    }
}

impl Drop for EtcConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn find<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|t| t["name"] == name)
}

/// `up NAME --detach` (/etc/twoway/NAME.toml) and `status NAME`; `list`
/// finds both running tunnels through the configs and through the sockets,
/// with name, config, state, address and server, and skips the server's
/// socket; a user who may not open the socket gets exit 5 without "is it
/// running?"; `down NAME` twice exits 0, then status is down and `list` empty.
#[test]
fn up_by_name_status_and_list() {
    let Some(mut vpn) = Vpn::started("up_by_name_status_and_list") else {
        return;
    };
    let (cli1, cli2) = (vpn.lab.cli1.clone(), vpn.lab.cli2.clone());
    let name = format!("{}-a", vpn.lab.id);
    let etc = EtcConfig::new(&vpn, "alice", &name);
    let run = |ns: &str, args: &[&str]| vpn.client_cmd(ns, args, Duration::from_secs(60));

    let out = run(&cli1, &["up", &name, "--detach"]);
    vpn.check(
        out.code() == Some(0),
        "`twoway up NAME --detach` exits 0",
        &out,
    );
    let out = run(&cli1, &["status", "--json", &name]);
    let v = vpn.parse_json("`twoway status NAME --json`", &out);
    vpn.check(
        v["state"] == "up" && v["config"] == path_str(&etc.0),
        "`status NAME` shows the tunnel up, from /etc/twoway/NAME.toml",
        &out,
    );
    vpn.bring_up(&cli2, "bob", net(TUNNEL_POOL));

    let empty = tempfile::tempdir().expect("tempdir");
    let run_dir = vpn.tmp("run");
    for (config_dir, run_dir, how) in [
        (vpn.pki.as_path(), empty.path(), "through the configs"),
        (empty.path(), run_dir.as_path(), "through the sockets"),
    ] {
        let step = format!("`twoway list --json` finds both tunnels {how}");
        let out = run(
            &cli1,
            &[
                "list",
                "--json",
                "--config-dir",
                path_str(config_dir),
                "--run-dir",
                path_str(run_dir),
            ],
        );
        let list = vpn.parse_json(&step, &out);
        let (a, b) = (find(&list, &name), find(&list, "bob"));
        vpn.check(
            list.as_array().map(Vec::len) == Some(2) && a.is_some() && b.is_some(),
            &step,
            &out,
        );
        let (a, b) = (a.expect("alice"), b.expect("bob"));
        vpn.check(
            a["config"] == path_str(&etc.0)
                && b["config"] == path_str(&vpn.client_config("bob"))
                && [a, b].iter().all(|t| {
                    t["state"] == "up" && t["address"].is_string() && t["server"].is_string()
                }),
            &format!("{step}: config, state, address and server of each"),
            &out,
        );
    }
    let out = run(
        &cli1,
        &[
            "list",
            "--config-dir",
            path_str(&vpn.pki),
            "--run-dir",
            path_str(&run_dir),
        ],
    );
    vpn.check(
        out.success() && out.stdout.lines().count() == 2 && out.stdout.contains(&name),
        "`twoway list` prints one line per tunnel",
        &out,
    );

    // A user who may not open the socket: missing privilege, not "is it running?".
    let nobody_dir = twoway_tests::temp_dir("twoway-cli-nobody-");
    let client = copy_into(Path::new(vpn.bins_client()), nobody_dir.path());
    let copy = copy_into(&etc.0, nobody_dir.path());
    let out = proc::run(
        &["chown", "-R", "65534:65534", path_str(nobody_dir.path())],
        T,
    );
    vpn.check(out.success(), "give nobody a copy of the config", &out);
    let status = [path_str(&client), "status", "--json", path_str(&copy)];
    let out = vpn.lab.exec(&cli1, &[&AS_NOBODY[..], &status].concat());
    vpn.check(
        out.code() == Some(5)
            && out.stderr.contains("permission denied")
            && !out.stderr.contains("is it running")
            && count(&out.stderr, "os error") <= 1,
        "`status` as a user who may not open the socket: exit 5, one message, no \"is it running?\"",
        &out,
    );

    for attempt in ["", " (again)"] {
        let out = run(&cli1, &["down", &name]);
        vpn.check(
            out.code() == Some(0),
            &format!("`twoway down NAME`{attempt} exits 0"),
            &out,
        );
    }
    let out = run(&cli1, &["status", "--json", &name]);
    vpn.check(
        out.code() == Some(0) && out.stdout.trim() == r#"{"state":"down"}"#,
        "`status NAME --json` after down is exactly {\"state\":\"down\"}",
        &out,
    );
    vpn.take_down(&cli2, "bob");
    let out = run(
        &cli1,
        &[
            "list",
            "--json",
            "--config-dir",
            path_str(&vpn.pki),
            "--run-dir",
            path_str(&run_dir),
        ],
    );
    vpn.check(
        out.code() == Some(0) && out.stdout.trim() == "[]",
        "`list --json` with both down (and the server's socket in the run dir) is []",
        &out,
    );
    vpn.stop_server();
}

/// Two failed `up --detach` in a row with the same log: the second prints
/// its own error (its server address), not the first one's.
#[test]
fn failed_detach_prints_this_attempts_error_only() {
    let Some(vpn) = Vpn::prepared("failed_detach_prints_this_attempts_error_only") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let config = vpn.client_config("alice");
    // Nothing listens on either port: each attempt fails at once, exit 4.
    let mut outputs = Vec::new();
    for port in ["4441", "4442"] {
        toml_files::edit_toml(&config, |t| {
            toml_files::set(t, "server", format!("198.18.1.2:{port}").as_str())
        });
        // Without log lines, an attempt writes only its error line: a tail
        // of the shared log would show the earlier attempt's error too.
        let out = vpn.lab.exec_env(
            &cli1,
            &[
                bins().client_str(),
                "up",
                "--config",
                path_str(&config),
                "--detach",
            ],
            &[("RUST_LOG", "off")],
            T,
        );
        vpn.check(
            out.code() == Some(4) && out.stderr.contains(&format!("198.18.1.2:{port}")),
            &format!("`up --detach` to port {port} (nothing listens) exits 4 naming it"),
            &out,
        );
        outputs.push(out);
    }
    vpn.check(
        !outputs[1].stderr.contains("198.18.1.2:4441"),
        "the second failure does not show the first one's error",
        &outputs[1],
    );
    let log = vpn.tmp("run/alice.log");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    vpn.check(
        text.contains("4441") && text.contains("4442"),
        "the log keeps both attempts",
        &text,
    );
}

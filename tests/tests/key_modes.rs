//! Private key files that other users can read are refused by the real
//! binaries (issue 10): `twoway-server check` lists the problem, `twoway-server
//! run` and `twoway up` stop with exit code 2, each naming the file and the
//! `chmod` that fixes it; a key readable by its group (the units' group
//! `twoway`) is accepted. `up` without CAP_NET_ADMIN still exits 5 before it
//! looks at a key.
//!
//! `check` needs no root. `run` and `up` as root run inside a network
//! namespace of their own (`unshare --net`), so that even a regression could
//! not create a device or reach a network outside the test.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use twoway_tests::bins::pki_in;
use twoway_tests::proc::{AS_NOBODY, OWN_NETNS};
use twoway_tests::vpn::copy_into;
use twoway_tests::vpn::path_str;
use twoway_tests::{bins, proc, require_root_or_skip, toml_files, CmdOutput};

/// A temporary folder, and in it (`pki/`) a PKI made by the real `pki init`
/// and `pki issue alice`.
fn pki() -> (tempfile::TempDir, PathBuf) {
    let dir = twoway_tests::temp_dir("twoway-keymode-");
    let pki = pki_in(dir.path(), &["alice"]);
    (dir, pki)
}

/// [`pki`] for a test that needs root: `None` when it is skipped.
fn pki_as_root(test: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    require_root_or_skip(test).then(pki)
}

/// server.toml of the PKI, listening on 127.0.0.1 with its socket and state
/// in `dir`.
fn server_config(dir: &Path, pki: &Path) -> PathBuf {
    let config = pki.join("server.toml");
    toml_files::edit_toml(&config, |t| {
        toml_files::set(t, "listen", "127.0.0.1:4433");
        toml_files::set(t, "control.socket", path_str(&dir.join("s.sock")));
        toml_files::set(t, "state.dir", path_str(&dir.join("state")));
    });
    config
}

/// `bin ARGS` as user nobody in a network namespace of its own.
fn as_nobody(bin: &Path, args: &[&str]) -> CmdOutput {
    let command = [&[path_str(bin)], args].concat();
    proc::run(&[&OWN_NETNS[..], &AS_NOBODY, &command].concat(), secs(30))
}

/// A copy of `bin` in `dir`, and `dir` itself, owned by nobody (who may not
/// be able to enter the build folder).
fn nobodys_copy(bin: &str, dir: &Path) -> PathBuf {
    let copy = copy_into(Path::new(bin), dir);
    chown_nobody(&[dir, &copy]);
    copy
}

fn chown_nobody(paths: &[&Path]) {
    let nobody = nix::unistd::Uid::from_raw(65534);
    let nogroup = nix::unistd::Gid::from_raw(65534);
    for p in paths {
        nix::unistd::chown(*p, Some(nobody), Some(nogroup))
            .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// The one line every side prints for a 0644 key.
fn refusal(key: &Path) -> String {
    let k = key.display();
    format!("private key {k} is readable by other users (mode 0644); run: chmod 640 {k}")
}

#[test]
fn check_reports_a_world_readable_server_key() {
    let (_dir, pki) = pki();
    let key = pki.join("server.key");
    let config = pki.join("server.toml");
    let check = || {
        proc::run(
            &[bins().server_str(), "check", "--config", path_str(&config)],
            secs(30),
        )
    };
    chmod(&key, 0o644);
    let out = check();
    assert_eq!(out.code(), Some(2), "check with a 0644 server.key:\n{out}");
    assert!(out.stderr.contains(&refusal(&key)), "{out}");
    assert!(out.stderr.contains("key `tls.key` in "), "{out}");
    chmod(&key, 0o640);
    let out = check();
    assert_eq!(out.code(), Some(0), "check with a 0640 server.key:\n{out}");
}

#[test]
fn run_refuses_a_world_readable_server_key() {
    let Some((dir, pki)) = pki_as_root("run_refuses_a_world_readable_server_key") else {
        return;
    };
    let key = pki.join("server.key");
    let config = server_config(dir.path(), &pki);
    chmod(&key, 0o644);
    let run = [bins().server_str(), "run", "--config", path_str(&config)];
    let out = proc::run(&[&OWN_NETNS[..], &run].concat(), secs(30));
    assert_eq!(out.code(), Some(2), "run with a 0644 server.key:\n{out}");
    assert!(out.stderr.contains(&refusal(&key)), "{out}");
}

#[test]
fn run_names_the_key_of_a_policy_file_it_cannot_read() {
    let Some((dir, pki)) = pki_as_root("run_names_the_key_of_a_policy_file_it_cannot_read") else {
        return;
    };
    let config = server_config(dir.path(), &pki);
    let missing = dir.path().join("no-such-policy.toml");
    toml_files::edit_toml(&config, |t| {
        toml_files::set(t, "policy", path_str(&missing));
    });
    let run = [bins().server_str(), "run", "--config", path_str(&config)];
    let out = proc::run(&[&OWN_NETNS[..], &run].concat(), secs(30));
    assert_eq!(out.code(), Some(2), "run without its policy file:\n{out}");
    assert!(out.stderr.contains(path_str(&missing)), "{out}");
    assert!(out.stderr.contains("key `policy` in "), "{out}");
}

/// alice.toml from `pki issue`, pointed at a loopback port with nothing
/// behind it and a control socket inside the test's folder.
fn client_config(dir: &Path, pki: &Path) -> PathBuf {
    let config = pki.join("alice.toml");
    toml_files::edit_toml(&config, |t| {
        toml_files::set(t, "server", "127.0.0.1:9");
        toml_files::set(t, "control.socket", path_str(&dir.join("alice.sock")));
    });
    config
}

#[test]
fn up_refuses_a_world_readable_client_key() {
    let Some((dir, pki)) = pki_as_root("up_refuses_a_world_readable_client_key") else {
        return;
    };
    let config = client_config(dir.path(), &pki);
    let key = pki.join("alice.key");
    chmod(&key, 0o644);
    for detach in [false, true] {
        let mut args = [&OWN_NETNS[..], &[bins().client_str(), "up"]].concat();
        args.extend(["--config", path_str(&config)]);
        if detach {
            args.push("--detach");
        }
        let out = proc::run(&args, secs(30));
        assert_eq!(out.code(), Some(2), "up with a 0644 alice.key:\n{out}");
        let text = format!("{}{}", out.stderr, out.stdout);
        assert!(text.contains(&refusal(&key)), "{out}");
    }
}

/// As user nobody (no CAP_NET_ADMIN) `up` exits 5 even though the key is
/// world-readable: privilege is checked before any key file is opened.
#[test]
fn up_without_privilege_exits_5_before_looking_at_the_key() {
    let Some((dir, pki)) = pki_as_root("up_without_privilege_exits_5_before_looking_at_the_key")
    else {
        return;
    };
    let config = client_config(dir.path(), &pki);
    // nobody must reach the config (and the binary, whose build folder it may
    // not be able to enter); the key is 0644, so it could read it too.
    let client = nobodys_copy(bins().client_str(), dir.path());
    chown_nobody(&[&pki, &config]);
    let key = pki.join("alice.key");
    chmod(&key, 0o644);
    let out = as_nobody(&client, &["up", "--config", path_str(&config)]);
    assert_eq!(out.code(), Some(5), "up as nobody:\n{out}");
    assert!(!out.stderr.contains("alice.key"), "{out}");
}

/// Not a key mode, but the same kind of start failure: `listen` taken by
/// another program is a configuration error (exit 2, naming the key), not
/// an internal one (1), which systemd would restart every 2 s forever.
#[test]
fn run_with_its_port_taken_exits_2() {
    let Some((dir, pki)) = pki_as_root("run_with_its_port_taken_exits_2") else {
        return;
    };
    let config = server_config(dir.path(), &pki);
    // In a namespace of its own: loopback up, a listener on the port, then
    // the server.
    let script = format!(
        "ip link set lo up && \
         (timeout 20 python3 -c 'import socket, time; s = socket.socket(); \
           s.bind((\"127.0.0.1\", 4433)); s.listen(); time.sleep(20)' &) && \
         sleep 0.5 && exec {} run --config {}",
        bins().server_str(),
        path_str(&config)
    );
    let out = proc::run(&[&OWN_NETNS[..], &["sh", "-c", &script]].concat(), secs(30));
    assert_eq!(out.code(), Some(2), "run with its port taken:\n{out}");
    assert!(
        out.stderr
            .contains("cannot listen on 127.0.0.1:4433 (key `listen` in "),
        "{out}"
    );
}

/// As user nobody (no CAP_NET_ADMIN) `twoway-server run` exits 5 with one
/// message that says what to do, before it reads the config or tries the
/// device: no "Operation not permitted" twice, no key or config error.
#[test]
fn run_without_cap_net_admin_says_what_to_do_once() {
    let Some((dir, pki)) = pki_as_root("run_without_cap_net_admin_says_what_to_do_once") else {
        return;
    };
    let config = pki.join("server.toml");
    let server = nobodys_copy(bins().server_str(), dir.path());
    let out = as_nobody(&server, &["run", "--config", path_str(&config)]);
    assert_eq!(out.code(), Some(5), "run as nobody:\n{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].contains("CAP_NET_ADMIN is needed")
            && lines[0].contains("run as root or grant CAP_NET_ADMIN")
            && !lines[0].contains("server.toml"),
        "one line, saying what to do:\n{out}"
    );
}

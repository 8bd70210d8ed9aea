//! Status without root (issue 13), through the real binaries: the control
//! sockets are 0660 with group `twoway`; a member of the group reads
//! `status` (client and server) and `list`, also when it may not read the
//! config, but `down`, `kick` and `reload` are refused by the daemon, which
//! checks the caller's credentials (SO_PEERCRED), with exit code 5 and the
//! tunnel or session left as it was; a user outside the group gets exit 5
//! with a hint; root may do everything.
//!
//! The group is the real `twoway`. A machine without it gets it for the
//! length of each test (groupadd, groupdel at the end, also after a
//! failure); a lock file keeps the tests that need it (in this and any other
//! test process) one at a time. The group member and the outsider are user
//! nobody with and without the group among its supplementary groups
//! (`setpriv --groups`): the kernel, the socket and SO_PEERCRED know no more
//! than that, so no temporary user account is needed.

use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use twoway_tests::vpn::copy_into;
use twoway_tests::vpn::{path_str, toml_path, Vpn};
use twoway_tests::{proc, toml_files, CmdOutput};

const GROUP: &str = "twoway";
const RUN_DIR: &str = "/run/twoway";
const CONFIG_DIR: &str = "/etc/twoway";
const T: Duration = Duration::from_secs(30);

/// The `twoway` group held for one test; see the module documentation.
struct TwowayGroup {
    gid: u32,
    created: bool,
    run_dir_created: bool,
    /// Files this test leaves in /run/twoway and /etc/twoway start with it.
    prefix: String,
    _lock: nix::fcntl::Flock<File>,
}

impl TwowayGroup {
    fn take(prefix: &str) -> TwowayGroup {
        let path = std::env::temp_dir().join("twoway-tests-group.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("lock {}: {e}", path.display()));
        let existing = gid_of(GROUP);
        let created = existing.is_none();
        if created {
            let out = proc::run(&["groupadd", GROUP], T);
            assert!(out.success(), "groupadd {GROUP}:\n{out}");
        }
        let gid = gid_of(GROUP).expect("the twoway group exists now");
        let run_dir_created = !Path::new(RUN_DIR).exists();
        let group = TwowayGroup {
            gid,
            created,
            run_dir_created,
            prefix: prefix.to_owned(),
            _lock: lock,
        };
        // A run folder left by an earlier run may carry the id of a group
        // deleted since: let the group reach the sockets in it.
        if let Ok(meta) = std::fs::metadata(RUN_DIR) {
            if meta.gid() != gid && meta.mode() & 0o001 == 0 {
                nix::unistd::chown(RUN_DIR, None, Some(nix::unistd::Gid::from_raw(gid)))
                    .expect("chgrp /run/twoway");
            }
        }
        group
    }
}

impl Drop for TwowayGroup {
    fn drop(&mut self) {
        for dir in [RUN_DIR, CONFIG_DIR] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(&self.prefix)
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        if self.run_dir_created {
            let _ = std::fs::remove_dir(RUN_DIR);
        }
        if self.created {
            let out = proc::run(&["groupdel", GROUP], T);
            if !out.success() {
                eprintln!("groupdel {GROUP} failed (remove it by hand):\n{out}");
            }
        }
    }
}

fn gid_of(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// Copies of the binaries that user nobody may run (the build folder may not
/// be reachable for it).
struct NobodyBins {
    _dir: tempfile::TempDir,
    client: PathBuf,
    server: PathBuf,
}

impl NobodyBins {
    fn new(vpn: &Vpn) -> NobodyBins {
        let dir = twoway_tests::temp_dir("twoway-sok-bins-");
        let client = copy_into(Path::new(vpn.bins_client()), dir.path());
        let server = copy_into(Path::new(twoway_tests::bins().server_str()), dir.path());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod bins dir");
        NobodyBins {
            _dir: dir,
            client,
            server,
        }
    }
}

/// `BIN ARGS` as user nobody, in group `twoway` (`member`) or in no group.
fn as_nobody(group: &TwowayGroup, member: bool, bin: &Path, args: &[&str]) -> CmdOutput {
    let groups = if member {
        format!("--groups={}", group.gid)
    } else {
        "--clear-groups".to_owned()
    };
    let mut full = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        &groups,
        "--",
        path_str(bin),
    ];
    full.extend_from_slice(args);
    proc::run_with_env(&full, &[("RUST_LOG", "off")], T)
}

/// The prologue of the tests: [`Vpn::prepared`], then the group held for
/// the test and the prefix of the files it leaves in /run and /etc.
fn prepared_with_group(test: &str) -> Option<(Vpn, String, TwowayGroup)> {
    let vpn = Vpn::prepared(test)?;
    let prefix = format!("{}-sok", vpn.lab.id);
    let group = TwowayGroup::take(&prefix);
    Some((vpn, prefix, group))
}

/// `what` (a control socket) is 0660 with group twoway.
fn check_socket_mode(vpn: &Vpn, group: &TwowayGroup, socket: &Path, what: &str) {
    let (mode, gid) = mode_and_group(socket);
    vpn.check(
        mode == 0o660 && gid == group.gid,
        &format!("{what} is 0660 with group twoway"),
        format_args!(
            "{}: mode {mode:o}, group {gid} (twoway is {})",
            socket.display(),
            group.gid
        ),
    );
}

/// A user outside the group is refused by the socket: exit 5, with a hint
/// at the group rather than at a stopped daemon.
fn check_outsider_refused(vpn: &Vpn, out: &CmdOutput, step: &str) {
    vpn.check(
        out.code() == Some(5)
            && out.stderr.contains("permission denied")
            && out.stderr.contains("group `twoway`")
            && !out.stderr.contains("is it running"),
        step,
        out,
    );
}

/// Mode bits and group of a file.
fn mode_and_group(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mode() & 0o777, meta.gid())
}

/// A copy of alice's config at /etc/twoway/NAME.toml, 0600 root (a group
/// member may not read it), with absolute paths and without `[control]
/// socket`: the client uses the default /run/twoway/NAME.sock.
fn private_config(vpn: &Vpn, name: &str) -> PathBuf {
    let original = vpn.client_config("alice");
    std::fs::create_dir_all(CONFIG_DIR).expect("create /etc/twoway");
    let path = Path::new(CONFIG_DIR).join(format!("{name}.toml"));
    std::fs::copy(&original, &path).expect("copy config to /etc/twoway");
    toml_files::edit_toml(&path, |t| {
        for key in ["tls.ca", "tls.cert", "tls.key"] {
            toml_files::set(t, key, path_str(&toml_path(&original, key)));
        }
        toml_files::set(t, "tunnel.name", "tw-sok");
        t.remove("control");
    });
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 0600 config");
    path
}

#[test]
fn a_group_member_reads_client_status_but_only_root_takes_it_down() {
    let Some((mut vpn, name, group)) =
        prepared_with_group("a_group_member_reads_client_status_but_only_root_takes_it_down")
    else {
        return;
    };
    vpn.start_server();
    let bins = NobodyBins::new(&vpn);
    let cli1 = vpn.lab.cli1.clone();
    let config = private_config(&vpn, &name);
    let socket = Path::new(RUN_DIR).join(format!("{name}.sock"));
    let root = |args: &[&str]| vpn.client_cmd(&cli1, args, Duration::from_secs(60));
    let member = |args: &[&str]| as_nobody(&group, true, &bins.client, args);
    let outsider = |args: &[&str]| as_nobody(&group, false, &bins.client, args);

    let out = root(&["up", &name, "--detach"]);
    vpn.check(
        out.code() == Some(0),
        "root: `twoway up NAME --detach`",
        &out,
    );
    check_socket_mode(&vpn, &group, &socket, "the control socket");
    let (mode, gid) = mode_and_group(Path::new(RUN_DIR));
    vpn.check(
        (gid == group.gid && mode & 0o050 == 0o050) || mode & 0o005 == 0o005,
        "the group may reach the sockets in /run/twoway",
        format_args!("/run/twoway: mode {mode:o}, group {gid}"),
    );

    let c = path_str(&config);
    for args in [
        &["status", "--json", &name][..],
        &["status", "--json", "--config", c][..],
    ] {
        let step = format!(
            "member of twoway: `twoway {}` without reading the 0600 config",
            args.join(" ")
        );
        let out = member(args);
        let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
        vpn.check(
            out.code() == Some(0) && v["state"] == "up" && v["config"] == c,
            &step,
            &out,
        );
    }
    let out = member(&["list", "--json"]);
    let list: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let listed = list
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t["name"] == *name && t["state"] == "up"));
    vpn.check(
        out.code() == Some(0) && listed,
        "member of twoway: `twoway list --json` shows the tunnel",
        &out,
    );

    let out = member(&["down", &name]);
    vpn.check(
        out.code() == Some(5) && out.stderr.contains("down needs root"),
        "member of twoway: `twoway down NAME` is refused by the client, exit 5",
        &out,
    );
    let out = root(&["status", "--json", &name]);
    let v = vpn.parse_json("root: `twoway status --json NAME`", &out);
    vpn.check(
        v["state"] == "up",
        "the tunnel stays up after the refused down",
        &out,
    );

    check_outsider_refused(
        &vpn,
        &outsider(&["status", "--json", &name]),
        "outside the group: `twoway status NAME` exits 5 with a hint",
    );

    let out = root(&["down", &name]);
    vpn.check(out.code() == Some(0), "root: `twoway down NAME`", &out);
    let out = member(&["status", "--json", &name]);
    vpn.check(
        out.code() == Some(0) && out.stdout.trim() == r#"{"state":"down"}"#,
        "member of twoway: status after down is {\"state\":\"down\"}",
        &out,
    );
    vpn.stop_server();
}

#[test]
fn a_group_member_reads_server_status_but_only_root_kicks_and_reloads() {
    let Some((mut vpn, prefix, group)) =
        prepared_with_group("a_group_member_reads_server_status_but_only_root_kicks_and_reloads")
    else {
        return;
    };
    let socket = Path::new(RUN_DIR).join(format!("{prefix}-server.sock"));
    vpn.edit_server_config(|t| toml_files::set(t, "control.socket", path_str(&socket)));
    // As deployed: the config readable by the group (the folders on the way
    // reachable), the keys not.
    let config = vpn.server_config();
    for dir in [vpn.tmp(""), vpn.pki.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    }
    nix::unistd::chown(&config, None, Some(nix::unistd::Gid::from_raw(group.gid)))
        .expect("chgrp server.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    vpn.start_server();
    vpn.bring_up(
        &vpn.lab.cli1.clone(),
        "alice",
        twoway_tests::vpn::net(twoway_tests::vpn::TUNNEL_NET),
    );
    let bins = NobodyBins::new(&vpn);
    let c = path_str(&config);
    let member = |args: &[&str]| as_nobody(&group, true, &bins.server, args);
    let outsider = |args: &[&str]| as_nobody(&group, false, &bins.server, args);

    check_socket_mode(&vpn, &group, &socket, "the server's control socket");
    let out = member(&["status", "--json", "--config", c]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    let alice = v["sessions"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["identity"] == "alice"));
    vpn.check(
        out.code() == Some(0) && alice,
        "member of twoway: `twoway-server status --json` lists alice",
        &out,
    );
    for (args, what) in [
        (&["kick", "alice", "--config", c][..], "kick needs root"),
        (&["reload", "--config", c][..], "reload needs root"),
    ] {
        let out = member(args);
        vpn.check(
            out.code() == Some(5) && out.stderr.contains(what),
            &format!(
                "member of twoway: `twoway-server {}` is refused by the server, exit 5",
                args[0]
            ),
            &out,
        );
    }
    vpn.check(
        vpn.session_of("alice").is_some(),
        "alice's session stays after the refused kick",
        "no session of alice in the server's status",
    );

    // A config the member may not read, and no server on the default socket.
    let private = vpn.pki.join(format!("{prefix}-private.toml"));
    std::fs::copy(&config, &private).expect("copy server.toml");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = member(&["status", "--config", path_str(&private)]);
    vpn.check(
        out.code() == Some(5)
            && out.stderr.contains("cannot read it (permission denied)")
            && out.stderr.lines().count() == 1,
        "member of twoway: status with an unreadable config and no default socket: exit 5, one message",
        &out,
    );

    // Outside the group, with a config it may read: the socket says no.
    let public = vpn.pki.join(format!("{prefix}-public.toml"));
    std::fs::copy(&config, &public).expect("copy server.toml");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    check_outsider_refused(
        &vpn,
        &outsider(&["status", "--config", path_str(&public)]),
        "outside the group: `twoway-server status` exits 5 with a hint",
    );

    let out = vpn.server_ctl(&["kick", "alice"]);
    vpn.check(
        out.code() == Some(0),
        "root: `twoway-server kick alice`",
        &out,
    );
    vpn.wait_session_gone(
        "alice",
        Duration::from_secs(10),
        "alice's session is gone after root's kick",
    );
    vpn.stop_server();
}

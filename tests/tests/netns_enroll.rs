//! One-file profiles and key enrollment (issue 13) through the real
//! binaries in a lab: a profile from `pki issue --inline` connects as it is
//! written; `twoway request` + `pki sign` connect with a key that never left
//! the laptop, and `pki renew` extends it; the client warns, in its log and
//! in `status`, of a certificate that expires within 14 days.
//!
//! The profiles keep their default control socket, /run/twoway/ID.sock,
//! with an identity unique to the lab (so parallel tests do not meet); the
//! socket and the detached client's log there are removed on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use twoway_tests::vpn::copy_into;
use twoway_tests::vpn::{net, path_str, Vpn, LAN_HOST, TUNNEL_POOL};
use twoway_tests::{bins, proc, wait_until, CmdOutput};

const T: Duration = Duration::from_secs(60);

/// Removes /run/twoway/ID.{sock,log} of a profile that keeps its default socket.
struct RunFiles(String);

impl Drop for RunFiles {
    fn drop(&mut self) {
        for ext in ["sock", "log"] {
            let _ = std::fs::remove_file(format!("/run/twoway/{}.{ext}", self.0));
        }
    }
}

fn twoway(vpn: &Vpn, ns: &str, args: &[&str]) -> CmdOutput {
    vpn.client_cmd(ns, args, T)
}

/// `twoway status --json --config CONFIG` in `ns`, parsed.
fn status(vpn: &Vpn, ns: &str, config: &Path) -> Value {
    let out = twoway(vpn, ns, &["status", "--json", "--config", path_str(config)]);
    vpn.parse_json(
        &format!("`twoway status --json` of {}", config.display()),
        &out,
    )
}

/// The `not_after` of the newest certificate of `identity` in `pki list --json`.
fn not_after(vpn: &Vpn, identity: &str) -> (String, Vec<Value>) {
    let out = vpn.pki_on_lab("list", &["--json"]);
    let list = vpn.parse_json("`pki list --json`", &out);
    let mine: Vec<Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["identity"] == identity)
        .cloned()
        .collect();
    match mine.last().and_then(|c| c["not_after"].as_str()) {
        Some(t) => (t.to_string(), mine),
        None => vpn.fail(
            &format!("`pki list` shows {identity}"),
            format_args!("{out}"),
        ),
    }
}

/// `up --detach` exits 0, status says up with a pool address, the lan host answers.
fn connect(vpn: &Vpn, ns: &str, config: &Path, what: &str) -> Value {
    let out = twoway(vpn, ns, &["up", "--config", path_str(config), "--detach"]);
    vpn.check(
        out.code() == Some(0),
        &format!("`twoway up` with {what}"),
        &out,
    );
    let v = status(vpn, ns, config);
    let in_pool = v["address"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .is_some_and(|a| net(TUNNEL_POOL).contains(a));
    vpn.check(
        v["state"] == "up" && in_pool,
        &format!("{what}: status up with an address of the pool"),
        &v,
    );
    vpn.expect_ping(ns, LAN_HOST, &format!("{what}: the lan host answers"));
    v
}

fn down(vpn: &Vpn, ns: &str, config: &Path, what: &str) {
    let out = twoway(vpn, ns, &["down", "--config", path_str(config)]);
    vpn.check(
        out.code() == Some(0),
        &format!("`twoway down` of {what}"),
        &out,
    );
}

/// `pki issue --inline --days 7`: one 0600 file that `twoway up` takes as it
/// is. The client's log, `status --json` (`certificate_expires`, the same
/// instant `pki list` shows, and `warnings`) and plain `status` warn that
/// the certificate expires within 14 days.
#[test]
fn inline_profile_connects_as_written_and_warns_of_its_expiry() {
    let Some(mut vpn) = Vpn::started("inline_profile_connects_as_written_and_warns_of_its_expiry")
    else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let id = format!("{}-carol", vpn.lab.id);
    let _run = RunFiles(id.clone());
    let out_dir = vpn.tmp("inline");
    let out = vpn.pki_on_lab(
        "issue",
        &[&id, "--inline", "--days", "7", "--out", path_str(&out_dir)],
    );
    vpn.check(out.success(), "`pki issue --inline --days 7`", &out);
    let profile = out_dir.join(format!("{id}.toml"));
    let files = twoway_tests::vpn::list_dir(&out_dir);
    let mode = std::fs::metadata(&profile).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    vpn.check(
        files == [format!("{id}.toml")] && matches!(mode, Ok(0o600)),
        "`--inline` writes one file, mode 0600",
        format_args!("files {files:?}, mode {mode:?}\n{out}"),
    );

    let v = connect(&vpn, &cli1, &profile, "the one-file profile");
    let (expires, _) = not_after(&vpn, &id);
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    vpn.check(
        v["certificate_expires"] == expires.as_str()
            && warnings.len() == 1
            && warnings[0].contains(&format!("certificate of {id} expires in 6 days")),
        "status --json: certificate_expires is the certificate's not_after, one warning",
        format_args!("pki list says {expires}; status: {v}"),
    );
    let out = twoway(&vpn, &cli1, &["status", "--config", path_str(&profile)]);
    vpn.check(
        out.success()
            && out.stdout.contains("warning: the certificate of")
            && out.stdout.contains("expires in 6 days"),
        "plain `status` prints the warning on a line of its own",
        &out,
    );
    let log = PathBuf::from(format!("/run/twoway/{id}.log"));
    let text = proc::read_lossy(&log);
    vpn.check(
        text.contains("WARN") && text.contains("expires in 6 days"),
        "the client's log warns of the expiry",
        format_args!("{}:\n{text}", log.display()),
    );
    down(&vpn, &cli1, &profile, "the one-file profile");
    vpn.stop_server();
}

/// Every file under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The laptop runs `twoway request`; only the .csr goes to the server's
/// side (a folder of its own), where `pki sign` certifies it. Nothing on the
/// server's side ever holds the key, and the signed config points at the
/// key the laptop kept. The laptop connects with it (no expiry warning at
/// 365 days). `pki renew --days 5` certifies the same key again: after the
/// new certificate is installed the client connects and warns; the old
/// certificate stayed valid, and one `pki revoke` revokes both and cuts the
/// session.
#[test]
fn request_sign_and_renew_keep_the_key_on_the_laptop() {
    let Some(mut vpn) = Vpn::started("request_sign_and_renew_keep_the_key_on_the_laptop") else {
        return;
    };
    let cli1 = vpn.lab.cli1.clone();
    let id = format!("{}-dave", vpn.lab.id);
    let _run = RunFiles(id.clone());
    let laptop = vpn.tmp("laptop");
    let inbox = vpn.tmp("inbox");
    std::fs::create_dir_all(&inbox).expect("inbox");

    let out = proc::run(
        &[
            bins().client_str(),
            "request",
            "--identity",
            &id,
            "--out",
            path_str(&laptop),
        ],
        T,
    );
    let key = laptop.join(format!("{id}.key"));
    let csr = laptop.join(format!("{id}.csr"));
    vpn.check(
        out.success() && key.is_file() && csr.is_file(),
        "`twoway request` writes ID.key and ID.csr",
        &out,
    );
    let key_text = std::fs::read_to_string(&key).expect("read the key");
    let key_body: String = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let sent = copy_into(&csr, &inbox);
    let signed = inbox.join("signed");
    let out = vpn.pki_on_lab("sign", &[path_str(&sent), "--out", path_str(&signed)]);
    vpn.check(out.success(), "`pki sign` of the request", &out);
    let config = signed.join(format!("{id}.toml"));
    let key_ref = twoway_tests::vpn::toml_str(&config, "tls.key");
    vpn.check(
        key_ref.as_deref() == Some(format!("{id}.key").as_str()),
        "the signed config points at ID.key next to it",
        format_args!("tls.key = {key_ref:?}"),
    );
    let mut holders = Vec::new();
    for dir in [vpn.pki.as_path(), inbox.as_path()] {
        for file in files_under(dir) {
            let text = proc::read_lossy(&file);
            let flat: String = text.lines().collect();
            if file.ends_with(format!("{id}.key")) || flat.contains(&key_body) {
                holders.push(file);
            }
        }
    }
    vpn.check(
        holders.is_empty(),
        "no file on the server's side holds the laptop's key",
        format_args!("found in {holders:?}"),
    );

    for name in [format!("{id}.pem"), format!("{id}.toml"), "ca.pem".into()] {
        copy_into(&signed.join(name), &laptop);
    }
    let config = laptop.join(format!("{id}.toml"));
    let v = connect(
        &vpn,
        &cli1,
        &config,
        "the signed certificate and the laptop's key",
    );
    vpn.check(
        v["warnings"].as_array().is_some_and(Vec::is_empty),
        "a certificate valid for a year brings no warning",
        &v,
    );

    let out = vpn.pki_on_lab("renew", &[&id, "--days", "5", "--out", path_str(&signed)]);
    vpn.check(out.success(), "`pki renew --days 5`", &out);
    let config_after = proc::read_lossy(&signed.join(format!("{id}.toml")));
    vpn.check(
        config_after == proc::read_lossy(&config),
        "renew leaves the existing config alone",
        &config_after,
    );
    copy_into(&signed.join(format!("{id}.pem")), &laptop);
    down(&vpn, &cli1, &config, "the first certificate");
    let v = connect(&vpn, &cli1, &config, "the renewed certificate (same key)");
    let (expires, certs) = not_after(&vpn, &id);
    vpn.check(
        certs.len() == 2
            && certs.iter().all(|c| c["revoked"] == false)
            && v["certificate_expires"] == expires.as_str()
            && v["warnings"][0]
                .as_str()
                .is_some_and(|w| w.contains("expires in 4 days")),
        "the renewed certificate is in use and warned of; the old one stays valid",
        format_args!("pki list: {certs:?}\nstatus: {v}"),
    );

    let out = vpn.pki_on_lab("revoke", &[&id]);
    vpn.check(
        out.success() && out.stdout.contains("2 certificates"),
        "`pki revoke` revokes the renewed and the old certificate",
        &out,
    );
    vpn.reload("reload after the revocation");
    let gone = wait_until(Duration::from_secs(20), || {
        status(&vpn, &cli1, &config)["state"] == "down"
    });
    vpn.check(
        gone,
        "the revoked client is cut off",
        status(&vpn, &cli1, &config),
    );
    vpn.stop_server();
}

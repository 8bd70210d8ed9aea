//! twoway's TLS stream (`secure::connect` / `secure::accept`: rustls's
//! unbuffered connection in our buffers) against OpenSSL's command-line tools, over TCP
//! on 127.0.0.1: ours as the client against `openssl s_server`, ours as the
//! server against `openssl s_client`, once for each TLS 1.3 cipher suite both
//! support, with client certificates and ALPN.
//!
//! OpenSSL prints what it receives on its stdout and sends what it reads on
//! its stdin; a line `K` alone on its stdin makes it send KeyUpdate asking
//! for ours back, `k` one that does not ask. With `-msg -msgfile` it logs
//! every handshake message it sends and receives, so the tests see each
//! KeyUpdate on the wire, with its request bit, from OpenSSL's side. Each
//! test checks, from both ends:
//!
//! - the handshake: the suite OpenSSL negotiated, ALPN, and each end's
//!   certificate as the other end verified it;
//! - data both ways, compared byte for byte (everything OpenSSL printed is
//!   accounted for: what we sent, then only OpenSSL's own status lines);
//! - KeyUpdate from OpenSSL asking for ours (answered exactly once, and
//!   OpenSSL reads our data under our new key), not asking (not answered),
//!   and asked twice before we write (one answer covers both);
//! - our own KeyUpdates (`SecureStream::refresh_traffic_keys`, which asks the
//!   peer to update too), which OpenSSL follows and answers;
//! - close_notify: one end closes, the other reads a clean end of stream;
//! - as the client, the NewSessionTickets s_server sends after the handshake
//!   are passed over.
//!
//! Two more runs per role have OpenSSL pad every record it sends
//! (`-record_padding`) and send small records (`-max_send_frag 512`), which
//! splits its session tickets across records.
//!
//! The `openssl` binary must be on PATH (.ci/run installs it); without it the
//! tests fail rather than skip.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use twoway_common::outside::tcp::record::secure::{self, SecureStream};
use twoway_common::tls;
use twoway_tests::loopback::TlsPki as Pki;

/// The TLS 1.3 cipher suites both rustls (aws-lc-rs) and OpenSSL implement,
/// by their OpenSSL names (which are the RFC 8446 names); OpenSSL's
/// TLS_AES_128_CCM_SHA256 and TLS_AES_128_CCM_8_SHA256 are not in rustls.
const SUITE_AES_128: &str = "TLS_AES_128_GCM_SHA256";
const SUITE_AES_256: &str = "TLS_AES_256_GCM_SHA384";
const SUITE_CHACHA: &str = "TLS_CHACHA20_POLY1305_SHA256";

/// The longest any one step may take (a handshake, a transfer, an exit).
const STEP: Duration = Duration::from_secs(20);
/// The longest a whole test may take.
const WHOLE_TEST: Duration = Duration::from_secs(120);

const SERVER_NAME: &str = "vpn.test";

/// Bytes our payloads are made of: no upper case and none of `c k q r`, so
/// that no piece of a payload OpenSSL reads from its stdin can be taken for
/// one of its connected commands (`Q`, `q`, `R`, `K`, `k`, `c`, `P`, `S`, ...
/// at the start of what one read returns), and so that no OpenSSL status
/// line (each has an upper-case letter) can be mistaken for payload.
const ALPHABET: &[u8] = b"abdefghijlmnopstuvwxyz0123456789-";

/// Lines OpenSSL prints on stdout between the data it received: s_server
/// when a read found a non-data record (KeyUpdate) or after a `k`/`K`
/// command, s_client likewise.
const NOISE: &[&str] = &[
    "Read BLOCK\n",
    "read R BLOCK\n",
    "SSL_do_handshake -> 1\n",
    "KEYUPDATE\n",
];

fn alpn_text() -> &'static str {
    std::str::from_utf8(tls::ALPN).expect("the ALPN protocol name is text")
}

/// Panics with a clear message unless `openssl` runs; returns its version.
fn require_openssl() -> String {
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "`openssl version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run `openssl` ({e}): these interop tests need OpenSSL's command-line \
             tool on PATH (Debian package `openssl`, which .ci/run installs)"
        ),
    }
}

/// A KeyUpdate as OpenSSL logged it: the direction from OpenSSL's side and
/// whether it asked the other end to update too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyUpdate {
    /// OpenSSL sent it.
    Sent { requested: bool },
    /// OpenSSL received it (from us).
    Received { requested: bool },
}

type Captured = Arc<Mutex<Vec<u8>>>;

/// A running `openssl` command; dropping it kills and reaps it (and prints
/// what it said when the test is failing).
struct OpenSsl {
    what: String,
    child: Mutex<Child>,
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    stdout: Captured,
    stderr: Captured,
    msgfile: PathBuf,
    threads: Vec<JoinHandle<()>>,
}

fn capture(mut from: impl Read + Send + 'static, into: Captured) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    })
}

impl OpenSsl {
    fn spawn(args: &[String], msgfile: PathBuf) -> Self {
        let what = format!("openssl {}", args.join(" "));
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let stdout = Captured::default();
        let stderr = Captured::default();
        let mut threads = vec![
            capture(child.stdout.take().unwrap(), stdout.clone()),
            capture(child.stderr.take().unwrap(), stderr.clone()),
        ];
        // Its stdin is written by a thread of its own: OpenSSL may stop
        // reading it while it waits for us, and we must not block then.
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let mut stdin = child.stdin.take().unwrap();
        threads.push(std::thread::spawn(move || {
            for chunk in rx {
                if stdin.write_all(&chunk).is_err() {
                    return;
                }
            }
        }));
        OpenSsl {
            what,
            child: Mutex::new(child),
            stdin: Some(tx),
            stdout,
            stderr,
            msgfile,
            threads,
        }
    }

    fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout()).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Queues bytes for OpenSSL's stdin.
    fn type_in(&self, bytes: &[u8]) {
        self.stdin
            .as_ref()
            .expect("stdin still open")
            .send(bytes.to_vec())
            .expect("stdin writer alive");
    }

    /// Closes OpenSSL's stdin once what was queued is written.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Every KeyUpdate OpenSSL logged so far, in order.
    fn key_updates(&self) -> Vec<KeyUpdate> {
        let text = std::fs::read_to_string(&self.msgfile).unwrap_or_default();
        let mut lines = text.lines();
        let mut found = Vec::new();
        while let Some(line) = lines.next() {
            if !line.ends_with(", KeyUpdate") {
                continue;
            }
            // The message in hex follows: type 0x18, length 1, request_update.
            let Some(hex) = lines.next() else {
                break; // not all written yet
            };
            let requested = match hex.split_whitespace().collect::<Vec<_>>()[..] {
                ["18", "00", "00", "01", "00"] => false,
                ["18", "00", "00", "01", "01"] => true,
                _ => panic!("unexpected KeyUpdate bytes in OpenSSL's log: {hex:?}"),
            };
            found.push(if line.starts_with(">>>") {
                KeyUpdate::Sent { requested }
            } else if line.starts_with("<<<") {
                KeyUpdate::Received { requested }
            } else {
                panic!("unexpected line in OpenSSL's log: {line:?}")
            });
        }
        found
    }

    /// Whether OpenSSL has exited, and how.
    fn exited(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }

    /// Whether OpenSSL has exited and all it printed is captured.
    fn finished(&self) -> Option<ExitStatus> {
        let status = self.exited()?;
        self.threads[..2]
            .iter()
            .all(JoinHandle::is_finished)
            .then_some(status)
    }

    /// Waits until `cond` holds; panics saying what did not happen (at
    /// once if OpenSSL exits first, e.g. after an alert).
    async fn wait(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + STEP;
        loop {
            let finished = self.finished();
            if cond(self) {
                return;
            }
            if let Some(status) = finished {
                panic!("OpenSSL exited ({status}) while we waited for {what}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {STEP:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until OpenSSL's log shows exactly `expected`.
    async fn wait_key_updates(&self, expected: &[KeyUpdate]) {
        self.wait(
            &format!("OpenSSL to log the KeyUpdates {expected:?}"),
            |s| s.key_updates().len() >= expected.len(),
        )
        .await;
        assert_eq!(self.key_updates(), expected, "KeyUpdates OpenSSL logged");
    }

    /// Waits for OpenSSL to exit (and all it printed to be captured).
    async fn wait_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.finished() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "`{}` did not exit within {STEP:?}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The application data OpenSSL printed: its stdout from the first
    /// payload (whose start is `first`) on, without its own status lines,
    /// up to the "DONE" it prints when the connection ends.
    fn received(&self, first: &[u8]) -> Vec<u8> {
        let out = self.stdout();
        let Some(start) = find(&out, first) else {
            return Vec::new();
        };
        let mut data = out[start..].to_vec();
        for noise in NOISE {
            while let Some(at) = find(&data, noise.as_bytes()) {
                data.drain(at..at + noise.len());
            }
        }
        if let Some(done) = find(&data, b"DONE\n") {
            data.truncate(done);
        }
        data
    }
}

impl Drop for OpenSsl {
    fn drop(&mut self) {
        self.stdin = None;
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.msgfile).unwrap_or_default();
            let log: Vec<&str> = log.lines().filter(|l| !l.starts_with("    ")).collect();
            eprintln!(
                "--- `{}`\n--- its stdout:\n{}\n--- its stderr:\n{}\n--- the last messages it logged:\n{}",
                self.what,
                self.stdout_text(),
                self.stderr_text(),
                log[log.len().saturating_sub(40)..].join("\n"),
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A payload of exactly `len` bytes: `twoway-<tag> ` then lines of text
/// made of [`ALPHABET`], ending with a newline.
fn payload(tag: &str, len: usize) -> Vec<u8> {
    let mut data = format!("twoway-{tag} ").into_bytes();
    assert!(data.iter().all(|b| ALPHABET.contains(b) || *b == b' '));
    assert!(len > data.len() + 1);
    let mut state = len as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for b in tag.bytes() {
        state = state.wrapping_mul(31).wrapping_add(u64::from(b));
    }
    while data.len() < len - 1 {
        if data.len() % 61 == 60 {
            data.push(b'\n');
            continue;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.push(ALPHABET[(state % ALPHABET.len() as u64) as usize]);
    }
    data.push(b'\n');
    data
}

/// Where the first byte that differs is, with some context, for a message.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let show = |d: &[u8]| {
        String::from_utf8_lossy(&d[at.saturating_sub(40)..(at + 40).min(d.len())]).into_owned()
    };
    format!(
        "got {} bytes, expected {}; first difference at byte {at}: got {:?}, expected {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

async fn step<F: std::future::IntoFuture>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?}: {what}"))
}

/// One side of the data phase as the tests drive it.
struct Session<'a> {
    ours: &'a mut SecureStream<TcpStream>,
    peer: &'a OpenSsl,
    /// Everything we sent, as OpenSSL must have printed it.
    sent: Vec<u8>,
    /// The start of our first payload.
    first: Vec<u8>,
    /// The KeyUpdates OpenSSL must have logged so far.
    key_updates: Vec<KeyUpdate>,
}

impl Session<'_> {
    /// We send `data`; OpenSSL must print exactly what we sent so far.
    async fn send(&mut self, data: &[u8]) {
        if self.sent.is_empty() {
            self.first = data[..16.min(data.len())].to_vec();
        }
        step("our write", async {
            self.ours.write_all(data).await.unwrap();
            self.ours.flush().await.unwrap();
        })
        .await;
        self.sent.extend_from_slice(data);
        let (want, first) = (self.sent.len(), &self.first);
        self.peer
            .wait(&format!("OpenSSL to print {want} bytes from us"), |p| {
                p.received(first).len() >= want
            })
            .await;
        let got = self.peer.received(&self.first);
        assert!(
            got == self.sent,
            "what OpenSSL received differs from what we sent: {}",
            first_difference(&got, &self.sent)
        );
    }

    /// OpenSSL sends `data` (typed on its stdin); we must read exactly it.
    async fn receive(&mut self, data: &[u8]) {
        self.peer.type_in(data);
        let mut got = vec![0u8; data.len()];
        step(
            &format!("reading {} bytes OpenSSL sent", data.len()),
            self.ours.read_exact(&mut got),
        )
        .await
        .expect("reading what OpenSSL sent");
        assert!(
            got == data,
            "what we received differs from what OpenSSL sent: {}",
            first_difference(&got, data)
        );
    }

    /// Types a KeyUpdate command (`K` or `k`) on OpenSSL's stdin and waits
    /// until OpenSSL logs the KeyUpdate it sent; nothing else is typed
    /// meanwhile, so the command is read on its own.
    async fn openssl_key_update(&mut self, requested: bool) {
        self.peer.type_in(if requested { b"K\n" } else { b"k\n" });
        self.key_updates.push(KeyUpdate::Sent { requested });
        self.peer.wait_key_updates(&self.key_updates).await;
    }

    /// After OpenSSL's KeyUpdate: `len` bytes from it (`in-N`), then `len`
    /// from us (`out-N`); with `answered`, OpenSSL logs our one KeyUpdate
    /// in answer, not asking for its own.
    async fn both_ways_after_its_key_update(&mut self, n: &str, len: usize, answered: bool) {
        self.receive(&payload(&format!("in-{n}"), len)).await;
        self.send(&payload(&format!("out-{n}"), len)).await;
        if answered {
            self.key_updates
                .push(KeyUpdate::Received { requested: false });
        }
        self.peer.wait_key_updates(&self.key_updates).await;
    }

    /// The data phase, the same whichever end OpenSSL is, over `ours` with
    /// OpenSSL as `peer`. Returns what we sent and the start of our first
    /// payload, to compare with all OpenSSL printed.
    async fn exercise(ours: &mut SecureStream<TcpStream>, peer: &OpenSsl) -> (Vec<u8>, Vec<u8>) {
        let mut session = Session {
            ours,
            peer,
            sent: Vec::new(),
            first: Vec::new(),
            key_updates: Vec::new(),
        };
        session.data_phase().await;
        (session.sent, session.first)
    }

    /// See [`Session::exercise`].
    async fn data_phase(&mut self) {
        // Data both ways, in one record and in several.
        self.send(&payload("out-1", 100)).await;
        self.receive(&payload("in-1", 200)).await;
        self.send(&payload("out-2", 40_000)).await;
        self.receive(&payload("in-2", 50_000)).await;
        self.peer.wait_key_updates(&[]).await;

        // OpenSSL updates its key and asks for ours: we follow it (the data
        // after the KeyUpdate opens), answer once, and OpenSSL opens our data
        // under our new key.
        self.openssl_key_update(true).await;
        self.both_ways_after_its_key_update("3", 300, true).await;

        // OpenSSL updates its key without asking for ours: no answer.
        self.openssl_key_update(false).await;
        self.both_ways_after_its_key_update("4", 5000, false).await;

        // Asked twice before we write: one answer covers both (RFC 8446 4.6.3).
        self.openssl_key_update(true).await;
        self.openssl_key_update(true).await;
        self.both_ways_after_its_key_update("5", 700, true).await;

        // Our own KeyUpdates (rustls asks the peer to update too): OpenSSL
        // follows each one and answers with its own.
        for i in 0..3 {
            step("our KeyUpdate", async { self.ours.refresh_traffic_keys() })
                .await
                .expect("a KeyUpdate of our own");
            self.send(&payload(&format!("out-6-{i}"), 20_000 + i * 1000))
                .await;
            self.key_updates
                .push(KeyUpdate::Received { requested: true });
            self.receive(&payload(&format!("in-6-{i}"), 3000)).await;
            self.key_updates.push(KeyUpdate::Sent { requested: false });
            self.peer.wait_key_updates(&self.key_updates).await;
        }
        self.send(&payload("out-7", 200_000)).await;
        self.receive(&payload("in-7", 30)).await;
    }
}

/// The PEM certificate OpenSSL printed after `heading`.
fn printed_cert(out: &str, heading: &str) -> CertificateDer<'static> {
    let at = out
        .find(heading)
        .unwrap_or_else(|| panic!("OpenSSL did not print {heading:?}"));
    let rest = &out[at..];
    let end_marker = "-----END CERTIFICATE-----\n";
    let end = rest.find(end_marker).expect("a PEM certificate") + end_marker.len();
    CertificateDer::from_pem_slice(&rest.as_bytes()[..end]).expect("a PEM certificate")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `openssl TOOL` (the first of `role`, which then says where it
/// listens or connects) for TLS 1.3 with `suite`, `leaf`'s certificate and
/// key from the PKI and its CA, the `verify` options, our ALPN, its
/// handshake messages logged to TOOL.msg, and `extra`.
fn spawn_openssl<const N: usize>(
    pki: &Pki,
    role: [&str; N],
    suite: &str,
    leaf: &str,
    verify: &[&str],
    extra: &[&str],
) -> OpenSsl {
    let file = |name: String| pki.file(&name).display().to_string();
    let msgfile = format!("{}.msg", role[0]);
    let tls = [
        "-tls1_3",
        "-ciphersuites",
        suite,
        "-cert",
        &file(format!("{leaf}.pem")),
        "-key",
        &file(format!("{leaf}.key")),
        "-CAfile",
        &file("ca.pem".into()),
    ]
    .map(String::from);
    let log = [
        "-alpn",
        alpn_text(),
        "-msg",
        "-msgfile",
        &file(msgfile.clone()),
    ]
    .map(String::from);
    let args: Vec<String> = role
        .iter()
        .map(|a| a.to_string())
        .chain(tls)
        .chain(verify.iter().map(|a| a.to_string()))
        .chain(log)
        .chain(extra.iter().map(|a| a.to_string()))
        .collect();
    OpenSsl::spawn(&args, pki.file(&msgfile))
}

/// Starts `openssl s_server` for one connection on a free port.
async fn start_s_server(pki: &Pki, suite: &str, extra: &[&str]) -> (OpenSsl, u16) {
    for _ in 0..5 {
        let port = free_port();
        let accept = format!("127.0.0.1:{port}");
        let server = spawn_openssl(
            pki,
            ["s_server", "-accept", &accept, "-naccept", "1"],
            suite,
            "server",
            &["-Verify", "1", "-verify_return_error"],
            extra,
        );
        let deadline = Instant::now() + STEP;
        loop {
            if server.stdout_text().contains("ACCEPT\n") {
                return (server, port);
            }
            if server.exited().is_some() {
                // Most likely the port was taken meanwhile: another one.
                eprintln!(
                    "s_server exited before listening on port {port}: {}",
                    server.stderr_text()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "s_server did not start listening"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    panic!("s_server did not start in five attempts");
}

/// Ours as the client, `openssl s_server` as the server, given `extra`
/// options.
async fn ours_as_client(suite: &str, extra: &[&str]) {
    eprintln!("{}", require_openssl());
    let pki = Pki::new();
    let (server, port) = start_s_server(&pki, suite, extra).await;

    let tcp = step("TCP connect", TcpStream::connect(("127.0.0.1", port)))
        .await
        .unwrap();
    let name = tls::server_name(SERVER_NAME).unwrap();
    let mut ours = step(
        "our handshake with s_server",
        secure::connect(pki.client.clone(), name, tcp),
    )
    .await
    .expect("our handshake with s_server");

    // OpenSSL's view of the handshake: it prints this once it is complete.
    server
        .wait("s_server to report the handshake", |s| {
            s.stdout_text().contains(&format!("CIPHER is {suite}\n"))
        })
        .await;
    let out = server.stdout_text();
    assert!(
        out.contains(&format!("ALPN protocols selected: {}\n", alpn_text())),
        "ALPN"
    );
    assert_eq!(
        printed_cert(&out, "Client certificate\n"),
        pki.leaf("alice.pem"),
        "the client certificate s_server received"
    );
    // -Verify and -verify_return_error: the handshake fails unless OpenSSL
    // verified alice's certificate against the CA; it says so per level (on
    // stderr, which is read on its own thread: wait for the line).
    server
        .wait("OpenSSL to report alice's certificate verified", |p| {
            p.stderr_text()
                .contains("depth=0 CN = alice\nverify return:1\n")
        })
        .await;
    let err = server.stderr_text();
    assert!(
        err.contains("depth=0 CN = alice\nverify return:1\n"),
        "{err}"
    );
    assert!(!err.contains("verify error"), "{err}");
    // s_server sends session tickets after the handshake (unless told
    // not to); our client, which does not resume, must pass over them (the
    // data below comes after them).
    if !extra.contains(&"-num_tickets") {
        server
            .wait("s_server to send its NewSessionTickets", |s| {
                std::fs::read_to_string(&s.msgfile)
                    .unwrap_or_default()
                    .contains("], NewSessionTicket\n")
            })
            .await;
    }

    let (sent, first) = Session::exercise(&mut ours, &server).await;

    // We close: s_server sees close_notify, answers with its own and exits.
    step("our close_notify", ours.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    step("s_server's close_notify", ours.read_to_end(&mut rest))
        .await
        .expect("a clean end of stream after s_server's close_notify");
    assert!(rest.is_empty(), "s_server sent {} more bytes", rest.len());
    let status = server.wait_exit().await;
    let out = server.stdout_text();
    assert!(status.success(), "s_server: {status}");
    assert!(out.contains("DONE\n"), "s_server saw no clean close");
    assert!(
        server.received(&first) == sent,
        "s_server printed more than we sent"
    );
}

/// Ours as the server, `openssl s_client` as the client, given `extra`
/// options.
async fn ours_as_server(suite: &str, extra: &[&str]) {
    eprintln!("{}", require_openssl());
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("127.0.0.1:{port}");
    // Neither -quiet nor -ign_eof: they would turn the `k`/`K` commands off.
    let mut client = spawn_openssl(
        &pki,
        ["s_client", "-connect", &connect],
        suite,
        "alice",
        &[
            "-servername",
            SERVER_NAME,
            "-verify_hostname",
            SERVER_NAME,
            "-verify_return_error",
        ],
        extra,
    );

    let (tcp, _) = step("s_client to connect", listener.accept())
        .await
        .unwrap();
    let (mut ours, peer) = step(
        "our handshake with s_client",
        secure::accept(pki.server.clone(), tcp),
    )
    .await
    .expect("our handshake with s_client");
    assert_eq!(peer.alpn.as_deref(), Some(tls::ALPN));
    assert_eq!(
        peer.certificates.first(),
        Some(&pki.leaf("alice.pem")),
        "the client certificate we received"
    );
    // OpenSSL completes the chain it sends from -CAfile (the CA itself).
    assert!(
        peer.certificates[1..]
            .iter()
            .all(|c| *c == pki.leaf("ca.pem")),
        "the chain s_client sent has {} certificates",
        peer.certificates.len()
    );

    client
        .wait("s_client to report the handshake", |c| {
            c.stdout_text().contains("Verify return code: ")
        })
        .await;
    let out = client.stdout_text();
    assert!(
        out.contains(&format!("New, TLSv1.3, Cipher is {suite}\n")),
        "suite"
    );
    assert!(
        out.contains(&format!("ALPN protocol: {}\n", alpn_text())),
        "ALPN"
    );
    assert!(out.contains("Verify return code: 0 (ok)\n"), "verification");
    assert!(
        out.contains(&format!("Verified peername: {SERVER_NAME}\n")),
        "host name verification"
    );
    assert_eq!(
        printed_cert(&out, "Server certificate\n"),
        pki.leaf("server.pem"),
        "the server certificate s_client received"
    );

    let (sent, first) = Session::exercise(&mut ours, &client).await;

    // s_client closes at the end of its input: we read a clean end of
    // stream, with nothing more before it, and close too.
    client.close_stdin();
    let mut rest = Vec::new();
    step("s_client's close_notify", ours.read_to_end(&mut rest))
        .await
        .expect("a clean end of stream after s_client's close_notify");
    assert!(rest.is_empty(), "s_client sent {} more bytes", rest.len());
    step("our close_notify", ours.shutdown()).await.unwrap();
    let status = client.wait_exit().await;
    assert!(
        client.stderr_text().contains("DONE\n"),
        "s_client did not close"
    );
    assert!(status.success(), "s_client: {status}");
    assert!(
        client.received(&first) == sent,
        "s_client printed more than we sent"
    );
}

async fn bounded(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(WHOLE_TEST, test)
        .await
        .expect("the whole test took too long");
}

/// One `#[tokio::test]` per line: `NAME: ROLE(SUITE, EXTRA)`, bounded by
/// [`WHOLE_TEST`]; comments and doc comments go with the tests.
macro_rules! interop_tests {
    ($($(#[$doc:meta])* $name:ident: $role:ident($suite:expr, $extra:expr);)*) => {
        $(
            $(#[$doc])*
            #[tokio::test]
            async fn $name() {
                bounded($role($suite, $extra)).await;
            }
        )*
    };
}

interop_tests! {
    ours_as_client_with_openssl_aes_128_gcm: ours_as_client(SUITE_AES_128, &[]);
    ours_as_client_with_openssl_aes_256_gcm: ours_as_client(SUITE_AES_256, &[]);
    ours_as_client_with_openssl_chacha20_poly1305: ours_as_client(SUITE_CHACHA, &[]);
    ours_as_server_with_openssl_aes_128_gcm: ours_as_server(SUITE_AES_128, &[]);
    ours_as_server_with_openssl_aes_256_gcm: ours_as_server(SUITE_AES_256, &[]);
    ours_as_server_with_openssl_chacha20_poly1305: ours_as_server(SUITE_CHACHA, &[]);

    // OpenSSL pads every record it sends (data, KeyUpdate, tickets, alerts)
    // to a multiple of 4096 bytes, up to the largest a record may be: we
    // strip the padding to find the content type.
    ours_as_client_with_openssl_padding_its_records:
        ours_as_client(SUITE_AES_256, &["-record_padding", "4096"]);
    ours_as_server_with_openssl_padding_its_records:
        ours_as_server(SUITE_CHACHA, &["-record_padding", "4096"]);

    // OpenSSL sends records of at most 512 bytes: a read spans many records.
    // (s_server sends no session tickets here: see the next test.)
    ours_as_client_with_openssl_sending_small_records:
        ours_as_client(SUITE_CHACHA, &["-max_send_frag", "512", "-num_tickets", "0"]);
    ours_as_server_with_openssl_sending_small_records:
        ours_as_server(SUITE_AES_128, &["-max_send_frag", "512"]);

    /// With records of at most 512 bytes, s_server's NewSessionTicket messages
    /// (about 650 bytes each) arrive split across two records, which RFC 8446
    /// 5.1 allows ("Handshake messages MAY be ... fragmented across several
    /// records"). twoway's former record layer refused them; rustls joins them.
    ours_as_client_reads_session_tickets_split_across_records:
        ours_as_client(SUITE_AES_128, &["-max_send_frag", "512"]);
}

//! Audit (audit2) of common/src/outside/tcp/record/secure against rustls 0.23.46's unbuffered
//! state machine. The peer is rustls's buffered connection (tokio-rustls);
//! where the peer must send records rustls would never produce (a handshake
//! message split over records), the test takes the peer's traffic keys
//! (dangerous_extract_secrets, enabled on the peer's copy of the config) and seals the
//! records itself, as any authenticated peer with its own TLS stack can.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::cipher::{MessageEncrypter, OutboundChunks, OutboundPlainMessage};
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::error::Elapsed;
use twoway_common::outside::tcp::record::secure::{self, SecureStream};
use twoway_tests::loopback::{is_bad_record_mac_alert, unsealed_record, TlsPki as Pki};

/// Seals TLS 1.3 records under a peer's extracted send keys.
struct Forger {
    enc: Box<dyn MessageEncrypter>,
    seq: u64,
}

impl Forger {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Self {
        use rustls::crypto::aws_lc_rs::cipher_suite as cs;
        let (suite, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (cs::TLS13_AES_256_GCM_SHA384, key, iv)
            }
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (cs::TLS13_AES_128_GCM_SHA256, key, iv)
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (cs::TLS13_CHACHA20_POLY1305_SHA256, key, iv)
            }
            _ => panic!("unexpected suite"),
        };
        let enc = suite.tls13().unwrap().aead_alg.encrypter(key, iv);
        Self { enc, seq }
    }

    fn record(&mut self, typ: ContentType, payload: &[u8]) -> Vec<u8> {
        let msg = OutboundPlainMessage {
            typ,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        let sealed = self.enc.encrypt(msg, self.seq).unwrap();
        self.seq += 1;
        sealed.encode()
    }
}

/// Our end of the tests' connections.
type Ours = SecureStream<DuplexStream>;

/// Ours as the server; the peer (a rustls client) hands over its raw
/// transport and its send keys.
async fn ours_server_forging_client(p: &Pki) -> (Ours, DuplexStream, Forger) {
    let mut peer = (*p.client).clone();
    peer.enable_secret_extraction = true;
    let (ours, _, theirs) = p
        .ours_server_against(Arc::new(peer), tokio::io::duplex(1 << 20))
        .await;
    let (io, conn) = theirs.into_inner();
    let secrets = conn.dangerous_extract_secrets().unwrap();
    (ours, io, Forger::new(secrets.tx))
}

/// Ours as the client; the peer (a rustls server) hands over its raw
/// transport and its send keys.
async fn ours_client_forging_server(p: &Pki) -> (Ours, DuplexStream, Forger) {
    let mut peer = (*p.server).clone();
    peer.enable_secret_extraction = true;
    let (ours, theirs) = p
        .ours_client_against(Arc::new(peer), tokio::io::duplex(1 << 20))
        .await;
    let (io, conn) = theirs.into_inner();
    let secrets = conn.dangerous_extract_secrets().unwrap();
    (ours, io, Forger::new(secrets.tx))
}

/// Ours as the server, the peer a plain rustls client, over a pipe that
/// holds `pipe` bytes.
async fn ours_server(
    p: &Pki,
    pipe: usize,
) -> (Ours, tokio_rustls::client::TlsStream<DuplexStream>) {
    let (ours, _, theirs) = p
        .ours_server_against(p.client.clone(), tokio::io::duplex(pipe))
        .await;
    (ours, theirs)
}

/// The first record of a KeyUpdate split over two records: its 4-byte
/// handshake header (type 24, length 1) without the body. RFC 8446 5.1
/// allows a handshake message to span records.
const KEY_UPDATE_HEADER: [u8; 4] = [24, 0, 0, 1];

/// A read of ours that must find nothing within 100 ms.
async fn read_briefly(ours: &mut Ours) -> Result<std::io::Result<usize>, Elapsed> {
    let mut buf = [0u8; 64];
    tokio::time::timeout(Duration::from_millis(100), ours.read(&mut buf)).await
}

/// The peer sends the first record of a split KeyUpdate; in a task of its
/// own, our read takes it and waits for the rest, then `next` runs (the
/// relay's next step, named `what`). Fails the test if the task panicked.
async fn split_key_update_then<F, Fut>(
    mut ours: Ours,
    raw: &mut DuplexStream,
    forge: &mut Forger,
    what: &str,
    next: F,
) -> Ours
where
    F: FnOnce(Ours) -> Fut + Send + 'static,
    Fut: Future<Output = Ours> + Send,
{
    raw.write_all(&forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER))
        .await
        .unwrap();
    let end = tokio::spawn(async move {
        let read = read_briefly(&mut ours).await;
        assert!(read.is_err(), "nothing to read yet");
        next(ours).await
    })
    .await;
    assert!(
        !matches!(&end, Err(e) if e.is_panic()),
        "{what} panicked: {end:?}"
    );
    end.unwrap()
}

/// A write and flush of ours whose errors do not matter (the relay's
/// keepalive), giving the stream back.
async fn write_ignoring_errors(mut ours: Ours, bytes: &'static [u8]) -> Ours {
    let _ = ours.write_all(bytes).await;
    let _ = ours.flush().await;
    ours
}

/// The peer sends `bytes`; our read of them in a task of its own. A panic
/// in our read fails the test.
async fn our_read_of(mut ours: Ours, raw: &mut DuplexStream, bytes: &[u8]) -> std::io::Result<()> {
    raw.write_all(bytes).await.unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        ours.read(&mut buf).await.map(|_| ())
    });
    match task.await {
        Ok(read) => read,
        Err(e) => panic!("our read panicked: {e:?}"),
    }
}

/// `records` application-data records of 1 byte each (22 bytes on the wire).
fn tiny_records(forge: &mut Forger, records: usize) -> Vec<u8> {
    let mut wire = Vec::with_capacity(records * 22);
    for i in 0..records {
        wire.extend(forge.record(ContentType::ApplicationData, &[i as u8]));
    }
    wire
}

/// How long our read of `payload` bytes takes while a task of its own
/// writes `wire` to the transport.
async fn timed_read(
    ours: &mut Ours,
    mut raw: DuplexStream,
    wire: Vec<u8>,
    payload: usize,
) -> Duration {
    let writer = tokio::spawn(async move {
        raw.write_all(&wire).await.unwrap();
        raw
    });
    let start = Instant::now();
    let mut got = vec![0u8; payload];
    ours.read_exact(&mut got).await.unwrap();
    let took = start.elapsed();
    let _raw = writer.await.unwrap();
    took
}

/// Finding 1a: after the peer's first fragment of a handshake message, our
/// next write panics inside rustls (process_tls_records(&mut []) while the
/// handshake deframer points into the receive buffer).
#[tokio::test]
async fn a_split_handshake_message_then_our_write_does_not_panic() {
    let p = Pki::new();
    let (ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    // The relay's next keepalive or packet:
    let mut ours = split_key_update_then(ours, &mut raw, &mut forge, "our write", |ours| {
        write_ignoring_errors(ours, b"ping")
    })
    .await;
    // The rest of the KeyUpdate (update_not_requested) completes the message:
    // the stream takes it and stays usable.
    raw.write_all(&forge.record(ContentType::Handshake, &[0]))
        .await
        .unwrap();
    let read = read_briefly(&mut ours).await;
    assert!(
        read.is_err(),
        "the completed KeyUpdate is no error: {read:?}"
    );
    ours.write_all(b"pong").await.unwrap();
    ours.flush().await.unwrap();
}

/// Finding 1a, other direction: the server (a rustls peer with its own
/// record layer) splits a post-handshake message; the client's write panics.
#[tokio::test]
async fn a_split_handshake_message_from_the_server_then_our_write_does_not_panic() {
    let p = Pki::new();
    let (ours, mut raw, mut forge) = ours_client_forging_server(&p).await;
    split_key_update_then(ours, &mut raw, &mut forge, "our write", |ours| {
        write_ignoring_errors(ours, b"hello")
    })
    .await;
}

/// Finding 1b: a handshake fragment followed by application data is a
/// protocol error (RFC 8446 5.1); rustls reports it without an alert, and
/// our queue_alert then calls process_tls_records(&mut []) and panics, in
/// the read path, with no write needed.
#[tokio::test]
async fn a_split_handshake_message_interleaved_with_data_is_an_error_not_a_panic() {
    let p = Pki::new();
    let (ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    let mut bytes = forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER);
    bytes.extend(forge.record(ContentType::ApplicationData, b"x"));
    let read = our_read_of(ours, &mut raw, &bytes).await;
    assert!(read.is_err(), "interleaving must fail the read");
}

/// Finding 1c: a handshake fragment, then a record that does not
/// authenticate: rustls queues bad_record_mac, and queue_alert's second call
/// (&mut []) reaches the deframer and panics.
#[tokio::test]
async fn a_split_handshake_message_then_a_forged_record_is_an_error_not_a_panic() {
    let p = Pki::new();
    let (ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    let mut bytes = forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER);
    bytes.extend(unsealed_record());
    let read = our_read_of(ours, &mut raw, &bytes).await;
    assert!(read.is_err(), "a forged record must fail the read");
}

/// Finding 2: rustls's unbuffered connection returns after every record
/// and stream.rs:211 moves the rest of the receive buffer to its front each
/// time: reading a buffer of tiny records costs time quadratic in the
/// buffer's fill. Measured against a buffer of full records (same payload
/// per record count matters, so compare per-byte of wire).
#[tokio::test]
#[ignore = "timing: run with --release -- --ignored"]
async fn tiny_records_do_not_cost_quadratic_time() {
    let p = Pki::new();
    // Tiny records: 1 byte of data each (22 bytes on the wire).
    let records = 120_000usize;
    let (mut ours, raw, mut forge) = ours_server_forging_client(&p).await;
    let wire = tiny_records(&mut forge, records);
    let tiny_wire = wire.len();
    let tiny = timed_read(&mut ours, raw, wire, records).await;

    // Full records: the same number of wire bytes.
    let (mut ours, raw, mut forge) = ours_server_forging_client(&p).await;
    let mut wire = Vec::new();
    let chunk = vec![5u8; 16 * 1024];
    let mut payload = 0;
    while wire.len() < tiny_wire {
        wire.extend(forge.record(ContentType::ApplicationData, &chunk));
        payload += chunk.len();
    }
    let full_wire = wire.len();
    let full = timed_read(&mut ours, raw, wire, payload).await;
    eprintln!(
        "tiny records: {records} records, {tiny_wire} wire bytes in {tiny:?} ({:.1} MB/s of wire); \
         full records: {full_wire} wire bytes in {full:?} ({:.1} MB/s of wire)",
        tiny_wire as f64 / tiny.as_secs_f64() / 1e6,
        full_wire as f64 / full.as_secs_f64() / 1e6
    );
    // Per record, rustls's own work (one AEAD open of 17 bytes) is far
    // below a microsecond; 3 us per record is generous.
    assert!(
        tiny < Duration::from_micros(3) * records as u32,
        "{records} tiny records took {tiny:?}"
    );
}

/// Finding 3: poll_read writes the send buffer (stream.rs:367-369 and 337)
/// with the reader's Context, which replaces the writer's waker at the
/// transport. With the halves of tokio::io::split in two tasks (a common
/// pattern; the relay polls both in one task), a flush waiting for room
/// is never woken: its bytes go out through the reader, and the writer hangs.
#[tokio::test]
async fn a_writer_in_its_own_task_is_woken_when_the_reader_drains() {
    let p = Pki::new();
    let (ours, mut theirs) = ours_server(&p, 4096).await;
    let (mut r, mut w) = tokio::io::split(ours);
    let data = vec![7u8; 200_000];
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        w.flush().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(50)).await; // the writer waits for room
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        let _ = r.read(&mut buf).await; // the peer sends nothing: waits
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The peer reads everything.
    let mut got = vec![0u8; 200_000];
    tokio::time::timeout(Duration::from_secs(5), theirs.read_exact(&mut got))
        .await
        .expect("the peer got every byte")
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(3), writer).await;
    reader.abort();
    assert!(
        done.is_ok(),
        "all bytes reached the peer, but the writer's flush was never woken"
    );
}

/// Finding 4: data and close_notify that arrive with (right after) the
/// client's Finished fail our server's handshake with UnexpectedEof; the
/// data is lost. A stream would deliver it and then read as a clean end.
#[tokio::test]
async fn data_and_close_notify_right_after_the_handshake_are_delivered() {
    let p = Pki::new();
    let (a, b) = tokio::io::duplex(1 << 20);
    let connector = tokio_rustls::TlsConnector::from(p.client.clone());
    let client = async {
        let mut c = connector.connect(Pki::server_name(), b).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.shutdown().await.unwrap();
        c
    };
    let (ours, _theirs) = tokio::join!(secure::accept(p.server.clone(), a), client);
    let (mut ours, _) = ours.expect("handshake");
    let mut got = Vec::new();
    ours.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
}

/// Finding 2, scaling: per-record cost of tiny records against how many
/// arrive in one receive buffer fill (the transport is pre-filled).
#[tokio::test]
#[ignore = "timing: run with --release -- --ignored"]
async fn tiny_record_cost_by_fill() {
    let p = Pki::new();
    for records in [1_000usize, 4_000, 11_000] {
        let (mut ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
        let wire = tiny_records(&mut forge, records);
        raw.write_all(&wire).await.unwrap(); // fits the 1 MiB pipe: one fill
        let start = Instant::now();
        let mut got = vec![0u8; records];
        ours.read_exact(&mut got).await.unwrap();
        let t = start.elapsed();
        eprintln!(
            "{records} records ({} wire bytes) in one fill: {t:?}, {:.2} us/record",
            wire.len(),
            t.as_secs_f64() * 1e6 / records as f64
        );
    }
}

/// Docs check (PROTOCOL.md "a client that gets [a NewSessionTicket] ignores
/// it"): the client keeps the ticket (rustls's default in-memory resumption
/// store) and offers it on its next connection to that name; a server that
/// issues tickets resumes the session without the certificate exchange.
#[tokio::test]
async fn the_client_does_not_keep_tickets() {
    let p = Pki::new();
    let mut cfg = (*p.server).clone();
    cfg.send_tls13_tickets = 1;
    cfg.session_storage = rustls::server::ServerSessionMemoryCache::new(16);
    let cfg = Arc::new(cfg);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (mut ours, mut theirs) = p
            .ours_client_against(cfg.clone(), tokio::io::duplex(1 << 20))
            .await;
        kinds.push(theirs.get_ref().1.handshake_kind());
        theirs.write_all(b"x").await.unwrap();
        theirs.flush().await.unwrap();
        let mut buf = [0u8; 1];
        ours.read_exact(&mut buf).await.unwrap(); // takes the ticket too
    }
    assert_eq!(
        kinds[1],
        Some(rustls::HandshakeKind::Full),
        "second connection: {kinds:?}"
    );
}

/// Finding 1 (92b5a1c): SecureStream::refresh_traffic_keys also hands rustls
/// an empty slice.
#[tokio::test]
async fn a_split_handshake_message_then_refresh_traffic_keys_does_not_panic() {
    let p = Pki::new();
    let (ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    split_key_update_then(
        ours,
        &mut raw,
        &mut forge,
        "refresh_traffic_keys",
        |mut ours| async move {
            let _ = ours.refresh_traffic_keys();
            ours
        },
    )
    .await;
}

/// Docs check (stream.rs refresh_traffic_keys: "it goes out with the next
/// write or flush"): after a refresh and a flush, nothing reaches the peer.
#[tokio::test]
async fn refresh_traffic_keys_goes_out_with_a_flush() {
    let p = Pki::new();
    let (mut ours, mut raw, _forge) = ours_server_forging_client(&p).await;
    ours.refresh_traffic_keys().unwrap();
    ours.flush().await.unwrap();
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_millis(200), raw.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(n)) if n > 0),
        "no KeyUpdate record on the wire after flush"
    );
}

/// 8a5d52b: after a failure, Goal::Alert encodes one record. When a
/// KeyUpdate answer is pending (the peer asked, we have not written since),
/// rustls queues that answer in front of the alert, and the alert is lost.
#[tokio::test]
async fn the_fatal_alert_goes_out_when_a_key_update_answer_is_pending() {
    let p = Pki::new();
    let (mut ours, mut theirs) = ours_server(&p, 1 << 20).await;
    theirs.get_mut().1.refresh_traffic_keys().unwrap();
    theirs.write_all(b"x").await.unwrap();
    theirs.flush().await.unwrap();
    let mut one = [0u8; 1];
    ours.read_exact(&mut one).await.unwrap(); // KeyUpdate taken, answer pending
    let forged = unsealed_record();
    theirs.get_mut().0.write_all(&forged).await.unwrap();
    assert!(ours.read(&mut [0u8; 10]).await.is_err());
    let _ = ours.shutdown().await;
    let err = theirs.read(&mut [0u8; 10]).await.unwrap_err();
    assert!(is_bad_record_mac_alert(&err), "{err}");
}

//! Audit (audit2) of common/src/outside/tcp/record/secure against rustls 0.23.46's unbuffered
//! state machine. The peer is rustls's buffered connection (tokio-rustls);
//! where the peer must send records rustls would never produce (a handshake
//! message split over records), the test takes the peer's traffic keys
//! (dangerous_extract_secrets, enabled on the peer's copy of the config) and seals the
//! records itself, as any authenticated peer with its own TLS stack can.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::cipher::{MessageEncrypter, OutboundChunks, OutboundPlainMessage};
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
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

/// Ours as the server; the peer (a rustls client) hands over its raw
/// transport and its send keys.
async fn ours_server_forging_client(p: &Pki) -> (SecureStream<DuplexStream>, DuplexStream, Forger) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut peer = (*p.client).clone();
    peer.enable_secret_extraction = true;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(peer));
    let (ours, theirs) = tokio::join!(
        secure::accept(p.server.clone(), a),
        connector.connect(Pki::server_name(), b)
    );
    let (ours, _) = ours.unwrap();
    let (io, conn) = theirs.unwrap().into_inner();
    let secrets = conn.dangerous_extract_secrets().unwrap();
    (ours, io, Forger::new(secrets.tx))
}

/// Ours as the client; the peer (a rustls server) hands over its raw
/// transport and its send keys.
async fn ours_client_forging_server(p: &Pki) -> (SecureStream<DuplexStream>, DuplexStream, Forger) {
    let (a, b) = tokio::io::duplex(1 << 20);
    let mut peer = (*p.server).clone();
    peer.enable_secret_extraction = true;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(peer));
    let (ours, theirs) = tokio::join!(
        secure::connect(p.client.clone(), Pki::server_name(), a),
        acceptor.accept(b)
    );
    let ours = ours.unwrap();
    let (io, conn) = theirs.unwrap().into_inner();
    let secrets = conn.dangerous_extract_secrets().unwrap();
    (ours, io, Forger::new(secrets.tx))
}

/// The first record of a KeyUpdate split over two records: its 4-byte
/// handshake header (type 24, length 1) without the body. RFC 8446 5.1
/// allows a handshake message to span records.
const KEY_UPDATE_HEADER: [u8; 4] = [24, 0, 0, 1];

/// Finding 1a: after the peer's first fragment of a handshake message, our
/// next write panics inside rustls (process_tls_records(&mut []) while the
/// handshake deframer points into the receive buffer).
#[tokio::test]
async fn a_split_handshake_message_then_our_write_does_not_panic() {
    let p = Pki::new();
    let (mut ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    raw.write_all(&forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        // The read takes the fragment and waits for the rest.
        let read = tokio::time::timeout(Duration::from_millis(100), ours.read(&mut buf)).await;
        assert!(read.is_err(), "nothing to read yet");
        // The relay's next keepalive or packet:
        let _ = ours.write_all(b"ping").await;
        let _ = ours.flush().await;
        ours
    });
    let end = task.await;
    assert!(
        !matches!(&end, Err(e) if e.is_panic()),
        "our write panicked: {end:?}"
    );
    // The rest of the KeyUpdate (update_not_requested) completes the message:
    // the stream takes it and stays usable.
    let mut ours = end.unwrap();
    raw.write_all(&forge.record(ContentType::Handshake, &[0]))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_millis(100), ours.read(&mut buf)).await;
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
    let (mut ours, mut raw, mut forge) = ours_client_forging_server(&p).await;
    raw.write_all(&forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(100), ours.read(&mut buf)).await;
        assert!(read.is_err(), "nothing to read yet");
        let _ = ours.write_all(b"hello").await;
        let _ = ours.flush().await;
    });
    let end = task.await;
    assert!(
        !matches!(&end, Err(e) if e.is_panic()),
        "our write panicked: {end:?}"
    );
}

/// Finding 1b: a handshake fragment followed by application data is a
/// protocol error (RFC 8446 5.1); rustls reports it without an alert, and
/// our queue_alert then calls process_tls_records(&mut []) and panics, in
/// the read path, with no write needed.
#[tokio::test]
async fn a_split_handshake_message_interleaved_with_data_is_an_error_not_a_panic() {
    let p = Pki::new();
    let (mut ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    let mut bytes = forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER);
    bytes.extend(forge.record(ContentType::ApplicationData, b"x"));
    raw.write_all(&bytes).await.unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        ours.read(&mut buf).await.map(|_| ())
    });
    match task.await {
        Ok(read) => assert!(read.is_err(), "interleaving must fail the read"),
        Err(e) => panic!("our read panicked: {e:?}"),
    }
}

/// Finding 1c: a handshake fragment, then a record that does not
/// authenticate: rustls queues bad_record_mac, and queue_alert's second call
/// (&mut []) reaches the deframer and panics.
#[tokio::test]
async fn a_split_handshake_message_then_a_forged_record_is_an_error_not_a_panic() {
    let p = Pki::new();
    let (mut ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    let mut bytes = forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER);
    bytes.extend(unsealed_record());
    raw.write_all(&bytes).await.unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        ours.read(&mut buf).await.map(|_| ())
    });
    match task.await {
        Ok(read) => assert!(read.is_err(), "a forged record must fail the read"),
        Err(e) => panic!("our read panicked: {e:?}"),
    }
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
    let (mut ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    let mut wire = Vec::with_capacity(records * 22);
    for i in 0..records {
        wire.extend(forge.record(ContentType::ApplicationData, &[i as u8]));
    }
    let tiny_wire = wire.len();
    let writer = tokio::spawn(async move {
        raw.write_all(&wire).await.unwrap();
        raw
    });
    let start = Instant::now();
    let mut got = vec![0u8; records];
    ours.read_exact(&mut got).await.unwrap();
    let tiny = start.elapsed();
    let _raw = writer.await.unwrap();

    // Full records: the same number of wire bytes.
    let (mut ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    let mut wire = Vec::new();
    let chunk = vec![5u8; 16 * 1024];
    let mut payload = 0;
    while wire.len() < tiny_wire {
        wire.extend(forge.record(ContentType::ApplicationData, &chunk));
        payload += chunk.len();
    }
    let full_wire = wire.len();
    let writer = tokio::spawn(async move {
        raw.write_all(&wire).await.unwrap();
        raw
    });
    let start = Instant::now();
    let mut got = vec![0u8; payload];
    ours.read_exact(&mut got).await.unwrap();
    let full = start.elapsed();
    let _raw = writer.await.unwrap();
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
    let (a, b) = tokio::io::duplex(4096);
    let connector = tokio_rustls::TlsConnector::from(p.client.clone());
    let (ours, theirs) = tokio::join!(
        secure::accept(p.server.clone(), a),
        connector.connect(Pki::server_name(), b)
    );
    let (ours, _) = ours.unwrap();
    let mut theirs = theirs.unwrap();
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
        let mut wire = Vec::new();
        for i in 0..records {
            wire.extend(forge.record(ContentType::ApplicationData, &[i as u8]));
        }
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
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (ours, theirs) = tokio::join!(
            secure::connect(p.client.clone(), Pki::server_name(), a),
            acceptor.accept(b)
        );
        let mut ours = ours.unwrap();
        let mut theirs = theirs.unwrap();
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
    let (mut ours, mut raw, mut forge) = ours_server_forging_client(&p).await;
    raw.write_all(&forge.record(ContentType::Handshake, &KEY_UPDATE_HEADER))
        .await
        .unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_millis(100), ours.read(&mut buf)).await;
        assert!(read.is_err(), "nothing to read yet");
        let _ = ours.refresh_traffic_keys();
    });
    let end = task.await;
    assert!(
        !matches!(&end, Err(e) if e.is_panic()),
        "refresh_traffic_keys panicked: {end:?}"
    );
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
    let (a, b) = tokio::io::duplex(1 << 20);
    let connector = tokio_rustls::TlsConnector::from(p.client.clone());
    let (ours, theirs) = tokio::join!(
        secure::accept(p.server.clone(), a),
        connector.connect(Pki::server_name(), b)
    );
    let (mut ours, _) = ours.unwrap();
    let mut theirs = theirs.unwrap();
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

//! twoway's TLS stream (twoway_common::outside::tcp::record::secure: rustls's unbuffered
//! connection driven through our buffers) against rustls's standard buffered
//! connection (through tokio-rustls) as the reference peer: data both ways in many record sizes, key updates asked
//! for by either side, close_notify, and alerts. No root, no network: an
//! in-memory duplex pipe.

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use twoway_common::outside::tcp::record::secure;
use twoway_tests::loopback::{is_bad_record_mac_alert, unsealed_record, TlsPki as Pki};

/// An in-memory pipe: (our end, the peer's end).
fn duplex() -> (DuplexStream, DuplexStream) {
    tokio::io::duplex(64 * 1024)
}

/// A pattern that shows misplaced or reordered bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes `data` in `chunk`-sized writes on one side and reads it all back on the other.
async fn send<W, R>(w: &mut W, r: &mut R, data: &[u8], chunk: usize)
where
    W: AsyncWriteExt + Unpin,
    R: AsyncReadExt + Unpin,
{
    let write = async {
        for part in data.chunks(chunk) {
            w.write_all(part).await.unwrap();
        }
        w.flush().await.unwrap();
    };
    let read = async {
        let mut got = vec![0u8; data.len()];
        r.read_exact(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert!(got == data, "data arrived changed");
}

#[tokio::test]
async fn data_both_ways_with_rustls_as_the_server() {
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_client(duplex()).await;
    for (len, chunk) in [
        (1, 1),
        (5000, 7),
        (100_000, 16_384),
        (300_000, 65_536),
        (70_000, 3),
    ] {
        send(&mut ours, &mut theirs, &pattern(len, 1), chunk).await;
        send(&mut theirs, &mut ours, &pattern(len, 2), chunk).await;
    }
}

#[tokio::test]
async fn data_both_ways_with_rustls_as_the_client() {
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_server(duplex()).await;
    for (len, chunk) in [(1, 1), (5000, 7), (100_000, 16_384), (300_000, 65_536)] {
        send(&mut theirs, &mut ours, &pattern(len, 3), chunk).await;
        send(&mut ours, &mut theirs, &pattern(len, 4), chunk).await;
    }
    // Small reads take a large record in pieces.
    let data = pattern(40_000, 5);
    theirs.write_all(&data).await.unwrap();
    theirs.flush().await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 100];
    while got.len() < data.len() {
        let n = ours.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data);
}

#[tokio::test]
async fn a_key_update_asked_by_rustls_is_answered() {
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_server(duplex()).await;
    send(&mut ours, &mut theirs, &pattern(1000, 6), 1000).await;
    // rustls sends KeyUpdate(update_requested): we switch our receive key,
    // answer with our own KeyUpdate and switch our send key.
    theirs.get_mut().1.refresh_traffic_keys().unwrap();
    send(&mut theirs, &mut ours, &pattern(50_000, 7), 4096).await;
    send(&mut ours, &mut theirs, &pattern(50_000, 8), 4096).await;
    theirs.get_mut().1.refresh_traffic_keys().unwrap();
    send(&mut theirs, &mut ours, &pattern(10, 9), 10).await;
    send(&mut ours, &mut theirs, &pattern(10, 10), 10).await;
}

/// `w` writes `data` and closes (close_notify); `r` reads exactly `data`, then the end.
async fn last_words<W, R>(w: &mut W, r: &mut R, data: &[u8])
where
    W: AsyncWriteExt + Unpin,
    R: AsyncReadExt + Unpin,
{
    w.write_all(data).await.unwrap();
    w.shutdown().await.unwrap();
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, data);
}

#[tokio::test]
async fn close_notify_ends_the_stream_cleanly_both_ways() {
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_client(duplex()).await;
    last_words(&mut ours, &mut theirs, b"last words").await;

    let (mut ours, mut theirs) = p.ours_server(duplex()).await;
    last_words(&mut theirs, &mut ours, b"bye").await;
}

#[tokio::test]
async fn a_forged_record_ends_the_stream_with_an_error() {
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_client(duplex()).await;
    send(&mut theirs, &mut ours, b"real", 4).await;
    // Bypass rustls: a well-formed header around bytes nobody sealed.
    let forged = unsealed_record();
    theirs.get_mut().0.write_all(&forged).await.unwrap();
    let err = ours.read(&mut [0u8; 100]).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("decrypt"), "{text}");
    // The peer is told why: a fatal bad_record_mac alert, then the end.
    let err = theirs.read(&mut [0u8; 100]).await.unwrap_err();
    assert!(is_bad_record_mac_alert(&err), "{err}");
}

#[tokio::test]
async fn a_connection_closed_without_close_notify_is_an_error() {
    // RFC 8446 6.1: without close_notify the data may have been cut short.
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_server(duplex()).await;
    send(&mut theirs, &mut ours, b"all of it?", 10).await;
    theirs.get_mut().0.shutdown().await.unwrap();
    let err = ours.read(&mut [0u8; 100]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
}

#[tokio::test]
async fn key_update_requests_without_data_are_limited() {
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_server(duplex()).await;
    // Up to the limit: followed (and answered once), data still flows.
    for _ in 0..32 {
        theirs.get_mut().1.refresh_traffic_keys().unwrap();
    }
    send(&mut theirs, &mut ours, b"after 32", 8).await;
    send(&mut ours, &mut theirs, b"answered", 8).await;
    // Past it, with no data in between: the connection ends.
    for _ in 0..33 {
        theirs.get_mut().1.refresh_traffic_keys().unwrap();
    }
    theirs.flush().await.unwrap();
    let err = ours.read(&mut [0u8; 100]).await.unwrap_err();
    assert!(err.to_string().contains("KeyUpdate"), "{err}");
    // And it stays ended.
    assert!(ours.read(&mut [0u8; 100]).await.is_err());
}

#[tokio::test]
async fn data_sent_right_behind_the_finished_message_arrives() {
    // In one current-thread runtime the client's Finished and its first data
    // are both in the pipe before our server reads again: the handshake loop
    // must keep what came behind the handshake.
    let p = Pki::new();
    let (a, b) = duplex();
    let connector = tokio_rustls::TlsConnector::from(p.client.clone());
    let (ours, theirs) = tokio::join!(secure::accept(p.server.clone(), a), async {
        let mut c = connector.connect(Pki::server_name(), b).await.unwrap();
        c.write_all(b"right behind").await.unwrap();
        c.flush().await.unwrap();
        c
    });
    let (mut ours, _) = ours.unwrap();
    let mut got = [0u8; 12];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"right behind");
    drop(theirs);
}

#[tokio::test]
async fn a_stream_cut_inside_a_record_is_an_error() {
    let p = Pki::new();
    let (mut ours, mut theirs) = p.ours_client(duplex()).await;
    // A record header announcing 100 bytes, then the connection ends.
    theirs
        .get_mut()
        .0
        .write_all(&[23, 3, 3, 0, 100, 1, 2, 3])
        .await
        .unwrap();
    theirs.get_mut().0.shutdown().await.unwrap();
    let err = ours.read(&mut [0u8; 100]).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
}

//! The receive room of the data phase's TLS stream: small while a session
//! is idle (most of a server's sessions are), grown while bulk data arrives,
//! and given back once the bulk is over, with every byte delivered intact.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use twoway_common::outside::tcp::record::secure;
use twoway_tests::loopback::TlsPki as Pki;

/// One TLS record's worth of room (header, 16 KiB content, expansion).
const ONE_RECORD: usize = 5 + (1 << 14) + 256;

#[tokio::test]
async fn the_receive_room_grows_for_bulk_and_shrinks_when_idle() {
    let p = Pki::new();
    let (a, b) = tokio::io::duplex(1 << 20);
    let connector = tokio_rustls::TlsConnector::from(Arc::new((*p.client).clone()));
    let (ours, theirs) = tokio::join!(
        secure::accept(p.server.clone(), a),
        connector.connect(Pki::server_name(), b)
    );
    let (mut ours, _) = ours.unwrap();
    let mut peer = theirs.unwrap();
    assert!(ours.receive_room() <= ONE_RECORD, "{}", ours.receive_room());

    // Bulk: 4 MiB in large writes; the room grows to read many records at once.
    let bulk: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let sent = bulk.clone();
    let writer = tokio::spawn(async move {
        peer.write_all(&sent).await.unwrap();
        peer.flush().await.unwrap();
        peer
    });
    let mut got = vec![0u8; bulk.len()];
    let mut largest = 0;
    let mut at = 0;
    while at < got.len() {
        let n = ours.read(&mut got[at..]).await.unwrap();
        assert!(n > 0, "stream ended early at {at}");
        at += n;
        largest = largest.max(ours.receive_room());
    }
    assert!(got == bulk, "bulk data arrived changed");
    assert!(largest > 4 * ONE_RECORD, "the room never grew: {largest}");
    let mut peer = writer.await.unwrap();

    // Then small messages one at a time (keepalives, a ping): the room shrinks.
    for i in 0..16u8 {
        peer.write_all(&[i; 64]).await.unwrap();
        peer.flush().await.unwrap();
        let mut small = [0u8; 64];
        ours.read_exact(&mut small).await.unwrap();
        assert_eq!(small, [i; 64]);
    }
    assert!(
        ours.receive_room() <= ONE_RECORD,
        "the room stayed at {} after the bulk",
        ours.receive_room()
    );
}

//! The TLS key exchange (issue 10): two twoway peers, built with the
//! project's own configs (`twoway_common::tls`), agree on the hybrid
//! post-quantum group X25519MLKEM768, in both roles of twoway's own handshake
//! driver (`secure::connect` / `secure::accept`) against rustls; both configs
//! offer it first; and a peer without ML-KEM still gets X25519. Over TCP on
//! 127.0.0.1, no root.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::NamedGroup;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use twoway_common::outside::tcp::record::secure;
use twoway_tests::loopback::TlsPki as Pki;

/// A connected pair of TCP streams on 127.0.0.1: (client end, server end).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
}

/// Asserts that the group the handshake agreed on is X25519MLKEM768.
#[track_caller]
fn assert_hybrid(group: Option<&dyn rustls::crypto::SupportedKxGroup>, who: &str) {
    assert_eq!(
        group.map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768),
        "{who}"
    );
}

/// Writes `data` on `from` and asserts that `to` reads the same bytes.
async fn crosses(
    from: &mut (impl AsyncWrite + Unpin),
    to: &mut (impl AsyncRead + Unpin),
    data: &[u8],
) {
    from.write_all(data).await.unwrap();
    from.flush().await.unwrap();
    let mut got = vec![0u8; data.len()];
    to.read_exact(&mut got).await.unwrap();
    assert_eq!(got, data);
}

fn names(groups: &[&'static dyn rustls::crypto::SupportedKxGroup]) -> Vec<NamedGroup> {
    groups.iter().map(|g| g.name()).collect()
}

#[test]
fn both_configs_offer_the_hybrid_group_first() {
    let p = Pki::new();
    let order = vec![
        NamedGroup::X25519MLKEM768,
        NamedGroup::X25519,
        NamedGroup::secp256r1,
        NamedGroup::secp384r1,
    ];
    assert_eq!(names(&p.client.crypto_provider().kx_groups), order);
    assert_eq!(names(&p.server.crypto_provider().kx_groups), order);
}

#[tokio::test]
async fn twoway_client_and_server_negotiate_x25519mlkem768() {
    let p = Pki::new();

    // twoway's client handshake (secure::connect) against rustls serving
    // with twoway's server config: the group as the server sees it.
    let (mut ours, mut theirs) = p.ours_client(tcp_pair().await).await;
    let group = theirs.get_ref().1.negotiated_key_exchange_group();
    assert_hybrid(group, "twoway client -> server");
    crosses(&mut ours, &mut theirs, b"hello").await;

    // twoway's server handshake (secure::accept) against rustls connecting
    // with twoway's client config: the group as the client sees it.
    let (c, s) = tcp_pair().await;
    let (mut ours, mut theirs) = p.ours_server((s, c)).await;
    let group = theirs.get_ref().1.negotiated_key_exchange_group();
    assert_hybrid(group, "client -> twoway server");
    crosses(&mut theirs, &mut ours, b"hello").await;
}

#[tokio::test]
async fn a_client_without_ml_kem_gets_x25519() {
    let p = Pki::new();
    let classical = rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let config = twoway_tests::loopback::alice_client_with(&p.dir, classical);
    let (c, s) = tcp_pair().await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (ours, theirs) = tokio::join!(
        secure::accept(p.server.clone(), s),
        connector.connect(Pki::server_name(), c)
    );
    let ((mut ours, _peer), mut theirs) = (ours.unwrap(), theirs.unwrap());
    let group = theirs.get_ref().1.negotiated_key_exchange_group();
    assert_eq!(group.map(|g| g.name()), Some(NamedGroup::X25519));
    crosses(&mut theirs, &mut ours, b"classical").await;
}

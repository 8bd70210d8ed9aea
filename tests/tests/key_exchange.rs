//! The TLS key exchange (issue 10): two twoway peers, built with the
//! project's own configs (`twoway_common::tls`), agree on the hybrid
//! post-quantum group X25519MLKEM768, in both roles of twoway's own handshake
//! driver (`secure::connect` / `secure::accept`) against rustls; both configs
//! offer it first; and a peer without ML-KEM still gets X25519. Over TCP on
//! 127.0.0.1, no root.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs::kx_group;
use rustls::{NamedGroup, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use twoway_common::outside::tcp::record::secure;
use twoway_common::tls;
use twoway_tests::loopback::TlsPki as Pki;

/// A connected pair of TCP streams on 127.0.0.1: (client end, server end).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), server.unwrap().0)
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
    let (c, s) = tcp_pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(p.server.clone());
    let (ours, theirs) = tokio::join!(
        secure::connect(p.client.clone(), Pki::server_name(), c),
        acceptor.accept(s)
    );
    let (mut ours, mut theirs) = (ours.unwrap(), theirs.unwrap());
    let group = theirs.get_ref().1.negotiated_key_exchange_group();
    assert_eq!(
        group.map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768),
        "twoway client -> server"
    );
    ours.write_all(b"hello").await.unwrap();
    ours.flush().await.unwrap();
    let mut got = [0u8; 5];
    theirs.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");

    // twoway's server handshake (secure::accept) against rustls connecting
    // with twoway's client config: the group as the client sees it.
    let (c, s) = tcp_pair().await;
    let connector = tokio_rustls::TlsConnector::from(p.client.clone());
    let (ours, theirs) = tokio::join!(
        secure::accept(p.server.clone(), s),
        connector.connect(Pki::server_name(), c)
    );
    let ((mut ours, _peer), mut theirs) = (ours.unwrap(), theirs.unwrap());
    let group = theirs.get_ref().1.negotiated_key_exchange_group();
    assert_eq!(
        group.map(|g| g.name()),
        Some(NamedGroup::X25519MLKEM768),
        "client -> twoway server"
    );
    theirs.write_all(b"hello").await.unwrap();
    theirs.flush().await.unwrap();
    let mut got = [0u8; 5];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");
}

#[tokio::test]
async fn a_client_without_ml_kem_gets_x25519() {
    let p = Pki::new();
    let mut roots = RootCertStore::empty();
    for cert in tls::load_certs(&p.file("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let classical = rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(classical))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            tls::load_certs(&p.file("alice.pem")).unwrap(),
            tls::load_key(&p.file("alice.key")).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![tls::ALPN.to_vec()];
    let (c, s) = tcp_pair().await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let (ours, theirs) = tokio::join!(
        secure::accept(p.server.clone(), s),
        connector.connect(Pki::server_name(), c)
    );
    let ((mut ours, _peer), mut theirs) = (ours.unwrap(), theirs.unwrap());
    let group = theirs.get_ref().1.negotiated_key_exchange_group();
    assert_eq!(group.map(|g| g.name()), Some(NamedGroup::X25519));
    theirs.write_all(b"classical").await.unwrap();
    theirs.flush().await.unwrap();
    let mut got = [0u8; 9];
    ours.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"classical");
}

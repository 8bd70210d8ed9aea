//! The TLS stream after the handshake (`twoway_common::outside::tcp::record::secure`), as the
//! server reads it. Each input is a sequence of operations on a real session
//! (twoway client and server, a full handshake over an in-memory pipe): the
//! client sends data through TLS, or writes arbitrary bytes beneath TLS, or
//! closes with close_notify, or cuts the connection without it. After each
//! operation the server reads whatever is ready. Checked:
//!
//! - nothing panics or loops;
//! - the server only ever delivers bytes the client sent through TLS, in
//!   order, and none sent after the first foreign bytes;
//! - without foreign bytes, everything sent arrives, close_notify reads as
//!   end of stream, and a cut without close_notify as an error;
//! - after an error, reads keep failing.
#![no_main]

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};
use twoway_common::outside::tcp::record::secure::{self, SecureStream};
use twoway_common::tls::{self, ServerTlsFiles};
use twoway_server::pki;

/// The TLS configs of both ends, from a PKI made once per process.
fn configs() -> &'static (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    static CONFIGS: OnceLock<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> =
        OnceLock::new();
    CONFIGS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("twoway-fuzz-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        pki::init(&pki::InitOptions {
            dir: dir.clone(),
            name: "vpn.test".into(),
            ips: vec![],
            port: 4433,
            days: 30,
        })
        .expect("pki init");
        pki::issue(&pki::IssueOptions {
            dir: dir.clone(),
            identity: "alice".into(),
            days: 30,
            out: None,
        })
        .expect("pki issue");
        let f = |name: &str| -> PathBuf { dir.join(name) };
        let server = tls::server_config(&ServerTlsFiles {
            ca: f("ca.pem"),
            cert: f("server.pem"),
            key: f("server.key"),
            crl: f("crl.pem"),
        })
        .expect("server config");
        let client =
            tls::client_config(&f("ca.pem"), &f("alice.pem"), &f("alice.key")).expect("client config");
        (server, client)
    })
}

/// Polls `fut` once; the pipe is in memory, so what is ready is ready now.
fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(fut).poll(&mut cx)
}

/// Reads what the server has ready: the bytes, and how reading ended.
enum Ended {
    Waiting,
    Eof,
    Error,
}

fn read_ready(server: &mut SecureStream<DuplexStream>, got: &mut Vec<u8>) -> Ended {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let mut room = [0u8; 4096];
        let mut buf = ReadBuf::new(&mut room);
        match std::pin::Pin::new(&mut *server).poll_read(&mut cx, &mut buf) {
            Poll::Pending => return Ended::Waiting,
            Poll::Ready(Err(_)) => return Ended::Error,
            Poll::Ready(Ok(())) if buf.filled().is_empty() => return Ended::Eof,
            Poll::Ready(Ok(())) => got.extend_from_slice(buf.filled()),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let (server_config, client_config) = configs();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let (a, b) = tokio::io::duplex(4 << 20);
        let name = tls::server_name("vpn.test").unwrap();
        let (client, server) = tokio::join!(
            secure::connect(client_config.clone(), name, a),
            secure::accept(server_config.clone(), b)
        );
        let (mut client, (mut server, _)) = (client.unwrap(), server.unwrap());

        let mut sent = Vec::new(); // through TLS, before any foreign bytes
        let mut got = Vec::new();
        let mut foreign = false;
        let mut closed = false; // close_notify sent
        let mut cut = false; // transport shut without close_notify
        let mut failed = false;
        let mut ops = input;
        while let [op, len, rest @ ..] = ops {
            let len = usize::from(*len) * 64 + usize::from(op >> 3);
            let (data, rest) = rest.split_at(len.min(rest.len()));
            ops = rest;
            match op & 7 {
                0..=2 if !closed && !cut => {
                    let ready = poll_once(async {
                        client.write_all(data).await?;
                        client.flush().await
                    });
                    assert!(matches!(ready, Poll::Ready(Ok(()))), "client write");
                    if !foreign {
                        sent.extend_from_slice(data);
                    }
                }
                3 | 4 if !closed && !cut => {
                    let raw = client.get_mut();
                    let ready = poll_once(raw.write_all(data));
                    assert!(matches!(ready, Poll::Ready(Ok(()))), "raw write");
                    foreign |= !data.is_empty();
                }
                5 if !closed && !cut => {
                    let ready = poll_once(client.shutdown());
                    assert!(matches!(ready, Poll::Ready(Ok(()))), "close_notify");
                    closed = true;
                }
                6 if !closed && !cut => {
                    let ready = poll_once(client.get_mut().shutdown());
                    assert!(matches!(ready, Poll::Ready(Ok(()))), "cut");
                    cut = true;
                }
                _ => {}
            }
            let ended = read_ready(&mut server, &mut got);
            assert!(sent.starts_with(&got), "the server delivered bytes nobody sent");
            match ended {
                Ended::Error => failed = true,
                Ended::Eof => {
                    assert!(!failed, "a failed stream read as a clean end");
                    assert!(closed, "end of stream without close_notify");
                }
                Ended::Waiting => assert!(!failed, "a failed stream came back"),
            }
            if !foreign {
                assert_eq!(got.len(), sent.len(), "sent data did not arrive");
                if cut && !closed {
                    assert!(failed, "a cut without close_notify read as a clean end");
                }
            }
        }
    });
});

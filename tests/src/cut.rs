//! A TCP relay on loopback that a test can cut and mend: what a network
//! partition between one node and etcd looks like to that node (its
//! connections die, new ones are refused), while other nodes still reach
//! etcd directly.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay from a local port to `target`; dropped, it stops relaying.
#[derive(Debug)]
pub struct Cut {
    local: SocketAddr,
    /// `true` while cut: live connections end, new ones are closed at once.
    severed: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Cut {
    /// Relays 127.0.0.1:(a free port) to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("local address");
        let (severed, _) = watch::channel(false);
        let severed = Arc::new(severed);
        let task = tokio::spawn({
            let severed = severed.clone();
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if *severed.borrow() {
                        continue; // dropped: closed at once
                    }
                    let mut cut = severed.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = TcpStream::connect(target).await else {
                            return;
                        };
                        let mut inbound = inbound;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.wait_for(|cut| *cut) => {}
                        }
                    });
                }
            }
        });
        Self {
            local,
            severed,
            task,
        }
    }

    /// The URL to give a client instead of `http://target`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }

    /// Ends every relayed connection and refuses new ones.
    pub fn sever(&self) {
        self.severed.send_replace(true);
    }

    /// Relays again.
    pub fn mend(&self) {
        self.severed.send_replace(false);
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        self.task.abort();
        self.severed.send_replace(true);
    }
}

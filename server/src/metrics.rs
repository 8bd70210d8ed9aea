//! The optional Prometheus endpoint (`[metrics] listen`): sessions, bytes,
//! connection outcomes and dropped packets, read from the server at scrape time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use twoway_common::relay::DropReason;

use crate::server::Server;

#[derive(Debug)]
struct ServerCollector(Weak<Server>);

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for ServerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(server) = self.0.upgrade() else {
            return Ok(());
        };
        let t = server.traffic();
        let g = ConstGauge::new(server.registry.len() as i64);
        g.encode(e.encode_descriptor(
            "twoway_sessions",
            "Live sessions",
            None,
            g.metric_type(),
        )?)?;
        let started = server.stats.sessions_started.load(Ordering::Relaxed);
        counter(
            &mut e,
            "twoway_sessions_started",
            "Sessions started since the server started",
            started,
        )?;
        counter(
            &mut e,
            "twoway_rx_bytes",
            "Bytes received from clients and delivered inside",
            t.rx_bytes,
        )?;
        counter(
            &mut e,
            "twoway_tx_bytes",
            "Bytes sent to clients",
            t.tx_bytes,
        )?;
        let refusals = server.stats.refusals();
        let probe = ConstCounter::new(0u64);
        let mut family = e.encode_descriptor(
            "twoway_connections_refused",
            "Connections that did not become a session, by reason",
            None,
            probe.metric_type(),
        )?;
        for (reason, n) in &refusals {
            let labels = [("reason", *reason)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let mut family = e.encode_descriptor(
            "twoway_packets_dropped",
            "Packets dropped, by reason",
            None,
            probe.metric_type(),
        )?;
        for r in DropReason::ALL {
            let labels = [("reason", r.as_str())];
            ConstCounter::new(t.dropped[r as usize]).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Serves `GET /metrics` in the Prometheus text format until `cancel`.
pub async fn serve(listener: TcpListener, server: &Arc<Server>, cancel: CancellationToken) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerCollector(Arc::downgrade(server))));
    let registry = Arc::new(registry);
    loop {
        let (mut stream, _) = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => { tokio::time::sleep(Duration::from_millis(100)).await; continue; }
            },
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 2048];
            let n = match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut req)).await
            {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&req[..n]);
            let response = if head.starts_with("GET /metrics ") {
                let mut body = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut body, &registry);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

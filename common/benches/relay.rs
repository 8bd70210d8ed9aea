//! The relay without root or network: two relays joined by an in-memory
//! stream, each with an in-memory device; packets injected into one device
//! come out of the other. Measures the relay's own per-packet cost
//! (queueing, coalescing, framing, decoding), not TLS or the kernel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokio_util::sync::CancellationToken;
use twoway_common::inside::memory::{self, MemoryPeer};
use twoway_common::message::{Bye, ByeReason};
use twoway_common::outside::tcp::Outside;
use twoway_common::queue;
use twoway_common::relay::{self, Counters, Keepalive, Session};

const PACKETS: usize = 20_000;
const SIZE: usize = 1400;

fn session() -> Session {
    Session {
        keepalive: Keepalive {
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(120),
        },
        offload: false,
    }
}

/// Starts one side: its device reader feeding the queue, and the relay.
fn side(stream: tokio::io::DuplexStream, stop: CancellationToken) -> MemoryPeer {
    let (inside, peer) = memory::pair(4096);
    let inside = Arc::new(inside);
    let (tx, mut rx) = queue::channel(512, 1 << 20);
    let reader = inside.clone();
    tokio::spawn(async move { twoway_common::inside::reader::to_queue(&*reader, tx, 2048).await });
    tokio::spawn(async move {
        let counters = Counters::default();
        let stopping = async move {
            stop.cancelled().await;
            Bye::new(ByeReason::Shutdown, "bench done")
        };
        relay::relay(
            Outside::new(stream),
            &*inside,
            &mut rx,
            |_| Ok(()),
            &counters,
            session(),
            None,
            relay::Updates::Off,
            stopping,
        )
        .await
    });
    peer
}

fn relay_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("relay");
    group.throughput(Throughput::Bytes((PACKETS * SIZE) as u64));
    group.sample_size(10);
    group.bench_function("memory_to_memory_1400B", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (a, z) = tokio::io::duplex(256 * 1024);
                    let stop = CancellationToken::new();
                    let left = side(a, stop.clone());
                    let mut right = side(z, stop.clone());
                    let packet = Bytes::from(vec![0x45u8; SIZE]);
                    let start = Instant::now();
                    let inject = left.inject.clone();
                    tokio::spawn(async move {
                        for _ in 0..PACKETS {
                            if inject.send(packet.clone()).await.is_err() {
                                break;
                            }
                        }
                    });
                    for _ in 0..PACKETS {
                        right.written.recv().await.expect("packet");
                    }
                    total += start.elapsed();
                    stop.cancel();
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, relay_bench);
criterion_main!(benches);

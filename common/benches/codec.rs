//! Frame codec throughput: encoding a batch of tunnel-sized packets into one
//! write buffer, and decoding every frame of a large read.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use twoway_common::outside::tcp::record::frame::{self, FrameType};

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [64usize, 1400, 65_000] {
        let packet = vec![0x45u8; size];
        let count = (256 * 1024 / (size + frame::HEADER_LEN)).max(1);
        group.throughput(Throughput::Bytes((count * size) as u64));
        group.bench_with_input(BenchmarkId::new("encode", size), &packet, |b, packet| {
            let mut out = BytesMut::with_capacity(count * (size + frame::HEADER_LEN));
            b.iter(|| {
                out.clear();
                for _ in 0..count {
                    frame::encode(FrameType::Data, black_box(packet), &mut out);
                }
                black_box(out.len())
            })
        });
        let mut wire = BytesMut::new();
        for _ in 0..count {
            frame::encode(FrameType::Data, &packet, &mut wire);
        }
        group.bench_with_input(BenchmarkId::new("decode", size), &wire, |b, wire| {
            b.iter(|| {
                let mut buf = wire.clone();
                let mut n = 0;
                while let Some(f) = frame::decode(&mut buf).expect("valid frames") {
                    n += f.payload.len();
                }
                black_box(n)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);

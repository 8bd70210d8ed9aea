//! TLS record protection throughput: sealing and opening records of
//! tunnel-typical sizes with AES-256-GCM, out of place, as the data phase
//! does (common/src/record.rs).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::ConnectionTrafficSecrets;
use std::hint::black_box;
use twoway_common::record::{self, Opener, Sealer, APPLICATION_DATA};

fn secrets() -> ConnectionTrafficSecrets {
    ConnectionTrafficSecrets::Aes256Gcm {
        key: AeadKey::from([7; 32]),
        iv: Iv::from([9; 12]),
    }
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for size in [1400usize, record::MAX_PLAINTEXT] {
        let content = vec![0x45u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        let mut out = vec![0u8; record::sealed_len(size)];
        let mut sealer = Sealer::new(&secrets(), 0).expect("key");
        group.bench_with_input(BenchmarkId::new("seal", size), &content, |b, content| {
            b.iter(|| black_box(sealer.seal(APPLICATION_DATA, black_box(content), &mut out)))
        });
        // Open a stream of records sealed in sequence (each opens once).
        let mut sealer = Sealer::new(&secrets(), 0).expect("key");
        let mut opener = Opener::new(&secrets(), 0).expect("key");
        let mut room = vec![0u8; Opener::room(out.len())];
        group.bench_with_input(
            BenchmarkId::new("seal+open", size),
            &content,
            |b, content| {
                b.iter(|| {
                    let n = sealer
                        .seal(APPLICATION_DATA, content, &mut out)
                        .expect("seal");
                    black_box(opener.open(&out[..n], &mut room).expect("open"))
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, records);
criterion_main!(benches);

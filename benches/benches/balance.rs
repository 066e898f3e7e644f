//! Load balancing: one pick per algorithm, and the build time of the consistent-hash tables.
//!
//! `cargo bench -p mesh-benches --bench balance` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_core::balance::{Candidate, LeastRequest, Maglev, RingHash, RoundRobin, hash_key, random};

/// A splitmix64 stream: deterministic, cheap, and good enough to spread picks.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1))
        .collect()
}

/// Endpoints of equal weight (the common case, O(1) paths) with some in-flight requests.
fn equal(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate::new(1).with_active_requests(i as u64 % 7))
        .collect()
}

/// Endpoints of weights 1..=4 (the weighted paths).
fn weighted(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| Candidate::new(i as u32 % 4 + 1).with_active_requests(i as u64 % 7))
        .collect()
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/pick");
    for n in [3usize, 100] {
        let eq = equal(n);
        let wt = weighted(n);
        let lr = LeastRequest::default();
        let mut state = 7u64;
        group.bench_with_input(BenchmarkId::new("round_robin", n), &n, |b, _| {
            let mut rr = RoundRobin::new(eq.iter().map(|c| c.weight));
            b.iter(|| rr.pick(|_| true))
        });
        group.bench_with_input(BenchmarkId::new("round_robin_weighted", n), &n, |b, _| {
            let mut rr = RoundRobin::new(wt.iter().map(|c| c.weight));
            b.iter(|| rr.pick(|_| true))
        });
        group.bench_with_input(BenchmarkId::new("least_request", n), &eq, |b, eq| {
            b.iter(|| lr.pick(black_box(eq.as_slice()), splitmix(&mut state)))
        });
        group.bench_with_input(
            BenchmarkId::new("least_request_weighted", n),
            &wt,
            |b, wt| b.iter(|| lr.pick(black_box(wt.as_slice()), splitmix(&mut state))),
        );
        group.bench_with_input(BenchmarkId::new("random", n), &eq, |b, eq| {
            b.iter(|| random(black_box(eq.as_slice()), splitmix(&mut state)))
        });
        group.bench_with_input(BenchmarkId::new("random_weighted", n), &wt, |b, wt| {
            b.iter(|| random(black_box(wt.as_slice()), splitmix(&mut state)))
        });
        let k = keys(n);
        let ring = RingHash::new(k.iter().map(|k| (k, 1)), 1024);
        let maglev = Maglev::new(k.iter().map(|k| (k, 1)), 65537).expect("prime table size");
        group.bench_with_input(BenchmarkId::new("ring_hash", n), &ring, |b, ring| {
            b.iter(|| ring.pick(splitmix(&mut state), |_| true))
        });
        group.bench_with_input(BenchmarkId::new("maglev", n), &maglev, |b, maglev| {
            b.iter(|| maglev.pick(splitmix(&mut state), |_| true))
        });
    }
    // What a consistent-hash pick costs a layer: hashing a header value, then the lookup.
    let k = keys(100);
    let maglev = Maglev::new(k.iter().map(|k| (k, 1)), 65537).expect("prime table size");
    group.bench_function("hash_key_then_maglev/100", |b| {
        b.iter(|| maglev.pick(hash_key(black_box(b"user-1234567")), |_| true))
    });
    group.finish();
}

fn builds(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance/build");
    group.sample_size(20);
    let k = keys(100);
    group.bench_function("ring_hash_1024/100", |b| {
        b.iter(|| RingHash::new(black_box(&k).iter().map(|k| (k, 1)), 1024))
    });
    group.bench_function("maglev_65537/100", |b| {
        b.iter(|| Maglev::new(black_box(&k).iter().map(|k| (k, 1)), 65537))
    });
    group.finish();
}

criterion_group!(benches, picks, builds);
criterion_main!(benches);

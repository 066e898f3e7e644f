//! The local rate limit's token bucket (`mesh_core::token_bucket::SharedTokenBucket`): one
//! `try_acquire` with tokens left, with the bucket empty, and from two threads at once (the
//! bucket is shared by every connection of a workload, lock-free). The clock is a fixed
//! instant inside the fill interval, so no refill happens and no clock read is measured.
//!
//! `cargo bench -p mesh-benches --bench token_bucket` (add `-- --quick` for a fast pass).

use std::{
    hint::black_box,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use criterion::{Criterion, criterion_group, criterion_main};
use mesh_core::{model::TokenBucket, token_bucket::SharedTokenBucket};

fn bucket(max_tokens: u32) -> SharedTokenBucket {
    SharedTokenBucket::new(TokenBucket {
        max_tokens,
        tokens_per_fill: max_tokens,
        fill_interval: Duration::from_secs(1),
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("token_bucket");

    let plenty = bucket(u32::MAX);
    g.bench_function("acquire_with_tokens", |b| {
        b.iter(|| black_box(plenty.try_acquire(Duration::from_millis(500))))
    });

    let empty = bucket(1);
    let _ = empty.try_acquire(Duration::ZERO);
    // Time stands still inside the fill interval: every call finds the bucket empty.
    g.bench_function("acquire_empty", |b| {
        b.iter(|| black_box(empty.try_acquire(Duration::from_millis(500))))
    });

    // The same bucket hammered by a second thread while this one measures.
    let shared = Arc::new(bucket(u32::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(shared.try_acquire(Duration::from_millis(500)));
            }
        })
    };
    g.bench_function("acquire_contended_2_threads", |b| {
        b.iter(|| black_box(shared.try_acquire(Duration::from_millis(500))))
    });
    stop.store(true, Ordering::Relaxed);
    let _ = other.join();
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

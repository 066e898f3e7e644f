//! Route matching and weighted destination choice: the per-request decisions of the router.
//!
//! `cargo bench -p mesh-benches --bench routing` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_benches::routing::{request_for_route, routes};
use mesh_core::{
    matching::{RequestView, first_match},
    weighted::WeightedChoice,
};

/// `first_match` for a request that only the last of `n` routes matches: the worst case, every
/// route is tried.
fn first_match_last_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("first_match/last_of_n");
    for n in [1usize, 10, 100, 1000] {
        let table = routes(n);
        let req = request_for_route(n - 1);
        let labels = mesh_core::Labels::new();
        // Built per request in a layer; include it in the measurement.
        let view = || {
            RequestView::from_request(&req)
                .with_source_labels(&labels)
                .with_source_namespace("default")
        };
        assert_eq!(
            first_match(table.iter().map(Vec::as_slice), &view()),
            Some(n - 1),
            "the fixture must match the last route only"
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &table, |b, table| {
            b.iter(|| first_match(black_box(table).iter().map(Vec::as_slice), &view()))
        });
    }
    group.finish();
}

/// A splitmix64 stream: deterministic, cheap, and good enough to spread picks.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn weighted_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("weighted/pick");
    let cases: [(&str, Vec<u32>); 2] = [
        ("2_destinations_90_10", vec![90, 10]),
        ("10_destinations", vec![5, 10, 0, 20, 5, 15, 10, 5, 20, 10]),
    ];
    for (name, weights) in cases {
        let choice = WeightedChoice::new(weights).expect("valid weights");
        let mut state = 42u64;
        group.bench_function(name, |b| {
            b.iter(|| black_box(&choice).pick(splitmix(&mut state)))
        });
    }
    group.finish();
}

criterion_group!(benches, first_match_last_route, weighted_pick);
criterion_main!(benches);

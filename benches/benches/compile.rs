//! Loading config: parse, validate, analyse and compile.
//!
//! - `compile/generated/N`: N Bookinfo-shaped services (6 documents each) from memory.
//! - `compile/istio_corpus`: every file of Istio's test corpus (`../shared/istio/corpus`, 159
//!   files, 532 Istio documents), read from disk; skipped when the folder is absent.
//!
//! Run: `cargo bench -p mesh-benches --bench compile`.

use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mesh_benches::config::large_mesh_yaml;
use mesh_config::Loader;

fn generated(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile/generated");
    for services in [10, 100, 500] {
        let yaml = large_mesh_yaml(services);
        let report = Loader::new().check_str("bench.yaml", &yaml);
        assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
        group.throughput(Throughput::Elements((services * 6) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(services), &yaml, |b, yaml| {
            b.iter(|| Loader::new().check_str("bench.yaml", yaml))
        });
    }
    group.finish();
}

fn istio_corpus(c: &mut Criterion) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio/corpus");
    if !dir.is_dir() {
        eprintln!(
            "note: {} not found; skipping compile/istio_corpus",
            dir.display()
        );
        return;
    }
    c.bench_function("compile/istio_corpus", |b| {
        b.iter(|| Loader::new().check([&dir]).expect("readable corpus"))
    });
}

criterion_group!(benches, generated, istio_corpus);
criterion_main!(benches);

use super::*;

const MAX: Test = Test::Max {
    conns: 16,
    streams: 1,
};
const FIXED: Test = Test::Fixed {
    rps: 1000,
    conns: 16,
};

fn rec(round: usize, kind: Kind, test: Test, rps: f64, p99: f64, cpu_s: f64) -> Record {
    Record {
        round,
        kind,
        protocol: Protocol::Http1,
        test,
        result: Ok(Measured {
            load: Outcome {
                requests: 10_000,
                rps,
                p99: Some(p99),
                ..Outcome::default()
            },
            cpu_s: kind.has_proxy().then_some(cpu_s),
            rss_mib: kind.has_proxy().then_some(10.0),
            hwm_mib: kind.has_proxy().then_some(12.0),
        }),
    }
}

#[test]
fn median_of_odd_even_and_empty() {
    assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(median(vec![]), None);
    assert_eq!(median(vec![f64::NAN, 1.0]), Some(1.0));
}

#[test]
fn ratios_are_taken_within_a_round_then_the_median() {
    // Round 1 runs everything twice as fast as round 0: per-round ratios stay 2.0 and 0.5,
    // where a ratio of the medians across rounds would mix the two rounds.
    let mut records = Vec::new();
    for (round, scale) in [(0, 1.0), (1, 2.0), (2, 1.0)] {
        records.push(rec(round, Kind::Mesh, MAX, 2000.0 * scale, 1.0, 1.0));
        records.push(rec(round, Kind::Nginx, MAX, 1000.0 * scale, 1.0, 1.0));
        records.push(rec(round, Kind::Envoy, MAX, 4000.0 * scale, 1.0, 1.0));
    }
    let sums = summarise(&records);
    let mesh = &sums[&("http1".to_owned(), MAX.id())][&Kind::Mesh];
    assert_eq!(mesh.rounds, 3);
    assert_eq!(mesh.ratio[&(Metric::Rps, Kind::Nginx)], 2.0);
    assert_eq!(mesh.ratio[&(Metric::Rps, Kind::Envoy)], 0.5);
    assert_eq!(mesh.median[&Metric::Rps], 2000.0);
    assert!(
        !mesh.ratio.contains_key(&(Metric::Rps, Kind::Direct)),
        "no direct in this run"
    );
}

#[test]
fn added_latency_is_the_median_difference_from_direct() {
    let records = vec![
        rec(0, Kind::Direct, FIXED, 1000.0, 0.2, 0.0),
        rec(0, Kind::Mesh, FIXED, 1000.0, 0.5, 0.3),
        rec(1, Kind::Direct, FIXED, 1000.0, 1.0, 0.0),
        rec(1, Kind::Mesh, FIXED, 1000.0, 1.4, 0.3),
        rec(2, Kind::Direct, FIXED, 1000.0, 0.1, 0.0),
        rec(2, Kind::Mesh, FIXED, 1000.0, 0.3, 0.3),
    ];
    let sums = summarise(&records);
    let mesh = &sums[&("http1".to_owned(), FIXED.id())][&Kind::Mesh];
    let added = mesh.added[&Metric::P99];
    assert!((added - 0.3).abs() < 1e-9, "{added}");
    let direct = &sums[&("http1".to_owned(), FIXED.id())][&Kind::Direct];
    assert!(direct.added.is_empty());
    assert!(
        !direct.median.contains_key(&Metric::CpuPer10k),
        "direct has no proxy CPU"
    );
}

#[test]
fn a_failed_run_is_left_out_and_listed() {
    let mut records = vec![
        rec(0, Kind::Mesh, MAX, 2000.0, 1.0, 1.0),
        rec(0, Kind::Nginx, MAX, 1000.0, 1.0, 1.0),
    ];
    records.push(Record {
        result: Err("nginx exited".into()),
        ..rec(1, Kind::Nginx, MAX, 0.0, 0.0, 0.0)
    });
    records.push(rec(1, Kind::Mesh, MAX, 3000.0, 1.0, 1.0));
    let sums = summarise(&records);
    let mesh = &sums[&("http1".to_owned(), MAX.id())][&Kind::Mesh];
    assert_eq!(
        mesh.ratio[&(Metric::Rps, Kind::Nginx)],
        2.0,
        "round 1 has no nginx"
    );
    let ctx = Context {
        tests: vec![(Protocol::Http1, MAX)],
        ..Context::default()
    };
    let md = markdown(&records, &ctx);
    assert!(
        md.contains("round 2, nginx, HTTP/1.1 max-c16: nginx exited"),
        "{md}"
    );
}

#[test]
fn cpu_per_10k_counts_failed_requests_too() {
    let m = Measured {
        load: Outcome {
            requests: 9_000,
            errors: 1_000,
            ..Outcome::default()
        },
        cpu_s: Some(0.5),
        rss_mib: None,
        hwm_mib: None,
    };
    assert!((m.cpu_per_10k().unwrap() - 0.5).abs() < 1e-9);
}

#[test]
fn targets_say_met_missed_or_not_measured() {
    let mut records = Vec::new();
    for round in 0..3 {
        records.push(rec(round, Kind::Mesh, MAX, 1500.0, 1.0, 1.0));
        records.push(rec(round, Kind::Nginx, MAX, 1000.0, 1.0, 1.0));
        records.push(rec(round, Kind::Envoy, MAX, 1000.0, 1.0, 1.0));
    }
    let ctx = Context {
        tests: vec![(Protocol::Http1, MAX)],
        ..Context::default()
    };
    let t = targets(&summarise(&records), &ctx);
    let find = |what: &str| t.iter().find(|t| t.what.contains(what)).unwrap();
    assert_eq!(find("vs nginx").met, Some(true));
    assert_eq!(find("vs Envoy").met, Some(false), "1.5x is short of 2x");
    assert_eq!(find("RSS").met, Some(true), "10 MiB");
    let json = json(&records, &ctx);
    assert_eq!(json["targets"][1]["met"], false);
    assert_eq!(json["records"].as_array().unwrap().len(), 9);
}

fn rec_of(round: usize, kind: Kind, protocol: Protocol, test: Test, rps: f64) -> Record {
    Record {
        protocol,
        ..rec(round, kind, test, rps, 1.0, 1.0)
    }
}

#[test]
fn the_slowest_maximum_is_the_slowest_proxy_of_that_round() {
    let h1 = Protocol::Http1;
    let h2_max = Test::Max {
        conns: 4,
        streams: 16,
    };
    let records = vec![
        rec_of(0, Kind::Direct, h1, MAX, 500.0),
        rec_of(0, Kind::Mesh, h1, MAX, 20_000.0),
        rec_of(0, Kind::EnvoyMtls, h1, MAX, 8_000.0),
        rec_of(0, Kind::Envoy, h1, FIXED, 1_000.0),
        rec_of(0, Kind::Nginx, Protocol::H2c, h2_max, 3_000.0),
        rec_of(1, Kind::Haproxy, h1, MAX, 2_000.0),
        Record {
            result: Err("nginx exited".into()),
            ..rec_of(0, Kind::Nginx, h1, MAX, 0.0)
        },
    ];
    // Not direct (no proxy), not a fixed-rate run, not h2c, not round 1, not a failed run.
    assert_eq!(
        slowest_max(&records, 0, h1),
        Some((Kind::EnvoyMtls, 8_000.0))
    );
    assert_eq!(slowest_max(&records, 1, h1), Some((Kind::Haproxy, 2_000.0)));
    assert_eq!(slowest_max(&records, 2, h1), None);
    let only_direct = vec![rec_of(0, Kind::Direct, h1, MAX, 500.0)];
    assert_eq!(slowest_max(&only_direct, 0, h1), None);
}

#[test]
fn half_maximum_and_grpc_rows_are_reported_like_the_fixed_rate_ones() {
    let half = Test::HalfMax { conns: 4 };
    let mut records = Vec::new();
    for round in 0..3 {
        records.push(rec(round, Kind::Direct, half, 4000.0, 0.2, 0.0));
        records.push(rec(round, Kind::Mesh, half, 4000.0, 0.6, 0.5));
        records.push(rec(round, Kind::Nginx, half, 4000.0, 0.3, 0.2));
        records.push(rec_of(round, Kind::Mesh, Protocol::Grpc, FIXED, 1000.0));
        records.push(rec_of(round, Kind::Envoy, Protocol::Grpc, FIXED, 1000.0));
    }
    let ctx = Context {
        tests: vec![(Protocol::Http1, half), (Protocol::Grpc, FIXED)],
        ..Context::default()
    };
    let sums = summarise(&records);
    let mesh = &sums[&("http1".to_owned(), half.id())][&Kind::Mesh];
    assert_eq!(mesh.ratio[&(Metric::P99, Kind::Nginx)], 2.0);
    assert!((mesh.added[&Metric::P99] - 0.4).abs() < 1e-9);
    let md = markdown(&records, &ctx);
    assert!(
        md.contains("| HTTP/1.1 | 50% of the slowest maximum over 4 connections | p99_ms | 0.600 | 3.00x | 2.00x |"),
        "{md}"
    );
    assert!(
        md.contains("### gRPC unary, 1000 rps over 16 connections"),
        "{md}"
    );
    // The targets are about 1,000 rps: the half-maximum runs are not among them.
    assert!(
        targets(&sums, &ctx)
            .iter()
            .all(|t| !t.what.contains("halfmax"))
    );
}

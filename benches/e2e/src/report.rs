//! From the rounds' records to the answer: medians of per-round ratios (absolute figures on a
//! shared 2-core machine swing several-fold between runs, ratios taken within one round much
//! less), the targets met or missed, and the Markdown and JSON files.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{
    contenders::Kind,
    load::{Outcome, Protocol, Test},
};

/// One contender through one test in one round.
#[derive(Debug, Clone)]
pub struct Record {
    pub round: usize,
    pub kind: Kind,
    pub protocol: Protocol,
    pub test: Test,
    pub result: Result<Measured, String>,
}

/// What a test measured: the load generator's view and the proxy processes' (`None` for
/// `direct`, which has no proxy).
#[derive(Debug, Clone)]
pub struct Measured {
    pub load: Outcome,
    /// CPU seconds (user + system) of the proxy processes during the test.
    pub cpu_s: Option<f64>,
    /// The largest VmRSS (summed over the proxy processes) sampled during the test, MiB.
    pub rss_mib: Option<f64>,
    /// VmHWM (peak RSS since start, summed) at the end of the test, MiB.
    pub hwm_mib: Option<f64>,
}

impl Measured {
    pub fn cpu_per_10k(&self) -> Option<f64> {
        let n = self.load.requests + self.load.errors;
        self.cpu_s.filter(|_| n > 0).map(|c| c * 1e4 / n as f64)
    }
}

/// A figure the report compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    Rps,
    P50,
    P90,
    P99,
    P999,
    CpuPer10k,
    Rss,
    PeakRss,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::Rps,
        Metric::P50,
        Metric::P90,
        Metric::P99,
        Metric::P999,
        Metric::CpuPer10k,
        Metric::Rss,
        Metric::PeakRss,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Metric::Rps => "rps",
            Metric::P50 => "p50_ms",
            Metric::P90 => "p90_ms",
            Metric::P99 => "p99_ms",
            Metric::P999 => "p99.9_ms",
            Metric::CpuPer10k => "cpu_s_per_10k",
            Metric::Rss => "rss_mib",
            Metric::PeakRss => "peak_rss_mib",
        }
    }

    fn is_latency(self) -> bool {
        matches!(self, Metric::P50 | Metric::P90 | Metric::P99 | Metric::P999)
    }

    pub fn of(self, m: &Measured) -> Option<f64> {
        match self {
            Metric::Rps => Some(m.load.rps),
            Metric::P50 => m.load.p50,
            Metric::P90 => m.load.p90,
            Metric::P99 => m.load.p99,
            Metric::P999 => m.load.p999,
            Metric::CpuPer10k => m.cpu_per_10k(),
            Metric::Rss => m.rss_mib,
            Metric::PeakRss => m.hwm_mib,
        }
    }
}

/// The contenders every other one is compared with.
pub const BASELINES: [Kind; 5] = [
    Kind::Direct,
    Kind::Nginx,
    Kind::Haproxy,
    Kind::Envoy,
    Kind::EnvoyMtls,
];

/// The proxy with the lowest closed-loop maximum over `protocol` in `round` (the `Max` test's
/// requests per second), and that maximum: what the round's half-maximum tests run at half of.
/// `direct` is no proxy and is left out; so are failed runs.
pub fn slowest_max(records: &[Record], round: usize, protocol: Protocol) -> Option<(Kind, f64)> {
    records
        .iter()
        .filter(|r| r.round == round && r.protocol == protocol && r.kind.has_proxy())
        .filter(|r| matches!(r.test, Test::Max { .. }))
        .filter_map(|r| Some((r.kind, r.result.as_ref().ok()?.load.rps)))
        .filter(|(_, rps)| *rps > 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The middle value (the mean of the two middle ones for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The summary of one contender in one (protocol, test).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Median over rounds, per metric.
    pub median: BTreeMap<Metric, f64>,
    /// Median over rounds of (this contender's latency − direct's in the same round), ms.
    pub added: BTreeMap<Metric, f64>,
    /// Median over rounds of (this contender's value ÷ the baseline's in the same round).
    pub ratio: BTreeMap<(Metric, Kind), f64>,
    /// Rounds with a result.
    pub rounds: usize,
    pub errors: u64,
}

/// All records grouped: (protocol, test) -> contender -> round -> measured.
type Grouped<'a> = BTreeMap<(String, String), BTreeMap<Kind, BTreeMap<usize, &'a Measured>>>;

fn group(records: &[Record]) -> Grouped<'_> {
    let mut g: Grouped<'_> = BTreeMap::new();
    for r in records {
        if let Ok(m) = &r.result {
            g.entry((r.protocol.id().to_owned(), r.test.id()))
                .or_default()
                .entry(r.kind)
                .or_default()
                .insert(r.round, m);
        }
    }
    g
}

/// Summaries per (protocol id, test id) and contender.
pub fn summarise(records: &[Record]) -> BTreeMap<(String, String), BTreeMap<Kind, Summary>> {
    let mut out = BTreeMap::new();
    for (key, by_kind) in group(records) {
        let mut sums = BTreeMap::new();
        for (kind, rounds) in &by_kind {
            let mut s = Summary {
                rounds: rounds.len(),
                errors: rounds.values().map(|m| m.load.errors).sum(),
                ..Summary::default()
            };
            for metric in Metric::ALL {
                let values: Vec<f64> = rounds.values().filter_map(|m| metric.of(m)).collect();
                if let Some(v) = median(values) {
                    s.median.insert(metric, v);
                }
                if metric.is_latency()
                    && *kind != Kind::Direct
                    && let Some(direct) = by_kind.get(&Kind::Direct)
                {
                    let added = rounds.iter().filter_map(|(round, m)| {
                        Some(metric.of(m)? - metric.of(direct.get(round)?)?)
                    });
                    if let Some(v) = median(added.collect()) {
                        s.added.insert(metric, v);
                    }
                }
                for base in BASELINES {
                    let Some(base_rounds) = by_kind.get(&base) else {
                        continue;
                    };
                    if base == *kind {
                        continue;
                    }
                    let ratios = rounds.iter().filter_map(|(round, m)| {
                        let b = metric.of(base_rounds.get(round)?)?;
                        (b > 0.0).then(|| metric.of(m).map(|v| v / b)).flatten()
                    });
                    if let Some(v) = median(ratios.collect()) {
                        s.ratio.insert((metric, base), v);
                    }
                }
            }
            sums.insert(*kind, s);
        }
        out.insert(key, sums);
    }
    out
}

/// What the run was: machine, tools, command, settings, skipped contenders.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub date: String,
    pub command: String,
    pub machine: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    pub notes: Vec<String>,
    pub tests: Vec<(Protocol, Test)>,
}

/// One of the targets, checked against this run.
#[derive(Debug, Clone)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub got: String,
    pub met: Option<bool>,
}

type Sums = BTreeMap<(String, String), BTreeMap<Kind, Summary>>;

fn get<'a>(sums: &'a Sums, p: Protocol, t: &str, k: Kind) -> Option<&'a Summary> {
    sums.get(&(p.id().to_owned(), t.to_owned()))?.get(&k)
}

/// The targets (issue 8), each met, missed (and by how much) or not measurable here.
pub fn targets(sums: &Sums, ctx: &Context) -> Vec<Target> {
    let h1 = Protocol::Http1;
    let max = ctx
        .tests
        .iter()
        .find(|(p, t)| *p == h1 && matches!(t, Test::Max { .. }))
        .map(|(_, t)| t.id())
        .unwrap_or_default();
    let fixed: Vec<String> = ctx
        .tests
        .iter()
        .filter(|(p, t)| *p == h1 && matches!(t, Test::Fixed { .. }))
        .map(|(_, t)| t.id())
        .collect();
    let mut out = Vec::new();
    let ratio = |t: &str, k: Kind, m: Metric, b: Kind| {
        get(sums, h1, t, k).and_then(|s| s.ratio.get(&(m, b)).copied())
    };
    for (base, goal) in [(Kind::Nginx, 1.0), (Kind::Envoy, 2.0)] {
        let r = ratio(&max, Kind::Mesh, Metric::Rps, base);
        out.push(Target {
            what: format!(
                "one proxy, HTTP/1.1: maximum throughput vs {}",
                base.label()
            ),
            goal: format!(">= {goal}x"),
            got: r
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "n/a".into()),
            met: r.map(|r| r >= goal),
        });
    }
    for t in &fixed {
        let mesh = get(sums, h1, t, Kind::Mesh).and_then(|s| s.added.get(&Metric::P99).copied());
        let nginx = get(sums, h1, t, Kind::Nginx).and_then(|s| s.added.get(&Metric::P99).copied());
        out.push(Target {
            what: format!("one proxy, HTTP/1.1, {t}: added p99 vs nginx's"),
            goal: "<= nginx's".into(),
            got: match (mesh, nginx) {
                (Some(m), Some(n)) => format!("{m:+.3} ms vs {n:+.3} ms"),
                _ => "n/a".into(),
            },
            met: mesh.zip(nginx).map(|(m, n)| m <= n),
        });
        for metric in [Metric::P90, Metric::P99] {
            let pick = |k| get(sums, h1, t, k).and_then(|s| s.added.get(&metric).copied());
            let (mesh, envoy) = (pick(Kind::MeshMtls), pick(Kind::EnvoyMtls));
            out.push(Target {
                what: format!(
                    "two proxies, mTLS, HTTP/1.1, {t}: added {} vs Envoy → Envoy's",
                    &metric.id()[..3]
                ),
                goal: "below Envoy → Envoy's".into(),
                got: match (mesh, envoy) {
                    (Some(m), Some(e)) => format!("{m:+.3} ms vs {e:+.3} ms"),
                    _ => "n/a".into(),
                },
                met: mesh.zip(envoy).map(|(m, e)| m < e),
            });
        }
    }
    if let Some(t) = fixed.last() {
        for (k, b) in [(Kind::Mesh, Kind::Envoy), (Kind::MeshMtls, Kind::EnvoyMtls)] {
            let r = ratio(t, k, Metric::CpuPer10k, b);
            out.push(Target {
                what: format!(
                    "CPU seconds per 10,000 requests, {}, {t}, vs {}",
                    k.label(),
                    b.label()
                ),
                goal: "<= 0.5x".into(),
                got: r
                    .map(|r| format!("{r:.2}x"))
                    .unwrap_or_else(|| "n/a".into()),
                met: r.map(|r| r <= 0.5),
            });
        }
    }
    let rss = get(sums, h1, &max, Kind::Mesh).and_then(|s| s.median.get(&Metric::Rss).copied());
    let limit = 15e6 / 1024.0 / 1024.0;
    out.push(Target {
        what: format!("RSS under load, mesh, HTTP/1.1 {max}"),
        goal: "<= 15 MB (14.3 MiB)".into(),
        got: rss
            .map(|r| format!("{r:.1} MiB"))
            .unwrap_or_else(|| "n/a".into()),
        met: rss.map(|r| r <= limit),
    });
    out
}

fn fmt(metric: Metric, v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) => match metric {
            Metric::Rps => format!("{v:.0}"),
            Metric::CpuPer10k => format!("{v:.3}"),
            Metric::Rss | Metric::PeakRss => format!("{v:.1}"),
            _ => format!("{v:.3}"),
        },
    }
}

fn ratio_cell(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "–".into())
}

/// The Markdown report.
pub fn markdown(records: &[Record], ctx: &Context) -> String {
    let sums = summarise(records);
    let mut md = String::new();
    let w = &mut md;
    let line = |w: &mut String, s: &str| {
        w.push_str(s);
        w.push('\n');
    };
    line(w, "# mesh end-to-end benchmark");
    line(w, "");
    line(w, &format!("Run {}: `{}`", ctx.date, ctx.command));
    line(w, "");
    line(w, "| machine | |");
    line(w, "|---|---|");
    for (k, v) in ctx.machine.iter().chain(&ctx.versions).chain(&ctx.settings) {
        line(w, &format!("| {k} | {v} |"));
    }
    line(w, "");
    for n in &ctx.notes {
        line(w, &format!("- {n}"));
    }
    line(w, "");
    line(
        w,
        "Every figure is the median over rounds; every ratio is the median of the per-round ratios (the contender's figure divided by the baseline's in the same round). \"Added\" latency is the median of the per-round differences from `direct`. CPU is user + system time of the proxy processes from `/proc/PID/stat` during the test, per 10,000 requests; RSS is the largest `VmRSS` sampled during the test (every 100 ms), peak RSS the `VmHWM` at its end, both summed over the contender's processes (two for the mTLS pairs, master and worker for nginx).",
    );
    line(w, "");

    line(w, "## Targets (issue 8)");
    line(w, "");
    line(w, "| target | goal | this run | met |");
    line(w, "|---|---|---|---|");
    for t in targets(&sums, ctx) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        line(
            w,
            &format!("| {} | {} | {} | {met} |", t.what, t.goal, t.got),
        );
    }
    line(w, "");

    line(w, "## Headline: mesh against the others");
    line(w, "");
    line(
        w,
        "| protocol | test | metric | mesh | ×direct | ×nginx | ×HAProxy | ×Envoy | mesh → mesh | ×Envoy → Envoy |",
    );
    line(w, "|---|---|---|---|---|---|---|---|---|---|");
    for (p, t) in &ctx.tests {
        let metrics: &[Metric] = match t {
            Test::Max { .. } => &[Metric::Rps, Metric::Rss, Metric::PeakRss],
            Test::Fixed { .. } | Test::HalfMax { .. } => &[
                Metric::P50,
                Metric::P90,
                Metric::P99,
                Metric::P999,
                Metric::CpuPer10k,
            ],
        };
        for m in metrics {
            let single = get(&sums, *p, &t.id(), Kind::Mesh);
            let pair = get(&sums, *p, &t.id(), Kind::MeshMtls);
            let r =
                |s: Option<&Summary>, b| ratio_cell(s.and_then(|s| s.ratio.get(&(*m, b)).copied()));
            line(
                w,
                &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    p.label(),
                    t.label(),
                    m.id(),
                    fmt(*m, single.and_then(|s| s.median.get(m).copied())),
                    r(single, Kind::Direct),
                    r(single, Kind::Nginx),
                    r(single, Kind::Haproxy),
                    r(single, Kind::Envoy),
                    fmt(*m, pair.and_then(|s| s.median.get(m).copied())),
                    r(pair, Kind::EnvoyMtls),
                ),
            );
        }
    }
    line(w, "");

    line(w, "## Every contender");
    for (p, t) in &ctx.tests {
        let Some(by_kind) = sums.get(&(p.id().to_owned(), t.id())) else {
            continue;
        };
        line(w, "");
        line(w, &format!("### {}, {}", p.label(), t.label()));
        line(w, "");
        line(
            w,
            "| contender | rounds | rps | p50 ms | p90 ms | p99 ms | p99.9 ms | added p99 ms | CPU s/10k | RSS MiB | peak RSS MiB | errors |",
        );
        line(w, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (k, s) in by_kind {
            let m = |x: Metric| fmt(x, s.median.get(&x).copied());
            line(
                w,
                &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    k.label(),
                    s.rounds,
                    m(Metric::Rps),
                    m(Metric::P50),
                    m(Metric::P90),
                    m(Metric::P99),
                    m(Metric::P999),
                    s.added
                        .get(&Metric::P99)
                        .map(|v| format!("{v:+.3}"))
                        .unwrap_or_else(|| "–".into()),
                    m(Metric::CpuPer10k),
                    m(Metric::Rss),
                    m(Metric::PeakRss),
                    s.errors,
                ),
            );
        }
        let key: &[Metric] = match t {
            Test::Max { .. } => &[Metric::Rps, Metric::Rss],
            Test::Fixed { .. } | Test::HalfMax { .. } => &[Metric::P99, Metric::CpuPer10k],
        };
        let bases: Vec<Kind> = BASELINES
            .into_iter()
            .filter(|b| by_kind.contains_key(b))
            .collect();
        line(w, "");
        let mut head = String::from("| contender |");
        let mut rule = String::from("|---|");
        for m in key {
            for b in &bases {
                head.push_str(&format!(" {} ×{} |", m.id(), b.id()));
                rule.push_str("---|");
            }
        }
        line(w, &head);
        line(w, &rule);
        for (k, s) in by_kind {
            let mut row = format!("| {} |", k.label());
            for m in key {
                for b in &bases {
                    row.push_str(&format!(
                        " {} |",
                        ratio_cell(s.ratio.get(&(*m, *b)).copied())
                    ));
                }
            }
            line(w, &row);
        }
    }
    let failures: Vec<&Record> = records.iter().filter(|r| r.result.is_err()).collect();
    if !failures.is_empty() {
        line(w, "");
        line(w, "## Failed runs");
        line(w, "");
        for r in failures {
            if let Err(e) = &r.result {
                line(
                    w,
                    &format!(
                        "- round {}, {}, {} {}: {e}",
                        r.round + 1,
                        r.kind.label(),
                        r.protocol.label(),
                        r.test.id()
                    ),
                );
            }
        }
    }
    md
}

/// The JSON report: the context, every record, and the summaries.
pub fn json(records: &[Record], ctx: &Context) -> Value {
    let sums = summarise(records);
    let pairs = |v: &[(String, String)]| -> Value {
        v.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let recs: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut o = json!({
                "round": r.round + 1,
                "contender": r.kind.id(),
                "protocol": r.protocol.id(),
                "test": r.test.id(),
            });
            match &r.result {
                Ok(m) => {
                    for metric in Metric::ALL {
                        o[metric.id()] = metric.of(m).map(Value::from).unwrap_or(Value::Null);
                    }
                    o["requests"] = m.load.requests.into();
                    o["errors"] = m.load.errors.into();
                    o["cpu_s"] = m.cpu_s.map(Value::from).unwrap_or(Value::Null);
                }
                Err(e) => o["error"] = e.clone().into(),
            }
            o
        })
        .collect();
    let mut summary = Vec::new();
    for ((p, t), by_kind) in &sums {
        for (k, s) in by_kind {
            let median: serde_json::Map<_, _> = s
                .median
                .iter()
                .map(|(m, v)| (m.id().to_owned(), Value::from(*v)))
                .collect();
            let added: serde_json::Map<_, _> = s
                .added
                .iter()
                .map(|(m, v)| (m.id().to_owned(), Value::from(*v)))
                .collect();
            let mut ratios = serde_json::Map::new();
            for ((m, b), v) in &s.ratio {
                let entry = ratios
                    .entry(format!("vs_{}", b.id()))
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
                entry[m.id()] = Value::from(*v);
            }
            summary.push(json!({
                "protocol": p, "test": t, "contender": k.id(), "rounds": s.rounds,
                "errors": s.errors, "median": median, "added_vs_direct_ms": added,
                "ratios": ratios,
            }));
        }
    }
    let targets: Vec<Value> = targets(&sums, ctx)
        .into_iter()
        .map(|t| json!({"target": t.what, "goal": t.goal, "got": t.got, "met": t.met}))
        .collect();
    json!({
        "date": ctx.date,
        "command": ctx.command,
        "machine": pairs(&ctx.machine),
        "versions": pairs(&ctx.versions),
        "settings": pairs(&ctx.settings),
        "notes": ctx.notes,
        "targets": targets,
        "summary": summary,
        "records": recs,
    })
}

#[cfg(test)]
mod tests;

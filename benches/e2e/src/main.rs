//! `mesh-e2e`: the end-to-end benchmark driver behind `benches/e2e/run` (issue 8).
//!
//! Starts the fast upstreams (HTTP, and gRPC), then, round after round, each contender in turn
//! (direct, mesh, nginx, HAProxy, Envoy, mesh → mesh with mTLS, Envoy → Envoy with mTLS),
//! drives it with the load generators over HTTP/1.1, h2c and gRPC, reads the proxies' CPU time
//! and memory from `/proc`, stops it, and finally writes `latest.md` and `latest.json` with the
//! medians of the per-round ratios. The contenders' order rotates from round to round, so none
//! always runs first or last.
//!
//! A round has two passes over the contenders. The first measures the closed-loop maxima;
//! the second starts each contender afresh (so no maximum's memory growth shows in it) for all
//! the fixed-rate runs, back to back: 1,000 rps, and half the slowest proxy's maximum of this
//! round's first pass, which is why the maxima come first.
//!
//! The `run` script finds or installs the tools and passes their paths; run `run --help`.

mod contenders;
mod load;
mod procs;
mod report;

use std::{
    io::BufRead,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use contenders::{Ctx, Kind, Tools};
use load::{Generators, Protocol, Test};
use procs::Proc;
use report::{Context, Measured, Record};

/// The default lengths of the runs, chosen so that a full run (5 rounds) from a fresh clone,
/// tools and builds included, fits issue 8's 15 minutes on the 2-core development machine
/// (benches/README.md has the measured phases).
/// Keep `USAGE` in step.
const DEFAULT_FIXED_SECS: f64 = 1.5;
const DEFAULT_MAX_SECS: u32 = 1;
const DEFAULT_WARM_SECS: f64 = 0.2;

const USAGE: &str = "usage: mesh-e2e --mesh PATH --upstream PATH --wrk PATH --h2load PATH
    --load PATH [--nginx PATH] [--haproxy PATH] [--envoy PATH]
    [--rounds N] [--quick] [--fixed-secs S] [--max-secs S] [--warm-secs S] [--only ID,...]
    [--protocols ID,...] [--profile SECS] [--out DIR] [--work DIR] [--command TEXT]

  --load PATH      mesh-load, the harness's own load generator (fixed-rate runs, gRPC)
  --rounds N       rounds of every contender (default 5)
  --quick          1 round, 1 s fixed-rate and 1 s closed-loop runs
  --fixed-secs S   length of each fixed-rate run (1,000 rps, and half the slowest maximum),
                   fractions allowed (default 1.5)
  --max-secs S     length of each closed-loop maximum-throughput run, whole seconds
                   (default 1)
  --warm-secs S    closed-loop warm-up through a freshly started contender before each
                   protocol's runs (default 0.2; 0: none)
  --only IDS       contenders to run, of: direct,mesh,nginx,haproxy,envoy,mesh-mtls,envoy-mtls
  --protocols IDS  protocols to test, of: http1,h2c,grpc (default all; the half-maximum runs
                   need http1)
  --profile SECS   after the rounds, `perf record` mesh under HTTP/1.1 closed-loop load
  --out DIR        where latest.md, latest.json (and profile-mesh.txt) go
  --work DIR       scratch folder for configs, certificates and logs (emptied first)";

#[derive(Debug)]
struct Options {
    tools: Tools,
    upstream: PathBuf,
    generators: Generators,
    rounds: usize,
    fixed_secs: f64,
    max_secs: u32,
    warm_secs: f64,
    kinds: Vec<Kind>,
    protocols: Vec<Protocol>,
    profile_secs: u32,
    out: PathBuf,
    work: PathBuf,
    command: String,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let path = |flag: &str, v: Option<String>| -> Result<PathBuf, String> {
        v.filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("{flag} needs a value"))
    };
    let mut mesh = None;
    let mut upstream = None;
    let mut wrk = None;
    let mut h2load = None;
    let mut load = None;
    let (mut nginx, mut haproxy, mut envoy) = (None, None, None);
    let mut rounds = 5;
    let (mut fixed_secs, mut max_secs, mut warm_secs) =
        (DEFAULT_FIXED_SECS, DEFAULT_MAX_SECS, DEFAULT_WARM_SECS);
    let mut quick = false;
    let mut kinds = Kind::ALL.to_vec();
    let mut protocols = vec![Protocol::Http1, Protocol::H2c, Protocol::Grpc];
    let mut profile_secs = 0;
    let mut out = PathBuf::from("benches/e2e/results");
    let mut work = PathBuf::from("benches/e2e/work");
    let mut command = String::from("benches/e2e/run");
    let number = |flag: &str, v: Option<String>| -> Result<u32, String> {
        v.as_deref()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("{flag} needs a whole number"))
    };
    let seconds = |flag: &str, v: Option<String>| -> Result<f64, String> {
        v.as_deref()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("{flag} needs a number of seconds (fractions allowed)"))
    };
    // An empty path means "not found" (the run script passes what `command -v` printed).
    let optional = |v: Option<String>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mesh" => mesh = Some(path(&a, args.next())?),
            "--upstream" => upstream = Some(path(&a, args.next())?),
            "--wrk" => wrk = Some(path(&a, args.next())?),
            "--h2load" => h2load = Some(path(&a, args.next())?),
            "--load" => load = Some(path(&a, args.next())?),
            "--nginx" => nginx = optional(args.next()),
            "--haproxy" => haproxy = optional(args.next()),
            "--envoy" => envoy = optional(args.next()),
            "--rounds" => rounds = number(&a, args.next())?.max(1) as usize,
            "--fixed-secs" => fixed_secs = seconds(&a, args.next())?.max(0.1),
            "--max-secs" => max_secs = number(&a, args.next())?.max(1),
            "--warm-secs" => warm_secs = seconds(&a, args.next())?,
            "--quick" => quick = true,
            "--profile" => profile_secs = number(&a, args.next())?,
            "--out" => out = path(&a, args.next())?,
            "--work" => work = path(&a, args.next())?,
            "--command" => command = args.next().unwrap_or_default(),
            "--only" => {
                let list = args.next().unwrap_or_default();
                kinds = list
                    .split(',')
                    .map(|id| {
                        Kind::from_id(id.trim())
                            .ok_or_else(|| format!("--only: unknown contender `{id}`\n\n{USAGE}"))
                    })
                    .collect::<Result<_, _>>()?;
                kinds.sort();
                kinds.dedup();
            }
            "--protocols" => {
                let list = args.next().unwrap_or_default();
                protocols = list
                    .split(',')
                    .map(|id| {
                        Protocol::from_id(id.trim()).ok_or_else(|| {
                            format!("--protocols: unknown protocol `{id}`\n\n{USAGE}")
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    if quick {
        rounds = 1;
        fixed_secs = 1.0;
        max_secs = 1;
    }
    let need = |v: Option<PathBuf>, flag: &str| {
        v.ok_or_else(|| format!("{flag} PATH is required (benches/e2e/run passes it)\n\n{USAGE}"))
    };
    Ok(Options {
        tools: Tools {
            mesh: need(mesh, "--mesh")?,
            nginx,
            haproxy,
            envoy,
        },
        upstream: need(upstream, "--upstream")?,
        generators: Generators {
            wrk: need(wrk, "--wrk")?,
            h2load: need(h2load, "--h2load")?,
            load: need(load, "--load")?,
            cpus: None,
        },
        rounds,
        fixed_secs,
        max_secs,
        warm_secs,
        kinds,
        protocols,
        profile_secs,
        out,
        work,
        command,
    })
}

/// The tests, in the report's order. In every round each contender goes through the
/// closed-loop ones (first pass), then, started afresh, through the fixed-rate ones, the
/// half-maximum ones at the rate the first pass set (module doc); in this order within a pass.
fn tests() -> Vec<(Protocol, Test)> {
    vec![
        (
            Protocol::Http1,
            Test::Fixed {
                rps: 1000,
                conns: 4,
            },
        ),
        (
            Protocol::Http1,
            Test::Fixed {
                rps: 1000,
                conns: 16,
            },
        ),
        (Protocol::Http1, Test::HalfMax { conns: 4 }),
        (Protocol::Http1, Test::HalfMax { conns: 16 }),
        (
            Protocol::Http1,
            Test::Max {
                conns: 16,
                streams: 1,
            },
        ),
        (
            Protocol::H2c,
            Test::Fixed {
                rps: 1000,
                conns: 16,
            },
        ),
        (
            Protocol::H2c,
            Test::Max {
                conns: 4,
                streams: 16,
            },
        ),
        (
            Protocol::Grpc,
            Test::Fixed {
                rps: 1000,
                conns: 16,
            },
        ),
        (
            Protocol::Grpc,
            Test::Max {
                conns: 4,
                streams: 16,
            },
        ),
    ]
}

/// Which cores the proxies, the upstream and the load generator run on: apart where the
/// machine has the cores (proxies alone on core 0; with 2 cores the upstream shares core 1
/// with the load generator).
fn pinning() -> (Option<String>, Option<String>, Option<String>) {
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    match n {
        0 | 1 => (None, None, None),
        2 => (Some("0".into()), Some("1".into()), Some("1".into())),
        _ => (
            Some("0".into()),
            Some("1".into()),
            Some(format!("2-{}", n - 1)),
        ),
    }
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mesh-e2e: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(opts) {
        eprintln!("mesh-e2e: {e}");
        std::process::exit(1);
    }
}

fn run(mut opts: Options) -> Result<(), String> {
    let (proxy_cpus, upstream_cpus, load_cpus) = pinning();
    opts.generators.cpus = load_cpus.clone();
    let _ = std::fs::remove_dir_all(&opts.work);
    std::fs::create_dir_all(&opts.work)
        .map_err(|e| format!("cannot create {}: {e}", opts.work.display()))?;
    let work = opts
        .work
        .canonicalize()
        .map_err(|e| format!("{}: {e}", opts.work.display()))?;
    std::fs::create_dir_all(&opts.out)
        .map_err(|e| format!("cannot create {}: {e}", opts.out.display()))?;
    let certs = work.join("certs");
    certificates(&opts.tools.mesh, &certs)?;

    let mut notes = Vec::new();
    let mut kinds = Vec::new();
    for k in &opts.kinds {
        match opts.tools.missing(*k) {
            Some(why) => notes.push(format!("{} skipped: {why}.", k.label())),
            None => kinds.push(*k),
        }
    }
    let tests: Vec<(Protocol, Test)> = tests()
        .into_iter()
        .filter(|(p, _)| opts.protocols.contains(p))
        .collect();
    let (maxima, fixed): (Vec<_>, Vec<_>) = tests
        .iter()
        .copied()
        .partition(|(_, t)| matches!(t, Test::Max { .. }));

    let (_upstream, upstream_addr) = start_upstream(&opts.upstream, upstream_cpus.as_deref(), &[])?;
    let (_grpc_upstream, grpc_upstream) = start_upstream(
        &opts.upstream,
        upstream_cpus.as_deref(),
        &["--grpc".to_owned()],
    )?;
    let ctx = Ctx {
        work: work.clone(),
        upstream: upstream_addr,
        grpc_upstream,
        tools: opts.tools.clone(),
        proxy_cpus: proxy_cpus.clone(),
        certs,
    };
    let clk = procs::clk_tck();
    let load_before = loadavg();
    let started = date();
    let mut records = Vec::new();
    let mut half_rates = Vec::new();
    let load_started = std::time::Instant::now();
    for round in 0..opts.rounds {
        let round_started = std::time::Instant::now();
        let mut order = kinds.clone();
        order.rotate_left(round % kinds.len().max(1));
        for &kind in &order {
            measure(kind, round, &ctx, &opts, &maxima, None, clk, &mut records);
        }
        let needs_half = fixed.iter().any(|(_, t)| matches!(t, Test::HalfMax { .. }));
        let half_rate = match report::slowest_max(&records, round, Protocol::Http1) {
            Some((slowest, max)) => {
                let rate = ((max / 2.0).round() as u32).max(1);
                half_rates.push(format!(
                    "round {}: {rate} rps (half of {}'s {max:.0})",
                    round + 1,
                    slowest.label()
                ));
                Some(rate)
            }
            None => {
                if needs_half {
                    half_rates.push(format!(
                        "round {}: not run (no proxy's HTTP/1.1 maximum was measured)",
                        round + 1
                    ));
                }
                None
            }
        };
        let fixed: Vec<(Protocol, Test)> = fixed
            .iter()
            .copied()
            .filter(|(_, t)| half_rate.is_some() || !matches!(t, Test::HalfMax { .. }))
            .collect();
        for &kind in &order {
            measure(
                kind,
                round,
                &ctx,
                &opts,
                &fixed,
                half_rate,
                clk,
                &mut records,
            );
        }
        eprintln!(
            "round {}/{} took {:.0} s",
            round + 1,
            opts.rounds,
            round_started.elapsed().as_secs_f64()
        );
    }
    let load_secs = load_started.elapsed().as_secs_f64();
    eprintln!(
        "load: {} round(s) in {load_secs:.0} s ({:.0} s per round)",
        opts.rounds,
        load_secs / opts.rounds as f64
    );
    if !half_rates.is_empty() {
        notes.push(format!(
            "Half-maximum runs (HTTP/1.1, mesh-load as at 1,000 rps): the rate is half the lowest HTTP/1.1 closed-loop maximum of the proxies (not `direct`) in the same round's first pass: {}.",
            half_rates.join("; ")
        ));
    }
    if tests.iter().any(|(p, _)| *p == Protocol::Grpc) {
        let pairs: Vec<&str> = kinds
            .iter()
            .filter(|k| !k.forwards_grpc())
            .map(|k| k.label())
            .collect();
        if !pairs.is_empty() {
            notes.push(format!(
                "gRPC is not measured through {}: the server-side proxy forwards to the one HTTP app, so a gRPC pair would need a second pair of processes.",
                pairs.join(" and ")
            ));
        }
    }

    let mut machine = machine();
    machine.push((
        "load average (1/5/15 min) before / after".into(),
        format!("{load_before} / {}", loadavg()),
    ));
    let mut context = Context {
        date: format!("{started} to {}", date()),
        command: opts.command.clone(),
        machine,
        versions: versions(&opts),
        settings: vec![
            ("rounds".into(), opts.rounds.to_string()),
            (
                "fixed-rate run".into(),
                format!(
                    "{} s (mesh-load, one thread: latency from each request's due time when it is sent late, as oha's `--latency-correction`), after a {} s closed-loop warm-up per protocol",
                    opts.fixed_secs, opts.warm_secs
                ),
            ),
            (
                "closed-loop run".into(),
                format!("{} s (wrk / h2load / mesh-load, one thread)", opts.max_secs),
            ),
            (
                "pinning".into(),
                format!(
                    "proxies on CPU {}, upstream on CPU {}, load generator on CPU {}",
                    proxy_cpus.as_deref().unwrap_or("any"),
                    upstream_cpus.as_deref().unwrap_or("any"),
                    load_cpus.as_deref().unwrap_or("any")
                ),
            ),
        ],
        notes,
        tests: tests.clone(),
    };
    context.notes.push(
        "Upstream: one-thread hyper server answering 200 with 1 KiB; every proxy speaks HTTP/1.1 to it (h2c is downstream only), and the two-proxy contenders speak HTTP/1.1 over mutual TLS 1.3 between them. gRPC: a second one-thread server (hyper HTTP/2, tonic's prost codec) answering a unary call with a 1 KiB payload, which every proxy reaches over h2c (mesh: a ServiceEntry port with `protocol: GRPC`; nginx `grpc_pass`; HAProxy `proto h2`; Envoy HTTP/2 protocol options on the cluster).".into(),
    );
    if opts.profile_secs > 0 {
        match profile(&ctx, &opts, opts.profile_secs) {
            Ok(path) => context
                .notes
                .push(format!("Profile of mesh under load: {}.", path.display())),
            Err(e) => context.notes.push(format!("Profile not taken: {e}.")),
        }
    }
    let md = report::markdown(&records, &context);
    let json = report::json(&records, &context);
    let md_path = opts.out.join("latest.md");
    let json_path = opts.out.join("latest.json");
    std::fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).expect("a JSON value serialises"),
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}

/// `mesh ca init` and `mesh ca issue` for the client-side and server-side proxies of the
/// two-proxy contenders (both Envoy and mesh use these files).
fn certificates(mesh: &Path, dir: &Path) -> Result<(), String> {
    let ca = dir.join("ca").display().to_string();
    let mut runs = vec![vec![
        "ca".to_owned(),
        "init".into(),
        "--dir".into(),
        ca.clone(),
    ]];
    for sa in ["client", "server"] {
        runs.push(vec![
            "ca".into(),
            "issue".into(),
            "--dir".into(),
            ca.clone(),
            "--namespace".into(),
            "default".into(),
            "--service-account".into(),
            format!("bench-{sa}"),
            "--out".into(),
            dir.join(sa).display().to_string(),
        ]);
    }
    for args in runs {
        let out = Command::new(mesh)
            .args(&args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", mesh.display()))?;
        if !out.status.success() {
            return Err(format!(
                "`mesh {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

fn start_upstream(
    bin: &Path,
    cpus: Option<&str>,
    args: &[String],
) -> Result<(Proc, SocketAddr), String> {
    let (proc, mut stdout) = Proc::spawn_piped("upstream", cpus, bin, args)?;
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .map_err(|e| format!("upstream: {e}"))?;
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("the upstream printed `{}`, not its address", line.trim()))?;
    Ok((proc, addr))
}

/// Starts `kind`, runs every test through it (the gRPC ones only where it forwards gRPC), and
/// stops it. `half_rate` is the rate of this round's half-maximum tests.
#[allow(clippy::too_many_arguments)]
fn measure(
    kind: Kind,
    round: usize,
    ctx: &Ctx,
    opts: &Options,
    tests: &[(Protocol, Test)],
    half_rate: Option<u32>,
    clk: f64,
    records: &mut Vec<Record>,
) {
    let tests: Vec<(Protocol, Test)> = tests
        .iter()
        .copied()
        .filter(|(p, _)| *p != Protocol::Grpc || kind.forwards_grpc())
        .collect();
    if tests.is_empty() {
        return;
    }
    let pass = if tests.iter().all(|(_, t)| matches!(t, Test::Max { .. })) {
        "closed loop".to_owned()
    } else {
        half_rate.map_or("fixed rate".to_owned(), |r| {
            format!("fixed rate; half the slowest maximum: {r} rps")
        })
    };
    let started = std::time::Instant::now();
    let fail = |records: &mut Vec<Record>, e: &str| {
        eprintln!("  {e}");
        for (protocol, test) in &tests {
            records.push(Record {
                round,
                kind,
                protocol: *protocol,
                test: *test,
                result: Err(e.to_owned()),
            });
        }
    };
    let running = contenders::start(kind, ctx);
    eprintln!(
        "[round {}/{}] {} ({pass}; started in {:.2} s)",
        round + 1,
        opts.rounds,
        kind.label(),
        started.elapsed().as_secs_f64()
    );
    let running = match running {
        Ok(r) => r,
        Err(e) => return fail(records, &e),
    };
    let mut warmed = Vec::new();
    for (protocol, test) in &tests {
        let addr = match protocol {
            Protocol::Http1 => running.h1,
            Protocol::H2c => running.h2,
            Protocol::Grpc => match running.grpc {
                Some(addr) => addr,
                None => continue,
            },
        };
        if !warmed.contains(protocol) && opts.warm_secs > 0.0 {
            if let Err(e) = opts.generators.warm_up(*protocol, addr, opts.warm_secs) {
                eprintln!("  warm-up ({}) failed: {e}", protocol.label());
            }
            warmed.push(*protocol);
        }
        let secs = match test {
            Test::Fixed { .. } | Test::HalfMax { .. } => opts.fixed_secs,
            Test::Max { .. } => f64::from(opts.max_secs),
        };
        // A half-maximum test runs at this round's rate; it is recorded under its own id.
        let run_as = match (*test, half_rate) {
            (Test::HalfMax { conns }, Some(rps)) => Test::Fixed { rps, conns },
            (t, _) => t,
        };
        let pids = if kind.has_proxy() {
            running.pids()
        } else {
            Vec::new()
        };
        let result = measure_one(&opts.generators, run_as, *protocol, addr, secs, &pids, clk);
        match &result {
            Ok(m) => eprintln!(
                "  {} {}: {:.0} rps, p99 {} ms, CPU {} s/10k, RSS {} MiB{}",
                protocol.label(),
                test.id(),
                m.load.rps,
                m.load.p99.map_or("–".into(), |v| format!("{v:.3}")),
                m.cpu_per_10k().map_or("–".into(), |v| format!("{v:.3}")),
                m.rss_mib.map_or("–".into(), |v| format!("{v:.1}")),
                if m.load.errors > 0 {
                    format!(", {} errors", m.load.errors)
                } else {
                    String::new()
                },
            ),
            Err(e) => eprintln!("  {} {}: {e}", protocol.label(), test.id()),
        }
        records.push(Record {
            round,
            kind,
            protocol: *protocol,
            test: *test,
            result,
        });
    }
    drop(running);
}

/// One load run with the proxies' CPU time read around it and their RSS sampled during it.
fn measure_one(
    generators: &Generators,
    test: Test,
    protocol: Protocol,
    addr: SocketAddr,
    secs: f64,
    pids: &[u32],
    clk: f64,
) -> Result<Measured, String> {
    // Sampled every 100 ms until told to stop (at once: a dropped sender ends the wait).
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let sampler = (!pids.is_empty()).then(|| {
        let pids = pids.to_vec();
        std::thread::spawn(move || {
            let mut max: f64 = 0.0;
            loop {
                max = max.max(procs::memory_mib(&pids).0);
                match stopped.recv_timeout(Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return max,
                }
            }
        })
    });
    let cpu_before = procs::cpu_seconds(pids, clk);
    let load = generators.run(test, protocol, addr, secs);
    let cpu_after = procs::cpu_seconds(pids, clk);
    drop(stop);
    let rss = sampler.and_then(|s| s.join().ok());
    let load = load?;
    let has = !pids.is_empty();
    Ok(Measured {
        load,
        cpu_s: has.then_some(cpu_after - cpu_before),
        rss_mib: rss,
        hwm_mib: has.then(|| procs::memory_mib(pids).1),
    })
}

/// `perf record` (the `cpu-clock` software event: no hardware counters needed; DWARF call
/// graphs, as release builds keep no frame pointers) of mesh alone under HTTP/1.1 closed-loop
/// load. `profile-mesh.txt` gets the time per binary, the hottest functions by their own time,
/// and by their time with callees (where the layers' inclusive cost shows).
fn profile(ctx: &Ctx, opts: &Options, secs: u32) -> Result<PathBuf, String> {
    let running = contenders::start(Kind::Mesh, ctx)?;
    let pid = running.procs[0].pid().to_string();
    let generators = opts.generators.clone();
    let addr = running.h1;
    let load = std::thread::spawn(move || {
        generators.run(
            Test::Max {
                conns: 16,
                streams: 1,
            },
            Protocol::Http1,
            addr,
            f64::from(secs + 2),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let data = ctx.work.join("perf.data");
    let rec = Command::new("perf")
        .args([
            "record",
            "-F",
            "499",
            "-e",
            "cpu-clock",
            "--call-graph",
            "dwarf,16384",
        ])
        .args(["-p", &pid, "-o"])
        .arg(&data)
        .args(["--", "sleep", &secs.to_string()])
        .output()
        .map_err(|e| format!("cannot run perf: {e}"))?;
    let _ = load.join();
    drop(running);
    if !rec.status.success() {
        return Err(format!(
            "perf record failed: {}",
            String::from_utf8_lossy(&rec.stderr).trim()
        ));
    }
    let views: [(&str, &[&str]); 3] = [
        ("time per binary", &["--no-children", "--sort", "dso"]),
        (
            "functions by their own time (self)",
            &[
                "--no-children",
                "-F",
                "overhead,dso,sym",
                "--percent-limit",
                "0.5",
            ],
        ),
        (
            "mesh's layers and connection code with their callees (children, self)",
            &["--children", "--sort", "sym", "--percent-limit", "1"],
        ),
    ];
    let mut text = format!(
        "perf record -F 499 -e cpu-clock --call-graph dwarf of mesh (outbound, --concurrency 1) \
         for {secs} s under wrk -t1 -c16 (HTTP/1.1, closed loop)\n"
    );
    for (title, args) in views {
        let out = Command::new("perf")
            .args(["report", "--stdio", "-g", "none"])
            .args(args)
            .arg("-i")
            .arg(&data)
            .output()
            .map_err(|e| format!("cannot run perf report: {e}"))?;
        text.push_str(&format!("\n## {title}\n\n"));
        // perf pads every line to the longest (Rust generic) symbol: trim and cut.
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim_end();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // The inclusive view is all runtime frames otherwise: keep mesh's own.
            let ours = line.contains("mesh_tower::") || line.contains("mesh::");
            if args[0] == "--children" && (!ours || line.ends_with("(inlined)")) {
                continue;
            }
            text.extend(line.chars().take(180));
            text.push('\n');
        }
    }
    let flat = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "-g",
            "none",
            "--no-children",
            "--sort",
            "dso,sym",
        ])
        .args(["--percent-limit", "0", "-i"])
        .arg(&data)
        .output()
        .map_err(|e| format!("cannot run perf report: {e}"))?;
    text.push_str("\n## own time by crate (mesh's symbols by their leading path; libc split)\n\n");
    for (share, name) in by_crate(&String::from_utf8_lossy(&flat.stdout)) {
        text.push_str(&format!("{share:8.2}%  {name}\n"));
    }
    let path = opts.out.join("profile-mesh.txt");
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Sums `perf report --sort dso,sym` lines (`12.3%  dso  [.] symbol`) by crate: the first
/// path segment of a Rust symbol (`<hyper::proto::...` is `hyper`), libc split into the
/// allocator, memory copies and the rest, the kernel as one. Largest first.
fn by_crate(report: &str) -> Vec<(f64, String)> {
    let mut sums: Vec<(f64, String)> = Vec::new();
    for line in report.lines() {
        let mut words = line.split_whitespace();
        let (Some(share), Some(dso), Some(_kind)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(share) = share.strip_suffix('%').and_then(|s| s.parse::<f64>().ok()) else {
            continue;
        };
        let symbol: String = words.collect::<Vec<_>>().join(" ");
        let name = if dso.starts_with("[kernel") {
            "kernel".to_owned()
        } else if dso.starts_with("libc") {
            let alloc = [
                "malloc",
                "free",
                "unlink_chunk",
                "consolidate",
                "_int_",
                "realloc",
            ];
            if alloc.iter().any(|a| symbol.contains(a)) {
                "libc: malloc/free".to_owned()
            } else if symbol.contains("mem") {
                "libc: memmove/memcpy".to_owned()
            } else {
                "libc: other".to_owned()
            }
        } else {
            let s = symbol.trim_start_matches('<');
            let s = s.strip_prefix("core::ptr::drop_in_place<").unwrap_or(s);
            let krate = s.trim_start_matches('<').split("::").next().unwrap_or(s);
            format!("{dso}: {krate}")
        };
        match sums.iter_mut().find(|(_, n)| *n == name) {
            Some((sum, _)) => *sum += share,
            None => sums.push((share, name)),
        }
    }
    sums.sort_by(|a, b| b.0.total_cmp(&a.0));
    sums.truncate(25);
    sums
}

fn sh(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.trim().to_owned()
        })
        .unwrap_or_default()
}

fn date() -> String {
    sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

fn machine() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_owned())
        })
        .and_then(|kib| kib.parse::<f64>().ok())
        .map(|kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0))
        .unwrap_or_default();
    vec![
        ("nproc".into(), sh("nproc", &[])),
        ("CPU".into(), cpu),
        ("memory".into(), mem),
        ("kernel".into(), sh("uname", &["-sr"])),
    ]
}

/// The 1, 5 and 15-minute load averages: other work on a shared machine shows here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn first_line(s: String) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn versions(opts: &Options) -> Vec<(String, String)> {
    let path = |p: &Path| p.display().to_string();
    let mut v = vec![(
        "mesh".to_owned(),
        format!(
            "{} (git {})",
            first_line(sh(&path(&opts.tools.mesh), &["--version"])),
            first_line(sh("git", &["describe", "--always", "--dirty"]))
        ),
    )];
    if let Some(p) = &opts.tools.nginx {
        v.push(("nginx".into(), first_line(sh(&path(p), &["-v"]))));
    }
    if let Some(p) = &opts.tools.haproxy {
        v.push(("HAProxy".into(), first_line(sh(&path(p), &["-v"]))));
    }
    if let Some(p) = &opts.tools.envoy {
        // `PATH  version: SHA/1.40.0/Clean/RELEASE/BoringSSL`: the part after the path.
        let line = first_line(sh(&path(p), &["--version"]));
        let version = line
            .split_once("version: ")
            .map_or(line.as_str(), |(_, v)| v);
        v.push(("Envoy".into(), version.to_owned()));
    }
    v.push((
        "wrk".into(),
        first_line(sh(&path(&opts.generators.wrk), &["-v"])),
    ));
    v.push((
        "h2load".into(),
        first_line(sh(&path(&opts.generators.h2load), &["--version"])),
    ));
    v.push((
        "mesh-load".into(),
        "the harness's own (benches/e2e/src/bin/mesh-load.rs: hyper 1 and tonic 0.14 clients, hdrhistogram)".into(),
    ));
    v.push(("rustc".into(), first_line(sh("rustc", &["--version"]))));
    v
}

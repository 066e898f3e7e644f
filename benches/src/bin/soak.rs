//! `soak`: the real `mesh run` under a steady load for a long time, to show that its memory
//! stays flat (issue 5: "10 minutes at a steady rate, RSS stays flat"). Not run in CI.
//!
//! ```text
//! cargo build --release -p mesh-proxy --bin mesh
//! cargo run --release -p mesh-benches --bin soak -- [--duration 10m] [--rate 500]
//!     [--connections 4] [--sample 5s] [--max-growth 10] [--mesh PATH]
//! ```
//!
//! It starts a plain HTTP/1.1 upstream (1 KiB bodies), then `mesh run` with an outbound
//! listener and a config (a ServiceEntry, a VirtualService with a match, a timeout and retries,
//! a DestinationRule), and sends `--rate` requests a second through the outbound listener over
//! `--connections` keep-alive connections, on a fixed schedule (each connection has its slot
//! every `connections / rate` seconds, staggered; a late request does not move the schedule).
//! Every `--sample` it reads the proxy's resident memory (`VmRSS` of `/proc/PID/status`) and
//! prints a row: time, RSS, requests and errors so far, the rate and latency of the last
//! interval. At the end, the verdict: the median RSS of the last minute against that of the
//! first (minutes are `min(60 s, duration / 4)` for short runs), within `--max-growth` percent,
//! and no request failed. Exit status 0 when it holds, 1 when not, 2 for a usage or start error.
//!
//! `SOAK_DURATION` (`30s`, `10m`, `1h`) sets the default duration; `--mesh` (or `MESH_BIN`)
//! the binary, else `mesh` beside this program (`target/release/mesh` for a `--release` run).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::{Instant, MissedTickBehavior},
};

const USAGE: &str = "usage: soak [--duration 10m] [--rate 500] [--connections 4] [--sample 5s] \
                     [--max-growth 10] [--mesh PATH]";
/// The upstream's body.
const BODY_SIZE: usize = 1024;
/// Each request must be answered within this long, or it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Args {
    duration: Duration,
    rate: u32,
    connections: u32,
    sample: Duration,
    max_growth: f64,
    mesh: PathBuf,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (30s, 10m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{s}`: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

impl Args {
    fn parse() -> Result<Args, String> {
        let duration = match std::env::var("SOAK_DURATION") {
            Ok(d) => parse_duration(&d).map_err(|e| format!("SOAK_DURATION: {e}"))?,
            Err(_) => Duration::from_secs(600),
        };
        let mesh = std::env::var_os("MESH_BIN").map(PathBuf::from).or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.with_file_name(format!("mesh{}", std::env::consts::EXE_SUFFIX)))
        });
        let mut args = Args {
            duration,
            rate: 500,
            connections: 4,
            sample: Duration::from_secs(5),
            max_growth: 10.0,
            mesh: mesh.unwrap_or_else(|| PathBuf::from("mesh")),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.into());
            }
            let value = it
                .next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            let number = |what: &str| -> Result<u32, String> {
                value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{what} {value}: a whole number above 0"))
            };
            match flag.as_str() {
                "--duration" => args.duration = parse_duration(&value)?,
                "--rate" => args.rate = number("--rate")?,
                "--connections" => args.connections = number("--connections")?,
                "--sample" => args.sample = parse_duration(&value)?,
                "--max-growth" => {
                    args.max_growth = value
                        .parse()
                        .map_err(|_| format!("--max-growth {value}: a percentage"))?
                }
                "--mesh" => args.mesh = value.into(),
                _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
            }
        }
        if args.sample.is_zero() || args.duration < args.sample * 2 {
            return Err("--duration must be at least two --sample intervals".into());
        }
        Ok(args)
    }
}

fn main() -> ExitCode {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.mesh.is_file() {
        eprintln!(
            "soak: no mesh binary at {}: build it first with `cargo build --release -p mesh-proxy --bin mesh`, or give --mesh PATH",
            args.mesh.display()
        );
        return ExitCode::from(2);
    }
    // The load and the upstream share two threads; the proxy has its own (`--concurrency 2`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(soak(args))
}

// === the upstream and the proxy ===

/// A plain HTTP/1.1 server answering every request with 200 and [`BODY_SIZE`] bytes.
async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let body = Bytes::from(vec![b'x'; BODY_SIZE]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move { Ok::<_, std::convert::Infallible>(Response::new(Full::new(body))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

fn config(upstream: SocketAddr) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: soak}}
spec:
  hosts: [soak.example.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: soak, version: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: soak}}
spec:
  host: soak.example.internal
  trafficPolicy:
    loadBalancer: {{simple: LEAST_REQUEST}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: soak}}
spec:
  hosts: [soak.example.internal]
  http:
  - match: [{{uri: {{prefix: /items/}}}}]
    timeout: 5s
    retries: {{attempts: 2, perTryTimeout: 2s, retryOn: "connect-failure,5xx"}}
    route: [{{destination: {{host: soak.example.internal, subset: v1}}}}]
"#,
        port = upstream.port()
    );
    std::fs::write(dir.join("soak.yaml"), yaml).expect("write the config");
    dir
}

/// `mesh run`, killed on drop.
struct Proxy {
    child: Child,
    outbound: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_proxy(mesh: &PathBuf, config: &PathBuf) -> Result<Proxy, String> {
    let mut child = Command::new(mesh)
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--outbound", "127.0.0.1:0", "--concurrency", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", mesh.display()))?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let mut seen = Vec::new();
    let outbound = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            return Err(format!(
                "mesh run ended before it was ready:\n{}",
                seen.join("\n")
            ));
        };
        if line.contains("mesh run: ready:")
            && let Some(addr) = line.split("outbound ").nth(1)
        {
            let addr = addr.split(',').next().unwrap_or(addr).trim();
            break addr.parse().map_err(|e| format!("`{addr}`: {e}"))?;
        }
        seen.push(line);
    };
    // The proxy's stderr, drained so it never blocks, shown as it comes (it logs errors only).
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("  mesh: {line}");
        }
    });
    Ok(Proxy { child, outbound })
}

/// The resident memory of `pid` in KiB (`VmRSS`), on Linux.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// === the load ===

/// What the connections count, shared.
#[derive(Debug, Default)]
struct Counts {
    requests: AtomicU64,
    errors: AtomicU64,
    /// Latencies (µs) since the last sample.
    latencies: Mutex<Vec<u32>>,
    /// The first few error messages, for the report.
    first_errors: Mutex<Vec<String>>,
}

impl Counts {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap_or_else(|e| e.into_inner());
        if first.len() < 5 {
            first.push(what);
        }
    }
}

/// One keep-alive connection sending a request every `period`, from `start`, until `stop`.
async fn connection(
    proxy: SocketAddr,
    start: Instant,
    period: Duration,
    counts: Arc<Counts>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sender = None;
    let mut ticks = tokio::time::interval_at(start, period);
    // A late request is followed at once by the ones it held up: the rate stays the rate.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        n += 1;
        let began = Instant::now();
        let result = tokio::time::timeout(REQUEST_TIMEOUT, one(proxy, &mut sender, n)).await;
        match result {
            Ok(Ok(())) => {
                let us = u32::try_from(began.elapsed().as_micros()).unwrap_or(u32::MAX);
                counts
                    .latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(us);
            }
            Ok(Err(e)) => {
                sender = None;
                counts.error(e);
            }
            Err(_) => {
                sender = None;
                counts.error(format!("no answer within {REQUEST_TIMEOUT:?}"));
            }
        }
        counts.requests.fetch_add(1, Ordering::Relaxed);
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One request on the connection (opened again if it was lost).
async fn one(proxy: SocketAddr, sender: &mut Option<Sender>, n: u64) -> Result<(), String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let tcp = TcpStream::connect(proxy)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        *sender = Some(s);
    }
    let s = sender.as_mut().expect("connected above");
    s.ready().await.map_err(|e| format!("connection: {e}"))?;
    let req = Request::get(format!("/items/{}", n % 1000))
        .header("host", "soak.example.internal")
        .body(Full::default())
        .expect("a valid request");
    let res = s.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != StatusCode::OK || body.len() != BODY_SIZE {
        return Err(format!("{status} with {} bytes", body.len()));
    }
    Ok(())
}

// === the run and the report ===

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

async fn soak(args: Args) -> ExitCode {
    let upstream = upstream().await;
    let config = config(upstream);
    let proxy = match start_proxy(&args.mesh, &config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    let pid = proxy.child.id();
    println!(
        "soak: {} run --concurrency 2, pid {pid}, outbound {}; {} req/s over {} keep-alive connections for {:?}, 1 KiB responses",
        args.mesh.display(),
        proxy.outbound,
        args.rate,
        args.connections,
        args.duration
    );

    let counts = Arc::new(Counts::default());
    let (stop_tx, stop) = watch::channel(false);
    let period = Duration::from_secs_f64(f64::from(args.connections) / f64::from(args.rate));
    let start = Instant::now();
    let mut load = tokio::task::JoinSet::new();
    for i in 0..args.connections {
        let offset = period.mul_f64(f64::from(i) / f64::from(args.connections));
        load.spawn(connection(
            proxy.outbound,
            start + offset,
            period,
            counts.clone(),
            stop.clone(),
        ));
    }

    println!(
        "{:>8} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "time", "RSS MiB", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval_at(start + args.sample, args.sample);
    let mut last_requests = 0;
    loop {
        ticks.tick().await;
        let at = start.elapsed();
        let Some(rss_kib) = rss_kib(pid) else {
            eprintln!("soak: cannot read /proc/{pid}/status (not Linux, or the proxy died)");
            return ExitCode::from(2);
        };
        let requests = counts.requests.load(Ordering::Relaxed);
        let errors = counts.errors.load(Ordering::Relaxed);
        let mut window =
            std::mem::take(&mut *counts.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        window.sort_unstable();
        println!(
            "{:>7.0}s {:>10.1} {:>10} {:>8} {:>8.0} {:>8.2} {:>8.2}",
            at.as_secs_f64(),
            rss_kib as f64 / 1024.0,
            requests,
            errors,
            (requests - last_requests) as f64 / args.sample.as_secs_f64(),
            percentile(&window, 0.5),
            percentile(&window, 0.99),
        );
        last_requests = requests;
        samples.push(Sample { at, rss_kib });
        if at + args.sample / 2 >= args.duration {
            break;
        }
    }
    let _ = stop_tx.send(true);
    while load.join_next().await.is_some() {}
    drop(proxy);
    let _ = std::fs::remove_dir_all(&config);

    verdict(&args, &samples, &counts)
}

/// RSS growth between the first and the last minute (their medians), and the errors.
fn verdict(args: &Args, samples: &[Sample], counts: &Counts) -> ExitCode {
    let end = samples.last().map_or(Duration::ZERO, |s| s.at);
    let minute = Duration::from_secs(60).min(end / 4).max(args.sample);
    // The samples of a "minute": one every `--sample`.
    let k = ((minute.as_secs_f64() / args.sample.as_secs_f64()).round() as usize).max(1);
    let first: Vec<u64> = samples.iter().take(k).map(|s| s.rss_kib).collect();
    let last: Vec<u64> = samples.iter().rev().take(k).map(|s| s.rss_kib).collect();
    let (Some(first), Some(last)) = (median(first), median(last)) else {
        eprintln!("soak: too few samples for a verdict");
        return ExitCode::from(2);
    };
    let window = k as f64 * args.sample.as_secs_f64();
    let growth = (last as f64 - first as f64) / first as f64 * 100.0;
    let requests = counts.requests.load(Ordering::Relaxed);
    let errors = counts.errors.load(Ordering::Relaxed);
    let flat = growth <= args.max_growth;
    println!(
        "RSS median of the first {k} samples ({window:.0} s): {:.1} MiB, of the last {k}: {:.1} MiB: {growth:+.1}% (limit {:+.1}%)",
        first as f64 / 1024.0,
        last as f64 / 1024.0,
        args.max_growth
    );
    println!(
        "{requests} requests, {errors} errors, {:.0} req/s on average",
        requests as f64 / end.as_secs_f64()
    );
    for e in counts
        .first_errors
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        println!("  error: {e}");
    }
    if flat && errors == 0 {
        println!("verdict: PASS (RSS flat, no errors)");
        ExitCode::SUCCESS
    } else {
        println!(
            "verdict: FAIL ({}{})",
            if flat { "" } else { "RSS grew" },
            if errors == 0 {
                ""
            } else if flat {
                "requests failed"
            } else {
                ", requests failed"
            }
        );
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn percentiles_and_medians() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
        assert_eq!(median(vec![5, 1, 3]), Some(3));
        assert_eq!(median(vec![]), None);
    }
}

//! The load generators and what their output says: oha for fixed-rate latency (with its
//! coordinated-omission correction), wrk for HTTP/1.1 closed-loop throughput, h2load for h2c
//! closed-loop throughput, and the harness's own `grpc-load` (`src/bin/grpc-load.rs`) for gRPC
//! unary, both fixed-rate (corrected as oha is) and closed loop. Each runs pinned to the load
//! cores, one thread.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::contenders::{GRPC_HOST, HOST};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    H2c,
    /// gRPC unary calls over h2c, to the gRPC upstream (`upstream --grpc`).
    Grpc,
}

impl Protocol {
    pub fn id(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::Grpc => "grpc",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::H2c => "h2c",
            Protocol::Grpc => "gRPC unary",
        }
    }

    /// The `--protocols` list's ids.
    pub fn from_id(id: &str) -> Option<Protocol> {
        [Protocol::Http1, Protocol::H2c, Protocol::Grpc]
            .into_iter()
            .find(|p| p.id() == id)
    }
}

/// One test a contender goes through in every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// oha (grpc-load for gRPC) at a fixed rate (requests per second) over `conns` connections.
    Fixed { rps: u32, conns: u32 },
    /// A fixed-rate run at half the slowest proxy's closed-loop maximum in the same round (the
    /// issue's "50% of the slowest contender's maximum"): a rate that every proxy sustains, yet
    /// far from idle. The round sets the rate; the driver runs it as `Fixed` at that rate.
    HalfMax { conns: u32 },
    /// As many requests as the contender serves: wrk (HTTP/1.1, `conns` connections) or h2load
    /// (h2c, `conns` connections of `streams` concurrent streams each).
    Max { conns: u32, streams: u32 },
}

impl Test {
    pub fn id(self) -> String {
        match self {
            Test::Fixed { rps, conns } => format!("fixed-{rps}rps-c{conns}"),
            Test::HalfMax { conns } => format!("fixed-halfmax-c{conns}"),
            Test::Max { conns, streams: 1 } => format!("max-c{conns}"),
            Test::Max { conns, streams } => format!("max-c{conns}-m{streams}"),
        }
    }

    pub fn label(self) -> String {
        match self {
            Test::Fixed { rps, conns } => format!("{rps} rps over {conns} connections"),
            Test::HalfMax { conns } => {
                format!("50% of the slowest maximum over {conns} connections")
            }
            Test::Max { conns, streams: 1 } => {
                format!("closed-loop maximum, {conns} connections")
            }
            Test::Max { conns, streams } => {
                format!("closed-loop maximum, {conns} connections x {streams} streams")
            }
        }
    }
}

/// Where the load generators are, and the cores they run on.
#[derive(Debug, Clone)]
pub struct Generators {
    pub oha: Option<PathBuf>,
    pub wrk: PathBuf,
    pub h2load: PathBuf,
    /// The harness's gRPC load generator (`None`: gRPC tests are skipped).
    pub grpc_load: Option<PathBuf>,
    pub cpus: Option<String>,
}

/// What one load run measured. Latencies in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub requests: u64,
    pub rps: f64,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub p999: Option<f64>,
    /// Requests that failed or answered anything but 2xx.
    pub errors: u64,
}

impl Generators {
    fn command(&self, program: &Path) -> Command {
        match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs `test` against `addr` for `secs` seconds.
    pub fn run(
        &self,
        test: Test,
        protocol: Protocol,
        addr: SocketAddr,
        secs: u32,
    ) -> Result<Outcome, String> {
        match (protocol, test) {
            (_, Test::HalfMax { .. }) => Err(
                "a half-maximum test runs at the rate its round's maxima set: the driver passes it as Test::Fixed at that rate".into(),
            ),
            (Protocol::Grpc, Test::Fixed { rps, conns }) => {
                self.grpc_load(addr, conns, &["--rps", &rps.to_string()], secs)
            }
            (Protocol::Grpc, Test::Max { conns, streams }) => self.grpc_load(
                addr,
                conns,
                &["--max", "--streams", &streams.to_string()],
                secs,
            ),
            (_, Test::Fixed { rps, conns }) => self.oha(protocol, addr, rps, conns, secs),
            (Protocol::Http1, Test::Max { conns, .. }) => self.wrk(addr, conns, secs),
            (Protocol::H2c, Test::Max { conns, streams }) => {
                self.h2load(addr, conns, streams, secs)
            }
        }
    }

    /// A short closed-loop run to open connections and warm caches before measuring.
    pub fn warm_up(&self, protocol: Protocol, addr: SocketAddr) -> Result<(), String> {
        let run = match protocol {
            Protocol::Http1 => self.wrk(addr, 4, 1),
            Protocol::H2c => self.h2load(addr, 2, 4, 1),
            Protocol::Grpc => self.grpc_load(addr, 2, &["--max", "--streams", "4"], 1),
        };
        run.map(|_| ())
    }

    fn oha(
        &self,
        protocol: Protocol,
        addr: SocketAddr,
        rps: u32,
        conns: u32,
        secs: u32,
    ) -> Result<Outcome, String> {
        let oha = self
            .oha
            .as_ref()
            .ok_or("oha is not installed: fixed-rate tests need it")?;
        let mut cmd = self.command(oha);
        cmd.args([
            "--no-tui",
            "--output-format",
            "json",
            "--latency-correction",
        ])
        .args(["-z", &format!("{secs}s")])
        .args(["-c", &conns.to_string()])
        .args(["-q", &rps.to_string()])
        // The authority is the URL's (a `Host` header on top would be a second one over
        // HTTP/2, which nginx refuses with 400); the connection goes to `addr`.
        .args([
            "--connect-to",
            &format!("{HOST}:80:{}:{}", addr.ip(), addr.port()),
        ]);
        if protocol == Protocol::H2c {
            // One stream per connection, so 4 and 16 connections mean the same concurrency
            // as over HTTP/1.1.
            cmd.args(["--http2", "-p", "1"]);
        }
        cmd.arg(format!("http://{HOST}/"));
        let out = output(cmd, "oha", secs)?;
        parse_oha(&out)
    }

    fn wrk(&self, addr: SocketAddr, conns: u32, secs: u32) -> Result<Outcome, String> {
        let mut cmd = self.command(&self.wrk);
        cmd.args(["-t", "1", "-c", &conns.to_string()])
            .args(["-d", &format!("{secs}s"), "--latency"])
            .args(["-H", &format!("Host: {HOST}")])
            .arg(format!("http://{addr}/"));
        let out = output(cmd, "wrk", secs)?;
        parse_wrk(&out)
    }

    fn h2load(
        &self,
        addr: SocketAddr,
        conns: u32,
        streams: u32,
        secs: u32,
    ) -> Result<Outcome, String> {
        let mut cmd = self.command(&self.h2load);
        cmd.args([
            "-t",
            "1",
            "-c",
            &conns.to_string(),
            "-m",
            &streams.to_string(),
        ])
        .args(["-D", &secs.to_string()])
        .args(["-H", &format!(":authority: {HOST}")])
        .arg(format!("http://{addr}/"));
        let out = output(cmd, "h2load", secs)?;
        parse_h2load(&out)
    }

    /// `grpc-load` against `addr` (`mode`: `--rps R` or `--max --streams M`), with gRPC's
    /// authority, which mesh routes by.
    fn grpc_load(
        &self,
        addr: SocketAddr,
        conns: u32,
        mode: &[&str],
        secs: u32,
    ) -> Result<Outcome, String> {
        let bin = self
            .grpc_load
            .as_ref()
            .ok_or("grpc-load was not built: gRPC tests need it")?;
        let mut cmd = self.command(bin);
        cmd.args(["--addr", &addr.to_string(), "--authority", GRPC_HOST])
            .args(["--conns", &conns.to_string(), "--secs", &secs.to_string()])
            .args(mode);
        let out = output(cmd, "grpc-load", secs)?;
        parse_grpc_load(&out)
    }
}

/// Runs `cmd`, giving it `secs` plus a margin; its stdout, or an error with its stderr.
fn output(mut cmd: Command, name: &str, secs: u32) -> Result<String, String> {
    let limit = Duration::from_secs(u64::from(secs) + 30);
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    let pid = child.id();
    // A watchdog: a generator that hangs past its run (a proxy that stopped answering) is
    // killed rather than stalling the whole benchmark.
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{name}: {e}"))?;
    let _ = done_tx.send(());
    let _ = watchdog.join();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{name} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            stdout.trim()
        ));
    }
    Ok(stdout)
}

/// oha's `--output-format json`: latencies in seconds, percentiles under
/// `latencyPercentiles`, answers under `statusCodeDistribution` and failures under
/// `errorDistribution`.
pub fn parse_oha(out: &str) -> Result<Outcome, String> {
    let v: serde_json::Value = serde_json::from_str(out)
        .map_err(|e| format!("oha's JSON did not parse ({e}): {}", snippet(out)))?;
    let ms = |k: &str| v["latencyPercentiles"][k].as_f64().map(|s| s * 1e3);
    let mut ok = 0u64;
    let mut errors = 0u64;
    if let Some(codes) = v["statusCodeDistribution"].as_object() {
        for (code, n) in codes {
            let n = n.as_u64().unwrap_or(0);
            if code.starts_with('2') {
                ok += n;
            } else {
                errors += n;
            }
        }
    }
    if let Some(errs) = v["errorDistribution"].as_object() {
        // Requests still in flight when the run's time is up are cut off by oha itself.
        errors += errs
            .iter()
            .filter(|(what, _)| !what.contains("aborted due to deadline"))
            .filter_map(|(_, n)| n.as_u64())
            .sum::<u64>();
    }
    Ok(Outcome {
        requests: ok,
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50: ms("p50"),
        p90: ms("p90"),
        p99: ms("p99"),
        p999: ms("p99.9"),
        errors,
    })
}

/// `grpc-load`'s JSON line (`mesh_e2e_bench::grpc::load::Report::to_json`): latencies already
/// in milliseconds. A run in which no call succeeded is an error, with the first failure's
/// reason.
pub fn parse_grpc_load(out: &str) -> Result<Outcome, String> {
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|e| format!("grpc-load's JSON did not parse ({e}): {}", snippet(out)))?;
    let requests = v["requests"].as_u64().unwrap_or(0);
    if requests == 0 {
        return Err(format!(
            "grpc-load: no call succeeded ({} failed; the first: {})",
            v["errors"].as_u64().unwrap_or(0),
            v["first_error"].as_str().unwrap_or("none reported")
        ));
    }
    Ok(Outcome {
        requests,
        rps: v["rps"].as_f64().unwrap_or(0.0),
        p50: v["p50_ms"].as_f64(),
        p90: v["p90_ms"].as_f64(),
        p99: v["p99_ms"].as_f64(),
        p999: v["p99.9_ms"].as_f64(),
        errors: v["errors"].as_u64().unwrap_or(0),
    })
}

/// wrk's text report: `N requests in 5.00s`, `Requests/sec: X`, the `--latency`
/// distribution (50/75/90/99%), `Non-2xx or 3xx responses: N` and `Socket errors: ...`.
pub fn parse_wrk(out: &str) -> Result<Outcome, String> {
    let mut o = Outcome::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", ..] => o.requests = n.parse().unwrap_or(0),
            ["Requests/sec:", x] => o.rps = x.parse().unwrap_or(0.0),
            ["50%", t] => o.p50 = duration_ms(t),
            ["90%", t] => o.p90 = duration_ms(t),
            ["99%", t] => o.p99 = duration_ms(t),
            ["Non-2xx", "or", "3xx", "responses:", n] => o.errors += n.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                // `connect 0, read 0, write 0, timeout 0`
                o.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if o.requests == 0 {
        return Err(format!("wrk reported no requests: {}", snippet(out)));
    }
    Ok(o)
}

/// h2load's report: `finished in 5.00s, X req/s, ...`, `requests: N total, ... N succeeded,
/// N failed, N errored, N timeout` and `status codes: N 2xx, N 3xx, N 4xx, N 5xx`.
pub fn parse_h2load(out: &str) -> Result<Outcome, String> {
    let mut o = Outcome::default();
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            o.rps = rest
                .split(',')
                .nth(1)
                .and_then(|s| s.trim().strip_suffix(" req/s"))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            for part in rest.split(',') {
                let w: Vec<&str> = part.split_whitespace().collect();
                if let [n, what] = w.as_slice() {
                    let n: u64 = n.parse().unwrap_or(0);
                    match *what {
                        "succeeded" => o.requests = n,
                        "failed" | "errored" | "timeout" => o.errors += n,
                        _ => {}
                    }
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for part in rest.split(',') {
                let w: Vec<&str> = part.split_whitespace().collect();
                if let [n, class] = w.as_slice()
                    && *class != "2xx"
                {
                    o.errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    if o.requests == 0 {
        return Err(format!(
            "h2load reported no successful request: {}",
            snippet(out)
        ));
    }
    Ok(o)
}

/// wrk's durations: `812.00us`, `1.23ms`, `2.00s`.
fn duration_ms(t: &str) -> Option<f64> {
    let (n, scale) = if let Some(n) = t.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix("m") {
        (n, 60e3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    n.parse::<f64>().ok().map(|v| v * scale)
}

fn snippet(out: &str) -> String {
    out.chars().take(400).collect()
}

#[cfg(test)]
mod tests;

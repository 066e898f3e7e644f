//! The load generators and what their output says: the harness's own `mesh-load`
//! (`src/bin/mesh-load.rs`) for fixed-rate latency over HTTP/1.1, h2c and gRPC (with
//! coordinated-omission correction, as oha's `--latency-correction`) and for gRPC's
//! closed-loop throughput, wrk for HTTP/1.1 closed-loop throughput and h2load for h2c's. Each
//! runs pinned to the load cores, one thread.

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
    /// `mesh-load` at a fixed rate (requests per second) over `conns` connections.
    Fixed { rps: u32, conns: u32 },
    /// A fixed-rate run at half the slowest proxy's closed-loop maximum in the same round (the
    /// issue's "50% of the slowest contender's maximum"): a rate that every proxy sustains, yet
    /// far from idle. The round sets the rate; the driver runs it as `Fixed` at that rate.
    HalfMax { conns: u32 },
    /// As many requests as the contender serves: wrk (HTTP/1.1, `conns` connections), h2load
    /// (h2c, `conns` connections of `streams` concurrent streams each) or `mesh-load --max`
    /// (gRPC, the same).
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
    pub wrk: PathBuf,
    pub h2load: PathBuf,
    /// The harness's own load generator, `mesh-load`.
    pub load: PathBuf,
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

    /// Runs `test` against `addr` for `secs` seconds (wrk and h2load: whole seconds, at
    /// least 1).
    pub fn run(
        &self,
        test: Test,
        protocol: Protocol,
        addr: SocketAddr,
        secs: f64,
    ) -> Result<Outcome, String> {
        match (protocol, test) {
            (_, Test::HalfMax { .. }) => Err(
                "a half-maximum test runs at the rate its round's maxima set: the driver passes it as Test::Fixed at that rate".into(),
            ),
            (_, Test::Fixed { rps, conns }) => {
                self.mesh_load(protocol, addr, conns, &["--rps", &rps.to_string()], secs)
            }
            (Protocol::Grpc, Test::Max { conns, streams }) => self.mesh_load(
                protocol,
                addr,
                conns,
                &["--max", "--streams", &streams.to_string()],
                secs,
            ),
            (Protocol::Http1, Test::Max { conns, .. }) => self.wrk(addr, conns, whole(secs)),
            (Protocol::H2c, Test::Max { conns, streams }) => {
                self.h2load(addr, conns, streams, whole(secs))
            }
        }
    }

    /// A short closed-loop run (`secs`, fractions allowed) to open connections and warm
    /// caches before measuring.
    pub fn warm_up(&self, protocol: Protocol, addr: SocketAddr, secs: f64) -> Result<(), String> {
        let (conns, streams) = match protocol {
            Protocol::Http1 => (4, 1),
            Protocol::H2c | Protocol::Grpc => (2, 4),
        };
        self.mesh_load(
            protocol,
            addr,
            conns,
            &["--max", "--streams", &streams.to_string()],
            secs,
        )
        .map(|_| ())
    }

    fn wrk(&self, addr: SocketAddr, conns: u32, secs: u32) -> Result<Outcome, String> {
        let mut cmd = self.command(&self.wrk);
        cmd.args(["-t", "1", "-c", &conns.to_string()])
            .args(["-d", &format!("{secs}s"), "--latency"])
            .args(["-H", &format!("Host: {HOST}")])
            .arg(format!("http://{addr}/"));
        let out = output(cmd, "wrk", f64::from(secs))?;
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
        let out = output(cmd, "h2load", f64::from(secs))?;
        parse_h2load(&out)
    }

    /// `mesh-load` against `addr` (`mode`: `--rps R` or `--max --streams M`), with the
    /// authority mesh routes by (the HTTP or the gRPC upstream's host).
    fn mesh_load(
        &self,
        protocol: Protocol,
        addr: SocketAddr,
        conns: u32,
        mode: &[&str],
        secs: f64,
    ) -> Result<Outcome, String> {
        let authority = match protocol {
            Protocol::Grpc => GRPC_HOST,
            Protocol::Http1 | Protocol::H2c => HOST,
        };
        let mut cmd = self.command(&self.load);
        cmd.args(["--protocol", protocol.id(), "--addr", &addr.to_string()])
            .args(["--authority", authority])
            .args(["--conns", &conns.to_string(), "--secs", &secs.to_string()])
            .args(mode);
        let out = output(cmd, "mesh-load", secs)?;
        parse_mesh_load(&out)
    }
}

/// wrk and h2load count whole seconds.
fn whole(secs: f64) -> u32 {
    secs.round().max(1.0) as u32
}

/// Runs `cmd`, giving it `secs` plus a margin; its stdout, or an error with its stderr.
fn output(mut cmd: Command, name: &str, secs: f64) -> Result<String, String> {
    let limit = Duration::from_secs_f64(secs.max(0.0) + 30.0);
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

/// `mesh-load`'s JSON line (`mesh_e2e_bench::loadgen::Report::to_json`): latencies already
/// in milliseconds. A run in which no request succeeded is an error, with the first failure's
/// reason.
pub fn parse_mesh_load(out: &str) -> Result<Outcome, String> {
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|e| format!("mesh-load's JSON did not parse ({e}): {}", snippet(out)))?;
    let requests = v["requests"].as_u64().unwrap_or(0);
    if requests == 0 {
        return Err(format!(
            "mesh-load: no request succeeded ({} failed; the first: {})",
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

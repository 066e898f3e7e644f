//! The gRPC load generator's engine (`grpc-load`): unary calls over N h2c connections, either
//! at a fixed rate with coordinated-omission correction, or closed loop for the maximum, with
//! the latencies in an HDR histogram.
//!
//! Fixed rate is scheduled as oha's `-q R --latency-correction`, which the HTTP fixed-rate
//! runs use, so the rows compare: call `i` is due at `start + i / R`; N workers, one per
//! connection (one call in flight on each, as oha's `-c N -p 1`), take the next due call in
//! turn. A worker that is free before its call is due sleeps until then and measures from when
//! it sent; a worker that was still waiting for the proxy when its call fell due sends at once
//! and measures from when the call was due, so a stall counts for every call it delayed, not
//! only the one that stalled (the coordinated omission a closed loop hides). Measuring from the
//! due time even when the worker was free would count tokio's timer (1 ms granularity) as the
//! proxy's latency.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Client, Connection};

/// How long one call may take before it counts as an error (a proxy that stopped answering
/// must not hang the run).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How calls are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `rps` calls per second in total, whatever the answers take.
    Fixed { rps: u32 },
    /// Closed loop: `streams` calls in flight on each connection, each sent as soon as the
    /// previous one on its stream is answered.
    Max { streams: u32 },
}

/// One run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    /// The `:authority` sent (what mesh routes by).
    pub authority: String,
    pub conns: u32,
    pub mode: Mode,
    pub duration: Duration,
}

/// When call `i` of a fixed-rate run is due: `start + i / rps`, computed from `i` (not by
/// adding a rounded period), so the schedule does not drift over a long run.
pub fn due(start: Instant, i: u64, rps: u32) -> Instant {
    let nanos = u128::from(i) * 1_000_000_000 / u128::from(rps.max(1));
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// What a call's latency is measured from (module doc): the due time if the worker was busy
/// past it (`ready` is when it could send), else when it actually sent (`sent`).
pub fn measured_from(due: Instant, ready: Instant, sent: Instant) -> Instant {
    if ready > due { due } else { sent }
}

/// What a run measured. Latencies are in nanoseconds, of the calls that succeeded.
#[derive(Debug, Clone)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

impl Report {
    fn empty() -> Report {
        Report {
            requests: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
        }
    }

    fn record(&mut self, outcome: Result<Duration, String>) {
        match outcome {
            Ok(latency) => {
                self.requests += 1;
                self.latency
                    .saturating_record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    fn merge(&mut self, other: Report) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency
            .add(&other.latency)
            .expect("histograms of the same bounds add");
    }

    /// Successful calls per second over the run.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }

    /// The latency at quantile `q` (0.5, 0.99, ...) in milliseconds; `None` without a sample.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.latency.is_empty()).then(|| self.latency.value_at_quantile(q) as f64 / 1e6)
    }

    /// What `grpc-load` prints: the keys the driver reads (`load::parse_grpc_load`).
    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "first_error": self.first_error,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "rps": self.rps(),
            "p50_ms": self.quantile_ms(0.5),
            "p90_ms": self.quantile_ms(0.9),
            "p99_ms": self.quantile_ms(0.99),
            "p99.9_ms": self.quantile_ms(0.999),
            "max_ms": (!self.latency.is_empty()).then(|| self.latency.max() as f64 / 1e6),
        })
    }
}

async fn timed_call(client: &mut Client, id: u64) -> Result<(), String> {
    match tokio::time::timeout(CALL_TIMEOUT, client.call(id)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

/// One fixed-rate worker: takes due calls from `next` until they fall past `end`.
async fn fixed_worker(
    mut client: Client,
    next: Arc<AtomicU64>,
    start: Instant,
    end: Instant,
    rps: u32,
) -> Report {
    let mut report = Report::empty();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let due = due(start, i, rps);
        if due >= end {
            return report;
        }
        let ready = Instant::now();
        if ready < due {
            tokio::time::sleep_until(due).await;
        }
        let from = measured_from(due, ready, Instant::now());
        let outcome = timed_call(&mut client, i).await.map(|()| from.elapsed());
        report.record(outcome);
    }
}

/// One closed-loop stream: calls back to back until `end`, each measured from its send.
async fn max_worker(mut client: Client, first_id: u64, step: u64, end: Instant) -> Report {
    let mut report = Report::empty();
    let mut id = first_id;
    while Instant::now() < end {
        let sent = Instant::now();
        let outcome = timed_call(&mut client, id).await.map(|()| sent.elapsed());
        report.record(outcome);
        id += step;
    }
    report
}

/// Opens the connections, runs the calls, and merges the workers' reports. Fails only when a
/// connection cannot be opened; failed calls are counted in the report.
pub async fn run(settings: &Settings) -> Result<Report, String> {
    let conns = settings.conns.max(1);
    let mut clients = Vec::with_capacity(conns as usize);
    for _ in 0..conns {
        let conn = Connection::open(settings.addr).await?;
        clients.push(conn.client(&settings.authority)?);
    }
    let start = Instant::now();
    let end = start + settings.duration;
    let mut workers = Vec::new();
    match settings.mode {
        Mode::Fixed { rps } => {
            let next = Arc::new(AtomicU64::new(0));
            for client in clients {
                workers.push(tokio::spawn(fixed_worker(
                    client,
                    next.clone(),
                    start,
                    end,
                    rps,
                )));
            }
        }
        Mode::Max { streams } => {
            let n = u64::from(conns * streams.max(1));
            for j in 0..n {
                let client = clients[(j % u64::from(conns)) as usize].clone();
                workers.push(tokio::spawn(max_worker(client, j, n, end)));
            }
        }
    }
    let mut report = Report::empty();
    for w in workers {
        let part = w.await.map_err(|e| format!("a load worker failed: {e}"))?;
        report.merge(part);
    }
    report.elapsed = match settings.mode {
        // The calls were due within the run's length; the last answers' lateness is latency.
        Mode::Fixed { .. } => settings.duration,
        Mode::Max { .. } => start.elapsed(),
    };
    Ok(report)
}

#[cfg(test)]
mod tests;

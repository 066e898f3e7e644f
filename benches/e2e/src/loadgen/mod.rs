//! The engine of `mesh-load`, the harness's own load generator: HTTP/1.1 and h2c `GET /`, or
//! gRPC unary calls (`crate::grpc`), over N connections, either at a fixed rate with
//! coordinated-omission correction, or closed loop, with the latencies in an HDR histogram.
//! One tool for the three protocols, so their fixed-rate rows are measured the same way (and
//! no `cargo install` of another tool is needed: issue 8's "fresh clone in under 15 minutes").
//!
//! Fixed rate is scheduled as oha's `-q R --latency-correction` (or wrk2's `-R`): request `i`
//! is due at `start + i / R`; N workers, one per connection (one request in flight on each,
//! as oha's `-c N -p 1`), take the next due request in turn. A worker that is free before its
//! request is due sleeps until then and measures from when it sent; a worker that was still
//! waiting for the proxy when its request fell due sends at once and measures from when the
//! request was due, so a stall counts for every request it delayed, not only the one that
//! stalled (the coordinated omission a closed loop hides). Measuring from the due time even
//! when the worker was free would count tokio's timer (1 ms granularity) as the proxy's
//! latency.

pub mod http_get;

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

use crate::grpc;

/// How long one request may take before it counts as an error (a proxy that stopped
/// answering must not hang the run).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1 `GET /` with keep-alive: one request at a time on each connection.
    Http1,
    /// HTTP/2 with prior knowledge (h2c), `GET /`.
    H2c,
    /// Unary calls of the gRPC benchmark service, over h2c.
    Grpc,
}

impl Wire {
    pub const ALL: [Wire; 3] = [Wire::Http1, Wire::H2c, Wire::Grpc];

    /// The name on `mesh-load`'s command line (`--protocol`).
    pub fn id(self) -> &'static str {
        match self {
            Wire::Http1 => "http1",
            Wire::H2c => "h2c",
            Wire::Grpc => "grpc",
        }
    }

    pub fn from_id(id: &str) -> Option<Wire> {
        Wire::ALL.into_iter().find(|w| w.id() == id)
    }
}

/// How requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `rps` requests per second in total, whatever the answers take.
    Fixed { rps: u32 },
    /// Closed loop: `streams` requests in flight on each connection, each sent as soon as the
    /// previous one on its stream is answered (HTTP/1.1: one).
    Max { streams: u32 },
}

/// One run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub addr: SocketAddr,
    /// The `Host` header or `:authority` sent (what mesh routes by).
    pub authority: String,
    pub wire: Wire,
    pub conns: u32,
    pub mode: Mode,
    pub duration: Duration,
}

/// When request `i` of a fixed-rate run is due: `start + i / rps`, computed from `i` (not by
/// adding a rounded period), so the schedule does not drift over a long run.
pub fn due(start: Instant, i: u64, rps: u32) -> Instant {
    let nanos = u128::from(i) * 1_000_000_000 / u128::from(rps.max(1));
    start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// What a request's latency is measured from (module doc): the due time if the worker was
/// busy past it (`ready` is when it could send), else when it actually sent (`sent`).
pub fn measured_from(due: Instant, ready: Instant, sent: Instant) -> Instant {
    if ready > due { due } else { sent }
}

/// What a run measured. Latencies are in nanoseconds, of the requests that succeeded.
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

    /// Successful requests per second over the run.
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

    /// What `mesh-load` prints: the keys the driver reads (`load::parse_mesh_load`).
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

/// One connection's client, whatever it speaks. Clones share the connection (h2c, gRPC: a
/// stream each) or, for HTTP/1.1, only its address and settings.
#[derive(Debug, Clone)]
enum Client {
    Http(http_get::Client),
    Grpc(grpc::Client),
}

impl Client {
    async fn open(settings: &Settings) -> Result<Client, String> {
        Ok(match settings.wire {
            Wire::Http1 => Client::Http(
                http_get::Client::connect(
                    settings.addr,
                    &settings.authority,
                    http_get::Version::Http1,
                )
                .await?,
            ),
            Wire::H2c => Client::Http(
                http_get::Client::connect(
                    settings.addr,
                    &settings.authority,
                    http_get::Version::H2c,
                )
                .await?,
            ),
            Wire::Grpc => Client::Grpc(
                grpc::Connection::open(settings.addr)
                    .await?
                    .client(&settings.authority)?,
            ),
        })
    }

    async fn call(&mut self, id: u64) -> Result<(), String> {
        let call = async {
            match self {
                Client::Http(c) => c.get().await,
                Client::Grpc(c) => c.call(id).await,
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

/// One fixed-rate worker: takes due requests from `next` until they fall past `end`.
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
        let outcome = client.call(i).await.map(|()| from.elapsed());
        report.record(outcome);
    }
}

/// One closed-loop stream: requests back to back until `end`, each measured from its send.
async fn max_worker(mut client: Client, first_id: u64, step: u64, end: Instant) -> Report {
    let mut report = Report::empty();
    let mut id = first_id;
    while Instant::now() < end {
        let sent = Instant::now();
        let outcome = client.call(id).await.map(|()| sent.elapsed());
        report.record(outcome);
        id += step;
    }
    report
}

/// Opens the connections, runs the requests, and merges the workers' reports. Fails only
/// when a connection cannot be opened or the settings cannot be run; failed requests are
/// counted in the report.
pub async fn run(settings: &Settings) -> Result<Report, String> {
    if let (Wire::Http1, Mode::Max { streams: 2.. }) = (settings.wire, settings.mode) {
        return Err(
            "HTTP/1.1 carries one request at a time on a connection: use --streams 1 and more --conns"
                .into(),
        );
    }
    let conns = settings.conns.max(1);
    let mut clients = Vec::with_capacity(conns as usize);
    for _ in 0..conns {
        clients.push(Client::open(settings).await?);
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
            let streams = streams.max(1);
            let n = u64::from(conns * streams);
            let mut ids = 0..n;
            for client in clients {
                // Clones for all streams but the last, which takes the client itself (an
                // HTTP/1.1 client's clone would open a connection of its own).
                for _ in 1..streams {
                    let id = ids.next().expect("one id per stream");
                    workers.push(tokio::spawn(max_worker(client.clone(), id, n, end)));
                }
                let id = ids.next().expect("one id per stream");
                workers.push(tokio::spawn(max_worker(client, id, n, end)));
            }
        }
    }
    let mut report = Report::empty();
    for w in workers {
        let part = w.await.map_err(|e| format!("a load worker failed: {e}"))?;
        report.merge(part);
    }
    report.elapsed = match settings.mode {
        // The requests were due within the run's length; the last answers' lateness is
        // latency.
        Mode::Fixed { .. } => settings.duration,
        Mode::Max { .. } => start.elapsed(),
    };
    Ok(report)
}

#[cfg(test)]
mod tests;

//! `mesh-load`: the load generator of the end-to-end harness (issue 8) for fixed-rate latency
//! over HTTP/1.1, h2c and gRPC unary, and closed-loop gRPC (no packaged tool speaks gRPC at a
//! fixed rate; oha does HTTP, but takes a long `cargo install`). See `mesh_e2e_bench::loadgen`
//! for how requests are scheduled and measured.
//!
//! ```text
//! mesh-load --addr 127.0.0.1:8080 [--protocol http1|h2c|grpc] [--authority HOST] --conns N
//!           --secs S (--rps R | --max [--streams M])
//! ```
//!
//! Prints one JSON object: requests, errors, first_error, elapsed_s, rps, p50_ms, p90_ms,
//! p99_ms, p99.9_ms, max_ms. Exits 1 when it cannot connect, 2 on a bad argument; failed
//! requests are counted, not fatal.

use std::{net::SocketAddr, time::Duration};

use mesh_e2e_bench::loadgen::{self, Mode, Settings, Wire};

const USAGE: &str = "usage: mesh-load --addr ADDR [--protocol P] [--authority HOST] --conns N --secs S (--rps R | --max [--streams M])

  --addr ADDR       where to connect (a proxy's listener, or the upstream)
  --protocol P      http1 (GET /, keep-alive; the default), h2c (GET /, HTTP/2 with prior
                    knowledge) or grpc (unary calls of the harness's benchmark service)
  --authority HOST  the Host header or :authority sent (default: ADDR)
  --conns N         connections (default 1)
  --secs S          length of the run, seconds (fractions allowed)
  --rps R           fixed rate: R requests per second in total, one in flight per connection,
                    latency from each request's due time when it is sent late
  --max             closed loop: M requests in flight per connection (--streams, default 1;
                    HTTP/1.1: 1)";

fn parse() -> Result<Settings, String> {
    let mut args = std::env::args().skip(1);
    let mut addr: Option<SocketAddr> = None;
    let mut wire = Wire::Http1;
    let mut authority: Option<String> = None;
    let mut conns = 1u32;
    let mut secs: Option<f64> = None;
    let mut rps: Option<u32> = None;
    let mut max = false;
    let mut streams = 1u32;
    fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{flag}: `{v}` is not a valid value"))
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--addr" => addr = Some(value(&a, args.next())?),
            "--protocol" => {
                let id: String = value(&a, args.next())?;
                wire = Wire::from_id(&id).ok_or_else(|| {
                    format!("--protocol: `{id}` is not one of http1, h2c and grpc")
                })?;
            }
            "--authority" => authority = Some(value(&a, args.next())?),
            "--conns" => conns = value(&a, args.next())?,
            "--secs" => secs = Some(value(&a, args.next())?),
            "--rps" => rps = Some(value(&a, args.next())?),
            "--max" => max = true,
            "--streams" => streams = value(&a, args.next())?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let mode = match (rps, max) {
        (Some(0), _) => return Err("--rps must be at least 1".into()),
        (Some(rps), false) => Mode::Fixed { rps },
        (None, true) => Mode::Max {
            streams: streams.max(1),
        },
        _ => return Err("give one of --rps R and --max".into()),
    };
    let secs = secs.ok_or("--secs S is required")?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!(
            "--secs must be a positive number of seconds, not {secs}"
        ));
    }
    let addr = addr.ok_or("--addr ADDR is required")?;
    Ok(Settings {
        addr,
        authority: authority.unwrap_or_else(|| addr.to_string()),
        wire,
        conns: conns.max(1),
        mode,
        duration: Duration::from_secs_f64(secs),
    })
}

fn main() {
    let settings = parse().unwrap_or_else(|e| {
        eprintln!("mesh-load: {e}\n\n{USAGE}");
        std::process::exit(2)
    });
    // One thread, as the other load generators run (wrk -t1, h2load -t1).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("mesh-load: cannot start a tokio runtime");
    match rt.block_on(loadgen::run(&settings)) {
        Ok(report) => println!("{}", report.to_json()),
        Err(e) => {
            eprintln!("mesh-load: {e}");
            std::process::exit(1);
        }
    }
}

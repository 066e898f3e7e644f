//! `bookinfo`: Istio's Bookinfo on the mesh.
//!
//! ```text
//! cargo run --release -p bookinfo [-- --scenario NAME] [--listen 127.0.0.1:8080] [--config-dir DIR]
//! bookinfo serve --service reviews --version v2 --listen 127.0.0.1:9080 --upstream-proxy http://127.0.0.1:15001
//! ```
//!
//! Without a subcommand every service runs in this process, each behind the mesh. `serve` runs
//! one service alone, in plain text, calling out through an HTTP proxy: the app behind a
//! `mesh run` sidecar in sidecar mode (`examples/bookinfo/sidecars.sh`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use bookinfo::{
    Bookinfo, DEFAULT_LISTEN, Options, scenarios,
    standalone::{ServeOptions, Standalone, UpstreamProxy},
    workloads,
};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// How long Ctrl-C waits for requests under way.
const STOP_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(
    name = "bookinfo",
    about = "Istio's Bookinfo application, every service in one process, on the mesh",
    after_help = scenario_list(),
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Start with this scenario (copied into the config folder as scenario.yaml).
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// The ingress gateway's address.
    #[arg(long, value_name = "ADDR", default_value_t = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// The config folder to write and watch [default: <temp dir>/bookinfo].
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one service alone, in plain text, with no mesh: the app behind a `mesh run`
    /// sidecar (examples/bookinfo/sidecars.sh). Prints `listening on ADDR` once bound.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The service: productpage, details, reviews or ratings.
    #[arg(long, value_name = "NAME")]
    service: String,
    /// Its version (reviews: v1 no stars, v2 black stars, v3 red stars; the others: v1).
    #[arg(long, value_name = "V", default_value = "v1")]
    version: String,
    /// Where to listen (plain HTTP/1.1 and h2c); port 0 for any free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// The HTTP proxy every call goes to, as with HTTP_PROXY: the sidecar's outbound listener
    /// (`mesh run --outbound`). Required for productpage and reviews, which call others.
    #[arg(long, value_name = "URL", value_parser = UpstreamProxy::parse)]
    upstream_proxy: Option<UpstreamProxy>,
}

fn scenario_list() -> String {
    let mut s = String::from("Scenarios:\n");
    for sc in scenarios::SCENARIOS {
        s.push_str(&format!("  {:<29} {}\n", sc.name, sc.summary));
    }
    s
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: sidecars.sh sends each process's log to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if let Some(Command::Serve(args)) = cli.command {
        return serve(args).await;
    }
    let options = Options {
        listen: cli.listen,
        scenario: cli.scenario,
        // A fixed folder, so that the copy command printed at start stays valid across runs.
        config_dir: Some(
            cli.config_dir
                .unwrap_or_else(|| std::env::temp_dir().join("bookinfo")),
        ),
    };
    let running = match Bookinfo::start(options).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("bookinfo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", running.banner());
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("bookinfo: cannot wait for Ctrl-C ({e}); stopping");
    }
    eprintln!("bookinfo: stopping");
    // Requests under way get a moment to finish; idle connections between the workloads
    // would otherwise hold the drain open for its full 5 s.
    tokio::select! {
        () = running.shutdown() => {}
        () = tokio::time::sleep(STOP_GRACE) => {}
    }
    ExitCode::SUCCESS
}

/// `bookinfo serve`: one service, until Ctrl-C or SIGTERM.
async fn serve(args: ServeArgs) -> ExitCode {
    let Some(workload) = workloads::find(&args.service, &args.version) else {
        eprintln!(
            "bookinfo serve: there is no {} {}; the workloads are: {}",
            args.service,
            args.version,
            workloads::names()
        );
        return ExitCode::from(2);
    };
    let standalone = match Standalone::bind(ServeOptions {
        workload,
        listen: args.listen,
        upstream_proxy: args.upstream_proxy,
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bookinfo serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    let via = match standalone.upstream_proxy() {
        Some(proxy) => format!(", calling out through the HTTP proxy {proxy}"),
        None => String::new(),
    };
    // The line scripts and tests wait for; stdout is flushed at each newline.
    println!(
        "bookinfo serve: {} listening on {}{via}",
        workload.name(),
        standalone.local_addr()
    );
    standalone.serve(stop_signal()).await;
    ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM (what a supervisor, or sidecars.sh, sends).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

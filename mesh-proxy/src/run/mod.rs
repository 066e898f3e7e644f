//! `mesh run`: the proxy. Plain-text outbound and inbound listeners, and the admin server.
//!
//! Not yet: TLS (mTLS inbound, gateway certificates), gateways, hot reload, metrics.

mod admin;
mod listeners;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use mesh_tower::MeshHandle;
use tokio::{net::TcpListener, sync::watch};

use crate::ConfigArgs;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// YAML files or folders (searched recursively for *.yaml and *.yml).
    #[arg(long = "config", required = true, value_name = "PATH", num_args = 1..)]
    config: Vec<PathBuf>,
    /// The outbound listener (plain HTTP/1.1 and h2c; route by the request's authority, so
    /// `HTTP_PROXY=http://ADDR` works).
    #[arg(long, value_name = "ADDR")]
    outbound: Option<SocketAddr>,
    /// The inbound listener: Istio's inbound policies, then forward to `--app`.
    #[arg(long, value_name = "ADDR", requires = "app")]
    inbound: Option<SocketAddr>,
    /// The local application the inbound listener forwards to (`host:port`).
    #[arg(long, value_name = "ADDR", requires = "inbound")]
    app: Option<String>,
    /// The admin server: `/ready`, `/healthz`, `/config_dump`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// This workload's labels (`k=v,k2=v2`): `sourceLabels`, policy selectors.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels)]
    workload_labels: Option<LabelList>,
    /// Worker threads (default: the cores, or `TOKIO_WORKER_THREADS`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: Option<u16>,
    #[command(flatten)]
    config_args: ConfigArgs,
}

/// `k=v` pairs.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelList(Vec<(String, String)>);

fn parse_labels(s: &str) -> Result<LabelList, String> {
    let mut out = Vec::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not k=v"))?;
        if k.trim().is_empty() {
            return Err(format!("`{pair}` has an empty key"));
        }
        out.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(LabelList(out))
}

/// What the admin server shows.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) handle: MeshHandle,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) ready: AtomicBool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    if args.outbound.is_none() && args.inbound.is_none() && args.admin.is_none() {
        eprintln!(
            "mesh run: nothing to run: give at least one of --outbound, --inbound/--app, --admin"
        );
        return ExitCode::from(2);
    }
    let report = match args.config_args.loader().check(&args.config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh run: {e}");
            return ExitCode::from(2);
        }
    };
    for d in report.diagnostics.iter() {
        eprintln!("{d}");
    }
    let files = report.files.clone();
    let mesh = match report.into_mesh() {
        Ok(m) => m,
        Err(_) => {
            eprintln!("mesh run: the config has errors; not starting");
            return ExitCode::from(1);
        }
    };

    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.concurrency {
        rt.worker_threads(n.into());
    }
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mesh run: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let state = Arc::new(State {
        handle: MeshHandle::from(&mesh),
        files,
        ready: AtomicBool::new(false),
    });
    let code = rt.block_on(serve(args, state));
    // Connections still draining after the grace period are dropped with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

async fn bind(role: &str, addr: SocketAddr) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|e| {
        eprintln!("mesh run: cannot bind the {role} listener on {addr}: {e}");
        ExitCode::from(1)
    })
}

async fn serve(args: Args, state: Arc<State>) -> ExitCode {
    // Bind everything first: a port in use fails the start, before any listener serves.
    let mut bound = Vec::new();
    for (role, addr) in [
        ("outbound", args.outbound),
        ("inbound", args.inbound),
        ("admin", args.admin),
    ] {
        if let Some(addr) = addr {
            match bind(role, addr).await {
                Ok(l) => bound.push((role, l)),
                Err(code) => return code,
            }
        }
    }
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mesh run: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };

    let namespace = args.config_args.namespace.clone();
    let labels = args.workload_labels.unwrap_or_default().0;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut shown = Vec::new();
    for (role, listener) in bound {
        let local = listener.local_addr().ok();
        shown.push(format!(
            "{role} {}",
            local.map(|a| a.to_string()).unwrap_or_default()
        ));
        let handler = match role {
            "outbound" => listeners::outbound(&state.handle, &namespace, &labels),
            "inbound" => listeners::inbound(
                &state.handle,
                &namespace,
                &labels,
                args.app.clone().unwrap_or_default(),
            ),
            _ => admin::handler(state.clone()),
        };
        tasks.spawn(listeners::serve(listener, handler, stop_rx.clone()));
    }
    state.ready.store(true, Ordering::Release);
    eprintln!("mesh run: ready: {}", shown.join(", "));

    let which = signals.recv().await;
    eprintln!("mesh run: {which}: stopping (in-flight requests get up to 5 s)");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM, installed before the listeners report ready.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

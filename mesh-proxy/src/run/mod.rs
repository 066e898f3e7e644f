//! `mesh run`: the proxy. Outbound (sidecar), inbound (mTLS as PeerAuthentication says) and
//! gateway listeners, and the admin server (`/ready`, `/healthz`, `/metrics`, `/config_dump`).
//!
//! Hot reload: after the first good load the `--config` paths are watched (folders recursively,
//! files through their parent folder, so editors' rename-over saves and Kubernetes ConfigMap
//! `..data` symlink swaps are seen). A change of content is loaded again and swapped into the
//! [`MeshHandle`] every listener reads per request: no listener restarts, no connection drops,
//! requests under way finish on the config they started with. A config with errors is rejected:
//! the last good one stays, and the diagnostics go to stderr, to `/config_dump`'s
//! `last_reload_error` and to `mesh_config_reload_total{result="error"}` (see [`reload`]).
//! `--no-watch` loads once.
//!
//! Inbound, PeerAuthentication decides per connection between mTLS (`--identity-dir`) and plain
//! text ([`listeners::inbound`]).
//!
//! Gateways: `--gateway NAME` serves the servers of the named Gateway resources (HTTP, HTTPS
//! with `--credentials-dir` certificates, TLS passthrough, TCP): see [`gateway`]. Their
//! listeners follow reloads (ports of new servers open, ports left without a server drain) and
//! rewritten certificate files.

mod admin;
mod connection;
mod gateway;
mod identity;
mod listeners;
mod metrics;
mod observability;
mod reload;
mod upgrade;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use mesh_config::LoadError;
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
    /// The admin server: `/ready`, `/healthz`, `/metrics`, `/config_dump`.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// Serve the listeners of this Gateway (`namespace/name`, or `name` in `--namespace`).
    /// Repeatable.
    #[arg(long = "gateway", value_name = "NAME")]
    gateway: Vec<String>,
    /// The address gateway listeners bind (a server's own `bind` wins). Istio's gateways
    /// listen on every address.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    gateway_bind: std::net::IpAddr,
    /// Gateway certificates by `credentialName`: `DIR/NAME/tls.crt`, `DIR/NAME/tls.key` and,
    /// for MUTUAL, `DIR/NAME/ca.crt` (the keys of the Kubernetes secret it names).
    #[arg(long, value_name = "DIR")]
    credentials_dir: Option<PathBuf>,
    /// This workload's Kubernetes service account. Its certificate comes from
    /// `--identity-dir` (checked against this); without one the inbound listener takes plain
    /// text only.
    #[arg(long, value_name = "SA")]
    service_account: Option<String>,
    /// The workload certificate in Istio's layout: `DIR/cert-chain.pem`, `DIR/key.pem`,
    /// `DIR/root-cert.pem` (as `mesh ca issue` writes them): mTLS on the inbound listener, as
    /// PeerAuthentication says, and to mesh endpoints outbound.
    #[arg(long, value_name = "DIR")]
    identity_dir: Option<PathBuf>,
    /// This workload's labels (`k=v,k2=v2`): `sourceLabels`, policy selectors.
    #[arg(long, value_name = "K=V,...", value_parser = parse_labels)]
    workload_labels: Option<LabelList>,
    /// Worker threads (default: the cores, or `TOKIO_WORKER_THREADS`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: Option<u16>,
    /// Close a downstream connection with no request in flight for this long (`0`: never).
    /// Envoy's `idle_timeout` default, which Istio keeps.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// Connections each listener (outbound, inbound, admin, each gateway port) serves at once;
    /// beyond it new connections wait in the kernel's accept backlog.
    #[arg(long, value_name = "N", default_value_t = connection::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
    /// Load the config once; by default the `--config` paths are watched and reloaded on change.
    #[arg(long)]
    no_watch: bool,
    /// Boxed: it would make the `run` command the one large variant of the CLI.
    #[command(flatten)]
    observability: Box<observability::ObservabilityArgs>,
    #[command(flatten)]
    config_args: ConfigArgs,
}

/// `k=v` pairs.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelList(Vec<(String, String)>);

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    mesh_core::duration::parse_duration(s).map_err(|e| e.to_string())
}

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
    /// The files of the config in use, and the outcome of the last reload.
    pub(crate) reload: Arc<Mutex<reload::ReloadStatus>>,
    pub(crate) ready: AtomicBool,
}

pub(crate) fn run(args: Args) -> ExitCode {
    if args.outbound.is_none()
        && args.inbound.is_none()
        && args.admin.is_none()
        && args.gateway.is_empty()
    {
        say!(
            "mesh run: nothing to run: give at least one of --outbound, --inbound/--app, --gateway, --admin"
        );
        return ExitCode::from(2);
    }
    let status = Arc::new(Mutex::new(reload::ReloadStatus::new(!args.no_watch)));
    let loader = args.config_args.loader();
    let first = if args.no_watch {
        loader
            .load(&args.config)
            .map(|mesh| (MeshHandle::from(&mesh), mesh, None))
    } else {
        let live = status.clone();
        MeshHandle::watch(&loader, &args.config, move |r| reload::on_reload(&live, r))
            .map(|(handle, mesh, watcher)| (handle, mesh, Some(watcher)))
    };
    let (handle, mesh, watcher) = match first {
        Ok(first) => first,
        Err(LoadError::Invalid { diagnostics }) => {
            eprint!("{diagnostics}");
            say!("mesh run: the config has errors; not starting");
            return ExitCode::from(1);
        }
        Err(LoadError::Io(e)) => {
            say!("mesh run: {e}");
            return ExitCode::from(2);
        }
    };
    for d in mesh.warnings().iter() {
        say!("{d}");
    }
    status
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .first_load(&mesh);

    // One worker is one thread that accepts, proxies and polls the sockets, as one Envoy
    // worker or one nginx worker process: tokio's current-thread scheduler, with no work
    // stealing and no cross-thread wake-ups between a connection's task and its upstream's.
    let mut rt = match args.concurrency {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            rt.worker_threads(n.into());
            rt
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let rt = match rt.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say!("mesh run: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // Before any stack exists: they register their series with the recorder in place.
    metrics::install();
    connection::Limits {
        idle_timeout: args.idle_timeout,
        max_connections: args.max_connections,
    }
    .install();
    let state = Arc::new(State {
        handle,
        reload: status,
        ready: AtomicBool::new(false),
    });
    let code = rt.block_on(serve(args, state));
    // No reload from here on; one under way finishes on its own thread.
    drop(watcher);
    // Connections still draining after the grace period are dropped with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

async fn bind(role: &str, addr: SocketAddr) -> Result<TcpListener, ExitCode> {
    TcpListener::bind(addr).await.map_err(|e| {
        say!("mesh run: cannot bind the {role} listener on {addr}: {e}");
        ExitCode::from(1)
    })
}

async fn serve(args: Args, state: Arc<State>) -> ExitCode {
    // The watch on `--identity-dir` lives until the proxy stops.
    let (identity, _identity_watch) = match identity::load(
        args.identity_dir.as_deref(),
        &args.config_args.namespace,
        args.service_account.as_deref(),
    ) {
        Ok(Some((identity, watch))) => (Some(identity), Some(watch)),
        Ok(None) => (None, None),
        Err(e) => {
            say!("mesh run: {e}");
            return ExitCode::from(1);
        }
    };
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
            say!("mesh run: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };

    let namespace = args.config_args.namespace.clone();
    let labels = args.workload_labels.unwrap_or_default().0;
    // Traces and access logs; spans name the service as Istio does, `app.namespace`.
    let app = labels
        .iter()
        .find(|(k, _)| k == "app")
        .map_or("mesh", |(_, v)| v.as_str());
    let obs = match observability::Observability::start(
        &args.observability,
        &format!("{app}.{namespace}"),
    ) {
        Ok(obs) => obs,
        Err(e) => {
            say!("mesh run: {e}");
            return ExitCode::from(1);
        }
    };
    let gateways = if args.gateway.is_empty() {
        None
    } else {
        let opts = gateway::Options {
            names: &args.gateway,
            namespace: &namespace,
            bind: args.gateway_bind,
            credentials_dir: args.credentials_dir.as_deref(),
            labels: &labels,
            identity: identity.as_ref(),
            status: &state.reload,
            observability: &obs,
        };
        match gateway::start(&state.handle, &opts).await {
            Ok(g) => Some(g),
            Err(e) => {
                say!("mesh run: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut shown = Vec::new();
    for (role, listener) in bound {
        let local = listener.local_addr().ok();
        shown.push(format!(
            "{role} {}",
            local.map(|a| a.to_string()).unwrap_or_default()
        ));
        if role == "inbound" {
            let opts = listeners::InboundOptions {
                namespace: namespace.clone(),
                labels: labels.clone(),
                app: args.app.clone().unwrap_or_default(),
                identity: identity.clone(),
                observability: obs.clone(),
            };
            let (handle, stop) = (state.handle.clone(), stop_rx.clone());
            tasks.spawn(async move { listeners::inbound(listener, &handle, opts, stop).await });
            continue;
        }
        let handler = match role {
            "outbound" => {
                listeners::outbound(&state.handle, &namespace, &labels, identity.as_ref(), &obs)
            }
            _ => admin::handler(state.clone()),
        };
        tasks.spawn(listeners::serve(listener, handler, stop_rx.clone()));
    }
    if let Some(gateways) = gateways {
        shown.extend(gateways.ready_lines());
        gateways.spawn(&mut tasks, &stop_rx);
    }
    state.ready.store(true, Ordering::Release);
    say!("mesh run: ready: {}", shown.join(", "));

    let which = signals.recv().await;
    say!("mesh run: {which}: stopping (in-flight requests get up to 5 s)");
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    obs.flush().await;
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

//! The in-process runner: every Bookinfo workload in one process, each behind the mesh.
//!
//! ```text
//! browser ─► gateway (--listen; routes as default/bookinfo-gateway) ══mTLS══►
//!   productpage-v1 [inbound: PeerAuthentication, rate limit, authorization] ─► app
//!     └─ outbound stack (identity bookinfo-productpage) ══mTLS══► details-v1, reviews-v1|v2|v3
//!          reviews-v2, -v3 outbound (identity bookinfo-reviews) ══mTLS══► ratings-v1
//! ```
//!
//! Each workload listens on its own 127.0.0.1 port, so requests between them cross real
//! sockets, TLS handshakes and HTTP/2 connections, as between pods. Identities come from an
//! in-memory CA (`spiffe://cluster.local/ns/default/sa/bookinfo-<app>`) and are renewed in the
//! background. The config is the folder described in [`files`]: it is watched, and a change
//! applies to the next request without a restart (a change that does not load is logged and
//! the last good config stays).

mod banner;
mod files;
mod gateway;
mod served;

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hyper::body::Incoming;
use mesh_config::{Loader, Reload, Watcher};
use mesh_tower::{
    MeshHandle, MeshStack,
    body::MeshBody,
    inbound::{InboundAcceptor, serve},
    tls::{Identity, InMemoryIssuer, Renewal, TlsError},
};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};

use crate::{
    scenarios::{self, Scenario},
    services::{
        self, Client, details::Details, productpage::ProductPage, ratings::Ratings,
        reviews::Reviews,
    },
    workloads::{NAMESPACE, TRUST_DOMAIN, WORKLOADS, Workload},
};
pub use files::SCENARIO_FILE;
#[cfg(test)]
pub(crate) use files::base_yaml;
pub(crate) use gateway::serve as serve_plain;
use served::{Counted, Served};

/// Where the gateway listens unless told otherwise: Istio's bookinfo-gateway port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

/// The Gateway the ingress routes as (`namespace/name`, as mesh-config names gateways).
pub const GATEWAY: &str = "default/bookinfo-gateway";

/// The ingress gateway's identity and labels, as Istio's default ingress gateway.
const GATEWAY_NAMESPACE: &str = "istio-system";
const GATEWAY_SERVICE_ACCOUNT: &str = "istio-ingressgateway-service-account";
const GATEWAY_LABELS: [(&str, &str); 2] =
    [("istio", "ingressgateway"), ("app", "istio-ingressgateway")];

/// How long workload certificates live (Istio's default, 24 h); they are renewed at 80%.
const CERTIFICATE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ingress gateway's address; port 0 for any free port (tests).
    pub listen: SocketAddr,
    /// A scenario to start with (a name of [`scenarios::SCENARIOS`]); `None`: no routing
    /// rules, reviews spread over v1, v2 and v3 as in Istio.
    pub scenario: Option<String>,
    /// The config folder. `None`: a fresh folder under the system's temporary folder, removed
    /// when the [`Running`] is dropped. A folder given here is kept, and so are the files in it
    /// that the runner does not write: it writes `services.yaml`, `gateway.yaml`,
    /// `destination-rules.yaml`, `workloads.yaml` and [`SCENARIO_FILE`] (removed when there is
    /// no scenario).
    pub config_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: DEFAULT_LISTEN,
            scenario: None,
            config_dir: None,
        }
    }
}

/// Why Bookinfo did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("there is no scenario {name:?}; the scenarios are: {known}")]
    UnknownScenario { name: String, known: String },
    #[error(
        "cannot listen on {addr} for the ingress gateway: {source}; is another Bookinfo (or \
         anything else) using it? Choose another address with --listen, e.g. --listen 127.0.0.1:8081"
    )]
    GatewayBind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on a loopback port for workload {workload}: {source}")]
    WorkloadBind {
        workload: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the config folder {path}: {source}; choose another with --config-dir")]
    ConfigDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the config in {path} does not load; fix or remove the files named below:\n{source}")]
    Config {
        path: PathBuf,
        #[source]
        source: mesh_config::LoadError,
    },
    #[error("issuing workload certificates from the in-memory CA: {0}")]
    Identity(#[from] TlsError),
}

/// Starts Bookinfo.
#[derive(Debug, Clone, Copy)]
pub struct Bookinfo;

impl Bookinfo {
    /// Binds every workload and the gateway, writes the config folder, loads and watches it,
    /// and serves until the returned [`Running`] is dropped or shut down. Must be called
    /// within a multi-threaded tokio runtime.
    pub async fn start(options: Options) -> Result<Running, StartError> {
        let scenario = match options.scenario.as_deref() {
            None => None,
            Some(name) => {
                Some(
                    scenarios::find(name).ok_or_else(|| StartError::UnknownScenario {
                        name: name.to_owned(),
                        known: scenarios::names(),
                    })?,
                )
            }
        };

        // Ports first: the registry needs them.
        let mut listeners = Vec::new();
        for w in &WORKLOADS {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .and_then(|l| Ok((l.local_addr()?, l)))
                .map_err(|source| StartError::WorkloadBind {
                    workload: w.name(),
                    source,
                })?;
            listeners.push((w, listener));
        }
        let gateway_listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| StartError::GatewayBind {
                    addr: options.listen,
                    source,
                })?;
        let gateway_addr =
            gateway_listener
                .local_addr()
                .map_err(|source| StartError::GatewayBind {
                    addr: options.listen,
                    source,
                })?;

        let (config_dir, owned_dir) = match options.config_dir {
            Some(dir) => (dir, false),
            None => (
                files::fresh_dir().map_err(|source| StartError::ConfigDir {
                    path: std::env::temp_dir(),
                    source,
                })?,
                true,
            ),
        };
        // From here on, a failure removes the folder it made.
        let mut cleanup = DirGuard(owned_dir.then(|| config_dir.clone()));
        files::write_all(
            &config_dir,
            listeners.iter().map(|(w, (addr, _))| (*w, *addr)),
            scenario,
        )
        .map_err(|source| StartError::ConfigDir {
            path: config_dir.clone(),
            source,
        })?;

        let (version_tx, version_rx) = watch::channel(0u64);
        let version_tx = Arc::new(version_tx);
        let on_reload = {
            let tx = version_tx.clone();
            move |reload: &Reload| match reload {
                Reload::Reloaded { mesh } => {
                    tracing::info!(target: "bookinfo", "config reloaded (version {})", mesh.version);
                    for w in mesh.warnings().iter() {
                        tracing::warn!(target: "bookinfo", "{w}");
                    }
                    newer(&tx, mesh.version);
                }
                Reload::Rejected { error } => tracing::error!(
                    target: "bookinfo",
                    "the config folder changed but does not load; keeping the last good config:\n{error}"
                ),
            }
        };
        let (handle, first, watcher) = MeshHandle::watch(&Loader::new(), [&config_dir], on_reload)
            .map_err(|source| StartError::Config {
                path: config_dir.clone(),
                source,
            })?;
        for w in first.warnings().iter() {
            tracing::warn!(target: "bookinfo", "{w}");
        }
        newer(&version_tx, first.version);

        let issuer = InMemoryIssuer::generate(CERTIFICATE_TTL)?;
        let (stop_tx, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut renewals = Vec::new();
        let mut workloads = HashMap::new();
        for (w, (addr, listener)) in listeners {
            let identity = Identity::new(TRUST_DOMAIN, NAMESPACE, &w.service_account());
            let (source, renewal) = issuer.issue_renewed(&identity)?;
            renewals.push(renewal);
            let outbound = || {
                services::client(
                    MeshStack::outbound(&handle)
                        .namespace(NAMESPACE)
                        .workload_labels(w.labels())
                        .identity(source.clone())
                        .build::<MeshBody>(),
                )
            };
            let served = Arc::new(Served::default());
            let app = Counted {
                inner: application(w, outbound),
                served: served.clone(),
            };
            let stack = MeshStack::inbound(&handle, app)
                .namespace(NAMESPACE)
                .workload_labels(w.labels())
                .build::<Incoming>();
            let acceptor = InboundAcceptor::new(&handle)
                .namespace(NAMESPACE)
                .workload_labels(w.labels())
                .identity(source);
            tasks.spawn(serve(listener, acceptor, stack, stopped(&stop_tx)));
            workloads.insert(*w, (addr, served));
        }

        let (gateway_identity, renewal) = issuer.issue_renewed(&Identity::new(
            TRUST_DOMAIN,
            GATEWAY_NAMESPACE,
            GATEWAY_SERVICE_ACCOUNT,
        ))?;
        renewals.push(renewal);
        let ingress = MeshStack::outbound(&handle)
            .namespace(GATEWAY_NAMESPACE)
            .workload_labels(GATEWAY_LABELS)
            .gateway(GATEWAY)
            .identity(gateway_identity)
            .build::<Incoming>();
        tasks.spawn(gateway::serve(gateway_listener, ingress, stopped(&stop_tx)));

        cleanup.0 = None;
        Ok(Running {
            gateway: gateway_addr,
            config_dir,
            owned_dir,
            scenario,
            workloads,
            handle,
            versions: version_rx,
            stop: stop_tx,
            tasks,
            _watcher: watcher,
            _renewals: renewals,
        })
    }
}

/// The application of workload `w`; `outbound` makes its client of the mesh (the in-process
/// outbound stack here, an HTTP proxy client in [`standalone`](crate::standalone)), called
/// only for the workloads that call others.
pub(crate) fn application(w: &Workload, outbound: impl Fn() -> Client) -> Client {
    match w.app {
        "productpage" => services::client(ProductPage::new(outbound())),
        "details" => services::client(Details::new()),
        "ratings" => services::client(Ratings::new()),
        "reviews" => {
            let version = w
                .version
                .parse()
                .expect("WORKLOADS names reviews versions v1, v2 and v3 only");
            services::client(Reviews::new(version, outbound()))
        }
        other => unreachable!("WORKLOADS has no app {other}"),
    }
}

/// Records `version` unless a later one is recorded already.
fn newer(tx: &watch::Sender<u64>, version: u64) {
    tx.send_if_modified(|current| {
        let later = version > *current;
        if later {
            *current = version;
        }
        later
    });
}

/// Completes when `stop` says so, or when it is dropped.
fn stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.subscribe();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

/// Removes a folder the runner made, unless defused.
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Bookinfo, running. Dropping it stops every listener (at once; [`Running::shutdown`] lets
/// requests finish) and removes the config folder if the runner made it.
#[derive(Debug)]
pub struct Running {
    gateway: SocketAddr,
    config_dir: PathBuf,
    owned_dir: bool,
    scenario: Option<&'static Scenario>,
    workloads: HashMap<Workload, (SocketAddr, Arc<Served>)>,
    handle: MeshHandle,
    versions: watch::Receiver<u64>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    _watcher: Watcher,
    _renewals: Vec<Renewal>,
}

impl Running {
    /// The ingress gateway's address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway
    }

    /// The page's URL: `http://<gateway>/productpage`.
    pub fn url(&self) -> String {
        format!("http://{}/productpage", self.gateway)
    }

    /// The watched config folder.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// The scenario it started with.
    pub fn scenario(&self) -> Option<&'static Scenario> {
        self.scenario
    }

    /// The live config the stacks read.
    pub fn mesh(&self) -> &MeshHandle {
        &self.handle
    }

    /// Where workload `app` `version` listens (mTLS, or plain text where PeerAuthentication
    /// allows it).
    pub fn workload_addr(&self, app: &str, version: &str) -> Option<SocketAddr> {
        self.workload(app, version).map(|(addr, _)| *addr)
    }

    /// How many requests workload `app` `version`'s application has served (requests refused
    /// by its inbound policies do not count).
    pub fn served(&self, app: &str, version: &str) -> u64 {
        self.workload(app, version).map_or(0, |(_, s)| s.get())
    }

    /// Waits until workload `app` `version` has served at least `n` requests, for at most
    /// `timeout`; whether it has.
    pub async fn wait_served(&self, app: &str, version: &str, n: u64, timeout: Duration) -> bool {
        match self.workload(app, version) {
            Some((_, served)) => served.wait_for(n, timeout).await,
            None => false,
        }
    }

    fn workload(&self, app: &str, version: &str) -> Option<&(SocketAddr, Arc<Served>)> {
        self.workloads
            .iter()
            .find(|(w, _)| w.app == app && w.version == version)
            .map(|(_, v)| v)
    }

    /// The version of the config in use (it grows with every good reload).
    pub fn config_version(&self) -> u64 {
        *self.versions.borrow()
    }

    /// Switches scenario by rewriting `scenario.yaml` in the config folder (`None` removes it),
    /// as a person would, and waits for the watcher to load the change (at most `timeout`).
    /// Returns the new config version; `Ok(None)` when no reload came in time (the scenario
    /// was already in place, or it does not load: the log says why).
    pub async fn switch_scenario(
        &self,
        name: Option<&str>,
        timeout: Duration,
    ) -> Result<Option<u64>, StartError> {
        let scenario = match name {
            None => None,
            Some(name) => {
                Some(
                    scenarios::find(name).ok_or_else(|| StartError::UnknownScenario {
                        name: name.to_owned(),
                        known: scenarios::names(),
                    })?,
                )
            }
        };
        let mut versions = self.versions.clone();
        let before = *versions.borrow_and_update();
        files::write_scenario(&self.config_dir, scenario).map_err(|source| {
            StartError::ConfigDir {
                path: self.config_dir.clone(),
                source,
            }
        })?;
        let reloaded = tokio::time::timeout(timeout, versions.wait_for(|v| *v > before)).await;
        Ok(match reloaded {
            Ok(Ok(v)) => Some(*v),
            _ => None,
        })
    }

    /// Stops accepting, lets open requests finish (up to 5 s), then stops.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if self.owned_dir {
            let _ = std::fs::remove_dir_all(&self.config_dir);
        }
    }
}

//! `mesh run --gateway NAME`: the listeners of the named Gateway resources.
//!
//! Every server of the named Gateways is served (the decisions are mesh-core's
//! [`gateway`](mesh_core::gateway) functions). Servers are grouped by port and `bind` address
//! (`--gateway-bind` by default, 0.0.0.0 as Istio's gateways), one listener per group, and each
//! port serves one family, as Istio allows:
//! - plain HTTP (HTTP, HTTP2, GRPC, GRPC-WEB): HTTP/1.1 and h2c, the server chosen per request
//!   by host, `httpsRedirect` answered with a 301, then the Gateway's outbound stack;
//! - TLS (HTTPS and TLS servers): the ClientHello is read first (bounded, 10 s), the server
//!   chosen by its SNI (most specific host; no SNI: the first server; an SNI no server has:
//!   closed, as Envoy finds no filter chain), then either TLS is terminated (SIMPLE, MUTUAL,
//!   OPTIONAL_MUTUAL: HTTPS to the stack, TLS to `tcp` routes) or the bytes pass through to the
//!   `tls` route's upstream (PASSTHROUGH; AUTO_PASSTHROUGH is taken as PASSTHROUGH: routed by
//!   VirtualService `tls` routes, not by Istio's `outbound_.PORT_.SUBSET_.HOST` SNI names);
//! - TCP (TCP, MONGO, REDIS, MYSQL): the first server's `tcp` routes.
//!
//! Choosing the server from the ClientHello before the handshake is Envoy's filter-chain
//! match on `server_names`: it lets each server have its own certificate, its own client
//! verification (MUTUAL next to SIMPLE on one port) or no termination at all (PASSTHROUGH).
//!
//! Routes are read from the live config per request and per connection. The listeners follow
//! the config too ([`live`]): after each good reload the named Gateways are planned again, new
//! ports start listening, ports no server uses any more stop accepting and drain (as on
//! SIGTERM), and ports that stay take the new server set for their next connections. The
//! certificate files are watched (`--credentials-dir` recursively, the folders of
//! `serverCertificate`/`privateKey`/`caCertificates` paths): rewritten secrets are read again
//! and serve the next handshakes, as Istio's gateways follow secret updates over SDS. A
//! certificate that does not load keeps the port's previous servers and is reported as a
//! rejected reload is (stderr, `/config_dump`'s `last_reload_error`). The Gateway's `selector`
//! is not checked: naming the Gateway is the choice.
//!
//! Each listener takes at most [`MAX_CONNECTIONS`](accept::MAX_CONNECTIONS) connections at once
//! (then stops accepting until one ends); on stop it accepts no more, lets connections finish
//! for 5 s (HTTP ones are asked to close after their requests in flight) and drops the rest.
//!
//! TCP and TLS passthrough connections record Istio's TCP metrics
//! (`istio_tcp_connections_opened_total`, `..._closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total`, `reporter="source"`, the routed `destination_service`):
//! see [`l4`].
//!
//! Traces and access logs (`--tracing-endpoint`, `--access-log`) follow Istio's gateway: each
//! HTTP request gets one `CLIENT` span (Envoy's gateway runs its connection manager in the
//! outbound direction, and Istio does not set `spawn_upstream_span`, so no `SERVER` span) and
//! an access log line, as a sidecar's outbound side; each TCP or TLS passthrough connection a
//! line when it closes.

mod accept;
mod cert_watch;
mod client_hello;
mod l4;
mod live;
mod requests;
mod rewind;
mod tls;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use hyper::body::Incoming;
use mesh_core::{CompiledMesh, Labels, gateway::ServerKind, model::GatewayServer};
use mesh_tower::{MeshHandle, MeshService, MeshStack, tcp::TcpUpstream, telemetry::TelemetryLayer};
use tokio::net::TcpListener;

pub(crate) use live::Gateways;

use super::{observability::Observability, reload::ReloadStatus};

/// What `mesh run` was asked to serve.
#[derive(Debug)]
pub(crate) struct Options<'a> {
    /// `--gateway` values: `namespace/name` or `name`.
    pub(crate) names: &'a [String],
    /// `--namespace`: for bare names, DestinationRule lookup and short hosts.
    pub(crate) namespace: &'a str,
    /// `--gateway-bind`.
    pub(crate) bind: IpAddr,
    /// `--credentials-dir`.
    pub(crate) credentials_dir: Option<&'a Path>,
    /// `--workload-labels`: the gateway's labels, for `sourceLabels` matches.
    pub(crate) labels: &'a [(String, String)],
    /// `--identity-dir`: the gateway's workload certificate, for ISTIO_MUTUAL to mesh
    /// endpoints (HTTP routes; TCP and TLS routes send the client's bytes as they are).
    pub(crate) identity: Option<&'a mesh_tower::tls::IdentitySource>,
    /// Where a listener that cannot follow the config reports it (`last_reload_error`), and
    /// what wakes the listeners after a good reload.
    pub(crate) status: &'a Arc<Mutex<ReloadStatus>>,
    /// `--tracing-*` and `--access-log*`: spans and access log lines for HTTP routes, as a
    /// sidecar's outbound side makes them, and log lines for TCP and TLS connections.
    pub(crate) observability: &'a Observability,
}

/// What the listeners are planned from besides the config, kept to plan them again.
#[derive(Debug, Clone)]
struct Settings {
    /// The Gateways to serve, `namespace/name`, as resolved at start.
    keys: Vec<String>,
    /// `--gateway-bind`.
    bind: IpAddr,
    /// `--credentials-dir`.
    credentials_dir: Option<PathBuf>,
}

/// What one listener serves.
#[derive(Debug)]
enum Site {
    Http(Arc<Servers>),
    Tls(Arc<Servers>),
    Tcp(Box<GatewayServer>),
}

/// The servers of one listener, in Gateway and server order, with their rustls configs (for
/// servers that terminate TLS).
#[derive(Debug)]
pub(crate) struct Servers {
    list: Vec<GatewayServer>,
    kinds: Vec<ServerKind>,
    configs: Vec<Option<Arc<rustls::ServerConfig>>>,
}

/// What every connection of every gateway listener shares.
pub(crate) struct Ctx {
    handle: MeshHandle,
    namespace: String,
    labels: Labels,
    /// One outbound stack per Gateway (routing as that Gateway).
    stacks: BTreeMap<String, Mutex<MeshService<Incoming>>>,
    tcp: TcpUpstream,
    /// Istio's TCP metrics for `tcp` and `tls` routes (`reporter="source"`, as a gateway's),
    /// and their access log lines.
    telemetry: TelemetryLayer,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("namespace", &self.namespace)
            .field("gateways", &self.stacks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// A clone of the stack of `gateway` (the boxed stack is Send, not Sync).
    fn stack(&self, gateway: &str) -> Option<MeshService<Incoming>> {
        self.stacks
            .get(gateway)
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// `Gateway ns/name server 443/https (hosts a, b)`: how errors and logs name a server.
pub(crate) fn describe(server: &GatewayServer) -> String {
    let hosts: Vec<String> = server
        .hosts
        .iter()
        .map(|(ns, h)| {
            if ns == "*" {
                h.to_string()
            } else {
                format!("{ns}/{h}")
            }
        })
        .collect();
    format!(
        "Gateway {} server {}/{} (hosts {})",
        server.gateway,
        server.port,
        server.port_name,
        hosts.join(", ")
    )
}

/// `namespace/name` for each `--gateway` value; an unknown one is an error that lists the
/// Gateways the config has.
fn resolve_names(
    mesh: &CompiledMesh,
    names: &[String],
    namespace: &str,
) -> Result<Vec<String>, String> {
    let known: std::collections::BTreeSet<&str> =
        mesh.gateways.iter().map(|s| s.gateway.as_str()).collect();
    let mut out = Vec::new();
    for name in names {
        let key = if name.contains('/') {
            name.clone()
        } else {
            format!("{namespace}/{name}")
        };
        if !known.contains(key.as_str()) {
            let have = if known.is_empty() {
                "the config has no Gateway with a server mesh can use".to_owned()
            } else {
                format!(
                    "the config has: {}",
                    known.iter().copied().collect::<Vec<_>>().join(", ")
                )
            };
            return Err(format!(
                "--gateway {name}: no Gateway {key} in the config ({have}); name it as namespace/name, or set --namespace"
            ));
        }
        if !out.contains(&key) {
            out.push(key);
        }
    }
    Ok(out)
}

/// The family of a port: servers of another family on it are not served.
fn family(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Http { .. } => "plain HTTP",
        k if k.is_tls() => "TLS",
        _ => "TCP",
    }
}

/// Groups the servers of the Gateways `settings.keys` into listeners and reads their
/// certificates: one entry per listener address, with what it serves or why it cannot (a
/// certificate that does not load: the error names the server and the file). Servers that
/// cannot be served at all go to `warn`. A Gateway the config no longer has plans nothing.
fn plan(
    mesh: &CompiledMesh,
    settings: &Settings,
    warn: &mut dyn FnMut(String),
) -> Vec<(SocketAddr, Result<Site, String>)> {
    let mut groups: BTreeMap<SocketAddr, Vec<(GatewayServer, ServerKind)>> = BTreeMap::new();
    for name in &settings.keys {
        for server in mesh.gateways.iter().filter(|s| &s.gateway == name) {
            let kind = match ServerKind::of(server) {
                Ok(k) => k,
                Err(why) => {
                    warn(format!("{}: not served: {why}", describe(server)));
                    continue;
                }
            };
            let ip = match server.bind.as_deref() {
                None | Some("") => settings.bind,
                Some(b) => match b.parse::<IpAddr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        warn(format!(
                            "{}: not served: bind {b:?} is not an IP address (unix sockets are not supported)",
                            describe(server)
                        ));
                        continue;
                    }
                },
            };
            let group = groups.entry(SocketAddr::new(ip, server.port)).or_default();
            if let Some((first, first_kind)) = group.first()
                && family(*first_kind) != family(kind)
            {
                warn(format!(
                    "{}: not served: port {} already serves {} for {}",
                    describe(server),
                    server.port,
                    family(*first_kind),
                    describe(first)
                ));
                continue;
            }
            group.push((server.clone(), kind));
        }
    }
    groups
        .into_iter()
        .map(|(addr, group)| {
            let site = site(addr, group, settings.credentials_dir.as_deref(), warn);
            (addr, site)
        })
        .collect()
}

/// What the listener on `addr` serves for its `group` of servers (one family, not empty).
fn site(
    addr: SocketAddr,
    group: Vec<(GatewayServer, ServerKind)>,
    credentials_dir: Option<&Path>,
    warn: &mut dyn FnMut(String),
) -> Result<Site, String> {
    Ok(match group[0].1 {
        ServerKind::Tcp => {
            for (extra, _) in &group[1..] {
                warn(format!(
                    "{}: not served: port {} is TCP and serves its first server only, {}",
                    describe(extra),
                    addr.port(),
                    describe(&group[0].0)
                ));
            }
            Site::Tcp(Box::new(group[0].0.clone()))
        }
        ServerKind::Http { .. } => Site::Http(Arc::new(Servers {
            kinds: group.iter().map(|(_, k)| *k).collect(),
            configs: group.iter().map(|_| None).collect(),
            list: group.into_iter().map(|(s, _)| s).collect(),
        })),
        _ => {
            let mut configs = Vec::new();
            for (server, kind) in &group {
                configs.push(match kind {
                    ServerKind::Https | ServerKind::TlsTerminated => Some(tls::server_config(
                        server,
                        credentials_dir,
                        *kind == ServerKind::Https,
                    )?),
                    _ => None,
                });
            }
            Site::Tls(Arc::new(Servers {
                kinds: group.iter().map(|(_, k)| *k).collect(),
                configs,
                list: group.into_iter().map(|(s, _)| s).collect(),
            }))
        }
    })
}

/// Plans, reads certificates and binds every gateway listener, and starts watching the
/// certificate files. The error says what to fix.
pub(crate) async fn start(handle: &MeshHandle, opts: &Options<'_>) -> Result<Gateways, String> {
    // Subscribed before the snapshot is taken, and watching before the files are read: a
    // reload or a rotation from here on is seen.
    let reloads = opts
        .status
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .subscribe();
    let snapshot = handle.snapshot();
    let settings = Settings {
        keys: resolve_names(&snapshot, opts.names, opts.namespace)?,
        bind: opts.bind,
        credentials_dir: opts.credentials_dir.map(Path::to_path_buf),
    };
    let mut certs = cert_watch::CertWatch::new();
    certs.follow(cert_watch::folders(&snapshot, &settings));
    let mut warnings = Vec::new();
    let mut bound = Vec::new();
    for (addr, site) in plan(&snapshot, &settings, &mut |w| warnings.push(w)) {
        let site = site?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind the gateway listener on {addr}: {e}"))?;
        bound.push((addr, listener, site));
    }
    for w in &warnings {
        say!("mesh run: warning: {w}");
    }
    let stacks = settings
        .keys
        .iter()
        .map(|name| {
            let mut stack = MeshStack::outbound(handle)
                .namespace(opts.namespace)
                .workload_labels(opts.labels.iter().cloned())
                .gateway(name.clone());
            if let Some(identity) = opts.identity {
                stack = stack.identity(identity.clone());
            }
            let svc = opts.observability.outbound(stack).build::<Incoming>();
            (name.clone(), Mutex::new(svc))
        })
        .collect();
    let mut telemetry = TelemetryLayer::outbound(handle)
        .namespace(opts.namespace)
        .workload_labels(opts.labels.iter().cloned());
    if let Some(log) = &opts.observability.access_log {
        telemetry = telemetry.access_log(log.clone());
    }
    let ctx = Arc::new(Ctx {
        handle: handle.clone(),
        namespace: opts.namespace.to_owned(),
        labels: opts.labels.iter().cloned().collect(),
        stacks,
        tcp: TcpUpstream::new(),
        telemetry,
    });
    Ok(Gateways::new(live::Start {
        ctx,
        settings,
        status: opts.status.clone(),
        reloads,
        certs,
        bound,
        warnings,
    }))
}

//! The contenders and their equivalent configs: one route, one upstream, keep-alive on both
//! sides, no access logs, one worker thread, the upstream spoken to over HTTP/1.1 (nginx can
//! speak nothing else to it, and mesh does the same for a `protocol: HTTP` port).
//!
//! Each config is written into the run's scratch folder and the proxy is started pinned to the
//! proxy cores. The two-proxy contenders are the Istio sidecar picture: a client-side proxy
//! that originates mutual TLS with the workload certificates of one CA (`mesh ca`), and a
//! server-side proxy that terminates it, checks the peer and forwards to the upstream with
//! `x-forwarded-client-cert`.
//!
//! The single proxies also forward gRPC (issue 8's gRPC unary scenario) to the gRPC upstream
//! over HTTP/2: on a listener of their own (nginx `grpc_pass`, HAProxy `proto h2`, Envoy a
//! cluster with HTTP/2 protocol options), or, for mesh, on the same outbound listener by the
//! authority (a second ServiceEntry host whose port is declared `GRPC`, which makes mesh speak
//! HTTP/2 to it, as Istio's sidecar does for a `grpc` port).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use crate::procs::{Proc, free_port, wait_listening, wait_ready};

/// The authority clients send: mesh routes by it (a ServiceEntry host); the others ignore it.
pub const HOST: &str = "upstream.bench.local";
/// The authority gRPC clients send: mesh's ServiceEntry host for the gRPC upstream.
pub const GRPC_HOST: &str = "grpc.bench.local";
/// The SPIFFE identity of the server-side proxy in the two-proxy contenders.
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/bench-server";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Direct,
    Mesh,
    Nginx,
    Haproxy,
    Envoy,
    MeshMtls,
    EnvoyMtls,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Direct,
        Kind::Mesh,
        Kind::Nginx,
        Kind::Haproxy,
        Kind::Envoy,
        Kind::MeshMtls,
        Kind::EnvoyMtls,
    ];

    /// The id used on the command line (`--only`) and in the JSON.
    pub fn id(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Mesh => "mesh",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
            Kind::Envoy => "envoy",
            Kind::MeshMtls => "mesh-mtls",
            Kind::EnvoyMtls => "envoy-mtls",
        }
    }

    /// The name in the report's tables.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Direct => "direct (no proxy)",
            Kind::Mesh => "mesh",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
            Kind::Envoy => "Envoy",
            Kind::MeshMtls => "mesh → mesh (mTLS)",
            Kind::EnvoyMtls => "Envoy → Envoy (mTLS)",
        }
    }

    pub fn from_id(id: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.id() == id)
    }

    /// Whether a proxy process is measured (all but `direct`).
    pub fn has_proxy(self) -> bool {
        self != Kind::Direct
    }

    /// Whether the gRPC tests run through it: not through the two-proxy pairs, whose server
    /// side forwards to the one HTTP app (mesh's `--app`); a gRPC pair would need a second
    /// pair of processes.
    pub fn forwards_grpc(self) -> bool {
        !matches!(self, Kind::MeshMtls | Kind::EnvoyMtls)
    }
}

/// Where the tools are; `None` for a contender the run script could not get.
#[derive(Debug, Clone)]
pub struct Tools {
    pub mesh: PathBuf,
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub envoy: Option<PathBuf>,
}

impl Tools {
    /// Why `kind` cannot run here, if it cannot.
    pub fn missing(&self, kind: Kind) -> Option<&'static str> {
        match kind {
            Kind::Nginx if self.nginx.is_none() => Some("nginx not found"),
            Kind::Haproxy if self.haproxy.is_none() => Some("haproxy not found"),
            Kind::Envoy | Kind::EnvoyMtls if self.envoy.is_none() => Some("envoy not found"),
            _ => None,
        }
    }
}

/// What every contender is started with.
#[derive(Debug)]
pub struct Ctx {
    pub work: PathBuf,
    pub upstream: SocketAddr,
    /// The gRPC upstream (`upstream --grpc`).
    pub grpc_upstream: SocketAddr,
    pub tools: Tools,
    /// `taskset -c` list for the proxies (`None`: not pinned).
    pub proxy_cpus: Option<String>,
    /// `ca/`, `client/` and `server/` from `mesh ca init` and `mesh ca issue`.
    pub certs: PathBuf,
}

/// A started contender: its processes (stopped on drop) and where clients connect.
#[derive(Debug)]
pub struct Running {
    pub procs: Vec<Proc>,
    /// HTTP/1.1 listener.
    pub h1: SocketAddr,
    /// h2c (prior knowledge) listener: the same as `h1` where the proxy tells them apart.
    pub h2: SocketAddr,
    /// gRPC (h2c) listener, forwarding to the gRPC upstream; `None` where the contender does
    /// not forward gRPC ([`Kind::forwards_grpc`]).
    pub grpc: Option<SocketAddr>,
}

impl Running {
    /// The pids to account CPU and memory to: the proxies and their children.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().flat_map(Proc::tree).collect()
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Starts `kind` and waits until a request through it reaches the upstream.
pub fn start(kind: Kind, ctx: &Ctx) -> Result<Running, String> {
    let dir = ctx.work.join(kind.id());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut running = match kind {
        Kind::Direct => Running {
            procs: Vec::new(),
            h1: ctx.upstream,
            h2: ctx.upstream,
            grpc: Some(ctx.grpc_upstream),
        },
        Kind::Mesh => mesh_single(ctx, &dir)?,
        Kind::MeshMtls => mesh_pair(ctx, &dir)?,
        Kind::Nginx => nginx(ctx, &dir)?,
        Kind::Haproxy => haproxy(ctx, &dir)?,
        Kind::Envoy => envoy_single(ctx, &dir)?,
        Kind::EnvoyMtls => envoy_pair(ctx, &dir)?,
    };
    let within = Duration::from_secs(20);
    let logs = |e: String| format!("{}: {e} (its logs are in {})", kind.label(), dir.display());
    wait_ready(running.h1, HOST, within, &mut running.procs).map_err(logs)?;
    if running.h2 != running.h1 {
        // An h2c-only port does not answer the HTTP/1.1 probe: it has to accept connections
        // (the h2c runs themselves count any failed request).
        wait_listening(running.h2, within).map_err(logs)?;
    }
    if let Some(grpc) = running.grpc {
        // A gRPC call through it fails the warm-up and is counted by the runs themselves.
        wait_listening(grpc, within).map_err(logs)?;
    }
    Ok(running)
}

// === mesh ===

fn mesh_args(config: &Path, extra: &[String]) -> Vec<String> {
    let mut args = vec![
        "run".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
        "--no-watch".to_owned(),
        "--concurrency".to_owned(),
        "1".to_owned(),
    ];
    args.extend_from_slice(extra);
    args
}

/// Logs at `warn`: mesh has no access log, and `info` says nothing per request either; this
/// keeps its stderr as quiet as the others'.
const MESH_ENV: &[(&str, &str)] = &[("RUST_LOG", "warn")];

fn mesh_single(ctx: &Ctx, dir: &Path) -> Result<Running, String> {
    let config = dir.join("mesh.yaml");
    write(
        &config,
        &format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: upstream, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc, namespace: default}}
spec:
  hosts: [{GRPC_HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: grpc, protocol: GRPC}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{grpc: {grpc}}}
",
            port = ctx.upstream.port(),
            grpc = ctx.grpc_upstream.port(),
        ),
    )?;
    let port = free_port();
    let args = mesh_args(&config, &["--outbound".into(), local(port).to_string()]);
    let proc = Proc::spawn(
        "mesh",
        ctx.proxy_cpus.as_deref(),
        &ctx.tools.mesh,
        &args,
        MESH_ENV,
        &dir.join("mesh.log"),
    )?;
    Ok(Running {
        procs: vec![proc],
        h1: local(port),
        h2: local(port),
        grpc: Some(local(port)),
    })
}

fn mesh_pair(ctx: &Ctx, dir: &Path) -> Result<Running, String> {
    let inbound = free_port();
    let config = dir.join("mesh.yaml");
    write(
        &config,
        &format!(
            "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: istio-system}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: upstream, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {inbound}}}
    labels: {{app: upstream, security.istio.io/tlsMode: istio}}
    serviceAccount: bench-server
"
        ),
    )?;
    let server = Proc::spawn(
        "mesh (server side)",
        ctx.proxy_cpus.as_deref(),
        &ctx.tools.mesh,
        &mesh_args(
            &config,
            &[
                "--inbound".into(),
                local(inbound).to_string(),
                "--app".into(),
                ctx.upstream.to_string(),
                "--identity-dir".into(),
                ctx.certs.join("server").display().to_string(),
                "--workload-labels".into(),
                "app=upstream".into(),
            ],
        ),
        MESH_ENV,
        &dir.join("mesh-server.log"),
    )?;
    let outbound = free_port();
    let client = Proc::spawn(
        "mesh (client side)",
        ctx.proxy_cpus.as_deref(),
        &ctx.tools.mesh,
        &mesh_args(
            &config,
            &[
                "--outbound".into(),
                local(outbound).to_string(),
                "--identity-dir".into(),
                ctx.certs.join("client").display().to_string(),
                "--workload-labels".into(),
                "app=client".into(),
            ],
        ),
        MESH_ENV,
        &dir.join("mesh-client.log"),
    )?;
    Ok(Running {
        procs: vec![client, server],
        h1: local(outbound),
        h2: local(outbound),
        grpc: None,
    })
}

// === nginx ===

/// nginx speaks h2c only on a port of its own (`listen ... http2` without TLS takes no HTTP/1.1),
/// so it gets two listeners, and a third for gRPC (`grpc_pass`: HTTP/2 to the gRPC upstream,
/// the one upstream protocol besides HTTP/1.1 it has). Its defaults close a keep-alive
/// connection after 1,000 requests on either side; these limits are lifted, as the other
/// proxies have none.
fn nginx(ctx: &Ctx, dir: &Path) -> Result<Running, String> {
    let (h1, h2, grpc) = (free_port(), free_port(), free_port());
    let d = dir.display();
    let config = dir.join("nginx.conf");
    write(
        &config,
        &format!(
            "daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    upstream bench_upstream {{
        server {up};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{h1};
        listen 127.0.0.1:{h2} http2;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }}
    }}
    upstream bench_grpc {{
        server {grpc_up};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        listen 127.0.0.1:{grpc} http2;
        location / {{
            grpc_pass grpc://bench_grpc;
        }}
    }}
}}
",
            up = ctx.upstream,
            grpc_up = ctx.grpc_upstream,
        ),
    )?;
    let bin = ctx.tools.nginx.as_ref().expect("checked by Tools::missing");
    let proc = Proc::spawn(
        "nginx",
        ctx.proxy_cpus.as_deref(),
        bin,
        &[
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            config.display().to_string(),
        ],
        &[],
        &dir.join("nginx.log"),
    )?;
    Ok(Running {
        procs: vec![proc],
        h1: local(h1),
        h2: local(h2),
        grpc: Some(local(grpc)),
    })
}

// === HAProxy ===

/// gRPC gets a frontend and backend of its own: h2c on both sides (`proto h2` on the `bind`
/// and on the `server` line).
fn haproxy(ctx: &Ctx, dir: &Path) -> Result<Running, String> {
    let (h1, h2, grpc) = (free_port(), free_port(), free_port());
    let config = dir.join("haproxy.cfg");
    write(
        &config,
        &format!(
            "global
    nbthread 1
    maxconn 4000

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend bench
    bind 127.0.0.1:{h1}
    bind 127.0.0.1:{h2} proto h2
    default_backend upstream

backend upstream
    http-reuse always
    server upstream {up}

frontend grpc
    bind 127.0.0.1:{grpc} proto h2
    default_backend grpc_upstream

backend grpc_upstream
    http-reuse always
    server upstream {grpc_up} proto h2
",
            up = ctx.upstream,
            grpc_up = ctx.grpc_upstream,
        ),
    )?;
    let bin = ctx
        .tools
        .haproxy
        .as_ref()
        .expect("checked by Tools::missing");
    let proc = Proc::spawn(
        "haproxy",
        ctx.proxy_cpus.as_deref(),
        bin,
        &["-db".into(), "-f".into(), config.display().to_string()],
        &[],
        &dir.join("haproxy.log"),
    )?;
    Ok(Running {
        procs: vec![proc],
        h1: local(h1),
        h2: local(h2),
        grpc: Some(local(grpc)),
    })
}

// === Envoy ===

/// The HTTP connection manager: `codec_type: AUTO` takes HTTP/1.1 and h2c on one port; no
/// access log is configured. `server_side` adds what Istio's inbound sidecar does with the
/// peer's certificate (`x-forwarded-client-cert`, as mesh does). Every request goes to
/// `cluster`.
fn envoy_hcm(server_side: bool, cluster: &str) -> String {
    let xfcc = if server_side {
        "
          forward_client_cert_details: SANITIZE_SET
          set_current_client_cert_details: {uri: true}"
    } else {
        ""
    };
    format!(
        "      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO{xfcc}
          route_config:
            virtual_hosts:
            - name: upstream
              domains: [\"*\"]
              routes:
              - match: {{prefix: \"/\"}}
                route: {{cluster: {cluster}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"
    )
}

/// TLS 1.2-1.3 (Envoy's client default stops at 1.2; mesh's rustls speaks 1.3), the workload
/// certificate of `id` and the CA's root.
fn envoy_tls_common(certs: &Path, id: &str) -> String {
    let d = certs.join(id);
    let d = d.display();
    format!(
        "common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_2, tls_maximum_protocol_version: TLSv1_3}}
            tls_certificates:
            - certificate_chain: {{filename: {d}/cert-chain.pem}}
              private_key: {{filename: {d}/key.pem}}
            validation_context:
              trusted_ca: {{filename: {d}/root-cert.pem}}"
    )
}

/// A gRPC listener on `port` and its cluster, which speaks HTTP/2 to `to` (Envoy's clusters
/// speak HTTP/1.1 unless told otherwise): the `listeners` and `clusters` entries.
fn envoy_grpc(port: u16, to: SocketAddr) -> (String, String) {
    let hcm = envoy_hcm(false, "upstream_grpc");
    let listener = format!(
        "  - name: grpc
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
{hcm}"
    );
    let cluster = format!(
        "  - name: upstream_grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: upstream_grpc
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {p}}}}}}}
",
        ip = to.ip(),
        p = to.port(),
    );
    (listener, cluster)
}

/// `grpc`: a gRPC listener port and the gRPC upstream, for the single proxy.
fn envoy_config(
    listen: u16,
    admin: u16,
    to: SocketAddr,
    downstream_tls: Option<String>,
    upstream_tls: Option<String>,
    server_side: bool,
    grpc: Option<(u16, SocketAddr)>,
) -> String {
    let listener_tls = downstream_tls
        .map(|t| {
            format!(
                "      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          {t}
"
            )
        })
        .unwrap_or_default();
    let cluster_tls = upstream_tls
        .map(|t| {
            format!(
                "    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        {t}
"
            )
        })
        .unwrap_or_default();
    let hcm = envoy_hcm(server_side, "upstream");
    let (grpc_listener, grpc_cluster) = grpc
        .map(|(port, to)| envoy_grpc(port, to))
        .unwrap_or_default();
    format!(
        "admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: bench
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
{hcm}{listener_tls}{grpc_listener}  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}
{cluster_tls}{grpc_cluster}",
        ip = to.ip(),
        port = to.port(),
    )
}

fn envoy_proc(ctx: &Ctx, dir: &Path, name: &str, config: &str) -> Result<Proc, String> {
    let path = dir.join(format!("{name}.yaml"));
    write(&path, config)?;
    let bin = ctx.tools.envoy.as_ref().expect("checked by Tools::missing");
    Proc::spawn(
        &format!("envoy ({name})"),
        ctx.proxy_cpus.as_deref(),
        bin,
        &[
            "-c".into(),
            path.display().to_string(),
            "--concurrency".into(),
            "1".into(),
            "--disable-hot-restart".into(),
            "--log-level".into(),
            "warn".into(),
        ],
        &[],
        &dir.join(format!("{name}.log")),
    )
}

fn envoy_single(ctx: &Ctx, dir: &Path) -> Result<Running, String> {
    let (port, grpc) = (free_port(), free_port());
    let config = envoy_config(
        port,
        free_port(),
        ctx.upstream,
        None,
        None,
        false,
        Some((grpc, ctx.grpc_upstream)),
    );
    let proc = envoy_proc(ctx, dir, "envoy", &config)?;
    Ok(Running {
        procs: vec![proc],
        h1: local(port),
        h2: local(port),
        grpc: Some(local(grpc)),
    })
}

fn envoy_pair(ctx: &Ctx, dir: &Path) -> Result<Running, String> {
    let inbound = free_port();
    let server_tls = envoy_tls_common(&ctx.certs, "server");
    let server = envoy_config(
        inbound,
        free_port(),
        ctx.upstream,
        Some(server_tls),
        None,
        true,
        None,
    );
    let server = envoy_proc(ctx, dir, "envoy-server", &server)?;
    let client_tls = format!(
        "{}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{exact: \"{SERVER_ID}\"}}",
        envoy_tls_common(&ctx.certs, "client")
    );
    let outbound = free_port();
    let client = envoy_config(
        outbound,
        free_port(),
        local(inbound),
        None,
        Some(client_tls),
        false,
        None,
    );
    let client = envoy_proc(ctx, dir, "envoy-client", &client)?;
    Ok(Running {
        procs: vec![client, server],
        h1: local(outbound),
        h2: local(outbound),
        grpc: None,
    })
}

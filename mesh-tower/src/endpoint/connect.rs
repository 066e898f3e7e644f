//! The HTTP clients to endpoints: hyper-util's pooled client over a connector wrapped by TLS
//! origination ([`Originate`]), one client per set of connection settings.
//!
//! A DestinationRule's `connectionPool` sets, per destination, settings that hyper-util fixes per
//! client: `tcp.connectTimeout`, `http.idleTimeout` (or `tcp.idleTimeout`), HTTP/2 or HTTP/1.1,
//! and `maxRequestsPerConnection: 1` (no keep-alive); its `tls` (or auto mTLS) decides the
//! [`Transport`]. [`HttpClients`] keeps one client per distinct [`ClientSettings`] (a handful in
//! any real config), so destinations with the same settings share a pool of connections, and
//! each client's pool only holds connections made with its settings: a connection made with
//! one TLS setting (or plain) is never reused for another.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper::rt::{Read, Write};
use hyper_util::{
    client::legacy::{Client, connect::Connection},
    rt::{TokioExecutor, TokioTimer},
};
use mesh_core::model::ConnectionPool;
use rustls_pki_types::ServerName;
use tower::Service;

use super::origination::{self, Originate, OriginationError, Transport};
use crate::{
    body::{BoxError, MeshBody},
    tls::IdentitySource,
};

pub use hyper_util::client::legacy::connect::HttpConnector;

/// Envoy's default connect timeout (Istio's `connectionPool.tcp.connectTimeout`: "Default is
/// 10s").
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Istio's default `connectionPool.http.idleTimeout`: "If not set, the default is 1 hour."
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Clients kept at most; more distinct settings than this (a config generator gone wild) start
/// over.
const MAX_CLIENTS: usize = 256;

/// What can make upstream connections: a `tower::Service<Uri>` returning a connection, as
/// hyper-util's `Connect` wants it, cloneable and shareable. TLS origination (DestinationRule
/// `tls`, ISTIO_MUTUAL) is a connector that wraps another.
pub trait UpstreamConnector:
    Service<
        Uri,
        Response: Read + Write + Connection + Unpin + Send + 'static,
        Error: Into<BoxError>,
        Future: Unpin + Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<C> UpstreamConnector for C
where
    C: Service<Uri> + Clone + Send + Sync + 'static,
    C::Response: Read + Write + Connection + Unpin + Send + 'static,
    C::Error: Into<BoxError>,
    C::Future: Unpin + Send + 'static,
{
}

/// A plain TCP connector with `TCP_NODELAY`. It has no connect timeout of its own: the upstream
/// applies each destination's `tcp.connectTimeout` (default [`DEFAULT_CONNECT_TIMEOUT`]) around
/// whatever connector it is given.
pub fn http_connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(None);
    c.set_nodelay(true);
    c.enforce_http(false);
    c
}

/// The settings hyper-util fixes per client, from a destination's `connectionPool` and `tls`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    /// HTTP/2 with prior knowledge (h2c, gRPC, `h2UpgradePolicy: UPGRADE`); HTTP/1.1 otherwise.
    pub h2: bool,
    /// `tcp.connectTimeout`.
    pub connect_timeout: Duration,
    /// `http.idleTimeout` (or `tcp.idleTimeout`): how long a pooled connection may stay idle.
    pub idle_timeout: Duration,
    /// `false` for `maxRequestsPerConnection: 1` ("Setting this parameter to 1 disables keep
    /// alive"): no connection goes back to the pool.
    pub keep_alive: bool,
    /// Plain text or TLS, and which TLS (DestinationRule `tls`, auto mTLS).
    pub transport: Transport,
}

impl ClientSettings {
    /// The settings for a destination with `pool` (Istio's defaults where unset), plain text.
    pub fn for_pool(pool: Option<&ConnectionPool>, h2: bool) -> Self {
        ClientSettings {
            h2,
            connect_timeout: pool
                .and_then(|p| p.connect_timeout)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: pool
                .and_then(|p| p.idle_timeout)
                .unwrap_or(DEFAULT_IDLE_TIMEOUT),
            keep_alive: pool.and_then(|p| p.max_requests_per_connection) != Some(1),
            transport: Transport::Plain,
        }
    }

    /// These settings over `transport`.
    pub fn with_transport(self, transport: Transport) -> Self {
        ClientSettings { transport, ..self }
    }
}

/// The pooled clients, one per [`ClientSettings`], sharing one connector and the workload's
/// identity (ISTIO_MUTUAL). Clones share the clients (and so their pools).
#[derive(Clone, Debug)]
pub struct HttpClients<C> {
    connector: C,
    identity: Option<IdentitySource>,
    clients: Arc<Mutex<HashMap<ClientSettings, PooledClient<C>>>>,
}

impl<C> HttpClients<C> {
    /// The workload identity ISTIO_MUTUAL presents, if any.
    pub fn identity(&self) -> Option<&IdentitySource> {
        self.identity.as_ref()
    }
}

/// hyper-util's pooled client over `C` with TLS origination, and the connect timeout around
/// both (Envoy's `connect_timeout` covers the TLS handshake too).
pub type PooledClient<C> = Client<TimedConnector<Originate<C>>, MeshBody>;

impl<C: UpstreamConnector> HttpClients<C> {
    pub fn new(connector: C) -> Self {
        HttpClients {
            connector,
            identity: None,
            clients: Arc::default(),
        }
    }

    /// Originates ISTIO_MUTUAL with `source`'s certificate (read at every handshake, so
    /// rotations apply to new connections). Starts with no pooled client.
    pub fn with_identity(self, source: IdentitySource) -> Self {
        HttpClients {
            connector: self.connector,
            identity: Some(source),
            clients: Arc::default(),
        }
    }

    /// The client for `settings`, built on first use: for a TLS transport, with its rustls
    /// configuration (certificate files are read then; a file that cannot be used fails the
    /// request, and is read again by the next one).
    pub fn client(&self, settings: ClientSettings) -> Result<PooledClient<C>, OriginationError> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&settings) {
            return Ok(c.clone());
        }
        let connector = match &settings.transport {
            Transport::Plain => Originate::plain(self.connector.clone()),
            Transport::Tls(key) => {
                let config = origination::client_config(key, self.identity.as_ref())?;
                let server_name = ServerName::try_from(key.sni.clone()).map_err(|_| {
                    OriginationError::Config {
                        sni: key.sni.clone(),
                        reason: "not a valid DNS name or IP address".into(),
                    }
                })?;
                Originate::tls(self.connector.clone(), config, server_name)
                    .presenting(origination::local_certificate(key, self.identity.as_ref()))
            }
        };
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let mut b = Client::builder(TokioExecutor::new());
        // Without a timer, idle timeouts in the pool do nothing.
        b.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.idle_timeout)
            .http2_only(settings.h2);
        if !settings.keep_alive {
            b.pool_max_idle_per_host(0);
        }
        let client = b.build(TimedConnector {
            inner: connector,
            timeout: settings.connect_timeout,
        });
        clients.insert(settings, client.clone());
        Ok(client)
    }
}

/// A connector with a connect timeout: `tcp.connectTimeout` around any connector (TLS
/// handshakes included, as Envoy's `connect_timeout` covers them).
#[derive(Clone, Debug)]
pub struct TimedConnector<C> {
    inner: C,
    timeout: Duration,
}

/// The connect timeout expired.
#[derive(Debug, thiserror::Error)]
#[error("connect timeout after {0:?} (DestinationRule connectionPool.tcp.connectTimeout)")]
pub struct ConnectTimeout(pub Duration);

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<C: UpstreamConnector> Service<Uri> for TimedConnector<C> {
    type Response = C::Response;
    type Error = BoxError;
    type Future = BoxFuture<Result<C::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(ConnectTimeout(timeout).into()),
            }
        })
    }
}

//! The HTTP clients to endpoints: hyper-util's pooled client, one for HTTP/1.1 and one for
//! HTTP/2 with prior knowledge (h2c, gRPC), over a connector that TLS origination will wrap.

use std::time::Duration;

use hyper_util::{
    client::legacy::{Client, connect::Connect},
    rt::{TokioExecutor, TokioTimer},
};

use crate::body::MeshBody;

pub use hyper_util::client::legacy::connect::HttpConnector;

/// Envoy's default connect timeout (Istio's `connectionPool.tcp.connectTimeout` default).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What can make upstream connections: hyper-util's `Connect`, cloneable and shareable. TLS
/// origination (DestinationRule `tls`, ISTIO_MUTUAL) is a connector that wraps another.
pub trait UpstreamConnector: Connect + Clone + Send + Sync + 'static {}

impl<C: Connect + Clone + Send + Sync + 'static> UpstreamConnector for C {}

/// A plain TCP connector with the default connect timeout and `TCP_NODELAY`.
pub fn http_connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_connect_timeout(Some(DEFAULT_CONNECT_TIMEOUT));
    c.set_nodelay(true);
    c.enforce_http(false);
    c
}

/// The two pooled clients, sharing one connector.
#[derive(Clone, Debug)]
pub struct HttpClients<C> {
    pub h1: Client<C, MeshBody>,
    pub h2: Client<C, MeshBody>,
}

impl<C: UpstreamConnector> HttpClients<C> {
    pub fn new(connector: C) -> Self {
        let builder = || {
            let mut b = Client::builder(TokioExecutor::new());
            // Without a timer, idle timeouts in the pool do nothing.
            b.timer(TokioTimer::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(Duration::from_secs(90));
            b
        };
        HttpClients {
            h1: builder().build(connector.clone()),
            h2: builder().http2_only(true).build(connector),
        }
    }
}

//! One Bookinfo service on its own: a plain HTTP server that knows nothing of the mesh, as
//! Istio's Bookinfo containers are. This is what runs behind a `mesh run` sidecar in sidecar
//! mode (`examples/bookinfo/sidecars.sh`, `bookinfo serve`):
//!
//! ```text
//! gateway (mesh run --gateway) ══mTLS══► sidecar inbound ─► bookinfo serve --service productpage
//!                                                          │ HTTP proxy: http://reviews:9080/...
//!        sidecar outbound (mesh run --outbound) ◄──────────┘
//!          ══mTLS══► reviews' sidecar inbound ─► bookinfo serve --service reviews ...
//! ```
//!
//! The service listens in plain text and never sees a certificate or a policy. Its calls (by
//! Istio's names, `http://reviews:9080/...`) go to one HTTP proxy, `--upstream-proxy`: its
//! sidecar's outbound listener, exactly as an application started with
//! `HTTP_PROXY=http://ADDR` sends them ([`proxy`]). Routing, retries, faults and mTLS are the
//! sidecar's business.

pub mod proxy;

#[cfg(test)]
mod tests;

use std::{convert::Infallible, future::Future, net::SocketAddr};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_tower::{
    MeshService,
    body::{self, MeshBody},
};
use tokio::net::TcpListener;
use tower::util::BoxCloneService;

use crate::{
    runner::{application, serve_plain},
    services::Client,
    workloads::Workload,
};
pub use proxy::UpstreamProxy;

/// What to serve, and where.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The service and version (one of [`WORKLOADS`](crate::workloads::WORKLOADS)).
    pub workload: Workload,
    /// Where to listen (plain HTTP/1.1 and h2c); port 0 for any free port.
    pub listen: SocketAddr,
    /// The HTTP proxy the service's calls go to (its sidecar's outbound listener). Required
    /// for the workloads that call others ([`Workload::calls`]).
    pub upstream_proxy: Option<UpstreamProxy>,
}

/// Why a standalone service did not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{workload} calls {calls}: give --upstream-proxy http://HOST:PORT (its sidecar's \
         outbound listener, `mesh run --outbound`), through which those calls go"
    )]
    NeedsProxy { workload: String, calls: String },
    #[error("cannot listen on {addr} for {workload}: {source}; choose another --listen address")]
    Bind {
        workload: String,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A standalone service, bound and ready to serve.
#[derive(Debug)]
pub struct Standalone {
    workload: Workload,
    listener: TcpListener,
    addr: SocketAddr,
    upstream_proxy: Option<UpstreamProxy>,
}

impl Standalone {
    /// Checks the options and binds the listener.
    pub async fn bind(options: ServeOptions) -> Result<Self, ServeError> {
        let w = options.workload;
        if !w.calls().is_empty() && options.upstream_proxy.is_none() {
            return Err(ServeError::NeedsProxy {
                workload: w.name(),
                calls: w.calls().join(" and "),
            });
        }
        let bind_error = |source| ServeError::Bind {
            workload: w.name(),
            addr: options.listen,
            source,
        };
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Standalone {
            workload: w,
            listener,
            addr,
            upstream_proxy: options.upstream_proxy,
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it serves.
    pub fn workload(&self) -> Workload {
        self.workload
    }

    /// The proxy its calls go to.
    pub fn upstream_proxy(&self) -> Option<&UpstreamProxy> {
        self.upstream_proxy.as_ref()
    }

    /// Serves until `shutdown` completes, then lets open requests finish (up to 5 s).
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let proxy = self.upstream_proxy;
        let app = application(&self.workload, || {
            proxy::client(
                proxy
                    .as_ref()
                    .expect("bind() refuses a calling workload without a proxy"),
            )
        });
        serve_plain(self.listener, access_logged(self.workload, app), shutdown).await;
    }
}

/// The application as a server's service, with one log line per request (what a person reads
/// in a pod's log).
fn access_logged(w: Workload, app: Client) -> MeshService<Incoming> {
    let name = w.name();
    BoxCloneService::new(tower::service_fn(move |req: Request<Incoming>| {
        let (app, name) = (app.clone(), name.clone());
        let line = format!("{} {}", req.method(), req.uri());
        async move {
            let res = crate::services::call_client(app, req.map(body::boxed))
                .await
                .unwrap_or_else(|e| failed(&name, &e.to_string()));
            tracing::info!(target: "bookinfo::serve", "{name}: {line} {}", res.status().as_u16());
            Ok::<_, Infallible>(res)
        }
    }))
}

/// 500 with the reason: the services answer their own errors, so this is a bug in one.
fn failed(workload: &str, reason: &str) -> Response<MeshBody> {
    let mut res = Response::new(body::full(format!("{workload} failed: {reason}\n")));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}

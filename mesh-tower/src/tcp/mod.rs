//! TCP forwarding for the connections a gateway routes with VirtualService `tcp` and `tls`
//! routes: pick an endpoint of the routed destination, connect, copy bytes both ways.
//!
//! [`TcpUpstream::pick`] resolves a [`Destination`] as the HTTP upstream does (the registry's
//! service, the port the destination names or else the listener's port or the service's only
//! port, the DestinationRule subset's label selector) and picks the endpoint with the
//! DestinationRule's load balancer: Istio's default, least request, counts open connections
//! here; `consistentHash` hashes the client's address (Envoy's TCP proxy only hashes by source
//! IP, `useSourceIp`). `connectionPool.tcp.connectTimeout` (default 10 s) and
//! `connectionPool.tcp.idleTimeout` (default 1 h, Istio's) apply.
//!
//! Not applied to TCP yet: outlier detection, `tcp.maxConnections` (Envoy's circuit breaker),
//! TCP keep-alive, and DestinationRule `tls` origination (bytes go as the client sent them).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use mesh_core::{Host, model::Destination};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // An echo server, registered as `echo.example.internal:9000`.
//! let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = echo.local_addr()?.port();
//! tokio::spawn(async move {
//!     let (mut s, _) = echo.accept().await.unwrap();
//!     let (mut r, mut w) = s.split();
//!     let _ = tokio::io::copy(&mut r, &mut w).await;
//! });
//! let yaml = format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: echo}}\nspec:\n  hosts: [echo.example.internal]\n  resolution: STATIC\n  ports: [{{number: 9000, name: tcp, protocol: TCP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {port}}}}}]\n");
//! let mesh = mesh_config::Loader::new().check_str("echo.yaml", &yaml).into_mesh()?;
//!
//! let upstream = mesh_tower::tcp::TcpUpstream::new();
//! let dest = Destination { host: Host::new("echo.example.internal"), subset: None, port: Some(9000) };
//! let target = upstream.pick(mesh.compiled(), &dest, 31400, "default", None)?;
//! assert_eq!(target.endpoint(), format!("127.0.0.1:{port}"));
//! let mut conn = target.connect().await?;
//! conn.write_all(b"ping").await?;
//! let mut buf = [0; 4];
//! conn.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"ping");
//! # Ok(())
//! # }
//! ```

mod proxy;
#[cfg(test)]
mod tests;

use std::{net::IpAddr, sync::Arc, time::Duration};

use mesh_core::{
    CompiledMesh,
    model::{Destination, EndpointAddress},
};
use tokio::net::TcpStream;

pub use proxy::proxy;

use crate::{
    endpoint::{
        Balancers, ClusterKey, DEFAULT_CONNECT_TIMEOUT, InFlight, PickSet, endpoint_authority,
    },
    error::MeshError,
};

/// Istio's default `connectionPool.tcp.idleTimeout` for TCP proxying: one hour.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Picks endpoints for routed TCP connections. Clones share the load-balancer state.
#[derive(Clone, Debug, Default)]
pub struct TcpUpstream {
    balancers: Arc<Balancers>,
}

/// The endpoint a connection goes to, and what it holds while open (its count in least
/// request).
#[derive(Debug)]
pub struct TcpTarget {
    endpoint: String,
    destination: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    _in_flight: Option<InFlight>,
}

impl TcpUpstream {
    pub fn new() -> Self {
        TcpUpstream::default()
    }

    /// The endpoint for a connection routed to `dest`, arriving on `listener_port`, from a
    /// proxy in `client_namespace` (which DestinationRule applies) for a client at `source`
    /// (the consistent-hash key). Fails with 503's cause, `no-healthy-upstream`, when the
    /// destination has no usable endpoint.
    pub fn pick(
        &self,
        snapshot: &CompiledMesh,
        dest: &Destination,
        listener_port: u16,
        client_namespace: &str,
        source: Option<IpAddr>,
    ) -> Result<TcpTarget, MeshError> {
        let unavailable = || MeshError::NoHealthyUpstream {
            destination: dest.to_string(),
        };
        let service = snapshot
            .service(dest.host.as_str())
            .ok_or_else(unavailable)?;
        let port = service
            .port(dest.port.unwrap_or(listener_port))
            .or_else(|| dest.port.is_none().then(|| service.single_port()).flatten())
            .ok_or_else(unavailable)?;
        let policy = snapshot.destination_policy(dest.host.as_str(), client_namespace);
        let subset = match &dest.subset {
            Some(name) => Some(
                policy
                    .and_then(|p| p.subset(name))
                    .ok_or_else(unavailable)?,
            ),
            None => None,
        };
        let traffic = policy
            .map(|p| p.policy_for(dest.subset.as_deref(), Some(port.number)))
            .unwrap_or_default();
        let endpoints: Vec<_> = service
            .endpoints
            .iter()
            .filter(|e| subset.is_none_or(|s| s.selector.matches(&e.labels)))
            .collect();
        let authorities: Vec<String> = endpoints
            .iter()
            .map(|e| endpoint_authority(e, port))
            .collect();
        let eligible = vec![true; endpoints.len()];
        let cluster: ClusterKey = (dest.host.to_string(), dest.subset.clone(), port.number);
        // The balancers read hash keys from a request: the client address is the source IP.
        let mut hash_source = http::Request::new(());
        if let Some(ip) = source
            && let Ok(v) = http::HeaderValue::from_str(&ip.to_string())
        {
            hash_source.headers_mut().insert("x-forwarded-for", v);
        }
        let pick = self
            .balancers
            .pick(
                &PickSet {
                    version: snapshot.version,
                    cluster: &cluster,
                    endpoints: &endpoints,
                    authorities: &authorities,
                    eligible: &eligible,
                },
                traffic.load_balancer.as_ref(),
                &hash_source,
            )
            .ok_or_else(unavailable)?;
        if let EndpointAddress::Unix(path) = &endpoints[pick.index].address {
            return Err(MeshError::UpstreamConnect {
                endpoint: format!("unix://{path}"),
                source: "unix domain socket endpoints are not supported yet".into(),
            });
        }
        let pool = traffic.connection_pool.as_ref();
        Ok(TcpTarget {
            endpoint: authorities[pick.index].clone(),
            destination: dest.to_string(),
            connect_timeout: pool
                .and_then(|p| p.connect_timeout)
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: pool
                .and_then(|p| p.idle_timeout)
                .unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT),
            _in_flight: pick.in_flight,
        })
    }
}

impl TcpTarget {
    /// `address:port` of the endpoint.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The routed destination, for logs.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// How long the connection may stay without traffic either way.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Connects to the endpoint within the connect timeout.
    pub async fn connect(&self) -> Result<TcpStream, MeshError> {
        let failed = |source: crate::body::BoxError| MeshError::UpstreamConnect {
            endpoint: self.endpoint.clone(),
            source,
        };
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.endpoint))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(failed(e.into())),
                Err(_) => {
                    return Err(failed(
                        crate::endpoint::ConnectTimeout(self.connect_timeout).into(),
                    ));
                }
            };
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

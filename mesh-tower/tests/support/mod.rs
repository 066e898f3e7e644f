//! Test upstreams: real hyper servers on 127.0.0.1 that say who they are and echo what they
//! received.
#![allow(dead_code)]

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_tower::{MeshService, MeshStack};
use tokio::net::TcpListener;

/// Starts an upstream named `name` on an ephemeral loopback port. It answers 200 with body
/// `name` and headers `x-upstream: name`, `x-path` (path and query it got), `x-host` (its Host),
/// and `x-echo-<h>` for every request header `h`. `GET /status/<code>` answers that status;
/// `GET /delay/<ms>` waits first.
pub async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: Request<Incoming>| handle(name, req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn handle(
    name: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/") {
        status = code
            .parse()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::OK);
    }
    if let Some(ms) = path.strip_prefix("/delay/").and_then(|ms| ms.parse().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut res = Response::builder()
        .status(status)
        .header("x-upstream", name)
        .header(
            "x-path",
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )
        .header("x-version", format!("{:?}", req.version()));
    if let Some(host) = req.headers().get(http::header::HOST) {
        res = res.header("x-host", host);
    }
    for (k, v) in req.headers() {
        res = res.header(format!("x-echo-{k}"), v);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = if body.is_empty() {
        Bytes::from(name)
    } else {
        body
    };
    Ok(res.body(Full::new(text)).unwrap())
}

/// A loopback port nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// The outbound stack over `yaml`, as a client in namespace `default`.
pub fn stack(yaml: &str) -> MeshService<Full<Bytes>> {
    let report = mesh_config::Loader::new().check_str("test.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().unwrap();
    MeshStack::outbound(&mesh).namespace("default").build()
}

/// Sends `req` through `svc`; returns status, headers and body text.
pub async fn send(
    svc: &MeshService<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, String) {
    use tower::ServiceExt;
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

pub fn get(uri: &str) -> http::request::Builder {
    Request::get(uri)
}

/// A ServiceEntry `host` with one STATIC endpoint per `(addr, version)`.
pub fn service_entry(host: &str, port: u16, endpoints: &[(SocketAddr, &str)]) -> String {
    let mut y = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {}}}\nspec:\n  hosts: [{host}]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  endpoints:\n",
        host.replace('.', "-")
    );
    for (addr, version) in endpoints {
        y.push_str(&format!(
            "  - {{address: {}, ports: {{http: {}}}, labels: {{version: {version}}}}}\n",
            addr.ip(),
            addr.port()
        ));
    }
    y.push_str("---\n");
    y
}

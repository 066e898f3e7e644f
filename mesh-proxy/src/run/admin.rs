//! The admin server: `/ready`, `/healthz`, `/config_dump`, `/metrics` (Prometheus text).

use std::sync::{Arc, atomic::Ordering};

use http::{Method, Response, StatusCode, header::CONTENT_TYPE};
use mesh_tower::body::{self, MeshBody};
use serde_json::json;

use super::{State, listeners::Handler};

pub(crate) fn handler(state: Arc<State>) -> Handler {
    Arc::new(move |req, _peer, _local| {
        let res = respond(&state, req.method(), req.uri().path());
        Box::pin(async move { res })
    })
}

fn text(status: StatusCode, body: &'static str) -> Response<MeshBody> {
    let mut res = Response::new(body::full(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, "text/plain; charset=utf-8".parse().unwrap());
    res
}

fn respond(state: &State, method: &Method, path: &str) -> Response<MeshBody> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/ready" if state.ready.load(Ordering::Acquire) => text(StatusCode::OK, "ready\n"),
        "/ready" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/config_dump" => {
            let mut res = Response::new(body::full(config_dump(state)));
            res.headers_mut()
                .insert(CONTENT_TYPE, "application/json".parse().unwrap());
            res
        }
        "/metrics" => {
            let mut res = Response::new(body::full(super::metrics::render()));
            res.headers_mut().insert(
                CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8".parse().unwrap(),
            );
            res
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn config_dump(state: &State) -> String {
    let mesh = state.handle.snapshot();
    let virtual_hosts: Vec<_> = mesh
        .virtual_hosts
        .iter()
        .map(|vh| {
            json!({
                "gateway": vh.gateway,
                "hosts": vh.hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                "virtual_service": vh.virtual_service,
            })
        })
        .collect();
    let services: Vec<_> = mesh
        .services
        .iter()
        .map(|s| {
            json!({
                "hostname": s.hostname.to_string(),
                "namespace": s.namespace,
                "ports": s.ports.iter().map(|p| p.number).collect::<Vec<_>>(),
                "endpoints": s.endpoints.len(),
            })
        })
        .collect();
    let reload = state
        .reload
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dump = json!({
        "version": mesh.version,
        "files": reload.files().iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "watching": reload.watching,
        "last_reload": reload.last_reload_json(),
        "last_reload_error": reload.last_reload_error_json(),
        "virtual_hosts": virtual_hosts,
        "services": services,
    });
    drop(reload);
    let mut s = serde_json::to_string_pretty(&dump).expect("json");
    s.push('\n');
    s
}

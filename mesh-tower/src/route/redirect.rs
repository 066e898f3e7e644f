//! `redirect` and `directResponse`: answered by the router itself.

use http::{HeaderValue, Request, Response, header};
use mesh_core::{
    host::split_authority,
    model::{DirectResponse, Redirect, RedirectPort},
};

use crate::body::{self, MeshBody};

/// The redirect response: `Location` built from the request with the redirect's parts
/// replacing scheme, authority, port and path (Istio replaces the whole path, and keeps the
/// query unless the new `uri` has one).
pub(crate) fn response<B>(
    r: &Redirect,
    req: &Request<B>,
    authority: &str,
    request_port: u16,
) -> Response<MeshBody> {
    let scheme = r
        .scheme
        .clone()
        .or_else(|| req.uri().scheme_str().map(str::to_owned))
        .unwrap_or_else(|| "http".to_owned());
    let (req_host, req_port) = split_authority(authority);
    let host = match &r.authority {
        Some(a) => split_authority(a).0.to_owned(),
        None => req_host.to_owned(),
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = match r.port {
        Some(RedirectPort::Port(p)) => Some(p),
        Some(RedirectPort::FromProtocolDefault) => None,
        Some(RedirectPort::FromRequestPort) => Some(request_port),
        // Without port settings the authority keeps the port it had (the new authority's, or
        // the request's unless the scheme changed).
        None => match &r.authority {
            Some(a) => split_authority(a).1,
            None if r.scheme.is_some() => None,
            None => req_port,
        },
    }
    .filter(|p| *p != default_port);
    let path_and_query = match &r.uri {
        Some(uri) if uri.contains('?') => uri.clone(),
        Some(uri) => match req.uri().query() {
            Some(q) => format!("{uri}?{q}"),
            None => uri.clone(),
        },
        None => req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into()),
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let location = match port {
        Some(p) => format!("{scheme}://{host}:{p}{path_and_query}"),
        None => format!("{scheme}://{host}{path_and_query}"),
    };
    let mut res = Response::new(body::empty());
    *res.status_mut() = r.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

pub(crate) fn direct(d: &DirectResponse) -> Response<MeshBody> {
    let mut res = Response::new(match &d.body {
        Some(b) => body::full(b.clone()),
        None => body::empty(),
    });
    *res.status_mut() = d.status;
    if d.body.is_some() {
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    res
}

//! `rewrite`: uri (the matched prefix, or the whole path), `uriRegexRewrite`, authority.

use http::{HeaderValue, Request, Uri, header::HOST, uri::PathAndQuery};
use mesh_core::model::Rewrite;

use crate::body::BoxError;

pub(crate) fn apply<B>(
    rw: &Rewrite,
    matched_prefix: Option<&str>,
    req: &mut Request<B>,
) -> Result<(), BoxError> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let new_path = if let Some(uri) = &rw.uri {
        // Istio: with a prefix match, the matched prefix is replaced; otherwise the whole path.
        match matched_prefix {
            Some(prefix) if path.starts_with(prefix) => {
                Some(format!("{uri}{}", &path[prefix.len()..]))
            }
            _ => Some(uri.clone()),
        }
    } else {
        rw.uri_regex
            .as_ref()
            .map(|(re, with)| re.replace_all(&path, with.as_str()).into_owned())
    };
    if let Some(mut p) = new_path {
        if !p.starts_with('/') {
            p.insert(0, '/');
        }
        let pq: PathAndQuery = match &query {
            Some(q) => format!("{p}?{q}").parse()?,
            None => p.parse()?,
        };
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq);
        *req.uri_mut() = Uri::from_parts(parts)?;
    }
    if let Some(authority) = &rw.authority {
        req.headers_mut()
            .insert(HOST, HeaderValue::from_str(authority)?);
        if req.uri().authority().is_some() {
            *req.uri_mut() = super::with_authority(req.uri(), authority)?;
        }
    }
    Ok(())
}

//! `details`: the book's details (Istio's is a Ruby WEBrick server).
//!
//! - `GET /details/<id>`: the details JSON (id, author, year, type, pages, publisher,
//!   language, ISBN-10, ISBN-13); 400 `{"error": "please provide numeric product id"}` for a
//!   non-numeric id.
//! - `GET /health`: `{"status": "Details is healthy"}`.
//!
//! Istio's details can fetch the book from Google Books (`ENABLE_EXTERNAL_BOOK_SERVICE`), for
//! the egress tasks; this one always answers from memory.

use std::{
    future::{Ready, ready},
    task::{Context, Poll},
};

use http::{Method, Request, Response, StatusCode};
use mesh_tower::body::{BoxError, MeshBody};
use serde_json::json;
use tower::Service;

use super::{
    model::BookDetails,
    wire::{json, json_error, method_not_allowed, not_found, product_id},
};

/// The details service. Stateless: clones are free.
#[derive(Debug, Clone, Copy, Default)]
pub struct Details;

impl Details {
    pub fn new() -> Self {
        Details
    }
}

/// The details of book `id` (every id is the same paperback, as in Istio's sample).
pub fn book_details(id: i64) -> BookDetails {
    BookDetails {
        id,
        author: "William Shakespeare".into(),
        year: 1595,
        kind: "paperback".into(),
        pages: 200,
        publisher: "PublisherA".into(),
        language: "English".into(),
        isbn_10: "1234567890".into(),
        isbn_13: "123-1234567890".into(),
    }
}

fn handle(req: &Request<MeshBody>) -> Response<MeshBody> {
    let path = req.uri().path();
    let known = path == "/health" || product_id(path, "/details/").is_some();
    if !known {
        return not_found();
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return method_not_allowed("GET, HEAD");
    }
    if path == "/health" {
        return json(StatusCode::OK, &json!({"status": "Details is healthy"}));
    }
    match product_id(path, "/details/") {
        Some(Ok(id)) => json(StatusCode::OK, &book_details(id)),
        _ => json_error(StatusCode::BAD_REQUEST, "please provide numeric product id"),
    }
}

impl Service<Request<MeshBody>> for Details {
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = Ready<Result<Response<MeshBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        ready(Ok(handle(&req)))
    }
}

//! `ratings`: the stars each reviewer gave (Istio's is a Node.js server; its v1 keeps ratings
//! in memory, as this one does).
//!
//! - `GET /ratings/<id>`: `{"id": <id>, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}`, or the
//!   ratings last posted for that id.
//! - `POST /ratings/<id>` with a JSON object of reviewer to stars: stores them for the id and
//!   answers as a GET would.
//! - 400 `{"error": "please provide numeric product ID"}` for a non-numeric id.
//! - `GET /health`: `{"status": "Ratings is healthy"}`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{Method, Request, Response, StatusCode};
use mesh_tower::body::{BoxError, MeshBody};
use serde_json::json;
use tower::Service;

use super::{
    ResponseFuture,
    model::ProductRatings,
    wire::{json, json_error, method_not_allowed, not_found, product_id, read_body},
};

/// Posted ratings are a handful of names and numbers.
const MAX_POST: usize = 64 * 1024;

/// The ratings service. Clones share the posted ratings.
#[derive(Debug, Clone, Default)]
pub struct Ratings {
    posted: Arc<Mutex<HashMap<i64, BTreeMap<String, u32>>>>,
}

impl Ratings {
    pub fn new() -> Self {
        Self::default()
    }

    /// The ratings of product `id`: the posted ones, else Reviewer1 5 stars and Reviewer2 4.
    pub fn ratings(&self, id: i64) -> ProductRatings {
        let posted = self.lock().get(&id).cloned();
        ProductRatings {
            id,
            ratings: posted.unwrap_or_else(|| {
                BTreeMap::from([("Reviewer1".into(), 5), ("Reviewer2".into(), 4)])
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, BTreeMap<String, u32>>> {
        // A panic while holding the lock cannot leave the map half-written: insert is atomic.
        self.posted.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(self, req: Request<MeshBody>) -> Response<MeshBody> {
        let path = req.uri().path().to_owned();
        if path == "/health" {
            return json(StatusCode::OK, &json!({"status": "Ratings is healthy"}));
        }
        let Some(id) = product_id(&path, "/ratings/") else {
            return not_found();
        };
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD && method != Method::POST {
            return method_not_allowed("GET, HEAD, POST");
        }
        let Ok(id) = id else {
            return json_error(StatusCode::BAD_REQUEST, "please provide numeric product ID");
        };
        if method == Method::POST {
            let posted = match read_body(req.into_body(), MAX_POST).await {
                Ok(bytes) => serde_json::from_slice::<BTreeMap<String, u32>>(&bytes).ok(),
                Err(_) => None,
            };
            let Some(posted) = posted else {
                return json_error(StatusCode::BAD_REQUEST, "please provide valid ratings JSON");
            };
            self.lock().insert(id, posted);
        }
        json(StatusCode::OK, &self.ratings(id))
    }
}

impl Service<Request<MeshBody>> for Ratings {
    type Response = Response<MeshBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(req).await) })
    }
}

//! `reviews`: two reviews of the book, in three versions (Istio's is a Java Liberty server,
//! one image per version):
//!
//! | version | ratings | stars |
//! |---|---|---|
//! | v1 | not called | none |
//! | v2 | called, 10 s client timeout | black |
//! | v3 | called, 2.5 s client timeout | red |
//!
//! - `GET /reviews/<id>`: `{"id": "<id>", "podname": "reviews-v2", "clustername": null,
//!   "reviews": [{"reviewer": "Reviewer1", "text": "...", "rating": {"stars": 5, "color":
//!   "black"}}, ...]}`. When ratings fails (an error status, a timeout, no connection) each
//!   rating is `{"error": "Ratings service is currently unavailable"}`, as in Istio.
//! - `GET /health`: `{"status": "Reviews is healthy"}`.
//!
//! v2 and v3 call `http://ratings:9080/ratings/<id>` with the incoming request's
//! [`FORWARDED_HEADERS`](super::FORWARDED_HEADERS), `end-user` included, so that a rule on
//! ratings can match the signed-in user.

use std::{
    fmt,
    future::Future,
    str::FromStr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use http::{Method, Request, Response, StatusCode};
use mesh_tower::body::{BoxError, MeshBody};
use serde_json::json;
use tower::Service;

use super::{
    Client, ResponseFuture,
    model::{BookReviews, ProductRatings, Rating, Review},
    wire::{forward_headers, get_json, json, method_not_allowed, not_found, product_id},
};

/// What a review says when ratings gave no answer.
pub const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

/// Where v2 and v3 get the stars.
pub const RATINGS_URL: &str = "http://ratings:9080/ratings";

/// A version of the reviews service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
}

impl Version {
    pub const ALL: [Version; 3] = [Version::V1, Version::V2, Version::V3];

    /// `v1`, `v2`, `v3`: the `version` label of the workload.
    pub fn label(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
            Version::V3 => "v3",
        }
    }

    /// The colour of the stars (Istio's `ENABLE_RATINGS` and `STAR_COLOR`); `None` for v1,
    /// which does not call ratings.
    pub fn star_color(self) -> Option<&'static str> {
        match self {
            Version::V1 => None,
            Version::V2 => Some("black"),
            Version::V3 => Some("red"),
        }
    }

    /// How long this version waits for ratings: Istio's reviews sets 10 s for black stars and
    /// 2.5 s for red ones (its connect and receive timeouts). The difference is what the
    /// fault injection task's 7 s delay shows.
    pub fn ratings_timeout(self) -> Duration {
        match self {
            Version::V3 => Duration::from_millis(2500),
            _ => Duration::from_secs(10),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Version::ALL
            .into_iter()
            .find(|v| v.label() == s)
            .ok_or_else(|| format!("no reviews version {s:?}: the versions are v1, v2 and v3"))
    }
}

/// The reviews service of one version. Clones are cheap (the client is a boxed stack of
/// shared parts).
#[derive(Clone)]
pub struct Reviews {
    version: Version,
    podname: Arc<str>,
    ratings: Client,
}

impl fmt::Debug for Reviews {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reviews")
            .field("version", &self.version)
            .field("podname", &self.podname)
            .finish()
    }
}

impl Reviews {
    /// Reviews `version`, calling ratings through `client` (v1 never calls it).
    pub fn new(version: Version, client: Client) -> Self {
        Reviews {
            version,
            podname: format!("reviews-{version}").into(),
            ratings: client,
        }
    }

    pub fn version(&self) -> Version {
        self.version
    }

    /// The reviews of product `id`, with the ratings fetched by v2 and v3 (`incoming` are the
    /// headers of the request being served).
    pub fn reviews(
        &self,
        id: i64,
        incoming: &http::HeaderMap,
    ) -> impl Future<Output = BookReviews> + Send + 'static {
        let (version, podname, client) = (self.version, self.podname.clone(), self.ratings.clone());
        let headers = forward_headers(incoming, &[]);
        async move {
            let ratings = match version.star_color() {
                None => None,
                Some(color) => {
                    let url = format!("{RATINGS_URL}/{id}");
                    let fetched =
                        get_json::<ProductRatings>(client, url, headers, version.ratings_timeout())
                            .await;
                    if let Err(e) = &fetched {
                        tracing::info!(target: "bookinfo::reviews", %version, "ratings: {e}");
                    }
                    Some((color, fetched.ok()))
                }
            };
            let rating = |reviewer: &str| {
                ratings.as_ref().map(|(color, fetched)| {
                    match fetched.as_ref().and_then(|r| r.ratings.get(reviewer)) {
                        Some(stars) => Rating::Stars {
                            stars: *stars,
                            color: (*color).to_owned(),
                        },
                        None => Rating::Error {
                            error: RATINGS_UNAVAILABLE.to_owned(),
                        },
                    }
                })
            };
            BookReviews {
                id: id.to_string(),
                podname: podname.to_string(),
                clustername: None,
                reviews: vec![
                    Review {
                        reviewer: "Reviewer1".into(),
                        text: "An extremely entertaining play by Shakespeare. The slapstick \
                               humour is refreshing!"
                            .into(),
                        rating: rating("Reviewer1"),
                    },
                    Review {
                        reviewer: "Reviewer2".into(),
                        text: "Absolutely fun and entertaining. The play lacks thematic depth \
                               when compared to other plays by Shakespeare."
                            .into(),
                        rating: rating("Reviewer2"),
                    },
                ],
            }
        }
    }

    async fn handle(self, req: Request<MeshBody>) -> Response<MeshBody> {
        let path = req.uri().path();
        if path == "/health" {
            return json(StatusCode::OK, &json!({"status": "Reviews is healthy"}));
        }
        let Some(id) = product_id(path, "/reviews/") else {
            return not_found();
        };
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        match id {
            Ok(id) => json(StatusCode::OK, &self.reviews(id, req.headers()).await),
            Err(()) => super::wire::json_error(
                StatusCode::BAD_REQUEST,
                "please provide numeric product id",
            ),
        }
    }
}

impl Service<Request<MeshBody>> for Reviews {
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

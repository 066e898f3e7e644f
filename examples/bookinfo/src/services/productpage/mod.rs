//! `productpage`: the store's page, and the API behind it (Istio's is a Python Flask app).
//!
//! | request | answer |
//! |---|---|
//! | `GET /productpage` | the HTML page "Simple Bookstore App": the book, its details (from details) and its reviews (from reviews), or an error message in place of each |
//! | `POST /login` (form `username`) | sets the `user` cookie and goes back (302 to the `Referer`, else `/productpage`) |
//! | `GET /logout` | clears the cookie and goes back |
//! | `GET /api/v1/products` | the catalogue, JSON |
//! | `GET /api/v1/products/<id>` | details' answer, with its status |
//! | `GET /api/v1/products/<id>/reviews`, `.../ratings` | reviews' or ratings' answer |
//! | `GET /health` | `Product page is healthy` |
//! | `GET /`, `/index.html` | a page naming the services |
//! | `GET /static/...` | the page's stylesheet |
//!
//! Calls to details and ratings time out after 3 s; calls to reviews after 3 s too and are
//! tried twice (Istio's productpage loops twice "for illustration in fault injection task":
//! a 7 s delay on ratings becomes a 6 s page with "Sorry, product reviews are currently
//! unavailable for this book.").
//!
//! The signed-in user travels as the `end-user` header on the calls to details and reviews,
//! which is what the routing rules of Istio's tasks match on (`headers: end-user: exact:
//! jason`). Istio's productpage keeps the user in Flask's signed session cookie; this one keeps
//! it in a plain `user` cookie (like earlier versions of Istio's), because there is no secret to
//! sign with and a demo login proves nothing anyway: any client can send any `end-user`.

mod page;
mod session;

#[cfg(test)]
mod tests;

use std::{
    future::Future,
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use mesh_tower::body::{BoxError, MeshBody};
use tower::Service;

use super::{
    CallError, Client, ResponseFuture,
    model::{BookDetails, BookReviews, ErrorBody, products},
    wire::{
        forward_headers, get_json, json, json_error, method_not_allowed, not_found, read_body,
        respond,
    },
};

pub use session::USER_COOKIE;

/// How long productpage waits for each call (Istio's `timeout=3.0`).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How many times productpage asks reviews before giving up (Istio's `for _ in range(2)`).
pub const REVIEWS_TRIES: usize = 2;

pub const DETAILS_UNAVAILABLE: &str =
    "Sorry, product details are currently unavailable for this book.";
pub const REVIEWS_UNAVAILABLE: &str =
    "Sorry, product reviews are currently unavailable for this book.";
pub const RATINGS_UNAVAILABLE: &str =
    "Sorry, product ratings are currently unavailable for this book.";

pub const DETAILS_URL: &str = "http://details:9080/details";
pub const REVIEWS_URL: &str = "http://reviews:9080/reviews";
pub const RATINGS_URL: &str = "http://ratings:9080/ratings";

/// The sign-in form is a name and a password.
const MAX_FORM: usize = 16 * 1024;

/// The productpage service. Clones are cheap (the client is a boxed stack of shared parts).
#[derive(Clone)]
pub struct ProductPage {
    client: Client,
}

impl std::fmt::Debug for ProductPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductPage").finish_non_exhaustive()
    }
}

/// What a call for the page gave: the document, or the status and message to show instead.
pub type Fetched<T> = Result<T, (StatusCode, ErrorBody)>;

// The calls return futures that own a clone of the client: the mesh's stack is `Send` but not
// `Sync`, so no future may hold a reference to it across an await.
impl ProductPage {
    /// productpage, calling details, reviews and ratings through `client`.
    pub fn new(client: Client) -> Self {
        ProductPage { client }
    }

    /// The headers for the calls made while serving `incoming`: the forwarded ones, and the
    /// signed-in user as `end-user` (never an `end-user` the browser sent).
    pub fn call_headers(incoming: &HeaderMap) -> HeaderMap {
        let mut headers = forward_headers(incoming, &["end-user"]);
        if let Some(value) = session::user(incoming).and_then(|u| HeaderValue::from_str(&u).ok()) {
            headers.insert(HeaderName::from_static("end-user"), value);
        }
        headers
    }

    /// details' answer for product `id`.
    pub fn details(
        &self,
        id: i64,
        headers: HeaderMap,
    ) -> impl Future<Output = Fetched<BookDetails>> + Send + 'static {
        let client = self.client.clone();
        async move {
            let url = format!("{DETAILS_URL}/{id}");
            get_json(client, url, headers, CALL_TIMEOUT)
                .await
                .map_err(|e| failed(e, DETAILS_UNAVAILABLE))
        }
    }

    /// reviews' answer for product `id`, asked up to [`REVIEWS_TRIES`] times.
    pub fn reviews(
        &self,
        id: i64,
        headers: HeaderMap,
    ) -> impl Future<Output = Fetched<BookReviews>> + Send + 'static {
        let client = self.client.clone();
        async move {
            let url = format!("{REVIEWS_URL}/{id}");
            let mut last = None;
            for _ in 0..REVIEWS_TRIES {
                match get_json(client.clone(), url.clone(), headers.clone(), CALL_TIMEOUT).await {
                    Ok(reviews) => return Ok(reviews),
                    Err(e) => last = Some(e),
                }
            }
            Err(failed(
                last.expect("REVIEWS_TRIES is at least 1"),
                REVIEWS_UNAVAILABLE,
            ))
        }
    }

    /// ratings' answer for product `id`, as it is.
    pub fn ratings(
        &self,
        id: i64,
        headers: HeaderMap,
    ) -> impl Future<Output = Fetched<serde_json::Value>> + Send + 'static {
        let client = self.client.clone();
        async move {
            let url = format!("{RATINGS_URL}/{id}");
            get_json(client, url, headers, CALL_TIMEOUT)
                .await
                .map_err(|e| failed(e, RATINGS_UNAVAILABLE))
        }
    }

    async fn handle(self, req: Request<MeshBody>) -> Response<MeshBody> {
        let path = req.uri().path().to_owned();
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        match path.as_str() {
            "/" | "/index.html" if get => html(page::index()),
            "/health" if get => respond(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "Product page is healthy",
            ),
            "/login" if req.method() == Method::POST => login(req).await,
            "/logout" if get => session::logout(req.headers()),
            "/productpage" if get => self.page(req.headers().clone()).await,
            "/api/v1/products" if get => json(StatusCode::OK, &products()),
            page::STYLESHEET_PATH if get => {
                respond(StatusCode::OK, "text/css; charset=utf-8", page::STYLESHEET)
            }
            "/"
            | "/index.html"
            | "/health"
            | "/logout"
            | "/productpage"
            | "/api/v1/products"
            | page::STYLESHEET_PATH => method_not_allowed("GET, HEAD"),
            "/login" => method_not_allowed("POST"),
            _ => {
                let (get, headers) = (get, req.headers().clone());
                self.api(get, headers, &path)
                    .await
                    .unwrap_or_else(not_found)
            }
        }
    }

    /// `/api/v1/products/<id>[/reviews|/ratings]`; `None` for any other path.
    async fn api(self, get: bool, incoming: HeaderMap, path: &str) -> Option<Response<MeshBody>> {
        let rest = path.strip_prefix("/api/v1/products/")?;
        let (id, what) = match rest.split_once('/') {
            Some((id, what @ ("reviews" | "ratings"))) => (id, what),
            Some(_) => return None,
            None => (rest, "details"),
        };
        if !get {
            return Some(method_not_allowed("GET, HEAD"));
        }
        let Ok(id) = id.parse::<i64>() else {
            return Some(json_error(
                StatusCode::BAD_REQUEST,
                "please provide numeric product id",
            ));
        };
        let headers = Self::call_headers(&incoming);
        Some(match what {
            "reviews" => answer(self.reviews(id, headers).await),
            "ratings" => answer(self.ratings(id, headers).await),
            _ => answer(self.details(id, headers).await),
        })
    }

    /// The page: product 0, its details, then its reviews (one after the other, as Istio's).
    async fn page(self, incoming: HeaderMap) -> Response<MeshBody> {
        let headers = Self::call_headers(&incoming);
        let products = products();
        let product = &products[0];
        let details = self.details(product.id, headers.clone()).await;
        let reviews = self.reviews(product.id, headers).await;
        let user = session::user(&incoming);
        html(page::render(&page::Page {
            product,
            details: details.as_ref().map_err(|(_, e)| e.error.as_str()),
            reviews: reviews.as_ref().map_err(|(_, e)| e.error.as_str()),
            user: user.as_deref(),
        }))
    }
}

/// `POST /login`: the form's (or the query's) `username`.
async fn login(req: Request<MeshBody>) -> Response<MeshBody> {
    let (parts, body) = req.into_parts();
    let form = match read_body(body, MAX_FORM).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain; charset=utf-8",
                "The sign-in form is too large.\n",
            );
        }
    };
    let username = session::form_value(&form, "username")
        .or_else(|| session::form_value(parts.uri.query()?.as_bytes(), "username"));
    session::login(&parts.headers, username.as_deref())
}

/// The error document for a failed call, with the status Istio's productpage reports.
fn failed(e: CallError, message: &str) -> (StatusCode, ErrorBody) {
    tracing::info!(target: "bookinfo::productpage", "{e}");
    (e.status(), ErrorBody::new(message))
}

/// An API answer: the document with 200, or the error with the failed call's status.
fn answer<T: serde::Serialize>(fetched: Fetched<T>) -> Response<MeshBody> {
    match fetched {
        Ok(doc) => json(StatusCode::OK, &doc),
        Err((status, error)) => json(status, &error),
    }
}

fn html(page: String) -> Response<MeshBody> {
    let mut res = respond(StatusCode::OK, "text/html; charset=utf-8", page);
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

impl Service<Request<MeshBody>> for ProductPage {
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

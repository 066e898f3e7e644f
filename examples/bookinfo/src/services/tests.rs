use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use mesh_tower::body::{self, MeshBody};
use serde_json::{Value, json};
use tower::{Service, ServiceExt};

use super::{
    Client, client,
    details::Details,
    model::{BookReviews, Rating},
    ratings::Ratings,
    reviews::{RATINGS_UNAVAILABLE, Reviews, Version},
};

pub(crate) async fn call<S>(svc: S, req: Request<MeshBody>) -> (StatusCode, HeaderMap, String)
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>>,
    S::Error: std::fmt::Debug,
{
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

pub(crate) fn get(uri: &str) -> Request<MeshBody> {
    Request::get(uri).body(body::empty()).unwrap()
}

/// The URI and headers of each request a test client received.
pub(crate) type Seen = Arc<Mutex<Vec<(String, HeaderMap)>>>;

/// A client that answers every request with `status` and `body`, and records the requests'
/// URIs and headers.
pub(crate) fn recording(status: StatusCode, body: &'static str) -> (Client, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let svc = tower::service_fn(move |req: Request<MeshBody>| {
        log.lock()
            .unwrap()
            .push((req.uri().to_string(), req.headers().clone()));
        async move {
            let mut res = Response::new(body::full(body));
            *res.status_mut() = status;
            Ok::<_, Infallible>(res)
        }
    });
    (client(svc), seen)
}

/// A client that never answers.
fn silent() -> Client {
    client(tower::service_fn(|_req: Request<MeshBody>| async {
        std::future::pending::<Result<Response<MeshBody>, Infallible>>().await
    }))
}

const RATINGS_JSON: &str = r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#;

#[tokio::test]
async fn details_answers_the_book_with_istios_fields() {
    let (status, headers, text) = call(Details::new(), get("/details/0")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v,
        json!({
            "id": 0, "author": "William Shakespeare", "year": 1595, "type": "paperback",
            "pages": 200, "publisher": "PublisherA", "language": "English",
            "ISBN-10": "1234567890", "ISBN-13": "123-1234567890"
        })
    );
    let (status, _, text) = call(Details::new(), get("/details/abc")).await;
    assert_eq!(status, 400);
    assert_eq!(text, r#"{"error":"please provide numeric product id"}"#);
    assert_eq!(call(Details::new(), get("/details")).await.0, 404);
    assert_eq!(call(Details::new(), get("/health")).await.0, 200);
    let post = Request::post("/details/0").body(body::empty()).unwrap();
    assert_eq!(call(Details::new(), post).await.0, 405);
}

#[tokio::test]
async fn ratings_answers_two_reviewers_and_keeps_what_is_posted() {
    let ratings = Ratings::new();
    let (status, _, text) = call(ratings.clone(), get("/ratings/0")).await;
    assert_eq!(status, 200);
    assert_eq!(text, RATINGS_JSON);

    let post = Request::post("/ratings/7")
        .body(body::full(r#"{"Reviewer1":1,"Reviewer2":2}"#))
        .unwrap();
    let (status, _, text) = call(ratings.clone(), post).await;
    assert_eq!(status, 200);
    assert_eq!(text, r#"{"id":7,"ratings":{"Reviewer1":1,"Reviewer2":2}}"#);
    // Kept for that id, and only for it.
    assert_eq!(
        call(ratings.clone(), get("/ratings/7")).await.2,
        r#"{"id":7,"ratings":{"Reviewer1":1,"Reviewer2":2}}"#
    );
    assert_eq!(
        call(ratings.clone(), get("/ratings/0")).await.2,
        RATINGS_JSON
    );

    let bad = Request::post("/ratings/7")
        .body(body::full("stars!"))
        .unwrap();
    assert_eq!(call(ratings.clone(), bad).await.0, 400);
    assert_eq!(call(ratings.clone(), get("/ratings/x")).await.0, 400);
    assert_eq!(call(ratings, get("/elsewhere")).await.0, 404);
}

async fn reviews_of(version: Version, ratings: Client, req: Request<MeshBody>) -> BookReviews {
    let (status, _, text) = call(Reviews::new(version, ratings), req).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn reviews_v1_shows_no_stars_and_never_calls_ratings() {
    let (ratings, seen) = recording(StatusCode::OK, RATINGS_JSON);
    let r = reviews_of(Version::V1, ratings, get("/reviews/0")).await;
    assert_eq!(r.podname, "reviews-v1");
    assert_eq!(r.id, "0");
    assert_eq!(r.reviews.len(), 2);
    assert!(r.reviews.iter().all(|r| r.rating.is_none()));
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn reviews_v2_and_v3_colour_the_stars_ratings_gives() {
    for (version, color) in [(Version::V2, "black"), (Version::V3, "red")] {
        let (ratings, seen) = recording(StatusCode::OK, RATINGS_JSON);
        let r = reviews_of(version, ratings, get("/reviews/0")).await;
        assert_eq!(r.podname, format!("reviews-{version}"));
        let stars: Vec<_> = r
            .reviews
            .iter()
            .map(|r| r.rating.clone().unwrap())
            .collect();
        assert_eq!(
            stars,
            [
                Rating::Stars {
                    stars: 5,
                    color: color.into()
                },
                Rating::Stars {
                    stars: 4,
                    color: color.into()
                },
            ]
        );
        assert_eq!(seen.lock().unwrap()[0].0, "http://ratings:9080/ratings/0");
    }
}

#[tokio::test]
async fn reviews_passes_on_the_trace_and_user_headers_only() {
    let (ratings, seen) = recording(StatusCode::OK, RATINGS_JSON);
    let req = Request::get("/reviews/0")
        .header("x-request-id", "req-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7")
        .header("end-user", "jason")
        .header("cookie", "user=jason")
        .header("x-internal-secret", "not for ratings")
        .body(body::empty())
        .unwrap();
    reviews_of(Version::V2, ratings, req).await;
    let headers = &seen.lock().unwrap()[0].1;
    assert_eq!(headers["x-request-id"], "req-1");
    assert_eq!(
        headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(headers["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(headers["end-user"], "jason");
    assert_eq!(headers["cookie"], "user=jason");
    assert!(headers.get("x-internal-secret").is_none());
}

#[tokio::test]
async fn reviews_says_ratings_is_unavailable_when_it_fails() {
    let (ratings, _) = recording(StatusCode::INTERNAL_SERVER_ERROR, "fault filter abort");
    let r = reviews_of(Version::V2, ratings, get("/reviews/0")).await;
    for review in &r.reviews {
        assert_eq!(
            review.rating,
            Some(Rating::Error {
                error: RATINGS_UNAVAILABLE.into()
            })
        );
    }
    // The document as Istio's reviews writes it.
    let text = serde_json::to_string(&r.reviews[0].rating).unwrap();
    assert_eq!(
        text,
        r#"{"error":"Ratings service is currently unavailable"}"#
    );
}

#[tokio::test(start_paused = true)]
async fn reviews_v3_gives_up_on_ratings_after_2_5_s_and_v2_after_10_s() {
    for (version, limit) in [
        (Version::V3, Duration::from_millis(2500)),
        (Version::V2, Duration::from_secs(10)),
    ] {
        let start = tokio::time::Instant::now();
        let r = reviews_of(version, silent(), get("/reviews/0")).await;
        assert_eq!(start.elapsed(), limit, "{version}");
        assert!(matches!(r.reviews[0].rating, Some(Rating::Error { .. })));
    }
}

#[test]
fn versions_parse_from_their_labels() {
    assert_eq!("v3".parse::<Version>(), Ok(Version::V3));
    assert!(
        "v4".parse::<Version>()
            .unwrap_err()
            .contains("v1, v2 and v3")
    );
}

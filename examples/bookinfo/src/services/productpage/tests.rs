use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use http::{Request, Response, StatusCode};
use mesh_tower::body::{self, BoxError, MeshBody};
use serde_json::Value;
use tower::Service;

use super::{
    DETAILS_UNAVAILABLE, ProductPage, REVIEWS_UNAVAILABLE,
    page::escape,
    session::{percent_decode, percent_encode},
};
use crate::services::{
    Client, client,
    details::Details,
    reviews::{Reviews, Version},
    tests::{Seen, call, get, recording},
};

/// How each dependency behaves in a test.
#[derive(Clone, Copy)]
enum Dep {
    /// The real service (reviews at this version, with ratings answering 5 and 4 stars).
    Real,
    Status(StatusCode),
    Silent,
}

/// An in-memory "mesh": requests to `details` and `reviews` go to `details` and `reviews`
/// (reviews at `version`), and every request's host, path and headers are recorded.
struct Deps {
    client: Client,
    seen: Seen,
    reviews_calls: Arc<AtomicUsize>,
}

fn deps(details: Dep, reviews: Dep, version: Version) -> Deps {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reviews_calls = Arc::new(AtomicUsize::new(0));
    let (ratings, _) = recording(
        StatusCode::OK,
        r#"{"id":0,"ratings":{"Reviewer1":5,"Reviewer2":4}}"#,
    );
    let reviews_svc = Reviews::new(version, ratings);
    let (log, count) = (seen.clone(), reviews_calls.clone());
    let svc = tower::service_fn(move |req: Request<MeshBody>| {
        log.lock()
            .unwrap()
            .push((req.uri().to_string(), req.headers().clone()));
        let host = req.uri().host().unwrap_or_default().to_owned();
        let dep = if host == "details" { details } else { reviews };
        if host == "reviews" {
            count.fetch_add(1, Ordering::SeqCst);
        }
        let reviews_svc = reviews_svc.clone();
        async move {
            match dep {
                // `call`, not `oneshot`: see `wire::call`.
                Dep::Real if host == "details" => Details::new().call(req).await,
                Dep::Real => reviews_svc.clone().call(req).await,
                Dep::Status(status) => {
                    let mut res = Response::new(body::full("upstream says no"));
                    *res.status_mut() = status;
                    Ok::<_, BoxError>(res)
                }
                Dep::Silent => std::future::pending().await,
            }
        }
    });
    Deps {
        client: client(svc),
        seen,
        reviews_calls,
    }
}

fn count(page: &str, needle: &str) -> usize {
    page.matches(needle).count()
}

#[tokio::test]
async fn the_page_shows_details_and_black_stars_from_reviews_v2() {
    let d = deps(Dep::Real, Dep::Real, Version::V2);
    let (status, headers, page) = call(ProductPage::new(d.client), get("/productpage")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(page.contains("<title>Simple Bookstore App</title>"));
    assert!(page.contains("The Comedy of Errors"));
    assert!(page.contains("<h4>Book Details</h4>"));
    assert!(page.contains("<td>1234567890</td><td>PublisherA</td><td>200</td>"));
    assert!(page.contains("<h4>Book Reviews</h4>"));
    // 5 + 4 filled stars, in two black groups; 1 empty star.
    assert_eq!(count(&page, "glyphicon glyphicon-star\""), 9);
    assert_eq!(count(&page, "glyphicon-star-empty"), 1);
    assert_eq!(count(&page, "<font color=\"black\">"), 2);
    assert_eq!(count(&page, "color=\"red\""), 0);
    assert_eq!(count(&page, "Reviews served by: reviews-v2"), 2);
    // The sign-in form, since nobody is signed in.
    assert!(page.contains("action=\"login\""));
    let seen = d.seen.lock().unwrap();
    let uris: Vec<_> = seen.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        uris,
        [
            "http://details:9080/details/0",
            "http://reviews:9080/reviews/0"
        ]
    );
}

#[tokio::test]
async fn red_stars_from_v3_and_none_from_v1() {
    let d = deps(Dep::Real, Dep::Real, Version::V3);
    let (_, _, page) = call(ProductPage::new(d.client), get("/productpage")).await;
    assert_eq!(count(&page, "glyphicon glyphicon-star\""), 9);
    assert_eq!(count(&page, "<font color=\"red\">"), 2);

    let d = deps(Dep::Real, Dep::Real, Version::V1);
    let (_, _, page) = call(ProductPage::new(d.client), get("/productpage")).await;
    assert_eq!(count(&page, "glyphicon"), 0);
    assert_eq!(count(&page, "Reviews served by: reviews-v1"), 2);
}

#[tokio::test]
async fn failing_details_shows_istios_message_and_the_reviews_still() {
    let d = deps(
        Dep::Status(StatusCode::SERVICE_UNAVAILABLE),
        Dep::Real,
        Version::V2,
    );
    let (status, _, page) = call(ProductPage::new(d.client), get("/productpage")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Error fetching product details"));
    assert!(page.contains(&escape(DETAILS_UNAVAILABLE)));
    assert_eq!(count(&page, "glyphicon glyphicon-star\""), 9);
}

#[tokio::test]
async fn failing_reviews_are_asked_twice_then_the_page_says_sorry() {
    let d = deps(
        Dep::Real,
        Dep::Status(StatusCode::SERVICE_UNAVAILABLE),
        Version::V2,
    );
    let (status, _, page) = call(ProductPage::new(d.client), get("/productpage")).await;
    assert_eq!(status, 200);
    assert!(page.contains("Error fetching product reviews"));
    assert!(page.contains(&escape(REVIEWS_UNAVAILABLE)));
    assert!(page.contains("<h4>Book Details</h4>"));
    assert_eq!(d.reviews_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn silent_reviews_cost_two_3_s_timeouts() {
    let d = deps(Dep::Real, Dep::Silent, Version::V2);
    let start = tokio::time::Instant::now();
    let (_, _, page) = call(ProductPage::new(d.client), get("/productpage")).await;
    assert_eq!(start.elapsed(), Duration::from_secs(6));
    assert!(page.contains(&escape(REVIEWS_UNAVAILABLE)));
}

#[tokio::test]
async fn signing_in_sets_the_cookie_and_goes_back() {
    let d = deps(Dep::Real, Dep::Real, Version::V1);
    let login = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("referer", "http://127.0.0.1:8080/productpage?x=1")
        .body(body::full("username=jason&passwd=secret"))
        .unwrap();
    let (status, headers, _) = call(ProductPage::new(d.client.clone()), login).await;
    assert_eq!(status, 302);
    assert_eq!(headers["location"], "/productpage?x=1");
    assert_eq!(headers["set-cookie"], "user=jason; Path=/; SameSite=Lax");

    // Without a Referer (or with another site's), back to the page.
    let login = Request::post("/login")
        .header("referer", "//evil.example/")
        .body(body::full("username=jason"))
        .unwrap();
    let (_, headers, _) = call(ProductPage::new(d.client.clone()), login).await;
    assert_eq!(headers["location"], "/productpage");

    let (status, headers, _) = call(ProductPage::new(d.client), get("/logout")).await;
    assert_eq!(status, 302);
    assert_eq!(
        headers["set-cookie"],
        "user=; Path=/; Max-Age=0; SameSite=Lax"
    );
}

#[tokio::test]
async fn the_signed_in_user_is_sent_as_end_user_and_shown() {
    let d = deps(Dep::Real, Dep::Real, Version::V2);
    let req = Request::get("/productpage")
        .header("cookie", "theme=dark; user=jason")
        .header("x-request-id", "abc")
        .header("end-user", "someone-else")
        .body(body::empty())
        .unwrap();
    let (_, _, page) = call(ProductPage::new(d.client), req).await;
    assert!(page.contains("Signed in as <b id=\"user\">jason</b>"));
    assert!(page.contains("href=\"logout\""));
    for (uri, headers) in d.seen.lock().unwrap().iter() {
        assert_eq!(headers["end-user"], "jason", "{uri}");
        assert_eq!(headers["x-request-id"], "abc", "{uri}");
    }
}

#[tokio::test]
async fn a_browser_cannot_pick_end_user_without_signing_in() {
    let d = deps(Dep::Real, Dep::Real, Version::V2);
    let req = Request::get("/productpage")
        .header("end-user", "jason")
        .body(body::empty())
        .unwrap();
    call(ProductPage::new(d.client), req).await;
    for (_, headers) in d.seen.lock().unwrap().iter() {
        assert!(headers.get("end-user").is_none());
    }
}

#[tokio::test]
async fn names_are_escaped_on_the_page_and_encoded_in_the_cookie() {
    let name = "<b>ja son</b>";
    let d = deps(Dep::Real, Dep::Real, Version::V1);
    let login = Request::post("/login")
        .body(body::full("username=%3Cb%3Eja+son%3C%2Fb%3E"))
        .unwrap();
    let (_, headers, _) = call(ProductPage::new(d.client.clone()), login).await;
    let cookie = headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with(&format!("user={}", percent_encode(name))));
    let value = cookie.split(';').next().unwrap().to_owned();
    let req = Request::get("/productpage")
        .header("cookie", value)
        .body(body::empty())
        .unwrap();
    let (_, _, page) = call(ProductPage::new(d.client), req).await;
    assert!(page.contains("&lt;b&gt;ja son&lt;/b&gt;"));
    assert!(!page.contains(name));
    assert_eq!(
        percent_decode(percent_encode(name).as_bytes(), false),
        name.as_bytes()
    );
}

#[tokio::test]
async fn the_api_answers_json_with_the_dependencies_status() {
    let d = deps(Dep::Real, Dep::Real, Version::V3);
    let pp = ProductPage::new(d.client);
    let (status, _, text) = call(pp.clone(), get("/api/v1/products")).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[0]["title"], "The Comedy of Errors");
    assert!(
        v[0]["descriptionHtml"]
            .as_str()
            .unwrap()
            .contains("Shakespeare")
    );

    let (status, _, text) = call(pp.clone(), get("/api/v1/products/0")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["ISBN-13"],
        "123-1234567890"
    );
    let (status, _, text) = call(pp.clone(), get("/api/v1/products/0/reviews")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["podname"],
        "reviews-v3"
    );
    assert_eq!(call(pp.clone(), get("/api/v1/products/zero")).await.0, 400);
    assert_eq!(call(pp, get("/api/v1/products/0/elsewhere")).await.0, 404);

    let d = deps(Dep::Status(StatusCode::FORBIDDEN), Dep::Real, Version::V1);
    let (status, _, text) = call(ProductPage::new(d.client), get("/api/v1/products/0")).await;
    assert_eq!(status, 403);
    assert_eq!(text, format!("{{\"error\":\"{DETAILS_UNAVAILABLE}\"}}"));
}

#[tokio::test]
async fn health_static_and_unknown_paths() {
    let d = deps(Dep::Real, Dep::Real, Version::V1);
    let pp = ProductPage::new(d.client);
    assert_eq!(
        call(pp.clone(), get("/health")).await.2,
        "Product page is healthy"
    );
    let (status, headers, _) = call(pp.clone(), get("/static/bookinfo.css")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/css; charset=utf-8");
    assert!(call(pp.clone(), get("/")).await.2.contains("productpage"));
    assert_eq!(call(pp.clone(), get("/nowhere")).await.0, 404);
    assert_eq!(call(pp.clone(), get("/login")).await.0, 405);
    let post = Request::post("/productpage").body(body::empty()).unwrap();
    assert_eq!(call(pp, post).await.0, 405);
}

//! Every scenario, end to end: Bookinfo started in-process on 127.0.0.1 port 0 with the
//! scenario's YAML, and a real HTTP client loading the page through the ingress gateway, as a
//! person would. The checks are what that person sees: whose stars and in which colour, in
//! which shares (within binomial bounds that a correct mesh misses less than once in a million
//! runs), jason's page, the fault messages and how long they take, and 403 or 429 where a
//! policy refuses.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bookinfo::{
    Bookinfo, Options, Running,
    services::{
        productpage::{DETAILS_UNAVAILABLE, REVIEWS_UNAVAILABLE},
        reviews::RATINGS_UNAVAILABLE,
    },
};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::task::JoinSet;

// === Bookinfo and a browser ===

async fn start(scenario: Option<&str>) -> Running {
    Bookinfo::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        scenario: scenario.map(str::to_owned),
        config_dir: None,
    })
    .await
    .unwrap()
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response as a person (or curl) gets it.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
    took: Duration,
}

async fn send(client: &HttpClient, req: Request<Full<Bytes>>) -> Result<Got, String> {
    let start = Instant::now();
    let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        took: start.elapsed(),
    })
}

/// `GET http://addr/path` with an optional cookie.
async fn get(client: &HttpClient, addr: SocketAddr, path: &str, cookie: Option<&str>) -> Got {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    send(client, req.body(Full::default()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The product page through the gateway; it must be there.
async fn page(client: &HttpClient, bookinfo: &Running, cookie: Option<&str>) -> Got {
    let got = get(client, bookinfo.gateway_addr(), "/productpage", cookie).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.contains("<title>Simple Bookstore App</title>"));
    got
}

/// Signs in through the gateway's `/login` with the page's form; the cookie to send.
async fn sign_in(client: &HttpClient, bookinfo: &Running, name: &str) -> String {
    let addr = bookinfo.gateway_addr();
    let req = Request::post(format!("http://{addr}/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::REFERER, format!("http://{addr}/productpage"))
        .body(Full::from(format!("username={name}&passwd=anything")))
        .unwrap();
    let got = send(client, req).await.unwrap();
    assert_eq!(got.status, 302, "{}", got.body);
    assert_eq!(got.headers[header::LOCATION], "/productpage");
    let cookie = got.headers[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

// === What the page shows ===

/// The reviews block of a page, as a person reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reviews {
    /// v1: reviews without stars.
    NoStars,
    /// v2.
    BlackStars,
    /// v3.
    RedStars,
    /// v2 or v3 without an answer from ratings: "Ratings service is currently unavailable".
    RatingsUnavailable,
    /// "Sorry, product reviews are currently unavailable for this book."
    Unavailable,
}

/// Reads the reviews block, checking that the stars and "Reviews served by" agree: v1 shows
/// none, v2 five and four black ones, v3 five and four red ones.
fn reviews(page: &str) -> Reviews {
    if page.contains(REVIEWS_UNAVAILABLE) {
        assert!(!page.contains("Reviews served by"), "{page}");
        return Reviews::Unavailable;
    }
    let served_by = ["v1", "v2", "v3"]
        .into_iter()
        .filter(|v| page.contains(&format!("Reviews served by: reviews-{v}")))
        .collect::<Vec<_>>();
    assert_eq!(served_by.len(), 1, "one version serves a page: {page}");
    let filled = page.matches("glyphicon glyphicon-star\"").count();
    let black = page.matches("<font color=\"black\">").count();
    let red = page.matches("<font color=\"red\">").count();
    let unavailable = page.matches(RATINGS_UNAVAILABLE).count();
    match served_by[0] {
        "v1" => {
            assert_eq!((filled, black, red, unavailable), (0, 0, 0, 0), "{page}");
            Reviews::NoStars
        }
        v => {
            if unavailable > 0 {
                assert_eq!((filled, black, red, unavailable), (0, 0, 0, 2), "{page}");
                return Reviews::RatingsUnavailable;
            }
            let (expect_black, expect_red) = if v == "v2" { (2, 0) } else { (0, 2) };
            assert_eq!(
                (filled, black, red),
                (9, expect_black, expect_red),
                "{page}"
            );
            if v == "v2" {
                Reviews::BlackStars
            } else {
                Reviews::RedStars
            }
        }
    }
}

/// Whether the details block shows the book (else it must show Istio's error message).
fn shows_details(page: &str) -> bool {
    if page.contains("<h4>Book Details</h4>") {
        assert!(page.contains("<td>1234567890</td>"), "{page}");
        true
    } else {
        assert!(page.contains("Error fetching product details"), "{page}");
        assert!(page.contains(DETAILS_UNAVAILABLE), "{page}");
        false
    }
}

/// Loads the page `n` times, `concurrency` at a time; how many showed each kind of reviews.
async fn tally(
    bookinfo: &Running,
    n: usize,
    concurrency: usize,
    cookie: Option<&str>,
) -> BTreeMap<Reviews, u64> {
    let client = http_client();
    let addr = bookinfo.gateway_addr();
    let cookie: Option<Arc<str>> = cookie.map(Into::into);
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut loads = JoinSet::new();
    for _ in 0..n {
        let (client, cookie, permits) = (client.clone(), cookie.clone(), permits.clone());
        loads.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let got = get(&client, addr, "/productpage", cookie.as_deref()).await;
            assert_eq!(got.status, 200, "{}", got.body);
            assert!(shows_details(&got.body));
            reviews(&got.body)
        });
    }
    let mut counts = BTreeMap::new();
    while let Some(seen) = loads.join_next().await {
        *counts.entry(seen.unwrap()).or_default() += 1;
    }
    counts
}

/// The range `[lo, hi]` a Binomial(n, p) count falls in except with probability below 10^-6
/// (each tail below 5 × 10^-7), from the exact distribution.
fn binomial_bounds(n: u64, p: f64) -> (u64, u64) {
    let ln_fact: Vec<f64> = (0..=n)
        .scan(0.0, |acc, k| {
            if k > 0 {
                *acc += (k as f64).ln();
            }
            Some(*acc)
        })
        .collect();
    let pmf = |k: u64| {
        (ln_fact[n as usize] - ln_fact[k as usize] - ln_fact[(n - k) as usize]
            + k as f64 * p.ln()
            + (n - k) as f64 * (1.0 - p).ln())
        .exp()
    };
    let tail = 5e-7;
    let (mut lo, mut below) = (0, 0.0);
    while below + pmf(lo) < tail {
        below += pmf(lo);
        lo += 1;
    }
    let (mut hi, mut above) = (n, 0.0);
    while above + pmf(hi) < tail {
        above += pmf(hi);
        hi -= 1;
    }
    (lo, hi)
}

#[test]
fn binomial_bounds_are_those_of_the_distribution() {
    // n = 200, p = 0.5: mean 100, sd 7.07; 5e-7 per tail is about 4.9 sd.
    let (lo, hi) = binomial_bounds(200, 0.5);
    assert!(
        (63..=67).contains(&lo) && (133..=137).contains(&hi),
        "{lo} {hi}"
    );
    assert_eq!(lo + hi, 200, "symmetric for p = 0.5");
    let (lo, hi) = binomial_bounds(400, 0.1);
    assert!(lo > 10 && lo < 40 && hi > 40 && hi < 75, "{lo} {hi}");
}

/// Asserts that `count` of `n` is a plausible Binomial(n, p) outcome.
fn assert_share(what: &str, count: u64, n: u64, p: f64) {
    let (lo, hi) = binomial_bounds(n, p);
    assert!(
        (lo..=hi).contains(&count),
        "{what}: {count} of {n}, expected {lo}..={hi} for a share of {p}"
    );
}

fn count(counts: &BTreeMap<Reviews, u64>, r: Reviews) -> u64 {
    counts.get(&r).copied().unwrap_or(0)
}

// === Routing ===

#[tokio::test(flavor = "multi_thread")]
async fn without_a_scenario_reviews_spread_over_v1_v2_and_v3() {
    let bookinfo = start(None).await;
    let counts = tally(&bookinfo, 60, 1, None).await;
    // A version missing from 60 loads has probability below 3 (2/3)^60 ≈ 10^-10 for any
    // balancer that spreads at all.
    for r in [Reviews::NoStars, Reviews::BlackStars, Reviews::RedStars] {
        assert!(count(&counts, r) > 0, "{r:?} never shown: {counts:?}");
    }
    assert_eq!(counts.values().sum::<u64>(), 60, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn all_v1_shows_no_stars() {
    let bookinfo = start(Some("all-v1")).await;
    let counts = tally(&bookinfo, 30, 4, None).await;
    assert_eq!(counts, BTreeMap::from([(Reviews::NoStars, 30)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn reviews_v2_v3_shows_black_and_red_stars_half_and_half() {
    let bookinfo = start(Some("reviews-v2-v3")).await;
    let counts = tally(&bookinfo, 200, 8, None).await;
    let black = count(&counts, Reviews::BlackStars);
    assert_eq!(black + count(&counts, Reviews::RedStars), 200, "{counts:?}");
    assert_share("black stars (v2)", black, 200, 0.5);
}

#[tokio::test(flavor = "multi_thread")]
async fn reviews_80_20_shows_black_stars_on_a_fifth_of_the_loads() {
    let bookinfo = start(Some("reviews-80-20")).await;
    let counts = tally(&bookinfo, 200, 8, None).await;
    let black = count(&counts, Reviews::BlackStars);
    assert_eq!(black + count(&counts, Reviews::NoStars), 200, "{counts:?}");
    assert_share("black stars (v2)", black, 200, 0.2);
}

#[tokio::test(flavor = "multi_thread")]
async fn reviews_90_10_shows_black_stars_on_a_tenth_of_the_loads() {
    let bookinfo = start(Some("reviews-90-10")).await;
    let counts = tally(&bookinfo, 400, 8, None).await;
    let black = count(&counts, Reviews::BlackStars);
    assert_eq!(black + count(&counts, Reviews::NoStars), 400, "{counts:?}");
    assert_share("black stars (v2)", black, 400, 0.1);
}

#[tokio::test(flavor = "multi_thread")]
async fn reviews_v3_shows_red_stars_only() {
    let bookinfo = start(Some("reviews-v3")).await;
    let counts = tally(&bookinfo, 30, 4, None).await;
    assert_eq!(counts, BTreeMap::from([(Reviews::RedStars, 30)]));
}

#[tokio::test(flavor = "multi_thread")]
async fn jason_sees_black_stars_and_everyone_else_none() {
    let bookinfo = start(Some("jason-v2")).await;
    let client = http_client();
    let jason = sign_in(&client, &bookinfo, "jason").await;
    assert_eq!(jason, "user=jason");
    let got = page(&client, &bookinfo, Some(&jason)).await;
    assert!(got.body.contains("Signed in as <b id=\"user\">jason</b>"));
    assert_eq!(
        tally(&bookinfo, 20, 4, Some(&jason)).await,
        BTreeMap::from([(Reviews::BlackStars, 20)])
    );
    let other = sign_in(&client, &bookinfo, "mary").await;
    assert_eq!(
        tally(&bookinfo, 10, 4, Some(&other)).await,
        BTreeMap::from([(Reviews::NoStars, 10)])
    );
    assert_eq!(
        tally(&bookinfo, 10, 4, None).await,
        BTreeMap::from([(Reviews::NoStars, 10)])
    );
    // Signing out (the gateway routes /logout) clears the cookie.
    let out = get(&client, bookinfo.gateway_addr(), "/logout", Some(&jason)).await;
    assert_eq!(out.status, 302);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("user=; ")
    );
}

// === Faults and timeouts ===

#[tokio::test(flavor = "multi_thread")]
async fn a_7_s_ratings_delay_costs_jason_his_reviews_after_two_3_s_tries() {
    let bookinfo = start(Some("ratings-delay-jason")).await;
    let client = http_client();
    let jason = sign_in(&client, &bookinfo, "jason").await;
    let got = page(&client, &bookinfo, Some(&jason)).await;
    assert_eq!(reviews(&got.body), Reviews::Unavailable);
    assert!(shows_details(&got.body));
    // productpage's two 3 s timeouts, not ratings' 7 s.
    assert!(
        got.took >= Duration::from_millis(5900) && got.took < Duration::from_secs(7),
        "took {:?}",
        got.took
    );
    // Others are not delayed.
    let got = page(&client, &bookinfo, None).await;
    assert_eq!(reviews(&got.body), Reviews::NoStars);
    assert!(got.took < Duration::from_secs(3), "took {:?}", got.took);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ratings_abort_shows_jason_that_ratings_is_unavailable() {
    let bookinfo = start(Some("ratings-abort-jason")).await;
    let client = http_client();
    let jason = sign_in(&client, &bookinfo, "jason").await;
    assert_eq!(
        tally(&bookinfo, 10, 4, Some(&jason)).await,
        BTreeMap::from([(Reviews::RatingsUnavailable, 10)])
    );
    assert_eq!(
        tally(&bookinfo, 10, 4, None).await,
        BTreeMap::from([(Reviews::NoStars, 10)])
    );
    // The abort is the mesh's (ratings never saw jason's calls).
    assert_eq!(bookinfo.served("ratings", "v1"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_second_reviews_timeout_gives_up_after_about_a_second() {
    let bookinfo = start(Some("reviews-timeout")).await;
    let client = http_client();
    let got = page(&client, &bookinfo, None).await;
    assert_eq!(reviews(&got.body), Reviews::Unavailable);
    assert!(shows_details(&got.body));
    // Two tries of 0.5 s each, far less than ratings' 2 s.
    assert!(
        got.took >= Duration::from_millis(1000) && got.took < Duration::from_millis(1900),
        "took {:?}",
        got.took
    );
}

// === Resilience ===

#[tokio::test(flavor = "multi_thread")]
async fn the_details_circuit_breaker_fails_fast_under_load_only() {
    let bookinfo = start(Some("details-circuit-breaker")).await;
    let client = http_client();
    // One at a time: always served.
    for _ in 0..5 {
        assert!(shows_details(&page(&client, &bookinfo, None).await.body));
    }
    // 32 at once: details takes one, so some must overflow (503 from the mesh, the page says
    // sorry). Rounds until seen, bounded.
    let addr = bookinfo.gateway_addr();
    let (mut with, mut without) = (0, 0);
    for _ in 0..20 {
        let mut loads = JoinSet::new();
        for _ in 0..32 {
            let client = client.clone();
            loads.spawn(async move { get(&client, addr, "/productpage", None).await });
        }
        while let Some(got) = loads.join_next().await {
            let got = got.unwrap();
            assert_eq!(got.status, 200);
            reviews(&got.body);
            if shows_details(&got.body) {
                with += 1;
            } else {
                without += 1;
            }
        }
        if without > 0 {
            break;
        }
    }
    assert!(
        with > 0 && without > 0,
        "{with} pages with details, {without} without"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mirroring_sends_v2_a_copy_of_every_call_that_v1_answers() {
    let bookinfo = start(Some("mirror-v1-to-v2")).await;
    assert_eq!(
        tally(&bookinfo, 20, 1, None).await,
        BTreeMap::from([(Reviews::NoStars, 20)])
    );
    assert_eq!(bookinfo.served("reviews", "v1"), 20);
    // Fire and forget: the copies may still be on their way.
    assert!(
        bookinfo
            .wait_served("reviews", "v2", 20, Duration::from_secs(10))
            .await,
        "v2 served {} mirrored calls of 20",
        bookinfo.served("reviews", "v2")
    );
    // v2 does its work, ratings included, though nobody sees it.
    assert!(
        bookinfo
            .wait_served("ratings", "v1", 20, Duration::from_secs(10))
            .await
    );
    assert_eq!(bookinfo.served("reviews", "v3"), 0);
}

// === Security ===

#[tokio::test(flavor = "multi_thread")]
async fn mtls_strict_refuses_plain_text_and_the_page_still_works() {
    // Started without a scenario, then switched live, as a person editing the folder would.
    let bookinfo = start(None).await;
    let client = http_client();
    let details = bookinfo.workload_addr("details", "v1").unwrap();
    // PERMISSIVE by default: plain text is accepted.
    assert_eq!(get(&client, details, "/details/0", None).await.status, 200);

    let version = bookinfo
        .switch_scenario(Some("mtls-strict"), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(version.is_some(), "no reload within 10 s");
    // A new connection: the pooled one was accepted before the change.
    let fresh = http_client();
    let refused = send(
        &fresh,
        Request::get(format!("http://{details}/details/0"))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert!(
        refused.is_err(),
        "plain text accepted under STRICT: {refused:?}"
    );
    let got = page(&fresh, &bookinfo, None).await;
    assert!(shows_details(&got.body));
    assert_ne!(reviews(&got.body), Reviews::Unavailable);
}

#[tokio::test(flavor = "multi_thread")]
async fn deny_ratings_answers_403_and_the_stars_are_unavailable() {
    let bookinfo = start(Some("deny-ratings")).await;
    let client = http_client();
    let ratings = bookinfo.workload_addr("ratings", "v1").unwrap();
    let denied = get(&client, ratings, "/ratings/0", None).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.body, "RBAC: access denied");

    let counts = tally(&bookinfo, 30, 4, None).await;
    assert_eq!(
        count(&counts, Reviews::NoStars) + count(&counts, Reviews::RatingsUnavailable),
        30,
        "{counts:?}"
    );
    // v2 and v3 serve two loads in three; none in 30 has probability (1/3)^30.
    assert!(
        count(&counts, Reviews::RatingsUnavailable) > 0,
        "{counts:?}"
    );
    assert_eq!(bookinfo.served("ratings", "v1"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_productpage_may_call_reviews() {
    let bookinfo = start(Some("allow-productpage-to-reviews")).await;
    let client = http_client();
    for version in ["v1", "v2", "v3"] {
        let reviews_addr = bookinfo.workload_addr("reviews", version).unwrap();
        let denied = get(&client, reviews_addr, "/reviews/0", None).await;
        assert_eq!(denied.status, 403, "{version}");
        assert_eq!(denied.body, "RBAC: access denied");
    }
    let counts = tally(&bookinfo, 15, 4, None).await;
    assert_eq!(count(&counts, Reviews::Unavailable), 0, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ratings_rate_limit_answers_429_after_ten_requests() {
    let bookinfo = start(Some("ratings-rate-limit")).await;
    let client = http_client();
    let ratings = bookinfo.workload_addr("ratings", "v1").unwrap();
    for i in 0..10 {
        let got = get(&client, ratings, "/ratings/0", None).await;
        assert_eq!(got.status, 200, "request {i}: {}", got.body);
    }
    let limited = get(&client, ratings, "/ratings/0", None).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body, "local_rate_limited");
    assert_eq!(limited.headers["x-local-rate-limit"], "true");

    // The bucket is empty for the rest of the minute: v2 and v3 get no stars.
    let counts = tally(&bookinfo, 30, 4, None).await;
    assert_eq!(
        count(&counts, Reviews::NoStars) + count(&counts, Reviews::RatingsUnavailable),
        30,
        "{counts:?}"
    );
    assert!(
        count(&counts, Reviews::RatingsUnavailable) > 0,
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_scenario_live_changes_the_next_page() {
    let bookinfo = start(Some("all-v1")).await;
    assert_eq!(
        tally(&bookinfo, 5, 1, None).await,
        BTreeMap::from([(Reviews::NoStars, 5)])
    );
    let before = bookinfo.config_version();
    let after = bookinfo
        .switch_scenario(Some("reviews-v3"), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(after.is_some_and(|v| v > before), "no reload within 10 s");
    assert_eq!(
        tally(&bookinfo, 5, 1, None).await,
        BTreeMap::from([(Reviews::RedStars, 5)])
    );
}

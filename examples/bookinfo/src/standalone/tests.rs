use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client as HyperClient,
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpListener, sync::oneshot};

use super::*;
use crate::workloads::find;

#[test]
fn proxy_urls_are_http_with_a_port() {
    for ok in [
        "http://127.0.0.1:15001",
        "http://127.0.0.1:15001/",
        "127.0.0.1:15001",
        "localhost:8080",
    ] {
        let p = UpstreamProxy::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert!(p.to_string().starts_with("http://"), "{p}");
    }
    assert_eq!(
        UpstreamProxy::parse("http://127.0.0.1:15001/")
            .unwrap()
            .authority(),
        "127.0.0.1:15001"
    );
    for (bad, says) in [
        ("https://127.0.0.1:15001", "plain http://"),
        ("http://127.0.0.1", "no port"),
        ("http://127.0.0.1:15001/proxy", "no path"),
        ("http://user@127.0.0.1:15001", "no port"),
        ("not a url", "not a proxy URL"),
    ] {
        let err = UpstreamProxy::parse(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[tokio::test]
async fn a_caller_without_a_proxy_is_refused_with_what_to_give() {
    let err = Standalone::bind(ServeOptions {
        workload: find("productpage", "v1").unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_proxy: None,
    })
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("productpage-v1 calls details and reviews")
            && msg.contains("--upstream-proxy"),
        "{msg}"
    );
}

/// Serves `workload` on a loopback port until the returned sender is dropped.
async fn serve(
    workload: (&str, &str),
    proxy: Option<UpstreamProxy>,
) -> (SocketAddr, oneshot::Sender<()>) {
    let standalone = Standalone::bind(ServeOptions {
        workload: find(workload.0, workload.1).unwrap(),
        listen: "127.0.0.1:0".parse().unwrap(),
        upstream_proxy: proxy,
    })
    .await
    .unwrap();
    let addr = standalone.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(standalone.serve(async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

async fn get(url: String, cookie: Option<&str>) -> (StatusCode, String) {
    let client = HyperClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::get(url);
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    let res = client
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn details_answers_in_plain_text_without_a_mesh() {
    let (addr, _stop) = serve(("details", "v1"), None).await;
    let (status, body) = get(format!("http://{addr}/details/0"), None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"author\":\"William Shakespeare\""),
        "{body}"
    );
}

/// What a proxy saw of one request: the request target, `Host` and `end-user`.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP proxy on a loopback port that records each request and answers 503.
async fn recording_proxy() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let header = |name| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap_or("?").to_owned())
                            .unwrap_or_default()
                    };
                    record.lock().unwrap().push((
                        req.uri().to_string(),
                        header("host"),
                        header("end-user"),
                    ));
                    let mut res = Response::new(Full::new(Bytes::from_static(b"no upstream")));
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    async move { Ok::<_, Infallible>(res) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn productpage_sends_its_calls_to_the_proxy_in_absolute_form() {
    let (proxy, seen) = recording_proxy().await;
    let upstream = UpstreamProxy::parse(&format!("http://{proxy}")).unwrap();
    let (addr, _stop) = serve(("productpage", "v1"), Some(upstream)).await;

    let (status, page) = get(format!("http://{addr}/productpage"), Some("user=jason")).await;
    // The proxy answered 503 to everything: the page says so, in Istio's words.
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Sorry, product reviews are currently unavailable"),
        "{page}"
    );

    let seen = seen.lock().unwrap().clone();
    for (url, host) in [
        ("http://details:9080/details/0", "details:9080"),
        ("http://reviews:9080/reviews/0", "reviews:9080"),
    ] {
        assert!(
            seen.iter()
                .any(|(u, h, user)| u == url && h == host && user == "jason"),
            "no call to {url} with Host {host} and end-user jason in {seen:?}"
        );
    }
}

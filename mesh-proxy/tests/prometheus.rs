//! A real Prometheus (Debian's `prometheus`, installed by `.ci/run`) scrapes a running
//! `mesh run`'s `/metrics` every second, and answers the PromQL of Kiali and Istio's Grafana
//! dashboards over its HTTP API: request rate by destination service and response code, p99
//! latency from the duration histogram, and the success ratio per workload.
//!
//! Without the `prometheus` binary the test says so and passes, unless `CI` is set: then it
//! fails, since CI installs it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::Value;
use tokio::net::TcpListener;

/// Kills the child on drop, whatever the test did.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The app: `/slow` answers 200 after [`SLOW`], `/fail` answers 503 at once, anything else
/// 200 at once.
async fn app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
                match req.uri().path() {
                    "/fail" => *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE,
                    "/slow" => tokio::time::sleep(SLOW).await,
                    _ => {}
                }
                Ok::<_, Infallible>(res)
            });
            tokio::spawn(
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned(),
            );
        }
    });
    addr
}

/// In Istio's (250, 500] ms bucket, with room for a slow machine.
const SLOW: Duration = Duration::from_millis(300);

async fn get(uri: &str, host: Option<&str>) -> Result<(StatusCode, String), String> {
    let mut req = Request::get(uri);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(req.body(Full::default()).unwrap()),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's result vector: each series' labels and value.
async fn query(prometheus: SocketAddr, promql: &str) -> Vec<(Value, f64)> {
    let uri = format!("http://{prometheus}/api/v1/query?query={}", encode(promql));
    let (status, body) = get(&uri, None).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{promql}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{promql}: {body}");
    v["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

/// Asks `promql` until `check` accepts the answer, for up to 30 s.
async fn until<T>(
    prometheus: SocketAddr,
    promql: &str,
    check: impl Fn(&[(Value, f64)]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = query(prometheus, promql).await;
        if let Some(v) = check(&answer) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{promql}: no expected answer within 30 s; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn value_of(answer: &[(Value, f64)], labels: &[(&str, &str)]) -> Option<f64> {
    answer
        .iter()
        .find(|(m, _)| labels.iter().all(|(k, v)| m[*k] == *v))
        .map(|(_, v)| *v)
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-prometheus-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SERVICE: &str = "productpage.default.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_answers_the_dashboards_queries() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed, and CI is set: .ci/run installs Debian's prometheus"
        );
        eprintln!("note: skipping: no `prometheus` binary (apt-get install prometheus)");
        return;
    }
    let dir = temp_dir();
    let app = app().await;
    let (inbound, admin, web) = (free_port(), free_port(), free_port());
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/productpage.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: productpage, namespace: default}\n\
         spec:\n  selector: {app: productpage}\n  ports: [{port: 9080, name: http}]\n",
    )
    .unwrap();
    let mesh = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("run")
        .arg("--config")
        .arg(dir.join("config"))
        .args(["--inbound", &inbound.to_string(), "--app", &app.to_string()])
        .args(["--admin", &admin.to_string()])
        .args([
            "--workload-labels",
            "app=productpage,version=v1,service.istio.io/workload-name=productpage-v1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mesh");
    let _mesh = Process(mesh);

    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("http://{admin}/ready"), None)
        .await
        .map(|r| r.0)
        != Ok(StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "mesh run not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let inbound_url = |path: &str| format!("http://{inbound}{path}");
    let host = Some("productpage:9080");
    // Requests of each kind before Prometheus starts, so that both series exist before the
    // traffic to measure (a rate counts increases between samples) and start in the same
    // scrape. As many as the traffic below adds to each: Prometheus then extrapolates both
    // series' rates alike (it stops at a counter's extrapolated zero point, which depends on
    // the ratio of its first value to its increase), and their ratio is exact. They are fast:
    // the histogram's rate counts only the slow requests that come later.
    for _ in 0..8 {
        assert_eq!(get(&inbound_url("/ok"), host).await.unwrap().0, 200);
    }
    for _ in 0..4 {
        assert_eq!(get(&inbound_url("/fail"), host).await.unwrap().0, 503);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = get(&format!("http://{admin}/metrics"), None).await.unwrap();
        // All of them: each series' first sample must be its final priming count.
        let recorded = |code: &str, n: u32| {
            text.lines().any(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains(&format!("response_code=\"{code}\""))
                    && l.ends_with(&format!(" {n}"))
            })
        };
        if recorded("200", 8) && recorded("503", 4) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not in /metrics within 10 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: mesh\n    metrics_path: /metrics\n\
             \x20   static_configs:\n      - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn prometheus");
    let _prometheus = Process(prometheus);

    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = format!("http://{web}/-/ready");
    while get(&ready, None).await.map(|r| r.0) != Ok(StatusCode::OK) {
        assert!(
            Instant::now() < deadline,
            "prometheus not ready within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let total = format!(
        "sum(istio_requests_total{{reporter=\"destination\",destination_service=\"{SERVICE}\"}}) by (response_code)"
    );
    let counts = |ok: f64, failed: f64| {
        move |a: &[(Value, f64)]| {
            (value_of(a, &[("response_code", "200")]) == Some(ok)
                && value_of(a, &[("response_code", "503")]) == Some(failed))
            .then_some(())
        }
    };
    until(web, &total, counts(8.0, 4.0)).await;
    // Another scrape or two at these values before the traffic.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The traffic: 8 good (slow) and 4 failed requests.
    for _ in 0..8 {
        assert_eq!(get(&inbound_url("/slow"), host).await.unwrap().0, 200);
    }
    for _ in 0..4 {
        assert_eq!(get(&inbound_url("/fail"), host).await.unwrap().0, 503);
    }
    until(web, &total, counts(16.0, 8.0)).await;

    // Kiali's and Grafana's request rate by service and code. Both series get the same
    // extrapolation (same scrapes), so their ratio is the ratio of the traffic: 8 to 4.
    let rate = "sum(rate(istio_requests_total{reporter=\"destination\"}[1m])) by (destination_service, response_code)";
    let (ok, failed) = until(web, rate, |a| {
        let ok = value_of(
            a,
            &[("destination_service", SERVICE), ("response_code", "200")],
        )?;
        let failed = value_of(
            a,
            &[("destination_service", SERVICE), ("response_code", "503")],
        )?;
        Some((ok, failed))
    })
    .await;
    assert!(ok > 0.0 && failed > 0.0, "{ok} {failed}");
    assert!(
        (ok / failed - 2.0).abs() < 1e-6,
        "200s/503s = {ok}/{failed}"
    );
    let increase = "sum(increase(istio_requests_total{reporter=\"destination\"}[1m])) by (destination_service, response_code)";
    let answer = query(web, increase).await;
    let ok_inc = value_of(
        &answer,
        &[("destination_service", SERVICE), ("response_code", "200")],
    );
    // About 8 (Prometheus extrapolates to the window's edges).
    assert!(
        ok_inc.is_some_and(|v| (7.0..=11.0).contains(&v)),
        "{answer:?}"
    );

    // p99 from the histogram: the slowest requests are in the (250, 500] ms bucket.
    let p99 = "histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter=\"destination\"}[1m])) by (le))";
    let p99 = until(web, p99, |a| a.first().map(|(_, v)| *v)).await;
    assert!(250.0 < p99 && p99 <= 500.0, "p99 = {p99} ms");

    // Success ratio per workload (non-5xx over all): 8 of 12.
    let success = "sum(rate(istio_requests_total{reporter=\"destination\",response_code!~\"5.*\"}[1m])) by (destination_workload) / sum(rate(istio_requests_total{reporter=\"destination\"}[1m])) by (destination_workload)";
    let ratio = until(web, success, |a| {
        value_of(a, &[("destination_workload", "productpage-v1")])
    })
    .await;
    assert!((ratio - 8.0 / 12.0).abs() < 1e-6, "success ratio {ratio}");
}

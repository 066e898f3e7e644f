//! `GET /metrics` of `mesh run`: Istio's standard metrics of the traffic through the real
//! binary's outbound and inbound listeners, as Prometheus scrapes them.

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
use tokio::net::TcpListener;

/// Kills the child on drop, whatever the test did.
struct Mesh(Child);

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

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

/// A server answering 200 `ok`.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
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

fn config(upstream: SocketAddr) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-metrics-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: reviews, version: v1}}}}]
"#,
        upstream.port()
    );
    std::fs::write(dir.join("reviews.yaml"), yaml).unwrap();
    dir
}

/// The scrape once it holds a line starting with every one of `lines`' prefixes and holding
/// all their labels (a request is recorded when its response ends, which the client may see
/// a moment before the proxy has counted it).
async fn scrape_until(admin: SocketAddr, lines: &[(&str, &[&str])]) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = get(&format!("http://{admin}/metrics"), None).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let found = lines.iter().all(|(prefix, labels)| {
            text.lines()
                .any(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
        });
        if found {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not in /metrics within 5 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_both_sides_of_the_traffic() {
    let upstream = server().await;
    let app = server().await;
    let config = config(upstream);
    let (outbound, inbound, admin) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--outbound", &outbound.to_string()])
        .args(["--inbound", &inbound.to_string(), "--app", &app.to_string()])
        .args(["--admin", &admin.to_string()])
        .args(["--workload-labels", "app=productpage,version=v1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mesh");
    let _mesh = Mesh(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("http://{admin}/ready"), None)
        .await
        .map(|r| r.0)
        != Ok(StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "mesh run not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = get(&format!("http://{outbound}/r"), Some("reviews"))
        .await
        .unwrap();
    assert_eq!(out, (StatusCode::OK, "ok".into()));
    let inb = get(
        &format!("http://{inbound}/ratings"),
        Some("productpage:9080"),
    )
    .await
    .unwrap();
    assert_eq!(inb, (StatusCode::OK, "ok".into()));

    let source: &[&str] = &[
        "reporter=\"source\"",
        "source_app=\"productpage\"",
        "destination_service=\"reviews.default.svc.cluster.local\"",
        "destination_app=\"reviews\"",
        "destination_version=\"v1\"",
        "response_code=\"200\"",
    ];
    let destination: &[&str] = &[
        "reporter=\"destination\"",
        "destination_app=\"productpage\"",
        "connection_security_policy=\"none\"",
        "response_code=\"200\"",
    ];
    let text = scrape_until(
        admin,
        &[
            ("istio_requests_total{", source),
            ("istio_requests_total{", destination),
            (
                "istio_request_duration_milliseconds_bucket{",
                &["le=\"0.5\""],
            ),
            ("istio_response_bytes_sum{", source),
        ],
    )
    .await;
    assert!(
        text.contains("# TYPE istio_requests_total counter"),
        "{text}"
    );
    assert!(
        !text.contains("quantile="),
        "histograms, not summaries:\n{text}"
    );
}

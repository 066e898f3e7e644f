//! Traces and access logs of two `mesh run` sidecars, as a user runs them: the client
//! workload's outbound listener reaches the server workload's inbound listener, which forwards
//! to an app; both export spans over OTLP/HTTP to a collector on loopback (a small hyper server
//! that decodes the protobuf `ExportTraceServiceRequest`) and write access logs to files.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value,
    trace::v1::{Span, span::SpanKind},
};
use prost::Message;
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

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-tracing-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Serves `handle` on an ephemeral loopback port.
async fn serve<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            let svc = hyper::service::service_fn(move |req| {
                let fut = handle(req);
                async move { Ok::<_, Infallible>(fut.await) }
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

/// An app that answers 200 with the request headers it got as `x-echo-<name>`.
async fn echo_app() -> SocketAddr {
    serve(|req: Request<Incoming>| async move {
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        for (name, value) in req.headers() {
            let echo = format!("x-echo-{name}");
            res.headers_mut().insert(
                http::HeaderName::from_bytes(echo.as_bytes()).unwrap(),
                value.clone(),
            );
        }
        res
    })
    .await
}

/// An OTLP/HTTP collector: every span it received.
async fn collector() -> (SocketAddr, Arc<Mutex<Vec<(String, Span)>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = spans.clone();
    let addr = serve(move |req: Request<Incoming>| {
        let store = store.clone();
        async move {
            assert_eq!(req.uri().path(), "/v1/traces");
            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let export = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
            for rs in export.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    for span in ss.spans {
                        store.lock().unwrap().push((service.clone(), span));
                    }
                }
            }
            let mut res = Response::new(Full::new(Bytes::from(
                ExportTraceServiceResponse::default().encode_to_vec(),
            )));
            res.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/x-protobuf"),
            );
            res
        }
    })
    .await;
    (addr, spans)
}

async fn get(uri: &str, headers: &[(&str, &str)]) -> Result<(StatusCode, HeaderMap), String> {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(req.body(Full::default()).unwrap()),
    )
    .await
    .map_err(|_| "timeout".to_string())?
    .map_err(|e| e.to_string())?;
    let (parts, body) = res.into_parts();
    body.collect().await.map_err(|e| e.to_string())?;
    Ok((parts.status, parts.headers))
}

fn start(config: &Path, args: &[String]) -> Mesh {
    let child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mesh");
    Mesh(child)
}

async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&format!("http://{admin}/ready"), &[])
        .await
        .map(|r| r.0)
        != Ok(StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "mesh run not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` for up to 15 s (spans leave each proxy in batches, every second).
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The client span and the server span of trace `trace` (hex), once both arrived.
fn trace_spans(
    spans: &Mutex<Vec<(String, Span)>>,
    trace: &str,
) -> Option<((String, Span), (String, Span))> {
    let spans = spans.lock().unwrap();
    let of_trace: Vec<_> = spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace)
        .collect();
    let kind = |k: SpanKind| {
        of_trace
            .iter()
            .find(|(_, s)| s.kind == k as i32)
            .map(|x| (*x).clone())
    };
    Some((kind(SpanKind::Client)?, kind(SpanKind::Server)?))
}

fn lines(path: &Path, n: usize) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(path).ok()?;
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    (lines.len() >= n).then_some(lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_export_one_trace_and_log_every_request() {
    let (otlp, spans) = collector().await;
    let app = echo_app().await;
    let dir = temp_dir();
    let (outbound, inbound) = (free_port(), free_port());
    let (admin_a, admin_b) = (free_port(), free_port());
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("config/reviews.yaml"),
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}, labels: {{app: reviews}}}}]
"#,
            inbound.port()
        ),
    )
    .unwrap();
    let endpoint = format!("http://{otlp}/v1/traces");
    let (log_a, log_b) = (dir.join("productpage.log"), dir.join("reviews.log"));
    // 0%: only callers' decisions get requests traced.
    let tracing = |log: &Path, format: &str| -> Vec<String> {
        vec![
            "--tracing-endpoint".into(),
            endpoint.clone(),
            "--tracing-sampling".into(),
            "0".into(),
            "--access-log".into(),
            log.display().to_string(),
            "--access-log-format".into(),
            format.into(),
        ]
    };
    let mut a_args = vec![
        "--outbound".to_string(),
        outbound.to_string(),
        "--admin".into(),
        admin_a.to_string(),
        "--workload-labels".into(),
        "app=productpage,version=v1".into(),
    ];
    a_args.extend(tracing(&log_a, "text"));
    let mut b_args = vec![
        "--inbound".to_string(),
        inbound.to_string(),
        "--app".into(),
        app.to_string(),
        "--admin".into(),
        admin_b.to_string(),
        "--workload-labels".into(),
        "app=reviews,version=v1".into(),
    ];
    b_args.extend(tracing(&log_b, "json"));
    let _a = start(&dir.join("config"), &a_args);
    let _b = start(&dir.join("config"), &b_args);
    wait_ready(admin_a).await;
    wait_ready(admin_b).await;

    let url = format!("http://{outbound}/reviews/0");
    let host = ("host", "reviews:9080");
    // A W3C caller that samples.
    let w3c_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{w3c_trace}-{caller_span}-01");
    let (status, _) = get(
        &url,
        &[host, ("traceparent", &traceparent), ("x-request-id", "w3c")],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    // A B3-only caller (64-bit trace id) that samples.
    let (status, b3_app) = get(
        &url,
        &[
            host,
            ("x-b3-traceid", "80f198ee56343ba8"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
            ("x-request-id", "b3"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    // No decision at 0%: not traced.
    let (status, _) = get(&url, &[host, ("x-request-id", "none")]).await.unwrap();
    assert_eq!(status, StatusCode::OK);

    let ((client_service, client), (server_service, server)) =
        eventually("the W3C trace", || trace_spans(&spans, w3c_trace)).await;
    assert_eq!(client_service, "productpage.default");
    assert_eq!(server_service, "reviews.default");
    assert_eq!(hex(&client.parent_span_id), caller_span);
    assert_eq!(
        server.parent_span_id, client.span_id,
        "client span → server span"
    );
    assert_eq!(client.name, "reviews.default.svc.cluster.local:9080/*");
    assert_eq!(
        attr(&client, "upstream_cluster"),
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert_eq!(attr(&server, "upstream_cluster"), "inbound|9080||");
    assert_eq!(attr(&server, "http.response.status_code"), "200");
    assert_eq!(attr(&server, "guid:x-request-id"), "w3c");
    assert_eq!(attr(&server, "istio.canonical_service"), "reviews");

    let b3_trace = "000000000000000080f198ee56343ba8";
    let ((_, client), (_, server)) =
        eventually("the B3 trace", || trace_spans(&spans, b3_trace)).await;
    assert_eq!(hex(&client.parent_span_id), "e457b5a2e4d86bd1");
    assert_eq!(server.parent_span_id, client.span_id);
    // The app got the caller's trace id back as it was written, 64 bits.
    assert_eq!(b3_app["x-echo-x-b3-traceid"], "80f198ee56343ba8");
    assert_eq!(
        b3_app["x-echo-x-b3-spanid"].as_bytes(),
        hex(&server.span_id).as_bytes()
    );

    // Access logs: one line per request on each side, joined by x-request-id.
    let a = eventually("productpage's log", || lines(&log_a, 3)).await;
    let b = eventually("reviews' log", || lines(&log_b, 3)).await;
    for (id, (text, json)) in ["w3c", "b3", "none"].iter().zip(a.iter().zip(&b)) {
        assert!(
            text.contains("\"GET /reviews/0 HTTP/1.1\" 200 - via_upstream "),
            "{text}"
        );
        assert!(text.contains(&format!("\"{id}\" \"reviews:9080\" \"127.0.0.1:{}\" outbound|9080||reviews.default.svc.cluster.local ", inbound.port())), "{text}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["request_id"], *id, "{json}");
        assert_eq!(v["response_code"], 200);
        assert_eq!(v["upstream_cluster"], "inbound|9080||");
        assert_eq!(v["downstream_local_address"], inbound.to_string());
    }
    let traced = spans.lock().unwrap().len();
    assert_eq!(traced, 4, "the unsampled request made no span");
}

/// A TCP echo server.
async fn echo_tcp() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_traces_and_logs_its_http_requests_and_tcp_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (otlp, spans) = collector().await;
    let app = echo_app().await;
    let echo = echo_tcp().await;
    // Not `temp_dir()`: the other test of this file empties that one.
    let dir =
        std::env::temp_dir().join(format!("mesh-tracing-gateway-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let (http_port, tcp_port, admin) = (free_port().port(), free_port().port(), free_port());
    std::fs::write(
        dir.join("config/edge.yaml"),
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: productpage}}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {app}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {echo}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {http_port}, name: http, protocol: HTTP}}
    hosts: [bookinfo.example.com]
  - port: {{number: {tcp_port}, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bookinfo}}
spec:
  hosts: [bookinfo.example.com]
  gateways: [edge]
  http:
  - name: to-productpage
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp:
  - route: [{{destination: {{host: echo, port: {{number: 7000}}}}}}]
"#,
            app = app.port(),
            echo = echo.port(),
        ),
    )
    .unwrap();
    let log = dir.join("gateway.log");
    let _gateway = start(
        &dir.join("config"),
        &[
            "--gateway".into(),
            "edge".into(),
            "--gateway-bind".into(),
            "127.0.0.1".into(),
            "--admin".into(),
            admin.to_string(),
            "--workload-labels".into(),
            "app=istio-ingressgateway".into(),
            "--tracing-endpoint".into(),
            format!("http://{otlp}/v1/traces"),
            "--tracing-sampling".into(),
            "0".into(),
            "--access-log".into(),
            log.display().to_string(),
        ],
    );
    wait_ready(admin).await;

    // A sampled request through the HTTP server.
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller = "b7ad6b7169203331";
    let (status, seen) = get(
        &format!("http://127.0.0.1:{http_port}/productpage"),
        &[
            ("host", "bookinfo.example.com"),
            ("traceparent", &format!("00-{trace}-{caller}-01")),
            ("x-request-id", "through-the-gateway"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);

    // A TCP connection through the TCP server: 4 bytes each way, then closed.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .unwrap();
    tcp.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tcp.read_exact(&mut pong).await.unwrap();
    assert_eq!(&pong, b"ping");
    drop(tcp);

    // One CLIENT span, Istio's gateway's only span, the caller's child and the app's parent.
    let span = eventually("the gateway's span", || {
        spans
            .lock()
            .unwrap()
            .iter()
            .find(|(_, s)| hex(&s.trace_id) == trace)
            .cloned()
    })
    .await;
    let (service, span) = span;
    assert_eq!(service, "istio-ingressgateway.default");
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(hex(&span.parent_span_id), caller);
    assert_eq!(span.name, "productpage.default.svc.cluster.local:9080/*");
    assert_eq!(
        attr(&span, "upstream_cluster"),
        "outbound|9080||productpage.default.svc.cluster.local"
    );
    assert_eq!(attr(&span, "guid:x-request-id"), "through-the-gateway");
    assert_eq!(
        seen["x-echo-traceparent"].to_str().unwrap(),
        format!("00-{trace}-{}-01", hex(&span.span_id)),
        "the app sees the gateway's span as its parent"
    );

    // Two access log lines: the request's, then the connection's when it closed.
    let lines = eventually("the gateway's log", || lines(&log, 2)).await;
    let http = lines.iter().find(|l| l.contains("/productpage")).unwrap();
    assert!(
        http.contains("\"GET /productpage HTTP/1.1\" 200 - via_upstream "),
        "{http}"
    );
    assert!(
        http.contains(&format!(
            "\"through-the-gateway\" \"bookinfo.example.com\" \"127.0.0.1:{}\" \
             outbound|9080||productpage.default.svc.cluster.local ",
            app.port()
        )),
        "{http}"
    );
    assert!(http.ends_with(" to-productpage"), "{http}");
    let tcp = lines.iter().find(|l| l.contains("\"- - -\"")).unwrap();
    assert!(tcp.contains("\"- - -\" 0 - - - \"-\" 4 4 "), "{tcp}");
    assert!(
        tcp.contains(&format!(
            "\"127.0.0.1:{}\" outbound|7000||echo.default.svc.cluster.local - 127.0.0.1:{tcp_port} 127.0.0.1:",
            echo.port()
        )),
        "{tcp}"
    );
}

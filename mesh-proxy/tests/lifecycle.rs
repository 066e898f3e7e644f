//! `mesh run`'s lifecycle and resource discipline, seen from outside: SIGTERM under load loses
//! no request, Envoy's header limits (431), the idle timeout, the per-listener connection cap,
//! and curl speaking HTTP/2 with prior knowledge to the outbound listener.

mod harness;

use std::{
    io::ErrorKind,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use harness::{Counter, Mesh, config, free_port, get, installed, temp_dir};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};

const HOST: &str = "load.example.internal";

/// The upstream of these tests and what it has seen.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    /// `/fast` requests received.
    fast: Counter,
    /// `/slow` requests received.
    slow: watch::Receiver<usize>,
    /// Opens the gate `/slow` waits at.
    gate: Arc<watch::Sender<bool>>,
}

/// `GET /fast` answers `fast` at once; `GET /slow` answers `slow` once the gate is open and at
/// least 500 ms after it arrived.
async fn upstream(gate_open: bool) -> Upstream {
    let fast: Counter = Arc::default();
    let (slow_tx, slow) = watch::channel(0usize);
    let slow_tx = Arc::new(slow_tx);
    let (gate, gate_rx) = watch::channel(gate_open);
    let counted = fast.clone();
    let addr = harness::serve(move |req: Request<hyper::body::Incoming>| {
        let (fast, slow, mut gate) = (counted.clone(), slow_tx.clone(), gate_rx.clone());
        async move {
            let body = if req.uri().path() == "/slow" {
                let arrived = tokio::time::Instant::now();
                slow.send_modify(|n| *n += 1);
                let _ = gate.wait_for(|open| *open).await;
                tokio::time::sleep_until(arrived + Duration::from_millis(500)).await;
                "slow"
            } else {
                fast.fetch_add(1, Ordering::SeqCst);
                "fast"
            };
            Response::new(Full::new(Bytes::from(body)))
        }
    })
    .await;
    Upstream {
        addr,
        fast,
        slow,
        gate: Arc::new(gate),
    }
}

fn yaml(upstream: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: load}}
spec:
  hosts: [{HOST}]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"#,
        port = upstream.port()
    )
}

/// An outbound sidecar in front of `upstream`, with `flags`; its outbound address.
async fn sidecar(upstream: &Upstream, flags: &[&str]) -> (Mesh, SocketAddr) {
    let dir = temp_dir("lifecycle");
    let file = config(&dir, &yaml(upstream.addr));
    let outbound = free_port();
    let mut args = vec!["--outbound".to_string(), outbound.to_string()];
    args.extend(flags.iter().map(|f| f.to_string()));
    (Mesh::start(&file, &args).await, outbound)
}

/// A keep-alive HTTP/1.1 client (its own connection pool).
fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET http://<outbound><path>` with the load Host, within 5 s: status and body.
async fn call(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    outbound: SocketAddr,
    path: &str,
) -> Result<(StatusCode, String), String> {
    let req = Request::get(format!("http://{outbound}{path}"))
        .header("host", HOST)
        .body(Full::default())
        .unwrap();
    let fut = async {
        let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Waits (up to `within`) until `done` holds, checking every 10 ms.
async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_request() {
    let upstream = upstream(false).await;
    let (mut mesh, outbound) = sidecar(&upstream, &[]).await;

    // Continuous fast requests on four keep-alive connections.
    let signalled = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answered: Counter = Arc::default();
    let bad = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (signalled, stop, answered, bad) = (
            signalled.clone(),
            stop.clone(),
            answered.clone(),
            bad.clone(),
        );
        loops.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                match call(&client, outbound, "/fast").await {
                    Ok((StatusCode::OK, body)) if body == "fast" => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    // A response, but not the upstream's: the proxy failed a request.
                    Ok(other) => bad.lock().unwrap().push(format!("{other:?}")),
                    // Refused or closed: only after the signal, for requests not accepted.
                    Err(e) if !signalled.load(Ordering::SeqCst) => {
                        bad.lock().unwrap().push(format!("before the signal: {e}"))
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    // Five slow requests, each on its own connection, held at the upstream.
    let slow: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { call(&client(), outbound, "/slow").await }))
        .collect();
    let mut arrived = upstream.slow.clone();
    tokio::time::timeout(Duration::from_secs(10), arrived.wait_for(|n| *n == 5))
        .await
        .expect("the slow requests did not reach the upstream")
        .unwrap();
    eventually(Duration::from_secs(10), "fast requests flowing", || {
        answered.load(Ordering::SeqCst) >= 20
    })
    .await;

    signalled.store(true, Ordering::SeqCst);
    mesh.terminate();
    let signal_at = Instant::now();
    // The listener closes at once: new connections are refused while requests are in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(outbound).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "a request in flight ended before the upstream answered it"
    );

    // Every request accepted before the signal completes with its response.
    upstream.gate.send_replace(true);
    for task in slow {
        assert_eq!(task.await.unwrap(), Ok((StatusCode::OK, "slow".into())));
    }
    stop.store(true, Ordering::SeqCst);
    for task in loops {
        task.await.unwrap();
    }
    let status = mesh.exit_status(Duration::from_secs(6)).await;
    assert!(status.success(), "exit status {status}: {}", mesh.stderr());
    assert!(signal_at.elapsed() < Duration::from_secs(6));

    let bad = bad.lock().unwrap();
    assert!(bad.is_empty(), "failed requests: {bad:?}");
    // None lost: every request the upstream got, its client got the answer to.
    assert_eq!(
        answered.load(Ordering::SeqCst),
        upstream.fast.load(Ordering::SeqCst)
    );
}

/// Writes `request` on a fresh connection and reads until the server closes (or resets after
/// its answer); the status code of what came back (0 for nothing).
async fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may stop reading (and answer) before all of it is written.
        let _ = s.write_all(request).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("no answer within 5 s");
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn request_with(headers: &str) -> Vec<u8> {
    format!("GET /fast HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n{headers}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_envoys_limits_get_431() {
    let upstream = upstream(true).await;
    let (_mesh, outbound) = sidecar(&upstream, &[]).await;

    // Envoy's max_request_headers_kb: 60 KiB of request line and headers.
    let header = |kib: usize| format!("x-big: {}\r\n", "a".repeat(kib * 1024));
    assert_eq!(raw_status(outbound, &request_with(&header(59))).await, 200);
    assert_eq!(raw_status(outbound, &request_with(&header(61))).await, 431);
    // The request line counts too.
    let long_url = format!(
        "GET /fast?{} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n",
        "q".repeat(61 * 1024)
    );
    assert_eq!(raw_status(outbound, long_url.as_bytes()).await, 431);

    // Envoy's max_headers_count: 100 headers.
    let many = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    assert_eq!(raw_status(outbound, &request_with(&many(90))).await, 200);
    assert_eq!(raw_status(outbound, &request_with(&many(101))).await, 431);
    assert_eq!(
        upstream.fast.load(Ordering::SeqCst),
        2,
        "431s never reach it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_after_the_idle_timeout() {
    let upstream = upstream(true).await;
    let (_mesh, outbound) = sidecar(&upstream, &["--idle-timeout", "300ms"]).await;

    // HTTP/1.1 keep-alive: answered, then closed once idle for 300 ms.
    let mut s = TcpStream::connect(outbound).await.unwrap();
    s.write_all(format!("GET /fast HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nfast") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&chunk[..n]);
    }
    let answered = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
        .await
        .expect("an idle connection still open 5 s later")
        .unwrap();
    assert_eq!(n, 0, "closed, nothing more sent");
    assert!(answered.elapsed() >= Duration::from_millis(250));

    // A request in flight is not idle: a 500 ms answer outlives the 300 ms idle timeout.
    assert_eq!(
        call(&client(), outbound, "/slow").await,
        Ok((StatusCode::OK, "slow".into()))
    );

    // HTTP/2 (h2c): the connection ends (GOAWAY) once idle.
    let tcp = TcpStream::connect(outbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{HOST}/fast"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = send.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(res);
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("an idle HTTP/2 connection still open 5 s later")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_in_the_backlog() {
    let upstream = upstream(true).await;
    let (_mesh, outbound) = sidecar(&upstream, &["--max-connections", "1"]).await;
    let request = format!("GET /fast HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut chunk = [0u8; 1024];

    // The first connection takes the one slot and keeps it (keep-alive).
    let mut first = TcpStream::connect(outbound).await.unwrap();
    first.write_all(request.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut chunk))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));

    // The second is accepted by the kernel but not served while the first is open.
    let mut second = TcpStream::connect(outbound).await.unwrap();
    second.write_all(request.as_bytes()).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), second.read(&mut chunk)).await;
    assert!(waiting.is_err(), "served beyond --max-connections 1");

    // The slot is free again: the waiting connection is served.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), second.read(&mut chunk))
        .await
        .expect("not served once the slot was free")
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk[..n]).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_http2_with_prior_knowledge_to_the_outbound_listener() {
    if !installed("curl") {
        return;
    }
    let upstream = upstream(true).await;
    let (_mesh, outbound) = sidecar(&upstream, &[]).await;
    // curl's own --max-time bounds it; off the runtime's threads.
    let url = format!("http://{outbound}/fast");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--http2-prior-knowledge"])
            .args(["-H", &format!("Host: {HOST}")])
            .args(["-w", "\n%{http_version} %{http_code}"])
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "fast\n2 200");
    // Also reachable as a fresh HTTP/1.1 client sees it.
    let (status, _, body) = get(&format!("http://{outbound}/fast"), &[("host", HOST)])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "fast"));
}

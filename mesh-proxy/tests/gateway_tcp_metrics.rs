//! Istio's TCP metrics of a gateway's TCP routes, as Prometheus scrapes them from the real
//! `mesh run --gateway`: a TCP echo behind a VirtualService `tcp` route, a client on loopback,
//! then `GET /metrics` on the admin listener.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

const STEP: Duration = Duration::from_secs(5);

/// Kills the child on drop.
struct Mesh(Child);

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP echo server.
async fn echo() -> SocketAddr {
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

fn config(echo: SocketAddr, echo_port: u16, down_port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-gateway-tcp-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Nothing listens on `down`'s endpoint.
    let nothing = free_port();
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.example.internal]
  resolution: STATIC
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {echo}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: down}}
spec:
  hosts: [down.example.internal]
  resolution: STATIC
  ports: [{{number: 7000, name: tcp, protocol: TCP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {nothing}}}}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  servers:
  - port: {{number: {echo_port}, name: tcp-echo, protocol: TCP}}
    hosts: ["*"]
  - port: {{number: {down_port}, name: tcp-down, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp}}
spec:
  hosts: ["*"]
  gateways: [edge]
  tcp:
  - match: [{{port: {echo_port}}}]
    route: [{{destination: {{host: echo.example.internal, port: {{number: 7000}}}}}}]
  - match: [{{port: {down_port}}}]
    route: [{{destination: {{host: down.example.internal, port: {{number: 7000}}}}}}]
"#,
        echo = echo.port(),
    );
    std::fs::write(dir.join("tcp.yaml"), yaml).unwrap();
    dir
}

/// Starts `mesh run` and returns it with its admin address, once ready.
fn start(config: &PathBuf) -> (Mesh, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--gateway", "edge", "--gateway-bind", "127.0.0.1"])
        .args(["--admin", "127.0.0.1:0", "--concurrency", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mesh");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let mesh = Mesh(child);
    let admin = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("mesh run ended before ready: {seen:#?}");
        };
        if let Some(admin) = line
            .split(", ")
            .find_map(|part| part.split("admin ").nth(1))
            .filter(|_| line.contains("mesh run: ready:"))
        {
            break admin.trim().parse().unwrap();
        }
        seen.push(line);
    };
    // Keep draining stderr so the proxy never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (mesh, admin)
}

async fn scrape(admin: SocketAddr) -> String {
    let tcp = TcpStream::connect(admin).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header("host", "admin")
        .body(Full::<Bytes>::default())
        .unwrap();
    let res = tokio::time::timeout(STEP, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The value of the series `name` whose labels hold every one of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Scrapes until every `(metric, value)` is there with `labels`, for up to 5 s (a connection
/// is counted a moment after the client sees it end).
async fn scrape_until(admin: SocketAddr, labels: &[&str], want: &[(&str, f64)]) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let text = scrape(admin).await;
        if want
            .iter()
            .all(|(name, v)| value(&text, name, labels) == Some(*v))
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "not in /metrics within 5 s: {want:?} with {labels:?}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn exchange(conn: &mut TcpStream, bytes: &[u8]) {
    conn.write_all(bytes).await.unwrap();
    let mut buf = vec![0u8; bytes.len()];
    tokio::time::timeout(STEP, conn.read_exact(&mut buf))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(buf, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_routes_count_connections_and_bytes_per_destination_service() {
    let echo = echo().await;
    let (echo_port, down_port) = (free_port(), free_port());
    let config = config(echo, echo_port, down_port);
    let (_mesh, admin) = start(&config);

    let echo_labels = [
        r#"reporter="source""#,
        r#"destination_service="echo.example.internal""#,
        r#"destination_service_name="echo.example.internal""#,
        r#"request_protocol="tcp""#,
        r#"response_flags="-""#,
    ];
    // Bytes count while the connection is open.
    let mut conn = TcpStream::connect(("127.0.0.1", echo_port)).await.unwrap();
    exchange(&mut conn, b"ping").await;
    let text = scrape_until(
        admin,
        &echo_labels,
        &[
            ("istio_tcp_connections_opened_total", 1.0),
            ("istio_tcp_received_bytes_total", 4.0),
            ("istio_tcp_sent_bytes_total", 4.0),
        ],
    )
    .await;
    assert_eq!(
        value(&text, "istio_tcp_connections_closed_total", &echo_labels).unwrap_or(0.0),
        0.0,
        "closed before it was:\n{text}"
    );

    // Closed by the client: counted closed, with every byte.
    exchange(&mut conn, b"hello!").await;
    conn.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(STEP, conn.read_to_end(&mut rest))
        .await
        .expect("the gateway did not close")
        .unwrap();
    drop(conn);
    scrape_until(
        admin,
        &echo_labels,
        &[
            ("istio_tcp_connections_opened_total", 1.0),
            ("istio_tcp_connections_closed_total", 1.0),
            ("istio_tcp_received_bytes_total", 10.0),
            ("istio_tcp_sent_bytes_total", 10.0),
        ],
    )
    .await;

    // An upstream that refuses: opened and closed at once, flagged UF.
    let mut conn = TcpStream::connect(("127.0.0.1", down_port)).await.unwrap();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(STEP, conn.read_to_end(&mut rest))
        .await
        .expect("the gateway did not close")
        .unwrap_or(0);
    assert_eq!(n, 0);
    scrape_until(
        admin,
        &[
            r#"destination_service="down.example.internal""#,
            r#"response_flags="UF""#,
        ],
        &[
            ("istio_tcp_connections_opened_total", 1.0),
            ("istio_tcp_connections_closed_total", 1.0),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&config);
}

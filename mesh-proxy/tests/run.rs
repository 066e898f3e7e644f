//! `mesh run`, driven as a user drives it: the real binary with listeners on loopback ports,
//! real upstreams and apps, a hyper client (and curl when it is installed).

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
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
struct Mesh {
    child: Child,
    admin: SocketAddr,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn fixture(files: &[(&str, &str)]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-run-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn mesh_cmd(config: &PathBuf, args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts `mesh run` with an admin listener and waits (up to 10 s) for `/ready`.
async fn start(config: &PathBuf, args: &[String]) -> Mesh {
    let admin = free_port();
    let mut all = args.to_vec();
    all.extend(["--admin".into(), admin.to_string()]);
    let child = mesh_cmd(config, &all).spawn().expect("spawn mesh");
    let mut mesh = Mesh { child, admin };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = mesh.child.try_wait().unwrap() {
            let out = mesh.child.stderr.take().map(std::io::read_to_string);
            panic!("mesh run exited early ({status}): {out:?}");
        }
        if let Ok((StatusCode::OK, _)) = get(&format!("http://{admin}/ready"), &[]).await {
            return mesh;
        }
        assert!(Instant::now() < deadline, "mesh run not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn send(req: Request<Full<Bytes>>) -> Result<(StatusCode, String), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
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

async fn get(uri: &str, headers: &[(&str, &str)]) -> Result<(StatusCode, String), String> {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::default()).unwrap()).await
}

/// A server answering 200 with `name` and the method (`name GET`).
async fn server(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let body = format!("{name} {}", req.method());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn reviews_yaml(v1: SocketAddr, v2: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - match: [{{headers: {{end-user: {{exact: jason}}}}}}]
    route: [{{destination: {{host: reviews, subset: v2}}}}]
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
"#,
        v1.port(),
        v2.port()
    )
}

const NO_POSTS: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-posts, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  action: DENY
  rules:
  - to: [{operation: {methods: [POST]}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_routes_by_authority_and_inbound_applies_policies() {
    let v1 = server("reviews-v1").await;
    let v2 = server("reviews-v2").await;
    let app = server("ratings").await;
    let config = fixture(&[
        ("reviews.yaml", &reviews_yaml(v1, v2)),
        ("authz.yaml", NO_POSTS),
    ]);
    let (outbound, inbound) = (free_port(), free_port());
    let mesh = start(
        &config,
        &[
            "--outbound".into(),
            outbound.to_string(),
            "--inbound".into(),
            inbound.to_string(),
            "--app".into(),
            app.to_string(),
            "--workload-labels".into(),
            "app=ratings,version=v1".into(),
            // One worker: tokio's current-thread scheduler (the benchmarks' setting).
            "--concurrency".into(),
            "1".into(),
        ],
    )
    .await;

    // Absolute-form URI, as an HTTP proxy client sends it (the legacy client sends
    // origin-form, so a raw connection).
    assert_eq!(
        raw_http(outbound, "GET http://reviews/reviews/0 HTTP/1.1\r\nHost: reviews\r\nend-user: jason\r\nConnection: close\r\n\r\n").await,
        (200, "reviews-v2 GET".to_string())
    );
    assert_eq!(
        raw_http(outbound, "GET http://reviews.default.svc.cluster.local/r HTTP/1.1\r\nHost: reviews.default.svc.cluster.local\r\nConnection: close\r\n\r\n").await,
        (200, "reviews-v1 GET".to_string())
    );

    // Host header (origin-form): the hyper client to the outbound listener.
    let through = format!("http://{outbound}/reviews/0");
    let host = [("host", "reviews")];
    assert_eq!(
        get(&through, &host).await.unwrap(),
        (StatusCode::OK, "reviews-v1 GET".into())
    );
    assert_eq!(
        get(&through, &[("host", "reviews"), ("end-user", "jason")])
            .await
            .unwrap(),
        (StatusCode::OK, "reviews-v2 GET".into())
    );
    // An authority nobody routes: 404 from the mesh, not a hang.
    let (status, _) = get(&through, &[("host", "nowhere.example")]).await.unwrap();
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status}"
    );

    // curl with the proxy variables (curl reads lowercase `http_proxy` for http URLs).
    match Command::new("curl")
        .args([
            "-sS",
            "-m",
            "5",
            "-H",
            "end-user: jason",
            "http://reviews/x",
        ])
        .env("http_proxy", format!("http://{outbound}"))
        .env("HTTP_PROXY", format!("http://{outbound}"))
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "curl: {out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "reviews-v2 GET");
        }
        Err(e) => eprintln!("note: curl not run ({e}); skipping the HTTP_PROXY check"),
    }

    // Inbound: forwarded to the app; POST denied by the AuthorizationPolicy.
    let (status, body) = get(&format!("http://{inbound}/ratings/0?x=1"), &[])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ratings GET"));
    let post = Request::post(format!("http://{inbound}/ratings/0"))
        .body(Full::new(Bytes::from("{}")))
        .unwrap();
    let (status, body) = send(post).await.unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "RBAC: access denied");

    // Admin.
    let admin = mesh.admin;
    assert_eq!(
        get(&format!("http://{admin}/healthz"), &[])
            .await
            .unwrap()
            .0,
        StatusCode::OK
    );
    let (status, dump) = get(&format!("http://{admin}/config_dump"), &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert!(dump["version"].as_u64().unwrap() >= 1, "{dump}");
    assert_eq!(dump["files"].as_array().unwrap().len(), 2, "{dump}");
    let svc = &dump["services"][0];
    assert_eq!(
        svc["hostname"], "reviews.default.svc.cluster.local",
        "{dump}"
    );
    assert_eq!(svc["endpoints"], 2, "{dump}");
    assert_eq!(
        dump["virtual_hosts"][0]["virtual_service"], "default/reviews",
        "{dump}"
    );
    assert_eq!(
        get(&format!("http://{admin}/nope"), &[]).await.unwrap().0,
        StatusCode::NOT_FOUND
    );
}

/// One HTTP/1.1 exchange over a raw connection; returns status and body.
async fn raw_http(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("raw request timed out");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[tokio::test]
async fn sigterm_exits_zero_within_five_seconds() {
    let config = fixture(&[("authz.yaml", NO_POSTS)]);
    let outbound = free_port();
    let mut mesh = start(&config, &["--outbound".into(), outbound.to_string()]).await;
    let pid = mesh.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status();
    match kill {
        Ok(s) => assert!(s.success()),
        Err(e) => {
            eprintln!("note: no `kill` command ({e}); skipping");
            return;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = mesh.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "still running 5 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[test]
fn port_in_use_fails_naming_the_address() {
    let config = fixture(&[("authz.yaml", NO_POSTS)]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let admin = free_port().to_string();
    let out = mesh_cmd(
        &config,
        &["--admin".into(), admin, "--outbound".into(), addr.clone()],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr), "{err}");
}

#[test]
fn config_errors_exit_one_with_the_diagnostic() {
    let config = fixture(&[(
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bad}\nspec:\n  hosts: [reviews]\n  htp: []\n",
    )]);
    let out = mesh_cmd(&config, &["--outbound".into(), free_port().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:6:3: error"), "{err}");
}

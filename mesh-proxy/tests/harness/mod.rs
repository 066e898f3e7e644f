//! What the end-to-end tests of `mesh run` (websocket, grpc, egress, lifecycle) share: the real
//! binary started on loopback ports and stopped whatever happens, config folders, development
//! certificates, plain hyper upstreams, and the external tools CI installs.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
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
use tokio::net::TcpListener;

/// A running `mesh run`, killed on drop whatever the test did.
#[derive(Debug)]
pub struct Mesh {
    pub child: Child,
    pub admin: SocketAddr,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Mesh {
    /// Starts `mesh run --config CONFIG ARGS --admin ADDR` and waits (up to 10 s) for `/ready`.
    pub async fn start(config: &Path, args: &[String]) -> Mesh {
        let admin = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_mesh"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .args(["--admin", &admin.to_string(), "--concurrency", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mesh");
        let mut mesh = Mesh { child, admin };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = mesh.child.try_wait().unwrap() {
                let err = mesh.child.stderr.take().map(std::io::read_to_string);
                panic!("mesh run exited early ({status}): {err:?}");
            }
            if let Ok((StatusCode::OK, _, _)) = get(&format!("http://{admin}/ready"), &[]).await {
                return mesh;
            }
            assert!(Instant::now() < deadline, "mesh run not ready within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (with the `kill` command, as an orchestrator would).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("the `kill` command");
        assert!(status.success(), "kill -TERM: {status}");
    }

    /// The exit status, waiting up to `within`; panics if the process is still running then.
    pub async fn exit_status(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "mesh run still running {within:?} after the signal"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the process wrote to stderr (after it exited).
    pub fn stderr(&mut self) -> String {
        self.child
            .stderr
            .take()
            .map(|e| std::io::read_to_string(e).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// A loopback port that was free a moment ago (for flags and YAML that name ports).
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A fresh folder under the system temp dir, named after `tag`.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-{tag}-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `yaml` to `dir/mesh.yaml`; returns the file.
pub fn config(dir: &Path, yaml: &str) -> PathBuf {
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, yaml).unwrap();
    file
}

/// `mesh ca init` in `dir/ca`, then `mesh ca issue` for each service account of namespace
/// `default` into `dir/<sa>`.
pub fn certificates(dir: &Path, service_accounts: &[&str]) {
    let mesh = || Command::new(env!("CARGO_BIN_EXE_mesh"));
    let ca = dir.join("ca");
    let out = mesh()
        .args(["ca", "init", "--dir"])
        .arg(&ca)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for sa in service_accounts {
        let out = mesh()
            .args(["ca", "issue", "--namespace", "default"])
            .args(["--service-account", sa, "--dir"])
            .arg(&ca)
            .arg("--out")
            .arg(dir.join(sa))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

/// PeerAuthentication `mode` for the whole mesh, as YAML.
pub fn peer_authentication(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
         metadata: {{name: default, namespace: istio-system}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )
}

/// Whether `tool` runs here. CI installs the tools (`.ci/run`): there a missing one fails.
pub fn installed(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "`{tool}` is not installed, and CI must run this test with it"
    );
    if !ok {
        println!("note: `{tool}` is not installed: skipping its part of this test");
    }
    ok
}

/// A GET with `headers` over a fresh HTTP/1.1 client, bounded by 5 s: status, headers, body.
pub async fn get(
    uri: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, String), String> {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let fut = async {
        let res = client
            .request(req.body(Full::default()).unwrap())
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| "timed out after 5 s".to_string())?
}

/// Serves `handler` over HTTP/1.1 and h2c on an ephemeral loopback port (upgrades allowed).
pub async fn serve<H, F>(handler: H) -> SocketAddr
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, Infallible>(answer.await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An upstream that answers every request 200 with the body `name`.
pub async fn named(name: &'static str) -> SocketAddr {
    serve(move |_req| async move { Response::new(Full::new(Bytes::from(name))) }).await
}

/// Counts, shared between a test and its upstream.
pub type Counter = Arc<AtomicUsize>;

//! Hot reload in `mesh run`, as a user sees it: the real binary, two upstreams answering `v1`
//! and `v2`, a client sending requests the whole time, and config files rewritten the way editors
//! and Kubernetes rewrite them. A route change shows within 2 s, and no request fails.

use std::{
    convert::Infallible,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
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
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

/// DESIGN.md's promise for a reload: seen within this long.
const SWITCH: Duration = Duration::from_secs(2);

// === fixtures ===

/// A fresh folder under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mesh-reload-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `reviews` service: two endpoints labelled `version: v1` and `v2`, and their subsets.
fn registry_yaml(v1: SocketAddr, v2: SocketAddr) -> String {
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
"#,
        v1.port(),
        v2.port()
    )
}

/// All of `reviews` to one subset.
fn route_yaml(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\n\
         spec:\n  hosts: [reviews]\n  http:\n  - route: [{{destination: {{host: reviews, subset: {subset}}}}}]\n"
    )
}

/// The route to v2 with a misspelt field on line 8: Istio's admission would refuse it.
fn bad_route_yaml() -> String {
    route_yaml("v2") + "  tpc: []\n"
}

/// What editors do: write a temporary file beside the target, then rename it over.
fn rename_over(target: &Path, text: &str) {
    let tmp = target.with_file_name(".vs.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

/// A server answering 200 with `name`.
async fn upstream(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

// === the proxy ===

/// `mesh run`, killed on drop; its stderr is collected as it comes (a full pipe would block it).
struct Mesh {
    child: Child,
    admin: SocketAddr,
    outbound: SocketAddr,
    stderr: Arc<Mutex<String>>,
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

/// Starts `mesh run --config CONFIG --outbound --admin EXTRA...` and waits (up to 10 s) for
/// `/ready`.
async fn start(config: &Path, extra: &[&str]) -> Mesh {
    let (admin, outbound) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--outbound", &outbound.to_string()])
        .args(["--admin", &admin.to_string()])
        // One worker (current-thread scheduler): reloads must not need a second thread.
        .args(["--concurrency", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mesh");
    let stderr = Arc::new(Mutex::new(String::new()));
    let pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let mut mesh = Mesh {
        child,
        admin,
        outbound,
        stderr,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = mesh.child.try_wait().unwrap() {
            panic!("mesh run exited early ({status}): {}", mesh.stderr());
        }
        if let Ok((StatusCode::OK, _)) = get(&format!("http://{admin}/ready")).await {
            return mesh;
        }
        assert!(Instant::now() < deadline, "mesh run not ready within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Mesh {
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    async fn config_dump(&self) -> Value {
        let (status, body) = get(&format!("http://{}/config_dump", self.admin))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `/config_dump` until `done` holds (up to 3 s); returns the dump that satisfied it.
    async fn config_dump_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let dump = self.config_dump().await;
            if done(&dump) {
                return dump;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 3 s; config_dump: {dump}\nstderr: {}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn get(uri: &str) -> Result<(StatusCode, String), String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::get(uri).body(Full::default()).unwrap();
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

// === the client ===

/// One client sending `GET http://reviews/` through the outbound listener, one request after the
/// other on a kept-alive connection, until stopped. Records every answer.
struct Traffic {
    stop: Arc<AtomicBool>,
    latest: watch::Receiver<(usize, String)>,
    task: JoinHandle<Log>,
}

#[derive(Debug, Default)]
struct Log {
    /// The bodies of the 200 answers, in order.
    bodies: Vec<String>,
    /// Everything else: status and body, or the client's error.
    failures: Vec<String>,
}

impl Traffic {
    fn start(outbound: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, latest) = watch::channel((0, String::new()));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut log = Log::default();
            while !stopping.load(Ordering::Relaxed) {
                let req = Request::get(format!("http://{outbound}/reviews/0"))
                    .header("host", "reviews")
                    .body(Full::default())
                    .unwrap();
                let answer = async {
                    let res = client.request(req).await.map_err(|e| e.to_string())?;
                    let status = res.status();
                    let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>((
                        status,
                        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                    ))
                };
                match tokio::time::timeout(Duration::from_secs(5), answer).await {
                    Ok(Ok((StatusCode::OK, body))) => {
                        log.bodies.push(body.clone());
                        let _ = tx.send((log.bodies.len(), body));
                    }
                    Ok(Ok((status, body))) => log.failures.push(format!("{status}: {body}")),
                    Ok(Err(e)) => log.failures.push(e),
                    Err(_) => log.failures.push("timed out after 5 s".into()),
                }
                // A steady stream, not a flood: the machine is shared with builds.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            log
        });
        Traffic { stop, latest, task }
    }

    /// Waits for the first answer (the listener serves).
    async fn first(&mut self) -> String {
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            self.latest.wait_for(|(n, _)| *n > 0),
        )
        .await
        .expect("no answer within 5 s")
        .expect("client task ended");
        got.1.clone()
    }

    /// Waits up to [`SWITCH`] for an answer `body`; returns how long it took.
    async fn switched_to(&mut self, body: &str, since: Instant) -> Duration {
        let waited = tokio::time::timeout(SWITCH, self.latest.wait_for(|(_, b)| b == body)).await;
        assert!(waited.is_ok(), "responses not `{body}` within {SWITCH:?}");
        since.elapsed()
    }

    /// `n` more answers, whatever they are.
    async fn more(&mut self, n: usize) {
        let now = self.latest.borrow().0;
        tokio::time::timeout(
            Duration::from_secs(5),
            self.latest.wait_for(|(m, _)| *m >= now + n),
        )
        .await
        .expect("the client stalled")
        .expect("client task ended");
    }

    async fn stop(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

impl Log {
    /// No request failed, and once `to` was answered nothing else was.
    fn assert_clean_switch(&self, from: &str, to: &str) {
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed: {:?}",
            self.failures.len(),
            self.failures.len() + self.bodies.len(),
            &self.failures[..self.failures.len().min(5)]
        );
        let first = self.bodies.iter().position(|b| b == to);
        let first = first.unwrap_or_else(|| panic!("never answered `{to}`"));
        assert!(
            self.bodies[..first].iter().all(|b| b == from),
            "{:?}",
            self.bodies
        );
        assert!(
            self.bodies[first..].iter().all(|b| b == to),
            "`{from}` after `{to}`: the swap was not atomic"
        );
    }
}

fn version(dump: &Value) -> u64 {
    dump["version"].as_u64().expect("a version")
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_over_save_switches_the_route_without_a_failed_request() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let dir = TempDir::new("rename");
    std::fs::write(dir.path("registry.yaml"), registry_yaml(v1, v2)).unwrap();
    std::fs::write(dir.path("vs.yaml"), route_yaml("v1")).unwrap();
    let mesh = start(&dir.0, &[]).await;
    let before = mesh.config_dump().await;
    assert_eq!(before["watching"], true, "{before}");
    assert_eq!(before["last_reload"], Value::Null, "{before}");

    let mut traffic = Traffic::start(mesh.outbound);
    assert_eq!(traffic.first().await, "v1");
    traffic.more(20).await;

    let saved = Instant::now();
    rename_over(&dir.path("vs.yaml"), &route_yaml("v2"));
    let took = traffic.switched_to("v2", saved).await;
    traffic.more(50).await;
    let log = traffic.stop().await;
    log.assert_clean_switch("v1", "v2");
    eprintln!("switched in {took:?}; {} requests", log.bodies.len());

    let after = mesh.config_dump().await;
    assert!(version(&after) > version(&before), "{after}");
    assert_eq!(after["last_reload"]["result"], "success", "{after}");
    assert_eq!(after["last_reload_error"], Value::Null, "{after}");
    let err = mesh.stderr();
    assert!(
        err.contains(&format!(
            "mesh run: config reloaded (version {})",
            version(&after)
        )),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_write_keeps_the_config_and_says_why_until_a_good_one() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let dir = TempDir::new("invalid");
    std::fs::write(dir.path("registry.yaml"), registry_yaml(v1, v2)).unwrap();
    let vs = dir.path("vs.yaml");
    std::fs::write(&vs, route_yaml("v1")).unwrap();
    let mesh = start(&dir.0, &[]).await;
    let before = mesh.config_dump().await;
    let mut traffic = Traffic::start(mesh.outbound);
    assert_eq!(traffic.first().await, "v1");

    // A plain overwrite, with an error: nothing changes but the report.
    std::fs::write(&vs, bad_route_yaml()).unwrap();
    let dump = mesh
        .config_dump_until("last_reload_error", |d| !d["last_reload_error"].is_null())
        .await;
    let error = &dump["last_reload_error"];
    let lines: Vec<&str> = error["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let line = lines
        .iter()
        .find(|l| l.contains(": error: "))
        .unwrap_or_else(|| panic!("no error line: {dump}"));
    assert!(line.contains("vs.yaml:8:3: error"), "{line}");
    assert!(line.contains("tpc"), "{line}");
    assert_eq!(error["diagnostics"][0]["line"], 8, "{dump}");
    assert!(
        error["message"].as_str().unwrap().contains("kept version"),
        "{dump}"
    );
    assert_eq!(dump["last_reload"]["result"], "error", "{dump}");
    assert_eq!(
        version(&dump),
        version(&before),
        "a rejected reload changed the version"
    );
    traffic.more(20).await;
    assert_eq!(traffic.latest.borrow().1, "v1");

    // The fix, again a plain overwrite: the route changes and the error goes.
    let saved = Instant::now();
    std::fs::write(&vs, route_yaml("v2")).unwrap();
    traffic.switched_to("v2", saved).await;
    traffic.more(20).await;
    let log = traffic.stop().await;
    log.assert_clean_switch("v1", "v2");
    let dump = mesh.config_dump().await;
    assert_eq!(dump["last_reload_error"], Value::Null, "{dump}");
    assert_eq!(dump["last_reload"]["result"], "success", "{dump}");
    assert!(version(&dump) > version(&before), "{dump}");

    // Both outcomes are counted, for dashboards and alerts.
    let (_, metrics) = get(&format!("http://{}/metrics", mesh.admin))
        .await
        .unwrap();
    for result in ["error", "success"] {
        let series = format!("mesh_config_reload_total{{result=\"{result}\"}} ");
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|n| n.trim().parse::<f64>().ok());
        assert!(count.is_some_and(|n| n >= 1.0), "no {series}in:\n{metrics}");
    }

    let err = mesh.stderr();
    assert!(err.contains("mesh run: config reload rejected"), "{err}");
    assert!(err.contains("vs.yaml:8:3: error"), "{err}");
    assert!(err.contains("mesh run: config reloaded (version"), "{err}");
}

/// A Kubernetes ConfigMap volume: each key a symlink through `..data`, `..data` a symlink to a
/// timestamped folder; an update renames a new `..data` over the old one in one step.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;

    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let dir = TempDir::new("configmap");
    let write_data = |stamp: &str, subset: &str| {
        let data = dir.path(stamp);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("registry.yaml"), registry_yaml(v1, v2)).unwrap();
        std::fs::write(data.join("vs.yaml"), route_yaml(subset)).unwrap();
    };
    write_data("..2026_01_01_00_00_00.1", "v1");
    symlink("..2026_01_01_00_00_00.1", dir.path("..data")).unwrap();
    for key in ["registry.yaml", "vs.yaml"] {
        symlink(format!("..data/{key}"), dir.path(key)).unwrap();
    }
    let mesh = start(&dir.0, &[]).await;
    let mut traffic = Traffic::start(mesh.outbound);
    assert_eq!(traffic.first().await, "v1");

    // What the kubelet does.
    write_data("..2026_01_01_00_01_00.2", "v2");
    let saved = Instant::now();
    symlink("..2026_01_01_00_01_00.2", dir.path("..data_tmp")).unwrap();
    std::fs::rename(dir.path("..data_tmp"), dir.path("..data")).unwrap();
    std::fs::remove_dir_all(dir.path("..2026_01_01_00_00_00.1")).unwrap();

    traffic.switched_to("v2", saved).await;
    traffic.more(20).await;
    traffic.stop().await.assert_clean_switch("v1", "v2");
    let dump = mesh.config_dump().await;
    assert_eq!(dump["last_reload_error"], Value::Null, "{dump}");
    assert_eq!(dump["files"].as_array().unwrap().len(), 2, "{dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_watch_keeps_the_first_config() {
    let (v1, v2) = (upstream("v1").await, upstream("v2").await);
    let dir = TempDir::new("nowatch");
    std::fs::write(dir.path("registry.yaml"), registry_yaml(v1, v2)).unwrap();
    std::fs::write(dir.path("vs.yaml"), route_yaml("v1")).unwrap();
    let mesh = start(&dir.0, &["--no-watch"]).await;
    assert_eq!(mesh.config_dump().await["watching"], false);
    let mut traffic = Traffic::start(mesh.outbound);
    assert_eq!(traffic.first().await, "v1");

    std::fs::write(dir.path("vs.yaml"), route_yaml("v2")).unwrap();
    // Several debounce periods and then some: a watching proxy would have switched by now (the
    // tests above switch well within this).
    tokio::time::sleep(Duration::from_millis(800)).await;
    traffic.more(10).await;
    let log = traffic.stop().await;
    assert!(log.failures.is_empty(), "{:?}", log.failures);
    assert!(log.bodies.iter().all(|b| b == "v1"), "{:?}", log.bodies);
}

//! Sidecar mode, end to end, with the real binaries: each Bookinfo service is a
//! `bookinfo serve` process that knows nothing of the mesh, behind its own `mesh run` sidecar
//! (inbound: mTLS with a `mesh ca` certificate, then the app; outbound: the app's HTTP proxy),
//! plus a `mesh run` ingress gateway, wired by WorkloadEntries at the sidecars' inbound ports.
//! The scenarios then switch live (every proxy watches the config folder), and a real HTTP
//! client checks through the gateway what a person sees: all-v1, jason-v2, mtls-strict and
//! deny-ratings. A second test runs `sidecars.sh` itself and stops it with Ctrl-C (SIGINT).
#![cfg(unix)]

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Read},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bookinfo::{
    scenarios,
    services::{productpage::REVIEWS_UNAVAILABLE, reviews::RATINGS_UNAVAILABLE},
    workloads::{WORKLOADS, Workload, workload_entries},
};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// How long a process may take to say it is ready (a debug build, 13 processes, 2 cores).
const START: Duration = Duration::from_secs(30);
/// How long every proxy may take to reload a changed config folder.
const RELOAD: Duration = Duration::from_secs(15);

// === The binaries ===

/// The `mesh` binary of this checkout (mesh-proxy's), built if needed.
///
/// Another package's binary has no `CARGO_BIN_EXE_*` variable. `cargo test --workspace`
/// builds every binary before it runs a test, so `mesh` is then beside this test's own
/// folder (`target/<profile>/mesh`), newer than its sources, and is used as it is (building
/// it again here would resolve other features and replace it while other tests may run it).
/// Otherwise (`cargo test -p bookinfo`, or sources changed since) this runs
/// `cargo build -p mesh-proxy --bin mesh` and uses the binary cargo reports.
fn mesh_binary() -> &'static Path {
    static MESH: OnceLock<PathBuf> = OnceLock::new();
    MESH.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from target/<profile>/deps");
        let beside = profile_dir.join(format!("mesh{}", std::env::consts::EXE_SUFFIX));
        let built = std::fs::metadata(&beside).and_then(|m| m.modified()).ok();
        match (built, newest_mesh_source()) {
            (Some(built), Some(source)) if built >= source => beside,
            _ => build_mesh(),
        }
    })
}

/// The workspace's root folder.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// When the newest file `mesh` is built from was changed.
fn newest_mesh_source() -> Option<SystemTime> {
    fn newest(path: &Path) -> Option<SystemTime> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_dir() {
            return meta.modified().ok();
        }
        std::fs::read_dir(path)
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| newest(&e.path()))
            .max()
    }
    let root = workspace_root();
    ["mesh-core", "mesh-config", "mesh-tower", "mesh-proxy"]
        .iter()
        .flat_map(|c| [root.join(c).join("src"), root.join(c).join("Cargo.toml")])
        .chain([root.join("Cargo.toml"), root.join("Cargo.lock")])
        .filter_map(|p| newest(&p))
        .max()
}

/// `cargo build -p mesh-proxy --bin mesh` in this test's profile; the path cargo reports.
fn build_mesh() -> PathBuf {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "-p", "mesh-proxy", "--bin", "mesh"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    let out = cargo.output().expect("running cargo to build mesh");
    assert!(
        out.status.success(),
        "cargo build -p mesh-proxy failed (its errors are above)"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "mesh")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported no mesh executable")
}

fn bookinfo_binary() -> &'static str {
    env!("CARGO_BIN_EXE_bookinfo")
}

// === Processes ===

/// A child process whose output (stdout and stderr, line by line) is kept, and which is killed
/// when dropped.
struct Proc {
    name: String,
    child: Child,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let readers: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        // Read to the end, always: a full pipe would stop the process.
        for reader in readers {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { break };
                    let (log, changed) = &*lines;
                    log.lock().unwrap().push(line);
                    changed.notify_all();
                }
            });
        }
        Proc {
            name: name.to_owned(),
            child,
            lines,
        }
    }

    /// The first line that contains `needle`, waiting for it up to `timeout`; panics with the
    /// log if the process stops first.
    fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let (log, changed) = &*self.lines;
        let mut seen = log.lock().unwrap();
        loop {
            if let Some(line) = seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} stopped ({status}) before printing {needle:?}:\n{}",
                    self.name,
                    seen.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not print {needle:?} within {timeout:?}:\n{}",
                self.name,
                seen.join("\n")
            );
            seen = changed
                .wait_timeout(seen, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }

    fn tail(&self, n: usize) -> String {
        let log = self.lines.0.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Processes that print their logs when the test fails.
#[derive(Default)]
struct Fleet(Vec<Proc>);

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.0 {
                eprintln!("--- {} (last lines) ---\n{}", p.name, p.tail(30));
            }
        }
    }
}

/// A fresh folder under the system's temporary folder.
fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bookinfo-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `mesh ARGS` to completion; it must succeed.
fn mesh(args: &[&str]) {
    let out = Command::new(mesh_binary()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "mesh {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A loopback port held until dropped, so that nothing else takes it meanwhile.
fn reserve() -> TcpListener {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
}

// === Bookinfo in sidecar mode ===

/// One workload: its app, its sidecar's listeners.
struct Sidecar {
    workload: Workload,
    inbound: SocketAddr,
    outbound: Option<SocketAddr>,
}

/// Bookinfo's 13 processes, and their config folder.
struct SidecarMode {
    dir: PathBuf,
    config: PathBuf,
    gateway: SocketAddr,
    sidecars: Vec<Sidecar>,
    /// Every proxy's admin address, by name.
    admins: Vec<(String, SocketAddr)>,
    fleet: Fleet,
}

/// The base config's files, as in `config/`.
const BASE: [&str; 3] = ["services.yaml", "gateway.yaml", "destination-rules.yaml"];

impl SidecarMode {
    /// Starts everything with `scenario`; returns once every process says it is ready.
    fn start(scenario: &str) -> SidecarMode {
        let dir = temp_dir("sidecars-test");
        let config = dir.join("config");
        std::fs::create_dir_all(&config).unwrap();

        // Identities: a CA, one certificate per service account, and the gateway's.
        let ca = dir.join("ca");
        mesh(&["ca", "init", "--dir", ca.to_str().unwrap()]);
        let issue = |namespace: &str, sa: &str| {
            let out = dir.join("identities").join(sa);
            mesh(&[
                "ca",
                "issue",
                "--dir",
                ca.to_str().unwrap(),
                "--namespace",
                namespace,
                "--service-account",
                sa,
                "--out",
                out.to_str().unwrap(),
            ]);
            out
        };
        let gateway_identity = issue("istio-system", "istio-ingressgateway-service-account");
        for app in ["productpage", "details", "reviews", "ratings"] {
            issue("default", &format!("bookinfo-{app}"));
        }

        // Ports the YAML and the apps must know in advance, held until the apps have bound
        // theirs (port 0), so that no app takes one of them.
        let held: Vec<(Workload, TcpListener, Option<TcpListener>)> = WORKLOADS
            .iter()
            .map(|w| (*w, reserve(), (!w.calls().is_empty()).then(reserve)))
            .collect();
        let gateway_held = reserve();
        let gateway = gateway_held.local_addr().unwrap();
        let sidecars: Vec<Sidecar> = held
            .iter()
            .map(|(w, inbound, outbound)| Sidecar {
                workload: *w,
                inbound: inbound.local_addr().unwrap(),
                outbound: outbound.as_ref().map(|l| l.local_addr().unwrap()),
            })
            .collect();

        // The config: the base, the gateway on its port, the registry, the scenario.
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for file in BASE {
            let mut yaml = std::fs::read_to_string(base.join(file)).unwrap();
            if file == "gateway.yaml" {
                assert!(yaml.contains("number: 8080"), "{yaml}");
                yaml = yaml.replace("number: 8080", &format!("number: {}", gateway.port()));
            }
            std::fs::write(config.join(file), yaml).unwrap();
        }
        std::fs::write(
            config.join("workloads.yaml"),
            workload_entries(sidecars.iter().map(|s| (&s.workload, s.inbound))),
        )
        .unwrap();
        write_scenario(&config, scenario);

        // The apps, in plain text on ports of their own.
        let mut fleet = Fleet::default();
        let mut apps = Vec::new();
        for s in &sidecars {
            let w = s.workload;
            let mut cmd = Command::new(bookinfo_binary());
            cmd.args(["serve", "--service", w.app, "--version", w.version])
                .args(["--listen", "127.0.0.1:0"]);
            if let Some(outbound) = s.outbound {
                cmd.arg("--upstream-proxy")
                    .arg(format!("http://{outbound}"));
            }
            let mut app = Proc::spawn(&w.name(), &mut cmd);
            let line = app.wait_line(" listening on ", START);
            let addr: SocketAddr = line
                .split(" listening on ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no address in {line:?}"));
            apps.push(addr);
            fleet.0.push(app);
        }
        drop(held);
        drop(gateway_held);

        // A sidecar per app, and the gateway.
        let first_sidecar = fleet.0.len();
        for (s, app) in sidecars.iter().zip(&apps) {
            let w = s.workload;
            let mut cmd = Command::new(mesh_binary());
            cmd.arg("run")
                .arg("--config")
                .arg(&config)
                .args(["--inbound", &s.inbound.to_string()])
                .args(["--app", &app.to_string()])
                .args(["--admin", "127.0.0.1:0"])
                .args([
                    "--workload-labels",
                    &format!("app={},version={}", w.app, w.version),
                ])
                .args(["--service-account", &w.service_account()])
                .arg("--identity-dir")
                .arg(dir.join("identities").join(w.service_account()))
                .args(["--concurrency", "1"]);
            if let Some(outbound) = s.outbound {
                cmd.args(["--outbound", &outbound.to_string()]);
            }
            fleet
                .0
                .push(Proc::spawn(&format!("{}-sidecar", w.name()), &mut cmd));
        }
        let mut cmd = Command::new(mesh_binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .args(["--gateway", "default/bookinfo-gateway", "--gateway-bind"])
            .args(["127.0.0.1", "--admin", "127.0.0.1:0"])
            .args([
                "--workload-labels",
                "istio=ingressgateway,app=istio-ingressgateway",
            ])
            .args(["--service-account", "istio-ingressgateway-service-account"])
            .arg("--identity-dir")
            .arg(&gateway_identity)
            .args(["--concurrency", "1"]);
        fleet.0.push(Proc::spawn("istio-ingressgateway", &mut cmd));

        let mut admins = Vec::new();
        for p in &mut fleet.0[first_sidecar..] {
            let ready = p.wait_line("mesh run: ready:", START);
            let admin = ready
                .split(": ready: ")
                .nth(1)
                .into_iter()
                .flat_map(|l| l.split(", "))
                .find_map(|part| part.strip_prefix("admin "))
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("no admin address in {ready:?}"));
            admins.push((p.name.clone(), admin));
        }
        SidecarMode {
            dir,
            config,
            gateway,
            sidecars,
            admins,
            fleet,
        }
    }

    fn sidecar(&self, app: &str, version: &str) -> &Sidecar {
        self.sidecars
            .iter()
            .find(|s| s.workload.app == app && s.workload.version == version)
            .unwrap()
    }

    /// Puts exactly `names` in the config folder (as `scenario-NAME.yaml`, removing the
    /// others) and waits until every proxy's `/config_dump` lists those files and no others.
    async fn switch(&self, names: &[&str]) {
        for entry in std::fs::read_dir(&self.config).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with("scenario-") {
                std::fs::remove_file(self.config.join(name)).unwrap();
            }
        }
        for name in names {
            write_scenario(&self.config, name);
        }
        let mut want: BTreeSet<String> = BASE.iter().map(|s| s.to_string()).collect();
        want.insert("workloads.yaml".into());
        want.extend(names.iter().map(|n| format!("scenario-{n}.yaml")));
        let client = http_client();
        let deadline = Instant::now() + RELOAD;
        for (proxy, admin) in &self.admins {
            loop {
                let dump = get(&client, *admin, "/config_dump", &[]).await;
                let dump: serde_json::Value = serde_json::from_str(&dump.1).unwrap();
                let files: BTreeSet<String> = dump["files"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|f| f.as_str())
                    .filter_map(|f| Path::new(f).file_name())
                    .map(|f| f.to_string_lossy().into_owned())
                    .collect();
                if files == want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{proxy} did not reload {want:?} within {RELOAD:?}: it has {files:?}, \
                     last reload error: {}",
                    dump["last_reload_error"]
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for SidecarMode {
    fn drop(&mut self) {
        // The processes first (with their logs if the test failed), then their folder.
        drop(std::mem::take(&mut self.fleet));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes scenario `name` into `config` as `scenario-NAME.yaml`, through a temporary name the
/// proxies do not read, so that no reload sees half a file.
fn write_scenario(config: &Path, name: &str) {
    let yaml = scenarios::find(name)
        .unwrap_or_else(|| panic!("no scenario {name}"))
        .yaml;
    let tmp = config.join(format!(".scenario-{name}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, config.join(format!("scenario-{name}.yaml"))).unwrap();
}

// === A browser, and what the page shows ===

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET http://addr/path` with `headers`: status and body. Transport errors are `Err`.
async fn try_get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, String), String> {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let exchange = async {
        let res = client
            .request(req.body(Full::default()).unwrap())
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    try_get(client, addr, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The product page through the gateway: it must be there, with the book's details.
async fn page(client: &HttpClient, gateway: SocketAddr, cookie: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (status, body) = get(client, gateway, "/productpage", &headers).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<title>Simple Bookstore App</title>"),
        "{body}"
    );
    assert!(body.contains("<h4>Book Details</h4>"), "{body}");
    body
}

/// Signs in through the gateway's `/login`, as the page's form does; the cookie to send.
async fn sign_in(client: &HttpClient, gateway: SocketAddr, name: &str) -> String {
    let req = Request::post(format!("http://{gateway}/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::REFERER, format!("http://{gateway}/productpage"))
        .body(Full::from(format!("username={name}&passwd=anything")))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 302);
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// The reviews block, as a person reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reviews {
    /// v1.
    NoStars,
    /// v2.
    BlackStars,
    /// v3.
    RedStars,
    /// v2 or v3 without ratings: "Ratings service is currently unavailable".
    RatingsUnavailable,
    /// "Sorry, product reviews are currently unavailable for this book."
    Unavailable,
}

/// Reads the reviews block, checking that the stars agree with "Reviews served by".
fn reviews(page: &str) -> Reviews {
    if page.contains(REVIEWS_UNAVAILABLE) {
        return Reviews::Unavailable;
    }
    let black = page.matches("<font color=\"black\">").count();
    let red = page.matches("<font color=\"red\">").count();
    let unavailable = page.matches(RATINGS_UNAVAILABLE).count();
    let by = |v: &str| page.contains(&format!("Reviews served by: reviews-{v}"));
    match (by("v1"), by("v2"), by("v3")) {
        (true, false, false) if (black, red, unavailable) == (0, 0, 0) => Reviews::NoStars,
        (false, true, false) if (black, red, unavailable) == (2, 0, 0) => Reviews::BlackStars,
        (false, false, true) if (black, red, unavailable) == (0, 2, 0) => Reviews::RedStars,
        (false, true, false) | (false, false, true) if (black, red, unavailable) == (0, 0, 2) => {
            Reviews::RatingsUnavailable
        }
        _ => panic!("a reviews block no version of reviews shows:\n{page}"),
    }
}

/// A request through `proxy` (a sidecar's outbound listener) to `host`, as an application
/// with `HTTP_PROXY` sends it: status and body.
async fn via_proxy(proxy: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    get(&http_client(), proxy, path, &[("host", host)]).await
}

// === The tests ===

#[tokio::test(flavor = "multi_thread")]
async fn the_scenarios_work_with_each_service_behind_its_own_sidecar() {
    // Building mesh (when it is not built yet) is not the scenarios' time.
    mesh_binary();
    let started = Instant::now();
    let bookinfo = SidecarMode::start("all-v1");
    bookinfo.switch(&["all-v1"]).await;
    let gw = bookinfo.gateway;
    let client = http_client();
    let productpage_proxy = bookinfo.sidecar("productpage", "v1").outbound.unwrap();
    let details_inbound = bookinfo.sidecar("details", "v1").inbound;

    // all-v1: no stars, on every load (with no rule, two loads in three would have stars).
    for _ in 0..6 {
        assert_eq!(reviews(&page(&client, gw, None).await), Reviews::NoStars);
    }
    // PERMISSIVE (no PeerAuthentication yet): a plain-text client reaches a sidecar's app.
    let (status, body) = get(&http_client(), details_inbound, "/details/0", &[]).await;
    assert_eq!(status, 200, "{body}");
    // From inside the mesh, ratings answers.
    let (status, body) = via_proxy(productpage_proxy, "ratings:9080", "/ratings/0").await;
    assert_eq!(status, 200, "{body}");

    // jason-v2: jason sees black stars, everyone else none.
    bookinfo.switch(&["jason-v2"]).await;
    let jason = sign_in(&client, gw, "jason").await;
    for _ in 0..3 {
        assert_eq!(
            reviews(&page(&client, gw, Some(&jason)).await),
            Reviews::BlackStars
        );
        assert_eq!(reviews(&page(&client, gw, None).await), Reviews::NoStars);
    }
    let other = sign_in(&client, gw, "someone").await;
    assert_eq!(
        reviews(&page(&client, gw, Some(&other)).await),
        Reviews::NoStars
    );

    // mtls-strict: every sidecar refuses plain text, and the page still works (mTLS between
    // the sidecars and from the gateway).
    bookinfo.switch(&["mtls-strict"]).await;
    for s in &bookinfo.sidecars {
        let refused = try_get(&http_client(), s.inbound, "/health", &[]).await;
        assert!(
            refused.is_err(),
            "{} accepted plain text under STRICT: {refused:?}",
            s.workload.name()
        );
    }
    let page_now = page(&http_client(), gw, None).await;
    assert_ne!(reviews(&page_now), Reviews::Unavailable, "{page_now}");

    // deny-ratings (with jason-v2, so that jason's page is v2's): ratings answers 403 to
    // anyone, and jason's stars become "Ratings service is currently unavailable".
    bookinfo.switch(&["jason-v2", "deny-ratings"]).await;
    let (status, body) = via_proxy(productpage_proxy, "ratings:9080", "/ratings/0").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body, "RBAC: access denied");
    assert_eq!(
        reviews(&page(&client, gw, Some(&jason)).await),
        Reviews::RatingsUnavailable
    );
    assert_eq!(reviews(&page(&client, gw, None).await), Reviews::NoStars);

    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

/// A block of `n` consecutive loopback ports nothing listens on, outside Linux's ephemeral
/// range (where other tests' port-0 listeners land).
fn free_block(n: u16) -> u16 {
    let start = 20_000 + (std::process::id() % 100) as u16 * 100;
    (0..100u16)
        .map(|i| 20_000 + (start - 20_000 + i * 100) % 12_000)
        .find(|base| {
            let held: Vec<_> = (*base..base + n)
                .map_while(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).ok())
                .collect();
            held.len() == usize::from(n)
        })
        .expect("no block of free loopback ports between 20000 and 32000")
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_sh_serves_the_page_and_ctrl_c_stops_every_process() {
    let work = temp_dir("sidecars-sh-test");
    let base = free_block(61);
    let gateway_port = reserve().local_addr().unwrap().port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sidecars.sh");
    let mut fleet = Fleet::default();
    fleet.0.push(Proc::spawn(
        "sidecars.sh",
        Command::new("bash")
            .arg(&script)
            .arg("reviews-v3")
            .env("MESH", mesh_binary())
            .env("BOOKINFO", bookinfo_binary())
            .env("WORK_DIR", &work)
            .env("GATEWAY_PORT", gateway_port.to_string())
            .env("PORT_BASE", base.to_string()),
    ));
    let script_proc = &mut fleet.0[0];
    script_proc.wait_line("Press Ctrl-C to stop.", START);
    let url = script_proc.wait_line("Open http://", START);
    assert_eq!(
        url.trim(),
        format!("Open http://127.0.0.1:{gateway_port}/productpage")
    );

    let gw = SocketAddr::from((Ipv4Addr::LOCALHOST, gateway_port));
    let client = http_client();
    assert_eq!(reviews(&page(&client, gw, None).await), Reviews::RedStars);
    // The call the banner suggests, from inside the mesh through productpage's sidecar.
    let (status, body) = via_proxy(
        SocketAddr::from((Ipv4Addr::LOCALHOST, base + 2)),
        "ratings:9080",
        "/ratings/0",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(client);

    // Ctrl-C: the script stops what it started, and exits 0. A shell that starts with SIGINT
    // ignored cannot trap it (POSIX), and a test run from a background job of a shell without
    // job control inherits exactly that: there, SIGTERM (trapped the same way) stands in.
    let pid = script_proc.child.id().to_string();
    let signal = if sigint_ignored() { "TERM" } else { "INT" };
    let kill = Command::new("bash")
        .args(["-c", &format!("kill -{signal} {pid}")])
        .status()
        .unwrap();
    assert!(kill.success());
    script_proc.wait_line("Stopped.", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = script_proc.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "sidecars.sh did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let used = (0..6u16)
        .flat_map(|i| (0..4u16).map(move |k| base + i * 10 + k))
        .chain([base + 60, gateway_port]);
    for port in used {
        assert!(
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err(),
            "something still listens on {port} after Ctrl-C"
        );
    }
    drop(fleet);
    let _ = std::fs::remove_dir_all(&work);
}

/// Whether this process (and so a child it starts) has SIGINT ignored: bit 1 of `SigIgn` in
/// `/proc/self/status` (signal 2).
fn sigint_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << 1) != 0)
}

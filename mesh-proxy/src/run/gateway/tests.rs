use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
};

use http::Uri;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn mesh(yaml: &str) -> Arc<CompiledMesh> {
    mesh_config::Loader::new()
        .namespace("istio-system")
        .check_str("gateways.yaml", yaml)
        .into_mesh()
        .expect("valid config")
        .compiled()
        .clone()
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-gateway-unit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for `name` and its key, as PEM.
fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

const GATEWAYS: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
  - port: {number: 8443, name: passthrough, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 9000, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: internal, namespace: edge}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http-internal, protocol: HTTP}
    hosts: [internal.example.com]
  - port: {number: 9000, name: mongo, protocol: MONGO}
    hosts: ["*"]
  - port: {number: 8443, name: tcp-clash, protocol: TCP}
    hosts: ["*"]
  - port: {number: 7443, name: mesh-only, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 9443, name: bound, protocol: TCP}
    bind: 127.0.0.2
    hosts: ["*"]
"#;

fn settings(m: &CompiledMesh, names: &[String], dir: Option<&Path>) -> Settings {
    Settings {
        keys: resolve_names(m, names, "istio-system").unwrap(),
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        credentials_dir: dir.map(Path::to_path_buf),
    }
}

/// The listeners planned for the Gateways `names`, or the first one's error.
fn planned(
    m: &CompiledMesh,
    names: &[String],
    dir: Option<&Path>,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<(SocketAddr, Site)>, String> {
    plan(m, &settings(m, names, dir), warn)
        .into_iter()
        .map(|(addr, site)| site.map(|s| (addr, s)))
        .collect()
}

#[test]
fn names_resolve_in_the_namespace_and_unknown_ones_list_the_known() {
    let m = mesh(GATEWAYS);
    let names = [
        "public".to_owned(),
        "edge/internal".to_owned(),
        "istio-system/public".to_owned(),
    ];
    assert_eq!(
        resolve_names(&m, &names, "istio-system").unwrap(),
        ["istio-system/public", "edge/internal"]
    );
    let err = resolve_names(&m, &["internal".to_owned()], "istio-system").unwrap_err();
    assert!(err.contains("--gateway internal"), "{err}");
    assert!(err.contains("no Gateway istio-system/internal"), "{err}");
    assert!(
        err.contains("the config has: edge/internal, istio-system/public"),
        "{err}"
    );
    let err = resolve_names(&CompiledMesh::default(), &["x".to_owned()], "ns").unwrap_err();
    assert!(err.contains("the config has no Gateway"), "{err}");
}

#[test]
fn servers_group_by_address_and_port_one_family_each() {
    let m = mesh(GATEWAYS);
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("bookinfo-cert")).unwrap();
    let (cert, key) = self_signed("bookinfo.example.com");
    std::fs::write(dir.join("bookinfo-cert/tls.crt"), cert).unwrap();
    std::fs::write(dir.join("bookinfo-cert/tls.key"), key).unwrap();
    let names = ["public".to_owned(), "edge/internal".to_owned()];
    let mut warnings = Vec::new();
    let sites = planned(&m, &names, Some(&dir), &mut |w| warnings.push(w)).unwrap();
    let summary: Vec<(String, String)> = sites
        .iter()
        .map(|(addr, site)| {
            let what = match site {
                Site::Http(s) => format!("http {}", s.list.len()),
                Site::Tls(s) => format!(
                    "tls {}",
                    s.configs
                        .iter()
                        .map(|c| if c.is_some() { "terminate" } else { "pass" })
                        .collect::<Vec<_>>()
                        .join("+")
                ),
                Site::Tcp(s) => format!("tcp {}", s.port_name),
            };
            (addr.to_string(), what)
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("127.0.0.1:8080".into(), "http 2".into()),
            ("127.0.0.1:8443".into(), "tls terminate+pass".into()),
            ("127.0.0.1:9000".into(), "tcp tcp".into()),
            ("127.0.0.2:9443".into(), "tcp bound".into()),
        ]
    );
    let warnings = warnings.join("\n");
    assert!(
        warnings.contains("Gateway edge/internal server 8443/tcp-clash (hosts *): not served: port 8443 already serves TLS"),
        "{warnings}"
    );
    assert!(
        warnings.contains("server 9000/mongo (hosts *): not served: port 9000 is TCP and serves its first server only"),
        "{warnings}"
    );
    assert!(
        warnings.contains("server 7443/mesh-only (hosts *): not served: tls.mode ISTIO_MUTUAL"),
        "{warnings}"
    );
}

#[test]
fn certificate_problems_stop_the_start_naming_server_and_file() {
    let m = mesh(GATEWAYS);
    let names = ["public".to_owned()];
    let mut ignore = |_| {};
    let err = planned(&m, &names, None, &mut ignore).unwrap_err();
    assert!(
        err.starts_with("Gateway istio-system/public server 8443/https (hosts bookinfo.example.com): credentialName bookinfo-cert needs --credentials-dir"),
        "{err}"
    );
    let dir = temp_dir();
    let err = planned(&m, &names, Some(&dir), &mut ignore).unwrap_err();
    let missing = dir.join("bookinfo-cert/tls.crt");
    assert!(
        err.contains(&format!("cannot read {}", missing.display())),
        "{err}"
    );
    std::fs::create_dir_all(dir.join("bookinfo-cert")).unwrap();
    std::fs::write(dir.join("bookinfo-cert/tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.join("bookinfo-cert/tls.key"), "not a key").unwrap();
    let err = planned(&m, &names, Some(&dir), &mut ignore).unwrap_err();
    assert!(
        err.contains("tls.crt (serverCertificate): no PEM certificate"),
        "{err}"
    );
    // A key that is not the certificate's.
    let (cert, _) = self_signed("bookinfo.example.com");
    let (_, other_key) = self_signed("other.example.com");
    std::fs::write(dir.join("bookinfo-cert/tls.crt"), cert).unwrap();
    std::fs::write(dir.join("bookinfo-cert/tls.key"), other_key).unwrap();
    let err = planned(&m, &names, Some(&dir), &mut ignore).unwrap_err();
    assert!(err.contains("do not make a usable certificate"), "{err}");
}

#[test]
fn mutual_tls_needs_a_ca_and_reads_secret_layouts() {
    let m = mesh(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mtls}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: MUTUAL, credentialName: bookinfo, subjectAltNames: [client.example.com]}
"#,
    );
    let names = ["mtls".to_owned()];
    let dir = temp_dir();
    // The generic-secret layout: cert, key (and no CA yet).
    std::fs::create_dir_all(dir.join("bookinfo")).unwrap();
    let (cert, key) = self_signed("bookinfo.example.com");
    std::fs::write(dir.join("bookinfo/cert"), &cert).unwrap();
    std::fs::write(dir.join("bookinfo/key"), key).unwrap();
    let err = planned(&m, &names, Some(&dir), &mut |_| {}).unwrap_err();
    assert!(err.contains("tls.mode MUTUAL needs the CA"), "{err}");
    // A separate `NAME-cacert` secret, as Istio reads it.
    std::fs::create_dir_all(dir.join("bookinfo-cacert")).unwrap();
    let (ca, _) = self_signed("ca.example.com");
    std::fs::write(dir.join("bookinfo-cacert/ca.crt"), ca).unwrap();
    let sites = planned(&m, &names, Some(&dir), &mut |_| {}).unwrap();
    let Site::Tls(servers) = &sites[0].1 else {
        panic!("a TLS site");
    };
    let config = servers.configs[0].as_ref().unwrap();
    assert_eq!(
        config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn credential_names_cannot_leave_the_folder() {
    let m = mesh(GATEWAYS);
    let mut server = m
        .gateways
        .iter()
        .find(|s| s.port_name == "https")
        .unwrap()
        .clone();
    for name in ["../etc", "a/b", ""] {
        server.tls.as_mut().unwrap().credential_name = Some(name.into());
        let err = tls::server_config(&server, Some(Path::new("/tmp")), true).unwrap_err();
        assert!(err.contains("is not a secret name"), "{name}: {err}");
    }
}

#[test]
fn https_redirect_location_keeps_path_and_query_and_drops_port_80() {
    let uri: Uri = "/productpage?u=1".parse().unwrap();
    assert_eq!(
        requests::https_location(&uri, "bookinfo.example.com"),
        "https://bookinfo.example.com/productpage?u=1"
    );
    assert_eq!(
        requests::https_location(&uri, "bookinfo.example.com:80"),
        "https://bookinfo.example.com/productpage?u=1"
    );
    assert_eq!(
        requests::https_location(&uri, "bookinfo.example.com:8080"),
        "https://bookinfo.example.com:8080/productpage?u=1"
    );
    assert_eq!(
        requests::https_location(&"/".parse().unwrap(), "[::1]:8080"),
        "https://[::1]:8080/"
    );
}

#[tokio::test]
async fn rewind_replays_the_prefix_then_reads_on() {
    let (mut far, near) = tokio::io::duplex(64);
    let mut s = rewind::Rewind::new(b"hello ".to_vec(), near);
    far.write_all(b"world").await.unwrap();
    drop(far);
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    assert_eq!(all, b"hello world");
}

#[test]
fn describe_names_gateway_port_and_hosts() {
    let m = mesh(GATEWAYS);
    let s = m.gateways.iter().find(|s| s.port_name == "https").unwrap();
    assert_eq!(
        describe(s),
        "Gateway istio-system/public server 8443/https (hosts bookinfo.example.com)"
    );
}

#[test]
fn a_gateway_the_config_no_longer_has_plans_no_listener() {
    let m = mesh(GATEWAYS);
    let settings = Settings {
        keys: vec!["istio-system/gone".into()],
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        credentials_dir: None,
    };
    assert!(plan(&m, &settings, &mut |w| panic!("{w}")).is_empty());
}

#[test]
fn a_certificate_that_does_not_load_spoils_its_listener_only() {
    let m = mesh(GATEWAYS);
    let names = ["public".to_owned()];
    let dir = temp_dir();
    let planned = plan(&m, &settings(&m, &names, Some(&dir)), &mut |_| {});
    let outcome: Vec<(u16, bool)> = planned
        .iter()
        .map(|(addr, site)| (addr.port(), site.is_ok()))
        .collect();
    assert_eq!(outcome, [(8080, true), (8443, false), (9000, true)]);
}

#[test]
fn certificate_folders_are_the_credentials_dir_and_the_files_folders() {
    let m = mesh(&format!(
        "{GATEWAYS}---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: files}
spec:
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, serverCertificate: /etc/certs/a.crt, privateKey: /etc/keys/a.key, caCertificates: ca.crt}
  - port: {number: 8443, name: passthrough, protocol: TLS}
    hosts: [b.example.com]
    tls: {mode: PASSTHROUGH, serverCertificate: /not/read/b.crt}
"#
    ));
    let dir = temp_dir();
    let names = ["public".to_owned(), "files".to_owned()];
    let mut folders: Vec<(String, bool)> =
        cert_watch::folders(&m, &settings(&m, &names, Some(&dir)))
            .into_iter()
            .map(|f| (f.path.display().to_string(), f.recursive))
            .collect();
    folders.sort();
    let mut want = vec![
        (dir.display().to_string(), true),
        (".".into(), false),
        ("/etc/certs".into(), false),
        ("/etc/keys".into(), false),
    ];
    want.sort();
    assert_eq!(folders, want);
}

#[test]
fn reading_a_certificate_is_not_a_change_writing_one_is() {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, MetadataKind, ModifyKind,
        RemoveKind, RenameMode,
    };
    let cases = [
        (EventKind::Access(AccessKind::Open(AccessMode::Any)), false),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            false,
        ),
        (EventKind::Access(AccessKind::Read), false),
        (
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
            false,
        ),
        (
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            true,
        ),
        (EventKind::Modify(ModifyKind::Data(DataChange::Any)), true),
        (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
        (EventKind::Create(CreateKind::File), true),
        (EventKind::Remove(RemoveKind::File), true),
        (EventKind::Any, true),
    ];
    for (kind, change) in cases {
        assert_eq!(cert_watch::is_change(&kind), change, "{kind:?}");
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn edge_gateway(servers: &[String]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: edge}}\nspec:\n  servers:\n{}",
        servers.concat()
    )
}

fn http_server(port: u16) -> String {
    format!("  - port: {{number: {port}, name: http-{port}, protocol: HTTP}}\n    hosts: ['*']\n")
}

fn https_server(port: u16) -> String {
    format!(
        "  - port: {{number: {port}, name: https, protocol: HTTPS}}\n    hosts: [a.example.com]\n    tls: {{mode: SIMPLE, credentialName: a-cert}}\n"
    )
}

#[tokio::test]
async fn an_update_follows_the_config_and_keeps_a_port_whose_certificate_fails() {
    let (http_a, http_b, https) = (free_port(), free_port(), free_port());
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("a-cert")).unwrap();
    let (cert, key) = self_signed("a.example.com");
    std::fs::write(dir.join("a-cert/tls.crt"), &cert).unwrap();
    std::fs::write(dir.join("a-cert/tls.key"), &key).unwrap();
    let handle = MeshHandle::new(mesh(&edge_gateway(&[
        http_server(http_a),
        https_server(https),
    ])));
    let status = Arc::new(Mutex::new(ReloadStatus::new(true)));
    let names = ["edge".to_owned()];
    let opts = Options {
        names: &names,
        namespace: "istio-system",
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        credentials_dir: Some(&dir),
        labels: &[],
        identity: None,
        status: &status,
        observability: &Default::default(),
    };
    let mut gateways = start(&handle, &opts).await.unwrap();
    let ports = |g: &Gateways| {
        let mut p: Vec<u16> = g.sites().iter().map(|(p, _)| *p).collect();
        p.sort_unstable();
        p
    };
    let mut want = vec![http_a, https];
    want.sort_unstable();
    assert_eq!(ports(&gateways), want);
    let https_site = |g: &Gateways| g.sites().into_iter().find(|(p, _)| *p == https).unwrap().1;
    let before = https_site(&gateways);
    let error = || status.lock().unwrap().last_reload_error_json();

    // Port a leaves, port b comes, and the certificate is broken: the HTTPS port stays as it was.
    std::fs::write(dir.join("a-cert/tls.crt"), "not a certificate").unwrap();
    handle.store(mesh(&edge_gateway(&[
        http_server(http_b),
        https_server(https),
    ])));
    gateways.update().await;
    let mut want = vec![http_b, https];
    want.sort_unstable();
    assert_eq!(ports(&gateways), want);
    assert!(Arc::ptr_eq(&before, &https_site(&gateways)));
    let message = error()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("a-cert/tls.crt (serverCertificate): no PEM certificate"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "gateway port {https} keeps its previous servers and certificates"
        )),
        "{message}"
    );

    // Fixed: the port takes the new server set, and the report goes.
    std::fs::write(dir.join("a-cert/tls.crt"), &cert).unwrap();
    gateways.update().await;
    assert!(!Arc::ptr_eq(&before, &https_site(&gateways)));
    assert_eq!(error(), serde_json::Value::Null);

    // The Gateway leaves the config: every listener goes.
    handle.store(mesh(
        &edge_gateway(&[]).replace("  servers:\n", "  servers: []\n"),
    ));
    gateways.update().await;
    assert_eq!(ports(&gateways), Vec::<u16>::new());
}

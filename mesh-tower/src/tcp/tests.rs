use std::{collections::HashSet, time::Duration};

use mesh_core::{Host, model::Destination};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn mesh(yaml: &str) -> Arc<CompiledMesh> {
    mesh_config::Loader::new()
        .check_str("tcp.yaml", yaml)
        .into_mesh()
        .expect("valid config")
        .compiled()
        .clone()
}

const DB: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.internal]
  resolution: STATIC
  ports:
  - {number: 5432, name: tcp-pg, protocol: TCP}
  - {number: 6432, name: tcp-bouncer, protocol: TCP}
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, ports: {tcp-pg: 15432}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec:
  host: db.example.internal
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 250ms, idleTimeout: 30s}}
  subsets:
  - {name: v2, labels: {version: v2}}
"#;

fn dest(host: &str, subset: Option<&str>, port: Option<u16>) -> Destination {
    Destination {
        host: Host::new(host),
        subset: subset.map(str::to_owned),
        port,
    }
}

#[test]
fn picks_subset_endpoints_on_the_destination_port() {
    let m = mesh(DB);
    let up = TcpUpstream::new();
    let t = up
        .pick(
            &m,
            &dest("db.example.internal", Some("v2"), Some(5432)),
            1,
            "default",
            None,
        )
        .unwrap();
    assert_eq!(t.endpoint(), "10.0.0.2:15432");
    assert_eq!(t.idle_timeout(), Duration::from_secs(30));
    assert_eq!(t.connect_timeout, Duration::from_millis(250));
    // Without a port, the listener's port names the service port.
    let t = up
        .pick(
            &m,
            &dest("db.example.internal", Some("v2"), None),
            6432,
            "default",
            None,
        )
        .unwrap();
    assert_eq!(t.endpoint(), "10.0.0.2:6432");
    // Both endpoints are used without a subset.
    let seen: HashSet<String> = (0..64)
        .map(|_| {
            up.pick(
                &m,
                &dest("db.example.internal", None, Some(5432)),
                1,
                "default",
                None,
            )
            .unwrap()
            .endpoint()
            .to_owned()
        })
        .collect();
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn unknown_destinations_have_no_healthy_upstream() {
    let m = mesh(DB);
    let up = TcpUpstream::new();
    for d in [
        dest("nowhere.example.internal", None, Some(5432)),
        dest("db.example.internal", Some("v9"), Some(5432)),
        dest("db.example.internal", None, Some(1)),
        // Two ports and none named or listened on: no port.
        dest("db.example.internal", None, None),
    ] {
        let err = up.pick(&m, &d, 1, "default", None).unwrap_err();
        assert!(
            matches!(err, MeshError::NoHealthyUpstream { .. }),
            "{d}: {err}"
        );
    }
}

#[test]
fn consistent_hash_on_source_ip_sticks() {
    let m = mesh(&format!(
        "{DB}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: db, namespace: gw}}\nspec:\n  host: db.example.internal\n  trafficPolicy:\n    loadBalancer: {{consistentHash: {{useSourceIp: true}}}}\n"
    ));
    let up = TcpUpstream::new();
    let d = dest("db.example.internal", None, Some(5432));
    for ip in ["192.0.2.1", "192.0.2.2", "198.51.100.7"] {
        let ip: IpAddr = ip.parse().unwrap();
        let first = up
            .pick(&m, &d, 1, "gw", Some(ip))
            .unwrap()
            .endpoint()
            .to_owned();
        for _ in 0..16 {
            assert_eq!(
                up.pick(&m, &d, 1, "gw", Some(ip)).unwrap().endpoint(),
                first
            );
        }
    }
}

#[tokio::test]
async fn connect_failure_names_the_endpoint() {
    // A port that was free a moment ago: connection refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let m = mesh(&format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: x}}\nspec:\n  hosts: [x.example.internal]\n  resolution: STATIC\n  ports: [{{number: 1, name: tcp, protocol: TCP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {port}}}}}]\n"
    ));
    let t = TcpUpstream::new()
        .pick(
            &m,
            &dest("x.example.internal", None, None),
            1,
            "default",
            None,
        )
        .unwrap();
    let err = t.connect().await.unwrap_err();
    assert_eq!(err.code(), "upstream-connect-failure");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn proxy_sends_the_first_bytes_first_and_copies_both_ways() {
    let (client, mut client_end) = tokio::io::duplex(64);
    let (upstream, mut upstream_end) = tokio::io::duplex(64);
    let copying =
        tokio::spawn(
            async move { proxy(client, upstream, b"hello ", Duration::from_secs(60)).await },
        );
    client_end.write_all(b"world").await.unwrap();
    let mut buf = [0; 11];
    upstream_end.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello world");
    upstream_end.write_all(b"back").await.unwrap();
    let mut back = [0; 4];
    client_end.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"back");
    // Both sides close: the copy ends with the byte counts.
    drop(client_end);
    drop(upstream_end);
    let (up, down) = copying.await.unwrap().unwrap();
    assert_eq!((up, down), (11, 4));
}

#[tokio::test(start_paused = true)]
async fn proxy_ends_an_idle_connection() {
    let (client, mut client_end) = tokio::io::duplex(64);
    let (upstream, _upstream_end) = tokio::io::duplex(64);
    let start = tokio::time::Instant::now();
    let copying = tokio::spawn(proxy(client, upstream, b"", Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(8)).await;
    // Traffic moves the deadline.
    client_end.write_all(b"x").await.unwrap();
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(!copying.is_finished());
    let err = copying.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    // 10 s after the last byte, not after the start.
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(18) && waited < Duration::from_secs(19),
        "{waited:?}"
    );
}

use std::time::Duration;

use http::{Request, StatusCode};
use mesh_core::{
    model::{
        ConnectionPool, ConsistentHash, Endpoint, EndpointAddress, HashAlgorithm, HashKey,
        LoadBalancer, OutlierDetection,
    },
    outlier::Outcome,
};

use super::{
    balancers::{Balancers, PickSet, generate_cookie},
    circuit::{CircuitBreakers, Limits, RetryOverflow},
    outliers::OutlierDetectors,
    *,
};

fn cluster() -> ClusterKey {
    ("reviews.example.internal".into(), None, 9080)
}

fn limits(requests: u32, connections: u32, pending: u32, retries: u32) -> Limits {
    Limits::from_pool(&ConnectionPool {
        http2_max_requests: Some(requests),
        max_connections: Some(connections),
        http1_max_pending_requests: Some(pending),
        max_retries: Some(retries),
        ..Default::default()
    })
}

fn is_overflow(err: &BoxError) -> bool {
    matches!(MeshError::find(err), Some(MeshError::Overflow { .. }))
}

fn name() -> String {
    "reviews".into()
}

// === circuit breaking ===

#[test]
fn no_connection_pool_means_no_breaker() {
    let breakers = CircuitBreakers::default();
    let unlimited = Limits::from_pool(&ConnectionPool::default());
    for _ in 0..100 {
        assert!(
            breakers
                .admit(&cluster(), &unlimited, true, true, &name)
                .unwrap()
                .is_none()
        );
    }
}

#[test]
fn http2_max_requests_caps_requests_in_flight() {
    let breakers = CircuitBreakers::default();
    let l = limits(2, u32::MAX, u32::MAX, u32::MAX);
    let a = breakers.admit(&cluster(), &l, false, false, &name).unwrap();
    let b = breakers.admit(&cluster(), &l, false, true, &name).unwrap();
    let err = breakers
        .admit(&cluster(), &l, false, false, &name)
        .unwrap_err();
    assert!(is_overflow(&err), "{err}");
    // Another cluster has its own counters.
    let other = ("ratings.example.internal".to_owned(), None, 9080);
    assert!(breakers.admit(&other, &l, false, false, &name).is_ok());
    drop(a);
    let c = breakers.admit(&cluster(), &l, false, false, &name).unwrap();
    drop((b, c));
}

#[tokio::test(start_paused = true)]
async fn http1_requests_beyond_max_connections_are_pending_up_to_the_limit() {
    let breakers = CircuitBreakers::default();
    let l = limits(u32::MAX, 1, 1, u32::MAX);
    let first = breakers.admit(&cluster(), &l, false, true, &name).unwrap();
    let mut second = breakers
        .admit(&cluster(), &l, false, true, &name)
        .unwrap()
        .unwrap();
    // One connection busy, one request pending: the third overflows at once.
    let err = breakers
        .admit(&cluster(), &l, false, true, &name)
        .unwrap_err();
    assert!(is_overflow(&err));
    // HTTP/2 requests are not held by maxConnections.
    let h2 = breakers.admit(&cluster(), &l, false, false, &name).unwrap();
    drop(h2);
    // The pending request waits for the connection...
    assert!(
        tokio::time::timeout(Duration::from_secs(60), second.connection())
            .await
            .is_err()
    );
    // ...and gets it when the first request is done.
    drop(first);
    tokio::time::timeout(Duration::from_secs(1), second.connection())
        .await
        .expect("the pending request gets the connection");
    // No longer pending: another request may wait.
    let third = breakers.admit(&cluster(), &l, false, true, &name).unwrap();
    drop((second, third));
    // All released: a fresh request gets a connection at once.
    let mut again = breakers
        .admit(&cluster(), &l, false, true, &name)
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_millis(1), again.connection())
        .await
        .expect("a free connection");
}

#[test]
fn max_retries_caps_retries_in_flight() {
    let breakers = CircuitBreakers::default();
    let l = limits(u32::MAX, u32::MAX, u32::MAX, 1);
    let retry = breakers.admit(&cluster(), &l, true, true, &name).unwrap();
    let err = breakers
        .admit(&cluster(), &l, true, true, &name)
        .unwrap_err();
    assert!(err.downcast_ref::<RetryOverflow>().is_some());
    assert!(is_overflow(&err), "answers as an overflow");
    // First attempts are not retries.
    assert!(breakers.admit(&cluster(), &l, false, true, &name).is_ok());
    drop(retry);
    assert!(breakers.admit(&cluster(), &l, true, true, &name).is_ok());
}

// === outlier detection ===

fn outlier_policy(consecutive_5xx: u32, max_ejection_percent: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx_errors: Some(consecutive_5xx),
        consecutive_gateway_errors: None,
        consecutive_local_origin_failures: None,
        split_external_local_origin_errors: false,
        interval: Duration::from_secs(1),
        base_ejection_time: Duration::from_secs(30),
        max_ejection_percent,
        min_health_percent: 0,
    }
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(start_paused = true)]
async fn consecutive_errors_eject_until_the_ejection_time_passes() {
    let detectors = OutlierDetectors::default();
    let eps = keys(&["10.0.0.1:80", "10.0.0.2:80"]);
    let policy = outlier_policy(2, 100);
    let set = detectors.set_for(&cluster(), 1, &policy, &eps);
    let handle = outliers::OutlierHandle {
        set: set.clone(),
        authority: eps[0].clone(),
    };
    handle.record(Outcome::Response(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(set.lock().unwrap().ejected(&eps), [false, false]);
    handle.record(Outcome::ConnectFailure);
    assert_eq!(set.lock().unwrap().ejected(&eps), [true, false]);

    // A new config version with the endpoints reordered keeps the ejection.
    let reordered = keys(&["10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"]);
    let same = detectors.set_for(&cluster(), 2, &policy, &reordered);
    assert_eq!(
        same.lock().unwrap().ejected(&reordered),
        [false, false, true]
    );

    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(same.lock().unwrap().ejected(&reordered)[2]);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(!same.lock().unwrap().ejected(&reordered)[2]);
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_ejected_leaves_none_eligible() {
    let detectors = OutlierDetectors::default();
    let eps = keys(&["10.0.0.1:80", "10.0.0.2:80"]);
    let set = detectors.set_for(&cluster(), 1, &outlier_policy(1, 100), &eps);
    for a in &eps {
        set.lock()
            .unwrap()
            .record(a, Outcome::Response(StatusCode::BAD_GATEWAY));
    }
    assert_eq!(set.lock().unwrap().ejected(&eps), [true, true]);

    // With minHealthPercent, the set is in panic instead: everything is eligible.
    let mut panic = outlier_policy(1, 100);
    panic.min_health_percent = 50;
    let cluster2 = ("other".to_owned(), None, 80);
    let set = detectors.set_for(&cluster2, 1, &panic, &eps);
    for a in &eps {
        set.lock()
            .unwrap()
            .record(a, Outcome::Response(StatusCode::BAD_GATEWAY));
    }
    assert_eq!(set.lock().unwrap().ejected(&eps), [false, false]);
}

#[test]
fn grpc_statuses_count_as_envoy_maps_them() {
    let res = http::Response::builder()
        .header("grpc-status", "14")
        .body(())
        .unwrap();
    assert_eq!(
        outcome_of(&res),
        Outcome::Response(StatusCode::SERVICE_UNAVAILABLE)
    );
    let ok = http::Response::builder()
        .header("grpc-status", "0")
        .body(())
        .unwrap();
    assert_eq!(outcome_of(&ok), Outcome::Response(StatusCode::OK));
    let plain = http::Response::builder().status(502).body(()).unwrap();
    assert_eq!(
        outcome_of(&plain),
        Outcome::Response(StatusCode::BAD_GATEWAY)
    );
}

// === load balancing ===

fn endpoints(n: u8) -> (Vec<Endpoint>, Vec<String>) {
    let eps: Vec<Endpoint> = (1..=n)
        .map(|i| Endpoint {
            address: EndpointAddress::Ip([10, 0, 0, i].into()),
            ports: Default::default(),
            labels: Default::default(),
            service_account: None,
            identity: None,
            weight: 1,
            locality: None,
            network: None,
            source: String::new(),
        })
        .collect();
    let auth = (1..=n).map(|i| format!("10.0.0.{i}:80")).collect();
    (eps, auth)
}

fn pick_one(
    b: &Balancers,
    eps: &[Endpoint],
    auth: &[String],
    eligible: &[bool],
    lb: &LoadBalancer,
    req: &Request<()>,
) -> Option<balancers::Pick> {
    let refs: Vec<&Endpoint> = eps.iter().collect();
    let c = cluster();
    b.pick(
        &PickSet {
            version: 1,
            cluster: &c,
            endpoints: &refs,
            authorities: auth,
            eligible,
        },
        Some(lb),
        req,
    )
}

#[test]
fn balancers_skip_ineligible_endpoints() {
    let (eps, auth) = endpoints(3);
    let req = Request::new(());
    let hash = LoadBalancer::ConsistentHash(ConsistentHash {
        key: HashKey::Header("x-user".into()),
        algorithm: HashAlgorithm::RingHash {
            minimum_ring_size: 1024,
        },
    });
    for lb in [
        LoadBalancer::RoundRobin,
        LoadBalancer::LeastRequest,
        LoadBalancer::Random,
        hash,
    ] {
        let b = Balancers::default();
        for i in 0..30 {
            let req = Request::builder()
                .header("x-user", format!("u{i}"))
                .body(())
                .unwrap();
            let p = pick_one(&b, &eps, &auth, &[true, false, true], &lb, &req).unwrap();
            assert_ne!(p.index, 1, "{lb:?}");
        }
        assert!(
            pick_one(&b, &eps, &auth, &[false, false, false], &lb, &req).is_none(),
            "{lb:?}"
        );
    }
}

#[test]
fn round_robin_keeps_its_table_when_the_eligible_set_shrinks() {
    // A retry that excludes tried endpoints passes the same list with fewer eligible: the
    // table built from the whole list stays valid.
    let (eps, auth) = endpoints(3);
    let b = Balancers::default();
    let req = Request::new(());
    let rr = LoadBalancer::RoundRobin;
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(
            pick_one(&b, &eps, &auth, &[true, true, true], &rr, &req)
                .unwrap()
                .index,
        );
    }
    assert_eq!(seen[..3], seen[3..]);
    let mut sorted = seen[..3].to_vec();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2]);
    for _ in 0..5 {
        let p = pick_one(&b, &eps, &auth, &[false, false, true], &rr, &req).unwrap();
        assert_eq!(p.index, 2);
    }
}

#[test]
fn a_cookie_with_a_ttl_is_generated_and_then_followed() {
    let key = HashKey::Cookie {
        name: "session".into(),
        path: Some("/".into()),
        ttl: Some(Duration::from_secs(60)),
    };
    let (value, header) = generate_cookie(&key).unwrap();
    assert_eq!(
        header.to_str().unwrap(),
        format!("session={value}; Path=/; Max-Age=60; HttpOnly")
    );
    // No ttl: no cookie. A zero ttl: a session cookie.
    let no_ttl = HashKey::Cookie {
        name: "s".into(),
        path: None,
        ttl: None,
    };
    assert!(generate_cookie(&no_ttl).is_none());
    let session = HashKey::Cookie {
        name: "s".into(),
        path: None,
        ttl: Some(Duration::ZERO),
    };
    let (v, h) = generate_cookie(&session).unwrap();
    assert_eq!(h.to_str().unwrap(), format!("s={v}; HttpOnly"));

    let (eps, auth) = endpoints(5);
    let b = Balancers::default();
    let lb = LoadBalancer::ConsistentHash(ConsistentHash {
        key,
        algorithm: HashAlgorithm::Maglev { table_size: 65537 },
    });
    let all = [true; 5];
    let first = pick_one(&b, &eps, &auth, &all, &lb, &Request::new(())).unwrap();
    let cookie = first.set_cookie.expect("a generated cookie");
    let value = cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for quoted in [false, true] {
        let sent = if quoted {
            value.replace('=', "=\"") + "\""
        } else {
            value.clone()
        };
        let req = Request::builder()
            .header("cookie", format!("other=1; {sent}"))
            .body(())
            .unwrap();
        let again = pick_one(&b, &eps, &auth, &all, &lb, &req).unwrap();
        assert_eq!(again.index, first.index, "the cookie sticks ({sent})");
        assert!(again.set_cookie.is_none(), "no new cookie when one is sent");
    }
}

#[test]
fn endpoints_on_one_address_hash_apart() {
    // Endpoints are keyed by host:port: two ports of one address are two ring owners.
    let (mut eps, _) = endpoints(1);
    eps.push(eps[0].clone());
    let auth = keys(&["10.0.0.1:8001", "10.0.0.1:8002"]);
    let b = Balancers::default();
    let lb = LoadBalancer::ConsistentHash(ConsistentHash {
        key: HashKey::Header("x-user".into()),
        algorithm: HashAlgorithm::RingHash {
            minimum_ring_size: 1024,
        },
    });
    let mut seen = [0; 2];
    for i in 0..100 {
        let req = Request::builder()
            .header("x-user", format!("user-{i}"))
            .body(())
            .unwrap();
        seen[pick_one(&b, &eps, &auth, &[true, true], &lb, &req)
            .unwrap()
            .index] += 1;
    }
    assert!(seen[0] > 10 && seen[1] > 10, "{seen:?}");
}

// === client settings ===

#[test]
fn client_settings_follow_istio_defaults() {
    let d = ClientSettings::for_pool(None, false);
    assert_eq!(d.connect_timeout, Duration::from_secs(10));
    assert_eq!(d.idle_timeout, Duration::from_secs(3600));
    assert!(d.keep_alive);
    let cp = ConnectionPool {
        connect_timeout: Some(Duration::from_millis(250)),
        idle_timeout: Some(Duration::from_secs(5)),
        max_requests_per_connection: Some(1),
        ..Default::default()
    };
    let s = ClientSettings::for_pool(Some(&cp), true);
    assert_eq!(
        s,
        ClientSettings {
            h2: true,
            connect_timeout: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(5),
            keep_alive: false,
            transport: Transport::Plain,
        }
    );
}

#[tokio::test(start_paused = true)]
async fn the_connect_timeout_applies_around_any_connector() {
    // A connector that never connects.
    let never = tower::service_fn(|_: http::Uri| {
        std::future::pending::<Result<hyper_util::rt::TokioIo<tokio::net::TcpStream>, std::io::Error>>(
        )
    });
    let clients = HttpClients::new(never);
    let cp = ConnectionPool {
        connect_timeout: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let client = clients
        .client(ClientSettings::for_pool(Some(&cp), false))
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = client
        .request(
            Request::get("http://10.0.0.1:80/")
                .body(body::empty())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut found = false;
    while let Some(e) = source {
        found |= e.downcast_ref::<ConnectTimeout>().is_some();
        source = e.source();
    }
    assert!(found, "{err:?}");
}

/// A ServiceEntry for `reviews.example.internal` with one endpoint on `port`.
fn one_endpoint(port: u16) -> crate::snapshot::MeshHandle {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews.example.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]\n"
    );
    let report = mesh_config::Loader::new().check_str("test.yaml", &yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    crate::snapshot::MeshHandle::from(&report.into_mesh().unwrap())
}

/// An HTTP/1.1 server on a loopback port answering `name`.
async fn named_server(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(move |_req| async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(body::full(name)))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });
    port
}

#[tokio::test]
async fn a_new_config_moves_requests_to_its_endpoints() {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let (a, b) = (named_server("a").await, named_server("b").await);
    let handle = one_endpoint(a);
    let stack =
        crate::MeshStack::outbound(handle.clone()).build::<http_body_util::Empty<bytes::Bytes>>();
    let get = || {
        Request::get("http://reviews.example.internal:9080/")
            .body(http_body_util::Empty::new())
            .unwrap()
    };
    let text = |res: http::Response<body::MeshBody>| async move {
        assert_eq!(res.status(), StatusCode::OK);
        res.into_body().collect().await.unwrap().to_bytes()
    };
    // Twice: the second pick comes from the cluster's cached endpoints.
    for _ in 0..2 {
        assert_eq!(text(stack.clone().oneshot(get()).await.unwrap()).await, "a");
    }
    handle.store(one_endpoint(b).snapshot());
    assert_eq!(text(stack.clone().oneshot(get()).await.unwrap()).await, "b");
}

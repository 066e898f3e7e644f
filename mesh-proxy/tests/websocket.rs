//! WebSocket through `mesh run`: a tokio-tungstenite client and echo server, with the real
//! binary between them as the outbound listener, as a gateway, and as two sidecars speaking
//! mTLS. The upgrade request is routed and policed like any request; once the upstream switches
//! protocols, messages flow both ways until a side closes, whatever the route's timeout.

mod harness;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use harness::{Mesh, certificates, config, free_port, peer_authentication, temp_dir};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message,
        handshake::server::{Request as WsRequest, Response as WsResponse},
    },
};

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";

/// A WebSocket echo server on an ephemeral loopback port. Its first message says what the
/// handshake looked like from its side: `path=<path> host=<host> xfcc=<x-forwarded-client-cert
/// or ->`; then every text or binary message comes back as it was sent.
async fn ws_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(echo(stream));
        }
    });
    addr
}

// tungstenite's handshake callback returns its (large) error response by value.
#[allow(clippy::result_large_err)]
async fn echo(stream: TcpStream) {
    let seen = Arc::new(Mutex::new(String::new()));
    let record = seen.clone();
    let callback = move |req: &WsRequest, res: WsResponse| {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        *record.lock().unwrap() = format!(
            "path={} host={} xfcc={}",
            req.uri().path(),
            header("host"),
            header("x-forwarded-client-cert")
        );
        Ok(res)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let greeting = seen.lock().unwrap().clone();
    if ws.send(Message::text(greeting)).await.is_err() {
        return;
    }
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

/// A server that accepts connections and never answers (nor closes them).
async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

type Ws = WebSocketStream<TcpStream>;

/// Opens `url` (its host is the request's `Host`) over a connection to `proxy`, within 5 s.
async fn connect(proxy: SocketAddr, url: &str) -> Result<Ws, WsError> {
    let open = async {
        let tcp = TcpStream::connect(proxy).await.map_err(WsError::Io)?;
        tokio_tungstenite::client_async(url, tcp).await
    };
    let (ws, res) = tokio::time::timeout(Duration::from_secs(5), open)
        .await
        .expect("the WebSocket handshake timed out")?;
    assert_eq!(res.status(), 101);
    Ok(ws)
}

/// The next message, as text, within 5 s.
async fn next_text(ws: &mut Ws) -> String {
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("no message within 5 s")
        .expect("the connection closed")
        .expect("a WebSocket error");
    msg.into_text().expect("a text message").to_string()
}

/// Sends text and binary messages and checks each comes back, then closes cleanly.
async fn echo_both_ways(ws: &mut Ws) {
    for text in ["one", "two", &"x".repeat(70_000)] {
        ws.send(Message::text(text)).await.unwrap();
        assert_eq!(next_text(ws).await, text);
    }
    let bytes: Vec<u8> = (0..=255).collect();
    ws.send(Message::binary(bytes.clone())).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back.into_data().as_ref(), bytes.as_slice());
    ws.close(None).await.unwrap();
    // The server answers the close; the stream then ends.
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    });
    end.await.expect("the close handshake did not finish");
}

/// The status of a refused handshake.
fn refused_status(result: Result<Ws, WsError>) -> u16 {
    match result {
        Err(WsError::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("expected an HTTP answer, got {e}"),
        Ok(_) => panic!("expected the upgrade to be refused"),
    }
}

fn echo_yaml(echo: SocketAddr, silent: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.example.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {echo}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: silent}}
spec:
  hosts: [silent.example.internal]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {silent}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo}}
spec:
  hosts: [echo.example.internal]
  http:
  - match: [{{uri: {{prefix: /denied}}}}]
    fault: {{abort: {{httpStatus: 403, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: echo.example.internal}}}}]
  - match: [{{uri: {{prefix: /chat}}}}]
    rewrite: {{uri: /ws}}
    timeout: 500ms
    route: [{{destination: {{host: echo.example.internal}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: silent}}
spec:
  hosts: [silent.example.internal]
  http:
  - timeout: 500ms
    route: [{{destination: {{host: silent.example.internal}}}}]
"#,
        echo = echo.port(),
        silent = silent.port(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_the_outbound_listener() {
    let dir = temp_dir("websocket");
    let file = config(&dir, &echo_yaml(ws_echo().await, silent().await));
    let outbound = free_port();
    let _mesh = Mesh::start(&file, &["--outbound".into(), outbound.to_string()]).await;

    // Routed like any request: the rewrite reached the upstream, with the client's Host.
    let mut ws = connect(outbound, "ws://echo.example.internal/chat")
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        "path=/ws host=echo.example.internal xfcc=-"
    );
    // The route's 500 ms timeout bounded the handshake only: the connection outlives it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    echo_both_ways(&mut ws).await;

    // Policies apply to the upgrade request: a fault abort answers instead of a 101.
    let denied = connect(outbound, "ws://echo.example.internal/denied").await;
    assert_eq!(refused_status(denied), 403);
    // An upstream that never answers the upgrade: the route timeout, 504.
    let started = std::time::Instant::now();
    let timed_out = connect(outbound, "ws://silent.example.internal/ws").await;
    assert_eq!(refused_status(timed_out), 504);
    assert!(started.elapsed() >= Duration::from_millis(450));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_through_a_gateway() {
    let dir = temp_dir("websocket");
    let gateway_port = free_port().port();
    let yaml = format!(
        r#"{mesh}---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: edge}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {gateway_port}, name: http, protocol: HTTP}}
    hosts: [echo.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: edge}}
spec:
  hosts: [echo.example.com]
  gateways: [edge]
  http:
  - match: [{{uri: {{prefix: /chat}}}}]
    rewrite: {{uri: /ws}}
    timeout: 500ms
    route: [{{destination: {{host: echo.example.internal}}}}]
"#,
        mesh = echo_yaml(ws_echo().await, silent().await),
    );
    let file = config(&dir, &yaml);
    let _mesh = Mesh::start(
        &file,
        &[
            "--gateway".into(),
            "edge".into(),
            "--gateway-bind".into(),
            "127.0.0.1".into(),
        ],
    )
    .await;
    let gateway = SocketAddr::from(([127, 0, 0, 1], gateway_port));

    let mut ws = connect(gateway, "ws://echo.example.com/chat")
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        "path=/ws host=echo.example.com xfcc=-"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    echo_both_ways(&mut ws).await;

    // A host the gateway does not serve: 404, no upgrade.
    let unknown = connect(gateway, "ws://other.example.com/chat").await;
    assert_eq!(refused_status(unknown), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_between_two_sidecars_over_mtls() {
    // client -> productpage's sidecar (outbound) -> mTLS -> ratings' sidecar (inbound, STRICT)
    // -> ratings' WebSocket app.
    let dir = temp_dir("websocket");
    certificates(&dir, &["ratings", "productpage"]);
    let ratings_inbound = free_port();
    let yaml = format!(
        r#"{pa}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ratings}}
spec:
  hosts: [ratings.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{http: {port}}}
    labels: {{app: ratings, security.istio.io/tlsMode: istio}}
    serviceAccount: ratings
"#,
        pa = peer_authentication("STRICT"),
        port = ratings_inbound.port()
    );
    let file = config(&dir, &yaml);
    let app = ws_echo().await;
    let _ratings = Mesh::start(
        &file,
        &[
            "--inbound".into(),
            ratings_inbound.to_string(),
            "--app".into(),
            app.to_string(),
            "--identity-dir".into(),
            dir.join("ratings").display().to_string(),
            "--workload-labels".into(),
            "app=ratings".into(),
        ],
    )
    .await;
    let outbound = free_port();
    let _productpage = Mesh::start(
        &file,
        &[
            "--outbound".into(),
            outbound.to_string(),
            "--identity-dir".into(),
            dir.join("productpage").display().to_string(),
            "--workload-labels".into(),
            "app=productpage".into(),
        ],
    )
    .await;

    let mut ws = connect(outbound, "ws://ratings.default.svc.cluster.local:9080/ws")
        .await
        .unwrap();
    let greeting = next_text(&mut ws).await;
    // The app saw the caller's identity: the upgrade crossed the mTLS hop.
    assert!(greeting.starts_with("path=/ws host=ratings.default.svc.cluster.local:9080 xfcc=By=spiffe://cluster.local/ns/default/sa/ratings;"), "{greeting}");
    assert!(
        greeting.ends_with(&format!("URI={PRODUCTPAGE}")),
        "{greeting}"
    );
    echo_both_ways(&mut ws).await;

    // Plain text straight to the STRICT inbound is refused: no upgrade without mTLS.
    assert!(
        connect(ratings_inbound, "ws://ratings.default.svc.cluster.local/ws")
            .await
            .is_err()
    );
}

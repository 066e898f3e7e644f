//! gRPC through two `mesh run` sidecars: a tonic client -> productpage's sidecar (outbound, h2c)
//! -> mTLS (ALPN h2) -> greeter's sidecar (inbound, STRICT) -> a tonic server (h2c), the Istio
//! picture without Kubernetes. What a gRPC user must see: unary and server-streaming calls,
//! statuses with their messages and custom metadata (trailers-only answers and real trailers)
//! exactly as the server sent them, and a VirtualService `grpcStatus` abort as that status.
//!
//! There is no protoc here: the messages are written by hand with `prost::Message`, and the
//! server routes by path to tonic's `Grpc`, as generated code does.

mod harness;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use harness::{Mesh, certificates, config, free_port, peer_authentication, temp_dir};
use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Code, Request, Response, Status, metadata::MetadataMap};
use tonic_prost::ProstCodec;

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const GREETER: &str = "http://greeter.default.svc.cluster.local:50051";

/// `mesh.test.Greeter`'s request.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
    /// How many replies `Count` streams back.
    #[prost(uint32, tag = "2")]
    count: u32,
}

/// `mesh.test.Greeter`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
}

const SAY_HELLO: &str = "/mesh.test.Greeter/SayHello";
const COUNT: &str = "/mesh.test.Greeter/Count";

// === the app: a hand-written tonic service over h2c ===

/// The Greeter app on an ephemeral loopback port. Every response carries `x-http-version`
/// (how the request arrived) and `x-xfcc` (its `x-forwarded-client-cert`).
///
/// - `SayHello` answers `hello <name>`; the name `missing` gets NOT_FOUND `no greeting for
///   missing` with the metadata `x-reason: unknown-name` (a trailers-only answer).
/// - `Count` streams `count` replies; the name `fail` ends the stream with RESOURCE_EXHAUSTED
///   and `x-reason: quota` instead of OK. Its trailers also carry `x-served-by: greeter`.
async fn greeter() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(dispatch);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn with_reason(reason: &'static str) -> MetadataMap {
    let mut md = MetadataMap::new();
    md.insert("x-reason", reason.parse().unwrap());
    md
}

async fn dispatch(
    req: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let version = format!("{:?}", req.version());
    let xfcc = req
        .headers()
        .get("x-forwarded-client-cert")
        .cloned()
        .unwrap_or(http::HeaderValue::from_static("-"));
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
    let mut res = match req.uri().path() {
        SAY_HELLO => {
            let handler = tower::service_fn(|req: Request<HelloRequest>| async move {
                let name = req.into_inner().name;
                if name == "missing" {
                    return Err(Status::with_metadata(
                        Code::NotFound,
                        "no greeting for missing",
                        with_reason("unknown-name"),
                    ));
                }
                Ok(Response::new(HelloReply {
                    message: format!("hello {name}"),
                }))
            });
            grpc.unary(handler, req).await
        }
        COUNT => {
            let handler = tower::service_fn(|req: Request<HelloRequest>| async move {
                let HelloRequest { name, count } = req.into_inner();
                let fail = name == "fail";
                let replies = (0..count).map(move |i| {
                    Ok(HelloReply {
                        message: format!("{name} #{i}"),
                    })
                });
                let end = fail.then(|| {
                    Err(Status::with_metadata(
                        Code::ResourceExhausted,
                        "out of quota",
                        with_reason("quota"),
                    ))
                });
                Ok::<_, Status>(Response::new(tokio_stream::iter(replies.chain(end))))
            });
            let res = grpc.server_streaming(handler, req).await;
            // Real trailers beyond grpc-status (tonic puts response metadata in the headers).
            res.map(|body| {
                tonic::body::Body::new(http_body_util::BodyExt::map_frame(body, |mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        trailers.insert("x-served-by", "greeter".parse().unwrap());
                    }
                    frame
                }))
            })
        }
        _ => Status::unimplemented("no such method").into_http(),
    };
    res.headers_mut()
        .insert("x-http-version", version.parse().unwrap());
    res.headers_mut().insert("x-xfcc", xfcc);
    Ok(res)
}

// === the client: tonic over an h2c connection to the outbound listener ===

/// One HTTP/2 connection (prior knowledge) to the outbound listener, as tonic's transport.
#[derive(Clone)]
struct H2(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

type Client = tonic::client::Grpc<H2>;

/// A tonic client for the greeter whose connection goes to `outbound`.
async fn client(outbound: SocketAddr) -> Client {
    let tcp = TcpStream::connect(outbound).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    tonic::client::Grpc::with_origin(H2(send), GREETER.parse().unwrap())
}

fn hello(name: &str, count: u32, fault: bool) -> Request<HelloRequest> {
    let mut req = Request::new(HelloRequest {
        name: name.into(),
        count,
    });
    if fault {
        req.metadata_mut()
            .insert("x-fault", "abort".parse().unwrap());
    }
    req.set_timeout(Duration::from_secs(5));
    req
}

fn codec() -> ProstCodec<HelloRequest, HelloReply> {
    ProstCodec::default()
}

fn path(p: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(p)
}

/// A metadata value as text ("" when absent, so an assertion shows what was there).
fn md<'a>(map: &'a MetadataMap, key: &str) -> &'a str {
    map.get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Both sidecars and the app; the outbound listener's address.
async fn sidecars(dir: &std::path::Path) -> (Mesh, Mesh, SocketAddr) {
    certificates(dir, &["greeter", "productpage"]);
    let inbound = free_port();
    let yaml = format!(
        r#"{pa}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter}}
spec:
  hosts: [greeter.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints:
  - address: 127.0.0.1
    ports: {{grpc: {port}}}
    labels: {{app: greeter, security.istio.io/tlsMode: istio}}
    serviceAccount: greeter
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  http:
  - match: [{{headers: {{x-fault: {{exact: abort}}}}}}]
    fault: {{abort: {{grpcStatus: UNAVAILABLE, percentage: {{value: 100}}}}}}
    route: [{{destination: {{host: greeter}}}}]
  - route: [{{destination: {{host: greeter}}}}]
"#,
        pa = peer_authentication("STRICT"),
        port = inbound.port()
    );
    let file = config(dir, &yaml);
    let app = greeter().await;
    let greeter_sidecar = Mesh::start(
        &file,
        &[
            "--inbound".into(),
            inbound.to_string(),
            "--app".into(),
            app.to_string(),
            "--identity-dir".into(),
            dir.join("greeter").display().to_string(),
            "--workload-labels".into(),
            "app=greeter".into(),
        ],
    )
    .await;
    let outbound = free_port();
    let productpage_sidecar = Mesh::start(
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
    (greeter_sidecar, productpage_sidecar, outbound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_between_two_sidecars_over_mtls() {
    let dir = temp_dir("grpc");
    let (_greeter, _productpage, outbound) = sidecars(&dir).await;
    let mut client = client(outbound).await;

    // Unary: HTTP/2 all the way to the app, which sees the caller's identity.
    client.ready().await.unwrap();
    let res = client
        .unary(hello("ann", 0, false), path(SAY_HELLO), codec())
        .await
        .unwrap();
    assert_eq!(res.get_ref().message, "hello ann");
    assert_eq!(md(res.metadata(), "x-http-version"), "HTTP/2.0");
    let xfcc = md(res.metadata(), "x-xfcc");
    assert!(xfcc.ends_with(&format!("URI={PRODUCTPAGE}")), "{xfcc}");

    // A non-OK status: code, message and custom metadata as the server sent them.
    client.ready().await.unwrap();
    let status = client
        .unary(hello("missing", 0, false), path(SAY_HELLO), codec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no greeting for missing");
    assert_eq!(md(status.metadata(), "x-reason"), "unknown-name");

    // Server streaming, then its trailers.
    client.ready().await.unwrap();
    let mut stream = client
        .server_streaming(hello("n", 4, false), path(COUNT), codec())
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        got.push(reply.message);
    }
    assert_eq!(got, ["n #0", "n #1", "n #2", "n #3"]);
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(md(&trailers, "grpc-status"), "0");
    assert_eq!(md(&trailers, "x-served-by"), "greeter");

    // A stream that fails after its messages: the status is in the trailers, with its metadata.
    client.ready().await.unwrap();
    let mut stream = client
        .server_streaming(hello("fail", 2, false), path(COUNT), codec())
        .await
        .unwrap()
        .into_inner();
    let mut messages = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => messages += 1,
            Ok(None) => panic!("the stream ended with OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(messages, 2);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "out of quota");
    assert_eq!(md(status.metadata(), "x-reason"), "quota");
    assert_eq!(md(status.metadata(), "x-served-by"), "greeter");

    // The VirtualService's `grpcStatus` abort, answered by the outbound sidecar.
    client.ready().await.unwrap();
    let status = client
        .unary(hello("ann", 0, true), path(SAY_HELLO), codec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(md(status.metadata(), "x-mesh-error"), "fault-abort");
    assert_eq!(md(status.metadata(), "x-xfcc"), "", "never reached the app");
}

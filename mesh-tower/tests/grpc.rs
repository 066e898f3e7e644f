//! gRPC through the outbound stack: a tonic client whose transport is the mesh, real tonic
//! servers on 127.0.0.1, and the config as YAML.
//!
//! There is no protoc here, so the messages are written by hand with `prost::Message` and the
//! service is routed by path to tonic's server-side `Grpc`, as generated code would do. What a
//! gRPC user must see through the mesh: the routing (a VirtualService header match on gRPC
//! metadata picks the subset), the upstream speaking HTTP/2 (a `protocol: GRPC` port), every
//! kind of call streaming both ways, and status codes, messages and trailers exactly as the
//! server sent them; and when the mesh itself answers, a gRPC status instead of an HTTP one.

mod support;

use std::{convert::Infallible, net::SocketAddr};

use http::uri::PathAndQuery;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use mesh_tower::{MeshService, MeshStack};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming, metadata::MetadataMap};
use tonic_prost::ProstCodec;

/// `mesh.test.Greeter`'s request.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloRequest {
    #[prost(string, tag = "1")]
    name: String,
    /// How many replies `Count` streams back (and what `Sum` adds up).
    #[prost(uint32, tag = "2")]
    count: u32,
}

/// `mesh.test.Greeter`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
struct HelloReply {
    #[prost(string, tag = "1")]
    message: String,
    #[prost(uint32, tag = "2")]
    total: u32,
}

const SAY_HELLO: &str = "/mesh.test.Greeter/SayHello";
const COUNT: &str = "/mesh.test.Greeter/Count";
const SUM: &str = "/mesh.test.Greeter/Sum";

// === the upstream: a hand-written tonic service ===

/// Starts a Greeter named `name` on an ephemeral loopback port (HTTP/1.1 and h2c, as
/// hyper-util's auto server detects). Every response says who answered (`x-upstream`) and on
/// which HTTP version the request arrived (`x-http-version`).
///
/// - `SayHello` answers `hello <name> from <upstream>`; the name `missing` gets
///   `Status::not_found("x")`.
/// - `Count` streams `count` replies; the name `fail` ends the stream with RESOURCE_EXHAUSTED
///   and `x-reason: quota` in the trailers instead of OK. Its trailers also carry
///   `x-served-by: <upstream>`.
/// - `Sum` adds up the `count` of every request the client streams.
async fn greeter(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| dispatch(name, req));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// What generated server code does: route by path to tonic's `Grpc` with the method's handler.
async fn dispatch(
    name: &'static str,
    req: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let version = format!("{:?}", req.version());
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
    let mut res = match req.uri().path() {
        SAY_HELLO => {
            let handler = tower::service_fn(move |req: Request<HelloRequest>| async move {
                let req = req.into_inner();
                if req.name == "missing" {
                    return Err(Status::not_found("x"));
                }
                Ok(Response::new(HelloReply {
                    message: format!("hello {} from {name}", req.name),
                    total: 0,
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
                        total: i,
                    })
                });
                let end = fail.then(|| {
                    let mut md = MetadataMap::new();
                    md.insert("x-reason", "quota".parse().unwrap());
                    Err(Status::with_metadata(
                        Code::ResourceExhausted,
                        "out of quota",
                        md,
                    ))
                });
                let stream = tokio_stream::iter(replies.chain(end));
                Ok::<_, Status>(Response::new(stream))
            });
            let res = grpc.server_streaming(handler, req).await;
            // Real trailers, beyond grpc-status: tonic puts response metadata in the headers.
            res.map(|body| {
                tonic::body::Body::new(body.map_frame(move |mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        trailers.insert("x-served-by", name.parse().unwrap());
                    }
                    frame
                }))
            })
        }
        SUM => {
            let handler = tower::service_fn(|req: Request<Streaming<HelloRequest>>| async move {
                let mut stream = req.into_inner();
                let mut total = 0;
                while let Some(msg) = stream.message().await? {
                    total += msg.count;
                }
                Ok::<_, Status>(Response::new(HelloReply {
                    message: "sum".into(),
                    total,
                }))
            });
            grpc.client_streaming(handler, req).await
        }
        _ => Status::unimplemented("no such method").into_http(),
    };
    let headers = res.headers_mut();
    headers.insert("x-upstream", name.parse().unwrap());
    headers.insert("x-http-version", version.parse().unwrap());
    Ok(res)
}

// === the client: tonic over the mesh ===

/// A tonic client whose transport is the outbound mesh stack: `MeshService<tonic::body::Body>`
/// is a `GrpcService` as it is (its body is an `http_body::Body`, its error `Infallible`).
type Client = tonic::client::Grpc<MeshService<tonic::body::Body>>;

const HOST: &str = "greeter.example.internal";

fn client(yaml: &str) -> Client {
    let report = mesh_config::Loader::new().check_str("grpc.yaml", yaml);
    assert!(!report.diagnostics.has_errors(), "{}", report.diagnostics);
    let mesh = report.into_mesh().unwrap();
    let svc = MeshStack::outbound(&mesh).namespace("default").build();
    let origin = format!("http://{HOST}:50051").parse().unwrap();
    tonic::client::Grpc::with_origin(svc, origin)
}

/// A ServiceEntry whose port is `protocol: GRPC` with the `v1` and `v2` Greeters, subsets v1,
/// v2 and v3 (v3 has no endpoint), and a VirtualService: metadata `x-version: v2` goes to v2,
/// `x-version: v3` to v3, anything else to v1.
async fn mesh_yaml() -> String {
    let (v1, v2) = (greeter("v1").await, greeter("v2").await);
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: {ip1}, ports: {{grpc: {port1}}}, labels: {{version: v1}}}}
  - {{address: {ip2}, ports: {{grpc: {port2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v3, labels: {{version: v3}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{headers: {{x-version: {{exact: v2}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
  - match: [{{headers: {{x-version: {{exact: v3}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: v3}}}}]
  - route: [{{destination: {{host: {HOST}, subset: v1}}}}]
",
        ip1 = v1.ip(),
        port1 = v1.port(),
        ip2 = v2.ip(),
        port2 = v2.port(),
    )
}

/// A request carrying `x-version: <version>` metadata (none for `""`).
fn request<T>(message: T, version: &str) -> Request<T> {
    let mut req = Request::new(message);
    if !version.is_empty() {
        req.metadata_mut()
            .insert("x-version", version.parse().unwrap());
    }
    req
}

fn hello(name: &str, count: u32) -> HelloRequest {
    HelloRequest {
        name: name.into(),
        count,
    }
}

/// A metadata value as text ("" when absent, so an assertion shows what was there instead).
fn md<'a>(map: &'a MetadataMap, key: &str) -> &'a str {
    map.get(key).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn codec() -> ProstCodec<HelloRequest, HelloReply> {
    ProstCodec::default()
}

fn path(p: &'static str) -> PathAndQuery {
    PathAndQuery::from_static(p)
}

// === the tests ===

#[tokio::test]
async fn unary_calls_route_on_metadata_over_http2() {
    let mut client = client(&mesh_yaml().await);
    for _ in 0..3 {
        client.ready().await.unwrap();
        let res = client
            .unary(request(hello("jason", 0), "v2"), path(SAY_HELLO), codec())
            .await
            .unwrap();
        assert_eq!(
            md(res.metadata(), "x-upstream"),
            "v2",
            "the header match picks v2"
        );
        assert_eq!(
            md(res.metadata(), "x-http-version"),
            "HTTP/2.0",
            "a GRPC port is spoken to in HTTP/2"
        );
        assert_eq!(res.get_ref().message, "hello jason from v2");

        client.ready().await.unwrap();
        let res = client
            .unary(request(hello("ann", 0), ""), path(SAY_HELLO), codec())
            .await
            .unwrap();
        assert_eq!(res.get_ref().message, "hello ann from v1");
    }
}

#[tokio::test]
async fn status_codes_and_messages_reach_the_client() {
    let mut client = client(&mesh_yaml().await);
    client.ready().await.unwrap();
    let status = client
        .unary(request(hello("missing", 0), "v2"), path(SAY_HELLO), codec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "x");
    assert_eq!(
        md(status.metadata(), "x-upstream"),
        "v2",
        "a trailers-only answer keeps the upstream's headers"
    );

    client.ready().await.unwrap();
    let status = client
        .unary(
            request(hello("a", 0), "v2"),
            path("/mesh.test.Greeter/Nope"),
            codec(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert_eq!(status.message(), "no such method");
}

#[tokio::test]
async fn server_streams_and_their_trailers_pass_through() {
    let mut client = client(&mesh_yaml().await);
    client.ready().await.unwrap();
    let res = client
        .server_streaming(request(hello("n", 5), "v2"), path(COUNT), codec())
        .await
        .unwrap();
    assert_eq!(md(res.metadata(), "x-upstream"), "v2");
    let mut stream = res.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.unwrap() {
        got.push(reply.message);
    }
    assert_eq!(got, ["n #0", "n #1", "n #2", "n #3", "n #4"]);
    let trailers = stream.trailers().await.unwrap().expect("trailers");
    assert_eq!(md(&trailers, "x-served-by"), "v2", "custom trailers arrive");
    assert_eq!(md(&trailers, "grpc-status"), "0");

    // A stream that fails after its messages: the status and its metadata are in the trailers.
    client.ready().await.unwrap();
    let mut stream = client
        .server_streaming(request(hello("fail", 2), "v2"), path(COUNT), codec())
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    let status = loop {
        match stream.next().await.expect("the stream ends with a status") {
            Ok(reply) => messages.push(reply.total),
            Err(status) => break status,
        }
    };
    assert_eq!(messages, [0, 1]);
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "out of quota");
    assert_eq!(md(status.metadata(), "x-reason"), "quota");
    assert_eq!(md(status.metadata(), "x-served-by"), "v2");
}

#[tokio::test]
async fn client_streams_reach_the_upstream_whole() {
    let mut client = client(&mesh_yaml().await);
    client.ready().await.unwrap();
    let requests = tokio_stream::iter((1..=10).map(|i| hello("s", i)));
    let res = client
        .client_streaming(request(requests, "v2"), path(SUM), codec())
        .await
        .unwrap();
    assert_eq!(md(res.metadata(), "x-upstream"), "v2");
    assert_eq!(res.get_ref().total, 55);
}

#[tokio::test]
async fn the_mesh_answers_unavailable_when_no_upstream_is_healthy() {
    let mut client = client(&mesh_yaml().await);
    client.ready().await.unwrap();
    let status = client
        .unary(request(hello("a", 0), "v3"), path(SAY_HELLO), codec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no healthy upstream"),
        "{}",
        status.message()
    );
    assert_eq!(md(status.metadata(), "x-mesh-error"), "no-healthy-upstream");
}

#[tokio::test]
async fn the_mesh_answers_unavailable_when_the_upstream_is_down() {
    let dead = support::closed_port().await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: {}, ports: {{grpc: {}}}}}]
",
        dead.ip(),
        dead.port()
    );
    let mut client = client(&yaml);
    client.ready().await.unwrap();
    let status = client
        .unary(request(hello("a", 0), ""), path(SAY_HELLO), codec())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        md(status.metadata(), "x-mesh-error"),
        "upstream-connect-failure"
    );
}

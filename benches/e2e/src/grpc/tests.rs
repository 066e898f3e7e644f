use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;

use super::*;

/// Accepts connections on 127.0.0.1 port 0 and serves each as the upstream does.
pub(crate) async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve_connection(stream));
        }
    });
    addr
}

/// An h2c server on 127.0.0.1 port 0 answering every request with `handler`.
pub(crate) async fn server_with<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(http::Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // As the upstream: without it, Nagle's algorithm holds the trailers back for the
            // client's delayed ACK (40 ms a call).
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            let service = service_fn(move |req| {
                let answer = handler(req);
                async move { Ok::<_, std::convert::Infallible>(answer.await) }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

#[tokio::test]
async fn a_call_gets_its_id_and_the_1_kib_payload_back() {
    let addr = upstream().await;
    let conn = Connection::open(addr).await.unwrap();
    let mut client = conn.client("grpc.bench.local").unwrap();
    for id in [0, 7, u64::MAX] {
        client.call(id).await.unwrap();
    }
    // Two clients share one connection, each call a stream of its own.
    let mut other = conn.client("grpc.bench.local").unwrap();
    let (a, b) = tokio::join!(client.call(1), other.call(2));
    a.unwrap();
    b.unwrap();
}

#[tokio::test]
async fn the_client_sends_the_authority_it_was_given() {
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let addr = server_with(move |req: http::Request<Incoming>| {
        let _ = seen_tx.send(req.uri().authority().map(|a| a.to_string()));
        handle(req)
    })
    .await;
    let conn = Connection::open(addr).await.unwrap();
    conn.client("grpc.bench.local")
        .unwrap()
        .call(1)
        .await
        .unwrap();
    assert_eq!(
        seen_rx.recv().await.unwrap().as_deref(),
        Some("grpc.bench.local")
    );
}

#[tokio::test]
async fn another_method_is_unimplemented() {
    let addr = upstream().await;
    let conn = Connection::open(addr).await.unwrap();
    let mut grpc = Grpc::with_origin(conn, "http://grpc.bench.local".parse().unwrap());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            Request::new(UnaryRequest { id: 1 }),
            PathAndQuery::from_static("/mesh.bench.Bench/Other"),
            ProstCodec::<UnaryRequest, UnaryResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(status.message().contains(METHOD), "{}", status.message());
}

/// Answers with a payload of `len` bytes and the id plus `shift`.
#[derive(Clone, Copy)]
struct Mangled {
    len: usize,
    shift: u64,
}

impl tonic::server::UnaryService<UnaryRequest> for Mangled {
    type Response = UnaryResponse;
    type Future = Ready<Result<Response<UnaryResponse>, Status>>;

    fn call(&mut self, request: Request<UnaryRequest>) -> Self::Future {
        ready(Ok(Response::new(UnaryResponse {
            id: request.into_inner().id + self.shift,
            payload: Bytes::from(vec![b'y'; self.len]),
        })))
    }
}

#[tokio::test]
async fn a_wrong_answer_is_an_error() {
    for (mangled, expect) in [
        (Mangled { len: 10, shift: 0 }, "10-byte payload"),
        (
            Mangled {
                len: PAYLOAD_LEN,
                shift: 1,
            },
            "id 6 (5 asked)",
        ),
    ] {
        let addr = server_with(move |req| async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<UnaryResponse, UnaryRequest>::default());
            grpc.unary(mangled, req).await
        })
        .await;
        let conn = Connection::open(addr).await.unwrap();
        let err = conn.client("h").unwrap().call(5).await.unwrap_err();
        assert!(err.contains(expect), "{err}");
    }
}

#[tokio::test]
async fn a_status_other_than_ok_is_an_error() {
    let addr = server_with(|_req| async { Status::unavailable("no upstream").into_http() }).await;
    let conn = Connection::open(addr).await.unwrap();
    let err = conn.client("h").unwrap().call(1).await.unwrap_err();
    assert!(
        err.contains("Unavailable") && err.contains("no upstream"),
        "{err}"
    );
}

#[tokio::test]
async fn a_closed_port_is_an_error_naming_it() {
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let err = tokio::time::timeout(Duration::from_secs(5), Connection::open(addr))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.contains(&addr.to_string()), "{err}");
}

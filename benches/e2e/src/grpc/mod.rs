//! The gRPC benchmark service: one unary method answering a 1 KiB payload, as the HTTP
//! upstream answers 1 KiB, so the gRPC rows compare with the HTTP ones.
//!
//! The messages are written with prost's derive (no `.proto` file, no protoc on the machine);
//! tonic's [`tonic::server::Grpc`] and [`tonic::client::Grpc`] with the prost codec do the gRPC
//! framing, over hyper's own HTTP/2 connections: no tonic transport, one connection per
//! [`Connection`], so "N connections" means N TCP connections, as for the other load
//! generators. In protobuf terms:
//!
//! ```text
//! package mesh.bench;
//! service Bench { rpc Unary(UnaryRequest) returns (UnaryResponse); }
//! message UnaryRequest { uint64 id = 1; }
//! message UnaryResponse { uint64 id = 1; bytes payload = 2; }
//! ```

use std::{
    future::{Future, Ready, ready},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper::{body::Incoming, client::conn::http2::SendRequest, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tonic::{Request, Response, Status, body::Body, client::Grpc};
use tonic_prost::ProstCodec;

/// The method's path (`/package.Service/Method`).
pub const METHOD: &str = "/mesh.bench.Bench/Unary";
/// The size of every answer's payload: 1 KiB, as the HTTP upstream's body.
pub const PAYLOAD_LEN: usize = 1024;

static PAYLOAD: [u8; PAYLOAD_LEN] = [b'x'; PAYLOAD_LEN];

/// The request: an id the answer echoes, so a client can tell its answer from another's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnaryRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

/// The answer: the request's id and [`PAYLOAD_LEN`] bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UnaryResponse {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(bytes = "bytes", tag = "2")]
    pub payload: Bytes,
}

// === server ===

/// The method's handler: echoes the id with the 1 KiB payload, at once.
#[derive(Debug, Clone, Copy, Default)]
struct Unary;

impl tonic::server::UnaryService<UnaryRequest> for Unary {
    type Response = UnaryResponse;
    type Future = Ready<Result<Response<UnaryResponse>, Status>>;

    fn call(&mut self, request: Request<UnaryRequest>) -> Self::Future {
        ready(Ok(Response::new(UnaryResponse {
            id: request.into_inner().id,
            payload: Bytes::from_static(&PAYLOAD),
        })))
    }
}

/// One request to the server: [`METHOD`] is answered, any other path is `UNIMPLEMENTED` (as a
/// gRPC server answers an unknown method).
pub async fn handle(req: http::Request<Incoming>) -> http::Response<Body> {
    if req.uri().path() != METHOD {
        return Status::unimplemented(format!(
            "{} is not a method of this server; it serves {METHOD}",
            req.uri().path()
        ))
        .into_http();
    }
    let mut grpc = tonic::server::Grpc::new(ProstCodec::<UnaryResponse, UnaryRequest>::default());
    grpc.unary(Unary, req).await
}

/// Serves one accepted connection: HTTP/2 with prior knowledge (h2c), as gRPC without TLS is.
/// Returns when the client goes away.
pub async fn serve_connection(stream: TcpStream) -> Result<(), hyper::Error> {
    let _ = stream.set_nodelay(true);
    let service = service_fn(|req| async { Ok::<_, std::convert::Infallible>(handle(req).await) });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await
}

// === client ===

/// One HTTP/2 connection to a gRPC server (or a proxy in front of it). Cheap to clone: clones
/// share the connection, each call a stream of its own.
#[derive(Debug, Clone)]
pub struct Connection {
    send: SendRequest<Body>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

impl tower_service::Service<http::Request<Body>> for Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        Box::pin(self.send.send_request(req))
    }
}

impl Connection {
    /// Opens an h2c connection to `addr`; the connection's own task runs on the current tokio
    /// runtime until every clone is dropped or the server closes it.
    pub async fn open(addr: SocketAddr) -> Result<Connection, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr} failed: {e}"))?;
        tokio::spawn(async move {
            // An error here is the connection closing (the run ended, or the peer went away);
            // the calls on it report it themselves.
            let _ = conn.await;
        });
        Ok(Connection { send })
    }

    /// A gRPC client on this connection that sends `authority` (what a proxy routes by; mesh
    /// routes by it as by a `Host` header).
    pub fn client(&self, authority: &str) -> Result<Client, String> {
        let origin: http::Uri = format!("http://{authority}")
            .parse()
            .map_err(|e| format!("`{authority}` is not an authority (host[:port]): {e}"))?;
        Ok(Client {
            grpc: Grpc::with_origin(self.clone(), origin),
        })
    }
}

/// A gRPC client of the benchmark service.
#[derive(Debug, Clone)]
pub struct Client {
    grpc: Grpc<Connection>,
}

impl Client {
    /// One unary call. Fails on any gRPC status but OK, and on an answer that is not the one
    /// asked for (another id, or a payload that is not [`PAYLOAD_LEN`] bytes): a proxy that
    /// mangled it must not count as fast.
    pub async fn call(&mut self, id: u64) -> Result<(), String> {
        self.grpc
            .ready()
            .await
            .map_err(|e| format!("connection not ready: {e}"))?;
        let answer = self
            .grpc
            .unary(
                Request::new(UnaryRequest { id }),
                PathAndQuery::from_static(METHOD),
                ProstCodec::<UnaryRequest, UnaryResponse>::default(),
            )
            .await
            .map_err(|s| format!("gRPC status {:?}: {}", s.code(), s.message()))?
            .into_inner();
        if answer.id != id || answer.payload.len() != PAYLOAD_LEN {
            return Err(format!(
                "wrong answer: id {} ({id} asked), {}-byte payload ({PAYLOAD_LEN} expected)",
                answer.id,
                answer.payload.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;

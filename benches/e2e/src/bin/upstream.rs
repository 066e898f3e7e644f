//! The fast upstream every contender forwards to: answers any request with 200 and the same
//! 1 KiB body, over HTTP/1.1 (keep-alive) or h2c (prior knowledge), on one thread, so that the
//! proxy in front of it, not the upstream, is what the load generator measures.
//!
//! `upstream --grpc` serves the gRPC benchmark service instead (`mesh_e2e_bench::grpc`: one
//! unary method answering a 1 KiB payload), over h2c only, as gRPC without TLS is.
//!
//! `upstream [--grpc] [ADDR]` (default `127.0.0.1:0`) prints `listening on ADDR` once bound,
//! which the driver reads to learn the port. It exits on SIGTERM or SIGINT.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

/// The response body: 1 KiB, as the "fast upstream returning 1 KiB".
static BODY: [u8; 1024] = [b'x'; 1024];

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let grpc = args.first().is_some_and(|a| a == "--grpc");
    if grpc {
        args.remove(0);
    }
    let addr: SocketAddr = match args.first().cloned() {
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(a) => a.parse().unwrap_or_else(|e| {
            eprintln!("upstream: `{a}` is not an address like 127.0.0.1:8080: {e}");
            std::process::exit(2)
        }),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("upstream: cannot start a tokio runtime");
    rt.block_on(serve(addr, grpc));
}

async fn serve(addr: SocketAddr, grpc: bool) {
    let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
        eprintln!("upstream: cannot bind {addr}: {e} (is the port in use?)");
        std::process::exit(1)
    });
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    println!("listening on {local}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("upstream: cannot listen for SIGTERM");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("upstream: accept failed: {e}");
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        if grpc {
            // Errors are clients going away, as below.
            tokio::spawn(mesh_e2e_bench::grpc::serve_connection(stream));
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|_req: Request<Incoming>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(&BODY))))
            });
            // Errors here are clients going away (the load generator stopping): not ours.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

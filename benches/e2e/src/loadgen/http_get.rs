//! `mesh-load`'s HTTP client: `GET /` over one hyper client connection, HTTP/1.1 (keep-alive)
//! or h2c (prior knowledge), answered by any 2xx with its whole body read.
//!
//! A connection the server closed (a proxy's keep-alive limit, an error) is opened again on
//! the next request, whose latency then includes the new connection, as oha and wrk count it.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header::HOST};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

/// The HTTP version a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http1,
    /// HTTP/2 with prior knowledge.
    H2c,
}

#[derive(Debug)]
enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    H2c(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(s) => s.is_closed(),
            Sender::H2c(s) => s.is_closed(),
        }
    }
}

/// A client of one connection. A clone shares an h2c connection (a stream of its own per
/// request); a clone of an HTTP/1.1 client opens a connection of its own on its first request
/// (HTTP/1.1 has one request in flight per connection).
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    version: Version,
    /// `http://AUTHORITY/`: the h2c request's URI (its `:authority`).
    uri: Uri,
    /// The HTTP/1.1 `Host` header.
    host: HeaderValue,
    send: Option<Sender>,
    /// An HTTP/1.1 request was sent and its answer not read to the end (its future was
    /// dropped: the caller's timeout): the connection is mid-exchange, and is replaced.
    in_flight: bool,
}

impl Clone for Client {
    fn clone(&self) -> Client {
        Client {
            addr: self.addr,
            version: self.version,
            uri: self.uri.clone(),
            host: self.host.clone(),
            send: match &self.send {
                Some(Sender::H2c(s)) => Some(Sender::H2c(s.clone())),
                _ => None,
            },
            in_flight: false,
        }
    }
}

impl Client {
    /// Connects to `addr`; requests carry `authority` (`Host`, or h2c's `:authority`).
    pub async fn connect(
        addr: SocketAddr,
        authority: &str,
        version: Version,
    ) -> Result<Client, String> {
        let uri: Uri = format!("http://{authority}/")
            .parse()
            .map_err(|e| format!("`{authority}` is not an authority (host[:port]): {e}"))?;
        let host = HeaderValue::from_str(authority)
            .map_err(|e| format!("`{authority}` cannot be a Host header: {e}"))?;
        let mut client = Client {
            addr,
            version,
            uri,
            host,
            send: None,
            in_flight: false,
        };
        client.send = Some(client.open().await?);
        Ok(client)
    }

    async fn open(&self) -> Result<Sender, String> {
        let addr = self.addr;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(stream);
        // The connection tasks end when the server closes or every sender is dropped; their
        // errors are the requests' errors, reported by the requests themselves.
        Ok(match self.version {
            Version::Http1 => {
                let (send, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/1.1 connection to {addr} failed: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::Http1(send)
            }
            Version::H2c => {
                let (send, conn) = http2::Builder::new(TokioExecutor::new())
                    .handshake(io)
                    .await
                    .map_err(|e| format!("HTTP/2 handshake with {addr} failed: {e}"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Sender::H2c(send)
            }
        })
    }

    /// One `GET /`, its body read to the end. Fails on a status other than 2xx, and on a
    /// connection that fails (the next request opens a new one).
    pub async fn get(&mut self) -> Result<(), String> {
        let stale = self.in_flight || self.send.as_ref().is_none_or(Sender::is_closed);
        if stale {
            self.send = None;
            self.in_flight = false;
            self.send = Some(self.open().await?);
        }
        let answer = match self.send.as_mut().expect("opened above") {
            Sender::Http1(send) => {
                self.in_flight = true;
                let req = Request::get("/")
                    .header(HOST, self.host.clone())
                    .body(Empty::new())
                    .expect("a GET / with a valid Host header");
                match send.ready().await {
                    Ok(()) => send.send_request(req).await,
                    Err(e) => Err(e),
                }
            }
            Sender::H2c(send) => {
                let req = Request::get(self.uri.clone())
                    .body(Empty::new())
                    .expect("a GET of a valid URI");
                match send.ready().await {
                    Ok(()) => send.send_request(req).await,
                    Err(e) => Err(e),
                }
            }
        };
        let result = match answer {
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await {
                    Ok(_) if status.is_success() => Ok(()),
                    Ok(_) => Err(format!("status {status}")),
                    Err(e) => Err(format!("the answer's body failed: {e}")),
                }
            }
            Err(e) => Err(format!("request failed: {e}")),
        };
        // After an HTTP/1.1 failure the connection's state is unknown: a fresh one next time.
        // An h2c stream's failure leaves the connection usable unless it closed (checked above).
        self.in_flight = false;
        if result.is_err() && self.version == Version::Http1 {
            self.send = None;
        }
        result
    }
}

//! The accept loop of a gateway listener and what it does with each connection.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use mesh_core::gateway::{self, ServerKind};
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;

use super::{
    Ctx, Site,
    client_hello::{self, MAX_CLIENT_HELLO, Peek},
    describe, l4, requests, rewind,
};
use crate::run::connection::Limits;

/// How long a client has to send its ClientHello, and then to finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections may finish after a stop.
const DRAIN: Duration = Duration::from_secs(5);

/// Accepts connections (at most `--max-connections` at once, as every listener of the
/// process: [`Limits`]) until `stop`, then drains.
/// Each connection is served with the `site` of the moment it was accepted: an update of the
/// listener's servers applies to the next connections.
pub(super) async fn serve(
    listener: TcpListener,
    site: watch::Receiver<Arc<Site>>,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = Arc::new(Semaphore::new(Limits::current().max_connections as usize));
    let local = listener.local_addr().ok();
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    say!("mesh run: gateway accept on {local:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let site = site.borrow().clone();
        let (ctx, stop) = (ctx.clone(), stop.clone());
        conns.spawn(async move {
            connection(stream, peer, &site, ctx, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
}

/// Resolves once `stop` is (or already was) set.
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// One accepted connection, by what the listener serves.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    site: &Site,
    ctx: Arc<Ctx>,
    stop: watch::Receiver<bool>,
) {
    let local = stream.local_addr().ok();
    let servers = match site {
        Site::Tcp(server) => {
            return l4::forward(stream, &[], server, l4::Routes::Tcp, peer, local, ctx).await;
        }
        Site::Http(servers) => {
            let scope = requests::Scope {
                servers: servers.clone(),
                fixed: None,
                tls: false,
                peer,
                local,
                sni: None,
            };
            return requests::serve(stream, scope, ctx, stop).await;
        }
        Site::Tls(servers) => servers,
    };
    let port = servers.list[0].port;
    let (hello, sni) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_client_hello(&mut stream))
        .await
    {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            say!("mesh run: gateway {port}: connection from {peer}: {e}; closed");
            return;
        }
        Err(_) => {
            say!(
                "mesh run: gateway {port}: connection from {peer}: no ClientHello within {HANDSHAKE_TIMEOUT:?}; closed"
            );
            return;
        }
    };
    let Some(index) = gateway::server_for(&servers.list, sni.as_deref()) else {
        say!(
            "mesh run: gateway {port}: connection from {peer}: no server for SNI {}; closed",
            sni.as_deref().unwrap_or("(none)")
        );
        return;
    };
    let server = &servers.list[index];
    let Some(config) = &servers.configs[index] else {
        // PASSTHROUGH: the ClientHello goes upstream first, untouched.
        let routes = l4::Routes::Tls {
            sni: sni.as_deref(),
        };
        return l4::forward(stream, &hello, server, routes, peer, local, ctx).await;
    };
    let accepting = TlsAcceptor::from(config.clone()).accept(rewind::Rewind::new(hello, stream));
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, accepting).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            say!(
                "mesh run: gateway {port}: TLS handshake with {peer} for {}: {e}; closed",
                describe(server)
            );
            return;
        }
        Err(_) => {
            say!("mesh run: gateway {port}: TLS handshake with {peer} timed out; closed");
            return;
        }
    };
    if servers.kinds[index] == ServerKind::TlsTerminated {
        return l4::forward(tls, &[], server, l4::Routes::Tcp, peer, local, ctx).await;
    }
    let scope = requests::Scope {
        servers: servers.clone(),
        fixed: Some(index),
        tls: true,
        peer,
        local,
        sni,
    };
    requests::serve(tls, scope, ctx, stop).await;
}

/// Reads until the bytes hold a whole ClientHello; returns them and its server name.
async fn read_client_hello(stream: &mut TcpStream) -> Result<(Vec<u8>, Option<String>), String> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        match client_hello::peek(&buf) {
            Peek::Hello { server_name } => return Ok((buf, server_name)),
            Peek::Invalid(why) => return Err(format!("not a TLS ClientHello ({why})")),
            Peek::NeedMore if buf.len() > MAX_CLIENT_HELLO + 1024 => {
                return Err("ClientHello too large".into());
            }
            Peek::NeedMore => {}
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the ClientHello: {e}"))?;
        if n == 0 {
            return Err("closed before a whole ClientHello".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

//! HTTP/1.1 upgrades (WebSocket, and any other `Upgrade` protocol) through every HTTP listener.
//!
//! Istio turns WebSocket upgrades on for every HTTP route (Envoy's `upgrade_configs:
//! [{upgrade_type: websocket}]` in each HTTP connection manager it generates), so an upgrade
//! request is an ordinary request on its way out: it goes through the whole stack (routing,
//! rewrites, faults, authorization, rate limits, the endpoint picker) and reaches the upstream
//! over the pooled HTTP/1.1 client with its `Connection: upgrade` and `Upgrade` headers. Only the
//! answer differs: when the upstream switches protocols (`101`), the 101 goes back to the client,
//! hyper hands over both connections, and they are joined, bytes copied both ways, until both
//! directions are closed (one side's close is passed on as a half-close, as Envoy's TCP proxy
//! does). Any other answer (a 403 from authorization, a 404, a fault abort, the upstream's 426)
//! is an ordinary response and the client's connection stays HTTP.
//!
//! Timeouts: the route's
//! [`timeout`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPRoute-timeout)
//! bounds the exchange up to the 101 (an upstream that never answers the upgrade gets the
//! client a 504), and no further: the timeout layer's clock ends with the 101's empty body, so
//! a switched connection lives until a side closes it. Envoy behaves the same way: its route
//! timeout is disarmed by the upgrade response (envoyproxy/envoy#41075). Envoy's stream idle
//! timeout (5 min) has no counterpart here: tunnels have no idle timeout (the WebSocket
//! endpoints' pings and closes decide), but each holds a connection slot of its listener
//! (`--max-connections`) and, on SIGTERM, the drain waits for them as for any connection.
//!
//! Retries: a 101 is a success and is never retried. Over HTTP/2 (h2c or ALPN h2) there is no
//! `Upgrade` (RFC 8441's extended CONNECT is not offered), and an upgrade request routed to an
//! HTTP/2-only destination (`GRPC`/`HTTP2` ports) loses its connection-level headers on the way,
//! so the upstream answers it as a plain request.

use http::{HeaderValue, Request, Response, StatusCode, Version, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mesh_tower::body::{self, MeshBody};

/// Whether `req` asks to switch protocols: HTTP/1.1 with an `Upgrade` header and a
/// `Connection` header naming `upgrade` (RFC 9110 section 7.8).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// The client's side of an upgrade, taken off the request before it enters the stack (so no
/// layer that copies requests, retries or mirrors, carries it along).
#[derive(Debug)]
pub(crate) struct Downstream(OnUpgrade);

/// Takes the client's side of the upgrade `req` asks for; `None` for any other request (which
/// keeps what hyper put in its extensions).
pub(crate) fn take<B>(req: &mut Request<B>) -> Option<Downstream> {
    if !is_upgrade(req) {
        return None;
    }
    req.extensions_mut().remove::<OnUpgrade>().map(Downstream)
}

impl Downstream {
    /// Completes the exchange with the stack's answer `res`. A 101 from an upstream joins the
    /// two connections on a task of its own, which keeps `hold` (the connection's slot of its
    /// listener) until both sides are closed; any other answer is returned as it is.
    pub(crate) fn finish<H>(self, mut res: Response<MeshBody>, hold: H) -> Response<MeshBody>
    where
        H: Send + 'static,
    {
        if res.status() != StatusCode::SWITCHING_PROTOCOLS {
            return res;
        }
        let Some(upstream) = res.extensions_mut().remove::<OnUpgrade>() else {
            // A 101 no upstream connection stands behind (a layer built it): switching the
            // client's connection would leave it talking to nobody.
            tracing::warn!(
                target: "mesh::upgrade",
                "a 101 without an upstream connection to join; answering 502"
            );
            return bad_gateway();
        };
        let downstream = self.0;
        tokio::spawn(async move {
            let _hold = hold;
            let (client, server) = match tokio::try_join!(downstream, upstream) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(target: "mesh::upgrade", "upgrade not completed: {e}");
                    return;
                }
            };
            let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
            match tokio::io::copy_bidirectional(&mut client, &mut server).await {
                Ok((up, down)) => tracing::debug!(
                    target: "mesh::upgrade",
                    "upgraded connection closed: {up} bytes up, {down} bytes down"
                ),
                Err(e) => {
                    tracing::debug!(target: "mesh::upgrade", "upgraded connection ended: {e}")
                }
            }
        });
        res
    }
}

fn bad_gateway() -> Response<MeshBody> {
    let mut res = Response::new(body::full(
        "upstream switched protocols without a connection",
    ));
    *res.status_mut() = StatusCode::BAD_GATEWAY;
    res.headers_mut().insert(
        "x-mesh-error",
        HeaderValue::from_static("upstream-upgrade-failed"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `OnUpgrade` that never completes (what hyper leaves when there is none).
    fn no_upgrade() -> OnUpgrade {
        hyper::upgrade::on(Request::new(()))
    }

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get("http://echo/ws").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn an_upgrade_needs_the_upgrade_header_and_the_connection_token() {
        let ws = [("connection", "Upgrade"), ("upgrade", "websocket")];
        assert!(is_upgrade(&req(Version::HTTP_11, &ws)));
        // The token may sit in a list, in any case, in any of several Connection headers.
        assert!(is_upgrade(&req(
            Version::HTTP_11,
            &[
                ("connection", "close"),
                ("connection", "keep-alive, UPGRADE"),
                ("upgrade", "websocket"),
            ]
        )));
        assert!(!is_upgrade(&req(
            Version::HTTP_11,
            &[("upgrade", "websocket")]
        )));
        assert!(!is_upgrade(&req(
            Version::HTTP_11,
            &[("connection", "upgraded"), ("upgrade", "websocket")]
        )));
        assert!(!is_upgrade(&req(
            Version::HTTP_11,
            &[("connection", "upgrade")]
        )));
        // HTTP/2 has no Upgrade (RFC 9113 section 8.2.2).
        assert!(!is_upgrade(&req(Version::HTTP_2, &ws)));
    }

    #[test]
    fn take_leaves_other_requests_alone() {
        let mut plain = req(Version::HTTP_11, &[]);
        plain.extensions_mut().insert(no_upgrade());
        assert!(take(&mut plain).is_none());
        assert!(plain.extensions().get::<OnUpgrade>().is_some());

        let mut ws = req(
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        );
        ws.extensions_mut().insert(no_upgrade());
        assert!(take(&mut ws).is_some());
        assert!(ws.extensions().get::<OnUpgrade>().is_none());
    }

    #[tokio::test]
    async fn only_a_101_with_an_upstream_connection_switches() {
        let mut ws = req(
            Version::HTTP_11,
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        );
        ws.extensions_mut().insert(no_upgrade());
        let down = take(&mut ws).unwrap();
        let mut denied = Response::new(body::full("RBAC: access denied"));
        *denied.status_mut() = StatusCode::FORBIDDEN;
        assert_eq!(down.finish(denied, ()).status(), StatusCode::FORBIDDEN);

        ws.extensions_mut().insert(no_upgrade());
        let down = take(&mut ws).unwrap();
        let mut switched = Response::new(body::empty());
        *switched.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let res = down.finish(switched, ());
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(res.headers()["x-mesh-error"], "upstream-upgrade-failed");
    }
}

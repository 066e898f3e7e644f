//! `x-forwarded-client-cert`: who called, as Envoy tells the app behind a sidecar.

use std::task::{Context, Poll};

use http::{HeaderValue, Request, header::HeaderName};
use tower::{Layer, Service};

use super::MutualTls;

/// The header name.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The header value for an mTLS request:
/// `By=<own SPIFFE ID>;Hash=<hex SHA-256 of the peer's leaf DER>;Subject="";URI=<peer SPIFFE ID>`,
/// the fields Istio's sidecar asks Envoy for (`set_current_client_cert_details`: subject, URI,
/// DNS; workload certificates have an empty subject and no DNS names).
pub fn xfcc_value(mtls: &MutualTls) -> HeaderValue {
    let value = format!(
        "By={};Hash={};Subject=\"\";URI={}",
        mtls.local_identity,
        mtls.peer_certificate_hash_hex(),
        mtls.peer_identity
    );
    // SPIFFE IDs are ASCII without control characters (Identity::parse_spiffe, the CA);
    // the fallback keeps a strange certificate from turning into a panic.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("By=;Hash=;URI="))
}

/// Sets `x-forwarded-client-cert` on requests that arrived over mTLS and removes it from the
/// others, as Envoy's `forward_client_cert_details: SANITIZE_SET` on Istio's sidecar inbound
/// listener: the app learns the caller's identity from the one place a client cannot forge.
///
/// It reads the [`MutualTls`] request extension the [`InboundAcceptor`](super::InboundAcceptor)
/// and [`serve`](super::serve) attach; an incoming header is always replaced or dropped.
///
/// ```
/// use mesh_tower::inbound::{X_FORWARDED_CLIENT_CERT, XfccLayer};
/// use tower::{ServiceBuilder, ServiceExt};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let app = tower::service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.headers().contains_key(X_FORWARDED_CLIENT_CERT))
/// });
/// let svc = ServiceBuilder::new().layer(XfccLayer::new()).service(app);
/// // Plain text: a forged header does not reach the app.
/// let forged = http::Request::builder()
///     .header("x-forwarded-client-cert", "URI=spiffe://cluster.local/ns/default/sa/admin")
///     .body(())
///     .unwrap();
/// assert!(!svc.oneshot(forged).await.unwrap());
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct XfccLayer {
    _priv: (),
}

impl XfccLayer {
    pub fn new() -> Self {
        XfccLayer::default()
    }
}

impl<S> Layer<S> for XfccLayer {
    type Service = Xfcc<S>;

    fn layer(&self, inner: S) -> Xfcc<S> {
        Xfcc { inner }
    }
}

/// Sanitizes and sets `x-forwarded-client-cert`; see [`XfccLayer`].
#[derive(Debug, Clone)]
pub struct Xfcc<S> {
    inner: S,
}

impl<S> Xfcc<S> {
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for Xfcc<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        let value = req.extensions().get::<MutualTls>().map(xfcc_value);
        let headers = req.headers_mut();
        headers.remove(X_FORWARDED_CLIENT_CERT);
        if let Some(value) = value {
            headers.insert(X_FORWARDED_CLIENT_CERT, value);
        }
        self.inner.call(req)
    }
}

//! How many requests each workload's application served: what a person would read in each
//! pod's access log, and what shows that mirrored requests arrive although no page shows
//! their answers.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::Request;
use mesh_tower::body::MeshBody;
use tokio::sync::Notify;
use tower::Service;

/// A workload's count of requests that reached its application (past the inbound policies).
#[derive(Debug, Default)]
pub(crate) struct Served {
    count: AtomicU64,
    changed: Notify,
}

impl Served {
    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests were served, for at most `timeout`; whether they were.
    pub(crate) async fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        let reached = async {
            loop {
                // Registered before the check, so an increment in between still wakes us.
                let changed = self.changed.notified();
                if self.get() >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, reached).await.is_ok()
    }
}

/// Counts each request into [`Served`], then calls the application.
#[derive(Debug, Clone)]
pub(crate) struct Counted<S> {
    pub(crate) inner: S,
    pub(crate) served: Arc<Served>,
}

impl<S: Service<Request<MeshBody>>> Service<Request<MeshBody>> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> S::Future {
        self.served.count.fetch_add(1, Ordering::SeqCst);
        self.served.changed.notify_waiters();
        self.inner.call(req)
    }
}

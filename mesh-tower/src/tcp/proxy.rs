//! Copying a routed connection both ways, with an idle timeout.

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    time::Instant,
};

/// Sends `first` (bytes already read from the client, e.g. a peeked ClientHello) to
/// `upstream`, then copies both ways until both sides have closed (a half-close is passed on,
/// as Envoy's TCP proxy does), or until nothing moved either way for `idle` (Envoy's TCP
/// `idle_timeout`), which ends with [`io::ErrorKind::TimedOut`]. Returns the bytes sent up
/// (`first` included) and down.
pub async fn proxy<D, U>(
    downstream: D,
    upstream: U,
    first: &[u8],
    idle: Duration,
) -> io::Result<(u64, u64)>
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut up = Tracked {
        inner: upstream,
        activity: activity.clone(),
    };
    let mut down = Tracked {
        inner: downstream,
        activity: activity.clone(),
    };
    let copy = async {
        up.write_all(first).await?;
        let (sent, received) = tokio::io::copy_bidirectional(&mut down, &mut up).await?;
        Ok((sent + first.len() as u64, received))
    };
    tokio::select! {
        done = copy => done,
        () = activity.idle_for(idle) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no traffic either way for {idle:?} (DestinationRule connectionPool.tcp.idleTimeout)"),
        )),
    }
}

/// When bytes last moved, shared by both directions.
#[derive(Clone, Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds since `start`.
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records activity on every read and write that moves bytes.
#[derive(Debug)]
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled
            && *n > 0
        {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

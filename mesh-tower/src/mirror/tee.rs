//! The bodies of mirroring: [`TeeBody`] streams the main body on and keeps a copy up to a cap;
//! [`ReplayBody`] replays that copy to a mirror.

use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    sync::{Arc, atomic::AtomicU64},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::{Captured, count_skip};

/// The copy being kept, and where it goes when the body ends.
#[derive(Debug)]
struct Kept {
    chunks: Vec<Bytes>,
    len: usize,
    cap: usize,
    trailers: Option<HeaderMap>,
    tx: oneshot::Sender<Captured>,
    skipped: Arc<AtomicU64>,
}

pin_project_lite::pin_project! {
    /// A body that passes every frame through as it comes (no buffering: the upstream reads at
    /// the client's pace) and keeps a copy of the data, up to `cap` bytes, for the mirrors.
    ///
    /// At the end of the stream the copy is sent to the mirror task. Over the cap, the copy is
    /// dropped (and counted); on an error or an early drop, the task's channel closes and
    /// nothing is mirrored.
    #[derive(Debug)]
    pub(crate) struct TeeBody<B> {
        #[pin]
        inner: B,
        kept: Option<Kept>,
    }
}

impl<B> TeeBody<B> {
    pub(super) fn new(
        inner: B,
        cap: usize,
        tx: oneshot::Sender<Captured>,
        skipped: Arc<AtomicU64>,
    ) -> Self {
        TeeBody {
            inner,
            kept: Some(Kept {
                chunks: Vec::new(),
                len: 0,
                cap,
                trailers: None,
                tx,
                skipped,
            }),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for TeeBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(copy) = this.kept.as_mut() {
                    if let Some(data) = f.data_ref() {
                        if copy.len + data.len() > copy.cap {
                            count_skip(&copy.skipped, copy.cap);
                            *this.kept = None;
                        } else {
                            copy.len += data.len();
                            copy.chunks.push(data.clone());
                        }
                    } else if let Some(trailers) = f.trailers_ref() {
                        copy.trailers = Some(trailers.clone());
                    }
                }
                if inner.is_end_stream() {
                    finish(this.kept);
                }
            }
            // The main request failed: no mirror (the sender drops).
            Some(Err(_)) => *this.kept = None,
            None => finish(this.kept),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn finish(kept: &mut Option<Kept>) {
    if let Some(copy) = kept.take() {
        let _ = copy.tx.send(Captured {
            chunks: copy.chunks,
            trailers: copy.trailers,
        });
    }
}

/// A body replaying captured data chunks, then trailers.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplayBody {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
}

impl ReplayBody {
    pub(crate) fn new(chunks: impl Into<VecDeque<Bytes>>, trailers: Option<HeaderMap>) -> Self {
        ReplayBody {
            chunks: chunks.into(),
            trailers,
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

//! The replayable request body: the first attempt streams the client's body as it arrives
//! while a copy of what went by is kept, up to a byte cap; a retry replays the copy and then
//! goes on with the rest of the client's body.
//!
//! Every attempt gets its own reader (`ReplayBody`) over one shared state: the client's
//! body (read once, by whichever attempt gets to the end of the copy first), the copy (cheap
//! `Bytes` clones of the chunks), and the trailers (gRPC's status lives there, so they are kept
//! and replayed too). Starting a retry *abandons* the reader of the attempt before: hyper may
//! still hold that body (an HTTP/1.1 connection keeps writing a request after an early
//! response; an HTTP/2 stream pumps it from a task), and if it went on reading it would take
//! chunks of the client's body away from the retry. An abandoned reader fails instead, which
//! makes hyper give that connection up; it never ends cleanly, which would send the upstream a
//! truncated body that looks complete.
//!
//! A retry is possible while the copy is whole: nothing past the cap was read, and the
//! client's body did not fail. It does not matter whether the client's body had been sent
//! completely when the attempt failed: a retry replays what was read and then streams the
//! rest. When the body's size hint says it is over the cap from the start, nothing is copied,
//! and a retry is still possible as long as no byte of it has been read (a connect failure).
//!
//! An empty body (a GET) needs no shared state: each attempt gets a fresh empty body.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::{self, BoxError, MeshBody};

/// Why a replay reader cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A later attempt took over the request body.
    #[error("the request body was handed to a retry of this request")]
    Abandoned,
    /// The body went past the replay cap and this reader is behind what was read.
    #[error("the request body exceeded the retry buffer of {cap} bytes and cannot be replayed")]
    OverCap { cap: usize },
    /// The client's body failed earlier (the error went to the attempt that read it).
    #[error("the request body failed earlier")]
    Failed,
}

/// The request body of every attempt of one request.
#[derive(Debug)]
pub(crate) enum Replay {
    /// An empty body: every attempt gets a fresh empty one.
    Empty,
    Shared(Arc<Mutex<State>>),
}

/// What the attempts of one request share.
#[derive(Debug)]
pub(crate) struct State {
    /// The client's body; `None` once it ended or failed.
    original: Option<MeshBody>,
    /// The data chunks read so far, while the copy is whole.
    chunks: Vec<Bytes>,
    /// How many data chunks were read from the client's body (copied or not).
    read: usize,
    /// Bytes in `chunks`.
    copied: usize,
    cap: usize,
    /// Something past the cap was read (or the size hint said it would be): no copy.
    over_cap: bool,
    trailers: Option<HeaderMap>,
    /// The client's body ended (after its trailers, if any).
    complete: bool,
    failed: bool,
    /// The reader that may read; older ones are abandoned.
    generation: u64,
    /// The generation whose reader delivered the end of the body.
    finished_by: Option<u64>,
    hint: SizeHint,
}

impl Replay {
    /// Wraps `body`, keeping a copy of up to `cap` bytes; returns the body of the first
    /// attempt.
    pub(crate) fn new(body: MeshBody, cap: usize) -> (Replay, MeshBody) {
        if body.is_end_stream() {
            return (Replay::Empty, body::empty());
        }
        let hint = body.size_hint();
        let state = State {
            original: Some(body),
            chunks: Vec::new(),
            read: 0,
            copied: 0,
            cap,
            over_cap: hint.lower() > cap as u64,
            trailers: None,
            complete: false,
            failed: false,
            generation: 0,
            finished_by: None,
            hint,
        };
        let shared = Arc::new(Mutex::new(state));
        let first = ReplayBody::new(shared.clone(), 0);
        (Replay::Shared(shared), body::boxed(first))
    }

    /// Whether a retry could have the whole body.
    pub(crate) fn is_replayable(&self) -> bool {
        match self {
            Replay::Empty => true,
            Replay::Shared(s) => lock(s).is_replayable(),
        }
    }

    /// The body of the next attempt, abandoning the reader of the attempt before; `None`
    /// when the body cannot be replayed.
    pub(crate) fn next_attempt(&self) -> Option<MeshBody> {
        match self {
            Replay::Empty => Some(body::empty()),
            Replay::Shared(s) => {
                let generation = {
                    let mut state = lock(s);
                    if !state.is_replayable() {
                        return None;
                    }
                    state.generation += 1;
                    state.generation
                };
                Some(body::boxed(ReplayBody::new(s.clone(), generation)))
            }
        }
    }

    /// Whether the current attempt's body was sent to its end. An empty body counts as sent
    /// (the request is complete with its headers).
    pub(crate) fn current_sent(&self) -> bool {
        match self {
            Replay::Empty => true,
            Replay::Shared(s) => {
                let state = lock(s);
                state.finished_by == Some(state.generation)
            }
        }
    }
}

impl State {
    fn is_replayable(&self) -> bool {
        !self.failed && (!self.over_cap || self.read == 0)
    }
}

fn lock(s: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves consistent data (every update is a single step).
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// One attempt's reader of the shared request body.
#[derive(Debug)]
pub(crate) struct ReplayBody {
    shared: Arc<Mutex<State>>,
    generation: u64,
    /// The next data chunk to yield.
    pos: usize,
    /// Data bytes yielded (for the size hint).
    yielded: u64,
    trailers_sent: bool,
}

impl ReplayBody {
    fn new(shared: Arc<Mutex<State>>, generation: u64) -> Self {
        ReplayBody {
            shared,
            generation,
            pos: 0,
            yielded: 0,
            trailers_sent: false,
        }
    }

    fn data(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.pos += 1;
        self.yielded += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let shared = this.shared.clone();
        let mut state = lock(&shared);
        if state.generation != this.generation {
            return Poll::Ready(Some(Err(ReplayError::Abandoned.into())));
        }
        // Replay what earlier attempts read.
        if this.pos < state.read {
            if state.over_cap {
                let cap = state.cap;
                return Poll::Ready(Some(Err(ReplayError::OverCap { cap }.into())));
            }
            let chunk = state.chunks[this.pos].clone();
            return this.data(chunk);
        }
        loop {
            if state.complete {
                if !this.trailers_sent
                    && let Some(t) = &state.trailers
                {
                    this.trailers_sent = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                }
                state.finished_by = Some(this.generation);
                return Poll::Ready(None);
            }
            let Some(original) = state.original.as_mut() else {
                return Poll::Ready(Some(Err(ReplayError::Failed.into())));
            };
            match std::task::ready!(Pin::new(original).poll_frame(cx)) {
                None => {
                    state.complete = true;
                    state.original = None;
                }
                Some(Err(e)) => {
                    state.failed = true;
                    state.original = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        state.read += 1;
                        if !state.over_cap {
                            if state.copied + chunk.len() > state.cap {
                                state.over_cap = true;
                                state.chunks = Vec::new();
                            } else {
                                state.copied += chunk.len();
                                state.chunks.push(chunk.clone());
                            }
                        }
                        return this.data(chunk);
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            // Trailers end a body.
                            state.trailers = Some(trailers);
                            state.complete = true;
                            state.original = None;
                        }
                        // Any other kind of frame is not ours to forward; read on.
                    }
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let mut state = lock(&self.shared);
        if state.generation != self.generation || self.pos < state.read {
            return false;
        }
        if !state.complete
            && state
                .original
                .as_ref()
                .is_some_and(|original| original.is_end_stream())
        {
            // hyper stops polling a body that says it is done: record the end here.
            state.complete = true;
            state.original = None;
        }
        let done = state.complete && (self.trailers_sent || state.trailers.is_none());
        if done {
            state.finished_by = Some(self.generation);
        }
        done
    }

    fn size_hint(&self) -> SizeHint {
        let hint = lock(&self.shared).hint;
        let mut out = SizeHint::new();
        out.set_lower(hint.lower().saturating_sub(self.yielded));
        if let Some(upper) = hint.upper() {
            out.set_upper(upper.saturating_sub(self.yielded));
        }
        out
    }
}

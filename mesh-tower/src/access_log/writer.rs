//! The bounded writer: a channel of at most [`QUEUE_LINES`] lines to a thread that writes them
//! through a buffer and flushes whenever it has caught up. A full channel drops the line and
//! counts it: a request never waits for the log.

use std::{
    io::{BufWriter, Write},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
};

/// Lines waiting to be written at most.
pub const QUEUE_LINES: usize = 4096;

/// Buffered before a write reaches the file.
const BUFFER: usize = 64 * 1024;

enum Msg {
    Line(String),
    /// Written and flushed everything before this: answer.
    Flush(SyncSender<()>),
}

#[derive(Debug)]
pub(super) struct Writer {
    tx: SyncSender<Msg>,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Line(_) => "Line",
            Msg::Flush(_) => "Flush",
        })
    }
}

impl Writer {
    /// Starts the writing thread; it ends when the last sender is dropped.
    pub(super) fn spawn(out: Box<dyn Write + Send>) -> Self {
        Self::with_capacity(out, QUEUE_LINES)
    }

    pub(super) fn with_capacity(out: Box<dyn Write + Send>, capacity: usize) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Msg>(capacity);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = BufWriter::with_capacity(BUFFER, out);
                let failed = AtomicBool::new(false);
                let report = |e: std::io::Error| {
                    // Once: a full disk would otherwise repeat it for every line.
                    if !failed.swap(true, Ordering::Relaxed) {
                        tracing::warn!("access log: write failed: {e}; lines may be lost");
                    }
                };
                while let Ok(first) = rx.recv() {
                    let mut next = Some(first);
                    // Everything already queued, then one flush.
                    while let Some(msg) = next {
                        match msg {
                            Msg::Line(line) => {
                                if let Err(e) = out.write_all(line.as_bytes()) {
                                    report(e);
                                }
                            }
                            Msg::Flush(done) => {
                                if let Err(e) = out.flush() {
                                    report(e);
                                }
                                let _ = done.send(());
                            }
                        }
                        next = rx.try_recv().ok();
                    }
                    if let Err(e) = out.flush() {
                        report(e);
                    }
                }
            });
        if let Err(e) = spawned {
            // Without the thread every send fails and is counted as dropped.
            tracing::warn!(
                "access log: cannot start the writer thread: {e}; no lines will be written"
            );
        }
        Writer {
            tx,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `line`, or drops and counts it when the queue is full.
    pub(super) fn send(&self, line: String) {
        match self.tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("mesh_access_log_dropped_total").increment(1);
            }
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Blocks until every line queued before it is written and flushed.
    pub(super) fn flush(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

//! Identities from Istio's file layout, picked up again when the files change: what
//! `mesh run --identity-dir` uses with certificates written by `mesh ca issue`, istio-agent,
//! cert-manager's istio-csr or a SPIRE helper.

use std::{
    path::{Path, PathBuf},
    sync::mpsc::{RecvTimeoutError, channel},
    thread::JoinHandle,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};

use super::{IdentitySource, TlsError, WorkloadCertificate};

/// How long the folder must be quiet before it is read again: writers replace the three files
/// one after another.
const SETTLE: Duration = Duration::from_millis(100);

/// Watches an identity folder; stops when dropped.
#[derive(Debug)]
pub struct DirWatch {
    watcher: Option<notify::RecommendedWatcher>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        // Dropping the watcher closes the channel, which ends the thread.
        self.watcher.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl IdentitySource {
    /// Reads `dir/cert-chain.pem`, `dir/key.pem` and `dir/root-cert.pem`, then watches the
    /// folder (renames and Kubernetes secret-volume symlink swaps included) and rotates to the
    /// new certificate whenever the files change. A half-written or bad set is logged and
    /// skipped: the current certificate stays until a good one is read.
    pub fn watch_dir(dir: &Path) -> Result<(IdentitySource, DirWatch), TlsError> {
        let source = IdentitySource::from_dir(dir)?;
        let (tx, rx) = channel();
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(|e| watch_error(dir, e))?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_error(dir, e))?;
        let (rotated, dir_owned): (IdentitySource, PathBuf) = (source.clone(), dir.to_owned());
        let thread = std::thread::Builder::new()
            .name("mesh-identity-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Let the writer finish the set.
                    loop {
                        match rx.recv_timeout(SETTLE) {
                            Ok(_) => continue,
                            Err(RecvTimeoutError::Timeout) => break,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    reload(&rotated, &dir_owned);
                }
            })
            .map_err(|e| TlsError::Io {
                path: dir.display().to_string(),
                source: e,
            })?;
        Ok((
            source,
            DirWatch {
                watcher: Some(watcher),
                thread: Some(thread),
            },
        ))
    }
}

fn reload(source: &IdentitySource, dir: &Path) {
    let cert = match WorkloadCertificate::from_dir(dir) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(target: "mesh::tls", "identity in {} not reloaded, keeping the current one: {e}", dir.display());
            return;
        }
    };
    let current = source.certificate();
    if cert.chain() == current.chain() && cert.roots() == current.roots() {
        return;
    }
    if cert.identity() != current.identity() {
        tracing::warn!(
            target: "mesh::tls",
            "identity in {} changed from {} to {}",
            dir.display(),
            current.identity(),
            cert.identity()
        );
    }
    match source.rotate(cert) {
        Ok(()) => {
            tracing::info!(target: "mesh::tls", "workload certificate rotated from {}", dir.display())
        }
        Err(e) => {
            tracing::warn!(target: "mesh::tls", "identity in {} not rotated: {e}", dir.display())
        }
    }
}

fn watch_error(dir: &Path, e: notify::Error) -> TlsError {
    TlsError::Io {
        path: dir.display().to_string(),
        source: std::io::Error::other(format!("cannot watch for certificate rotation: {e}")),
    }
}

//! Hot reload: watch the config paths, and load them again when their content changes.
//!
//! ```no_run
//! // The first load, then a report per change on the watcher's thread; keep `watcher` alive.
//! let (mesh, watcher) = mesh_config::watch(["mesh/"], |reload| match reload {
//!     mesh_config::Reload::Reloaded { mesh } => println!("config version {}", mesh.version),
//!     mesh_config::Reload::Rejected { error } => eprintln!("kept the last good config: {error}"),
//! })?;
//! # drop((mesh, watcher));
//! # Ok::<(), mesh_config::LoadError>(())
//! ```
//!
//! Istio's control plane pushes a new config when a resource changes and keeps serving the last
//! accepted one when a new one is rejected; this is the file-based equivalent. Events are
//! debounced ([`DEBOUNCE`]), a reload runs only when the files' bytes changed (so touching a file
//! or an editor's swap file does not churn versions and the per-version caches of the layers),
//! one reload runs at a time, and changes made during a reload are coalesced into one more.
//!
//! What is watched: a folder recursively; a file through its parent folder (editors' rename-over
//! saves and the Kubernetes ConfigMap `..data` symlink swap both replace the entry rather than
//! write to it). See [`targets`].

mod targets;
#[cfg(test)]
mod tests;

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    io,
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::Duration,
};

use notify_debouncer_full::{
    DebounceEventResult, Debouncer, RecommendedCache, new_debouncer, notify::RecommendedWatcher,
};

use crate::{LoadError, Loader, Mesh, Report, load};
use targets::Targets;

/// How long the files must be quiet before a reload: an editor's save or a ConfigMap update is a
/// burst of events within a few milliseconds.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// The outcome of a reload, reported to the callback given to [`Loader::watch`].
#[derive(Debug)]
pub enum Reload {
    /// The files changed and load without error: a new mesh, with a larger
    /// [`version`](mesh_core::CompiledMesh::version) than any before it, and its warnings
    /// ([`Mesh::warnings`]).
    Reloaded { mesh: Mesh },
    /// The files changed but do not load: keep the last good config. [`LoadError::Invalid`]
    /// lists every diagnostic (errors and warnings, with `file:line:col`); [`LoadError::Io`] says
    /// which path could not be read.
    Rejected { error: LoadError },
}

/// Watches config paths and reloads them; dropping it stops watching (a reload under way still
/// finishes and is reported).
pub struct Watcher {
    paths: Vec<PathBuf>,
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
    worker: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("paths", &self.paths)
            .field("running", &self.debouncer.is_some())
            .finish()
    }
}

/// [`Loader::watch`] with the default options.
pub fn watch<P: AsRef<Path>>(
    paths: impl IntoIterator<Item = P>,
    on_reload: impl FnMut(Reload) + Send + 'static,
) -> Result<(Mesh, Watcher), LoadError> {
    Loader::new().watch(paths, on_reload)
}

impl Loader {
    /// Loads `paths` as [`Loader::load`] does, then keeps watching them: each later change of
    /// their content is loaded again with the same options and reported to `on_reload`, on the
    /// watcher's own thread (keep the callback short; storing the mesh in a handle is the point).
    ///
    /// Fails as `load` does when the first load fails, and with [`LoadError::Io`] when a path
    /// cannot be watched (on Linux, the inotify limits `fs.inotify.max_user_watches` and
    /// `max_user_instances` can be raised).
    pub fn watch<P: AsRef<Path>>(
        &self,
        paths: impl IntoIterator<Item = P>,
        on_reload: impl FnMut(Reload) + Send + 'static,
    ) -> Result<(Mesh, Watcher), LoadError> {
        let paths: Vec<PathBuf> = paths
            .into_iter()
            .map(|p| p.as_ref().to_path_buf())
            .collect();
        let targets = Targets::resolve(&paths)?;
        // A slot of one: a change while a reload runs queues one more reload, never a backlog.
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let filter = targets.clone();
        let mut debouncer = new_debouncer(DEBOUNCE, None, move |res: DebounceEventResult| {
            let concerns = match &res {
                Ok(events) => events.iter().any(|e| filter.concerns(e)),
                // A lost or overflowed queue: look at the files again.
                Err(_) => true,
            };
            if concerns {
                let _ = wake.try_send(());
            }
        })
        .map_err(|e| watch_error(&paths, e))?;
        for (dir, mode) in targets.watches() {
            debouncer
                .watch(dir, mode)
                .map_err(|e| watch_error(&[dir.to_path_buf()], e))?;
        }
        // The fingerprint is taken after the watches are in place and before the first load, so
        // a change in between is either in the first load or queued as an event, never lost.
        let baseline = fingerprint(&paths).ok();
        let mesh = self.load(&paths)?;
        let worker = {
            let (loader, paths) = (self.clone(), paths.clone());
            thread::Builder::new()
                .name("mesh-config reload".into())
                .spawn(move || reload_loop(&woken, &loader, &paths, baseline, on_reload))
                .map_err(LoadError::Io)?
        };
        Ok((
            mesh,
            Watcher {
                paths,
                debouncer: Some(debouncer),
                worker: Some(worker),
            },
        ))
    }
}

impl Watcher {
    /// The config paths, as given.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Stops watching and waits for the watcher's threads to end (at most a debounce tick, plus
    /// a reload under way). Not from inside the callback: that thread is one of them.
    pub fn stop(mut self) {
        if let Some(d) = self.debouncer.take() {
            d.stop(); // its thread ends, dropping the sender: the worker's `recv` fails
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(d) = self.debouncer.take() {
            d.stop_nonblocking();
        }
    }
}

/// One reload at a time, until the debouncer goes away.
fn reload_loop(
    woken: &mpsc::Receiver<()>,
    loader: &Loader,
    paths: &[PathBuf],
    mut last: Option<u64>,
    mut on_reload: impl FnMut(Reload),
) {
    while woken.recv().is_ok() {
        let now = match fingerprint(paths) {
            Ok(now) => now,
            Err(e) => {
                // Unreadable now (a file removed, a folder swapped away): say so, and reload
                // whatever comes next even if it is the old content, so the error clears.
                last = None;
                on_reload(Reload::Rejected {
                    error: LoadError::Io(e),
                });
                continue;
            }
        };
        if last == Some(now) {
            continue;
        }
        last = Some(now);
        let loaded = loader
            .check(paths)
            .map_err(LoadError::Io)
            .and_then(Report::into_mesh);
        on_reload(match loaded {
            Ok(mesh) => Reload::Reloaded { mesh },
            Err(error) => Reload::Rejected { error },
        });
    }
}

/// A hash of the files a load would read: their paths and bytes.
fn fingerprint(paths: &[PathBuf]) -> io::Result<u64> {
    let mut h = DefaultHasher::new();
    for file in load::source::expand(paths)? {
        let bytes = std::fs::read(&file)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        file.hash(&mut h);
        bytes.hash(&mut h);
    }
    Ok(h.finish())
}

fn watch_error(paths: &[PathBuf], e: notify::Error) -> LoadError {
    let shown: Vec<_> = paths.iter().map(|p| p.display().to_string()).collect();
    let kind = match &e.kind {
        notify::ErrorKind::Io(io) => io.kind(),
        notify::ErrorKind::PathNotFound => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    };
    LoadError::Io(io::Error::new(
        kind,
        format!(
            "cannot watch {} for changes: {e} (on Linux, raise fs.inotify.max_user_watches or \
             max_user_instances if they are exhausted)",
            shown.join(", ")
        ),
    ))
}

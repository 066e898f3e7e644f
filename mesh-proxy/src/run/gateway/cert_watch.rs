//! Watching the gateway's certificate files, so that a renewed secret serves the next
//! handshakes without a restart or a config change, as Istio's gateways pick up a rewritten
//! Kubernetes secret over SDS.
//!
//! What is watched: `--credentials-dir` recursively (each `credentialName` is a folder in it;
//! a Kubernetes secret volume swaps a `..data` symlink inside that folder), and the folders of
//! `serverCertificate`, `privateKey` and `caCertificates` paths (folders, not files: writers
//! replace files by renaming over them). Any write, creation, rename or removal in them wakes
//! the listeners, once the folder has been quiet for [`SETTLE`] (a writer replaces the
//! certificate and the key one after the other). Opening and reading files is not a change:
//! reading the certificates must not wake the watch again.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use mesh_core::{CompiledMesh, gateway::ServerKind};
use notify::{
    RecommendedWatcher, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind},
};
use tokio::sync::watch;

use super::Settings;

/// How long the watched folders must be quiet before the certificates are read again.
pub(super) const SETTLE: Duration = Duration::from_millis(100);

/// A folder to watch, and whether its subfolders are watched too.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Folder {
    pub(super) path: PathBuf,
    pub(super) recursive: bool,
}

/// The certificate folders of the servers `settings` plans from `mesh`.
pub(super) fn folders(mesh: &CompiledMesh, settings: &Settings) -> BTreeSet<Folder> {
    let mut out = BTreeSet::new();
    if let Some(dir) = &settings.credentials_dir {
        out.insert(Folder {
            path: dir.clone(),
            recursive: true,
        });
    }
    let terminating = mesh
        .gateways
        .iter()
        .filter(|s| settings.keys.contains(&s.gateway))
        .filter(|s| {
            matches!(
                ServerKind::of(s),
                Ok(ServerKind::Https | ServerKind::TlsTerminated)
            )
        });
    for tls in terminating.filter_map(|s| s.tls.as_ref()) {
        if tls.credential_name.is_some() {
            continue;
        }
        let files = [
            &tls.server_certificate,
            &tls.private_key,
            &tls.ca_certificates,
        ];
        for file in files.into_iter().flatten() {
            let parent = Path::new(file)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            out.insert(Folder {
                path: parent.to_owned(),
                recursive: false,
            });
        }
    }
    out
}

/// Whether a file system event can change a certificate: anything but opening, reading or
/// closing a file unwritten, and access-time updates.
pub(super) fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

/// The watch over the certificate folders. Without a working file watcher (it is reported
/// once), certificates are read again at config reloads only.
#[derive(Debug)]
pub(super) struct CertWatch {
    watcher: Option<RecommendedWatcher>,
    /// The folders asked for (those that could not be watched included, so that the warning
    /// is printed once).
    folders: BTreeSet<Folder>,
    /// Counts changes; its sender lives in the watcher's callback.
    changes: watch::Receiver<u64>,
}

impl CertWatch {
    pub(super) fn new() -> Self {
        let (tx, changes) = watch::channel(0u64);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // An error (an overflowed queue) may hide a change: read again.
            if event.as_ref().map_or(true, |e| is_change(&e.kind)) {
                tx.send_modify(|n| *n = n.wrapping_add(1));
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                say!(
                    "mesh run: warning: cannot watch the gateway certificate files ({e}): rewritten certificates are read at the next config reload only"
                );
                None
            }
        };
        CertWatch {
            watcher,
            folders: BTreeSet::new(),
            changes,
        }
    }

    /// Watches `folders` from now on, and no others.
    pub(super) fn follow(&mut self, folders: BTreeSet<Folder>) {
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        for old in self.folders.difference(&folders) {
            let _ = watcher.unwatch(&old.path);
        }
        for new in folders.difference(&self.folders) {
            let mode = if new.recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            if let Err(e) = watcher.watch(&new.path, mode) {
                say!(
                    "mesh run: warning: cannot watch {} for rewritten gateway certificates ({e}): they are read at the next config reload only",
                    new.path.display()
                );
            }
        }
        self.folders = folders;
    }

    /// Resolves once the certificate folders changed and then stayed quiet for [`SETTLE`];
    /// never without a watcher.
    pub(super) async fn changed(&mut self) {
        if self.changes.changed().await.is_err() {
            return std::future::pending().await;
        }
        loop {
            tokio::select! {
                more = self.changes.changed() => if more.is_err() { return },
                () = tokio::time::sleep(SETTLE) => return,
            }
        }
    }
}

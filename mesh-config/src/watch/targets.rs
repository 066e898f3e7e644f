//! What to watch for a set of config paths, and which file-system events concern them.
//!
//! A folder is watched recursively, and every change under it counts. A file is not watched
//! itself but through its parent folder: editors save by writing a temporary file and renaming it
//! over the original (a watch on the old inode would go quiet), and a Kubernetes ConfigMap volume
//! swaps its `..data` symlink to a new timestamped folder, so the change shows up on a sibling
//! entry, never on the file the user named.

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
};

use notify::{
    EventKind, RecursiveMode,
    event::{AccessKind, AccessMode},
};

/// The folders to watch and the filter for their events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Targets {
    /// Folders given as config paths: watched recursively; every entry under them counts.
    pub(crate) trees: Vec<PathBuf>,
    /// Parent folders of files given as config paths: watched alone; only the named entries (and
    /// `..`-prefixed ones, the ConfigMap's `..data` swap) count.
    pub(crate) parents: Vec<(PathBuf, Vec<OsString>)>,
}

impl Targets {
    /// Where each config path is watched from. Paths are made absolute (the events name them so)
    /// but symlinks are kept: the ConfigMap's file links must be seen as links. A file that is a
    /// symlink out of its folder also has its target's folder watched, so an edit in place of the
    /// target is seen.
    pub(crate) fn resolve(paths: &[PathBuf]) -> io::Result<Targets> {
        let mut targets = Targets::default();
        for p in paths {
            let abs = std::path::absolute(p).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot watch {}: {e}", p.display()))
            })?;
            let meta = std::fs::metadata(&abs).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot watch {}: {e}", p.display()))
            })?;
            if meta.is_dir() {
                if !targets.trees.contains(&abs) {
                    targets.trees.push(abs);
                }
                continue;
            }
            targets.add_file(&abs);
            if let Ok(real) = std::fs::canonicalize(&abs) {
                let inside_parent =
                    real.parent() == abs.parent().and_then(|d| d.canonicalize().ok()).as_deref();
                if real != abs && !inside_parent {
                    targets.add_file(&real);
                }
            }
        }
        Ok(targets)
    }

    fn add_file(&mut self, file: &Path) {
        let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
            return;
        };
        match self.parents.iter_mut().find(|(d, _)| d == dir) {
            Some((_, names)) if names.iter().any(|n| n == name) => {}
            Some((_, names)) => names.push(name.to_owned()),
            None => self
                .parents
                .push((dir.to_path_buf(), vec![name.to_owned()])),
        }
    }

    /// The folders to hand to the watcher, with their mode.
    pub(crate) fn watches(&self) -> impl Iterator<Item = (&Path, RecursiveMode)> {
        let trees = self
            .trees
            .iter()
            .map(|t| (t.as_path(), RecursiveMode::Recursive));
        let parents = self
            .parents
            .iter()
            .filter(|(d, _)| !self.trees.iter().any(|t| d.starts_with(t)))
            .map(|(d, _)| (d.as_path(), RecursiveMode::NonRecursive));
        trees.chain(parents)
    }

    /// Whether an event may have changed the config. Reads are not changes: the watcher's own
    /// reads of the files would otherwise wake it forever (inotify reports opens).
    pub(crate) fn concerns(&self, event: &notify::Event) -> bool {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
            EventKind::Access(_) => return false,
            _ => {}
        }
        if event.need_rescan() {
            return true;
        }
        event.paths.iter().any(|p| self.concerns_path(p))
    }

    fn concerns_path(&self, path: &Path) -> bool {
        if self.trees.iter().any(|t| path.starts_with(t)) {
            return true;
        }
        self.parents.iter().any(|(dir, names)| {
            if path == dir {
                return true; // the folder itself went away or moved
            }
            if path.parent() != Some(dir.as_path()) {
                return false;
            }
            path.file_name().is_some_and(|n| {
                names.iter().any(|m| m == n) || n.as_encoded_bytes().starts_with(b"..")
            })
        })
    }
}

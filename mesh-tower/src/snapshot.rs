//! The live config: the compiled mesh behind an `ArcSwap`, read once per request.

use std::{path::Path, sync::Arc};

use arc_swap::ArcSwap;
use mesh_config::{LoadError, Loader, Mesh, Reload, Watcher};
use mesh_core::CompiledMesh;

/// A handle on the current [`CompiledMesh`]. Clones share it; [`MeshHandle::store`] swaps in a
/// new config (a reload) without rebuilding any stack, and a request keeps the snapshot it
/// started with until it ends.
#[derive(Clone, Debug)]
pub struct MeshHandle(Arc<ArcSwap<CompiledMesh>>);

impl MeshHandle {
    pub fn new(mesh: impl Into<Arc<CompiledMesh>>) -> Self {
        MeshHandle(Arc::new(ArcSwap::new(mesh.into())))
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<CompiledMesh> {
        self.0.load_full()
    }

    /// Swaps in a new config; requests already under way keep theirs.
    pub fn store(&self, mesh: impl Into<Arc<CompiledMesh>>) {
        self.0.store(mesh.into());
    }

    /// A handle that follows the files: loads `paths` with `loader` and stores every good reload
    /// ([`Loader::watch`]), so the stacks built on it change config without a rebuild. A rejected
    /// reload leaves the last good config in place. `on_reload` sees each outcome after the
    /// store, on the watcher's thread (to log, count or show it).
    ///
    /// Returns the first load too (for its warnings). Dropping the [`Watcher`] stops the reloads.
    pub fn watch<P: AsRef<Path>>(
        loader: &Loader,
        paths: impl IntoIterator<Item = P>,
        mut on_reload: impl FnMut(&Reload) + Send + 'static,
    ) -> Result<(MeshHandle, Mesh, Watcher), LoadError> {
        let handle = MeshHandle::new(CompiledMesh::default());
        let live = handle.clone();
        let (mesh, watcher) = loader.watch(paths, move |reload| {
            if let Reload::Reloaded { mesh } = &reload {
                live.store_newer(mesh.compiled().clone());
            }
            on_reload(&reload);
        })?;
        handle.store_newer(mesh.compiled().clone());
        Ok((handle, mesh, watcher))
    }

    /// Stores `mesh` unless the handle holds a later version already: a reload that lands before
    /// the first load is stored must win.
    fn store_newer(&self, mesh: Arc<CompiledMesh>) {
        self.0.rcu(|current| {
            if mesh.version > current.version {
                mesh.clone()
            } else {
                current.clone()
            }
        });
    }
}

impl From<&mesh_config::Mesh> for MeshHandle {
    fn from(mesh: &mesh_config::Mesh) -> Self {
        MeshHandle::new(mesh.compiled().clone())
    }
}

impl From<&MeshHandle> for MeshHandle {
    fn from(h: &MeshHandle) -> Self {
        h.clone()
    }
}

impl From<CompiledMesh> for MeshHandle {
    fn from(mesh: CompiledMesh) -> Self {
        MeshHandle::new(mesh)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, time::Duration};

    use super::*;

    fn vs(host: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web}}\n\
             spec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n"
        )
    }

    fn hosts(mesh: &CompiledMesh) -> Vec<String> {
        mesh.virtual_hosts
            .iter()
            .flat_map(|vh| vh.hosts.iter().map(|h| h.to_string()))
            .collect()
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one() {
        let handle = MeshHandle::new(CompiledMesh {
            version: 5,
            ..Default::default()
        });
        handle.store_newer(Arc::new(CompiledMesh {
            version: 4,
            ..Default::default()
        }));
        assert_eq!(handle.snapshot().version, 5);
        handle.store_newer(Arc::new(CompiledMesh {
            version: 6,
            ..Default::default()
        }));
        assert_eq!(handle.snapshot().version, 6);
    }

    #[test]
    fn a_watched_handle_follows_the_file() {
        let dir = std::env::temp_dir().join(format!("mesh-tower-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("vs.yaml");
        std::fs::write(&file, vs("a.example")).unwrap();
        let (tx, rx) = mpsc::channel();
        let (handle, first, _watcher) = MeshHandle::watch(&Loader::new(), [&file], move |r| {
            let _ = tx.send(matches!(r, Reload::Reloaded { .. }));
        })
        .unwrap();
        assert_eq!(handle.snapshot().version, first.version);
        assert_eq!(hosts(&handle.snapshot()), ["a.example"]);

        std::fs::write(&file, vs("b.example")).unwrap();
        let ok = rx.recv_timeout(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(ok, Ok(true), "no good reload within 5 s");
        // The store happened before the callback ran.
        assert_eq!(hosts(&handle.snapshot()), ["b.example"]);
        assert!(handle.snapshot().version > first.version);
    }
}

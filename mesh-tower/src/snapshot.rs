//! The live config: the compiled mesh behind an `ArcSwap`, read once per request.

use std::sync::Arc;

use arc_swap::ArcSwap;
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

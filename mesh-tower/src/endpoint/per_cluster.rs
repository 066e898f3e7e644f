//! What the upstream derives from the config once per cluster and config version (the
//! transport decisions, the endpoint views), kept until the config changes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use super::ClusterKey;

/// Clusters kept before the map is cleared (clusters come from the config; a reload retires
/// them).
const MAX_CLUSTERS: usize = 4096;

/// One `T` per cluster, remade when the config version changes.
#[derive(Debug)]
pub(crate) struct PerCluster<T> {
    made: Mutex<HashMap<ClusterKey, (u64, Arc<T>)>>,
}

impl<T> Default for PerCluster<T> {
    fn default() -> Self {
        PerCluster {
            made: Mutex::default(),
        }
    }
}

impl<T> PerCluster<T> {
    /// `cluster`'s `T` for config `version`, made by `make` when there is none yet. A request
    /// on an older snapshot gets one of its own version, not kept.
    pub(crate) fn for_version(
        &self,
        cluster: &ClusterKey,
        version: u64,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let mut map = self.made.lock().unwrap_or_else(|e| e.into_inner());
        let kept = map.get(cluster);
        if let Some((v, t)) = kept
            && *v == version
        {
            return t.clone();
        }
        let newer = kept.is_none_or(|(v, _)| *v < version);
        let t = Arc::new(make());
        if newer {
            if map.len() >= MAX_CLUSTERS && !map.contains_key(cluster) {
                map.clear();
            }
            map.insert(cluster.clone(), (version, t.clone()));
        }
        t
    }
}

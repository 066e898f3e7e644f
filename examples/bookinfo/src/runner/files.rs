//! The config folder the runner reads and watches:
//!
//! | file | what | written |
//! |---|---|---|
//! | `services.yaml` | the four Kubernetes Services | at every start (from `config/`) |
//! | `gateway.yaml` | `bookinfo-gateway` and its VirtualService | at every start |
//! | `destination-rules.yaml` | the subsets v1, v2, v3 | at every start |
//! | `workloads.yaml` | a WorkloadEntry per workload, at the port it bound | at every start |
//! | `scenario.yaml` | the scenario, if any | at start (`--scenario`, else removed), then by whoever switches |
//!
//! Any other `*.yaml` a user puts in the folder is read too, and kept. Files are written to a
//! temporary name and renamed, so the watcher never reads half a file.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::{
    scenarios::Scenario,
    workloads::{Workload, workload_entries},
};

/// The file that holds the current scenario.
pub const SCENARIO_FILE: &str = "scenario.yaml";

/// The static files of the base config, as `(file name, YAML)`.
pub(crate) const BASE_FILES: [(&str, &str); 3] = [
    ("services.yaml", include_str!("../../config/services.yaml")),
    ("gateway.yaml", include_str!("../../config/gateway.yaml")),
    (
        "destination-rules.yaml",
        include_str!("../../config/destination-rules.yaml"),
    ),
];

/// The base config in one multi-document YAML text (for tests that load it from memory).
#[cfg(test)]
pub(crate) fn base_yaml() -> String {
    BASE_FILES
        .iter()
        .map(|(_, yaml)| *yaml)
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// A new, empty folder under the system's temporary folder, for one run.
pub(crate) fn fresh_dir() -> io::Result<PathBuf> {
    static RUN: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "bookinfo-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Writes the base config, the workloads at their `bound` addresses and the scenario (or
/// removes `scenario.yaml` when there is none) into `dir`.
pub(crate) fn write_all<'a>(
    dir: &Path,
    bound: impl IntoIterator<Item = (&'a Workload, SocketAddr)>,
    scenario: Option<&Scenario>,
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, yaml) in BASE_FILES {
        write_atomic(&dir.join(name), yaml)?;
    }
    write_atomic(&dir.join("workloads.yaml"), &workload_entries(bound))?;
    write_scenario(dir, scenario)
}

/// Puts `scenario` in `dir/scenario.yaml`, or removes the file for none.
pub(crate) fn write_scenario(dir: &Path, scenario: Option<&Scenario>) -> io::Result<()> {
    let path = dir.join(SCENARIO_FILE);
    match scenario {
        Some(s) => write_atomic(&path, s.yaml),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
}

/// Writes `text` to a temporary file beside `path` (a name the loader does not read), then
/// renames it over `path`.
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

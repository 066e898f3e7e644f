//! Hot reload in `mesh run`: what each outcome of [`mesh_config::Watcher`] does to the proxy.
//!
//! The handle swap itself is [`mesh_tower::MeshHandle::watch`]'s; here a reload is logged to
//! stderr, counted in `mesh_config_reload_total{result="success"|"error"}`, and kept for
//! `/config_dump`. A rejected reload keeps the last good config (as istiod keeps serving the
//! last accepted one) and stays visible until a good reload replaces it.

use std::{
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::{SystemTime, UNIX_EPOCH},
};

use mesh_config::{Diagnostic, LoadError, Mesh, Reload};
use serde_json::{Value, json};

/// What `/config_dump` shows about the config's origin and its reloads.
#[derive(Debug, Default)]
pub(crate) struct ReloadStatus {
    /// Whether the config paths are watched (`--no-watch` turns it off).
    pub(crate) watching: bool,
    /// The version of the config in use, and the files it was read from.
    version: u64,
    files: Vec<PathBuf>,
    last_reload: Option<LastReload>,
    /// The last rejected reload, until a good one clears it.
    last_error: Option<RejectedReload>,
    /// Bumped to the new version after each good reload was stored: what the gateway
    /// listeners wait on to follow the config ([`ReloadStatus::subscribe`]).
    reloaded: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct LastReload {
    success: bool,
    at: SystemTime,
}

#[derive(Debug)]
struct RejectedReload {
    at: SystemTime,
    message: String,
    diagnostics: Vec<Diagnostic>,
    /// A gateway listener that could not follow the config (a certificate that does not
    /// load), rather than a config with errors: cleared when the listeners update.
    listeners: bool,
}

impl ReloadStatus {
    pub(crate) fn new(watching: bool) -> Self {
        ReloadStatus {
            watching,
            ..Default::default()
        }
    }

    /// Records the first load, unless a reload got in first (the watcher starts before
    /// `mesh run` has stored the first load).
    pub(crate) fn first_load(&mut self, mesh: &Mesh) {
        if mesh.version > self.version {
            self.version = mesh.version;
            self.files = mesh.files().to_vec();
        }
    }

    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Wakes after each good reload, once the new config is in the handle.
    pub(crate) fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloaded.subscribe()
    }

    /// The outcome of updating the gateway listeners to the config in use (or to rewritten
    /// certificate files): an error is shown as `last_reload_error`, as a rejected reload is
    /// (the config itself was taken: routes follow it, the listener keeps its previous
    /// servers); `None` clears such an error, not a rejected config's.
    pub(crate) fn listener_error(&mut self, error: Option<String>) {
        match error {
            Some(message) => {
                self.last_error = Some(RejectedReload {
                    at: SystemTime::now(),
                    message,
                    diagnostics: Vec::new(),
                    listeners: true,
                });
            }
            None if self.last_error.as_ref().is_some_and(|e| e.listeners) => {
                self.last_error = None;
            }
            None => {}
        }
    }

    /// `"last_reload"`: when the last reload was tried and how it went (`null` before any).
    pub(crate) fn last_reload_json(&self) -> Value {
        match &self.last_reload {
            None => Value::Null,
            Some(r) => json!({
                "result": if r.success { "success" } else { "error" },
                "unix_time": unix_time(r.at),
            }),
        }
    }

    /// `"last_reload_error"`: the diagnostics of the last rejected reload, `null` once a later
    /// reload succeeded. `lines` are as `mesh validate` prints them.
    pub(crate) fn last_reload_error_json(&self) -> Value {
        match &self.last_error {
            None => Value::Null,
            Some(e) => json!({
                "unix_time": unix_time(e.at),
                "message": e.message,
                "lines": e.diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "diagnostics": e.diagnostics,
            }),
        }
    }
}

fn unix_time(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// Called by the watcher (on its thread) after a good reload was stored, or instead of one.
pub(crate) fn on_reload(status: &Mutex<ReloadStatus>, reload: &Reload) {
    let at = SystemTime::now();
    let mut status = status.lock().unwrap_or_else(PoisonError::into_inner);
    match reload {
        Reload::Reloaded { mesh } => {
            say!("mesh run: config reloaded (version {})", mesh.version);
            for d in mesh.warnings().iter() {
                say!("{d}");
            }
            status.version = status.version.max(mesh.version);
            status.files = mesh.files().to_vec();
            status.last_reload = Some(LastReload { success: true, at });
            status.last_error = None;
            metrics::counter!("mesh_config_reload_total", "result" => "success").increment(1);
            status.reloaded.send_replace(mesh.version);
        }
        Reload::Rejected { error } => {
            let (message, diagnostics) = match error {
                LoadError::Invalid { diagnostics } => (
                    format!(
                        "the config has {} error(s); kept version {}: fix them and save again",
                        diagnostics.errors().count(),
                        status.version
                    ),
                    diagnostics.0.clone(),
                ),
                LoadError::Io(e) => (format!("{e}; kept version {}", status.version), Vec::new()),
            };
            say!("mesh run: config reload rejected: {message}");
            for d in &diagnostics {
                say!("{d}");
            }
            status.last_reload = Some(LastReload { success: false, at });
            status.last_error = Some(RejectedReload {
                at,
                message,
                diagnostics,
                listeners: false,
            });
            metrics::counter!("mesh_config_reload_total", "result" => "error").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use mesh_config::Loader;

    use super::*;

    const GOOD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                        metadata: {name: web}\nspec:\n  hosts: [a.example]\n  http:\n  \
                        - route: [{destination: {host: a.example}}]\n";

    fn mesh() -> Mesh {
        Loader::new()
            .check_str("vs.yaml", GOOD)
            .into_mesh()
            .unwrap()
    }

    fn rejected() -> Reload {
        let bad = GOOD.replace("  http:", "  htp:");
        let error = Loader::new()
            .check_str("vs.yaml", &bad)
            .into_mesh()
            .unwrap_err();
        Reload::Rejected { error }
    }

    #[test]
    fn a_rejection_is_shown_until_a_good_reload() {
        let status = Mutex::new(ReloadStatus::new(true));
        let first = mesh();
        status.lock().unwrap().first_load(&first);
        assert_eq!(status.lock().unwrap().last_reload_json(), Value::Null);

        on_reload(&status, &rejected());
        let s = status.lock().unwrap();
        let error = s.last_reload_error_json();
        assert_eq!(s.last_reload_json()["result"], "error");
        assert!(
            error["lines"][0]
                .as_str()
                .unwrap()
                .starts_with("vs.yaml:6:3: error: "),
            "{error}"
        );
        assert_eq!(error["diagnostics"][0]["line"], 6, "{error}");
        let kept = format!("kept version {}", first.version);
        assert!(
            error["message"].as_str().unwrap().contains(&kept),
            "{error}"
        );
        drop(s);

        on_reload(&status, &Reload::Reloaded { mesh: mesh() });
        let s = status.lock().unwrap();
        assert_eq!(s.last_reload_error_json(), Value::Null);
        assert_eq!(s.last_reload_json()["result"], "success");
    }

    #[test]
    fn a_listener_error_shows_until_the_listeners_update_and_never_hides_a_rejection() {
        let status = Mutex::new(ReloadStatus::new(true));
        let mut reloads = status.lock().unwrap().subscribe();
        status
            .lock()
            .unwrap()
            .listener_error(Some("tls.crt: no PEM certificate".into()));
        let error = status.lock().unwrap().last_reload_error_json();
        assert_eq!(error["message"], "tls.crt: no PEM certificate", "{error}");
        status.lock().unwrap().listener_error(None);
        assert_eq!(status.lock().unwrap().last_reload_error_json(), Value::Null);

        // A rejected config stays shown whatever the listeners do.
        on_reload(&status, &rejected());
        assert!(
            !reloads.has_changed().unwrap(),
            "a rejection woke the listeners"
        );
        status.lock().unwrap().listener_error(None);
        assert_ne!(status.lock().unwrap().last_reload_error_json(), Value::Null);

        // A good reload wakes them, with its version.
        let good = mesh();
        let version = good.version;
        on_reload(&status, &Reload::Reloaded { mesh: good });
        assert!(reloads.has_changed().unwrap());
        assert_eq!(*reloads.borrow_and_update(), version);
    }

    #[test]
    fn a_reload_before_the_first_load_is_recorded_wins() {
        let status = Mutex::new(ReloadStatus::new(true));
        let (first, second) = (mesh(), mesh());
        on_reload(&status, &Reload::Reloaded { mesh: second });
        let mut s = status.lock().unwrap();
        let version = s.version;
        s.first_load(&first);
        assert_eq!(s.version, version);
    }
}

//! Istio YAML to a validated, compiled mesh.
//!
//! ```no_run
//! // Parse, validate and compile every `*.yaml` under `mesh/`; an error lists the diagnostics.
//! let mesh = mesh_config::load(["mesh/"])?;
//! println!("{} services, {} routes", mesh.services.len(), mesh.virtual_hosts.len());
//! # Ok::<(), mesh_config::LoadError>(())
//! ```
//!
//! [`Loader`] gives the whole report (every error and warning, and the objects read), which is
//! what `mesh validate` prints. The layers never see YAML: they read the
//! [`CompiledMesh`](mesh_core::CompiledMesh) this crate produces.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod compile;
pub mod diag;
mod features;
pub mod kinds;
pub mod load;
pub mod watch;

use std::{
    ops::Deref,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

pub use diag::{Diagnostic, Diagnostics, LoadError};
pub use kinds::Severity;
pub use load::{Config, LoadOptions, Object};
use mesh_core::CompiledMesh;
pub use watch::{Reload, Watcher, watch};

/// A loaded mesh: the compiled snapshot, and the warnings the load produced.
#[derive(Debug, Clone)]
pub struct Mesh {
    compiled: Arc<CompiledMesh>,
    warnings: Diagnostics,
    files: Vec<PathBuf>,
}

impl Mesh {
    pub fn compiled(&self) -> &Arc<CompiledMesh> {
        &self.compiled
    }

    pub fn warnings(&self) -> &Diagnostics {
        &self.warnings
    }

    /// The YAML files the config was read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

impl Deref for Mesh {
    type Target = CompiledMesh;

    fn deref(&self) -> &CompiledMesh {
        &self.compiled
    }
}

/// Loads, validates and compiles the YAML under `paths` (files or folders) with the default
/// options. Fails when any document has an error; warnings are kept on the [`Mesh`].
pub fn load<P: AsRef<Path>>(paths: impl IntoIterator<Item = P>) -> Result<Mesh, LoadError> {
    Loader::new().load(paths)
}

/// Everything a load found: what `mesh validate` and `mesh route` show.
#[derive(Debug)]
pub struct Report {
    pub files: Vec<PathBuf>,
    pub config: Config,
    pub diagnostics: Diagnostics,
    /// The compiled mesh of the documents that had no errors.
    pub mesh: CompiledMesh,
}

/// Load options, builder style.
#[derive(Debug, Clone, Default)]
pub struct Loader {
    opts: LoadOptions,
    strict: bool,
}

static VERSION: AtomicU64 = AtomicU64::new(0);

impl Loader {
    pub fn new() -> Self {
        Self::default()
    }

    /// The namespace of documents without `metadata.namespace` (default `default`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.opts.default_namespace = namespace.into();
        self
    }

    /// Istio's root namespace (default `istio-system`).
    pub fn root_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.opts.root_namespace = namespace.into();
        self
    }

    /// Treat analysis warnings as errors (`mesh validate --strict`).
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Reads, validates, analyses and compiles; never fails for bad YAML (that is in the
    /// report), only for paths that cannot be read.
    pub fn check<P: AsRef<Path>>(
        &self,
        paths: impl IntoIterator<Item = P>,
    ) -> std::io::Result<Report> {
        let paths: Vec<PathBuf> = paths
            .into_iter()
            .map(|p| p.as_ref().to_path_buf())
            .collect();
        let mut diags = Vec::new();
        let (config, files) = load::read_paths(&paths, &self.opts, &mut diags)?;
        Ok(self.finish(files, config, diags))
    }

    /// Like [`Loader::check`], on YAML text already in memory (`name` is used in diagnostics).
    pub fn check_str(&self, name: &str, yaml: &str) -> Report {
        let mut diags = Vec::new();
        let mut config = Config::default();
        load::read_str(Path::new(name), yaml, &self.opts, &mut config, &mut diags);
        self.finish(vec![PathBuf::from(name)], config, diags)
    }

    fn finish(&self, files: Vec<PathBuf>, config: Config, mut diags: Vec<Diagnostic>) -> Report {
        features::not_applied(&config, &mut diags);
        let mut mesh = compile::compile(&config, &self.opts, &mut diags);
        mesh.version = VERSION.fetch_add(1, Ordering::Relaxed) + 1;
        let mut analysis = Vec::new();
        analyze::analyze(&config, &mesh, &self.opts, &mut analysis);
        if self.strict {
            for d in &mut analysis {
                if d.severity == Severity::Warning {
                    d.severity = Severity::Error;
                }
            }
        }
        diags.extend(analysis);
        // File order, then position: the order a reader goes through them.
        diags.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        Report {
            files,
            config,
            diagnostics: Diagnostics(diags),
            mesh,
        }
    }

    /// Loads and compiles; fails when the config has errors.
    pub fn load<P: AsRef<Path>>(
        &self,
        paths: impl IntoIterator<Item = P>,
    ) -> Result<Mesh, LoadError> {
        let report = self.check(paths)?;
        report.into_mesh()
    }
}

impl Report {
    /// The compiled mesh, or the diagnostics when there is an error.
    pub fn into_mesh(self) -> Result<Mesh, LoadError> {
        if self.diagnostics.has_errors() {
            return Err(LoadError::Invalid {
                diagnostics: self.diagnostics,
            });
        }
        Ok(Mesh {
            compiled: Arc::new(self.mesh),
            warnings: self.diagnostics,
            files: self.files,
        })
    }
}

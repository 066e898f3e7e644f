//! Reading YAML files into typed, validated Istio objects.
//!
//! Each file is split into documents (a bad document never hides the others); each document is
//! read twice from the same text: once into a positioned tree (to read `apiVersion` and `kind`,
//! and to place validators' findings), once by serde-saphyr into the kind's own type (so parse
//! errors keep their line and column: a `#[serde(tag = "kind")]` enum would lose them).

pub mod source;
pub mod tree;

mod errors;
mod lenient;
mod objects;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::{
    diag::Diagnostic,
    kinds::{Issues, Meta, ObjectMeta, Severity},
};
pub use objects::{Config, Object, Origin};
use tree::{Node, Pos};

/// How documents are read.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The namespace of documents that have no `metadata.namespace` (Istio's `default`).
    pub default_namespace: String,
    /// Istio's root namespace: policies there apply mesh-wide.
    pub root_namespace: String,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            default_namespace: "default".into(),
            root_namespace: "istio-system".into(),
        }
    }
}

/// Reads every file under `paths` into a [`Config`], appending findings to `diags`.
pub fn read_paths(
    paths: &[PathBuf],
    opts: &LoadOptions,
    diags: &mut Vec<Diagnostic>,
) -> std::io::Result<(Config, Vec<PathBuf>)> {
    let files = source::expand(paths)?;
    let mut config = Config::default();
    for file in &files {
        let bytes = std::fs::read(file)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        match String::from_utf8(bytes) {
            Ok(text) => read_str(file, &text, opts, &mut config, diags),
            Err(_) => diags.push(Diagnostic {
                file: file.clone(),
                line: 1,
                column: 1,
                severity: Severity::Error,
                kind: String::new(),
                namespace: String::new(),
                name: String::new(),
                message: "the file is not UTF-8 text; save it as UTF-8".into(),
            }),
        }
    }
    Ok((config, files))
}

/// Reads one file's text (all its documents) into `config`.
pub fn read_str(
    file: &Path,
    text: &str,
    opts: &LoadOptions,
    config: &mut Config,
    diags: &mut Vec<Diagnostic>,
) {
    let file: Arc<Path> = Arc::from(file);
    for doc in source::split_documents(text) {
        read_document(&file, &doc, opts, config, diags);
    }
}

/// Where and what a document is, for its diagnostics.
pub(crate) struct DocCtx<'a> {
    pub file: &'a Arc<Path>,
    pub line_offset: usize,
    pub tree: &'a Arc<Node>,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl DocCtx<'_> {
    pub fn diag_at(&self, pos: Pos, severity: Severity, message: String) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            line: pos.line + self.line_offset,
            column: pos.column,
            severity,
            kind: self.kind.to_owned(),
            namespace: self.namespace.to_owned(),
            name: self.name.to_owned(),
            message,
        }
    }

    pub fn diag_path(&self, path: &str, severity: Severity, message: String) -> Diagnostic {
        self.diag_at(self.tree.locate(path), severity, message)
    }
}

fn read_document(
    file: &Arc<Path>,
    doc: &source::DocText,
    opts: &LoadOptions,
    config: &mut Config,
    diags: &mut Vec<Diagnostic>,
) {
    let bare = |pos: Pos, message: String| Diagnostic {
        file: file.to_path_buf(),
        line: pos.line + doc.line_offset,
        column: pos.column,
        severity: Severity::Error,
        kind: String::new(),
        namespace: String::new(),
        name: String::new(),
        message,
    };
    let root = match tree::parse_document(&doc.text) {
        Ok(Some(root)) => Arc::new(root),
        Ok(None) => return,
        Err(e) => return diags.push(bare(e.pos, e.message)),
    };
    if !matches!(*root, Node::Map { .. }) {
        return diags.push(bare(
            root.start(),
            "a document must be a mapping with apiVersion, kind, metadata and spec".into(),
        ));
    }
    let scalar = |key: &str| root.get(key).and_then(Node::as_str).unwrap_or_default();
    let kind = scalar("kind");
    let api_version = scalar("apiVersion");
    let metadata = root.get("metadata");
    let meta_str = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Node::as_str);
    let name = meta_str("name").unwrap_or_default();
    let namespace = meta_str("namespace").unwrap_or(&opts.default_namespace);
    let ctx = DocCtx {
        file,
        line_offset: doc.line_offset,
        tree: &root,
        kind,
        namespace,
        name,
    };
    if kind.is_empty() {
        return diags.push(ctx.diag_path(
            "kind",
            Severity::Error,
            "kind: Required value: every document needs `kind` (for example `kind: VirtualService`)".into(),
        ));
    }
    if api_version.is_empty() {
        return diags.push(ctx.diag_path(
            "apiVersion",
            Severity::Error,
            format!("apiVersion: Required value: write the API version of the {kind} (for example `apiVersion: networking.istio.io/v1`)"),
        ));
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let Some(reader) = objects::reader_for(group, kind) else {
        let (severity, message) = objects::unread_kind_note(group, kind);
        return diags.push(ctx.diag_path("kind", severity, message));
    };
    if !reader.versions.contains(&version) {
        return diags.push(ctx.diag_path(
            "apiVersion",
            Severity::Error,
            format!(
                "apiVersion: Unsupported value: {api_version:?}: {kind} is served as {}",
                reader
                    .versions
                    .iter()
                    .map(|v| format!("{:?}", join_version(group, v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if name.is_empty() {
        return diags.push(ctx.diag_path(
            "metadata.name",
            Severity::Error,
            "metadata.name: Required value: give the object a name".into(),
        ));
    }
    (reader.read)(&doc.text, &ctx, opts, config, diags);
}

fn join_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// Runs a kind's validator and turns its findings into diagnostics.
pub(crate) fn report_issues(ctx: &DocCtx<'_>, issues: Issues, diags: &mut Vec<Diagnostic>) {
    for issue in issues.items {
        let message = with_path(&issue.path, issue.message);
        diags.push(ctx.diag_path(&issue.path, issue.severity, message));
    }
}

/// The `Meta` a validator sees.
pub(crate) fn meta<'a>(ctx: &'a DocCtx<'a>, metadata: &'a ObjectMeta) -> Meta<'a> {
    Meta {
        name: ctx.name,
        namespace: ctx.namespace,
        metadata,
    }
}

/// Kubernetes words a finding as `path: what` (`spec.hosts: Required value`); validators give
/// the path apart, and it is prefixed here unless the message already names a field.
pub(crate) fn with_path(path: &str, message: String) -> String {
    if path.is_empty() || message.starts_with("spec") || message.starts_with("metadata") {
        message
    } else {
        format!("{path}: {message}")
    }
}

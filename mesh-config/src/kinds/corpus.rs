//! Test-only: Istio's own YAML (under `/work/shared/istio`, or `MESH_ISTIO_TESTDATA`, when
//! present) as fixtures for every kind. [`check`] reads every document of a kind in Istio's
//! corpus and samples: those outside `*-invalid.yaml` files must parse and validate without
//! errors; those inside must be rejected, with Istio's message (their `_err:` line) among ours.
//!
//! Each kind's test passes its [`Exception`]s: documents whose outcome is known to differ, and
//! why (analyzer fixtures that Istio itself would reject, an invalid document rejected in other
//! words). An exception must still be rejected, so the lists stay honest.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{
    Deserialize,
    de::{DeserializeOwned, IgnoredAny},
};

use crate::kinds::{Issues, Meta, ObjectMeta, Severity, from_yaml};

/// A document of Istio's data that mesh rejects although its file says otherwise: the file
/// (a suffix of its path), the document's index in it (counted from 0 at each `---` line), and
/// why.
pub(crate) type Exception = (&'static str, usize, &'static str);

/// Whether a kind's CRD requires `spec`. The loader rejects a document without one of such a
/// kind, and reads the default spec for the others; so does [`check`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spec {
    Optional,
    Required,
}

/// networking.istio.io, every served version.
pub(crate) fn networking_api(api_version: &str) -> bool {
    api_version.starts_with("networking.istio.io/")
}

/// security.istio.io, every served version.
pub(crate) fn security_api(api_version: &str) -> bool {
    matches!(
        api_version,
        "security.istio.io/v1" | "security.istio.io/v1beta1"
    )
}

/// Where the team keeps Istio's YAML (see its README); `None` on machines without it.
fn istio_testdata() -> Option<PathBuf> {
    let dir = std::env::var_os("MESH_ISTIO_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/istio"));
    dir.is_dir().then_some(dir)
}

/// A whole object, as the tests read it: the spec under test and strict metadata.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Object<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default = "Option::default")]
    spec: Option<S>,
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

/// Just enough of any document to pick the ones under test, and Istio's expected message.
#[derive(Deserialize)]
struct Probe {
    #[serde(default, rename = "apiVersion")]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "_err")]
    err: Option<String>,
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".yaml") || n.ends_with(".yml") || n.ends_with(".golden"))
        {
            out.push(path);
        }
    }
}

/// Splits on lines that are `---` (trailing blanks allowed: one upstream file has `--- `).
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            let doc = docs.last_mut().expect("never empty");
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs
}

/// Parses and validates every document of `kind` whose apiVersion passes `api`, prints Istio's
/// expected messages next to ours, and fails on any document that is not judged as its file
/// says (see the module's doc). Returns the number of documents checked; `None` when the test
/// data is absent.
pub(crate) fn check<S: DeserializeOwned + Default>(
    kind: &str,
    api: fn(&str) -> bool,
    spec: Spec,
    validate: impl Fn(&S, &Meta<'_>, &mut Issues),
    exceptions: &[Exception],
) -> Option<usize> {
    let Some(root) = istio_testdata() else {
        println!(
            "note: the Istio test data is absent (set MESH_ISTIO_TESTDATA); skipping the {kind} \
             corpus test"
        );
        return None;
    };
    let mut files = Vec::new();
    yaml_files(&root.join("corpus"), &mut files);
    yaml_files(&root.join("samples"), &mut files);
    files.sort();
    let mut failures = Vec::new();
    let mut checked = 0;
    println!("{kind}: _err (Istio) | mesh");
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let short = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let invalid_file = short.ends_with("-invalid.yaml");
        for (index, doc) in documents(&text).iter().enumerate() {
            let at = format!("{short}#{index}");
            let probe = match from_yaml::<Probe>(doc) {
                Ok(probe) => probe,
                Err(e) => {
                    if doc.lines().any(|l| l.trim_end() == format!("kind: {kind}")) {
                        println!("note: {at}: a document that mentions {kind} is not YAML: {e}");
                    }
                    continue;
                }
            };
            if probe.kind.as_deref() != Some(kind) || !probe.api_version.as_deref().is_some_and(api)
            {
                continue;
            }
            checked += 1;
            let ours = judge(doc, kind, spec, &validate);
            let exception = exceptions
                .iter()
                .find(|(suffix, i, _)| *i == index && short.ends_with(suffix));
            if let Some((_, _, why)) = exception {
                if ours.is_empty() {
                    failures.push(format!(
                        "{at}: listed as an exception ({why}), but accepted"
                    ));
                } else {
                    println!("note: {at}: an exception ({why}): {ours:?}");
                }
            } else if invalid_file {
                let expected = probe.err.unwrap_or_default();
                let found = ours
                    .iter()
                    .find(|e| e.to_lowercase().contains(&expected.to_lowercase()));
                let shown = found.or(ours.first()).map_or("(accepted)", String::as_str);
                let mark = if found.is_some() { "ok" } else { "differs" };
                println!("  [{mark}] {expected} | {shown}");
                if ours.is_empty() {
                    failures.push(format!("{at}: accepted, but Istio rejects it: {expected}"));
                } else if found.is_none() {
                    failures.push(format!(
                        "{at}: rejected, but not with Istio's message {expected:?}: {ours:?}"
                    ));
                }
            } else if !ours.is_empty() {
                failures.push(format!("{at}: valid in Istio, but: {ours:?}"));
            }
        }
    }
    println!("{kind}: {checked} documents checked");
    assert!(
        failures.is_empty(),
        "{kind} corpus failures:\n{}",
        failures.join("\n")
    );
    Some(checked)
}

/// What mesh says about a document: its parse error, or `path: message` per validation error.
fn judge<S: DeserializeOwned + Default>(
    doc: &str,
    kind: &str,
    spec: Spec,
    validate: &impl Fn(&S, &Meta<'_>, &mut Issues),
) -> Vec<String> {
    let doc: String = doc
        .lines()
        .filter(|l| !l.starts_with("_err:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let obj = match from_yaml::<Object<S>>(&doc) {
        Ok(obj) if obj.spec.is_none() && spec == Spec::Required => {
            return vec![format!("spec: Required value: a {kind} needs a spec")];
        }
        Ok(obj) => obj,
        Err(e) => return vec![format!("parse: {e}")],
    };
    let meta = Meta {
        name: obj.metadata.name.as_deref().unwrap_or(""),
        namespace: obj.metadata.namespace.as_deref().unwrap_or("default"),
        metadata: &obj.metadata,
    };
    let mut issues = Issues::default();
    validate(&obj.spec.unwrap_or_default(), &meta, &mut issues);
    issues
        .items
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .map(|i| format!("{}: {}", i.path, i.message))
        .collect()
}

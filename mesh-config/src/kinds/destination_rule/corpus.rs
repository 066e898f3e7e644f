//! Test-only: Istio's own YAML (under `/work/shared/istio`, when present) as fixtures. Every
//! document of a kind outside `*-invalid.yaml` files must parse and validate without errors;
//! every document in `*-invalid.yaml` files must be rejected, with Istio's message (`_err`) in
//! ours. Shared by the DestinationRule, ServiceEntry, WorkloadEntry and EnvoyFilter tests.

use std::path::{Path, PathBuf};

use serde::{Deserialize, de::DeserializeOwned, de::IgnoredAny};

use crate::kinds::{Issues, Meta, ObjectMeta, Severity, from_yaml};

const ISTIO_DIR: &str = "/work/shared/istio";

/// Documents outside `*-invalid.yaml` files that mesh rejects, and why: `(path suffix, document
/// index, reason)`. They must stay rejected; an entry that stops being rejected fails the test.
const REJECTED_ON_PURPOSE: &[(&str, usize, &str)] = &[
    (
        "analyzers/testdata/authorizationpolicies.yaml",
        3,
        "analyzer test data, never admitted: resolution DNS with the wildcard host `*.kiali.io` \
         and no endpoints; istiod's webhook rejects it (hosts must be FQDN ...)",
    ),
    (
        "analyzers/testdata/condition-analyzer.yaml",
        1,
        "analyzer test data, never admitted: a ServiceEntry with `status` and no `spec`; the \
         CRD requires spec",
    ),
    (
        "analyzers/testdata/virtualservice_destinationhosts.yaml",
        4,
        "analyzer test data, never admitted: `hosts: [\"*\"]`; the CRD rejects it (hostname \
         cannot be wildcard)",
    ),
    (
        "input-extra-resources/envoyfilter.yaml",
        0,
        "operator test input, never admitted: three configPatches without `patch`; istiod's \
         webhook rejects them (Envoy filter: missing patch)",
    ),
    (
        "analyzers/testdata/envoy-filter-add-operation.yaml",
        3,
        "analyzer test data: `match.app` is not a field of EnvoyConfigObjectMatch",
    ),
    (
        "analyzers/testdata/envoy-filter-add-operation.yaml",
        4,
        "analyzer test data: `match.app` is not a field of EnvoyConfigObjectMatch",
    ),
    (
        "analyzers/testdata/envoy-filter-remove-operation.yaml",
        1,
        "analyzer test data: applyTo ROUTE_CONFIGURATION with a listener match; istiod's webhook \
         rejects it",
    ),
    (
        "analyzers/testdata/envoy-filter-remove-operation.yaml",
        2,
        "analyzer test data: applyTo ROUTE_CONFIGURATION with a listener match; istiod's webhook \
         rejects it",
    ),
    (
        "analyzers/testdata/envoy-filter-remove-operation.yaml",
        3,
        "analyzer test data: `patch:` is null; istiod's webhook rejects it (missing patch)",
    ),
    (
        "analyzers/testdata/relative-envoy-filter-operation.yaml",
        2,
        "analyzer test data: applyTo CLUSTER with a listener match; istiod's webhook rejects it",
    ),
];

/// A whole object, for the corpus tests only (the loader has its own).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Object<S> {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    metadata: ObjectMeta,
    spec: Option<S>,
    #[allow(dead_code)]
    status: Option<IgnoredAny>,
}

/// One YAML document of the wanted kind.
struct Doc {
    file: PathBuf,
    index: usize,
    text: String,
    /// Istio's expected message, from a top-level `_err:` line.
    err: Option<String>,
    in_invalid_file: bool,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".yaml") || n.contains(".yml"))
        {
            out.push(p);
        }
    }
}

fn documents(kind: &str) -> Option<Vec<Doc>> {
    let root = Path::new(ISTIO_DIR);
    if !root.is_dir() {
        return None;
    }
    let mut files = Vec::new();
    walk(&root.join("corpus"), &mut files);
    walk(&root.join("samples"), &mut files);
    let kind_line = format!("kind: {kind}");
    let mut docs = Vec::new();
    for file in files {
        let Ok(content) = std::fs::read_to_string(&file) else {
            continue;
        };
        let in_invalid_file = file
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains("-invalid."));
        let mut chunks = vec![String::new()];
        for line in content.lines() {
            // The brief says "lines that are exactly `---`"; YAML also ends a document at `---`
            // followed by spaces, which one of Istio's files has.
            if line.trim_end() == "---" {
                chunks.push(String::new());
            } else {
                let last = chunks.last_mut().expect("never empty");
                last.push_str(line);
                last.push('\n');
            }
        }
        for (index, chunk) in chunks.into_iter().enumerate() {
            if !chunk.lines().any(|l| l.trim_end() == kind_line) {
                continue;
            }
            let mut err = None;
            let mut text = String::new();
            for line in chunk.lines() {
                if let Some(v) = line.strip_prefix("_err:") {
                    err = Some(v.trim().trim_matches(|c| c == '\'' || c == '"').to_owned());
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            docs.push(Doc {
                file: file.clone(),
                index,
                text,
                err,
                in_invalid_file,
            });
        }
    }
    Some(docs)
}

/// Parses and validates every document of `kind` in Istio's corpus and samples, prints a table of
/// Istio's expected messages next to ours, and fails on any mismatch.
pub(crate) fn check_corpus<S: DeserializeOwned>(
    kind: &str,
    spec_required: bool,
    validate: impl Fn(&S, &Meta<'_>, &mut Issues),
) {
    let Some(docs) = documents(kind) else {
        println!("note: {ISTIO_DIR} is absent; skipping the {kind} corpus test");
        return;
    };
    let mut failures = Vec::new();
    let mut table = Vec::new();
    let mut checked = 0;
    for doc in &docs {
        let at = format!("{}#{}", doc.file.display(), doc.index);
        if doc.text.contains("{{") {
            println!("note: {at} is a template; skipped");
            continue;
        }
        checked += 1;
        // What we say about the document: a parse error, or `path: message` per error issue.
        let ours: Vec<String> = match from_yaml::<Object<S>>(&doc.text) {
            Err(e) => vec![format!("(parse) {e}")],
            Ok(obj) => match &obj.spec {
                None if spec_required => vec!["spec: Required value (loader)".to_owned()],
                None => Vec::new(),
                Some(spec) => {
                    let meta = Meta {
                        name: obj.metadata.name.as_deref().unwrap_or("test"),
                        namespace: obj.metadata.namespace.as_deref().unwrap_or("default"),
                        metadata: &obj.metadata,
                    };
                    let mut out = Issues::default();
                    validate(spec, &meta, &mut out);
                    out.items
                        .iter()
                        .filter(|i| i.severity == Severity::Error)
                        .map(|i| format!("{}: {}", i.path, i.message))
                        .collect()
                }
            },
        };
        let on_purpose = REJECTED_ON_PURPOSE.iter().find(|(suffix, index, _)| {
            doc.file.to_string_lossy().ends_with(suffix) && doc.index == *index
        });
        if let Some((_, _, reason)) = on_purpose {
            if ours.is_empty() {
                failures.push(format!("{at}: listed as rejected on purpose, but accepted"));
            } else {
                println!("note: {at}: rejected on purpose ({reason}): {ours:?}");
            }
        } else if doc.in_invalid_file {
            let expected = doc.err.clone().unwrap_or_default();
            let matched = ours
                .iter()
                .any(|m| m.to_lowercase().contains(&expected.to_lowercase()));
            table.push((expected.clone(), ours.join(" | "), matched));
            if ours.is_empty() {
                failures.push(format!("{at}: accepted, but Istio rejects it: {expected}"));
            } else if !matched {
                failures.push(format!(
                    "{at}: rejected, but not with Istio's message {expected:?}: {ours:?}"
                ));
            }
        } else if !ours.is_empty() {
            failures.push(format!("{at}: valid in Istio, but: {ours:?}"));
        }
    }
    println!("{kind}: {checked} documents checked");
    if !table.is_empty() {
        println!("| Istio's _err | mesh's message | contains |");
        println!("|---|---|---|");
        for (expected, ours, matched) in &table {
            println!(
                "| {expected} | {ours} | {} |",
                if *matched { "yes" } else { "NO" }
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! Istio's own YAML (`../shared/istio`, beside the clone in CI; not part of this repository):
//! every document Istio's tests mark invalid is rejected with Istio's message, and the Bookinfo
//! routing samples route as Istio's tasks say.
//!
//! Without the folder these tests print a note and pass, so `cargo test` works on a bare clone;
//! `.ci/run` sets `MESH_ISTIO_DIR`, which makes the folder required.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn istio_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MESH_ISTIO_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "MESH_ISTIO_DIR={} is not a folder",
            dir.display()
        );
        return Some(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "note: {} not found; skipping the Istio corpus checks",
            dir.display()
        );
        None
    }
}

fn mesh(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .output()
        .expect("run mesh")
}

/// One document of an `*-invalid.yaml` file: Istio's message and the document without `_err`.
struct Case {
    file: String,
    name: String,
    kind: String,
    expected: String,
    yaml: String,
}

fn invalid_cases(dir: &Path) -> Vec<Case> {
    let crds = dir.join("corpus/pkg/config/validation/testdata/crds");
    let mut files: Vec<_> = std::fs::read_dir(&crds)
        .expect("the crds folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-invalid.yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in text.split("\n---") {
            let mut expected = None;
            let mut kept = Vec::new();
            for line in doc.lines() {
                match line.strip_prefix("_err:") {
                    Some(msg) => expected = Some(msg.trim().trim_matches(['"', '\'']).to_owned()),
                    None => kept.push(line),
                }
            }
            let yaml = kept.join("\n") + "\n";
            let field = |key: &str| {
                yaml.lines()
                    .find_map(|l| {
                        l.trim_start()
                            .strip_prefix(key)
                            .map(|v| v.trim().to_owned())
                    })
                    .unwrap_or_default()
            };
            let (kind, name) = (field("kind:"), field("name:"));
            // Documents that are only comments (commented-out cases) are not cases.
            let Some(expected) = expected else { continue };
            if kind.is_empty() {
                continue;
            }
            cases.push(Case {
                file: file.file_name().unwrap().to_string_lossy().into_owned(),
                name,
                kind,
                expected,
                yaml,
            });
        }
    }
    cases
}

#[test]
fn every_invalid_document_is_rejected_with_istios_message() {
    let Some(dir) = istio_dir() else { return };
    let cases = invalid_cases(&dir);
    assert!(
        cases.len() >= 40,
        "found only {} invalid documents",
        cases.len()
    );
    let tmp = std::env::temp_dir().join(format!("mesh-istio-invalid-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut accepted = Vec::new();
    let mut other_message = Vec::new();
    println!("{:<26} {:<34} {:<52} mesh", "file", "document", "Istio");
    for (i, case) in cases.iter().enumerate() {
        let path = tmp.join(format!("case-{i}.yaml"));
        std::fs::write(&path, &case.yaml).unwrap();
        let out = mesh(&["validate", "--format", "json", path.to_str().unwrap()]);
        let diags: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
        let errors: Vec<&serde_json::Value> = diags
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["severity"] == "error")
            .collect();
        let ours = errors
            .first()
            .map(|d| d["message"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| "(accepted)".into());
        println!(
            "{:<26} {:<34} {:<52} {}",
            case.file, case.name, case.expected, ours
        );
        if errors.is_empty() || out.status.code() != Some(1) {
            accepted.push(format!("{} {}", case.file, case.name));
            continue;
        }
        // The error names the document...
        assert!(
            errors
                .iter()
                .all(|d| d["kind"] == case.kind.as_str() && d["name"] == case.name.as_str()),
            "{}: errors do not name {} {}: {errors:?}",
            case.file,
            case.kind,
            case.name
        );
        // ...and says what Istio says.
        let want = case.expected.to_ascii_lowercase();
        if !errors.iter().any(|d| {
            d["message"]
                .as_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains(&want)
        }) {
            other_message.push(format!(
                "{} {}: Istio says {:?}, mesh says {ours:?}",
                case.file, case.name, case.expected
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        accepted.is_empty(),
        "documents Istio rejects were accepted:\n{}",
        accepted.join("\n")
    );
    assert!(
        other_message.is_empty(),
        "messages that differ from Istio's:\n{}",
        other_message.join("\n")
    );
}

#[test]
fn bookinfo_samples_route_as_istios_tasks_say() {
    let Some(dir) = istio_dir() else { return };
    let net = dir.join("samples/bookinfo/networking");
    let f = |name: &str| net.join(name).to_string_lossy().into_owned();
    let (dr, jason, split) = (
        f("destination-rule-all.yaml"),
        f("virtual-service-reviews-jason-v2-v3.yaml"),
        f("virtual-service-reviews-80-20.yaml"),
    );

    let out = mesh(&[
        "route",
        "--config",
        &dr,
        &jason,
        "-H",
        "end-user: jason",
        "http://reviews:9080/",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("subset v2 weight 100"), "{text}");

    let out = mesh(&["route", "--config", &dr, &jason, "http://reviews:9080/"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subset v3 weight 100"), "{text}");

    let out = mesh(&["route", "--config", &dr, &split, "http://reviews:9080/"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("subset v1 weight 80 (80.0%)"), "{text}");
    assert!(text.contains("subset v2 weight 20 (20.0%)"), "{text}");
}

#[test]
fn istios_valid_yaml_is_accepted() {
    let Some(dir) = istio_dir() else { return };
    for sub in ["samples/bookinfo/networking", "samples"] {
        let out = mesh(&["validate", dir.join(sub).to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{sub}:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

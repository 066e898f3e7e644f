//! `mesh validate` and `mesh route`, driven as a user drives them: the binary, files on disk,
//! exit codes and output.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
};

fn mesh(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mesh"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("run mesh")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh folder under the target dir with the given files.
fn fixture(files: &[(&str, &str)]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-cli-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

#[test]
fn the_example_config_is_valid() {
    let out = mesh(&["validate", "examples/config"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.starts_with("ok: 4 file(s) checked, 0 error(s)"),
        "{text}"
    );
}

#[test]
fn a_typo_is_one_line_with_place_kind_name_and_the_neighbour() {
    let dir = fixture(&[(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n    timout: 5s\n",
    )]);
    let file = dir.join("vs.yaml");
    let out = mesh(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 1, "{text}");
    let expected = format!(
        "{}:12:5: error: VirtualService shop/reviews: spec.http[0]: unknown field `timout`: did you mean `timeout`?",
        file.display()
    );
    assert!(
        errors[0].starts_with(&expected),
        "got:\n{}\nwant prefix:\n{expected}",
        errors[0]
    );
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("invalid: 1 file(s) checked, 1 error(s)"),
        "{text}"
    );
}

#[test]
fn json_output_has_the_promised_fields() {
    let dir = fixture(&[(
        "pa.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\nspec:\n  mtls:\n    mode: STRCT\n",
    )]);
    let out = mesh(&["validate", "--format", "json", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let d = &v.as_array().unwrap()[0];
    assert_eq!(d["line"], 7);
    assert_eq!(d["column"], 11);
    assert_eq!(d["severity"], "error");
    assert_eq!(d["kind"], "PeerAuthentication");
    assert_eq!(d["namespace"], "default");
    assert_eq!(d["name"], "strict");
    let msg = d["message"].as_str().unwrap();
    assert!(msg.contains("Unsupported value: \"STRCT\""), "{msg}");
    assert!(msg.contains("did you mean \"STRICT\"?"), "{msg}");
    assert!(d["file"].as_str().unwrap().ends_with("pa.yaml"));
}

#[test]
fn bad_durations_and_bad_documents_do_not_hide_good_ones() {
    let dir = fixture(&[(
        "mixed.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n  http:\n  - timeout: 5 seconds\n    route:\n    - destination: {host: a}\n---\nkind: [broken\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: skipped\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: ok\nspec:\n  host: a\n",
    )]);
    let out = mesh(&["validate", dir.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("mixed.yaml:8:14: error: VirtualService default/a: spec.http[0].timeout: invalid duration \"5 seconds\""), "{text}");
    assert!(
        text.contains("mixed.yaml:12:7: error: YAML syntax error"),
        "{text}"
    );
    assert!(text.contains("mixed.yaml:15:1: note: Deployment default/skipped: skipped: Deployment (apps) is not an Istio kind mesh reads"), "{text}");
    assert!(
        text.contains("2 error(s), 0 warning(s), 1 note(s)"),
        "{text}"
    );
}

#[test]
fn strict_turns_analysis_warnings_into_errors() {
    let dir = fixture(&[(
        "vs.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [r]\n  gateways: [missing-gw]\n  http:\n  - route:\n    - destination: {host: r, subset: v9}\n",
    )]);
    let out = mesh(&["validate", dir.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("warning: VirtualService default/r: IST0101 Referenced gateway not found: \"default/missing-gw\""), "{text}");
    assert!(
        text.contains("IST0101 Referenced host+subset in destinationrule not found: \"r+v9\""),
        "{text}"
    );
    let strict = mesh(&["validate", "--strict", dir.to_str().unwrap()]);
    assert_eq!(strict.status.code(), Some(1), "{}", stdout(&strict));
}

#[test]
fn usage_and_io_errors_exit_2() {
    assert_eq!(mesh(&["validate"]).status.code(), Some(2));
    assert_eq!(mesh(&["validate", "no/such/dir"]).status.code(), Some(2));
    assert_eq!(
        mesh(&["route", "--config", "examples/config"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn route_follows_the_end_user_header() {
    let jason = mesh(&[
        "route",
        "--config",
        "examples/config",
        "-H",
        "end-user: jason",
        "http://reviews:9080/",
    ]);
    let text = stdout(&jason);
    assert_eq!(jason.status.code(), Some(0), "{text}");
    assert!(text.contains("virtualService: default/reviews"), "{text}");
    assert!(
        text.contains("route:          jason (match[0]: header end-user exact"),
        "{text}"
    );
    assert!(
        text.contains(
            "destination:    reviews.default.svc.cluster.local subset v2 weight 100 (100.0%)"
        ),
        "{text}"
    );
    assert!(text.contains("endpoint:     127.0.0.1:19084"), "{text}");

    let anyone = stdout(&mesh(&[
        "route",
        "--config",
        "examples/config",
        "http://reviews:9080/",
    ]));
    assert!(anyone.contains("subset v3"), "{anyone}");
    assert!(anyone.contains("timeout:        3s"), "{anyone}");
    assert!(anyone.contains("retries:        2 attempt(s) on gateway-error,connect-failure,retriable-status-codes, per try 1s"), "{anyone}");
}

#[test]
fn route_shows_a_weighted_split_and_json() {
    let out = mesh(&[
        "route",
        "--config",
        "examples/config/services.yaml",
        "examples/config/destination-rules.yaml",
        "examples/scenarios/reviews-80-20.yaml",
        "--format",
        "json",
        "http://reviews:9080/reviews/0",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dests = v["destinations"].as_array().unwrap();
    let got: Vec<(String, u64)> = dests
        .iter()
        .map(|d| {
            (
                d["subset"].as_str().unwrap().to_owned(),
                d["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![("v1".to_owned(), 80), ("v2".to_owned(), 20)]);
    assert_eq!(dests[0]["endpoints"][0]["address"], "127.0.0.1:19083");
    assert_eq!(dests[1]["loadBalancer"], "ROUND_ROBIN");
}

#[test]
fn route_shows_faults_and_gateway_routes() {
    let fault = stdout(&mesh(&[
        "route",
        "--config",
        "examples/config",
        "examples/scenarios/ratings-fault.yaml",
        "-H",
        "end-user: jason",
        "http://ratings:9080/ratings/0",
    ]));
    assert!(fault.contains("\"status\":\"HTTP 500\""), "{fault}");
    assert!(fault.contains("\"fixedDelay\":\"7s\""), "{fault}");

    let gw = mesh(&[
        "route",
        "--config",
        "examples/config",
        "--gateway",
        "default/bookinfo-gateway",
        "http://bookinfo.example:8080/productpage",
    ]);
    let text = stdout(&gw);
    assert_eq!(gw.status.code(), Some(0), "{text}");
    assert!(text.contains("virtualService: default/bookinfo"), "{text}");
    assert!(
        text.contains("destination:    productpage.default.svc.cluster.local:9080"),
        "{text}"
    );

    let miss = mesh(&[
        "route",
        "--config",
        "examples/config",
        "--gateway",
        "default/bookinfo-gateway",
        "http://bookinfo.example:8080/admin",
    ]);
    assert_eq!(miss.status.code(), Some(1));
    assert!(
        stdout(&miss).contains("no route matched"),
        "{}",
        stdout(&miss)
    );
}

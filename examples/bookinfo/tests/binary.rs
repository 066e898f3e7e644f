//! The `bookinfo` binary as a newcomer runs it: it prints the page's URL, and the page is there.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

/// Kills the child when the test ends, passing or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_prints_the_url_and_serves_the_page() {
    let dir = std::env::temp_dir().join(format!("bookinfo-binary-test-{}", std::process::id()));
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_bookinfo"))
            .args(["--listen", "127.0.0.1:0", "--scenario", "reviews-v3"])
            .arg("--config-dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    // The banner, up to its last line.
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        banner
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .expect("no start-up message within 30 s")
        .unwrap();
    assert!(banner.contains("Scenario: reviews-v3"), "{banner}");
    assert!(banner.contains(&dir.display().to_string()), "{banner}");
    let url = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("Open "))
        .unwrap_or_else(|| panic!("no URL in:\n{banner}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && url.ends_with("/productpage"));

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = client.get(url.parse().unwrap()).await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.into_body().collect().await.unwrap().to_bytes();
    let page = String::from_utf8_lossy(&page);
    assert!(page.contains("<title>Simple Bookstore App</title>"));
    assert_eq!(page.matches("<font color=\"red\">").count(), 2, "{page}");
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unknown_scenario_fails_with_the_list_of_scenarios() {
    let out = Command::new(env!("CARGO_BIN_EXE_bookinfo"))
        .args(["--listen", "127.0.0.1:0", "--scenario", "reviews-v9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("there is no scenario \"reviews-v9\"") && stderr.contains("jason-v2"),
        "{stderr}"
    );
}

#[test]
fn serve_names_the_workloads_and_what_a_caller_needs() {
    let unknown = Command::new(env!("CARGO_BIN_EXE_bookinfo"))
        .args(["serve", "--service", "reviews", "--version", "v9"])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("there is no reviews v9") && stderr.contains("reviews v3"),
        "{stderr}"
    );

    let no_proxy = Command::new(env!("CARGO_BIN_EXE_bookinfo"))
        .args([
            "serve",
            "--service",
            "productpage",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(no_proxy.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&no_proxy.stderr);
    assert!(stderr.contains("--upstream-proxy"), "{stderr}");
}

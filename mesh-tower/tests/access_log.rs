//! Access logs of two sidecars over real sockets: the client side in Envoy's text format, the
//! server side in Istio's JSON, the same request's lines joined by `x-request-id`.

mod sidecars;
mod support;

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use mesh_tower::access_log::{AccessLog, LogFormat};
use tower::ServiceExt;

use sidecars::{Options, eventually};

/// An in-memory log file.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Lines {
    /// The lines once there are `n` (each side writes when its response body ends).
    async fn wait(&self, log: &AccessLog, n: usize) -> Vec<String> {
        eventually(|| {
            log.flush();
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            (lines.len() >= n).then_some(lines)
        })
        .await
    }
}

async fn get(mesh: &sidecars::Sidecars, uri: &str, id: &str) -> u16 {
    let req = Request::get(uri)
        .header("user-agent", "curl/8.5.0")
        .header("x-request-id", id)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = mesh.client.clone().oneshot(req).await.unwrap();
    let status = res.status().as_u16();
    res.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_log_each_request_in_envoys_formats() {
    let (client_lines, server_lines) = (Lines::default(), Lines::default());
    let client_log = AccessLog::to_writer(client_lines.clone(), LogFormat::Text);
    let server_log = AccessLog::to_writer(server_lines.clone(), LogFormat::Json);
    let mesh = sidecars::start(Options {
        client_log: Some(client_log.clone()),
        server_log: Some(server_log.clone()),
        ..Options::default()
    })
    .await;

    assert_eq!(
        get(&mesh, "http://reviews:9080/reviews/0?u=1", "id-1").await,
        200
    );
    assert_eq!(
        get(&mesh, "http://details:9080/details/0", "id-2").await,
        503
    );

    let client = client_lines.wait(&client_log, 2).await;
    // `[START] "GET /reviews/0?u=1 HTTP/1.1" 200 - via_upstream - "-" 0 BYTES MS - "-"
    // "curl/8.5.0" "ID" "reviews:9080" "127.0.0.1:PORT" outbound|9080||reviews... - - - -
    // primary`.
    let ok = &client[0];
    let (start, rest) = ok.split_once("] ").unwrap();
    assert!(start.starts_with('[') && start.ends_with('Z'), "{ok}");
    let after_duration = {
        let head = "\"GET /reviews/0?u=1 HTTP/1.1\" 200 - via_upstream - \"-\" 0 ";
        assert!(rest.starts_with(head), "{ok}");
        let mut f = rest[head.len()..].splitn(3, ' ');
        let sent: u64 = f.next().unwrap().parse().unwrap();
        assert!(sent > 0, "the app's body: {ok}");
        let _duration: u64 = f.next().unwrap().parse().unwrap();
        f.next().unwrap().to_owned()
    };
    assert_eq!(
        after_duration,
        format!(
            "- \"-\" \"curl/8.5.0\" \"id-1\" \"reviews:9080\" \"{}\" \
             outbound|9080||reviews.default.svc.cluster.local - - - - primary",
            mesh.inbound
        )
    );
    let failed = &client[1];
    // Refused three times (Istio's default retries): Envoy's well-known `UF,URX`.
    assert!(
        failed.contains("\"GET /details/0 HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{connection_failure} "),
        "{failed}"
    );
    assert!(
        failed.ends_with("outbound|9080||details.default.svc.cluster.local - - - - default"),
        "{failed}"
    );

    // The server side saw the first request only, over the connection from the client side.
    let server = server_lines.wait(&server_log, 1).await;
    assert_eq!(server.len(), 1, "{server:?}");
    let v: serde_json::Value = serde_json::from_str(&server[0]).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/reviews/0?u=1");
    assert_eq!(v["protocol"], "HTTP/1.1");
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["response_code_details"], "via_upstream");
    assert_eq!(v["request_id"], "id-1", "the client side's id, kept");
    assert_eq!(v["user_agent"], "curl/8.5.0");
    assert_eq!(v["authority"], "reviews:9080");
    assert_eq!(v["upstream_cluster"], "inbound|9080||");
    assert_eq!(v["route_name"], "default");
    assert_eq!(v["downstream_local_address"], mesh.inbound.to_string());
    let remote = v["downstream_remote_address"].as_str().unwrap();
    assert!(remote.starts_with("127.0.0.1:"), "{remote}");
    assert!(v["bytes_sent"].as_u64().unwrap() > 0);
    assert_eq!(client_log.dropped() + server_log.dropped(), 0);
}

use std::{
    io::Write,
    sync::{Arc, Mutex, mpsc},
    time::{Duration, SystemTime},
};

use http::{HeaderValue, Method, Version};

use super::{format, writer::Writer, *};
use crate::telemetry::ResponseFlags;

/// istio.io's example line's request, at 2020-11-25T21:26:18.409Z.
fn request() -> RequestInfo {
    RequestInfo {
        start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_606_339_578_409),
        method: Method::GET,
        path: "/status/418".into(),
        version: Version::HTTP_11,
        forwarded_for: None,
        user_agent: Some(HeaderValue::from_static("curl/7.73.0-DEV")),
        request_id: Some(HeaderValue::from_static(
            "84961386-6d84-929d-98bd-c5aee93b5c88",
        )),
        authority: Some("httpbin:8000".into()),
        downstream_local: Some("10.0.45.184:8000".parse().unwrap()),
        downstream_remote: Some("10.44.1.23:46520".parse().unwrap()),
        server_name: None,
    }
}

fn record(req: &RequestInfo) -> Record<'_> {
    Record {
        request: req,
        code: 418,
        flags: ResponseFlags::NONE,
        details: "via_upstream",
        bytes_received: 0,
        bytes_sent: 135,
        duration_ms: 4,
        upstream_host: Some("10.44.1.27:80"),
        upstream_cluster: Some("outbound|8000||httpbin.foo.svc.cluster.local"),
        route_name: Some("default"),
    }
}

#[test]
fn text_lines_are_envoys_default_format() {
    let req = request();
    // istio.io's example, with `-` where mesh knows nothing (upstream service time, upstream
    // local address).
    assert_eq!(
        format::text(&record(&req)),
        "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" \
         0 135 4 - \"-\" \"curl/7.73.0-DEV\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \
         \"httpbin:8000\" \"10.44.1.27:80\" outbound|8000||httpbin.foo.svc.cluster.local - \
         10.0.45.184:8000 10.44.1.23:46520 - default\n"
    );
}

#[test]
fn text_lines_show_flags_and_dashes_for_what_is_unknown() {
    let mut req = request();
    req.user_agent = None;
    req.request_id = None;
    req.authority = None;
    req.downstream_local = None;
    req.downstream_remote = None;
    req.version = Version::HTTP_2;
    let r = Record {
        code: 503,
        flags: ResponseFlags::NO_HEALTHY_UPSTREAM,
        details: "no_healthy_upstream",
        upstream_host: None,
        upstream_cluster: None,
        route_name: None,
        ..record(&req)
    };
    assert_eq!(
        format::text(&r),
        "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/2\" 503 UH no_healthy_upstream - \
         \"-\" 0 135 4 - \"-\" \"-\" \"-\" \"-\" \"-\" - - - - - -\n"
    );
}

#[test]
fn a_header_cannot_forge_a_second_line() {
    let mut req = request();
    req.user_agent = Some(HeaderValue::from_bytes(b"evil\tagent").unwrap());
    req.path = "/a\nb".into();
    let line = format::text(&record(&req));
    assert_eq!(line.matches('\n').count(), 1);
    assert!(line.contains("\"evil?agent\""), "{line}");
    assert!(line.contains("/a?b"), "{line}");
    let json = format::json(&record(&req));
    assert_eq!(json.matches('\n').count(), 1);
}

#[test]
fn json_lines_have_istios_keys_in_order_with_numbers_and_nulls() {
    let req = request();
    let line = format::json(&record(&req));
    assert!(line.ends_with("}\n"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let keys: Vec<&str> = {
        // Key order as written (serde_json's map would sort them).
        let mut keys = Vec::new();
        let mut rest = line.as_str();
        while let Some(i) = rest.find("\":") {
            let start = rest[..i].rfind('"').unwrap();
            keys.push(&rest[start + 1..i]);
            rest = &rest[i + 2..];
            // Skip a string value, which may contain `":`.
            if rest.starts_with('"') {
                let end = rest[1..].find('"').unwrap();
                rest = &rest[end + 2..];
            }
        }
        keys
    };
    assert_eq!(
        keys,
        [
            "start_time",
            "route_name",
            "method",
            "path",
            "protocol",
            "response_code",
            "response_flags",
            "response_code_details",
            "connection_termination_details",
            "bytes_received",
            "bytes_sent",
            "duration",
            "upstream_service_time",
            "x_forwarded_for",
            "user_agent",
            "request_id",
            "authority",
            "upstream_host",
            "upstream_cluster",
            "upstream_local_address",
            "downstream_local_address",
            "downstream_remote_address",
            "requested_server_name",
            "upstream_transport_failure_reason",
        ]
    );
    assert_eq!(v["start_time"], "2020-11-25T21:26:18.409Z");
    assert_eq!(v["response_code"], 418);
    assert_eq!(v["bytes_sent"], 135);
    assert_eq!(v["duration"], 4);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["x_forwarded_for"], serde_json::Value::Null);
    assert_eq!(
        v["upstream_cluster"],
        "outbound|8000||httpbin.foo.svc.cluster.local"
    );
    assert_eq!(v["downstream_remote_address"], "10.44.1.23:46520");
}

fn tcp_record() -> TcpRecord<'static> {
    TcpRecord {
        start: SystemTime::UNIX_EPOCH + Duration::from_millis(1_606_339_578_409),
        flags: ResponseFlags::NONE,
        bytes_received: 12,
        bytes_sent: 34,
        duration_ms: 56,
        upstream_host: Some("10.44.1.27:9000"),
        upstream_cluster: Some("outbound|9000||tcp-echo.foo.svc.cluster.local"),
        downstream_local: Some("10.0.45.184:31400".parse().unwrap()),
        downstream_remote: Some("10.44.1.23:46520".parse().unwrap()),
        server_name: None,
    }
}

#[test]
fn tcp_lines_are_envoys_tcp_proxy_lines() {
    // Envoy's TCP proxy in Istio's format: no request, code 0, details `-`.
    assert_eq!(
        format::tcp_text(&tcp_record()),
        "[2020-11-25T21:26:18.409Z] \"- - -\" 0 - - - \"-\" 12 34 56 - \"-\" \"-\" \"-\" \"-\" \
         \"10.44.1.27:9000\" outbound|9000||tcp-echo.foo.svc.cluster.local - \
         10.0.45.184:31400 10.44.1.23:46520 - -\n"
    );
    let failed = TcpRecord {
        flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
        server_name: Some("tcp.example.com"),
        ..tcp_record()
    };
    let v: serde_json::Value = serde_json::from_str(&format::tcp_json(&failed)).unwrap();
    assert_eq!(v["method"], serde_json::Value::Null);
    assert_eq!(v["path"], serde_json::Value::Null);
    assert_eq!(v["protocol"], serde_json::Value::Null);
    assert_eq!(v["response_code"], 0);
    assert_eq!(v["response_flags"], "UF");
    assert_eq!(v["bytes_received"], 12);
    assert_eq!(v["bytes_sent"], 34);
    assert_eq!(v["upstream_host"], "10.44.1.27:9000");
    assert_eq!(v["requested_server_name"], "tcp.example.com");
    assert_eq!(v["route_name"], serde_json::Value::Null);
}

#[test]
fn response_code_details_name_envoys_reasons() {
    for (code, details) in [
        (None, "via_upstream"),
        (Some("no-route"), "route_not_found"),
        (Some("rate-limited"), "local_rate_limited"),
        (
            Some("rbac-denied"),
            "rbac_access_denied_matched_policy[none]",
        ),
        (Some("upstream-timeout"), "response_timeout"),
    ] {
        assert_eq!(response_code_details(code), details);
    }
}

#[test]
fn formats_parse_as_the_flag_says() {
    assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
    assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
    assert!(
        "yaml"
            .parse::<LogFormat>()
            .unwrap_err()
            .contains("text or json")
    );
}

/// A writer whose first write waits until released, and which says when it is waiting.
struct Gate {
    waiting: mpsc::SyncSender<()>,
    release: Option<mpsc::Receiver<()>>,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(release) = self.release.take() {
            let _ = self.waiting.send(());
            let _ = release.recv();
        }
        self.out.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_queue_drops_and_counts_lines_instead_of_waiting() {
    let (waiting_tx, waiting) = mpsc::sync_channel(1);
    let (release, release_rx) = mpsc::sync_channel(1);
    let out = Arc::new(Mutex::new(Vec::new()));
    let gate = Gate {
        waiting: waiting_tx,
        release: Some(release_rx),
        out: out.clone(),
    };
    // The buffer sends a line straight to the gate only on flush: the first flush blocks.
    let writer = Writer::with_capacity(Box::new(gate), 1);
    writer.send("one\n".into());
    waiting
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer reached the gate");
    writer.send("two\n".into()); // queued: capacity 1
    writer.send("three\n".into()); // full: dropped
    assert_eq!(writer.dropped(), 1);
    release.send(()).unwrap();
    writer.flush();
    assert_eq!(
        String::from_utf8(out.lock().unwrap().clone()).unwrap(),
        "one\ntwo\n"
    );
}

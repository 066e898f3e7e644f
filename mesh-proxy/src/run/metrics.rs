//! `/metrics`: the Prometheus recorder behind the stacks' Istio standard metrics.
//!
//! [`install`] makes it the process's `metrics` recorder before any listener is built: the
//! stacks register each label set with the recorder in place when they first see it. The three
//! histograms get Istio's buckets ([`HISTOGRAM_BUCKETS`]), so they render as
//! `_bucket`/`_sum`/`_count` series, as Envoy's do, instead of the exporter's default
//! summaries. Counters keep their names (`istio_requests_total`): no suffix is added.

use std::{sync::OnceLock, time::Duration};

use mesh_tower::telemetry::{HISTOGRAM_BUCKETS, HISTOGRAMS};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// How often the recorder drains its histogram samples when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// A Prometheus recorder with Istio's buckets for the three histograms.
pub(crate) fn recorder() -> PrometheusRecorder {
    HISTOGRAMS
        .iter()
        .try_fold(PrometheusBuilder::new(), |builder, name| {
            builder.set_buckets_for_metric(Matcher::Full((*name).to_owned()), &HISTOGRAM_BUCKETS)
        })
        .expect("Istio's bucket list is not empty")
        .build_recorder()
}

/// Installs the recorder as the global one, once, with a thread that does its upkeep. A
/// process that already has a global recorder keeps it, and `/metrics` stays empty.
pub(crate) fn install() {
    let recorder = recorder();
    let handle = recorder.handle();
    if let Err(e) = metrics::set_global_recorder(recorder) {
        say!("mesh run: metrics: {e}; /metrics will be empty");
        return;
    }
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        say!("mesh run: metrics: cannot start the upkeep thread: {e}");
    }
    let _ = HANDLE.set(handle);
}

/// The Prometheus text exposition of everything recorded so far.
pub(crate) fn render() -> String {
    HANDLE
        .get()
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Empty};
    use mesh_tower::{
        MeshStack,
        body::{self, BoxError, MeshBody},
    };
    use tower::ServiceExt;

    use super::*;

    #[test]
    fn istios_metrics_render_as_prometheus_histograms_with_istios_buckets() {
        let recorder = recorder();
        let handle = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mesh = mesh_config::Loader::new()
                .check_str("empty.yaml", "")
                .into_mesh()
                .unwrap();
            let app = tower::service_fn(|_req: Request<MeshBody>| async {
                Ok::<_, BoxError>(Response::new(body::full("ok")))
            });
            let server = MeshStack::inbound(&mesh, app)
                .namespace("bookinfo")
                .workload_labels([("app", "ratings"), ("version", "v1")])
                .build::<Empty<Bytes>>();
            let res = server
                .oneshot(Request::get("/").body(Empty::new()).unwrap())
                .await
                .unwrap();
            res.into_body().collect().await.unwrap();
        });

        let text = handle.render();
        let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix));
        let total = line("istio_requests_total{").expect(&text);
        for label in [
            "reporter=\"destination\"",
            "destination_app=\"ratings\"",
            "destination_workload_namespace=\"bookinfo\"",
            "response_code=\"200\"",
            "response_flags=\"-\"",
            "connection_security_policy=\"none\"",
        ] {
            assert!(total.contains(label), "{label} in {total}");
        }
        assert!(total.ends_with(" 1"), "{total}");
        for name in HISTOGRAMS {
            for le in HISTOGRAM_BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_owned()])
            {
                let bucket = format!("le=\"{le}\"");
                assert!(
                    text.lines()
                        .any(|l| l.starts_with(&format!("{name}_bucket{{")) && l.contains(&bucket)),
                    "{name} has a {bucket} bucket:\n{text}"
                );
            }
            assert!(line(&format!("{name}_sum{{")).is_some(), "{name}_sum");
            assert!(line(&format!("{name}_count{{")).is_some(), "{name}_count");
        }
        assert!(
            !text.contains("quantile="),
            "histograms, not summaries:\n{text}"
        );
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram"));
    }
}

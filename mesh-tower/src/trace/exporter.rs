//! Where finished spans go: an opentelemetry tracer provider behind a cheap, cloneable
//! [`Tracing`] handle, exporting over OTLP/HTTP (protobuf) or through any
//! [`SpanExporter`](opentelemetry_sdk::trace::SpanExporter).

use std::{fmt, sync::Arc, time::Duration};

use mesh_core::Percent;
use opentelemetry::{InstrumentationScope, KeyValue, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    runtime::Tokio,
    trace::{
        BatchConfigBuilder, Sampler, SdkTracer, SdkTracerProvider, SpanExporter,
        span_processor_with_async_runtime::BatchSpanProcessor,
    },
};

/// Istio's default sampling, in percent: meshConfig `defaultConfig.tracing.sampling` is 1%.
pub const DEFAULT_SAMPLING_PERCENT: f64 = 1.0;

/// How often the batch processor sends what it holds (and how long a span may wait).
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Finished spans held for export at most; past that new ones are dropped (and counted by
/// the SDK), never queued without bound.
const MAX_QUEUE: usize = 2048;
/// One OTLP request's deadline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failure to set up tracing.
#[derive(Debug, thiserror::Error)]
pub enum TracingError {
    #[error(
        "tracing: cannot build the OTLP/HTTP exporter for `{endpoint}`: {source}; give an \
         http:// URL such as http://127.0.0.1:4318/v1/traces"
    )]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error(
        "tracing: the OTLP endpoint `{0}` is not an http:// URL (https is not supported: send \
         to a local collector); for example http://127.0.0.1:4318/v1/traces"
    )]
    Endpoint(String),
}

/// The tracer the [`TraceLayer`](super::TraceLayer)s share, with the sampling percentage
/// they apply. Clones share the provider; [`flush`](Self::flush) before exiting so the last
/// spans are sent.
#[derive(Clone)]
pub struct Tracing {
    inner: Arc<Inner>,
}

struct Inner {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    sampling: Percent,
    mesh_id: String,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The SDK shuts the provider down when its last handle drops, blocking until the
        // batch task answers; on a runtime thread that task may never run (a current-thread
        // runtime, or one worker), so the last handle goes to a thread of its own.
        let provider = self.provider.clone();
        let spawned = std::thread::Builder::new()
            .name("tracing-shutdown".into())
            .spawn(move || {
                let _ = provider.shutdown();
            });
        if let Err(e) = spawned {
            tracing::warn!("tracing: cannot shut the exporter down on a thread of its own: {e}");
        }
    }
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("sampling", &self.inner.sampling)
            .field("mesh_id", &self.inner.mesh_id)
            .finish_non_exhaustive()
    }
}

impl Tracing {
    /// Spans exported over OTLP/HTTP with protobuf bodies to `endpoint` (the full URL, e.g.
    /// `http://127.0.0.1:4318/v1/traces`), in batches every second from a tokio task: call
    /// it inside a tokio runtime, which must outlive the handle.
    pub fn otlp(endpoint: &str) -> Result<TracingBuilder, TracingError> {
        if !endpoint.starts_with("http://") {
            return Err(TracingError::Endpoint(endpoint.to_owned()));
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|source| TracingError::Exporter {
                endpoint: endpoint.to_owned(),
                source,
            })?;
        Ok(Self::exporter(exporter))
    }

    /// Spans sent to `exporter` in batches from a tokio task (opentelemetry's async-runtime
    /// batch processor: the default one runs on a thread of its own, where an async HTTP
    /// client has no runtime).
    pub fn exporter(exporter: impl SpanExporter + 'static) -> TracingBuilder {
        let config = BatchConfigBuilder::default()
            .with_scheduled_delay(EXPORT_INTERVAL)
            .with_max_queue_size(MAX_QUEUE)
            .build();
        let processor = BatchSpanProcessor::builder(exporter, Tokio)
            .with_batch_config(config)
            .build();
        TracingBuilder {
            provider: SdkTracerProvider::builder().with_span_processor(processor),
            sampling: Percent::new(DEFAULT_SAMPLING_PERCENT).expect("1 is a percentage"),
            service_name: None,
            mesh_id: "cluster.local".into(),
        }
    }

    /// A provider built by the caller (any processor and exporter). The layers make the
    /// sampling decision (see [`TracingBuilder::sampling`]) and start spans only for sampled
    /// requests, so the provider's own sampler should keep everything (`AlwaysOn`, the
    /// default).
    pub fn from_provider(provider: SdkTracerProvider, sampling: Percent) -> Self {
        Self::new(provider, sampling, "cluster.local".into())
    }

    fn new(provider: SdkTracerProvider, sampling: Percent, mesh_id: String) -> Self {
        let scope = InstrumentationScope::builder("mesh")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        let tracer = provider.tracer_with_scope(scope);
        Tracing {
            inner: Arc::new(Inner {
                provider,
                tracer,
                sampling,
                mesh_id,
            }),
        }
    }

    /// The share of requests without an upstream decision that are traced.
    pub fn sampling(&self) -> Percent {
        self.inner.sampling
    }

    pub(crate) fn tracer(&self) -> &SdkTracer {
        &self.inner.tracer
    }

    pub(crate) fn mesh_id(&self) -> &str {
        &self.inner.mesh_id
    }

    /// Sends every finished span now, waiting up to `timeout`. Runs the SDK's blocking flush
    /// on a blocking thread, so it is safe on any runtime thread.
    pub async fn flush(&self, timeout: Duration) {
        let provider = self.inner.provider.clone();
        let flush = tokio::task::spawn_blocking(move || provider.force_flush());
        match tokio::time::timeout(timeout, flush).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("tracing: flushing spans failed: {e}"),
            Ok(Err(e)) => tracing::warn!("tracing: flushing spans failed: {e}"),
            Err(_) => tracing::warn!("tracing: spans not flushed within {timeout:?}"),
        }
    }
}

/// Settings of a [`Tracing`] before it starts.
#[derive(Debug)]
pub struct TracingBuilder {
    provider: opentelemetry_sdk::trace::TracerProviderBuilder,
    sampling: Percent,
    service_name: Option<String>,
    mesh_id: String,
}

impl TracingBuilder {
    /// The share of requests traced when the caller sent no decision: Istio's
    /// [`tracing.sampling`](https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/#Tracing)
    /// (meshConfig default 1%). A decision in `traceparent` or `x-b3-sampled`/`b3` wins.
    pub fn sampling(mut self, sampling: Percent) -> Self {
        self.sampling = sampling;
        self
    }

    /// The `service.name` resource attribute: Istio's default is the canonical service and
    /// namespace (`productpage.default`).
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// `istio.mesh_id` on every span (Istio's default is the trust domain, `cluster.local`).
    pub fn mesh_id(mut self, mesh_id: impl Into<String>) -> Self {
        self.mesh_id = mesh_id.into();
        self
    }

    /// Starts the provider (its batch task joins the current tokio runtime).
    pub fn build(self) -> Tracing {
        let name = self.service_name.unwrap_or_else(|| "mesh".into());
        let resource = Resource::builder()
            .with_service_name(name)
            .with_attribute(KeyValue::new("istio.mesh_id", self.mesh_id.clone()))
            .build();
        let provider = self
            .provider
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        Tracing::new(provider, self.sampling, self.mesh_id)
    }
}

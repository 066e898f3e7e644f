//! `mesh run`'s traces and access logs: the flags, and what they give the stacks.
//!
//! - `--tracing-endpoint URL`: spans over OTLP/HTTP (protobuf) to a collector, e.g.
//!   `http://127.0.0.1:4318/v1/traces`; `--tracing-sampling PERCENT` (default 1, Istio's
//!   meshConfig default) for requests that arrive without a sampling decision.
//! - `--access-log PATH|-` (`-` is standard output; off by default) and
//!   `--access-log-format text|json` (Envoy's default text format as Istio sets it, or
//!   Istio's JSON keys).

use std::{path::PathBuf, time::Duration};

use mesh_core::Percent;
use mesh_tower::{
    InboundStack, MeshStack,
    access_log::{AccessLog, LogFormat},
    endpoint::UpstreamConnector,
    trace::{DEFAULT_SAMPLING_PERCENT, Tracing},
};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ObservabilityArgs {
    /// Export a span per request over OTLP/HTTP (protobuf) to this URL, e.g.
    /// http://127.0.0.1:4318/v1/traces (an OpenTelemetry collector, Jaeger, Tempo).
    #[arg(long, value_name = "URL")]
    tracing_endpoint: Option<String>,
    /// The percentage of requests traced when the caller sent no sampling decision
    /// (`traceparent` flags or `x-b3-sampled` decide when present). Istio's default: 1.
    #[arg(long, value_name = "PERCENT", default_value_t = percent(DEFAULT_SAMPLING_PERCENT),
          value_parser = parse_percent, requires = "tracing_endpoint")]
    tracing_sampling: Percent,
    /// Write an access log line per request to this file (appended), or `-` for stdout.
    #[arg(long, value_name = "PATH|-")]
    access_log: Option<PathBuf>,
    /// The access log's format: `text` (Envoy's default) or `json` (Istio's keys).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = parse_format,
          requires = "access_log")]
    access_log_format: LogFormat,
}

fn percent(p: f64) -> Percent {
    Percent::new(p).expect("a percentage")
}

fn parse_percent(s: &str) -> Result<Percent, String> {
    s.trim()
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .and_then(Percent::new)
        .ok_or_else(|| format!("`{s}` is not a percentage between 0 and 100"))
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// What the stacks get: a tracer and an access log, each when asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observability {
    pub(crate) tracing: Option<Tracing>,
    pub(crate) access_log: Option<AccessLog>,
}

impl Observability {
    /// Starts the exporter and opens the log, inside the runtime. `service_name` is the spans'
    /// `service.name` (Istio's `app.namespace`).
    pub(crate) fn start(args: &ObservabilityArgs, service_name: &str) -> Result<Self, String> {
        let tracing = match &args.tracing_endpoint {
            Some(url) => Some(
                Tracing::otlp(url)
                    .map_err(|e| e.to_string())?
                    .sampling(args.tracing_sampling)
                    .service_name(service_name)
                    .build(),
            ),
            None => None,
        };
        let access_log = match &args.access_log {
            Some(path) if path.as_os_str() == "-" => {
                Some(AccessLog::stdout(args.access_log_format))
            }
            Some(path) => {
                Some(AccessLog::file(path, args.access_log_format).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        Ok(Observability {
            tracing,
            access_log,
        })
    }

    pub(crate) fn outbound<C: UpstreamConnector>(&self, mut stack: MeshStack<C>) -> MeshStack<C> {
        if let Some(t) = &self.tracing {
            stack = stack.tracing(t.clone());
        }
        if let Some(log) = &self.access_log {
            stack = stack.access_log(log.clone());
        }
        stack
    }

    pub(crate) fn inbound<A>(&self, mut stack: InboundStack<A>) -> InboundStack<A> {
        if let Some(t) = &self.tracing {
            stack = stack.tracing(t.clone());
        }
        if let Some(log) = &self.access_log {
            stack = stack.access_log(log.clone());
        }
        stack
    }

    /// Sends the last spans and writes the last lines (at shutdown).
    pub(crate) async fn flush(&self) {
        if let Some(t) = &self.tracing {
            t.flush(Duration::from_secs(5)).await;
        }
        if let Some(log) = self.access_log.clone() {
            let _ = tokio::task::spawn_blocking(move || log.flush()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_a_percentage() {
        assert_eq!(parse_percent("1").unwrap().value(), 1.0);
        assert_eq!(parse_percent("0.5%").unwrap().value(), 0.5);
        assert_eq!(parse_percent("100").unwrap().value(), 100.0);
        for bad in ["101", "-1", "x", ""] {
            assert!(
                parse_percent(bad)
                    .unwrap_err()
                    .contains("between 0 and 100"),
                "{bad}"
            );
        }
    }
}

//! Trace context on the wire, as Istio's Envoy reads and writes it: the W3C
//! [Trace Context](https://www.w3.org/TR/trace-context/) headers (`traceparent`, `tracestate`)
//! and Zipkin's [B3](https://github.com/openzipkin/b3-propagation), in its single-header form
//! (`b3`) and its multi-header form (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`,
//! `x-b3-sampled`, `x-b3-flags`).
//!
//! Either is read ([`extract`]: `traceparent` first, then `b3`, then the `x-b3-*` headers);
//! both W3C and B3 multi are written ([`inject`]), and `b3` too when the request came with
//! it, so an application that propagates only one of them keeps the trace together.
//!
//! No maintained crate propagates B3 for opentelemetry 0.33, hence this one.
//! [`MeshPropagator`] offers the same as an opentelemetry [`TextMapPropagator`], for an
//! application that wants to read and write the headers the mesh does.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator, text_map_propagator::FieldIter},
    trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState},
};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// A trace context read from a request's headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    /// The caller's span (remote), `None` when the headers carry only a sampling decision
    /// (`b3: 0`, or `x-b3-sampled` alone).
    pub parent: Option<SpanContext>,
    /// The caller's sampling decision: always there with W3C; B3 may leave it to us
    /// (B3's "defer"), then our sampling percentage decides.
    pub sampled: Option<bool>,
    /// Which headers it came from.
    pub format: Format,
}

/// Where an [`Extracted`] context came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    TraceContext,
    B3Single,
    B3Multi,
}

/// The trace context of `headers`: `traceparent` if valid, else `b3`, else `x-b3-*`.
/// Invalid headers are ignored, as if absent (a new trace starts).
pub fn extract(headers: &HeaderMap) -> Option<Extracted> {
    let get = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(sc) = get(&TRACEPARENT).and_then(|tp| parse_traceparent(tp, get(&TRACESTATE))) {
        return Some(Extracted {
            sampled: Some(sc.is_sampled()),
            parent: Some(sc),
            format: Format::TraceContext,
        });
    }
    if let Some(ex) = get(&B3).and_then(parse_b3_single) {
        return Some(ex);
    }
    parse_b3_multi(
        get(&X_B3_TRACE_ID),
        get(&X_B3_SPAN_ID),
        get(&X_B3_SAMPLED),
        get(&X_B3_FLAGS),
    )
}

/// Writes `span`'s context on `headers` for the next hop: `traceparent` (and `tracestate`
/// when the span has one), the `x-b3-*` headers with `parent` as `x-b3-parentspanid`, and
/// `b3` if the request already had one (its ids are stale otherwise). `x-b3-flags` is left
/// as the caller sent it (a debug trace stays one).
pub fn inject(headers: &mut HeaderMap, span: &SpanContext, parent: Option<SpanId>) {
    let (trace, id) = (span.trace_id(), span.span_id());
    let sampled = span.is_sampled();
    headers.insert(TRACEPARENT, value(traceparent(span)));
    if span.trace_state() != &TraceState::NONE
        && let Ok(v) = HeaderValue::from_str(&span.trace_state().header())
    {
        headers.insert(TRACESTATE, v);
    }
    let trace_hex = b3_trace_id(trace);
    headers.insert(X_B3_TRACE_ID, value(trace_hex.clone()));
    headers.insert(X_B3_SPAN_ID, value(format!("{id:016x}")));
    match parent {
        Some(p) => headers.insert(X_B3_PARENT_SPAN_ID, value(format!("{p:016x}"))),
        None => headers.remove(X_B3_PARENT_SPAN_ID),
    };
    headers.insert(
        X_B3_SAMPLED,
        HeaderValue::from_static(if sampled { "1" } else { "0" }),
    );
    if headers.contains_key(B3) {
        let mut single = format!("{trace_hex}-{id:016x}-{}", if sampled { 1 } else { 0 });
        if let Some(p) = parent {
            single.push_str(&format!("-{p:016x}"));
        }
        headers.insert(B3, value(single));
    }
}

/// `00-{trace id}-{span id}-{flags}`: version 00, only the sampled flag.
pub fn traceparent(span: &SpanContext) -> String {
    let flags = span.trace_flags().to_u8() & TraceFlags::SAMPLED.to_u8();
    format!(
        "00-{:032x}-{:016x}-{flags:02x}",
        span.trace_id(),
        span.span_id()
    )
}

/// B3's trace id: 16 hex digits when the high half is zero (a 64-bit id, as older Zipkin
/// clients send, written back as they sent it), else 32.
fn b3_trace_id(trace: TraceId) -> String {
    let n = u128::from_be_bytes(trace.to_bytes());
    if n >> 64 == 0 {
        format!("{:016x}", n as u64)
    } else {
        format!("{n:032x}")
    }
}

fn value(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).expect("hex digits and dashes are a valid header value")
}

// === parsing ===

fn is_hex(s: &str, lower_only: bool) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_digit()
                || (b'a'..=b'f').contains(&b)
                || (!lower_only && (b'A'..=b'F').contains(&b))
        })
}

fn trace_id(s: &str, lower_only: bool) -> Option<TraceId> {
    if !(s.len() == 32 || (!lower_only && s.len() == 16)) || !is_hex(s, lower_only) {
        return None;
    }
    let n = u128::from_str_radix(s, 16).ok()?;
    (n != 0).then(|| TraceId::from(n))
}

fn span_id(s: &str, lower_only: bool) -> Option<SpanId> {
    if s.len() != 16 || !is_hex(s, lower_only) {
        return None;
    }
    let n = u64::from_str_radix(s, 16).ok()?;
    (n != 0).then(|| SpanId::from(n))
}

/// W3C `traceparent` (version 00, or a later version read as 00 as the spec asks), with
/// `tracestate` kept when it parses.
pub(crate) fn parse_traceparent(tp: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let tp = tp.trim();
    let mut parts = tp.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version.len() != 2 || !is_hex(version, true) || version == "ff" {
        return None;
    }
    // Version 00 has exactly four fields; a later one may add more.
    if version == "00" && rest.is_some() {
        return None;
    }
    if flags.len() != 2 || !is_hex(flags, true) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = tracestate
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    Some(SpanContext::new(
        trace_id(trace, true)?,
        span_id(span, true)?,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    ))
}

/// A B3 sampling state: `1`/`0` (and the legacy `true`/`false`), `d` for debug (sampled).
fn b3_sampled(s: &str) -> Option<bool> {
    match s {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// `b3: {trace id}-{span id}[-{sampling}[-{parent span id}]]`, or `b3: {sampling}` alone.
pub(crate) fn parse_b3_single(b3: &str) -> Option<Extracted> {
    let b3 = b3.trim();
    let parts: Vec<&str> = b3.split('-').collect();
    if parts.len() == 1 {
        return Some(Extracted {
            parent: None,
            sampled: Some(b3_sampled(parts[0])?),
            format: Format::B3Single,
        });
    }
    if parts.len() > 4 {
        return None;
    }
    let trace = trace_id(parts[0], false)?;
    let span = span_id(parts[1], false)?;
    let sampled = match parts.get(2) {
        Some(s) => Some(b3_sampled(s)?),
        None => None,
    };
    if let Some(p) = parts.get(3) {
        span_id(p, false)?;
    }
    Some(Extracted {
        parent: Some(remote(trace, span, sampled)),
        sampled,
        format: Format::B3Single,
    })
}

/// The `x-b3-*` headers. `x-b3-flags: 1` (debug) means sampled.
pub(crate) fn parse_b3_multi(
    trace: Option<&str>,
    span: Option<&str>,
    sampled: Option<&str>,
    flags: Option<&str>,
) -> Option<Extracted> {
    let sampled = if flags.map(str::trim) == Some("1") {
        Some(true)
    } else {
        sampled.and_then(|s| b3_sampled(s.trim()))
    };
    let parent = match (trace, span) {
        (Some(t), Some(s)) => Some(remote(
            trace_id(t.trim(), false)?,
            span_id(s.trim(), false)?,
            sampled,
        )),
        _ => None,
    };
    if parent.is_none() && sampled.is_none() {
        return None;
    }
    Some(Extracted {
        parent,
        sampled,
        format: Format::B3Multi,
    })
}

fn remote(trace: TraceId, span: SpanId, sampled: Option<bool>) -> SpanContext {
    let flags = if sampled == Some(true) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::NOT_SAMPLED
    };
    SpanContext::new(trace, span, flags, true, TraceState::NONE)
}

// === impl MeshPropagator ===

/// The mesh's propagation as an opentelemetry [`TextMapPropagator`]: extracts W3C or B3
/// (single or multi), injects W3C and B3 multi. A deferred B3 decision is extracted as not
/// sampled (opentelemetry has no "deferred"); the mesh's layers decide those themselves.
///
/// ```
/// use std::collections::HashMap;
/// use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
/// use mesh_tower::trace::MeshPropagator;
///
/// let headers = HashMap::from([
///     ("x-b3-traceid".to_owned(), "463ac35c9f6413ad".to_owned()),
///     ("x-b3-spanid".to_owned(), "a2fb4a1d1a96d312".to_owned()),
///     ("x-b3-sampled".to_owned(), "1".to_owned()),
/// ]);
/// let cx = MeshPropagator::new().extract(&headers);
/// assert_eq!(cx.span().span_context().trace_id().to_string(), "0000000000000000463ac35c9f6413ad");
///
/// let mut out = HashMap::new();
/// MeshPropagator::new().inject_context(&cx, &mut out);
/// assert_eq!(out["x-b3-traceid"], "463ac35c9f6413ad");
/// assert_eq!(out["traceparent"], "00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-01");
/// ```
#[derive(Debug, Clone)]
pub struct MeshPropagator {
    fields: Vec<String>,
}

impl MeshPropagator {
    pub fn new() -> Self {
        let fields = [
            TRACEPARENT,
            TRACESTATE,
            B3,
            X_B3_TRACE_ID,
            X_B3_SPAN_ID,
            X_B3_PARENT_SPAN_ID,
            X_B3_SAMPLED,
            X_B3_FLAGS,
        ];
        MeshPropagator {
            fields: fields.iter().map(|f| f.as_str().to_owned()).collect(),
        }
    }
}

impl Default for MeshPropagator {
    fn default() -> Self {
        Self::new()
    }
}

impl TextMapPropagator for MeshPropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return;
        }
        // Through a HeaderMap, so that both paths write the same thing.
        let mut headers = HeaderMap::new();
        inject(&mut headers, sc, None);
        for (name, value) in &headers {
            if let Ok(v) = value.to_str() {
                injector.set(name.as_str(), v.to_owned());
            }
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let get = |name: &HeaderName| extractor.get(name.as_str());
        let found = get(&TRACEPARENT)
            .and_then(|tp| parse_traceparent(tp, get(&TRACESTATE)))
            .or_else(|| get(&B3).and_then(parse_b3_single)?.parent)
            .or_else(|| {
                parse_b3_multi(
                    get(&X_B3_TRACE_ID),
                    get(&X_B3_SPAN_ID),
                    get(&X_B3_SAMPLED),
                    get(&X_B3_FLAGS),
                )?
                .parent
            });
        match found {
            Some(sc) => cx.with_remote_span_context(sc),
            None => cx.clone(),
        }
    }

    fn fields(&self) -> FieldIter<'_> {
        FieldIter::new(&self.fields)
    }
}

//! Recognises Envoy's HTTP local rate limit filter in an EnvoyFilter patch and extracts what mesh
//! applies: the token bucket, the enabled/enforced fractions, the headers added to responses,
//! the stat prefix and the descriptors.
//!
//! Two shapes carry the filter's configuration (`typed_config`):
//! - a `udpa.type.v1.TypedStruct` (or `xds.type.v3.TypedStruct`) whose `type_url` names
//!   `LocalRateLimit` and whose `value` holds the fields, or
//! - the fields inline, next to `"@type": ...LocalRateLimit`.
//!
//! And two places hold it: an `HTTP_FILTER` patch whose value is the filter
//! (`name: envoy.filters.http.local_ratelimit`), and an `HTTP_ROUTE` or `VIRTUAL_HOST` patch whose
//! value has `typed_per_filter_config.envoy.filters.http.local_ratelimit` (a per-route override;
//! such a patch may also carry `route.rate_limits`, the actions that produce descriptors).
//!
//! Envoy's JSON accepts snake_case and lowerCamelCase field names; both are read.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{ApplyTo, EnvoyConfigObjectPatch};

/// The filter's name in Envoy.
pub const LOCAL_RATE_LIMIT_FILTER: &str = "envoy.filters.http.local_ratelimit";
const LOCAL_RATE_LIMIT_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const TYPED_STRUCT_TYPES: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

/// The fields of Envoy's `LocalRateLimit` message (v3), to tell unknown fields from fields mesh
/// reads or does not apply.
const KNOWN_FIELDS: &[&str] = &[
    "stat_prefix",
    "status",
    "token_bucket",
    "filter_enabled",
    "filter_enforced",
    "request_headers_to_add_when_not_enforced",
    "response_headers_to_add",
    "descriptors",
    "stage",
    "local_rate_limit_per_downstream_connection",
    "local_cluster_rate_limit",
    "enable_x_ratelimit_headers",
    "vh_rate_limits",
    "always_consume_default_token_bucket",
    "rate_limited_as_resource_exhausted",
    "rate_limits",
    "max_dynamic_descriptors",
];

/// A local rate limit found in a patch, and where it applies.
#[derive(Debug, Clone)]
pub struct LocalRateLimitPatch {
    pub placement: RateLimitPlacement,
    pub config: LocalRateLimit,
    /// `route.rate_limits` of a per-route patch: the actions that build the descriptors the
    /// `descriptors` buckets match, as Envoy's JSON.
    pub route_rate_limits: Vec<Value>,
}

/// Where a local rate limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitPlacement {
    /// The filter itself, inserted in the HTTP filter chain (`applyTo: HTTP_FILTER`).
    HttpFilter,
    /// A per-route (or per-virtual-host) override (`typed_per_filter_config`).
    PerRoute,
}

/// Envoy's `LocalRateLimit`, the parts mesh applies.
///
/// <https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto>
#[derive(Debug, Clone, Default)]
pub struct LocalRateLimit {
    pub stat_prefix: String,
    /// The default bucket. Without one the filter limits nothing by itself (descriptors or a
    /// per-route config may still).
    pub token_bucket: Option<TokenBucket>,
    /// Share of requests the filter checks; Envoy's default when unset is 0%.
    pub filter_enabled: Option<RuntimeFractionalPercent>,
    /// Share of checked requests that are rejected when over the limit; Envoy's default when
    /// unset is 0%.
    pub filter_enforced: Option<RuntimeFractionalPercent>,
    pub response_headers_to_add: Vec<HeaderValueOption>,
    pub descriptors: Vec<LocalRateLimitDescriptor>,
    /// `always_consume_default_token_bucket` (Envoy's default when unset: true).
    pub always_consume_default_token_bucket: Option<bool>,
    /// Fields present in the configuration that are not extracted above (known ones mesh does
    /// not apply, like `enable_x_ratelimit_headers`, and unknown ones).
    pub other_fields: Vec<String>,
}

impl LocalRateLimit {
    /// The entries of `other_fields` that are not fields of Envoy's `LocalRateLimit` at all.
    pub fn unknown_fields(&self) -> impl Iterator<Item = &str> {
        self.other_fields
            .iter()
            .map(String::as_str)
            .filter(|f| !KNOWN_FIELDS.contains(f))
    }
}

/// <https://www.envoyproxy.io/docs/envoy/latest/api-v3/type/v3/token_bucket.proto>
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub max_tokens: u32,
    /// Envoy's default is 1.
    pub tokens_per_fill: u32,
    pub fill_interval: Duration,
}

/// <https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/core/v3/base.proto#config-core-v3-runtimefractionalpercent>
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeFractionalPercent {
    pub runtime_key: String,
    pub numerator: u32,
    pub denominator: FractionDenominator,
}

impl RuntimeFractionalPercent {
    /// The share as a fraction in 0.0..=1.0 (values above 100% are capped, as Envoy does).
    pub fn fraction(&self) -> f64 {
        let d = match self.denominator {
            FractionDenominator::Hundred => 100.0,
            FractionDenominator::TenThousand => 10_000.0,
            FractionDenominator::Million => 1_000_000.0,
        };
        (f64::from(self.numerator) / d).min(1.0)
    }
}

/// <https://www.envoyproxy.io/docs/envoy/latest/api-v3/type/v3/percent.proto#envoy-v3-api-enum-type-v3-fractionalpercent-denominatortype>
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FractionDenominator {
    #[default]
    Hundred,
    TenThousand,
    Million,
}

/// A header added to responses (`response_headers_to_add`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderValueOption {
    pub key: String,
    pub value: String,
    /// The deprecated `append` flag, when set.
    pub append: Option<bool>,
    /// `APPEND_IF_EXISTS_OR_ADD` (Envoy's default), `ADD_IF_ABSENT`, `OVERWRITE_IF_EXISTS_OR_ADD`
    /// or `OVERWRITE_IF_EXISTS`, when set.
    pub append_action: Option<String>,
}

/// A bucket for requests whose descriptor matches `entries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRateLimitDescriptor {
    pub entries: Vec<DescriptorEntry>,
    pub token_bucket: TokenBucket,
}

/// One `key`/`value` of a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorEntry {
    pub key: String,
    pub value: String,
}

// === impl EnvoyConfigObjectPatch ===

impl EnvoyConfigObjectPatch {
    /// The local rate limit this patch inserts or sets per route, if it is one: `None` for any
    /// other patch, `Some(Err(why))` when it is one but malformed.
    pub fn local_rate_limit(&self) -> Option<Result<LocalRateLimitPatch, String>> {
        let value = self.patch.as_ref()?.value.as_ref()?.as_object()?;
        if self.apply_to == ApplyTo::HttpFilter {
            let named = value.get("name").and_then(Value::as_str) == Some(LOCAL_RATE_LIMIT_FILTER);
            let typed = field(value, "typed_config");
            let typed_is_rl = typed
                .and_then(Value::as_object)
                .is_some_and(is_local_rate_limit_config);
            if !named && !typed_is_rl {
                return None;
            }
            let config = match typed {
                None => Err(format!(
                    "the {LOCAL_RATE_LIMIT_FILTER} filter needs a typed_config of type \
                     {LOCAL_RATE_LIMIT_TYPE}"
                )),
                Some(t) => parse_typed_config(t),
            };
            return Some(config.map(|config| LocalRateLimitPatch {
                placement: RateLimitPlacement::HttpFilter,
                config,
                route_rate_limits: Vec::new(),
            }));
        }
        let per_filter = field(value, "typed_per_filter_config")?.as_object()?;
        let typed = per_filter.get(LOCAL_RATE_LIMIT_FILTER)?;
        let route_rate_limits = field(value, "route")
            .and_then(Value::as_object)
            .and_then(|r| field(r, "rate_limits"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Some(parse_typed_config(typed).map(|config| LocalRateLimitPatch {
            placement: RateLimitPlacement::PerRoute,
            config,
            route_rate_limits,
        }))
    }
}

/// Reads a field by its snake_case name or its lowerCamelCase JSON name.
fn field<'a>(map: &'a Map<String, Value>, snake: &str) -> Option<&'a Value> {
    map.get(snake).or_else(|| map.get(&camel(snake)))
}

fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn type_of(map: &Map<String, Value>) -> Option<&str> {
    map.get("@type").and_then(Value::as_str)
}

fn is_local_rate_limit_config(typed: &Map<String, Value>) -> bool {
    match type_of(typed) {
        Some(t) if t == LOCAL_RATE_LIMIT_TYPE => true,
        Some(t) if TYPED_STRUCT_TYPES.contains(&t) => {
            field(typed, "type_url").and_then(Value::as_str) == Some(LOCAL_RATE_LIMIT_TYPE)
        }
        _ => false,
    }
}

/// Unwraps a `typed_config` (TypedStruct or direct) and parses the `LocalRateLimit` in it.
fn parse_typed_config(typed: &Value) -> Result<LocalRateLimit, String> {
    let typed = typed
        .as_object()
        .ok_or("the local rate limit typed_config must be a map")?;
    let fields = match type_of(typed) {
        Some(t) if t == LOCAL_RATE_LIMIT_TYPE => typed,
        Some(t) if TYPED_STRUCT_TYPES.contains(&t) => {
            match field(typed, "type_url").and_then(Value::as_str) {
                Some(LOCAL_RATE_LIMIT_TYPE) => {}
                other => {
                    return Err(format!(
                        "the TypedStruct's type_url is {other:?}; the {LOCAL_RATE_LIMIT_FILTER} \
                         filter needs {LOCAL_RATE_LIMIT_TYPE:?}"
                    ));
                }
            }
            match typed.get("value") {
                None => return Ok(LocalRateLimit::default()),
                Some(v) => v
                    .as_object()
                    .ok_or("the TypedStruct's value must be a map")?,
            }
        }
        other => {
            return Err(format!(
                "the local rate limit typed_config has \"@type\" {other:?}; use \
                 {LOCAL_RATE_LIMIT_TYPE:?} or a udpa.type.v1.TypedStruct"
            ));
        }
    };
    parse_local_rate_limit(fields)
}

fn parse_local_rate_limit(m: &Map<String, Value>) -> Result<LocalRateLimit, String> {
    let mut rl = LocalRateLimit {
        stat_prefix: opt_string(m, "stat_prefix")?.unwrap_or_default(),
        ..LocalRateLimit::default()
    };
    if let Some(tb) = field(m, "token_bucket") {
        rl.token_bucket = Some(token_bucket(tb, "token_bucket")?);
    }
    if let Some(v) = field(m, "filter_enabled") {
        rl.filter_enabled = Some(runtime_percent(v, "filter_enabled")?);
    }
    if let Some(v) = field(m, "filter_enforced") {
        rl.filter_enforced = Some(runtime_percent(v, "filter_enforced")?);
    }
    if let Some(v) = field(m, "response_headers_to_add") {
        let list = v
            .as_array()
            .ok_or("response_headers_to_add must be a list")?;
        for (i, h) in list.iter().enumerate() {
            rl.response_headers_to_add.push(header_value_option(
                h,
                &format!("response_headers_to_add[{i}]"),
            )?);
        }
    }
    if let Some(v) = field(m, "descriptors") {
        let list = v.as_array().ok_or("descriptors must be a list")?;
        for (i, d) in list.iter().enumerate() {
            rl.descriptors
                .push(descriptor(d, &format!("descriptors[{i}]"))?);
        }
    }
    match field(m, "always_consume_default_token_bucket") {
        None => {}
        Some(Value::Bool(b)) => rl.always_consume_default_token_bucket = Some(*b),
        Some(other) => {
            return Err(format!(
                "always_consume_default_token_bucket must be true or false, not {other}"
            ));
        }
    }
    const EXTRACTED: &[&str] = &[
        "always_consume_default_token_bucket",
        "@type",
        "stat_prefix",
        "token_bucket",
        "filter_enabled",
        "filter_enforced",
        "response_headers_to_add",
        "descriptors",
    ];
    rl.other_fields = m
        .keys()
        .map(|k| snake(k))
        .filter(|k| !EXTRACTED.contains(&k.as_str()))
        .collect();
    Ok(rl)
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{what} must be a map"))
}

fn opt_string(m: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{name} must be a string, not {other}")),
    }
}

/// A uint32 as proto JSON writes it: a number or a decimal string.
fn opt_u32(m: &Map<String, Value>, name: &str, what: &str) -> Result<Option<u32>, String> {
    let bad = || format!("{what}.{name} must be a whole number between 0 and 4294967295");
    match field(m, name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn token_bucket(v: &Value, what: &str) -> Result<TokenBucket, String> {
    let m = obj(v, what)?;
    let max_tokens = opt_u32(m, "max_tokens", what)?
        .ok_or_else(|| format!("{what}.max_tokens is required (the bucket's size)"))?;
    if max_tokens == 0 {
        return Err(format!("{what}.max_tokens must be greater than 0"));
    }
    let tokens_per_fill = opt_u32(m, "tokens_per_fill", what)?.unwrap_or(1);
    if tokens_per_fill == 0 {
        return Err(format!("{what}.tokens_per_fill must be greater than 0"));
    }
    let interval = match field(m, "fill_interval") {
        None => {
            return Err(format!(
                "{what}.fill_interval is required (how often tokens are added, e.g. \"60s\")"
            ));
        }
        Some(Value::String(s)) => mesh_core::duration::parse_duration(s)
            .map_err(|e| format!("{what}.fill_interval: {e}"))?,
        Some(other) => {
            return Err(format!(
                "{what}.fill_interval must be a duration string like \"60s\", not {other}"
            ));
        }
    };
    if interval < Duration::from_millis(1) {
        return Err(format!(
            "{what}.fill_interval must be at least 1ms (Envoy rejects shorter intervals)"
        ));
    }
    Ok(TokenBucket {
        max_tokens,
        tokens_per_fill,
        fill_interval: interval,
    })
}

fn runtime_percent(v: &Value, what: &str) -> Result<RuntimeFractionalPercent, String> {
    let m = obj(v, what)?;
    let runtime_key = opt_string(m, "runtime_key")?.unwrap_or_default();
    let Some(dv) = field(m, "default_value") else {
        return Err(format!("{what}.default_value is required"));
    };
    let dv_what = format!("{what}.default_value");
    let d = obj(dv, &dv_what)?;
    let numerator = opt_u32(d, "numerator", &dv_what)?.unwrap_or(0);
    let denominator = match field(d, "denominator") {
        None => FractionDenominator::Hundred,
        Some(Value::String(s)) => match s.as_str() {
            "HUNDRED" => FractionDenominator::Hundred,
            "TEN_THOUSAND" => FractionDenominator::TenThousand,
            "MILLION" => FractionDenominator::Million,
            other => {
                return Err(format!(
                    "{dv_what}.denominator {other:?} is not HUNDRED, TEN_THOUSAND or MILLION"
                ));
            }
        },
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) => FractionDenominator::Hundred,
            Some(1) => FractionDenominator::TenThousand,
            Some(2) => FractionDenominator::Million,
            _ => return Err(format!("{dv_what}.denominator {n} is not 0, 1 or 2")),
        },
        Some(other) => {
            return Err(format!(
                "{dv_what}.denominator must be a string, not {other}"
            ));
        }
    };
    Ok(RuntimeFractionalPercent {
        runtime_key,
        numerator,
        denominator,
    })
}

fn header_value_option(v: &Value, what: &str) -> Result<HeaderValueOption, String> {
    let m = obj(v, what)?;
    let header_what = format!("{what}.header");
    let header = obj(
        field(m, "header").ok_or_else(|| format!("{header_what} is required"))?,
        &header_what,
    )?;
    let key = opt_string(header, "key")?.unwrap_or_default();
    if key.is_empty() {
        return Err(format!("{header_what}.key is required"));
    }
    let append = match field(m, "append") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(format!("{what}.append must be true or false, not {other}")),
    };
    Ok(HeaderValueOption {
        key,
        value: opt_string(header, "value")?.unwrap_or_default(),
        append,
        append_action: opt_string(m, "append_action")?,
    })
}

fn descriptor(v: &Value, what: &str) -> Result<LocalRateLimitDescriptor, String> {
    let m = obj(v, what)?;
    let entries = field(m, "entries")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}.entries is required (a list of key/value pairs)"))?;
    if entries.is_empty() {
        return Err(format!("{what}.entries must not be empty"));
    }
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let ew = format!("{what}.entries[{i}]");
        let e = obj(e, &ew)?;
        out.push(DescriptorEntry {
            key: opt_string(e, "key")?.ok_or_else(|| format!("{ew}.key is required"))?,
            value: opt_string(e, "value")?.unwrap_or_default(),
        });
    }
    let tb = field(m, "token_bucket").ok_or_else(|| format!("{what}.token_bucket is required"))?;
    Ok(LocalRateLimitDescriptor {
        entries: out,
        token_bucket: token_bucket(tb, &format!("{what}.token_bucket"))?,
    })
}

// === route rate_limits actions ===

/// The route's `rate_limits` entries as the actions mesh evaluates
/// (<https://www.envoyproxy.io/docs/envoy/latest/api-v3/config/route/v3/route_components.proto#config-route-v3-ratelimit-action>):
/// `remote_address`, `generic_key`, `request_headers` and `header_value_match`. An entry with
/// another action cannot build its descriptor here: it is left out, and its index and reason
/// come back in the second list for a warning.
pub fn route_rate_limit_actions(
    entries: &[Value],
) -> (
    Vec<mesh_core::rate_limit::RateLimitActions>,
    Vec<(usize, String)>,
) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match rate_limit_entry(entry, &format!("rate_limits[{i}]")) {
            Ok(actions) => out.push(actions),
            Err(e) => skipped.push((i, e)),
        }
    }
    (out, skipped)
}

fn rate_limit_entry(
    v: &Value,
    what: &str,
) -> Result<mesh_core::rate_limit::RateLimitActions, String> {
    let m = obj(v, what)?;
    let list = field(m, "actions")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{what}.actions must be a list"))?;
    list.iter()
        .enumerate()
        .map(|(j, a)| rate_limit_action(a, &format!("{what}.actions[{j}]")))
        .collect()
}

fn rate_limit_action(
    v: &Value,
    what: &str,
) -> Result<mesh_core::rate_limit::RateLimitAction, String> {
    use mesh_core::rate_limit::RateLimitAction as A;
    let m = obj(v, what)?;
    let (kind, body) = match m.iter().next() {
        Some((k, b)) if m.len() == 1 => (snake(k), b),
        _ => return Err(format!("{what} must name exactly one action")),
    };
    let empty = Map::new();
    let body = body.as_object().unwrap_or(&empty);
    let at = format!("{what}.{kind}");
    match kind.as_str() {
        "remote_address" => Ok(A::RemoteAddress),
        "generic_key" => Ok(A::GenericKey {
            key: opt_string(body, "descriptor_key")?.unwrap_or_else(|| "generic_key".into()),
            value: opt_string(body, "descriptor_value")?
                .ok_or_else(|| format!("{at}.descriptor_value is required"))?,
        }),
        "request_headers" => Ok(A::RequestHeaders {
            header: opt_string(body, "header_name")?
                .ok_or_else(|| format!("{at}.header_name is required"))?
                .to_ascii_lowercase(),
            key: opt_string(body, "descriptor_key")?
                .ok_or_else(|| format!("{at}.descriptor_key is required"))?,
        }),
        "header_value_match" => {
            let headers = field(body, "headers")
                .and_then(Value::as_array)
                .ok_or_else(|| format!("{at}.headers must be a list"))?
                .iter()
                .enumerate()
                .map(|(k, h)| header_condition(h, &format!("{at}.headers[{k}]")))
                .collect::<Result<_, _>>()?;
            let expect_match = match field(body, "expect_match") {
                None => true,
                Some(Value::Bool(b)) => *b,
                // Envoy's JSON may wrap it: `expect_match: {value: false}`.
                Some(Value::Object(w)) => w.get("value").and_then(Value::as_bool).unwrap_or(true),
                Some(other) => {
                    return Err(format!("{at}.expect_match must be a boolean, not {other}"));
                }
            };
            Ok(A::HeaderValueMatch {
                key: opt_string(body, "descriptor_key")?.unwrap_or_else(|| "header_match".into()),
                value: opt_string(body, "descriptor_value")?
                    .ok_or_else(|| format!("{at}.descriptor_value is required"))?,
                expect_match,
                headers,
            })
        }
        other => Err(format!(
            "{what}: the `{other}` action is not applied by mesh (it applies remote_address, generic_key, request_headers and header_value_match)"
        )),
    }
}

/// Envoy's route `HeaderMatcher`: `string_match` (or the older `exact_match`, `prefix_match`,
/// `suffix_match`, `contains_match`, `safe_regex_match`), `present_match`, `invert_match`.
fn header_condition(
    v: &Value,
    what: &str,
) -> Result<mesh_core::rate_limit::HeaderCondition, String> {
    let m = obj(v, what)?;
    let name = opt_string(m, "name")?
        .ok_or_else(|| format!("{what}.name is required"))?
        .to_ascii_lowercase();
    let invert = field(m, "invert_match")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let matcher = if let Some(sm) = field(m, "string_match") {
        Some(string_matcher(
            obj(sm, &format!("{what}.string_match"))?,
            &format!("{what}.string_match"),
        )?)
    } else if field(m, "present_match").is_some() {
        None
    } else {
        // The deprecated flat forms.
        let mut flat = Map::new();
        for (old, new) in [
            ("exact_match", "exact"),
            ("prefix_match", "prefix"),
            ("suffix_match", "suffix"),
            ("contains_match", "contains"),
            ("safe_regex_match", "safe_regex"),
        ] {
            if let Some(v) = field(m, old) {
                flat.insert(new.into(), v.clone());
            }
        }
        if flat.is_empty() {
            return Err(format!("{what} needs string_match or present_match"));
        }
        Some(string_matcher(&flat, what)?)
    };
    Ok(mesh_core::rate_limit::HeaderCondition {
        name,
        matcher,
        invert,
    })
}

/// Envoy's `StringMatcher`. `suffix` and `contains` become anchored regexes of the escaped text.
fn string_matcher(
    m: &Map<String, Value>,
    what: &str,
) -> Result<mesh_core::matching::StringMatcher, String> {
    use mesh_core::matching::StringMatcher;
    let ignore_case = field(m, "ignore_case")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ci = if ignore_case { "(?i)" } else { "" };
    let regex = |p: String| StringMatcher::regex(&p).map_err(|e| format!("{what}: {e}"));
    if let Some(v) = opt_string(m, "exact")? {
        Ok(StringMatcher::exact(v).ignore_case(ignore_case))
    } else if let Some(v) = opt_string(m, "prefix")? {
        Ok(StringMatcher::prefix(v).ignore_case(ignore_case))
    } else if let Some(v) = opt_string(m, "suffix")? {
        regex(format!("{ci}.*{}", regex::escape(&v)))
    } else if let Some(v) = opt_string(m, "contains")? {
        regex(format!("{ci}.*{}.*", regex::escape(&v)))
    } else if let Some(r) = field(m, "safe_regex") {
        let pattern = obj(r, &format!("{what}.safe_regex"))
            .ok()
            .and_then(|r| opt_string(r, "regex").ok().flatten())
            .ok_or_else(|| format!("{what}.safe_regex.regex is required"))?;
        regex(pattern)
    } else {
        Err(format!(
            "{what} needs one of exact, prefix, suffix, contains, safe_regex"
        ))
    }
}

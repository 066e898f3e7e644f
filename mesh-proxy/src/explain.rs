//! `mesh route URL`: which route a request takes, and what applies to it.
//!
//! This is the same decision the outbound stack makes per request (mesh-core's matching and the
//! compiled mesh), shown instead of executed: the VirtualService and route that match, the
//! weighted destinations with their subsets, the endpoints those subsets select, and the
//! policies (timeout, retries, fault, mirrors, TLS, load balancer) that would apply.

use std::process::ExitCode;

use http::{HeaderName, HeaderValue, Method, Request, Uri};
use mesh_core::{
    CompiledMesh, Host, Labels,
    host::split_authority,
    matching::{RequestView, first_match_detail},
    model::{
        AbortStatus, Destination, HttpRoute, LoadBalancer, MESH_GATEWAY, RedirectPort, RouteAction,
        TrafficPolicy,
    },
};
use serde_json::{Value, json};

use std::path::PathBuf;

use crate::{ConfigArgs, Format};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// YAML files or folders holding the mesh config.
    #[arg(long = "config", short = 'c', required = true, num_args = 1.., value_name = "PATH")]
    config_paths: Vec<PathBuf>,
    /// Labels of the client workload (`sourceLabels` matches), `k=v,k=v`.
    #[arg(long, value_name = "K=V,...")]
    source_labels: Option<String>,
    /// A request header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The request method.
    #[arg(long, short = 'X', default_value = "GET")]
    method: String,
    /// The gateway the request arrives through (`namespace/name`); default: a sidecar (`mesh`).
    #[arg(long)]
    gateway: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    config: ConfigArgs,
    /// The request URL, e.g. `http://reviews:9080/reviews/1`.
    url: Option<String>,
}

pub(crate) fn run(mut args: Args) -> ExitCode {
    // `--config a.yaml b.yaml URL`: the URL is the last word, after the config paths.
    if args.url.is_none() && args.config_paths.len() > 1 {
        let last = args
            .config_paths
            .last()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if last.contains("://") {
            args.config_paths.pop();
            args.url = Some(last);
        }
    }
    if args.url.is_none() {
        eprintln!(
            "mesh route: give the request URL after the config paths, e.g. `mesh route --config mesh/ http://reviews:9080/`"
        );
        return ExitCode::from(2);
    }
    match explain(&args) {
        Ok((out, routed)) => {
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&out).expect("json")),
                Format::Text => print!("{}", render_text(&out)),
            }
            if routed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err((code, msg)) => {
            eprintln!("mesh route: {msg}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn explain(args: &Args) -> Result<(Value, bool), Failure> {
    let report = args
        .config
        .loader()
        .check(&args.config_paths)
        .map_err(|e| (2, e.to_string()))?;
    if report.diagnostics.has_errors() {
        let errors: Vec<String> = report.diagnostics.errors().map(|d| d.to_string()).collect();
        return Err((1, format!("the config has errors:\n{}", errors.join("\n"))));
    }
    let mesh = &report.mesh;
    let request = build_request(args)?;
    let labels = parse_labels(args.source_labels.as_deref())?;
    let namespace = args.config.namespace.as_str();
    let gateway = args.gateway.as_deref().unwrap_or(MESH_GATEWAY);

    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or_else(|| {
            (
                2,
                format!(
                    "{:?} has no host: write a URL like http://reviews:9080/",
                    args.url.as_deref().unwrap_or_default()
                ),
            )
        })?;
    let (host_name, port) = split_authority(&authority);
    let port = port.unwrap_or(if request.uri().scheme_str() == Some("https") {
        443
    } else {
        80
    });
    let host = Host::qualify(host_name, namespace);

    let mut view = RequestView::from_request(&request)
        .with_port(port)
        .with_source_labels(&labels)
        .with_source_namespace(namespace);
    if gateway != MESH_GATEWAY {
        view = view.with_gateway(gateway);
    }

    let mut out = json!({
        "request": {
            "method": request.method().as_str(),
            "url": args.url,
            "host": host.as_str(),
            "port": port,
            "gateway": gateway,
            "sourceNamespace": namespace,
            "sourceLabels": labels,
            "headers": request.headers().iter().map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("")))).collect::<serde_json::Map<_, _>>(),
        },
        "configVersion": mesh.version,
    });

    let Some(vh) = mesh.virtual_host(gateway, host.as_str()) else {
        // Istio's default: no VirtualService means the service's own cluster, all endpoints.
        let known = mesh.service(host.as_str()).is_some();
        out["virtualService"] = Value::Null;
        out["route"] = json!({
            "name": "default",
            "note": if known {
                "no VirtualService for this host: the request goes to the service itself, all endpoints (Istio's default route)"
            } else {
                "no VirtualService and no service for this host: outside the mesh registry (passthrough under ALLOW_ANY, 502 under REGISTRY_ONLY)"
            },
        });
        let dest = Destination {
            host: host.clone(),
            subset: None,
            port: Some(port),
        };
        out["destinations"] = json!([destination_json(mesh, &dest, 100.0, namespace)]);
        return Ok((out, true));
    };
    out["virtualService"] = json!(vh.virtual_service);
    let Some(found) = first_match_detail(vh.http.iter().map(|r| r.matches.as_slice()), &view)
    else {
        out["route"] = Value::Null;
        out["result"] = json!("no route matched: the proxy answers 404 (x-mesh-error: no-route)");
        return Ok((out, false));
    };
    let route = &vh.http[found.route];
    out["route"] = route_json(route, found.route, found.condition);
    out["destinations"] = match &route.action {
        RouteAction::Forward(w) => {
            let total: u64 = w.choice.total_weight();
            let n = w.destinations.len();
            Value::Array(
                w.destinations
                    .iter()
                    .map(|d| {
                        let share = if n == 1 {
                            100.0
                        } else {
                            d.weight as f64 * 100.0 / total as f64
                        };
                        let mut j = destination_json(mesh, &d.destination, share, namespace);
                        j["weight"] = json!(if n == 1 { 100 } else { d.weight });
                        j
                    })
                    .collect(),
            )
        }
        _ => json!([]),
    };
    Ok((out, true))
}

fn build_request(args: &Args) -> Result<Request<()>, Failure> {
    let url = args.url.as_deref().unwrap_or_default();
    let uri: Uri = url
        .parse()
        .map_err(|e| (2, format!("{url:?} is not a URL: {e}")))?;
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| (2, format!("{:?} is not an HTTP method", args.method)))?;
    let mut req = Request::builder().method(method).uri(uri.clone());
    if let Some(a) = uri.authority() {
        req = req.header(http::header::HOST, a.as_str());
    }
    let mut req = req.body(()).map_err(|e| (2, e.to_string()))?;
    for h in &args.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| (2, format!("header {h:?} must be written `name: value`")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| (2, format!("{:?} is not a header name", name.trim())))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| (2, format!("{:?} is not a header value", value.trim())))?;
        req.headers_mut().append(name, value);
    }
    Ok(req)
}

fn parse_labels(s: Option<&str>) -> Result<Labels, Failure> {
    let mut labels = Labels::new();
    for pair in s
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| (2, format!("label {pair:?} must be written key=value")))?;
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(labels)
}

fn route_json(route: &HttpRoute, index: usize, condition: Option<usize>) -> Value {
    let mut j = json!({
        "index": index,
        "name": route.name,
        "matchedCondition": condition.map(|c| {
            let m = &route.matches[c];
            json!({"index": c, "name": m.name, "match": describe_match(m)})
        }),
    });
    j["action"] = match &route.action {
        RouteAction::Forward(_) => json!("route"),
        RouteAction::Redirect(r) => json!({
            "redirect": {
                "uri": r.uri, "authority": r.authority, "scheme": r.scheme, "status": r.status.as_u16(),
                "port": r.port.map(|p| match p {
                    RedirectPort::Port(n) => n.to_string(),
                    RedirectPort::FromProtocolDefault => "FROM_PROTOCOL_DEFAULT".into(),
                    RedirectPort::FromRequestPort => "FROM_REQUEST_PORT".into(),
                }),
            }
        }),
        RouteAction::DirectResponse(d) => json!({
            "directResponse": {"status": d.status.as_u16(), "body": d.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())}
        }),
    };
    j["timeout"] = json!(
        route
            .timeout
            .map(mesh_core::duration::format_duration)
            .unwrap_or_else(|| "none".into())
    );
    let r = &route.retries;
    j["retries"] = json!({
        "attempts": r.attempts,
        "retryOn": r.retry_on,
        "retriableStatusCodes": r.retriable_status_codes,
        "perTryTimeout": r.per_try_timeout.map(mesh_core::duration::format_duration),
        "default": r.is_default,
    });
    if let Some(f) = &route.fault {
        j["fault"] = json!({
            "delay": f.delay.as_ref().map(|d| json!({"fixedDelay": mesh_core::duration::format_duration(d.delay), "percentage": d.percentage.value()})),
            "abort": f.abort.as_ref().map(|a| json!({
                "status": match a.status { AbortStatus::Http(s) => format!("HTTP {}", s.as_u16()), AbortStatus::Grpc(c) => format!("gRPC {c}") },
                "percentage": a.percentage.value(),
            })),
        });
    }
    if !route.mirrors.is_empty() {
        j["mirrors"] = Value::Array(
            route
                .mirrors
                .iter()
                .map(|m| json!({"destination": m.destination.to_string(), "percentage": m.percentage.value()}))
                .collect(),
        );
    }
    if let Some(rw) = &route.rewrite {
        j["rewrite"] = json!({"uri": rw.uri, "authority": rw.authority, "uriRegex": rw.uri_regex.as_ref().map(|(re, sub)| format!("{} -> {sub}", re.as_str()))});
    }
    if route.cors.is_some() {
        j["cors"] = json!(true);
    }
    j
}

fn destination_json(mesh: &CompiledMesh, d: &Destination, share: f64, client_ns: &str) -> Value {
    let policy = mesh.destination_policy(d.host.as_str(), client_ns);
    let subset = d
        .subset
        .as_deref()
        .and_then(|s| policy.and_then(|p| p.subset(s)));
    let mut j = json!({
        "host": d.host.as_str(),
        "subset": d.subset,
        "port": d.port,
        "share": format!("{share:.1}%"),
        "destinationRule": policy.map(|p| p.destination_rule.clone()),
    });
    if d.subset.is_some() && subset.is_none() {
        j["warning"] = json!(
            "no DestinationRule defines this subset: the proxy answers 503 (no healthy upstream)"
        );
    }
    let tp: TrafficPolicy = policy
        .map(|p| p.policy_for(d.subset.as_deref(), d.port))
        .unwrap_or_default();
    j["loadBalancer"] = json!(match &tp.load_balancer {
        None => "LEAST_REQUEST (default)".to_owned(),
        Some(LoadBalancer::RoundRobin) => "ROUND_ROBIN".to_owned(),
        Some(LoadBalancer::LeastRequest) => "LEAST_REQUEST".to_owned(),
        Some(LoadBalancer::Random) => "RANDOM".to_owned(),
        Some(LoadBalancer::Passthrough) => "PASSTHROUGH".to_owned(),
        Some(LoadBalancer::ConsistentHash(c)) =>
            format!("consistentHash {:?} ({:?})", c.key, c.algorithm),
    });
    j["tls"] = json!(match &tp.tls {
        Some(t) => format!("{:?}", t.mode),
        None => "auto (ISTIO_MUTUAL to mesh workloads, else plain text)".to_owned(),
    });
    if let Some(cp) = &tp.connection_pool {
        j["connectionPool"] = json!(format!("{cp:?}"));
    }
    if let Some(od) = &tp.outlier_detection {
        j["outlierDetection"] = json!(format!("{od:?}"));
    }
    let service = mesh.service(d.host.as_str());
    j["service"] = json!(service.map(|s| s.source.clone()));
    let selected = if d.subset.is_some() && subset.is_none() {
        Vec::new()
    } else {
        mesh.endpoints(d.host.as_str(), subset).collect()
    };
    j["endpoints"] = Value::Array(
        selected
            .iter()
            .map(|e| {
                let port = d
                    .port
                    .and_then(|p| service.and_then(|s| s.port(p)))
                    .or_else(|| service.and_then(|s| s.single_port()))
                    .map(|sp| e.port_for(sp));
                json!({
                    "address": match port { Some(p) => format!("{}:{p}", e.address), None => e.address.to_string() },
                    "labels": e.labels,
                    "identity": e.identity.as_ref().map(|i| i.to_string()),
                    "source": e.source,
                })
            })
            .collect(),
    );
    j
}

fn render_text(out: &Value) -> String {
    let mut s = String::new();
    let req = &out["request"];
    s += &format!(
        "request:        {} {} (host {}, port {}, via {})\n",
        req["method"].as_str().unwrap_or(""),
        req["url"].as_str().unwrap_or(""),
        req["host"].as_str().unwrap_or(""),
        req["port"],
        req["gateway"].as_str().unwrap_or("")
    );
    match out["virtualService"].as_str() {
        Some(vs) => s += &format!("virtualService: {vs}\n"),
        None => s += "virtualService: none\n",
    }
    let route = &out["route"];
    if route.is_null() {
        s += &format!(
            "route:          {}\n",
            out["result"].as_str().unwrap_or("none")
        );
        return s;
    }
    s += &format!("route:          {}", route["name"].as_str().unwrap_or(""));
    if let Some(c) = route.get("matchedCondition").filter(|c| !c.is_null()) {
        s += &format!(
            " (match[{}]: {})",
            c["index"],
            c["match"].as_str().unwrap_or("")
        );
    } else if route.get("index").is_some() {
        s += " (no match conditions: matches every request)";
    }
    s += "\n";
    if let Some(note) = route["note"].as_str() {
        s += &format!("                {note}\n");
    }
    if let Some(action) = route.get("action").filter(|a| !a.is_string()) {
        s += &format!("action:         {action}\n");
    }
    if let Some(t) = route["timeout"].as_str() {
        s += &format!("timeout:        {t}\n");
    }
    if let Some(r) = route.get("retries") {
        s += &format!(
            "retries:        {} attempt(s) on {}{}{}\n",
            r["attempts"],
            r["retryOn"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            r["perTryTimeout"]
                .as_str()
                .map(|t| format!(", per try {t}"))
                .unwrap_or_default(),
            if r["default"].as_bool() == Some(true) {
                " (Istio's default)"
            } else {
                ""
            }
        );
    }
    if let Some(f) = route.get("fault") {
        s += &format!("fault:          {f}\n");
    }
    if let Some(m) = route.get("mirrors") {
        s += &format!("mirrors:        {m}\n");
    }
    if let Some(r) = route.get("rewrite") {
        s += &format!("rewrite:        {r}\n");
    }
    for d in out["destinations"].as_array().into_iter().flatten() {
        s += &format!(
            "destination:    {}{}{} weight {} ({})\n",
            d["host"].as_str().unwrap_or(""),
            d["port"]
                .as_u64()
                .map(|p| format!(":{p}"))
                .unwrap_or_default(),
            d["subset"]
                .as_str()
                .map(|p| format!(" subset {p}"))
                .unwrap_or_default(),
            d.get("weight")
                .map(|w| w.to_string())
                .unwrap_or_else(|| "-".into()),
            d["share"].as_str().unwrap_or("")
        );
        if let Some(dr) = d["destinationRule"].as_str() {
            s += &format!("  destinationRule: {dr}\n");
        }
        if let Some(w) = d["warning"].as_str() {
            s += &format!("  warning:      {w}\n");
        }
        s += &format!(
            "  loadBalancer: {}\n",
            d["loadBalancer"].as_str().unwrap_or("")
        );
        s += &format!("  tls:          {}\n", d["tls"].as_str().unwrap_or(""));
        for k in ["connectionPool", "outlierDetection"] {
            if let Some(v) = d[k].as_str() {
                s += &format!("  {k}: {v}\n");
            }
        }
        let eps = d["endpoints"].as_array().cloned().unwrap_or_default();
        if eps.is_empty() {
            s += "  endpoints:    none in the registry\n";
        }
        for e in eps {
            s += &format!(
                "  endpoint:     {} {}\n",
                e["address"].as_str().unwrap_or(""),
                e["labels"]
            );
        }
    }
    s
}

/// A one-line account of an `HttpMatch`'s conditions.
fn describe_match(m: &mesh_core::matching::HttpMatch) -> String {
    let mut parts = Vec::new();
    for (name, v) in [
        ("uri", &m.uri),
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(v) = v {
            parts.push(format!("{name} {v}"));
        }
    }
    for (h, v) in &m.headers {
        parts.push(format!("header {h} {v}"));
    }
    for (h, v) in &m.without_headers {
        parts.push(format!("without header {h} {v}"));
    }
    for (q, v) in &m.query_params {
        parts.push(format!("query {q} {v}"));
    }
    if let Some(p) = m.port {
        parts.push(format!("port {p}"));
    }
    if !m.source_labels.is_empty() {
        parts.push(format!("sourceLabels {:?}", m.source_labels.0));
    }
    if let Some(ns) = &m.source_namespace {
        parts.push(format!("sourceNamespace {ns}"));
    }
    if parts.is_empty() {
        "any request".to_owned()
    } else {
        parts.join(", ")
    }
}

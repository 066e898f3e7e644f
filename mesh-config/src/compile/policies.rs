//! DestinationRule to destination policies: subsets resolved to selectors, each level's policy
//! kept so `DestinationPolicy::policy_for` can merge them as Istio does.

use std::time::Duration;

use mesh_core::{
    Host, Selector,
    model::{
        ClientTls, ClientTlsMode, ConnectionPool, ConsistentHash, DestinationPolicy, HashAlgorithm,
        HashKey, LoadBalancer, OutlierDetection, Subset, TcpKeepalive, TrafficPolicy,
    },
};

use super::Sink;
use crate::{
    kinds::destination_rule::{self as dr, DestinationRule},
    load::Object,
};

/// The destination policies of every DestinationRule, with rules for the same host in the same
/// namespace merged as istiod merges them (`mergeDestinationRule`): the first rule's top-level
/// traffic policy wins (a later one fills it only when the first has none), and a later rule adds
/// the subsets whose names are new; a subset name already defined is ignored, with a warning.
/// "First" is load order here (Istio orders by creation time, which YAML files do not carry).
pub(crate) fn destination_policies(
    rules: &[Object<DestinationRule>],
    sink: &mut Sink<'_>,
) -> Vec<DestinationPolicy> {
    let mut out: Vec<DestinationPolicy> = Vec::new();
    for obj in rules {
        let policy = destination_policy(obj, sink);
        let has_top_policy = obj.spec.traffic_policy.is_some();
        let Some(first) = out
            .iter_mut()
            .find(|p| p.namespace == policy.namespace && p.host == policy.host)
        else {
            out.push(policy);
            continue;
        };
        let first_has_top_policy =
            first.traffic_policy != TrafficPolicy::default() || !first.port_policies.is_empty();
        if !first_has_top_policy && has_top_policy {
            first.traffic_policy = policy.traffic_policy;
            first.port_policies = policy.port_policies;
        }
        for (i, subset) in policy.subsets.into_iter().enumerate() {
            if first.subset(&subset.name).is_some() {
                sink.warn(
                    obj,
                    &format!("spec.subsets[{i}].name"),
                    format!(
                        "subset `{}` of host {} is already defined by DestinationRule {}: this one is ignored (Istio merges DestinationRules for one host and keeps the first definition)",
                        subset.name, first.host, first.destination_rule
                    ),
                );
            } else {
                first.subsets.push(subset);
            }
        }
        first.destination_rule = format!("{}+{}", first.destination_rule, policy.destination_rule);
    }
    out
}

pub(crate) fn destination_policy(
    obj: &Object<DestinationRule>,
    sink: &mut Sink<'_>,
) -> DestinationPolicy {
    let spec = &obj.spec;
    let (top_policy, port_policies) = traffic_policy(spec.traffic_policy.as_ref());
    let subsets = spec
        .subsets
        .iter()
        .map(|s| {
            let (traffic_policy, port_policies) = traffic_policy(s.traffic_policy.as_ref());
            Subset {
                name: s.name.clone(),
                selector: Selector::new(s.labels.clone()),
                traffic_policy,
                port_policies,
            }
        })
        .collect();
    let _ = sink;
    DestinationPolicy {
        host: Host::qualify(&spec.host, &obj.namespace),
        namespace: obj.namespace.clone(),
        destination_rule: obj.key(),
        traffic_policy: top_policy,
        port_policies,
        subsets,
        export_to: spec.export_to.clone(),
    }
}

fn traffic_policy(tp: Option<&dr::TrafficPolicy>) -> (TrafficPolicy, Vec<(u16, TrafficPolicy)>) {
    let Some(tp) = tp else {
        return (TrafficPolicy::default(), Vec::new());
    };
    let top = TrafficPolicy {
        load_balancer: tp.load_balancer.as_ref().and_then(load_balancer),
        connection_pool: tp.connection_pool.as_ref().map(connection_pool),
        outlier_detection: tp.outlier_detection.as_ref().map(outlier_detection),
        tls: tp.tls.as_ref().map(client_tls),
    };
    let ports = tp
        .port_level_settings
        .iter()
        .filter_map(|p| {
            let number = u16::try_from(p.port.and_then(|s| s.number)?).ok()?;
            Some((
                number,
                TrafficPolicy {
                    load_balancer: p.load_balancer.as_ref().and_then(load_balancer),
                    connection_pool: p.connection_pool.as_ref().map(connection_pool),
                    outlier_detection: p.outlier_detection.as_ref().map(outlier_detection),
                    tls: p.tls.as_ref().map(client_tls),
                },
            ))
        })
        .collect();
    (top, ports)
}

fn load_balancer(lb: &dr::LoadBalancerSettings) -> Option<LoadBalancer> {
    if let Some(ch) = &lb.consistent_hash {
        let key = if let Some(h) = &ch.http_header_name {
            HashKey::Header(h.to_ascii_lowercase())
        } else if let Some(c) = &ch.http_cookie {
            HashKey::Cookie {
                name: c.name.clone(),
                path: (!c.path.is_empty()).then(|| c.path.clone()),
                ttl: c.ttl.map(|d| d.get()),
            }
        } else if ch.use_source_ip == Some(true) {
            HashKey::SourceIp
        } else if let Some(q) = &ch.http_query_parameter_name {
            HashKey::QueryParameter(q.clone())
        } else {
            return None;
        };
        // Envoy's defaults: a 1024-entry minimum ring, a 65537-entry Maglev table.
        let algorithm = match (&ch.maglev, &ch.ring_hash) {
            (Some(m), _) => HashAlgorithm::Maglev {
                table_size: m.table_size.unwrap_or(65537),
            },
            (None, Some(r)) => HashAlgorithm::RingHash {
                minimum_ring_size: r.minimum_ring_size.unwrap_or(1024),
            },
            (None, None) => HashAlgorithm::RingHash {
                minimum_ring_size: ch.minimum_ring_size.unwrap_or(1024),
            },
        };
        return Some(LoadBalancer::ConsistentHash(ConsistentHash {
            key,
            algorithm,
        }));
    }
    Some(match lb.simple? {
        dr::SimpleLb::RoundRobin => LoadBalancer::RoundRobin,
        dr::SimpleLb::Random => LoadBalancer::Random,
        dr::SimpleLb::Passthrough => LoadBalancer::Passthrough,
        // LEAST_CONN is the deprecated name of LEAST_REQUEST; UNSPECIFIED is Istio's default.
        dr::SimpleLb::LeastConn | dr::SimpleLb::LeastRequest | dr::SimpleLb::Unspecified => {
            LoadBalancer::LeastRequest
        }
    })
}

fn positive(v: Option<i32>) -> Option<u32> {
    v.filter(|v| *v > 0).map(|v| v as u32)
}

fn connection_pool(cp: &dr::ConnectionPoolSettings) -> ConnectionPool {
    let tcp = cp.tcp.clone().unwrap_or_default();
    let http = cp.http.clone().unwrap_or_default();
    ConnectionPool {
        max_connections: positive(tcp.max_connections),
        connect_timeout: tcp.connect_timeout.map(|d| d.get()),
        tcp_keepalive: tcp.tcp_keepalive.map(|k| TcpKeepalive {
            probes: k.probes,
            time: k.time.map(|d| d.get()),
            interval: k.interval.map(|d| d.get()),
        }),
        max_connection_duration: tcp.max_connection_duration.map(|d| d.get()),
        http1_max_pending_requests: positive(http.http1_max_pending_requests),
        http2_max_requests: positive(http.http2_max_requests),
        max_requests_per_connection: positive(http.max_requests_per_connection),
        max_retries: positive(http.max_retries),
        idle_timeout: http.idle_timeout.or(tcp.idle_timeout).map(|d| d.get()),
        h2_upgrade: http.h2_upgrade_policy == dr::H2UpgradePolicy::Upgrade,
        use_client_protocol: http.use_client_protocol,
        max_concurrent_streams: positive(http.max_concurrent_streams),
    }
}

fn outlier_detection(od: &dr::OutlierDetection) -> OutlierDetection {
    OutlierDetection {
        // `consecutiveErrors` is the deprecated spelling of consecutiveGatewayErrors (Istio).
        consecutive_5xx_errors: od.consecutive_5xx_errors.or(Some(5)).filter(|v| *v > 0),
        consecutive_gateway_errors: od
            .consecutive_gateway_errors
            .or(positive(od.consecutive_errors))
            .filter(|v| *v > 0),
        consecutive_local_origin_failures: od.consecutive_local_origin_failures,
        split_external_local_origin_errors: od.split_external_local_origin_errors,
        interval: od
            .interval
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(10)),
        base_ejection_time: od
            .base_ejection_time
            .map(|d| d.get())
            .unwrap_or(Duration::from_secs(30)),
        max_ejection_percent: od
            .max_ejection_percent
            .map(|v| v.clamp(0, 100) as u32)
            .unwrap_or(10),
        min_health_percent: od
            .min_health_percent
            .map(|v| v.clamp(0, 100) as u32)
            .unwrap_or(0),
    }
}

fn client_tls(t: &dr::ClientTlsSettings) -> ClientTls {
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    ClientTls {
        mode: match t.mode {
            dr::TlsMode::Disable => ClientTlsMode::Disable,
            dr::TlsMode::Simple => ClientTlsMode::Simple,
            dr::TlsMode::Mutual => ClientTlsMode::Mutual,
            dr::TlsMode::IstioMutual => ClientTlsMode::IstioMutual,
        },
        client_certificate: opt(&t.client_certificate),
        private_key: opt(&t.private_key),
        ca_certificates: opt(&t.ca_certificates),
        credential_name: opt(&t.credential_name),
        subject_alt_names: t.subject_alt_names.clone(),
        sni: opt(&t.sni),
        insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
    }
}

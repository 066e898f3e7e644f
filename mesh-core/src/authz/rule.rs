//! Rules compiled for evaluation: every `source` field, `operation` field and `when` condition
//! becomes one [`Check`] of an attribute against its `values` and `notValues`, because Istio
//! defines them as the same thing (`principals` "is the same as the `source.principal`
//! attribute", and so on).

use std::net::IpAddr;

use http::HeaderName;

use super::{
    request::AuthzRequest,
    value::{PathMatch, StrMatch, ip_in, parse_ip_block},
};
use crate::model::{AuthorizationAction, AuthorizationRule, Condition, Operation, Source};

/// An attribute of the request, by Istio's name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Attribute {
    SourcePrincipal,
    SourceNamespace,
    SourceServiceAccount,
    SourceTrustDomain,
    SourceIp,
    RemoteIp,
    RequestPrincipal,
    /// `request.auth.claims[a][b]`: the path of claim names. `request.auth.audiences` is the
    /// `aud` claim and `request.auth.presenter` the `azp` claim.
    Claim(Box<[Box<str>]>),
    Header(HeaderName),
    Host,
    Method,
    Path,
    DestinationIp,
    DestinationPort,
    Sni,
}

/// The compiled values of one side (`values` or `notValues`) of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Values {
    Str(Box<[StrMatch]>),
    Path(Box<[PathMatch]>),
    Ip(Box<[ipnet::IpNet]>),
    Port(Box<[u16]>),
    /// `(namespace, service account)`.
    ServiceAccount(Box<[(Box<str>, Box<str>)]>),
}

impl Values {
    fn is_empty(&self) -> bool {
        match self {
            Values::Str(v) => v.is_empty(),
            Values::Path(v) => v.is_empty(),
            Values::Ip(v) => v.is_empty(),
            Values::Port(v) => v.is_empty(),
            Values::ServiceAccount(v) => v.is_empty(),
        }
    }
}

/// One constraint: the attribute matches one of `values` (when there are any) and none of
/// `not_values`. An absent attribute matches no value, so it fails `values` and passes
/// `notValues`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Check {
    attribute: Attribute,
    values: Values,
    not_values: Values,
}

impl Check {
    pub(super) fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        (self.values.is_empty() || self.any(req, &self.values))
            && (self.not_values.is_empty() || !self.any(req, &self.not_values))
    }

    /// Whether the attribute's value (or one of them, for lists) matches one of `values`.
    fn any(&self, req: &AuthzRequest<'_>, values: &Values) -> bool {
        let str_any = |value: Option<&str>, ms: &[StrMatch]| {
            value.is_some_and(|v| ms.iter().any(|m| m.matches(v)))
        };
        let ip_any =
            |ip: Option<IpAddr>, blocks: &[ipnet::IpNet]| ip.is_some_and(|ip| ip_in(blocks, ip));
        let peer = req.peer;
        match (&self.attribute, values) {
            (Attribute::SourcePrincipal, Values::Str(ms)) => str_any(peer.map(|p| p.principal), ms),
            (Attribute::SourceNamespace, Values::Str(ms)) => {
                str_any(peer.and_then(|p| p.namespace), ms)
            }
            (Attribute::SourceTrustDomain, Values::Str(ms)) => {
                str_any(peer.and_then(|p| p.trust_domain), ms)
            }
            (Attribute::SourceServiceAccount, Values::ServiceAccount(sas)) => {
                peer.is_some_and(|p| {
                    sas.iter().any(|(ns, sa)| {
                        p.namespace == Some(&**ns) && p.service_account == Some(&**sa)
                    })
                })
            }
            (Attribute::SourceIp, Values::Ip(blocks)) => ip_any(req.source_ip, blocks),
            (Attribute::RemoteIp, Values::Ip(blocks)) => ip_any(req.remote_ip(), blocks),
            (Attribute::DestinationIp, Values::Ip(blocks)) => ip_any(req.destination_ip, blocks),
            (Attribute::DestinationPort, Values::Port(ports)) => {
                req.destination_port.is_some_and(|p| ports.contains(&p))
            }
            (Attribute::RequestPrincipal, Values::Str(ms)) => str_any(req.request_principal, ms),
            (Attribute::Claim(path), Values::Str(ms)) => {
                req.claim_any(path, |v| ms.iter().any(|m| m.matches(v)))
            }
            (Attribute::Header(name), Values::Str(ms)) => str_any(req.header(name).as_deref(), ms),
            (Attribute::Host, Values::Str(ms)) => req
                .authority
                .is_some_and(|h| ms.iter().any(|m| m.matches_ignore_case(h))),
            (Attribute::Method, Values::Str(ms)) => str_any(Some(req.method), ms),
            (Attribute::Path, Values::Path(ps)) => ps.iter().any(|p| p.matches(req.path)),
            (Attribute::Sni, Values::Str(ms)) => str_any(req.sni, ms),
            // The compiler pairs each attribute with its kind of values.
            _ => false,
        }
    }
}

/// A rule ready to evaluate: "A match occurs when at least one source, one operation and all
/// conditions matches the request. An empty rule is always matched."
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CompiledRule {
    /// ORed sources, each a list of ANDed checks; empty: any source.
    from: Vec<Vec<Check>>,
    /// ORed operations, each a list of ANDed checks; empty: any operation.
    to: Vec<Vec<Check>>,
    /// ANDed conditions.
    when: Vec<Check>,
    /// An ALLOW-like rule with a condition the engine cannot evaluate: it matches nothing.
    never: bool,
}

impl CompiledRule {
    pub(super) fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        !self.never
            && (self.from.is_empty() || self.from.iter().any(|s| s.iter().all(|c| c.matches(req))))
            && (self.to.is_empty() || self.to.iter().any(|o| o.iter().all(|c| c.matches(req))))
            && self.when.iter().all(|c| c.matches(req))
    }

    /// Compiles a rule of a policy in `namespace` (the default namespace of `serviceAccounts`).
    /// A condition the engine cannot evaluate (an unknown key, a value that does not parse) is
    /// reported in `warnings`; in a DENY rule it is left out, so the rest of the rule still
    /// denies (the reference: "For a `DENY` rule, missing attributes are treated as matches"),
    /// in any other rule it makes the rule match nothing. Both fail closed.
    pub(super) fn compile(
        rule: &AuthorizationRule,
        action: AuthorizationAction,
        namespace: &str,
        warnings: &mut Vec<String>,
    ) -> Self {
        let from = rule
            .from
            .iter()
            .map(|s| source_checks(s, namespace))
            .collect();
        let to = rule.to.iter().map(operation_checks).collect();
        let mut when = Vec::with_capacity(rule.when.len());
        let mut never = false;
        for (j, condition) in rule.when.iter().enumerate() {
            match condition_check(condition, namespace) {
                Ok(check) => when.push(check),
                Err(e) => {
                    let effect = if action == AuthorizationAction::Deny {
                        "the condition is left out of this DENY rule"
                    } else {
                        never = true;
                        "the rule matches nothing"
                    };
                    warnings.push(format!("when[{j}]: {e}; {effect}"));
                }
            }
        }
        CompiledRule {
            from,
            to,
            when,
            never,
        }
    }
}

fn strs(values: &[String]) -> Values {
    Values::Str(values.iter().map(|v| StrMatch::parse(v)).collect())
}

/// Pushes a check when the field has values or not-values.
fn push(checks: &mut Vec<Check>, attribute: Attribute, values: Values, not_values: Values) {
    if !values.is_empty() || !not_values.is_empty() {
        checks.push(Check {
            attribute,
            values,
            not_values,
        });
    }
}

/// `ns/sa`, or `sa` in the policy's namespace (the reference: "`<serviceaccount>` may also be
/// used to use the same namespace as the `AuthorizationPolicy`").
fn service_accounts(values: &[String], namespace: &str) -> Values {
    Values::ServiceAccount(
        values
            .iter()
            .map(|v| match v.split_once('/') {
                Some((ns, sa)) => (ns.into(), sa.into()),
                None => (namespace.into(), v.as_str().into()),
            })
            .collect(),
    )
}

fn source_checks(s: &Source, namespace: &str) -> Vec<Check> {
    let ips = |v: &[ipnet::IpNet]| Values::Ip(v.into());
    let mut checks = Vec::new();
    // Cheapest first: fields are ANDed, so the order only changes how soon a miss is found.
    push(
        &mut checks,
        Attribute::SourceIp,
        ips(&s.ip_blocks),
        ips(&s.not_ip_blocks),
    );
    push(
        &mut checks,
        Attribute::RemoteIp,
        ips(&s.remote_ip_blocks),
        ips(&s.not_remote_ip_blocks),
    );
    push(
        &mut checks,
        Attribute::SourceNamespace,
        strs(&s.namespaces),
        strs(&s.not_namespaces),
    );
    push(
        &mut checks,
        Attribute::SourceServiceAccount,
        service_accounts(&s.service_accounts, namespace),
        service_accounts(&s.not_service_accounts, namespace),
    );
    push(
        &mut checks,
        Attribute::SourceTrustDomain,
        strs(&s.trust_domains),
        strs(&s.not_trust_domains),
    );
    push(
        &mut checks,
        Attribute::SourcePrincipal,
        strs(&s.principals),
        strs(&s.not_principals),
    );
    push(
        &mut checks,
        Attribute::RequestPrincipal,
        strs(&s.request_principals),
        strs(&s.not_request_principals),
    );
    checks
}

fn paths(values: &[String]) -> Values {
    // mesh-config rejects bad templates; one that gets here anyway is matched literally.
    Values::Path(
        values
            .iter()
            .map(|v| {
                PathMatch::parse(v)
                    .unwrap_or_else(|_| PathMatch::Str(StrMatch::Exact(v.as_str().into())))
            })
            .collect(),
    )
}

fn operation_checks(o: &Operation) -> Vec<Check> {
    let ports = |v: &[u16]| Values::Port(v.into());
    let mut checks = Vec::new();
    push(
        &mut checks,
        Attribute::DestinationPort,
        ports(&o.ports),
        ports(&o.not_ports),
    );
    push(
        &mut checks,
        Attribute::Method,
        strs(&o.methods),
        strs(&o.not_methods),
    );
    push(
        &mut checks,
        Attribute::Host,
        strs(&o.hosts),
        strs(&o.not_hosts),
    );
    push(
        &mut checks,
        Attribute::Path,
        paths(&o.paths),
        paths(&o.not_paths),
    );
    checks
}

/// `name[a][b]` → `["a", "b"]` after `prefix`; at least one bracketed, non-empty key.
fn bracketed<'k>(key: &'k str, prefix: &str) -> Option<Vec<&'k str>> {
    let mut rest = key.strip_prefix(prefix)?;
    let mut keys = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let close = inner.find(']')?;
        if close == 0 {
            return None;
        }
        keys.push(&inner[..close]);
        rest = &inner[close + 1..];
    }
    (!keys.is_empty()).then_some(keys)
}

fn claim(name: &str) -> Attribute {
    Attribute::Claim(Box::new([name.into()]))
}

/// A `when` condition, for the keys of Istio's "Authorization Policy Conditions" page.
fn condition_check(c: &Condition, namespace: &str) -> Result<Check, String> {
    let key = c.key.as_str();
    let ips = |values: &[String]| -> Result<Values, String> {
        values
            .iter()
            .map(|v| {
                parse_ip_block(v)
                    .ok_or_else(|| format!("{key}: {v:?} is not an IP address or CIDR"))
            })
            .collect::<Result<_, _>>()
            .map(Values::Ip)
    };
    let ports = |values: &[String]| -> Result<Values, String> {
        values
            .iter()
            .map(|v| {
                v.parse::<u16>()
                    .map_err(|_| format!("{key}: {v:?} is not a port number"))
            })
            .collect::<Result<_, _>>()
            .map(Values::Port)
    };
    let (attribute, values, not_values) = match key {
        "source.ip" => (Attribute::SourceIp, ips(&c.values)?, ips(&c.not_values)?),
        "remote.ip" => (Attribute::RemoteIp, ips(&c.values)?, ips(&c.not_values)?),
        "destination.ip" => (
            Attribute::DestinationIp,
            ips(&c.values)?,
            ips(&c.not_values)?,
        ),
        "destination.port" => (
            Attribute::DestinationPort,
            ports(&c.values)?,
            ports(&c.not_values)?,
        ),
        "source.namespace" => (
            Attribute::SourceNamespace,
            strs(&c.values),
            strs(&c.not_values),
        ),
        "source.principal" => (
            Attribute::SourcePrincipal,
            strs(&c.values),
            strs(&c.not_values),
        ),
        "source.trustDomain" => (
            Attribute::SourceTrustDomain,
            strs(&c.values),
            strs(&c.not_values),
        ),
        "source.serviceAccount" => (
            Attribute::SourceServiceAccount,
            service_accounts(&c.values, namespace),
            service_accounts(&c.not_values, namespace),
        ),
        "request.auth.principal" => (
            Attribute::RequestPrincipal,
            strs(&c.values),
            strs(&c.not_values),
        ),
        "request.auth.audiences" => (claim("aud"), strs(&c.values), strs(&c.not_values)),
        "request.auth.presenter" => (claim("azp"), strs(&c.values), strs(&c.not_values)),
        "connection.sni" => (Attribute::Sni, strs(&c.values), strs(&c.not_values)),
        _ if key.starts_with("request.headers") => {
            let name = match bracketed(key, "request.headers").as_deref() {
                Some([name]) => HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{key}: {name:?} is not a header name"))?,
                _ => return Err(format!("{key}: expected request.headers[<name>]")),
            };
            (
                Attribute::Header(name),
                strs(&c.values),
                strs(&c.not_values),
            )
        }
        _ if key.starts_with("request.auth.claims") => {
            let path = bracketed(key, "request.auth.claims").ok_or_else(|| {
                format!("{key}: expected request.auth.claims[<name>] or [<name>][<nested>]")
            })?;
            (
                Attribute::Claim(path.into_iter().map(Into::into).collect()),
                strs(&c.values),
                strs(&c.not_values),
            )
        }
        _ if key.starts_with("experimental.envoy.filters.") => {
            return Err(format!(
                "{key}: Envoy filter metadata is not available in mesh \
                 (experimental.envoy.filters.* is unsupported)"
            ));
        }
        _ => return Err(format!("{key}: unknown attribute")),
    };
    Ok(Check {
        attribute,
        values,
        not_values,
    })
}

//! Types shared by several Istio kinds, and the issue list that validators write to.

use std::{collections::BTreeMap, fmt, time::Duration as StdDuration};

use serde::{Deserialize, Deserializer, de::IgnoredAny};

/// Kubernetes object metadata. Only `name`, `namespace`, `labels` and `annotations` mean anything
/// to mesh; the other fields a `kubectl get -o yaml` dump carries are accepted and ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub generate_name: Option<IgnoredAny>,
    #[serde(default)]
    pub uid: Option<IgnoredAny>,
    #[serde(default)]
    pub resource_version: Option<IgnoredAny>,
    #[serde(default)]
    pub generation: Option<IgnoredAny>,
    #[serde(default)]
    pub creation_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    pub deletion_timestamp: Option<IgnoredAny>,
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<IgnoredAny>,
    #[serde(default)]
    pub managed_fields: Option<IgnoredAny>,
    #[serde(default)]
    pub owner_references: Option<IgnoredAny>,
    #[serde(default)]
    pub finalizers: Option<IgnoredAny>,
    #[serde(default)]
    pub self_link: Option<IgnoredAny>,
}

/// A duration field (`google.protobuf.Duration`), written as Istio does: `10s`, `500ms`, `1m`.
/// Bad strings are rejected while parsing, with their position.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub fn get(self) -> StdDuration {
        self.0
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mesh_core::duration::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        mesh_core::duration::parse_duration(&s)
            .map(Duration)
            .map_err(serde::de::Error::custom)
    }
}

/// `StringMatch`: one of `exact`, `prefix`, `regex`, or none (`{}`), which for header and query
/// parameter matches means "present, whatever the value" (Istio). Two at once is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(String),
    /// `{}`: no value condition.
    Empty,
}

impl StringMatch {
    /// The value, whichever kind it is (empty for [`StringMatch::Empty`]).
    pub fn value(&self) -> &str {
        match self {
            StringMatch::Exact(v) | StringMatch::Prefix(v) | StringMatch::Regex(v) => v,
            StringMatch::Empty => "",
        }
    }
}

impl<'de> Deserialize<'de> for StringMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            exact: Option<String>,
            #[serde(default)]
            prefix: Option<String>,
            #[serde(default)]
            regex: Option<String>,
        }
        let raw = Raw::deserialize(d)?;
        match (raw.exact, raw.prefix, raw.regex) {
            (Some(v), None, None) => Ok(StringMatch::Exact(v)),
            (None, Some(v), None) => Ok(StringMatch::Prefix(v)),
            (None, None, Some(v)) => Ok(StringMatch::Regex(v)),
            (None, None, None) => Ok(StringMatch::Empty),
            _ => Err(serde::de::Error::custom(
                "only one of `exact`, `prefix` or `regex` may be set in a string match",
            )),
        }
    }
}

/// The `matchLabels` form of a workload selector (`istio.type.v1beta1.WorkloadSelector`): the
/// `selector` of the security kinds and the `workloadSelector` of a DestinationRule.
///
/// Istio has two messages named `WorkloadSelector`; this one keeps the name, and the networking
/// one, whose field is `labels`, is [`NetworkingWorkloadSelector`].
///
/// <https://istio.io/latest/docs/reference/config/type/workload-selector/#WorkloadSelector>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// The `labels` form of a workload selector (`istio.networking.v1alpha3.WorkloadSelector`): the
/// `workloadSelector` of a ServiceEntry, a Sidecar and an EnvoyFilter. See [`WorkloadSelector`]
/// for the `matchLabels` form.
///
/// <https://istio.io/latest/docs/reference/config/networking/sidecar/#WorkloadSelector>
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkingWorkloadSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `targetRef` / `targetRefs` (Gateway API policy attachment), as the security kinds take it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `PortSelector` of networking kinds: `{ number: 80 }`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortSelector {
    #[serde(default)]
    pub number: Option<u32>,
}

/// What a validator found, located by a path into the document (`spec.http[0].redirect`); the
/// loader turns the path into `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub severity: Severity,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
    Note,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

/// The list validators append to.
#[derive(Debug, Default)]
pub struct Issues {
    pub items: Vec<Issue>,
}

impl Issues {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }

    pub fn push(
        &mut self,
        severity: Severity,
        path: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.items.push(Issue {
            path: path.into(),
            severity,
            message: message.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|i| i.severity == Severity::Error)
    }
}

/// Deserializes a list of strings the way Go's YAML reads Kubernetes manifests, for fields of
/// addresses: in a flow list, `[1.2.3.4, 2001:db8::]` is, by the letter of YAML 1.2, a
/// one-entry mapping `{"2001:db8:": null}` (a `:` before `]` ends a key), while Go's parser, and so
/// `kubectl` and Istio, read the string `2001:db8::`. mesh reads it as they do.
pub fn go_yaml_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct GoString(String);

    impl<'de> Deserialize<'de> for GoString {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = GoString;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }

                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoString, E> {
                    Ok(GoString(v.to_owned()))
                }

                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<GoString, A::Error> {
                    // `2001:db8::` split at its last `:` into key `2001:db8:` and a null value.
                    let Some(key) = map.next_key::<String>()? else {
                        return Err(serde::de::Error::custom(
                            "expected a string, found an empty mapping",
                        ));
                    };
                    let value: Option<String> = map.next_value()?;
                    if value.is_some() || map.next_key::<IgnoredAny>()?.is_some() {
                        return Err(serde::de::Error::custom(
                            "expected a string, found a mapping",
                        ));
                    }
                    Ok(GoString(format!("{key}:")))
                }
            }
            d.deserialize_any(V)
        }
    }

    let items: Vec<GoString> = Vec::deserialize(d)?;
    Ok(items.into_iter().map(|s| s.0).collect())
}

#[cfg(test)]
mod go_yaml_tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::go_yaml_strings")]
        a: Vec<String>,
    }

    #[test]
    fn ipv6_ending_in_colons_reads_as_go_reads_it() {
        let t: T = serde_saphyr::from_str("a: [1.2.3.4, 2001:db8::, \"::1\"]\n").unwrap();
        assert_eq!(t.a, ["1.2.3.4", "2001:db8::", "::1"]);
        assert!(serde_saphyr::from_str::<T>("a: [{x: y}]\n").is_err());
    }
}

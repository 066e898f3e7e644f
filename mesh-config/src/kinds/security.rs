//! What the security kinds (AuthorizationPolicy, PeerAuthentication, RequestAuthentication)
//! share, and `kube` with them: the `selector`, `targetRef`/`targetRefs` and annotation checks,
//! and the serde helpers for Istio enums and lists of objects, so that all of them use the same
//! rules and messages.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{SeqAccess, Visitor},
};

use super::{
    Issues, Meta,
    authorization_policy::Action,
    common::{PolicyTargetReference, WorkloadSelector},
    rules::{
        GROUP_PATTERN, GROUP_RE, KIND_PATTERN, KIND_RE, validate_dry_run_annotation,
        validate_match_labels,
    },
};

/// A list of objects in which a null item (`- ~`, or a bare `-`) is an error in the API server's
/// words, `<list>[i] in body must be of type object`, rather than serde's. `list` is the path of
/// the list as far as the field knows it.
pub(crate) fn deserialize_objects<'de, D, T>(d: D, list: &'static str) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Items<T> {
        list: &'static str,
        item: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Items<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of objects ({})", self.list)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Option<T>>()? {
                match item {
                    Some(item) => items.push(item),
                    None => {
                        return Err(serde::de::Error::custom(format!(
                            "{}[{}] in body must be of type object: the item is empty (null); \
                             write its fields or remove the `-`",
                            self.list,
                            items.len()
                        )));
                    }
                }
            }
            Ok(items)
        }
    }
    d.deserialize_seq(Items {
        list,
        item: PhantomData,
    })
}

/// [`deserialize_objects`] for an optional list (absent or `null` is `None`).
pub(crate) fn deserialize_optional_objects<'de, D, T>(
    d: D,
    list: &'static str,
) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Optional<T> {
        list: &'static str,
        item: PhantomData<T>,
    }
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Optional<T> {
        type Value = Option<Vec<T>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of objects ({})", self.list)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            deserialize_objects(d, self.list).map(Some)
        }
    }
    d.deserialize_option(Optional {
        list,
        item: PhantomData,
    })
}

/// Declares `fn $name` for `#[serde(deserialize_with)]`: a list of objects at `$list`, see
/// [`deserialize_objects`]; `opt` for an `Option<Vec<_>>` field.
macro_rules! objects_fn {
    ($name:ident, $list:literal) => {
        fn $name<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
        where
            D: Deserializer<'de>,
            T: Deserialize<'de>,
        {
            $crate::kinds::security::deserialize_objects(d, $list)
        }
    };
    (opt $name:ident, $list:literal) => {
        fn $name<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
        where
            D: Deserializer<'de>,
            T: Deserialize<'de>,
        {
            $crate::kinds::security::deserialize_optional_objects(d, $list)
        }
    };
}
pub(crate) use objects_fn;

/// Parses an Istio enum from its exact spelling; anything else is rejected with the API server's
/// wording (`Unsupported value: "X": supported values: ...`).
pub(crate) fn deserialize_enum<'de, D, T>(d: D, all: &[(&str, T)]) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Copy,
{
    let s = String::deserialize(d)?;
    if let Some((_, v)) = all.iter().find(|(name, _)| *name == s) {
        return Ok(*v);
    }
    let supported: Vec<String> = all.iter().map(|(name, _)| format!("{name:?}")).collect();
    Err(serde::de::Error::custom(format!(
        "Unsupported value: {s:?}: supported values: {}",
        supported.join(", ")
    )))
}

/// The Istio spelling of an enum value, from the same table `deserialize_enum` reads.
pub(crate) fn enum_name<T: Copy + PartialEq>(all: &[(&'static str, T)], v: T) -> &'static str {
    all.iter()
        .find(|(_, x)| *x == v)
        .map_or("", |(name, _)| name)
}

const DRY_RUN: &str = "istio.io/dry-run";
const ALWAYS_REJECT: &str = "internal.istio.io/webhook-always-reject";
const INTERNAL_PARENTS: &str = "internal.istio.io/parents";

/// The annotations istiod's webhook checks on every kind. `action` is `Some` for an
/// AuthorizationPolicy, the only kind that supports `istio.io/dry-run`.
pub(crate) fn validate_annotations(meta: &Meta<'_>, action: Option<Action>, out: &mut Issues) {
    let annotations = &meta.metadata.annotations;
    let (ns, name) = (meta.namespace, meta.name);
    if let Some(value) = annotations.get(DRY_RUN) {
        let path = format!("metadata.annotations.{DRY_RUN}");
        match action {
            None => validate_dry_run_annotation(meta, out),
            Some(Action::Allow | Action::Deny) => {
                // Go's strconv.ParseBool.
                let ok = matches!(
                    value.as_str(),
                    "1" | "t"
                        | "T"
                        | "true"
                        | "TRUE"
                        | "True"
                        | "0"
                        | "f"
                        | "F"
                        | "false"
                        | "FALSE"
                        | "False"
                );
                if !ok {
                    out.error(
                        path,
                        format!(
                            "{ns}/{name} has annotation {DRY_RUN} with invalid value ({value}): \
                             write \"true\" or \"false\""
                        ),
                    );
                }
            }
            Some(action) => out.error(
                path,
                format!(
                    "the annotation {DRY_RUN} currently only supports action ALLOW/DENY, found \
                     action {} in {ns}/{name}",
                    action.as_str()
                ),
            ),
        }
    }
    if annotations.contains_key(ALWAYS_REJECT) {
        out.error(
            format!("metadata.annotations.{ALWAYS_REJECT}"),
            format!("{ALWAYS_REJECT:?} annotation found, rejecting"),
        );
    }
    if annotations.contains_key(INTERNAL_PARENTS) {
        out.error(
            format!("metadata.annotations.{INTERNAL_PARENTS}"),
            format!("{INTERNAL_PARENTS:?} annotation found, this may not be set by users"),
        );
    }
}

/// `selector`: the CRD's rules on `matchLabels` and istiod's warning for a selector without
/// labels.
pub(crate) fn validate_selector(selector: Option<&WorkloadSelector>, out: &mut Issues) {
    if let Some(selector) = selector {
        validate_match_labels(&selector.match_labels, "spec.selector.matchLabels", out);
    }
}

/// The (group, kind) a policy may attach to, as istiod allows them.
const ALLOWED_TARGETS: &[(&str, &str)] = &[
    ("core", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// `selector`, `targetRef` and `targetRefs` of AuthorizationPolicy and RequestAuthentication:
/// at most one of them, and each reference well formed and to a kind a policy attaches to.
pub(crate) fn validate_policy_attachment(
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: Option<&[PolicyTargetReference]>,
    out: &mut Issues,
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(target_refs.is_some());
    if set > 1 {
        out.error(
            "spec",
            "only one of targetRefs or selector can be set: keep `selector` (sidecars), or \
             `targetRef`/`targetRefs` (gateways, waypoints), not both",
        );
    }
    validate_selector(selector, out);
    if let Some(r) = target_ref {
        validate_target_ref(r, "spec.targetRef", out);
    }
    if let Some(refs) = target_refs {
        if refs.len() > 16 {
            out.error(
                "spec.targetRefs",
                format!(
                    "spec.targetRefs: Too many: {}: must have at most 16 items",
                    refs.len()
                ),
            );
        }
        for (i, r) in refs.iter().enumerate() {
            validate_target_ref(r, &format!("spec.targetRefs[{i}]"), out);
        }
    }
}

fn validate_target_ref(r: &PolicyTargetReference, path: &str, out: &mut Issues) {
    let group = r.group.as_deref().unwrap_or("");
    if group.len() > 253 {
        out.error(
            format!("{path}.group"),
            format!("{path}.group: Too long: may not be more than 253 bytes"),
        );
    }
    let group_ok = GROUP_RE.is_match(group);
    if !group_ok {
        out.error(
            format!("{path}.group"),
            format!(
                "{path}.group in body should match '{GROUP_PATTERN}': write an API group such as \
                 \"gateway.networking.k8s.io\", or \"\" for the core group"
            ),
        );
    }
    let mut kind_ok = false;
    match r.kind.as_deref() {
        None => out.error(
            format!("{path}.kind"),
            format!("{path}.kind: Required value: e.g. `kind: Service`"),
        ),
        Some("") => out.error(
            format!("{path}.kind"),
            format!("{path}.kind in body should be at least 1 chars long"),
        ),
        Some(kind) if kind.len() > 63 => out.error(
            format!("{path}.kind"),
            format!("{path}.kind: Too long: may not be more than 63 bytes"),
        ),
        Some(kind) if !KIND_RE.is_match(kind) => out.error(
            format!("{path}.kind"),
            format!(
                "{path}.kind in body should match '{KIND_PATTERN}': write a kind such as `Service`"
            ),
        ),
        Some(_) => kind_ok = true,
    }
    match r.name.as_deref() {
        None => out.error(
            format!("{path}.name"),
            format!("{path}.name: Required value: name the resource the policy attaches to"),
        ),
        Some("") => out.error(
            format!("{path}.name"),
            format!("{path}.name in body should be at least 1 chars long"),
        ),
        Some(name) if name.len() > 253 => out.error(
            format!("{path}.name"),
            format!("{path}.name: Too long: may not be more than 253 bytes"),
        ),
        Some(_) => {}
    }
    if r.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        out.error(
            format!("{path}.namespace"),
            "cross namespace referencing is not currently supported: remove `namespace` and put \
             the policy in the target's namespace",
        );
    }
    if group_ok && kind_ok {
        let kind = r.kind.as_deref().unwrap_or("");
        let canonical = if group.is_empty() { "core" } else { group };
        if !ALLOWED_TARGETS
            .iter()
            .any(|&(g, k)| g == canonical && k == kind)
        {
            let allowed: Vec<String> = ALLOWED_TARGETS
                .iter()
                .map(|(g, k)| {
                    if *g == "core" {
                        (*k).to_owned()
                    } else {
                        format!("{g}/{k}")
                    }
                })
                .collect();
            out.error(
                format!("{path}.kind"),
                format!(
                    "targetRef must be to one of [{}] but was {group}/{kind}",
                    allowed.join(", ")
                ),
            );
        }
    }
}

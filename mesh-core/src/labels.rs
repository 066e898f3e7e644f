//! Workload labels and label selectors.

use std::collections::BTreeMap;

/// A workload's labels (`app: reviews, version: v2`).
pub type Labels = BTreeMap<String, String>;

/// A label selector: matches a workload whose labels include every pair (Istio's
/// `workloadSelector.labels`, `selector.matchLabels`, DestinationRule `subsets[].labels`).
/// An empty selector matches every workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selector(pub Labels);

impl Selector {
    pub fn new(labels: Labels) -> Self {
        Selector(labels)
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Selector {
    fn from_iter<T: IntoIterator<Item = (K, V)>>(iter: T) -> Self {
        Selector(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_selector_matches_any_superset(sel in proptest::collection::btree_map("[a-z]{1,4}", "[a-z]{1,4}", 0..4),
                                          extra in proptest::collection::btree_map("[A-Z]{1,4}", "[a-z]{1,4}", 0..4)) {
            let mut labels = sel.clone();
            labels.extend(extra);
            prop_assert!(Selector::new(sel.clone()).matches(&labels));
            if let Some((k, _)) = sel.iter().next() {
                let mut missing = labels.clone();
                missing.remove(k);
                prop_assert!(!Selector::new(sel.clone()).matches(&missing));
            }
        }
    }
}

//! The scenarios: Istio's Bookinfo tasks as YAML files (`examples/bookinfo/scenarios/`),
//! written for this project in the shape of Istio's samples.
//!
//! Each file is self-contained over the base config (`examples/bookinfo/config/`: the Services,
//! the gateway and the default DestinationRules): the runner copies one into its config folder
//! as `scenario.yaml`, and replacing that file switches scenario while Bookinfo runs.

/// A scenario: its name (the file name without `.yaml`), what a person sees, and its YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub summary: &'static str,
    pub yaml: &'static str,
}

macro_rules! scenario {
    ($name:literal, $summary:literal) => {
        Scenario {
            name: $name,
            summary: $summary,
            yaml: include_str!(concat!("../scenarios/", $name, ".yaml")),
        }
    };
}

/// Every scenario, in the order of Istio's tasks.
pub const SCENARIOS: &[Scenario] = &[
    scenario!("all-v1", "every service v1: reviews without stars"),
    scenario!(
        "reviews-v2-v3",
        "reviews 50% v2 (black stars), 50% v3 (red stars)"
    ),
    scenario!(
        "reviews-80-20",
        "reviews 80% v1 (no stars), 20% v2 (black stars)"
    ),
    scenario!(
        "reviews-90-10",
        "reviews 90% v1 (no stars), 10% v2 (black stars)"
    ),
    scenario!("reviews-v3", "reviews v3 only: red stars"),
    scenario!("jason-v2", "jason sees v2 (black stars), everyone else v1"),
    scenario!(
        "ratings-delay-jason",
        "ratings 7 s late for jason: his page gives up on reviews after 6 s"
    ),
    scenario!(
        "ratings-abort-jason",
        "ratings fails (500) for jason: \"Ratings service is currently unavailable\""
    ),
    scenario!(
        "reviews-timeout",
        "reviews times out after 0.5 s, ratings is 2 s late: reviews unavailable after 1 s"
    ),
    scenario!(
        "details-circuit-breaker",
        "details takes 1 request at a time: under load some pages lose their details"
    ),
    scenario!(
        "mirror-v1-to-v2",
        "reviews v1 serves the page, a copy of each call goes to v2"
    ),
    scenario!(
        "mtls-strict",
        "PeerAuthentication STRICT: workloads refuse plain text"
    ),
    scenario!(
        "deny-ratings",
        "AuthorizationPolicy DENY on ratings: 403, stars unavailable"
    ),
    scenario!(
        "allow-productpage-to-reviews",
        "only productpage's identity may call reviews: others get 403"
    ),
    scenario!(
        "ratings-rate-limit",
        "ratings serves 10 requests a minute, then 429"
    ),
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// The names of all scenarios, comma-separated (for error messages).
pub fn names() -> String {
    SCENARIOS
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `scenarios/` is listed, and every listed one exists (include_str!
    /// checks that) and loads with the base config without an error.
    #[test]
    fn every_scenario_file_is_listed_and_loads_with_the_base_config() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        files.sort();
        let mut listed: Vec<String> = SCENARIOS
            .iter()
            .map(|s| format!("{}.yaml", s.name))
            .collect();
        listed.sort();
        assert_eq!(files, listed);

        for s in SCENARIOS {
            let yaml = format!("{}\n---\n{}", crate::runner::base_yaml(), s.yaml);
            let report = mesh_config::Loader::new().check_str(s.name, &yaml);
            assert!(
                !report.diagnostics.has_errors(),
                "{}: {}",
                s.name,
                report.diagnostics
            );
        }
    }

    #[test]
    fn find_knows_every_name_and_only_those() {
        assert_eq!(find("reviews-v3").map(|s| s.name), Some("reviews-v3"));
        assert!(find("reviews-v4").is_none());
        assert!(names().contains("ratings-rate-limit"));
    }
}

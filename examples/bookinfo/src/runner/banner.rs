//! The start-up message: where to look, what runs, and how to switch scenarios.

use std::fmt::Write;

use super::{Running, SCENARIO_FILE};
use crate::{scenarios::SCENARIOS, workloads::WORKLOADS};

/// Where the scenario files are in the source tree (the folder exists when running from a
/// checkout, which is how `cargo run -p bookinfo` runs).
const SCENARIOS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");

impl Running {
    /// The message to print once Bookinfo runs: the page's URL, the scenario, the workloads,
    /// and how to switch scenarios.
    pub fn banner(&self) -> String {
        let dir = self.config_dir().display();
        let mut m = String::new();
        let _ = writeln!(
            m,
            "Bookinfo is running: every service in this process, on the mesh."
        );
        let _ = writeln!(m);
        let _ = writeln!(m, "  Open {}", self.url());
        let _ = writeln!(
            m,
            "  (sign in as \"jason\" for the user-based scenarios; any password)"
        );
        let _ = writeln!(m);
        match self.scenario() {
            Some(s) => {
                let _ = writeln!(m, "  Scenario: {} ({})", s.name, s.summary);
            }
            None => {
                let _ = writeln!(
                    m,
                    "  Scenario: none (no routing rules: reviews spread over v1, v2 and v3)"
                );
            }
        }
        let _ = writeln!(m, "  Config folder (watched): {dir}");
        let _ = writeln!(m);
        let _ = writeln!(
            m,
            "  Workloads (mTLS between them, identities from an in-memory CA):"
        );
        for w in &WORKLOADS {
            if let Some(addr) = self.workload_addr(w.app, w.version) {
                let _ = writeln!(
                    m,
                    "    {:<15} {:<21} {}",
                    w.name(),
                    addr.to_string(),
                    w.spiffe_id()
                );
            }
        }
        let _ = writeln!(m);
        let _ = writeln!(
            m,
            "Switch scenario while it runs by copying one into the folder:"
        );
        let _ = writeln!(
            m,
            "  cp {SCENARIOS_DIR}/reviews-v3.yaml {dir}/{SCENARIO_FILE}"
        );
        let _ = writeln!(
            m,
            "remove {dir}/{SCENARIO_FILE} for none, edit it (or add files) to try your own, or restart with"
        );
        let _ = writeln!(m, "  cargo run --release -p bookinfo -- --scenario NAME");
        let _ = writeln!(m);
        let _ = writeln!(m, "Scenarios ({SCENARIOS_DIR}):");
        for s in SCENARIOS {
            let _ = writeln!(m, "  {:<29} {}", s.name, s.summary);
        }
        let _ = writeln!(m);
        let _ = write!(m, "Press Ctrl-C to stop.");
        m
    }
}

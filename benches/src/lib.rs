//! Shared fixtures for the benchmarks, generated in code so the benchmarks need no files.

pub mod routing {
    //! Route tables and requests for the routing benchmarks.

    use http::Request;
    use mesh_core::matching::{HeaderMatcher, HttpMatch, StringMatcher};

    /// `n` routes, each with one `match` entry, cycling through three shapes that mix the
    /// matchers a real VirtualService uses:
    ///
    /// - `uri: {prefix: /api/v{i}/}` and `headers: {x-tenant: {exact: tenant-{i}}}`
    /// - `uri: {regex: /items/[0-9]+/r{i}}`
    /// - `headers: {x-user: {regex: user-[a-z]+-{i}}}` and `method: {exact: GET}`
    ///
    /// Route `i` matches only [`request_for_route`]`(i)`, so that request for `n - 1` walks
    /// every route.
    pub fn routes(n: usize) -> Vec<Vec<HttpMatch>> {
        (0..n).map(|i| vec![route_match(i)]).collect()
    }

    fn route_match(i: usize) -> HttpMatch {
        let value = |m: StringMatcher| HeaderMatcher::Value(m);
        match i % 3 {
            0 => HttpMatch {
                uri: Some(StringMatcher::prefix(format!("/api/v{i}/"))),
                headers: vec![(
                    "x-tenant".parse().expect("valid header name"),
                    value(StringMatcher::exact(format!("tenant-{i}"))),
                )],
                ..HttpMatch::default()
            },
            1 => HttpMatch {
                uri: Some(
                    StringMatcher::regex(&format!("/items/[0-9]+/r{i}")).expect("valid regex"),
                ),
                ..HttpMatch::default()
            },
            _ => HttpMatch {
                method: Some(StringMatcher::exact("GET")),
                headers: vec![(
                    "x-user".parse().expect("valid header name"),
                    value(StringMatcher::regex(&format!("user-[a-z]+-{i}")).expect("valid regex")),
                )],
                ..HttpMatch::default()
            },
        }
    }

    /// A request that route `i` of [`routes`] matches, and no other route does. It carries
    /// the headers every shape looks at, so non-matching routes fail on their values (the
    /// expensive path), not on a missing header.
    pub fn request_for_route(i: usize) -> Request<()> {
        let (path, tenant, user) = match i % 3 {
            0 => (
                format!("/api/v{i}/reviews/1"),
                format!("tenant-{i}"),
                "user-a-x".to_owned(),
            ),
            1 => (
                format!("/items/12345/r{i}"),
                "tenant-x".to_owned(),
                "user-a-x".to_owned(),
            ),
            _ => (
                "/other".to_owned(),
                "tenant-x".to_owned(),
                format!("user-jason-{i}"),
            ),
        };
        Request::get(format!(
            "http://reviews.default.svc.cluster.local:9080{path}?page=1"
        ))
        .header("x-tenant", tenant)
        .header("x-user", user)
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .body(())
        .expect("valid request")
    }
}

pub mod config {
    //! A large mesh config as YAML text, for the compile benchmark.

    use std::fmt::Write;

    /// `services` Bookinfo-shaped services, each with a Kubernetes Service, three
    /// WorkloadEntries (v1, v2, v3), a DestinationRule with three subsets and a VirtualService
    /// with a header route, a weighted split, retries, a timeout and a fault.
    pub fn large_mesh_yaml(services: usize) -> String {
        let mut y = String::new();
        for i in 0..services {
            let _ = write!(
                y,
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  selector: {{app: svc-{i}}}\n  ports:\n  - name: http\n    port: 9080\n---\n"
            );
            for v in 1..=3 {
                let _ = write!(
                    y,
                    "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: svc-{i}-v{v}\nspec:\n  address: 10.0.{}.{}\n  labels: {{app: svc-{i}, version: v{v}}}\n  serviceAccount: svc-{i}\n---\n",
                    i / 250,
                    (i % 250) + v
                );
            }
            let _ = write!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: svc-{i}\nspec:\n  host: svc-{i}\n  trafficPolicy:\n    connectionPool:\n      http: {{http1MaxPendingRequests: 10}}\n    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n  - {{name: v3, labels: {{version: v3}}}}\n---\n"
            );
            let _ = write!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: svc-{i}\nspec:\n  hosts: [svc-{i}]\n  http:\n  - match:\n    - headers: {{end-user: {{exact: jason}}}}\n      uri: {{regex: \"/items/[0-9]+\"}}\n    fault:\n      delay: {{percentage: {{value: 10}}, fixedDelay: 2s}}\n    route:\n    - destination: {{host: svc-{i}, subset: v2}}\n  - route:\n    - destination: {{host: svc-{i}, subset: v1}}\n      weight: 80\n    - destination: {{host: svc-{i}, subset: v3}}\n      weight: 20\n    timeout: 3s\n    retries: {{attempts: 3, perTryTimeout: 1s, retryOn: \"gateway-error,503\"}}\n---\n"
            );
        }
        y
    }
}

use http::{HeaderName, Request};
use proptest::prelude::*;

use super::*;

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

fn with_headers(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn hname(name: &str) -> HeaderName {
    name.parse().unwrap()
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher::exact(s)
}

fn prefix(s: &str) -> StringMatcher {
    StringMatcher::prefix(s)
}

fn regex(s: &str) -> StringMatcher {
    StringMatcher::regex(s).unwrap()
}

fn uri_match(m: StringMatcher) -> HttpMatch {
    HttpMatch {
        uri: Some(m),
        ..HttpMatch::default()
    }
}

fn header_match(name: &str, m: HeaderMatcher) -> HttpMatch {
    HttpMatch {
        headers: vec![(hname(name), m)],
        ..HttpMatch::default()
    }
}

fn matches(m: &HttpMatch, req: &Request<()>) -> bool {
    m.matches(&RequestView::from_request(req))
}

// === StringMatcher ===

#[test]
fn exact_prefix_regex() {
    assert!(exact("/a").matches("/a"));
    assert!(!exact("/a").matches("/ab"));
    assert!(!exact("/a").matches("/A"));
    assert!(prefix("/a").matches("/a"));
    assert!(prefix("/a").matches("/ab/c"));
    assert!(!prefix("/a").matches("/"));
    assert!(prefix("").matches(""));
    assert!(regex("/v[0-9]+").matches("/v12"));
    assert_eq!(exact("x").kind(), StringMatchKind::Exact);
    assert_eq!(regex("a|b").as_str(), "a|b");
}

#[test]
fn regex_is_a_full_match() {
    let m = regex("/api/v[0-9]");
    assert!(m.matches("/api/v1"));
    assert!(!m.matches("/api/v1/users"), "no implicit trailing .*");
    assert!(!m.matches("x/api/v1"), "no implicit leading .*");
    // An alternation is anchored as a whole, not just its first and last branches.
    let alt = regex("a|b");
    assert!(alt.matches("a") && alt.matches("b"));
    assert!(!alt.matches("ab") && !alt.matches("xb"));
}

#[test]
fn bad_regex_is_an_error() {
    assert!(StringMatcher::regex("(unclosed").is_err());
    assert!(StringMatcher::regex("a{2,1}").is_err());
}

#[test]
fn ignore_case_applies_to_exact_and_prefix_only() {
    assert!(exact("/Reviews").ignore_case(true).matches("/rEVIEWS"));
    assert!(prefix("/API/").ignore_case(true).matches("/api/v1"));
    assert!(!prefix("/API/").ignore_case(true).matches("/ap"));
    let re = regex("/api").ignore_case(true);
    assert!(!re.matches("/API"));
    assert!(!re.is_ignore_case());
    assert!(regex("(?i)/api").matches("/API"));
}

#[test]
fn display_spells_it_like_istio() {
    assert_eq!(prefix("/a").to_string(), r#"prefix: "/a""#);
    assert_eq!(
        exact("GET").ignore_case(true).to_string(),
        r#"exact: "GET" (ignore case)"#
    );
    assert_eq!(HeaderMatcher::Present.to_string(), "present");
}

// === each HttpMatch condition ===

#[test]
fn empty_match_matches_everything() {
    assert!(matches(&HttpMatch::default(), &get("/")));
    assert!(matches(
        &HttpMatch::default(),
        &with_headers("http://x:1/y?z", &[("a", "b")])
    ));
}

#[test]
fn uri_ignores_the_query_string() {
    let m = uri_match(exact("/productpage"));
    assert!(matches(&m, &get("/productpage?u=normal")));
    assert!(matches(&m, &get("http://productpage:9080/productpage?u=x")));
    assert!(!matches(&m, &get("/productpage/x")));
    assert!(matches(&uri_match(regex("/p[a-z]+")), &get("/page?x=1")));
}

#[test]
fn ignore_uri_case() {
    let mut m = uri_match(prefix("/Ratings"));
    assert!(!matches(&m, &get("/ratings/1")));
    m.ignore_uri_case = true;
    assert!(matches(&m, &get("/ratings/1")));
    assert!(matches(&m, &get("/RATINGS")));
    let mut re = uri_match(regex("/Ratings"));
    re.ignore_uri_case = true;
    assert!(!matches(&re, &get("/ratings")), "no effect on regex");
}

#[test]
fn method_scheme_authority() {
    let m = HttpMatch {
        method: Some(exact("POST")),
        ..HttpMatch::default()
    };
    assert!(!matches(&m, &get("/")));
    assert!(matches(&m, &Request::post("/").body(()).unwrap()));

    let https = HttpMatch {
        scheme: Some(exact("https")),
        ..HttpMatch::default()
    };
    assert!(matches(&https, &get("https://a/")));
    assert!(!matches(&https, &get("/")), "origin form defaults to http");
    let req = get("/");
    let view = RequestView::from_request(&req).with_scheme("https");
    assert!(https.matches(&view));

    let auth = HttpMatch {
        authority: Some(prefix("reviews")),
        ..HttpMatch::default()
    };
    assert!(matches(&auth, &get("http://reviews:9080/")));
    assert!(matches(
        &auth,
        &with_headers("/", &[("host", "reviews.default")])
    ));
    assert!(!matches(&auth, &with_headers("/", &[("host", "ratings")])));
    assert!(!matches(&auth, &get("/")), "no authority at all");
    let exact_auth = HttpMatch {
        authority: Some(exact("reviews:9080")),
        ..HttpMatch::default()
    };
    assert!(matches(&exact_auth, &get("http://reviews:9080/x")));
    assert!(!matches(&exact_auth, &get("http://reviews/x")));
}

#[test]
fn headers_by_value_and_presence() {
    let jason = header_match("end-user", exact("jason").into());
    assert!(matches(
        &jason,
        &with_headers("/", &[("end-user", "jason")])
    ));
    assert!(matches(
        &jason,
        &with_headers("/", &[("End-User", "jason")])
    ));
    assert!(!matches(
        &jason,
        &with_headers("/", &[("end-user", "Jason")])
    ));
    assert!(!matches(&jason, &get("/")));

    let present = header_match("x-canary", HeaderMatcher::Present);
    assert!(matches(&present, &with_headers("/", &[("x-canary", "")])));
    assert!(matches(&present, &with_headers("/", &[("x-canary", "no")])));
    assert!(!matches(&present, &get("/")));

    let cookie = header_match("cookie", regex("^(.*?;)?(user=jason)(;.*)?").into());
    assert!(matches(
        &cookie,
        &with_headers("/", &[("cookie", "a=1;user=jason;b=2")])
    ));
    // A full match: Istio's documented pattern does not allow the space browsers send.
    assert!(!matches(
        &cookie,
        &with_headers("/", &[("cookie", "a=1; user=jason")])
    ));
    assert!(!matches(
        &cookie,
        &with_headers("/", &[("cookie", "user=bob")])
    ));
}

#[test]
fn header_names_are_lowercased_when_parsed() {
    let m = header_match("X-Tenant", exact("a").into());
    assert_eq!(m.headers[0].0.as_str(), "x-tenant");
    assert!(matches(&m, &with_headers("/", &[("x-tenant", "a")])));
}

#[test]
fn repeated_headers_are_joined_with_commas() {
    let req = with_headers("/", &[("x-v", "a"), ("x-v", "b")]);
    assert!(matches(&header_match("x-v", exact("a,b").into()), &req));
    assert!(!matches(&header_match("x-v", exact("b").into()), &req));
    assert!(matches(&header_match("x-v", prefix("a,").into()), &req));
}

#[test]
fn non_utf8_header_only_satisfies_presence() {
    let mut req = get("/");
    req.headers_mut()
        .insert("x-bin", http::HeaderValue::from_bytes(b"\xff\xfe").unwrap());
    assert!(matches(
        &header_match("x-bin", HeaderMatcher::Present),
        &req
    ));
    assert!(!matches(&header_match("x-bin", regex(".*").into()), &req));
}

#[test]
fn without_headers_must_not_match() {
    let not_jason = HttpMatch {
        without_headers: vec![(hname("end-user"), exact("jason").into())],
        ..HttpMatch::default()
    };
    assert!(matches(&not_jason, &get("/")));
    assert!(matches(
        &not_jason,
        &with_headers("/", &[("end-user", "bob")])
    ));
    assert!(!matches(
        &not_jason,
        &with_headers("/", &[("end-user", "jason")])
    ));

    let absent = HttpMatch {
        without_headers: vec![(hname("x-debug"), HeaderMatcher::Present)],
        ..HttpMatch::default()
    };
    assert!(matches(&absent, &get("/")));
    assert!(!matches(&absent, &with_headers("/", &[("x-debug", "")])));
}

#[test]
fn query_params() {
    let m = HttpMatch {
        query_params: vec![("key".into(), exact("true").into())],
        ..HttpMatch::default()
    };
    assert!(matches(&m, &get("/p?key=true")));
    assert!(matches(&m, &get("/p?a=1&key=true&b")));
    assert!(!matches(&m, &get("/p?key=false")));
    assert!(!matches(&m, &get("/p?keys=true")));
    assert!(!matches(&m, &get("/p")));
    assert!(
        !matches(&m, &get("/p?key=false&key=true")),
        "the first parameter of a name counts"
    );

    let present = HttpMatch {
        query_params: vec![("debug".into(), HeaderMatcher::Present)],
        ..HttpMatch::default()
    };
    assert!(matches(&present, &get("/p?debug")));
    assert!(matches(&present, &get("/p?debug=")));
    assert!(matches(&present, &get("/p?x=1&debug=0")));
    assert!(!matches(&present, &get("/p?x=debug")));

    let re = HttpMatch {
        query_params: vec![("id".into(), regex("[0-9]+").into())],
        ..HttpMatch::default()
    };
    assert!(matches(&re, &get("/?id=42")));
    assert!(!matches(&re, &get("/?id=42a")));
}

#[test]
fn port() {
    let m = HttpMatch {
        port: Some(9080),
        ..HttpMatch::default()
    };
    assert!(matches(&m, &get("http://reviews:9080/")));
    assert!(matches(&m, &with_headers("/", &[("host", "reviews:9080")])));
    assert!(!matches(&m, &get("http://reviews/")), "http defaults to 80");
    let req = get("/");
    assert!(m.matches(&RequestView::from_request(&req).with_port(9080)));
    let v6 = get("http://[::1]:9080/");
    assert_eq!(RequestView::from_request(&v6).port(), Some(9080));
    let v6_default = with_headers("/", &[("host", "[::1]")]);
    assert_eq!(RequestView::from_request(&v6_default).port(), Some(80));
    assert_eq!(
        RequestView::from_request(&get("https://a/")).port(),
        Some(443)
    );
}

#[test]
fn source_labels_are_a_subset() {
    let m = HttpMatch {
        source_labels: [("app", "productpage"), ("version", "v1")]
            .into_iter()
            .collect(),
        ..HttpMatch::default()
    };
    let req = get("/");
    let labels = |pairs: &[(&str, &str)]| -> crate::Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let more = labels(&[("app", "productpage"), ("version", "v1"), ("x", "y")]);
    let other = labels(&[("app", "productpage"), ("version", "v2")]);
    let fewer = labels(&[("app", "productpage")]);
    let view = RequestView::from_request(&req);
    assert!(m.matches(&view.with_source_labels(&more)));
    assert!(!m.matches(&view.with_source_labels(&other)));
    assert!(!m.matches(&view.with_source_labels(&fewer)));
    assert!(!m.matches(&view), "no labels set");
}

#[test]
fn source_namespace() {
    let m = HttpMatch {
        source_namespace: Some("prod".into()),
        ..HttpMatch::default()
    };
    let req = get("/");
    let view = RequestView::from_request(&req);
    assert!(m.matches(&view.with_source_namespace("prod")));
    assert!(!m.matches(&view.with_source_namespace("dev")));
    assert!(!m.matches(&view));
}

#[test]
fn gateways() {
    let req = get("/");
    let sidecar = RequestView::from_request(&req);
    let ingress = sidecar.with_gateway("istio-system/ingress");
    let mesh = HttpMatch {
        gateways: vec!["mesh".into()],
        ..HttpMatch::default()
    };
    assert!(mesh.matches(&sidecar));
    assert!(mesh.matches(&sidecar.with_gateway("mesh")));
    assert!(!mesh.matches(&ingress));

    let gw = HttpMatch {
        gateways: vec!["istio-system/ingress".into()],
        ..HttpMatch::default()
    };
    assert!(gw.matches(&ingress));
    assert!(!gw.matches(&sidecar));

    let both = HttpMatch {
        gateways: vec!["istio-system/ingress".into(), "mesh".into()],
        ..HttpMatch::default()
    };
    assert!(both.matches(&ingress) && both.matches(&sidecar));
    assert!(HttpMatch::default().matches(&ingress), "no gateways: any");
}

#[test]
fn conditions_are_anded() {
    let m = HttpMatch {
        uri: Some(prefix("/api")),
        method: Some(exact("GET")),
        headers: vec![(hname("x-a"), exact("1").into())],
        ..HttpMatch::default()
    };
    assert!(matches(&m, &with_headers("/api/x", &[("x-a", "1")])));
    assert!(!matches(&m, &with_headers("/web", &[("x-a", "1")])));
    assert!(!matches(&m, &with_headers("/api/x", &[("x-a", "2")])));
    assert!(!matches(&m, &get("/api/x")));
}

// === route lists ===

#[test]
fn match_list_is_ored_and_empty_list_matches_all() {
    let list = [uri_match(exact("/a")), uri_match(exact("/b"))];
    let req_a = get("/a");
    let req_b = get("/b");
    let req_c = get("/c");
    let view = RequestView::from_request;
    assert!(matches_any(&list, &view(&req_a)));
    assert!(matches_any(&list, &view(&req_b)));
    assert!(!matches_any(&list, &view(&req_c)));
    assert!(matches_any(&[], &view(&req_c)));
}

#[test]
fn first_match_wins_in_order() {
    let routes: Vec<Vec<HttpMatch>> = vec![
        vec![header_match("end-user", exact("jason").into())],
        vec![uri_match(prefix("/reviews")), uri_match(prefix("/ratings"))],
        vec![],
        vec![uri_match(prefix("/"))],
    ];
    let first = |req: &Request<()>| {
        first_match_detail(
            routes.iter().map(Vec::as_slice),
            &RequestView::from_request(req),
        )
    };
    let hit = |route, condition| Some(RouteMatch { route, condition });
    assert_eq!(
        first(&with_headers("/ratings", &[("end-user", "jason")])),
        hit(0, Some(0))
    );
    assert_eq!(first(&get("/ratings/1")), hit(1, Some(1)));
    assert_eq!(first(&get("/other")), hit(2, None), "catch-all before '/'");
    let none: [&[HttpMatch]; 0] = [];
    assert_eq!(
        first_match(none, &RequestView::from_request(&get("/"))),
        None
    );
    let no_catch_all = [&routes[0][..], &routes[1][..]];
    assert_eq!(
        first_match(no_catch_all, &RequestView::from_request(&get("/x"))),
        None
    );
}

#[test]
fn view_borrows_the_request_head() {
    let (parts, ()) = with_headers("http://a:81/p/q?x=1&y", &[("k", "v")]).into_parts();
    let view = RequestView::from_parts(&parts);
    assert_eq!(view.method(), "GET");
    assert_eq!(view.scheme(), "http");
    assert_eq!(view.authority(), Some("a:81"));
    assert_eq!(view.path(), "/p/q");
    assert_eq!(view.query(), Some("x=1&y"));
    assert_eq!(view.port(), Some(81));
    assert_eq!(view.gateway(), None);
    assert_eq!(view.headers().len(), 1);
    let with_user = get("http://user:pw@a:82/");
    assert_eq!(
        RequestView::from_request(&with_user).authority(),
        Some("a:82")
    );
    assert_eq!(RequestView::from_request(&with_user).port(), Some(82));
}

// === properties ===

/// Path-like strings (no newline: `.` in a regex does not match one, as in RE2).
fn path_str() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9/._~%-]{0,16}"
}

fn req_with_path(path: &str) -> Request<()> {
    // Paths from the strategy may lack the leading '/': give them one.
    get(&format!("/{path}"))
}

fn distinct_paths() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z]{1,6}", 1..8).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #[test]
    fn exact_matches_only_itself(a in path_str(), b in path_str()) {
        let m = StringMatcher::exact(a.clone());
        prop_assert!(m.matches(&a));
        prop_assert_eq!(m.matches(&b), a == b);
    }

    #[test]
    fn prefix_matches_every_extension(p in path_str(), rest in path_str(), other in path_str()) {
        let m = StringMatcher::prefix(p.clone());
        let extended = format!("{p}{rest}");
        prop_assert!(m.matches(&extended));
        prop_assert_eq!(m.matches(&other), other.starts_with(&p));
    }

    #[test]
    fn regex_literal_dot_star_is_prefix(lit in path_str(), value in path_str(), rest in path_str()) {
        let re = StringMatcher::regex(&format!("{}.*", regex::escape(&lit))).unwrap();
        let pre = StringMatcher::prefix(lit.clone());
        let extended = format!("{lit}{rest}");
        prop_assert_eq!(re.matches(&value), pre.matches(&value));
        prop_assert!(re.matches(&extended));
    }

    #[test]
    fn regex_escaped_literal_is_exact(lit in path_str(), value in path_str()) {
        let re = StringMatcher::regex(&regex::escape(&lit)).unwrap();
        prop_assert_eq!(re.matches(&value), value == lit);
        prop_assert!(re.matches(&lit));
    }

    #[test]
    fn ignore_case_is_ascii_case_insensitive(s in path_str(), other in path_str()) {
        let e = StringMatcher::exact(s.clone()).ignore_case(true);
        let p = StringMatcher::prefix(s.clone()).ignore_case(true);
        for v in [s.to_ascii_uppercase(), s.to_ascii_lowercase(), s.clone()] {
            prop_assert!(e.matches(&v));
            let extended = format!("{v}{other}");
            prop_assert!(p.matches(&extended));
        }
        let fold = |x: &str| x.bytes().map(|b| b.to_ascii_lowercase()).collect::<Vec<u8>>();
        prop_assert_eq!(e.matches(&other), fold(&other) == fold(&s));
    }

    #[test]
    fn uri_match_with_ignore_uri_case(s in path_str(), flip in any::<bool>()) {
        let path = format!("/{s}");
        let asked = if flip { path.to_ascii_uppercase() } else { path.to_ascii_lowercase() };
        let req = get(&asked);
        let mut m = uri_match(StringMatcher::exact(path.clone()));
        m.ignore_uri_case = true;
        prop_assert!(matches(&m, &req));
        m.ignore_uri_case = false;
        prop_assert_eq!(matches(&m, &req), asked == path);
    }

    /// A match list is the OR of its entries, concatenating lists ORs them.
    #[test]
    fn match_list_is_an_or(
        a in prop::collection::vec(path_str(), 0..4),
        b in prop::collection::vec(path_str(), 0..4),
        path in path_str(),
    ) {
        let to_list = |v: &[String]| -> Vec<HttpMatch> {
            v.iter().map(|p| uri_match(StringMatcher::prefix(format!("/{p}")))).collect()
        };
        let (la, lb) = (to_list(&a), to_list(&b));
        let both: Vec<HttpMatch> = la.iter().chain(&lb).cloned().collect();
        let req = req_with_path(&path);
        let view = RequestView::from_request(&req);
        let any_of = |l: &[HttpMatch]| l.iter().any(|m| m.matches(&view));
        prop_assert_eq!(matches_any(&la, &view), la.is_empty() || any_of(&la));
        if !la.is_empty() && !lb.is_empty() {
            prop_assert_eq!(matches_any(&both, &view), any_of(&la) || any_of(&lb));
        }
    }

    /// `first_match` is the lowest index among the routes that match.
    #[test]
    fn first_match_is_the_lowest_matching_index(
        routes in prop::collection::vec(prop::collection::vec(path_str(), 0..3), 0..8),
        path in path_str(),
    ) {
        let routes: Vec<Vec<HttpMatch>> = routes
            .iter()
            .map(|r| r.iter().map(|p| uri_match(StringMatcher::prefix(format!("/{p}")))).collect())
            .collect();
        let req = req_with_path(&path);
        let view = RequestView::from_request(&req);
        let want = routes.iter().position(|r| matches_any(r, &view));
        prop_assert_eq!(first_match(routes.iter().map(Vec::as_slice), &view), want);
    }

    /// With mutually exclusive routes (exact uris, all different) the order of the routes does
    /// not change which route a request lands on.
    #[test]
    fn exclusive_routes_are_order_invariant(
        paths in distinct_paths(),
        pick in any::<prop::sample::Index>(),
        rotate in any::<prop::sample::Index>(),
    ) {
        let routes: Vec<Vec<HttpMatch>> =
            paths.iter().map(|p| vec![uri_match(StringMatcher::exact(format!("/{p}")))]).collect();
        let target = pick.get(&paths);
        let req = req_with_path(target);
        let view = RequestView::from_request(&req);

        let mut order: Vec<usize> = (0..routes.len()).collect();
        order.rotate_left(rotate.index(routes.len()));
        order.reverse();
        let reordered = order.iter().map(|&i| routes[i].as_slice());
        let got = first_match(reordered, &view).map(|i| order[i]);
        let want = first_match(routes.iter().map(Vec::as_slice), &view);
        prop_assert_eq!(got, want);
        prop_assert_eq!(want.map(|i| &paths[i]), Some(target));
    }

    /// A catch-all route shadows every route after it, and none before it.
    #[test]
    fn catch_all_shadows_later_routes(
        before in prop::collection::vec(path_str(), 0..5),
        path in path_str(),
    ) {
        let mut routes: Vec<Vec<HttpMatch>> = before
            .iter()
            .map(|p| vec![uri_match(StringMatcher::exact(format!("/{p}")))])
            .collect();
        routes.push(vec![]);
        routes.push(vec![uri_match(StringMatcher::prefix("/"))]);
        let req = req_with_path(&path);
        let view = RequestView::from_request(&req);
        let got = first_match(routes.iter().map(Vec::as_slice), &view).unwrap();
        let want = before.iter().position(|p| *p == path).unwrap_or(before.len());
        prop_assert_eq!(got, want);
    }

    /// `headers` with presence matches iff the header is there; `withoutHeaders` with the same
    /// matcher is its exact negation, for presence and value matchers alike.
    #[test]
    fn presence_and_absence_are_negations(
        value in proptest::option::of("[ -~]{0,8}"),
        expected in "[ -~]{0,8}",
        by_value in any::<bool>(),
    ) {
        let matcher = if by_value {
            HeaderMatcher::Value(StringMatcher::exact(expected.clone()))
        } else {
            HeaderMatcher::Present
        };
        let req = match &value {
            Some(v) => with_headers("/", &[("x-h", v.as_str())]),
            None => get("/"),
        };
        let with = header_match("x-h", matcher.clone());
        let without = HttpMatch {
            without_headers: vec![(hname("x-h"), matcher)],
            ..HttpMatch::default()
        };
        // http trims nothing, so the header value is exactly what was sent.
        let want = match &value {
            None => false,
            Some(v) => !by_value || *v == expected,
        };
        prop_assert_eq!(matches(&with, &req), want);
        prop_assert_eq!(matches(&without, &req), !want);
    }
}

//! String matchers: Istio's `StringMatch` and the header/query-parameter matcher built on it.

use std::fmt;

use regex::Regex;

/// A compiled Istio [`StringMatch`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#StringMatch):
/// `exact`, `prefix` or `regex`.
///
/// - `exact` and `prefix` compare bytes; with [`ignore_case`](Self::ignore_case) they compare
///   ASCII case-insensitively, as Envoy's `StringMatcher.ignore_case` does (Istio sets it for
///   `ignoreUriCase`).
/// - `regex` is RE2 syntax (the `regex` crate is RE2-like, as Envoy's `safe_regex`) and must match
///   the **whole** value: Envoy's `safe_regex` is a full match, so the pattern is compiled as
///   `^(?:pattern)$`. `ignore_case` has no effect on a regex (Istio: "the case will be ignored only
///   in the case of exact and prefix URI matches"); write `(?i)` in the pattern instead.
///
/// Build it once, when the config loads: [`StringMatcher::regex`] returns the compile error so
/// the loader can report it with the YAML location.
#[derive(Clone)]
pub struct StringMatcher {
    kind: Kind,
    ignore_case: bool,
}

#[derive(Clone)]
enum Kind {
    Exact(Box<str>),
    Prefix(Box<str>),
    /// The anchored regex, and the pattern as the user wrote it (for display).
    Regex(Regex, Box<str>),
}

/// Which of Istio's `StringMatch` variants a [`StringMatcher`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StringMatchKind {
    /// `exact: "..."`
    Exact,
    /// `prefix: "..."`
    Prefix,
    /// `regex: "..."`
    Regex,
}

// === impl StringMatcher ===

impl StringMatcher {
    /// `exact`: the value must equal `value`.
    pub fn exact(value: impl Into<String>) -> Self {
        Self::from_kind(Kind::Exact(value.into().into_boxed_str()))
    }

    /// `prefix`: the value must start with `value` (an empty prefix matches every value).
    pub fn prefix(value: impl Into<String>) -> Self {
        Self::from_kind(Kind::Prefix(value.into().into_boxed_str()))
    }

    /// `regex`: the value must match `pattern` as a whole (the pattern is anchored at both ends).
    ///
    /// Returns the `regex` crate's error for a pattern that does not compile (bad syntax, or a
    /// program over the default size limit), for the config loader to report.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        let anchored = Regex::new(&format!("^(?:{pattern})$"))?;
        Ok(Self::from_kind(Kind::Regex(anchored, pattern.into())))
    }

    fn from_kind(kind: Kind) -> Self {
        Self {
            kind,
            ignore_case: false,
        }
    }

    /// Compares `exact` and `prefix` ASCII case-insensitively (no effect on `regex`).
    #[must_use]
    pub fn ignore_case(mut self, ignore_case: bool) -> Self {
        self.ignore_case = ignore_case;
        self
    }

    /// Whether the matcher compares case-insensitively (only ever true for exact and prefix).
    pub fn is_ignore_case(&self) -> bool {
        self.ignore_case && !matches!(self.kind, Kind::Regex(..))
    }

    /// Which variant this is.
    pub fn kind(&self) -> StringMatchKind {
        match self.kind {
            Kind::Exact(_) => StringMatchKind::Exact,
            Kind::Prefix(_) => StringMatchKind::Prefix,
            Kind::Regex(..) => StringMatchKind::Regex,
        }
    }

    /// The value or pattern as written in the config (a regex without the added anchors).
    pub fn as_str(&self) -> &str {
        match &self.kind {
            Kind::Exact(s) | Kind::Prefix(s) | Kind::Regex(_, s) => s,
        }
    }

    /// Does `value` match?
    pub fn matches(&self, value: &str) -> bool {
        self.matches_with(value, false)
    }

    /// Matches with `ignore_case` forced on when `force_ignore_case` is set (the uri under
    /// `ignoreUriCase`), without cloning the matcher.
    pub(crate) fn matches_with(&self, value: &str, force_ignore_case: bool) -> bool {
        let ignore_case = self.ignore_case || force_ignore_case;
        match &self.kind {
            Kind::Exact(s) if ignore_case => value.eq_ignore_ascii_case(s),
            Kind::Exact(s) => value == &**s,
            Kind::Prefix(s) if ignore_case => value
                .as_bytes()
                .get(..s.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(s.as_bytes())),
            Kind::Prefix(s) => value.starts_with(&**s),
            Kind::Regex(re, _) => re.is_match(value),
        }
    }
}

impl fmt::Debug for StringMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Istio's YAML spelling, e.g. `prefix: "/api"` or `exact: "GET" (ignore case)`.
impl fmt::Display for StringMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind() {
            StringMatchKind::Exact => "exact",
            StringMatchKind::Prefix => "prefix",
            StringMatchKind::Regex => "regex",
        };
        write!(f, "{kind}: {:?}", self.as_str())?;
        if self.is_ignore_case() {
            f.write_str(" (ignore case)")?;
        }
        Ok(())
    }
}

/// Two matchers are equal when they are the same variant with the same value or pattern and the
/// same effective case sensitivity.
impl PartialEq for StringMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind()
            && self.as_str() == other.as_str()
            && self.is_ignore_case() == other.is_ignore_case()
    }
}

impl Eq for StringMatcher {}

/// A condition on one header or query parameter, as in Istio's `headers`, `withoutHeaders` and
/// `queryParams` maps of
/// [`HTTPMatchRequest`](https://istio.io/latest/docs/reference/config/networking/virtual-service/#HTTPMatchRequest).
///
/// Istio: "If the value is empty and only the name of header is specified, presence of the header
/// is checked." The loader maps a `StringMatch` with no value (`{}`, or `exact: ""` /
/// `prefix: ""` / `regex: ""`) to [`HeaderMatcher::Present`], which Envoy calls `present_match`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderMatcher {
    /// The header (or query parameter) must be present, whatever its value (even empty).
    Present,
    /// The header (or query parameter) must be present and its value must match.
    Value(StringMatcher),
}

// === impl HeaderMatcher ===

impl HeaderMatcher {
    /// Does a header or parameter with this value (`None`: absent) satisfy the condition?
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (_, None) => false,
            (HeaderMatcher::Present, Some(_)) => true,
            (HeaderMatcher::Value(m), Some(v)) => m.matches(v),
        }
    }
}

impl From<StringMatcher> for HeaderMatcher {
    fn from(m: StringMatcher) -> Self {
        HeaderMatcher::Value(m)
    }
}

impl fmt::Display for HeaderMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderMatcher::Present => f.write_str("present"),
            HeaderMatcher::Value(m) => fmt::Display::fmt(m, f),
        }
    }
}

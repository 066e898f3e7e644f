//! Diagnostics: what `mesh validate` prints and what `load` returns on failure.

use std::{fmt, path::PathBuf};

use serde::Serialize;

pub use crate::kinds::Severity;

/// One finding about one document, with the place a user fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    /// The document's kind (`VirtualService`), empty when it could not be read.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// `path:line:col: error: Kind namespace/name: message`, as DESIGN.md promises.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: ",
            self.file.display(),
            self.line,
            self.column,
            self.severity.as_str()
        )?;
        if !self.kind.is_empty() {
            write!(f, "{} {}/{}: ", self.kind, self.namespace, self.name)?;
        }
        f.write_str(&self.message)
    }
}

impl Serialize for Severity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Diagnostics of a load, in file order.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Why `load` failed: the config has errors (listed, with warnings), or a path could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the mesh config has {} error(s):\n{diagnostics}", diagnostics.errors().count())]
    Invalid { diagnostics: Diagnostics },
    #[error("cannot read the mesh config: {0}")]
    Io(#[from] std::io::Error),
}

/// The "did you mean" of an unknown name: the closest candidate within a small edit distance.
pub fn closest<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wrong_l = wrong.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&wrong_l, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len().max(wrong.len()) / 3).max(1) || *d == 0)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_neighbours() {
        let fields = ["timeout", "retries", "route", "rewrite"];
        assert_eq!(closest("timout", fields), Some("timeout"));
        assert_eq!(closest("retires", fields), Some("retries"));
        assert_eq!(closest("zzzzzz", fields), None);
        assert_eq!(closest("STRCT", ["STRICT", "PERMISSIVE"]), Some("STRICT"));
    }
}

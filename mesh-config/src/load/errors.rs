//! serde-saphyr's parse errors, reworded as Kubernetes and Istio word them, with the field's
//! path and, for a misspelt name, its closest valid neighbour.

use serde_saphyr::{DefaultMessageFormatter, MessageFormatter};

use super::{
    DocCtx,
    tree::{Node, Pos},
};
use crate::{
    diag::{Diagnostic, closest},
    kinds::Severity,
};

pub(crate) fn parse_error(ctx: &DocCtx<'_>, err: &serde_saphyr::Error) -> Diagnostic {
    let err = err.without_snippet();
    let raw = DefaultMessageFormatter.format_message(err).into_owned();
    let pos = err
        .location()
        .map(|l| Pos {
            line: l.line() as usize,
            column: l.column() as usize,
        })
        .filter(|p| p.line > 0)
        .unwrap_or_else(|| ctx.tree.start());
    let message = reword(ctx.tree, pos, &raw);
    ctx.diag_at(pos, Severity::Error, message)
}

/// Turns serde's wording into the wording a Kubernetes user knows (`spec.hosts: Required value`,
/// `Unsupported value: "BLAH"`), naming the field by its path.
pub(crate) fn reword(tree: &Node, pos: Pos, raw: &str) -> String {
    let path = tree.path_at(pos);
    let field = |p: &str| {
        if p.is_empty() {
            "document".to_owned()
        } else {
            p.to_owned()
        }
    };

    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (name, expected) = split_name(rest);
        let parent = parent(&path);
        let candidates = expected_list(expected);
        let mut msg = format!("{}: unknown field `{name}`", field(parent));
        match closest(name, candidates.iter().map(String::as_str)) {
            Some(best) => msg.push_str(&format!(": did you mean `{best}`?")),
            None => msg.push_str(": remove it or check its spelling"),
        }
        if !candidates.is_empty() {
            msg.push_str(&format!(" (valid fields: {})", candidates.join(", ")));
        }
        return msg;
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (name, expected) = split_name(rest);
        let candidates = expected_list(expected);
        let supported = candidates
            .iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut msg = format!(
            "{}: Unsupported value: {name:?}: supported values: {supported}",
            field(&path)
        );
        if let Some(best) = closest(name, candidates.iter().map(String::as_str)) {
            msg.push_str(&format!(" (did you mean {best:?}?)"));
        }
        return msg;
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let (name, _) = split_name(rest);
        let owner = map_path_at(tree, pos).unwrap_or_else(|| parent(&path).to_owned());
        let full = if owner.is_empty() {
            name.to_owned()
        } else {
            format!("{owner}.{name}")
        };
        return format!("{full}: Required value");
    }
    if let Some(ty) = raw
        .strip_prefix("invalid ")
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        let value = scalar_at(tree, &path).unwrap_or_default();
        return format!(
            "{}: Invalid value: {value:?}: type conversion error from string to {}: write a number",
            field(&path),
            ty.trim()
        );
    }
    if raw.starts_with("expected sequence")
        || raw.contains("invalid type") && raw.contains("sequence")
    {
        return format!(
            "{}: Invalid value: must be of type array (a YAML list): {raw}",
            field(&path)
        );
    }
    if raw.starts_with("expected mapping") || raw.contains("invalid type") && raw.contains("map") {
        return format!(
            "{}: Invalid value: must be of type object (a YAML mapping): {raw}",
            field(&path)
        );
    }
    if raw.starts_with("duplicate mapping key") {
        let key = raw
            .trim_start_matches("duplicate mapping key: ")
            .split(',')
            .next()
            .unwrap_or_default();
        return format!(
            "{}: duplicate key `{key}`: a key may appear once in a mapping",
            field(parent(&path))
        );
    }
    let last = path.rsplit('.').next().unwrap_or_default();
    let mut msg = if path.is_empty() {
        raw.to_owned()
    } else if !last.is_empty() && raw.starts_with(last) && raw.len() > last.len() {
        // serde names the item relative to its list (`items[0] in body ...`): name it in full.
        let parent = parent(&path);
        if parent.is_empty() {
            raw.to_owned()
        } else {
            format!("{parent}.{raw}")
        }
    } else {
        format!("{path}: {raw}")
    };
    suggest_supported_value(&mut msg);
    msg
}

/// For a custom `Unsupported value: "X": supported values: "A", "B"` message, the neighbour.
fn suggest_supported_value(msg: &mut String) {
    let Some(rest) = msg.split("Unsupported value: \"").nth(1) else {
        return;
    };
    let Some((value, tail)) = rest.split_once('"') else {
        return;
    };
    let Some(list) = tail.split("supported values: ").nth(1) else {
        return;
    };
    if msg.contains("did you mean") {
        return;
    }
    let candidates: Vec<&str> = list
        .split(", ")
        .map(|c| c.trim().trim_matches('"'))
        .collect();
    if let Some(best) = closest(value, candidates.iter().copied()) {
        let best = best.to_owned();
        msg.push_str(&format!(" (did you mean {best:?}?)"));
    }
}

/// `name`, then what follows `, expected ...`.
fn split_name(rest: &str) -> (&str, &str) {
    match rest.find('`') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    }
}

/// The names in serde's "expected one of a, b, c" / "expected `a` or `b`" / "expected `a`".
fn expected_list(expected: &str) -> Vec<String> {
    let s = expected.trim_start_matches(',').trim();
    let s = s
        .strip_prefix("expected one of")
        .or_else(|| s.strip_prefix("expected"))
        .unwrap_or("");
    if s.contains("there are no") {
        return Vec::new();
    }
    s.split([','])
        .flat_map(|p| p.split(" or "))
        .map(|p| p.trim().trim_matches('`').to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

fn parent(path: &str) -> &str {
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    &path[..cut]
}

/// The path of the innermost mapping that starts exactly at `pos` (serde points a missing
/// field at the start of the mapping that lacks it).
fn map_path_at(tree: &Node, pos: Pos) -> Option<String> {
    let mut found = None;
    let mut path = String::new();
    let mut node = tree;
    loop {
        if matches!(node, Node::Map { start, .. } if *start == pos) {
            found = Some(path.clone());
        }
        let next = match node {
            Node::Map { entries, .. } => entries.iter().find_map(|(k, v)| {
                let inside = v.start() <= pos && (v.start() == pos || within(v, pos));
                inside.then(|| (k.as_str().unwrap_or("?").to_owned(), v))
            }),
            Node::Seq { items, .. } => items
                .iter()
                .enumerate()
                .find(|(_, v)| v.start() == pos || within(v, pos))
                .map(|(i, v)| (format!("[{i}]"), v)),
            Node::Scalar { .. } => None,
        };
        match next {
            Some((seg, child)) => {
                if seg.starts_with('[') || path.is_empty() {
                    path.push_str(&seg);
                } else {
                    path.push('.');
                    path.push_str(&seg);
                }
                node = child;
            }
            None => return found,
        }
    }
}

fn within(node: &Node, pos: Pos) -> bool {
    match node {
        Node::Map { start, end, .. } | Node::Seq { start, end, .. } => *start <= pos && pos < *end,
        Node::Scalar { .. } => false,
    }
}

fn scalar_at(tree: &Node, path: &str) -> Option<String> {
    let mut found = None;
    tree.walk(&mut |p, _, v| {
        if p == path {
            found = v.as_str().map(str::to_owned);
        }
    });
    found
}

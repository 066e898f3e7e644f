//! A YAML document as a tree of positioned nodes.
//!
//! serde-saphyr gives typed values and positioned *parse* errors; validators, however, find
//! problems after parsing and name them by path (`spec.http[0].timeout`). This tree, built from
//! the same parser's events, turns such a path back into a line and column, and lets the loader
//! read `apiVersion`/`kind` before choosing the type to parse into.

use serde_saphyr::granit_parser::{Event, Parser, ScanError, Span};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone)]
pub enum Node {
    Scalar {
        value: String,
        start: Pos,
        end: Pos,
    },
    Seq {
        items: Vec<Node>,
        start: Pos,
        end: Pos,
    },
    Map {
        entries: Vec<(Node, Node)>,
        start: Pos,
        end: Pos,
    },
}

impl Node {
    pub fn start(&self) -> Pos {
        match self {
            Node::Scalar { start, .. } | Node::Seq { start, .. } | Node::Map { start, .. } => {
                *start
            }
        }
    }

    fn end(&self) -> Pos {
        match self {
            Node::Scalar { end, .. } | Node::Seq { end, .. } | Node::Map { end, .. } => *end,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value under `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node under `key`.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match self {
            Node::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The position of the node a validator's path names, or of its nearest existing ancestor
    /// when the path ends in a field that is absent (a missing required field is reported at the
    /// object that lacks it). For a map key the position is the key's, which is where a reader
    /// looks.
    pub fn locate(&self, path: &str) -> Pos {
        let mut node = self;
        let mut pos = self.start();
        for seg in parse_path(path) {
            let next = match (&seg, node) {
                (Seg::Key(k), Node::Map { .. }) => node.entry(k).map(|(key, value)| {
                    pos = key.start();
                    value
                }),
                (Seg::Index(i), Node::Seq { items, .. }) => {
                    items.get(*i).inspect(|n| pos = n.start())
                }
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        pos
    }

    /// The path of the innermost node that contains `at`: the reverse of [`Node::locate`], used
    /// to name the field a positioned parse error is about.
    pub fn path_at(&self, at: Pos) -> String {
        let mut path = String::new();
        let mut node = self;
        'descend: loop {
            match node {
                Node::Map { entries, .. } => {
                    for (k, v) in entries {
                        let key = k.as_str().unwrap_or("?");
                        if contains(k, at) || contains(v, at) {
                            push_key(&mut path, key);
                            if contains(k, at) {
                                break 'descend;
                            }
                            node = v;
                            continue 'descend;
                        }
                    }
                    break;
                }
                Node::Seq { items, .. } => {
                    for (i, item) in items.iter().enumerate() {
                        if contains(item, at) {
                            path.push_str(&format!("[{i}]"));
                            node = item;
                            continue 'descend;
                        }
                    }
                    break;
                }
                Node::Scalar { .. } => break,
            }
        }
        path
    }

    /// Every path (with indexes and map keys spelled out) under this node that names a value,
    /// calling `f(path, key_node, value_node)`. Used by rules that look for fields by pattern.
    pub fn walk<'a>(&'a self, f: &mut dyn FnMut(&str, &'a Node, &'a Node)) {
        fn go<'a>(node: &'a Node, path: &mut String, f: &mut dyn FnMut(&str, &'a Node, &'a Node)) {
            match node {
                Node::Map { entries, .. } => {
                    for (k, v) in entries {
                        let len = path.len();
                        push_key(path, k.as_str().unwrap_or("?"));
                        f(path, k, v);
                        go(v, path, f);
                        path.truncate(len);
                    }
                }
                Node::Seq { items, .. } => {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        f(path, item, item);
                        go(item, path, f);
                        path.truncate(len);
                    }
                }
                Node::Scalar { .. } => {}
            }
        }
        go(self, &mut String::new(), f);
    }
}

fn contains(node: &Node, at: Pos) -> bool {
    node.start() <= at
        && at
            < node.end().max(Pos {
                line: node.start().line,
                column: node.start().column + 1,
            })
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `spec.http[0].route[1].weight` into keys and indexes. Map keys with dots in them
/// (labels like `app.kubernetes.io/name`) cannot be named exactly; the nearest ancestor is used.
fn parse_path(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(close) = stripped.find(']') else {
                break;
            };
            if let Ok(i) = stripped[..close].parse() {
                out.push(Seg::Index(i));
            }
            rest = &stripped[close + 1..];
        }
    }
    out
}

/// A YAML syntax error, positioned.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

fn pos_of(span: &Span) -> (Pos, Pos) {
    (
        Pos {
            line: span.start.line(),
            column: span.start.col() + 1,
        },
        Pos {
            line: span.end.line(),
            column: span.end.col() + 1,
        },
    )
}

fn syntax(e: &ScanError) -> SyntaxError {
    let m = e.marker();
    SyntaxError {
        pos: Pos {
            line: m.line(),
            column: m.col() + 1,
        },
        message: format!("YAML syntax error: {}", e.info()),
    }
}

/// Parses one YAML document (text without `---` separators). `Ok(None)` for an empty document.
pub fn parse_document(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    // Builders for open collections: (is_map, children, start, anchor).
    enum Open {
        Seq(Vec<Node>, Pos, usize),
        Map(Vec<Node>, Pos, usize),
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: Vec<(usize, Node)> = Vec::new();
    let mut root: Option<Node> = None;
    // Guards against alias bombs: a resolved alias is cloned, so cap the total cloned size.
    let mut budget: usize = 1_000_000;

    while let Some(ev) = parser.next_event() {
        let (event, span) = ev.map_err(|e| syntax(&e))?;
        let (start, end) = pos_of(&span);
        let done: Option<(Node, usize)> = match event {
            Event::Scalar(value, _, anchor, _) => Some((
                Node::Scalar {
                    value: value.into_owned(),
                    start,
                    end,
                },
                anchor,
            )),
            Event::Alias(id) => {
                let node = anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone())
                    .ok_or_else(|| SyntaxError {
                        pos: start,
                        message: "YAML alias refers to an unknown anchor".into(),
                    })?;
                let size = count(&node);
                budget = budget.checked_sub(size).ok_or_else(|| SyntaxError {
                    pos: start,
                    message: "YAML aliases expand to too large a document".into(),
                })?;
                Some((node, 0))
            }
            Event::SequenceStart(_, anchor, _) => {
                stack.push(Open::Seq(Vec::new(), start, anchor));
                None
            }
            Event::MappingStart(_, anchor, _) => {
                stack.push(Open::Map(Vec::new(), start, anchor));
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq(items, start, anchor)) => {
                    Some((Node::Seq { items, start, end }, anchor))
                }
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map(flat, start, anchor)) => {
                    let mut entries = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        entries.push((k, v));
                    }
                    Some((
                        Node::Map {
                            entries,
                            start,
                            end,
                        },
                        anchor,
                    ))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some((node, anchor)) = done {
            if anchor != 0 {
                anchors.push((anchor, node.clone()));
            }
            match stack.last_mut() {
                Some(Open::Seq(items, ..)) | Some(Open::Map(items, ..)) => items.push(node),
                None => {
                    if root.is_none() {
                        root = Some(node);
                    }
                }
            }
        }
    }
    // An empty document parses as a null scalar: treat it as no document.
    Ok(root.filter(|n| !matches!(n, Node::Scalar { value, .. } if value.is_empty() || value == "~" || value == "null")))
}

fn count(node: &Node) -> usize {
    match node {
        Node::Scalar { .. } => 1,
        Node::Seq { items, .. } => 1 + items.iter().map(count).sum::<usize>(),
        Node::Map { entries, .. } => {
            1 + entries
                .iter()
                .map(|(k, v)| count(k) + count(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: v1\nkind: VirtualService\nspec:\n  hosts: [a, b]\n  http:\n  - route:\n    - destination:\n        host: reviews\n      weight: 10\n";

    #[test]
    fn locates_paths() {
        let root = parse_document(DOC).unwrap().unwrap();
        assert_eq!(root.locate("kind"), Pos { line: 2, column: 1 });
        assert_eq!(
            root.locate("spec.hosts[1]"),
            Pos {
                line: 4,
                column: 14
            }
        );
        assert_eq!(
            root.locate("spec.http[0].route[0].weight"),
            Pos { line: 9, column: 7 }
        );
        // A missing field points at its nearest ancestor.
        assert_eq!(
            root.locate("spec.http[0].timeout"),
            Pos { line: 6, column: 5 }
        );
    }

    #[test]
    fn finds_the_path_at_a_position() {
        let root = parse_document(DOC).unwrap().unwrap();
        assert_eq!(
            root.path_at(Pos {
                line: 9,
                column: 15
            }),
            "spec.http[0].route[0].weight"
        );
        assert_eq!(
            root.path_at(Pos { line: 8, column: 9 }),
            "spec.http[0].route[0].destination.host"
        );
    }

    #[test]
    fn empty_and_broken_documents() {
        assert!(parse_document("").unwrap().is_none());
        assert!(parse_document("# only a comment\n").unwrap().is_none());
        let err = parse_document("a: [b\n").unwrap_err();
        assert!(err.message.contains("YAML syntax error"), "{}", err.message);
    }

    #[test]
    fn aliases_resolve() {
        let root = parse_document("a: &x {b: 1}\nc: *x\n").unwrap().unwrap();
        assert_eq!(
            root.get("c")
                .and_then(|c| c.get("b"))
                .and_then(Node::as_str),
            Some("1")
        );
    }
}

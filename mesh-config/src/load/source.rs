//! Finding YAML files and splitting them into documents.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Expands the paths a user gave: files are taken as they are, folders are walked recursively
/// for `*.yaml` and `*.yml` (sorted, so diagnostics come out in a stable order). Hidden entries
/// (`.git`, and the `..data` folders of a Kubernetes ConfigMap mount) are skipped; the visible
/// symlinks of such a mount are followed.
pub fn expand(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
        if meta.is_dir() {
            walk(p, &mut out, 0)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> io::Result<()> {
    if depth > 32 {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling symlink
        };
        if meta.is_dir() {
            walk(&path, out, depth + 1)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            out.push(path);
        }
    }
    Ok(())
}

/// One document of a multi-document file.
#[derive(Debug, Clone)]
pub struct DocText {
    /// The document's text, with the `---` marker blanked so columns stay true.
    pub text: String,
    /// How many lines of the file come before `text`'s first line.
    pub line_offset: usize,
}

/// Splits a YAML stream on document markers. YAML forbids `---` and `...` at column 0 inside a
/// document's content (even in block scalars), so a line scan splits exactly where the parser
/// would, and a syntax error in one document does not hide the others.
pub fn split_documents(text: &str) -> Vec<DocText> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut has_content = false;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_start = bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t");
        let is_end = bare == "..." || bare.starts_with("... ");
        if is_start || is_end {
            if has_content {
                docs.push(DocText {
                    text: std::mem::take(&mut current),
                    line_offset: start,
                });
            }
            current.clear();
            has_content = false;
            start = i;
            if is_start {
                // Keep content after `--- ` on the marker line, at its column.
                let rest = &line[3..];
                current.push_str("   ");
                current.push_str(rest);
                has_content = !rest.trim().is_empty() && !rest.trim_start().starts_with('#');
            } else {
                current.push('\n');
            }
            continue;
        }
        if current.is_empty() {
            start = i;
        }
        current.push_str(line);
        let t = bare.trim_start();
        if !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
            has_content = true;
        }
    }
    if has_content {
        docs.push(DocText {
            text: current,
            line_offset: start,
        });
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_with_line_offsets() {
        let docs = split_documents("# head\na: 1\n---\nb: 2\n---\n# empty\n---\nc: |\n  x\n");
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.line_offset, d.text.trim().to_owned()))
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].0, 0);
        assert_eq!(got[1].0, 2);
        assert_eq!(got[1].1, "b: 2");
        assert_eq!(got[2].0, 6);
    }

    #[test]
    fn content_on_the_marker_line_keeps_its_column() {
        let docs = split_documents("--- a: 1\n");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].text, "    a: 1\n");
    }
}

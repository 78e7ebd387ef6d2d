//! Where a config is wrong: a `Problem` names the line, the key
//! (`listener[0].route[1].pool`) and what is wrong; `Problems` collects them
//! during validation, finding each key's line in the TOML document.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a config: where (line, key) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

pub(super) fn render_problems(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&p.to_string_in(file));
    }
    out
}

impl Problem {
    pub(super) fn to_string_in(&self, file: &str) -> String {
        match (self.line, self.key.is_empty()) {
            (Some(l), false) => format!("{file}:{l}: {}: {}", self.key, self.message),
            (Some(l), true) => format!("{file}:{l}: {}", self.message),
            (None, false) => format!("{file}: {}: {}", self.key, self.message),
            (None, true) => format!("{file}: {}", self.message),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string_in("config"))
    }
}

/// A path into the TOML document, e.g. `listener[0].route[1].pool`.
#[derive(Debug, Clone, Default)]
pub(super) struct KeyPath(Vec<Seg>);

#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(&'static str),
    Index(usize),
}

impl KeyPath {
    pub(super) fn key(&self, k: &'static str) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k));
        KeyPath(v)
    }
    pub(super) fn index(&self, k: &'static str, i: usize) -> KeyPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k));
        v.push(Seg::Index(i));
        KeyPath(v)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

pub(super) struct Problems<'a> {
    pub(super) src: &'a str,
    /// The text parsed again, with spans, to name a problem's line: only once
    /// there is a problem (it was 43% of checking a good config of 3,000
    /// servers, twice over).
    doc: std::cell::OnceCell<Option<toml_edit::Document<&'a str>>>,
    pub(super) list: Vec<Problem>,
}

impl<'a> Problems<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Problems {
            src,
            doc: std::cell::OnceCell::new(),
            list: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, at: &KeyPath, message: impl Into<String>) {
        let src = self.src;
        let line = self
            .doc
            .get_or_init(|| toml_edit::Document::parse(src).ok())
            .as_ref()
            .and_then(|d| locate(d, &at.0))
            .map(|off| line_of(self.src, off));
        self.list.push(Problem {
            line,
            key: at.to_string(),
            message: message.into(),
        });
    }
}

/// Byte offset of the deepest part of `path` that exists in the document.
pub(super) fn locate(doc: &toml_edit::Document<&str>, path: &[Seg]) -> Option<usize> {
    enum Node<'n> {
        Item(&'n toml_edit::Item),
        Table(&'n toml_edit::Table),
        Value(&'n toml_edit::Value),
    }
    let mut node = Node::Table(doc.as_table());
    let mut found: Option<usize> = None;
    for seg in path {
        let next = match (seg, &node) {
            (Seg::Key(k), n) => {
                let table: Option<&dyn toml_edit::TableLike> = match n {
                    Node::Item(i) => i.as_table_like(),
                    Node::Table(t) => Some(*t),
                    Node::Value(v) => v.as_inline_table().map(|t| t as &dyn toml_edit::TableLike),
                };
                table.and_then(|t| t.get_key_value(k)).map(|(key, item)| {
                    (
                        key.span().or_else(|| item.span()).map(|s| s.start),
                        Node::Item(item),
                    )
                })
            }
            (Seg::Index(i), Node::Item(toml_edit::Item::ArrayOfTables(a))) => a
                .get(*i)
                .map(|t| (t.span().map(|s| s.start), Node::Table(t))),
            (Seg::Index(i), Node::Item(toml_edit::Item::Value(toml_edit::Value::Array(a))))
            | (Seg::Index(i), Node::Value(toml_edit::Value::Array(a))) => a
                .get(*i)
                .map(|v| (v.span().map(|s| s.start), Node::Value(v))),
            _ => None,
        };
        match next {
            Some((off, n)) => {
                found = off.or(found);
                node = n;
            }
            None => break,
        }
    }
    found
}

pub(super) fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The bare key written at the start of the line holding `offset`, if any, so a
/// parse error can name it even when the parser's message does not.
pub(super) fn key_at(src: &str, offset: usize) -> Option<String> {
    let end = offset.min(src.len());
    let start = src[..end].rfind('\n').map_or(0, |i| i + 1);
    let line = src[start..].lines().next()?;
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.'))
    .then(|| k.to_string())
}

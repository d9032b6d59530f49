//! The error of a rule file that cannot be used, and how it finds the line, rule and key
//! that a problem is about.

use std::fmt;
use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A rule file that cannot be used. Its display form is
/// `FILE:LINE: rule "ID": KEY: REASON`, leaving out what is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub file: String,
    pub line: Option<usize>,
    /// The id of the rule the problem is in, when it is in one.
    pub rule: Option<String>,
    /// The key within the rule (or the file, outside rules), as a dotted path such as
    /// `all[1].threshold.deadband`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, ": rule {rule:?}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// A key path within a rule or the file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    pub fn key(&self, key: &str) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    pub fn index(&self, i: usize) -> KeyPath {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The text of a rule file with its spanned syntax tree, to turn byte offsets and key paths
/// into lines, rule ids and keys for error messages.
pub(crate) struct Locator<'a> {
    pub file: &'a str,
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Locator<'a> {
    pub fn new(file: &'a str, text: &'a str, root: Option<Spanned<DeTable<'a>>>) -> Self {
        Locator { file, text, root }
    }

    fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        self.text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The id of the `index`th rule, as written.
    fn rule_id(&self, index: usize) -> Option<String> {
        let rule = self.rules()?.get(index)?;
        let id = rule.get_ref().as_table()?.get("id")?;
        id.get_ref().as_str().map(str::to_owned)
    }

    fn rules(&self) -> Option<&[Spanned<DeValue<'a>>]> {
        let root = self.root.as_ref()?;
        let rules = root.get_ref().get("rule")?;
        rules.get_ref().as_array().map(|a| &a[..])
    }

    /// An error about the value at `path` in the `rule`th rule (or in the file when `rule`
    /// is `None`).
    pub fn error(
        &self,
        rule: Option<usize>,
        path: &KeyPath,
        reason: impl Into<String>,
    ) -> RuleError {
        let mut span: Option<Range<usize>> = None;
        if let Some(root) = &self.root {
            let mut value: Option<&Spanned<DeValue<'a>>> = None;
            let mut table: Option<&DeTable<'a>> = Some(root.get_ref());
            if let Some(i) = rule {
                value = self.rules().and_then(|r| r.get(i));
                span = value.map(|v| v.span());
                table = value.and_then(|v| v.get_ref().as_table());
            }
            for seg in &path.0 {
                let next = match seg {
                    Seg::Key(k) => table.and_then(|t| {
                        t.get_key_value(k.as_str()).map(|(key, v)| {
                            span = Some(key.span());
                            v
                        })
                    }),
                    Seg::Index(n) => value
                        .and_then(|v| v.get_ref().as_array())
                        .and_then(|a| a.get(*n))
                        .inspect(|v| span = Some(v.span())),
                };
                let Some(next) = next else { break };
                value = Some(next);
                table = next.get_ref().as_table();
            }
        }
        RuleError {
            file: self.file.to_owned(),
            line: span.map(|s| self.line_of(s.start)),
            rule: rule.and_then(|i| self.rule_id(i)),
            key: path.to_string(),
            reason: reason.into(),
        }
    }

    /// An error that the TOML parser or deserializer reported at a byte range.
    pub fn toml_error(&self, e: &toml::de::Error) -> RuleError {
        let reason = e.message().trim_end_matches('.').to_owned();
        let Some(span) = e.span() else {
            return RuleError {
                file: self.file.to_owned(),
                line: None,
                rule: None,
                key: String::new(),
                reason,
            };
        };
        let (rule, path) = self
            .path_at(span.start)
            .unwrap_or((None, KeyPath::default()));
        RuleError {
            file: self.file.to_owned(),
            line: Some(self.line_of(span.start)),
            rule: rule.and_then(|i| self.rule_id(i)),
            key: path.to_string(),
            reason,
        }
    }

    /// The rule and key path of the innermost key or value at `offset`.
    fn path_at(&self, offset: usize) -> Option<(Option<usize>, KeyPath)> {
        let root = self.root.as_ref()?;
        let mut path = KeyPath::default();
        walk_table(root.get_ref(), offset, &mut path);
        // Split `rule[i]` off the front: keys are shown relative to their rule.
        match path.0.as_slice() {
            [Seg::Key(k), Seg::Index(i), ..] if k == "rule" => {
                let i = *i;
                path.0.drain(..2);
                Some((Some(i), path))
            }
            _ => Some((None, path)),
        }
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut KeyPath) {
    // Tables of an array of tables (`[[rule]]`) have spans covering only their header, so a
    // table entry is also followed when the offset lies after its key and before the next
    // key of the same table: choose the last key that starts at or before the offset.
    let mut best: Option<(&str, &Spanned<DeValue<'_>>, usize)> = None;
    for (key, value) in table.iter() {
        if contains(&key.span(), offset) || contains(&value.span(), offset) {
            path.0.push(Seg::Key(key.get_ref().to_string()));
            walk_value(value, offset, path);
            return;
        }
        let start = key.span().start;
        if start <= offset && best.is_none_or(|(_, _, s)| start > s) {
            best = Some((key.get_ref(), value, start));
        }
    }
    if let Some((key, value, _)) = best
        && (value.get_ref().is_array() || value.get_ref().is_table())
    {
        path.0.push(Seg::Key(key.to_owned()));
        walk_value(value, offset, path);
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut KeyPath) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(t, offset, path),
        DeValue::Array(items) => {
            // Like tables: an element whose span holds the offset, or the last one that
            // starts before it (array-of-tables elements span only their header).
            let mut chosen = None;
            for (i, item) in items.iter().enumerate() {
                if contains(&item.span(), offset) {
                    chosen = Some(i);
                    break;
                }
                if item.span().start <= offset {
                    chosen = Some(i);
                }
            }
            if let Some(i) = chosen {
                path.0.push(Seg::Index(i));
                walk_value(&items[i], offset, path);
            }
        }
        _ => {}
    }
}

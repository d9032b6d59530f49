//! Reading TOML config files into serde structs with errors that name the file, the line,
//! the key and the reason. Shared by device profiles here and by the node's own config.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A config file that could not be used. Its display form is
/// `FILE:LINE: KEY: REASON` (the line is left out where it is not known).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl ConfigError {
    /// An error found after parsing, while validating the value at `key`. The line is found
    /// by looking for the key's last segment in the text, where that is unambiguous enough
    /// to help a person.
    pub fn invalid(
        file: &Path,
        text: &str,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        let key = key.into();
        let line = line_of_key(text, &key);
        ConfigError {
            file: file.to_path_buf(),
            line,
            key,
            reason: reason.into(),
        }
    }
}

/// Parses `text` (the contents of `file`) as TOML into `T`.
pub fn parse_toml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::de::Deserializer::parse(text)
        .map_err(|e| toml_error(file, text, String::new(), e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        toml_error(file, text, key, e.into_inner())
    })
}

/// Reads a config file's text, with an error that names the file.
pub fn read_text(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: None,
        key: String::new(),
        reason: format!("cannot read the file: {e}"),
    })
}

fn toml_error(file: &Path, text: &str, key: String, e: toml::de::Error) -> ConfigError {
    let line = e.span().map(|span| line_at(text, span.start));
    let reason = in_format_words(e.message().trim_end_matches('.'));
    let line = line.or_else(|| line_of_key(text, &key));
    ConfigError {
        file: file.to_path_buf(),
        line,
        key,
        reason,
    }
}

/// The line (from 1) of a byte offset into `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line of `key`, a path such as `point[3].name` as the errors spell it: where its last
/// segment is assigned or, when that key is missing, where the table that lacks it starts
/// (a `[[point]]` header, an inline table). `None` when the path names nothing in `text`.
pub(crate) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    spanned_line_of_key(text, key).or_else(|| assigned_once(text, key))
}

fn spanned_line_of_key(text: &str, key: &str) -> Option<usize> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found: Option<usize> = None;
    for segment in key.split('.') {
        let mut parts = segment.split('[');
        let name = parts.next()?;
        let Some((k, v)) = table.iter().find(|(k, _)| k.get_ref() == name) else {
            // A missing key: the table that should hold it.
            return found.map(|at| line_at(text, at));
        };
        found = Some(k.span().start);
        let mut value = v;
        for index in parts {
            let i: usize = index.strip_suffix(']')?.parse().ok()?;
            value = value.get_ref().as_array()?.get(i)?;
            found = Some(value.span().start);
        }
        match value.get_ref().as_table() {
            Some(t) => table = t,
            None => break,
        }
    }
    found.map(|at| line_at(text, at))
}

/// The line where the last segment of a dotted key path is assigned, if it appears once: for
/// keys that are not paths into the text.
fn assigned_once(text: &str, key: &str) -> Option<usize> {
    let last = key.rsplit('.').next()?.split('[').next()?;
    if last.is_empty() {
        return None;
    }
    let mut found = text.lines().enumerate().filter(|(_, l)| {
        let l = l.trim_start();
        l.strip_prefix(last)
            .is_some_and(|rest| rest.trim_start().starts_with('='))
    });
    let first = found.next()?;
    found.next().is_none().then_some(first.0 + 1)
}

/// serde speaks of Rust's types (`expected u16`, `expected struct Inner`, `missing field`);
/// a config file is TOML, with keys, integers, floats, arrays and tables. Rewrites the
/// former into the latter.
fn in_format_words(message: &str) -> String {
    const WORDS: [(&str, &str); 20] = [
        ("missing field", "missing key"),
        ("unknown field", "unknown key"),
        ("duplicate field", "duplicate key"),
        ("floating point", "float"),
        ("wanted string or table", "expected a string"),
        ("expected a sequence", "expected an array"),
        ("expected a map", "expected a table"),
        ("invalid type: sequence", "invalid type: array"),
        ("invalid type: map", "invalid type: table"),
        ("expected u8", "expected an integer from 0 to 255"),
        ("expected u16", "expected an integer from 0 to 65535"),
        ("expected u32", "expected an integer from 0 to 4294967295"),
        ("expected u64", "expected an integer of at least 0"),
        ("expected usize", "expected an integer of at least 0"),
        ("expected i8", "expected an integer"),
        ("expected i16", "expected an integer"),
        ("expected i32", "expected an integer"),
        ("expected i64", "expected an integer"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
    ];
    let mut out = message.to_string();
    for (rust, toml) in WORDS {
        let mut from = 0;
        while let Some(at) = out[from..].find(rust).map(|i| i + from) {
            let end = at + rust.len();
            // Whole words only: `expected u16` but not a longer name that starts the same.
            if out[end..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                from = end;
                continue;
            }
            out.replace_range(at..end, toml);
            from = at + toml.len();
        }
    }
    // `expected struct ProfileConfig`, `expected enum Order`: a table, a string.
    for (rust, toml) in [
        ("expected struct ", "a table"),
        ("expected enum ", "a string"),
    ] {
        if let Some(at) = out.find(rust) {
            let name_end = out[at + rust.len()..]
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .map_or(out.len(), |i| i + at + rust.len());
            out.replace_range(at..name_end, &format!("expected {toml}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        port: u16,
    }

    #[test]
    fn errors_name_file_line_key_and_reason() {
        let text = "name = \"a\"\n[inner]\nport = 70000\n";
        let err = parse_toml::<Outer>(Path::new("site.toml"), text).unwrap_err();
        assert_eq!(err.file, Path::new("site.toml"));
        assert_eq!(err.line, Some(3));
        assert_eq!(err.key, "inner.port");
        let shown = err.to_string();
        assert!(shown.starts_with("site.toml:3: inner.port: "), "{shown}");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let text = "name = \"a\"\n[inner]\nport = 1\nprot = 2\n";
        let err = parse_toml::<Outer>(Path::new("x.toml"), text).unwrap_err();
        assert!(err.reason.contains("prot"), "{err}");
        assert_eq!(err.line, Some(4));
    }

    #[test]
    fn a_missing_key_is_reported_at_the_table_that_lacks_it() {
        let text = "name = \"a\"\n\n[inner]\n";
        let err = parse_toml::<Outer>(Path::new("x.toml"), text).unwrap_err();
        assert_eq!(err.line, Some(3), "{err}");
        assert_eq!(err.reason, "missing key `port`");
        let text = "[inner]\nport = 1\n";
        let err = parse_toml::<Outer>(Path::new("x.toml"), text).unwrap_err();
        assert_eq!(err.reason, "missing key `name`");
        assert!(err.line.is_some(), "{err}");
    }

    #[test]
    fn keys_inside_arrays_of_tables_are_found_by_index() {
        let text = "[[point]]\nname = \"a\"\n\n[[point]]\nname = \"b\"\nio = { port = 1 }\n";
        assert_eq!(line_of_key(text, "point[1].name"), Some(5));
        assert_eq!(line_of_key(text, "point[0].name"), Some(2));
        // Missing keys: the table that should have them.
        assert_eq!(line_of_key(text, "point[1].address"), Some(4));
        assert_eq!(line_of_key(text, "point[1].io.unit"), Some(6));
        assert_eq!(line_of_key(text, "point[2].name"), None);
    }

    #[test]
    fn messages_name_toml_types_not_rust_types() {
        for (text, reason) in [
            (
                "name = \"a\"\n[inner]\nport = \"80\"\n",
                "invalid type: string \"80\", expected an integer from 0 to 65535",
            ),
            (
                "name = \"a\"\n[inner]\nport = 70000\n",
                "invalid value: integer `70000`, expected an integer from 0 to 65535",
            ),
            (
                "name = \"a\"\n[inner]\nport = 1.5\n",
                "invalid type: float `1.5`, expected an integer from 0 to 65535",
            ),
            (
                "name = \"a\"\ninner = 3\n",
                "invalid type: integer `3`, expected a table",
            ),
        ] {
            let err = parse_toml::<Outer>(Path::new("x.toml"), text).unwrap_err();
            assert_eq!(err.reason, reason, "{text}");
        }
        assert_eq!(in_format_words("expected u16x"), "expected u16x");
        assert_eq!(
            in_format_words("invalid type: map, expected f64"),
            "invalid type: table, expected a number"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let err = parse_toml::<Outer>(Path::new("x.toml"), "name = \"a\"\n[inner\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }
}

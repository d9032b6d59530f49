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
    let line = e
        .span()
        .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
    let reason = e.message().trim_end_matches('.').to_string();
    let line = line.or_else(|| line_of_key(text, &key));
    ConfigError {
        file: file.to_path_buf(),
        line,
        key,
        reason,
    }
}

/// The line where the last segment of a dotted key path is assigned, if it appears once.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
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
    fn syntax_errors_have_a_line() {
        let err = parse_toml::<Outer>(Path::new("x.toml"), "name = \"a\"\n[inner\n").unwrap_err();
        assert_eq!(err.line, Some(2), "{err}");
    }
}

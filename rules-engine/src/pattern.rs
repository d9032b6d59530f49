//! Source patterns and the index that finds the rules watching a source.
//!
//! A pattern is a key with `*` wildcards: `*` matches any run of characters other than
//! `/`, so `ahu-1/*` is every point of device `ahu-1`, `*/supply_temp` is that point on
//! every device and `ahu-*/supply_temp` is that point on the devices whose names start with
//! `ahu-`. The index answers "which rules watch this key" by hashing, not by scanning:
//! exact keys, literal devices and literal points are hash lookups, and only patterns with
//! wildcards on both sides of the `/` are tested one by one. The engine resolves a key once,
//! when it first sees it, and remembers the answer.

use std::collections::HashMap;

/// A compiled source pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    text: String,
}

impl Pattern {
    /// Checks a pattern. `points` patterns must have the form `device/point`.
    pub fn parse(text: &str, point_key: bool) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("a pattern must not be empty".to_owned());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{text:?} contains white space"));
        }
        if text.contains("**") {
            return Err(format!(
                "{text:?}: use one `*`; it already matches any run of characters"
            ));
        }
        if point_key {
            match text.split_once('/') {
                Some((device, point))
                    if !device.is_empty() && !point.is_empty() && !point.contains('/') => {}
                _ => {
                    return Err(format!(
                        "{text:?} is not a point pattern `device/point` (for example `ahu-1/*` or `*/supply_temp`)"
                    ));
                }
            }
        }
        Ok(Pattern {
            text: text.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, key: &str) -> bool {
        glob_match(self.text.as_bytes(), key.as_bytes())
    }

    fn is_literal(&self) -> bool {
        !self.text.contains('*')
    }
}

/// Matches `key` against `pattern`, where `*` matches any run of bytes other than `/`.
/// Iterative with one backtracking point per segment: linear for patterns without `/`
/// inside a wildcard's reach, and never recursive.
fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, k));
            p += 1;
        } else if p < pattern.len() && pattern[p] == key[k] {
            p += 1;
            k += 1;
        } else if let Some((sp, sk)) = star {
            // The star may swallow one more byte, unless that byte is a separator.
            if key[sk] == b'/' {
                return false;
            }
            p = sp + 1;
            k = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Rules indexed by their patterns. Values are rule indices into the rule set.
#[derive(Debug, Default)]
pub(crate) struct PatternIndex {
    exact: HashMap<String, Vec<u32>>,
    by_device: HashMap<String, Vec<(u32, Pattern)>>,
    by_point: HashMap<String, Vec<(u32, Pattern)>>,
    scan: Vec<(u32, Pattern)>,
}

impl PatternIndex {
    pub fn insert(&mut self, rule: u32, pattern: &Pattern) {
        if pattern.is_literal() {
            self.exact
                .entry(pattern.text.clone())
                .or_default()
                .push(rule);
            return;
        }
        if let Some((device, point)) = pattern.text.split_once('/') {
            if !device.contains('*') {
                let list = self.by_device.entry(device.to_owned()).or_default();
                list.push((rule, pattern.clone()));
                return;
            }
            if !point.contains('*') {
                let list = self.by_point.entry(point.to_owned()).or_default();
                list.push((rule, pattern.clone()));
                return;
            }
        }
        self.scan.push((rule, pattern.clone()));
    }

    /// The rules whose patterns match `key`, in rule order, each once.
    pub fn lookup(&self, key: &str, out: &mut Vec<u32>) {
        out.clear();
        if let Some(rules) = self.exact.get(key) {
            out.extend_from_slice(rules);
        }
        if let Some((device, point)) = key.split_once('/') {
            if let Some(list) = self.by_device.get(device) {
                out.extend(list.iter().filter(|(_, p)| p.matches(key)).map(|(r, _)| *r));
            }
            if let Some(list) = self.by_point.get(point) {
                out.extend(list.iter().filter(|(_, p)| p.matches(key)).map(|(r, _)| *r));
            }
        }
        out.extend(
            self.scan
                .iter()
                .filter(|(_, p)| p.matches(key))
                .map(|(r, _)| *r),
        );
        out.sort_unstable();
        out.dedup();
    }

    /// Literal keys, for rules that must watch a key before it ever reports.
    pub fn exact_keys(&self) -> impl Iterator<Item = (&str, &[u32])> {
        self.exact.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text, true).unwrap()
    }

    #[test]
    fn a_star_matches_within_one_segment_only() {
        assert!(p("ahu-1/*").matches("ahu-1/supply_temp"));
        assert!(!p("ahu-1/*").matches("ahu-10/supply_temp"));
        assert!(p("*/supply_temp").matches("ahu-1/supply_temp"));
        assert!(!p("*/supply_temp").matches("ahu-1/supply_temp_sp"));
        assert!(p("ahu-*/supply_*").matches("ahu-12/supply_temp"));
        assert!(!p("ahu-*/supply_*").matches("chiller-1/supply_temp"));
        assert!(p("*/*").matches("a/b"));
        assert!(!p("*/*").matches("a/b/c"));
        assert!(p("m*1/v").matches("m1/v"));
        assert!(p("m*1/v").matches("m-11/v"));
        assert!(!p("m*1/v").matches("m/1/v"));
    }

    #[test]
    fn point_patterns_need_a_device_and_a_point() {
        assert!(Pattern::parse("ahu-1", true).is_err());
        assert!(Pattern::parse("/x", true).is_err());
        assert!(Pattern::parse("a/b/c", true).is_err());
        assert!(Pattern::parse("a b/c", true).is_err());
        assert!(Pattern::parse("a/**", true).is_err());
        assert!(Pattern::parse("door-*", false).is_ok());
    }

    #[test]
    fn the_index_finds_every_matching_rule_once() {
        let mut index = PatternIndex::default();
        index.insert(0, &p("ahu-1/supply_temp"));
        index.insert(1, &p("ahu-1/*"));
        index.insert(2, &p("*/supply_temp"));
        index.insert(3, &p("ahu-*/supply_*"));
        index.insert(4, &p("chiller-1/*"));
        index.insert(5, &p("ahu-1/supply_temp"));
        index.insert(5, &p("ahu-1/*"));
        let mut out = Vec::new();
        index.lookup("ahu-1/supply_temp", &mut out);
        assert_eq!(out, [0, 1, 2, 3, 5]);
        index.lookup("ahu-2/supply_temp", &mut out);
        assert_eq!(out, [2, 3]);
        index.lookup("chiller-1/flow", &mut out);
        assert_eq!(out, [4]);
        index.lookup("nothing", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn event_source_patterns_match_door_ids() {
        let mut index = PatternIndex::default();
        index.insert(0, &Pattern::parse("door-*", false).unwrap());
        index.insert(1, &Pattern::parse("door-lobby", false).unwrap());
        let mut out = Vec::new();
        index.lookup("door-lobby", &mut out);
        assert_eq!(out, [0, 1]);
        index.lookup("gate-1", &mut out);
        assert!(out.is_empty());
    }
}

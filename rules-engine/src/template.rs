//! Text templates for alarm messages and action payloads: `{name}` is replaced by a value of
//! the alarm, `{{` and `}}` are literal braces. Templates are parsed when rules compile, so
//! an unknown name is a compile error, and rendered only when an alarm changes state.
//!
//! JSON templates are TOML tables turned into JSON text once, with placeholders only inside
//! string values, where the rendered text is escaped; a value can never break the JSON.

use std::fmt::Write as _;

/// A name that a template may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Var {
    /// The point key or door the alarm is about.
    Source,
    /// The device part of the source (before the `/`), or the whole source.
    Device,
    /// The point part of the source (after the `/`), or empty.
    Point,
    Rule,
    /// The latest value seen by the rule for this source, or empty.
    Value,
    Severity,
    /// The alarm's message (actions only).
    Message,
    /// The alarm id (actions only).
    Alarm,
    /// `raise`, `clear` or `escalate` (actions only).
    Trigger,
    /// The alarm state after the transition (actions only).
    State,
}

impl Var {
    const ALL: [(&'static str, Var); 10] = [
        ("source", Var::Source),
        ("device", Var::Device),
        ("point", Var::Point),
        ("rule", Var::Rule),
        ("value", Var::Value),
        ("severity", Var::Severity),
        ("message", Var::Message),
        ("alarm", Var::Alarm),
        ("trigger", Var::Trigger),
        ("state", Var::State),
    ];

    /// The names a rule's message may use.
    pub const MESSAGE: &'static [Var] = &[
        Var::Source,
        Var::Device,
        Var::Point,
        Var::Rule,
        Var::Value,
        Var::Severity,
    ];

    /// The names an action may use.
    pub const ACTION: &'static [Var] = &[
        Var::Source,
        Var::Device,
        Var::Point,
        Var::Rule,
        Var::Value,
        Var::Severity,
        Var::Message,
        Var::Alarm,
        Var::Trigger,
        Var::State,
    ];

    fn name(self) -> &'static str {
        Var::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .unwrap_or("")
    }
}

/// What the names stand for when a template is rendered.
pub(crate) trait Vars {
    fn write_var(&self, var: Var, out: &mut String);
}

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A parsed text template.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str, allowed: &[Var]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, c)| *c == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, c)| *c == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed `{{` at character {i}"))?;
                    let name = &rest[..end];
                    let var = Var::ALL
                        .iter()
                        .find(|(n, v)| *n == name && allowed.contains(v))
                        .map(|(_, v)| *v)
                        .ok_or_else(|| {
                            let names: Vec<String> = allowed
                                .iter()
                                .map(|v| format!("{{{}}}", v.name()))
                                .collect();
                            format!("unknown name {{{name}}}; use {}", names.join(", "))
                        })?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Var(var));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => return Err(format!("unmatched `}}` at character {i}; write `}}}}`")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    pub fn literal(text: &str) -> Template {
        Template {
            parts: vec![Part::Text(text.to_owned())],
        }
    }

    pub fn render(&self, vars: &dyn Vars) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Var(v) => vars.write_var(*v, &mut out),
            }
        }
        out
    }

    /// Whether the template can only produce `device/point` keys: it has a `/` with
    /// something on either side. A template made of `{source}` alone also qualifies.
    pub fn looks_like_point_key(&self) -> bool {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Var(Var::Source) => text.push_str("d/p"),
                Part::Var(_) => text.push('x'),
            }
        }
        matches!(text.split_once('/'), Some((d, p)) if !d.is_empty() && !p.is_empty() && !p.contains('/'))
    }
}

#[derive(Clone, Debug, PartialEq)]
enum JsonPart {
    /// JSON text, written as is.
    Raw(String),
    /// A name inside a JSON string: its text is escaped.
    Var(Var),
}

/// A JSON document with placeholders inside its strings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JsonTemplate {
    parts: Vec<JsonPart>,
}

impl JsonTemplate {
    /// Turns a TOML value into a JSON template. Strings are templates; dates become strings.
    pub fn from_toml(value: &toml::Value, allowed: &[Var]) -> Result<JsonTemplate, String> {
        let mut t = JsonTemplate { parts: Vec::new() };
        t.value(value, allowed)?;
        Ok(t)
    }

    fn raw(&mut self, text: &str) {
        match self.parts.last_mut() {
            Some(JsonPart::Raw(r)) => r.push_str(text),
            _ => self.parts.push(JsonPart::Raw(text.to_owned())),
        }
    }

    fn value(&mut self, value: &toml::Value, allowed: &[Var]) -> Result<(), String> {
        match value {
            toml::Value::String(s) => {
                let template = Template::parse(s, allowed)?;
                self.raw("\"");
                for part in template.parts {
                    match part {
                        Part::Text(t) => {
                            let mut escaped = String::new();
                            escape_json(&t, &mut escaped);
                            self.raw(&escaped);
                        }
                        Part::Var(v) => self.parts.push(JsonPart::Var(v)),
                    }
                }
                self.raw("\"");
            }
            toml::Value::Integer(i) => self.raw(&i.to_string()),
            toml::Value::Float(f) if f.is_finite() => self.raw(&format!("{f:?}")),
            toml::Value::Float(f) => return Err(format!("{f} cannot be written as JSON")),
            toml::Value::Boolean(b) => self.raw(if *b { "true" } else { "false" }),
            toml::Value::Datetime(d) => {
                let mut escaped = String::from("\"");
                escape_json(&d.to_string(), &mut escaped);
                escaped.push('"');
                self.raw(&escaped);
            }
            toml::Value::Array(items) => {
                self.raw("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.raw(",");
                    }
                    self.value(item, allowed)?;
                }
                self.raw("]");
            }
            toml::Value::Table(table) => {
                self.raw("{");
                for (i, (key, item)) in table.iter().enumerate() {
                    if i > 0 {
                        self.raw(",");
                    }
                    let mut escaped = String::from("\"");
                    escape_json(key, &mut escaped);
                    escaped.push_str("\":");
                    self.raw(&escaped);
                    self.value(item, allowed)?;
                }
                self.raw("}");
            }
        }
        Ok(())
    }

    pub fn render(&self, vars: &dyn Vars) -> String {
        let mut out = String::new();
        let mut scratch = String::new();
        for part in &self.parts {
            match part {
                JsonPart::Raw(r) => out.push_str(r),
                JsonPart::Var(v) => {
                    scratch.clear();
                    vars.write_var(*v, &mut scratch);
                    escape_json(&scratch, &mut out);
                }
            }
        }
        out
    }
}

/// Appends `text` escaped for the inside of a JSON string.
pub(crate) fn escape_json(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Vars for Fixed {
        fn write_var(&self, var: Var, out: &mut String) {
            out.push_str(match var {
                Var::Source => "ahu-1/supply_temp",
                Var::Device => "ahu-1",
                Var::Value => "say \"hi\"\n",
                _ => "?",
            });
        }
    }

    #[test]
    fn names_are_replaced_and_double_braces_are_literal() {
        let t = Template::parse("{device}: {{raw}} at {source}", Var::MESSAGE).unwrap();
        assert_eq!(t.render(&Fixed), "ahu-1: {raw} at ahu-1/supply_temp");
    }

    #[test]
    fn unknown_or_disallowed_names_are_refused() {
        let e = Template::parse("{colour}", Var::MESSAGE).unwrap_err();
        assert!(e.contains("{colour}") && e.contains("{source}"), "{e}");
        assert!(Template::parse("{alarm}", Var::MESSAGE).is_err());
        assert!(Template::parse("{alarm}", Var::ACTION).is_ok());
        assert!(Template::parse("{source", Var::MESSAGE).is_err());
        assert!(Template::parse("a } b", Var::MESSAGE).is_err());
    }

    #[test]
    fn json_templates_escape_what_they_insert() {
        let body: toml::Value = toml::from_str(
            "nested = { text = \"{value}\", list = [true, 1.5, 3, \"x\\\"y {device}\"] }",
        )
        .unwrap();
        let t = JsonTemplate::from_toml(&body, Var::ACTION).unwrap();
        let json = t.render(&Fixed);
        assert!(json.starts_with(r#"{"nested":{"#), "{json}");
        assert!(json.contains(r#""text":"say \"hi\"\n""#), "{json}");
        assert!(
            json.contains(r#""list":[true,1.5,3,"x\"y ahu-1"]"#),
            "{json}"
        );
    }

    #[test]
    fn point_key_templates_need_a_device_and_a_point() {
        assert!(
            Template::parse("{device}/fan_cmd", Var::ACTION)
                .unwrap()
                .looks_like_point_key()
        );
        assert!(
            Template::parse("{source}", Var::ACTION)
                .unwrap()
                .looks_like_point_key()
        );
        assert!(
            !Template::parse("fan_cmd", Var::ACTION)
                .unwrap()
                .looks_like_point_key()
        );
        assert!(
            !Template::parse("{device}/", Var::ACTION)
                .unwrap()
                .looks_like_point_key()
        );
    }
}

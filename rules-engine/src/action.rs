//! Actions attached to rules, and the action records the engine emits. The engine performs
//! no action itself: writing a point, publishing over MQTT, calling a webhook (retried from
//! a durable outbox) and opening a work order are the edge's work.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmId, AlarmState, Severity};
use crate::input::{Timestamp, Value};
use crate::template::{JsonTemplate, Template, Var, Vars};

/// The alarm transition that fires an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A new occurrence or a re-activation.
    Raise,
    Clear,
    Escalate,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Raise => "raise",
            Trigger::Clear => "clear",
            Trigger::Escalate => "escalate",
        }
    }
}

/// What to do, rendered for one alarm transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Write `value` to the point `point` (`device/point`).
    WritePoint { point: String, value: Value },
    /// Publish `payload` to `topic`.
    Mqtt {
        topic: String,
        payload: String,
        qos: u8,
        retain: bool,
    },
    /// POST `body` (JSON text) to `url`.
    Webhook { url: String, body: String },
    /// Open a work order about the alarm's source.
    WorkOrder {
        title: String,
        description: String,
        severity: Severity,
    },
}

/// An action to perform, with the alarm transition that caused it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionOut {
    pub alarm: AlarmId,
    pub source: Arc<str>,
    pub rule: Arc<str>,
    pub trigger: Trigger,
    pub ts: Timestamp,
    pub action: Action,
}

/// A compiled action of a rule (or of the storm summaries).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ActionSpec {
    pub on: Vec<Trigger>,
    /// Whether shelving and storm folding hold the action back. Control actions that must
    /// happen whatever the operator sees set this to `false`.
    pub suppressible: bool,
    pub kind: ActionKind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ActionKind {
    Write {
        point: Template,
        value: Value,
    },
    Mqtt {
        topic: Template,
        payload: Payload,
        qos: u8,
        retain: bool,
    },
    Webhook {
        url: Template,
        body: Option<JsonTemplate>,
    },
    WorkOrder {
        title: Template,
        description: Option<Template>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Payload {
    Text(Template),
    Json(JsonTemplate),
}

/// The alarm values actions are rendered from.
pub(crate) struct ActionVars<'a> {
    pub alarm: AlarmId,
    pub source: &'a str,
    pub rule: &'a str,
    pub value: &'a str,
    pub severity: Severity,
    pub message: &'a str,
    pub trigger: Trigger,
    pub state: AlarmState,
    pub ts: Timestamp,
}

impl Vars for ActionVars<'_> {
    fn write_var(&self, var: Var, out: &mut String) {
        match var {
            Var::Source => out.push_str(self.source),
            Var::Device => out.push_str(device_of(self.source)),
            Var::Point => out.push_str(point_of(self.source)),
            Var::Rule => out.push_str(self.rule),
            Var::Value => out.push_str(self.value),
            Var::Severity => out.push_str(self.severity.name()),
            Var::Message => out.push_str(self.message),
            Var::Alarm => out.push_str(&self.alarm.to_string()),
            Var::Trigger => out.push_str(self.trigger.name()),
            Var::State => out.push_str(self.state.name()),
        }
    }
}

/// The device part of a source key: before the first `/`, or all of it.
pub(crate) fn device_of(source: &str) -> &str {
    source.split_once('/').map_or(source, |(d, _)| d)
}

/// The point part of a source key: after the first `/`, or nothing.
pub(crate) fn point_of(source: &str) -> &str {
    source.split_once('/').map_or("", |(_, p)| p)
}

impl ActionSpec {
    pub fn render(&self, vars: &ActionVars<'_>) -> ActionOut {
        let action = match &self.kind {
            ActionKind::Write { point, value } => Action::WritePoint {
                point: point.render(vars),
                value: value.clone(),
            },
            ActionKind::Mqtt {
                topic,
                payload,
                qos,
                retain,
            } => Action::Mqtt {
                topic: topic.render(vars),
                payload: match payload {
                    Payload::Text(t) => t.render(vars),
                    Payload::Json(j) => j.render(vars),
                },
                qos: *qos,
                retain: *retain,
            },
            ActionKind::Webhook { url, body } => Action::Webhook {
                url: url.render(vars),
                body: match body {
                    Some(body) => body.render(vars),
                    None => default_body(vars),
                },
            },
            ActionKind::WorkOrder { title, description } => Action::WorkOrder {
                title: title.render(vars),
                description: match description {
                    Some(d) => d.render(vars),
                    None => vars.message.to_owned(),
                },
                severity: vars.severity,
            },
        };
        ActionOut {
            alarm: vars.alarm,
            source: Arc::from(vars.source),
            rule: Arc::from(vars.rule),
            trigger: vars.trigger,
            ts: vars.ts,
            action,
        }
    }
}

/// The webhook body when the rule gives none: the alarm as a JSON object.
fn default_body(vars: &ActionVars<'_>) -> String {
    use crate::template::escape_json;
    let mut out = String::from("{");
    let field = |name: &str, value: &str, quoted: bool, out: &mut String| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        if quoted {
            out.push('"');
            escape_json(value, out);
            out.push('"');
        } else {
            out.push_str(value);
        }
    };
    field("alarm", &vars.alarm.to_string(), false, &mut out);
    field("source", vars.source, true, &mut out);
    field("rule", vars.rule, true, &mut out);
    field("trigger", vars.trigger.name(), true, &mut out);
    field("state", vars.state.name(), true, &mut out);
    field("severity", vars.severity.name(), true, &mut out);
    field("ts", &vars.ts.to_string(), false, &mut out);
    field("value", vars.value, true, &mut out);
    field("message", vars.message, true, &mut out);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_webhook_body_is_the_alarm_as_json() {
        let vars = ActionVars {
            alarm: AlarmId(42),
            source: "ahu-1/supply_temp",
            rule: "hot",
            value: "29.5",
            severity: Severity::P1,
            message: "too \"hot\"",
            trigger: Trigger::Raise,
            state: AlarmState::ActiveUnacked,
            ts: 7,
        };
        assert_eq!(
            default_body(&vars),
            r#"{"alarm":42,"source":"ahu-1/supply_temp","rule":"hot","trigger":"raise","state":"active_unacked","severity":"P1","ts":7,"value":"29.5","message":"too \"hot\""}"#
        );
    }

    #[test]
    fn device_and_point_split_at_the_first_slash() {
        assert_eq!(device_of("ahu-1/supply_temp"), "ahu-1");
        assert_eq!(point_of("ahu-1/supply_temp"), "supply_temp");
        assert_eq!(device_of("door-3"), "door-3");
        assert_eq!(point_of("door-3"), "");
    }
}

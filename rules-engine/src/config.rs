//! The rule file as parsed: serde structs with `deny_unknown_fields`, checked and turned
//! into compiled rules by [`crate::RuleSet::compile`]. The format is described in the crate
//! documentation.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::action::Trigger;
use crate::alarm::Severity;
use crate::input::{Quality, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleFileConfig {
    /// The park's wall clock is UTC plus this many minutes (China: 480).
    #[serde(default)]
    pub utc_offset_minutes: i32,
    /// Named weekly schedules: a list of entries such as `"mon-fri 08:00-18:00"`.
    #[serde(default)]
    pub schedules: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub storm: Option<StormConfig>,
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StormConfig {
    pub window_s: Option<f64>,
    pub per_device: Option<u32>,
    pub overall: Option<u32>,
    pub quiet_s: Option<f64>,
    #[serde(default)]
    pub action: Vec<ActionConfig>,
}

/// Declares the condition keys once, for the condition tables inside `all`, `any` and `not`
/// and for the rule itself, whose condition is written at the top of the rule.
macro_rules! with_condition_keys {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
            #[serde(default)]
            pub threshold: Option<ThresholdConfig>,
            #[serde(default)]
            pub rate: Option<RateConfig>,
            #[serde(default)]
            pub stale: Option<StaleConfig>,
            #[serde(default)]
            pub quality: Option<Vec<Quality>>,
            #[serde(default)]
            pub equals: Option<Value>,
            #[serde(default)]
            pub consumption: Option<ConsumptionConfig>,
            #[serde(default)]
            pub event_count: Option<EventCountConfig>,
            #[serde(default)]
            pub held_open: Option<HeldOpenConfig>,
            #[serde(default)]
            pub event: Option<EventConfig>,
            #[serde(default)]
            pub during: Option<String>,
            #[serde(default)]
            pub all: Option<Vec<ConditionConfig>>,
            #[serde(default)]
            pub any: Option<Vec<ConditionConfig>>,
            #[serde(default)]
            pub not: Option<Box<ConditionConfig>>,
        }

    };
    (
        take_condition;
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($body:tt)* }
    ) => {
        with_condition_keys! {
            $(#[$meta])*
            $vis struct $name { $($body)* }
        }

        impl $name {
            /// Moves the condition keys out into a [`ConditionConfig`].
            pub fn take_condition(&mut self) -> ConditionConfig {
                ConditionConfig {
                    threshold: self.threshold.take(),
                    rate: self.rate.take(),
                    stale: self.stale.take(),
                    quality: self.quality.take(),
                    equals: self.equals.take(),
                    consumption: self.consumption.take(),
                    event_count: self.event_count.take(),
                    held_open: self.held_open.take(),
                    event: self.event.take(),
                    during: self.during.take(),
                    all: self.all.take(),
                    any: self.any.take(),
                    not: self.not.take(),
                }
            }
        }
    };
}

with_condition_keys! {
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct ConditionConfig {}
}

with_condition_keys! {
    take_condition;
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RuleConfig {
        id: String,
        severity: Severity,
        #[serde(default)]
        enabled: Option<bool>,
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        points: Option<Patterns>,
        #[serde(default)]
        sources: Option<Patterns>,
        #[serde(default)]
        on_delay_s: Option<f64>,
        #[serde(default)]
        off_delay_s: Option<f64>,
        #[serde(default)]
        escalate_after_s: Option<f64>,
        #[serde(default)]
        escalate_to: Option<Severity>,
        #[serde(default)]
        action: Vec<ActionConfig>,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThresholdConfig {
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub deadband: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateConfig {
    pub window_s: f64,
    pub rise_per_minute: Option<f64>,
    pub fall_per_minute: Option<f64>,
    pub change_per_minute: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StaleConfig {
    pub after_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsumptionConfig {
    pub window_s: f64,
    pub baseline: Option<f64>,
    pub learn_windows: Option<u32>,
    pub factor: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventCountConfig {
    pub kind: String,
    pub count: u32,
    pub window_s: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeldOpenConfig {
    pub after_s: f64,
    pub opened: Option<String>,
    pub closed: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventConfig {
    pub kind: String,
    pub clear_on: Option<String>,
    pub clear_after_s: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionConfig {
    #[serde(default)]
    pub on: Option<Vec<Trigger>>,
    #[serde(default)]
    pub suppressible: Option<bool>,
    #[serde(default)]
    pub write: Option<WriteConfig>,
    #[serde(default)]
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub work_order: Option<WorkOrderConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteConfig {
    pub point: String,
    pub value: Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MqttConfig {
    pub topic: String,
    pub payload: Option<String>,
    pub json: Option<toml::Value>,
    pub qos: Option<u8>,
    pub retain: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookConfig {
    pub url: String,
    pub body: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorkOrderConfig {
    pub title: String,
    pub description: Option<String>,
}

/// One pattern or a list of them.
#[derive(Debug)]
pub(crate) struct Patterns(pub Vec<String>);

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Patterns;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pattern or a list of patterns")
            }
            fn visit_str<E>(self, v: &str) -> Result<Patterns, E> {
                Ok(Patterns(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Patterns, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<String>()? {
                    out.push(p);
                }
                Ok(Patterns(out))
            }
        }
        de.deserialize_any(Visitor)
    }
}

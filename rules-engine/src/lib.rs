//! Rule configs compiled into rules, their evaluation over samples, access events and time,
//! and the alarm state machine of every (source, rule) pair.
//!
//! This crate does no IO and reads no clock: time is an argument ([`Timestamp`],
//! microseconds since the Unix epoch, UTC). It performs no actions either: point writes,
//! MQTT commands, webhooks and work orders come out as [`ActionOut`] records that the edge
//! carries out (webhooks retried from its durable outbox). It knows no other smartpark crate:
//! samples and access events come in as its own borrowed [`SampleIn`] and [`EventIn`].
//!
//! The call order of [`Engine`] (inputs, timeouts, operator actions, reload, restart) is
//! documented on the type. Everything that changes an alarm is appended to an [`Outputs`]
//! buffer: the [`Transition`]s to store as events and the actions to perform.
//!
//! # The rule file
//!
//! A TOML file, checked whole by [`RuleSet::compile`]: unknown keys, wrong types, unknown
//! schedules, duplicate rule ids and impossible values are refused with a [`RuleError`] that
//! names the file, line, rule and key (`rules.toml:12: rule "ahu-hot": threshold.deadband:
//! must be zero or a positive number`). A refused file changes nothing in a running engine.
//!
//! ```
//! use rules_engine::{Engine, Outputs, RuleSet, SampleIn, EventIn, TransitionKind};
//!
//! const RULES: &str = r#"
//! ## The park's wall clock is UTC+08:00. Schedules and daily consumption windows use it.
//! utc_offset_minutes = 480
//!
//! ## Weekly schedules: "DAYS HH:MM-HH:MM" (days optional: every day). A range that ends
//! ## before it starts runs past midnight.
//! [schedules]
//! office-hours = ["mon-fri 08:00-18:00", "sat 09:00-12:00"]
//! night = ["22:00-06:00"]
//!
//! ## Flood suppression (these are the defaults): more than `per_device` raises by one
//! ## device, or more than `overall` in total, within `window_s` start a storm; it ends after
//! ## `quiet_s` without a raise. 0 turns a limit off.
//! [storm]
//! window_s = 60
//! per_device = 10
//! overall = 100
//! quiet_s = 60
//!
//! ## A threshold with a deadband and delays, on one point of every AHU.
//! [[rule]]
//! id = "ahu-supply-hot"
//! severity = "P1"
//! points = "ahu-*/supply_temp"
//! threshold = { above = 28.0, deadband = 0.5 }
//! on_delay_s = 60
//! off_delay_s = 120
//! escalate_after_s = 900          # unacknowledged for 15 min: P1 becomes P0, once
//! message = "{device}: supply air {value} °C"
//!
//! [[rule.action]]
//! on = ["raise", "clear"]
//! mqtt = { topic = "site/alarms/{device}", json = { alarm = "{alarm}", state = "{state}" } }
//!
//! [[rule.action]]
//! write = { point = "{device}/cooling_boost", value = true }
//! suppressible = false            # a control action: fires even when shelved or folded
//!
//! [[rule.action]]
//! on = ["escalate"]
//! webhook = { url = "https://ops.example/hooks/alarms" }   # body: the alarm as JSON
//!
//! ## Rate of change, stale data, bad quality, a state.
//! [[rule]]
//! id = "server-room-rising"
//! severity = "P1"
//! points = "server-room/temp"
//! rate = { window_s = 300, rise_per_minute = 0.5 }
//!
//! [[rule]]
//! id = "meter-silent"
//! severity = "P2"
//! points = ["*/energy_kwh", "*/power_kw"]
//! stale = { after_s = 900 }
//!
//! [[rule]]
//! id = "chiller-fault"
//! severity = "P1"
//! points = "chiller-1/mode"
//! any = [{ equals = "fault" }, { quality = ["bad", "stale"] }]
//!
//! ## Schedules gate other conditions through `all`, `any`, `not` and `during`.
//! [[rule]]
//! id = "lights-on-at-night"
//! severity = "P2"
//! points = "*/lights_on"
//! all = [{ equals = true }, { during = "night" }]
//! on_delay_s = 600
//!
//! ## Energy use over a window against a fixed baseline, or one learned from past windows.
//! [[rule]]
//! id = "b1-energy-anomaly"
//! severity = "P2"
//! points = "b1-main/energy_kwh"
//! consumption = { window_s = 3600, learn_windows = 24, factor = 1.5 }
//!
//! [[rule.action]]
//! work_order = { title = "Check energy use of {device}", description = "{message}" }
//!
//! ## Access events: counts in a window, a door held open, a forced door.
//! [[rule]]
//! id = "denied-burst"
//! severity = "P1"
//! sources = "door-*"
//! event_count = { kind = "access.denied", count = 5, window_s = 60 }
//!
//! [[rule]]
//! id = "held-open"
//! severity = "P2"
//! sources = "door-*"
//! held_open = { after_s = 30 }    # door.opened without door.closed for 30 s
//!
//! [[rule]]
//! id = "forced"
//! severity = "P0"
//! sources = "door-*"
//! event = { kind = "door.forced" }   # momentary: raised and cleared at once
//! "#;
//!
//! let rules = RuleSet::compile(RULES, "rules.toml").expect("the example compiles");
//! assert_eq!(rules.len(), 9);
//!
//! let mut engine = Engine::new(rules);
//! let mut out = Outputs::new();
//! let t0 = 1_704_067_200_000_000; // 2024-01-01 08:00 in the park
//! engine.handle_sample(&SampleIn::number("ahu-2/supply_temp", t0, 29.1), &mut out);
//! assert!(out.transitions.is_empty(), "the on-delay runs");
//! engine.handle_timeout(t0 + 60_000_000, &mut out);
//! assert_eq!(out.transitions[0].kind, TransitionKind::Raised);
//! assert_eq!(out.transitions[0].message, "ahu-2: supply air 29.1 °C");
//! assert_eq!(out.actions.len(), 2, "the MQTT message and the point write");
//!
//! out.clear();
//! engine.handle_event(&EventIn::new("door.forced", "door-lobby", t0), &mut out);
//! assert_eq!(out.transitions.len(), 2, "raised and cleared; it waits for acknowledgement");
//! ```
//!
//! ## Top level
//!
//! | key | meaning |
//! |---|---|
//! | `utc_offset_minutes` | the park's fixed offset from UTC, -720 to 840 (default 0) |
//! | `[schedules]` | named weekly schedules: lists of `"mon-fri 08:00-18:00"`, `"sat,sun 10:00-14:00"`, `"22:00-06:00"`, `"daily 00:00-24:00"` |
//! | `[storm]` | `window_s`, `per_device`, `overall`, `quiet_s` (default: `window_s`), and `[[storm.action]]` fired for storm summaries |
//! | `[[rule]]` | one rule each |
//!
//! ## Rules
//!
//! | key | meaning |
//! |---|---|
//! | `id` | unique; letters, digits, `-`, `_`, `.`, `:` |
//! | `severity` | `"P0"` (most urgent), `"P1"` or `"P2"` |
//! | `points` | a pattern or list of patterns of point keys `device/point`; `*` matches within one part: `ahu-1/*`, `*/supply_temp`, `ahu-*/supply_temp` |
//! | `sources` | instead of `points`, for access events: door patterns such as `door-*` |
//! | condition | exactly one condition key (below), written in the rule itself |
//! | `on_delay_s`, `off_delay_s` | how long the condition must hold (or be false) before the alarm raises (or clears) |
//! | `escalate_after_s`, `escalate_to` | unacknowledged and active this long: the severity goes up, once (default: one step) |
//! | `message` | a template (below); default: the source and the condition in words |
//! | `enabled` | `false` keeps a rule in the file, checked but not evaluated |
//! | `[[rule.action]]` | actions, below |
//!
//! Every source a pattern matches gets its own state and its own alarm: one rule, many
//! (source, rule) pairs.
//!
//! ## Conditions
//!
//! | key | true while |
//! |---|---|
//! | `threshold = { above, below, deadband }` | the value is above `above` or below `below`; it turns false only once the value is back by more than `deadband` |
//! | `rate = { window_s, rise_per_minute, fall_per_minute, change_per_minute }` | the change per minute over the window (oldest sample in it to newest) exceeds a limit; unknown with less than half a window of data or no sample within the window |
//! | `stale = { after_s }` | no good or uncertain value for `after_s` (checked by time, not only on samples) |
//! | `quality = ["bad", "stale", ...]` | the latest sample has one of these qualities |
//! | `equals = true \| 3 \| "fault"` | the latest value is this value, of the same type |
//! | `consumption = { window_s, baseline \| learn_windows, factor }` | a counter's increase within the current window, or the window before, is above `baseline × factor` |
//! | `event_count = { kind, count, window_s }` | at least `count` events of `kind` within the last `window_s` |
//! | `held_open = { after_s, opened, closed }` | the door opened (`door.opened`) and has not closed (`door.closed`) for `after_s` |
//! | `event = { kind, clear_on, clear_after_s }` | an event of `kind` came and no `clear_on` event since, nor `clear_after_s` passed; without either it is momentary |
//! | `during = "schedule"` | the time is within the schedule |
//! | `all = [...]`, `any = [...]`, `not = {...}` | combinations of condition tables |
//!
//! Value conditions use good and uncertain samples; a bad or stale sample leaves them as
//! they were (pair them with `quality` or `stale`). A threshold treats booleans as 0 and 1.
//! Consumption windows are aligned on the park's clock (a daily window starts at local
//! midnight); a counter that goes down was reset and that step counts nothing; only windows
//! observed from their start are judged. A learned baseline is the mean of the last
//! `learn_windows` complete windows that were not over the limit (so a lasting fault keeps
//! its alarm), and nothing is judged until that many have been seen.
//!
//! A rule's conditions all concern the source the pattern matched (one point, or one door);
//! point conditions need `points`, event conditions need `sources`.
//!
//! ## Actions
//!
//! Each `[[rule.action]]` has `on` (any of `"raise"`, `"clear"`, `"escalate"`; default
//! `["raise"]`), `suppressible` (default `true`: held back while the alarm is shelved or
//! folded into a storm) and one of:
//!
//! | key | emits |
//! |---|---|
//! | `write = { point, value }` | [`Action::WritePoint`] |
//! | `mqtt = { topic, payload \| json, qos, retain }` | [`Action::Mqtt`] (qos defaults to 1) |
//! | `webhook = { url, body }` | [`Action::Webhook`] with the body as JSON text (default: the alarm) |
//! | `work_order = { title, description }` | [`Action::WorkOrder`] |
//!
//! ## Templates
//!
//! Messages and action texts may use `{source}`, `{device}`, `{point}`, `{rule}`,
//! `{value}` and `{severity}`; actions also `{message}`, `{alarm}`, `{trigger}` and
//! `{state}`. `{{` and `}}` are braces. In `json` and `body` tables only string values are
//! templates, and what is inserted is escaped.
//!
//! # The alarm state machine
//!
//! ```text
//!            raise                    acknowledge
//!   Normal ─────────▶ ActiveUnacked ─────────────▶ ActiveAcked
//!     ▲                  │      ▲                      │
//!     │            clear │      │ raise (same alarm)   │ clear
//!     │                  ▼      │                      │
//!     └──────────── ClearedUnacked ◀───────────────────┘ (to Normal)
//!        acknowledge
//! ```
//!
//! - There is one alarm record per (source, rule). A raise from `Normal` starts a new
//!   occurrence with a new [`AlarmId`]; a raise from `ClearedUnacked` re-activates the same
//!   one. An alarm is never duplicated and never both active and cleared.
//! - Acknowledging is idempotent and records the user and a comment. Comments can be added
//!   at any time.
//! - Shelving hides an alarm's notifications until a time: the alarm still changes state and
//!   every transition is still emitted (marked `shelved`), but suppressible actions are held
//!   back and it does not escalate. The shelf expires by itself; an alarm that became active
//!   on the shelf notifies when it comes off.
//! - Escalation raises the severity of an active, unacknowledged, unshelved alarm once,
//!   `escalate_after_s` after the occurrence was raised.
//! - Storms: see [`AlarmFilter::include_folded`] and the `[storm]` table. The raises of one
//!   device beyond the limit, and the unacknowledged ones that led up to it, are folded into
//!   one summary alarm (rule [`STORM_RULE`], source the device, or `*` for all devices),
//!   whose severity is the highest folded. Acknowledging the summary acknowledges them.
//!   When the storm ends the summary clears and the alarms are listed again.
//! - Conditions use three-valued logic: before a condition has evidence (its first value,
//!   a full window) it is unknown, and an unknown condition changes no alarm. So alarms
//!   restored with [`Engine::import_state`] stay as they were until data says otherwise.
//!
//! # Not done here
//!
//! Holidays and daylight saving time (the park has one fixed offset); conditions that combine
//! several points (a rule concerns one source); baselines by hour of the week; saving
//! condition state (windows, learned baselines) across restarts: only alarms are saved.

pub mod bench;

mod action;
mod alarm;
mod condition;
mod config;
mod engine;
mod error;
mod input;
mod pattern;
mod rule;
mod schedule;
mod storm;
mod template;

pub use action::{Action, ActionOut, Trigger};
pub use alarm::{
    Ack, Alarm, AlarmError, AlarmId, AlarmState, Comment, STORM_RULE, Severity, Shelf, StormInfo,
    Transition, TransitionKind,
};
pub use engine::{AlarmFilter, Engine, EngineState, EngineStats, Outputs, StateFormatError};
pub use error::RuleError;
pub use input::{
    EventIn, MICROS_PER_MINUTE, MICROS_PER_SECOND, Quality, SampleIn, SampleValue, Timestamp, Value,
};
pub use rule::{RuleSet, RuleSummary};

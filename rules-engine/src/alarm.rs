//! The alarm record of one (source, rule) pair and its state machine, and the book that
//! holds all records.
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
//! `Normal` is "cleared and acknowledged": the occurrence is over. A raise from `Normal`
//! starts a new occurrence with a new [`AlarmId`]; a raise from `ClearedUnacked` re-activates
//! the same occurrence, so an operator who has not yet seen the first one is never shown two.
//! Shelving, comments and escalation change no state; they are flags and records on the
//! occurrence, and each is a [`Transition`] of its own.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::input::Timestamp;

/// The identity of one alarm occurrence. Ids increase and are derived from the raise time
/// (the larger of the last id plus one and the raise time in microseconds), so that they
/// stay unique across restarts of the edge even when its alarm state was lost.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlarmId(pub u64);

impl fmt::Display for AlarmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for AlarmId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(AlarmId)
    }
}

/// Where an alarm stands. See the diagram in the module documentation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Cleared and acknowledged: nothing to see.
    Normal,
    ActiveUnacked,
    ActiveAcked,
    ClearedUnacked,
}

impl AlarmState {
    /// Every state.
    pub const ALL: [AlarmState; 4] = [
        AlarmState::Normal,
        AlarmState::ActiveUnacked,
        AlarmState::ActiveAcked,
        AlarmState::ClearedUnacked,
    ];

    pub fn is_active(self) -> bool {
        matches!(self, AlarmState::ActiveUnacked | AlarmState::ActiveAcked)
    }

    /// Whether an operator still has to acknowledge the alarm.
    pub fn is_unacknowledged(self) -> bool {
        matches!(self, AlarmState::ActiveUnacked | AlarmState::ClearedUnacked)
    }

    /// The snake_case name used on the wire and in messages.
    pub fn name(self) -> &'static str {
        match self {
            AlarmState::Normal => "normal",
            AlarmState::ActiveUnacked => "active_unacked",
            AlarmState::ActiveAcked => "active_acked",
            AlarmState::ClearedUnacked => "cleared_unacked",
        }
    }
}

/// How urgent an alarm is. P0 is the most urgent; the order of the type is by urgency, so
/// `Severity::P0 > Severity::P2`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    P2,
    P1,
    P0,
}

impl Severity {
    /// Every severity, most urgent first.
    pub const ALL: [Severity; 3] = [Severity::P0, Severity::P1, Severity::P2];

    /// The next more urgent severity, or `None` for P0.
    pub fn higher(self) -> Option<Severity> {
        match self {
            Severity::P2 => Some(Severity::P1),
            Severity::P1 => Some(Severity::P0),
            Severity::P0 => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Severity::P0 => "P0",
            Severity::P1 => "P1",
            Severity::P2 => "P2",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who acknowledged an occurrence, when, and what they said.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at: Timestamp,
    pub comment: Option<String>,
}

/// A shelf: the alarm does not notify until `until`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shelf {
    pub by: String,
    pub at: Timestamp,
    pub until: Timestamp,
    pub reason: Option<String>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    pub by: String,
    pub at: Timestamp,
    pub text: String,
}

/// What a storm summary alarm stands for.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StormInfo {
    /// The device whose raises are folded, or `*` for the storm over all devices.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub device: Arc<str>,
    /// How many raises were folded into the summary.
    pub folded: u32,
    pub started_at: Timestamp,
    pub last_raise_at: Timestamp,
}

/// The rule id of storm summary alarms. Rule ids in files cannot contain `@`.
pub const STORM_RULE: &str = "@storm";

/// The alarm of one (source, rule) pair. There is one record per pair, reused by every
/// occurrence; `id` names the current (or last) occurrence.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// Served as a string (JavaScript numbers cannot hold every u64).
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub id: AlarmId,
    /// The point key or door the alarm is about; a device (or `*`) for storm summaries.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub source: Arc<str>,
    /// The rule id, or [`STORM_RULE`] for storm summaries.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub rule: Arc<str>,
    pub state: AlarmState,
    /// The current severity: the rule's, or higher after escalation.
    pub severity: Severity,
    /// Whether this occurrence has been escalated. It escalates at most once.
    pub escalated: bool,
    pub message: String,
    /// The value that the rule saw when the alarm last became active, if any.
    pub value: Option<String>,
    /// When this occurrence was first raised.
    pub raised_at: Timestamp,
    /// When the state last changed.
    pub changed_at: Timestamp,
    /// How many times this occurrence became active (1 plus re-activations).
    pub activations: u32,
    pub ack: Option<Ack>,
    pub shelf: Option<Shelf>,
    pub comments: Vec<Comment>,
    /// The storm summary this alarm is folded into: it is not listed and does not notify.
    pub suppressed_by: Option<AlarmId>,
    /// Set on storm summary alarms.
    pub storm: Option<StormInfo>,
    /// Whether the raise actions of this occurrence have fired. A shelved or folded raise
    /// does not fire them; unshelving an active alarm that has not notified does.
    pub notified: bool,
}

/// Why a transition happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// A new occurrence: `Normal` to `ActiveUnacked`.
    Raised,
    /// `ClearedUnacked` to `ActiveUnacked`, same occurrence.
    Reactivated,
    Cleared,
    Acknowledged,
    Escalated,
    Shelved,
    Unshelved,
    Commented,
    /// The alarm was folded into a storm summary (`suppressed_by` names it).
    Folded,
    /// The storm ended and the alarm is no longer folded.
    Released,
}

/// One change of an alarm, emitted for the edge to store as an event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub alarm: AlarmId,
    pub source: Arc<str>,
    pub rule: Arc<str>,
    pub kind: TransitionKind,
    pub from: AlarmState,
    pub to: AlarmState,
    pub severity: Severity,
    pub ts: Timestamp,
    pub message: String,
    /// The operator for acknowledge, shelve, unshelve and comment; `None` for the engine.
    pub who: Option<String>,
    /// The operator's comment, the shelving reason, or the engine's reason.
    pub comment: Option<String>,
    pub shelved: bool,
    pub suppressed_by: Option<AlarmId>,
}

/// An operator action that could not be applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlarmError {
    #[error("no alarm {0}")]
    NotFound(AlarmId),
    #[error("shelving must end after now ({now}), not at {until}")]
    ShelfEndsInPast { until: Timestamp, now: Timestamp },
    #[error("the user must not be empty")]
    NoUser,
    #[error("the comment must not be empty")]
    EmptyComment,
}

impl Alarm {
    /// A record that has never been raised.
    pub(crate) fn new(source: Arc<str>, rule: Arc<str>, severity: Severity) -> Alarm {
        Alarm {
            id: AlarmId(0),
            source,
            rule,
            state: AlarmState::Normal,
            severity,
            escalated: false,
            message: String::new(),
            value: None,
            raised_at: 0,
            changed_at: 0,
            activations: 0,
            ack: None,
            shelf: None,
            comments: Vec::new(),
            suppressed_by: None,
            storm: None,
            notified: false,
        }
    }

    pub fn is_shelved(&self) -> bool {
        self.shelf.is_some()
    }

    pub fn is_storm_summary(&self) -> bool {
        self.storm.is_some()
    }

    fn transition(&self, kind: TransitionKind, from: AlarmState, ts: Timestamp) -> Transition {
        Transition {
            alarm: self.id,
            source: self.source.clone(),
            rule: self.rule.clone(),
            kind,
            from,
            to: self.state,
            severity: self.severity,
            ts,
            message: self.message.clone(),
            who: None,
            comment: None,
            shelved: self.shelf.is_some(),
            suppressed_by: self.suppressed_by,
        }
    }

    /// The condition became true. From `Normal` a new occurrence starts with `new_id`, the
    /// rule's severity and a fresh message; from `ClearedUnacked` the occurrence is
    /// re-activated. An active alarm does not change (`None`).
    pub(crate) fn raise(
        &mut self,
        new_id: impl FnOnce() -> AlarmId,
        severity: Severity,
        message: String,
        value: Option<String>,
        ts: Timestamp,
    ) -> Option<Transition> {
        let from = self.state;
        if from.is_active() {
            return None;
        }
        self.value = value;
        let kind = match from {
            AlarmState::Normal => {
                self.id = new_id();
                self.severity = severity;
                self.escalated = false;
                self.message = message;
                self.raised_at = ts;
                self.activations = 0;
                self.ack = None;
                self.comments.clear();
                self.suppressed_by = None;
                self.notified = false;
                TransitionKind::Raised
            }
            AlarmState::ClearedUnacked => {
                self.message = message;
                TransitionKind::Reactivated
            }
            AlarmState::ActiveUnacked | AlarmState::ActiveAcked => return None,
        };
        self.state = AlarmState::ActiveUnacked;
        self.changed_at = ts;
        self.activations = self.activations.saturating_add(1);
        Some(self.transition(kind, from, ts))
    }

    /// The condition became false. `reason` goes into the transition's comment.
    pub(crate) fn clear(&mut self, ts: Timestamp, reason: Option<&str>) -> Option<Transition> {
        let from = self.state;
        self.state = match from {
            AlarmState::ActiveUnacked => AlarmState::ClearedUnacked,
            AlarmState::ActiveAcked => AlarmState::Normal,
            AlarmState::ClearedUnacked | AlarmState::Normal => return None,
        };
        self.changed_at = ts;
        let mut t = self.transition(TransitionKind::Cleared, from, ts);
        t.comment = reason.map(str::to_owned);
        Some(t)
    }

    /// Acknowledges the occurrence. Acknowledging an acknowledged alarm changes nothing and
    /// returns `None`.
    pub(crate) fn acknowledge(
        &mut self,
        user: &str,
        comment: Option<&str>,
        ts: Timestamp,
    ) -> Option<Transition> {
        let from = self.state;
        self.state = match from {
            AlarmState::ActiveUnacked => AlarmState::ActiveAcked,
            AlarmState::ClearedUnacked => AlarmState::Normal,
            AlarmState::ActiveAcked | AlarmState::Normal => return None,
        };
        self.changed_at = ts;
        self.ack = Some(Ack {
            by: user.to_owned(),
            at: ts,
            comment: comment.map(str::to_owned),
        });
        let mut t = self.transition(TransitionKind::Acknowledged, from, ts);
        t.who = Some(user.to_owned());
        t.comment = comment.map(str::to_owned);
        Some(t)
    }

    /// Raises the severity of an active, unacknowledged, unescalated occurrence, once.
    pub(crate) fn escalate(&mut self, to: Severity, ts: Timestamp) -> Option<Transition> {
        if self.escalated || self.state != AlarmState::ActiveUnacked || to <= self.severity {
            return None;
        }
        self.escalated = true;
        self.severity = to;
        let mut t = self.transition(TransitionKind::Escalated, self.state, ts);
        t.comment = Some(format!("unacknowledged since {}", self.raised_at));
        Some(t)
    }

    pub(crate) fn shelve(
        &mut self,
        user: &str,
        until: Timestamp,
        reason: Option<&str>,
        ts: Timestamp,
    ) -> Transition {
        self.shelf = Some(Shelf {
            by: user.to_owned(),
            at: ts,
            until,
            reason: reason.map(str::to_owned),
        });
        let mut t = self.transition(TransitionKind::Shelved, self.state, ts);
        t.who = Some(user.to_owned());
        t.comment = Some(match reason {
            Some(r) => format!("until {until}: {r}"),
            None => format!("until {until}"),
        });
        t
    }

    /// Takes the alarm off the shelf; `user` is `None` when the shelf expired.
    pub(crate) fn unshelve(&mut self, user: Option<&str>, ts: Timestamp) -> Option<Transition> {
        self.shelf.take()?;
        let mut t = self.transition(TransitionKind::Unshelved, self.state, ts);
        t.who = user.map(str::to_owned);
        if user.is_none() {
            t.comment = Some("shelving expired".to_owned());
        }
        Some(t)
    }

    pub(crate) fn add_comment(&mut self, user: &str, text: &str, ts: Timestamp) -> Transition {
        self.comments.push(Comment {
            by: user.to_owned(),
            at: ts,
            text: text.to_owned(),
        });
        let mut t = self.transition(TransitionKind::Commented, self.state, ts);
        t.who = Some(user.to_owned());
        t.comment = Some(text.to_owned());
        t
    }

    pub(crate) fn fold(&mut self, summary: AlarmId, ts: Timestamp) -> Option<Transition> {
        if self.suppressed_by == Some(summary) {
            return None;
        }
        self.suppressed_by = Some(summary);
        Some(self.transition(TransitionKind::Folded, self.state, ts))
    }

    pub(crate) fn release(&mut self, ts: Timestamp) -> Option<Transition> {
        self.suppressed_by.take()?;
        Some(self.transition(TransitionKind::Released, self.state, ts))
    }
}

/// Slot of an alarm record in the book; stable while the record exists.
pub(crate) type Slot = u32;

/// All alarm records, by slot, by id and by (source, rule).
#[derive(Debug, Default)]
pub(crate) struct AlarmBook {
    slots: Vec<Option<Alarm>>,
    free: Vec<Slot>,
    by_id: HashMap<AlarmId, Slot>,
    by_key: HashMap<(Arc<str>, Arc<str>), Slot>,
    last_id: u64,
}

impl AlarmBook {
    pub fn get(&self, slot: Slot) -> &Alarm {
        self.slots[slot as usize]
            .as_ref()
            .expect("a live alarm slot")
    }

    pub fn try_get(&self, slot: Slot) -> Option<&Alarm> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, slot: Slot) -> &mut Alarm {
        self.slots[slot as usize]
            .as_mut()
            .expect("a live alarm slot")
    }

    pub fn slot_of_id(&self, id: AlarmId) -> Option<Slot> {
        self.by_id.get(&id).copied()
    }

    pub fn slot_of(&self, source: &Arc<str>, rule: &Arc<str>) -> Option<Slot> {
        self.by_key.get(&(source.clone(), rule.clone())).copied()
    }

    /// The slot of the record of (source, rule), created in `Normal` if there is none.
    pub fn slot_or_insert(
        &mut self,
        source: &Arc<str>,
        rule: &Arc<str>,
        severity: Severity,
    ) -> Slot {
        if let Some(slot) = self.slot_of(source, rule) {
            return slot;
        }
        self.insert(Alarm::new(source.clone(), rule.clone(), severity))
    }

    /// Stores a record as it is (for restored state). A record with the same (source, rule)
    /// is replaced.
    pub fn insert(&mut self, alarm: Alarm) -> Slot {
        if let Some(old) = self.slot_of(&alarm.source, &alarm.rule) {
            self.remove(old);
        }
        self.last_id = self.last_id.max(alarm.id.0);
        let key = (alarm.source.clone(), alarm.rule.clone());
        let id = alarm.id;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(alarm);
                slot
            }
            None => {
                self.slots.push(Some(alarm));
                (self.slots.len() - 1) as Slot
            }
        };
        if id.0 != 0 {
            self.by_id.insert(id, slot);
        }
        self.by_key.insert(key, slot);
        slot
    }

    pub fn remove(&mut self, slot: Slot) -> Option<Alarm> {
        let alarm = self.slots.get_mut(slot as usize)?.take()?;
        if self.by_id.get(&alarm.id) == Some(&slot) {
            self.by_id.remove(&alarm.id);
        }
        self.by_key
            .remove(&(alarm.source.clone(), alarm.rule.clone()));
        self.free.push(slot);
        Some(alarm)
    }

    /// A fresh id for an occurrence raised at `ts`.
    pub fn next_id(&mut self, ts: Timestamp) -> AlarmId {
        let id = (self.last_id + 1).max(u64::try_from(ts).unwrap_or(0));
        self.last_id = id;
        AlarmId(id)
    }

    /// Raises the alarm in `slot`, keeping the id index up to date.
    pub fn raise(
        &mut self,
        slot: Slot,
        severity: Severity,
        message: String,
        value: Option<String>,
        ts: Timestamp,
    ) -> Option<Transition> {
        let alarm = self.get(slot);
        let old_id = alarm.id;
        let fresh = (alarm.state == AlarmState::Normal).then(|| self.next_id(ts));
        let alarm = self.get_mut(slot);
        let t = alarm.raise(|| fresh.unwrap_or(old_id), severity, message, value, ts);
        if let Some(id) = fresh {
            if self.by_id.get(&old_id) == Some(&slot) {
                self.by_id.remove(&old_id);
            }
            self.by_id.insert(id, slot);
        }
        t
    }

    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Alarm)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i as Slot, a)))
    }

    pub fn slots(&self) -> Vec<Slot> {
        self.iter().map(|(s, _)| s).collect()
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    pub fn set_last_id(&mut self, id: u64) {
        self.last_id = self.last_id.max(id);
    }

    pub fn clear(&mut self) {
        *self = AlarmBook {
            last_id: self.last_id,
            ..AlarmBook::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm() -> Alarm {
        Alarm::new("m1/v".into(), "high".into(), Severity::P2)
    }

    #[test]
    fn a_raise_from_normal_starts_an_occurrence_and_a_raise_from_cleared_unacked_reuses_it() {
        let mut a = alarm();
        let t = a
            .raise(|| AlarmId(7), Severity::P1, "hot".into(), None, 10)
            .unwrap();
        assert_eq!(
            (t.kind, t.from, t.to, t.alarm),
            (
                TransitionKind::Raised,
                AlarmState::Normal,
                AlarmState::ActiveUnacked,
                AlarmId(7)
            )
        );
        assert!(
            a.raise(|| AlarmId(8), Severity::P1, "hot".into(), None, 11)
                .is_none()
        );
        a.clear(12, None).unwrap();
        assert_eq!(a.state, AlarmState::ClearedUnacked);
        let t = a
            .raise(|| AlarmId(9), Severity::P1, "hot".into(), None, 13)
            .unwrap();
        assert_eq!(
            (t.kind, t.alarm, a.activations),
            (TransitionKind::Reactivated, AlarmId(7), 2)
        );
    }

    #[test]
    fn acknowledging_twice_changes_nothing_the_second_time() {
        let mut a = alarm();
        a.raise(|| AlarmId(1), Severity::P2, String::new(), None, 0);
        assert!(a.acknowledge("ana", Some("on it"), 5).is_some());
        assert_eq!(a.state, AlarmState::ActiveAcked);
        assert!(a.acknowledge("bo", None, 6).is_none());
        assert_eq!(a.ack.as_ref().unwrap().by, "ana");
        let t = a.clear(7, None).unwrap();
        assert_eq!(t.to, AlarmState::Normal);
    }

    #[test]
    fn escalation_happens_once_and_only_while_active_and_unacknowledged() {
        let mut a = alarm();
        a.raise(|| AlarmId(1), Severity::P2, String::new(), None, 0);
        assert!(a.escalate(Severity::P1, 10).is_some());
        assert!(a.escalate(Severity::P0, 20).is_none());
        assert_eq!(a.severity, Severity::P1);
        let mut b = alarm();
        b.raise(|| AlarmId(2), Severity::P2, String::new(), None, 0);
        b.acknowledge("ana", None, 1);
        assert!(b.escalate(Severity::P1, 10).is_none());
    }

    #[test]
    fn ids_follow_the_clock_and_never_repeat() {
        let mut book = AlarmBook::default();
        assert_eq!(book.next_id(1_000), AlarmId(1_000));
        assert_eq!(book.next_id(1_000), AlarmId(1_001));
        assert_eq!(book.next_id(10), AlarmId(1_002));
        assert_eq!(book.next_id(5_000), AlarmId(5_000));
    }

    #[test]
    fn a_new_occurrence_replaces_the_old_id_in_the_index() {
        let mut book = AlarmBook::default();
        let slot = book.slot_or_insert(&"m1/v".into(), &"high".into(), Severity::P2);
        let first = book
            .raise(slot, Severity::P2, String::new(), None, 100)
            .unwrap()
            .alarm;
        book.get_mut(slot).acknowledge("ana", None, 101);
        book.get_mut(slot).clear(102, None);
        let second = book
            .raise(slot, Severity::P2, String::new(), None, 103)
            .unwrap()
            .alarm;
        assert_ne!(first, second);
        assert_eq!(book.slot_of_id(first), None);
        assert_eq!(book.slot_of_id(second), Some(slot));
    }
}

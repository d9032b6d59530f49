//! Flood suppression: when one device (or all devices together) raises more alarms within
//! a window than the rule set allows, further raises are folded into one summary alarm,
//! "storm on device X: 37 alarms in 60 s", instead of reaching the operator one by one.
//!
//! The raises that started the storm are folded retroactively if nobody has acknowledged
//! them yet, so a storm shows as a single alarm. Folded alarms keep their own state
//! machine and transitions (marked with the summary's id) but do not notify and are not
//! listed by default. Acknowledging the summary acknowledges them. The storm ends, and its
//! summary clears, once nothing has been folded into it for `quiet_s`; its alarms are then
//! released and listed again if they still need attention.
//!
//! Shelved alarms do not count towards a storm, and summaries do not count towards the
//! storm over all devices.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::action::{Trigger, device_of};
use crate::alarm::{AlarmBook, AlarmId, Severity, Slot, StormInfo, TransitionKind};
use crate::engine::{Core, Outputs, Timer, Timers, fire, storm_rule};
use crate::input::{MICROS_PER_SECOND, Timestamp};
use crate::rule::RuleSet;

/// The source of the summary of the storm over all devices.
const OVERALL: &str = "*";

#[derive(Debug)]
struct Tracker {
    /// The device, or [`OVERALL`].
    device: Arc<str>,
    /// Recent raises not yet in a storm: time and alarm slot.
    recent: VecDeque<(Timestamp, Slot)>,
    /// The slot of the summary alarm, once there has been a storm.
    summary: Option<Slot>,
}

#[derive(Debug, Default)]
pub(crate) struct Storms {
    by_device: HashMap<Arc<str>, u32>,
    trackers: Vec<Tracker>,
}

impl Storms {
    fn tracker(&mut self, device: &str) -> u32 {
        if let Some(&t) = self.by_device.get(device) {
            return t;
        }
        let device: Arc<str> = Arc::from(device);
        let t = self.trackers.len() as u32;
        self.trackers.push(Tracker {
            device: device.clone(),
            recent: VecDeque::new(),
            summary: None,
        });
        self.by_device.insert(device, t);
        t
    }

    /// Re-reads ongoing storms from the summary alarms in `book` (after a restore or a
    /// reload) and queues their end checks. Raises counted before are forgotten, since
    /// their slots may have changed.
    pub fn rebuild(&mut self, book: &AlarmBook, rules: &RuleSet, timers: &mut Timers) {
        for tracker in &mut self.trackers {
            tracker.recent.clear();
            tracker.summary = None;
        }
        for (slot, alarm) in book.iter() {
            let Some(info) = &alarm.storm else { continue };
            let t = self.tracker(&alarm.source);
            self.trackers[t as usize].summary = Some(slot);
            if alarm.state.is_active() {
                timers.push(info.last_raise_at + rules.storm.quiet, Timer::Storm(t));
            }
        }
    }
}

fn storm_message(
    device: &str,
    raises: u32,
    started_at: Timestamp,
    at: Timestamp,
    ended: bool,
) -> String {
    let seconds = ((at - started_at) / MICROS_PER_SECOND).max(1);
    let what = if device == OVERALL {
        "storm over all devices".to_owned()
    } else {
        format!("storm on device {device}")
    };
    if ended {
        format!("{what} ended: {raises} alarms in {seconds} s")
    } else {
        format!("{what}: {raises} alarms in {seconds} s")
    }
}

impl Core {
    /// Counts a raise of the alarm in `slot` and says which storm summary, if any, it is
    /// folded into. Starts a storm when the raise is one too many.
    pub(crate) fn storm_route(
        &mut self,
        rules: &RuleSet,
        slot: Slot,
        at: Timestamp,
        out: &mut Outputs,
    ) -> Option<AlarmId> {
        let settings = &rules.storm;
        let source = self.book.get(slot).source.clone();
        for (limit, device) in [
            (settings.per_device, device_of(&source)),
            (settings.overall, OVERALL),
        ] {
            if limit == 0 {
                continue;
            }
            let t = self.storms.tracker(device);
            if let Some(id) = self.ongoing(t) {
                self.fold_more(rules, t, slot, at, out);
                return Some(id);
            }
            let tracker = &mut self.storms.trackers[t as usize];
            tracker.recent.push_back((at, slot));
            while tracker
                .recent
                .front()
                .is_some_and(|(ts, _)| *ts <= at - settings.window)
            {
                tracker.recent.pop_front();
            }
            if tracker.recent.len() > limit as usize {
                return Some(self.start(rules, t, slot, at, out));
            }
        }
        None
    }

    /// The id of the summary of the storm of tracker `t`, if one is going on.
    fn ongoing(&self, t: u32) -> Option<AlarmId> {
        let slot = self.storms.trackers[t as usize].summary?;
        let alarm = self.book.try_get(slot)?;
        (alarm.state.is_active() && alarm.storm.is_some()).then_some(alarm.id)
    }

    fn start(
        &mut self,
        rules: &RuleSet,
        t: u32,
        current: Slot,
        at: Timestamp,
        out: &mut Outputs,
    ) -> AlarmId {
        let tracker = &mut self.storms.trackers[t as usize];
        let raises: Vec<(Timestamp, Slot)> = tracker.recent.drain(..).collect();
        let device = tracker.device.clone();
        let started_at = raises.first().map_or(at, |(ts, _)| *ts);
        let severity = raises
            .iter()
            .filter_map(|(_, s)| self.book.try_get(*s).map(|a| a.severity))
            .max()
            .unwrap_or(Severity::P2);
        let count = raises.len() as u32;
        let summary = self.book.slot_or_insert(&device, &storm_rule(), severity);
        self.storms.trackers[t as usize].summary = Some(summary);
        let message = storm_message(&device, count, started_at, at, false);
        if let Some(transition) = self.book.raise(summary, severity, message, None, at) {
            out.transitions.push(transition);
        }
        let alarm = self.book.get_mut(summary);
        alarm.storm = Some(StormInfo {
            device: device.clone(),
            folded: count,
            started_at,
            last_raise_at: at,
        });
        let id = alarm.id;
        let shelved = alarm.is_shelved();
        if !shelved {
            alarm.notified = true;
        }
        fire(
            &rules.storm.actions,
            Trigger::Raise,
            alarm,
            shelved,
            at,
            out,
        );
        // Fold the raises that made the storm, unless someone has already seen them.
        let mut seen = Vec::with_capacity(raises.len());
        for (_, s) in raises {
            if s == current || seen.contains(&s) {
                continue;
            }
            seen.push(s);
            if let Some(a) = self.book.try_get(s)
                && a.state.is_unacknowledged()
                && a.suppressed_by.is_none()
                && let Some(transition) = self.book.get_mut(s).fold(id, at)
            {
                out.transitions.push(transition);
            }
        }
        self.timers.push(at + rules.storm.quiet, Timer::Storm(t));
        id
    }

    fn fold_more(&mut self, rules: &RuleSet, t: u32, slot: Slot, at: Timestamp, out: &mut Outputs) {
        let Some(summary) = self.storms.trackers[t as usize].summary else {
            return;
        };
        let severity = self.book.get(slot).severity;
        let alarm = self.book.get_mut(summary);
        let Some(info) = alarm.storm.as_mut() else {
            return;
        };
        info.folded = info.folded.saturating_add(1);
        info.last_raise_at = at;
        alarm.message = storm_message(&info.device, info.folded, info.started_at, at, false);
        if severity > alarm.severity {
            // A more urgent alarm inside the storm makes the summary as urgent: it must not
            // hide behind a lower severity.
            let from = alarm.state;
            alarm.severity = severity;
            out.transitions.push(crate::alarm::Transition {
                alarm: alarm.id,
                source: alarm.source.clone(),
                rule: alarm.rule.clone(),
                kind: TransitionKind::Escalated,
                from,
                to: from,
                severity,
                ts: at,
                message: alarm.message.clone(),
                who: None,
                comment: Some(format!("a {severity} alarm was folded into the storm")),
                shelved: alarm.is_shelved(),
                suppressed_by: None,
            });
            let shelved = alarm.is_shelved();
            fire(
                &rules.storm.actions,
                Trigger::Escalate,
                alarm,
                shelved,
                at,
                out,
            );
        }
        self.timers.push(at + rules.storm.quiet, Timer::Storm(t));
    }

    /// Ends the storm of tracker `t` if nothing was folded into it for the quiet time.
    pub(crate) fn storm_timer(
        &mut self,
        rules: &RuleSet,
        t: u32,
        at: Timestamp,
        out: &mut Outputs,
    ) {
        let Some(tracker) = self.storms.trackers.get(t as usize) else {
            return;
        };
        let Some(summary) = tracker.summary else {
            return;
        };
        let Some(alarm) = self.book.try_get(summary) else {
            return;
        };
        let Some(info) = &alarm.storm else { return };
        if !alarm.state.is_active() || info.last_raise_at + rules.storm.quiet > at {
            return;
        }
        let id = alarm.id;
        let alarm = self.book.get_mut(summary);
        if let Some(info) = &alarm.storm {
            alarm.message = storm_message(
                &info.device,
                info.folded,
                info.started_at,
                info.last_raise_at,
                true,
            );
        }
        if let Some(transition) = alarm.clear(at, Some("the storm is over")) {
            out.transitions.push(transition);
            let shelved = alarm.is_shelved();
            fire(
                &rules.storm.actions,
                Trigger::Clear,
                alarm,
                shelved,
                at,
                out,
            );
        }
        for slot in self.book.slots() {
            let alarm = self.book.get_mut(slot);
            if alarm.suppressed_by == Some(id)
                && let Some(transition) = alarm.release(at)
            {
                out.transitions.push(transition);
                // Escalation was held while folded.
                self.timers.push(at, Timer::Alarm(slot));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_messages_say_where_how_many_and_how_long() {
        let s = MICROS_PER_SECOND;
        assert_eq!(
            storm_message("ahu-1", 37, 0, 60 * s, false),
            "storm on device ahu-1: 37 alarms in 60 s"
        );
        assert_eq!(
            storm_message("*", 120, 0, 0, true),
            "storm over all devices ended: 120 alarms in 1 s"
        );
    }
}

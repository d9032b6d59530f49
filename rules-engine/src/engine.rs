//! The engine: rules evaluated over samples, events and time, driving one alarm per
//! (source, rule). The call order is documented on [`Engine`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::action::{ActionOut, ActionSpec, ActionVars, Trigger, device_of, point_of};
use crate::alarm::{
    Alarm, AlarmBook, AlarmError, AlarmId, AlarmState, STORM_RULE, Severity, Slot, Transition,
};
use crate::condition::{Input, Leaf, LeafState, wake_at};
use crate::input::{EventIn, SampleIn, SampleValue, Timestamp};
use crate::rule::{Rule, RuleSet, Watch};
use crate::storm::Storms;
use crate::template::{Var, Vars};

/// How many keys that no rule watches the engine remembers, to answer them quickly. Keys
/// past this are looked up again each time instead of filling memory.
const MAX_UNWATCHED_KEYS: usize = 100_000;
/// The version of [`EngineState`] this build writes.
const STATE_FORMAT: u32 = 1;
/// Times beyond ±2^60 µs (about 36,000 years) are not real; they are clamped so that no
/// window or delay arithmetic can overflow.
const MAX_TIME: Timestamp = 1 << 60;

fn clamp(ts: Timestamp) -> Timestamp {
    ts.clamp(-MAX_TIME, MAX_TIME)
}

/// What the engine produced: transitions to store and actions to perform. Reuse one buffer
/// and [`Outputs::clear`] it after handling its contents.
#[derive(Debug, Default)]
pub struct Outputs {
    pub transitions: Vec<Transition>,
    pub actions: Vec<ActionOut>,
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    pub fn clear(&mut self) {
        self.transitions.clear();
        self.actions.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.transitions.is_empty() && self.actions.is_empty()
    }
}

/// Which alarms [`Engine::alarms`] lists. The default lists every alarm that is not
/// `Normal` and not folded into a storm summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlarmFilter {
    /// Only alarms in this state (`Normal` lists the last, closed occurrences).
    pub state: Option<AlarmState>,
    pub severity: Option<Severity>,
    /// Only sources starting with this text, such as a device name with its `/`.
    pub source_prefix: Option<String>,
    pub rule: Option<String>,
    /// Also list alarms folded into storm summaries.
    pub include_folded: bool,
}

impl AlarmFilter {
    fn accepts(&self, a: &Alarm) -> bool {
        let state_ok = match self.state {
            Some(s) => a.state == s,
            None => a.state != AlarmState::Normal,
        };
        state_ok
            && self.severity.is_none_or(|s| a.severity == s)
            && self
                .source_prefix
                .as_deref()
                .is_none_or(|p| a.source.starts_with(p))
            && self.rule.as_deref().is_none_or(|r| &*a.rule == r)
            && (self.include_folded || a.suppressed_by.is_none())
    }
}

/// The alarm state to keep across a restart (serde).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub format: u32,
    pub last_alarm_id: u64,
    pub alarms: Vec<Alarm>,
}

/// Saved state written by a build that this one cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("alarm state format {found} is not known (this build reads format {known})")]
pub struct StateFormatError {
    pub found: u32,
    pub known: u32,
}

/// Counters for the node's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Sources (point keys and doors) that at least one rule watches.
    pub sources: usize,
    /// (source, rule) pairs being evaluated.
    pub instances: usize,
    /// Alarms that are not `Normal`.
    pub open_alarms: usize,
    /// Samples older than one already evaluated for the same (source, rule), skipped.
    pub late_inputs: u64,
    pub pending_timers: usize,
}

/// The value a rule last saw, for messages and actions.
#[derive(Clone, Debug, Default, PartialEq)]
enum LastValue {
    #[default]
    None,
    Number(f64),
    Bool(bool),
    Text(Box<str>),
}

impl LastValue {
    /// Updates from a sample; text is copied only when it changed.
    fn update(&mut self, v: &SampleValue<'_>) {
        match *v {
            SampleValue::Number(x) => *self = LastValue::Number(x),
            SampleValue::Bool(b) => *self = LastValue::Bool(b),
            SampleValue::Text(t) => {
                if !matches!(self, LastValue::Text(old) if &**old == t) {
                    *self = LastValue::Text(t.into());
                }
            }
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            LastValue::None => None,
            LastValue::Number(x) => Some(x.to_string()),
            LastValue::Bool(b) => Some(b.to_string()),
            LastValue::Text(t) => Some(t.to_string()),
        }
    }
}

struct Source {
    key: Arc<str>,
    instances: Vec<u32>,
}

/// A source known before a rebuild, with its instances by rule id.
type KnownSource = (Watch, Arc<str>, HashMap<Arc<str>, Instance>);

/// The evaluation state of one (source, rule) pair.
struct Instance {
    rule: u32,
    source: u32,
    states: Box<[LeafState]>,
    /// The condition after delays: whether the alarm should be active.
    active: bool,
    /// A change of the condition waiting out its delay: the value and since when.
    pending: Option<(bool, Timestamp)>,
    /// The newest input time; older inputs are late and skipped.
    last_input: Timestamp,
    /// The latest time the instance was evaluated at; evaluation never goes back.
    clock: Timestamp,
    /// When the condition could next change without input.
    wake: Option<Timestamp>,
    /// The earliest timer queued for this instance.
    scheduled: Option<Timestamp>,
    alarm: Option<Slot>,
    value: LastValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Instance(u32),
    /// Shelving expiry and escalation of an alarm.
    Alarm(Slot),
    /// The possible end of a storm.
    Storm(u32),
}

#[derive(Debug, Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Timestamp, Timer)>>,
}

impl Timers {
    pub fn push(&mut self, at: Timestamp, timer: Timer) {
        self.heap.push(Reverse((at, timer)));
    }

    fn pop_due(&mut self, now: Timestamp) -> Option<(Timestamp, Timer)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    fn next(&self) -> Option<Timestamp> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }
}

/// The alarm side of the engine: records, storms, timers.
#[derive(Default)]
pub(crate) struct Core {
    pub book: AlarmBook,
    pub storms: Storms,
    pub timers: Timers,
}

/// Rules evaluated over samples, events and time, with the alarm state machine of every
/// (source, rule) pair.
///
/// # Method kinds and call order
///
/// - Inputs, in time order per source: [`Engine::handle_sample`], [`Engine::handle_event`].
///   A sample older than one already evaluated for the same (source, rule) is skipped and
///   counted in [`EngineStats::late_inputs`].
/// - Time: [`Engine::handle_timeout`] with the current time whenever
///   [`Engine::poll_timeout`] says something is due (or simply every second). Stale data,
///   on- and off-delays, sliding windows, schedules, shelving expiry, escalation and the end
///   of storms happen there, each at the instant it was due; nothing scans every rule. A
///   delay that ends between two timeouts is also applied when the next input of its source
///   arrives, so results do not depend on how often time is handled.
/// - Operators: [`Engine::acknowledge`], [`Engine::shelve`], [`Engine::unshelve`],
///   [`Engine::comment`]; reading: [`Engine::alarms`], [`Engine::alarm`],
///   [`Engine::stats`].
/// - Points known from configuration that may never report: [`Engine::register_point`].
/// - Reload: [`Engine::replace_rules`]. Restart: [`Engine::export_state`] before,
///   [`Engine::import_state`] right after [`Engine::new`].
///
/// Every method that can change an alarm appends to an [`Outputs`] the caller owns and
/// reuses: the [`Transition`]s to store as events and the [`ActionOut`]s to perform.
pub struct Engine {
    rules: RuleSet,
    point_keys: HashMap<Box<str>, u32>,
    event_keys: HashMap<Box<str>, u32>,
    sources: Vec<Source>,
    instances: Vec<Instance>,
    core: Core,
    /// Whether exact keys of rules that watch for silence still need their instances.
    arm_pending: bool,
    unwatched: usize,
    late_inputs: u64,
    scratch: Vec<u32>,
}

struct MessageVars<'a> {
    source: &'a str,
    rule: &'a str,
    value: &'a str,
    severity: Severity,
}

impl Vars for MessageVars<'_> {
    fn write_var(&self, var: Var, out: &mut String) {
        match var {
            Var::Source => out.push_str(self.source),
            Var::Device => out.push_str(device_of(self.source)),
            Var::Point => out.push_str(point_of(self.source)),
            Var::Rule => out.push_str(self.rule),
            Var::Value => out.push_str(self.value),
            Var::Severity => out.push_str(self.severity.name()),
            Var::Message | Var::Alarm | Var::Trigger | Var::State => {}
        }
    }
}

impl Engine {
    pub fn new(rules: RuleSet) -> Engine {
        Engine {
            rules,
            point_keys: HashMap::new(),
            event_keys: HashMap::new(),
            sources: Vec::new(),
            instances: Vec::new(),
            core: Core::default(),
            arm_pending: true,
            unwatched: 0,
            late_inputs: 0,
            scratch: Vec::new(),
        }
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Evaluates the rules watching `sample.point`. Costs one hash lookup plus the matching
    /// rules; allocates nothing unless an alarm changes or the key is new.
    pub fn handle_sample(&mut self, sample: &SampleIn<'_>, out: &mut Outputs) {
        let sample = &SampleIn {
            ts: clamp(sample.ts),
            ..*sample
        };
        self.arm(sample.ts, out);
        let Some(src) = self.source(Watch::Points, sample.point, sample.ts, true, out) else {
            return;
        };
        for k in 0..self.sources[src as usize].instances.len() {
            let i = self.sources[src as usize].instances[k];
            let inst = &mut self.instances[i as usize];
            if sample.ts < inst.last_input {
                self.late_inputs += 1;
                continue;
            }
            inst.last_input = sample.ts;
            self.catch_up(i, sample.ts, out);
            if let Some(v) = sample.usable_value() {
                self.instances[i as usize].value.update(&v);
            }
            self.evaluate(i, Input::Sample(sample), sample.ts, out);
        }
    }

    /// Evaluates the rules watching `event.source` that react to `event.kind`.
    pub fn handle_event(&mut self, event: &EventIn<'_>, out: &mut Outputs) {
        let event = &EventIn {
            ts: clamp(event.ts),
            ..*event
        };
        self.arm(event.ts, out);
        let Some(src) = self.source(Watch::Events, event.source, event.ts, true, out) else {
            return;
        };
        for k in 0..self.sources[src as usize].instances.len() {
            let i = self.sources[src as usize].instances[k];
            let inst = &mut self.instances[i as usize];
            if !self.rules.rules[inst.rule as usize].reacts_to(event.kind) {
                continue;
            }
            if event.ts < inst.last_input {
                self.late_inputs += 1;
                continue;
            }
            inst.last_input = event.ts;
            self.catch_up(i, event.ts, out);
            self.evaluate(i, Input::Event(event), event.ts, out);
        }
    }

    /// Runs everything that is due at `now`: stale checks, delays, windows, schedules,
    /// shelving expiry, escalation, storm ends.
    pub fn handle_timeout(&mut self, now: Timestamp, out: &mut Outputs) {
        let now = clamp(now);
        self.arm(now, out);
        while let Some((at, timer)) = self.core.timers.pop_due(now) {
            match timer {
                Timer::Instance(i) => {
                    let Some(inst) = self.instances.get_mut(i as usize) else {
                        continue;
                    };
                    if inst.scheduled != Some(at) {
                        continue;
                    }
                    inst.scheduled = None;
                    self.catch_up(i, now, out);
                    self.schedule(i);
                }
                Timer::Alarm(slot) => self.alarm_timer(slot, at, out),
                Timer::Storm(t) => self.core.storm_timer(&self.rules, t, at, out),
            }
        }
    }

    /// When [`Engine::handle_timeout`] should next be called, if anything is waiting.
    /// `Timestamp::MIN` means at once: a new rule set waits for its first time to start
    /// watching the exact points of its stale rules.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.arm_pending && !self.rules.is_empty() {
            return Some(Timestamp::MIN);
        }
        self.core.timers.next()
    }

    /// Makes `point` known before it reports, so that rules watching for silence (stale)
    /// raise their alarm if it never does. Exact keys in rules are known without this;
    /// this is for points matched by wildcard patterns, which the edge knows from its
    /// device configuration.
    pub fn register_point(&mut self, point: &str, now: Timestamp, out: &mut Outputs) {
        let now = clamp(now);
        self.arm(now, out);
        self.source(Watch::Points, point, now, true, out);
    }

    /// Acknowledges an alarm. Acknowledging an acknowledged alarm is accepted and changes
    /// nothing. Acknowledging a storm summary also acknowledges the alarms folded into it.
    pub fn acknowledge(
        &mut self,
        id: AlarmId,
        user: &str,
        comment: Option<&str>,
        now: Timestamp,
        out: &mut Outputs,
    ) -> Result<(), AlarmError> {
        let slot = self.slot(id)?;
        check_user(user)?;
        let now = clamp(now);
        let comment = comment.filter(|c| !c.trim().is_empty());
        if let Some(t) = self.core.book.get_mut(slot).acknowledge(user, comment, now) {
            out.transitions.push(t);
        }
        if self.core.book.get(slot).is_storm_summary() {
            for member in self.core.book.slots() {
                let a = self.core.book.get_mut(member);
                if a.suppressed_by == Some(id)
                    && let Some(t) = a.acknowledge(user, comment, now)
                {
                    out.transitions.push(t);
                }
            }
        }
        Ok(())
    }

    /// Shelves an alarm until `until`: it keeps changing state but does not notify
    /// (suppressible actions are held back) and does not escalate. Shelving again moves
    /// the end. The shelf stays with the (source, rule) pair across occurrences until it
    /// expires.
    pub fn shelve(
        &mut self,
        id: AlarmId,
        until: Timestamp,
        user: &str,
        reason: Option<&str>,
        now: Timestamp,
        out: &mut Outputs,
    ) -> Result<(), AlarmError> {
        let slot = self.slot(id)?;
        check_user(user)?;
        let (now, until) = (clamp(now), clamp(until));
        if until <= now {
            return Err(AlarmError::ShelfEndsInPast { until, now });
        }
        let reason = reason.filter(|r| !r.trim().is_empty());
        out.transitions.push(
            self.core
                .book
                .get_mut(slot)
                .shelve(user, until, reason, now),
        );
        self.core.timers.push(until, Timer::Alarm(slot));
        Ok(())
    }

    /// Takes an alarm off the shelf. An active alarm that has not notified yet notifies now.
    pub fn unshelve(
        &mut self,
        id: AlarmId,
        user: &str,
        now: Timestamp,
        out: &mut Outputs,
    ) -> Result<(), AlarmError> {
        let slot = self.slot(id)?;
        check_user(user)?;
        self.take_off_shelf(slot, Some(user), clamp(now), out);
        Ok(())
    }

    /// Adds an operator's comment to the current occurrence.
    pub fn comment(
        &mut self,
        id: AlarmId,
        user: &str,
        text: &str,
        now: Timestamp,
        out: &mut Outputs,
    ) -> Result<(), AlarmError> {
        let slot = self.slot(id)?;
        check_user(user)?;
        if text.trim().is_empty() {
            return Err(AlarmError::EmptyComment);
        }
        out.transitions
            .push(self.core.book.get_mut(slot).add_comment(user, text, now));
        Ok(())
    }

    /// The alarm with this id, if it is the current or last occurrence of its pair.
    pub fn alarm(&self, id: AlarmId) -> Option<&Alarm> {
        self.core.book.slot_of_id(id).map(|s| self.core.book.get(s))
    }

    /// The alarms that pass `filter`, most severe first, then most recently raised first.
    pub fn alarms(&self, filter: &AlarmFilter) -> Vec<&Alarm> {
        let mut list: Vec<&Alarm> = self
            .core
            .book
            .iter()
            .map(|(_, a)| a)
            .filter(|a| a.id.0 != 0 && filter.accepts(a))
            .collect();
        list.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.raised_at.cmp(&a.raised_at))
                .then(b.id.cmp(&a.id))
        });
        list
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            sources: self
                .sources
                .iter()
                .filter(|s| !s.instances.is_empty())
                .count(),
            instances: self.instances.len(),
            open_alarms: self
                .core
                .book
                .iter()
                .filter(|(_, a)| a.state != AlarmState::Normal)
                .count(),
            late_inputs: self.late_inputs,
            pending_timers: self.core.timers.heap.len(),
        }
    }

    /// Swaps in new rules, keeping what still applies: alarms of rules that still exist
    /// (by id) and still match their source stay as they are, and the condition state of
    /// rules whose condition and delays did not change is kept. Alarms of rules that are
    /// gone, disabled or no longer match are cleared with a reason. A file that does not
    /// compile never gets here, so the running rules stay.
    pub fn replace_rules(&mut self, rules: RuleSet, now: Timestamp, out: &mut Outputs) {
        let old_rules = std::mem::replace(&mut self.rules, rules);
        self.rebuild(Some(&old_rules), clamp(now), out);
    }

    /// The alarm state to save before a shutdown.
    pub fn export_state(&self) -> EngineState {
        EngineState {
            format: STATE_FORMAT,
            last_alarm_id: self.core.book.last_id(),
            alarms: self
                .core
                .book
                .iter()
                .map(|(_, a)| a.clone())
                .filter(|a| a.id.0 != 0)
                .collect(),
        }
    }

    /// Restores saved alarm state; call it right after [`Engine::new`]. Conditions are not
    /// saved: they start unknown, and an unknown condition changes no alarm, so restored
    /// active alarms stay active until data says they have cleared. Alarms of rules that no
    /// longer exist are cleared with a reason. State of an unknown format is refused and
    /// changes nothing.
    pub fn import_state(
        &mut self,
        state: EngineState,
        now: Timestamp,
        out: &mut Outputs,
    ) -> Result<(), StateFormatError> {
        if state.format != STATE_FORMAT {
            return Err(StateFormatError {
                found: state.format,
                known: STATE_FORMAT,
            });
        }
        self.core.book.clear();
        self.core.book.set_last_id(state.last_alarm_id);
        for alarm in state.alarms {
            if alarm.id.0 != 0 {
                self.core.book.insert(alarm);
            }
        }
        self.core.storms = Storms::default();
        self.rebuild(None, clamp(now), out);
        Ok(())
    }

    fn slot(&self, id: AlarmId) -> Result<Slot, AlarmError> {
        self.core
            .book
            .slot_of_id(id)
            .ok_or(AlarmError::NotFound(id))
    }

    /// Creates the instances of exact keys of silence-watching rules, once after start or
    /// reload, so that a point that never reports still raises its stale alarm.
    fn arm(&mut self, now: Timestamp, out: &mut Outputs) {
        if !self.arm_pending {
            return;
        }
        self.arm_pending = false;
        let keys: Vec<String> = self
            .rules
            .points
            .exact_keys()
            .filter(|(_, rules)| {
                rules
                    .iter()
                    .any(|&r| self.rules.rules[r as usize].watches_silence)
            })
            .map(|(k, _)| k.to_owned())
            .collect();
        for key in keys {
            self.source(Watch::Points, &key, now, true, out);
        }
    }

    /// The source of `key`, created with its instances when first seen. New instances are
    /// evaluated once at `at` when `evaluate` is set, so that time-driven conditions (stale,
    /// windows, schedules) get their first wake-up.
    fn source(
        &mut self,
        watch: Watch,
        key: &str,
        at: Timestamp,
        evaluate: bool,
        out: &mut Outputs,
    ) -> Option<u32> {
        let map = match watch {
            Watch::Points => &self.point_keys,
            Watch::Events => &self.event_keys,
        };
        if let Some(&src) = map.get(key) {
            return Some(src);
        }
        let index = match watch {
            Watch::Points => &self.rules.points,
            Watch::Events => &self.rules.sources,
        };
        let mut rules = std::mem::take(&mut self.scratch);
        index.lookup(key, &mut rules);
        if rules.is_empty() {
            if self.unwatched >= MAX_UNWATCHED_KEYS {
                self.scratch = rules;
                return None;
            }
            self.unwatched += 1;
        }
        let src = self.sources.len() as u32;
        let key_arc: Arc<str> = Arc::from(key);
        self.sources.push(Source {
            key: key_arc.clone(),
            instances: Vec::with_capacity(rules.len()),
        });
        let map = match watch {
            Watch::Points => &mut self.point_keys,
            Watch::Events => &mut self.event_keys,
        };
        map.insert(key.into(), src);
        for &r in &rules {
            let i = self.new_instance(r, src, &key_arc, at);
            self.sources[src as usize].instances.push(i);
        }
        self.scratch = rules;
        if evaluate {
            for k in 0..self.sources[src as usize].instances.len() {
                let i = self.sources[src as usize].instances[k];
                self.evaluate(i, Input::Time, at, out);
            }
        }
        Some(src)
    }

    fn new_instance(&mut self, rule: u32, src: u32, key: &Arc<str>, at: Timestamp) -> u32 {
        let r = &self.rules.rules[rule as usize];
        let alarm = self.core.book.slot_of(key, &r.id);
        let active = alarm.is_some_and(|s| self.core.book.get(s).state.is_active());
        self.instances.push(Instance {
            rule,
            source: src,
            states: r.cond.new_states(r.leaves, at),
            active,
            pending: None,
            last_input: Timestamp::MIN,
            clock: at,
            wake: None,
            scheduled: None,
            alarm,
            value: LastValue::None,
        });
        (self.instances.len() - 1) as u32
    }

    /// Evaluates an instance at each of its wake-up times up to and including `until`.
    fn catch_up(&mut self, i: u32, until: Timestamp, out: &mut Outputs) {
        // Each evaluation moves the wake strictly later; the bound only guards that promise.
        for _ in 0..1024 {
            let inst = &self.instances[i as usize];
            match inst.wake {
                Some(w) if w <= until => {
                    let at = w.max(inst.clock);
                    self.evaluate(i, Input::Time, at, out);
                    if self.instances[i as usize]
                        .wake
                        .is_some_and(|next| next <= at)
                    {
                        break;
                    }
                }
                _ => break,
            }
        }
    }

    /// Applies one input to an instance at `at`, runs the delays and moves the alarm.
    fn evaluate(&mut self, i: u32, input: Input<'_>, at: Timestamp, out: &mut Outputs) {
        let inst = &mut self.instances[i as usize];
        let rule = &self.rules.rules[inst.rule as usize];
        let at = at.max(inst.clock);
        inst.clock = at;
        {
            let states = &mut inst.states;
            rule.cond
                .for_each_leaf(&mut |k, leaf| leaf.observe(&mut states[k], input, at));
        }
        let mut wake = None;
        let raw = rule.cond.eval(&inst.states, at, &mut wake);
        let mut edges: [Option<bool>; 2] = [debounce(rule, inst, raw, at, &mut wake), None];
        if rule.momentary && matches!(input, Input::Event(_)) {
            // The instant of a momentary event is over: evaluate once more without it.
            inst.states.iter_mut().for_each(Leaf::end_pulse);
            wake = None;
            let raw = rule.cond.eval(&inst.states, at, &mut wake);
            edges[1] = debounce(rule, inst, raw, at, &mut wake);
        }
        inst.wake = wake;
        self.schedule(i);
        for edge in edges.into_iter().flatten() {
            if edge {
                self.raise(i, at, out);
            } else {
                self.clear(i, at, out);
            }
        }
    }

    fn schedule(&mut self, i: u32) {
        let inst = &mut self.instances[i as usize];
        if let Some(w) = inst.wake
            && inst.scheduled.is_none_or(|s| w < s)
        {
            inst.scheduled = Some(w);
            self.core.timers.push(w, Timer::Instance(i));
        }
    }

    fn raise(&mut self, i: u32, at: Timestamp, out: &mut Outputs) {
        let inst = &mut self.instances[i as usize];
        let rule = &self.rules.rules[inst.rule as usize];
        let source = &self.sources[inst.source as usize].key;
        let book = &mut self.core.book;
        let slot = *inst
            .alarm
            .get_or_insert_with(|| book.slot_or_insert(source, &rule.id, rule.severity));
        let value = inst.value.text();
        let message = rule.message.render(&MessageVars {
            source,
            rule: &rule.id,
            value: value.as_deref().unwrap_or(""),
            severity: rule.severity,
        });
        let Some(mut t) = book.raise(slot, rule.severity, message, value, at) else {
            return;
        };
        let shelved = book.get(slot).is_shelved();
        let folded = if shelved {
            None
        } else {
            self.core.storm_route(&self.rules, slot, at, out)
        };
        if let Some(summary) = folded {
            self.core.book.get_mut(slot).suppressed_by = Some(summary);
            t.suppressed_by = Some(summary);
        }
        out.transitions.push(t);
        if let Some((after, _)) = rule.escalation {
            let raised_at = self.core.book.get(slot).raised_at;
            self.core.timers.push(raised_at + after, Timer::Alarm(slot));
        }
        let alarm = self.core.book.get_mut(slot);
        let suppressed = alarm.is_shelved() || alarm.suppressed_by.is_some();
        // Whether this activation reached anyone: unshelving catches up if not.
        alarm.notified = !suppressed;
        fire(&rule.actions, Trigger::Raise, alarm, suppressed, at, out);
    }

    fn clear(&mut self, i: u32, at: Timestamp, out: &mut Outputs) {
        let inst = &self.instances[i as usize];
        let Some(slot) = inst.alarm else { return };
        let rule = &self.rules.rules[inst.rule as usize];
        let alarm = self.core.book.get_mut(slot);
        let Some(t) = alarm.clear(at, None) else {
            return;
        };
        out.transitions.push(t);
        let suppressed = alarm.is_shelved() || alarm.suppressed_by.is_some();
        fire(&rule.actions, Trigger::Clear, alarm, suppressed, at, out);
    }

    /// Shelving expiry and escalation of the alarm in `slot`, due at `at`.
    fn alarm_timer(&mut self, slot: Slot, at: Timestamp, out: &mut Outputs) {
        let Some(alarm) = self.core.book.try_get(slot) else {
            return;
        };
        match alarm.shelf.as_ref().map(|s| s.until) {
            Some(until) if until <= at => self.take_off_shelf(slot, None, at, out),
            Some(until) => self.core.timers.push(until, Timer::Alarm(slot)),
            None => {}
        }
        let alarm = self.core.book.get(slot);
        let Some(r) = self.rules.index_of(&alarm.rule) else {
            return;
        };
        let rule = &self.rules.rules[r as usize];
        let Some((after, to)) = rule.escalation else {
            return;
        };
        if alarm.escalated
            || alarm.state != AlarmState::ActiveUnacked
            || alarm.is_shelved()
            || alarm.suppressed_by.is_some()
        {
            return;
        }
        let due = alarm.raised_at + after;
        if due > at {
            self.core.timers.push(due, Timer::Alarm(slot));
            return;
        }
        let alarm = self.core.book.get_mut(slot);
        if let Some(t) = alarm.escalate(to, at) {
            out.transitions.push(t);
            fire(&rule.actions, Trigger::Escalate, alarm, false, at, out);
        }
    }

    fn take_off_shelf(&mut self, slot: Slot, user: Option<&str>, at: Timestamp, out: &mut Outputs) {
        let alarm = self.core.book.get_mut(slot);
        let Some(t) = alarm.unshelve(user, at) else {
            return;
        };
        out.transitions.push(t);
        // An active alarm that was raised on the shelf has not told anyone yet.
        if alarm.state.is_active() && !alarm.notified && alarm.suppressed_by.is_none() {
            alarm.notified = true;
            let actions = if alarm.is_storm_summary() {
                Some(&self.rules.storm.actions)
            } else {
                self.rules
                    .index_of(&alarm.rule)
                    .map(|r| &self.rules.rules[r as usize].actions)
            };
            if let Some(actions) = actions {
                fire(actions, Trigger::Raise, alarm, false, at, out);
            }
        }
        // Escalation was held while shelved.
        self.core.timers.push(at, Timer::Alarm(slot));
    }

    /// Rebuilds sources, instances and timers against the current rules and alarm book,
    /// carrying over condition state from `old` where a rule evaluates as before.
    fn rebuild(&mut self, old: Option<&RuleSet>, now: Timestamp, out: &mut Outputs) {
        let old_sources = std::mem::take(&mut self.sources);
        let mut old_instances: Vec<Option<Instance>> = std::mem::take(&mut self.instances)
            .into_iter()
            .map(Some)
            .collect();
        let point_keys = std::mem::take(&mut self.point_keys);
        let event_keys = std::mem::take(&mut self.event_keys);
        self.core.timers = Timers::default();
        self.unwatched = 0;

        // Keys known before, with the old instances by rule id.
        let mut known: Vec<KnownSource> = Vec::new();
        for (watch, keys) in [(Watch::Points, &point_keys), (Watch::Events, &event_keys)] {
            for &src in keys.values() {
                let source = &old_sources[src as usize];
                let mut by_rule = HashMap::new();
                for &i in &source.instances {
                    if let (Some(inst), Some(old)) = (old_instances[i as usize].take(), old) {
                        let rule = &old.rules[inst.rule as usize];
                        by_rule.insert(rule.id.clone(), inst);
                    }
                }
                known.push((watch, source.key.clone(), by_rule));
            }
        }
        // Sources of restored or surviving alarms, so that their conditions are evaluated.
        for (_, alarm) in self.core.book.iter() {
            if alarm.is_storm_summary() {
                continue;
            }
            if let Some(r) = self.rules.index_of(&alarm.rule) {
                let watch = self.rules.rules[r as usize].watch;
                let listed = match watch {
                    Watch::Points => point_keys.contains_key(&*alarm.source),
                    Watch::Events => event_keys.contains_key(&*alarm.source),
                };
                if !listed {
                    known.push((watch, alarm.source.clone(), HashMap::new()));
                }
            }
        }
        // Several alarms can share a source; the sort is stable and an old source is never
        // listed twice, so the dedup keeps the entry holding its instances.
        known.sort_by(|a, b| (a.0 == Watch::Events, &a.1).cmp(&(b.0 == Watch::Events, &b.1)));
        known.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);

        for (watch, key, mut by_rule) in known {
            let Some(src) = self.source(watch, &key, now, false, out) else {
                continue;
            };
            for k in 0..self.sources[src as usize].instances.len() {
                let i = self.sources[src as usize].instances[k];
                let rule = &self.rules.rules[self.instances[i as usize].rule as usize];
                let Some(mut kept) = by_rule.remove(&rule.id) else {
                    continue;
                };
                let old_rule = old.map(|o| &o.rules[kept.rule as usize]);
                if old_rule.is_some_and(|o| o.same_evaluation(rule)) {
                    let fresh = &self.instances[i as usize];
                    kept.rule = fresh.rule;
                    kept.source = src;
                    kept.alarm = fresh.alarm;
                    kept.scheduled = None;
                    kept.active = fresh
                        .alarm
                        .is_some_and(|s| self.core.book.get(s).state.is_active());
                    self.instances[i as usize] = kept;
                    continue;
                }
                self.instances[i as usize].value = kept.value;
            }
        }
        // Evaluate everything once at `now`: kept instances catch up on what fell due while
        // no timers ran, fresh ones get their first wake-up.
        for i in 0..self.instances.len() as u32 {
            self.catch_up(i, now, out);
            self.evaluate(i, Input::Time, now, out);
        }

        // Alarms that no rule produces any more are cleared; closed ones are dropped.
        for slot in self.core.book.slots() {
            let alarm = self.core.book.get(slot);
            if alarm.is_storm_summary() {
                if alarm.shelf.is_some() {
                    self.core.timers.push(now, Timer::Alarm(slot));
                }
                continue;
            }
            let applies = self.rules.index_of(&alarm.rule).is_some_and(|r| {
                let rule = &self.rules.rules[r as usize];
                rule.enabled && rule.matches(&alarm.source)
            });
            if applies {
                if alarm.shelf.is_some() || alarm.state == AlarmState::ActiveUnacked {
                    self.core.timers.push(now, Timer::Alarm(slot));
                }
                continue;
            }
            let alarm = self.core.book.get_mut(slot);
            if let Some(t) = alarm.clear(now, Some("the rule was removed or no longer applies")) {
                out.transitions.push(t);
            }
            if alarm.state == AlarmState::Normal {
                self.core.book.remove(slot);
            }
        }
        self.core
            .storms
            .rebuild(&self.core.book, &self.rules, &mut self.core.timers);
        self.arm_pending = true;
        self.arm(now, out);
    }
}

/// Runs the on- and off-delays: returns the change of the debounced condition, if any.
fn debounce(
    rule: &Rule,
    inst: &mut Instance,
    raw: Option<bool>,
    at: Timestamp,
    wake: &mut Option<Timestamp>,
) -> Option<bool> {
    match raw {
        None => {
            inst.pending = None;
            None
        }
        Some(x) if x == inst.active => {
            inst.pending = None;
            None
        }
        Some(x) => {
            let since = match inst.pending {
                Some((p, since)) if p == x => since,
                _ => at,
            };
            let delay = if x { rule.on_delay } else { rule.off_delay };
            if at - since >= delay {
                inst.active = x;
                inst.pending = None;
                Some(x)
            } else {
                inst.pending = Some((x, since));
                wake_at(wake, since + delay);
                None
            }
        }
    }
}

fn check_user(user: &str) -> Result<(), AlarmError> {
    if user.trim().is_empty() {
        Err(AlarmError::NoUser)
    } else {
        Ok(())
    }
}

/// Renders the actions of `actions` that fire on `trigger`. While `suppressed` (shelved or
/// folded into a storm), only actions marked `suppressible = false` fire.
pub(crate) fn fire(
    actions: &[ActionSpec],
    trigger: Trigger,
    alarm: &Alarm,
    suppressed: bool,
    at: Timestamp,
    out: &mut Outputs,
) {
    for action in actions {
        if !action.on.contains(&trigger) || (suppressed && action.suppressible) {
            continue;
        }
        out.actions.push(action.render(&ActionVars {
            alarm: alarm.id,
            source: &alarm.source,
            rule: &alarm.rule,
            value: alarm.value.as_deref().unwrap_or(""),
            severity: alarm.severity,
            message: &alarm.message,
            trigger,
            state: alarm.state,
            ts: at,
        }));
    }
}

/// The storm rule id as shared text.
pub(crate) fn storm_rule() -> Arc<str> {
    Arc::from(STORM_RULE)
}

#[cfg(test)]
mod tests;

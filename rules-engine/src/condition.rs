//! Compiled conditions and their per-(source, rule) state.
//!
//! Conditions use three-valued logic: a leaf is `Some(true)`, `Some(false)` or `None`
//! (unknown: no evidence yet, such as a threshold before its first value). `all`, `any` and
//! `not` combine unknowns the usual way (Kleene). An unknown result changes no alarm, so a
//! rule that has just been loaded, or an engine that has just restored its alarms, does not
//! clear an alarm before it has seen data that says so.
//!
//! Leaves update their state on each input ([`Leaf::observe`]) and then say what they are at
//! a time ([`Leaf::truth`]) and when that could change without any input (`wake`), which is
//! how stale data, delays, windows and schedules work without scanning every rule on every
//! tick.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::input::{
    EventIn, MICROS_PER_MINUTE, MICROS_PER_SECOND, Quality, SampleIn, Timestamp, Value,
};
use crate::schedule::Schedule;

/// A rate-of-change window keeps samples at least `window / RATE_RESOLUTION` apart, so its
/// memory is bounded whatever the sample rate.
const RATE_RESOLUTION: i64 = 64;

/// What a condition tree is evaluated on.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Input<'a> {
    Sample(&'a SampleIn<'a>),
    Event(&'a EventIn<'a>),
    /// Only time has passed.
    Time,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Cond {
    /// A leaf and the index of its state.
    Leaf(usize, Leaf),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    During(Arc<Schedule>),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Leaf {
    Threshold {
        above: Option<f64>,
        below: Option<f64>,
        deadband: f64,
    },
    Rate {
        window: i64,
        rise: Option<f64>,
        fall: Option<f64>,
        change: Option<f64>,
    },
    Stale {
        after: i64,
    },
    Quality {
        set: u8,
    },
    Equals(Value),
    Consumption {
        window: i64,
        baseline: Baseline,
        factor: f64,
        utc_offset_minutes: i32,
    },
    EventCount {
        kind: Arc<str>,
        count: u32,
        window: i64,
    },
    HeldOpen {
        after: i64,
        opened: Arc<str>,
        closed: Arc<str>,
    },
    Event {
        kind: Arc<str>,
        clear_on: Option<Arc<str>>,
        clear_after: Option<i64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Baseline {
    Fixed(f64),
    /// The mean of the last N complete windows that were not over the limit.
    Learned(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Zone {
    Normal,
    High,
    Low,
}

#[derive(Clone, Debug)]
pub(crate) enum LeafState {
    Threshold(Option<Zone>),
    Rate {
        ring: VecDeque<(Timestamp, f64)>,
        newest: Option<(Timestamp, f64)>,
    },
    Stale {
        last_seen: Option<Timestamp>,
        since: Timestamp,
    },
    Quality(Option<Quality>),
    Equals(Option<bool>),
    Consumption(Box<ConsumptionState>),
    EventCount {
        times: VecDeque<Timestamp>,
        since: Timestamp,
    },
    HeldOpen {
        open_since: Option<Timestamp>,
        known: bool,
    },
    Event {
        last: Option<Timestamp>,
        open: bool,
        seen_clear: bool,
        since: Timestamp,
        pulse: bool,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct ConsumptionState {
    last: Option<(Timestamp, f64)>,
    window_start: Option<Timestamp>,
    used: f64,
    /// Whether the current window has been observed from its start.
    complete: bool,
    previous_over: bool,
    finalized_any: bool,
    history: VecDeque<f64>,
}

/// Keeps the earliest of the wake-up times offered.
pub(crate) fn wake_at(wake: &mut Option<Timestamp>, at: Timestamp) {
    if wake.is_none_or(|w| at < w) {
        *wake = Some(at);
    }
}

impl Cond {
    /// Evaluates the tree at `at` over the leaf states.
    pub fn eval(
        &self,
        states: &[LeafState],
        at: Timestamp,
        wake: &mut Option<Timestamp>,
    ) -> Option<bool> {
        match self {
            Cond::Leaf(i, leaf) => leaf.truth(&states[*i], at, wake),
            Cond::All(items) => {
                let mut unknown = false;
                for item in items {
                    match item.eval(states, at, wake) {
                        Some(false) => return Some(false),
                        None => unknown = true,
                        Some(true) => {}
                    }
                }
                if unknown { None } else { Some(true) }
            }
            Cond::Any(items) => {
                let mut unknown = false;
                for item in items {
                    match item.eval(states, at, wake) {
                        Some(true) => return Some(true),
                        None => unknown = true,
                        Some(false) => {}
                    }
                }
                if unknown { None } else { Some(false) }
            }
            Cond::Not(item) => item.eval(states, at, wake).map(|t| !t),
            Cond::During(schedule) => {
                if let Some(next) = schedule.next_change(at) {
                    wake_at(wake, next);
                }
                Some(schedule.contains(at))
            }
        }
    }

    /// Calls `f` on every leaf with its state index.
    pub fn for_each_leaf<'a>(&'a self, f: &mut impl FnMut(usize, &'a Leaf)) {
        match self {
            Cond::Leaf(i, leaf) => f(*i, leaf),
            Cond::All(items) | Cond::Any(items) => items.iter().for_each(|c| c.for_each_leaf(f)),
            Cond::Not(item) => item.for_each_leaf(f),
            Cond::During(_) => {}
        }
    }

    /// Fresh states for every leaf, observation starting at `at`.
    pub fn new_states(&self, leaves: usize, at: Timestamp) -> Box<[LeafState]> {
        let mut states: Vec<Option<LeafState>> = vec![None; leaves];
        self.for_each_leaf(&mut |i, leaf| states[i] = Some(leaf.new_state(at)));
        states
            .into_iter()
            .map(|s| s.unwrap_or(LeafState::Quality(None)))
            .collect()
    }

    /// A short description in words, for default alarm messages and rule listings.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        self.describe_into(&mut out);
        out
    }

    fn describe_into(&self, out: &mut String) {
        let list = |items: &[Cond], word: &str, out: &mut String| {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    let _ = write!(out, " {word} ");
                }
                let nested = matches!(item, Cond::All(_) | Cond::Any(_));
                if nested {
                    out.push('(');
                }
                item.describe_into(out);
                if nested {
                    out.push(')');
                }
            }
        };
        match self {
            Cond::Leaf(_, leaf) => leaf.describe_into(out),
            Cond::All(items) => list(items, "and", out),
            Cond::Any(items) => list(items, "or", out),
            Cond::Not(item) => {
                out.push_str("not (");
                item.describe_into(out);
                out.push(')');
            }
            Cond::During(s) => {
                let _ = write!(out, "during {}", s.name);
            }
        }
    }
}

fn seconds(micros: i64) -> String {
    if micros % MICROS_PER_SECOND == 0 {
        format!("{} s", micros / MICROS_PER_SECOND)
    } else {
        format!("{} s", micros as f64 / MICROS_PER_SECOND as f64)
    }
}

impl Leaf {
    pub fn new_state(&self, at: Timestamp) -> LeafState {
        match self {
            Leaf::Threshold { .. } => LeafState::Threshold(None),
            Leaf::Rate { .. } => LeafState::Rate {
                ring: VecDeque::new(),
                newest: None,
            },
            Leaf::Stale { .. } => LeafState::Stale {
                last_seen: None,
                since: at,
            },
            Leaf::Quality { .. } => LeafState::Quality(None),
            Leaf::Equals(_) => LeafState::Equals(None),
            Leaf::Consumption { .. } => LeafState::Consumption(Box::new(ConsumptionState {
                last: None,
                window_start: None,
                used: 0.0,
                complete: false,
                previous_over: false,
                finalized_any: false,
                history: VecDeque::new(),
            })),
            Leaf::EventCount { .. } => LeafState::EventCount {
                times: VecDeque::new(),
                since: at,
            },
            Leaf::HeldOpen { .. } => LeafState::HeldOpen {
                open_since: None,
                known: false,
            },
            Leaf::Event { .. } => LeafState::Event {
                last: None,
                open: false,
                seen_clear: false,
                since: at,
                pulse: false,
            },
        }
    }

    /// Whether this leaf is true only at the instant of an event.
    pub fn is_momentary(&self) -> bool {
        matches!(
            self,
            Leaf::Event {
                clear_on: None,
                clear_after: None,
                ..
            }
        )
    }

    pub fn is_event_leaf(&self) -> bool {
        matches!(
            self,
            Leaf::EventCount { .. } | Leaf::HeldOpen { .. } | Leaf::Event { .. }
        )
    }

    /// The event kinds this leaf reacts to.
    pub fn event_kinds(&self) -> Vec<Arc<str>> {
        match self {
            Leaf::EventCount { kind, .. } => vec![kind.clone()],
            Leaf::HeldOpen { opened, closed, .. } => vec![opened.clone(), closed.clone()],
            Leaf::Event { kind, clear_on, .. } => std::iter::once(kind.clone())
                .chain(clear_on.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Updates the state with an input at `at`.
    pub fn observe(&self, state: &mut LeafState, input: Input<'_>, at: Timestamp) {
        match (self, state, input) {
            (
                Leaf::Threshold {
                    above,
                    below,
                    deadband,
                },
                LeafState::Threshold(zone),
                Input::Sample(s),
            ) => {
                let Some(v) = s.usable_value().and_then(|v| v.as_f64()) else {
                    return;
                };
                let current = zone.unwrap_or(Zone::Normal);
                let next = if above.is_some_and(|a| v > a) {
                    Zone::High
                } else if below.is_some_and(|b| v < b) {
                    Zone::Low
                } else {
                    match current {
                        Zone::High if above.is_some_and(|a| v > a - deadband) => Zone::High,
                        Zone::Low if below.is_some_and(|b| v < b + deadband) => Zone::Low,
                        _ => Zone::Normal,
                    }
                };
                *zone = Some(next);
            }
            (Leaf::Rate { window, .. }, LeafState::Rate { ring, newest }, Input::Sample(s)) => {
                let Some(v) = s.usable_value().and_then(|v| v.as_f64()) else {
                    return;
                };
                let ts = s.ts;
                *newest = Some((ts, v));
                let resolution = (window / RATE_RESOLUTION).max(1);
                if ring.back().is_none_or(|(t, _)| ts - t >= resolution) {
                    ring.push_back((ts, v));
                }
                // Keep one sample at or before the start of the window as the reference.
                while ring.len() >= 2 && ring[1].0 <= ts - window {
                    ring.pop_front();
                }
            }
            (Leaf::Stale { .. }, LeafState::Stale { last_seen, .. }, Input::Sample(s))
                if s.usable_value().is_some() =>
            {
                *last_seen = Some(s.ts);
            }
            (Leaf::Quality { .. }, LeafState::Quality(q), Input::Sample(s)) => *q = Some(s.quality),
            (Leaf::Equals(expected), LeafState::Equals(eq), Input::Sample(s)) => {
                if let Some(v) = s.usable_value() {
                    *eq = Some(expected.matches(&v));
                }
            }
            (
                Leaf::Consumption {
                    window,
                    baseline,
                    factor,
                    utc_offset_minutes,
                },
                LeafState::Consumption(c),
                input,
            ) => {
                c.roll(at, *window, *baseline, *factor, *utc_offset_minutes);
                if let Input::Sample(s) = input
                    && let Some(v) = s.usable_value().and_then(|v| v.as_f64())
                {
                    c.add_reading(s.ts, v, *window);
                }
            }
            (
                Leaf::EventCount { kind, count, .. },
                LeafState::EventCount { times, .. },
                Input::Event(e),
            ) if e.kind == &**kind => {
                times.push_back(e.ts);
                while times.len() > *count as usize {
                    times.pop_front();
                }
            }
            (
                Leaf::HeldOpen { opened, closed, .. },
                LeafState::HeldOpen { open_since, known },
                Input::Event(e),
            ) => {
                if e.kind == &**opened {
                    *known = true;
                    if open_since.is_none() {
                        *open_since = Some(e.ts);
                    }
                } else if e.kind == &**closed {
                    *known = true;
                    *open_since = None;
                }
            }
            (
                Leaf::Event { kind, clear_on, .. },
                LeafState::Event {
                    last,
                    open,
                    seen_clear,
                    pulse,
                    ..
                },
                Input::Event(e),
            ) => {
                if e.kind == &**kind {
                    *last = Some(e.ts);
                    *open = true;
                    *pulse = true;
                } else if clear_on.as_deref() == Some(e.kind) {
                    *open = false;
                    *seen_clear = true;
                }
            }
            _ => {}
        }
    }

    /// The leaf's truth at `at`; offers the next time it could change without input.
    pub fn truth(
        &self,
        state: &LeafState,
        at: Timestamp,
        wake: &mut Option<Timestamp>,
    ) -> Option<bool> {
        match (self, state) {
            (Leaf::Threshold { .. }, LeafState::Threshold(zone)) => zone.map(|z| z != Zone::Normal),
            (
                Leaf::Rate {
                    window,
                    rise,
                    fall,
                    change,
                },
                LeafState::Rate { ring, newest },
            ) => {
                let (nt, nv) = (*newest)?;
                // Without a fresh sample the rate is not known any more.
                if at >= nt + window {
                    return None;
                }
                wake_at(wake, nt + window);
                let (rt, rv) = *ring.front()?;
                let span = nt - rt;
                if span <= 0 || span < window / 2 {
                    return None;
                }
                let per_minute = (nv - rv) / (span as f64 / MICROS_PER_MINUTE as f64);
                Some(
                    rise.is_some_and(|r| per_minute > r)
                        || fall.is_some_and(|f| -per_minute > f)
                        || change.is_some_and(|c| per_minute.abs() > c),
                )
            }
            (Leaf::Stale { after }, LeafState::Stale { last_seen, since }) => {
                let base = last_seen.unwrap_or(*since);
                if at >= base + after {
                    Some(true)
                } else {
                    wake_at(wake, base + after);
                    last_seen.map(|_| false)
                }
            }
            (Leaf::Quality { set }, LeafState::Quality(q)) => q.map(|q| set & q.bit() != 0),
            (Leaf::Equals(_), LeafState::Equals(eq)) => *eq,
            (
                Leaf::Consumption {
                    window,
                    baseline,
                    factor,
                    ..
                },
                LeafState::Consumption(c),
            ) => {
                let start = c.window_start?;
                wake_at(wake, start + window);
                let limit = c.limit(*baseline, *factor)?;
                if c.used > limit || c.previous_over {
                    Some(true)
                } else if c.finalized_any {
                    Some(false)
                } else {
                    None
                }
            }
            (Leaf::EventCount { count, window, .. }, LeafState::EventCount { times, since }) => {
                if times.len() == *count as usize && at < times[0] + window {
                    wake_at(wake, times[0] + window);
                    Some(true)
                } else if at >= since + window {
                    Some(false)
                } else {
                    wake_at(wake, since + window);
                    None
                }
            }
            (Leaf::HeldOpen { after, .. }, LeafState::HeldOpen { open_since, known }) => {
                if !known {
                    return None;
                }
                match open_since {
                    Some(t) if at >= t + after => Some(true),
                    Some(t) => {
                        wake_at(wake, t + after);
                        Some(false)
                    }
                    None => Some(false),
                }
            }
            (
                Leaf::Event {
                    clear_on,
                    clear_after,
                    ..
                },
                LeafState::Event {
                    last,
                    open,
                    seen_clear,
                    since,
                    pulse,
                },
            ) => {
                if clear_on.is_none() && clear_after.is_none() {
                    return Some(*pulse);
                }
                match last {
                    Some(l) => {
                        let timed_out = clear_after.is_some_and(|a| at >= l + a);
                        if let Some(a) = clear_after
                            && *open
                            && !timed_out
                        {
                            wake_at(wake, l + a);
                        }
                        Some(*open && !timed_out)
                    }
                    None if *seen_clear => Some(false),
                    None => match clear_after {
                        Some(a) if at >= since + a => Some(false),
                        Some(a) => {
                            wake_at(wake, since + a);
                            None
                        }
                        None => None,
                    },
                }
            }
            _ => None,
        }
    }

    /// Ends the instant of a momentary event.
    pub fn end_pulse(state: &mut LeafState) {
        if let LeafState::Event { pulse, .. } = state {
            *pulse = false;
        }
    }

    fn describe_into(&self, out: &mut String) {
        let _ = match self {
            Leaf::Threshold {
                above,
                below,
                deadband,
            } => {
                let r = match (above, below) {
                    (Some(a), Some(b)) => write!(out, "outside {b} to {a}"),
                    (Some(a), None) => write!(out, "above {a}"),
                    (None, Some(b)) => write!(out, "below {b}"),
                    (None, None) => Ok(()),
                };
                if *deadband > 0.0 {
                    let _ = write!(out, " (deadband {deadband})");
                }
                r
            }
            Leaf::Rate {
                window,
                rise,
                fall,
                change,
            } => {
                let mut parts = Vec::new();
                if let Some(r) = rise {
                    parts.push(format!("rising faster than {r}/min"));
                }
                if let Some(f) = fall {
                    parts.push(format!("falling faster than {f}/min"));
                }
                if let Some(c) = change {
                    parts.push(format!("changing faster than {c}/min"));
                }
                write!(out, "{} over {}", parts.join(" or "), seconds(*window))
            }
            Leaf::Stale { after } => write!(out, "no data for {}", seconds(*after)),
            Leaf::Quality { set } => {
                let names: Vec<&str> = Quality::ALL
                    .iter()
                    .filter(|q| set & q.bit() != 0)
                    .map(|q| q.name())
                    .collect();
                write!(out, "quality {}", names.join(" or "))
            }
            Leaf::Equals(v) => match v {
                Value::Text(t) => write!(out, "state is {t:?}"),
                v => write!(out, "state is {v}"),
            },
            Leaf::Consumption {
                window,
                baseline,
                factor,
                ..
            } => match baseline {
                Baseline::Fixed(b) => write!(
                    out,
                    "consumption over {factor} × {b} per {} window",
                    seconds(*window)
                ),
                Baseline::Learned(n) => write!(
                    out,
                    "consumption over {factor} × the mean of the last {n} windows of {}",
                    seconds(*window)
                ),
            },
            Leaf::EventCount {
                kind,
                count,
                window,
            } => {
                write!(out, "{count} × {kind} within {}", seconds(*window))
            }
            Leaf::HeldOpen { after, .. } => {
                write!(out, "held open longer than {}", seconds(*after))
            }
            Leaf::Event { kind, .. } => write!(out, "{kind}"),
        };
    }
}

impl ConsumptionState {
    fn limit(&self, baseline: Baseline, factor: f64) -> Option<f64> {
        match baseline {
            Baseline::Fixed(b) => Some(b * factor),
            Baseline::Learned(n) => (self.history.len() == n as usize && n > 0)
                .then(|| self.history.iter().sum::<f64>() / f64::from(n) * factor),
        }
    }

    /// Closes the windows that ended at or before `at`.
    fn roll(
        &mut self,
        at: Timestamp,
        window: i64,
        baseline: Baseline,
        factor: f64,
        utc_offset_minutes: i32,
    ) {
        let Some(start) = self.window_start else {
            // Windows are aligned on the park's wall clock, so that daily windows start at
            // local midnight.
            let offset = i64::from(utc_offset_minutes) * MICROS_PER_MINUTE;
            self.window_start = Some((at + offset).div_euclid(window) * window - offset);
            self.complete = false;
            return;
        };
        if at < start + window {
            return;
        }
        // The window that just ended.
        if self.complete {
            let limit = self.limit(baseline, factor);
            let over = limit.is_some_and(|l| self.used > l);
            self.previous_over = over;
            self.finalized_any = true;
            if let (Baseline::Learned(n), false) = (baseline, over) {
                self.history.push_back(self.used);
                while self.history.len() > n as usize {
                    self.history.pop_front();
                }
            }
        } else {
            self.previous_over = false;
        }
        let ended = (at - start).div_euclid(window);
        let new_start = start + ended * window;
        // A window is complete when observed from its start: the last reading is no older
        // than the window before it.
        self.complete = ended == 1 && self.last.is_some_and(|(t, _)| t >= start);
        if ended > 1 {
            // Whole windows passed without data; they say nothing.
            self.previous_over = false;
        }
        self.window_start = Some(new_start);
        self.used = 0.0;
    }

    /// Adds a counter reading. A counter that goes down was reset or replaced: that step
    /// counts nothing. A step from a reading older than the previous window is dropped and
    /// marks the window incomplete, since it cannot be told which windows it belongs to.
    fn add_reading(&mut self, ts: Timestamp, value: f64, window: i64) {
        let start = self.window_start.unwrap_or(ts);
        match self.last {
            Some((t, v)) if t >= start - window && value >= v => self.used += value - v,
            // A step down is a meter reset or replacement.
            Some((t, _)) if t >= start - window => {}
            Some(_) => self.complete = false,
            None => {}
        }
        self.last = Some((ts, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = MICROS_PER_SECOND;

    fn sample(ts: Timestamp, v: f64) -> SampleIn<'static> {
        SampleIn::number("m1/v", ts, v)
    }

    fn run(leaf: &Leaf, state: &mut LeafState, input: Input<'_>, at: Timestamp) -> Option<bool> {
        leaf.observe(state, input, at);
        leaf.truth(state, at, &mut None)
    }

    #[test]
    fn a_threshold_with_a_deadband_clears_only_below_the_band() {
        let leaf = Leaf::Threshold {
            above: Some(28.0),
            below: None,
            deadband: 0.5,
        };
        let mut st = leaf.new_state(0);
        assert_eq!(leaf.truth(&st, 0, &mut None), None);
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(1, 27.0)), 1),
            Some(false)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(2, 28.0)), 2),
            Some(false)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(3, 28.1)), 3),
            Some(true)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(4, 27.8)), 4),
            Some(true)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(5, 27.5)), 5),
            Some(false)
        );
    }

    #[test]
    fn a_band_threshold_is_true_on_either_side() {
        let leaf = Leaf::Threshold {
            above: Some(28.0),
            below: Some(16.0),
            deadband: 1.0,
        };
        let mut st = leaf.new_state(0);
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(1, 15.0)), 1),
            Some(true)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(2, 16.5)), 2),
            Some(true)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(3, 17.0)), 3),
            Some(false)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(4, 30.0)), 4),
            Some(true)
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Sample(&sample(5, 10.0)), 5),
            Some(true)
        );
    }

    #[test]
    fn a_bad_sample_leaves_a_threshold_where_it_was() {
        let leaf = Leaf::Threshold {
            above: Some(1.0),
            below: None,
            deadband: 0.0,
        };
        let mut st = leaf.new_state(0);
        run(&leaf, &mut st, Input::Sample(&sample(1, 2.0)), 1);
        let bad = SampleIn::without_value("m1/v", 2, Quality::Bad);
        assert_eq!(run(&leaf, &mut st, Input::Sample(&bad), 2), Some(true));
    }

    #[test]
    fn rate_of_change_compares_the_slope_over_the_window() {
        let leaf = Leaf::Rate {
            window: 60 * S,
            rise: Some(2.0),
            fall: None,
            change: None,
        };
        let mut st = leaf.new_state(0);
        // One sample every 5 s, rising 0.1 per sample: 1.2 per minute.
        let mut v = 20.0;
        let mut last = None;
        for i in 0..=24 {
            v += 0.1;
            last = run(
                &leaf,
                &mut st,
                Input::Sample(&sample(i * 5 * S, v)),
                i * 5 * S,
            );
        }
        assert_eq!(last, Some(false));
        // Now 0.3 per sample: 3.6 per minute, seen once the window has filled again.
        for i in 25..=40 {
            v += 0.3;
            last = run(
                &leaf,
                &mut st,
                Input::Sample(&sample(i * 5 * S, v)),
                i * 5 * S,
            );
        }
        assert_eq!(last, Some(true));
        let mut wake = None;
        assert_eq!(leaf.truth(&st, 400 * S, &mut wake), None, "no fresh data");
    }

    #[test]
    fn rate_of_change_needs_half_a_window_of_data() {
        let leaf = Leaf::Rate {
            window: 60 * S,
            rise: None,
            fall: None,
            change: Some(1.0),
        };
        let mut st = leaf.new_state(0);
        run(&leaf, &mut st, Input::Sample(&sample(0, 0.0)), 0);
        assert_eq!(
            run(
                &leaf,
                &mut st,
                Input::Sample(&sample(10 * S, -50.0)),
                10 * S
            ),
            None
        );
        assert_eq!(
            run(
                &leaf,
                &mut st,
                Input::Sample(&sample(30 * S, -50.0)),
                30 * S
            ),
            Some(true)
        );
    }

    #[test]
    fn rate_windows_hold_a_bounded_number_of_samples() {
        let leaf = Leaf::Rate {
            window: 64 * S,
            rise: Some(1.0),
            fall: None,
            change: None,
        };
        let mut st = leaf.new_state(0);
        for i in 0..100_000 {
            leaf.observe(
                &mut st,
                Input::Sample(&sample(i * S / 100, 1.0)),
                i * S / 100,
            );
        }
        let LeafState::Rate { ring, .. } = &st else {
            unreachable!()
        };
        assert!(ring.len() <= RATE_RESOLUTION as usize + 2, "{}", ring.len());
    }

    #[test]
    fn stale_becomes_true_after_silence_and_is_unknown_before_the_first_deadline() {
        let leaf = Leaf::Stale { after: 10 * S };
        let mut st = leaf.new_state(0);
        let mut wake = None;
        assert_eq!(leaf.truth(&st, 5 * S, &mut wake), None);
        assert_eq!(wake, Some(10 * S));
        assert_eq!(leaf.truth(&st, 10 * S, &mut None), Some(true));
        run(&leaf, &mut st, Input::Sample(&sample(12 * S, 1.0)), 12 * S);
        assert_eq!(leaf.truth(&st, 13 * S, &mut None), Some(false));
        let bad = SampleIn::without_value("m1/v", 15 * S, Quality::Bad);
        run(&leaf, &mut st, Input::Sample(&bad), 15 * S);
        assert_eq!(
            leaf.truth(&st, 22 * S, &mut None),
            Some(true),
            "bad samples are no data"
        );
    }

    #[test]
    fn event_counts_slide_with_the_window() {
        let leaf = Leaf::EventCount {
            kind: "access.denied".into(),
            count: 3,
            window: 60 * S,
        };
        let mut st = leaf.new_state(0);
        let ev = |ts| EventIn::new("access.denied", "door-1", ts);
        run(&leaf, &mut st, Input::Event(&ev(S)), S);
        run(&leaf, &mut st, Input::Event(&ev(30 * S)), 30 * S);
        let other = EventIn::new("access.granted", "door-1", 31 * S);
        run(&leaf, &mut st, Input::Event(&other), 31 * S);
        assert_eq!(
            leaf.truth(&st, 40 * S, &mut None),
            None,
            "not a full window observed yet"
        );
        assert_eq!(
            run(&leaf, &mut st, Input::Event(&ev(50 * S)), 50 * S),
            Some(true)
        );
        let mut wake = None;
        assert_eq!(leaf.truth(&st, 60 * S, &mut wake), Some(true));
        assert_eq!(wake, Some(61 * S));
        assert_eq!(leaf.truth(&st, 61 * S, &mut None), Some(false));
    }

    #[test]
    fn a_held_open_door_is_true_only_after_the_delay_and_until_closed() {
        let leaf = Leaf::HeldOpen {
            after: 30 * S,
            opened: "door.opened".into(),
            closed: "door.closed".into(),
        };
        let mut st = leaf.new_state(0);
        assert_eq!(leaf.truth(&st, 0, &mut None), None);
        let opened = EventIn::new("door.opened", "d", S);
        assert_eq!(run(&leaf, &mut st, Input::Event(&opened), S), Some(false));
        assert_eq!(leaf.truth(&st, 31 * S, &mut None), Some(true));
        let closed = EventIn::new("door.closed", "d", 40 * S);
        assert_eq!(
            run(&leaf, &mut st, Input::Event(&closed), 40 * S),
            Some(false)
        );
    }

    #[test]
    fn consumption_over_a_fixed_baseline_is_seen_within_the_window() {
        let leaf = Leaf::Consumption {
            window: 3600 * S,
            baseline: Baseline::Fixed(10.0),
            factor: 1.5,
            utc_offset_minutes: 0,
        };
        let mut st = leaf.new_state(0);
        let mut counter = 1000.0;
        // First hour: partial (observation started mid-way), 5 kWh.
        for m in (30..60).step_by(5) {
            counter += 1.0;
            run(
                &leaf,
                &mut st,
                Input::Sample(&sample(m * 60 * S, counter)),
                m * 60 * S,
            );
        }
        // Second hour: 12 kWh, under 15.
        let mut last = None;
        for m in (60..120).step_by(5) {
            counter += 1.0;
            last = run(
                &leaf,
                &mut st,
                Input::Sample(&sample(m * 60 * S, counter)),
                m * 60 * S,
            );
        }
        assert_eq!(last, None, "no complete window has ended yet");
        // Third hour: 2 kWh every 5 minutes; over 15 after 40 minutes.
        for m in (120..180).step_by(5) {
            counter += 2.0;
            last = run(
                &leaf,
                &mut st,
                Input::Sample(&sample(m * 60 * S, counter)),
                m * 60 * S,
            );
            if m == 150 {
                assert_eq!(last, Some(false), "14 kWh so far");
            }
        }
        assert_eq!(last, Some(true));
        // A quiet fourth hour keeps the alarm through the hour after the anomaly and then
        // clears.
        for m in (180..=240).step_by(5) {
            counter += 0.5;
            last = run(
                &leaf,
                &mut st,
                Input::Sample(&sample(m * 60 * S, counter)),
                m * 60 * S,
            );
            if m == 235 {
                assert_eq!(last, Some(true));
            }
        }
        assert_eq!(last, Some(false));
    }

    #[test]
    fn a_learned_baseline_waits_for_enough_windows_and_ignores_meter_resets() {
        let leaf = Leaf::Consumption {
            window: 60 * S,
            baseline: Baseline::Learned(3),
            factor: 2.0,
            utc_offset_minutes: 0,
        };
        let mut st = leaf.new_state(0);
        // One reading every 10 s, the counter going up by `step` each time; the result of the
        // last reading.
        let feed = |st: &mut LeafState, counter: &mut f64, from: i64, to: i64, step: f64| {
            let mut last = None;
            for s in (from..to).step_by(10) {
                *counter += step;
                last = run(&leaf, st, Input::Sample(&sample(s * S, *counter)), s * S);
            }
            last
        };
        let mut counter = 0.0;
        // The first minute has no reading before it, so it is not learned; the next three
        // (6 per minute) are, and until the third has ended there is no baseline.
        assert_eq!(feed(&mut st, &mut counter, 0, 240, 1.0), None);
        assert_eq!(feed(&mut st, &mut counter, 240, 300, 1.0), Some(false));
        // 18 per minute is over 2 × 6.
        assert_eq!(feed(&mut st, &mut counter, 300, 360, 3.0), Some(true));
        // The counter drops to zero (a meter reset): that step counts nothing, and the
        // window before, which was over, keeps the condition for one more window.
        counter = -1.0;
        assert_eq!(feed(&mut st, &mut counter, 360, 370, 1.0), Some(true));
        assert_eq!(feed(&mut st, &mut counter, 370, 420, 1.0), Some(true));
        assert_eq!(feed(&mut st, &mut counter, 420, 430, 1.0), Some(false));
    }

    #[test]
    fn kleene_logic_keeps_unknown_unless_the_other_side_decides() {
        let st = [
            LeafState::Equals(None),
            LeafState::Equals(Some(true)),
            LeafState::Equals(Some(false)),
        ];
        let leaf = |i| Cond::Leaf(i, Leaf::Equals(Value::Bool(true)));
        let eval = |c: &Cond| c.eval(&st, 0, &mut None);
        assert_eq!(eval(&Cond::All(vec![leaf(0), leaf(1)])), None);
        assert_eq!(eval(&Cond::All(vec![leaf(0), leaf(2)])), Some(false));
        assert_eq!(eval(&Cond::Any(vec![leaf(0), leaf(1)])), Some(true));
        assert_eq!(eval(&Cond::Any(vec![leaf(0), leaf(2)])), None);
        assert_eq!(eval(&Cond::Not(Box::new(leaf(0)))), None);
        assert_eq!(eval(&Cond::Not(Box::new(leaf(2)))), Some(true));
    }
}

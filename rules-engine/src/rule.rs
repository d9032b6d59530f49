//! Compiled rules: [`RuleSet::compile`] checks a rule file and turns it into rules indexed by
//! the keys they watch. A file with any problem is refused whole, with an error that names
//! the file, line, rule and key, so that a running engine keeps its rules.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use toml::de::DeTable;

use crate::action::{ActionKind, ActionSpec, Payload, Trigger};
use crate::alarm::Severity;
use crate::condition::{Baseline, Cond, Leaf};
use crate::config::{ActionConfig, ConditionConfig, RuleConfig, RuleFileConfig, StormConfig};
use crate::error::{KeyPath, Locator, RuleError};
use crate::input::{MICROS_PER_SECOND, Quality};
use crate::pattern::{Pattern, PatternIndex};
use crate::schedule::Schedule;
use crate::template::{JsonTemplate, Template, Var};

/// The longest duration a rule may name: one year.
const MAX_SECONDS: f64 = 366.0 * 24.0 * 3600.0;
/// The deepest nesting of `all`, `any` and `not`.
const MAX_DEPTH: usize = 8;
/// The largest `count` of an event count.
const MAX_EVENT_COUNT: u32 = 10_000;
/// The most windows a learned baseline averages.
const MAX_LEARN_WINDOWS: u32 = 10_000;

/// What a rule watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Watch {
    /// Samples of points (`points = ...`).
    Points,
    /// Access events of doors (`sources = ...`).
    Events,
}

/// A compiled rule.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: Arc<str>,
    pub enabled: bool,
    pub severity: Severity,
    pub message: Template,
    pub watch: Watch,
    pub patterns: Vec<Pattern>,
    pub cond: Cond,
    pub leaves: usize,
    /// The event kinds the rule reacts to, sorted; other events skip it.
    pub event_kinds: Vec<Arc<str>>,
    pub on_delay: i64,
    pub off_delay: i64,
    pub escalation: Option<(i64, Severity)>,
    pub actions: Vec<ActionSpec>,
    /// Whether the condition has a momentary event leaf.
    pub momentary: bool,
    /// Whether the condition can become true without input (stale data), so that instances
    /// are made for exact keys before they ever report.
    pub watches_silence: bool,
}

impl Rule {
    /// Whether `other` evaluates exactly as this rule does, so that its condition state
    /// (windows, latches, learned baselines) can be kept across a reload.
    pub fn same_evaluation(&self, other: &Rule) -> bool {
        self.watch == other.watch
            && self.cond == other.cond
            && self.on_delay == other.on_delay
            && self.off_delay == other.off_delay
    }

    pub fn matches(&self, key: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(key))
    }

    pub fn reacts_to(&self, kind: &str) -> bool {
        self.event_kinds
            .binary_search_by(|k| (**k).cmp(kind))
            .is_ok()
    }
}

/// Storm (alarm flood) settings.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StormSettings {
    pub window: i64,
    /// More raises than this by one device within `window` start a storm; 0 turns it off.
    pub per_device: u32,
    /// More raises than this over all devices within `window` start a storm; 0 turns it off.
    pub overall: u32,
    /// A storm ends when no raise has been folded into it for this long.
    pub quiet: i64,
    pub actions: Vec<ActionSpec>,
}

impl Default for StormSettings {
    fn default() -> Self {
        StormSettings {
            window: 60 * MICROS_PER_SECOND,
            per_device: 10,
            overall: 100,
            quiet: 60 * MICROS_PER_SECOND,
            actions: Vec::new(),
        }
    }
}

/// A rule as listed by [`RuleSet::rules`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleSummary {
    pub id: String,
    pub enabled: bool,
    pub severity: Severity,
    /// `points` or `sources` patterns.
    pub patterns: Vec<String>,
    /// Whether the patterns select points (`true`) or event sources (`false`).
    pub watches_points: bool,
    /// The condition in words.
    pub condition: String,
}

/// A compiled, checked rule file. Build one with [`RuleSet::compile`]; hand it to
/// [`crate::Engine::new`] or [`crate::Engine::replace_rules`].
#[derive(Debug)]
pub struct RuleSet {
    file: String,
    pub(crate) rules: Vec<Rule>,
    pub(crate) storm: StormSettings,
    utc_offset_minutes: i32,
    pub(crate) points: PatternIndex,
    pub(crate) sources: PatternIndex,
    by_id: HashMap<Arc<str>, u32>,
}

impl RuleSet {
    /// No rules, default storm settings.
    pub fn empty() -> RuleSet {
        RuleSet {
            file: String::new(),
            rules: Vec::new(),
            storm: StormSettings::default(),
            utc_offset_minutes: 0,
            points: PatternIndex::default(),
            sources: PatternIndex::default(),
            by_id: HashMap::new(),
        }
    }

    /// Parses and checks the rule file `text`; `file_name` is used in errors only.
    pub fn compile(text: &str, file_name: &str) -> Result<RuleSet, RuleError> {
        let root = match DeTable::parse(text) {
            Ok(root) => root,
            Err(e) => return Err(Locator::new(file_name, text, None).toml_error(&e)),
        };
        let locator = Locator::new(file_name, text, Some(root.clone()));
        let config: RuleFileConfig =
            serde::Deserialize::deserialize(toml::de::Deserializer::from(root))
                .map_err(|e| locator.toml_error(&e))?;
        Compiler { loc: &locator }.file(config)
    }

    pub fn file(&self) -> &str {
        &self.file
    }

    /// The number of rules, enabled or not.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    /// The rules in file order.
    pub fn rules(&self) -> Vec<RuleSummary> {
        self.rules
            .iter()
            .map(|r| RuleSummary {
                id: r.id.to_string(),
                enabled: r.enabled,
                severity: r.severity,
                patterns: r.patterns.iter().map(|p| p.as_str().to_owned()).collect(),
                watches_points: r.watch == Watch::Points,
                condition: r.cond.describe(),
            })
            .collect()
    }

    pub(crate) fn index_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }
}

struct Compiler<'a> {
    loc: &'a Locator<'a>,
}

/// Where in the file a check is: the rule index (or none) and the key path.
#[derive(Clone)]
struct At {
    rule: Option<usize>,
    path: KeyPath,
}

impl At {
    fn key(&self, key: &str) -> At {
        At {
            rule: self.rule,
            path: self.path.key(key),
        }
    }

    fn index(&self, i: usize) -> At {
        At {
            rule: self.rule,
            path: self.path.index(i),
        }
    }
}

/// The leaves of one rule as they are compiled.
#[derive(Default)]
struct LeafCounter {
    count: usize,
    has_points_leaf: bool,
    has_event_leaf: bool,
    momentary: bool,
    silence: bool,
    kinds: BTreeSet<Arc<str>>,
}

impl Compiler<'_> {
    fn err(&self, at: &At, reason: impl Into<String>) -> RuleError {
        self.loc.error(at.rule, &at.path, reason)
    }

    fn file(&self, config: RuleFileConfig) -> Result<RuleSet, RuleError> {
        let top = At {
            rule: None,
            path: KeyPath::default(),
        };
        let offset = config.utc_offset_minutes;
        if !(-720..=840).contains(&offset) {
            return Err(self.err(
                &top.key("utc_offset_minutes"),
                format!("{offset} is not between -720 and 840"),
            ));
        }
        let mut schedules = HashMap::new();
        for (name, entries) in &config.schedules {
            let at = top.key("schedules").key(name);
            check_name(name).map_err(|r| self.err(&at, r))?;
            let schedule = Schedule::parse(name, entries, offset).map_err(|r| self.err(&at, r))?;
            schedules.insert(name.clone(), Arc::new(schedule));
        }
        let storm = match config.storm {
            Some(storm) => self.storm(storm, &top.key("storm"))?,
            None => StormSettings::default(),
        };
        let mut set = RuleSet {
            file: self.loc.file.to_owned(),
            rules: Vec::with_capacity(config.rule.len()),
            storm,
            utc_offset_minutes: offset,
            points: PatternIndex::default(),
            sources: PatternIndex::default(),
            by_id: HashMap::with_capacity(config.rule.len()),
        };
        for (i, rule) in config.rule.into_iter().enumerate() {
            let at = At {
                rule: Some(i),
                path: KeyPath::default(),
            };
            let rule = self.rule(rule, &at, &schedules, offset)?;
            if set.by_id.contains_key(&rule.id) {
                return Err(self.err(&at.key("id"), format!("duplicate rule id {:?}", &*rule.id)));
            }
            let index = set.rules.len() as u32;
            set.by_id.insert(rule.id.clone(), index);
            if rule.enabled {
                let target = match rule.watch {
                    Watch::Points => &mut set.points,
                    Watch::Events => &mut set.sources,
                };
                for pattern in &rule.patterns {
                    target.insert(index, pattern);
                }
            }
            set.rules.push(rule);
        }
        Ok(set)
    }

    fn storm(&self, config: StormConfig, at: &At) -> Result<StormSettings, RuleError> {
        let defaults = StormSettings::default();
        let window = match config.window_s {
            Some(s) => self.positive_seconds(s, &at.key("window_s"))?,
            None => defaults.window,
        };
        let quiet = match config.quiet_s {
            Some(s) => self.positive_seconds(s, &at.key("quiet_s"))?,
            None => window,
        };
        let mut actions = Vec::new();
        for (i, action) in config.action.into_iter().enumerate() {
            actions.push(self.action(action, &at.key("action").index(i), false)?);
        }
        Ok(StormSettings {
            window,
            per_device: config.per_device.unwrap_or(defaults.per_device),
            overall: config.overall.unwrap_or(defaults.overall),
            quiet,
            actions,
        })
    }

    fn rule(
        &self,
        mut config: RuleConfig,
        at: &At,
        schedules: &HashMap<String, Arc<Schedule>>,
        offset: i32,
    ) -> Result<Rule, RuleError> {
        check_rule_id(&config.id).map_err(|r| self.err(&at.key("id"), r))?;
        let (watch, patterns, patterns_at) = match (config.points.take(), config.sources.take()) {
            (Some(p), None) => (Watch::Points, p.0, at.key("points")),
            (None, Some(s)) => (Watch::Events, s.0, at.key("sources")),
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &at.key("sources"),
                    "a rule watches either points or event sources, not both",
                ));
            }
            (None, None) => {
                return Err(self.err(
                    at,
                    "a rule needs `points` (point key patterns) or `sources` (door patterns)",
                ));
            }
        };
        if patterns.is_empty() {
            return Err(self.err(&patterns_at, "at least one pattern is needed"));
        }
        let patterns = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                Pattern::parse(p, watch == Watch::Points)
                    .map_err(|r| self.err(&patterns_at.index(i), r))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut leaves = LeafCounter::default();
        let condition = config.take_condition();
        let cond = self.condition(condition, at, schedules, offset, &mut leaves, 0)?;
        if leaves.count == 0 {
            return Err(self.err(
                at,
                "the condition needs at least one test of the watched points or events (a schedule alone never changes)",
            ));
        }
        match watch {
            Watch::Points if leaves.has_event_leaf => {
                return Err(self.err(
                    &patterns_at,
                    "event conditions (event_count, held_open, event) need `sources`, not `points`",
                ));
            }
            Watch::Events if leaves.has_points_leaf => {
                return Err(self.err(
                    &patterns_at,
                    "point conditions (threshold, rate, stale, quality, equals, consumption) need `points`, not `sources`",
                ));
            }
            _ => {}
        }

        let on_delay = self.seconds(config.on_delay_s.unwrap_or(0.0), &at.key("on_delay_s"))?;
        let off_delay = self.seconds(config.off_delay_s.unwrap_or(0.0), &at.key("off_delay_s"))?;
        if leaves.momentary && on_delay > 0 {
            return Err(self.err(
                &at.key("on_delay_s"),
                "a momentary event (an `event` without clear_on or clear_after) is true for an instant and can never last through an on-delay",
            ));
        }

        let escalation = match (config.escalate_after_s, config.escalate_to) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(self.err(&at.key("escalate_to"), "escalate_to needs escalate_after_s"));
            }
            (Some(after), to) => {
                let after = self.positive_seconds(after, &at.key("escalate_after_s"))?;
                let to = match to.or(config.severity.higher()) {
                    Some(to) if to > config.severity => to,
                    Some(to) => {
                        return Err(self.err(
                            &at.key("escalate_to"),
                            format!(
                                "{to} is not more urgent than the rule's severity {}",
                                config.severity
                            ),
                        ));
                    }
                    None => {
                        return Err(self.err(
                            &at.key("escalate_after_s"),
                            "a P0 rule cannot escalate: there is no higher severity",
                        ));
                    }
                };
                Some((after, to))
            }
        };

        let message = match &config.message {
            Some(text) => {
                Template::parse(text, Var::MESSAGE).map_err(|r| self.err(&at.key("message"), r))?
            }
            None => {
                let text = format!(
                    "{{source}}: {}",
                    cond.describe().replace('{', "{{").replace('}', "}}")
                );
                Template::parse(&text, Var::MESSAGE).unwrap_or_else(|_| Template::literal(&text))
            }
        };

        let mut actions = Vec::new();
        for (i, action) in config.action.into_iter().enumerate() {
            actions.push(self.action(
                action,
                &at.key("action").index(i),
                watch == Watch::Points,
            )?);
        }

        Ok(Rule {
            id: Arc::from(config.id.as_str()),
            enabled: config.enabled.unwrap_or(true),
            severity: config.severity,
            message,
            watch,
            patterns,
            cond,
            leaves: leaves.count,
            event_kinds: leaves.kinds.into_iter().collect(),
            on_delay,
            off_delay,
            escalation,
            actions,
            momentary: leaves.momentary,
            watches_silence: leaves.silence,
        })
    }

    fn condition(
        &self,
        mut c: ConditionConfig,
        at: &At,
        schedules: &HashMap<String, Arc<Schedule>>,
        offset: i32,
        leaves: &mut LeafCounter,
        depth: usize,
    ) -> Result<Cond, RuleError> {
        let present: Vec<&str> = [
            ("threshold", c.threshold.is_some()),
            ("rate", c.rate.is_some()),
            ("stale", c.stale.is_some()),
            ("quality", c.quality.is_some()),
            ("equals", c.equals.is_some()),
            ("consumption", c.consumption.is_some()),
            ("event_count", c.event_count.is_some()),
            ("held_open", c.held_open.is_some()),
            ("event", c.event.is_some()),
            ("during", c.during.is_some()),
            ("all", c.all.is_some()),
            ("any", c.any.is_some()),
            ("not", c.not.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect();
        match present.as_slice() {
            [_] => {}
            [] => {
                return Err(self.err(
                    at,
                    "a condition needs one of threshold, rate, stale, quality, equals, consumption, event_count, held_open, event, during, all, any, not",
                ));
            }
            [first, second, ..] => {
                return Err(self.err(
                    &at.key(second),
                    format!("a condition has exactly one kind, found {first} and {second}; combine them with `all` or `any`"),
                ));
            }
        }
        if depth > MAX_DEPTH {
            return Err(self.err(at, format!("conditions nest at most {MAX_DEPTH} deep")));
        }

        let leaf = |leaf: Leaf, leaves: &mut LeafCounter| {
            let index = leaves.count;
            leaves.count += 1;
            if leaf.is_event_leaf() {
                leaves.has_event_leaf = true;
            } else {
                leaves.has_points_leaf = true;
            }
            leaves.momentary |= leaf.is_momentary();
            leaves.silence |= matches!(leaf, Leaf::Stale { .. });
            leaves.kinds.extend(leaf.event_kinds());
            Cond::Leaf(index, leaf)
        };

        if let Some(t) = c.threshold.take() {
            let at = at.key("threshold");
            if t.above.is_none() && t.below.is_none() {
                return Err(self.err(&at, "a threshold needs `above`, `below` or both"));
            }
            for (key, v) in [("above", t.above), ("below", t.below)] {
                if let Some(v) = v
                    && !v.is_finite()
                {
                    return Err(self.err(&at.key(key), "must be a finite number"));
                }
            }
            if let (Some(a), Some(b)) = (t.above, t.below)
                && b >= a
            {
                return Err(self.err(
                    &at.key("below"),
                    format!("below ({b}) must be less than above ({a})"),
                ));
            }
            let deadband = t.deadband.unwrap_or(0.0);
            if !deadband.is_finite() || deadband < 0.0 {
                return Err(self.err(&at.key("deadband"), "must be zero or a positive number"));
            }
            return Ok(leaf(
                Leaf::Threshold {
                    above: t.above,
                    below: t.below,
                    deadband,
                },
                leaves,
            ));
        }
        if let Some(r) = c.rate.take() {
            let at = at.key("rate");
            let window = self.positive_seconds(r.window_s, &at.key("window_s"))?;
            if r.rise_per_minute.is_none()
                && r.fall_per_minute.is_none()
                && r.change_per_minute.is_none()
            {
                return Err(self.err(
                    &at,
                    "a rate needs rise_per_minute, fall_per_minute or change_per_minute",
                ));
            }
            for (key, v) in [
                ("rise_per_minute", r.rise_per_minute),
                ("fall_per_minute", r.fall_per_minute),
                ("change_per_minute", r.change_per_minute),
            ] {
                if let Some(v) = v
                    && (!v.is_finite() || v < 0.0)
                {
                    return Err(self.err(
                        &at.key(key),
                        "must be zero or a positive number (a magnitude)",
                    ));
                }
            }
            return Ok(leaf(
                Leaf::Rate {
                    window,
                    rise: r.rise_per_minute,
                    fall: r.fall_per_minute,
                    change: r.change_per_minute,
                },
                leaves,
            ));
        }
        if let Some(s) = c.stale.take() {
            let after = self.positive_seconds(s.after_s, &at.key("stale").key("after_s"))?;
            return Ok(leaf(Leaf::Stale { after }, leaves));
        }
        if let Some(q) = c.quality.take() {
            if q.is_empty() {
                return Err(self.err(
                    &at.key("quality"),
                    "name at least one quality: good, uncertain, bad, stale",
                ));
            }
            let set = q.iter().fold(0u8, |set, q| set | q.bit());
            if set == Quality::ALL.iter().fold(0u8, |s, q| s | q.bit()) {
                return Err(self.err(
                    &at.key("quality"),
                    "every quality is listed, so the condition is always true",
                ));
            }
            return Ok(leaf(Leaf::Quality { set }, leaves));
        }
        if let Some(v) = c.equals.take() {
            if let crate::input::Value::Number(x) = v
                && !x.is_finite()
            {
                return Err(self.err(&at.key("equals"), "must be a finite number"));
            }
            return Ok(leaf(Leaf::Equals(v), leaves));
        }
        if let Some(k) = c.consumption.take() {
            let at = at.key("consumption");
            let window = self.positive_seconds(k.window_s, &at.key("window_s"))?;
            let factor = k.factor.unwrap_or(1.0);
            if !factor.is_finite() || factor <= 0.0 {
                return Err(self.err(&at.key("factor"), "must be a positive number"));
            }
            let baseline = match (k.baseline, k.learn_windows) {
                (Some(b), None) if b.is_finite() && b >= 0.0 => Baseline::Fixed(b),
                (Some(_), None) => {
                    return Err(self.err(&at.key("baseline"), "must be zero or a positive number"));
                }
                (None, Some(n)) if (1..=MAX_LEARN_WINDOWS).contains(&n) => Baseline::Learned(n),
                (None, Some(_)) => {
                    return Err(self.err(
                        &at.key("learn_windows"),
                        format!("must be between 1 and {MAX_LEARN_WINDOWS}"),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(self.err(
                        &at.key("learn_windows"),
                        "give either a fixed baseline or learn_windows, not both",
                    ));
                }
                (None, None) => {
                    return Err(self.err(
                        &at,
                        "consumption needs `baseline` (per window) or `learn_windows` (learn it from past windows)",
                    ));
                }
            };
            return Ok(leaf(
                Leaf::Consumption {
                    window,
                    baseline,
                    factor,
                    utc_offset_minutes: offset,
                },
                leaves,
            ));
        }
        if let Some(e) = c.event_count.take() {
            let at = at.key("event_count");
            let kind = self.kind(&e.kind, &at.key("kind"))?;
            if !(1..=MAX_EVENT_COUNT).contains(&e.count) {
                return Err(self.err(
                    &at.key("count"),
                    format!("must be between 1 and {MAX_EVENT_COUNT}"),
                ));
            }
            let window = self.positive_seconds(e.window_s, &at.key("window_s"))?;
            return Ok(leaf(
                Leaf::EventCount {
                    kind,
                    count: e.count,
                    window,
                },
                leaves,
            ));
        }
        if let Some(h) = c.held_open.take() {
            let at = at.key("held_open");
            let after = self.positive_seconds(h.after_s, &at.key("after_s"))?;
            let opened = self.kind(
                h.opened.as_deref().unwrap_or("door.opened"),
                &at.key("opened"),
            )?;
            let closed = self.kind(
                h.closed.as_deref().unwrap_or("door.closed"),
                &at.key("closed"),
            )?;
            if opened == closed {
                return Err(self.err(&at.key("closed"), "the opened and closed kinds must differ"));
            }
            return Ok(leaf(
                Leaf::HeldOpen {
                    after,
                    opened,
                    closed,
                },
                leaves,
            ));
        }
        if let Some(e) = c.event.take() {
            let at = at.key("event");
            let kind = self.kind(&e.kind, &at.key("kind"))?;
            let clear_on = match &e.clear_on {
                Some(k) => Some(self.kind(k, &at.key("clear_on"))?),
                None => None,
            };
            if clear_on.as_ref() == Some(&kind) {
                return Err(self.err(&at.key("clear_on"), "an event cannot clear itself"));
            }
            let clear_after = match e.clear_after_s {
                Some(s) => Some(self.positive_seconds(s, &at.key("clear_after_s"))?),
                None => None,
            };
            return Ok(leaf(
                Leaf::Event {
                    kind,
                    clear_on,
                    clear_after,
                },
                leaves,
            ));
        }
        if let Some(name) = c.during.take() {
            return match schedules.get(&name) {
                Some(s) => Ok(Cond::During(s.clone())),
                None => Err(self.err(
                    &at.key("during"),
                    format!("no schedule {name:?} in [schedules]"),
                )),
            };
        }
        let list = |items: Vec<ConditionConfig>, key: &str, leaves: &mut LeafCounter| {
            let at = at.key(key);
            if items.is_empty() {
                return Err(self.err(&at, "list at least one condition"));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, c)| self.condition(c, &at.index(i), schedules, offset, leaves, depth + 1))
                .collect::<Result<Vec<_>, _>>()
        };
        if let Some(items) = c.all.take() {
            return Ok(Cond::All(list(items, "all", leaves)?));
        }
        if let Some(items) = c.any.take() {
            return Ok(Cond::Any(list(items, "any", leaves)?));
        }
        let inner = c.not.take().map(|b| *b).unwrap_or_default();
        let inner = self.condition(inner, &at.key("not"), schedules, offset, leaves, depth + 1)?;
        Ok(Cond::Not(Box::new(inner)))
    }

    fn action(
        &self,
        mut a: ActionConfig,
        at: &At,
        on_points: bool,
    ) -> Result<ActionSpec, RuleError> {
        let on = a.on.take().unwrap_or_else(|| vec![Trigger::Raise]);
        if on.is_empty() {
            return Err(self.err(&at.key("on"), "name at least one of raise, clear, escalate"));
        }
        let present: Vec<&str> = [
            ("write", a.write.is_some()),
            ("mqtt", a.mqtt.is_some()),
            ("webhook", a.webhook.is_some()),
            ("work_order", a.work_order.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(k, _)| k)
        .collect();
        match present.as_slice() {
            [_] => {}
            [] => {
                return Err(self.err(
                    at,
                    "an action needs one of write, mqtt, webhook, work_order",
                ));
            }
            [first, second, ..] => {
                return Err(self.err(
                    &at.key(second),
                    format!("an action has exactly one kind, found {first} and {second}; write two actions"),
                ));
            }
        }
        let template =
            |text: &str, at: &At| Template::parse(text, Var::ACTION).map_err(|r| self.err(at, r));
        let json = |value: &toml::Value, at: &At| {
            JsonTemplate::from_toml(value, Var::ACTION).map_err(|r| self.err(at, r))
        };
        let kind = if let Some(w) = a.write.take() {
            let at = at.key("write");
            let point = template(&w.point, &at.key("point"))?;
            if !point.looks_like_point_key() {
                return Err(self.err(
                    &at.key("point"),
                    format!("{:?} is not a point key `device/point`", w.point),
                ));
            }
            if w.point.contains("{source}") && !on_points {
                return Err(self.err(&at.key("point"), "{source} is a door here, not a point key"));
            }
            ActionKind::Write {
                point,
                value: w.value,
            }
        } else if let Some(m) = a.mqtt.take() {
            let at = at.key("mqtt");
            if m.topic.is_empty() || m.topic.contains(['+', '#']) {
                return Err(self.err(
                    &at.key("topic"),
                    "a topic to publish to is not empty and has no wildcards",
                ));
            }
            let qos = m.qos.unwrap_or(1);
            if qos > 2 {
                return Err(self.err(&at.key("qos"), "must be 0, 1 or 2"));
            }
            let payload = match (&m.payload, &m.json) {
                (Some(p), None) => Payload::Text(template(p, &at.key("payload"))?),
                (None, Some(j)) => Payload::Json(json(j, &at.key("json"))?),
                (None, None) => {
                    return Err(self.err(&at, "mqtt needs `payload` (text) or `json` (a table)"));
                }
                (Some(_), Some(_)) => {
                    return Err(self.err(&at.key("json"), "give `payload` or `json`, not both"));
                }
            };
            ActionKind::Mqtt {
                topic: template(&m.topic, &at.key("topic"))?,
                payload,
                qos,
                retain: m.retain.unwrap_or(false),
            }
        } else if let Some(w) = a.webhook.take() {
            let at = at.key("webhook");
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(self.err(&at.key("url"), "must start with http:// or https://"));
            }
            ActionKind::Webhook {
                url: template(&w.url, &at.key("url"))?,
                body: match &w.body {
                    Some(b) => Some(json(b, &at.key("body"))?),
                    None => None,
                },
            }
        } else {
            let w = a
                .work_order
                .take()
                .unwrap_or_else(|| unreachable!("one action kind is present"));
            let at = at.key("work_order");
            if w.title.trim().is_empty() {
                return Err(self.err(&at.key("title"), "must not be empty"));
            }
            ActionKind::WorkOrder {
                title: template(&w.title, &at.key("title"))?,
                description: match &w.description {
                    Some(d) => Some(template(d, &at.key("description"))?),
                    None => None,
                },
            }
        };
        Ok(ActionSpec {
            on,
            suppressible: a.suppressible.unwrap_or(true),
            kind,
        })
    }

    fn kind(&self, kind: &str, at: &At) -> Result<Arc<str>, RuleError> {
        if kind.is_empty() || kind.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                at,
                format!("{kind:?} is not an event kind such as \"door.forced\""),
            ));
        }
        Ok(Arc::from(kind))
    }

    /// Seconds (zero allowed) into microseconds.
    fn seconds(&self, s: f64, at: &At) -> Result<i64, RuleError> {
        if !s.is_finite() || !(0.0..=MAX_SECONDS).contains(&s) {
            return Err(self.err(at, format!("must be between 0 and {MAX_SECONDS} seconds")));
        }
        Ok((s * MICROS_PER_SECOND as f64).round() as i64)
    }

    /// Seconds (more than zero) into microseconds.
    fn positive_seconds(&self, s: f64, at: &At) -> Result<i64, RuleError> {
        let micros = self.seconds(s, at)?;
        if micros <= 0 {
            return Err(self.err(at, "must be more than 0 seconds"));
        }
        Ok(micros)
    }
}

fn check_rule_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a rule id: up to 100 letters, digits, `-`, `_`, `.` and `:`, starting with a letter or digit"
        ))
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a schedule name: letters, digits, `-` and `_`"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Result<RuleSet, RuleError> {
        RuleSet::compile(text, "rules.toml")
    }

    fn error(text: &str) -> RuleError {
        compile(text).expect_err("the file should be refused")
    }

    #[test]
    fn a_minimal_threshold_rule_compiles() {
        let set = compile(
            r#"
            [[rule]]
            id = "hot"
            severity = "P1"
            points = "ahu-1/supply_temp"
            threshold = { above = 28 }
            "#,
        )
        .unwrap();
        assert_eq!(set.len(), 1);
        let summary = &set.rules()[0];
        assert_eq!(summary.id, "hot");
        assert_eq!(summary.condition, "above 28");
        assert!(summary.watches_points);
    }

    #[test]
    fn unknown_keys_are_refused_with_file_line_rule_and_key() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\nthreshold = { above = 1 }\n\n[[rule]]\nid = \"b\"\nseverity = \"P2\"\npoints = \"m/v\"\nthreshold = { abov = 3 }\n",
        );
        assert_eq!(e.file, "rules.toml");
        assert_eq!(e.line, Some(11));
        assert_eq!(e.rule.as_deref(), Some("b"));
        assert_eq!(e.key, "threshold.abov");
        assert!(e.reason.contains("unknown field `abov`"), "{e}");
        assert!(
            e.to_string()
                .starts_with("rules.toml:11: rule \"b\": threshold.abov: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_in_sub_tables_name_the_rule() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\n[[rule.all]]\nthreshold = { above = 1 }\n[[rule.all]]\nbogus = 1\n",
        );
        assert_eq!(e.line, Some(8));
        assert_eq!(e.rule.as_deref(), Some("a"));
        assert_eq!(e.key, "all[1].bogus");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_refused_at_its_line() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\nthreshold = { above = \"x\" }\n",
        );
        assert_eq!(e.line, Some(5));
        assert_eq!(e.key, "threshold.above");
        assert!(e.reason.contains("expected f64"), "{e}");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = error("[[rule]\nid = 1\n");
        assert_eq!(e.line, Some(1));
    }

    #[test]
    fn duplicate_rule_ids_are_refused() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\nstale = { after_s = 5 }\n[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/w\"\nstale = { after_s = 5 }\n",
        );
        assert_eq!(e.line, Some(7));
        assert_eq!(e.key, "id");
        assert!(e.reason.contains("duplicate rule id"), "{e}");
    }

    #[test]
    fn checks_after_parsing_name_the_key_and_its_line() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\n[rule.threshold]\nabove = 5\ndeadband = -1\n",
        );
        assert_eq!((e.line, e.key.as_str()), (Some(7), "threshold.deadband"));
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\nany = [{ threshold = { above = 5 } }, { during = \"nights\" }]\n",
        );
        assert_eq!(e.key, "any[1].during");
        assert_eq!(e.line, Some(5));
        assert!(e.reason.contains("no schedule \"nights\""), "{e}");
    }

    #[test]
    fn a_condition_has_exactly_one_kind() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\nthreshold = { above = 5 }\nstale = { after_s = 5 }\n",
        );
        assert!(e.reason.contains("exactly one kind"), "{e}");
        let e = error("[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"m/v\"\n");
        assert!(e.reason.contains("a condition needs one of"), "{e}");
    }

    #[test]
    fn point_and_event_conditions_do_not_mix() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\nsources = \"door-*\"\nthreshold = { above = 5 }\n",
        );
        assert!(e.reason.contains("need `points`"), "{e}");
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"d/p\"\nevent = { kind = \"door.forced\" }\n",
        );
        assert!(e.reason.contains("need `sources`"), "{e}");
    }

    #[test]
    fn a_momentary_event_cannot_have_an_on_delay() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P0\"\nsources = \"door-*\"\non_delay_s = 5\nevent = { kind = \"door.forced\" }\n",
        );
        assert_eq!(e.key, "on_delay_s");
    }

    #[test]
    fn escalation_must_go_up() {
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P0\"\npoints = \"d/p\"\nescalate_after_s = 60\nstale = { after_s = 5 }\n",
        );
        assert!(e.reason.contains("P0 rule cannot escalate"), "{e}");
        let e = error(
            "[[rule]]\nid = \"a\"\nseverity = \"P1\"\npoints = \"d/p\"\nescalate_after_s = 60\nescalate_to = \"P2\"\nstale = { after_s = 5 }\n",
        );
        assert!(e.reason.contains("not more urgent"), "{e}");
    }

    #[test]
    fn rule_ids_cannot_take_the_storm_rule_name() {
        let e = error(
            "[[rule]]\nid = \"@storm\"\nseverity = \"P2\"\npoints = \"d/p\"\nstale = { after_s = 5 }\n",
        );
        assert_eq!(e.key, "id");
    }

    #[test]
    fn bad_templates_and_action_values_are_refused() {
        let base =
            "[[rule]]\nid = \"a\"\nseverity = \"P2\"\npoints = \"d/p\"\nstale = { after_s = 5 }\n";
        let e = error(&format!("{base}message = \"{{colour}}\"\n"));
        assert_eq!(e.key, "message");
        let e = error(&format!(
            "{base}[[rule.action]]\nwebhook = {{ url = \"ftp://x\" }}\n"
        ));
        assert_eq!(e.key, "action[0].webhook.url");
        let e = error(&format!(
            "{base}[[rule.action]]\nmqtt = {{ topic = \"a/#\", payload = \"x\" }}\n"
        ));
        assert_eq!(e.key, "action[0].mqtt.topic");
        let e = error(&format!(
            "{base}[[rule.action]]\nwrite = {{ point = \"fan\", value = true }}\n"
        ));
        assert_eq!(e.key, "action[0].write.point");
        let e = error(&format!("{base}[[rule.action]]\n"));
        assert!(e.reason.contains("an action needs one of"), "{e}");
    }

    #[test]
    fn disabled_rules_are_checked_but_not_indexed() {
        let set = compile("[[rule]]\nid = \"a\"\nseverity = \"P2\"\nenabled = false\npoints = \"d/p\"\nstale = { after_s = 5 }\n").unwrap();
        let mut out = Vec::new();
        set.points.lookup("d/p", &mut out);
        assert!(out.is_empty());
        assert!(!set.rules()[0].enabled);
    }

    #[test]
    fn the_utc_offset_must_be_a_real_one() {
        let e = error("utc_offset_minutes = 900\n");
        assert_eq!((e.key.as_str(), e.line), ("utc_offset_minutes", Some(1)));
    }
}

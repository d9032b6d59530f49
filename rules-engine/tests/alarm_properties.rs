//! Property tests of the alarm state machine, driven through the public engine API with
//! random samples, ticks and operator actions: every transition starts where the last one
//! ended, an alarm is never both active and cleared, acknowledging is idempotent, shelving
//! expires, escalation happens once and on time, and there is one alarm per
//! (source, rule).

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use rules_engine::{
    AlarmFilter, AlarmId, AlarmState, Engine, Outputs, Quality, RuleSet, SampleIn, Severity,
    Timestamp, Transition, TransitionKind,
};

const S: i64 = 1_000_000;
const T0: Timestamp = 1_704_067_200_000_000;

/// Storms are off so that every alarm is visible and the threshold model below holds for
/// every (source, rule) pair.
const RULES: &str = r#"
[storm]
per_device = 0
overall = 0

[[rule]]
id = "high"
severity = "P2"
points = "*/v"
threshold = { above = 50 }
escalate_after_s = 30

[[rule]]
id = "delayed"
severity = "P1"
points = "*/v"
threshold = { above = 50, deadband = 10 }
on_delay_s = 5
off_delay_s = 5

[[rule]]
id = "comms"
severity = "P1"
points = "*/v"
quality = ["bad"]
escalate_after_s = 20
escalate_to = "P0"
"#;

const DEVICES: [&str; 3] = ["d0/v", "d1/v", "d2/v"];

#[derive(Clone, Debug)]
enum Op {
    /// A sample of a device after `dt` seconds: a value, or a failed read.
    Sample {
        dev: usize,
        value: Option<u8>,
        dt: u8,
    },
    Tick {
        dt: u8,
    },
    /// Operator actions on the `pick`th listed alarm.
    Ack {
        pick: usize,
    },
    Shelve {
        pick: usize,
        secs: u8,
    },
    Unshelve {
        pick: usize,
    },
    Comment {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..DEVICES.len(), proptest::option::weighted(0.9, any::<u8>().prop_map(|v| v % 101)), 0u8..10)
            .prop_map(|(dev, value, dt)| Op::Sample { dev, value, dt }),
        2 => (0u8..60).prop_map(|dt| Op::Tick { dt }),
        1 => (0usize..8).prop_map(|pick| Op::Ack { pick }),
        1 => (0usize..8, 1u8..120).prop_map(|(pick, secs)| Op::Shelve { pick, secs }),
        1 => (0usize..8).prop_map(|pick| Op::Unshelve { pick }),
        1 => (0usize..8).prop_map(|pick| Op::Comment { pick }),
    ]
}

/// What the test knows from the transitions it has seen.
#[derive(Default)]
struct Seen {
    state: HashMap<(String, String), AlarmState>,
    escalations: HashMap<AlarmId, u32>,
}

impl Seen {
    fn check(&mut self, transitions: &[Transition]) -> Result<(), TestCaseError> {
        for t in transitions {
            let key = (t.source.to_string(), t.rule.to_string());
            let last = self.state.get(&key).copied().unwrap_or(AlarmState::Normal);
            prop_assert_eq!(
                t.from,
                last,
                "a transition starts where the last one ended: {:?}",
                t
            );
            match t.kind {
                TransitionKind::Raised | TransitionKind::Reactivated => {
                    prop_assert_eq!(t.to, AlarmState::ActiveUnacked)
                }
                TransitionKind::Cleared => {
                    prop_assert!(!t.to.is_active(), "cleared yet active: {:?}", t)
                }
                TransitionKind::Acknowledged => prop_assert!(!t.to.is_unacknowledged()),
                TransitionKind::Escalated => {
                    let n = self.escalations.entry(t.alarm).or_default();
                    *n += 1;
                    prop_assert_eq!(*n, 1, "escalated twice: {:?}", t);
                    prop_assert_eq!(t.to, AlarmState::ActiveUnacked);
                }
                _ => prop_assert_eq!(t.from, t.to),
            }
            self.state.insert(key, t.to);
        }
        Ok(())
    }
}

fn pick(engine: &Engine, i: usize) -> Option<AlarmId> {
    let all = engine.alarms(&AlarmFilter::default());
    (!all.is_empty()).then(|| all[i % all.len()].id)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_alarm_state_machine_keeps_its_promises(ops in proptest::collection::vec(op(), 1..80)) {
        let mut engine = Engine::new(RuleSet::compile(RULES, "props.toml").unwrap());
        let mut out = Outputs::new();
        let mut seen = Seen::default();
        let mut now = T0;
        // The last good value of each device, for the threshold model of rule "high".
        let mut last_value: HashMap<&str, u8> = HashMap::new();

        for op in ops {
            out.clear();
            match op {
                Op::Sample { dev, value, dt } => {
                    now += i64::from(dt) * S;
                    let point = DEVICES[dev];
                    let sample = match value {
                        Some(v) => SampleIn::number(point, now, f64::from(v)),
                        None => SampleIn::without_value(point, now, Quality::Bad),
                    };
                    engine.handle_sample(&sample, &mut out);
                    if let Some(v) = value {
                        last_value.insert(point, v);
                    }
                }
                Op::Tick { dt } => {
                    now += i64::from(dt) * S;
                    engine.handle_timeout(now, &mut out);
                }
                Op::Ack { pick: p } => {
                    if let Some(id) = pick(&engine, p) {
                        engine.acknowledge(id, "ana", Some("seen"), now, &mut out).unwrap();
                        seen.check(&out.transitions)?;
                        // Acknowledging again changes nothing at all.
                        let before = engine.export_state();
                        let mut again = Outputs::new();
                        engine.acknowledge(id, "bo", None, now, &mut again).unwrap();
                        prop_assert!(again.is_empty(), "{:?}", again.transitions);
                        prop_assert_eq!(engine.export_state(), before);
                        let alarm = engine.alarm(id).unwrap();
                        prop_assert!(!alarm.state.is_unacknowledged());
                        out.clear();
                    }
                }
                Op::Shelve { pick: p, secs } => {
                    if let Some(id) = pick(&engine, p) {
                        let until = now + i64::from(secs) * S;
                        engine.shelve(id, until, "ana", None, now, &mut out).unwrap();
                        prop_assert_eq!(engine.alarm(id).unwrap().shelf.as_ref().unwrap().until, until);
                    }
                }
                Op::Unshelve { pick: p } => {
                    if let Some(id) = pick(&engine, p) {
                        engine.unshelve(id, "ana", now, &mut out).unwrap();
                        prop_assert!(!engine.alarm(id).unwrap().is_shelved());
                    }
                }
                Op::Comment { pick: p } => {
                    if let Some(id) = pick(&engine, p) {
                        engine.comment(id, "ana", "note", now, &mut out).unwrap();
                    }
                }
            }
            seen.check(&out.transitions)?;

            let alarms = engine.export_state().alarms;
            // One alarm per (source, rule), each with its own id.
            let pairs: HashSet<(String, String)> =
                alarms.iter().map(|a| (a.source.to_string(), a.rule.to_string())).collect();
            prop_assert_eq!(pairs.len(), alarms.len());
            let ids: HashSet<AlarmId> = alarms.iter().map(|a| a.id).collect();
            prop_assert_eq!(ids.len(), alarms.len());

            for a in &alarms {
                let key = (a.source.to_string(), a.rule.to_string());
                // The engine's state is the one the transitions told.
                prop_assert_eq!(seen.state.get(&key).copied(), Some(a.state));
                // Once acknowledged, an occurrence stays acknowledged until it is over.
                prop_assert_eq!(a.ack.is_some(), !a.state.is_unacknowledged());
                // Shelving expires: nothing stays shelved past its end once time has been
                // handled.
                if matches!(op, Op::Tick { .. }) {
                    prop_assert!(a.shelf.as_ref().is_none_or(|s| s.until > now), "shelf not expired: {:?}", a);
                    // Escalation is not forgotten either.
                    let due = match &*a.rule {
                        "high" => Some(30 * S),
                        "comms" => Some(20 * S),
                        _ => None,
                    };
                    if let Some(after) = due
                        && a.state == AlarmState::ActiveUnacked
                        && a.shelf.is_none()
                        && a.raised_at + after <= now
                    {
                        prop_assert!(a.escalated, "escalation is overdue: {:?}", a);
                    }
                }
                if a.escalated {
                    let base = if &*a.rule == "high" { Severity::P2 } else { Severity::P1 };
                    let expected = if &*a.rule == "comms" { Severity::P0 } else { base.higher().unwrap() };
                    prop_assert_eq!(a.severity, expected);
                } else {
                    let base = if &*a.rule == "high" { Severity::P2 } else { Severity::P1 };
                    prop_assert_eq!(a.severity, base);
                }
            }

            // The rule without delays is active exactly while the last value is above 50.
            for point in DEVICES {
                let active = alarms
                    .iter()
                    .find(|a| &*a.source == point && &*a.rule == "high")
                    .is_some_and(|a| a.state.is_active());
                let expected = last_value.get(point).is_some_and(|v| *v > 50);
                prop_assert_eq!(active, expected, "{} after {:?}", point, op);
            }
        }
    }
}

//! The engine end to end: each condition kind through samples, events and ticks, the alarm
//! state machine, actions, storms, reloads and restarts.

use super::*;
use crate::action::Action;
use crate::alarm::TransitionKind;
use crate::input::{MICROS_PER_SECOND, Quality, Value};

const S: i64 = MICROS_PER_SECOND;
/// Monday 2024-01-01 00:00 UTC.
const T0: Timestamp = 1_704_067_200_000_000;

fn engine(rules: &str) -> Engine {
    Engine::new(RuleSet::compile(rules, "test.toml").unwrap())
}

fn number(e: &mut Engine, point: &str, at: Timestamp, v: f64) -> Outputs {
    let mut out = Outputs::new();
    e.handle_sample(&SampleIn::number(point, at, v), &mut out);
    out
}

fn event(e: &mut Engine, kind: &str, door: &str, at: Timestamp) -> Outputs {
    let mut out = Outputs::new();
    e.handle_event(&EventIn::new(kind, door, at), &mut out);
    out
}

fn tick(e: &mut Engine, at: Timestamp) -> Outputs {
    let mut out = Outputs::new();
    e.handle_timeout(at, &mut out);
    out
}

fn kinds(out: &Outputs) -> Vec<(&str, TransitionKind)> {
    out.transitions
        .iter()
        .map(|t| (&*t.source, t.kind))
        .collect()
}

fn open(e: &Engine) -> Vec<(String, String, AlarmState)> {
    e.alarms(&AlarmFilter::default())
        .into_iter()
        .map(|a| (a.source.to_string(), a.rule.to_string(), a.state))
        .collect()
}

const HOT: &str = r#"
[[rule]]
id = "hot"
severity = "P1"
points = "ahu-1/supply_temp"
threshold = { above = 28.0, deadband = 0.5 }
message = "{device} supply air {value} °C"
"#;

#[test]
fn a_threshold_alarm_raises_with_a_message_and_clears_below_the_deadband() {
    let mut e = engine(HOT);
    assert!(number(&mut e, "ahu-1/supply_temp", T0, 27.0).is_empty());
    let out = number(&mut e, "ahu-1/supply_temp", T0 + S, 28.4);
    assert_eq!(kinds(&out), [("ahu-1/supply_temp", TransitionKind::Raised)]);
    let t = &out.transitions[0];
    assert_eq!(
        (t.from, t.to, t.severity, t.ts),
        (
            AlarmState::Normal,
            AlarmState::ActiveUnacked,
            Severity::P1,
            T0 + S
        )
    );
    assert_eq!(t.message, "ahu-1 supply air 28.4 °C");
    assert!(
        number(&mut e, "ahu-1/supply_temp", T0 + 2 * S, 27.6).is_empty(),
        "inside the deadband"
    );
    let out = number(&mut e, "ahu-1/supply_temp", T0 + 3 * S, 27.5);
    assert_eq!(
        kinds(&out),
        [("ahu-1/supply_temp", TransitionKind::Cleared)]
    );
    assert_eq!(out.transitions[0].to, AlarmState::ClearedUnacked);
}

#[test]
fn samples_of_other_points_cost_nothing_and_change_nothing() {
    let mut e = engine(HOT);
    assert!(number(&mut e, "ahu-2/supply_temp", T0, 99.0).is_empty());
    assert!(number(&mut e, "ahu-1/return_temp", T0, 99.0).is_empty());
    assert_eq!(e.stats().instances, 0);
}

#[test]
fn an_on_delay_raises_only_when_the_condition_has_held_that_long() {
    let mut e = engine(
        r#"
        [[rule]]
        id = "hot"
        severity = "P2"
        points = "m1/t"
        threshold = { above = 10 }
        on_delay_s = 30
        off_delay_s = 60
        "#,
    );
    number(&mut e, "m1/t", T0, 11.0);
    assert!(tick(&mut e, T0 + 29 * S).is_empty());
    // A short dip restarts the delay.
    number(&mut e, "m1/t", T0 + 20 * S, 9.0);
    number(&mut e, "m1/t", T0 + 25 * S, 11.0);
    assert!(tick(&mut e, T0 + 54 * S).is_empty());
    assert_eq!(e.poll_timeout(), Some(T0 + 55 * S));
    let out = tick(&mut e, T0 + 56 * S);
    assert_eq!(kinds(&out), [("m1/t", TransitionKind::Raised)]);
    assert_eq!(
        out.transitions[0].ts,
        T0 + 55 * S,
        "raised when the delay ended, not when the tick came"
    );
    // The off-delay keeps it active through a minute of normal values.
    number(&mut e, "m1/t", T0 + 60 * S, 5.0);
    assert!(tick(&mut e, T0 + 119 * S).is_empty());
    let out = tick(&mut e, T0 + 120 * S);
    assert_eq!(kinds(&out), [("m1/t", TransitionKind::Cleared)]);
}

#[test]
fn a_delay_that_ended_between_ticks_is_applied_when_the_next_sample_arrives() {
    let mut e = engine(
        "[[rule]]\nid = \"hot\"\nseverity = \"P2\"\npoints = \"m1/t\"\nthreshold = { above = 10 }\non_delay_s = 30\n",
    );
    number(&mut e, "m1/t", T0, 11.0);
    // No tick ran; the value was above for 40 s and then fell.
    let out = number(&mut e, "m1/t", T0 + 40 * S, 5.0);
    assert_eq!(
        kinds(&out),
        [
            ("m1/t", TransitionKind::Raised),
            ("m1/t", TransitionKind::Cleared)
        ]
    );
    assert_eq!(out.transitions[0].ts, T0 + 30 * S);
    assert_eq!(out.transitions[1].ts, T0 + 40 * S);
}

#[test]
fn a_point_that_stops_reporting_raises_a_stale_alarm_on_tick() {
    let mut e = engine(
        "[[rule]]\nid = \"silent\"\nseverity = \"P2\"\npoints = \"m1/*\"\nstale = { after_s = 300 }\n",
    );
    number(&mut e, "m1/energy", T0, 1.0);
    assert!(tick(&mut e, T0 + 299 * S).is_empty());
    let out = tick(&mut e, T0 + 301 * S);
    assert_eq!(kinds(&out), [("m1/energy", TransitionKind::Raised)]);
    assert_eq!(out.transitions[0].ts, T0 + 300 * S);
    assert_eq!(out.transitions[0].message, "m1/energy: no data for 300 s");
    // Bad-quality samples are no data.
    let mut out = Outputs::new();
    e.handle_sample(
        &SampleIn::without_value("m1/energy", T0 + 302 * S, Quality::Bad),
        &mut out,
    );
    assert!(out.is_empty());
    let out = number(&mut e, "m1/energy", T0 + 303 * S, 2.0);
    assert_eq!(kinds(&out), [("m1/energy", TransitionKind::Cleared)]);
}

#[test]
fn an_exact_point_that_never_reports_raises_a_stale_alarm() {
    let mut e = engine(
        "[[rule]]\nid = \"silent\"\nseverity = \"P2\"\npoints = \"m1/energy\"\nstale = { after_s = 60 }\n",
    );
    assert!(tick(&mut e, T0).is_empty());
    assert_eq!(e.poll_timeout(), Some(T0 + 60 * S));
    let out = tick(&mut e, T0 + 60 * S);
    assert_eq!(kinds(&out), [("m1/energy", TransitionKind::Raised)]);
}

#[test]
fn a_registered_wildcard_point_that_never_reports_raises_a_stale_alarm() {
    let mut e = engine(
        "[[rule]]\nid = \"silent\"\nseverity = \"P2\"\npoints = \"*/energy\"\nstale = { after_s = 60 }\n",
    );
    let mut out = Outputs::new();
    e.register_point("m7/energy", T0, &mut out);
    e.register_point("m7/power", T0, &mut out);
    assert!(out.is_empty());
    let out = tick(&mut e, T0 + 61 * S);
    assert_eq!(kinds(&out), [("m7/energy", TransitionKind::Raised)]);
}

#[test]
fn bad_quality_raises_a_quality_alarm_and_a_good_sample_clears_it() {
    let mut e = engine(
        "[[rule]]\nid = \"comms\"\nseverity = \"P2\"\npoints = \"m1/v\"\nquality = [\"bad\", \"stale\"]\n",
    );
    let mut out = Outputs::new();
    e.handle_sample(&SampleIn::without_value("m1/v", T0, Quality::Bad), &mut out);
    assert_eq!(kinds(&out), [("m1/v", TransitionKind::Raised)]);
    assert_eq!(out.transitions[0].message, "m1/v: quality bad or stale");
    let out = number(&mut e, "m1/v", T0 + S, 230.0);
    assert_eq!(kinds(&out), [("m1/v", TransitionKind::Cleared)]);
}

#[test]
fn a_state_rule_compares_text_booleans_and_numbers() {
    let mut e = engine(
        r#"
        [[rule]]
        id = "fault"
        severity = "P1"
        points = "chiller-1/mode"
        equals = "fault"

        [[rule]]
        id = "trip"
        severity = "P0"
        points = "chiller-1/tripped"
        equals = true

        [[rule]]
        id = "stage"
        severity = "P2"
        points = "chiller-1/stage"
        equals = 3
        "#,
    );
    let mut out = Outputs::new();
    e.handle_sample(&SampleIn::text("chiller-1/mode", T0, "run"), &mut out);
    e.handle_sample(&SampleIn::text("chiller-1/mode", T0 + S, "fault"), &mut out);
    e.handle_sample(&SampleIn::bool("chiller-1/tripped", T0, true), &mut out);
    e.handle_sample(&SampleIn::number("chiller-1/stage", T0, 3.0), &mut out);
    let raised: Vec<&str> = out.transitions.iter().map(|t| &*t.rule).collect();
    assert_eq!(raised, ["fault", "trip", "stage"]);
    assert_eq!(
        out.transitions[0].message,
        "chiller-1/mode: state is \"fault\""
    );
    let out = number(&mut e, "chiller-1/stage", T0 + S, 2.0);
    assert_eq!(kinds(&out), [("chiller-1/stage", TransitionKind::Cleared)]);
}

#[test]
fn a_fast_rise_raises_a_rate_of_change_alarm() {
    let mut e = engine(
        "[[rule]]\nid = \"rising\"\nseverity = \"P1\"\npoints = \"room-1/temp\"\nrate = { window_s = 60, rise_per_minute = 1.0 }\n",
    );
    let mut raised = None;
    for i in 0..=12 {
        let v = 20.0 + 0.05 * i as f64;
        assert!(
            number(&mut e, "room-1/temp", T0 + i * 5 * S, v).is_empty(),
            "0.6 per minute is fine"
        );
    }
    for i in 13..=30 {
        let v = 20.6 + 0.2 * (i - 12) as f64;
        let out = number(&mut e, "room-1/temp", T0 + i * 5 * S, v);
        if !out.is_empty() && raised.is_none() {
            raised = Some(i);
        }
    }
    assert!(raised.is_some_and(|i| i < 24), "{raised:?}");
}

#[test]
fn a_schedule_gates_a_condition_and_its_end_clears_the_alarm() {
    let mut e = engine(
        r#"
        utc_offset_minutes = 480
        [schedules]
        office-hours = ["mon-fri 08:00-18:00"]

        [[rule]]
        id = "door-open-after-hours"
        severity = "P2"
        points = "lobby/door_open"
        all = [{ equals = true }, { not = { during = "office-hours" } }]
        "#,
    );
    let local = |h: i64| T0 + h * 3600 * S - 8 * 3600 * S;
    // 17:00 local on Monday: open during office hours is fine.
    let mut out = Outputs::new();
    e.handle_sample(
        &SampleIn::bool("lobby/door_open", local(17), true),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(e.poll_timeout(), Some(local(18)));
    // At 18:00 the door is still open: alarm without any new sample.
    let out = tick(&mut e, local(18));
    assert_eq!(kinds(&out), [("lobby/door_open", TransitionKind::Raised)]);
    let mut out = Outputs::new();
    e.handle_sample(
        &SampleIn::bool("lobby/door_open", local(19), false),
        &mut out,
    );
    assert_eq!(kinds(&out), [("lobby/door_open", TransitionKind::Cleared)]);
}

#[test]
fn any_raises_when_either_condition_holds() {
    let mut e = engine(
        "[[rule]]\nid = \"range\"\nseverity = \"P2\"\npoints = \"m1/v\"\nany = [{ threshold = { above = 250 } }, { quality = [\"bad\"] }]\n",
    );
    assert!(number(&mut e, "m1/v", T0, 230.0).is_empty());
    let mut out = Outputs::new();
    e.handle_sample(
        &SampleIn::without_value("m1/v", T0 + S, Quality::Bad),
        &mut out,
    );
    assert_eq!(kinds(&out), [("m1/v", TransitionKind::Raised)]);
    assert!(
        number(&mut e, "m1/v", T0 + 2 * S, 260.0).is_empty(),
        "still active"
    );
    let out = number(&mut e, "m1/v", T0 + 3 * S, 240.0);
    assert_eq!(kinds(&out), [("m1/v", TransitionKind::Cleared)]);
}

#[test]
fn energy_use_over_the_baseline_raises_within_the_window() {
    let mut e = engine(
        "[[rule]]\nid = \"energy\"\nseverity = \"P2\"\npoints = \"b1-main/energy_kwh\"\nconsumption = { window_s = 3600, baseline = 100, factor = 1.2 }\n",
    );
    let mut counter = 5000.0;
    // Readings every minute from 23:00 (a partial hour is not judged), 1.5 kWh per minute
    // from midnight: 90 kWh per hour is normal.
    for m in -60..60 {
        counter += if m < 0 { 1.0 } else { 1.5 };
        assert!(number(&mut e, "b1-main/energy_kwh", T0 + m * 60 * S, counter).is_empty());
    }
    // 3 kWh per minute: over 120 kWh after 40 minutes.
    let mut raised_at = None;
    for m in 60..120 {
        counter += 3.0;
        let out = number(&mut e, "b1-main/energy_kwh", T0 + m * 60 * S, counter);
        if !out.is_empty() {
            raised_at = Some(m);
            assert_eq!(out.transitions[0].kind, TransitionKind::Raised);
        }
    }
    assert_eq!(raised_at, Some(100));
}

const DOORS: &str = r#"
[[rule]]
id = "denied-burst"
severity = "P1"
sources = "door-*"
event_count = { kind = "access.denied", count = 5, window_s = 60 }

[[rule]]
id = "held-open"
severity = "P2"
sources = "door-*"
held_open = { after_s = 30 }

[[rule]]
id = "forced"
severity = "P0"
sources = "door-*"
event = { kind = "door.forced" }
"#;

#[test]
fn five_denied_reads_at_one_door_within_a_minute_raise_one_alarm_for_that_door() {
    let mut e = engine(DOORS);
    let mut out = Outputs::new();
    for i in 0..4 {
        e.handle_event(
            &EventIn::new("access.denied", "door-1", T0 + i * 10 * S),
            &mut out,
        );
        e.handle_event(
            &EventIn::new("access.denied", "door-2", T0 + i * 10 * S),
            &mut out,
        );
    }
    assert!(out.is_empty());
    e.handle_event(
        &EventIn::new("access.denied", "door-1", T0 + 45 * S),
        &mut out,
    );
    assert_eq!(kinds(&out), [("door-1", TransitionKind::Raised)]);
    assert_eq!(out.transitions[0].rule.as_ref(), "denied-burst");
    // More denials keep the one alarm.
    let out = event(&mut e, "access.denied", "door-1", T0 + 50 * S);
    assert!(out.is_empty());
    // A minute after the burst the count has slid out of the window.
    let out = tick(&mut e, T0 + 71 * S);
    assert_eq!(kinds(&out), [("door-1", TransitionKind::Cleared)]);
}

#[test]
fn a_door_held_open_past_thirty_seconds_raises_and_closing_clears() {
    let mut e = engine(DOORS);
    assert!(event(&mut e, "door.opened", "door-3", T0).is_empty());
    assert!(tick(&mut e, T0 + 29 * S).is_empty());
    let out = tick(&mut e, T0 + 31 * S);
    assert_eq!(kinds(&out), [("door-3", TransitionKind::Raised)]);
    assert_eq!(out.transitions[0].ts, T0 + 30 * S);
    let out = event(&mut e, "door.closed", "door-3", T0 + 40 * S);
    assert_eq!(kinds(&out), [("door-3", TransitionKind::Cleared)]);
    // Opened and closed in time: nothing.
    event(&mut e, "door.opened", "door-3", T0 + 100 * S);
    event(&mut e, "door.closed", "door-3", T0 + 110 * S);
    assert!(tick(&mut e, T0 + 200 * S).is_empty());
}

#[test]
fn a_forced_door_raises_and_clears_at_once_and_waits_for_acknowledgement() {
    let mut e = engine(DOORS);
    let out = event(&mut e, "door.forced", "door-9", T0);
    assert_eq!(
        kinds(&out),
        [
            ("door-9", TransitionKind::Raised),
            ("door-9", TransitionKind::Cleared)
        ]
    );
    assert_eq!(
        open(&e),
        [("door-9".into(), "forced".into(), AlarmState::ClearedUnacked)]
    );
    // Forced again before anyone looked: the same alarm, re-activated.
    let first = out.transitions[0].alarm;
    let out = event(&mut e, "door.forced", "door-9", T0 + S);
    assert_eq!(out.transitions[0].kind, TransitionKind::Reactivated);
    assert_eq!(out.transitions[0].alarm, first);
    assert_eq!(e.alarm(first).unwrap().activations, 2);
}

#[test]
fn a_wildcard_rule_keeps_separate_state_for_each_source() {
    let mut e = engine(
        "[[rule]]\nid = \"hot\"\nseverity = \"P2\"\npoints = \"*/temp\"\nthreshold = { above = 30 }\non_delay_s = 10\n",
    );
    number(&mut e, "room-1/temp", T0, 31.0);
    number(&mut e, "room-2/temp", T0 + 5 * S, 31.0);
    let out = tick(&mut e, T0 + 12 * S);
    assert_eq!(kinds(&out), [("room-1/temp", TransitionKind::Raised)]);
    let out = tick(&mut e, T0 + 15 * S);
    assert_eq!(kinds(&out), [("room-2/temp", TransitionKind::Raised)]);
    assert_ne!(open(&e)[0].0, open(&e)[1].0);
}

#[test]
fn acknowledging_then_clearing_closes_the_occurrence_and_the_next_raise_is_a_new_alarm() {
    let mut e = engine(HOT);
    let first = number(&mut e, "ahu-1/supply_temp", T0, 30.0).transitions[0].alarm;
    let mut out = Outputs::new();
    e.acknowledge(first, "ana", Some("checking the valve"), T0 + S, &mut out)
        .unwrap();
    assert_eq!(out.transitions[0].to, AlarmState::ActiveAcked);
    assert_eq!(out.transitions[0].who.as_deref(), Some("ana"));
    assert_eq!(
        out.transitions[0].comment.as_deref(),
        Some("checking the valve")
    );
    // Acknowledging again is accepted and changes nothing.
    let mut again = Outputs::new();
    e.acknowledge(first, "bo", None, T0 + 2 * S, &mut again)
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(e.alarm(first).unwrap().ack.as_ref().unwrap().by, "ana");
    let out = number(&mut e, "ahu-1/supply_temp", T0 + 3 * S, 20.0);
    assert_eq!(out.transitions[0].to, AlarmState::Normal);
    assert!(open(&e).is_empty());
    let second = number(&mut e, "ahu-1/supply_temp", T0 + 4 * S, 30.0).transitions[0].alarm;
    assert_ne!(first, second);
    assert_eq!(e.alarm(first), None);
    assert_eq!(
        e.acknowledge(first, "ana", None, T0 + 5 * S, &mut Outputs::new()),
        Err(AlarmError::NotFound(first))
    );
}

#[test]
fn operator_actions_need_a_user_and_shelving_needs_a_future_end() {
    let mut e = engine(HOT);
    let id = number(&mut e, "ahu-1/supply_temp", T0, 30.0).transitions[0].alarm;
    let mut out = Outputs::new();
    assert_eq!(
        e.acknowledge(id, " ", None, T0, &mut out),
        Err(AlarmError::NoUser)
    );
    assert_eq!(
        e.shelve(id, T0, "ana", None, T0, &mut out),
        Err(AlarmError::ShelfEndsInPast { until: T0, now: T0 })
    );
    assert_eq!(
        e.comment(id, "ana", "  ", T0, &mut out),
        Err(AlarmError::EmptyComment)
    );
    assert!(out.is_empty());
    e.comment(id, "ana", "fan belt replaced", T0 + S, &mut out)
        .unwrap();
    assert_eq!(out.transitions[0].kind, TransitionKind::Commented);
    assert_eq!(e.alarm(id).unwrap().comments[0].text, "fan belt replaced");
}

const WITH_ACTIONS: &str = r#"
[[rule]]
id = "hot"
severity = "P2"
points = "ahu-*/supply_temp"
threshold = { above = 28 }
escalate_after_s = 600
message = "{device} too warm: {value}"

[[rule.action]]
on = ["raise", "clear"]
mqtt = { topic = "site/alarms/{device}", json = { alarm = "{alarm}", state = "{state}", text = "{message}" }, qos = 1 }

[[rule.action]]
write = { point = "{device}/cooling_boost", value = true }
suppressible = false

[[rule.action]]
on = ["escalate"]
webhook = { url = "https://ops.example/hooks/{rule}" }

[[rule.action]]
work_order = { title = "Check {device}", description = "{message} ({severity})" }
"#;

#[test]
fn actions_fire_on_their_triggers_with_the_alarm_filled_in() {
    let mut e = engine(WITH_ACTIONS);
    let out = number(&mut e, "ahu-3/supply_temp", T0, 29.5);
    let id = out.transitions[0].alarm;
    assert_eq!(out.actions.len(), 3);
    assert!(
        out.actions
            .iter()
            .all(|a| a.trigger == Trigger::Raise && a.alarm == id)
    );
    assert_eq!(
        out.actions[0].action,
        Action::Mqtt {
            topic: "site/alarms/ahu-3".into(),
            payload: format!(
                r#"{{"alarm":"{id}","state":"active_unacked","text":"ahu-3 too warm: 29.5"}}"#
            ),
            qos: 1,
            retain: false,
        }
    );
    assert_eq!(
        out.actions[1].action,
        Action::WritePoint {
            point: "ahu-3/cooling_boost".into(),
            value: Value::Bool(true),
        }
    );
    assert_eq!(
        out.actions[2].action,
        Action::WorkOrder {
            title: "Check ahu-3".into(),
            description: "ahu-3 too warm: 29.5 (P2)".into(),
            severity: Severity::P2,
        }
    );
    // Escalation after ten unacknowledged minutes, once, with its webhook.
    let out = tick(&mut e, T0 + 600 * S);
    assert_eq!(
        kinds(&out),
        [("ahu-3/supply_temp", TransitionKind::Escalated)]
    );
    assert_eq!(out.transitions[0].severity, Severity::P1);
    let Action::Webhook { url, body } = &out.actions[0].action else {
        panic!("{:?}", out.actions)
    };
    assert_eq!(url, "https://ops.example/hooks/hot");
    assert!(
        body.contains(r#""severity":"P1""#) && body.contains(r#""trigger":"escalate""#),
        "{body}"
    );
    assert!(tick(&mut e, T0 + 6000 * S).is_empty(), "escalates once");
    let out = number(&mut e, "ahu-3/supply_temp", T0 + 6001 * S, 20.0);
    assert_eq!(out.actions.len(), 1);
    assert_eq!(out.actions[0].trigger, Trigger::Clear);
}

#[test]
fn an_acknowledged_alarm_does_not_escalate() {
    let mut e = engine(WITH_ACTIONS);
    let id = number(&mut e, "ahu-3/supply_temp", T0, 29.5).transitions[0].alarm;
    e.acknowledge(id, "ana", None, T0 + S, &mut Outputs::new())
        .unwrap();
    assert!(tick(&mut e, T0 + 700 * S).is_empty());
    assert_eq!(e.alarm(id).unwrap().severity, Severity::P2);
}

#[test]
fn a_shelved_alarm_holds_back_its_notifications_until_the_shelf_expires() {
    let mut e = engine(WITH_ACTIONS);
    let id = number(&mut e, "ahu-3/supply_temp", T0, 29.5).transitions[0].alarm;
    number(&mut e, "ahu-3/supply_temp", T0 + S, 20.0);
    let mut out = Outputs::new();
    e.shelve(
        id,
        T0 + 3600 * S,
        "ana",
        Some("sensor being replaced"),
        T0 + 2 * S,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.transitions[0].kind, TransitionKind::Shelved);
    // The alarm still changes state while shelved; only the control action fires.
    let out = number(&mut e, "ahu-3/supply_temp", T0 + 10 * S, 35.0);
    assert_eq!(
        kinds(&out),
        [("ahu-3/supply_temp", TransitionKind::Reactivated)]
    );
    assert!(out.transitions[0].shelved);
    assert_eq!(out.actions.len(), 1);
    assert!(matches!(out.actions[0].action, Action::WritePoint { .. }));
    // No escalation while shelved.
    assert!(tick(&mut e, T0 + 1200 * S).is_empty());
    // The shelf expires; the alarm is still active and notifies now, then escalates.
    let out = tick(&mut e, T0 + 3600 * S);
    assert_eq!(
        kinds(&out),
        [
            ("ahu-3/supply_temp", TransitionKind::Unshelved),
            ("ahu-3/supply_temp", TransitionKind::Escalated)
        ]
    );
    assert_eq!(out.transitions[0].who, None);
    assert!(
        out.actions
            .iter()
            .any(|a| a.trigger == Trigger::Raise && matches!(a.action, Action::Mqtt { .. }))
    );
    assert!(!e.alarm(id).unwrap().is_shelved());
}

#[test]
fn the_listing_filters_by_state_severity_source_and_rule() {
    let mut e = engine(
        r#"
        [[rule]]
        id = "hot"
        severity = "P1"
        points = "*/temp"
        threshold = { above = 30 }

        [[rule]]
        id = "cold"
        severity = "P2"
        points = "*/temp"
        threshold = { below = 5 }
        "#,
    );
    number(&mut e, "room-1/temp", T0, 35.0);
    number(&mut e, "room-2/temp", T0 + S, 1.0);
    number(&mut e, "lab-1/temp", T0 + 2 * S, 40.0);
    let id = e.alarms(&AlarmFilter::default())[0].id;
    e.acknowledge(id, "ana", None, T0 + 3 * S, &mut Outputs::new())
        .unwrap();
    let sources = |f: AlarmFilter| -> Vec<String> {
        e.alarms(&f).iter().map(|a| a.source.to_string()).collect()
    };
    assert_eq!(
        sources(AlarmFilter::default()),
        ["lab-1/temp", "room-1/temp", "room-2/temp"]
    );
    assert_eq!(
        sources(AlarmFilter {
            source_prefix: Some("room-".into()),
            ..AlarmFilter::default()
        }),
        ["room-1/temp", "room-2/temp"]
    );
    assert_eq!(
        sources(AlarmFilter {
            severity: Some(Severity::P2),
            ..AlarmFilter::default()
        }),
        ["room-2/temp"]
    );
    assert_eq!(
        sources(AlarmFilter {
            state: Some(AlarmState::ActiveAcked),
            ..AlarmFilter::default()
        }),
        ["lab-1/temp"]
    );
    assert_eq!(
        sources(AlarmFilter {
            rule: Some("cold".into()),
            ..AlarmFilter::default()
        }),
        ["room-2/temp"]
    );
}

#[test]
fn late_samples_are_skipped_and_counted() {
    let mut e = engine(HOT);
    number(&mut e, "ahu-1/supply_temp", T0 + 10 * S, 20.0);
    assert!(number(&mut e, "ahu-1/supply_temp", T0, 40.0).is_empty());
    assert_eq!(e.stats().late_inputs, 1);
}

#[test]
fn replacing_rules_keeps_alarms_and_state_of_rules_that_remain() {
    let mut e = engine(
        r#"
        [[rule]]
        id = "hot"
        severity = "P2"
        points = "m1/t"
        threshold = { above = 10 }

        [[rule]]
        id = "slow"
        severity = "P2"
        points = "m1/t"
        threshold = { above = 10 }
        on_delay_s = 60

        [[rule]]
        id = "gone"
        severity = "P2"
        points = "m1/t"
        threshold = { above = 10 }
        "#,
    );
    let out = number(&mut e, "m1/t", T0, 11.0);
    let hot = out.transitions[0].alarm;
    assert_eq!(out.transitions.len(), 2, "hot and gone");
    let mut out = Outputs::new();
    let new = RuleSet::compile(
        r#"
        [[rule]]
        id = "hot"
        severity = "P1"
        points = "m1/t"
        threshold = { above = 10 }

        [[rule]]
        id = "slow"
        severity = "P2"
        points = "m1/t"
        threshold = { above = 10 }
        on_delay_s = 60

        [[rule]]
        id = "new"
        severity = "P2"
        points = "m1/*"
        stale = { after_s = 600 }
        "#,
        "test.toml",
    )
    .unwrap();
    e.replace_rules(new, T0 + 30 * S, &mut out);
    // "gone" is cleared with a reason; "hot" keeps its alarm, untouched.
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(&*out.transitions[0].rule, "gone");
    assert_eq!(out.transitions[0].kind, TransitionKind::Cleared);
    assert!(
        out.transitions[0]
            .comment
            .as_deref()
            .unwrap()
            .contains("removed")
    );
    assert_eq!(e.alarm(hot).unwrap().state, AlarmState::ActiveUnacked);
    // "slow" kept its pending on-delay from before the reload.
    let out = tick(&mut e, T0 + 60 * S);
    assert_eq!(
        out.transitions.iter().map(|t| &*t.rule).collect::<Vec<_>>(),
        ["slow"]
    );
    // The new stale rule applies to the point already known.
    let out = tick(&mut e, T0 + 30 * S + 600 * S);
    assert_eq!(
        out.transitions.iter().map(|t| &*t.rule).collect::<Vec<_>>(),
        ["new"]
    );
}

#[test]
fn a_rule_file_that_does_not_compile_leaves_the_running_rules_alone() {
    let mut e = engine(HOT);
    let bad = RuleSet::compile("[[rule]]\nid = \"hot\"\nseverity = \"P9\"\n", "rules.toml");
    let err = bad.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rules.toml:3: rule \"hot\": severity: unknown variant `P9`"),
        "{err}"
    );
    assert_eq!(
        kinds(&number(&mut e, "ahu-1/supply_temp", T0, 30.0)).len(),
        1
    );
}

#[test]
fn exported_state_restores_alarms_that_wait_for_data_before_clearing() {
    let mut e = engine(DOORS);
    event(&mut e, "door.opened", "door-1", T0);
    let held = tick(&mut e, T0 + 31 * S).transitions[0].alarm;
    let forced = event(&mut e, "door.forced", "door-2", T0 + 40 * S).transitions[0].alarm;
    let mut out = Outputs::new();
    e.shelve(forced, T0 + 100 * S, "ana", None, T0 + 41 * S, &mut out)
        .unwrap();
    let state = e.export_state();

    let mut restarted = engine(DOORS);
    let mut out = Outputs::new();
    restarted
        .import_state(state.clone(), T0 + 50 * S, &mut out)
        .unwrap();
    assert!(out.is_empty(), "{:?}", out.transitions);
    assert_eq!(restarted.export_state(), state);
    // The held-open condition is unknown after the restart: ticks do not clear it.
    assert!(tick(&mut restarted, T0 + 90 * S).transitions.is_empty());
    // The shelf still expires on time.
    assert_eq!(
        kinds(&tick(&mut restarted, T0 + 100 * S)),
        [("door-2", TransitionKind::Unshelved)]
    );
    // The door closes: now the alarm clears.
    let out = event(&mut restarted, "door.closed", "door-1", T0 + 120 * S);
    assert_eq!(kinds(&out), [("door-1", TransitionKind::Cleared)]);
    assert_eq!(out.transitions[0].alarm, held);
    // New ids never collide with restored ones.
    let again = event(&mut restarted, "door.forced", "door-3", T0 + 130 * S).transitions[0].alarm;
    assert!(again > forced);
}

#[test]
fn restored_alarms_of_rules_that_are_gone_are_cleared() {
    let mut e = engine(HOT);
    number(&mut e, "ahu-1/supply_temp", T0, 30.0);
    let state = e.export_state();
    let mut other = engine(DOORS);
    let mut out = Outputs::new();
    other.import_state(state, T0 + S, &mut out).unwrap();
    assert_eq!(
        kinds(&out),
        [("ahu-1/supply_temp", TransitionKind::Cleared)]
    );
    assert_eq!(
        open(&other),
        [(
            "ahu-1/supply_temp".into(),
            "hot".into(),
            AlarmState::ClearedUnacked
        )]
    );
}

#[test]
fn engine_state_round_trips_through_serde() {
    let mut e = engine(WITH_ACTIONS);
    let id = number(&mut e, "ahu-3/supply_temp", T0, 29.5).transitions[0].alarm;
    e.comment(id, "ana", "looking", T0 + S, &mut Outputs::new())
        .unwrap();
    let state = e.export_state();
    let text = toml::to_string(&state).unwrap();
    let back: EngineState = toml::from_str(&text).unwrap();
    assert_eq!(back, state);
}

const STORMY: &str = r#"
[storm]
window_s = 60
per_device = 5
overall = 0
quiet_s = 120

[[rule]]
id = "comms"
severity = "P2"
points = "*/*"
quality = ["bad"]

[[rule]]
id = "trip"
severity = "P0"
points = "*/trip"
equals = true

[[storm.action]]
on = ["raise", "clear"]
mqtt = { topic = "site/storms", payload = "{message}" }
"#;

fn fail(e: &mut Engine, point: &str, at: Timestamp, out: &mut Outputs) {
    e.handle_sample(&SampleIn::without_value(point, at, Quality::Bad), out);
}

#[test]
fn a_storm_folds_every_raise_of_the_device_into_one_summary() {
    let mut e = engine(STORMY);
    let mut out = Outputs::new();
    for p in 0..40 {
        fail(&mut e, &format!("plc-1/p{p}"), T0 + p * S / 10, &mut out);
    }
    fail(&mut e, "plc-2/p0", T0, &mut out);
    let listed = e.alarms(&AlarmFilter::default());
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let summary = listed.iter().find(|a| a.is_storm_summary()).unwrap();
    assert_eq!(&*summary.source, "plc-1");
    assert_eq!(summary.message, "storm on device plc-1: 40 alarms in 3 s");
    assert_eq!(summary.storm.as_ref().unwrap().folded, 40);
    // The five before the storm were folded after the fact; nobody is notified 40 times.
    let folded = e.alarms(&AlarmFilter {
        include_folded: true,
        source_prefix: Some("plc-1/".into()),
        ..AlarmFilter::default()
    });
    assert_eq!(folded.len(), 40);
    assert!(folded.iter().all(|a| a.suppressed_by == Some(summary.id)));
    let storm_actions: Vec<&str> = out
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::Mqtt { payload, .. } => Some(payload.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(storm_actions, ["storm on device plc-1: 6 alarms in 1 s"]);
}

#[test]
fn a_more_severe_alarm_inside_a_storm_raises_the_summary_severity() {
    let mut e = engine(STORMY);
    let mut out = Outputs::new();
    for p in 0..6 {
        fail(&mut e, &format!("plc-1/p{p}"), T0 + p * S, &mut out);
    }
    out.clear();
    e.handle_sample(&SampleIn::bool("plc-1/trip", T0 + 7 * S, true), &mut out);
    let summary = e.alarms(&AlarmFilter::default())[0];
    assert_eq!(summary.severity, Severity::P0);
    assert!(
        out.transitions
            .iter()
            .any(|t| t.kind == TransitionKind::Escalated && t.alarm == summary.id)
    );
}

#[test]
fn acknowledging_a_storm_summary_acknowledges_what_it_folded() {
    let mut e = engine(STORMY);
    let mut out = Outputs::new();
    for p in 0..8 {
        fail(&mut e, &format!("plc-1/p{p}"), T0 + p * S, &mut out);
    }
    let summary = e.alarms(&AlarmFilter::default())[0].id;
    out.clear();
    e.acknowledge(summary, "ana", Some("PLC rebooting"), T0 + 10 * S, &mut out)
        .unwrap();
    assert_eq!(out.transitions.len(), 9);
    let members = e.alarms(&AlarmFilter {
        include_folded: true,
        state: Some(AlarmState::ActiveAcked),
        ..AlarmFilter::default()
    });
    assert_eq!(members.len(), 9);
}

#[test]
fn the_storm_summary_clears_when_the_storm_ends_and_releases_what_still_needs_attention() {
    let mut e = engine(STORMY);
    let mut out = Outputs::new();
    for p in 0..8 {
        fail(&mut e, &format!("plc-1/p{p}"), T0 + p * S, &mut out);
    }
    // Half of the points come back.
    for p in 0..4 {
        e.handle_sample(
            &SampleIn::number(&format!("plc-1/p{p}"), T0 + 20 * S, 1.0),
            &mut out,
        );
    }
    out.clear();
    assert!(
        tick(&mut e, T0 + 126 * S).is_empty(),
        "quiet for less than 120 s"
    );
    let out = tick(&mut e, T0 + 127 * S);
    let summary = &out.transitions[0];
    assert_eq!(
        (summary.kind, &*summary.rule),
        (TransitionKind::Cleared, STORM_RULE)
    );
    assert_eq!(
        summary.message,
        "storm on device plc-1 ended: 8 alarms in 7 s"
    );
    assert_eq!(
        out.transitions
            .iter()
            .filter(|t| t.kind == TransitionKind::Released)
            .count(),
        8
    );
    assert_eq!(out.actions.len(), 1, "the storm's clear action");
    // Now the operator sees the summary (to acknowledge) and the eight alarms.
    let listed = e.alarms(&AlarmFilter::default());
    assert_eq!(listed.len(), 9);
    assert_eq!(
        listed
            .iter()
            .filter(|a| a.state == AlarmState::ActiveUnacked)
            .count(),
        4
    );
    // A later raise on the device is an ordinary alarm again.
    let mut out = Outputs::new();
    fail(&mut e, "plc-1/p0", T0 + 300 * S, &mut out);
    assert_eq!(out.transitions[0].suppressed_by, None);
}

#[test]
fn the_storm_over_all_devices_folds_raises_from_many_devices() {
    let mut e = engine(
        "[storm]\nper_device = 3\noverall = 10\n[[rule]]\nid = \"comms\"\nseverity = \"P2\"\npoints = \"*/*\"\nquality = [\"bad\"]\n",
    );
    let mut out = Outputs::new();
    for d in 0..30 {
        fail(&mut e, &format!("dev-{d}/p"), T0 + d * S / 10, &mut out);
    }
    let listed = e.alarms(&AlarmFilter::default());
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(&*listed[0].source, "*");
    assert_eq!(listed[0].storm.as_ref().unwrap().folded, 30);
}

#[test]
fn a_storm_summary_survives_a_restart() {
    let mut e = engine(STORMY);
    let mut out = Outputs::new();
    for p in 0..8 {
        fail(&mut e, &format!("plc-1/p{p}"), T0 + p * S, &mut out);
    }
    let mut restarted = engine(STORMY);
    restarted
        .import_state(e.export_state(), T0 + 10 * S, &mut out)
        .unwrap();
    out.clear();
    fail(&mut restarted, "plc-1/p20", T0 + 11 * S, &mut out);
    assert!(
        out.transitions[0].suppressed_by.is_some(),
        "folded into the restored storm"
    );
    let out = tick(&mut restarted, T0 + 131 * S);
    assert!(
        out.transitions
            .iter()
            .any(|t| &*t.rule == STORM_RULE && t.kind == TransitionKind::Cleared)
    );
}

#[test]
fn state_of_an_unknown_format_is_refused() {
    let mut e = engine(HOT);
    number(&mut e, "ahu-1/supply_temp", T0, 30.0);
    let mut state = e.export_state();
    state.format = 2;
    let mut fresh = engine(HOT);
    assert_eq!(
        fresh.import_state(state, T0, &mut Outputs::new()),
        Err(StateFormatError { found: 2, known: 1 })
    );
    assert!(fresh.alarms(&AlarmFilter::default()).is_empty());
}

#[test]
fn absurd_timestamps_are_handled_without_overflow() {
    let mut e = engine(
        r#"
        [schedules]
        always = ["daily 00:00-23:59"]

        [[rule]]
        id = "hot"
        severity = "P2"
        points = "ahu-1/supply_temp"
        threshold = { above = 28 }
        on_delay_s = 5
        escalate_after_s = 60

        [[rule]]
        id = "mixed"
        severity = "P2"
        points = "*/*"
        any = [
            { quality = ["bad"] },
            { rate = { window_s = 60, change_per_minute = 1 } },
            { consumption = { window_s = 3600, learn_windows = 2 } },
            { all = [{ stale = { after_s = 10 } }, { during = "always" }] },
        ]

        [[rule]]
        id = "doors"
        severity = "P1"
        sources = "door-*"
        any = [
            { event_count = { kind = "access.denied", count = 2, window_s = 60 } },
            { held_open = { after_s = 30 } },
            { event = { kind = "door.forced", clear_after_s = 60 } },
        ]
        "#,
    );
    let mut out = Outputs::new();
    for ts in [i64::MAX, i64::MIN, 0, i64::MAX - 1, i64::MIN + 1] {
        e.handle_sample(&SampleIn::number("ahu-1/supply_temp", ts, 99.0), &mut out);
        e.handle_sample(
            &SampleIn::without_value("plc-1/p1", ts, Quality::Bad),
            &mut out,
        );
        e.handle_event(&EventIn::new("door.opened", "door-1", ts), &mut out);
        e.handle_event(&EventIn::new("access.denied", "door-1", ts), &mut out);
        e.handle_timeout(ts, &mut out);
        e.register_point("x/energy", ts, &mut out);
    }
    let id = e.alarms(&AlarmFilter::default())[0].id;
    e.shelve(id, i64::MAX, "ana", None, 0, &mut out).unwrap();
    // Absurd times are clamped to ±2^60 µs, far beyond any real date.
    let until = e.alarm(id).unwrap().shelf.as_ref().map(|s| s.until);
    assert_eq!(until, Some(1 << 60));
    e.handle_timeout(i64::MAX, &mut out);
    assert!(
        !e.alarm(id).unwrap().is_shelved(),
        "the end of time ends the shelf too"
    );
    assert!(out.transitions.iter().all(|t| t.ts.abs() <= 1 << 60));
}

//! An alarm storm from one failing device, through the public API: the operator sees one
//! summarised alarm for the device while it fails, not one per point, and is notified once.

use rules_engine::{
    Action, AlarmFilter, AlarmState, Engine, Outputs, Quality, RuleSet, STORM_RULE, SampleIn,
    Timestamp, TransitionKind,
};

const S: i64 = 1_000_000;
const T0: Timestamp = 1_704_067_200_000_000;

const RULES: &str = r#"
# Default storm settings: more than 10 raises by one device within 60 s.

[[rule]]
id = "comms-lost"
severity = "P2"
points = "*/*"
quality = ["bad"]

[[rule.action]]
on = ["raise"]
webhook = { url = "https://ops.example/alarms" }

[[rule]]
id = "over-voltage"
severity = "P1"
points = "*/voltage_*"
threshold = { above = 250, deadband = 5 }
"#;

fn webhooks(out: &Outputs) -> usize {
    out.actions
        .iter()
        .filter(|a| matches!(a.action, Action::Webhook { .. }))
        .count()
}

#[test]
fn an_alarm_storm_from_one_device_stays_one_summarised_alarm() {
    let mut engine = Engine::new(RuleSet::compile(RULES, "rules.toml").unwrap());
    let mut out = Outputs::new();
    let points: Vec<String> = (0..37).map(|i| format!("meter-7/voltage_{i}")).collect();
    let device_alarms = |engine: &Engine| {
        engine
            .alarms(&AlarmFilter {
                source_prefix: Some("meter-7".into()),
                ..AlarmFilter::default()
            })
            .len()
    };

    // A healthy neighbour with a real problem of its own.
    engine.handle_sample(&SampleIn::number("meter-8/voltage_0", T0, 262.0), &mut out);

    // meter-7's RS-485 line fails: every point reads bad, then some come back with wild
    // values, then fail again, for five minutes.
    let mut notified = 0;
    let mut t = T0;
    for round in 0..30 {
        for (i, p) in points.iter().enumerate() {
            t += S / 10;
            let sample = if (i + round) % 3 == 0 {
                SampleIn::number(p, t, 300.0)
            } else {
                SampleIn::without_value(p, t, Quality::Bad)
            };
            out.clear();
            engine.handle_sample(&sample, &mut out);
            notified += webhooks(&out);
            engine.handle_timeout(t, &mut out);
            let listed = device_alarms(&engine);
            assert!(
                listed <= 10,
                "{listed} alarms listed for meter-7 after {round} rounds"
            );
            if round > 0 {
                assert_eq!(listed, 1, "one summary once the storm has started");
            }
        }
    }
    assert!(t - T0 > 100 * S);
    let summary = engine.alarms(&AlarmFilter {
        source_prefix: Some("meter-7".into()),
        ..AlarmFilter::default()
    })[0]
        .clone();
    assert_eq!(&*summary.rule, STORM_RULE);
    assert_eq!(summary.state, AlarmState::ActiveUnacked);
    assert!(
        summary.message.starts_with("storm on device meter-7: "),
        "{}",
        summary.message
    );
    assert!(summary.storm.as_ref().unwrap().folded > 100);
    // Only the ten raises before the storm notified: points 0, 3, 6 and 9 read 300 V (an
    // over-voltage alarm, which has no webhook) and the other six read bad.
    assert_eq!(notified, 6);
    // The neighbour's alarm is untouched by meter-7's storm.
    let neighbour = engine.alarms(&AlarmFilter {
        source_prefix: Some("meter-8/".into()),
        ..AlarmFilter::default()
    });
    assert_eq!(neighbour.len(), 1);
    assert_eq!(neighbour[0].suppressed_by, None);

    // The line is repaired: good values everywhere, and a minute of quiet ends the storm.
    for p in &points {
        t += S / 10;
        engine.handle_sample(&SampleIn::number(p, t, 231.0), &mut out);
    }
    out.clear();
    engine.handle_timeout(t + 61 * S, &mut out);
    let ended: Vec<_> = out
        .transitions
        .iter()
        .filter(|t| &*t.rule == STORM_RULE)
        .map(|t| (t.kind, t.to))
        .collect();
    assert_eq!(
        ended,
        [(TransitionKind::Cleared, AlarmState::ClearedUnacked)]
    );
    // Every folded alarm has cleared too; none is active, and acknowledging the summary
    // leaves nothing for the operator.
    assert!(
        engine
            .alarms(&AlarmFilter::default())
            .iter()
            .all(|a| !a.state.is_active() || a.source.starts_with("meter-8"))
    );
    let summary = engine.alarms(&AlarmFilter {
        rule: Some(STORM_RULE.into()),
        ..AlarmFilter::default()
    })[0]
        .id;
    engine
        .acknowledge(summary, "ana", Some("line repaired"), t + 62 * S, &mut out)
        .unwrap();
    let still_shown: Vec<String> = engine
        .alarms(&AlarmFilter::default())
        .iter()
        .map(|a| a.source.to_string())
        .collect();
    assert!(
        still_shown
            .iter()
            .all(|s| s.starts_with("meter-8") || s.starts_with("meter-7/"))
    );
    assert!(
        engine
            .alarms(&AlarmFilter::default())
            .iter()
            .filter(|a| a.source.starts_with("meter-7"))
            .all(|a| a.state == AlarmState::ClearedUnacked),
        "released alarms that cleared during the storm wait for acknowledgement"
    );
}

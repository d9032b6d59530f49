//! One fault at a time, each with the behaviour the protocol promises for it.

use std::time::Duration;

use sync_protocol::session::ConnectionState;
use sync_protocol::{
    CloseCode, Command, ConfigPush, DecodeError, EdgeEvent, HubEvent, Kind, LostReason,
    UploadStream,
};

use crate::harness::{Sim, data_kinds, fast_config};

const MINUTE: Duration = Duration::from_secs(60);

fn quiet_sim(edges: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(edges, seed, fast_config());
    sim.drive(MINUTE).unwrap();
    sim
}

fn lost_reasons(sim: &Sim) -> (Vec<LostReason>, Vec<LostReason>) {
    let edge = sim.edges[0]
        .events
        .iter()
        .filter_map(|e| match e {
            EdgeEvent::ConnectionLost { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    let hub = sim
        .hub
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            HubEvent::ConnectionLost { reason } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    (edge, hub)
}

#[test]
fn a_fresh_edge_uploads_everything_and_the_hub_acknowledges_it() {
    let mut sim = Sim::new(1, 1, fast_config());
    sim.add_events(0, 50);
    sim.add_rollups(0, 10);
    sim.add_raw(0, 30);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
    assert_eq!(sim.hub.sink.duplicate_accepts, 0);
    assert!(matches!(
        sim.edges[0].events[0],
        EdgeEvent::Connected { .. }
    ));
    assert!(sim.edges[0].events.contains(&EdgeEvent::Acknowledged {
        stream: UploadStream::Raw,
        through: 30
    }));
    assert_eq!(sim.edges[0].session.stats().retransmitted, 0);
}

#[test]
fn reconnect_resends_events_first_then_rollups_then_raw() {
    let mut sim = quiet_sim(1, 2);
    sim.cut(0);
    // Written in the opposite order of their priority, while the link is down.
    sim.add_raw(0, 40);
    sim.add_rollups(0, 20);
    sim.add_events(0, 30);
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.edges[0].session.state(), ConnectionState::Disconnected);
    sim.edges[0].sent.clear();
    sim.heal(0);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
    let kinds: Vec<Kind> = data_kinds(&sim.sent_kinds(0))
        .into_iter()
        .filter(|k| *k != Kind::Document)
        .collect();
    let last = |k: Kind| kinds.iter().rposition(|x| *x == k).unwrap();
    let first = |k: Kind| kinds.iter().position(|x| *x == k).unwrap();
    assert_eq!(kinds.len(), 90, "no frame was sent twice: {kinds:?}");
    assert!(last(Kind::Event) < first(Kind::Rollups), "{kinds:?}");
    assert!(last(Kind::Rollups) < first(Kind::Raw), "{kinds:?}");
}

#[test]
fn a_cut_link_shows_as_disconnected_on_both_sides_within_the_idle_timeout() {
    let mut sim = quiet_sim(1, 3);
    let config = fast_config();
    sim.cut(0);
    let cut_at = sim.now;
    sim.run_for(config.idle_timeout + Duration::from_millis(10));
    let now = sim.now;
    assert!(!sim.edges[0].session.is_connected(now));
    assert!(!sim.hub.sessions[0].as_ref().unwrap().is_connected(now));
    let (edge, hub) = lost_reasons(&sim);
    assert_eq!(edge, [LostReason::IdleTimeout]);
    assert_eq!(hub, [LostReason::IdleTimeout]);
    // The session reports it no later than the idle timeout after the last frame heard.
    assert!(
        now.saturating_duration_since(cut_at) <= config.idle_timeout + Duration::from_millis(10)
    );
    // While cut, nothing claims to be connected, however long it lasts.
    sim.run_for(Duration::from_secs(120));
    assert!(!sim.edges[0].session.is_connected(sim.now));
    assert!(!sim.hub.sessions[0].as_ref().unwrap().is_connected(sim.now));
    sim.heal(0);
    sim.run_for(Duration::from_secs(3));
    assert!(sim.edges[0].session.is_connected(sim.now));
    assert!(sim.hub.sessions[0].as_ref().unwrap().is_connected(sim.now));
}

#[test]
fn is_connected_turns_false_at_the_idle_timeout_even_without_a_timer_call() {
    let mut sim = quiet_sim(1, 4);
    sim.cut(0);
    let config = fast_config();
    // A caller whose timer is late still gets the truth.
    let later = sim.now + config.idle_timeout + Duration::from_secs(1);
    assert!(!sim.edges[0].session.is_connected(later));
    assert!(!sim.hub.sessions[0].as_ref().unwrap().is_connected(later));
}

#[test]
fn a_slow_hub_slows_the_edge_instead_of_dropping() {
    let mut sim = quiet_sim(1, 5);
    let window = fast_config().window_frames as usize;
    sim.hub.flush_interval = Duration::from_millis(500);
    sim.hub.sink.busy_at = Some(8);
    sim.add_events(0, 300);
    sim.add_raw(0, 100);
    let mut most = 0;
    for _ in 0..2_000 {
        sim.run_for(Duration::from_millis(50));
        for s in UploadStream::ALL {
            let n = sim.edges[0].session.unacknowledged_frames(s);
            assert!(n <= window, "{n} frames of {s:?} unacknowledged");
            most = most.max(n);
        }
        if sim.quiet() {
            break;
        }
    }
    sim.check_consistent().unwrap();
    assert!(most > 1);
    let hub = sim.hub.sessions[0].as_ref().unwrap().stats();
    assert!(hub.sink_busy > 0, "the sink pushed back");
    // Records refused by a busy sink were resent, not lost.
    assert_eq!(sim.hub.sink.durable("edge-0", UploadStream::Events), 300);
}

#[test]
fn duplicated_and_reordered_frames_are_stored_once_and_in_order() {
    let mut sim = quiet_sim(1, 6);
    sim.faults.duplicate = 0.5;
    sim.faults.reorder = 0.5;
    sim.add_events(0, 100);
    sim.add_rollups(0, 20);
    sim.add_raw(0, 50);
    sim.drive(MINUTE * 5).unwrap();
    sim.check_consistent().unwrap();
    let hub = sim.hub.sessions[0].as_ref().unwrap().stats();
    assert!(hub.duplicates > 0, "duplicates arrived and were recognised");
}

#[test]
fn a_lossy_link_retransmits_until_everything_is_durable() {
    let mut sim = quiet_sim(1, 7);
    sim.faults.loss = 0.2;
    sim.add_events(0, 100);
    sim.add_raw(0, 50);
    sim.drive(MINUTE * 10).unwrap();
    sim.check_consistent().unwrap();
    assert!(sim.edges[0].session.stats().retransmitted > 0);
}

#[test]
fn the_hub_restarting_loses_nothing_it_acknowledged() {
    let mut sim = quiet_sim(1, 8);
    sim.hub.flush_interval = Duration::from_millis(300);
    sim.add_events(0, 100);
    sim.run_for(Duration::from_millis(450));
    let acked = sim.edges[0].outbox_acknowledged(UploadStream::Events);
    assert!(acked > 0 && acked < 100, "acknowledged {acked}");
    assert!(
        sim.hub.sink.has_pending(),
        "some records were taken but not yet durable"
    );
    sim.restart_hub();
    assert!(sim.hub.sink.durable("edge-0", UploadStream::Events) >= acked);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
}

#[test]
fn an_edge_that_forgot_its_last_acknowledgements_takes_the_hubs_cursors() {
    let mut sim = quiet_sim(1, 9);
    sim.add_events(0, 40);
    // Stop right after an acknowledgement arrived and before the outbox persisted it.
    for _ in 0..10_000 {
        sim.step();
        if sim.edges[0].outbox.needs_sync() {
            break;
        }
        let next = sim.now + Duration::from_millis(1);
        sim.now = next;
    }
    assert!(sim.edges[0].outbox.needs_sync());
    sim.restart_edge(0, true);
    let remembered = sim.edges[0].outbox_acknowledged(UploadStream::Events);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
    let hub_cursor = sim.edges[0]
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            EdgeEvent::Connected { hub_durable } => Some(hub_durable.events),
            _ => None,
        })
        .unwrap();
    assert!(
        hub_cursor > remembered,
        "the hub knew more than the edge remembered"
    );
    assert_eq!(sim.hub.sink.duplicate_accepts, 0, "nothing was sent twice");
}

#[test]
fn a_hub_that_lost_acknowledged_records_gets_them_again_while_the_edge_has_them() {
    let mut sim = Sim::new(1, 10, fast_config());
    sim.edges[0].outbox.prune = false;
    sim.add_events(0, 20);
    sim.drive(MINUTE).unwrap();
    // The hub's store comes back from an older backup.
    sim.hub.sink.lose_after("edge-0", UploadStream::Events, 10);
    sim.restart_hub();
    // Acknowledgements come back one or two records at a time, all below what the edge
    // had been told before; its outbox cursor must not go back (the outbox asserts it).
    sim.hub.sink.busy_at = Some(2);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
    assert!(sim.hub.events.iter().any(|(_, e)| *e
        == HubEvent::EdgeAhead {
            stream: UploadStream::Events,
            edge_cursor: 20,
            hub_cursor: 10
        }));
    assert!(sim.edges[0].events.contains(&EdgeEvent::HubBehind {
        stream: UploadStream::Events,
        edge_cursor: 20,
        hub_cursor: 10
    }));
    let partial = sim.edges[0].events.iter().filter(|e| {
        matches!(e, EdgeEvent::Acknowledged { stream: UploadStream::Events, through } if (11..20).contains(through))
    });
    assert!(partial.count() >= 2, "acknowledgements came in steps");
}

#[test]
fn raw_telemetry_evicted_before_upload_reaches_the_hub_as_a_gap() {
    let mut sim = quiet_sim(1, 11);
    sim.cut(0);
    sim.add_raw(0, 20);
    assert_eq!(sim.edges[0].outbox.evict_raw(5), 5);
    sim.run_for(Duration::from_secs(10));
    sim.heal(0);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
    assert!(sim.edges[0].events.contains(&EdgeEvent::RecordsSkipped {
        stream: UploadStream::Raw,
        from: 1,
        through: 5
    }));
    assert!(sim.hub.events.iter().any(|(_, e)| *e
        == HubEvent::Skipped {
            stream: UploadStream::Raw,
            from: 1,
            through: 5
        }));
}

#[test]
fn a_hello_for_another_building_is_refused_with_a_reason() {
    let mut sim = Sim::new(1, 12, fast_config());
    sim.edges[0].cert_building = "building-9".into();
    sim.add_events(0, 5);
    sim.run_for(Duration::from_secs(3));
    let (edge, hub) = lost_reasons(&sim);
    let expected =
        "edge edge-0 says it is in park-1/building-0, but its certificate names park-1/building-9";
    assert!(edge.contains(&LostReason::ClosedByPeer {
        code: CloseCode::Refused,
        reason: expected.into()
    }));
    assert!(hub.contains(&LostReason::Refused(expected.into())));
    assert_eq!(sim.hub.sink.durable("edge-0", UploadStream::Events), 0);
    assert!(!sim.edges[0].session.is_connected(sim.now));
}

#[test]
fn config_pushes_and_commands_reach_the_edge_once_across_reconnects() {
    let mut sim = quiet_sim(1, 13);
    sim.faults.duplicate = 0.5;
    sim.faults.reorder = 0.3;
    sim.cut(0);
    let hub = sim.hub.sessions[0].as_mut().unwrap();
    for version in [1, 2] {
        hub.push_config(ConfigPush {
            version,
            body: format!("config {version}").into_bytes(),
        })
        .unwrap();
    }
    for id in [7, 8] {
        hub.send_command(Command {
            id,
            body: b"open gate 2".to_vec(),
        })
        .unwrap();
    }
    sim.run_for(Duration::from_secs(10));
    sim.heal(0);
    sim.drive(MINUTE).unwrap();
    sim.run_for(Duration::from_secs(5));
    // The hub restarting its connection resends what it has not had acknowledged; the
    // edge must still see each once.
    sim.restart_edge(0, false);
    sim.drive(MINUTE).unwrap();
    let node = &sim.edges[0];
    assert_eq!(
        node.configs.iter().map(|c| c.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        node.commands.iter().map(|c| c.id).collect::<Vec<_>>(),
        [7, 8]
    );
    let results: Vec<u64> = sim.hub.command_results.iter().map(|(_, r)| r.id).collect();
    assert_eq!(results, [7, 8]);
}

#[test]
fn a_garbage_frame_ends_the_connection_and_the_edge_reconnects() {
    let mut sim = quiet_sim(1, 14);
    sim.inject_to_hub(0, &[0xff, 0, 0, 0]);
    sim.run_for(Duration::from_millis(100));
    let (edge, hub) = lost_reasons(&sim);
    assert_eq!(
        hub,
        [LostReason::BadFrame(DecodeError::BadVersion {
            found: 0xff,
            supported: 1
        })]
    );
    assert!(
        matches!(&edge[..], [LostReason::ClosedByPeer { code: CloseCode::ProtocolViolation, reason }] if reason.contains("unsupported protocol version 255")),
        "{edge:?}"
    );
    sim.add_events(0, 10);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
    assert_eq!(
        sim.hub.sessions[0].as_ref().unwrap().stats().decode_errors,
        1
    );
}

#[test]
fn heartbeats_keep_an_idle_connection_up() {
    let mut sim = quiet_sim(1, 15);
    sim.run_for(MINUTE * 10);
    let (edge, hub) = lost_reasons(&sim);
    assert!(edge.is_empty() && hub.is_empty(), "{edge:?} {hub:?}");
    assert!(sim.edges[0].session.is_connected(sim.now));
    assert!(sim.hub.sessions[0].as_ref().unwrap().is_connected(sim.now));
    let stats = sim.edges[0].session.stats();
    assert!(
        stats.frames_received >= 600,
        "about one heartbeat a second: {stats:?}"
    );
}

#[test]
fn a_restarted_edge_resumes_where_the_hub_left_off() {
    let mut sim = quiet_sim(1, 16);
    sim.add_events(0, 30);
    sim.add_raw(0, 30);
    sim.run_for(Duration::from_millis(30));
    sim.restart_edge(0, false);
    sim.add_events(0, 10);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
}

#[test]
fn raw_telemetry_evicted_at_the_end_of_the_stream_reaches_the_hub_as_a_gap() {
    // Found by the property test: with no later record to reveal it, a trailing hole
    // must still be reported, or the hub's cursor never reaches what the edge wrote.
    let mut sim = Sim::new(2, 0, fast_config());
    sim.add_raw(1, 1);
    assert_eq!(sim.edges[1].outbox.evict_raw(1), 1);
    sim.drive(MINUTE).unwrap();
    sim.check_consistent().unwrap();
    assert!(sim.edges[1].events.contains(&EdgeEvent::RecordsSkipped {
        stream: UploadStream::Raw,
        from: 1,
        through: 1
    }));
}

//! The property: for any schedule of faults (loss, duplication, reordering, partitions,
//! restarts of either side, a slow or busy store) and any workload (events, rollups, raw
//! telemetry, evictions by the disk budget, document edits on any replica), once the
//! faults heal and the world is driven to quiet, the hub holds exactly what each edge
//! wrote, with no gaps, no duplicates, in per-stream order; each edge's acknowledged
//! cursors equal the hub's durable ones; and every replica of every document converges.
//! While the faults last, no edge ever believes the hub holds more than it does.
//!
//! Cases: 256 by default (a few seconds in a debug build), `PROPTEST_CASES` to change.

use std::time::Duration;

use proptest::prelude::*;
use sync_protocol::UploadStream;

use crate::harness::{Sim, fast_config};

const EDGES: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    Events(usize, usize),
    Rollups(usize, usize),
    Raw(usize, usize),
    Evict(usize, usize),
    Edit { replica: usize, doc: usize, key: u8 },
    Run(u64),
    Loss(u8),
    Duplicate(u8),
    Reorder(u8),
    Cut(usize),
    Heal(usize),
    RestartEdge(usize, bool),
    RestartHub,
    SlowSink(bool),
    BusySink(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let edge = 0..EDGES;
    prop_oneof![
        4 => (edge.clone(), 1usize..40).prop_map(|(e, n)| Op::Events(e, n)),
        2 => (edge.clone(), 1usize..10).prop_map(|(e, n)| Op::Rollups(e, n)),
        3 => (edge.clone(), 1usize..40).prop_map(|(e, n)| Op::Raw(e, n)),
        1 => (edge.clone(), 1usize..10).prop_map(|(e, n)| Op::Evict(e, n)),
        3 => (0..=EDGES, 0usize..2, 0u8..4).prop_map(|(replica, doc, key)| Op::Edit { replica, doc, key }),
        6 => prop_oneof![4 => 0u64..3_000, 1 => 3_000u64..30_000].prop_map(Op::Run),
        1 => (0u8..30).prop_map(Op::Loss),
        1 => (0u8..40).prop_map(Op::Duplicate),
        1 => (0u8..60).prop_map(Op::Reorder),
        1 => edge.clone().prop_map(Op::Cut),
        1 => edge.clone().prop_map(Op::Heal),
        1 => (edge, any::<bool>()).prop_map(|(e, lose)| Op::RestartEdge(e, lose)),
        1 => Just(Op::RestartHub),
        1 => any::<bool>().prop_map(Op::SlowSink),
        1 => any::<bool>().prop_map(Op::BusySink),
    ]
}

fn apply(sim: &mut Sim, op: &Op) {
    match *op {
        Op::Events(e, n) => sim.add_events(e, n),
        Op::Rollups(e, n) => sim.add_rollups(e, n),
        Op::Raw(e, n) => sim.add_raw(e, n),
        Op::Evict(e, n) => {
            sim.edges[e].outbox.evict_raw(n);
        }
        Op::Edit { replica, doc, key } => sim.edit(replica, doc, key),
        Op::Run(ms) => sim.run_for(Duration::from_millis(ms)),
        Op::Loss(p) => sim.faults.loss = f64::from(p) / 100.0,
        Op::Duplicate(p) => sim.faults.duplicate = f64::from(p) / 100.0,
        Op::Reorder(p) => sim.faults.reorder = f64::from(p) / 100.0,
        Op::Cut(e) => sim.cut(e),
        Op::Heal(e) => sim.heal(e),
        Op::RestartEdge(e, lose) => sim.restart_edge(e, lose),
        Op::RestartHub => sim.restart_hub(),
        Op::SlowSink(slow) => {
            sim.hub.flush_interval = Duration::from_millis(if slow { 1_500 } else { 10 })
        }
        Op::BusySink(busy) => sim.hub.sink.busy_at = busy.then_some(4),
    }
}

/// Nothing acknowledged is ever missing from the hub's durable store.
fn acknowledged_is_durable(sim: &Sim) -> Result<(), String> {
    for node in &sim.edges {
        for s in UploadStream::ALL {
            let acked = node.outbox_acknowledged(s);
            let durable = sim.hub.sink.durable(&node.identity.edge_id, s);
            if acked > durable {
                return Err(format!(
                    "{} {s:?}: acknowledged {acked} but the hub holds {durable}",
                    node.identity.edge_id
                ));
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn after_any_faults_the_hub_holds_exactly_what_the_edges_wrote(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut sim = Sim::new(EDGES, seed, fast_config());
        for op in &ops {
            apply(&mut sim, op);
            let ok = acknowledged_is_durable(&sim);
            prop_assert!(ok.is_ok(), "{}\n{}", ok.unwrap_err(), sim.trace());
        }
        for e in 0..EDGES {
            sim.heal(e);
        }
        sim.faults.loss = 0.0;
        sim.hub.flush_interval = Duration::from_millis(10);
        sim.hub.sink.busy_at = None;
        let quiet = sim.drive(Duration::from_secs(600));
        prop_assert!(quiet.is_ok(), "{}", quiet.unwrap_err());
        let consistent = sim.check_consistent();
        prop_assert!(consistent.is_ok(), "{}\n{}", consistent.unwrap_err(), sim.trace());
    }
}

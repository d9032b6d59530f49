//! Documents: automerge replicas on the hub and on every edge converge through the
//! document stream, whatever happens to the connections in between. The protocol carries
//! the sync messages as opaque bytes; the harness runs automerge's sync protocol over it,
//! with fresh sync states on every connection.

use std::time::Duration;

use crate::harness::{Sim, fast_config};

#[test]
fn two_edges_and_the_hub_converge_on_documents_edited_everywhere() {
    let mut sim = Sim::new(2, 21, fast_config());
    sim.drive(Duration::from_secs(60)).unwrap();
    sim.edit(0, 0, 1);
    sim.edit(1, 0, 2);
    sim.edit(2, 1, 3);
    sim.drive(Duration::from_secs(60)).unwrap();
    sim.check_consistent().unwrap();
    let contents = sim.hub.replica.contents();
    assert_eq!(contents[0].len() + contents[1].len(), 3);
}

#[test]
fn concurrent_offline_edits_of_the_same_key_converge_to_one_value() {
    let mut sim = Sim::new(2, 22, fast_config());
    sim.drive(Duration::from_secs(60)).unwrap();
    sim.cut(0);
    sim.cut(1);
    // Every replica writes the same key while the links are down.
    sim.edit(0, 0, 5);
    sim.edit(1, 0, 5);
    sim.edit(2, 0, 5);
    sim.run_for(Duration::from_secs(30));
    sim.restart_hub();
    sim.heal(0);
    sim.heal(1);
    sim.drive(Duration::from_secs(120)).unwrap();
    sim.check_consistent().unwrap();
}

#[test]
fn documents_converge_over_a_lossy_reordering_link() {
    let mut sim = Sim::new(2, 23, fast_config());
    sim.faults.loss = 0.1;
    sim.faults.reorder = 0.5;
    sim.faults.duplicate = 0.3;
    for i in 0..20u8 {
        sim.edit(usize::from(i % 3), usize::from(i % 2), i % 5);
        sim.run_for(Duration::from_millis(300));
    }
    sim.faults.loss = 0.0;
    sim.drive(Duration::from_secs(300)).unwrap();
    sim.check_consistent().unwrap();
}

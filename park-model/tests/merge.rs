//! Offline replicas of the park directory and how they merge: the suspend-versus-move scenario,
//! and property tests that any order of merging the same concurrent edits gives the same
//! document and the same access decisions.

use std::sync::OnceLock;

use automerge::ActorId;
use park_model::access::{AccessDecision, AccessIndex, NoPresence, ReasonCode};
use park_model::building::Building;
use park_model::directory::{
    AccessGroup, Credential, CredentialKey, CredentialKind, CredentialStatus, Directory,
    EnterpriseStatus, Person, PersonStatus, Presented,
};
use park_model::sample::{SAMPLE_WORKDAY_MORNING, sample_directory};
use park_model::time::MICROS_PER_DAY;
use park_model::{DocError, ParkDirectory};
use proptest::prelude::*;

const OFFSET: i32 = 480;

fn actor(n: u8) -> ActorId {
    ActorId::from([n; 16].as_slice())
}

fn key() -> CredentialKey {
    CredentialKey::new(&[0x42; 32])
}

fn decide_card(index: &AccessIndex, value: &str, door: &str) -> AccessDecision {
    index.decide(
        &key().present(CredentialKind::Card, value),
        door,
        SAMPLE_WORKDAY_MORNING,
        &NoPresence,
    )
}

fn index_of(doc: &ParkDirectory, building: &Building) -> AccessIndex {
    AccessIndex::build(&doc.snapshot().unwrap(), [building])
}

#[test]
fn a_suspension_and_a_group_move_made_offline_both_survive_the_merge_and_the_card_is_denied() {
    let park = sample_directory(0, 4, 1, &key()).unwrap();
    let building = park.building.snapshot().unwrap();
    let mut origin = park.directory;
    // Two groups that both open the lobby door (door-00000) at any time.
    for (id, doors) in [
        ("day-staff", vec!["door-00000"]),
        ("night-staff", vec!["door-00000", "door-00001"]),
    ] {
        origin
            .upsert(&AccessGroup {
                id: id.into(),
                name: id.into(),
                door_ids: doors.into_iter().map(String::from).collect(),
                schedule_id: Some("always".into()),
            })
            .unwrap();
    }
    origin
        .upsert(&Person {
            id: "li-wei".into(),
            name: "Li Wei".into(),
            enterprise_id: "ent-operator".into(),
            status: PersonStatus::Active,
            access_group_ids: vec!["day-staff".into()],
        })
        .unwrap();
    origin
        .upsert(
            &Credential::from_secret(
                &key(),
                "card-li",
                "li-wei",
                CredentialKind::Card,
                "04A1B2C3",
            )
            .unwrap(),
        )
        .unwrap();
    origin.commit("set up", 0);
    assert!(decide_card(&index_of(&origin, &building), "04A1B2C3", "door-00000").granted);

    // Two replicas go offline.
    let mut a = origin.fork_with_actor(actor(0xA));
    let mut b = origin.fork_with_actor(actor(0xB));
    a.suspend_credential("card-li").unwrap();
    a.commit("security suspends the card", SAMPLE_WORKDAY_MORNING);
    b.move_person_to_group("li-wei", "day-staff", "night-staff")
        .unwrap();
    b.commit(
        "facilities moves Li Wei to the night shift",
        SAMPLE_WORKDAY_MORNING,
    );

    // Each alone sees only its own edit.
    assert_eq!(
        decide_card(&index_of(&a, &building), "04A1B2C3", "door-00000").reason,
        ReasonCode::CredentialSuspended
    );
    assert!(decide_card(&index_of(&b, &building), "04A1B2C3", "door-00001").granted);

    // Back online: merge both ways.
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    assert_eq!(a.heads(), b.heads());
    for doc in [&a, &b] {
        let snap = doc.snapshot().unwrap();
        assert_eq!(
            snap.credentials["card-li"].status,
            CredentialStatus::Suspended
        );
        assert_eq!(snap.people["li-wei"].access_group_ids, ["night-staff"]);
        let index = index_of(doc, &building);
        for door in ["door-00000", "door-00001"] {
            let d = decide_card(&index, "04A1B2C3", door);
            assert!(!d.granted);
            assert_eq!(d.reason, ReasonCode::CredentialSuspended);
            assert_eq!(d.person.as_deref(), Some("li-wei"));
        }
    }
}

/// One edit a replica may make while offline. Indexes pick among the base's entities.
#[derive(Debug, Clone)]
enum Edit {
    SetCredentialStatus(usize, CredentialStatus),
    MovePerson(usize, usize),
    AddToGroup(usize, usize),
    RenamePerson(usize, String),
    SetPersonStatus(usize, bool),
    SetEnterpriseStatus(usize, bool),
    SetLeaseEnd(usize, i64),
    AddCredential(usize, u32),
    RemoveCredential(usize),
    RemoveGroup(usize),
}

const CREDENTIALS: usize = 40;
const DOORS: usize = 20;

/// The base every replica forks from, saved once, and what the probes present at readers: each
/// base credential's value and the values new credentials may get.
type Base = (Vec<u8>, Building, Directory, Vec<Presented>);

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut park = sample_directory(CREDENTIALS, DOORS, 11, &key()).unwrap();
        let snap = park.directory.snapshot().unwrap();
        let mut reads: Vec<Presented> = park
            .credentials
            .iter()
            .map(|(kind, value)| key().present(*kind, value))
            .collect();
        reads.extend((0..4).map(|n| key().present(CredentialKind::Card, &format!("NEW{n}"))));
        (
            park.directory.save(),
            park.building.snapshot().unwrap(),
            snap,
            reads,
        )
    })
}

fn nth<T>(map: &std::collections::BTreeMap<String, T>, i: usize) -> &str {
    map.keys().nth(i % map.len()).unwrap()
}

fn apply(doc: &mut ParkDirectory, replica: u8, edit: &Edit) -> Result<(), DocError> {
    let (_, _, base, _) = base();
    match edit {
        Edit::SetCredentialStatus(i, s) => {
            doc.set_credential_status(nth(&base.credentials, *i), *s)
        }
        Edit::MovePerson(p, g) => doc.move_person_to_group(
            nth(&base.people, *p),
            &base.people[nth(&base.people, *p)].access_group_ids[0],
            nth(&base.access_groups, *g),
        ),
        Edit::AddToGroup(p, g) => {
            doc.add_person_to_group(nth(&base.people, *p), nth(&base.access_groups, *g))
        }
        Edit::RenamePerson(p, name) => doc
            .update::<Person>(nth(&base.people, *p), |x| x.name = name.clone())
            .map(drop),
        Edit::SetPersonStatus(p, active) => doc.set_person_status(
            nth(&base.people, *p),
            if *active {
                PersonStatus::Active
            } else {
                PersonStatus::Suspended
            },
        ),
        Edit::SetEnterpriseStatus(e, active) => doc.set_enterprise_status(
            nth(&base.enterprises, *e),
            if *active {
                EnterpriseStatus::Active
            } else {
                EnterpriseStatus::Suspended
            },
        ),
        Edit::SetLeaseEnd(l, days) => doc.set_lease_end(
            nth(&base.leases, *l),
            SAMPLE_WORKDAY_MORNING + days * MICROS_PER_DAY,
        ),
        // Replicas may pick the same value: duplicates must merge deterministically too.
        Edit::AddCredential(p, n) => doc.upsert(&Credential::from_secret(
            &key(),
            &format!("new-{replica}-{n}"),
            nth(&base.people, *p),
            CredentialKind::Card,
            &format!("NEW{}", n % 4),
        )?),
        Edit::RemoveCredential(i) => doc
            .remove::<Credential>(nth(&base.credentials, *i))
            .map(drop),
        Edit::RemoveGroup(g) => doc
            .remove::<AccessGroup>(nth(&base.access_groups, *g))
            .map(drop),
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    let status = prop_oneof![
        Just(CredentialStatus::Active),
        Just(CredentialStatus::Suspended),
        Just(CredentialStatus::Lost)
    ];
    prop_oneof![
        (any::<usize>(), status).prop_map(|(i, s)| Edit::SetCredentialStatus(i, s)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, g)| Edit::MovePerson(p, g)),
        (any::<usize>(), any::<usize>()).prop_map(|(p, g)| Edit::AddToGroup(p, g)),
        (any::<usize>(), "[a-z]{1,6}").prop_map(|(p, n)| Edit::RenamePerson(p, n)),
        (any::<usize>(), any::<bool>()).prop_map(|(p, a)| Edit::SetPersonStatus(p, a)),
        (any::<usize>(), any::<bool>()).prop_map(|(e, a)| Edit::SetEnterpriseStatus(e, a)),
        (any::<usize>(), -3i64..3).prop_map(|(l, d)| Edit::SetLeaseEnd(l, d)),
        (any::<usize>(), 0u32..8).prop_map(|(p, n)| Edit::AddCredential(p, n)),
        any::<usize>().prop_map(Edit::RemoveCredential),
        any::<usize>().prop_map(Edit::RemoveGroup),
    ]
}

/// Every decision the probes make: each base and new credential value at a few doors.
fn decisions(doc: &ParkDirectory, building: &Building) -> Vec<AccessDecision> {
    let (_, _, _, reads) = base();
    let index = index_of(doc, building);
    let mut out = Vec::new();
    for read in reads {
        for door in ["door-00000", "door-00003", "door-00011"] {
            for now in [
                SAMPLE_WORKDAY_MORNING,
                SAMPLE_WORKDAY_MORNING + 2 * MICROS_PER_DAY,
            ] {
                out.push(index.decide(read, door, now, &NoPresence));
            }
        }
    }
    out
}

fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn merging_the_same_concurrent_edits_in_any_order_gives_the_same_document_and_decisions(
        scripts in proptest::collection::vec(proptest::collection::vec(edit(), 0..6), 3)
    ) {
        let (bytes, building, _, _) = base();
        let mut replicas: Vec<ParkDirectory> = Vec::new();
        for (r, script) in scripts.iter().enumerate() {
            let mut doc = ParkDirectory::load(bytes).unwrap().fork_with_actor(actor(r as u8 + 1));
            for e in script {
                // An edit of something another edit of this replica removed is refused; that is
                // part of the replica's history like any other outcome.
                let _ = apply(&mut doc, r as u8, e);
                doc.commit("edit", SAMPLE_WORKDAY_MORNING);
            }
            replicas.push(doc);
        }

        let mut results = Vec::new();
        for order in permutations(replicas.len()) {
            let mut merged = ParkDirectory::load(bytes).unwrap().fork_with_actor(actor(0xEE));
            for &r in &order {
                merged.merge(&mut replicas[r]).unwrap();
            }
            let mut heads = merged.heads();
            heads.sort();
            let snapshot = merged.snapshot().unwrap();
            let decided = decisions(&merged, building);
            results.push((heads, snapshot, decided));
        }
        for r in &results[1..] {
            prop_assert_eq!(&r.0, &results[0].0);
            prop_assert_eq!(&r.1, &results[0].1);
            prop_assert_eq!(&r.2, &results[0].2);
        }

        // Merging is idempotent: merging everything again changes nothing.
        let mut again = ParkDirectory::load(bytes).unwrap().fork_with_actor(actor(0xEF));
        for r in replicas.iter_mut() {
            again.merge(r).unwrap();
            again.merge(r).unwrap();
        }
        let mut heads = again.heads();
        heads.sort();
        prop_assert_eq!(&heads, &results[0].0);
        prop_assert_eq!(&again.snapshot().unwrap(), &results[0].1);
    }

    #[test]
    fn an_index_refreshed_from_change_sets_decides_like_one_built_afresh(
        script in proptest::collection::vec(edit(), 1..8)
    ) {
        let (bytes, building, _, _) = base();
        let mut doc = ParkDirectory::load(bytes).unwrap().fork_with_actor(actor(1));
        let mut index = index_of(&doc, building);
        doc.track_changes();
        for e in &script {
            let _ = apply(&mut doc, 1, e);
            let changes = doc.take_changes();
            index.refresh_directory(&doc, &changes).unwrap();
        }
        let fresh = index_of(&doc, building);
        let (_, _, _, reads) = base();
        for read in reads {
            for door in ["door-00000", "door-00003", "door-00011"] {
                let now = SAMPLE_WORKDAY_MORNING;
                prop_assert_eq!(
                    index.decide(read, door, now, &NoPresence),
                    fresh.decide(read, door, now, &NoPresence)
                );
            }
        }
        prop_assert_eq!(index.credential_count(), fresh.credential_count());
    }
}

#[test]
fn offline_replicas_of_the_utc_offset_converge_too() {
    let (bytes, _, _, _) = base();
    let mut a = ParkDirectory::load(bytes)
        .unwrap()
        .fork_with_actor(actor(1));
    let mut b = ParkDirectory::load(bytes)
        .unwrap()
        .fork_with_actor(actor(2));
    a.set_utc_offset_minutes(420).unwrap();
    b.set_utc_offset_minutes(540).unwrap();
    a.merge(&mut b).unwrap();
    b.merge(&mut a).unwrap();
    assert_eq!(
        a.utc_offset_minutes().unwrap(),
        b.utc_offset_minutes().unwrap()
    );
    assert_ne!(a.utc_offset_minutes().unwrap(), OFFSET);
}

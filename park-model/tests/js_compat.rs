//! Compatibility with a JavaScript web app using `@automerge/automerge` 3.x (pinned in
//! `tests/compat/package.json`): Node edits a directory saved by Rust and Rust decides from the
//! result; Node reads a directory saved by Rust and sees its strings as `ImmutableString`s (the
//! atomic values Rust writes) and its numbers as numbers. Node also computes a card's keyed
//! digest with `node:crypto`, and writes a card number and a phone in clear as an app built
//! before schema version 2 did, which Rust refuses to use until it rewrites them.
//!
//! Needs `node` and `tests/compat/node_modules`; `scripts/test` installs both. Nothing is
//! skipped when they are missing: the test fails and says so.

use std::path::{Path, PathBuf};
use std::process::Command;

use automerge::{ObjType, ROOT, ReadDoc, Value};
use park_model::access::{AccessIndex, NoPresence, ReasonCode};
use park_model::building::{Door, DoorDirection, DoorStatus};
use park_model::directory::{
    AccessGroup, ClearValues, Credential, CredentialKey, CredentialKind, CredentialStatus,
    Enterprise, EnterpriseKind, EnterpriseStatus, Lease, LeaseStatus, Person, PersonStatus,
};
use park_model::document::Collection;
use park_model::time::{Timestamp, local_timestamp};
use park_model::{BuildingDoc, ParkDirectory};

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat")
}

/// Checks that Node and the npm packages are there, with a message saying how to get them.
fn require_node() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is not installed: run scripts/test, which installs it and the npm packages \
         this test needs ({node:?})"
    );
    let package = compat_dir().join("node_modules/@automerge/automerge/package.json");
    assert!(
        package.exists(),
        "{} is missing: run scripts/test, which installs it (npm ci in tests/compat)",
        package.display()
    );
}

fn node(script: &str, args: &[&Path], extra: &[&str]) -> String {
    let out = Command::new("node")
        .arg(compat_dir().join(script))
        .args(args)
        .args(extra)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "node {script} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("park-model-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn at(date: &str, h: u32) -> Timestamp {
    local_timestamp(date, h, 0, 480).unwrap()
}

fn key() -> CredentialKey {
    CredentialKey::new(&[0x6b; 32])
}

/// The fixture `edit-directory.mjs` expects: enterprise `ent-1` with `lease-1` for 2026,
/// group `grp-lobby` opening `d-lobby` at any time, person `p-1` with cards `card-to-suspend`
/// and `card-keep`.
fn fixture() -> (ParkDirectory, BuildingDoc) {
    let mut dir = ParkDirectory::new("compat-park", 480, 0).unwrap();
    dir.upsert(&Enterprise {
        id: "ent-1".into(),
        name: "Acme Robotics".into(),
        status: EnterpriseStatus::Active,
        kind: EnterpriseKind::Tenant,
    })
    .unwrap();
    dir.upsert(&Lease {
        id: "lease-1".into(),
        enterprise_id: "ent-1".into(),
        space_ids: vec!["space-1".into()],
        valid_from: at("2026-01-01", 0),
        valid_to: at("2027-01-01", 0),
        status: LeaseStatus::Active,
        monthly_rent_fen: 2_500_000,
        property_fee_fen: 300_000,
        currency: "CNY".into(),
    })
    .unwrap();
    dir.upsert(&AccessGroup {
        id: "grp-lobby".into(),
        name: "Lobby".into(),
        door_ids: vec!["d-lobby".into()],
        schedule_id: None,
    })
    .unwrap();
    dir.upsert(&Person {
        id: "p-1".into(),
        name: "Li Wei".into(),
        enterprise_id: "ent-1".into(),
        status: PersonStatus::Active,
        access_group_ids: vec!["grp-lobby".into()],
    })
    .unwrap();
    for (id, value) in [
        ("card-to-suspend", "CARD-SUSPEND"),
        ("card-keep", "CARD-KEEP"),
    ] {
        dir.upsert(
            &Credential::from_secret(&key(), id, "p-1", CredentialKind::Card, value).unwrap(),
        )
        .unwrap();
    }
    let mut building = BuildingDoc::new("compat-park", "b1", 0).unwrap();
    building
        .upsert(&Door {
            id: "d-lobby".into(),
            name: "Lobby".into(),
            building_id: "b1".into(),
            anti_passback: false,
            direction: DoorDirection::Both,
            area_id: None,
            unlock_duration_ms: 3000,
            status: DoorStatus::Enabled,
        })
        .unwrap();
    (dir, building)
}

fn reason(dir: &ParkDirectory, building: &BuildingDoc, card: &str, now: Timestamp) -> ReasonCode {
    let index = AccessIndex::build(&dir.snapshot().unwrap(), [&building.snapshot().unwrap()]);
    index
        .decide(
            &key().present(CredentialKind::Card, card),
            "d-lobby",
            now,
            &NoPresence,
        )
        .reason
}

#[test]
fn decisions_follow_the_edits_a_javascript_web_app_makes() {
    require_node();
    let scratch = Scratch::new("js-edit");
    let (mut dir, building) = fixture();
    let october = at("2026-10-08", 10);
    assert_eq!(
        reason(&dir, &building, "CARD-SUSPEND", october),
        ReasonCode::Granted
    );
    assert_eq!(
        reason(&dir, &building, "JS-CARD-0001", at("2026-06-15", 10)),
        ReasonCode::UnknownCredential
    );

    let input = scratch.0.join("directory.automerge");
    let output = scratch.0.join("edited.automerge");
    std::fs::write(&input, dir.save()).unwrap();
    node("edit-directory.mjs", &[&input, &output], &[&key().to_hex()]);
    let mut edited = ParkDirectory::load(&std::fs::read(&output).unwrap()).unwrap();

    // The card number the old app wrote in clear is refused, so it opens nothing, and no
    // message about it repeats the number.
    let snap = edited.snapshot().unwrap();
    assert_eq!(snap.rejected.len(), 1, "{:?}", snap.rejected);
    assert_eq!(
        (snap.rejected[0].collection, snap.rejected[0].id.as_str()),
        (Collection::Credentials, "js-legacy-card")
    );
    assert!(
        snap.rejected[0].reason.contains("in clear")
            && !snap.rejected[0].reason.contains("JS-LEGACY"),
        "{}",
        snap.rejected[0].reason
    );
    let june = at("2026-06-15", 10);
    assert_eq!(
        reason(&edited, &building, "JS-LEGACY-0002", june),
        ReasonCode::UnknownCredential
    );
    // An edge with the key rewrites it, and the phone goes.
    assert_eq!(
        edited.digest_clear_values(&key(), None).unwrap(),
        ClearValues {
            credentials: 1,
            phones: 1
        }
    );
    edited.commit("edge: digest values left in clear", june);
    assert_eq!(
        reason(&edited, &building, "JS-LEGACY-0002", june),
        ReasonCode::Granted
    );
    assert_eq!(
        edited.digest_clear_values(&key(), None).unwrap(),
        ClearValues::default()
    );

    // JavaScript's strings are Text and its whole numbers Int, and Rust reads both.
    let snap = edited.snapshot().unwrap();
    assert!(snap.rejected.is_empty(), "{:?}", snap.rejected);
    // Node's digest is the one Rust computes, with the suffix Node wrote.
    assert_eq!(
        snap.credentials["js-card-1"].digest,
        key().present(CredentialKind::Card, "JS-CARD-0001").digest
    );
    assert_eq!(snap.credentials["js-card-1"].suffix, "0001");
    assert_eq!(snap.credentials["js-legacy-card"].suffix, "0002");
    let am = edited.automerge();
    let (_, creds) = am.get(ROOT, "credentials").unwrap().unwrap();
    let (_, card) = am.get(&creds, "js-card-1").unwrap().unwrap();
    let (status, _) = am.get(&card, "status").unwrap().unwrap();
    assert!(matches!(status, Value::Object(ObjType::Text)), "{status:?}");
    let (valid_from, _) = am.get(&card, "valid_from").unwrap().unwrap();
    assert!(
        matches!(valid_from, Value::Scalar(ref s) if s.is_int()),
        "{valid_from:?}"
    );

    assert_eq!(snap.people["js-person-1"].name, "王芳");
    assert_eq!(snap.people["js-person-1"].access_group_ids, ["grp-lobby"]);
    assert_eq!(
        snap.credentials["js-card-1"].valid_from,
        Some(at("2026-06-01", 0))
    );
    assert_eq!(
        snap.credentials["card-to-suspend"].status,
        CredentialStatus::Suspended
    );
    assert_eq!(snap.leases["lease-1"].valid_to, at("2026-07-01", 0));

    // The new card opens the door from June; the suspended one is denied; the lease now ends
    // on 1 July, so in October nobody of the enterprise gets in.
    assert_eq!(
        reason(&edited, &building, "JS-CARD-0001", june),
        ReasonCode::Granted
    );
    assert_eq!(
        reason(&edited, &building, "JS-CARD-0001", at("2026-05-15", 10)),
        ReasonCode::CredentialNotYetValid
    );
    assert_eq!(
        reason(&edited, &building, "CARD-SUSPEND", june),
        ReasonCode::CredentialSuspended
    );
    assert_eq!(
        reason(&edited, &building, "CARD-KEEP", june),
        ReasonCode::Granted
    );
    assert_eq!(
        reason(&edited, &building, "CARD-KEEP", october),
        ReasonCode::NoActiveLease
    );

    // Rust edits what JavaScript wrote, and the Rust replica merges the JavaScript changes.
    edited.reactivate_credential("card-to-suspend").unwrap();
    assert_eq!(
        reason(&edited, &building, "CARD-SUSPEND", june),
        ReasonCode::Granted
    );
    dir.merge(&mut edited).unwrap();
    assert_eq!(dir.heads(), edited.heads());
    assert_eq!(dir.snapshot().unwrap(), edited.snapshot().unwrap());
}

#[test]
fn javascript_reads_a_rust_saved_directory_as_immutable_strings_and_numbers() {
    require_node();
    let scratch = Scratch::new("js-read");
    let (mut dir, _) = fixture();
    let file = scratch.0.join("directory.automerge");
    std::fs::write(&file, dir.save()).unwrap();
    let field = |path: &[&str]| node("print-field.mjs", &[&file], path).trim().to_string();

    assert_eq!(
        field(&["people", "p-1", "name"]),
        r#"{"type":"object","immutableString":true,"value":"Li Wei"}"#
    );
    assert_eq!(
        field(&["credentials", "card-keep", "status"]),
        r#"{"type":"object","immutableString":true,"value":"active"}"#
    );
    assert_eq!(
        field(&["leases", "lease-1", "valid_to"]),
        format!(
            r#"{{"type":"number","immutableString":false,"value":{}}}"#,
            at("2027-01-01", 0)
        )
    );
    assert_eq!(
        field(&["leases", "lease-1", "monthly_rent_fen"]),
        r#"{"type":"number","immutableString":false,"value":2500000}"#
    );
    assert_eq!(
        field(&["people", "p-1", "access_group_ids"]),
        r#"{"type":"array","immutableString":false,"value":["grp-lobby"]}"#
    );
    assert_eq!(
        field(&["schema_version"]),
        r#"{"type":"number","immutableString":false,"value":2}"#
    );
    assert_eq!(
        field(&["credentials", "card-keep", "suffix"]),
        r#"{"type":"object","immutableString":true,"value":"KEEP"}"#
    );
    assert_eq!(
        field(&["doc_type"]),
        r#"{"type":"object","immutableString":true,"value":"park_directory"}"#
    );
}

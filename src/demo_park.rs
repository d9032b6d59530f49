//! The demo's park: documents that know the simulated door controllers' cards and the
//! simulated cameras' pass holders, so that the demo shows real decisions (most cards open,
//! unknown and expired ones do not, blocked plates are held, visitors pay). The cards, QR
//! codes and PINs are stored as digests under the demo park's credential key, as in a real
//! park; the simulated readers send them in clear, as real readers do.

use std::path::Path;

use device_sim::contract::CredentialKind as SimKind;
use device_sim::{CredentialConfig, CredentialRole, PlateConfig, PlateRole};
use park_model::building::{Door, DoorDirection, DoorStatus};
use park_model::directory::{
    AccessGroup, Credential, CredentialKey, CredentialKind, Enterprise, EnterpriseKind,
    EnterpriseStatus, Interval, Lease, LeaseStatus, Person, PersonStatus, Week, WeeklySchedule,
};
use park_model::parking::{
    BlockedPlate, Lane, LaneDirection, Lot, Pass, PassKind, PassStatus, Tariff,
};
use park_model::{BuildingDoc, ParkDirectory, ParkingDoc};

const DAY: i64 = 86_400_000_000;

pub const DOORS: [&str; 3] = ["lobby", "lab-1", "server-room"];
pub const LOT: &str = "p1";
pub const LANES: [(&str, LaneDirection); 2] =
    [("p1-in", LaneDirection::In), ("p1-out", LaneDirection::Out)];

/// The demo park's credential key in `file`: made on the first run, read on the next ones (a
/// demo kept with `--data-dir` has documents digested under it).
pub fn credential_key(file: &Path) -> anyhow::Result<CredentialKey> {
    if file.exists() {
        edge_node::park::read_credential_key_file(file)
    } else {
        edge_node::park::generate_credential_key_file(file)
    }
}

/// Writes `directory.automerge`, `building-<building>.automerge` and `parking.automerge`, the
/// credentials digested under `key`.
pub fn write(
    dir: &Path,
    building: &str,
    now: i64,
    creds: &[CredentialConfig],
    plates: &[PlateConfig],
    key: &CredentialKey,
) -> anyhow::Result<()> {
    let mut d = ParkDirectory::new("demo-park", 480, now)?;
    d.upsert(&WeeklySchedule {
        id: "always".into(),
        name: "Round the clock".into(),
        weekdays: Week::every_day(&[Interval {
            start_minute: 0,
            end_minute: 1440,
        }]),
        holiday_calendar_id: None,
        allow_on_holidays: true,
    })?;
    d.upsert(&AccessGroup {
        id: "staff".into(),
        name: "Staff".into(),
        door_ids: DOORS.iter().map(|s| s.to_string()).collect(),
        schedule_id: Some("always".into()),
    })?;
    d.upsert(&AccessGroup {
        id: "visitors".into(),
        name: "Visitors".into(),
        door_ids: vec!["lobby".into()],
        schedule_id: Some("always".into()),
    })?;
    d.upsert(&Enterprise {
        id: "acme".into(),
        name: "Acme Robotics".into(),
        status: EnterpriseStatus::Active,
        kind: EnterpriseKind::Tenant,
    })?;
    d.upsert(&Lease {
        id: "lease-acme".into(),
        enterprise_id: "acme".into(),
        space_ids: vec![],
        valid_from: now - 365 * DAY,
        valid_to: now + 365 * DAY,
        status: LeaseStatus::Active,
        monthly_rent_fen: 8_000_000,
        property_fee_fen: 400_000,
        currency: "CNY".into(),
    })?;
    for (i, c) in creds.iter().enumerate() {
        let (group, valid_to) = match c.role {
            CredentialRole::Unknown => continue,
            CredentialRole::Staff => ("staff", None),
            CredentialRole::Visitor => ("visitors", Some(now + DAY)),
            CredentialRole::Expired => ("staff", Some(now - DAY)),
        };
        let person = format!("person-{i:03}");
        d.upsert(&Person {
            id: person.clone(),
            name: format!("Person {i}"),
            enterprise_id: "acme".into(),
            status: PersonStatus::Active,
            access_group_ids: vec![group.into()],
        })?;
        let kind = match c.kind {
            SimKind::Card => CredentialKind::Card,
            SimKind::Qr => CredentialKind::Qr,
            SimKind::Pin => CredentialKind::Pin,
            SimKind::Plate => CredentialKind::Plate,
        };
        d.upsert(&Credential {
            valid_to,
            ..Credential::from_secret(key, &format!("cred-{i:03}"), &person, kind, &c.value)?
        })?;
    }
    d.commit("demo directory", now);

    let mut b = BuildingDoc::new("demo-park", building, now)?;
    for door in DOORS {
        b.upsert(&Door {
            id: door.into(),
            name: door.replace('-', " "),
            building_id: building.into(),
            anti_passback: false,
            direction: DoorDirection::Both,
            area_id: None,
            unlock_duration_ms: 5000,
            status: DoorStatus::Enabled,
        })?;
    }
    b.commit("demo doors", now);

    let mut p = ParkingDoc::new("demo-park", 480, now)?;
    p.upsert(&Tariff {
        id: "standard".into(),
        currency: "CNY".into(),
        free_minutes: 15,
        period_minutes: 30,
        day_rate_fen: 300,
        night_start_minute: 22 * 60,
        night_end_minute: 7 * 60,
        night_rate_fen: 100,
        daily_cap_fen: Some(3000),
        lost_ticket_fen: 6000,
    })?;
    p.upsert(&Lot {
        id: LOT.into(),
        name: "North car park".into(),
        capacity: 150,
        tariff_id: Some("standard".into()),
    })?;
    for (lane, direction) in LANES {
        p.upsert(&Lane {
            id: lane.into(),
            lot_id: LOT.into(),
            direction,
            name: lane.into(),
        })?;
    }
    for (i, plate) in plates.iter().enumerate() {
        match plate.role {
            PlateRole::MonthlyPass => p.upsert(&Pass {
                id: format!("pass-{i:03}"),
                plate: plate.plate.clone(),
                kind: PassKind::Monthly,
                lot_ids: vec![LOT.into()],
                valid_from: now - 30 * DAY,
                valid_to: now + 335 * DAY,
                status: PassStatus::Active,
                enterprise_id: None,
            })?,
            PlateRole::Blocked => p.upsert(&BlockedPlate {
                id: plate.plate.clone(),
                reason: "unpaid fees".into(),
            })?,
        }
    }
    p.commit("demo car park", now);

    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("directory.automerge"), d.save())?;
    std::fs::write(dir.join(format!("building-{building}.automerge")), b.save())?;
    std::fs::write(dir.join("parking.automerge"), p.save())?;
    Ok(())
}

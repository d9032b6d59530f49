//! Deterministic sample parks for tests, benchmarks and the demo: a park directory with a given
//! number of credentials and a building with a given number of doors, and a parking document.
//! The same arguments always give the same contents (not the same automerge actor ids: each
//! build is a new document history).
//!
//! Entities are written in batches of [`BATCH`] per commit: one commit per entity is many times
//! slower (see DEPENDENCIES.md). This module does no IO and reads no clock: the documents'
//! creation time is the fixed [`SAMPLE_START`]. Credentials are digested under the key the
//! caller gives, which the edge that decides from the sample must also have; the values in
//! clear are returned beside the documents, for benchmarks and tests to present at readers.

use crate::access::AccessIndex;
use crate::building::{BuildingDoc, DEFAULT_UNLOCK_DURATION_MS, Door, DoorDirection, DoorStatus};
use crate::directory::{
    AccessGroup, Credential, CredentialKey, CredentialKind, CredentialStatus, Enterprise,
    EnterpriseKind, EnterpriseStatus, HolidayCalendar, Interval, Lease, LeaseStatus, ParkDirectory,
    Person, PersonStatus, Space, SpaceKind, SpaceState, Week, WeeklySchedule,
};
use crate::document::{DocError, Entity};
use crate::parking::{
    Allowance, BlockedPlate, Lane, LaneDirection, Lot, ParkingDoc, Pass, PassKind, PassStatus,
    Tariff,
};
use crate::time::{MICROS_PER_DAY, Timestamp, local_timestamp};

/// Entities written per commit.
pub const BATCH: usize = 1000;

/// The park's UTC offset in the samples (China).
pub const SAMPLE_UTC_OFFSET: i32 = 480;

/// When the sample documents are created: 2026-01-01 00:00 in the park.
pub const SAMPLE_START: Timestamp = 1_767_196_800_000_000;

/// A weekday in the sample park during office hours, when most sample credentials open most
/// of their doors: Thursday 2026-10-08, 10:00.
pub const SAMPLE_WORKDAY_MORNING: Timestamp = 1_791_424_800_000_000;

/// A small, fast, deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct SampleRng(u64);

impl SampleRng {
    pub fn new(seed: u64) -> SampleRng {
        SampleRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A sample park: its directory, one building, and what a benchmark needs to pick reads.
#[derive(Debug)]
pub struct SamplePark {
    pub directory: ParkDirectory,
    pub building: BuildingDoc,
    /// Every credential's kind and value in clear (what a reader sends), in id order. The
    /// documents hold only their digests.
    pub credentials: Vec<(CredentialKind, String)>,
    /// Every door id, in order.
    pub doors: Vec<String>,
}

impl SamplePark {
    /// An access index over the sample's directory and building.
    pub fn index(&self) -> Result<AccessIndex, DocError> {
        Ok(AccessIndex::build(
            &self.directory.snapshot()?,
            [&self.building.snapshot()?],
        ))
    }
}

fn write_batched<E: Entity>(
    doc: &mut crate::Document<E::Schema>,
    items: impl IntoIterator<Item = E>,
    what: &str,
) -> Result<(), DocError> {
    let mut n = 0;
    for item in items {
        doc.upsert(&item)?;
        n += 1;
        if n % BATCH == 0 {
            doc.commit(&format!("import {what}"), SAMPLE_START);
        }
    }
    doc.commit(&format!("import {what}"), SAMPLE_START);
    Ok(())
}

/// The 2026 public holidays of mainland China (the days off, not the make-up working days).
pub const SAMPLE_HOLIDAYS: &[&str] = &[
    "2026-01-01",
    "2026-01-02",
    "2026-01-03",
    "2026-02-15",
    "2026-02-16",
    "2026-02-17",
    "2026-02-18",
    "2026-02-19",
    "2026-02-20",
    "2026-02-21",
    "2026-02-22",
    "2026-02-23",
    "2026-04-04",
    "2026-04-05",
    "2026-04-06",
    "2026-05-01",
    "2026-05-02",
    "2026-05-03",
    "2026-05-04",
    "2026-05-05",
    "2026-06-19",
    "2026-06-20",
    "2026-06-21",
    "2026-09-25",
    "2026-09-26",
    "2026-09-27",
    "2026-10-01",
    "2026-10-02",
    "2026-10-03",
    "2026-10-04",
    "2026-10-05",
    "2026-10-06",
    "2026-10-07",
];

/// Builds a park with `n_credentials` credentials, digested under `key`, and a building `b1`
/// with `n_doors` doors.
///
/// About one enterprise per 200 credentials (plus the operator), one person per 1.25
/// credentials, one access group per 10 doors (each with the lobby door 0), office hours or
/// round the clock, 2026 holidays. Most credentials are active cards; a few are QR codes, PINs
/// and plates, suspended, lost, or time-limited; a few enterprises are suspended or have no
/// lease in force, so that decisions of every kind occur. Doors `100k` and `100k + 1` (k ≥ 1)
/// are an anti-passback in/out pair of area `area-k`; about 1% of doors are disabled.
pub fn sample_directory(
    n_credentials: usize,
    n_doors: usize,
    seed: u64,
    key: &CredentialKey,
) -> Result<SamplePark, DocError> {
    let mut rng = SampleRng::new(seed);
    let mut directory = ParkDirectory::new("sample-park", SAMPLE_UTC_OFFSET, SAMPLE_START)?;
    let mut building = BuildingDoc::new("sample-park", "b1", SAMPLE_START)?;
    let n_doors = n_doors.max(1);
    let n_enterprises = (n_credentials / 200).max(1);
    let n_people = (n_credentials * 4).div_ceil(5).max(1);
    let n_groups = n_doors.div_ceil(10);
    let far_future = SAMPLE_START + 20 * 365 * MICROS_PER_DAY;
    let local = |date: &str| local_timestamp(date, 0, 0, SAMPLE_UTC_OFFSET).expect("a valid date");

    let doors: Vec<String> = (0..n_doors).map(|i| format!("door-{i:05}")).collect();
    write_batched(
        &mut building,
        doors.iter().enumerate().map(|(i, id)| {
            let paired = i % 100 < 2 && i > 0;
            Door {
                id: id.clone(),
                name: format!("Door {i}"),
                building_id: "b1".into(),
                anti_passback: paired,
                direction: match (paired, i % 2) {
                    (true, 0) => DoorDirection::In,
                    (true, _) => DoorDirection::Out,
                    _ => DoorDirection::Both,
                },
                area_id: paired.then(|| format!("area-{}", i / 100)),
                unlock_duration_ms: DEFAULT_UNLOCK_DURATION_MS,
                status: if rng.percent(1) {
                    DoorStatus::Disabled
                } else {
                    DoorStatus::Enabled
                },
            }
        }),
        "doors",
    )?;

    directory.upsert(&HolidayCalendar {
        id: "cn-2026".into(),
        name: "China 2026".into(),
        dates: SAMPLE_HOLIDAYS.iter().map(|d| d.to_string()).collect(),
    })?;
    directory.upsert(&WeeklySchedule {
        id: "office-hours".into(),
        name: "Office hours".into(),
        weekdays: Week::weekdays(&[Interval::new(7 * 60, 20 * 60)]),
        holiday_calendar_id: Some("cn-2026".into()),
        allow_on_holidays: false,
    })?;
    directory.upsert(&WeeklySchedule {
        id: "always".into(),
        name: "Round the clock".into(),
        weekdays: Week::every_day(&[Interval::new(0, 1440)]),
        holiday_calendar_id: None,
        allow_on_holidays: true,
    })?;
    write_batched(
        &mut directory,
        (0..n_groups).map(|g| {
            let mut door_ids = vec![doors[0].clone()];
            door_ids.extend(doors.chunks(10).nth(g).unwrap_or_default().iter().cloned());
            door_ids.dedup();
            AccessGroup {
                id: format!("group-{g:04}"),
                name: format!("Group {g}"),
                door_ids,
                schedule_id: Some(if g % 4 == 3 { "always" } else { "office-hours" }.into()),
            }
        }),
        "access groups",
    )?;

    let mut enterprises = vec![Enterprise {
        id: "ent-operator".into(),
        name: "Park operator".into(),
        status: EnterpriseStatus::Active,
        kind: EnterpriseKind::Operator,
    }];
    let mut spaces = Vec::new();
    let mut leases = Vec::new();
    for e in 0..n_enterprises {
        let id = format!("ent-{e:05}");
        enterprises.push(Enterprise {
            id: id.clone(),
            name: format!("Enterprise {e}"),
            status: if rng.percent(2) {
                EnterpriseStatus::Suspended
            } else {
                EnterpriseStatus::Active
            },
            kind: EnterpriseKind::Tenant,
        });
        spaces.push(Space {
            id: format!("space-{e:05}"),
            building_id: "b1".into(),
            floor: (e % 20) as i32 + 1,
            area_m2: 80.0 + (rng.below(4000) as f64) / 10.0,
            name: format!("Unit {e}"),
            kind: SpaceKind::Room,
            state: SpaceState::Leased,
        });
        let expired = rng.percent(5);
        leases.push(Lease {
            id: format!("lease-{e:05}"),
            enterprise_id: id,
            space_ids: vec![format!("space-{e:05}")],
            valid_from: local("2024-01-01"),
            valid_to: if expired {
                local("2026-01-01")
            } else {
                far_future
            },
            status: LeaseStatus::Active,
            monthly_rent_fen: 1_000_000 + rng.below(5_000_000) as i64,
            property_fee_fen: 100_000 + rng.below(200_000) as i64,
            currency: "CNY".into(),
        });
    }
    write_batched(&mut directory, enterprises, "enterprises")?;
    write_batched(&mut directory, spaces, "spaces")?;
    write_batched(&mut directory, leases, "leases")?;

    let mut people = Vec::with_capacity(n_people);
    for p in 0..n_people {
        let enterprise_id = if p % 50 == 0 {
            "ent-operator".to_string()
        } else {
            format!("ent-{:05}", p % n_enterprises)
        };
        let mut groups = vec![format!("group-{:04}", rng.below(n_groups as u64))];
        if rng.percent(30) {
            groups.push(format!("group-{:04}", rng.below(n_groups as u64)));
            groups.dedup();
        }
        people.push(Person {
            id: format!("person-{p:06}"),
            name: format!("Person {p}"),
            enterprise_id,
            status: if rng.percent(1) {
                PersonStatus::Suspended
            } else {
                PersonStatus::Active
            },
            access_group_ids: groups,
        });
    }
    write_batched(&mut directory, people, "people")?;

    let mut credentials = Vec::with_capacity(n_credentials);
    let mut values = Vec::with_capacity(n_credentials);
    for c in 0..n_credentials {
        let roll = rng.below(100);
        let (kind, value) = match roll {
            0..80 => (
                CredentialKind::Card,
                format!("{:08X}{c:06X}", rng.next_u64() as u32),
            ),
            80..90 => (
                CredentialKind::Qr,
                format!("QR-{:016x}-{c}", rng.next_u64()),
            ),
            90..95 => (
                CredentialKind::Pin,
                format!("{:06}{c:06}", rng.below(1_000_000)),
            ),
            _ => (CredentialKind::Plate, format!("粤B{c:06}")),
        };
        let status = match rng.below(100) {
            0..2 => CredentialStatus::Suspended,
            2 => CredentialStatus::Lost,
            _ => CredentialStatus::Active,
        };
        let limited = rng.percent(5);
        let id = format!("cred-{c:07}");
        let person = format!("person-{:06}", c % n_people);
        credentials.push(Credential {
            status,
            valid_from: limited.then(|| local("2026-01-01")),
            valid_to: limited.then(|| local("2026-07-01")),
            ..Credential::from_secret(key, &id, &person, kind, &value)?
        });
        values.push((kind, value));
    }
    write_batched(&mut directory, credentials, "credentials")?;

    Ok(SamplePark {
        directory,
        building,
        credentials: values,
        doors,
    })
}

/// A sample parking document: two lots with entry and exit lanes, a standard tariff, and
/// `n_passes` passes of every kind for enterprises `ent-00000..`.
pub fn sample_parking(n_passes: usize, seed: u64) -> Result<ParkingDoc, DocError> {
    let mut rng = SampleRng::new(seed);
    let mut doc = ParkingDoc::new("sample-park", SAMPLE_UTC_OFFSET, SAMPLE_START)?;
    doc.upsert(&Tariff {
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
    for (lot, capacity) in [("lot-north", 400u32), ("lot-south", 150)] {
        doc.upsert(&Lot {
            id: lot.into(),
            name: lot.into(),
            capacity,
            tariff_id: Some("standard".into()),
        })?;
        for (suffix, direction) in [("in", LaneDirection::In), ("out", LaneDirection::Out)] {
            doc.upsert(&Lane {
                id: format!("{lot}-{suffix}"),
                lot_id: lot.into(),
                direction,
                name: format!("{lot} {suffix}"),
            })?;
        }
    }
    for e in 0..5 {
        doc.upsert(&Allowance {
            id: format!("allowance-{e}"),
            enterprise_id: format!("ent-{e:05}"),
            lot_id: "lot-north".into(),
            quota: 5 + e,
        })?;
    }
    doc.upsert(&BlockedPlate {
        id: "粤B99999".into(),
        reason: "unpaid fees".into(),
    })?;
    let passes = (0..n_passes).map(|i| {
        let kind = match i % 10 {
            0..6 => PassKind::Monthly,
            6..9 => PassKind::EnterpriseAllowance,
            _ => PassKind::Visitor,
        };
        Pass {
            id: format!("pass-{i:06}"),
            plate: format!("粤A{i:05}"),
            kind,
            lot_ids: vec![
                if rng.percent(70) {
                    "lot-north"
                } else {
                    "lot-south"
                }
                .into(),
            ],
            valid_from: SAMPLE_START,
            valid_to: SAMPLE_START + 365 * MICROS_PER_DAY,
            status: if rng.percent(3) {
                PassStatus::Suspended
            } else {
                PassStatus::Active
            },
            enterprise_id: (kind != PassKind::Monthly).then(|| format!("ent-{:05}", i % 5)),
        }
    });
    write_batched(&mut doc, passes, "passes")?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{NoPresence, ReasonCode};
    use crate::time::{LocalTime, Weekday, format_date};

    fn key() -> CredentialKey {
        CredentialKey::new(&[11; 32])
    }

    #[test]
    fn the_sample_constants_are_the_instants_they_claim() {
        let start = LocalTime::at(SAMPLE_START, SAMPLE_UTC_OFFSET);
        assert_eq!(
            (format_date(start.day).as_str(), start.minute_of_day),
            ("2026-01-01", 0)
        );
        let morning = LocalTime::at(SAMPLE_WORKDAY_MORNING, SAMPLE_UTC_OFFSET);
        assert_eq!(format_date(morning.day), "2026-10-08");
        assert_eq!(
            (morning.weekday, morning.minute_of_day),
            (Weekday::Thu, 600)
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_park() {
        let a = sample_directory(300, 20, 7, &key()).unwrap();
        let b = sample_directory(300, 20, 7, &key()).unwrap();
        assert_eq!(
            a.directory.snapshot().unwrap(),
            b.directory.snapshot().unwrap()
        );
        assert_eq!(a.credentials, b.credentials);
        let c = sample_directory(300, 20, 8, &key()).unwrap();
        assert_ne!(a.credentials, c.credentials);
        // Another key: the same values, other digests.
        let d = sample_directory(300, 20, 7, &CredentialKey::new(&[12; 32])).unwrap();
        assert_eq!(a.credentials, d.credentials);
        let (a, d) = (
            a.directory.snapshot().unwrap(),
            d.directory.snapshot().unwrap(),
        );
        assert_ne!(
            a.credentials["cred-0000000"].digest,
            d.credentials["cred-0000000"].digest
        );
    }

    #[test]
    fn a_sample_park_produces_grants_and_denials_of_several_kinds() {
        let park = sample_directory(2000, 50, 1, &key()).unwrap();
        let snap = park.directory.snapshot().unwrap();
        assert!(snap.rejected.is_empty(), "{:?}", snap.rejected);
        assert_eq!(snap.credentials.len(), 2000);
        let index = park.index().unwrap();
        assert_eq!(index.credential_count(), 2000);
        assert_eq!(index.door_count(), 50);
        let mut reasons = std::collections::HashSet::new();
        for (i, (kind, value)) in park.credentials.iter().enumerate() {
            let door = &park.doors[i % park.doors.len()];
            let read = key().present(*kind, value);
            let d = index.decide(&read, door, SAMPLE_WORKDAY_MORNING, &NoPresence);
            reasons.insert(d.reason);
        }
        for r in [
            ReasonCode::Granted,
            ReasonCode::NoAccessToDoor,
            ReasonCode::CredentialSuspended,
            ReasonCode::CredentialExpired,
        ] {
            assert!(reasons.contains(&r), "{r} missing from {reasons:?}");
        }
    }

    #[test]
    fn the_sample_parking_document_is_valid() {
        let doc = sample_parking(50, 3).unwrap();
        let snap = doc.snapshot().unwrap();
        assert!(snap.rejected.is_empty(), "{:?}", snap.rejected);
        assert_eq!(snap.passes.len(), 50);
        assert_eq!(snap.lanes.len(), 4);
    }
}

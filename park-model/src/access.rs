//! Door access decisions: an in-memory [`AccessIndex`] derived from the park directory and the
//! building documents, and [`AccessIndex::decide`], which answers one credential read at one
//! door at one instant.
//!
//! The chain checked, in this order (the first failure is the reason given):
//! door known and enabled → credential known (by kind and keyed digest), active, within its
//! validity → person known and active → enterprise known and active → for a tenant, a lease in
//! force at `now` (the operator's own staff need none) → an access group of the person that
//! includes the door → that group's schedule allows the park-local time (holidays deny all day
//! unless the schedule allows holidays) → anti-passback, where the door asks for it.
//!
//! Credentials are matched by the keyed digest of the value a reader sent ([`Presented`], from
//! [`crate::directory::CredentialKey::present`]): the index holds no value in clear, and the
//! caller digests each read once, before it decides.
//!
//! Several credentials may share a kind and value (a re-registered card). Revocation wins: if
//! any of them is suspended or lost, the read is denied with that reason. Otherwise the first
//! (by id) that grants is used, or else the first one's denial.
//!
//! A reference to something unknown (a group's schedule, a schedule's holiday calendar) denies:
//! the index fails closed. Entities that the documents hold but cannot read are not in the
//! index at all, which also denies.
//!
//! Anti-passback state is not a document: it changes with every pass. The caller keeps it and
//! passes it in as a [`PresenceLookup`]; a granted decision returns the [`PresenceUpdate`] to
//! apply once the door was actually used. An `in` door denies a person already inside its area;
//! an `out` door denies one known to be outside; unknown state allows (so a lost state never
//! locks people in or out). `both` doors are not checked.
//!
//! The index is updated incrementally (`upsert_*`, `remove_*`, or [`AccessIndex::refresh_directory`]
//! with a [`ChangeSet`]), never rebuilt per decision. `decide` allocates nothing: ids in the
//! decision are shared `Arc<str>` from the index.
//!
//! This module does no IO and reads no clock.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::building::{Building, BuildingDoc, Door, DoorDirection, DoorStatus};
use crate::directory::{
    AccessGroup, Credential, CredentialKind, CredentialStatus, Directory, Enterprise,
    EnterpriseKind, EnterpriseStatus, HolidayCalendar, Interval, Lease, LeaseStatus, ParkDirectory,
    Person, PersonStatus, Presented, WeeklySchedule,
};
use crate::document::{ChangeSet, DocError, Entity, Rejected, Schema};
use crate::time::{LocalTime, Timestamp};

/// Why access was granted or denied. `as_str` is the stable code for logs and APIs; `sentence`
/// is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    Granted,
    UnknownDoor,
    DoorDisabled,
    UnknownCredential,
    CredentialSuspended,
    CredentialLost,
    CredentialNotYetValid,
    CredentialExpired,
    UnknownPerson,
    PersonSuspended,
    UnknownEnterprise,
    EnterpriseSuspended,
    NoActiveLease,
    NoAccessToDoor,
    UnknownSchedule,
    Holiday,
    OutsideSchedule,
    AntiPassback,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 18] = [
        ReasonCode::Granted,
        ReasonCode::UnknownDoor,
        ReasonCode::DoorDisabled,
        ReasonCode::UnknownCredential,
        ReasonCode::CredentialSuspended,
        ReasonCode::CredentialLost,
        ReasonCode::CredentialNotYetValid,
        ReasonCode::CredentialExpired,
        ReasonCode::UnknownPerson,
        ReasonCode::PersonSuspended,
        ReasonCode::UnknownEnterprise,
        ReasonCode::EnterpriseSuspended,
        ReasonCode::NoActiveLease,
        ReasonCode::NoAccessToDoor,
        ReasonCode::UnknownSchedule,
        ReasonCode::Holiday,
        ReasonCode::OutsideSchedule,
        ReasonCode::AntiPassback,
    ];

    /// The stable snake_case code, e.g. `credential_suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Granted => "granted",
            ReasonCode::UnknownDoor => "unknown_door",
            ReasonCode::DoorDisabled => "door_disabled",
            ReasonCode::UnknownCredential => "unknown_credential",
            ReasonCode::CredentialSuspended => "credential_suspended",
            ReasonCode::CredentialLost => "credential_lost",
            ReasonCode::CredentialNotYetValid => "credential_not_yet_valid",
            ReasonCode::CredentialExpired => "credential_expired",
            ReasonCode::UnknownPerson => "unknown_person",
            ReasonCode::PersonSuspended => "person_suspended",
            ReasonCode::UnknownEnterprise => "unknown_enterprise",
            ReasonCode::EnterpriseSuspended => "enterprise_suspended",
            ReasonCode::NoActiveLease => "no_active_lease",
            ReasonCode::NoAccessToDoor => "no_access_to_door",
            ReasonCode::UnknownSchedule => "unknown_schedule",
            ReasonCode::Holiday => "holiday",
            ReasonCode::OutsideSchedule => "outside_schedule",
            ReasonCode::AntiPassback => "anti_passback",
        }
    }

    /// A sentence a guard or the holder can read.
    pub fn sentence(self) -> &'static str {
        match self {
            ReasonCode::Granted => "Access granted.",
            ReasonCode::UnknownDoor => "This door is not known to the building.",
            ReasonCode::DoorDisabled => "This door is disabled.",
            ReasonCode::UnknownCredential => "This card, code or plate is not registered.",
            ReasonCode::CredentialSuspended => "This credential has been suspended.",
            ReasonCode::CredentialLost => "This credential was reported lost.",
            ReasonCode::CredentialNotYetValid => "This credential is not valid yet.",
            ReasonCode::CredentialExpired => "This credential has expired.",
            ReasonCode::UnknownPerson => "The holder of this credential is not registered.",
            ReasonCode::PersonSuspended => "The holder's access has been suspended.",
            ReasonCode::UnknownEnterprise => "The holder's company is not registered.",
            ReasonCode::EnterpriseSuspended => "The holder's company has been suspended.",
            ReasonCode::NoActiveLease => "The holder's company has no lease in force.",
            ReasonCode::NoAccessToDoor => "The holder may not use this door.",
            ReasonCode::UnknownSchedule => {
                "The schedule for this door, or its holiday calendar, is not known."
            }
            ReasonCode::Holiday => "This door is closed to the holder on holidays.",
            ReasonCode::OutsideSchedule => "The holder may not use this door at this time.",
            ReasonCode::AntiPassback => {
                "The holder has already passed this way and must pass the other way first."
            }
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a person is with respect to an anti-passback area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    Inside,
    Outside,
}

/// The anti-passback state the caller keeps: where a person is for an area, if known.
pub trait PresenceLookup {
    fn presence(&self, person_id: &str, area_id: &str) -> Option<Presence>;
}

/// No anti-passback state: every person's presence is unknown.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPresence;

impl PresenceLookup for NoPresence {
    fn presence(&self, _person_id: &str, _area_id: &str) -> Option<Presence> {
        None
    }
}

/// Presence by person, then area.
impl PresenceLookup for HashMap<String, HashMap<String, Presence>> {
    fn presence(&self, person_id: &str, area_id: &str) -> Option<Presence> {
        self.get(person_id)?.get(area_id).copied()
    }
}

/// A simple owned anti-passback state for an edge node or a test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceMap(HashMap<String, HashMap<String, Presence>>);

impl PresenceMap {
    /// Records a pass (call when the door reports it was used).
    pub fn apply(&mut self, update: &PresenceUpdate) {
        self.set(&update.person_id, &update.area_id, update.presence);
    }

    pub fn set(&mut self, person_id: &str, area_id: &str, presence: Presence) {
        self.0
            .entry(person_id.to_string())
            .or_default()
            .insert(area_id.to_string(), presence);
    }

    /// Puts one person's state in one area back to `before` (none: unknown), for a decision
    /// whose record could not be written.
    pub fn restore(&mut self, person_id: &str, area_id: &str, before: Option<Presence>) {
        match before {
            Some(p) => self.set(person_id, area_id, p),
            None => {
                if let Some(areas) = self.0.get_mut(person_id) {
                    areas.remove(area_id);
                    if areas.is_empty() {
                        self.0.remove(person_id);
                    }
                }
            }
        }
    }

    /// Forgets a person's state in every area (e.g. a guard's reset).
    pub fn forget(&mut self, person_id: &str) {
        self.0.remove(person_id);
    }
}

impl PresenceLookup for PresenceMap {
    fn presence(&self, person_id: &str, area_id: &str) -> Option<Presence> {
        self.0.presence(person_id, area_id)
    }
}

/// The anti-passback state after a granted pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub person_id: Arc<str>,
    pub area_id: Arc<str>,
    pub presence: Presence,
}

/// The answer to one credential read at one door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDecision {
    pub granted: bool,
    pub reason: ReasonCode,
    /// The credential matched, when one was.
    pub credential: Option<Arc<str>>,
    /// Its holder, when known.
    pub person: Option<Arc<str>>,
    /// The holder's enterprise, when known.
    pub enterprise: Option<Arc<str>>,
    /// How long to unlock the door (0 when denied).
    pub unlock_duration_ms: u32,
    /// The anti-passback state to record once the person has passed (granted only, and only
    /// at an anti-passback door).
    pub presence_update: Option<PresenceUpdate>,
}

impl AccessDecision {
    fn deny(reason: ReasonCode) -> AccessDecision {
        AccessDecision {
            granted: false,
            reason,
            credential: None,
            person: None,
            enterprise: None,
            unlock_duration_ms: 0,
            presence_update: None,
        }
    }
}

#[derive(Debug, Clone)]
struct CredEntry {
    id: Arc<str>,
    person: Arc<str>,
    kind: CredentialKind,
    digest: Arc<str>,
    status: CredentialStatus,
    valid_from: Option<Timestamp>,
    valid_to: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct PersonEntry {
    enterprise: Arc<str>,
    status: PersonStatus,
    groups: Box<[Arc<str>]>,
}

#[derive(Debug, Clone)]
struct EnterpriseEntry {
    id: Arc<str>,
    status: EnterpriseStatus,
    kind: EnterpriseKind,
}

#[derive(Debug, Clone)]
struct LeaseEntry {
    id: Arc<str>,
    valid_from: Timestamp,
    valid_to: Timestamp,
    status: LeaseStatus,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    doors: HashSet<Arc<str>>,
    schedule: Option<Arc<str>>,
}

#[derive(Debug, Clone)]
struct ScheduleEntry {
    week: [Box<[Interval]>; 7],
    calendar: Option<Arc<str>>,
    allow_on_holidays: bool,
}

#[derive(Debug, Clone)]
struct DoorEntry {
    building: Arc<str>,
    status: DoorStatus,
    anti_passback: bool,
    direction: DoorDirection,
    area: Option<Arc<str>>,
    unlock_duration_ms: u32,
}

/// What [`AccessIndex::refresh_directory`] and [`AccessIndex::refresh_building`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    /// Entities written into the index.
    pub upserted: usize,
    /// Entities taken out (deleted from the document, or now unreadable).
    pub removed: usize,
    /// Entities the document holds but that cannot be read; they are not in the index.
    pub rejected: Vec<Rejected>,
}

/// One step of a [`DirectoryDelta`].
type DeltaStep = Box<dyn FnOnce(&mut AccessIndex, &mut RefreshReport) + Send>;

/// What changed entities of a directory do to an [`AccessIndex`], read from the document
/// with no index at hand ([`DirectoryDelta::read`]) and applied later ([`Self::apply`]):
/// an edge reads a large change with its decision state unlocked, then applies it in a
/// moment. [`AccessIndex::refresh_directory`] is the two in one.
pub struct DirectoryDelta {
    steps: Vec<DeltaStep>,
}

impl DirectoryDelta {
    /// Reads every entity `changes` touched (all of a collection replaced as a whole).
    pub fn read(doc: &ParkDirectory, changes: &ChangeSet) -> Result<DirectoryDelta, DocError> {
        let mut steps: Vec<DeltaStep> = Vec::new();
        if changes.root_fields.contains("utc_offset_minutes") {
            let minutes = doc.utc_offset_minutes()?;
            steps.push(Box::new(move |ix, _| ix.utc_offset_minutes = minutes));
        }
        macro_rules! read {
            ($ty:ty, $map:ident, $upsert:ident, $remove:ident) => {{
                let whole = changes.collections.contains(&<$ty as Entity>::COLLECTION);
                let ids: Vec<String> = if whole {
                    doc.ids(<$ty as Entity>::COLLECTION)?.into_iter().collect()
                } else {
                    changes
                        .ids(<$ty as Entity>::COLLECTION)
                        .map(str::to_string)
                        .collect()
                };
                for id in &ids {
                    let found = match doc.get::<$ty>(id) {
                        Ok(found) => Ok(found),
                        Err(DocError::InvalidEntity {
                            collection,
                            id,
                            reason,
                        }) => Err(Rejected {
                            collection,
                            id,
                            reason,
                        }),
                        Err(e) => return Err(e),
                    };
                    let id = id.clone();
                    steps.push(Box::new(move |ix, report| match found {
                        Ok(Some(entity)) => {
                            AccessIndex::$upsert(ix, &entity);
                            report.upserted += 1;
                        }
                        Ok(None) => {
                            AccessIndex::$remove(ix, &id);
                            report.removed += 1;
                        }
                        Err(rejected) => {
                            AccessIndex::$remove(ix, &rejected.id);
                            report.removed += 1;
                            report.rejected.push(rejected);
                        }
                    }));
                }
                if whole {
                    // Those the index has and the replaced collection no longer holds.
                    let keep: HashSet<String> = ids.into_iter().collect();
                    steps.push(Box::new(move |ix, report| {
                        let gone: Vec<String> = ix
                            .$map
                            .keys()
                            .filter(|k| !keep.contains(&***k))
                            .map(|k| k.to_string())
                            .collect();
                        for id in gone {
                            AccessIndex::$remove(ix, &id);
                            report.removed += 1;
                        }
                    }));
                }
            }};
        }
        read!(
            Enterprise,
            enterprises,
            upsert_enterprise,
            remove_enterprise
        );
        read!(Lease, lease_owner, upsert_lease, remove_lease);
        read!(Person, people, upsert_person, remove_person);
        read!(
            Credential,
            credentials,
            upsert_credential,
            remove_credential
        );
        read!(
            AccessGroup,
            groups,
            upsert_access_group,
            remove_access_group
        );
        read!(WeeklySchedule, schedules, upsert_schedule, remove_schedule);
        read!(
            HolidayCalendar,
            calendars,
            upsert_holiday_calendar,
            remove_holiday_calendar
        );
        Ok(DirectoryDelta { steps })
    }

    /// Writes what was read into `index`.
    pub fn apply(self, index: &mut AccessIndex) -> RefreshReport {
        let mut report = RefreshReport::default();
        for step in self.steps {
            step(index, &mut report);
        }
        report
    }
}

/// Everything a building needs to decide door access, in hash maps keyed by id, derived from
/// the documents and kept up to date entity by entity.
#[derive(Debug, Clone, Default)]
pub struct AccessIndex {
    utc_offset_minutes: i32,
    credentials: HashMap<Arc<str>, CredEntry>,
    /// Per credential kind: keyed digest → ids of the credentials with that digest, sorted.
    by_digest: [HashMap<Arc<str>, Vec<Arc<str>>>; 4],
    people: HashMap<Arc<str>, PersonEntry>,
    enterprises: HashMap<Arc<str>, EnterpriseEntry>,
    /// lease id → enterprise id, to find a lease's entry when it changes.
    lease_owner: HashMap<Arc<str>, Arc<str>>,
    leases_by_enterprise: HashMap<Arc<str>, Vec<LeaseEntry>>,
    groups: HashMap<Arc<str>, GroupEntry>,
    schedules: HashMap<Arc<str>, ScheduleEntry>,
    calendars: HashMap<Arc<str>, HashSet<i32>>,
    doors: HashMap<Arc<str>, DoorEntry>,
}

impl AccessIndex {
    /// An empty index for a park `utc_offset_minutes` ahead of UTC.
    pub fn new(utc_offset_minutes: i32) -> AccessIndex {
        AccessIndex {
            utc_offset_minutes,
            ..AccessIndex::default()
        }
    }

    /// Builds the index from a directory and the buildings whose doors this node decides for.
    pub fn build<'a>(
        directory: &Directory,
        buildings: impl IntoIterator<Item = &'a Building>,
    ) -> AccessIndex {
        let mut index = AccessIndex::new(directory.utc_offset_minutes);
        for e in directory.enterprises.values() {
            index.upsert_enterprise(e);
        }
        for l in directory.leases.values() {
            index.upsert_lease(l);
        }
        for p in directory.people.values() {
            index.upsert_person(p);
        }
        for c in directory.credentials.values() {
            index.upsert_credential(c);
        }
        for g in directory.access_groups.values() {
            index.upsert_access_group(g);
        }
        for s in directory.schedules.values() {
            index.upsert_schedule(s);
        }
        for h in directory.holiday_calendars.values() {
            index.upsert_holiday_calendar(h);
        }
        for b in buildings {
            for d in b.doors.values() {
                index.upsert_door(d);
            }
        }
        index
    }

    pub fn utc_offset_minutes(&self) -> i32 {
        self.utc_offset_minutes
    }

    pub fn set_utc_offset_minutes(&mut self, minutes: i32) {
        self.utc_offset_minutes = minutes;
    }

    /// Number of credentials indexed.
    pub fn credential_count(&self) -> usize {
        self.credentials.len()
    }

    /// Number of doors indexed.
    pub fn door_count(&self) -> usize {
        self.doors.len()
    }

    pub fn upsert_credential(&mut self, c: &Credential) {
        self.remove_credential(&c.id);
        let entry = CredEntry {
            id: c.id.as_str().into(),
            person: c.person_id.as_str().into(),
            kind: c.kind,
            digest: c.digest.as_str().into(),
            status: c.status,
            valid_from: c.valid_from,
            valid_to: c.valid_to,
        };
        let ids = self.by_digest[c.kind.index()]
            .entry(entry.digest.clone())
            .or_default();
        let at = ids.partition_point(|id| **id < *entry.id);
        ids.insert(at, entry.id.clone());
        self.credentials.insert(entry.id.clone(), entry);
    }

    pub fn remove_credential(&mut self, id: &str) {
        let Some(old) = self.credentials.remove(id) else {
            return;
        };
        let table = &mut self.by_digest[old.kind.index()];
        if let Some(ids) = table.get_mut(&*old.digest) {
            ids.retain(|x| **x != *id);
            if ids.is_empty() {
                table.remove(&*old.digest);
            }
        }
    }

    pub fn upsert_person(&mut self, p: &Person) {
        self.people.insert(
            p.id.as_str().into(),
            PersonEntry {
                enterprise: p.enterprise_id.as_str().into(),
                status: p.status,
                groups: p
                    .access_group_ids
                    .iter()
                    .map(|g| g.as_str().into())
                    .collect(),
            },
        );
    }

    pub fn remove_person(&mut self, id: &str) {
        self.people.remove(id);
    }

    pub fn upsert_enterprise(&mut self, e: &Enterprise) {
        let id: Arc<str> = e.id.as_str().into();
        self.enterprises.insert(
            id.clone(),
            EnterpriseEntry {
                id,
                status: e.status,
                kind: e.kind,
            },
        );
    }

    pub fn remove_enterprise(&mut self, id: &str) {
        self.enterprises.remove(id);
    }

    pub fn upsert_lease(&mut self, l: &Lease) {
        self.remove_lease(&l.id);
        let id: Arc<str> = l.id.as_str().into();
        let owner: Arc<str> = l.enterprise_id.as_str().into();
        self.lease_owner.insert(id.clone(), owner.clone());
        self.leases_by_enterprise
            .entry(owner)
            .or_default()
            .push(LeaseEntry {
                id,
                valid_from: l.valid_from,
                valid_to: l.valid_to,
                status: l.status,
            });
    }

    pub fn remove_lease(&mut self, id: &str) {
        let Some(owner) = self.lease_owner.remove(id) else {
            return;
        };
        if let Some(list) = self.leases_by_enterprise.get_mut(&owner) {
            list.retain(|l| &*l.id != id);
            if list.is_empty() {
                self.leases_by_enterprise.remove(&owner);
            }
        }
    }

    pub fn upsert_access_group(&mut self, g: &AccessGroup) {
        self.groups.insert(
            g.id.as_str().into(),
            GroupEntry {
                doors: g.door_ids.iter().map(|d| d.as_str().into()).collect(),
                schedule: g.schedule_id.as_deref().map(Into::into),
            },
        );
    }

    pub fn remove_access_group(&mut self, id: &str) {
        self.groups.remove(id);
    }

    pub fn upsert_schedule(&mut self, s: &WeeklySchedule) {
        let week = std::array::from_fn(|day| s.weekdays.0[day].clone().into_boxed_slice());
        self.schedules.insert(
            s.id.as_str().into(),
            ScheduleEntry {
                week,
                calendar: s.holiday_calendar_id.as_deref().map(Into::into),
                allow_on_holidays: s.allow_on_holidays,
            },
        );
    }

    pub fn remove_schedule(&mut self, id: &str) {
        self.schedules.remove(id);
    }

    pub fn upsert_holiday_calendar(&mut self, h: &HolidayCalendar) {
        self.calendars
            .insert(h.id.as_str().into(), h.days().collect());
    }

    pub fn remove_holiday_calendar(&mut self, id: &str) {
        self.calendars.remove(id);
    }

    pub fn upsert_door(&mut self, d: &Door) {
        self.doors.insert(
            d.id.as_str().into(),
            DoorEntry {
                building: d.building_id.as_str().into(),
                status: d.status,
                anti_passback: d.anti_passback,
                direction: d.direction,
                area: d.area_id.as_deref().map(Into::into),
                unlock_duration_ms: d.unlock_duration_ms,
            },
        );
    }

    pub fn remove_door(&mut self, id: &str) {
        self.doors.remove(id);
    }

    /// Brings the index up to date with the directory after the changes in `changes`
    /// (from [`crate::Document::changes`]): re-reads only the entities named there, or every
    /// entity of a collection that was replaced whole.
    pub fn refresh_directory(
        &mut self,
        doc: &ParkDirectory,
        changes: &ChangeSet,
    ) -> Result<RefreshReport, DocError> {
        Ok(DirectoryDelta::read(doc, changes)?.apply(self))
    }

    /// Brings the index's doors up to date with one building's document after `changes`.
    pub fn refresh_building(
        &mut self,
        doc: &BuildingDoc,
        changes: &ChangeSet,
    ) -> Result<RefreshReport, DocError> {
        let mut report = RefreshReport::default();
        let building = doc.building_id()?;
        let existing = || {
            self.doors
                .iter()
                .filter(|(_, d)| *d.building == *building)
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
        };
        for id in ids_to_refresh::<Door>(doc, changes, existing)? {
            self.refresh_one::<Door>(doc, &id, &mut report, Self::upsert_door, Self::remove_door)?;
        }
        Ok(report)
    }

    fn refresh_one<E: Entity>(
        &mut self,
        doc: &crate::Document<E::Schema>,
        id: &str,
        report: &mut RefreshReport,
        upsert: fn(&mut Self, &E),
        remove: fn(&mut Self, &str),
    ) -> Result<(), DocError> {
        match doc.get::<E>(id) {
            Ok(Some(entity)) => {
                upsert(self, &entity);
                report.upserted += 1;
            }
            Ok(None) => {
                remove(self, id);
                report.removed += 1;
            }
            Err(DocError::InvalidEntity {
                collection,
                id,
                reason,
            }) => {
                remove(self, &id);
                report.removed += 1;
                report.rejected.push(Rejected {
                    collection,
                    id,
                    reason,
                });
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Decides whether the credential `read` (what a reader sent, digested), read at
    /// `door_id` at `now`, opens the door. `presence` is the anti-passback state (use
    /// [`NoPresence`] where there is none).
    pub fn decide(
        &self,
        read: &Presented,
        door_id: &str,
        now: Timestamp,
        presence: &impl PresenceLookup,
    ) -> AccessDecision {
        let candidates = self.by_digest[read.kind.index()]
            .get(read.digest.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let first = candidates.first().and_then(|id| self.credentials.get(id));
        let Some(door) = self.doors.get(door_id) else {
            return self.identified(AccessDecision::deny(ReasonCode::UnknownDoor), first);
        };
        if door.status == DoorStatus::Disabled {
            return self.identified(AccessDecision::deny(ReasonCode::DoorDisabled), first);
        }
        if first.is_none() {
            return AccessDecision::deny(ReasonCode::UnknownCredential);
        }
        // Revocation wins over any other credential with the same value.
        for id in candidates {
            let Some(c) = self.credentials.get(id) else {
                continue;
            };
            let reason = match c.status {
                CredentialStatus::Active => continue,
                CredentialStatus::Suspended => ReasonCode::CredentialSuspended,
                CredentialStatus::Lost => ReasonCode::CredentialLost,
            };
            return self.identified(AccessDecision::deny(reason), Some(c));
        }
        let local = LocalTime::at(now, self.utc_offset_minutes);
        let mut first_denial = None;
        for id in candidates {
            let Some(c) = self.credentials.get(id) else {
                continue;
            };
            let decision = self.decide_one(c, door_id, door, now, local, presence);
            if decision.granted {
                return decision;
            }
            first_denial.get_or_insert(decision);
        }
        first_denial.unwrap_or_else(|| AccessDecision::deny(ReasonCode::UnknownCredential))
    }

    /// Fills in who the decision is about, as far as the index knows.
    fn identified(&self, mut d: AccessDecision, c: Option<&CredEntry>) -> AccessDecision {
        if let Some(c) = c {
            d.credential = Some(c.id.clone());
            d.person = Some(c.person.clone());
            d.enterprise = self.people.get(&*c.person).map(|p| p.enterprise.clone());
        }
        d
    }

    fn decide_one(
        &self,
        c: &CredEntry,
        door_id: &str,
        door: &DoorEntry,
        now: Timestamp,
        local: LocalTime,
        presence: &impl PresenceLookup,
    ) -> AccessDecision {
        let deny = |reason| self.identified(AccessDecision::deny(reason), Some(c));
        if c.valid_from.is_some_and(|f| now < f) {
            return deny(ReasonCode::CredentialNotYetValid);
        }
        if c.valid_to.is_some_and(|t| now >= t) {
            return deny(ReasonCode::CredentialExpired);
        }
        let Some(person) = self.people.get(&*c.person) else {
            return deny(ReasonCode::UnknownPerson);
        };
        if person.status != PersonStatus::Active {
            return deny(ReasonCode::PersonSuspended);
        }
        let Some(enterprise) = self.enterprises.get(&*person.enterprise) else {
            return deny(ReasonCode::UnknownEnterprise);
        };
        if enterprise.status != EnterpriseStatus::Active {
            return deny(ReasonCode::EnterpriseSuspended);
        }
        if enterprise.kind == EnterpriseKind::Tenant {
            let leased = self
                .leases_by_enterprise
                .get(&*enterprise.id)
                .is_some_and(|ls| {
                    ls.iter().any(|l| {
                        l.status == LeaseStatus::Active && l.valid_from <= now && now < l.valid_to
                    })
                });
            if !leased {
                return deny(ReasonCode::NoActiveLease);
            }
        }
        // The first of the person's groups that includes the door and allows now grants; if
        // none allows, the first such group's refusal is the reason.
        let mut has_door = false;
        let mut refusal = None;
        for group_id in person.groups.iter() {
            let Some(group) = self.groups.get(group_id) else {
                continue;
            };
            if !group.doors.contains(door_id) {
                continue;
            }
            has_door = true;
            match self.schedule_allows(group.schedule.as_deref(), local) {
                Ok(()) => {
                    refusal = None;
                    break;
                }
                Err(reason) => {
                    refusal.get_or_insert(reason);
                }
            }
        }
        if !has_door {
            return deny(ReasonCode::NoAccessToDoor);
        }
        if let Some(reason) = refusal {
            return deny(reason);
        }
        let presence_update = match (&door.area, door.anti_passback, door.direction) {
            (Some(area), true, DoorDirection::In | DoorDirection::Out) => {
                let (blocked_when, after) = if door.direction == DoorDirection::In {
                    (Presence::Inside, Presence::Inside)
                } else {
                    (Presence::Outside, Presence::Outside)
                };
                if presence.presence(&c.person, area) == Some(blocked_when) {
                    return deny(ReasonCode::AntiPassback);
                }
                Some(PresenceUpdate {
                    person_id: c.person.clone(),
                    area_id: area.clone(),
                    presence: after,
                })
            }
            _ => None,
        };
        let mut granted = self.identified(AccessDecision::deny(ReasonCode::Granted), Some(c));
        granted.granted = true;
        granted.unlock_duration_ms = door.unlock_duration_ms;
        granted.presence_update = presence_update;
        granted
    }

    fn schedule_allows(&self, schedule: Option<&str>, local: LocalTime) -> Result<(), ReasonCode> {
        let Some(id) = schedule else {
            return Ok(());
        };
        let Some(s) = self.schedules.get(id) else {
            return Err(ReasonCode::UnknownSchedule);
        };
        if let Some(cal) = &s.calendar {
            let Some(days) = self.calendars.get(cal) else {
                return Err(ReasonCode::UnknownSchedule);
            };
            if days.contains(&local.day) && !s.allow_on_holidays {
                return Err(ReasonCode::Holiday);
            }
        }
        if s.week[local.weekday.index()]
            .iter()
            .any(|i| i.contains(local.minute_of_day))
        {
            Ok(())
        } else {
            Err(ReasonCode::OutsideSchedule)
        }
    }
}

/// The ids to re-read for entity type `E`: those named in `changes`, or, when the whole
/// collection changed, every id in the document and in the index (`existing`).
fn ids_to_refresh<E: Entity>(
    doc: &crate::Document<E::Schema>,
    changes: &ChangeSet,
    existing: impl FnOnce() -> Vec<String>,
) -> Result<Vec<String>, DocError>
where
    E::Schema: Schema,
{
    if changes.collections.contains(&E::COLLECTION) {
        let mut ids = doc.ids(E::COLLECTION)?;
        ids.extend(existing());
        Ok(ids.into_iter().collect())
    } else {
        Ok(changes.ids(E::COLLECTION).map(str::to_string).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::building::DEFAULT_UNLOCK_DURATION_MS;
    use crate::directory::{CredentialKey, Week};
    use crate::time::local_timestamp;

    const OFFSET: i32 = 480;

    fn key() -> CredentialKey {
        CredentialKey::new(&[0x5a; 32])
    }

    fn at(date: &str, h: u32, m: u32) -> Timestamp {
        local_timestamp(date, h, m, OFFSET).unwrap()
    }

    /// A Thursday, 10:00 in the park.
    fn thursday_ten() -> Timestamp {
        at("2026-10-08", 10, 0)
    }

    fn door(id: &str) -> Door {
        Door {
            id: id.into(),
            name: id.into(),
            building_id: "b1".into(),
            anti_passback: false,
            direction: DoorDirection::Both,
            area_id: None,
            unlock_duration_ms: DEFAULT_UNLOCK_DURATION_MS,
            status: DoorStatus::Enabled,
        }
    }

    /// One tenant with a lease for 2026, one person in group g-office (door d1, office hours),
    /// holding card CARD-1.
    fn directory() -> Directory {
        let mut d = Directory {
            park_id: "park".into(),
            utc_offset_minutes: OFFSET,
            enterprises: Default::default(),
            spaces: Default::default(),
            leases: Default::default(),
            people: Default::default(),
            credentials: Default::default(),
            access_groups: Default::default(),
            schedules: Default::default(),
            holiday_calendars: Default::default(),
            rejected: vec![],
        };
        d.enterprises.insert(
            "e1".into(),
            Enterprise {
                id: "e1".into(),
                name: "Acme".into(),
                status: EnterpriseStatus::Active,
                kind: EnterpriseKind::Tenant,
            },
        );
        d.leases.insert(
            "l1".into(),
            Lease {
                id: "l1".into(),
                enterprise_id: "e1".into(),
                space_ids: vec![],
                valid_from: at("2026-01-01", 0, 0),
                valid_to: at("2027-01-01", 0, 0),
                status: LeaseStatus::Active,
                monthly_rent_fen: 0,
                property_fee_fen: 0,
                currency: "CNY".into(),
            },
        );
        d.people.insert(
            "p1".into(),
            Person {
                id: "p1".into(),
                name: "Li".into(),
                enterprise_id: "e1".into(),
                status: PersonStatus::Active,
                access_group_ids: vec!["g-office".into()],
            },
        );
        d.credentials.insert(
            "c1".into(),
            Credential::from_secret(&key(), "c1", "p1", CredentialKind::Card, "CARD-1").unwrap(),
        );
        d.access_groups.insert(
            "g-office".into(),
            AccessGroup {
                id: "g-office".into(),
                name: "office".into(),
                door_ids: vec!["d1".into()],
                schedule_id: Some("s-office".into()),
            },
        );
        d.schedules.insert(
            "s-office".into(),
            WeeklySchedule {
                id: "s-office".into(),
                name: "office hours".into(),
                weekdays: Week::weekdays(&[Interval::new(7 * 60, 20 * 60)]),
                holiday_calendar_id: Some("cn".into()),
                allow_on_holidays: false,
            },
        );
        d.holiday_calendars.insert(
            "cn".into(),
            HolidayCalendar {
                id: "cn".into(),
                name: "China 2026".into(),
                dates: vec!["2026-10-01".into(), "2026-10-02".into()],
            },
        );
        d
    }

    fn index() -> AccessIndex {
        let building = Building {
            park_id: "park".into(),
            building_id: "b1".into(),
            doors: [
                ("d1".to_string(), door("d1")),
                ("d2".to_string(), door("d2")),
            ]
            .into_iter()
            .collect(),
            rejected: vec![],
        };
        AccessIndex::build(&directory(), [&building])
    }

    fn card(index: &AccessIndex, door: &str, now: Timestamp) -> AccessDecision {
        let read = key().present(CredentialKind::Card, "CARD-1");
        index.decide(&read, door, now, &NoPresence)
    }

    #[test]
    fn a_valid_card_opens_its_door_in_office_hours() {
        let d = card(&index(), "d1", thursday_ten());
        assert!(d.granted);
        assert_eq!(d.reason, ReasonCode::Granted);
        assert_eq!(d.credential.as_deref(), Some("c1"));
        assert_eq!(d.person.as_deref(), Some("p1"));
        assert_eq!(d.enterprise.as_deref(), Some("e1"));
        assert_eq!(d.unlock_duration_ms, DEFAULT_UNLOCK_DURATION_MS);
    }

    #[test]
    fn a_read_matches_by_its_digest_under_the_parks_key_only() {
        let i = index();
        let now = thursday_ten();
        let decide = |k: &CredentialKey, value: &str| {
            i.decide(
                &k.present(CredentialKind::Card, value),
                "d1",
                now,
                &NoPresence,
            )
        };
        assert!(decide(&key(), "CARD-1").granted);
        assert!(
            decide(&key(), " CARD-1\t").granted,
            "readers' whitespace is not the value"
        );
        assert_eq!(
            decide(&key(), "CARD-2").reason,
            ReasonCode::UnknownCredential
        );
        assert_eq!(
            decide(&key(), "card-1").reason,
            ReasonCode::UnknownCredential
        );
        let other_park = CredentialKey::new(&[0x5b; 32]);
        assert_eq!(
            decide(&other_park, "CARD-1").reason,
            ReasonCode::UnknownCredential
        );
    }

    #[test]
    fn each_link_of_the_chain_has_its_own_reason() {
        let now = thursday_ten();
        let mut i = index();
        assert_eq!(card(&i, "d9", now).reason, ReasonCode::UnknownDoor);
        assert_eq!(card(&i, "d2", now).reason, ReasonCode::NoAccessToDoor);
        assert_eq!(
            i.decide(
                &key().present(CredentialKind::Qr, "CARD-1"),
                "d1",
                now,
                &NoPresence
            )
            .reason,
            ReasonCode::UnknownCredential
        );
        assert_eq!(
            card(&i, "d1", at("2026-10-08", 6, 59)).reason,
            ReasonCode::OutsideSchedule
        );
        assert_eq!(
            card(&i, "d1", at("2026-10-08", 20, 0)).reason,
            ReasonCode::OutsideSchedule
        );
        assert_eq!(
            card(&i, "d1", at("2026-10-10", 10, 0)).reason,
            ReasonCode::OutsideSchedule
        );
        assert_eq!(
            card(&i, "d1", at("2026-10-01", 10, 0)).reason,
            ReasonCode::Holiday
        );
        assert_eq!(
            card(&i, "d1", at("2027-03-01", 10, 0)).reason,
            ReasonCode::NoActiveLease
        );

        let mut dir = directory();
        dir.credentials.get_mut("c1").unwrap().valid_from = Some(now + 1);
        i.upsert_credential(&dir.credentials["c1"]);
        assert_eq!(
            card(&i, "d1", now).reason,
            ReasonCode::CredentialNotYetValid
        );
        dir.credentials.get_mut("c1").unwrap().valid_from = None;
        dir.credentials.get_mut("c1").unwrap().valid_to = Some(now);
        i.upsert_credential(&dir.credentials["c1"]);
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::CredentialExpired);
        dir.credentials.get_mut("c1").unwrap().status = CredentialStatus::Lost;
        i.upsert_credential(&dir.credentials["c1"]);
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::CredentialLost);
        dir.credentials.get_mut("c1").unwrap().status = CredentialStatus::Suspended;
        i.upsert_credential(&dir.credentials["c1"]);
        let d = card(&i, "d1", now);
        assert_eq!(d.reason, ReasonCode::CredentialSuspended);
        assert_eq!(
            d.person.as_deref(),
            Some("p1"),
            "a denial still says who it was"
        );

        let mut i = index();
        let mut p = dir.people["p1"].clone();
        p.status = PersonStatus::Suspended;
        i.upsert_person(&p);
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::PersonSuspended);
        i.remove_person("p1");
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::UnknownPerson);

        let mut i = index();
        let mut e = dir.enterprises["e1"].clone();
        e.status = EnterpriseStatus::Suspended;
        i.upsert_enterprise(&e);
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::EnterpriseSuspended);
        i.remove_enterprise("e1");
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::UnknownEnterprise);

        let mut i = index();
        i.remove_lease("l1");
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::NoActiveLease);

        let mut i = index();
        let mut d1 = door("d1");
        d1.status = DoorStatus::Disabled;
        i.upsert_door(&d1);
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::DoorDisabled);

        let mut i = index();
        i.remove_schedule("s-office");
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::UnknownSchedule);
        let mut i = index();
        i.remove_holiday_calendar("cn");
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::UnknownSchedule);
    }

    #[test]
    fn a_holiday_schedule_that_allows_holidays_uses_the_weekday_hours() {
        let mut i = index();
        let mut s = directory().schedules["s-office"].clone();
        s.allow_on_holidays = true;
        i.upsert_schedule(&s);
        assert!(card(&i, "d1", at("2026-10-01", 10, 0)).granted);
        assert_eq!(
            card(&i, "d1", at("2026-10-01", 21, 0)).reason,
            ReasonCode::OutsideSchedule
        );
    }

    #[test]
    fn the_operators_staff_need_no_lease() {
        let mut i = index();
        i.remove_lease("l1");
        let mut e = directory().enterprises["e1"].clone();
        e.kind = EnterpriseKind::Operator;
        i.upsert_enterprise(&e);
        assert!(card(&i, "d1", thursday_ten()).granted);
    }

    #[test]
    fn a_second_group_can_grant_what_the_first_refuses_by_schedule() {
        let mut i = index();
        i.upsert_access_group(&AccessGroup {
            id: "g-always".into(),
            name: "always".into(),
            door_ids: vec!["d1".into()],
            schedule_id: None,
        });
        let mut p = directory().people["p1"].clone();
        p.access_group_ids.push("g-always".into());
        i.upsert_person(&p);
        assert!(card(&i, "d1", at("2026-10-01", 23, 0)).granted);
    }

    #[test]
    fn a_revoked_duplicate_of_a_credential_value_denies() {
        let mut i = index();
        i.upsert_credential(&Credential {
            status: CredentialStatus::Lost,
            ..Credential::from_secret(&key(), "c0-old", "p1", CredentialKind::Card, "CARD-1")
                .unwrap()
        });
        let d = card(&i, "d1", thursday_ten());
        assert_eq!(d.reason, ReasonCode::CredentialLost);
        assert_eq!(d.credential.as_deref(), Some("c0-old"));
        i.remove_credential("c0-old");
        assert!(card(&i, "d1", thursday_ten()).granted);
    }

    #[test]
    fn anti_passback_denies_a_second_entry_until_the_person_leaves() {
        let mut i = index();
        for (id, direction) in [("d-in", DoorDirection::In), ("d-out", DoorDirection::Out)] {
            let mut d = door(id);
            d.anti_passback = true;
            d.direction = direction;
            d.area_id = Some("lab".into());
            i.upsert_door(&d);
        }
        i.upsert_access_group(&AccessGroup {
            id: "g-office".into(),
            name: "office".into(),
            door_ids: vec!["d1".into(), "d-in".into(), "d-out".into()],
            schedule_id: None,
        });
        let now = thursday_ten();
        let mut state = PresenceMap::default();
        let read = key().present(CredentialKind::Card, "CARD-1");
        let enter = |state: &PresenceMap| i.decide(&read, "d-in", now, state);
        let first = enter(&state);
        assert!(first.granted);
        let update = first.presence_update.clone().unwrap();
        assert_eq!(
            (&*update.area_id, update.presence),
            ("lab", Presence::Inside)
        );
        state.apply(&update);
        assert_eq!(enter(&state).reason, ReasonCode::AntiPassback);
        let out = i.decide(&read, "d-out", now, &state);
        assert!(out.granted);
        state.apply(&out.presence_update.unwrap());
        assert!(enter(&state).granted);
        let out_again = i.decide(&read, "d-out", now, &state);
        assert_eq!(out_again.reason, ReasonCode::AntiPassback);
        // A plain door neither checks nor changes the state.
        let plain = i.decide(&read, "d1", now, &state);
        assert!(plain.granted && plain.presence_update.is_none());
    }

    #[test]
    fn every_reason_has_a_distinct_code_and_a_sentence() {
        let codes: HashSet<&str> = ReasonCode::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), ReasonCode::ALL.len());
        for r in ReasonCode::ALL {
            assert!(r.sentence().ends_with('.'), "{r}");
            assert_eq!(r.to_string(), r.as_str());
        }
    }

    #[test]
    fn refreshing_from_document_changes_updates_only_what_changed() {
        let now = thursday_ten();
        let dir = directory();
        let mut doc = ParkDirectory::new("park", OFFSET, 0).unwrap();
        for e in dir.enterprises.values() {
            doc.upsert(e).unwrap();
        }
        for l in dir.leases.values() {
            doc.upsert(l).unwrap();
        }
        for p in dir.people.values() {
            doc.upsert(p).unwrap();
        }
        for c in dir.credentials.values() {
            doc.upsert(c).unwrap();
        }
        for g in dir.access_groups.values() {
            doc.upsert(g).unwrap();
        }
        for s in dir.schedules.values() {
            doc.upsert(s).unwrap();
        }
        for h in dir.holiday_calendars.values() {
            doc.upsert(h).unwrap();
        }
        let mut bdoc = BuildingDoc::new("park", "b1", 0).unwrap();
        bdoc.upsert(&door("d1")).unwrap();
        let mut i = AccessIndex::build(&doc.snapshot().unwrap(), [&bdoc.snapshot().unwrap()]);
        assert!(card(&i, "d1", now).granted);

        let before = doc.heads();
        doc.suspend_credential("c1").unwrap();
        let after = doc.heads();
        let changes = doc.changes(&before, &after);
        let report = i.refresh_directory(&doc, &changes).unwrap();
        assert_eq!(report.upserted, 1);
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::CredentialSuspended);

        let before = bdoc.heads();
        bdoc.remove::<Door>("d1").unwrap();
        let after = bdoc.heads();
        let changes = bdoc.changes(&before, &after);
        let report = i.refresh_building(&bdoc, &changes).unwrap();
        assert_eq!(report.removed, 1);
        assert_eq!(card(&i, "d1", now).reason, ReasonCode::UnknownDoor);
    }
}

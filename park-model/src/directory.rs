//! The park directory: one automerge document per park holding who may go where: enterprises
//! (tenants), spaces, leases, people, credentials, access groups, weekly schedules and holiday
//! calendars, plus the park's fixed UTC offset.
//!
//! Types here are the hydrated values and the edits an app makes (suspend a credential, move a
//! person to another group, end a lease). Doors are in each building's document
//! ([`crate::building`]); car parks in [`crate::parking`]. This module makes no access decision
//! (see [`crate::access`]) and does no IO.
//!
//! Document layout (JSON-like; strings are scalar Str (Text from JavaScript reads too), numbers Int, see [`crate::compat`]):
//!
//! ```text
//! { schema_version: 1, doc_type: "park_directory", park_id: "p1", utc_offset_minutes: 480,
//!   enterprises:  { "ent-1": { name, status: "active"|"suspended", kind: "tenant"|"operator" } },
//!   spaces:       { "sp-1":  { building_id, floor, area_m2, name } },
//!   leases:       { "ls-1":  { enterprise_id, space_ids: [..], valid_from, valid_to,
//!                              status: "active"|"terminated", monthly_rent_fen,
//!                              property_fee_fen, currency: "CNY" } },
//!   people:       { "p-1":   { name, enterprise_id, status, access_group_ids: [..], phone? } },
//!   credentials:  { "c-1":   { person_id, kind: "card"|"qr"|"pin"|"plate", value,
//!                              status: "active"|"suspended"|"lost", valid_from?, valid_to? } },
//!   access_groups:{ "g-1":   { name, door_ids: [..], schedule_id? } },
//!   schedules:    { "s-1":   { name, weekdays: { mon: [[480, 1080]], .. },
//!                              holiday_calendar_id?, allow_on_holidays } },
//!   holiday_calendars: { "cn-2026": { name, dates: ["2026-10-01", ..] } } }
//! ```

use std::collections::BTreeMap;

use automerge::{AutoCommit, ObjId, ObjType, Value};
use autosurgeon::{HydrateError, Reconcile, Reconciler, reconcile::MapReconciler};

use crate::compat::{Field, entity_codec, int_from_value, text_enum};
use crate::document::{
    Collection, DocError, Document, Entity, Rejected, Schema, check_utc_offset, check_validity,
    migrate_v0_common, root_has, set_root,
};
use crate::time::{MINUTES_PER_DAY, Timestamp, Weekday, parse_date};

/// The UTC offset assumed for version 0 directories, which did not record one: China Standard
/// Time, the only zone the tools that wrote them were used in.
pub const DEFAULT_UTC_OFFSET_MINUTES: i32 = 480;

/// The directory's schema: `doc_type` `park_directory`, version 1.
#[derive(Debug)]
pub enum DirectorySchema {}

impl Schema for DirectorySchema {
    const DOC_TYPE: &'static str = "park_directory";
    const VERSION: i64 = 1;
    const COLLECTIONS: &'static [Collection] = &[
        Collection::Enterprises,
        Collection::Spaces,
        Collection::Leases,
        Collection::People,
        Collection::Credentials,
        Collection::AccessGroups,
        Collection::Schedules,
        Collection::HolidayCalendars,
    ];

    /// Version 0 (before `schema_version` existed) → 1: adds `doc_type`, any missing collection
    /// and, if absent, `utc_offset_minutes` = [`DEFAULT_UTC_OFFSET_MINUTES`].
    fn migrate_step(doc: &mut AutoCommit, from: i64) -> Result<(), DocError> {
        match from {
            0 => {
                migrate_v0_common::<Self>(doc)?;
                if !root_has(doc, "utc_offset_minutes")? {
                    set_root(doc, "utc_offset_minutes", DEFAULT_UTC_OFFSET_MINUTES)?;
                }
                if !root_has(doc, "park_id")? {
                    set_root(doc, "park_id", String::new())?;
                }
                Ok(())
            }
            _ => Err(DocError::NoMigration {
                doc_type: Self::DOC_TYPE,
                from,
            }),
        }
    }
}

/// The park directory document.
pub type ParkDirectory = Document<DirectorySchema>;

text_enum! {
    /// Whether an enterprise's people may use their access at all.
    pub enum EnterpriseStatus { Active => "active", Suspended => "suspended" }
}

text_enum! {
    /// A tenant needs an active lease for its people to get in; the operator (the park's own
    /// staff: security, facilities) does not.
    pub enum EnterpriseKind { Tenant => "tenant", Operator => "operator" }
}

text_enum! {
    /// A lease's status; a terminated lease grants nothing whatever its dates.
    pub enum LeaseStatus { Active => "active", Terminated => "terminated" }
}

text_enum! {
    /// A person's status.
    pub enum PersonStatus { Active => "active", Suspended => "suspended" }
}

text_enum! {
    /// What a credential is: a card (its UID), a QR code, a PIN, or a vehicle plate.
    pub enum CredentialKind { Card => "card", Qr => "qr", Pin => "pin", Plate => "plate" }
}

impl CredentialKind {
    /// 0..4, for per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

text_enum! {
    /// A credential's status. Suspended and lost both deny; lost also says why.
    pub enum CredentialStatus { Active => "active", Suspended => "suspended", Lost => "lost" }
}

/// A tenant company (or the park operator itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Enterprise {
    pub id: String,
    pub name: String,
    pub status: EnterpriseStatus,
    pub kind: EnterpriseKind,
}

entity_codec!(Enterprise {
    name: "name",
    status: "status",
    kind: "kind" = EnterpriseKind::Tenant,
});

impl Entity for Enterprise {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::Enterprises;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
}

/// A leasable space (an office, a workshop) in a building.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Space {
    pub id: String,
    pub building_id: String,
    pub floor: i32,
    pub area_m2: f64,
    pub name: String,
}

entity_codec!(Space {
    building_id: "building_id",
    floor: "floor",
    area_m2: "area_m2",
    name: "name" = String::new(),
});

impl Entity for Space {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::Spaces;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        if self.area_m2.is_finite() && self.area_m2 >= 0.0 {
            Ok(())
        } else {
            Err(format!(
                "area_m2 {} is not a non-negative number",
                self.area_m2
            ))
        }
    }
}

/// An enterprise's lease of spaces, valid in `[valid_from, valid_to)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub id: String,
    pub enterprise_id: String,
    pub space_ids: Vec<String>,
    pub valid_from: Timestamp,
    pub valid_to: Timestamp,
    pub status: LeaseStatus,
    /// Monthly rent in fen (1/100 yuan) of `currency`.
    pub monthly_rent_fen: i64,
    /// Monthly property fee in fen of `currency`.
    pub property_fee_fen: i64,
    /// ISO 4217 code, `CNY` unless stated.
    pub currency: String,
}

entity_codec!(Lease {
    enterprise_id: "enterprise_id",
    space_ids: "space_ids" = Vec::new(),
    valid_from: "valid_from",
    valid_to: "valid_to",
    status: "status",
    monthly_rent_fen: "monthly_rent_fen" = 0,
    property_fee_fen: "property_fee_fen" = 0,
    currency: "currency" = "CNY".to_string(),
});

impl Lease {
    /// Whether this lease lets its enterprise's people in at `now`.
    pub fn covers(&self, now: Timestamp) -> bool {
        self.status == LeaseStatus::Active && self.valid_from <= now && now < self.valid_to
    }
}

impl Entity for Lease {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::Leases;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        check_validity(Some(self.valid_from), Some(self.valid_to))?;
        if self.monthly_rent_fen < 0 || self.property_fee_fen < 0 {
            return Err("rent and property fee must not be negative".into());
        }
        Ok(())
    }
}

/// A person who may hold credentials: an enterprise's employee or the operator's staff.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub enterprise_id: String,
    pub status: PersonStatus,
    pub access_group_ids: Vec<String>,
    /// Sensitive. Kept as a plain string in the document; encryption at rest and masking are
    /// the storing and serving layers' business.
    pub phone: Option<String>,
}

entity_codec!(Person {
    name: "name",
    enterprise_id: "enterprise_id",
    status: "status",
    access_group_ids: "access_group_ids" = Vec::new(),
    phone: "phone",
});

impl Entity for Person {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::People;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
}

/// Something a person presents at a reader: a card UID, a QR payload, a PIN, a plate.
/// `value` is matched exactly as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    pub id: String,
    pub person_id: String,
    pub kind: CredentialKind,
    pub value: String,
    pub status: CredentialStatus,
    pub valid_from: Option<Timestamp>,
    pub valid_to: Option<Timestamp>,
}

entity_codec!(Credential {
    person_id: "person_id",
    kind: "kind",
    value: "value",
    status: "status",
    valid_from: "valid_from",
    valid_to: "valid_to",
});

impl Entity for Credential {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::Credentials;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        if self.value.is_empty() {
            return Err("the value is empty".into());
        }
        check_validity(self.valid_from, self.valid_to)
    }
}

/// Doors that a set of people may open, at the times of a schedule (always, when there is none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessGroup {
    pub id: String,
    pub name: String,
    pub door_ids: Vec<String>,
    pub schedule_id: Option<String>,
}

entity_codec!(AccessGroup {
    name: "name" = String::new(),
    door_ids: "door_ids" = Vec::new(),
    schedule_id: "schedule_id",
});

impl Entity for AccessGroup {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::AccessGroups;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
}

/// Minutes `[start_minute, end_minute)` of a park-local day, `0 <= start < end <= 1440`.
/// A night shift past midnight is two intervals on two days.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Interval {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl Interval {
    pub fn new(start_minute: u16, end_minute: u16) -> Interval {
        Interval {
            start_minute,
            end_minute,
        }
    }

    pub fn contains(&self, minute_of_day: u16) -> bool {
        self.start_minute <= minute_of_day && minute_of_day < self.end_minute
    }
}

/// Intervals for each day of the week, Monday first. Stored as a map `weekdays` from `mon` ..
/// `sun` to lists of `[start_minute, end_minute]` pairs; an absent day has no interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Week(pub [Vec<Interval>; 7]);

impl Week {
    /// The same intervals on Monday to Friday, none at the weekend.
    pub fn weekdays(intervals: &[Interval]) -> Week {
        let mut week = Week::default();
        for day in &mut week.0[..5] {
            day.extend_from_slice(intervals);
        }
        week
    }

    /// The same intervals every day.
    pub fn every_day(intervals: &[Interval]) -> Week {
        let mut week = Week::default();
        for day in &mut week.0 {
            day.extend_from_slice(intervals);
        }
        week
    }

    pub fn day(&self, weekday: Weekday) -> &[Interval] {
        &self.0[weekday.index()]
    }
}

fn read_interval<D: autosurgeon::ReadDoc>(doc: &D, obj: &ObjId) -> Result<Interval, HydrateError> {
    let bound = |index: usize| -> Result<u16, HydrateError> {
        let Some((value, _)) = doc.get(obj, index)? else {
            return Err(HydrateError::unexpected(
                "[start_minute, end_minute]",
                "a shorter list".into(),
            ));
        };
        let minute = int_from_value(&value)?;
        u16::try_from(minute)
            .map_err(|_| HydrateError::unexpected("a minute of the day", format!("{minute}")))
    };
    if doc.length(obj) != 2 {
        return Err(HydrateError::unexpected(
            "[start_minute, end_minute]",
            format!("a list of {}", doc.length(obj)),
        ));
    }
    Ok(Interval::new(bound(0)?, bound(1)?))
}

struct WeekRec<'a>(&'a Week);

impl Reconcile for WeekRec<'_> {
    type Key<'k> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        for day in Weekday::ALL {
            let pairs: Vec<Vec<i64>> = self
                .0
                .day(day)
                .iter()
                .map(|i| vec![i64::from(i.start_minute), i64::from(i.end_minute)])
                .collect();
            if pairs.is_empty() {
                if map.entry(day.as_str()).is_some() {
                    map.delete(day.as_str())?;
                }
            } else {
                map.put(day.as_str(), pairs)?;
            }
        }
        Ok(())
    }
}

impl Field for Week {
    fn from_found<D: autosurgeon::ReadDoc>(
        doc: &D,
        found: Option<(Value<'_>, ObjId)>,
    ) -> Result<Option<Self>, HydrateError> {
        let Some((value, map)) = found else {
            return Ok(None);
        };
        if !matches!(value, Value::Object(ObjType::Map)) {
            return Err(HydrateError::unexpected(
                "a map of weekdays",
                format!("{value}"),
            ));
        }
        let mut week = Week::default();
        for day in Weekday::ALL {
            let Some((value, list)) = doc.get(&map, day.as_str())? else {
                continue;
            };
            if !matches!(value, Value::Object(ObjType::List)) {
                return Err(HydrateError::unexpected(
                    "a list of intervals",
                    format!("{value}"),
                ));
            }
            for index in 0..doc.length(&list) {
                let Some((Value::Object(ObjType::List), pair)) = doc.get(&list, index)? else {
                    return Err(HydrateError::unexpected(
                        "[start_minute, end_minute]",
                        "something else".into(),
                    ));
                };
                week.0[day.index()].push(read_interval(doc, &pair)?);
            }
        }
        Ok(Some(week))
    }

    fn write<M: MapReconciler>(&self, map: &mut M, key: &str) -> Result<(), M::Error> {
        map.put(key, WeekRec(self))
    }
}

/// When the doors of the groups using it may be opened, in park-local time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WeeklySchedule {
    pub id: String,
    pub name: String,
    pub weekdays: Week,
    pub holiday_calendar_id: Option<String>,
    /// On a holiday of the calendar: `false` denies all day; `true` applies the weekday's
    /// intervals as on any other day.
    pub allow_on_holidays: bool,
}

entity_codec!(WeeklySchedule {
    name: "name" = String::new(),
    weekdays: "weekdays" = Week::default(),
    holiday_calendar_id: "holiday_calendar_id",
    allow_on_holidays: "allow_on_holidays" = false,
});

impl Entity for WeeklySchedule {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::Schedules;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        for day in Weekday::ALL {
            for i in self.weekdays.day(day) {
                if i.start_minute >= i.end_minute || i.end_minute > MINUTES_PER_DAY {
                    return Err(format!(
                        "{} interval [{}, {}) is not within a day or is empty",
                        day.as_str(),
                        i.start_minute,
                        i.end_minute
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Public holidays and other closed days, as park-local dates `YYYY-MM-DD`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HolidayCalendar {
    pub id: String,
    pub name: String,
    pub dates: Vec<String>,
}

entity_codec!(HolidayCalendar {
    name: "name" = String::new(),
    dates: "dates" = Vec::new(),
});

impl HolidayCalendar {
    /// The dates as day numbers (days since 1970-01-01). Call after validation.
    pub fn days(&self) -> impl Iterator<Item = i32> + '_ {
        self.dates.iter().filter_map(|d| parse_date(d))
    }
}

impl Entity for HolidayCalendar {
    type Schema = DirectorySchema;
    const COLLECTION: Collection = Collection::HolidayCalendars;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        match self.dates.iter().find(|d| parse_date(d).is_none()) {
            Some(bad) => Err(format!("{bad:?} is not a date YYYY-MM-DD")),
            None => Ok(()),
        }
    }
}

/// Everything in a park directory, read at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Directory {
    pub park_id: String,
    pub utc_offset_minutes: i32,
    pub enterprises: BTreeMap<String, Enterprise>,
    pub spaces: BTreeMap<String, Space>,
    pub leases: BTreeMap<String, Lease>,
    pub people: BTreeMap<String, Person>,
    pub credentials: BTreeMap<String, Credential>,
    pub access_groups: BTreeMap<String, AccessGroup>,
    pub schedules: BTreeMap<String, WeeklySchedule>,
    pub holiday_calendars: BTreeMap<String, HolidayCalendar>,
    /// Entities that could not be read; they take no part in decisions.
    pub rejected: Vec<Rejected>,
}

impl ParkDirectory {
    /// A new, empty directory for `park_id`, created at `now`.
    pub fn new(park_id: &str, utc_offset_minutes: i32, now: Timestamp) -> Result<Self, DocError> {
        let offset = check_utc_offset(utc_offset_minutes)?;
        Document::create(now, |am| {
            set_root(am, "park_id", park_id.to_string())?;
            set_root(am, "utc_offset_minutes", offset)
        })
    }

    pub fn park_id(&self) -> Result<String, DocError> {
        Ok(self.root_field::<String>("park_id")?.unwrap_or_default())
    }

    /// The park's fixed offset from UTC in minutes (China: 480).
    pub fn utc_offset_minutes(&self) -> Result<i32, DocError> {
        let offset = self
            .root_field::<i32>("utc_offset_minutes")?
            .unwrap_or(DEFAULT_UTC_OFFSET_MINUTES);
        check_utc_offset(offset)
    }

    pub fn set_utc_offset_minutes(&mut self, minutes: i32) -> Result<(), DocError> {
        let minutes = check_utc_offset(minutes)?;
        self.set_root_field("utc_offset_minutes", minutes)
    }

    /// Reads the whole directory. Unreadable entities are listed in `rejected`.
    ///
    /// Credentials are read on a second thread while the rest is read on this one: in a large
    /// park the two big collections (people and credentials) take about the same time, and a
    /// document can be read from two threads at once.
    pub fn snapshot(&self) -> Result<Directory, DocError> {
        let (credentials, rest) = std::thread::scope(|scope| {
            let credentials = scope.spawn(|| self.entities::<Credential>());
            let rest = (|| {
                Ok::<_, DocError>((
                    self.entities::<Enterprise>()?,
                    self.entities::<Space>()?,
                    self.entities::<Lease>()?,
                    self.entities::<Person>()?,
                    self.entities::<AccessGroup>()?,
                    self.entities::<WeeklySchedule>()?,
                    self.entities::<HolidayCalendar>()?,
                ))
            })();
            let credentials = match credentials.join() {
                Ok(c) => c,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (credentials, rest)
        });
        let credentials = credentials?;
        let (enterprises, spaces, leases, people, access_groups, schedules, holiday_calendars) =
            rest?;
        let mut rejected = Vec::new();
        rejected.extend(enterprises.rejected);
        rejected.extend(spaces.rejected);
        rejected.extend(leases.rejected);
        rejected.extend(people.rejected);
        rejected.extend(credentials.rejected);
        rejected.extend(access_groups.rejected);
        rejected.extend(schedules.rejected);
        rejected.extend(holiday_calendars.rejected);
        Ok(Directory {
            park_id: self.park_id()?,
            utc_offset_minutes: self.utc_offset_minutes()?,
            enterprises: enterprises.items,
            spaces: spaces.items,
            leases: leases.items,
            people: people.items,
            credentials: credentials.items,
            access_groups: access_groups.items,
            schedules: schedules.items,
            holiday_calendars: holiday_calendars.items,
            rejected,
        })
    }

    /// Sets a credential's status.
    pub fn set_credential_status(
        &mut self,
        credential_id: &str,
        status: CredentialStatus,
    ) -> Result<(), DocError> {
        self.update::<Credential>(credential_id, |c| c.status = status)
            .map(drop)
    }

    /// Suspends a credential: every edge denies it from the moment it has this change.
    pub fn suspend_credential(&mut self, credential_id: &str) -> Result<(), DocError> {
        self.set_credential_status(credential_id, CredentialStatus::Suspended)
    }

    /// Marks a credential lost: denied like a suspended one, and reported as lost.
    pub fn report_credential_lost(&mut self, credential_id: &str) -> Result<(), DocError> {
        self.set_credential_status(credential_id, CredentialStatus::Lost)
    }

    /// Reactivates a suspended or lost credential.
    pub fn reactivate_credential(&mut self, credential_id: &str) -> Result<(), DocError> {
        self.set_credential_status(credential_id, CredentialStatus::Active)
    }

    /// Moves a person from one access group to another (only the one list element changes, so
    /// a concurrent change to the person's other groups or fields merges). If the person was
    /// not in `from_group`, this only adds `to_group`.
    pub fn move_person_to_group(
        &mut self,
        person_id: &str,
        from_group: &str,
        to_group: &str,
    ) -> Result<(), DocError> {
        self.require::<AccessGroup>(to_group)?;
        self.update::<Person>(person_id, |p| {
            p.access_group_ids.retain(|g| g != from_group);
            if !p.access_group_ids.iter().any(|g| g == to_group) {
                p.access_group_ids.push(to_group.to_string());
            }
        })
        .map(drop)
    }

    /// Adds a person to an access group (no change if already in it).
    pub fn add_person_to_group(&mut self, person_id: &str, group_id: &str) -> Result<(), DocError> {
        self.require::<AccessGroup>(group_id)?;
        self.update::<Person>(person_id, |p| {
            if !p.access_group_ids.iter().any(|g| g == group_id) {
                p.access_group_ids.push(group_id.to_string());
            }
        })
        .map(drop)
    }

    /// Removes a person from an access group.
    pub fn remove_person_from_group(
        &mut self,
        person_id: &str,
        group_id: &str,
    ) -> Result<(), DocError> {
        self.update::<Person>(person_id, |p| p.access_group_ids.retain(|g| g != group_id))
            .map(drop)
    }

    pub fn set_person_status(
        &mut self,
        person_id: &str,
        status: PersonStatus,
    ) -> Result<(), DocError> {
        self.update::<Person>(person_id, |p| p.status = status)
            .map(drop)
    }

    pub fn set_enterprise_status(
        &mut self,
        enterprise_id: &str,
        status: EnterpriseStatus,
    ) -> Result<(), DocError> {
        self.update::<Enterprise>(enterprise_id, |e| e.status = status)
            .map(drop)
    }

    /// Changes when a lease ends.
    pub fn set_lease_end(&mut self, lease_id: &str, valid_to: Timestamp) -> Result<(), DocError> {
        self.update::<Lease>(lease_id, |l| l.valid_to = valid_to)
            .map(drop)
    }

    /// Terminates a lease: its enterprise's people lose access unless another lease covers them.
    pub fn terminate_lease(&mut self, lease_id: &str) -> Result<(), DocError> {
        self.update::<Lease>(lease_id, |l| l.status = LeaseStatus::Terminated)
            .map(drop)
    }

    /// Adds doors to an access group.
    pub fn add_doors_to_group(
        &mut self,
        group_id: &str,
        door_ids: &[&str],
    ) -> Result<(), DocError> {
        self.update::<AccessGroup>(group_id, |g| {
            for d in door_ids {
                if !g.door_ids.iter().any(|x| x == d) {
                    g.door_ids.push((*d).to_string());
                }
            }
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::{ROOT, ReadDoc as _, transaction::Transactable};

    fn person() -> Person {
        Person {
            id: "p1".into(),
            name: "Li Wei".into(),
            enterprise_id: "e1".into(),
            status: PersonStatus::Active,
            access_group_ids: vec!["g1".into()],
            phone: Some("+86 138 0000 0000".into()),
        }
    }

    fn group(id: &str) -> AccessGroup {
        AccessGroup {
            id: id.into(),
            name: id.into(),
            door_ids: vec![],
            schedule_id: None,
        }
    }

    #[test]
    fn a_new_directory_records_its_schema_and_offset() {
        let doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        assert_eq!(doc.schema_version().unwrap(), 1);
        assert_eq!(doc.park_id().unwrap(), "park-1");
        assert_eq!(doc.utc_offset_minutes().unwrap(), 480);
        let snap = doc.snapshot().unwrap();
        assert!(snap.people.is_empty() && snap.rejected.is_empty());
    }

    #[test]
    fn an_impossible_utc_offset_is_refused() {
        assert!(matches!(
            ParkDirectory::new("p", 2000, 0),
            Err(DocError::InvalidRoot { .. })
        ));
    }

    #[test]
    fn entities_round_trip_through_save_and_load() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&person()).unwrap();
        let schedule = WeeklySchedule {
            id: "s1".into(),
            name: "office hours".into(),
            weekdays: Week::weekdays(&[Interval::new(480, 720), Interval::new(780, 1080)]),
            holiday_calendar_id: Some("cn".into()),
            allow_on_holidays: false,
        };
        doc.upsert(&schedule).unwrap();
        let mut loaded = ParkDirectory::load(&doc.save()).unwrap();
        assert_eq!(loaded.get::<Person>("p1").unwrap(), Some(person()));
        assert_eq!(loaded.get::<WeeklySchedule>("s1").unwrap(), Some(schedule));
        assert_eq!(loaded.heads(), doc.heads());
    }

    #[test]
    fn moving_a_person_changes_only_that_group() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&group("g1")).unwrap();
        doc.upsert(&group("g2")).unwrap();
        doc.upsert(&person()).unwrap();
        doc.move_person_to_group("p1", "g1", "g2").unwrap();
        assert_eq!(
            doc.require::<Person>("p1").unwrap().access_group_ids,
            ["g2"]
        );
        assert!(matches!(
            doc.move_person_to_group("p1", "g2", "nope"),
            Err(DocError::NotFound {
                collection: Collection::AccessGroups,
                ..
            })
        ));
    }

    #[test]
    fn an_invalid_entity_is_refused_on_write() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        let cal = HolidayCalendar {
            id: "cn".into(),
            name: String::new(),
            dates: vec!["2026-02-30".into()],
        };
        let err = doc.upsert(&cal).unwrap_err();
        assert_eq!(
            err.to_string(),
            "holiday_calendars \"cn\" is invalid: \"2026-02-30\" is not a date YYYY-MM-DD"
        );
    }

    #[test]
    fn an_unreadable_entity_is_rejected_and_the_rest_is_read() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&person()).unwrap();
        let am = doc.automerge_mut();
        let (_, people) = am.get(ROOT, "people").unwrap().unwrap();
        let bad = am.put_object(&people, "p2", ObjType::Map).unwrap();
        am.put(&bad, "name", "No Status").unwrap();
        am.put(&bad, "enterprise_id", "e1").unwrap();
        am.put(&bad, "status", "on holiday").unwrap();
        let snap = doc.snapshot().unwrap();
        assert_eq!(snap.people.len(), 1);
        assert_eq!(snap.rejected.len(), 1);
        assert_eq!(snap.rejected[0].id, "p2");
        assert!(
            snap.rejected[0].reason.contains("on holiday"),
            "{}",
            snap.rejected[0].reason
        );
    }

    #[test]
    fn a_version_zero_document_is_migrated_by_adding_defaults() {
        // What an early tool wrote: people only, no schema_version, doc_type or offset.
        let mut am = AutoCommit::new();
        am.put(ROOT, "park_id", "old-park").unwrap();
        let people = am.put_object(ROOT, "people", ObjType::Map).unwrap();
        let p = am.put_object(&people, "p1", ObjType::Map).unwrap();
        am.put(&p, "name", "Li Wei").unwrap();
        am.put(&p, "enterprise_id", "e1").unwrap();
        am.put(&p, "status", "active").unwrap();
        let doc = ParkDirectory::load(&am.save()).unwrap();
        assert_eq!(doc.schema_version().unwrap(), 1);
        assert_eq!(
            doc.utc_offset_minutes().unwrap(),
            DEFAULT_UTC_OFFSET_MINUTES
        );
        assert_eq!(doc.park_id().unwrap(), "old-park");
        let snap = doc.snapshot().unwrap();
        assert_eq!(snap.people["p1"].name, "Li Wei");
        assert_eq!(snap.people["p1"].access_group_ids, Vec::<String>::new());
        for c in DirectorySchema::COLLECTIONS {
            assert!(
                doc.automerge().get(ROOT, c.as_str()).unwrap().is_some(),
                "{c}"
            );
        }
    }

    #[test]
    fn migrating_twice_changes_nothing_more() {
        let mut am = AutoCommit::new();
        am.put(ROOT, "park_id", "old-park").unwrap();
        let mut doc = ParkDirectory::load(&am.save()).unwrap();
        let heads = doc.heads();
        let mut again = ParkDirectory::load(&doc.save()).unwrap();
        assert_eq!(again.heads(), heads);
    }

    #[test]
    fn replicas_that_migrate_concurrently_lose_nothing() {
        let mut am = AutoCommit::new();
        am.put(ROOT, "park_id", "old-park").unwrap();
        let bytes = am.save();
        let mut a = ParkDirectory::load(&bytes).unwrap();
        let mut b = ParkDirectory::load(&bytes).unwrap();
        // Both created `people` (and the other collections) concurrently.
        a.upsert(&group("g1")).unwrap();
        a.upsert(&person()).unwrap();
        let mut p2 = person();
        p2.id = "p2".into();
        b.upsert(&p2).unwrap();
        a.merge(&mut b).unwrap();
        let snap = a.snapshot().unwrap();
        assert_eq!(snap.people.len(), 2);
        // Edits land whichever of the two `people` maps holds the person.
        a.upsert(&group("g2")).unwrap();
        a.move_person_to_group("p1", "g1", "g2").unwrap();
        a.move_person_to_group("p2", "g1", "g2").unwrap();
        let mut reloaded = ParkDirectory::load(&a.save()).unwrap();
        reloaded.merge(&mut b).unwrap();
        let snap = reloaded.snapshot().unwrap();
        assert_eq!(snap.people["p1"].access_group_ids, ["g2"]);
        assert_eq!(snap.people["p2"].access_group_ids, ["g2"]);
    }

    #[test]
    fn bytes_that_are_not_a_document_are_an_error_not_a_panic() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&person()).unwrap();
        let saved = doc.save();
        assert!(ParkDirectory::load(b"not automerge").is_err());
        assert!(ParkDirectory::load(&saved[..saved.len() / 2]).is_err());
        let mut flipped = saved.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xFF;
        assert!(ParkDirectory::load(&flipped).is_err());
        // No bytes at all are an empty document, which migrates to an empty directory.
        let empty = ParkDirectory::load(&[]).unwrap();
        assert_eq!(empty.schema_version().unwrap(), 1);
        assert!(empty.snapshot().unwrap().people.is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.automerge_mut().put(ROOT, "schema_version", 2).unwrap();
        assert!(matches!(
            ParkDirectory::load(&doc.save()),
            Err(DocError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        ));
    }

    #[test]
    fn another_kind_of_document_is_refused() {
        let mut b = crate::building::BuildingDoc::new("park-1", "b1", 0).unwrap();
        let err = ParkDirectory::load(&b.save()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the document is a \"building\", not a \"park_directory\""
        );
    }

    #[test]
    fn changes_name_the_entities_edited_between_two_heads() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&group("g1")).unwrap();
        doc.upsert(&group("g2")).unwrap();
        doc.upsert(&person()).unwrap();
        let before = doc.heads();
        doc.move_person_to_group("p1", "g1", "g2").unwrap();
        doc.remove::<AccessGroup>("g1").unwrap();
        doc.set_utc_offset_minutes(420).unwrap();
        let after = doc.heads();
        let changes = doc.changes(&before, &after);
        let ids: Vec<_> = changes.entities.iter().cloned().collect();
        assert_eq!(
            ids,
            [
                (Collection::People, "p1".to_string()),
                (Collection::AccessGroups, "g1".to_string()),
            ]
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        assert!(changes.root_fields.contains("utc_offset_minutes"));
        assert!(changes.touches(Collection::People));
        assert!(!changes.touches(Collection::Credentials));
        assert!(doc.changes(&after, &after).is_empty());
    }
}

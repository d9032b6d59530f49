//! The parking document: one per park (or per car park): lots, lanes, tariffs, passes,
//! enterprise allowances and blocked plates, plus the park's UTC offset (night rates are by
//! local time, and a car park's edge needs no other document).
//!
//! Occupancy (cars inside, allowance places in use) is not here: it changes with every car and
//! is the edge's bookkeeping. Gate decisions and fees are in [`crate::gate`] and
//! [`crate::tariff`]. This module does no IO.
//!
//! ```text
//! { schema_version: 1, doc_type: "parking", park_id: "p1", utc_offset_minutes: 480,
//!   lots:     { "lot-a": { name, capacity, tariff_id? } },
//!   lanes:    { "lane-1": { lot_id, direction: "in"|"out", name } },
//!   tariffs:  { "std": { currency, free_minutes, period_minutes, day_rate_fen,
//!                        night_start_minute, night_end_minute, night_rate_fen,
//!                        daily_cap_fen?, lost_ticket_fen } },
//!   passes:   { "ps-1": { plate, kind: "monthly"|"enterprise_allowance"|"visitor",
//!                         lot_ids: [..], valid_from, valid_to, status: "active"|"suspended",
//!                         enterprise_id? } },
//!   allowances: { "al-1": { enterprise_id, lot_id, quota } },
//!   blocked_plates: { "粤B12345": { reason } } }
//! ```

use std::collections::BTreeMap;

use automerge::AutoCommit;

use crate::compat::{entity_codec, text_enum};
use crate::directory::DEFAULT_UTC_OFFSET_MINUTES;
use crate::document::{
    Collection, DocError, Document, Entity, Rejected, Schema, check_utc_offset, check_validity,
    migrate_v0_common, root_has, set_root, within,
};
use crate::time::{MINUTES_PER_DAY, Timestamp};

/// The parking document's schema: `doc_type` `parking`, version 1.
#[derive(Debug)]
pub enum ParkingSchema {}

impl Schema for ParkingSchema {
    const DOC_TYPE: &'static str = "parking";
    const VERSION: i64 = 1;
    const COLLECTIONS: &'static [Collection] = &[
        Collection::Lots,
        Collection::Lanes,
        Collection::Tariffs,
        Collection::Passes,
        Collection::Allowances,
        Collection::BlockedPlates,
    ];

    /// Version 0 → 1: adds `doc_type`, missing collections, and the default UTC offset.
    fn migrate_step(doc: &mut AutoCommit, from: i64) -> Result<(), DocError> {
        match from {
            0 => {
                migrate_v0_common::<Self>(doc)?;
                if !root_has(doc, "utc_offset_minutes")? {
                    set_root(doc, "utc_offset_minutes", DEFAULT_UTC_OFFSET_MINUTES)?;
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

/// A parking document.
pub type ParkingDoc = Document<ParkingSchema>;

/// Normalizes a plate as read by a camera or typed by a person: ASCII letters upper case,
/// spaces, dots, hyphens and the middle dot removed. `粤B·12345` and `粤b 12345` become `粤B12345`.
/// Plates are stored and looked up in this form.
pub fn normalize_plate(plate: &str) -> String {
    plate
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '·' | '•' | '\t'))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

text_enum! {
    /// Which way a lane's camera sees cars go.
    pub enum LaneDirection { In => "in", Out => "out" }
}

text_enum! {
    /// A pass's kind. `monthly`: parks free in its lots while valid. `enterprise_allowance`:
    /// parks free on its enterprise's allowance while the allowance has a free place.
    /// `visitor`: a pre-registered visitor, charged by the tariff to the pass's enterprise.
    pub enum PassKind {
        Monthly => "monthly",
        EnterpriseAllowance => "enterprise_allowance",
        Visitor => "visitor",
    }
}

text_enum! {
    pub enum PassStatus { Active => "active", Suspended => "suspended" }
}

/// A car park.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    pub id: String,
    pub name: String,
    /// Places for visitors and everyone else; monthly and allowance cars are admitted even when
    /// it is reached (their places are reserved).
    pub capacity: u32,
    /// The tariff for stays in this lot; without one, exits that owe a fee need an attendant.
    pub tariff_id: Option<String>,
}

entity_codec!(Lot {
    name: "name" = String::new(),
    capacity: "capacity",
    tariff_id: "tariff_id",
});

impl Entity for Lot {
    type Schema = ParkingSchema;
    const COLLECTION: Collection = Collection::Lots;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
}

/// A lane with a barrier and a plate camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    pub id: String,
    pub lot_id: String,
    pub direction: LaneDirection,
    pub name: String,
}

entity_codec!(Lane {
    lot_id: "lot_id",
    direction: "direction",
    name: "name" = String::new(),
});

impl Entity for Lane {
    type Schema = ParkingSchema;
    const COLLECTION: Collection = Collection::Lanes;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
}

/// How a visitor's stay is charged. See [`crate::tariff::parking_fee`] for the exact rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tariff {
    pub id: String,
    /// ISO 4217 code of every amount here, e.g. `CNY`.
    pub currency: String,
    /// Stays up to this long are free; longer stays are charged from entry.
    pub free_minutes: u32,
    /// Length of a charged period; a started period is charged in full.
    pub period_minutes: u32,
    /// Charge for a period that starts outside the night window.
    pub day_rate_fen: i64,
    /// Night window `[night_start_minute, night_end_minute)` in park-local minutes of the day;
    /// it wraps past midnight when start > end, and is empty when start == end.
    pub night_start_minute: u16,
    pub night_end_minute: u16,
    /// Charge for a period that starts inside the night window.
    pub night_rate_fen: i64,
    /// Most charged for each 24-hour block counted from entry; none when absent.
    pub daily_cap_fen: Option<i64>,
    /// Flat charge when the entry time is unknown (lost ticket, no entry record).
    pub lost_ticket_fen: i64,
}

entity_codec!(Tariff {
    currency: "currency" = "CNY".to_string(),
    free_minutes: "free_minutes" = 0,
    period_minutes: "period_minutes",
    day_rate_fen: "day_rate_fen",
    night_start_minute: "night_start_minute" = 0,
    night_end_minute: "night_end_minute" = 0,
    night_rate_fen: "night_rate_fen" = 0,
    daily_cap_fen: "daily_cap_fen",
    lost_ticket_fen: "lost_ticket_fen" = 0,
});

impl Entity for Tariff {
    type Schema = ParkingSchema;
    const COLLECTION: Collection = Collection::Tariffs;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        if self.period_minutes == 0 {
            return Err("period_minutes must be at least 1".into());
        }
        if self.night_start_minute >= MINUTES_PER_DAY || self.night_end_minute >= MINUTES_PER_DAY {
            return Err("the night window's minutes must be below 1440".into());
        }
        let amounts = [
            self.day_rate_fen,
            self.night_rate_fen,
            self.lost_ticket_fen,
            self.daily_cap_fen.unwrap_or(0),
        ];
        if amounts.iter().any(|a| *a < 0) {
            return Err("amounts must not be negative".into());
        }
        Ok(())
    }
}

/// A plate's right to park.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    pub id: String,
    /// Normalized with [`normalize_plate`].
    pub plate: String,
    pub kind: PassKind,
    pub lot_ids: Vec<String>,
    pub valid_from: Timestamp,
    pub valid_to: Timestamp,
    pub status: PassStatus,
    /// The enterprise whose allowance this pass uses, or who pays for this visitor.
    pub enterprise_id: Option<String>,
}

entity_codec!(Pass {
    plate: "plate",
    kind: "kind",
    lot_ids: "lot_ids" = Vec::new(),
    valid_from: "valid_from",
    valid_to: "valid_to",
    status: "status",
    enterprise_id: "enterprise_id",
});

impl Pass {
    /// Whether the pass lets its plate park in `lot_id` at `now`.
    pub fn valid_for(&self, lot_id: &str, now: Timestamp) -> bool {
        self.status == PassStatus::Active
            && within(now, Some(self.valid_from), Some(self.valid_to))
            && self.lot_ids.iter().any(|l| l == lot_id)
    }
}

impl Entity for Pass {
    type Schema = ParkingSchema;
    const COLLECTION: Collection = Collection::Passes;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        if self.plate.is_empty() || self.plate != normalize_plate(&self.plate) {
            return Err(format!("plate {:?} is not normalized", self.plate));
        }
        if self.kind == PassKind::EnterpriseAllowance && self.enterprise_id.is_none() {
            return Err("an enterprise_allowance pass needs an enterprise_id".into());
        }
        check_validity(Some(self.valid_from), Some(self.valid_to))
    }
}

/// How many cars of an enterprise may park at once in a lot on its allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    pub id: String,
    pub enterprise_id: String,
    pub lot_id: String,
    pub quota: u32,
}

entity_codec!(Allowance {
    enterprise_id: "enterprise_id",
    lot_id: "lot_id",
    quota: "quota",
});

impl Entity for Allowance {
    type Schema = ParkingSchema;
    const COLLECTION: Collection = Collection::Allowances;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
}

/// A plate that may not enter. Its id is the normalized plate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedPlate {
    pub id: String,
    pub reason: String,
}

entity_codec!(BlockedPlate {
    reason: "reason" = String::new(),
});

impl Entity for BlockedPlate {
    type Schema = ParkingSchema;
    const COLLECTION: Collection = Collection::BlockedPlates;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        if self.id != normalize_plate(&self.id) {
            return Err(format!("plate {:?} is not normalized", self.id));
        }
        Ok(())
    }
}

/// Everything in a parking document, read at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Parking {
    pub park_id: String,
    pub utc_offset_minutes: i32,
    pub lots: BTreeMap<String, Lot>,
    pub lanes: BTreeMap<String, Lane>,
    pub tariffs: BTreeMap<String, Tariff>,
    pub passes: BTreeMap<String, Pass>,
    pub allowances: BTreeMap<String, Allowance>,
    pub blocked_plates: BTreeMap<String, BlockedPlate>,
    pub rejected: Vec<Rejected>,
}

impl ParkingDoc {
    /// A new parking document, created at `now`.
    pub fn new(park_id: &str, utc_offset_minutes: i32, now: Timestamp) -> Result<Self, DocError> {
        let offset = check_utc_offset(utc_offset_minutes)?;
        Document::create(now, |am| {
            set_root(am, "park_id", park_id.to_string())?;
            set_root(am, "utc_offset_minutes", offset)
        })
    }

    pub fn utc_offset_minutes(&self) -> Result<i32, DocError> {
        let offset = self
            .root_field::<i32>("utc_offset_minutes")?
            .unwrap_or(DEFAULT_UTC_OFFSET_MINUTES);
        check_utc_offset(offset)
    }

    /// Reads the whole parking document.
    pub fn snapshot(&self) -> Result<Parking, DocError> {
        let mut rejected = Vec::new();
        macro_rules! take {
            ($ty:ty) => {{
                let e = self.entities::<$ty>()?;
                rejected.extend(e.rejected);
                e.items
            }};
        }
        Ok(Parking {
            park_id: self.root_field::<String>("park_id")?.unwrap_or_default(),
            utc_offset_minutes: self.utc_offset_minutes()?,
            lots: take!(Lot),
            lanes: take!(Lane),
            tariffs: take!(Tariff),
            passes: take!(Pass),
            allowances: take!(Allowance),
            blocked_plates: take!(BlockedPlate),
            rejected,
        })
    }

    /// Blocks a plate from entering (normalizes it first).
    pub fn block_plate(&mut self, plate: &str, reason: &str) -> Result<(), DocError> {
        self.upsert(&BlockedPlate {
            id: normalize_plate(plate),
            reason: reason.to_string(),
        })
    }

    /// Lets a blocked plate in again. Returns whether it was blocked.
    pub fn unblock_plate(&mut self, plate: &str) -> Result<bool, DocError> {
        self.remove::<BlockedPlate>(&normalize_plate(plate))
    }

    pub fn set_pass_status(&mut self, pass_id: &str, status: PassStatus) -> Result<(), DocError> {
        self.update::<Pass>(pass_id, |p| p.status = status)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plates_are_normalized_the_way_cameras_and_people_write_them() {
        assert_eq!(normalize_plate("粤b·12345"), "粤B12345");
        assert_eq!(normalize_plate(" 京A-8 8888 "), "京A88888");
    }

    #[test]
    fn a_tariff_with_a_zero_period_is_refused() {
        let mut doc = ParkingDoc::new("park-1", 480, 0).unwrap();
        let tariff = Tariff {
            id: "t".into(),
            currency: "CNY".into(),
            free_minutes: 15,
            period_minutes: 0,
            day_rate_fen: 500,
            night_start_minute: 0,
            night_end_minute: 0,
            night_rate_fen: 0,
            daily_cap_fen: None,
            lost_ticket_fen: 0,
        };
        assert!(doc.upsert(&tariff).is_err());
    }

    #[test]
    fn blocking_and_unblocking_a_plate_round_trips() {
        let mut doc = ParkingDoc::new("park-1", 480, 0).unwrap();
        doc.block_plate("粤b 12345", "unpaid fees").unwrap();
        let snap = doc.snapshot().unwrap();
        assert_eq!(snap.blocked_plates["粤B12345"].reason, "unpaid fees");
        assert!(doc.unblock_plate("粤B12345").unwrap());
        assert!(doc.snapshot().unwrap().blocked_plates.is_empty());
    }
}

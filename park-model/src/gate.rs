//! Parking barrier decisions: whether a plate seen at an entry lane may enter, and what it owes
//! at an exit lane. [`ParkingIndex`] is derived from a parking document; it is small (lots,
//! lanes, tariffs, passes) and cheap to rebuild when the document changes.
//!
//! Entry, in this order: the lane must be a known entry lane of a known lot → a blocked plate
//! is denied → a valid monthly pass for the lot enters free → an enterprise allowance pass
//! enters on its enterprise's allowance while fewer than `quota` of that enterprise's cars
//! are inside on it → anyone else is a visitor (with a visitor pass, charged to the pass's
//! enterprise), admitted while the lot has room. Monthly and allowance cars are admitted when
//! the lot is full: their places are reserved.
//!
//! Exit: the fee follows [`crate::tariff`]. A monthly or allowance pass still valid at exit
//! pays nothing; one that is no longer valid pays the tariff for the part of the stay after
//! its validity ended (all of it if it was suspended or deleted). An allowance car releases its
//! allowance place whatever it pays. With no entry record (lost ticket), a plate with a valid
//! monthly or allowance pass leaves free; anyone else pays the lost-ticket fee.
//!
//! Occupancy is the edge's bookkeeping, not a document: entry takes the current counts through
//! [`ParkingState`], and the decisions say what to count ([`EntryKind`],
//! [`ExitDecision::release_allowance`]). This module does no IO and reads no clock.

use std::collections::HashMap;
use std::fmt;

use crate::parking::{
    Lane, LaneDirection, Lot, Parking, Pass, PassKind, PassStatus, Tariff, normalize_plate,
};
use crate::tariff::{lost_ticket_fee, parking_fee};
use crate::time::Timestamp;

/// Why a barrier opens or stays shut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParkingReason {
    /// Entry or exit on a valid monthly pass.
    MonthlyPass,
    /// Entry or exit on an enterprise allowance.
    Allowance,
    /// Entry as a visitor, paying at exit.
    Visitor,
    /// Entry as a pre-registered visitor whose fee is charged to an enterprise.
    VisitorPass,
    /// Exit within the free minutes.
    FreePeriod,
    /// Exit owes a fee to be paid before the barrier opens.
    FeeDue,
    /// Exit charged to the visitor pass's enterprise.
    ChargedToEnterprise,
    /// Exit without an entry record: the lost-ticket fee is due.
    LostTicket,
    /// The pass used at entry is no longer valid: the rest of the stay is charged.
    PassNoLongerValid,
    PlateBlocked,
    LotFull,
    UnknownLane,
    UnknownLot,
    /// An entry lane used for an exit or the other way round.
    WrongDirection,
    /// A fee is owed but the lot has no usable tariff: an attendant must decide.
    NoTariff,
}

impl ParkingReason {
    pub const ALL: [ParkingReason; 15] = [
        ParkingReason::MonthlyPass,
        ParkingReason::Allowance,
        ParkingReason::Visitor,
        ParkingReason::VisitorPass,
        ParkingReason::FreePeriod,
        ParkingReason::FeeDue,
        ParkingReason::ChargedToEnterprise,
        ParkingReason::LostTicket,
        ParkingReason::PassNoLongerValid,
        ParkingReason::PlateBlocked,
        ParkingReason::LotFull,
        ParkingReason::UnknownLane,
        ParkingReason::UnknownLot,
        ParkingReason::WrongDirection,
        ParkingReason::NoTariff,
    ];

    /// The stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkingReason::MonthlyPass => "monthly_pass",
            ParkingReason::Allowance => "allowance",
            ParkingReason::Visitor => "visitor",
            ParkingReason::VisitorPass => "visitor_pass",
            ParkingReason::FreePeriod => "free_period",
            ParkingReason::FeeDue => "fee_due",
            ParkingReason::ChargedToEnterprise => "charged_to_enterprise",
            ParkingReason::LostTicket => "lost_ticket",
            ParkingReason::PassNoLongerValid => "pass_no_longer_valid",
            ParkingReason::PlateBlocked => "plate_blocked",
            ParkingReason::LotFull => "lot_full",
            ParkingReason::UnknownLane => "unknown_lane",
            ParkingReason::UnknownLot => "unknown_lot",
            ParkingReason::WrongDirection => "wrong_direction",
            ParkingReason::NoTariff => "no_tariff",
        }
    }

    /// A sentence for the driver's display or the attendant.
    pub fn sentence(self) -> &'static str {
        match self {
            ParkingReason::MonthlyPass => "Monthly pass: welcome.",
            ParkingReason::Allowance => "Parking on your company's allowance.",
            ParkingReason::Visitor => "Visitor parking: pay at exit.",
            ParkingReason::VisitorPass => "Registered visitor: your host pays.",
            ParkingReason::FreePeriod => "Within the free period: no charge.",
            ParkingReason::FeeDue => "Please pay the parking fee.",
            ParkingReason::ChargedToEnterprise => "Charged to your host company.",
            ParkingReason::LostTicket => "No entry record: the lost-ticket fee applies.",
            ParkingReason::PassNoLongerValid => {
                "Your pass has ended: the rest of the stay is charged."
            }
            ParkingReason::PlateBlocked => "This vehicle may not enter. Please see the attendant.",
            ParkingReason::LotFull => "The car park is full.",
            ParkingReason::UnknownLane => "This lane is not configured.",
            ParkingReason::UnknownLot => "This lane's car park is not configured.",
            ParkingReason::WrongDirection => "Wrong lane for this direction.",
            ParkingReason::NoTariff => "No tariff for this car park: please see the attendant.",
        }
    }
}

impl fmt::Display for ParkingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a car entered; the edge keeps it with the session and hands it back at exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Monthly {
        pass_id: String,
    },
    Allowance {
        pass_id: String,
        enterprise_id: String,
    },
    Visitor {
        /// The visitor pass, if the visitor was registered.
        pass_id: Option<String>,
        /// Who pays instead of the driver.
        enterprise_id: Option<String>,
    },
}

/// The answer at an entry lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryDecision {
    pub granted: bool,
    pub reason: ParkingReason,
    /// The normalized plate.
    pub plate: String,
    /// The lot the lane belongs to, when known.
    pub lot_id: Option<String>,
    /// Set when granted: what to record for the session and the occupancy counts.
    pub kind: Option<EntryKind>,
}

/// The edge's record of a car inside, as needed at exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkingSession {
    pub lot_id: String,
    pub entered_at: Timestamp,
    pub kind: EntryKind,
}

/// Who pays an exit fee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payer {
    Driver,
    Enterprise(String),
}

/// The answer at an exit lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitDecision {
    /// Whether to lift the barrier now. When `false` and `fee_fen > 0`, lift it once paid.
    pub open: bool,
    pub reason: ParkingReason,
    pub plate: String,
    pub fee_fen: i64,
    /// The currency of `fee_fen` (empty when no tariff was involved).
    pub currency: String,
    pub payer: Payer,
    /// `(enterprise_id, lot_id)` whose allowance place this exit frees.
    pub release_allowance: Option<(String, String)>,
}

/// Current counts the entry decision needs, kept by the edge.
pub trait ParkingState {
    /// Cars inside the lot now, of every kind.
    fn occupied(&self, lot_id: &str) -> u32;
    /// Cars of the enterprise inside the lot on its allowance now.
    fn allowance_in_use(&self, enterprise_id: &str, lot_id: &str) -> u32;
}

/// A plain [`ParkingState`] in hash maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Occupancy {
    pub occupied: HashMap<String, u32>,
    pub allowance_in_use: HashMap<(String, String), u32>,
}

impl Occupancy {
    /// Counts a granted entry.
    pub fn record_entry(&mut self, decision: &EntryDecision) {
        let (Some(lot), Some(kind)) = (&decision.lot_id, &decision.kind) else {
            return;
        };
        *self.occupied.entry(lot.clone()).or_default() += 1;
        if let EntryKind::Allowance { enterprise_id, .. } = kind {
            *self
                .allowance_in_use
                .entry((enterprise_id.clone(), lot.clone()))
                .or_default() += 1;
        }
    }

    /// Counts an exit from `lot_id` (call when the barrier has opened).
    pub fn record_exit(&mut self, lot_id: &str, decision: &ExitDecision) {
        if let Some(n) = self.occupied.get_mut(lot_id) {
            *n = n.saturating_sub(1);
        }
        if let Some(key) = &decision.release_allowance
            && let Some(n) = self.allowance_in_use.get_mut(key)
        {
            *n = n.saturating_sub(1);
        }
    }
}

impl ParkingState for Occupancy {
    fn occupied(&self, lot_id: &str) -> u32 {
        self.occupied.get(lot_id).copied().unwrap_or(0)
    }

    fn allowance_in_use(&self, enterprise_id: &str, lot_id: &str) -> u32 {
        // A tuple of Strings cannot be borrowed from (&str, &str); this helper is for tests
        // and small sites. A busy edge keeps its own state type.
        self.allowance_in_use
            .get(&(enterprise_id.to_string(), lot_id.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// Lots, lanes, tariffs, passes by plate, allowances and blocked plates, for gate decisions.
#[derive(Debug, Clone, Default)]
pub struct ParkingIndex {
    utc_offset_minutes: i32,
    lots: HashMap<String, Lot>,
    lanes: HashMap<String, Lane>,
    tariffs: HashMap<String, Tariff>,
    /// Normalized plate → its passes, sorted by id.
    passes: HashMap<String, Vec<Pass>>,
    /// `(enterprise, lot)` → total quota (several allowances add up).
    quotas: HashMap<(String, String), u32>,
    blocked: HashMap<String, String>,
}

impl ParkingIndex {
    /// Builds the index from a parking document's contents (rejected entities take no part).
    pub fn build(parking: &Parking) -> ParkingIndex {
        let mut passes: HashMap<String, Vec<Pass>> = HashMap::new();
        for p in parking.passes.values() {
            passes.entry(p.plate.clone()).or_default().push(p.clone());
        }
        for list in passes.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        let mut quotas = HashMap::new();
        for a in parking.allowances.values() {
            *quotas
                .entry((a.enterprise_id.clone(), a.lot_id.clone()))
                .or_insert(0u32) += a.quota;
        }
        ParkingIndex {
            utc_offset_minutes: parking.utc_offset_minutes,
            lots: parking.lots.clone().into_iter().collect(),
            lanes: parking.lanes.clone().into_iter().collect(),
            tariffs: parking.tariffs.clone().into_iter().collect(),
            passes,
            quotas,
            blocked: parking
                .blocked_plates
                .iter()
                .map(|(k, v)| (k.clone(), v.reason.clone()))
                .collect(),
        }
    }

    /// The reason a plate is blocked, if it is.
    pub fn blocked_reason(&self, plate: &str) -> Option<&str> {
        self.blocked
            .get(&normalize_plate(plate))
            .map(String::as_str)
    }

    fn passes_of(&self, plate: &str) -> &[Pass] {
        self.passes.get(plate).map(Vec::as_slice).unwrap_or(&[])
    }

    fn lane_lot(
        &self,
        lane_id: &str,
        direction: LaneDirection,
    ) -> Result<&Lot, (ParkingReason, Option<String>)> {
        let lane = self
            .lanes
            .get(lane_id)
            .ok_or((ParkingReason::UnknownLane, None))?;
        if lane.direction != direction {
            return Err((ParkingReason::WrongDirection, Some(lane.lot_id.clone())));
        }
        self.lots
            .get(&lane.lot_id)
            .ok_or((ParkingReason::UnknownLot, Some(lane.lot_id.clone())))
    }

    /// Decides an entry of `plate` (as read, normalized here) at `lane_id` at `now`.
    pub fn decide_entry(
        &self,
        plate: &str,
        lane_id: &str,
        now: Timestamp,
        state: &impl ParkingState,
    ) -> EntryDecision {
        let plate = normalize_plate(plate);
        let deny = |reason, lot_id| EntryDecision {
            granted: false,
            reason,
            plate: plate.clone(),
            lot_id,
            kind: None,
        };
        let lot = match self.lane_lot(lane_id, LaneDirection::In) {
            Ok(lot) => lot,
            Err((reason, lot_id)) => return deny(reason, lot_id),
        };
        let grant = |reason, kind| EntryDecision {
            granted: true,
            reason,
            plate: plate.clone(),
            lot_id: Some(lot.id.clone()),
            kind: Some(kind),
        };
        if self.blocked.contains_key(&plate) {
            return deny(ParkingReason::PlateBlocked, Some(lot.id.clone()));
        }
        let passes = self.passes_of(&plate);
        let valid = |kind: PassKind| {
            passes
                .iter()
                .filter(move |p| p.kind == kind && p.valid_for(&lot.id, now))
        };
        if let Some(p) = valid(PassKind::Monthly).next() {
            return grant(
                ParkingReason::MonthlyPass,
                EntryKind::Monthly {
                    pass_id: p.id.clone(),
                },
            );
        }
        for p in valid(PassKind::EnterpriseAllowance) {
            let Some(enterprise) = &p.enterprise_id else {
                continue;
            };
            let quota = self
                .quotas
                .get(&(enterprise.clone(), lot.id.clone()))
                .copied()
                .unwrap_or(0);
            if state.allowance_in_use(enterprise, &lot.id) < quota {
                return grant(
                    ParkingReason::Allowance,
                    EntryKind::Allowance {
                        pass_id: p.id.clone(),
                        enterprise_id: enterprise.clone(),
                    },
                );
            }
        }
        if state.occupied(&lot.id) >= lot.capacity {
            return deny(ParkingReason::LotFull, Some(lot.id.clone()));
        }
        match valid(PassKind::Visitor).next() {
            Some(p) => grant(
                ParkingReason::VisitorPass,
                EntryKind::Visitor {
                    pass_id: Some(p.id.clone()),
                    enterprise_id: p.enterprise_id.clone(),
                },
            ),
            None => grant(
                ParkingReason::Visitor,
                EntryKind::Visitor {
                    pass_id: None,
                    enterprise_id: None,
                },
            ),
        }
    }

    /// Decides an exit of `plate` at `lane_id` at `now`. `session` is the edge's record of the
    /// entry; `None` when there is none (a lost ticket).
    pub fn decide_exit(
        &self,
        plate: &str,
        lane_id: &str,
        session: Option<&ParkingSession>,
        now: Timestamp,
    ) -> ExitDecision {
        let plate = normalize_plate(plate);
        let mut out = ExitDecision {
            open: false,
            reason: ParkingReason::FeeDue,
            plate: plate.clone(),
            fee_fen: 0,
            currency: String::new(),
            payer: Payer::Driver,
            release_allowance: None,
        };
        let lane_lot = match self.lane_lot(lane_id, LaneDirection::Out) {
            Ok(lot) => lot,
            Err((reason, _)) => {
                out.reason = reason;
                return out;
            }
        };
        let Some(session) = session else {
            // No entry record: a valid pass still leaves free.
            let free_pass = self.passes_of(&plate).iter().find(|p| {
                matches!(p.kind, PassKind::Monthly | PassKind::EnterpriseAllowance)
                    && p.valid_for(&lane_lot.id, now)
            });
            if let Some(p) = free_pass {
                out.open = true;
                out.reason = match p.kind {
                    PassKind::Monthly => ParkingReason::MonthlyPass,
                    _ => ParkingReason::Allowance,
                };
                return out;
            }
            return self.charge(out, &lane_lot.id, None, now, ParkingReason::LostTicket);
        };
        let lot_id = session.lot_id.as_str();
        match &session.kind {
            EntryKind::Monthly { pass_id } | EntryKind::Allowance { pass_id, .. } => {
                if let EntryKind::Allowance { enterprise_id, .. } = &session.kind {
                    out.release_allowance = Some((enterprise_id.clone(), lot_id.to_string()));
                }
                let pass = self.passes_of(&plate).iter().find(|p| &p.id == pass_id);
                if pass.is_some_and(|p| p.valid_for(lot_id, now)) {
                    out.open = true;
                    out.reason = match session.kind {
                        EntryKind::Monthly { .. } => ParkingReason::MonthlyPass,
                        _ => ParkingReason::Allowance,
                    };
                    return out;
                }
                // Charged from when the pass stopped covering the stay: its end if it simply
                // expired during the stay, else (suspended, deleted, moved) from entry.
                let from = match pass {
                    Some(p) if p.status == PassStatus::Active && p.valid_to <= now => {
                        p.valid_to.max(session.entered_at)
                    }
                    _ => session.entered_at,
                };
                self.charge(
                    out,
                    lot_id,
                    Some(from),
                    now,
                    ParkingReason::PassNoLongerValid,
                )
            }
            EntryKind::Visitor {
                pass_id,
                enterprise_id,
            } => {
                let charged = self.charge(
                    out,
                    lot_id,
                    Some(session.entered_at),
                    now,
                    ParkingReason::FeeDue,
                );
                if charged.reason != ParkingReason::FeeDue {
                    return charged;
                }
                // The host pays if the visitor pass is still valid at exit.
                let host_pays = pass_id.as_ref().is_some_and(|id| {
                    self.passes_of(&plate)
                        .iter()
                        .any(|p| &p.id == id && p.valid_for(lot_id, now))
                });
                match (host_pays, enterprise_id) {
                    (true, Some(e)) => ExitDecision {
                        open: true,
                        reason: ParkingReason::ChargedToEnterprise,
                        payer: Payer::Enterprise(e.clone()),
                        ..charged
                    },
                    _ => charged,
                }
            }
        }
    }

    /// Computes the fee for `[from, now]` (`None`: lost ticket) in `lot_id` into `out`.
    fn charge(
        &self,
        mut out: ExitDecision,
        lot_id: &str,
        from: Option<Timestamp>,
        now: Timestamp,
        reason_if_due: ParkingReason,
    ) -> ExitDecision {
        let tariff = self
            .lots
            .get(lot_id)
            .and_then(|lot| lot.tariff_id.as_ref())
            .and_then(|t| self.tariffs.get(t));
        let Some(tariff) = tariff else {
            out.reason = ParkingReason::NoTariff;
            return out;
        };
        let fee = match from {
            Some(from) => parking_fee(tariff, from, now, self.utc_offset_minutes),
            None => lost_ticket_fee(tariff),
        };
        let Ok(fee) = fee else {
            out.reason = ParkingReason::NoTariff;
            return out;
        };
        out.currency = tariff.currency.clone();
        out.fee_fen = fee;
        if fee == 0 {
            out.open = true;
            out.reason = ParkingReason::FreePeriod;
        } else {
            out.open = false;
            out.reason = reason_if_due;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parking::{Allowance, BlockedPlate};
    use crate::time::{MICROS_PER_MINUTE, local_timestamp};
    use std::collections::BTreeMap;

    fn at(h: u32, m: u32) -> Timestamp {
        local_timestamp("2026-10-08", h, m, 480).unwrap()
    }

    fn pass(id: &str, plate: &str, kind: PassKind, enterprise: Option<&str>) -> Pass {
        Pass {
            id: id.into(),
            plate: plate.into(),
            kind,
            lot_ids: vec!["lot".into()],
            valid_from: at(0, 0),
            valid_to: at(23, 0),
            status: PassStatus::Active,
            enterprise_id: enterprise.map(Into::into),
        }
    }

    fn parking() -> Parking {
        let mut p = Parking {
            park_id: "park".into(),
            utc_offset_minutes: 480,
            lots: BTreeMap::new(),
            lanes: BTreeMap::new(),
            tariffs: BTreeMap::new(),
            passes: BTreeMap::new(),
            allowances: BTreeMap::new(),
            blocked_plates: BTreeMap::new(),
            rejected: vec![],
        };
        p.lots.insert(
            "lot".into(),
            Lot {
                id: "lot".into(),
                name: "North".into(),
                capacity: 2,
                tariff_id: Some("std".into()),
            },
        );
        for (id, direction) in [("in", LaneDirection::In), ("out", LaneDirection::Out)] {
            p.lanes.insert(
                id.into(),
                Lane {
                    id: id.into(),
                    lot_id: "lot".into(),
                    direction,
                    name: id.into(),
                },
            );
        }
        p.tariffs.insert(
            "std".into(),
            Tariff {
                id: "std".into(),
                currency: "CNY".into(),
                free_minutes: 15,
                period_minutes: 60,
                day_rate_fen: 500,
                night_start_minute: 22 * 60,
                night_end_minute: 7 * 60,
                night_rate_fen: 200,
                daily_cap_fen: Some(4000),
                lost_ticket_fen: 10_000,
            },
        );
        for ps in [
            pass("m1", "京A00001", PassKind::Monthly, None),
            pass(
                "a1",
                "京A00002",
                PassKind::EnterpriseAllowance,
                Some("acme"),
            ),
            pass(
                "a2",
                "京A00003",
                PassKind::EnterpriseAllowance,
                Some("acme"),
            ),
            pass("v1", "京A00004", PassKind::Visitor, Some("acme")),
        ] {
            p.passes.insert(ps.id.clone(), ps);
        }
        p.allowances.insert(
            "al".into(),
            Allowance {
                id: "al".into(),
                enterprise_id: "acme".into(),
                lot_id: "lot".into(),
                quota: 1,
            },
        );
        p.blocked_plates.insert(
            "京A66666".into(),
            BlockedPlate {
                id: "京A66666".into(),
                reason: "unpaid".into(),
            },
        );
        p
    }

    #[test]
    fn entries_follow_blocked_monthly_allowance_visitor_order() {
        let index = ParkingIndex::build(&parking());
        let mut occ = Occupancy::default();
        let now = at(9, 0);
        let d = index.decide_entry("京a 66666", "in", now, &occ);
        assert_eq!((d.granted, d.reason), (false, ParkingReason::PlateBlocked));
        assert_eq!(index.blocked_reason("京A66666"), Some("unpaid"));

        let d = index.decide_entry("京A00002", "in", now, &occ);
        assert_eq!(d.reason, ParkingReason::Allowance);
        occ.record_entry(&d);
        // The allowance's one place is taken: the second car of the enterprise is a visitor.
        let d = index.decide_entry("京A00003", "in", now, &occ);
        assert_eq!(d.reason, ParkingReason::Visitor);
        occ.record_entry(&d);
        // The lot (capacity 2) is full for visitors but not for a monthly pass.
        let d = index.decide_entry("京B12345", "in", now, &occ);
        assert_eq!((d.granted, d.reason), (false, ParkingReason::LotFull));
        let d = index.decide_entry("京A00001", "in", now, &occ);
        assert_eq!((d.granted, d.reason), (true, ParkingReason::MonthlyPass));
        // An expired monthly pass is a visitor like anyone else.
        let d = index.decide_entry("京A00001", "in", at(23, 30), &Occupancy::default());
        assert_eq!(d.reason, ParkingReason::Visitor);
    }

    #[test]
    fn lanes_must_exist_and_face_the_right_way() {
        let index = ParkingIndex::build(&parking());
        let occ = Occupancy::default();
        assert_eq!(
            index.decide_entry("X", "nope", 0, &occ).reason,
            ParkingReason::UnknownLane
        );
        assert_eq!(
            index.decide_entry("X", "out", 0, &occ).reason,
            ParkingReason::WrongDirection
        );
        assert_eq!(
            index.decide_exit("X", "in", None, 0).reason,
            ParkingReason::WrongDirection
        );
    }

    #[test]
    fn a_visitor_pays_by_the_tariff_and_a_registered_one_is_charged_to_the_host() {
        let index = ParkingIndex::build(&parking());
        let session = |kind| ParkingSession {
            lot_id: "lot".into(),
            entered_at: at(9, 0),
            kind,
        };
        let visitor = session(EntryKind::Visitor {
            pass_id: None,
            enterprise_id: None,
        });
        let d = index.decide_exit("京B12345", "out", Some(&visitor), at(9, 10));
        assert_eq!(
            (d.open, d.reason, d.fee_fen),
            (true, ParkingReason::FreePeriod, 0)
        );
        let d = index.decide_exit("京B12345", "out", Some(&visitor), at(11, 1));
        assert_eq!(
            (d.open, d.reason, d.fee_fen),
            (false, ParkingReason::FeeDue, 1500)
        );
        assert_eq!((d.currency.as_str(), &d.payer), ("CNY", &Payer::Driver));

        let registered = session(EntryKind::Visitor {
            pass_id: Some("v1".into()),
            enterprise_id: Some("acme".into()),
        });
        let d = index.decide_exit("京A00004", "out", Some(&registered), at(11, 1));
        assert_eq!(
            (d.open, d.reason, d.fee_fen),
            (true, ParkingReason::ChargedToEnterprise, 1500)
        );
        assert_eq!(d.payer, Payer::Enterprise("acme".into()));
        // After the visitor pass ended, the driver pays.
        let d = index.decide_exit("京A00004", "out", Some(&registered), at(23, 30));
        assert_eq!(
            (d.open, d.reason, d.payer),
            (false, ParkingReason::FeeDue, Payer::Driver)
        );
    }

    #[test]
    fn passes_leave_free_while_valid_and_pay_for_the_time_after_they_end() {
        let index = ParkingIndex::build(&parking());
        let monthly = ParkingSession {
            lot_id: "lot".into(),
            entered_at: at(9, 0),
            kind: EntryKind::Monthly {
                pass_id: "m1".into(),
            },
        };
        let d = index.decide_exit("京A00001", "out", Some(&monthly), at(18, 0));
        assert_eq!(
            (d.open, d.reason, d.fee_fen),
            (true, ParkingReason::MonthlyPass, 0)
        );
        // The pass ended at 23:00; leaving at 23:50 owes one night period (23:00-00:00).
        let late = at(23, 0) + 50 * MICROS_PER_MINUTE;
        let d = index.decide_exit("京A00001", "out", Some(&monthly), late);
        assert_eq!(
            (d.reason, d.fee_fen),
            (ParkingReason::PassNoLongerValid, 200)
        );

        let allowance = ParkingSession {
            lot_id: "lot".into(),
            entered_at: at(9, 0),
            kind: EntryKind::Allowance {
                pass_id: "a1".into(),
                enterprise_id: "acme".into(),
            },
        };
        let d = index.decide_exit("京A00002", "out", Some(&allowance), at(18, 0));
        assert_eq!((d.open, d.reason), (true, ParkingReason::Allowance));
        assert_eq!(d.release_allowance, Some(("acme".into(), "lot".into())));
        let mut occ = Occupancy::default();
        occ.record_entry(&index.decide_entry("京A00002", "in", at(9, 0), &occ));
        assert_eq!(occ.allowance_in_use("acme", "lot"), 1);
        occ.record_exit("lot", &d);
        assert_eq!(occ.allowance_in_use("acme", "lot"), 0);
        assert_eq!(occ.occupied("lot"), 0);
    }

    #[test]
    fn a_suspended_pass_pays_for_the_whole_stay() {
        let mut p = parking();
        p.passes.get_mut("m1").unwrap().status = PassStatus::Suspended;
        let index = ParkingIndex::build(&p);
        let monthly = ParkingSession {
            lot_id: "lot".into(),
            entered_at: at(9, 0),
            kind: EntryKind::Monthly {
                pass_id: "m1".into(),
            },
        };
        let d = index.decide_exit("京A00001", "out", Some(&monthly), at(11, 0));
        assert_eq!(
            (d.reason, d.fee_fen),
            (ParkingReason::PassNoLongerValid, 1000)
        );
    }

    #[test]
    fn without_an_entry_record_a_pass_leaves_free_and_anyone_else_pays_the_lost_ticket_fee() {
        let index = ParkingIndex::build(&parking());
        let d = index.decide_exit("京A00001", "out", None, at(12, 0));
        assert_eq!((d.open, d.reason), (true, ParkingReason::MonthlyPass));
        let d = index.decide_exit("京B12345", "out", None, at(12, 0));
        assert_eq!(
            (d.open, d.reason, d.fee_fen),
            (false, ParkingReason::LostTicket, 10_000)
        );
    }

    #[test]
    fn a_lot_without_a_tariff_sends_fee_cases_to_the_attendant() {
        let mut p = parking();
        p.lots.get_mut("lot").unwrap().tariff_id = None;
        let index = ParkingIndex::build(&p);
        let d = index.decide_exit("京B12345", "out", None, at(12, 0));
        assert_eq!((d.open, d.reason), (false, ParkingReason::NoTariff));
    }

    #[test]
    fn every_parking_reason_has_a_distinct_code_and_a_sentence() {
        let codes: std::collections::HashSet<&str> =
            ParkingReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), ParkingReason::ALL.len());
        for r in ParkingReason::ALL {
            assert!(r.sentence().ends_with('.'), "{r}");
        }
    }
}

//! The park directory: one automerge document per park holding who may go where: enterprises
//! (tenants), spaces, leases, people, credentials, access groups, weekly schedules and holiday
//! calendars, plus the park's fixed UTC offset.
//!
//! Types here are the hydrated values and the edits an app makes (suspend a credential, move a
//! person to another group, end a lease). Doors are in each building's document
//! ([`crate::building`]); car parks in [`crate::parking`]. This module makes no access decision
//! (see [`crate::access`]) and does no IO.
//!
//! Card numbers, QR values and PINs are never in the document: a credential holds the keyed
//! digest of its value under the park's [`CredentialKey`] (HMAC-SHA256, see
//! [`crate::identity::secret::keyed_digest`]) and, except for PINs, the value's last four
//! characters for people to tell cards apart. Plates registered as door credentials are kept the
//! same way; the car parks' passes keep their plates in clear in [`crate::parking`], where the
//! barriers match and show them. Nor does the directory hold what no decision needs: a person's
//! phone and ID numbers live only on the hub, sealed.
//!
//! Document layout (JSON-like; strings are scalar Str (Text from JavaScript reads too), numbers Int, see [`crate::compat`]):
//!
//! ```text
//! { schema_version: 2, doc_type: "park_directory", park_id: "p1", utc_offset_minutes: 480,
//!   enterprises:  { "ent-1": { name, status: "active"|"suspended", kind: "tenant"|"operator" } },
//!   spaces:       { "sp-1":  { building_id, floor, area_m2, name } },
//!   leases:       { "ls-1":  { enterprise_id, space_ids: [..], valid_from, valid_to,
//!                              status: "active"|"terminated", monthly_rent_fen,
//!                              property_fee_fen, currency: "CNY" } },
//!   people:       { "p-1":   { name, enterprise_id, status, access_group_ids: [..] } },
//!   credentials:  { "c-1":   { person_id, kind: "card"|"qr"|"pin"|"plate",
//!                              digest: "h1:…" (keyed digest of the value), suffix: "C3D4"|"",
//!                              status: "active"|"suspended"|"lost", valid_from?, valid_to? } },
//!   access_groups:{ "g-1":   { name, door_ids: [..], schedule_id? } },
//!   schedules:    { "s-1":   { name, weekdays: { mon: [[480, 1080]], .. },
//!                              holiday_calendar_id?, allow_on_holidays } },
//!   holiday_calendars: { "cn-2026": { name, dates: ["2026-10-01", ..] } } }
//! ```

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use autosurgeon::{HydrateError, Reconcile, Reconciler, reconcile::MapReconciler};

use crate::compat::{
    Field, Fields, entity_codec, int_from_value, or_default, required, string_from_value, text_enum,
};
use crate::document::{
    ChangeSet, Collection, DocError, Document, Entity, Rejected, Schema, check_utc_offset,
    check_validity, containers, migrate_v0_common, root_has, set_root,
};
use data_encoding::BASE64URL_NOPAD;

use crate::identity::secret::{is_keyed_digest, sha256_hex, visible_suffix};
use crate::time::{MINUTES_PER_DAY, Timestamp, Weekday, parse_date};

/// The UTC offset assumed for version 0 directories, which did not record one: China Standard
/// Time, the only zone the tools that wrote them were used in.
pub const DEFAULT_UTC_OFFSET_MINUTES: i32 = 480;

/// The directory's schema: `doc_type` `park_directory`, version 2.
#[derive(Debug)]
pub enum DirectorySchema {}

impl Schema for DirectorySchema {
    const DOC_TYPE: &'static str = "park_directory";
    const VERSION: i64 = 2;
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
    ///
    /// Version 1 → 2: credentials hold `digest` and `suffix` instead of their `value` in clear,
    /// and people no longer have a `phone`. The step deletes every person's phone. It cannot
    /// digest a credential's value, which needs the park's key: such a credential stays as it
    /// is, refused by reads (so it decides nothing), until
    /// [`ParkDirectory::digest_clear_values`] rewrites it; an edge does that when it loads the
    /// document. The old values and phones stay in the document's history.
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
            1 => remove_phones(doc, None).map(drop),
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

text_enum! {
    /// What a space is: a whole floor, a room (an office, a workshop) or a workstation in
    /// an open office.
    #[derive(Default)]
    pub enum SpaceKind { Floor => "floor", #[default] Room => "room", Workstation => "workstation" }
}

text_enum! {
    /// Whether a space can be leased: free, held for a lease being made, or leased.
    #[derive(Default)]
    pub enum SpaceState { #[default] Vacant => "vacant", Reserved => "reserved", Leased => "leased" }
}

/// A leasable space (a floor, an office, a workshop, a workstation) in a building.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Space {
    pub id: String,
    pub building_id: String,
    pub floor: i32,
    pub area_m2: f64,
    pub name: String,
    /// Spaces written before kinds and states existed read as vacant rooms.
    #[serde(default)]
    pub kind: SpaceKind,
    #[serde(default)]
    pub state: SpaceState,
}

entity_codec!(Space {
    building_id: "building_id",
    floor: "floor",
    area_m2: "area_m2",
    name: "name" = String::new(),
    kind: "kind" = SpaceKind::Room,
    state: "state" = SpaceState::Vacant,
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
///
/// Only what decisions need. Phone and ID numbers are kept on the hub, sealed; writing a
/// person deletes a `phone` that an older app left in the document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Person {
    pub id: String,
    pub name: String,
    pub enterprise_id: String,
    pub status: PersonStatus,
    pub access_group_ids: Vec<String>,
}

entity_codec!(Person {
    name: "name",
    enterprise_id: "enterprise_id",
    status: "status",
    access_group_ids: "access_group_ids" = Vec::new(),
} removed ["phone"]);

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

/// How many characters of a card number, QR value or plate are kept visible.
pub const SUFFIX_LEN: usize = 4;

/// The key under which a credential's value was written in clear before values were digested
/// (schema version 1). A credential that still has one is refused by reads until
/// [`ParkDirectory::digest_clear_values`] rewrites it.
pub const CLEAR_VALUE_KEY: &str = "value";

/// What a read of a credential that still holds its value in clear finds (never the value).
const CLEAR_VALUE_FOUND: &str =
    "a value in clear, which an edge with the park's key rewrites as a digest";

/// The park's secret for credential digests: 32 random bytes, the same for every building of
/// the park, so that the digests in the shared directory match at every door.
///
/// Without it, a stored digest cannot be turned back into a card number nor a guessed number
/// checked against it. With it, a short value (a PIN) is found by trying every value: the key
/// must stay as secret as the documents it protects, and it is never written into them. Its
/// [`CredentialKey::id`] (the first 8 hex digits of its SHA-256) tells keys apart in logs
/// without revealing them; `Debug` shows only that.
#[derive(Clone)]
pub struct CredentialKey {
    bytes: [u8; 32],
    /// The HMAC key, set up once: each digest then costs the hashing of the value only.
    hmac: ring::hmac::Key,
    id: String,
}

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialKey({})", self.id)
    }
}

/// Text that is not a credential key. The message never repeats the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialKeyError {
    #[error("a credential key is 64 hexadecimal characters (32 bytes), not {0}")]
    Length(usize),
    #[error("a credential key is 64 hexadecimal characters; character {0} is not one")]
    NotHex(usize),
}

impl CredentialKey {
    pub fn new(bytes: &[u8; 32]) -> CredentialKey {
        CredentialKey {
            bytes: *bytes,
            hmac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
            id: sha256_hex(bytes)[..8].to_string(),
        }
    }

    /// Reads a key file: 64 hexadecimal digits, one line break after them allowed. Also
    /// says whether users other than the file's owner may read it (the key is as secret as
    /// the card numbers and PINs it protects: the caller warns). Errors name the file.
    pub fn read_file(path: &std::path::Path) -> Result<(CredentialKey, bool), String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            format!(
                "{} is not a credential key: it is not text (64 hexadecimal characters)",
                path.display()
            )
        })?;
        let key = CredentialKey::from_hex(text)
            .map_err(|e| format!("{} is not a credential key: {e}", path.display()))?;
        #[cfg(unix)]
        let loose = {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                .permissions()
                .mode();
            mode & 0o077 != 0
        };
        #[cfg(not(unix))]
        let loose = false;
        Ok((key, loose))
    }

    /// Reads a key written as 64 hexadecimal characters (either case), as in a key file: one
    /// line break at the end is allowed, nothing else.
    pub fn from_hex(text: &str) -> Result<CredentialKey, CredentialKeyError> {
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        let chars: Vec<char> = text.chars().collect();
        if chars.len() != 64 {
            return Err(CredentialKeyError::Length(chars.len()));
        }
        let mut bytes = [0u8; 32];
        for (i, c) in chars.iter().enumerate() {
            let nibble = c.to_digit(16).ok_or(CredentialKeyError::NotHex(i + 1))? as u8;
            bytes[i / 2] |= if i % 2 == 0 { nibble << 4 } else { nibble };
        }
        Ok(CredentialKey::new(&bytes))
    }

    /// The key as 64 lowercase hexadecimal characters, as a key file holds it.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 8 hex digits of the key's SHA-256: the same in every building that has the
    /// same key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// What the directory keeps of `value` presented as a credential of `kind`: its keyed
    /// digest in the kind's domain and its visible suffix (none for a PIN). Surrounding
    /// whitespace is not part of a value, as readers send it (see the edge's `field`).
    pub fn present(&self, kind: CredentialKind, value: &str) -> Presented {
        let value = value.trim();
        Presented {
            kind,
            digest: self.digest_in(kind.as_str(), value),
            suffix: match kind {
                CredentialKind::Pin => String::new(),
                _ => visible_suffix(value, SUFFIX_LEN),
            },
        }
    }

    /// [`crate::identity::secret::keyed_digest`] with the key set up once (a test checks that
    /// the two agree).
    fn digest_in(&self, domain: &str, value: &str) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.hmac);
        ctx.update(b"smartpark-keyed-digest-v1\0");
        ctx.update(domain.as_bytes());
        ctx.update(b"\0");
        ctx.update(value.as_bytes());
        let tag = ctx.sign();
        let mut out = String::with_capacity(25);
        out.push_str("h1:");
        BASE64URL_NOPAD.encode_append(&tag.as_ref()[..16], &mut out);
        out
    }
}

/// A credential value as the directory keeps it: what a reader's value is turned into before
/// it is matched, and what events and logs may show of it. The value itself is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub kind: CredentialKind,
    /// The keyed digest `h1:…`.
    pub digest: String,
    /// The value's last [`SUFFIX_LEN`] characters; empty for a PIN or a short value.
    pub suffix: String,
}

/// Something a person presents at a reader: a card UID, a QR payload, a PIN, a plate. The
/// directory holds the keyed digest of the value, which readers' values are matched against
/// (see [`CredentialKey::present`]), never the value. Build one with
/// [`Credential::from_secret`] or [`RawCredential::digest`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    pub id: String,
    pub person_id: String,
    pub kind: CredentialKind,
    /// The keyed digest `h1:…` of the value under the park's [`CredentialKey`].
    pub digest: String,
    /// The value's last [`SUFFIX_LEN`] characters, for people to tell cards apart; empty for
    /// PINs (a few digits of a PIN give most of it away) and for values too short to show any.
    pub suffix: String,
    pub status: CredentialStatus,
    pub valid_from: Option<Timestamp>,
    pub valid_to: Option<Timestamp>,
}

impl Credential {
    /// An active credential, valid at any time, for `raw_value` (a card number, QR value, PIN
    /// or plate in clear), of which only the digest under `key` and the visible suffix are
    /// kept. Change the status and validity with struct update syntax.
    pub fn from_secret(
        key: &CredentialKey,
        id: &str,
        person_id: &str,
        kind: CredentialKind,
        raw_value: &str,
    ) -> Result<Credential, DocError> {
        RawCredential {
            id: id.to_string(),
            person_id: person_id.to_string(),
            kind,
            value: raw_value.to_string(),
            status: CredentialStatus::Active,
            valid_from: None,
            valid_to: None,
        }
        .digest(key)
    }
}

// Written by hand rather than with `entity_codec!`: a credential that still holds its value in
// clear must be refused, not read as if the value were not there.
impl autosurgeon::Hydrate for Credential {
    fn hydrate_map<D: autosurgeon::ReadDoc>(doc: &D, obj: &ObjId) -> Result<Self, HydrateError> {
        let mut fields = Fields::read(doc, obj);
        if fields.take(CLEAR_VALUE_KEY).is_some() {
            return Err(HydrateError::unexpected(
                "a keyed digest",
                CLEAR_VALUE_FOUND.into(),
            ));
        }
        Ok(Credential {
            id: String::new(),
            person_id: required(doc, &mut fields, "person_id")?,
            kind: required(doc, &mut fields, "kind")?,
            digest: required(doc, &mut fields, "digest")?,
            suffix: or_default(doc, &mut fields, "suffix", String::new)?,
            status: required(doc, &mut fields, "status")?,
            valid_from: required(doc, &mut fields, "valid_from")?,
            valid_to: required(doc, &mut fields, "valid_to")?,
        })
    }
}

impl Reconcile for Credential {
    type Key<'k> = autosurgeon::reconcile::NoKey;

    fn reconcile<R: Reconciler>(&self, mut reconciler: R) -> Result<(), R::Error> {
        let mut map = reconciler.map()?;
        self.person_id.write(&mut map, "person_id")?;
        self.kind.write(&mut map, "kind")?;
        self.digest.write(&mut map, "digest")?;
        self.suffix.write(&mut map, "suffix")?;
        self.status.write(&mut map, "status")?;
        self.valid_from.write(&mut map, "valid_from")?;
        self.valid_to.write(&mut map, "valid_to")?;
        // A value in clear left by an older app goes as the digest comes in.
        if map.entry(CLEAR_VALUE_KEY).is_some() {
            map.delete(CLEAR_VALUE_KEY)?;
        }
        Ok(())
    }
}

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
        let digest_chars = self.digest.get(3..).unwrap_or_default();
        if !is_keyed_digest(&self.digest)
            || !digest_chars
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            // The message never repeats the field: it may be a value in clear.
            return Err("the digest is not a keyed digest \"h1:…\" (a credential's value is never stored in clear)".into());
        }
        if self.kind == CredentialKind::Pin && !self.suffix.is_empty() {
            return Err("a PIN has no visible suffix".into());
        }
        if self.suffix.chars().count() > SUFFIX_LEN {
            return Err(format!(
                "the visible suffix is longer than {SUFFIX_LEN} characters"
            ));
        }
        check_validity(self.valid_from, self.valid_to)
    }
}

/// A credential as an app registers it, with its value in clear (a card number read at the
/// desk, a PIN the holder chose): [`RawCredential::digest`] turns it into the [`Credential`]
/// that is stored. It is neither serialized nor stored, and its `Debug` leaves the value out.
#[derive(Clone, PartialEq, Eq)]
pub struct RawCredential {
    pub id: String,
    pub person_id: String,
    pub kind: CredentialKind,
    pub value: String,
    pub status: CredentialStatus,
    pub valid_from: Option<Timestamp>,
    pub valid_to: Option<Timestamp>,
}

impl std::fmt::Debug for RawCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawCredential")
            .field("id", &self.id)
            .field("person_id", &self.person_id)
            .field("kind", &self.kind)
            .field("value", &"<not shown>")
            .field("status", &self.status)
            .field("valid_from", &self.valid_from)
            .field("valid_to", &self.valid_to)
            .finish()
    }
}

impl RawCredential {
    /// The credential to store: the value's digest under `key` and its visible suffix. An
    /// empty value (or only whitespace) is refused.
    pub fn digest(&self, key: &CredentialKey) -> Result<Credential, DocError> {
        if self.value.trim().is_empty() {
            return Err(DocError::InvalidEntity {
                collection: Collection::Credentials,
                id: self.id.clone(),
                reason: "the value is empty".into(),
            });
        }
        let presented = key.present(self.kind, &self.value);
        Ok(Credential {
            id: self.id.clone(),
            person_id: self.person_id.clone(),
            kind: self.kind,
            digest: presented.digest,
            suffix: presented.suffix,
            status: self.status,
            valid_from: self.valid_from,
            valid_to: self.valid_to,
        })
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

impl Directory {
    /// How many credentials were refused because they hold their value in clear (see
    /// [`ParkDirectory::digest_clear_values`]).
    pub fn clear_values_refused(&self) -> usize {
        self.rejected
            .iter()
            .filter(|r| {
                r.collection == Collection::Credentials && r.reason.contains(CLEAR_VALUE_FOUND)
            })
            .count()
    }
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

    /// Brings `snapshot`, read from this document earlier, up to date with what `changes`
    /// says changed since (from [`Document::take_changes`]): only the changed entities are
    /// read again, so that following a large directory costs per change, not per entity.
    pub fn refresh(&self, snapshot: &mut Directory, changes: &ChangeSet) -> Result<(), DocError> {
        fn one<E: Entity<Schema = DirectorySchema> + Clone>(
            doc: &ParkDirectory,
            items: &mut BTreeMap<String, E>,
            rejected: &mut Vec<Rejected>,
            changes: &ChangeSet,
        ) -> Result<(), DocError> {
            let collection = E::COLLECTION;
            if changes.collections.contains(&collection) {
                let all = doc.entities::<E>()?;
                *items = all.items;
                rejected.retain(|r| r.collection != collection);
                rejected.extend(all.rejected);
                return Ok(());
            }
            for id in changes.ids(collection) {
                rejected.retain(|r| !(r.collection == collection && r.id == id));
                items.remove(id);
                match doc.get::<E>(id) {
                    Ok(Some(e)) => {
                        items.insert(id.to_string(), e);
                    }
                    Ok(None) => {}
                    Err(e) => rejected.push(Rejected {
                        collection,
                        id: id.to_string(),
                        reason: e.to_string(),
                    }),
                }
            }
            Ok(())
        }
        let s = snapshot;
        one(self, &mut s.enterprises, &mut s.rejected, changes)?;
        one(self, &mut s.spaces, &mut s.rejected, changes)?;
        one(self, &mut s.leases, &mut s.rejected, changes)?;
        one(self, &mut s.people, &mut s.rejected, changes)?;
        one(self, &mut s.credentials, &mut s.rejected, changes)?;
        one(self, &mut s.access_groups, &mut s.rejected, changes)?;
        one(self, &mut s.schedules, &mut s.rejected, changes)?;
        one(self, &mut s.holiday_calendars, &mut s.rejected, changes)?;
        if !changes.root_fields.is_empty() {
            s.park_id = self.park_id()?;
            s.utc_offset_minutes = self.utc_offset_minutes()?;
        }
        Ok(())
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

/// What [`ParkDirectory::digest_clear_values`] rewrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearValues {
    /// Credentials whose value in clear became its digest and suffix.
    pub credentials: usize,
    /// People whose phone number was deleted.
    pub phones: usize,
}

impl ClearValues {
    pub fn is_empty(&self) -> bool {
        self.credentials == 0 && self.phones == 0
    }
}

impl ParkDirectory {
    /// Rewrites what an older app or an earlier schema left in clear: each credential's
    /// `value` becomes its digest under `key` and its visible suffix, and each person's `phone`
    /// is deleted. Only the entities named in `changes` are looked at (those a sync message
    /// brought), or all of them when `changes` is `None` (a document just loaded). The edits
    /// are left for the caller to commit.
    ///
    /// Automerge keeps history: a value once written in clear stays in the document's earlier
    /// changes, and so in every save of it, until the park's document is rebuilt from a
    /// snapshot of its current state. This stops the clear value being used or shown, not
    /// being stored.
    pub fn digest_clear_values(
        &mut self,
        key: &CredentialKey,
        changes: Option<&ChangeSet>,
    ) -> Result<ClearValues, DocError> {
        let am = self.automerge_mut();
        let mut done = ClearValues::default();
        for obj in candidates(am, Collection::Credentials, changes)? {
            let Some((value, value_id)) = am.get(&obj, CLEAR_VALUE_KEY)? else {
                continue;
            };
            let clear = match &value {
                Value::Scalar(s) => match s.as_ref() {
                    ScalarValue::Int(i) => Some(i.to_string()),
                    ScalarValue::Uint(u) => Some(u.to_string()),
                    _ => string_from_value(am, &value, &value_id).ok(),
                },
                _ => string_from_value(am, &value, &value_id).ok(),
            };
            let kind = match am.get(&obj, "kind")? {
                Some((v, kind_id)) => string_from_value(am, &v, &kind_id).unwrap_or_default(),
                None => String::new(),
            };
            // A value that is not text cannot be matched anyway: it is only deleted.
            if let Some(clear) = clear {
                let (digest, suffix) = match kind.parse::<CredentialKind>() {
                    Ok(kind) => {
                        let p = key.present(kind, &clear);
                        (p.digest, p.suffix)
                    }
                    // An unknown kind keeps the entity out of decisions whatever it holds;
                    // its value is digested in the domain it names all the same.
                    Err(_) => (key.digest_in(&kind, clear.trim()), String::new()),
                };
                am.put(&obj, "digest", digest)?;
                if !suffix.is_empty() {
                    am.put(&obj, "suffix", suffix)?;
                } else if am.get(&obj, "suffix")?.is_some() {
                    am.delete(&obj, "suffix")?;
                }
            }
            am.delete(&obj, CLEAR_VALUE_KEY)?;
            done.credentials += 1;
        }
        done.phones = remove_phones(am, changes)?;
        Ok(done)
    }
}

/// The entities' maps to look at: those `changes` names, or every entity of the collection
/// (in one pass over each collection map: a lookup per id would search the map again each
/// time).
fn candidates(
    am: &AutoCommit,
    collection: Collection,
    changes: Option<&ChangeSet>,
) -> Result<Vec<ObjId>, DocError> {
    let mut out = Vec::new();
    for container in containers(am, collection)? {
        match changes {
            Some(c) if !c.collections.contains(&collection) => {
                for id in c.ids(collection) {
                    if let Some((Value::Object(ObjType::Map), obj)) = am.get(&container, id)? {
                        out.push(obj);
                    }
                }
            }
            _ => out.extend(am.map_range(&container, ..).filter_map(|item| {
                let obj = item.id();
                matches!(item.value.into_value(), Value::Object(ObjType::Map)).then_some(obj)
            })),
        }
    }
    Ok(out)
}

/// Deletes the `phone` of the people named in `changes` (all, when `None`). Returns how many
/// had one.
fn remove_phones(am: &mut AutoCommit, changes: Option<&ChangeSet>) -> Result<usize, DocError> {
    let mut removed = 0;
    for obj in candidates(am, Collection::People, changes)? {
        if am.get(&obj, "phone")?.is_some() {
            am.delete(&obj, "phone")?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::secret::keyed_digest;
    use automerge::ROOT;

    fn person() -> Person {
        Person {
            id: "p1".into(),
            name: "Li Wei".into(),
            enterprise_id: "e1".into(),
            status: PersonStatus::Active,
            access_group_ids: vec!["g1".into()],
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
        assert_eq!(doc.schema_version().unwrap(), 2);
        assert_eq!(doc.park_id().unwrap(), "park-1");
        assert_eq!(doc.utc_offset_minutes().unwrap(), 480);
        let snap = doc.snapshot().unwrap();
        assert!(snap.people.is_empty() && snap.rejected.is_empty());
    }

    #[test]
    fn a_snapshot_refreshed_with_the_changes_equals_one_read_whole() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&person()).unwrap();
        doc.upsert(&group("g1")).unwrap();
        doc.upsert(&group("g2")).unwrap();
        doc.commit("seed", 1);
        let mut snap = doc.snapshot().unwrap();
        doc.track_changes();
        // An edit here, a removal, a new entity, and a change merged from another replica.
        let mut other = doc.fork();
        let mut p2 = person();
        p2.id = "p2".into();
        other.upsert(&p2).unwrap();
        other.set_utc_offset_minutes(420).unwrap();
        other.commit("other", 2);
        doc.update::<Person>("p1", |p| p.name = "Wang Fang".into())
            .unwrap();
        doc.remove::<AccessGroup>("g2").unwrap();
        doc.commit("edit", 3);
        doc.merge(&mut other).unwrap();
        let changes = doc.take_changes();
        doc.refresh(&mut snap, &changes).unwrap();
        let whole = doc.snapshot().unwrap();
        assert_eq!(snap.people, whole.people);
        assert_eq!(snap.access_groups, whole.access_groups);
        assert_eq!(snap.utc_offset_minutes, 420);
        assert_eq!(snap.people["p1"].name, "Wang Fang");
        assert!(!snap.access_groups.contains_key("g2"));
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
        assert_eq!(doc.schema_version().unwrap(), 2);
        assert!(doc.migrated());
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
        assert_eq!(empty.schema_version().unwrap(), 2);
        assert!(empty.snapshot().unwrap().people.is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.automerge_mut().put(ROOT, "schema_version", 3).unwrap();
        assert!(matches!(
            ParkDirectory::load(&doc.save()),
            Err(DocError::UnsupportedVersion {
                found: 3,
                supported: 2
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

    fn key() -> CredentialKey {
        CredentialKey::new(&[0x17; 32])
    }

    /// Whether `needle` occurs in `haystack`.
    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    #[test]
    fn a_credential_keeps_the_keyed_digest_and_suffix_of_its_value() {
        let k = key();
        let card =
            Credential::from_secret(&k, "c1", "p1", CredentialKind::Card, " 04A1B2C3D4 ").unwrap();
        // The digest is identity::secret's, with the kind as its domain, of the trimmed value.
        assert_eq!(card.digest, keyed_digest(&[0x17; 32], "card", "04A1B2C3D4"));
        assert_eq!(card.suffix, "C3D4");
        let qr =
            Credential::from_secret(&k, "c2", "p1", CredentialKind::Qr, "QR-7f3a9b-0042").unwrap();
        assert_eq!(qr.suffix, "0042");
        assert_ne!(
            qr.digest,
            k.present(CredentialKind::Card, "QR-7f3a9b-0042").digest,
            "the kind is part of the digest"
        );
        let pin = Credential::from_secret(&k, "c3", "p1", CredentialKind::Pin, "48291537").unwrap();
        assert_eq!(pin.suffix, "", "a PIN shows nothing of itself");
        assert_eq!(pin.digest, keyed_digest(&[0x17; 32], "pin", "48291537"));
        assert_eq!(qr.digest, keyed_digest(&[0x17; 32], "qr", "QR-7f3a9b-0042"));
        let short = Credential::from_secret(&k, "c4", "p1", CredentialKind::Card, "A1B2").unwrap();
        assert_eq!(short.suffix, "", "too short to show any of it");
        assert_eq!(
            k.present(CredentialKind::Pin, "48291537").digest,
            pin.digest,
            "a read matches the registration"
        );
        assert_ne!(
            CredentialKey::new(&[0x18; 32])
                .present(CredentialKind::Pin, "48291537")
                .digest,
            pin.digest,
            "another park's key gives another digest"
        );
        for c in [&card, &qr, &pin, &short] {
            assert_eq!(c.validate(), Ok(()), "{c:?}");
        }
        assert!(matches!(
            Credential::from_secret(&k, "c5", "p1", CredentialKind::Card, "  "),
            Err(DocError::InvalidEntity { .. })
        ));
    }

    #[test]
    fn no_card_number_qr_value_or_pin_is_anywhere_in_a_saved_directory() {
        let k = key();
        let values = [
            (CredentialKind::Card, "04A1B2C3D4E5F6"),
            (CredentialKind::Qr, "QR-6e1f0c2d9a8b7c6d-77"),
            (CredentialKind::Pin, "739104"),
        ];
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&Person {
            name: "CONTROL-NAME-IN-CLEAR".into(),
            ..person()
        })
        .unwrap();
        for (i, (kind, value)) in values.iter().enumerate() {
            let c = Credential::from_secret(&k, &format!("c{i}"), "p1", *kind, value).unwrap();
            doc.upsert(&c).unwrap();
        }
        doc.commit("add", 1);
        // Suspending and reloading rewrite nothing in clear either.
        doc.suspend_credential("c2").unwrap();
        doc.commit("suspend", 2);
        let mut reloaded = ParkDirectory::load(&doc.save()).unwrap();
        let saves = [
            doc.save(),
            doc.automerge_mut().save_nocompress(),
            reloaded.automerge_mut().save_nocompress(),
        ];
        for bytes in &saves {
            // Uncompressed saves hold strings as they are: the search finds what is there.
            if bytes != &saves[0] {
                assert!(contains(bytes, "CONTROL-NAME-IN-CLEAR"));
            }
            for (_, value) in values {
                assert!(!contains(bytes, value), "{value} is in a saved directory");
            }
            // Not even the part of the PIN a suffix would show.
            assert!(!contains(bytes, "9104"));
        }
        let snap = reloaded.snapshot().unwrap();
        assert_eq!(snap.credentials["c2"].status, CredentialStatus::Suspended);
        assert_eq!(snap.credentials["c0"].suffix, "E5F6");
    }

    #[test]
    fn a_value_in_clear_is_refused_on_write_and_on_read_without_being_repeated() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        let mut clear =
            Credential::from_secret(&key(), "c1", "p1", CredentialKind::Card, "X").unwrap();
        clear.digest = "04A1B2C3D4E5F6A7B8C9D0E1F".into();
        assert_eq!(clear.digest.len(), 25);
        let err = doc.upsert(&clear).unwrap_err().to_string();
        assert!(
            err.contains("never stored in clear") && !err.contains("04A1B2"),
            "{err}"
        );
        clear.digest = "h1:not base64 but 25 ch".into();
        assert!(doc.upsert(&clear).is_err());
        let mut pin =
            Credential::from_secret(&key(), "c2", "p1", CredentialKind::Pin, "739104").unwrap();
        pin.suffix = "9104".into();
        assert!(doc.upsert(&pin).unwrap_err().to_string().contains("PIN"));

        // What an app of schema version 1 wrote: the value in clear.
        let am = doc.automerge_mut();
        let (_, creds) = am.get(ROOT, "credentials").unwrap().unwrap();
        let c = am.put_object(&creds, "c3", ObjType::Map).unwrap();
        am.put(&c, "person_id", "p1").unwrap();
        am.put(&c, "kind", "card").unwrap();
        am.put(&c, "value", "04A1B2C3D4E5F6").unwrap();
        am.put(&c, "status", "active").unwrap();
        let snap = doc.snapshot().unwrap();
        assert!(snap.credentials.is_empty());
        assert_eq!(snap.rejected.len(), 1);
        let reason = &snap.rejected[0].reason;
        assert!(
            reason.contains("in clear") && !reason.contains("04A1B2"),
            "{reason}"
        );
        // Writing the credential anew takes the clear value out.
        let fresh =
            Credential::from_secret(&key(), "c3", "p1", CredentialKind::Card, "04A1B2C3D4E5F6")
                .unwrap();
        doc.upsert(&fresh).unwrap();
        assert_eq!(doc.get::<Credential>("c3").unwrap(), Some(fresh));
    }

    /// A directory as schema version 1 wrote it: a person with a phone, a card, a PIN and a
    /// credential of a kind this build does not know, all with their values in clear.
    fn version_one_directory() -> AutoCommit {
        let mut am = AutoCommit::new();
        am.put(ROOT, "schema_version", 1).unwrap();
        am.put(ROOT, "doc_type", "park_directory").unwrap();
        am.put(ROOT, "park_id", "old-park").unwrap();
        am.put(ROOT, "utc_offset_minutes", 480).unwrap();
        for c in DirectorySchema::COLLECTIONS {
            am.put_object(ROOT, c.as_str(), ObjType::Map).unwrap();
        }
        let (_, people) = am.get(ROOT, "people").unwrap().unwrap();
        let p = am.put_object(&people, "p1", ObjType::Map).unwrap();
        am.put(&p, "name", "Li Wei").unwrap();
        am.put(&p, "enterprise_id", "e1").unwrap();
        am.put(&p, "status", "active").unwrap();
        am.put(&p, "phone", "+86 138 0000 0000").unwrap();
        let (_, creds) = am.get(ROOT, "credentials").unwrap().unwrap();
        for (id, kind, value) in [
            ("card", "card", "04A1B2C3D4E5F6"),
            ("pin", "pin", "739104"),
            ("iris", "iris", "IRIS-TEMPLATE-1"),
        ] {
            let c = am.put_object(&creds, id, ObjType::Map).unwrap();
            am.put(&c, "person_id", "p1").unwrap();
            am.put(&c, "kind", kind).unwrap();
            am.put(&c, "value", value).unwrap();
            am.put(&c, "status", "active").unwrap();
        }
        am
    }

    #[test]
    fn a_version_one_directory_loses_its_phones_and_its_clear_values_become_digests() {
        let mut v1 = version_one_directory();
        let mut doc = ParkDirectory::load(&v1.save()).unwrap();
        assert!(doc.migrated());
        assert_eq!(doc.schema_version().unwrap(), 2);
        // The migration needs no key for the phone; the values wait for one.
        let am = doc.automerge();
        let (_, people) = am.get(ROOT, "people").unwrap().unwrap();
        let (_, p1) = am.get(&people, "p1").unwrap().unwrap();
        assert!(am.get(&p1, "phone").unwrap().is_none());
        let snap = doc.snapshot().unwrap();
        assert!(snap.credentials.is_empty());
        assert_eq!(snap.rejected.len(), 3);
        assert_eq!(snap.clear_values_refused(), 3);

        let k = key();
        doc.track_changes();
        assert_eq!(
            doc.digest_clear_values(&k, None).unwrap(),
            ClearValues {
                credentials: 3,
                phones: 0
            }
        );
        doc.commit("digest values left in clear", 1);
        let changes = doc.take_changes();
        assert_eq!(changes.ids(Collection::Credentials).count(), 3);
        let snap = doc.snapshot().unwrap();
        assert_eq!(
            snap.credentials["card"].digest,
            k.present(CredentialKind::Card, "04A1B2C3D4E5F6").digest
        );
        assert_eq!(snap.credentials["card"].suffix, "E5F6");
        assert_eq!(
            snap.credentials["pin"].digest,
            k.present(CredentialKind::Pin, "739104").digest
        );
        assert_eq!(snap.credentials["pin"].suffix, "");
        // A kind this build does not know stays out of decisions, but not in clear.
        assert_eq!(snap.rejected.len(), 1);
        assert_eq!(snap.rejected[0].id, "iris");
        assert_eq!(snap.clear_values_refused(), 0);
        let current = doc.automerge_mut().save_nocompress();
        let mut reloaded = ParkDirectory::load(&doc.save()).unwrap();
        assert!(!reloaded.migrated());
        assert_eq!(
            reloaded.digest_clear_values(&k, None).unwrap(),
            ClearValues::default(),
            "nothing is left to do"
        );
        // FIXME(history): automerge keeps every change, so the values once written in clear
        // are still in a save of the document; only a document rebuilt from its current state
        // is free of them (see ARCHITECTURE.md).
        assert!(contains(&current, "04A1B2C3D4E5F6"));
        let rebuilt = {
            let mut fresh = ParkDirectory::new("old-park", 480, 0).unwrap();
            for c in snap.credentials.values() {
                fresh.upsert(c).unwrap();
            }
            fresh.automerge_mut().save_nocompress()
        };
        assert!(!contains(&rebuilt, "04A1B2C3D4E5F6") && !contains(&rebuilt, "739104"));
    }

    #[test]
    fn clear_values_that_a_sync_brings_are_rewritten_for_the_changed_entities_only() {
        let k = key();
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&person()).unwrap();
        doc.commit("base", 0);
        let mut old_app = doc.fork();
        // An old app, offline, writes a card in clear and a phone; this replica meanwhile
        // holds another clear value that the change set does not name.
        {
            let am = old_app.automerge_mut();
            let (_, creds) = am.get(ROOT, "credentials").unwrap().unwrap();
            let c = am.put_object(&creds, "synced", ObjType::Map).unwrap();
            am.put(&c, "person_id", "p1").unwrap();
            am.put(&c, "kind", "qr").unwrap();
            am.put(&c, "value", "QR-6e1f0c2d9a8b7c6d-77").unwrap();
            am.put(&c, "status", "active").unwrap();
            let (_, people) = am.get(ROOT, "people").unwrap().unwrap();
            let (_, p1) = am.get(&people, "p1").unwrap().unwrap();
            am.put(&p1, "phone", "+86 138 0000 0000").unwrap();
        }
        old_app.commit("old app", 1);
        {
            let am = doc.automerge_mut();
            let (_, creds) = am.get(ROOT, "credentials").unwrap().unwrap();
            let c = am.put_object(&creds, "local", ObjType::Map).unwrap();
            am.put(&c, "person_id", "p1").unwrap();
            am.put(&c, "kind", "card").unwrap();
            am.put(&c, "value", "04A1B2C3D4E5F6").unwrap();
            am.put(&c, "status", "active").unwrap();
        }
        doc.commit("local", 1);
        doc.track_changes();
        doc.merge(&mut old_app).unwrap();
        let changes = doc.take_changes();
        assert_eq!(
            doc.digest_clear_values(&k, Some(&changes)).unwrap(),
            ClearValues {
                credentials: 1,
                phones: 1
            }
        );
        let snap = doc.snapshot().unwrap();
        assert_eq!(snap.credentials["synced"].suffix, "d-77");
        assert_eq!(
            snap.credentials["synced"].digest,
            k.present(CredentialKind::Qr, "QR-6e1f0c2d9a8b7c6d-77")
                .digest
        );
        assert!(!snap.credentials.contains_key("local"));
    }

    #[test]
    fn writing_a_person_deletes_the_phone_an_old_app_left() {
        let mut doc = ParkDirectory::new("park-1", 480, 0).unwrap();
        doc.upsert(&person()).unwrap();
        let am = doc.automerge_mut();
        let (_, people) = am.get(ROOT, "people").unwrap().unwrap();
        let (_, p1) = am.get(&people, "p1").unwrap().unwrap();
        am.put(&p1, "phone", "+86 138 0000 0000").unwrap();
        assert_eq!(doc.require::<Person>("p1").unwrap(), person());
        doc.set_person_status("p1", PersonStatus::Suspended)
            .unwrap();
        let am = doc.automerge();
        let (_, people) = am.get(ROOT, "people").unwrap().unwrap();
        let (_, p1) = am.get(&people, "p1").unwrap().unwrap();
        assert!(am.get(&p1, "phone").unwrap().is_none());
    }

    #[test]
    fn a_credential_key_is_read_from_hex_and_never_shown() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let k = CredentialKey::from_hex(&format!("{hex}\n")).unwrap();
        assert_eq!(k.to_hex(), hex.to_lowercase());
        assert_eq!(CredentialKey::from_hex(&k.to_hex()).unwrap().id(), k.id());
        assert_eq!(k.id().len(), 8);
        assert_eq!(format!("{k:?}"), format!("CredentialKey({})", k.id()));
        assert_eq!(
            CredentialKey::from_hex(&hex[..62]).unwrap_err(),
            CredentialKeyError::Length(62)
        );
        assert_eq!(
            CredentialKey::from_hex(&format!("{hex}\n\n")).unwrap_err(),
            CredentialKeyError::Length(65)
        );
        let bad = format!("{}g{}", &hex[..10], &hex[11..]);
        let err = CredentialKey::from_hex(&bad).unwrap_err();
        assert_eq!(err, CredentialKeyError::NotHex(11));
        assert!(!err.to_string().contains(&hex[..10]), "{err}");
        let raw = RawCredential {
            id: "c1".into(),
            person_id: "p1".into(),
            kind: CredentialKind::Pin,
            value: "739104".into(),
            status: CredentialStatus::Active,
            valid_from: None,
            valid_to: None,
        };
        assert!(!format!("{raw:?}").contains("739104"));
    }
}

//! Domain types of a park (enterprises, spaces, leases, people, credentials, access groups,
//! doors, car parks, passes, tariffs), the CRDT documents that hold them, and the pure decisions
//! an edge node makes from them: door access, parking gate entry and exit, parking fees.
//!
//! This crate does no IO, reads no clock and spawns nothing: time (a [`Timestamp`], integer
//! microseconds since the Unix epoch, UTC) and state that changes with every event (who is
//! inside an anti-passback area, lot occupancy) are arguments. Money is integer fen with a
//! currency code, never floating point.
//!
//! - Documents ([`document`], [`directory`], [`building`], [`parking`]; typing rules shared with
//!   JavaScript in [`compat`]): one [`ParkDirectory`] per park, one [`BuildingDoc`] per building,
//!   one [`ParkingDoc`] per park or car park. Load, save, merge, edit, and list the entities
//!   changed between two heads.
//! - Decisions: [`access::AccessIndex`] (built from the documents, updated incrementally,
//!   `decide` per credential read), [`gate::ParkingIndex`] (entry and exit at a barrier),
//!   [`tariff::parking_fee`].
//! - [`cache`]: a row-per-entity copy of a directory, so an edge decides before the document
//!   has loaded.
//! - [`sample`]: deterministic sample parks for tests, benchmarks and the demo.
//! - [`identity`]: roles, permissions, scopes and grants, and the pure parts of logging in
//!   (Argon2id verifiers, TOTP, tokens, lockout, sealing and masking of personal data).
//! - [`audit`]: the audit log's hash chain and its verification.
//! - [`billing`]: lease contracts, utility tariffs and what a month's bill run bills, in
//!   integer fen rounded once per line.
//! - [`ownership`]: which documents a building reads and writes, and the check of what an
//!   edge changed in the park's documents.

pub mod compat;

pub mod access;
pub mod audit;
pub mod billing;
pub mod building;
pub mod cache;
pub mod directory;
pub mod document;
pub mod gate;
pub mod identity;
pub mod ownership;
pub mod parking;
pub mod sample;
pub mod tariff;
pub mod time;

pub use access::{AccessDecision, AccessIndex, ReasonCode};
pub use building::BuildingDoc;
pub use compat::UnknownValue;
pub use directory::ParkDirectory;
pub use document::{ChangeSet, Collection, DocError, Document, Entity, Rejected};
pub use gate::{ParkingIndex, ParkingReason};
pub use parking::ParkingDoc;
pub use time::Timestamp;

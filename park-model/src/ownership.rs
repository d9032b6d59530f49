//! Who may write which document, and what a building may change in the park's documents.
//!
//! The hub writes the park's master data: the park directory (`directory`) and the car
//! parks (`parking`). Each building writes its own document (`building/ID`). An edge may
//! also make the local edits its building needs while the hub is away; they reach the
//! park only if [`check_edge_change`] accepts them:
//!
//! - in the directory: suspending a credential or reporting it lost (always); adding,
//!   changing or deleting a credential of a person whose every access group is one of the
//!   building's own (a visitor's pass for this building); adding a person to, or removing
//!   them from, one of the building's own access groups. A building's own access group is
//!   one whose doors are all doors of that building. Nothing else: no new people, no
//!   enterprises, leases, groups, schedules or calendars, no root values.
//! - in the car parks: suspending a pass and blocking a plate.
//! - its own building document, but not its park or building id.
//!
//! The check looks at what the change does (the entities before and after it), not at who
//! signed it: automerge changes carry no identity that the hub could trust. What it cannot
//! see is a value a change writes that loses a conflict today and would win if the winner
//! were deleted later; such a value only surfaces through a later change, which is checked
//! in turn where it comes from an edge.
//!
//! A replica is sent only the documents its building may read: the directory and the car
//! parks to every building of the park, a building's document to that building only.

use std::collections::BTreeSet;

use automerge::{Automerge, Patch};

use crate::building::{BuildingSchema, Door};
use crate::directory::{AccessGroup, Credential, CredentialStatus, DirectorySchema, Person};
use crate::document::{
    Collection, Entity, changes_from_patches, entity_in, ids_in, root_string_in,
};
use crate::parking::{BlockedPlate, ParkingSchema, Pass, PassStatus};

/// The park directory's document id.
pub const DIRECTORY: &str = "directory";
/// The car parks' document id.
pub const PARKING: &str = "parking";
/// The longest building id a document id may carry.
pub const MAX_BUILDING_ID_LEN: usize = 64;

/// One of a park's documents, by its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DocumentId {
    Directory,
    Parking,
    /// `building/ID`
    Building(String),
}

impl DocumentId {
    /// Reads a document id; anything but the three kinds is refused with the reason.
    pub fn parse(id: &str) -> Result<DocumentId, String> {
        match id {
            DIRECTORY => Ok(DocumentId::Directory),
            PARKING => Ok(DocumentId::Parking),
            _ => match id.strip_prefix("building/") {
                Some(b) if is_building_id(b) => Ok(DocumentId::Building(b.to_string())),
                Some(_) => Err(format!(
                    "document {:?} names no valid building (1 to {MAX_BUILDING_ID_LEN} letters, digits, '-', '_' or '.')",
                    shorten(id)
                )),
                None => Err(format!(
                    "there is no document {:?}: a park has \"directory\", \"parking\" and \"building/ID\"",
                    shorten(id)
                )),
            },
        }
    }

    /// The building document's id.
    pub fn building(building: &str) -> DocumentId {
        DocumentId::Building(building.to_string())
    }

    /// Whether the edge of `building` is sent this document.
    pub fn readable_by(&self, building: &str) -> bool {
        match self {
            DocumentId::Directory | DocumentId::Parking => true,
            DocumentId::Building(b) => b == building,
        }
    }
}

impl std::fmt::Display for DocumentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DocumentId::Directory => f.write_str(DIRECTORY),
            DocumentId::Parking => f.write_str(PARKING),
            DocumentId::Building(b) => write!(f, "building/{b}"),
        }
    }
}

fn is_building_id(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= MAX_BUILDING_ID_LEN
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// At most 80 characters of untrusted text, for messages.
fn shorten(text: &str) -> String {
    let mut out: String = text.chars().take(80).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// What an edge's change did that its building may not do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{document}: {reason}")]
pub struct Refusal {
    pub document: String,
    pub reason: String,
}

/// The building an edge serves, and the documents the check reads besides the one changed.
pub struct EdgeScope<'a> {
    pub park: &'a str,
    pub building: &'a str,
    /// The hub's replica of this building's document (its doors make the building's own
    /// access groups); `None` when the hub has none yet.
    pub building_doc: Option<&'a Automerge>,
}

/// Checks what an edge changed in a document: `before` is the hub's replica, `after` a copy
/// of it with the edge's changes applied, and `patches` what applying them reported (a
/// [`automerge::PatchLog`]). Returns the first thing the building may not do.
pub fn check_edge_change(
    id: &DocumentId,
    scope: &EdgeScope<'_>,
    before: &Automerge,
    after: &Automerge,
    patches: Vec<Patch>,
) -> Result<(), Refusal> {
    let changes = match id {
        DocumentId::Directory => changes_from_patches::<DirectorySchema>(patches),
        DocumentId::Parking => changes_from_patches::<ParkingSchema>(patches),
        DocumentId::Building(_) => changes_from_patches::<BuildingSchema>(patches),
    };
    check_changes(id, scope, before, after, &changes)
}

/// [`check_edge_change`] with the changed entities already worked out (an edge checks its
/// own edit this way before it keeps it: see `Document::checked_edit`).
pub fn check_changes(
    id: &DocumentId,
    scope: &EdgeScope<'_>,
    before: &Automerge,
    after: &Automerge,
    changes: &crate::ChangeSet,
) -> Result<(), Refusal> {
    let refuse = |reason: String| Refusal {
        document: id.to_string(),
        reason,
    };
    let before_doc = before;
    let created = before.get_heads().is_empty();
    match id {
        DocumentId::Building(b) if b != scope.building => Err(refuse(format!(
            "building {} may not write the document of building {b}",
            scope.building
        ))),
        DocumentId::Building(_) => {
            for key in ["park_id", "building_id"] {
                if changes.root_fields.contains(key) || created {
                    let want = if key == "park_id" {
                        scope.park
                    } else {
                        scope.building
                    };
                    let got = root_string_in(after, key);
                    if got.as_deref() != Some(want) {
                        return Err(refuse(format!(
                            "{key} must stay {want:?}, not {:?}",
                            got.unwrap_or_default()
                        )));
                    }
                }
            }
            for (collection, door) in &changes.entities {
                if *collection == Collection::Doors
                    && let Ok(Some(d)) = entity_in::<Door, _>(after, door)
                    && d.building_id != scope.building
                {
                    return Err(refuse(format!(
                        "door {door} names building {:?}, not {}",
                        shorten(&d.building_id),
                        scope.building
                    )));
                }
            }
            Ok(())
        }
        DocumentId::Directory => {
            refuse_wholesale(changes).map_err(refuse)?;
            let doors = match scope.building_doc {
                Some(b) => ids_in(b, Collection::Doors).unwrap_or_default(),
                None => BTreeSet::new(),
            };
            let check = DirectoryCheck {
                before: before_doc,
                after,
                doors: &doors,
                building: scope.building,
            };
            for (collection, entity) in &changes.entities {
                check.entity(*collection, entity).map_err(refuse)?;
            }
            Ok(())
        }
        DocumentId::Parking => {
            refuse_wholesale(changes).map_err(refuse)?;
            for (collection, entity) in &changes.entities {
                parking_entity(before_doc, after, *collection, entity).map_err(refuse)?;
            }
            Ok(())
        }
    }
}

/// Root values and whole collections are the hub's.
fn refuse_wholesale(changes: &crate::ChangeSet) -> Result<(), String> {
    if let Some(field) = changes.root_fields.iter().next() {
        return Err(format!(
            "changes the root value {:?}, which only the hub writes",
            shorten(field)
        ));
    }
    if let Some(c) = changes.collections.iter().next() {
        return Err(format!(
            "replaces the whole {c} collection, which only the hub does"
        ));
    }
    Ok(())
}

fn read<E: Entity>(doc: &Automerge, id: &str) -> Result<Option<E>, String> {
    entity_in::<E, _>(doc, id).map_err(|e| e.to_string())
}

struct DirectoryCheck<'a> {
    before: &'a Automerge,
    after: &'a Automerge,
    doors: &'a BTreeSet<String>,
    building: &'a str,
}

impl DirectoryCheck<'_> {
    fn entity(&self, collection: Collection, id: &str) -> Result<(), String> {
        match collection {
            Collection::Credentials => self.credential(id),
            Collection::People => self.person(id),
            other => Err(format!(
                "changes {} {:?}, which only the hub writes",
                singular(other),
                shorten(id)
            )),
        }
    }

    fn credential(&self, id: &str) -> Result<(), String> {
        let old = read::<Credential>(self.before, id).ok().flatten();
        let new = read::<Credential>(self.after, id)?;
        if let (Some(o), Some(n)) = (&old, &new) {
            let only_status = Credential {
                status: n.status,
                ..o.clone()
            } == *n;
            if only_status && (n.status != CredentialStatus::Active || o == n) {
                // A suspension or a loss report: always (and no change at all is no change).
                return Ok(());
            }
        }
        for person in old.iter().chain(new.iter()).map(|c| c.person_id.as_str()) {
            if !self.confined(person) {
                return Err(format!(
                    "changes credential {:?} of person {:?}, who has access beyond building {}'s own access groups",
                    shorten(id),
                    shorten(person),
                    self.building
                ));
            }
        }
        Ok(())
    }

    fn person(&self, id: &str) -> Result<(), String> {
        let old = read::<Person>(self.before, id).ok().flatten();
        let new = read::<Person>(self.after, id)?;
        let (old, new) = match (old, new) {
            (Some(o), Some(n)) => (o, n),
            (None, Some(_)) => {
                return Err(format!(
                    "adds person {:?} to the park directory, which only the hub does",
                    shorten(id)
                ));
            }
            (_, None) => {
                return Err(format!(
                    "deletes person {:?}, which only the hub does",
                    shorten(id)
                ));
            }
        };
        if (Person {
            access_group_ids: new.access_group_ids.clone(),
            ..old.clone()
        }) != new
        {
            return Err(format!(
                "changes person {:?} other than by their access groups",
                shorten(id)
            ));
        }
        let before: BTreeSet<&String> = old.access_group_ids.iter().collect();
        let after: BTreeSet<&String> = new.access_group_ids.iter().collect();
        for group in before.symmetric_difference(&after) {
            if !self.own_group(group) {
                return Err(format!(
                    "changes person {:?}'s membership of access group {:?}, which is not building {}'s own",
                    shorten(id),
                    shorten(group),
                    self.building
                ));
            }
        }
        Ok(())
    }

    /// A group whose doors are all this building's (as the hub had it before the change).
    fn own_group(&self, group: &str) -> bool {
        match read::<AccessGroup>(self.before, group) {
            Ok(Some(g)) => {
                !g.door_ids.is_empty() && g.door_ids.iter().all(|d| self.doors.contains(d))
            }
            _ => false,
        }
    }

    /// A person whose every access group is this building's own, before and after.
    fn confined(&self, person: &str) -> bool {
        [self.before, self.after]
            .into_iter()
            .all(|doc| match read::<Person>(doc, person) {
                Ok(Some(p)) => {
                    !p.access_group_ids.is_empty()
                        && p.access_group_ids.iter().all(|g| self.own_group(g))
                }
                // A person not there: nobody gains access through them.
                Ok(None) => true,
                Err(_) => false,
            })
    }
}

fn parking_entity(
    before: &Automerge,
    after: &Automerge,
    collection: Collection,
    id: &str,
) -> Result<(), String> {
    match collection {
        Collection::Passes => {
            let old = read::<Pass>(before, id).ok().flatten();
            let new = read::<Pass>(after, id)?;
            match (old, new) {
                (Some(o), Some(n))
                    if Pass {
                        status: n.status,
                        ..o.clone()
                    } == n
                        && (n.status == PassStatus::Suspended || o == n) =>
                {
                    Ok(())
                }
                _ => Err(format!(
                    "changes pass {:?} other than by suspending it; passes are issued on the hub",
                    shorten(id)
                )),
            }
        }
        Collection::BlockedPlates => match read::<BlockedPlate>(after, id)? {
            Some(_) => Ok(()),
            None => Err(format!(
                "unblocks plate {:?}, which only the hub does",
                shorten(id)
            )),
        },
        other => Err(format!(
            "changes {} {:?}, which only the hub writes",
            singular(other),
            shorten(id)
        )),
    }
}

fn singular(c: Collection) -> &'static str {
    match c {
        Collection::Enterprises => "enterprise",
        Collection::Spaces => "space",
        Collection::Leases => "lease",
        Collection::People => "person",
        Collection::Credentials => "credential",
        Collection::AccessGroups => "access group",
        Collection::Schedules => "schedule",
        Collection::HolidayCalendars => "holiday calendar",
        Collection::Doors => "door",
        Collection::Lots => "lot",
        Collection::Lanes => "lane",
        Collection::Tariffs => "tariff",
        Collection::Passes => "pass",
        Collection::Allowances => "allowance",
        Collection::BlockedPlates => "blocked plate",
    }
}

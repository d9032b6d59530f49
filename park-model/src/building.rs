//! A building's document: its doors (with anti-passback areas, direction, unlock time and
//! status). One per building, so an edge node loads its own building and the park directory,
//! not every building of the park.
//!
//! Devices, points and alarms are configuration, not CRDT state, and are not here. This module
//! makes no decision (see [`crate::access`]) and does no IO.
//!
//! ```text
//! { schema_version: 1, doc_type: "building", park_id: "p1", building_id: "b1",
//!   doors: { "d-1": { name, building_id, anti_passback: false, direction: "in"|"out"|"both",
//!                     area_id?, unlock_duration_ms: 3000, status: "enabled"|"disabled" } } }
//! ```

use std::collections::BTreeMap;

use automerge::AutoCommit;

use crate::compat::{entity_codec, text_enum};
use crate::document::{
    Collection, DocError, Document, Entity, Rejected, Schema, migrate_v0_common, root_has, set_root,
};
use crate::time::Timestamp;

/// How long a door stays unlocked when nothing says otherwise.
pub const DEFAULT_UNLOCK_DURATION_MS: u32 = 3000;

/// The building document's schema: `doc_type` `building`, version 1.
#[derive(Debug)]
pub enum BuildingSchema {}

impl Schema for BuildingSchema {
    const DOC_TYPE: &'static str = "building";
    const VERSION: i64 = 1;
    const COLLECTIONS: &'static [Collection] = &[Collection::Doors];

    /// Version 0 → 1: adds `doc_type`, the `doors` map if missing, and empty ids if missing.
    fn migrate_step(doc: &mut AutoCommit, from: i64) -> Result<(), DocError> {
        match from {
            0 => {
                migrate_v0_common::<Self>(doc)?;
                for key in ["park_id", "building_id"] {
                    if !root_has(doc, key)? {
                        set_root(doc, key, String::new())?;
                    }
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

/// A building's document.
pub type BuildingDoc = Document<BuildingSchema>;

text_enum! {
    /// Which way a door's reader lets people pass. Anti-passback applies to `in` and `out`
    /// doors; a `both` door cannot tell the direction and is never checked.
    pub enum DoorDirection { In => "in", Out => "out", Both => "both" }
}

text_enum! {
    /// A disabled door opens for nobody.
    pub enum DoorStatus { Enabled => "enabled", Disabled => "disabled" }
}

/// A door with a reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Door {
    pub id: String,
    pub name: String,
    pub building_id: String,
    pub anti_passback: bool,
    pub direction: DoorDirection,
    /// The area that this door leads into (`in`) or out of (`out`), for anti-passback.
    pub area_id: Option<String>,
    pub unlock_duration_ms: u32,
    pub status: DoorStatus,
}

entity_codec!(Door {
    name: "name" = String::new(),
    building_id: "building_id",
    anti_passback: "anti_passback" = false,
    direction: "direction" = DoorDirection::Both,
    area_id: "area_id",
    unlock_duration_ms: "unlock_duration_ms" = DEFAULT_UNLOCK_DURATION_MS,
    status: "status" = DoorStatus::Enabled,
});

impl Entity for Door {
    type Schema = BuildingSchema;
    const COLLECTION: Collection = Collection::Doors;
    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn validate(&self) -> Result<(), String> {
        if self.anti_passback && self.area_id.is_none() && self.direction != DoorDirection::Both {
            return Err("anti_passback needs an area_id".into());
        }
        Ok(())
    }
}

/// Everything in a building document, read at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Building {
    pub park_id: String,
    pub building_id: String,
    pub doors: BTreeMap<String, Door>,
    pub rejected: Vec<Rejected>,
}

impl BuildingDoc {
    /// A new building document, created at `now`.
    pub fn new(park_id: &str, building_id: &str, now: Timestamp) -> Result<Self, DocError> {
        Document::create(now, |am| {
            set_root(am, "park_id", park_id.to_string())?;
            set_root(am, "building_id", building_id.to_string())
        })
    }

    pub fn building_id(&self) -> Result<String, DocError> {
        Ok(self
            .root_field::<String>("building_id")?
            .unwrap_or_default())
    }

    /// Reads the whole building document.
    pub fn snapshot(&self) -> Result<Building, DocError> {
        let doors = self.entities::<Door>()?;
        Ok(Building {
            park_id: self.root_field::<String>("park_id")?.unwrap_or_default(),
            building_id: self.building_id()?,
            doors: doors.items,
            rejected: doors.rejected,
        })
    }

    pub fn set_door_status(&mut self, door_id: &str, status: DoorStatus) -> Result<(), DocError> {
        self.update::<Door>(door_id, |d| d.status = status)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_door_written_with_defaults_missing_reads_them() {
        let mut doc = BuildingDoc::new("park-1", "b1", 0).unwrap();
        let am = doc.automerge_mut();
        use automerge::{ObjType, ROOT, ReadDoc as _, transaction::Transactable};
        let (_, doors) = am.get(ROOT, "doors").unwrap().unwrap();
        let d = am.put_object(&doors, "d1", ObjType::Map).unwrap();
        am.put(&d, "building_id", "b1").unwrap();
        let door = doc.require::<Door>("d1").unwrap();
        assert_eq!(door.direction, DoorDirection::Both);
        assert_eq!(door.status, DoorStatus::Enabled);
        assert_eq!(door.unlock_duration_ms, DEFAULT_UNLOCK_DURATION_MS);
        assert!(!door.anti_passback);
    }

    #[test]
    fn a_version_zero_building_gets_its_doors_map_and_ids() {
        use automerge::{AutoCommit, ROOT, ReadDoc as _, transaction::Transactable};
        let mut am = AutoCommit::new();
        am.put(ROOT, "building_id", "b7").unwrap();
        let doc = BuildingDoc::load(&am.save()).unwrap();
        assert_eq!(doc.schema_version().unwrap(), 1);
        assert!(doc.automerge().get(ROOT, "doors").unwrap().is_some());
        let snap = doc.snapshot().unwrap();
        assert_eq!(
            (snap.park_id.as_str(), snap.building_id.as_str()),
            ("", "b7")
        );
    }

    #[test]
    fn an_anti_passback_door_without_an_area_is_refused() {
        let mut doc = BuildingDoc::new("park-1", "b1", 0).unwrap();
        let door = Door {
            id: "d1".into(),
            name: "lobby in".into(),
            building_id: "b1".into(),
            anti_passback: true,
            direction: DoorDirection::In,
            area_id: None,
            unlock_duration_ms: 3000,
            status: DoorStatus::Enabled,
        };
        assert!(matches!(
            doc.upsert(&door),
            Err(DocError::InvalidEntity { .. })
        ));
    }

    #[test]
    fn disabling_a_door_is_one_field_edit() {
        let mut doc = BuildingDoc::new("park-1", "b1", 0).unwrap();
        let door = Door {
            id: "d1".into(),
            name: "lobby".into(),
            building_id: "b1".into(),
            anti_passback: false,
            direction: DoorDirection::Both,
            area_id: None,
            unlock_duration_ms: 5000,
            status: DoorStatus::Enabled,
        };
        doc.upsert(&door).unwrap();
        let before = doc.heads();
        doc.set_door_status("d1", DoorStatus::Disabled).unwrap();
        let after = doc.heads();
        let changes = doc.changes(&before, &after);
        assert_eq!(changes.ids(Collection::Doors).collect::<Vec<_>>(), ["d1"]);
        let snap = doc.snapshot().unwrap();
        assert_eq!(snap.building_id, "b1");
        assert_eq!(snap.doors["d1"].status, DoorStatus::Disabled);
    }
}

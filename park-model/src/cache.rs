//! A copy of a park directory's entities, one JSON row per entity, kept beside the document so
//! that an edge node can decide from the moment it starts instead of after reading the whole
//! automerge document (about a second and a half for 100,000 credentials).
//!
//! The copy is derived: [`Directory::cache_rows`] writes all of it from a directory read whole,
//! and [`ParkDirectory::cache_delta`] the rows that a [`ChangeSet`] touched. Whoever stores
//! the rows keeps them in step with the stored document (the edge writes both in one
//! transaction) and throws them away when [`CACHE_FORMAT`] changes.
//!
//! Rows are the entities as they are read from the document, so they hold what it holds:
//! credentials as keyed digests and visible suffixes, never their values in clear.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ParkDirectory;
use crate::directory::{
    AccessGroup, Credential, Directory, Enterprise, HolidayCalendar, Lease, Person, Space,
    WeeklySchedule,
};
use crate::document::{ChangeSet, Collection, DocError, Entity};

/// Names the row format: rows written under another format are not read. Format 2: credentials
/// hold `digest` and `suffix` instead of their value, and people have no `phone`.
pub const CACHE_FORMAT: &str = concat!("park-directory-rows-2/", env!("CARGO_PKG_VERSION"));

/// The `collection` of the row that holds the directory's root fields.
pub const ROOT_ROW: &str = "";

/// One row of the copy. `value` is `None` for an entity that is gone (or can no longer be read,
/// which also takes it out of decisions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRow {
    pub collection: &'static str,
    pub id: String,
    pub value: Option<String>,
}

/// What a set of changes does to the copy: collections to empty first, then rows to write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDelta {
    pub replaced: Vec<&'static str>,
    pub rows: Vec<CacheRow>,
}

impl CacheDelta {
    pub fn is_empty(&self) -> bool {
        self.replaced.is_empty() && self.rows.is_empty()
    }

    /// Adds `later` after this delta (its rows win).
    pub fn extend(&mut self, later: CacheDelta) {
        self.replaced.extend(later.replaced);
        self.rows.extend(later.rows);
    }
}

/// A row that cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cached directory row {collection:?}/{id:?}: {reason}")]
pub struct CacheError {
    pub collection: String,
    pub id: String,
    pub reason: String,
}

#[derive(Serialize, serde::Deserialize)]
struct Root {
    park_id: String,
    utc_offset_minutes: i32,
}

fn json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no floats
    // that JSON refuses (areas are checked finite before they are stored).
    serde_json::to_string(value).unwrap_or_default()
}

fn rows_of<E: Entity + Serialize>(items: &BTreeMap<String, E>) -> impl Iterator<Item = CacheRow> {
    items.iter().map(|(id, e)| CacheRow {
        collection: E::COLLECTION.as_str(),
        id: id.clone(),
        value: Some(json(e)),
    })
}

impl Directory {
    /// Every row of the copy of this directory.
    pub fn cache_rows(&self) -> Vec<CacheRow> {
        let mut rows = vec![CacheRow {
            collection: ROOT_ROW,
            id: String::new(),
            value: Some(json(&Root {
                park_id: self.park_id.clone(),
                utc_offset_minutes: self.utc_offset_minutes,
            })),
        }];
        rows.extend(rows_of(&self.enterprises));
        rows.extend(rows_of(&self.spaces));
        rows.extend(rows_of(&self.leases));
        rows.extend(rows_of(&self.people));
        rows.extend(rows_of(&self.credentials));
        rows.extend(rows_of(&self.access_groups));
        rows.extend(rows_of(&self.schedules));
        rows.extend(rows_of(&self.holiday_calendars));
        rows
    }

    /// Reads a directory back from its rows (`collection`, `id`, `value`). Credentials, the
    /// largest collection, are parsed on a second thread.
    pub fn from_cache_rows(rows: Vec<(String, String, String)>) -> Result<Directory, CacheError> {
        let credentials_name = Collection::Credentials.as_str();
        let (credentials, rest): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|r| r.0 == credentials_name);
        let (credentials, rest) = std::thread::scope(|scope| {
            let credentials = scope.spawn(|| parse_all::<Credential>(credentials));
            let rest = parse_rest(rest);
            let credentials = match credentials.join() {
                Ok(c) => c,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (credentials, rest)
        });
        let mut directory = rest?;
        directory.credentials = credentials?;
        Ok(directory)
    }
}

fn parse<T: DeserializeOwned>(collection: &str, id: &str, value: &str) -> Result<T, CacheError> {
    serde_json::from_str(value).map_err(|e| CacheError {
        collection: collection.to_string(),
        id: id.to_string(),
        reason: e.to_string(),
    })
}

fn parse_all<E: Entity + DeserializeOwned>(
    rows: Vec<(String, String, String)>,
) -> Result<BTreeMap<String, E>, CacheError> {
    rows.into_iter()
        .map(|(c, id, v)| {
            let e: E = parse(&c, &id, &v)?;
            Ok((id, e))
        })
        .collect()
}

fn parse_rest(rows: Vec<(String, String, String)>) -> Result<Directory, CacheError> {
    let mut root: Option<Root> = None;
    let mut d = Directory {
        park_id: String::new(),
        utc_offset_minutes: 0,
        enterprises: BTreeMap::new(),
        spaces: BTreeMap::new(),
        leases: BTreeMap::new(),
        people: BTreeMap::new(),
        credentials: BTreeMap::new(),
        access_groups: BTreeMap::new(),
        schedules: BTreeMap::new(),
        holiday_calendars: BTreeMap::new(),
        rejected: Vec::new(),
    };
    fn put<E: Entity + DeserializeOwned>(
        map: &mut BTreeMap<String, E>,
        (c, id, v): (String, String, String),
    ) -> Result<(), CacheError> {
        let e: E = parse(&c, &id, &v)?;
        map.insert(id, e);
        Ok(())
    }
    for row in rows {
        let Some(collection) = Collection::ALL.iter().find(|c| c.as_str() == row.0) else {
            if row.0 == ROOT_ROW {
                root = Some(parse(&row.0, &row.1, &row.2)?);
                continue;
            }
            return Err(CacheError {
                collection: row.0,
                id: row.1,
                reason: "no such collection in a park directory".into(),
            });
        };
        match collection {
            Collection::Enterprises => put(&mut d.enterprises, row)?,
            Collection::Spaces => put(&mut d.spaces, row)?,
            Collection::Leases => put(&mut d.leases, row)?,
            Collection::People => put(&mut d.people, row)?,
            Collection::Credentials => put(&mut d.credentials, row)?,
            Collection::AccessGroups => put(&mut d.access_groups, row)?,
            Collection::Schedules => put(&mut d.schedules, row)?,
            Collection::HolidayCalendars => put(&mut d.holiday_calendars, row)?,
            _ => {
                return Err(CacheError {
                    collection: row.0,
                    id: row.1,
                    reason: "no such collection in a park directory".into(),
                });
            }
        }
    }
    let root = root.ok_or_else(|| CacheError {
        collection: ROOT_ROW.into(),
        id: String::new(),
        reason: "the root row is missing".into(),
    })?;
    d.park_id = root.park_id;
    d.utc_offset_minutes = root.utc_offset_minutes;
    Ok(d)
}

impl ParkDirectory {
    /// The rows that `changes` touched, read from this document as it is now.
    pub fn cache_delta(&self, changes: &ChangeSet) -> Result<CacheDelta, DocError> {
        let mut delta = CacheDelta::default();
        if !changes.root_fields.is_empty() {
            delta.rows.push(CacheRow {
                collection: ROOT_ROW,
                id: String::new(),
                value: Some(json(&Root {
                    park_id: self.park_id()?,
                    utc_offset_minutes: self.utc_offset_minutes()?,
                })),
            });
        }
        self.delta_of::<Enterprise>(changes, &mut delta)?;
        self.delta_of::<Space>(changes, &mut delta)?;
        self.delta_of::<Lease>(changes, &mut delta)?;
        self.delta_of::<Person>(changes, &mut delta)?;
        self.delta_of::<Credential>(changes, &mut delta)?;
        self.delta_of::<AccessGroup>(changes, &mut delta)?;
        self.delta_of::<WeeklySchedule>(changes, &mut delta)?;
        self.delta_of::<HolidayCalendar>(changes, &mut delta)?;
        Ok(delta)
    }

    fn delta_of<E: Entity<Schema = crate::directory::DirectorySchema> + Serialize>(
        &self,
        changes: &ChangeSet,
        delta: &mut CacheDelta,
    ) -> Result<(), DocError> {
        let collection = E::COLLECTION.as_str();
        if changes.collections.contains(&E::COLLECTION) {
            // Replaced whole: empty it and write what is there now.
            delta.replaced.push(collection);
            let all = self.entities::<E>()?;
            delta.rows.extend(rows_of(&all.items));
            return Ok(());
        }
        for id in changes.ids(E::COLLECTION) {
            let value = match self.get::<E>(id) {
                Ok(e) => e.map(|e| json(&e)),
                // Unreadable: out of decisions, so out of the copy too.
                Err(DocError::InvalidEntity { .. }) => None,
                Err(e) => return Err(e),
            };
            delta.rows.push(CacheRow {
                collection,
                id: id.to_string(),
                value,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::{CredentialKey, CredentialStatus};
    use crate::sample::sample_directory;

    fn key() -> CredentialKey {
        CredentialKey::new(&[3; 32])
    }

    type Rows = BTreeMap<(String, String), String>;

    fn table(rows: Vec<CacheRow>) -> Rows {
        let mut t = Rows::new();
        apply(
            &mut t,
            CacheDelta {
                replaced: Vec::new(),
                rows,
            },
        );
        t
    }

    /// What a store does with a delta.
    fn apply(t: &mut Rows, delta: CacheDelta) {
        for c in delta.replaced {
            t.retain(|(collection, _), _| collection != c);
        }
        for r in delta.rows {
            let key = (r.collection.to_string(), r.id);
            match r.value {
                Some(v) => t.insert(key, v),
                None => t.remove(&key),
            };
        }
    }

    fn tuples(t: &Rows) -> Vec<(String, String, String)> {
        t.iter()
            .map(|((c, id), v)| (c.clone(), id.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn a_directory_read_back_from_its_rows_is_the_same_directory() {
        let sample = sample_directory(300, 12, 3, &key()).unwrap();
        let d = sample.directory.snapshot().unwrap();
        assert!(d.rejected.is_empty());
        let back = Directory::from_cache_rows(tuples(&table(d.cache_rows()))).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.credentials.len(), 300);
    }

    #[test]
    fn deltas_keep_the_rows_equal_to_the_document_they_follow() {
        let mut sample = sample_directory(100, 6, 4, &key()).unwrap();
        let doc = &mut sample.directory;
        let before = doc.snapshot().unwrap();
        let mut rows = table(before.cache_rows());
        doc.track_changes();

        let cred = before.credentials.keys().next().unwrap().clone();
        let person = before.people.values().next().unwrap().clone();
        let gone = before.credentials.keys().nth(5).unwrap().clone();
        doc.set_credential_status(&cred, CredentialStatus::Lost)
            .unwrap();
        doc.upsert(&Person {
            name: "Renamed".into(),
            ..person
        })
        .unwrap();
        assert!(doc.remove::<Credential>(&gone).unwrap());
        doc.set_utc_offset_minutes(420).unwrap();
        doc.commit("edits", 1);
        let changes = doc.take_changes();
        let delta = doc.cache_delta(&changes).unwrap();
        assert!(delta.rows.iter().any(|r| r.id == gone && r.value.is_none()));
        apply(&mut rows, delta);

        let after = doc.snapshot().unwrap();
        assert_eq!(rows, table(after.cache_rows()));
        let back = Directory::from_cache_rows(tuples(&rows)).unwrap();
        assert_eq!(back, after);
        assert_eq!(back.utc_offset_minutes, 420);
        assert_eq!(back.credentials[&cred].status, CredentialStatus::Lost);
    }

    #[test]
    fn rows_hold_digests_and_suffixes_never_values() {
        let sample = sample_directory(300, 12, 5, &key()).unwrap();
        let rows = sample.directory.snapshot().unwrap().cache_rows();
        let text: String = rows.iter().filter_map(|r| r.value.clone()).collect();
        let pins = sample
            .credentials
            .iter()
            .filter(|(k, _)| *k == crate::directory::CredentialKind::Pin)
            .count();
        assert!(pins > 0, "the sample has PINs");
        for (_, value) in &sample.credentials {
            assert!(!text.contains(value.as_str()), "{value} is in the rows");
        }
        assert!(!text.contains("phone"));
        assert!(text.contains("\"digest\":\"h1:"));
    }

    #[test]
    fn a_bad_row_is_named() {
        let rows = vec![
            (
                ROOT_ROW.into(),
                String::new(),
                r#"{"park_id":"p","utc_offset_minutes":480}"#.into(),
            ),
            ("credentials".into(), "c1".into(), "{not json".into()),
        ];
        let e = Directory::from_cache_rows(rows).unwrap_err();
        assert_eq!(
            (e.collection.as_str(), e.id.as_str()),
            ("credentials", "c1")
        );
        let e = Directory::from_cache_rows(vec![("doors".into(), "d".into(), "{}".into())])
            .unwrap_err();
        assert!(e.reason.contains("no such collection"), "{e}");
        let e = Directory::from_cache_rows(Vec::new()).unwrap_err();
        assert!(e.reason.contains("root row"), "{e}");
    }
}

//! The CRDT document machinery shared by the park's documents: a typed wrapper around an
//! automerge document ([`Document`]), the layout every document follows, schema versions and
//! migrations, entity reads and writes, and the list of entities changed between two sets of
//! heads ([`ChangeSet`]).
//!
//! Layout: the root is a map holding `schema_version` (Int), `doc_type` (a string), a few
//! document-wide values (park id, UTC offset) and one map per collection (`people`,
//! `credentials`, `doors`, ...). A collection maps an entity's id to the entity's map of fields,
//! so concurrent edits of different entities, and of different fields of one entity, merge.
//! The id is the key only; it is not repeated inside the entity.
//!
//! Two replicas that create the same collection concurrently (only possible for documents that
//! did not get their collections when they were created, see [`Schema::migrate_step`]) end up
//! with two conflicting maps at one key. Reads take the union of both (the winning map first),
//! and edits of an entity go to whichever map holds it, so nothing written into the losing map
//! is lost.
//!
//! This module does no IO: bytes in, bytes out. It reads no clock: a commit's time is an
//! argument. It knows nothing of access or parking rules.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{
    ActorId, AutoCommit, AutomergeError, ChangeHash, ObjId, ObjType, PatchAction, Prop, ROOT,
    ReadDoc, Value,
};
use autosurgeon::{Hydrate, HydrateError, Reconcile, ReconcileError};

use crate::compat::{Field, string_from_value};
use crate::time::Timestamp;

/// The root key holding the schema version.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The root key naming the kind of document.
pub const DOC_TYPE_KEY: &str = "doc_type";

/// Errors of document operations. Messages are lowercase without a trailing period.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    // The library errors are boxed: they are large, and errors are rare.
    #[error("automerge: {0}")]
    Automerge(Box<AutomergeError>),
    #[error("reading the document: {0}")]
    Hydrate(Box<HydrateError>),
    #[error("writing the document: {0}")]
    Reconcile(Box<ReconcileError>),
    #[error("{collection} {id:?} is invalid: {reason}")]
    InvalidEntity {
        collection: Collection,
        id: String,
        reason: String,
    },
    #[error("no {collection} with id {id:?}")]
    NotFound { collection: Collection, id: String },
    #[error("the document is a {found:?}, not a {expected:?}")]
    WrongDocument {
        expected: &'static str,
        found: String,
    },
    #[error("schema version {found} is newer than this build supports ({supported})")]
    UnsupportedVersion { found: i64, supported: i64 },
    #[error("root field {field:?} is invalid: {reason}")]
    InvalidRoot { field: &'static str, reason: String },
    #[error("no migration of a {doc_type:?} from schema version {from}")]
    NoMigration { doc_type: &'static str, from: i64 },
}

impl From<AutomergeError> for DocError {
    fn from(e: AutomergeError) -> Self {
        DocError::Automerge(Box::new(e))
    }
}

impl From<HydrateError> for DocError {
    fn from(e: HydrateError) -> Self {
        DocError::Hydrate(Box::new(e))
    }
}

impl From<ReconcileError> for DocError {
    fn from(e: ReconcileError) -> Self {
        DocError::Reconcile(Box::new(e))
    }
}

/// Every collection of every document. Its string is the collection's key in the root map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collection {
    Enterprises,
    Spaces,
    Leases,
    People,
    Credentials,
    AccessGroups,
    Schedules,
    HolidayCalendars,
    Doors,
    Lots,
    Lanes,
    Tariffs,
    Passes,
    Allowances,
    BlockedPlates,
}

impl Collection {
    pub const ALL: [Collection; 15] = [
        Collection::Enterprises,
        Collection::Spaces,
        Collection::Leases,
        Collection::People,
        Collection::Credentials,
        Collection::AccessGroups,
        Collection::Schedules,
        Collection::HolidayCalendars,
        Collection::Doors,
        Collection::Lots,
        Collection::Lanes,
        Collection::Tariffs,
        Collection::Passes,
        Collection::Allowances,
        Collection::BlockedPlates,
    ];

    /// The collection's key in its document's root map.
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Enterprises => "enterprises",
            Collection::Spaces => "spaces",
            Collection::Leases => "leases",
            Collection::People => "people",
            Collection::Credentials => "credentials",
            Collection::AccessGroups => "access_groups",
            Collection::Schedules => "schedules",
            Collection::HolidayCalendars => "holiday_calendars",
            Collection::Doors => "doors",
            Collection::Lots => "lots",
            Collection::Lanes => "lanes",
            Collection::Tariffs => "tariffs",
            Collection::Passes => "passes",
            Collection::Allowances => "allowances",
            Collection::BlockedPlates => "blocked_plates",
        }
    }

    /// The collection whose key is `key`, if any.
    pub fn from_key(key: &str) -> Option<Collection> {
        Collection::ALL.into_iter().find(|c| c.as_str() == key)
    }
}

impl fmt::Display for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One kind of document: its name, its current schema version, its collections and how to
/// migrate an older version.
pub trait Schema: 'static {
    /// The value of `doc_type` in the root, e.g. `park_directory`.
    const DOC_TYPE: &'static str;
    /// The schema version this build writes.
    const VERSION: i64;
    /// The collections of this document.
    const COLLECTIONS: &'static [Collection];

    /// Migrates a document from version `from` to `from + 1`, in place. A document without
    /// `schema_version` is version 0. Steps must be idempotent and write only what is missing,
    /// because several replicas may migrate the same document concurrently: equal scalar values
    /// written concurrently merge to that value, and concurrently created collection maps are
    /// read as their union (see the module docs).
    fn migrate_step(doc: &mut AutoCommit, from: i64) -> Result<(), DocError>;
}

/// An entity stored in a collection of the documents of schema `S`.
pub trait Entity: Hydrate + Reconcile + Clone {
    /// The document kind holding this entity.
    type Schema: Schema;
    /// The collection holding this entity.
    const COLLECTION: Collection;
    /// The entity's id (its key in the collection).
    fn id(&self) -> &str;
    /// Sets the id after hydration (the id is the key, not a field).
    fn set_id(&mut self, id: String);
    /// Checks the values together (e.g. an interval's start before its end). Entities that fail
    /// are refused on write and reported, not used, on read.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An entity that could not be read, reported instead of failing the whole document: a bad
/// record written by one app must not stop a building from deciding for everyone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub collection: Collection,
    pub id: String,
    pub reason: String,
}

/// The entities of one collection, read with [`Document::entities`].
#[derive(Debug, Clone, PartialEq)]
pub struct Entities<E> {
    pub items: BTreeMap<String, E>,
    pub rejected: Vec<Rejected>,
}

/// What changed between two sets of heads of one document: computed from automerge's patches
/// by [`Document::changes`], so that an edge node updates only those entities.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// Entities created, edited or deleted, by collection and id.
    pub entities: BTreeSet<(Collection, String)>,
    /// Collections replaced or deleted as a whole: every entity in them may have changed.
    pub collections: BTreeSet<Collection>,
    /// Other root keys that changed (`utc_offset_minutes`, `schema_version`, ...).
    pub root_fields: BTreeSet<String>,
}

impl ChangeSet {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.collections.is_empty() && self.root_fields.is_empty()
    }

    /// Adds what `other` changed to this set.
    pub fn absorb(&mut self, other: ChangeSet) {
        self.entities.extend(other.entities);
        self.collections.extend(other.collections);
        self.root_fields.extend(other.root_fields);
    }

    /// The ids of changed entities of `collection` (not counting a whole-collection change).
    pub fn ids(&self, collection: Collection) -> impl Iterator<Item = &str> {
        self.entities
            .range((collection, String::new())..)
            .take_while(move |(c, _)| *c == collection)
            .map(|(_, id)| id.as_str())
    }

    /// Whether anything in `collection` changed.
    pub fn touches(&self, collection: Collection) -> bool {
        self.collections.contains(&collection) || self.ids(collection).next().is_some()
    }
}

/// A typed automerge document of schema `S`. Cloning is not offered: use [`Document::fork`] for
/// a replica with its own actor id.
pub struct Document<S: Schema> {
    am: AutoCommit,
    /// Whether loading migrated the document: the migration is a change that is not in the
    /// loaded bytes.
    migrated: bool,
    _schema: PhantomData<S>,
}

impl<S: Schema> fmt::Debug for Document<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("doc_type", &S::DOC_TYPE)
            .field("actor", self.am.get_actor())
            .finish_non_exhaustive()
    }
}

impl<S: Schema> Document<S> {
    /// A new document with every collection and the root values written by `root`, all in one
    /// change made at `now`. Every replica must start from a fork or a copy of this document, not
    /// create its own: two documents created separately do not share their collections.
    pub(crate) fn create(
        now: Timestamp,
        root: impl FnOnce(&mut AutoCommit) -> Result<(), DocError>,
    ) -> Result<Self, DocError> {
        let mut am = AutoCommit::new();
        am.put(ROOT, SCHEMA_VERSION_KEY, S::VERSION)?;
        set_root(&mut am, DOC_TYPE_KEY, S::DOC_TYPE.to_string())?;
        for c in S::COLLECTIONS {
            am.put_object(ROOT, c.as_str(), ObjType::Map)?;
        }
        root(&mut am)?;
        am.commit_with(commit_options(&format!("create {}", S::DOC_TYPE), now));
        Ok(Document {
            am,
            migrated: false,
            _schema: PhantomData,
        })
    }

    /// Loads a saved document (or several concatenated saves and changes), checks that it is
    /// this kind of document, and migrates it to the current schema version. A migration is a
    /// local change like any other and is committed with time 0.
    pub fn load(bytes: &[u8]) -> Result<Self, DocError> {
        Self::from_automerge(AutoCommit::load(bytes)?)
    }

    /// Wraps an automerge document (checked and migrated as in [`Document::load`]).
    pub fn from_automerge(mut am: AutoCommit) -> Result<Self, DocError> {
        let found = migrate::<S>(&mut am)?;
        Ok(Document {
            am,
            migrated: found != S::VERSION,
            _schema: PhantomData,
        })
    }

    /// Whether [`Document::load`] migrated this document from an older schema version. The
    /// migration is a change of its own that the loaded bytes do not hold: whoever stored them
    /// must store it too, before any later change that depends on it.
    pub fn migrated(&self) -> bool {
        self.migrated
    }

    /// Saves the whole document, compacted.
    pub fn save(&mut self) -> Vec<u8> {
        self.am.save()
    }

    /// Saves only the changes made after `heads` (append to an earlier save to get the same
    /// document).
    pub fn save_after(&mut self, heads: &[ChangeHash]) -> Vec<u8> {
        self.am.save_after(heads)
    }

    /// Applies saved changes (from [`Document::save_after`] or a whole save) to this document.
    pub fn load_incremental(&mut self, bytes: &[u8]) -> Result<(), DocError> {
        self.am.load_incremental(bytes)?;
        Ok(())
    }

    /// Merges every change of `other` into this document.
    pub fn merge(&mut self, other: &mut Self) -> Result<(), DocError> {
        self.am.merge(&mut other.am)?;
        Ok(())
    }

    /// A replica of this document with a new random actor id.
    pub fn fork(&mut self) -> Self {
        Document {
            am: self.am.fork(),
            migrated: false,
            _schema: PhantomData,
        }
    }

    /// A replica with the given actor id (deterministic tests and samples).
    pub fn fork_with_actor(&mut self, actor: ActorId) -> Self {
        Document {
            am: self.am.fork().with_actor(actor),
            migrated: false,
            _schema: PhantomData,
        }
    }

    /// The current heads (commits pending edits first).
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.am.get_heads()
    }

    /// Commits pending edits as one change with a message and a time (`now`, stored by automerge
    /// in whole seconds). Edits not committed explicitly are committed, without message and with
    /// time 0, by the next save, merge or heads call.
    pub fn commit(&mut self, message: &str, now: Timestamp) -> Option<ChangeHash> {
        self.am.commit_with(commit_options(message, now))
    }

    /// The underlying automerge document, for sync protocols.
    pub fn automerge(&self) -> &AutoCommit {
        &self.am
    }

    /// The underlying automerge document, mutable. Edits made through it bypass validation.
    pub fn automerge_mut(&mut self) -> &mut AutoCommit {
        &mut self.am
    }

    /// Unwraps the automerge document.
    pub fn into_automerge(self) -> AutoCommit {
        self.am
    }

    /// The schema version recorded in the document.
    pub fn schema_version(&self) -> Result<i64, DocError> {
        schema_version(&self.am)
    }

    /// The maps holding `collection`: one normally, several after concurrent creation, the
    /// winning one first.
    fn containers(&self, collection: Collection) -> Result<Vec<ObjId>, DocError> {
        containers(&self.am, collection)
    }

    fn find<E: Entity<Schema = S>>(&self, id: &str) -> Result<Option<(ObjId, ObjId)>, DocError> {
        for container in self.containers(E::COLLECTION)? {
            if let Some((Value::Object(ObjType::Map), obj)) = self.am.get(&container, id)? {
                return Ok(Some((container, obj)));
            }
        }
        Ok(None)
    }

    /// Reads one entity. `Ok(None)` when there is none with that id; an error when it is there
    /// but unreadable or invalid.
    pub fn get<E: Entity<Schema = S>>(&self, id: &str) -> Result<Option<E>, DocError> {
        let Some((_, obj)) = self.find::<E>(id)? else {
            return Ok(None);
        };
        read_entity::<E, _>(&self.am, &obj, id).map(Some)
    }

    /// Reads one entity that must exist.
    pub fn require<E: Entity<Schema = S>>(&self, id: &str) -> Result<E, DocError> {
        self.get(id)?.ok_or_else(|| DocError::NotFound {
            collection: E::COLLECTION,
            id: id.to_string(),
        })
    }

    /// Creates or updates an entity, writing only the fields that differ, so that concurrent
    /// edits of other fields merge. Fields the entity type does not know (written by a newer
    /// app) are left alone. Invalid entities are refused.
    pub fn upsert<E: Entity<Schema = S>>(&mut self, entity: &E) -> Result<(), DocError> {
        entity
            .validate()
            .map_err(|reason| DocError::InvalidEntity {
                collection: E::COLLECTION,
                id: entity.id().to_string(),
                reason,
            })?;
        if entity.id().is_empty() {
            return Err(DocError::InvalidEntity {
                collection: E::COLLECTION,
                id: String::new(),
                reason: "the id is empty".into(),
            });
        }
        let container = match self.find::<E>(entity.id())? {
            Some((container, _)) => container,
            None => match self.containers(E::COLLECTION)?.into_iter().next() {
                Some(c) => c,
                None => self
                    .am
                    .put_object(ROOT, E::COLLECTION.as_str(), ObjType::Map)?,
            },
        };
        autosurgeon::reconcile_prop(&mut self.am, &container, entity.id(), entity)?;
        Ok(())
    }

    /// Reads an entity, lets `edit` change it, and writes it back.
    pub fn update<E: Entity<Schema = S>>(
        &mut self,
        id: &str,
        edit: impl FnOnce(&mut E),
    ) -> Result<E, DocError> {
        let mut entity = self.require::<E>(id)?;
        edit(&mut entity);
        self.upsert(&entity)?;
        Ok(entity)
    }

    /// Deletes an entity. Returns whether there was one.
    pub fn remove<E: Entity<Schema = S>>(&mut self, id: &str) -> Result<bool, DocError> {
        let mut removed = false;
        for container in self.containers(E::COLLECTION)? {
            if self.am.get(&container, id)?.is_some() {
                self.am.delete(&container, id)?;
                removed = true;
            }
        }
        Ok(removed)
    }

    /// Every entity of a collection. Entities that cannot be read or are invalid are reported
    /// in `rejected` instead of failing the whole read.
    pub fn entities<E: Entity<Schema = S>>(&self) -> Result<Entities<E>, DocError> {
        let mut items = BTreeMap::new();
        let mut rejected = Vec::new();
        for container in self.containers(E::COLLECTION)? {
            // One pass over the collection's map: a lookup per key would search the document
            // again for each entity.
            for item in self.am.map_range(&container, ..) {
                let obj = item.id();
                let key = item.key.into_owned();
                if items.contains_key(&key) || rejected.iter().any(|r: &Rejected| r.id == key) {
                    continue;
                }
                let value = item.value.into_value();
                let read = if matches!(value, Value::Object(ObjType::Map)) {
                    read_entity::<E, _>(&self.am, &obj, &key)
                } else {
                    Err(DocError::InvalidEntity {
                        collection: E::COLLECTION,
                        id: key.clone(),
                        reason: format!("expected a map, found {value}"),
                    })
                };
                match read {
                    Ok(entity) => {
                        items.insert(key, entity);
                    }
                    Err(e) => rejected.push(Rejected {
                        collection: E::COLLECTION,
                        id: key,
                        reason: e.to_string(),
                    }),
                }
            }
        }
        Ok(Entities { items, rejected })
    }

    /// The ids present in a collection.
    pub fn ids(&self, collection: Collection) -> Result<BTreeSet<String>, DocError> {
        let mut ids = BTreeSet::new();
        for container in self.containers(collection)? {
            ids.extend(self.am.keys(&container));
        }
        Ok(ids)
    }

    /// Which entities changed between `before` and `after` (for instance the heads before and
    /// after receiving a sync message), from automerge's diff. `before` may be empty: then
    /// everything in the document counts as changed.
    ///
    /// Between arbitrary heads automerge scans the whole document: measured in a release build,
    /// 0.2 s for a directory of 10,000 credentials, 2.5 s for 100,000. A node that follows one
    /// document as it changes should use [`Document::track_changes`] and
    /// [`Document::take_changes`] instead: one changed credential then costs 1.4 ms and 25 ms
    /// (change set and index refresh together).
    pub fn changes(&mut self, before: &[ChangeHash], after: &[ChangeHash]) -> ChangeSet {
        let patches = self.am.diff(before, after);
        change_set::<S>(patches)
    }

    /// A copy with the same actor and the same record of changes (for work that is kept
    /// only if it succeeds).
    pub fn duplicate(&self) -> Self {
        Document {
            am: self.am.clone(),
            migrated: self.migrated,
            _schema: PhantomData,
        }
    }

    /// Makes `edit` and commits it as one change, but keeps it only if `check` accepts it:
    /// the edit is made on a copy, which `check` sees beside this document (before, after,
    /// and the entities changed), and which replaces this document once accepted. Returns
    /// the entities changed (what [`Document::take_changes`] would have returned). A
    /// refused edit leaves this document as it was, with no change in its history.
    pub fn checked_edit<E: From<DocError>>(
        &mut self,
        message: &str,
        now: Timestamp,
        edit: impl FnOnce(&mut Self) -> Result<(), E>,
        check: impl FnOnce(&automerge::Automerge, &automerge::Automerge, &ChangeSet) -> Result<(), E>,
    ) -> Result<ChangeSet, E> {
        let mut trial = self.duplicate();
        edit(&mut trial)?;
        trial.commit(message, now);
        let changes = trial.take_changes();
        check(self.am.document(), trial.am.document(), &changes)?;
        *self = trial;
        Ok(changes)
    }

    /// Starts recording changes from the current heads, for [`Document::take_changes`].
    pub fn track_changes(&mut self) {
        self.am.update_diff_cursor();
    }

    /// The entities changed since [`Document::track_changes`] or the previous `take_changes`
    /// (by local edits, merges, loads or sync messages alike), and starts recording anew.
    pub fn take_changes(&mut self) -> ChangeSet {
        change_set::<S>(self.am.diff_incremental())
    }

    /// Reads a root value (Text or Str for strings, lenient numbers).
    pub(crate) fn root_field<T: Field>(&self, key: &'static str) -> Result<Option<T>, DocError> {
        T::read(&self.am, &ROOT, key).map_err(|e| DocError::InvalidRoot {
            field: key,
            reason: e.to_string(),
        })
    }

    /// Writes a root value (only if it differs).
    pub(crate) fn set_root_field<T: Field>(
        &mut self,
        key: &'static str,
        value: T,
    ) -> Result<(), DocError> {
        set_root(&mut self.am, key, value)
    }
}

pub(crate) fn set_root<T: Field>(
    am: &mut AutoCommit,
    key: &'static str,
    value: T,
) -> Result<(), DocError> {
    // Field::write wants a map reconciler; the root is reconciled through a one-field wrapper.
    struct One<'a, T>(&'static str, &'a T);
    impl<T: Field> Reconcile for One<'_, T> {
        type Key<'k> = autosurgeon::reconcile::NoKey;
        fn reconcile<R: autosurgeon::Reconciler>(&self, mut r: R) -> Result<(), R::Error> {
            let mut map = r.map()?;
            self.1.write(&mut map, self.0)
        }
    }
    autosurgeon::reconcile(am, One(key, &value))?;
    Ok(())
}

/// One entity of any automerge document laid out as schema `E::Schema` says, read without
/// wrapping the document in a [`Document`] (no migration, no copy): for a replica kept as a
/// plain automerge document, such as the hub's. `Ok(None)` when there is none with that id.
pub fn entity_in<E: Entity, D: ReadDoc + autosurgeon::ReadDoc>(
    doc: &D,
    id: &str,
) -> Result<Option<E>, DocError> {
    for container in containers(doc, E::COLLECTION)? {
        if let Some((Value::Object(ObjType::Map), obj)) = ReadDoc::get(doc, &container, id)? {
            return read_entity::<E, D>(doc, &obj, id).map(Some);
        }
    }
    Ok(None)
}

/// The ids in a collection of any automerge document (see [`entity_in`]).
pub fn ids_in<D: ReadDoc>(doc: &D, collection: Collection) -> Result<BTreeSet<String>, DocError> {
    let mut ids = BTreeSet::new();
    for container in containers(doc, collection)? {
        ids.extend(doc.keys(&container));
    }
    Ok(ids)
}

/// A root value of any automerge document read as a string (Str or Text), if it is one.
pub fn root_string_in<D: ReadDoc + autosurgeon::ReadDoc>(doc: &D, key: &str) -> Option<String> {
    let (value, obj) = ReadDoc::get(doc, ROOT, key).ok()??;
    string_from_value(doc, &value, &obj).ok()
}

/// Which entities of a schema-`S` document the patches touch (for a plain automerge
/// document: patches from a [`automerge::PatchLog`] kept while changes were applied).
pub fn changes_from_patches<S: Schema>(patches: Vec<automerge::Patch>) -> ChangeSet {
    change_set::<S>(patches)
}

fn change_set<S: Schema>(patches: Vec<automerge::Patch>) -> ChangeSet {
    let mut set = ChangeSet::default();
    for patch in patches {
        if patch.obj == ROOT {
            if let Some(key) = patch_key(&patch.action) {
                match Collection::from_key(&key).filter(|c| S::COLLECTIONS.contains(c)) {
                    Some(c) => {
                        set.collections.insert(c);
                    }
                    None => {
                        set.root_fields.insert(key);
                    }
                }
            }
            continue;
        }
        let Some((_, Prop::Map(collection_key))) = patch.path.first() else {
            continue;
        };
        let Some(collection) =
            Collection::from_key(collection_key).filter(|c| S::COLLECTIONS.contains(c))
        else {
            continue;
        };
        let id = match patch.path.get(1) {
            Some((_, Prop::Map(id))) => Some(id.clone()),
            Some(_) => None,
            // The patch is on the collection map itself: the key names the entity.
            None => patch_key(&patch.action),
        };
        if let Some(id) = id {
            set.entities.insert((collection, id));
        }
    }
    set
}

/// The map key a patch on a map is about.
fn patch_key(action: &PatchAction) -> Option<String> {
    match action {
        PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key.clone()),
        PatchAction::Increment {
            prop: Prop::Map(k), ..
        }
        | PatchAction::Conflict { prop: Prop::Map(k) } => Some(k.clone()),
        _ => None,
    }
}

fn commit_options(message: &str, now: Timestamp) -> CommitOptions {
    CommitOptions::default()
        .with_message(message)
        .with_time(now.div_euclid(1_000_000))
}

fn read_entity<E: Entity, D: ReadDoc + autosurgeon::ReadDoc>(
    am: &D,
    obj: &ObjId,
    id: &str,
) -> Result<E, DocError> {
    let invalid = |reason: String| DocError::InvalidEntity {
        collection: E::COLLECTION,
        id: id.to_string(),
        reason,
    };
    let mut entity = E::hydrate_map(am, obj).map_err(|e| invalid(e.to_string()))?;
    entity.set_id(id.to_string());
    entity.validate().map_err(invalid)?;
    Ok(entity)
}

/// The maps holding `collection` in `am`, the winning one first (see the module docs).
pub(crate) fn containers<D: ReadDoc>(
    am: &D,
    collection: Collection,
) -> Result<Vec<ObjId>, DocError> {
    let mut out = Vec::new();
    if let Some((Value::Object(ObjType::Map), winner)) = am.get(ROOT, collection.as_str())? {
        out.push(winner);
    }
    for (value, obj) in am.get_all(ROOT, collection.as_str())? {
        if matches!(value, Value::Object(ObjType::Map)) && !out.contains(&obj) {
            out.push(obj);
        }
    }
    Ok(out)
}

fn schema_version(am: &AutoCommit) -> Result<i64, DocError> {
    match am.get(ROOT, SCHEMA_VERSION_KEY)? {
        None => Ok(0),
        Some((value, _)) => {
            crate::compat::int_from_value(&value).map_err(|e| DocError::InvalidRoot {
                field: SCHEMA_VERSION_KEY,
                reason: e.to_string(),
            })
        }
    }
}

/// Brings `am` to schema version `S::VERSION`, step by step. Returns the version found.
///
/// A document whose `doc_type` names another kind is refused; one without `doc_type` (version
/// 0) is taken to be of this kind. A document newer than this build is refused rather than
/// misread: the caller keeps what it had.
pub fn migrate<S: Schema>(am: &mut AutoCommit) -> Result<i64, DocError> {
    if let Some((value, id)) = am.get(ROOT, DOC_TYPE_KEY)? {
        let found = string_from_value(am, &value, &id).map_err(|e| DocError::InvalidRoot {
            field: DOC_TYPE_KEY,
            reason: e.to_string(),
        })?;
        if found != S::DOC_TYPE {
            return Err(DocError::WrongDocument {
                expected: S::DOC_TYPE,
                found,
            });
        }
    }
    let found = schema_version(am)?;
    if found > S::VERSION {
        return Err(DocError::UnsupportedVersion {
            found,
            supported: S::VERSION,
        });
    }
    if found == S::VERSION {
        return Ok(found);
    }
    // Pending local edits are committed on their own first, so the migration is one change.
    am.commit();
    for from in found..S::VERSION {
        S::migrate_step(am, from)?;
    }
    set_root(am, SCHEMA_VERSION_KEY, S::VERSION)?;
    am.commit_with(commit_options(
        &format!(
            "migrate {} from schema {found} to {}",
            S::DOC_TYPE,
            S::VERSION
        ),
        0,
    ));
    Ok(found)
}

/// The part of every version 0 → 1 migration: name the document and create any collection that
/// is missing.
pub(crate) fn migrate_v0_common<S: Schema>(am: &mut AutoCommit) -> Result<(), DocError> {
    if am.get(ROOT, DOC_TYPE_KEY)?.is_none() {
        set_root(am, DOC_TYPE_KEY, S::DOC_TYPE.to_string())?;
    }
    for c in S::COLLECTIONS {
        if containers(am, *c)?.is_empty() {
            am.put_object(ROOT, c.as_str(), ObjType::Map)?;
        }
    }
    Ok(())
}

/// Whether the root has `key` (for migrations).
pub(crate) fn root_has(am: &AutoCommit, key: &str) -> Result<bool, DocError> {
    Ok(am.get(ROOT, key)?.is_some())
}

/// Checks a UTC offset: real offsets lie within -12:00 and +14:00.
pub(crate) fn check_utc_offset(minutes: i32) -> Result<i32, DocError> {
    if (-720..=840).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(DocError::InvalidRoot {
            field: "utc_offset_minutes",
            reason: format!("{minutes} is not between -720 and 840"),
        })
    }
}

/// Validation helper: `from < to` for optional validity bounds.
pub(crate) fn check_validity(from: Option<Timestamp>, to: Option<Timestamp>) -> Result<(), String> {
    match (from, to) {
        (Some(f), Some(t)) if f >= t => Err(format!("valid_from {f} is not before valid_to {t}")),
        _ => Ok(()),
    }
}

/// Whether `now` is within `[from, to)`, an absent bound being open.
pub(crate) fn within(now: Timestamp, from: Option<Timestamp>, to: Option<Timestamp>) -> bool {
    from.is_none_or(|f| now >= f) && to.is_none_or(|t| now < t)
}

//! The park's business state at the edge: the automerge documents this building needs (the
//! park directory, this building's doors, the car parks), the decision indexes derived from
//! them, and the services that decide at doors and barriers with no uplink.
//!
//! Order of work for every decision: decide from the in-memory index (microseconds), queue
//! one write with the event and the state it changes (session, presence, review item) in
//! call order, and publish the command only once that write is durable. Local edits to the
//! documents are saved incrementally and the indexes are refreshed from the changed
//! entities only, never rebuilt per decision.
//!
//! Card numbers, QR values and PINs exist here only on their way through: a reader's value is
//! digested under the park's credential key before it is decided, a value registered over the
//! API before it is stored, and events and logs name the credential (or, when none matched,
//! the digest and visible suffix), never the value. Values that an older app or schema left
//! in clear in the directory are rewritten as digests when the document loads and when a sync
//! brings them. The key comes from the file `business.credential_key_file`
//! ([`read_credential_key_file`]; [`generate_credential_key_file`] makes one).

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use automerge::ChangeHash;
use device_drivers::{Timestamp, now_micros};
use park_model::access::{AccessIndex, Presence, PresenceMap, PresenceUpdate};
use park_model::directory::{
    ClearValues, CredentialKey, CredentialKind, CredentialStatus, Directory, Presented,
    RawCredential,
};
use park_model::gate::{EntryKind, ExitDecision, Occupancy, ParkingIndex, ParkingSession, Payer};
use park_model::parking::{Pass, PassStatus};
use park_model::{BuildingDoc, ChangeSet, ParkDirectory, ParkingDoc};
use rusqlite::types::Value as Sql;
use serde_json::{Value as Json, json};

use accounts::Audit;

use crate::broker::Publisher;
use crate::events::Event;
use crate::field::{self, CredentialRead, FieldDevice, FieldMessage, Payment, PlateRead, Side};
use crate::metrics::Metrics;
use crate::store::{Store, WriteOp};
use crate::views;

/// Settings for the park services of one edge.
#[derive(Debug, Clone)]
pub struct ParkSettings {
    pub park: String,
    pub building: String,
    /// Automerge files merged into the stored documents at start (`directory.automerge`,
    /// `building-<id>.automerge`, `parking.automerge`), if present.
    pub seed_dir: Option<std::path::PathBuf>,
    /// Plate reads below this confidence wait for a person to confirm them.
    pub plate_confidence_threshold: f64,
    /// The UTC offset used when the edge has to create the documents itself.
    pub utc_offset_minutes: i32,
    /// The park's key for credential digests, the same in every building of the park.
    pub credential_key: CredentialKeySource,
    /// Whether a hub keeps the park's documents (the edge syncs): local edits are then
    /// held to what the building may write (`park_model::ownership`), as the hub would hold
    /// them, so that an edit the hub would refuse is refused here at once instead of
    /// staying in this building's copy alone.
    pub hub_owned: bool,
}

/// Where the park's credential key comes from.
#[derive(Debug, Clone)]
pub enum CredentialKeySource {
    /// The file `business.credential_key_file` names, read when the edge starts; `setting`
    /// says where the config names it, for errors.
    File {
        path: std::path::PathBuf,
        setting: device_drivers::config::ConfigError,
    },
    /// A key in hand (tests and benchmarks).
    Key(CredentialKey),
}

impl CredentialKeySource {
    /// The key. A key file that is missing or malformed is an error that names the config
    /// file, the line and the key that name it.
    pub fn load(&self) -> Result<CredentialKey, device_drivers::config::ConfigError> {
        match self {
            CredentialKeySource::Key(k) => Ok(k.clone()),
            CredentialKeySource::File { path, setting } => {
                read_credential_key_file(path).map_err(|e| {
                    let mut error = setting.clone();
                    error.reason = format!("{e:#}");
                    error
                })
            }
        }
    }
}

/// Document ids in the store.
const DIRECTORY: &str = "directory";
const PARKING: &str = "parking";

fn building_doc_id(building: &str) -> String {
    format!("building/{building}")
}

/// A document with the heads of what is already stored, so that a save writes exactly the
/// changes not yet on disk.
struct Stored<D> {
    doc: D,
    stored_heads: Vec<ChangeHash>,
    chunks: usize,
}

#[derive(Debug, Clone)]
struct OpenSession {
    id: String,
    plate: String,
    lane: String,
    session: ParkingSession,
    /// Set once an exit has been decided with a fee still to pay.
    fee_due: Option<(ExitDecision, String)>,
    /// Payments counted for this session, by payment id: amount and currency. A payment
    /// sent again (the same id) is counted once.
    payments: BTreeMap<String, (i64, String)>,
}

impl OpenSession {
    /// What has been paid in `currency`.
    fn paid_in(&self, currency: &str) -> i64 {
        self.payments
            .values()
            .filter(|(_, c)| c == currency)
            .map(|(fen, _)| fen)
            .sum()
    }

    /// What has been paid, in the fee's currency once a fee is decided.
    fn paid_fen(&self) -> i64 {
        match &self.fee_due {
            Some((d, _)) => self.paid_in(&d.currency),
            None => self.payments.values().map(|(fen, _)| fen).sum(),
        }
    }
}

/// How many plate reads may wait for a person; more are turned away at the lane.
pub const MAX_REVIEW_QUEUE: usize = 500;

/// A repeated door read is answered once when it comes again within this window: the same
/// `id`, or without one the same credential with the same device time, at the same door
/// (see `docs/mqtt-topics.md`).
const REPEAT_WINDOW: Timestamp = 60_000_000;
/// Reads remembered for the repeat check; older ones are forgotten first.
const MAX_RECENT_READS: usize = 10_000;

/// What a decision changed in memory, undone if its write fails.
type Undo = Box<dyn FnOnce(&mut State) + Send>;

#[derive(Debug, Clone, Default)]
struct DoorLive {
    online: Option<bool>,
    state: Option<(String, Timestamp)>,
    last_decision: Option<(bool, String, Timestamp)>,
}

#[derive(Debug, Clone)]
struct ReviewItem {
    id: String,
    lane: String,
    read: PlateRead,
}

struct State {
    /// `None` while the document loads in the background after a start from its row copy.
    directory: Option<Stored<ParkDirectory>>,
    /// Directory changes not yet written to its row copy (they go with the next save).
    directory_unsaved: ChangeSet,
    building: Stored<BuildingDoc>,
    parking: Stored<ParkingDoc>,
    access: AccessIndex,
    gates: ParkingIndex,
    /// Lane → lot, kept with `gates`.
    lane_lots: HashMap<String, String>,
    presence: PresenceMap,
    occupancy: Occupancy,
    /// Open sessions by (lot, plate).
    sessions: HashMap<(String, String), OpenSession>,
    doors: BTreeMap<String, DoorLive>,
    cameras: BTreeMap<String, bool>,
    review: BTreeMap<String, ReviewItem>,
    /// Recent door reads by (door, read id or credential digest), for the repeat check.
    recent_reads: HashMap<(String, String), Timestamp>,
    /// Payment ids taken by this process, with when: a payment sent again after its
    /// session closed is recognised too (the store keeps it once either way).
    recent_payments: HashMap<String, Timestamp>,
}

/// The door and barrier services of one building.
#[derive(Clone)]
pub struct ParkService {
    state: Arc<Mutex<State>>,
    store: Store,
    publisher: Option<Publisher>,
    settings: Arc<ParkSettings>,
    /// The park's credential key, read once at start.
    key: CredentialKey,
    metrics: Arc<Metrics>,
    /// Where access decisions and door states go as rule inputs.
    alarms: Option<crate::alarms::Alarms>,
    /// Document saves one at a time, so that the row copy's writes keep the changes' order.
    saving: Arc<tokio::sync::Mutex<()>>,
    /// Held while the directory document is out of the decision state for automerge work
    /// (a sync message from the hub) and while it is edited, so the two take turns.
    directory_turn: Arc<tokio::sync::Mutex<()>>,
    /// Whether the directory document is there to edit and sync (see [`DirectoryLoad`]).
    directory_load: tokio::sync::watch::Receiver<DirectoryLoad>,
    /// Whether this start decided from the directory's row copy.
    from_copy: bool,
    /// How long this start took until doors could be decided.
    decide_ready: std::time::Duration,
}

/// Where the directory document is. After a start from its row copy the edge decides at
/// once while the document loads in the background; edits and sync wait for it.
#[derive(Debug, Clone, PartialEq)]
enum DirectoryLoad {
    Loading,
    Ready,
    Failed(String),
}

/// A statement and its parameters, for one atomic write.
type Stmt = (&'static str, Vec<Sql>);

fn batch(stmts: Vec<Stmt>) -> WriteOp {
    Box::new(move |c| {
        for (sql, params) in &stmts {
            c.prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params.iter()))?;
        }
        Ok(())
    })
}

fn event_stmt(e: &Event) -> Stmt {
    (
        "INSERT OR IGNORE INTO events (id, ts, kind, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        vec![
            Sql::Text(e.id.clone()),
            Sql::Integer(e.ts),
            Sql::Text(e.kind.clone()),
            Sql::Text(e.subject.clone()),
            Sql::Text(e.body.to_string()),
        ],
    )
}

fn text(s: &str) -> Sql {
    Sql::Text(s.to_string())
}

fn entry_view(k: &EntryKind) -> crate::views::EntryView {
    let (kind, pass, enterprise) = match k {
        EntryKind::Monthly { pass_id } => ("monthly", Some(pass_id), None),
        EntryKind::Allowance {
            pass_id,
            enterprise_id,
        } => ("allowance", Some(pass_id), Some(enterprise_id)),
        EntryKind::Visitor {
            pass_id,
            enterprise_id,
        } => ("visitor", pass_id.as_ref(), enterprise_id.as_ref()),
    };
    crate::views::EntryView {
        kind: kind.to_string(),
        pass: pass.cloned(),
        enterprise: enterprise.cloned(),
    }
}

fn entry_kind_json(k: &EntryKind) -> Json {
    match k {
        EntryKind::Monthly { pass_id } => json!({"kind": "monthly", "pass": pass_id}),
        EntryKind::Allowance {
            pass_id,
            enterprise_id,
        } => json!({"kind": "allowance", "pass": pass_id, "enterprise": enterprise_id}),
        EntryKind::Visitor {
            pass_id,
            enterprise_id,
        } => json!({"kind": "visitor", "pass": pass_id, "enterprise": enterprise_id}),
    }
}

fn entry_kind_from_json(j: &Json) -> Option<EntryKind> {
    let s = |k: &str| j.get(k).and_then(Json::as_str).map(str::to_string);
    match j.get("kind")?.as_str()? {
        "monthly" => Some(EntryKind::Monthly {
            pass_id: s("pass")?,
        }),
        "allowance" => Some(EntryKind::Allowance {
            pass_id: s("pass")?,
            enterprise_id: s("enterprise")?,
        }),
        "visitor" => Some(EntryKind::Visitor {
            pass_id: s("pass"),
            enterprise_id: s("enterprise"),
        }),
        _ => None,
    }
}

fn payer_json(p: &Payer) -> Json {
    match p {
        Payer::Driver => json!("driver"),
        Payer::Enterprise(e) => json!({"enterprise": e}),
    }
}

fn side(s: Option<Side>) -> Option<&'static str> {
    s.map(|s| match s {
        Side::In => "in",
        Side::Out => "out",
    })
}

fn credential_kind(k: field::CredentialKind) -> CredentialKind {
    match k {
        field::CredentialKind::Card => CredentialKind::Card,
        field::CredentialKind::Qr => CredentialKind::Qr,
        field::CredentialKind::Pin => CredentialKind::Pin,
        field::CredentialKind::Plate => CredentialKind::Plate,
    }
}

impl ParkService {
    /// Loads the documents from the store (merging any seed files), derives the indexes,
    /// and restores sessions, presence and the review queue.
    pub async fn open(
        store: Store,
        settings: ParkSettings,
        publisher: Option<Publisher>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<ParkService> {
        let key = settings.credential_key.load()?;
        let now = now_micros();
        let seed = |name: &str| -> anyhow::Result<Option<Vec<u8>>> {
            let Some(dir) = &settings.seed_dir else {
                return Ok(None);
            };
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        };
        let building_id = building_doc_id(&settings.building);
        let started = std::time::Instant::now();
        let directory_seed = seed("directory.automerge")?;
        let opened = open_directory(&store, &settings, &key, directory_seed, now).await?;
        report_clear_values(&metrics, opened.cleared);
        let (building, _) = open_doc(
            &store,
            &building_id,
            seed(&format!("building-{}.automerge", settings.building))?,
            || BuildingDoc::new(&settings.park, &settings.building, now),
            |_, _| Ok(false),
        )
        .await?;
        let (parking, _) = open_doc(
            &store,
            PARKING,
            seed("parking.automerge")?,
            || ParkingDoc::new(&settings.park, settings.utc_offset_minutes, now),
            |_, _| Ok(false),
        )
        .await?;
        let dir_snapshot = opened.snapshot;
        let building_snapshot = building.doc.snapshot()?;
        for r in dir_snapshot
            .rejected
            .iter()
            .chain(&building_snapshot.rejected)
        {
            tracing::warn!(collection = %r.collection, id = %r.id, reason = %r.reason, "A document entity cannot be read and takes no part in decisions.");
        }
        let access = AccessIndex::build(&dir_snapshot, [&building_snapshot]);
        let credentials_read = dir_snapshot.credentials.len();
        if let Some(version) = opened.write_copy_at {
            // The row copy, for the next start (in the background: it is not needed now).
            let store = store.clone();
            tokio::spawn(async move {
                let rows = tokio::task::spawn_blocking(move || dir_snapshot.cache_rows()).await;
                let result = match rows {
                    Ok(rows) => crate::docs::write_cache(&store, DIRECTORY, version, rows).await,
                    Err(e) => Err(e.into()),
                };
                match result {
                    Ok(true) => tracing::debug!("The directory's row copy was written."),
                    Ok(false) => tracing::debug!(
                        "The directory changed before its row copy was written; the next start writes it."
                    ),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "The directory's row copy could not be written; the next start reads the document.")
                    }
                }
            });
        } else {
            drop(dir_snapshot);
        }
        let parking_snapshot = parking.doc.snapshot()?;
        let gates = ParkingIndex::build(&parking_snapshot);
        let lane_lots = lane_lots(&parking_snapshot);
        let (sessions, presence, review) = restore(&store).await?;
        let mut occupancy = Occupancy::default();
        for s in sessions.values() {
            *occupancy
                .occupied
                .entry(s.session.lot_id.clone())
                .or_default() += 1;
            if let EntryKind::Allowance { enterprise_id, .. } = &s.session.kind {
                *occupancy
                    .allowance_in_use
                    .entry((enterprise_id.clone(), s.session.lot_id.clone()))
                    .or_default() += 1;
            }
        }
        let doors = building_snapshot
            .doors
            .keys()
            .map(|d| (d.clone(), DoorLive::default()))
            .collect();
        let from_copy = opened.stored.is_none();
        let mut state = State {
            directory: opened.stored,
            directory_unsaved: ChangeSet::default(),
            building,
            parking,
            access,
            gates,
            lane_lots,
            presence,
            occupancy,
            sessions,
            doors,
            cameras: BTreeMap::new(),
            review,
            recent_reads: HashMap::new(),
            recent_payments: HashMap::new(),
        };
        if let Some(d) = &mut state.directory {
            d.doc.track_changes();
        }
        state.building.doc.track_changes();
        // Local edits of the car parks are checked by what they change (see
        // `edit_parking`), which is counted from here.
        state.parking.doc.track_changes();
        tracing::info!(
            credentials = state.access.credential_count(),
            credentials_read,
            credential_key = key.id(),
            doors = state.access.door_count(),
            open_sessions = state.sessions.len(),
            directory_from = if from_copy { "row copy" } else { "document" },
            ms = started.elapsed().as_millis() as u64,
            "Park documents loaded."
        );
        let decide_ready = started.elapsed();
        let ready_ms = decide_ready.as_millis() as u64;
        metrics.directory_decide_ready_ms.store(ready_ms, Relaxed);
        metrics.directory_from_copy.store(from_copy as u64, Relaxed);
        if !from_copy {
            metrics.directory_document_ready_ms.store(ready_ms, Relaxed);
        }
        let (load_tx, load_rx) = tokio::sync::watch::channel(if from_copy {
            DirectoryLoad::Loading
        } else {
            DirectoryLoad::Ready
        });
        let service = ParkService {
            state: Arc::new(Mutex::new(state)),
            store,
            publisher,
            settings: Arc::new(settings),
            key,
            metrics,
            alarms: None,
            saving: Arc::new(tokio::sync::Mutex::new(())),
            directory_turn: Arc::new(tokio::sync::Mutex::new(())),
            directory_load: load_rx,
            from_copy,
            decide_ready,
        };
        if let Some(seed) = opened.load_later {
            let svc = service.clone();
            tokio::spawn(async move {
                let key = svc.key.clone();
                let outcome = match load_directory(svc.store.clone(), seed, key).await {
                    Ok(loaded) => svc.install_directory(loaded).await,
                    Err(e) => Err(e),
                };
                let _ = load_tx.send(match outcome {
                    Ok(()) => {
                        svc.metrics.directory_document_ready_ms.store(
                            started.elapsed().as_millis() as u64,
                            Relaxed,
                        );
                        DirectoryLoad::Ready
                    }
                    Err(e) => {
                        let e = format!("{e:#}");
                        tracing::error!(error = %e, "The stored park directory cannot be loaded: doors decide by its row copy, but it cannot be edited or synced.");
                        DirectoryLoad::Failed(e)
                    }
                });
            });
        }
        Ok(service)
    }

    /// Puts the directory document, loaded in the background, in place: what a seed file
    /// added since the row copy reaches the index and is saved with the copy.
    async fn install_directory(&self, loaded: LoadedDirectory) -> anyhow::Result<()> {
        report_clear_values(&self.metrics, loaded.cleared);
        let changed = !loaded.seeded.is_empty() || loaded.migrated;
        {
            let mut guard = self.lock();
            let s = &mut *guard;
            let mut stored = loaded.stored;
            if changed {
                let report = s.access.refresh_directory(&stored.doc, &loaded.seeded)?;
                tracing::info!(
                    upserted = report.upserted,
                    removed = report.removed,
                    "The seed file or a rewrite of clear values changed the park directory."
                );
                s.directory_unsaved.absorb(loaded.seeded);
            }
            stored.doc.track_changes();
            s.directory = Some(stored);
        }
        tracing::info!("The park directory document has loaded.");
        if changed {
            self.persist(DIRECTORY, |s| s.directory.as_mut()).await?;
        }
        Ok(())
    }

    /// Whether this start decided from the directory's row copy, and how long after the start
    /// doors could be decided.
    pub fn start_report(&self) -> (bool, std::time::Duration) {
        (self.from_copy, self.decide_ready)
    }

    /// Waits until the directory document is there to edit and sync: at once after a start
    /// from the document, after the background load after a start from its row copy.
    pub async fn directory_loaded(&self) -> Result<(), ParkError> {
        let mut rx = self.directory_load.clone();
        loop {
            match &*rx.borrow_and_update() {
                DirectoryLoad::Ready => return Ok(()),
                DirectoryLoad::Failed(e) => {
                    return Err(ParkError::Store(anyhow::anyhow!(
                        "the park directory document could not be loaded: {e}"
                    )));
                }
                DirectoryLoad::Loading => {}
            }
            rx.changed().await.map_err(|_| {
                ParkError::Store(anyhow::anyhow!("the park directory stopped loading"))
            })?;
        }
    }

    /// Feeds access decisions (`access.granted`, `access.denied`) and door states
    /// (`door.opened`, `door.closed`, `door.forced`, `door.held_open`) to the rules.
    pub fn set_alarms(&mut self, alarms: crate::alarms::Alarms) {
        self.alarms = Some(alarms);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one message from a door controller, camera or pay terminal. Returns once the
    /// resulting write is queued; the command goes out when it is durable.
    pub async fn handle(&self, msg: FieldMessage) {
        let now = now_micros();
        if let Some(alarms) = &self.alarms
            && let FieldMessage::DoorState { door, state, ts } = &msg
        {
            alarms
                .event(&format!("door.{}", state.as_str()), door, *ts)
                .await;
        }
        if let Some(unknown) = self.unknown_target(&msg) {
            // A device the broker let in, naming a door or lane this building does not
            // have: nothing is decided, stored or sent for it.
            self.metrics
                .field_unknown_target_total
                .fetch_add(1, Relaxed);
            tracing::warn!(target = %unknown, "A door or lane message names a door or lane this building does not have; refused.");
            return;
        }
        let result = match msg {
            FieldMessage::DoorRead { door, read } => self.door_read(&door, read, now).await,
            FieldMessage::DoorState { door, state, ts } => {
                if let Some(live) = self.lock().doors.get_mut(&door) {
                    live.state = Some((state.as_str().to_string(), ts));
                }
                let e = Event::new(ts, "door.state", &door, json!({"state": state.as_str()}));
                self.commit_then(vec![event_stmt(&e)], Vec::new()).await
            }
            FieldMessage::Status { device, online } => {
                let mut s = self.lock();
                match device {
                    FieldDevice::Door(d) => {
                        if let Some(live) = s.doors.get_mut(&d) {
                            live.online = Some(online);
                        }
                    }
                    FieldDevice::Camera(l) => {
                        s.cameras.insert(l, online);
                    }
                }
                Ok(())
            }
            FieldMessage::Plate { lane, plate } => self.plate(&lane, plate, now).await,
            FieldMessage::Payment { lane, payment } => self.payment(&lane, payment, now).await,
        };
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "A door or lane message could not be handled.");
        }
    }

    /// The door or lane a message names, when this building has no such door or lane.
    fn unknown_target(&self, msg: &FieldMessage) -> Option<String> {
        let s = self.lock();
        let door = |d: &str| (!s.doors.contains_key(d)).then(|| format!("door {d}"));
        let lane = |l: &str| (!s.lane_lots.contains_key(l)).then(|| format!("lane {l}"));
        match msg {
            FieldMessage::DoorRead { door: d, .. } | FieldMessage::DoorState { door: d, .. } => {
                door(d)
            }
            FieldMessage::Status {
                device: FieldDevice::Door(d),
                ..
            } => door(d),
            FieldMessage::Status {
                device: FieldDevice::Camera(l),
                ..
            }
            | FieldMessage::Plate { lane: l, .. }
            | FieldMessage::Payment { lane: l, .. } => lane(l),
        }
    }

    /// Queues `stmts` as one write now, and publishes `commands` once it is durable: from
    /// the store's writer thread, right after the commit, so that no task wake-up lies
    /// between the durable event and the unlock.
    async fn commit_then(
        &self,
        stmts: Vec<Stmt>,
        commands: Vec<(String, Json)>,
    ) -> anyhow::Result<()> {
        self.commit_undoable(stmts, commands, None, None).await
    }

    /// [`Self::commit_then`] for a decision that changed presence or parking state in
    /// memory before its write: if the write fails, `undo` puts the state back as it was
    /// and nothing is sent.
    async fn commit_or_undo(
        &self,
        stmts: Vec<Stmt>,
        commands: Vec<(String, Json)>,
        undo: Undo,
    ) -> anyhow::Result<()> {
        self.commit_undoable(stmts, commands, None, Some(undo))
            .await
    }

    /// [`Self::commit_then`] with the audit record of the person's act that made the
    /// write, in the same transaction.
    async fn commit_audited(
        &self,
        stmts: Vec<Stmt>,
        commands: Vec<(String, Json)>,
        audit: Option<Audit>,
    ) -> anyhow::Result<()> {
        self.commit_undoable(stmts, commands, audit, None).await
    }

    async fn commit_undoable(
        &self,
        stmts: Vec<Stmt>,
        commands: Vec<(String, Json)>,
        audit: Option<Audit>,
        undo: Option<Undo>,
    ) -> anyhow::Result<()> {
        let publisher = self.publisher.clone();
        let metrics = self.metrics.clone();
        let state = self.state.clone();
        // Serialized here, not on the writer's thread.
        let commands: Vec<(String, Vec<u8>)> = commands
            .into_iter()
            .map(|(topic, payload)| (topic, payload.to_string().into_bytes()))
            .collect();
        let after = move |outcome: Result<(), String>| {
            if let Err(e) = outcome {
                let n = commands.len() as u64;
                metrics.commands_not_sent_total.fetch_add(n, Relaxed);
                if let Some(undo) = undo {
                    undo(&mut state.lock().unwrap_or_else(|e| e.into_inner()));
                    metrics.decisions_undone_total.fetch_add(1, Relaxed);
                }
                tracing::error!(error = %e, "A decision could not be stored; its command is not sent and what it changed is undone.");
                return;
            }
            let Some(p) = publisher else { return };
            for (topic, payload) in commands {
                match p.publish(&topic, payload) {
                    Ok(()) => metrics.commands_published_total.fetch_add(1, Relaxed),
                    Err(e) => {
                        tracing::error!(%topic, error = %format!("{e:#}"), "Cannot publish a command.");
                        metrics.commands_not_sent_total.fetch_add(1, Relaxed)
                    }
                };
            }
        };
        let mut write = batch(stmts);
        let Some(audit) = audit else {
            return self.store.submit_then(write, Box::new(after)).await;
        };
        // A person's act is answered once it is durable, with its audit record.
        let op: crate::store::WriteOp = Box::new(move |c| {
            write(c)?;
            Ok(audit.append(&park_db::Connection::sqlite(c))?)
        });
        let (done, stored) = tokio::sync::oneshot::channel();
        let after = move |outcome: Result<(), String>| {
            let _ = done.send(outcome.clone());
            after(outcome);
        };
        self.store.submit_then(op, Box::new(after)).await?;
        stored
            .await
            .map_err(|_| anyhow::anyhow!("the store writer has stopped"))?
            .map_err(|e| anyhow::anyhow!("store write refused: {e}"))
    }

    async fn door_read(
        &self,
        door: &str,
        read: CredentialRead,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        // The value is digested before anything else sees it; from here on only the digest
        // and the visible suffix exist.
        let presented = self.key.present(credential_kind(read.kind), &read.value);
        let (decision, event, undo) = {
            let mut s = self.lock();
            let key = match &read.id {
                Some(id) => format!("id:{id}"),
                // Without an id, a duplicate is the same credential with the same time
                // (a device's own `ts`; reads stamped on arrival never repeat).
                None => format!("value:{}@{}", presented.digest, read.ts),
            };
            let window = REPEAT_WINDOW;
            let key = (door.to_string(), key);
            if s.recent_reads.get(&key).is_some_and(|t| now - t < window) {
                drop(s);
                self.metrics.door_reads_repeated_total.fetch_add(1, Relaxed);
                tracing::debug!(%door, "A door read repeated within its window; answered once.");
                return Ok(());
            }
            if s.recent_reads.len() >= MAX_RECENT_READS {
                s.recent_reads.retain(|_, t| now - *t < REPEAT_WINDOW);
                if s.recent_reads.len() >= MAX_RECENT_READS {
                    s.recent_reads.clear();
                }
            }
            s.recent_reads.insert(key, now);
            let d = s.access.decide(&presented, door, now, &s.presence);
            let mut undo: Option<Undo> = None;
            if let Some(update) = &d.presence_update {
                let before = park_model::access::PresenceLookup::presence(
                    &s.presence,
                    &update.person_id,
                    &update.area_id,
                );
                s.presence.apply(update);
                let (person, area) = (update.person_id.clone(), update.area_id.clone());
                undo = Some(Box::new(move |s: &mut State| {
                    s.presence.restore(&person, &area, before);
                }));
            }
            let e = Event::new(
                read.ts,
                "access.decision",
                door,
                decision_body(&d, &presented, &read, now),
            );
            if let Some(live) = s.doors.get_mut(door) {
                live.last_decision = Some((d.granted, d.reason.as_str().to_string(), now));
            }
            (d, e, undo)
        };
        let counter = if decision.granted {
            &self.metrics.access_granted_total
        } else {
            &self.metrics.access_denied_total
        };
        counter.fetch_add(1, Relaxed);
        if let Some(alarms) = &self.alarms {
            let kind = if decision.granted {
                "access.granted"
            } else {
                "access.denied"
            };
            alarms.event(kind, door, now).await;
        }
        let mut stmts = vec![event_stmt(&event)];
        if let Some(u) = &decision.presence_update {
            stmts.push(presence_stmt(u, now));
        }
        let mut command = if decision.granted {
            json!({"command": "unlock", "duration_ms": decision.unlock_duration_ms, "decision": event.id})
        } else {
            json!({"command": "deny", "reason": decision.reason.as_str(), "decision": event.id})
        };
        if let Some(id) = &read.id {
            command["read"] = json!(id);
        }
        let commands = vec![(format!("door/{door}/command"), command)];
        match undo {
            Some(undo) => self.commit_or_undo(stmts, commands, undo).await,
            None => self.commit_then(stmts, commands).await,
        }
    }

    async fn plate(&self, lane: &str, read: PlateRead, now: Timestamp) -> anyhow::Result<()> {
        if read.confidence < self.settings.plate_confidence_threshold {
            if self.lock().review.len() >= MAX_REVIEW_QUEUE {
                self.metrics.review_queue_full_total.fetch_add(1, Relaxed);
                let e = Event::new(
                    read.ts,
                    "parking.review_full",
                    lane,
                    json!({"plate": read.plate, "confidence": read.confidence, "direction": side(Some(read.direction)), "waiting": MAX_REVIEW_QUEUE}),
                );
                let commands = vec![
                    (
                        format!("barrier/{lane}/command"),
                        json!({"command": "hold", "reason": "review_queue_full", "decision": e.id}),
                    ),
                    (
                        format!("lane/{lane}/display"),
                        json!({"text": "Please call the attendant."}),
                    ),
                ];
                return self.commit_then(vec![event_stmt(&e)], commands).await;
            }
            let e = Event::new(
                read.ts,
                "parking.review",
                lane,
                json!({"plate": read.plate, "confidence": read.confidence, "direction": side(Some(read.direction)), "image": read.image, "state": "waiting"}),
            );
            let item = ReviewItem {
                id: e.id.clone(),
                lane: lane.to_string(),
                read: read.clone(),
            };
            let review_id = item.id.clone();
            self.lock().review.insert(item.id.clone(), item);
            let stmts = vec![
                event_stmt(&e),
                (
                    "INSERT OR IGNORE INTO review_queue (id, lane, plate, confidence, direction, image, ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    vec![
                        text(&e.id),
                        text(lane),
                        text(&read.plate),
                        Sql::Real(read.confidence),
                        text(side(Some(read.direction)).unwrap_or("in")),
                        read.image.clone().map(Sql::Text).unwrap_or(Sql::Null),
                        Sql::Integer(read.ts),
                    ],
                ),
            ];
            let display = json!({"text": "Please wait: an attendant is checking your plate."});
            let undo: Undo = Box::new(move |s: &mut State| {
                s.review.remove(&review_id);
            });
            return self
                .commit_or_undo(stmts, vec![(format!("lane/{lane}/display"), display)], undo)
                .await;
        }
        match read.direction {
            Side::In => {
                self.entry(lane, &read.plate, read.ts, now, None, read.id.as_deref())
                    .await
            }
            Side::Out => {
                self.exit(lane, &read.plate, read.ts, now, read.id.as_deref())
                    .await
            }
        }
    }

    async fn entry(
        &self,
        lane: &str,
        plate: &str,
        ts: Timestamp,
        now: Timestamp,
        confirmed_by: Option<&str>,
        read_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let (stmts, commands, undo) = {
            let mut s = self.lock();
            let d = s.gates.decide_entry(plate, lane, now, &s.occupancy);
            let mut undo: Option<Undo> = None;
            let session_id = d
                .granted
                .then(|| Event::new(ts, "parking.session", lane, Json::Null).id);
            let e = Event::new(
                ts,
                "parking.entry",
                lane,
                json!({
                    "plate": d.plate,
                    "lot": d.lot_id,
                    "granted": d.granted,
                    "reason": d.reason.as_str(),
                    "sentence": d.reason.sentence(),
                    "session": session_id,
                    "entry": d.kind.as_ref().map(entry_kind_json),
                    "confirmedBy": confirmed_by,
                }),
            );
            let mut stmts = vec![event_stmt(&e)];
            let mut commands = Vec::new();
            match (&session_id, &d.lot_id, &d.kind) {
                (Some(id), Some(lot), Some(kind)) if d.granted => {
                    // A car already inside by this plate (a missed exit) is closed first so the
                    // lot is not counted twice.
                    let key = (lot.clone(), d.plate.clone());
                    let old = s.sessions.remove(&key);
                    if let Some(old) = &old {
                        release(&mut s.occupancy, &old.session);
                        stmts.push(("UPDATE parking_sessions SET state = 'closed', exited_at = ?2 WHERE id = ?1", vec![text(&old.id), Sql::Integer(ts)]));
                    }
                    s.occupancy.record_entry(&d);
                    let new_id = id.clone();
                    undo = Some(Box::new(move |s: &mut State| {
                        if let Some(new) = s.sessions.remove(&key) {
                            if new.id == new_id {
                                release(&mut s.occupancy, &new.session);
                            } else {
                                s.sessions.insert(key.clone(), new);
                            }
                        }
                        if let Some(old) = old {
                            occupy(&mut s.occupancy, &old.session);
                            s.sessions.insert(key, old);
                        }
                    }));
                    let session = ParkingSession {
                        lot_id: lot.clone(),
                        entered_at: ts,
                        kind: kind.clone(),
                    };
                    s.sessions.insert(
                        (lot.clone(), d.plate.clone()),
                        OpenSession {
                            id: id.clone(),
                            plate: d.plate.clone(),
                            lane: lane.to_string(),
                            session,
                            fee_due: None,
                            payments: BTreeMap::new(),
                        },
                    );
                    stmts.push((
                        "INSERT INTO parking_sessions (id, lot, plate, entry_lane, entered_at, kind, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open')",
                        vec![text(id), text(lot), text(&d.plate), text(lane), Sql::Integer(ts), Sql::Text(entry_kind_json(kind).to_string())],
                    ));
                    commands.push((
                        format!("barrier/{lane}/command"),
                        json!({"command": "open", "decision": e.id, "session": id}),
                    ));
                    commands.push((
                        format!("lane/{lane}/display"),
                        json!({"text": format!("Welcome, {}", d.plate)}),
                    ));
                }
                _ => {
                    commands.push((
                        format!("barrier/{lane}/command"),
                        json!({"command": "hold", "reason": d.reason.as_str(), "decision": e.id}),
                    ));
                    commands.push((
                        format!("lane/{lane}/display"),
                        json!({"text": d.reason.sentence()}),
                    ));
                }
            }
            (stmts, commands, undo)
        };
        let commands = echo_read(commands, read_id);
        match undo {
            Some(undo) => self.commit_or_undo(stmts, commands, undo).await,
            None => self.commit_then(stmts, commands).await,
        }
    }

    async fn exit(
        &self,
        lane: &str,
        plate: &str,
        ts: Timestamp,
        now: Timestamp,
        read_id: Option<&str>,
    ) -> anyhow::Result<()> {
        let (stmts, commands, undo) = {
            let mut s = self.lock();
            let plate = field::normalize_plate(plate);
            let lot = s.lane_lots.get(lane).cloned();
            let key = lot.clone().map(|l| (l, plate.clone()));
            let open = key.as_ref().and_then(|k| s.sessions.get(k)).cloned();
            let undo = undo_session(key.clone(), open.clone());
            let d = s
                .gates
                .decide_exit(&plate, lane, open.as_ref().map(|o| &o.session), now);
            let e = Event::new(
                ts,
                if d.open {
                    "parking.exit"
                } else {
                    "parking.fee_due"
                },
                lane,
                json!({
                    "plate": d.plate,
                    "lot": lot,
                    "session": open.as_ref().map(|o| o.id.clone()),
                    "open": d.open,
                    "reason": d.reason.as_str(),
                    "sentence": d.reason.sentence(),
                    "feeFen": d.fee_fen,
                    "currency": d.currency,
                    "payer": payer_json(&d.payer),
                    "enteredAt": open.as_ref().map(|o| o.session.entered_at),
                }),
            );
            let mut stmts = vec![event_stmt(&e)];
            let mut commands = Vec::new();
            if d.open {
                if let (Some(k), Some(o)) = (&key, &open) {
                    s.sessions.remove(k);
                    s.occupancy.record_exit(&o.session.lot_id, &d);
                    stmts.push(close_session_stmt(&o.id, lane, ts, d.fee_fen, &d.currency));
                }
                commands.push((format!("barrier/{lane}/command"), json!({"command": "open", "decision": e.id, "session": open.as_ref().map(|o| o.id.clone())})));
                commands.push((
                    format!("lane/{lane}/display"),
                    json!({"text": d.reason.sentence()}),
                ));
            } else if d.fee_fen > 0 {
                // The car waits for payment; a lost ticket gets a session of its own so that
                // the payment has something to settle.
                let session_id = match (&key, &open) {
                    (Some(k), Some(o)) => {
                        if let Some(so) = s.sessions.get_mut(k) {
                            so.fee_due = Some((d.clone(), lane.to_string()));
                        }
                        stmts.push(("UPDATE parking_sessions SET state = 'fee_due', fee_fen = ?2, currency = ?3, exit_lane = ?4 WHERE id = ?1", vec![text(&o.id), Sql::Integer(d.fee_fen), text(&d.currency), text(lane)]));
                        o.id.clone()
                    }
                    _ => {
                        let id = Event::new(ts, "parking.session", lane, Json::Null).id;
                        let lot_id = lot.clone().unwrap_or_default();
                        let session = ParkingSession {
                            lot_id: lot_id.clone(),
                            entered_at: ts,
                            kind: EntryKind::Visitor {
                                pass_id: None,
                                enterprise_id: None,
                            },
                        };
                        stmts.push((
                            "INSERT INTO parking_sessions (id, lot, plate, entry_lane, entered_at, kind, state, exit_lane, fee_fen, currency) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'fee_due', ?4, ?7, ?8)",
                            vec![text(&id), text(&lot_id), text(&plate), text(lane), Sql::Integer(ts), Sql::Text(entry_kind_json(&session.kind).to_string()), Sql::Integer(d.fee_fen), text(&d.currency)],
                        ));
                        // Counted as inside until it leaves, as the car is in the lot.
                        *s.occupancy.occupied.entry(lot_id.clone()).or_default() += 1;
                        s.sessions.insert(
                            (lot_id, plate.clone()),
                            OpenSession {
                                id: id.clone(),
                                plate: plate.clone(),
                                lane: lane.to_string(),
                                session,
                                fee_due: Some((d.clone(), lane.to_string())),
                                payments: BTreeMap::new(),
                            },
                        );
                        id
                    }
                };
                commands.push((format!("lane/{lane}/display"), json!({"text": d.reason.sentence(), "fee_fen": d.fee_fen, "currency": d.currency, "session": session_id})));
                commands.push((
                    format!("barrier/{lane}/command"),
                    json!({"command": "hold", "reason": d.reason.as_str(), "decision": e.id}),
                ));
            } else {
                commands.push((
                    format!("barrier/{lane}/command"),
                    json!({"command": "hold", "reason": d.reason.as_str(), "decision": e.id}),
                ));
                commands.push((
                    format!("lane/{lane}/display"),
                    json!({"text": d.reason.sentence()}),
                ));
            }
            (stmts, commands, undo)
        };
        self.commit_or_undo(stmts, echo_read(commands, read_id), undo)
            .await
    }

    /// A payment at an exit lane, recorded and counted once by its id (offline payments
    /// reach the hub's billing later as these events); the barrier opens when the fee is
    /// covered. A payment in another currency than the fee's, or made at another lane than
    /// the one the car waits at, is recorded but not counted.
    async fn payment(&self, lane: &str, p: Payment, _now: Timestamp) -> anyhow::Result<()> {
        let (stmts, commands, undo) = {
            let mut s = self.lock();
            let found = s
                .sessions
                .iter()
                .find(|(_, o)| o.id == p.session)
                .map(|(k, _)| k.clone());
            let before = found.as_ref().and_then(|k| s.sessions.get(k)).cloned();
            if before
                .as_ref()
                .is_some_and(|o| o.payments.contains_key(&p.id))
                || s.recent_payments.contains_key(&p.id)
            {
                drop(s);
                self.metrics.payments_repeated_total.fetch_add(1, Relaxed);
                tracing::info!(payment = %p.id, "A payment came again; it was counted once.");
                return Ok(());
            }
            if s.recent_payments.len() >= MAX_RECENT_READS {
                let day_ago = now_micros() - 86_400_000_000;
                s.recent_payments.retain(|_, t| *t > day_ago);
                if s.recent_payments.len() >= MAX_RECENT_READS {
                    s.recent_payments.clear();
                }
            }
            s.recent_payments.insert(p.id.clone(), now_micros());
            let refusal = match &before {
                None => None,
                Some(o) => match &o.fee_due {
                    Some((d, _)) if d.currency != p.currency => Some(format!(
                        "paid in {}, the fee is in {}",
                        p.currency, d.currency
                    )),
                    Some((_, exit_lane)) if exit_lane != lane => Some(format!(
                        "paid at lane {lane}, the car waits at lane {exit_lane}"
                    )),
                    None if s.lane_lots.get(lane) != Some(&o.session.lot_id) => Some(format!(
                        "lane {lane} is not a lane of lot {}",
                        o.session.lot_id
                    )),
                    _ => None,
                },
            };
            let e = Event::new(
                p.ts,
                "parking.payment",
                lane,
                json!({"session": p.session, "payment": p.id, "amountFen": p.amount_fen, "currency": p.currency, "method": format!("{:?}", p.method).to_lowercase(), "counted": refusal.is_none(), "refused": refusal}),
            );
            // The payment's row first: its event (and the session's total) are written only
            // when the row is new, so a payment the store already has is not counted again
            // even if memory did not know it.
            let mut stmts = vec![
                (
                    "INSERT OR IGNORE INTO parking_payments (id, session, amount_fen, currency, method, ts, counted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    vec![
                        text(&p.id),
                        text(&p.session),
                        Sql::Integer(p.amount_fen),
                        text(&p.currency),
                        text(&format!("{:?}", p.method).to_lowercase()),
                        Sql::Integer(p.ts),
                        Sql::Integer(i64::from(refusal.is_none())),
                    ],
                ),
                (
                    "INSERT OR IGNORE INTO events (id, ts, kind, subject, body) SELECT ?1, ?2, ?3, ?4, ?5 WHERE changes() = 1",
                    vec![
                        text(&e.id),
                        Sql::Integer(e.ts),
                        text(&e.kind),
                        text(&e.subject),
                        Sql::Text(e.body.to_string()),
                    ],
                ),
            ];
            let mut commands = Vec::new();
            if let Some(reason) = &refusal {
                self.metrics.payments_refused_total.fetch_add(1, Relaxed);
                tracing::warn!(payment = %p.id, %reason, "A payment does not match its session; recorded, not counted.");
            }
            match (&found, refusal) {
                (None, _) => {
                    tracing::warn!(session = %p.session, payment = %p.id, "A payment names no open session; it is recorded for billing.")
                }
                (Some(_), Some(_)) => {}
                (Some(key), None) => {
                    let o = s.sessions.get_mut(key).expect("found above");
                    o.payments
                        .insert(p.id.clone(), (p.amount_fen, p.currency.clone()));
                    stmts.push((
                        "UPDATE parking_sessions SET paid_fen = ?2 WHERE id = ?1 AND EXISTS (SELECT 1 FROM events WHERE id = ?3)",
                        vec![text(&o.id), Sql::Integer(o.paid_fen()), text(&e.id)],
                    ));
                    if let Some((d, exit_lane)) = o.fee_due.clone()
                        && o.paid_in(&d.currency) >= d.fee_fen
                    {
                        let o = s.sessions.remove(key).expect("found above");
                        s.occupancy.record_exit(&o.session.lot_id, &d);
                        let exit = Event::new(
                            p.ts,
                            "parking.exit",
                            &exit_lane,
                            json!({"plate": o.plate, "lot": o.session.lot_id, "session": o.id, "open": true, "reason": "paid", "feeFen": d.fee_fen, "paidFen": o.paid_in(&d.currency), "currency": d.currency, "payer": payer_json(&d.payer), "enteredAt": o.session.entered_at}),
                        );
                        stmts.push(event_stmt(&exit));
                        stmts.push(close_session_stmt(
                            &o.id,
                            &exit_lane,
                            p.ts,
                            d.fee_fen,
                            &d.currency,
                        ));
                        commands.push((
                            format!("barrier/{exit_lane}/command"),
                            json!({"command": "open", "decision": exit.id, "session": o.id}),
                        ));
                        commands.push((
                            format!("lane/{exit_lane}/display"),
                            json!({"text": "Paid, thank you."}),
                        ));
                    }
                }
            }
            let session_undo = undo_session(found, before);
            let payment = p.id.clone();
            let undo: Undo = Box::new(move |s: &mut State| {
                s.recent_payments.remove(&payment);
                session_undo(s);
            });
            (stmts, commands, undo)
        };
        self.commit_or_undo(stmts, commands, undo).await
    }

    /// A person at the console confirms (with the plate as read or corrected) or rejects a
    /// low-confidence plate read.
    pub async fn resolve_review(
        &self,
        id: &str,
        plate: Option<&str>,
        admit: bool,
        audit: Audit,
    ) -> Result<Json, ParkError> {
        let actor = audit.actor.name.clone();
        let actor = actor.as_str();
        let item = self
            .lock()
            .review
            .remove(id)
            .ok_or_else(|| ParkError::NotFound(format!("no waiting plate read {id}")))?;
        let now = now_micros();
        let plate = plate
            .map(str::to_string)
            .unwrap_or_else(|| item.read.plate.clone());
        let resolution = if admit {
            format!("admitted as {plate} by {actor}")
        } else {
            format!("rejected by {actor}")
        };
        let e = Event::new(
            now,
            "parking.review",
            &item.lane,
            json!({"review": id, "plate": plate, "state": if admit { "admitted" } else { "rejected" }, "actor": actor}),
        );
        let stmts = vec![
            event_stmt(&e),
            (
                "UPDATE review_queue SET resolved_at = ?2, resolution = ?3 WHERE id = ?1",
                vec![text(id), Sql::Integer(now), text(&resolution)],
            ),
        ];
        self.commit_audited(stmts, Vec::new(), Some(audit))
            .await
            .map_err(ParkError::Store)?;
        if admit {
            let result = match item.read.direction {
                Side::In => {
                    self.entry(
                        &item.lane,
                        &plate,
                        now,
                        now,
                        Some(actor),
                        item.read.id.as_deref(),
                    )
                    .await
                }
                Side::Out => {
                    self.exit(&item.lane, &plate, now, now, item.read.id.as_deref())
                        .await
                }
            };
            result.map_err(ParkError::Store)?;
        } else {
            let display = json!({"text": "Please see the attendant."});
            self.commit_then(
                Vec::new(),
                vec![(format!("lane/{}/display", item.lane), display)],
            )
            .await
            .map_err(ParkError::Store)?;
        }
        Ok(json!({"review": id, "plate": plate, "admitted": admit}))
    }

    /// Opens a door by hand, with a reason, recorded as an event with its audit record in
    /// the same transaction.
    pub async fn manual_open(
        &self,
        door: &str,
        reason: &str,
        audit: Audit,
    ) -> Result<Json, ParkError> {
        let actor = audit.actor.name.clone();
        let duration = {
            let s = self.lock();
            if !s.doors.contains_key(door) {
                return Err(ParkError::NotFound(format!("no door {door}")));
            }
            s.building
                .doc
                .snapshot()
                .ok()
                .and_then(|b| b.doors.get(door).map(|d| d.unlock_duration_ms))
                .unwrap_or(5000)
        };
        let now = now_micros();
        let e = Event::new(
            now,
            "access.manual_open",
            door,
            json!({"reason": reason, "actor": actor, "durationMs": duration}),
        );
        let command = json!({"command": "unlock", "duration_ms": duration, "decision": e.id});
        self.commit_audited(
            vec![event_stmt(&e)],
            vec![(format!("door/{door}/command"), command)],
            Some(audit),
        )
        .await
        .map_err(ParkError::Store)?;
        Ok(json!({"door": door, "event": e.id, "durationMs": duration}))
    }

    /// Adds (or replaces) a credential in the directory, as a local edit that merges with
    /// the hub's edits later. Only the value's digest under the park's key and its visible
    /// suffix are stored; the answer shows the suffix.
    pub async fn put_credential(
        &self,
        c: RawCredential,
        audit: Audit,
    ) -> Result<views::CredentialIssued, ParkError> {
        let credential = c
            .digest(&self.key)
            .map_err(|e| ParkError::Invalid(e.to_string()))?;
        let id = credential.id.clone();
        let suffix = credential.suffix.clone();
        self.edit_directory(&format!("put credential {id}"), audit, move |d| {
            d.upsert(&credential)
        })
        .await?;
        Ok(views::CredentialIssued {
            credential: id,
            suffix,
        })
    }

    /// Suspends or reactivates a credential.
    pub async fn set_credential_status(
        &self,
        id: &str,
        status: CredentialStatus,
        audit: Audit,
    ) -> Result<views::CredentialStatusSet, ParkError> {
        let id2 = id.to_string();
        self.edit_directory(
            &format!("set credential {id} {}", status.as_str()),
            audit,
            move |d| d.set_credential_status(&id2, status),
        )
        .await?;
        Ok(views::CredentialStatusSet {
            credential: id.to_string(),
            status: status.as_str().into(),
        })
    }

    /// Adds (or replaces) a parking pass.
    pub async fn put_pass(&self, p: Pass, audit: Audit) -> Result<views::PassIssued, ParkError> {
        let id = p.id.clone();
        self.edit_parking(&format!("put pass {id}"), audit, move |d| d.upsert(&p))
            .await?;
        Ok(views::PassIssued { pass: id })
    }

    /// Suspends or reactivates a pass.
    pub async fn set_pass_status(
        &self,
        id: &str,
        status: PassStatus,
        audit: Audit,
    ) -> Result<views::PassStatusSet, ParkError> {
        let id2 = id.to_string();
        self.edit_parking(&format!("set pass {id}"), audit, move |d| {
            d.set_pass_status(&id2, status)
        })
        .await?;
        Ok(views::PassStatusSet {
            pass: id.to_string(),
            status: status.as_str().into(),
        })
    }

    async fn edit_directory(
        &self,
        what: &str,
        audit: Audit,
        edit: impl FnOnce(&mut ParkDirectory) -> Result<(), park_model::DocError>,
    ) -> Result<(), ParkError> {
        self.directory_loaded().await?;
        let _turn = self.directory_turn.lock().await;
        {
            let mut guard = self.lock();
            let s = &mut *guard;
            let dir = s.directory.as_mut().ok_or_else(|| {
                ParkError::Store(anyhow::anyhow!("the park directory is not loaded"))
            })?;
            let settings = &self.settings;
            let building = &mut s.building.doc;
            let changes = dir.doc.checked_edit(
                what,
                now_micros(),
                |d| edit(d).map_err(|e| ParkError::Invalid(e.to_string())),
                |before, after, changes| {
                    let building_doc = building.automerge_mut().document();
                    owned_edit(
                        settings,
                        park_model::ownership::DocumentId::Directory,
                        Some(building_doc),
                        (before, after, changes),
                    )
                },
            )?;
            let refreshed = s.access.refresh_directory(&dir.doc, &changes);
            s.directory_unsaved.absorb(changes);
            refreshed.map_err(|e| ParkError::Invalid(e.to_string()))?;
        }
        self.persist_audited(DIRECTORY, |s| s.directory.as_mut(), Some(audit))
            .await
            .map_err(ParkError::Store)
    }

    async fn edit_parking(
        &self,
        what: &str,
        audit: Audit,
        edit: impl FnOnce(&mut ParkingDoc) -> Result<(), park_model::DocError>,
    ) -> Result<(), ParkError> {
        {
            let mut guard = self.lock();
            let s = &mut *guard;
            let settings = &self.settings;
            s.parking.doc.checked_edit(
                what,
                now_micros(),
                |d| edit(d).map_err(|e| ParkError::Invalid(e.to_string())),
                |before, after, changes| {
                    owned_edit(
                        settings,
                        park_model::ownership::DocumentId::Parking,
                        None,
                        (before, after, changes),
                    )
                },
            )?;
            s.refresh_gates()
                .map_err(|e| ParkError::Invalid(e.to_string()))?;
        }
        self.persist_audited(PARKING, |s| Some(&mut s.parking), Some(audit))
            .await
            .map_err(ParkError::Store)
    }

    /// Saves what a document gained since it was last stored (an incremental chunk), and
    /// replaces the chunks with a snapshot every [`COMPACT_AFTER`] saves.
    /// Saves what changed in a document since its last save, and for the directory the rows
    /// of its copy that those changes touched, in one write.
    async fn persist<D: DocLike>(
        &self,
        doc_id: &str,
        pick: impl Fn(&mut State) -> Option<&mut Stored<D>>,
    ) -> anyhow::Result<()> {
        self.persist_audited(doc_id, pick, None).await
    }

    /// [`Self::persist`] with the audit record of the edit, in the same transaction as the
    /// document's new bytes.
    async fn persist_audited<D: DocLike>(
        &self,
        doc_id: &str,
        pick: impl Fn(&mut State) -> Option<&mut Stored<D>>,
        audit: Option<Audit>,
    ) -> anyhow::Result<()> {
        let _in_order = self.saving.lock().await;
        let (bytes, heads, taken) = {
            let mut guard = self.lock();
            let s = &mut *guard;
            let taken = if doc_id == DIRECTORY {
                s.directory_delta()
            } else {
                None
            };
            let Some(stored) = pick(s) else {
                return Ok(());
            };
            let since = stored.stored_heads.clone();
            (stored.doc.save_since(&since), stored.doc.heads_now(), taken)
        };
        let (delta, changes) = taken.unzip();
        // Changes not saved stay for the next save: a copy that followed a later save
        // without them would claim to match a document it does not.
        let keep = |changes: Option<ChangeSet>| {
            if let Some(c) = changes {
                self.lock().directory_unsaved.absorb(c);
            }
        };
        if bytes.is_empty() {
            keep(changes);
            // Nothing changed (the edit set what was there): the act is still recorded.
            return match audit {
                Some(a) => self.store.audit(a).await,
                None => Ok(()),
            };
        }
        if let Err(e) = crate::docs::append(&self.store, doc_id, bytes, delta, audit).await {
            keep(changes);
            return Err(e);
        }
        let compact = {
            let mut guard = self.lock();
            let Some(stored) = pick(&mut guard) else {
                return Ok(());
            };
            stored.stored_heads = heads;
            stored.chunks += 1;
            (stored.chunks >= COMPACT_AFTER).then(|| {
                stored.chunks = 0;
                stored.doc.save_all()
            })
        };
        if let Some(full) = compact {
            crate::docs::compact(&self.store, doc_id, full).await?;
        }
        Ok(())
    }

    /// Doors with their configuration and live status.
    /// People of the park's directory whose id or name contains `q` (case-insensitive), in id
    /// order, `limit` from `offset`, with their credentials masked. Read from the
    /// directory's row copy in the store, so a park of 100,000 people pages without reading
    /// the document.
    pub async fn people(
        &self,
        q: &str,
        offset: usize,
        limit: usize,
    ) -> Result<views::PeoplePage, ParkError> {
        let needle = q.to_lowercase();
        for attempt in 0..2 {
            let n = needle.clone();
            let page = self
                .store
                .read(move |c| people_page(c, &n, offset, limit))
                .await
                .map_err(ParkError::Store)?;
            if let Some(page) = page {
                return Ok(page);
            }
            // The copy fell behind the document (a change came before the copy of this
            // start was written): write it again from the document, once.
            if attempt == 0 {
                self.rewrite_directory_copy()
                    .await
                    .map_err(ParkError::Store)?;
            }
        }
        Err(ParkError::Unavailable(
            "the directory is being loaded on this node; try again in a moment".into(),
        ))
    }

    /// Writes the directory's row copy again from the document, when the document in memory
    /// is the stored one (so that the rows match the stored bytes). Returns whether it was
    /// written.
    async fn rewrite_directory_copy(&self) -> anyhow::Result<bool> {
        // No save runs meanwhile, so the stored version stays the one the rows are of.
        let _saving = self.saving.lock().await;
        let snapshot = {
            let mut s = self.lock();
            let unsaved = !s.directory_unsaved.is_empty();
            let Some(d) = s.directory.as_mut() else {
                return Ok(false);
            };
            if unsaved || d.doc.heads() != d.stored_heads {
                return Ok(false);
            }
            d.doc.snapshot()?
        };
        let version = crate::docs::version(&self.store, DIRECTORY).await?;
        let rows = tokio::task::spawn_blocking(move || snapshot.cache_rows()).await?;
        crate::docs::write_cache(&self.store, DIRECTORY, version, rows).await
    }

    pub fn doors(&self) -> views::DoorList {
        let s = self.lock();
        let building = s.building.doc.snapshot().ok();
        let doors = s
            .doors
            .iter()
            .map(|(id, live)| {
                let d = building.as_ref().and_then(|b| b.doors.get(id));
                views::DoorView {
                    id: id.clone(),
                    name: d.map(|d| d.name.clone()),
                    enabled: d.map(|d| d.status.as_str() == "enabled"),
                    anti_passback: d.map(|d| d.anti_passback),
                    online: live.online,
                    state: live.state.as_ref().map(|(st, ts)| views::DoorState {
                        state: st.clone(),
                        ts: *ts,
                    }),
                    last_decision: live.last_decision.as_ref().map(|(g, r, ts)| {
                        views::DoorDecision {
                            granted: *g,
                            reason: r.clone(),
                            ts: *ts,
                        }
                    }),
                }
            })
            .collect();
        views::DoorList { doors }
    }

    /// Lots with capacity, live occupancy and lanes.
    pub fn lots(&self) -> views::LotList {
        let s = self.lock();
        let parking = s.parking.doc.snapshot().ok();
        let lots = parking
            .iter()
            .flat_map(|p| p.lots.values().map(move |l| (p, l)))
            .map(|(p, l)| {
                let lanes = p
                    .lanes
                    .values()
                    .filter(|lane| lane.lot_id == l.id)
                    .map(|lane| views::LaneView {
                        id: lane.id.clone(),
                        direction: lane.direction.as_str().to_string(),
                        camera_online: s.cameras.get(&lane.id).copied(),
                    })
                    .collect();
                let occupied = s.occupancy.occupied.get(&l.id).copied().unwrap_or(0);
                views::LotView {
                    id: l.id.clone(),
                    name: l.name.clone(),
                    capacity: l.capacity,
                    occupied,
                    free: l.capacity.saturating_sub(occupied),
                    lanes,
                }
            })
            .collect();
        views::LotList { lots }
    }

    /// Cars inside now.
    pub fn sessions(&self) -> views::ParkingSessionList {
        let s = self.lock();
        let mut sessions: Vec<views::ParkingSessionView> = s
            .sessions
            .values()
            .map(|o| views::ParkingSessionView {
                id: o.id.clone(),
                plate: o.plate.clone(),
                lot: o.session.lot_id.clone(),
                entry_lane: o.lane.clone(),
                entered_at: o.session.entered_at,
                entry: entry_view(&o.session.kind),
                fee_due_fen: o.fee_due.as_ref().map(|(d, _)| d.fee_fen),
                paid_fen: o.paid_fen(),
            })
            .collect();
        sessions.sort_by_key(|v| v.entered_at);
        views::ParkingSessionList { sessions }
    }

    /// Plate reads waiting for a person.
    pub fn review_queue(&self) -> views::ReviewQueue {
        let s = self.lock();
        let waiting = s
            .review
            .values()
            .map(|r| views::ReviewItem {
                id: r.id.clone(),
                lane: r.lane.clone(),
                plate: r.read.plate.clone(),
                confidence: r.read.confidence,
                direction: side(Some(r.read.direction)).map(str::to_string),
                image: r.read.image.clone(),
                ts: r.read.ts,
            })
            .collect();
        views::ReviewQueue { waiting }
    }

    /// The current heads of one of this building's documents.
    pub fn heads(&self, doc_id: &str) -> Option<Vec<ChangeHash>> {
        let mut s = self.lock();
        match doc_id {
            DIRECTORY => s.directory.as_mut().map(|d| d.doc.heads()),
            PARKING => Some(s.parking.doc.heads()),
            id if id == building_doc_id(&self.settings.building) => Some(s.building.doc.heads()),
            _ => None,
        }
    }

    /// The ids under which this building's documents are stored and synced.
    pub fn doc_ids(&self) -> Vec<String> {
        vec![
            DIRECTORY.to_string(),
            building_doc_id(&self.settings.building),
            PARKING.to_string(),
        ]
    }

    /// The next automerge sync message for `doc_id`, if the peer needs one.
    pub fn generate_sync(
        &self,
        doc_id: &str,
        state: &mut automerge::sync::State,
    ) -> Option<Vec<u8>> {
        use automerge::sync::SyncDoc;
        let mut s = self.lock();
        let am = match doc_id {
            // Not yet loaded: the sync carries on once it is.
            DIRECTORY => s.directory.as_mut()?.doc.automerge_mut(),
            PARKING => s.parking.doc.automerge_mut(),
            id if id == building_doc_id(&self.settings.building) => s.building.doc.automerge_mut(),
            _ => return None,
        };
        am.sync().generate_sync_message(state).map(|m| m.encode())
    }

    /// Applies a sync message from the hub: the document merges the changes, the indexes
    /// are refreshed from the entities they touched, and what is new is saved.
    pub async fn receive_sync(
        &self,
        doc_id: &str,
        state: &mut automerge::sync::State,
        message: &[u8],
    ) -> anyhow::Result<()> {
        // Bounded before automerge decodes it, as the hub bounds what edges send.
        sync_protocol::docguard::check_sync_message(
            message,
            &sync_protocol::docguard::DocLimits::FROM_HUB,
        )?;
        let message = automerge::sync::Message::decode(message)
            .map_err(|e| anyhow::anyhow!("bad sync message: {e}"))?;
        let building_id = building_doc_id(&self.settings.building);
        if doc_id == DIRECTORY {
            self.directory_loaded().await?;
            let cleared = self.receive_directory(state, message).await?;
            report_clear_values(&self.metrics, cleared);
            return self.persist(DIRECTORY, |s| s.directory.as_mut()).await;
        }
        {
            let mut guard = self.lock();
            let s = &mut *guard;
            match doc_id {
                PARKING => {
                    // On a copy (the document is small), kept only if automerge took the
                    // message without failing, even by a panic.
                    let mut copy = s.parking.doc.duplicate();
                    receive_contained(copy.automerge_mut(), state, message)?;
                    s.parking.doc = copy;
                    // The hub's changes are not this building's edits: the next local
                    // edit is checked from here.
                    let _ = s.parking.doc.take_changes();
                    s.refresh_gates()?;
                }
                id if id == building_id => {
                    let mut copy = s.building.doc.duplicate();
                    receive_contained(copy.automerge_mut(), state, message)?;
                    s.building.doc = copy;
                    let changes = s.building.doc.take_changes();
                    s.access.refresh_building(&s.building.doc, &changes)?;
                    if let Ok(b) = s.building.doc.snapshot() {
                        for d in b.doors.keys() {
                            s.doors.entry(d.clone()).or_default();
                        }
                    }
                }
                other => anyhow::bail!("this edge keeps no document {other:?}"),
            }
        }
        match doc_id {
            PARKING => self.persist(PARKING, |s| Some(&mut s.parking)).await,
            _ => self.persist(doc_id, |s| Some(&mut s.building)).await,
        }
    }

    /// Applies a sync message for the directory with the decision state unlocked: the
    /// document is taken out of it, the message applied, the changed entities read and
    /// the clear values rewritten, then the document is put back and the index updated in
    /// one short step. Door decisions go on meanwhile from the index as it was; edits of
    /// the directory wait their turn.
    async fn receive_directory(
        &self,
        state: &mut automerge::sync::State,
        message: automerge::sync::Message,
    ) -> anyhow::Result<ClearValues> {
        use automerge::sync::SyncDoc;
        let _turn = self.directory_turn.lock().await;
        let mut dir = self
            .lock()
            .directory
            .take()
            .context("the park directory is not loaded")?;
        let work = sync_protocol::docguard::contained(|| -> anyhow::Result<_> {
            dir.doc
                .automerge_mut()
                .sync()
                .receive_sync_message(state, message)?;
            let mut changes = dir.doc.take_changes();
            // An app that still writes values in clear: they are rewritten here, as a local
            // edit that goes back to the hub with the next sync.
            let cleared = dir.doc.digest_clear_values(&self.key, Some(&changes))?;
            if !cleared.is_empty() {
                dir.doc.commit(CLEAR_VALUES_EDIT, now_micros());
                changes.absorb(dir.doc.take_changes());
            }
            let delta = park_model::access::DirectoryDelta::read(&dir.doc, &changes);
            Ok((changes, cleared, delta))
        });
        let (dir, work) = match work {
            Ok(work) => (dir, work),
            Err(failed) => {
                // automerge panicked inside the document: what is stored is what it was
                // before this message, so it is read again from there, and the sync with the
                // hub starts over.
                tracing::error!(error = %failed, "A sync message from the hub broke the directory in memory; reloading it from the store.");
                drop(dir);
                *state = automerge::sync::State::new();
                let reloaded = load_directory(self.store.clone(), None, self.key.clone()).await;
                match reloaded {
                    Ok(loaded) => (loaded.stored, Err(anyhow::anyhow!(failed))),
                    Err(e) => return Err(e.context(failed.to_string())),
                }
            }
        };
        let mut guard = self.lock();
        let s = &mut *guard;
        s.directory = Some(dir);
        let (changes, cleared, delta) = work?;
        s.directory_unsaved.absorb(changes);
        let report = delta?.apply(&mut s.access);
        drop(guard);
        if report.upserted + report.removed > 0 {
            tracing::info!(
                upserted = report.upserted,
                removed = report.removed,
                "The park directory changed on the hub."
            );
        }
        Ok(cleared)
    }

    pub fn credential_count(&self) -> usize {
        self.lock().access.credential_count()
    }
}

/// Documents get a fresh snapshot after this many incremental saves.
const COMPACT_AFTER: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ParkError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// An edit this building may not make: the park's master data is the hub's.
    #[error("{0}")]
    Forbidden(String),
    /// Not there yet (the directory's row copy being rewritten after a start); try again.
    #[error("{0}")]
    Unavailable(String),
    #[error("the store failed: {0:#}")]
    Store(anyhow::Error),
}

impl From<park_model::DocError> for ParkError {
    fn from(e: park_model::DocError) -> Self {
        ParkError::Invalid(e.to_string())
    }
}

/// A page of people from the directory's row copy, or `None` when the copy does not match
/// the stored document.
fn people_page(
    c: &rusqlite::Connection,
    needle: &str,
    offset: usize,
    limit: usize,
) -> rusqlite::Result<Option<views::PeoplePage>> {
    use park_model::directory::{AccessGroup, Credential, Enterprise, Person};
    use rusqlite::OptionalExtension as _;
    if !crate::docs::cache_is_current(c, DIRECTORY)? {
        return Ok(None);
    }
    let filter = "doc_id = ?1 AND collection = 'people' AND (?2 = '' OR instr(lower(id), ?2) > 0 \
                  OR instr(lower(CASE WHEN json_valid(value) THEN json_extract(value, '$.name') END), ?2) > 0)";
    let total: i64 = c.query_row(
        &format!("SELECT count(*) FROM doc_cache WHERE {filter}"),
        rusqlite::params![DIRECTORY, needle],
        |r| r.get(0),
    )?;
    let rows: Vec<(String, String)> = c
        .prepare_cached(&format!(
            "SELECT id, value FROM doc_cache WHERE {filter} ORDER BY id LIMIT ?3 OFFSET ?4"
        ))?
        .query_map(
            rusqlite::params![
                DIRECTORY,
                needle,
                limit as i64,
                offset.min(i64::MAX as usize) as i64
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    let row = |collection: &str, id: &str| -> rusqlite::Result<Option<String>> {
        c.prepare_cached(
            "SELECT value FROM doc_cache WHERE doc_id = ?1 AND collection = ?2 AND id = ?3",
        )?
        .query_row(rusqlite::params![DIRECTORY, collection, id], |r| r.get(0))
        .optional()
    };
    let name_of = |collection: &str, id: &str| -> rusqlite::Result<views::Named> {
        let name = match collection {
            "enterprises" => row(collection, id)?
                .and_then(|v| serde_json::from_str::<Enterprise>(&v).ok())
                .map(|e| e.name),
            _ => row(collection, id)?
                .and_then(|v| serde_json::from_str::<AccessGroup>(&v).ok())
                .map(|g| g.name),
        };
        Ok(views::Named {
            id: id.to_string(),
            name: name.unwrap_or_default(),
        })
    };
    let mut people = Vec::with_capacity(rows.len());
    for (id, value) in rows {
        // A row that cannot be read is out of decisions too (and counted as such when read).
        let Ok(p) = serde_json::from_str::<Person>(&value) else {
            continue;
        };
        let credentials = c
            .prepare_cached(
                "SELECT value FROM doc_cache WHERE doc_id = ?1 AND collection = 'credentials' \
                 AND (CASE WHEN json_valid(value) THEN json_extract(value, '$.person_id') END) = ?2 \
                 ORDER BY id",
            )?
            .query_map(rusqlite::params![DIRECTORY, id], |r| r.get::<_, String>(0))?
            .filter_map(|v| v.ok().and_then(|v| serde_json::from_str::<Credential>(&v).ok()))
            .map(|c| views::CredentialView {
                masked: format!("••••{}", c.suffix),
                id: c.id,
                kind: c.kind.as_str().into(),
                status: c.status.as_str().into(),
                valid_from: c.valid_from,
                valid_to: c.valid_to,
            })
            .collect();
        people.push(views::PersonView {
            enterprise: name_of("enterprises", &p.enterprise_id)?,
            access_groups: p
                .access_group_ids
                .iter()
                .map(|g| name_of("access_groups", g))
                .collect::<Result<_, _>>()?,
            id: p.id,
            name: p.name,
            status: p.status.as_str().into(),
            credentials,
        });
    }
    Ok(Some(views::PeoplePage {
        total: total as usize,
        offset,
        limit,
        people,
    }))
}

/// Barrier commands echo the plate read's id, when the camera gave one, so a lane
/// controller can tell which car a command is for.
fn echo_read(mut commands: Vec<(String, Json)>, read_id: Option<&str>) -> Vec<(String, Json)> {
    if let Some(id) = read_id {
        for (topic, payload) in &mut commands {
            if topic.starts_with("barrier/") {
                payload["read"] = json!(id);
            }
        }
    }
    commands
}

impl State {
    /// The row-copy changes for the directory's unsaved changes. If they cannot be read the
    /// save goes without them, which retires the copy until the next start writes it anew.
    /// Returns the changes too: if the save fails they must go with the next one.
    fn directory_delta(&mut self) -> Option<(park_model::cache::CacheDelta, ChangeSet)> {
        let changes = std::mem::take(&mut self.directory_unsaved);
        let dir = self.directory.as_ref()?;
        match dir.doc.cache_delta(&changes) {
            Ok(delta) => Some((delta, changes)),
            Err(e) => {
                tracing::warn!(error = %e, "The directory's row copy cannot follow this change; the next start reads the document.");
                None
            }
        }
    }

    /// The parking index is small: it is rebuilt from the document after each change.
    fn refresh_gates(&mut self) -> Result<(), park_model::DocError> {
        let snapshot = self.parking.doc.snapshot()?;
        self.gates = ParkingIndex::build(&snapshot);
        self.lane_lots = lane_lots(&snapshot);
        Ok(())
    }
}

fn lane_lots(p: &park_model::parking::Parking) -> HashMap<String, String> {
    p.lanes
        .values()
        .map(|l| (l.id.clone(), l.lot_id.clone()))
        .collect()
}

/// With a hub, holds a local edit of `doc` to what this building may write there
/// (`park_model::ownership`), as the hub will; without one, the edge is its own master.
fn owned_edit(
    settings: &ParkSettings,
    doc: park_model::ownership::DocumentId,
    building_doc: Option<&automerge::Automerge>,
    (before, after, changes): (&automerge::Automerge, &automerge::Automerge, &ChangeSet),
) -> Result<(), ParkError> {
    if !settings.hub_owned {
        return Ok(());
    }
    let scope = park_model::ownership::EdgeScope {
        park: &settings.park,
        building: &settings.building,
        building_doc,
    };
    park_model::ownership::check_changes(&doc, &scope, before, after, changes)
        .map_err(|r| ParkError::Forbidden(r.reason))
}

/// Applies a sync message to `am` with a panic inside automerge turned into an error; the
/// sync state starts over after one (the caller drops `am`).
fn receive_contained(
    am: &mut automerge::AutoCommit,
    state: &mut automerge::sync::State,
    message: automerge::sync::Message,
) -> anyhow::Result<()> {
    use automerge::sync::SyncDoc;
    match sync_protocol::docguard::contained(|| am.sync().receive_sync_message(state, message)) {
        Ok(r) => Ok(r?),
        Err(failed) => {
            *state = automerge::sync::State::new();
            Err(failed.into())
        }
    }
}

/// Puts the session at `key` back as it was before a decision (`before`, or none), with
/// the lot's count: the undo of a decision whose write failed.
fn undo_session(key: Option<(String, String)>, before: Option<OpenSession>) -> Undo {
    Box::new(move |s: &mut State| {
        let Some(key) = key else { return };
        if let Some(now) = s.sessions.remove(&key) {
            release(&mut s.occupancy, &now.session);
        }
        if let Some(before) = before {
            occupy(&mut s.occupancy, &before.session);
            s.sessions.insert(key, before);
        }
    })
}

/// Counts a session in its lot again (the inverse of [`release`]).
fn occupy(occupancy: &mut Occupancy, session: &ParkingSession) {
    *occupancy
        .occupied
        .entry(session.lot_id.clone())
        .or_default() += 1;
    if let EntryKind::Allowance { enterprise_id, .. } = &session.kind {
        *occupancy
            .allowance_in_use
            .entry((enterprise_id.clone(), session.lot_id.clone()))
            .or_default() += 1;
    }
}

fn release(occupancy: &mut Occupancy, session: &ParkingSession) {
    if let Some(n) = occupancy.occupied.get_mut(&session.lot_id) {
        *n = n.saturating_sub(1);
    }
    if let EntryKind::Allowance { enterprise_id, .. } = &session.kind
        && let Some(n) = occupancy
            .allowance_in_use
            .get_mut(&(enterprise_id.clone(), session.lot_id.clone()))
    {
        *n = n.saturating_sub(1);
    }
}

fn presence_stmt(u: &PresenceUpdate, now: Timestamp) -> Stmt {
    (
        "INSERT INTO presence (person, area, inside, ts) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (person, area) DO UPDATE SET inside = excluded.inside, ts = excluded.ts",
        vec![
            text(&u.person_id),
            text(&u.area_id),
            Sql::Integer((u.presence == Presence::Inside) as i64),
            Sql::Integer(now),
        ],
    )
}

fn close_session_stmt(id: &str, lane: &str, ts: Timestamp, fee: i64, currency: &str) -> Stmt {
    (
        "UPDATE parking_sessions SET state = 'closed', exit_lane = ?2, exited_at = ?3, fee_fen = ?4, currency = ?5 WHERE id = ?1",
        vec![
            text(id),
            text(lane),
            Sql::Integer(ts),
            Sql::Integer(fee),
            text(currency),
        ],
    )
}

/// Loads a stored document, merges a seed file into it if one is given, and saves the result
/// if the merge added anything; creates the document if there is neither. Also returns the
/// stored version that the document now matches.
async fn open_doc<D: DocLike>(
    store: &Store,
    id: &str,
    seed: Option<Vec<u8>>,
    create: impl FnOnce() -> Result<D, park_model::DocError>,
    prepare: impl FnOnce(&mut D, Option<&ChangeSet>) -> anyhow::Result<bool>,
) -> anyhow::Result<(Stored<D>, i64)> {
    let stored = crate::docs::load(store, id).await?;
    let (mut doc, chunks, mut version, fresh) = match stored {
        Some(s) => (
            D::load_bytes(&s.bytes)
                .with_context(|| format!("the stored document {id} cannot be loaded"))?,
            s.chunks,
            s.version,
            false,
        ),
        None => match &seed {
            Some(bytes) => (
                D::load_bytes(bytes)
                    .with_context(|| format!("the seed document for {id} cannot be loaded"))?,
                0,
                0,
                true,
            ),
            None => (create()?, 0, 0, true),
        },
    };
    // A migration on load is a change the stored bytes do not hold: later chunks would
    // depend on it, so the document is stored again with it.
    let whole = fresh || doc.migrated();
    let mut changed = whole;
    let mut seeded = ChangeSet::default();
    if !fresh && let Some(bytes) = &seed {
        let before = doc.heads_now();
        doc.track();
        doc.merge_bytes(bytes)
            .with_context(|| format!("the seed document for {id} cannot be merged"))?;
        seeded = doc.take();
        changed |= doc.heads_now() != before;
    }
    // `prepare` looks at the whole of a new or migrated document, otherwise at what the seed
    // brought.
    changed |= prepare(&mut doc, (!whole).then_some(&seeded))?;
    // A fresh document, or one that a seed, a migration or `prepare` changed, is stored as a
    // new snapshot.
    if changed {
        crate::docs::replace_unmatched(store, id, doc.save_all()).await?;
        version += 1;
    }
    let heads = doc.heads_now();
    Ok((
        Stored {
            doc,
            stored_heads: heads,
            chunks: if changed { 0 } else { chunks },
        },
        version,
    ))
}

/// The directory as the edge starts with it.
struct OpenedDirectory {
    /// What the index is built from: read from the document, or from its row copy.
    snapshot: Directory,
    /// The document, if it was read; otherwise it is loaded once the index is built (so that
    /// the two do not compete for the cores), with this seed file.
    stored: Option<Stored<ParkDirectory>>,
    load_later: Option<Option<Vec<u8>>>,
    /// The version of the stored document that `snapshot` matches, when the row copy is to
    /// be written from it.
    write_copy_at: Option<i64>,
    /// Values in clear that loading rewrote.
    cleared: ClearValues,
}

/// The directory document loaded in the background, with what a seed file and the rewrite of
/// values left in clear changed in it.
struct LoadedDirectory {
    stored: Stored<ParkDirectory>,
    seeded: ChangeSet,
    /// Whether loading migrated it (a change to store even if nothing else changed).
    migrated: bool,
    cleared: ClearValues,
}

/// Opens the directory from its row copy when the copy matches the stored document (the
/// document then loads in the background), otherwise from the document itself.
async fn open_directory(
    store: &Store,
    settings: &ParkSettings,
    key: &CredentialKey,
    seed: Option<Vec<u8>>,
    now: Timestamp,
) -> anyhow::Result<OpenedDirectory> {
    let copy = crate::docs::load_cache(store, DIRECTORY)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "The directory's row copy cannot be read; reading the document.");
            None
        });
    if let Some(rows) = copy {
        match tokio::task::spawn_blocking(move || Directory::from_cache_rows(rows)).await? {
            Ok(snapshot) => {
                return Ok(OpenedDirectory {
                    snapshot,
                    stored: None,
                    load_later: Some(seed),
                    write_copy_at: None,
                    cleared: ClearValues::default(),
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "The directory's row copy cannot be read; reading the document.");
            }
        }
    }
    let mut cleared = ClearValues::default();
    let (mut stored, mut version) = open_doc(
        store,
        DIRECTORY,
        seed,
        || ParkDirectory::new(&settings.park, settings.utc_offset_minutes, now),
        |doc, scope| {
            cleared = clear_values(doc, key, scope)?;
            Ok(!cleared.is_empty())
        },
    )
    .await?;
    let mut snapshot = stored.doc.snapshot()?;
    if snapshot.clear_values_refused() > 0 {
        // Values in clear that neither a migration nor a seed brought (an app that still
        // writes them, stored by an earlier build): the whole document is looked at once.
        let more = clear_values(&mut stored.doc, key, None)?;
        cleared.credentials += more.credentials;
        cleared.phones += more.phones;
        crate::docs::replace_unmatched(store, DIRECTORY, stored.doc.save()).await?;
        version += 1;
        stored.stored_heads = stored.doc.heads();
        stored.chunks = 0;
        snapshot = stored.doc.snapshot()?;
    }
    for r in &snapshot.rejected {
        tracing::warn!(collection = %r.collection, id = %r.id, reason = %r.reason, "A document entity cannot be read and takes no part in decisions.");
    }
    Ok(OpenedDirectory {
        snapshot,
        stored: Some(stored),
        load_later: None,
        write_copy_at: Some(version),
        cleared,
    })
}

/// The message of the local edit that rewrites values left in clear.
const CLEAR_VALUES_EDIT: &str = "digest credential values left in clear";

/// Rewrites the values left in clear in a directory just loaded (in the entities of `scope`,
/// or in all of them), committed as one local edit. A look at every entity takes about a
/// second for 100,000 credentials, so it is made only for a new or migrated document, or one
/// whose read refused values in clear.
fn clear_values(
    doc: &mut ParkDirectory,
    key: &CredentialKey,
    scope: Option<&ChangeSet>,
) -> anyhow::Result<ClearValues> {
    let cleared = doc.digest_clear_values(key, scope)?;
    if !cleared.is_empty() {
        doc.commit(CLEAR_VALUES_EDIT, now_micros());
    }
    Ok(cleared)
}

/// Counts and logs values found in clear in the directory, once for each load or sync that
/// found some.
fn report_clear_values(metrics: &Metrics, cleared: ClearValues) {
    if cleared.is_empty() {
        return;
    }
    metrics
        .directory_clear_values_total
        .fetch_add((cleared.credentials + cleared.phones) as u64, Relaxed);
    tracing::warn!(
        credentials = cleared.credentials,
        phones = cleared.phones,
        "The park directory held credential values or phone numbers in clear (from an older app or schema): the values are now keyed digests and the phone numbers are deleted, as a local edit. Automerge keeps history, so the old values stay in the document's earlier changes until the park's document is rebuilt."
    );
}

/// The body of an `access.decision` event: the credential's id when one matched, otherwise
/// the digest and visible suffix of what was read. Never the value.
fn decision_body(
    d: &park_model::AccessDecision,
    presented: &Presented,
    read: &CredentialRead,
    now: Timestamp,
) -> Json {
    let mut body = json!({
        "granted": d.granted,
        "reason": d.reason.as_str(),
        "sentence": d.reason.sentence(),
        "credentialKind": presented.kind.as_str(),
        "credential": d.credential.as_deref(),
        "person": d.person.as_deref(),
        "enterprise": d.enterprise.as_deref(),
        "reader": side(read.reader),
        "readId": read.id,
        "decidedAt": now,
    });
    if d.credential.is_none() {
        body["credentialDigest"] = json!(presented.digest);
        body["credentialSuffix"] = json!(presented.suffix);
    }
    body
}

/// Loads the stored directory document (which its row copy matches) and merges the seed
/// file into it, noting what the seed changed.
async fn load_directory(
    store: Store,
    seed: Option<Vec<u8>>,
    key: CredentialKey,
) -> anyhow::Result<LoadedDirectory> {
    let stored = crate::docs::load(&store, DIRECTORY)
        .await?
        .context("the stored park directory is gone")?;
    tokio::task::spawn_blocking(move || {
        let mut doc = ParkDirectory::load(&stored.bytes)
            .context("the stored document directory cannot be loaded")?;
        // A migration is not in the stored bytes: with no heads taken as stored, the next
        // save holds it (and every other change) rather than chunks that depend on it.
        let migrated = doc.migrated();
        let stored_heads = if migrated { Vec::new() } else { doc.heads() };
        doc.track_changes();
        if let Some(bytes) = &seed {
            doc.load_incremental(bytes)
                .context("the seed document for directory cannot be merged")?;
        }
        let mut seeded = doc.take_changes();
        // The row copy matched the stored document, which an earlier start had cleared:
        // only what the seed brought (or all of a document just migrated) is looked at.
        let cleared = clear_values(&mut doc, &key, (!migrated).then_some(&seeded))?;
        seeded.absorb(doc.take_changes());
        Ok(LoadedDirectory {
            stored: Stored {
                doc,
                stored_heads,
                chunks: stored.chunks,
            },
            seeded,
            migrated,
            cleared,
        })
    })
    .await?
}

/// What `open_doc` needs of the three document types.
trait DocLike: Sized {
    fn load_bytes(bytes: &[u8]) -> Result<Self, park_model::DocError>;
    fn migrated(&self) -> bool;
    fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), park_model::DocError>;
    fn track(&mut self);
    fn take(&mut self) -> ChangeSet;
    fn save_all(&mut self) -> Vec<u8>;
    fn save_since(&mut self, heads: &[ChangeHash]) -> Vec<u8>;
    fn heads_now(&mut self) -> Vec<ChangeHash>;
}

impl<S: park_model::document::Schema> DocLike for park_model::document::Document<S> {
    fn load_bytes(bytes: &[u8]) -> Result<Self, park_model::DocError> {
        Self::load(bytes)
    }

    fn migrated(&self) -> bool {
        park_model::document::Document::migrated(self)
    }

    fn merge_bytes(&mut self, bytes: &[u8]) -> Result<(), park_model::DocError> {
        self.load_incremental(bytes)
    }

    fn track(&mut self) {
        self.track_changes();
    }

    fn take(&mut self) -> ChangeSet {
        self.take_changes()
    }

    fn save_all(&mut self) -> Vec<u8> {
        self.save()
    }

    fn save_since(&mut self, heads: &[ChangeHash]) -> Vec<u8> {
        self.save_after(heads)
    }

    fn heads_now(&mut self) -> Vec<ChangeHash> {
        self.heads()
    }
}

type Restored = (
    HashMap<(String, String), OpenSession>,
    PresenceMap,
    BTreeMap<String, ReviewItem>,
);

async fn restore(store: &Store) -> anyhow::Result<Restored> {
    store
        .read(|c| {
            let mut sessions = HashMap::new();
            let mut stmt = c.prepare("SELECT id, lot, plate, entry_lane, entered_at, kind FROM parking_sessions WHERE state != 'closed'")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let kind: String = r.get(5)?;
                let Some(kind) = serde_json::from_str::<Json>(&kind).ok().as_ref().and_then(entry_kind_from_json) else { continue };
                let (id, lot, plate): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
                let session = ParkingSession { lot_id: lot.clone(), entered_at: r.get(4)?, kind };
                // A fee decided before a restart is decided again when the car comes back to
                // the exit: the tariff may have changed, and the time has.
                sessions.insert((lot, plate.clone()), OpenSession { id, plate, lane: r.get(3)?, session, fee_due: None, payments: BTreeMap::new() });
            }
            // Each open session's counted payments, so that one sent again after a restart
            // is still counted once.
            let by_id: HashMap<String, (String, String)> = sessions.iter().map(|(k, o)| (o.id.clone(), k.clone())).collect();
            let mut stmt = c.prepare("SELECT p.id, p.session, p.amount_fen, p.currency FROM parking_payments p JOIN parking_sessions s ON s.id = p.session WHERE s.state != 'closed' AND p.counted = 1")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let session: String = r.get(1)?;
                if let Some(o) = by_id.get(&session).and_then(|k| sessions.get_mut(k)) {
                    o.payments.insert(r.get(0)?, (r.get(2)?, r.get(3)?));
                }
            }
            let mut presence = PresenceMap::default();
            let mut stmt = c.prepare("SELECT person, area, inside FROM presence")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let inside: i64 = r.get(2)?;
                presence.set(&r.get::<_, String>(0)?, &r.get::<_, String>(1)?, if inside != 0 { Presence::Inside } else { Presence::Outside });
            }
            let mut review = BTreeMap::new();
            let mut stmt = c.prepare("SELECT id, lane, plate, confidence, direction, image, ts FROM review_queue WHERE resolved_at IS NULL")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let direction: String = r.get(4)?;
                let read = PlateRead {
                    plate: r.get(2)?,
                    confidence: r.get(3)?,
                    direction: if direction == "out" { Side::Out } else { Side::In },
                    image: r.get(5)?,
                    ts: r.get(6)?,
                    id: None,
                };
                let id: String = r.get(0)?;
                review.insert(id.clone(), ReviewItem { id, lane: r.get(1)?, read });
            }
            Ok((sessions, presence, review))
        })
        .await
}

/// Makes the park's credential key file at `path`: 32 random bytes from the operating system
/// as 64 hexadecimal digits and a line break, readable and writable by its owner only. An
/// existing file is never replaced: it may be the key every building of the park shares, and
/// the directory's digests match that key only. Copy the file to every building of the park.
pub fn generate_credential_key_file(path: &Path) -> anyhow::Result<CredentialKey> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read random bytes from /dev/urandom")?;
    let key = CredentialKey::new(&bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(key)
}

/// Reads a credential key file: 64 hexadecimal digits, one line break after them allowed.
/// A file that other users may read is used, with a warning in the log: the key is as secret
/// as the card numbers and PINs it protects.
pub fn read_credential_key_file(path: &Path) -> anyhow::Result<CredentialKey> {
    let (key, loose) = CredentialKey::read_file(path).map_err(anyhow::Error::msg)?;
    if loose {
        tracing::warn!(
            file = %path.display(),
            "The credential key file can be read by other users than its owner: chmod 600 it."
        );
    }
    Ok(key)
}

/// Writes the sample park's documents (for the demo, tests and benchmarks) as seed files,
/// with the credentials digested under `key`.
pub fn write_sample_documents(
    dir: &Path,
    credentials: usize,
    doors: usize,
    passes: usize,
    seed: u64,
    key: &CredentialKey,
) -> anyhow::Result<park_model::sample::SamplePark> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut sample = park_model::sample::sample_directory(credentials, doors, seed, key)?;
    let mut parking = park_model::sample::sample_parking(passes, seed)?;
    std::fs::write(dir.join("directory.automerge"), sample.directory.save())?;
    std::fs::write(dir.join("building-b1.automerge"), sample.building.save())?;
    std::fs::write(dir.join("parking.automerge"), parking.save())?;
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_audit() -> Audit {
        Audit::new(
            &accounts::Actor::system("test"),
            "test",
            "test",
            serde_json::json!({}),
        )
    }
    use crate::store::StoreConfig;
    use automerge::{ObjType, ROOT, ReadDoc as _, transaction::Transactable as _};
    use park_model::access::NoPresence;
    use park_model::directory::Credential;
    use park_model::sample::SAMPLE_WORKDAY_MORNING;
    use std::time::Duration;

    fn key() -> CredentialKey {
        CredentialKey::new(&[0x33; 32])
    }

    fn settings(seed: &Path) -> ParkSettings {
        ParkSettings {
            park: "sample".into(),
            building: "b1".into(),
            seed_dir: Some(seed.to_path_buf()),
            plate_confidence_threshold: 0.8,
            utc_offset_minutes: 480,
            credential_key: CredentialKeySource::Key(key()),
            hub_owned: false,
        }
    }

    async fn open(store: &Store, seed: &Path) -> ParkService {
        open_counted(store, seed, Arc::new(Metrics::default())).await
    }

    async fn open_counted(store: &Store, seed: &Path, metrics: Arc<Metrics>) -> ParkService {
        ParkService::open(store.clone(), settings(seed), None, metrics)
            .await
            .unwrap()
    }

    /// Adds a credential to a directory as an app of schema version 1 wrote it: its value in
    /// clear. With `phone`, the holder gets a phone number too.
    fn add_clear_credential(
        doc: &mut ParkDirectory,
        id: &str,
        person: &str,
        value: &str,
        phone: bool,
    ) {
        let am = doc.automerge_mut();
        let (_, creds) = am.get(ROOT, "credentials").unwrap().unwrap();
        let c = am.put_object(&creds, id, ObjType::Map).unwrap();
        am.put(&c, "person_id", person).unwrap();
        am.put(&c, "kind", "card").unwrap();
        am.put(&c, "value", value).unwrap();
        am.put(&c, "status", "active").unwrap();
        if phone {
            let (_, people) = am.get(ROOT, "people").unwrap().unwrap();
            let (_, p) = am.get(&people, person).unwrap().unwrap();
            am.put(&p, "phone", "+86 138 0000 0000").unwrap();
        }
    }

    /// Waits until the directory's row copy matches the stored document.
    async fn copy_written(store: &Store) {
        for _ in 0..200 {
            if crate::docs::load_cache(store, DIRECTORY)
                .await
                .unwrap()
                .is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the row copy was not written");
    }

    /// A read granted in the sample: its kind and value, the door, the credential and holder.
    fn granted_read(
        svc: &ParkService,
        sample: &park_model::sample::SamplePark,
    ) -> ((CredentialKind, String), String, String, String) {
        let ((kind, value), door) = sample
            .credentials
            .iter()
            .flat_map(|c| sample.doors.iter().map(move |d| (c, d)))
            .find(|((k, v), d)| decide(svc, *k, v, d).0)
            .map(|(c, d)| (c.clone(), d.clone()))
            .expect("a granted read in the sample");
        let d = svc.lock().access.decide(
            &key().present(kind, &value),
            &door,
            SAMPLE_WORKDAY_MORNING,
            &NoPresence,
        );
        let credential = d.credential.unwrap().to_string();
        let person = d.person.unwrap().to_string();
        ((kind, value), door, credential, person)
    }

    /// The stored row copy, read back, is the stored document read whole.
    async fn assert_copy_matches_the_stored_document(store: &Store) {
        let rows = crate::docs::load_cache(store, DIRECTORY)
            .await
            .unwrap()
            .expect("the row copy matches the stored document");
        let copy = Directory::from_cache_rows(rows).unwrap();
        let stored = crate::docs::load(store, DIRECTORY).await.unwrap().unwrap();
        let doc = ParkDirectory::load(&stored.bytes)
            .unwrap()
            .snapshot()
            .unwrap();
        assert_eq!(copy, doc);
    }

    fn decide(svc: &ParkService, kind: CredentialKind, value: &str, door: &str) -> (bool, String) {
        let d = svc.lock().access.decide(
            &key().present(kind, value),
            door,
            SAMPLE_WORKDAY_MORNING,
            &NoPresence,
        );
        (d.granted, d.reason.as_str().to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_decides_from_the_row_copy_which_follows_every_saved_change() {
        let dir = tempfile::tempdir().unwrap();
        let (seed, mut sample, store) = sample_edge(dir.path(), (300, 6, 5, 9));

        // First start: from the document; the copy is written behind it.
        let svc = open(&store, &seed).await;
        assert!(!svc.from_copy);
        for _ in 0..200 {
            if crate::docs::load_cache(&store, DIRECTORY)
                .await
                .unwrap()
                .is_some()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_copy_matches_the_stored_document(&store).await;

        // A granted card, suspended by a local edit.
        let ((kind, value), door) = sample
            .credentials
            .iter()
            .flat_map(|c| sample.doors.iter().map(move |d| (c, d)))
            .find(|((k, v), d)| decide(&svc, *k, v, d).0)
            .map(|(c, d)| (c.clone(), d.clone()))
            .expect("a granted read in the sample");
        let credential = svc
            .lock()
            .access
            .decide(
                &key().present(kind, &value),
                &door,
                SAMPLE_WORKDAY_MORNING,
                &NoPresence,
            )
            .credential
            .unwrap()
            .to_string();
        svc.set_credential_status(&credential, CredentialStatus::Suspended, test_audit())
            .await
            .unwrap();
        assert_copy_matches_the_stored_document(&store).await;
        drop(svc);

        // The seed file gains a card for the same person.
        let holder = sample.directory.require::<Credential>(&credential).unwrap();
        sample
            .directory
            .upsert(&Credential {
                valid_from: holder.valid_from,
                valid_to: holder.valid_to,
                ..Credential::from_secret(
                    &key(),
                    "c-added",
                    &holder.person_id,
                    CredentialKind::Card,
                    "ADDED-CARD",
                )
                .unwrap()
            })
            .unwrap();
        sample
            .directory
            .commit("add a card", SAMPLE_WORKDAY_MORNING);
        std::fs::write(seed.join("directory.automerge"), sample.directory.save()).unwrap();

        // Second start: from the copy, deciding at once with the local edit in it.
        let svc = open(&store, &seed).await;
        assert!(svc.from_copy);
        assert_eq!(
            decide(&svc, kind, &value, &door),
            (false, "credential_suspended".to_string())
        );
        // Once the document is in, the seed's card counts and the copy holds it.
        svc.directory_loaded().await.unwrap();
        assert!(decide(&svc, CredentialKind::Card, "ADDED-CARD", &door).0);
        assert_copy_matches_the_stored_document(&store).await;
        // Edits wait for the document and keep the copy in step.
        svc.set_credential_status(&credential, CredentialStatus::Active, test_audit())
            .await
            .unwrap();
        assert_copy_matches_the_stored_document(&store).await;
        assert!(decide(&svc, kind, &value, &door).0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_row_copy_is_passed_over_for_the_document_and_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let (seed, sample, store) = sample_edge(dir.path(), (50, 4, 2, 5));
        let copy_written = async || {
            for _ in 0..200 {
                if crate::docs::load_cache(&store, DIRECTORY)
                    .await
                    .unwrap()
                    .is_some_and(|rows| !rows.iter().any(|r| r.2 == "{damaged"))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("the row copy was not written");
        };
        drop(open(&store, &seed).await);
        copy_written().await;
        // One row no longer parses (a bug, a bad disk block, a hand edit).
        store
            .write(Box::new(|c| {
                c.execute(
                    "UPDATE doc_cache SET value = '{damaged' WHERE doc_id = 'directory'
                     AND collection = 'credentials' AND id = (SELECT min(id) FROM doc_cache
                     WHERE doc_id = 'directory' AND collection = 'credentials')",
                    [],
                )?;
                Ok(())
            }))
            .await
            .unwrap();
        let svc = open(&store, &seed).await;
        assert!(!svc.from_copy, "a damaged copy must not be used");
        assert_eq!(svc.credential_count(), sample.credentials.len());
        copy_written().await;
        assert_copy_matches_the_stored_document(&store).await;
        drop(svc);
        assert!(open(&store, &seed).await.from_copy);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn decision_events_name_the_credential_or_its_digest_and_never_the_read_value() {
        let dir = tempfile::tempdir().unwrap();
        let (seed, sample, store) = sample_edge(dir.path(), (200, 6, 2, 3));
        let svc = open(&store, &seed).await;
        let ((kind, value), door, credential, _) = granted_read(&svc, &sample);
        let field_kind = match kind {
            CredentialKind::Card => field::CredentialKind::Card,
            CredentialKind::Qr => field::CredentialKind::Qr,
            CredentialKind::Pin => field::CredentialKind::Pin,
            CredentialKind::Plate => field::CredentialKind::Plate,
        };
        let reads = [
            (field_kind, value.as_str()),
            (field::CredentialKind::Pin, "739104"),
            (field::CredentialKind::Qr, "QR-NOT-REGISTERED-1234"),
        ];
        // Decided at the sample's workday morning (as `granted_read` chose the credential),
        // not at the wall clock's time, which may fall outside the door's schedule.
        for (i, (kind, value)) in reads.iter().enumerate() {
            let read = CredentialRead {
                kind: *kind,
                value: value.to_string(),
                reader: None,
                ts: SAMPLE_WORKDAY_MORNING + i as i64,
                id: Some(format!("r{i}")),
            };
            svc.door_read(&door, read, SAMPLE_WORKDAY_MORNING + i as i64)
                .await
                .unwrap();
        }
        let bodies = loop {
            let bodies: Vec<String> = store
                .read(|c| {
                    let mut stmt = c.prepare(
                        "SELECT body FROM events WHERE kind = 'access.decision' ORDER BY ts",
                    )?;
                    let rows = stmt.query_map([], |r| r.get(0))?;
                    rows.collect::<Result<Vec<String>, _>>()
                })
                .await
                .unwrap();
            if bodies.len() == reads.len() {
                break bodies;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for body in &bodies {
            for (_, value) in &reads {
                assert!(!body.contains(value), "{value} is in the event {body}");
            }
        }
        let bodies: Vec<Json> = bodies
            .iter()
            .map(|b| serde_json::from_str(b).unwrap())
            .collect();
        assert_eq!(bodies[0]["granted"], true);
        assert_eq!(bodies[0]["credential"], credential.as_str());
        assert!(bodies[0].get("credentialDigest").is_none());
        assert_eq!(bodies[1]["reason"], "unknown_credential");
        assert_eq!(bodies[1]["credentialKind"], "pin");
        assert_eq!(
            bodies[1]["credentialDigest"],
            key().present(CredentialKind::Pin, "739104").digest
        );
        assert_eq!(bodies[1]["credentialSuffix"], "", "a PIN shows nothing");
        assert_eq!(bodies[2]["credentialSuffix"], "1234");
    }

    /// The sample documents as seed files in `dir` (credentials, doors, passes, seed) and a
    /// store beside them.
    fn sample_edge(
        dir: &Path,
        (credentials, doors, passes, rng): (usize, usize, usize, u64),
    ) -> (std::path::PathBuf, park_model::sample::SamplePark, Store) {
        let seed = dir.join("seed");
        let sample =
            write_sample_documents(&seed, credentials, doors, passes, rng, &key()).unwrap();
        let store = Store::open(
            StoreConfig::new(dir.join("edge.sqlite")),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        (seed, sample, store)
    }

    async fn count_events(store: &Store, kind: &'static str) -> i64 {
        store.flush().await;
        store
            .read(move |c| {
                c.query_row("SELECT count(*) FROM events WHERE kind = ?1", [kind], |r| {
                    r.get(0)
                })
            })
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_repeated_door_read_is_answered_once_and_an_unknown_door_never() {
        let dir = tempfile::tempdir().unwrap();
        let (seed, sample, store) = sample_edge(dir.path(), (50, 4, 2, 5));
        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        let ((_, value), door, _, _) = granted_read(&svc, &sample);
        let read = |id: Option<&str>, value: &str| FieldMessage::DoorRead {
            door: door.clone(),
            read: CredentialRead {
                kind: field::CredentialKind::Card,
                value: value.to_string(),
                reader: None,
                ts: SAMPLE_WORKDAY_MORNING,
                id: id.map(str::to_string),
            },
        };
        // A controller that resent its read (same id), and one that sends no id twice in
        // a row: each answered once.
        svc.handle(read(Some("r-1"), &value)).await;
        svc.handle(read(Some("r-1"), &value)).await;
        svc.handle(read(None, "NOT-A-CARD-1")).await;
        svc.handle(read(None, "NOT-A-CARD-1")).await;
        assert_eq!(count_events(&store, "access.decision").await, 2);
        assert_eq!(metrics.door_reads_repeated_total.load(Relaxed), 2);
        // A door this building does not have: nothing decided, stored or listed.
        svc.handle(FieldMessage::DoorRead {
            door: "no-such-door".into(),
            read: CredentialRead {
                kind: field::CredentialKind::Card,
                value: value.clone(),
                reader: None,
                ts: SAMPLE_WORKDAY_MORNING,
                id: Some("r-2".into()),
            },
        })
        .await;
        svc.handle(FieldMessage::Status {
            device: field::FieldDevice::Door("no-such-door".into()),
            online: true,
        })
        .await;
        assert_eq!(metrics.field_unknown_target_total.load(Relaxed), 2);
        assert_eq!(count_events(&store, "access.decision").await, 2);
        assert!(!json!(svc.doors()).to_string().contains("no-such-door"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_a_hub_local_edits_are_held_to_what_the_building_owns() {
        use park_model::directory::{AccessGroup, Person, PersonStatus};
        let dir = tempfile::tempdir().unwrap();
        let (seed, sample, store) = sample_edge(dir.path(), (20, 4, 2, 5));
        // Someone whose access is in another building, and a visitor of this one.
        let file = seed.join("directory.automerge");
        let mut d = ParkDirectory::load(&std::fs::read(&file).unwrap()).unwrap();
        d.upsert(&AccessGroup {
            id: "g-elsewhere".into(),
            name: "Building 2".into(),
            door_ids: vec!["b2-lobby".into()],
            schedule_id: None,
        })
        .unwrap();
        let own_group = d
            .entities::<AccessGroup>()
            .unwrap()
            .items
            .values()
            .find(|g| g.id != "g-elsewhere" && !g.door_ids.is_empty())
            .unwrap()
            .id
            .clone();
        for (id, group) in [
            ("p-elsewhere", "g-elsewhere"),
            ("p-visitor", own_group.as_str()),
        ] {
            d.upsert(&Person {
                id: id.into(),
                name: id.into(),
                enterprise_id: "ent-operator".into(),
                status: PersonStatus::Active,
                access_group_ids: vec![group.into()],
            })
            .unwrap();
        }
        d.upsert(&Credential {
            status: CredentialStatus::Suspended,
            ..Credential::from_secret(
                &key(),
                "c-held",
                "p-elsewhere",
                CredentialKind::Card,
                "HELD-1",
            )
            .unwrap()
        })
        .unwrap();
        d.commit("test", 0);
        std::fs::write(&file, d.save()).unwrap();
        let svc = ParkService::open(
            store.clone(),
            ParkSettings {
                hub_owned: true,
                ..settings(&seed)
            },
            None,
            Arc::new(Metrics::default()),
        )
        .await
        .unwrap();
        let card = |id: &str, person: &str| RawCredential {
            id: id.into(),
            person_id: person.into(),
            kind: CredentialKind::Card,
            value: format!("CARD-{id}"),
            status: CredentialStatus::Active,
            valid_from: None,
            valid_to: None,
        };
        // A card for this building's visitor, and suspending anyone's: taken at once.
        svc.put_credential(card("c-visitor", "p-visitor"), test_audit())
            .await
            .unwrap();
        let (_, _, credential, _) = granted_read(&svc, &sample);
        svc.set_credential_status(&credential, CredentialStatus::Suspended, test_audit())
            .await
            .unwrap();
        // A card for someone with access elsewhere, or giving a suspended card back: the
        // hub's to do, refused here with the reason, and nothing kept.
        let heads = svc.heads(DIRECTORY).unwrap();
        let err = svc
            .put_credential(card("c-elsewhere", "p-elsewhere"), test_audit())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ParkError::Forbidden(m) if m.contains("beyond building b1")),
            "{err}"
        );
        let err = svc
            .set_credential_status("c-held", CredentialStatus::Active, test_audit())
            .await
            .unwrap_err();
        assert!(matches!(err, ParkError::Forbidden(_)), "{err}");
        assert_eq!(svc.heads(DIRECTORY).unwrap(), heads);
        // Giving back this building's own card is the building's to do.
        svc.set_credential_status(&credential, CredentialStatus::Active, test_audit())
            .await
            .unwrap();
        let heads = svc.heads(DIRECTORY).unwrap();
        assert!(
            svc.put_credential(card("c-elsewhere-2", "p-elsewhere"), test_audit())
                .await
                .is_err()
        );
        assert_eq!(
            svc.heads(DIRECTORY).unwrap(),
            heads,
            "a refused edit left a change behind"
        );
        // Passes are issued on the hub; suspending one is this building's to do.
        let pass = svc
            .lock()
            .parking
            .doc
            .snapshot()
            .unwrap()
            .passes
            .values()
            .next()
            .unwrap()
            .clone();
        let err = svc
            .put_pass(
                Pass {
                    valid_to: pass.valid_to + 1,
                    ..pass.clone()
                },
                test_audit(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ParkError::Forbidden(_)), "{err}");
        svc.set_pass_status(&pass.id, PassStatus::Suspended, test_audit())
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_suspension_synced_from_another_replica_is_decided_on_and_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (seed, sample, store) = sample_edge(&dir.path().join("a"), (200, 6, 2, 3));
        let a = open(&store, &seed).await;
        let b_dir = dir.path().join("b");
        std::fs::create_dir_all(&b_dir).unwrap();
        let b_store = Store::open(
            StoreConfig::new(b_dir.join("edge.sqlite")),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let b = open(&b_store, &seed).await;
        let ((kind, value), door, credential, _) = granted_read(&a, &sample);
        assert!(decide(&b, kind, &value, &door).0);
        a.set_credential_status(&credential, CredentialStatus::Suspended, test_audit())
            .await
            .unwrap();
        // The two replicas sync the directory as an edge and the hub do.
        let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
        for _ in 0..10 {
            if let Some(m) = a.generate_sync(DIRECTORY, &mut sa) {
                b.receive_sync(DIRECTORY, &mut sb, &m).await.unwrap();
            }
            if let Some(m) = b.generate_sync(DIRECTORY, &mut sb) {
                a.receive_sync(DIRECTORY, &mut sa, &m).await.unwrap();
            }
        }
        assert_eq!(a.heads(DIRECTORY), b.heads(DIRECTORY));
        let (granted, reason) = decide(&b, kind, &value, &door);
        assert!(!granted, "{reason}");
        // Saved with its row copy: a restart of b decides the same.
        drop(b);
        b_store.flush().await;
        let b = open(&b_store, &seed).await;
        assert!(!decide(&b, kind, &value, &door).0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn people_page_from_the_row_copy_with_credentials_masked() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        let sample = write_sample_documents(&seed, 40, 4, 2, 5, &key()).unwrap();
        let store = Store::open(
            StoreConfig::new(dir.path().join("edge.sqlite")),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let svc = open(&store, &seed).await;
        svc.directory_loaded().await.unwrap();
        store.flush().await;
        let all = svc.people("", 0, 200).await.unwrap();
        assert!(
            all.total > 0 && all.total == all.people.len(),
            "{}",
            all.total
        );
        let ids: Vec<&str> = all.people.iter().map(|p| p.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "in id order");
        // Pages of it, in order, add up to the whole.
        let first = svc.people("", 0, 3).await.unwrap();
        let second = svc.people("", 3, 3).await.unwrap();
        assert_eq!((first.total, first.people.len()), (all.total, 3));
        assert_eq!(first.people[0].id, all.people[0].id);
        assert_eq!(second.people[0].id, all.people[3].id);
        // Each credential is there, masked: no value in clear anywhere in the answer.
        let text = serde_json::to_string(&all).unwrap();
        for (_, value) in &sample.credentials {
            assert!(!text.contains(value.as_str()), "{value} is in the answer");
        }
        let credentials: usize = all.people.iter().map(|p| p.credentials.len()).sum();
        assert_eq!(credentials, sample.credentials.len());
        assert!(
            all.people
                .iter()
                .flat_map(|p| &p.credentials)
                .all(|c| c.masked.starts_with("••••"))
        );
        assert!(all.people.iter().all(|p| !p.enterprise.name.is_empty()));
        // A search by name or id, case-insensitive.
        let someone = &all.people[1];
        let by_name = svc
            .people(&someone.name.to_uppercase(), 0, 50)
            .await
            .unwrap();
        assert!(by_name.people.iter().any(|p| p.id == someone.id));
        assert!(by_name.total < all.total || all.total == 1);
        assert_eq!(svc.people("no such person", 0, 50).await.unwrap().total, 0);
        // A suspension shows at once.
        let ((_, _), _, credential, person) = granted_read(&svc, &sample);
        svc.set_credential_status(&credential, CredentialStatus::Suspended, test_audit())
            .await
            .unwrap();
        let page = svc.people(&person, 0, 50).await.unwrap();
        let shown = page
            .people
            .iter()
            .flat_map(|p| &p.credentials)
            .find(|c| c.id == credential)
            .unwrap();
        assert_eq!(shown.status, "suspended");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_leaves_parking_sessions_and_occupancy_as_they_were() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        write_sample_documents(&seed, 10, 4, 2, 5, &key()).unwrap();
        let path = dir.path().join("edge.sqlite");
        let store = Store::open(
            StoreConfig::new(path.clone()),
            &[],
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        // The store refuses the session's row, as a damaged or read-only file would.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TRIGGER refuse_sessions BEFORE INSERT ON parking_sessions
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
        let plate = |p: &str| FieldMessage::Plate {
            lane: "lot-north-in".into(),
            plate: PlateRead {
                plate: p.into(),
                confidence: 0.99,
                direction: Side::In,
                image: None,
                ts: SAMPLE_WORKDAY_MORNING,
                id: None,
            },
        };
        svc.handle(plate("湘A00001")).await;
        store.flush().await;
        assert_eq!(metrics.decisions_undone_total.load(Relaxed), 1);
        assert_eq!(
            json!(svc.sessions())["sessions"].as_array().unwrap().len(),
            0
        );
        let occupied = |svc: &ParkService| {
            json!(svc.lots())["lots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["occupied"].as_i64().unwrap())
                .sum::<i64>()
        };
        assert_eq!(occupied(&svc), 0);
        assert_eq!(count_events(&store, "parking.entry").await, 0);
        // Once the store takes writes again, the same car comes in once.
        c.execute_batch("DROP TRIGGER refuse_sessions").unwrap();
        svc.handle(plate("湘A00001")).await;
        store.flush().await;
        assert_eq!(
            json!(svc.sessions())["sessions"].as_array().unwrap().len(),
            1
        );
        assert_eq!(occupied(&svc), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_payment_is_counted_once_in_the_fee_currency_at_the_exit_lane_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed");
        write_sample_documents(&seed, 10, 4, 2, 5, &key()).unwrap();
        let path = dir.path().join("edge.sqlite");
        let open_store = || {
            Store::open(
                StoreConfig::new(path.clone()),
                &[],
                Arc::new(Metrics::default()),
            )
            .unwrap()
        };
        let store = open_store();
        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        let read = |lane: &str, direction: Side, ts: Timestamp| FieldMessage::Plate {
            lane: lane.into(),
            plate: PlateRead {
                plate: "湘A00002".into(),
                confidence: 0.99,
                direction,
                image: None,
                ts,
                id: None,
            },
        };
        let entered = SAMPLE_WORKDAY_MORNING - 3 * 3_600_000_000;
        svc.handle(read("lot-north-in", Side::In, entered)).await;
        let session = json!(svc.sessions())["sessions"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let pay = |id: &str, fen: i64, currency: &str, lane: &str| FieldMessage::Payment {
            lane: lane.into(),
            payment: Payment {
                session: session.clone(),
                amount_fen: fen,
                currency: currency.into(),
                method: field::PayMethod::Qr,
                ts: SAMPLE_WORKDAY_MORNING,
                id: id.into(),
            },
        };
        // Paid ahead, at the lot's exit, then sent again after a restart.
        svc.handle(pay("pre-1", 300, "CNY", "lot-north-out")).await;
        svc.handle(pay("pre-1", 300, "CNY", "lot-north-out")).await;
        assert_eq!(metrics.payments_repeated_total.load(Relaxed), 1);
        store.flush().await;
        drop(svc);
        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        svc.handle(pay("pre-1", 300, "CNY", "lot-north-out")).await;
        assert_eq!(metrics.payments_repeated_total.load(Relaxed), 1);
        assert_eq!(json!(svc.sessions())["sessions"][0]["paidFen"], 300);
        // At the exit a fee is due; a payment elsewhere or in another currency is kept
        // but not counted.
        svc.handle(read("lot-north-out", Side::Out, SAMPLE_WORKDAY_MORNING))
            .await;
        let due = json!(svc.sessions())["sessions"][0]["feeDueFen"]
            .as_i64()
            .unwrap();
        assert!(due > 300, "{due}");
        svc.handle(pay("wrong-lane", due, "CNY", "lot-south-out"))
            .await;
        svc.handle(pay("wrong-currency", due, "USD", "lot-north-out"))
            .await;
        assert_eq!(metrics.payments_refused_total.load(Relaxed), 2);
        assert_eq!(
            json!(svc.sessions())["sessions"].as_array().unwrap().len(),
            1
        );
        svc.handle(pay("rest", due - 300, "CNY", "lot-north-out"))
            .await;
        assert_eq!(
            json!(svc.sessions())["sessions"].as_array().unwrap().len(),
            0
        );
        assert_eq!(count_events(&store, "parking.payment").await, 4);
        assert_eq!(count_events(&store, "parking.exit").await, 1);
        let counted: i64 = store
            .read(|c| {
                c.query_row(
                    "SELECT sum(amount_fen) FROM parking_payments WHERE counted = 1",
                    [],
                    |r| r.get(0),
                )
            })
            .await
            .unwrap();
        assert_eq!(counted, due);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_directory_with_values_in_clear_is_rewritten_at_load_and_stays_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (seed, mut sample, store) = sample_edge(dir.path(), (200, 6, 2, 4));
        let svc = open(&store, &seed).await;
        let (_, door, _, person) = granted_read(&svc, &sample);
        drop(svc);

        // What an edge of the previous release stored: a schema version 1 directory with a
        // card number in clear and the holder's phone.
        let stored = crate::docs::load(&store, DIRECTORY).await.unwrap().unwrap();
        let mut old = ParkDirectory::load(&stored.bytes).unwrap();
        add_clear_credential(&mut old, "c-clear", &person, "CLEAR-CARD-0042", true);
        old.automerge_mut().put(ROOT, "schema_version", 1).unwrap();
        old.commit("an edge of schema version 1", SAMPLE_WORKDAY_MORNING);
        crate::docs::replace_unmatched(&store, DIRECTORY, old.save())
            .await
            .unwrap();

        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        assert!(!svc.from_copy);
        assert_eq!(metrics.directory_clear_values_total.load(Relaxed), 1);
        assert!(decide(&svc, CredentialKind::Card, "CLEAR-CARD-0042", &door).0);
        // The rewrite and the migration are stored: the document loads as it is, with
        // nothing in clear and no phone left in its current state.
        let stored = crate::docs::load(&store, DIRECTORY).await.unwrap().unwrap();
        let mut doc = ParkDirectory::load(&stored.bytes).unwrap();
        assert!(!doc.migrated());
        assert_eq!(
            doc.digest_clear_values(&key(), None).unwrap(),
            ClearValues::default()
        );
        let c = doc.require::<Credential>("c-clear").unwrap();
        assert_eq!(c.suffix, "0042");
        // A later local edit is stored on top of them, and the next start reads all of it
        // from the row copy with nothing left to rewrite.
        {
            let mut guard = svc.lock();
            let dir = guard.directory.as_mut().unwrap();
            dir.doc.suspend_credential("c-clear").unwrap();
            dir.doc.commit("suspend", SAMPLE_WORKDAY_MORNING);
            let changes = dir.doc.take_changes();
            guard.directory_unsaved.absorb(changes);
        }
        svc.persist(DIRECTORY, |s| s.directory.as_mut())
            .await
            .unwrap();
        copy_written(&store).await;
        drop(svc);
        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        assert!(svc.from_copy);
        assert_eq!(
            decide(&svc, CredentialKind::Card, "CLEAR-CARD-0042", &door),
            (false, "credential_suspended".to_string())
        );
        svc.directory_loaded().await.unwrap();
        assert_eq!(metrics.directory_clear_values_total.load(Relaxed), 0);
        drop(svc);

        // A seed file from an old tool brings another card in clear: the background load
        // after a start from the row copy rewrites it.
        add_clear_credential(
            &mut sample.directory,
            "c-seeded",
            &person,
            "SEEDED-CARD-7",
            false,
        );
        sample.directory.commit("old tool", SAMPLE_WORKDAY_MORNING);
        std::fs::write(seed.join("directory.automerge"), sample.directory.save()).unwrap();
        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        assert!(svc.from_copy);
        svc.directory_loaded().await.unwrap();
        assert_eq!(metrics.directory_clear_values_total.load(Relaxed), 1);
        assert!(decide(&svc, CredentialKind::Card, "SEEDED-CARD-7", &door).0);
        assert_copy_matches_the_stored_document(&store).await;
        drop(svc);

        // A card in clear in a stored document of this schema (an app that still writes
        // them): the start's read refuses it, and the whole document is rewritten once.
        let stored = crate::docs::load(&store, DIRECTORY).await.unwrap().unwrap();
        let mut current = ParkDirectory::load(&stored.bytes).unwrap();
        add_clear_credential(&mut current, "c-late", &person, "LATE-CARD-0099", false);
        current.commit("an old app", SAMPLE_WORKDAY_MORNING);
        crate::docs::replace_unmatched(&store, DIRECTORY, current.save())
            .await
            .unwrap();
        let metrics = Arc::new(Metrics::default());
        let svc = open_counted(&store, &seed, metrics.clone()).await;
        assert!(!svc.from_copy);
        assert_eq!(metrics.directory_clear_values_total.load(Relaxed), 1);
        assert!(decide(&svc, CredentialKind::Card, "LATE-CARD-0099", &door).0);
        copy_written(&store).await;
        assert_copy_matches_the_stored_document(&store).await;
    }

    #[test]
    fn a_generated_key_file_is_private_reads_back_and_is_never_replaced() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credential.key");
        let key = generate_credential_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(read_credential_key_file(&path).unwrap().id(), key.id());
        assert!(generate_credential_key_file(&path).is_err());
        assert_eq!(read_credential_key_file(&path).unwrap().id(), key.id());
        // Others' keys differ.
        let other = generate_credential_key_file(&dir.path().join("other.key")).unwrap();
        assert_ne!(other.id(), key.id());
        // A file that others may read still works (with a warning in the log).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_credential_key_file(&path).is_ok());
        std::fs::write(&path, "not a key\n").unwrap();
        let err = format!("{:#}", read_credential_key_file(&path).unwrap_err());
        assert!(err.contains("64 hexadecimal"), "{err}");
        assert!(read_credential_key_file(&dir.path().join("missing.key")).is_err());
    }
}

//! Rules and alarms at the edge: the rules engine evaluated in line with ingest and with the
//! access events of doors, its alarm transitions stored as events (and so synced to the hub
//! with the others), its actions carried out, and the operator's acknowledge, shelve and
//! comment.
//!
//! - Samples reach the engine before the store: [`Alarms::evaluate`] is called on every
//!   driver batch, under one lock, without allocation per sample in the engine.
//! - Every transition becomes an event (`alarm.raised`, `alarm.cleared`, ...) queued to the
//!   store in the order the engine produced them. An operator's action is answered only once
//!   its transition events and the alarm state are committed.
//! - The alarm state (the engine's export) is saved with operator actions and at most once a
//!   second otherwise; after a restart the engine takes it back and re-evaluates from new
//!   data, so an alarm raised before a crash is still there (unknown conditions clear
//!   nothing).
//! - The rule file is read at start (a bad one stops the start, naming file, line, rule and
//!   key), and again when it changes on disk or on `POST /api/v1/rules/reload`: a bad file
//!   then is refused, counted and reported, and the running rules stay.
//! - Actions: point writes go to the device's driver (verified and audited like an
//!   engineer's write); MQTT commands go out through the building's broker; webhooks are
//!   written to a durable outbox in the store and posted with retries until the receiver
//!   accepts them (2xx); work orders are recorded as `workorder.requested` events until
//!   work orders exist as documents.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use device_drivers::{Quality, Sample, Timestamp, Value, WriteRequest, now_micros};
use rules_engine::{
    Action, ActionOut, AlarmFilter, AlarmId, Engine, EventIn, Outputs, RuleSet, SampleIn,
    SampleValue, Transition,
};
use rusqlite::{OptionalExtension, params};
use serde_json::{Value as Json, json};
use tokio::sync::{mpsc, oneshot};

use accounts::{Actor, Audit};

use crate::broker::Publisher;
use crate::events::Event;
use crate::metrics::Metrics;
use crate::node::Devices;
use crate::store::Store;

/// How often the alarm state is saved at most when only samples change it.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often the rule file is checked for changes.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// The longest wait between two timeout checks (stale data, delays, shelving, escalation).
const MAX_TIMER_WAIT: Duration = Duration::from_secs(1);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alarm_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ts INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_ts INTEGER NOT NULL,
    last_error TEXT
);
";

/// What the API reports about the rule file.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct RulesStatus {
    pub file: Option<String>,
    pub rules: usize,
    pub loaded_at: Option<Timestamp>,
    /// The error of the last refused file, if the last attempt was refused.
    pub last_error: Option<String>,
    pub refused_total: u64,
}

/// The loaded rules, the state of the rule file, and how much the engine tracks.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RulesView {
    pub status: RulesStatus,
    /// Point keys and event sources the rules watch.
    pub sources: usize,
    /// (rule, source) pairs being evaluated.
    pub instances: usize,
    pub open_alarms: usize,
    pub rules: Vec<rules_engine::RuleSummary>,
}

struct State {
    engine: Engine,
    out: Outputs,
    /// The alarm state changed since it was last saved.
    dirty: bool,
    file_modified: Option<SystemTime>,
}

struct Inner {
    state: Mutex<State>,
    status: Mutex<RulesStatus>,
    store: Store,
    metrics: Arc<Metrics>,
    file: Option<PathBuf>,
    actions: mpsc::UnboundedSender<ActionOut>,
    /// Wakes the timer task when the next timeout moved earlier.
    timer: tokio::sync::Notify,
}

/// The edge's rules and alarms. Cheap to clone.
#[derive(Clone)]
pub struct Alarms {
    inner: Arc<Inner>,
}

/// An operator action on an alarm that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum AlarmsError {
    #[error(transparent)]
    Alarm(#[from] rules_engine::AlarmError),
    #[error("storing the alarm change failed: {0:#}")]
    Store(anyhow::Error),
}

fn compile(file: &std::path::Path) -> anyhow::Result<(RuleSet, Option<SystemTime>)> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the rule file: {e}", file.display()))?;
    let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    let rules = RuleSet::compile(&text, &file.display().to_string())?;
    Ok((rules, modified))
}

impl Alarms {
    /// Loads the rules (none without a file) and the saved alarm state, and registers the
    /// configured points so that stale-data rules also catch points that never report.
    /// Returns the service and the actions it asks for, to hand to [`run_actions`].
    pub async fn open(
        store: Store,
        metrics: Arc<Metrics>,
        file: Option<PathBuf>,
        points: &[String],
    ) -> anyhow::Result<(Alarms, mpsc::UnboundedReceiver<ActionOut>)> {
        store.write(Box::new(|c| c.execute_batch(SCHEMA))).await?;
        let (rules, modified) = match &file {
            Some(f) => compile(f)?,
            None => (RuleSet::empty(), None),
        };
        let saved: Option<String> = store
            .read(|c| {
                c.query_row("SELECT state FROM alarm_state WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .optional()
            })
            .await?;
        let now = now_micros();
        let mut engine = Engine::new(rules);
        let mut out = Outputs::new();
        if let Some(saved) = saved {
            let state = serde_json::from_str(&saved)
                .map_err(|e| anyhow::anyhow!("the saved alarm state cannot be read: {e}"))?;
            engine.import_state(state, now, &mut out)?;
        }
        for p in points {
            engine.register_point(p, now, &mut out);
        }
        let status = RulesStatus {
            file: file.as_ref().map(|f| f.display().to_string()),
            rules: engine.rules().len(),
            loaded_at: Some(now),
            last_error: None,
            refused_total: 0,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let alarms = Alarms {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    engine,
                    out,
                    dirty: false,
                    file_modified: modified,
                }),
                status: Mutex::new(status),
                store,
                metrics,
                file,
                actions: tx,
                timer: tokio::sync::Notify::new(),
            }),
        };
        // Whatever the restore produced (alarms restored, timers due) is stored and acted on.
        alarms.drain(false).await;
        Ok((alarms, rx))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Evaluates a batch of samples, before it is stored.
    pub async fn evaluate(&self, batch: &[Sample]) {
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            if st.engine.rules().is_empty() {
                return;
            }
            for s in batch {
                let quality = match s.quality {
                    Quality::Good => rules_engine::Quality::Good,
                    Quality::Uncertain(_) => rules_engine::Quality::Uncertain,
                    Quality::Bad(_) => rules_engine::Quality::Bad,
                    Quality::Stale => rules_engine::Quality::Stale,
                };
                let value = match &s.value {
                    None => None,
                    Some(Value::Bool(b)) => Some(SampleValue::Bool(*b)),
                    Some(Value::Int(i)) => Some(SampleValue::Number(*i as f64)),
                    Some(Value::Float(f)) => Some(SampleValue::Number(*f)),
                    Some(Value::Text(t)) => Some(SampleValue::Text(t)),
                };
                st.engine.handle_sample(
                    &SampleIn {
                        point: s.point.as_str(),
                        ts: s.ts,
                        value,
                        quality,
                    },
                    &mut st.out,
                );
            }
            self.inner
                .metrics
                .rules_samples_total
                .fetch_add(batch.len() as u64, Relaxed);
            if st.out.is_empty() {
                return;
            }
        }
        self.inner.timer.notify_one();
        self.drain(false).await;
    }

    /// Evaluates an access or door event (`access.denied`, `door.forced`, ...).
    pub async fn event(&self, kind: &str, source: &str, ts: Timestamp) {
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            st.engine
                .handle_event(&EventIn::new(kind, source, ts), &mut st.out);
            if st.out.is_empty() {
                return;
            }
        }
        self.inner.timer.notify_one();
        self.drain(false).await;
    }

    /// Runs the engine's timeouts due by now; returns when the next one is due.
    async fn timeouts(&self) -> Option<Timestamp> {
        let next = {
            let mut guard = self.lock();
            let st = &mut *guard;
            st.engine.handle_timeout(now_micros(), &mut st.out);
            st.engine.poll_timeout()
        };
        self.drain(false).await;
        next
    }

    /// Stores the pending transitions as events (in order; awaited when `wait`), saves the
    /// state with them when `wait` or when it is due, and hands the actions over.
    async fn drain(&self, wait: bool) -> Option<anyhow::Result<()>> {
        self.drain_audited(wait, None).await
    }

    /// [`Self::drain`], with the audit record of the operator's act that caused it in the
    /// same transaction as the transitions and the saved state.
    async fn drain_audited(&self, wait: bool, audit: Option<Audit>) -> Option<anyhow::Result<()>> {
        let (transitions, actions, state) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            if st.out.is_empty() && !(wait && st.dirty) && audit.is_none() {
                return None;
            }
            let transitions = std::mem::take(&mut st.out.transitions);
            let actions = std::mem::take(&mut st.out.actions);
            st.dirty |= !transitions.is_empty();
            let state = if wait {
                st.dirty = false;
                Some(serde_json::to_string(&st.engine.export_state()).unwrap_or_default())
            } else {
                None
            };
            (transitions, actions, state)
        };
        let m = &self.inner.metrics;
        m.alarm_transitions_total
            .fetch_add(transitions.len() as u64, Relaxed);
        let events: Vec<(String, i64, String, String, String)> = transitions
            .iter()
            .map(|t| {
                let e = transition_event(t);
                (e.id, e.ts, e.kind, e.subject, e.body.to_string())
            })
            .collect();
        for a in actions {
            let _ = self.inner.actions.send(a);
        }
        let op: crate::store::WriteOp = Box::new(move |c| {
            let mut insert = c.prepare_cached(
                "INSERT OR IGNORE INTO events (id, ts, kind, subject, body) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (id, ts, kind, subject, body) in &events {
                insert.execute(params![id, ts, kind, subject, body])?;
            }
            if let Some(state) = &state {
                c.prepare_cached(
                    "INSERT INTO alarm_state (id, state) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                )?
                .execute([state])?;
            }
            if let Some(a) = &audit {
                a.append(&park_db::Connection::sqlite(c))?;
            }
            Ok(())
        });
        let done = match self.inner.store.submit(op).await {
            Ok(done) => done,
            Err(e) => return Some(Err(e)),
        };
        if wait {
            Some(done.await)
        } else {
            tokio::spawn(async move {
                if let Err(e) = done.await {
                    tracing::error!(error = %format!("{e:#}"), "Alarm transitions could not be stored.");
                }
            });
            None
        }
    }

    /// Saves the alarm state if it changed since the last save.
    async fn save_if_dirty(&self) {
        let dirty = self.lock().dirty;
        if dirty && let Some(Err(e)) = self.drain(true).await {
            tracing::error!(error = %format!("{e:#}"), "The alarm state could not be saved.");
        }
    }

    /// Applies an operator action and returns once its transitions and the alarm state are
    /// stored.
    async fn operator(
        &self,
        audit: Audit,
        f: impl FnOnce(&mut Engine, Timestamp, &mut Outputs) -> Result<(), rules_engine::AlarmError>,
    ) -> Result<(), AlarmsError> {
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            f(&mut st.engine, now_micros(), &mut st.out)?;
            st.dirty = true;
        }
        self.inner.timer.notify_one();
        match self.drain_audited(true, Some(audit)).await {
            Some(Err(e)) => Err(AlarmsError::Store(e)),
            _ => Ok(()),
        }
    }

    pub async fn acknowledge(
        &self,
        id: u64,
        user: &str,
        comment: Option<&str>,
        audit: Audit,
    ) -> Result<(), AlarmsError> {
        self.operator(audit, |e, now, out| {
            e.acknowledge(AlarmId(id), user, comment, now, out)
        })
        .await
    }

    pub async fn shelve(
        &self,
        id: u64,
        until: Timestamp,
        user: &str,
        reason: Option<&str>,
        audit: Audit,
    ) -> Result<(), AlarmsError> {
        self.operator(audit, |e, now, out| {
            e.shelve(AlarmId(id), until, user, reason, now, out)
        })
        .await
    }

    pub async fn unshelve(&self, id: u64, user: &str, audit: Audit) -> Result<(), AlarmsError> {
        self.operator(audit, |e, now, out| e.unshelve(AlarmId(id), user, now, out))
            .await
    }

    pub async fn comment(
        &self,
        id: u64,
        user: &str,
        text: &str,
        audit: Audit,
    ) -> Result<(), AlarmsError> {
        self.operator(audit, |e, now, out| {
            e.comment(AlarmId(id), user, text, now, out)
        })
        .await
    }

    /// The alarms the filter selects, most urgent first, then newest.
    pub fn list(&self, filter: &AlarmFilter) -> Json {
        let st = self.lock();
        let mut alarms = st.engine.alarms(filter);
        alarms.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(b.changed_at.cmp(&a.changed_at))
        });
        Json::Array(alarms.iter().map(|a| alarm_json(a)).collect())
    }

    pub fn get(&self, id: u64) -> Option<Json> {
        self.lock().engine.alarm(AlarmId(id)).map(alarm_json)
    }

    /// The rules and the state of the rule file.
    pub fn rules(&self) -> RulesView {
        let st = self.lock();
        let status = self
            .inner
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let stats = st.engine.stats();
        RulesView {
            status,
            sources: stats.sources,
            instances: stats.instances,
            open_alarms: stats.open_alarms,
            rules: st.engine.rules().rules(),
        }
    }

    /// Reads the rule file again. A file that does not compile is refused with its error and
    /// the running rules stay.
    pub async fn reload(&self) -> Result<usize, String> {
        let Some(file) = &self.inner.file else {
            return Err("the node has no rule file configured ([rules] file)".into());
        };
        let compiled = compile(file);
        let mut status = self
            .inner
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let result = match compiled {
            Ok((rules, modified)) => {
                let n = rules.len();
                {
                    let mut guard = self.lock();
                    let st = &mut *guard;
                    st.engine.replace_rules(rules, now_micros(), &mut st.out);
                    st.file_modified = modified;
                    st.dirty = true;
                }
                status.rules = n;
                status.loaded_at = Some(now_micros());
                status.last_error = None;
                tracing::info!(file = %file.display(), rules = n, "Rules reloaded.");
                self.inner.metrics.rules_reloads_total.fetch_add(1, Relaxed);
                Ok(n)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                // The file is not retried until it changes again.
                self.lock().file_modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
                tracing::error!(error = %msg, "The rule file was refused; the running rules stay.");
                status.last_error = Some(msg.clone());
                status.refused_total += 1;
                self.inner
                    .metrics
                    .rules_reload_errors_total
                    .fetch_add(1, Relaxed);
                Err(msg)
            }
        };
        *self.inner.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
        self.inner.timer.notify_one();
        self.drain(true).await;
        result
    }

    /// Timeouts, periodic saves and the rule-file watch, until the node stops.
    pub async fn run(self) {
        let mut last_save = tokio::time::Instant::now();
        let mut last_watch = tokio::time::Instant::now();
        loop {
            let next = self.timeouts().await;
            let wait = next
                .map(|t| Duration::from_micros((t - now_micros()).max(0) as u64))
                .unwrap_or(MAX_TIMER_WAIT)
                .min(MAX_TIMER_WAIT);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.timer.notified() => {}
            }
            if last_save.elapsed() >= SAVE_INTERVAL {
                last_save = tokio::time::Instant::now();
                self.save_if_dirty().await;
            }
            if last_watch.elapsed() >= WATCH_INTERVAL {
                last_watch = tokio::time::Instant::now();
                if let Some(file) = &self.inner.file {
                    let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
                    if modified.is_some() && modified != self.lock().file_modified {
                        let _ = self.reload().await;
                    }
                }
            }
        }
    }
}

fn transition_event(t: &Transition) -> Event {
    let kind = serde_json::to_value(t.kind)
        .ok()
        .and_then(|k| k.as_str().map(str::to_string))
        .unwrap_or_else(|| "changed".into());
    Event::new(
        t.ts,
        &format!("alarm.{kind}"),
        &t.source,
        serde_json::to_value(t).unwrap_or(Json::Null),
    )
}

fn alarm_json(a: &rules_engine::Alarm) -> Json {
    let mut v = serde_json::to_value(a).unwrap_or(Json::Null);
    if let Some(o) = v.as_object_mut() {
        // Ids are u64: give them as strings too, for JavaScript.
        o.insert("id".into(), json!(a.id.0.to_string()));
    }
    v
}

/// Where actions go: the devices for point writes, the broker for MQTT commands.
#[derive(Clone)]
pub struct ActionTargets {
    pub devices: Devices,
    pub publisher: Option<Publisher>,
}

/// Carries out the engine's actions, in order, until the node stops. Webhooks go to the
/// durable outbox first; [`run_webhooks`] delivers them.
pub async fn run_actions(
    mut rx: mpsc::UnboundedReceiver<ActionOut>,
    targets: ActionTargets,
    store: Store,
    metrics: Arc<Metrics>,
) {
    while let Some(a) = rx.recv().await {
        metrics.rule_actions_total.fetch_add(1, Relaxed);
        if matches!(a.action, Action::WritePoint { .. }) {
            // A write waits for the device to confirm it: it must not hold up the others.
            let (targets, store, metrics) = (targets.clone(), store.clone(), metrics.clone());
            tokio::spawn(async move { perform(a, &targets, &store, &metrics).await });
        } else {
            perform(a, &targets, &store, &metrics).await;
        }
    }
}

async fn perform(a: ActionOut, targets: &ActionTargets, store: &Store, metrics: &Metrics) {
    let actor = format!("rule:{}", a.rule);
    let result = match &a.action {
        Action::WritePoint { point, value } => {
            let outcome = write_point(&targets.devices, point, value).await;
            let entry = Audit::new(
                &Actor::system(actor.clone()),
                "point_write",
                point,
                json!({"value": value_json(value), "alarm": a.alarm.0.to_string()}),
            )
            .with_outcome(match &outcome {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("refused: {e}"),
            });
            if let Err(e) = store.audit(entry).await {
                tracing::error!(error = %format!("{e:#}"), "A rule's point write could not be audited.");
            }
            outcome
        }
        Action::Mqtt { topic, payload, .. } => match &targets.publisher {
            Some(p) => p
                .publish(topic, payload.clone().into_bytes())
                .map_err(|e| format!("{e:#}")),
            None => Err("the node has no MQTT broker".into()),
        },
        Action::Webhook { url, body } => {
            let (url, body) = (url.clone(), body.clone());
            store
                .write(Box::new(move |c| {
                    let now = now_micros();
                    c.prepare_cached("INSERT INTO webhook_outbox (url, body, created_ts, next_ts) VALUES (?1, ?2, ?3, ?3)")?
                        .execute(params![url, body, now])?;
                    Ok(())
                }))
                .await
                .map_err(|e| format!("{e:#}"))
        }
        Action::WorkOrder {
            title,
            description,
            severity,
        } => {
            let event = Event::new(
                a.ts,
                "workorder.requested",
                &a.source,
                json!({"title": title, "description": description, "severity": severity,
                       "alarm": a.alarm.0.to_string(), "rule": &*a.rule}),
            );
            crate::events::record(store, event)
                .await
                .map(drop)
                .map_err(|e| format!("{e:#}"))
        }
    };
    if let Err(e) = result {
        metrics.rule_action_failures_total.fetch_add(1, Relaxed);
        tracing::warn!(rule = %a.rule, source = %a.source, error = %e, "A rule's action failed.");
    }
}

fn value_json(v: &rules_engine::Value) -> Json {
    match v {
        rules_engine::Value::Bool(b) => json!(b),
        rules_engine::Value::Number(n) => json!(n),
        rules_engine::Value::Text(t) => json!(t),
    }
}

async fn write_point(
    devices: &Devices,
    point: &str,
    value: &rules_engine::Value,
) -> Result<(), String> {
    let (device, name) = point
        .split_once('/')
        .ok_or_else(|| format!("{point:?} is not device/point"))?;
    let entry = devices
        .get(device)
        .ok_or_else(|| format!("no device {device}"))?;
    let spec = entry
        .spec
        .profile
        .points
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("device {device} has no point {name}"))?;
    if !spec.writable {
        return Err(format!("point {point} is not writable"));
    }
    let value = match value {
        rules_engine::Value::Bool(b) => Value::Bool(*b),
        rules_engine::Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            Value::Int(*n as i64)
        }
        rules_engine::Value::Number(n) => Value::Float(*n),
        rules_engine::Value::Text(_) => return Err("a point takes a number or a boolean".into()),
    };
    let writer = entry
        .writer()
        .ok_or_else(|| format!("device {device} takes no writes"))?;
    let (reply, rx) = oneshot::channel();
    writer
        .send(WriteRequest {
            point: name.to_string(),
            value,
            reply,
        })
        .await
        .map_err(|_| "the device driver has stopped".to_string())?;
    match tokio::time::timeout(entry.spec.timeout * 4 + Duration::from_secs(2), rx).await {
        Err(_) => Err("the device did not confirm the write in time".into()),
        Ok(Err(_)) => Err("the device driver has stopped".into()),
        Ok(Ok(r)) => r.map(drop).map_err(|e| e.to_string()),
    }
}

/// Posts the webhooks of the durable outbox, oldest first, until the node stops. A webhook
/// leaves the outbox only once its receiver answered 2xx; failures are retried with a
/// backoff that doubles up to ten minutes.
pub async fn run_webhooks(store: Store, metrics: Arc<Metrics>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    loop {
        let now = now_micros();
        let due = store
            .read(move |c| {
                c.prepare_cached(
                    "SELECT id, url, body, attempts FROM webhook_outbox WHERE next_ts <= ?1 ORDER BY id LIMIT 20",
                )?
                .query_map([now], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await;
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "The webhook outbox cannot be read.");
                Vec::new()
            }
        };
        metrics.webhook_outbox_due.store(due.len() as u64, Relaxed);
        for (id, url, body, attempts) in due {
            let agent = agent.clone();
            let u = url.clone();
            let sent = tokio::task::spawn_blocking(move || {
                agent
                    .post(&u)
                    .header("content-type", "application/json")
                    .send(body.as_bytes())
                    .map(|r| r.status().as_u16())
            })
            .await;
            let outcome = match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
                Ok(Ok(status)) => Err(format!("answered HTTP {status}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let result = match outcome {
                Ok(()) => {
                    metrics.webhooks_delivered_total.fetch_add(1, Relaxed);
                    store
                        .write(Box::new(move |c| {
                            c.execute("DELETE FROM webhook_outbox WHERE id = ?1", [id])?;
                            Ok(())
                        }))
                        .await
                }
                Err(e) => {
                    metrics.webhook_failures_total.fetch_add(1, Relaxed);
                    tracing::warn!(%url, attempts = attempts + 1, error = %e, "A webhook failed; it will be retried.");
                    let backoff = (2i64 << attempts.min(9)).min(600) * 1_000_000;
                    let next = now_micros() + backoff;
                    store
                        .write(Box::new(move |c| {
                            c.execute(
                                "UPDATE webhook_outbox SET attempts = attempts + 1, next_ts = ?2, last_error = ?3 WHERE id = ?1",
                                params![id, next, e],
                            )?;
                            Ok(())
                        }))
                        .await
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %format!("{e:#}"), "The webhook outbox cannot be updated.");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

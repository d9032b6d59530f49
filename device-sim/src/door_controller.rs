//! [`DoorControllerSim`]: door controllers that publish credential reads and door states to
//! the building's MQTT broker and act on the edge's unlock and deny commands, following the
//! door contract of `docs/mqtt-topics.md`.
//!
//! Each door is its own MQTT client (`sim_door_<door>`), as each real controller is, so each
//! has its own `door/<door>/status` last will. Reads (`door/<door>/read`) and states
//! (`door/<door>/state`) go out at QoS 1; commands are taken from `door/<door>/command`.
//! A read made while the broker is away is lost, not queued. The logic is in [`crate::door`];
//! this module only moves its outputs and the edge's commands.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure};
use futures_util::future::try_join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::clock::{SimClock, unix_now_s};
use crate::contract::{DoorCommand, encode, is_valid_id, topic};
use crate::door::{CommandOutcome, CredentialConfig, DoorCounts, DoorModel, DoorOutput};
use crate::mqtt_link::{Link, LinkConfig, LinkDriver};

/// One simulated door.
#[derive(Clone, Debug, PartialEq)]
pub struct DoorConfig {
    /// The door's id in topics: `[A-Za-z0-9_.-]+`.
    pub id: String,
    /// Traffic relative to a building's main door ([`crate::door::reads_per_minute`]): 1.0 for
    /// a main entrance, 0.2 for a side door, 0 for a door that only obeys commands.
    pub traffic_scale: f64,
}

impl DoorConfig {
    pub fn new(id: &str, traffic_scale: f64) -> Self {
        DoorConfig {
            id: id.to_owned(),
            traffic_scale,
        }
    }
}

/// What [`DoorControllerConfig::build`] checks and [`DoorControllerSim::run`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DoorControllerConfig {
    /// The broker (the edge node's MQTT 3.1.1 listener).
    pub host: String,
    pub port: u16,
    pub doors: Vec<DoorConfig>,
    /// The credentials people present, at every door; see [`crate::door::demo_credentials`].
    pub credentials: Vec<CredentialConfig>,
    pub seed: u64,
    /// The local time zone of the daily pattern, e.g. `8 * 3600` for China Standard Time.
    pub utc_offset_s: i32,
    /// Simulated seconds per real second for the daily traffic pattern (1 = real time; 60 =
    /// a day in 24 minutes). Door movements always take real time.
    pub time_compression: f64,
    /// Start the simulated day at this local time of day (seconds since midnight) instead of
    /// now, e.g. `7.5 * 3600.0` to show the morning peak first.
    pub start_seconds_of_day: Option<f64>,
    /// Put simulated instead of wall-clock time in `ts`; see [`SimClock::timestamp_us`].
    pub simulated_timestamps: bool,
    /// The password of every door's broker account, whose username is its client id
    /// (`sim_door_ID`); none: anonymous (a lab broker).
    pub mqtt_password: Option<String>,
}

impl DoorControllerConfig {
    /// Real time, starting now, UTC, seed 0.
    pub fn new(
        host: &str,
        port: u16,
        doors: Vec<DoorConfig>,
        credentials: Vec<CredentialConfig>,
    ) -> Self {
        DoorControllerConfig {
            host: host.to_owned(),
            port,
            doors,
            credentials,
            seed: 0,
            utc_offset_s: 0,
            time_compression: 1.0,
            start_seconds_of_day: None,
            simulated_timestamps: false,
            mqtt_password: None,
        }
    }

    /// Checks the config: door ids valid and distinct, credentials present and not empty,
    /// scales and the compression finite and not negative.
    pub fn build(self) -> anyhow::Result<DoorControllerSim> {
        ensure!(!self.doors.is_empty(), "at least one door is needed");
        for (index, door) in self.doors.iter().enumerate() {
            ensure!(
                is_valid_id(&door.id),
                "door id {:?} must be one or more of [A-Za-z0-9_.-]",
                door.id
            );
            if self.doors[..index].iter().any(|d| d.id == door.id) {
                bail!("door id {:?} is used twice", door.id);
            }
            ensure!(
                door.traffic_scale.is_finite() && door.traffic_scale >= 0.0,
                "door {:?}: traffic_scale must be a number of at least 0",
                door.id
            );
        }
        ensure!(
            !self.credentials.is_empty(),
            "at least one credential is needed"
        );
        ensure!(
            self.credentials.iter().all(|c| !c.value.is_empty()),
            "a credential value must not be empty"
        );
        ensure!(
            self.time_compression.is_finite() && self.time_compression > 0.0,
            "time_compression must be a number above 0"
        );
        let stats = DoorStats::default();
        Ok(DoorControllerSim {
            config: self,
            stats,
        })
    }
}

/// Live counts per door, readable while the simulator runs (for tests and demo logs).
#[derive(Clone, Debug, Default)]
pub struct DoorStats(Arc<Mutex<BTreeMap<String, DoorCounts>>>);

impl DoorStats {
    /// The counts of one door; zero for a door that has not started or does not exist.
    pub fn door(&self, door: &str) -> DoorCounts {
        self.lock().get(door).copied().unwrap_or_default()
    }

    /// The counts of all doors added up.
    pub fn total(&self) -> DoorCounts {
        let mut total = DoorCounts::default();
        for counts in self.lock().values() {
            total += *counts;
        }
        total
    }

    fn set(&self, door: &str, counts: DoorCounts) {
        self.lock().insert(door.to_owned(), counts);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DoorCounts>> {
        // The map holds plain counters, which a panicking writer cannot leave inconsistent.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Simulated door controllers, checked and ready to [`run`](DoorControllerSim::run).
#[derive(Debug)]
pub struct DoorControllerSim {
    config: DoorControllerConfig,
    stats: DoorStats,
}

impl DoorControllerSim {
    /// A handle on the counts, to keep before `run` consumes the simulator.
    pub fn stats(&self) -> DoorStats {
        self.stats.clone()
    }

    /// Connects every door and runs until the future is dropped. A broker that is away is
    /// retried; reads that fall due meanwhile are lost (and counted as `unsent`).
    ///
    /// ```no_run
    /// use device_sim::{DoorConfig, DoorControllerConfig, demo_credentials};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// let mut config = DoorControllerConfig::new(
    ///     "127.0.0.1",
    ///     1883,
    ///     vec![DoorConfig::new("b1-main", 1.0), DoorConfig::new("b1-side", 0.2)],
    ///     demo_credentials(7, 40),
    /// );
    /// config.utc_offset_s = 8 * 3600;
    /// config.time_compression = 60.0;
    /// let sim = config.build()?;
    /// let stats = sim.stats();
    /// tokio::spawn(sim.run());
    /// println!("unlocks so far: {}", stats.total().unlocks);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn run(self) -> anyhow::Result<()> {
        let config = self.config;
        let clock = SimClock::new(
            unix_now_s(),
            config.utc_offset_s,
            config.start_seconds_of_day,
            config.time_compression,
        )
        .simulated_timestamps(config.simulated_timestamps);
        let start = Instant::now();
        let doors = config.doors.iter().enumerate().map(|(index, door)| {
            // Each door gets its own stream of people.
            let seed = config
                .seed
                .wrapping_add((index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let model = DoorModel::new(
                &door.id,
                seed,
                clock,
                door.traffic_scale,
                config.credentials.clone(),
            );
            let (tx, rx) = mpsc::channel(64);
            let (link, driver) = Link::new(
                LinkConfig {
                    client_id: format!("sim_door_{}", door.id),
                    host: config.host.clone(),
                    port: config.port,
                    status_topic: topic::door_status(&door.id),
                    subscriptions: vec![topic::door_command(&door.id)],
                    password: config.mqtt_password.clone(),
                },
                tx,
            );
            let span = info_span!("door_controller", door = %door.id);
            run_door(model, link, driver, rx, self.stats.clone(), start).instrument(span)
        });
        try_join_all(doors).await?;
        Ok(())
    }
}

async fn run_door(
    model: DoorModel,
    link: Link,
    driver: LinkDriver,
    incoming: mpsc::Receiver<crate::mqtt_link::Incoming>,
    stats: DoorStats,
    start: Instant,
) -> anyhow::Result<()> {
    tokio::select! {
        result = driver.run() => result,
        result = door_loop(model, link, incoming, stats, start) => result,
    }
}

async fn door_loop(
    mut model: DoorModel,
    link: Link,
    mut incoming: mpsc::Receiver<crate::mqtt_link::Incoming>,
    stats: DoorStats,
    start: Instant,
) -> anyhow::Result<()> {
    let door = model.door().to_owned();
    loop {
        while let Some(output) = model.poll_output() {
            let (topic, payload) = match &output {
                DoorOutput::Read { read, role } => {
                    debug!(kind = ?read.kind, value = %read.value, reader = ?read.reader, ?role, "Credential read.");
                    (topic::door_read(&door), encode(read))
                }
                DoorOutput::State(event) => {
                    info!(state = ?event.state, "Door state.");
                    (topic::door_state(&door), encode(event))
                }
            };
            if !link.publish(topic, payload) {
                debug!("Not published: the MQTT broker is away or the queue is full.");
                model.note_unsent();
            }
        }
        stats.set(&door, model.counts());
        // Far enough to be never, near enough not to overflow an `Instant`.
        let never = Duration::from_secs(365 * 86_400);
        let deadline = start + model.poll_timeout().min(start.elapsed() + never);
        tokio::select! {
            message = incoming.recv() => {
                let Some(message) = message else {
                    return Ok(());
                };
                match model.handle_command(start.elapsed(), &message.payload) {
                    Ok(CommandOutcome::Applied(DoorCommand::Unlock { duration_ms, decision })) => {
                        info!(%decision, duration_ms, "Unlock command: opening.");
                    }
                    Ok(CommandOutcome::Applied(DoorCommand::Deny { reason, decision })) => {
                        info!(%decision, %reason, "Deny command.");
                    }
                    Ok(CommandOutcome::Duplicate(command)) => {
                        debug!(decision = %command.decision(), "Duplicate command ignored.");
                    }
                    Err(error) => warn!(topic = %message.topic, %error, "Invalid command ignored."),
                }
            }
            () = tokio::time::sleep_until(deadline) => model.handle_timeout(start.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::demo_credentials;

    fn config(doors: Vec<DoorConfig>) -> DoorControllerConfig {
        DoorControllerConfig::new("127.0.0.1", 9, doors, demo_credentials(1, 3))
    }

    #[test]
    fn bad_door_configs_are_refused_with_the_reason() {
        let cases = [
            (config(vec![]), "at least one door"),
            (config(vec![DoorConfig::new("a/b", 1.0)]), "a/b"),
            (config(vec![DoorConfig::new("", 1.0)]), "\"\""),
            (
                config(vec![DoorConfig::new("d1", 1.0), DoorConfig::new("d1", 1.0)]),
                "used twice",
            ),
            (
                config(vec![DoorConfig::new("d1", f64::NAN)]),
                "traffic_scale",
            ),
            (
                DoorControllerConfig {
                    time_compression: 0.0,
                    ..config(vec![DoorConfig::new("d1", 1.0)])
                },
                "time_compression",
            ),
            (
                DoorControllerConfig {
                    credentials: vec![],
                    ..config(vec![DoorConfig::new("d1", 1.0)])
                },
                "credential",
            ),
        ];
        for (config, reason) in cases {
            let error = config.build().unwrap_err().to_string();
            assert!(error.contains(reason), "{error:?} does not name {reason:?}");
        }
    }

    #[test]
    fn a_good_config_builds_with_zero_counts() {
        let sim = config(vec![
            DoorConfig::new("b1-main", 1.0),
            DoorConfig::new("b1.side_2", 0.2),
        ])
        .build()
        .unwrap();
        assert_eq!(sim.stats().total(), DoorCounts::default());
        assert_eq!(sim.stats().door("b1-main"), DoorCounts::default());
    }
}

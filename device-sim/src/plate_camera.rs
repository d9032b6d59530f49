//! [`PlateCameraSim`]: the lanes of a car park (plate camera, barrier, display and, at exits,
//! pay terminal) talking to the building's MQTT broker, following the parking contract of
//! `docs/mqtt-topics.md`.
//!
//! Each lane is one MQTT client (`sim_lane_<lane>`) with `lpr/<lane>/status` as its last
//! will; it publishes `lpr/<lane>/plate` and `lane/<lane>/payment` at QoS 1 and listens to
//! `barrier/<lane>/command` and `lane/<lane>/display`. The cars are one model
//! ([`crate::parking`]) for the whole lot, so a car that came in by one lane leaves by
//! another. Reads and payments made while the broker is away are lost, not queued.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure};
use futures_util::future::try_join_all;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::clock::{SimClock, unix_now_s};
use crate::contract::{BarrierCommand, Direction, encode, is_valid_id, topic};
use crate::mqtt_link::{Incoming, Link, LinkConfig};
use crate::parking::{BarrierOutcome, LotConfig, LotCounts, LotModel, LotOutput};
use crate::plate::is_valid_plate;

/// What [`PlateCameraConfig::build`] checks and [`PlateCameraSim::run`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct PlateCameraConfig {
    /// The broker (the edge node's MQTT 3.1.1 listener).
    pub host: String,
    pub port: u16,
    /// Lanes, plates and driver behaviour.
    pub lot: LotConfig,
    pub seed: u64,
    /// The local time zone of the daily pattern, e.g. `8 * 3600` for China Standard Time.
    pub utc_offset_s: i32,
    /// Simulated seconds per real second for arrivals and stays (1 = real time; 60 = a day
    /// in 24 minutes). Lane actions (moving up, paying, timeouts) always take real time.
    pub time_compression: f64,
    /// Start the simulated day at this local time of day (seconds since midnight) instead of
    /// now. The lot starts empty either way.
    pub start_seconds_of_day: Option<f64>,
    /// Put simulated instead of wall-clock time in `ts`; see [`SimClock::timestamp_us`].
    pub simulated_timestamps: bool,
    /// The password of every lane's broker account, whose username is its client id
    /// (`sim_lane_ID`); none: anonymous (a lab broker).
    pub mqtt_password: Option<String>,
}

impl PlateCameraConfig {
    /// Real time, starting now, UTC, seed 0, and the defaults of [`LotConfig::new`].
    pub fn new(host: &str, port: u16, lot: LotConfig) -> Self {
        PlateCameraConfig {
            host: host.to_owned(),
            port,
            lot,
            seed: 0,
            utc_offset_s: 0,
            time_compression: 1.0,
            start_seconds_of_day: None,
            simulated_timestamps: false,
            mqtt_password: None,
        }
    }

    /// Checks the config: lane ids valid and distinct, plates valid and distinct, shares and
    /// scales in range, a barrier timeout above zero.
    pub fn build(self) -> anyhow::Result<PlateCameraSim> {
        let lot = &self.lot;
        ensure!(!lot.lanes.is_empty(), "at least one lane is needed");
        for (index, lane) in lot.lanes.iter().enumerate() {
            ensure!(
                is_valid_id(&lane.id),
                "lane id {:?} must be one or more of [A-Za-z0-9_.-]",
                lane.id
            );
            if lot.lanes[..index].iter().any(|l| l.id == lane.id) {
                bail!("lane id {:?} is used twice", lane.id);
            }
        }
        let mut plates = HashSet::new();
        for plate in &lot.plates {
            ensure!(
                is_valid_plate(&plate.plate),
                "plate {:?} is not of the form 湘A12345",
                plate.plate
            );
            ensure!(
                plates.insert(&plate.plate),
                "plate {:?} is listed twice",
                plate.plate
            );
        }
        ensure!(
            lot.visitor_scale.is_finite() && lot.visitor_scale >= 0.0,
            "visitor_scale must be a number of at least 0"
        );
        ensure!(
            (0.0..=1.0).contains(&lot.low_confidence_share),
            "low_confidence_share must be between 0 and 1"
        );
        ensure!(
            !lot.barrier_timeout.is_zero(),
            "barrier_timeout must be above zero"
        );
        ensure!(
            lot.payment_delay.0 <= lot.payment_delay.1,
            "payment_delay must be (shortest, longest)"
        );
        ensure!(
            self.time_compression.is_finite() && self.time_compression > 0.0,
            "time_compression must be a number above 0"
        );
        Ok(PlateCameraSim {
            config: self,
            stats: LotStats::default(),
        })
    }
}

/// Live counts of the car park, readable while the simulator runs (for tests and demo logs).
#[derive(Clone, Debug, Default)]
pub struct LotStats(Arc<Mutex<LotCounts>>);

impl LotStats {
    pub fn get(&self) -> LotCounts {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set(&self, counts: LotCounts) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = counts;
    }
}

/// A simulated car park's lanes, checked and ready to [`run`](PlateCameraSim::run).
#[derive(Debug)]
pub struct PlateCameraSim {
    config: PlateCameraConfig,
    stats: LotStats,
}

/// Which of a lane's subscriptions a publish came from.
#[derive(Clone, Copy, Debug)]
enum LaneTopic {
    Barrier(usize),
    Display(usize),
}

impl PlateCameraSim {
    /// A handle on the counts, to keep before `run` consumes the simulator.
    pub fn stats(&self) -> LotStats {
        self.stats.clone()
    }

    /// Connects every lane and runs until the future is dropped. A broker that is away is
    /// retried; meanwhile plate reads go unanswered and the cars give up at the barrier.
    ///
    /// ```no_run
    /// use device_sim::{Direction, LaneConfig, LotConfig, PlateCameraConfig, demo_plates};
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// let lanes = vec![
    ///     LaneConfig::new("p1-in", Direction::In),
    ///     LaneConfig::new("p1-out", Direction::Out),
    /// ];
    /// let mut config =
    ///     PlateCameraConfig::new("127.0.0.1", 1883, LotConfig::new(lanes, demo_plates(7, 60, 2)));
    /// config.utc_offset_s = 8 * 3600;
    /// let sim = config.build()?;
    /// let stats = sim.stats();
    /// tokio::spawn(sim.run());
    /// println!("cars parked: {}", stats.get().occupancy);
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
        let (tx, rx) = mpsc::channel(64);
        let mut links = Vec::new();
        let mut drivers = Vec::new();
        let mut topics = HashMap::new();
        for (index, lane) in config.lot.lanes.iter().enumerate() {
            let (link, driver) = Link::new(
                LinkConfig {
                    client_id: format!("sim_lane_{}", lane.id),
                    host: config.host.clone(),
                    port: config.port,
                    status_topic: topic::lpr_status(&lane.id),
                    subscriptions: vec![
                        topic::barrier_command(&lane.id),
                        topic::lane_display(&lane.id),
                    ],
                    password: config.mqtt_password.clone(),
                },
                tx.clone(),
            );
            topics.insert(topic::barrier_command(&lane.id), LaneTopic::Barrier(index));
            topics.insert(topic::lane_display(&lane.id), LaneTopic::Display(index));
            links.push(link);
            let span = info_span!("plate_camera", lane = %lane.id);
            drivers.push(driver.run().instrument(span));
        }
        drop(tx);
        let model = LotModel::new(config.seed, clock, config.lot);
        tokio::select! {
            result = try_join_all(drivers) => result.map(drop),
            result = lot_loop(model, links, topics, rx, self.stats, start) => result,
        }
    }
}

async fn lot_loop(
    mut model: LotModel,
    links: Vec<Link>,
    topics: HashMap<String, LaneTopic>,
    mut incoming: mpsc::Receiver<Incoming>,
    stats: LotStats,
    start: Instant,
) -> anyhow::Result<()> {
    loop {
        while let Some(output) = model.poll_output() {
            let (lane, topic, payload) = match &output {
                LotOutput::Plate { lane, read, kind } => {
                    debug!(lane = %model.lane_id(*lane), plate = %read.plate, confidence = read.confidence, ?kind, "Plate read.");
                    (*lane, topic::lpr_plate(model.lane_id(*lane)), encode(read))
                }
                LotOutput::Payment { lane, payment } => {
                    info!(lane = %model.lane_id(*lane), session = %payment.session, amount_fen = payment.amount_fen, method = ?payment.method, "Payment at the lane.");
                    (
                        *lane,
                        topic::lane_payment(model.lane_id(*lane)),
                        encode(payment),
                    )
                }
            };
            if !links[lane].publish(topic, payload) {
                debug!(lane = %model.lane_id(lane), "Not published: the MQTT broker is away or the queue is full.");
                model.note_unsent();
            }
        }
        stats.set(model.counts());
        let never = Duration::from_secs(365 * 86_400);
        let deadline = start + model.poll_timeout().min(start.elapsed() + never);
        tokio::select! {
            message = incoming.recv() => {
                let Some(message) = message else {
                    return Ok(());
                };
                let now = start.elapsed();
                match topics.get(&message.topic) {
                    Some(LaneTopic::Barrier(lane)) => {
                        let outcome = model.handle_barrier_command(now, *lane, &message.payload);
                        log_barrier(&model, *lane, outcome);
                    }
                    Some(LaneTopic::Display(lane)) => {
                        match model.handle_display(now, *lane, &message.payload) {
                            Ok(shown) => info!(lane = %model.lane_id(*lane), text = %shown.text, fee_fen = ?shown.fee_fen, "Lane display."),
                            Err(error) => warn!(topic = %message.topic, %error, "Invalid display message ignored."),
                        }
                    }
                    None => debug!(topic = %message.topic, "Publish on an unexpected topic ignored."),
                }
            }
            () = tokio::time::sleep_until(deadline) => model.handle_timeout(start.elapsed()),
        }
    }
}

fn log_barrier(
    model: &LotModel,
    lane: usize,
    outcome: Result<BarrierOutcome, crate::contract::PayloadError>,
) {
    let direction = match model.lane_direction(lane) {
        Direction::In => "in",
        Direction::Out => "out",
    };
    let lane = model.lane_id(lane);
    match outcome {
        Ok(BarrierOutcome::Applied {
            command: BarrierCommand::Open { decision, session },
            plate: Some(plate),
        }) => {
            info!(%lane, %plate, %session, %decision, direction, occupancy = model.counts().occupancy, "Barrier opened; the car drives through.");
        }
        Ok(BarrierOutcome::Applied {
            command: BarrierCommand::Open { decision, .. },
            plate: None,
        }) => {
            warn!(%lane, %decision, "Barrier opened with no car at the lane.");
        }
        Ok(BarrierOutcome::Applied {
            command: BarrierCommand::Hold { reason, decision },
            plate,
        }) => {
            info!(%lane, plate = plate.as_deref().unwrap_or(""), %reason, %decision, "Barrier holds.");
        }
        Ok(BarrierOutcome::Duplicate(command)) => {
            debug!(%lane, decision = %command.decision(), "Duplicate barrier command ignored.");
        }
        Err(error) => warn!(%lane, %error, "Invalid barrier command ignored."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parking::{LaneConfig, PlateConfig, PlateRole, demo_plates};

    fn config(lanes: Vec<LaneConfig>, plates: Vec<PlateConfig>) -> PlateCameraConfig {
        PlateCameraConfig::new("127.0.0.1", 9, LotConfig::new(lanes, plates))
    }

    fn lanes() -> Vec<LaneConfig> {
        vec![
            LaneConfig::new("in1", Direction::In),
            LaneConfig::new("out1", Direction::Out),
        ]
    }

    #[test]
    fn bad_lot_configs_are_refused_with_the_reason() {
        let with = |change: fn(&mut PlateCameraConfig)| {
            let mut config = config(lanes(), demo_plates(1, 3, 1));
            change(&mut config);
            config
        };
        let cases = [
            (config(vec![], vec![]), "at least one lane"),
            (
                config(vec![LaneConfig::new("a b", Direction::In)], vec![]),
                "\"a b\"",
            ),
            (
                config(
                    vec![
                        LaneConfig::new("l1", Direction::In),
                        LaneConfig::new("l1", Direction::Out),
                    ],
                    vec![],
                ),
                "used twice",
            ),
            (
                config(
                    lanes(),
                    vec![PlateConfig::new("湘A·12345", PlateRole::MonthlyPass)],
                ),
                "湘A·12345",
            ),
            (
                config(
                    lanes(),
                    vec![
                        PlateConfig::new("湘A12345", PlateRole::MonthlyPass),
                        PlateConfig::new("湘A12345", PlateRole::Blocked),
                    ],
                ),
                "listed twice",
            ),
            (
                with(|c| c.lot.low_confidence_share = 1.5),
                "low_confidence_share",
            ),
            (with(|c| c.lot.visitor_scale = -1.0), "visitor_scale"),
            (
                with(|c| c.lot.barrier_timeout = Duration::ZERO),
                "barrier_timeout",
            ),
            (
                with(|c| c.lot.payment_delay = (Duration::from_secs(9), Duration::from_secs(1))),
                "payment_delay",
            ),
            (with(|c| c.time_compression = f64::NAN), "time_compression"),
        ];
        for (config, reason) in cases {
            let error = config.build().unwrap_err().to_string();
            assert!(error.contains(reason), "{error:?} does not name {reason:?}");
        }
    }

    #[test]
    fn a_good_lot_config_builds_with_zero_counts() {
        let sim = config(lanes(), demo_plates(1, 30, 2)).build().unwrap();
        assert_eq!(sim.stats().get(), LotCounts::default());
    }
}

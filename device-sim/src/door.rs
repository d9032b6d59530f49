//! The model of a simulated door controller: people presenting credentials on a working day's
//! pattern ([`reads_per_minute`], [`inbound_share`]), and the door itself opening after an
//! unlock, closing when the unlock time is over, now and then held open or forced.
//!
//! Sans-IO, in the quinn-proto shape: [`DoorModel`] takes the real time elapsed since the
//! simulator started as an argument (`handle_timeout`, `handle_command`) and hands back what
//! to publish (`poll_output`) and when it next wants to be woken (`poll_timeout`). It reads
//! no clock and touches no socket; `door_controller` does the MQTT. It does not decide who may
//! pass: that is the edge's job, and the model just does what the edge's commands say.

use std::collections::VecDeque;
use std::time::Duration;

use crate::clock::{SECONDS_PER_DAY, SimClock, seconds_of_day};
use crate::contract::{
    CredentialKind, Direction, DoorCommand, DoorRead, DoorState, DoorStateEvent, PayloadError,
    decode,
};
use crate::meter::smoothstep;

/// An upper bound of [`reads_per_minute`] over the whole day, used to draw the arrivals.
pub const MAX_READS_PER_MINUTE: f64 = 12.5;

/// How often, on average, a door is forced (opened without an unlock), in simulated hours.
const MEAN_HOURS_BETWEEN_FORCED: f64 = 8.0;
/// The share of unlocks after which the door is held open past the unlock time.
const HELD_OPEN_SHARE: f64 = 0.03;
/// Decisions remembered to recognise a command delivered twice (QoS 1 may duplicate).
const REMEMBERED_DECISIONS: usize = 64;

/// One stream of people through a door: its rate in reads per minute and the share of them
/// that read on the inside-going reader.
struct Flow {
    per_minute: f64,
    inbound: f64,
}

fn gauss(hour: f64, centre: f64, sigma: f64) -> f64 {
    (-0.5 * ((hour - centre) / sigma).powi(2)).exp()
}

/// The flows that make up a working day at a building's main door.
fn flows(seconds_of_day: f64) -> [Flow; 5] {
    let hour = seconds_of_day.rem_euclid(SECONDS_PER_DAY) / 3600.0;
    let daytime = smoothstep(6.5, 8.0, hour) * (1.0 - smoothstep(19.5, 22.0, hour));
    [
        // Cleaners, security, deliveries and meetings: a trickle at night, more by day.
        Flow {
            per_minute: 0.1 + 1.4 * daytime,
            inbound: 0.5,
        },
        // The morning peak, 08:00 to 09:30, nearly all coming in.
        Flow {
            per_minute: 10.0 * smoothstep(7.5, 8.0, hour) * (1.0 - smoothstep(9.5, 10.0, hour)),
            inbound: 0.95,
        },
        // Out to lunch around 11:55, back around 13:00.
        Flow {
            per_minute: 4.0 * gauss(hour, 11.9, 0.3),
            inbound: 0.15,
        },
        Flow {
            per_minute: 4.0 * gauss(hour, 13.0, 0.3),
            inbound: 0.85,
        },
        // The evening out-flow, centred on 18:00.
        Flow {
            per_minute: 8.0 * gauss(hour, 18.0, 0.6),
            inbound: 0.1,
        },
    ]
}

/// Credential reads per minute at a building's main door at a local time of day: a trickle
/// at night, the morning peak from 08:00 to 09:30, lunch out and back, and the evening
/// out-flow around 18:00. Times outside a day wrap. Scale it for smaller doors.
///
/// ```
/// use device_sim::door::reads_per_minute;
///
/// let hour = 3600.0;
/// assert!(reads_per_minute(8.5 * hour) > 20.0 * reads_per_minute(3.0 * hour));
/// ```
pub fn reads_per_minute(seconds_of_day: f64) -> f64 {
    flows(seconds_of_day).iter().map(|f| f.per_minute).sum()
}

/// The share of reads at a time of day that are on the `in` reader (people coming in).
pub fn inbound_share(seconds_of_day: f64) -> f64 {
    let flows = flows(seconds_of_day);
    let total: f64 = flows.iter().map(|f| f.per_minute).sum();
    flows.iter().map(|f| f.per_minute * f.inbound).sum::<f64>() / total
}

/// What the simulator expects the edge to make of a credential; it only sets how often the
/// credential is used and what the logs say, the edge decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialRole {
    /// An employee's valid credential: most reads.
    Staff,
    /// A visitor's QR code.
    Visitor,
    /// A card the edge has never seen.
    Unknown,
    /// A card whose validity has ended.
    Expired,
}

impl CredentialRole {
    /// The share of reads that use a credential of this role, when the list has any.
    fn weight(self) -> f64 {
        match self {
            CredentialRole::Staff => 0.88,
            CredentialRole::Visitor => 0.06,
            CredentialRole::Unknown => 0.04,
            CredentialRole::Expired => 0.02,
        }
    }
}

/// A credential the simulated people present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialConfig {
    pub kind: CredentialKind,
    pub value: String,
    pub role: CredentialRole,
}

impl CredentialConfig {
    pub fn new(kind: CredentialKind, value: impl Into<String>, role: CredentialRole) -> Self {
        CredentialConfig {
            kind,
            value: value.into(),
            role,
        }
    }
}

/// A credential list for a demo, the same for the same seed: `staff` cards (8-hex-digit
/// Mifare UIDs) and one staff PIN, three unknown cards, one expired card and two visitor QR
/// codes. The edge's config must know the staff and visitor credentials and the expired card.
pub fn demo_credentials(seed: u64, staff: usize) -> Vec<CredentialConfig> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut uid = || format!("{:08X}", rng.u32(..));
    let mut list: Vec<CredentialConfig> = (0..staff)
        .map(|_| CredentialConfig::new(CredentialKind::Card, uid(), CredentialRole::Staff))
        .collect();
    list.extend(
        (0..3).map(|_| CredentialConfig::new(CredentialKind::Card, uid(), CredentialRole::Unknown)),
    );
    list.push(CredentialConfig::new(
        CredentialKind::Card,
        uid(),
        CredentialRole::Expired,
    ));
    list.extend((0..2).map(|_| {
        CredentialConfig::new(
            CredentialKind::Qr,
            format!("VIS-{}", uid()),
            CredentialRole::Visitor,
        )
    }));
    list.push(CredentialConfig::new(
        CredentialKind::Pin,
        format!("{:06}", seed % 1_000_000),
        CredentialRole::Staff,
    ));
    list
}

/// What a door controller does and sees, counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DoorCounts {
    /// Credential reads generated (and published, unless `unsent` says otherwise).
    pub reads: u64,
    pub unlocks: u64,
    pub denies: u64,
    /// Commands whose decision had already been handled: QoS 1 duplicates, ignored.
    pub duplicate_commands: u64,
    /// Commands that did not decode.
    pub invalid_commands: u64,
    pub opened: u64,
    pub closed: u64,
    pub held_open: u64,
    pub forced: u64,
    /// Reads and state events dropped because the broker was away.
    pub unsent: u64,
}

impl std::ops::AddAssign for DoorCounts {
    fn add_assign(&mut self, other: Self) {
        self.reads += other.reads;
        self.unlocks += other.unlocks;
        self.denies += other.denies;
        self.duplicate_commands += other.duplicate_commands;
        self.invalid_commands += other.invalid_commands;
        self.opened += other.opened;
        self.closed += other.closed;
        self.held_open += other.held_open;
        self.forced += other.forced;
        self.unsent += other.unsent;
    }
}

/// Something for the controller to publish.
#[derive(Clone, Debug, PartialEq)]
pub enum DoorOutput {
    /// For `door/{door}/read`; `role` is the simulator's expectation, not sent.
    Read {
        read: DoorRead,
        role: CredentialRole,
    },
    /// For `door/{door}/state`.
    State(DoorStateEvent),
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandOutcome {
    Applied(DoorCommand),
    /// Its decision was handled before; nothing was done.
    Duplicate(DoorCommand),
}

/// The door leaf. Times are real elapsed times since the simulator started.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Leaf {
    Closed,
    /// Unlocked; the person pushes the door open at `opens_at`.
    Unlocked {
        opens_at: Duration,
        unlock_ends_at: Duration,
        held: bool,
    },
    /// Open, within its unlock time.
    Open {
        unlock_ends_at: Duration,
        held: bool,
    },
    /// Open after its unlock time ran out; `held_open` was sent.
    HeldOpen {
        closes_at: Duration,
    },
    /// Opened without an unlock; `forced` was sent.
    Forced {
        closes_at: Duration,
    },
}

impl Leaf {
    fn deadline(self) -> Option<Duration> {
        match self {
            Leaf::Closed => None,
            Leaf::Unlocked { opens_at, .. } => Some(opens_at),
            Leaf::Open { unlock_ends_at, .. } => Some(unlock_ends_at),
            Leaf::HeldOpen { closes_at } | Leaf::Forced { closes_at } => Some(closes_at),
        }
    }
}

/// One simulated door controller.
///
/// Call order: [`DoorModel::new`]; then, in a loop, drain [`DoorModel::poll_output`], wait
/// until [`DoorModel::poll_timeout`] or a command, and call [`DoorModel::handle_timeout`] or
/// [`DoorModel::handle_command`] with the elapsed time. Calling `handle_timeout` late is
/// fine: the events that fell due meanwhile come out in time order with their own time stamps.
#[derive(Clone, Debug)]
pub struct DoorModel {
    door: String,
    clock: SimClock,
    rng: fastrand::Rng,
    /// Reads per minute relative to [`reads_per_minute`].
    traffic_scale: f64,
    credentials: Vec<CredentialConfig>,
    /// Indices into `credentials` by role, for roles that have any.
    by_role: Vec<(CredentialRole, Vec<usize>)>,
    run_tag: String,
    next_read_at: Duration,
    next_forced_at: Duration,
    leaf: Leaf,
    recent_decisions: VecDeque<String>,
    output: VecDeque<DoorOutput>,
    counts: DoorCounts,
}

impl DoorModel {
    /// A closed door. `credentials` must not be empty for reads to happen; a `traffic_scale`
    /// of 0 makes a door that only reacts to commands and is never forced.
    pub fn new(
        door: &str,
        seed: u64,
        clock: SimClock,
        traffic_scale: f64,
        credentials: Vec<CredentialConfig>,
    ) -> Self {
        let mut by_role: Vec<(CredentialRole, Vec<usize>)> = Vec::new();
        for (index, credential) in credentials.iter().enumerate() {
            match by_role
                .iter_mut()
                .find(|(role, _)| *role == credential.role)
            {
                Some((_, indices)) => indices.push(index),
                None => by_role.push((credential.role, vec![index])),
            }
        }
        by_role.sort_by_key(|(role, _)| *role);
        let traffic_scale = if traffic_scale.is_finite() {
            traffic_scale.max(0.0)
        } else {
            0.0
        };
        let mut model = DoorModel {
            door: door.to_owned(),
            clock,
            rng: fastrand::Rng::with_seed(seed),
            traffic_scale,
            credentials,
            by_role,
            // Read ids must differ between runs, or the edge would take a restarted
            // simulator's reads for duplicates.
            run_tag: format!("{:x}", (clock.wall_start_unix_s() * 1000.0) as u64),
            next_read_at: Duration::MAX,
            next_forced_at: Duration::MAX,
            leaf: Leaf::Closed,
            recent_decisions: VecDeque::new(),
            output: VecDeque::new(),
            counts: DoorCounts::default(),
        };
        model.next_read_at = model.draw_next_read(Duration::ZERO);
        model.next_forced_at = model.draw_next_forced(Duration::ZERO);
        model
    }

    pub fn door(&self) -> &str {
        &self.door
    }

    pub fn counts(&self) -> DoorCounts {
        self.counts
    }

    /// Counts outputs that could not be published.
    pub fn note_unsent(&mut self) {
        self.counts.unsent += 1;
    }

    /// The next output to publish, oldest first.
    pub fn poll_output(&mut self) -> Option<DoorOutput> {
        self.output.pop_front()
    }

    /// When [`DoorModel::handle_timeout`] should next be called; `Duration::MAX` for never.
    pub fn poll_timeout(&self) -> Duration {
        let door = self.leaf.deadline().unwrap_or(Duration::MAX);
        self.next_read_at.min(self.next_forced_at).min(door)
    }

    /// Lets time run to `now`: reads, door movements and forced openings that fell due.
    pub fn handle_timeout(&mut self, now: Duration) {
        loop {
            let door_at = self.leaf.deadline().unwrap_or(Duration::MAX);
            let at = self.next_read_at.min(self.next_forced_at).min(door_at);
            // `Duration::MAX` means never, even when asked to run to the end of time.
            if at > now || at == Duration::MAX {
                return;
            }
            if door_at == at {
                self.move_door(at);
            } else if self.next_read_at == at {
                self.read(at);
                self.next_read_at = self.draw_next_read(at);
            } else {
                if self.leaf == Leaf::Closed {
                    let closes_at = at + Duration::from_secs(self.rng.u64(5..=20));
                    self.leaf = Leaf::Forced { closes_at };
                    self.counts.forced += 1;
                    self.state(DoorState::Forced, at);
                }
                self.next_forced_at = self.draw_next_forced(at);
            }
        }
    }

    /// Handles a payload from `door/{door}/command`. An unlock opens the door shortly after
    /// (someone pushes it) for `duration_ms`, or extends the time of a door already open; a
    /// deny changes nothing. A decision seen before is ignored.
    pub fn handle_command(
        &mut self,
        now: Duration,
        payload: &[u8],
    ) -> Result<CommandOutcome, PayloadError> {
        let command: DoorCommand = decode(payload).inspect_err(|_| {
            self.counts.invalid_commands += 1;
        })?;
        // Time that has passed must be caught up first, so that an unlock arriving after a
        // due close does not extend a door that is already shut.
        self.handle_timeout(now);
        if self
            .recent_decisions
            .iter()
            .any(|d| d == command.decision())
        {
            self.counts.duplicate_commands += 1;
            return Ok(CommandOutcome::Duplicate(command));
        }
        if self.recent_decisions.len() == REMEMBERED_DECISIONS {
            self.recent_decisions.pop_front();
        }
        self.recent_decisions
            .push_back(command.decision().to_owned());
        match &command {
            DoorCommand::Unlock { duration_ms, .. } => {
                self.counts.unlocks += 1;
                self.unlock(now, Duration::from_millis(*duration_ms));
            }
            DoorCommand::Deny { .. } => self.counts.denies += 1,
        }
        Ok(CommandOutcome::Applied(command))
    }

    fn unlock(&mut self, now: Duration, duration: Duration) {
        let unlock_ends_at = now + duration;
        self.leaf = match self.leaf {
            Leaf::Closed => {
                // Someone pushes the door 0.3 to 1.5 s after the click, within the time.
                let push = Duration::from_millis(self.rng.u64(300..=1500)).min(duration / 2);
                Leaf::Unlocked {
                    opens_at: now + push,
                    unlock_ends_at,
                    held: self.rng.f64() < HELD_OPEN_SHARE,
                }
            }
            Leaf::Unlocked {
                opens_at,
                unlock_ends_at: ends,
                held,
            } => Leaf::Unlocked {
                opens_at,
                unlock_ends_at: ends.max(unlock_ends_at),
                held,
            },
            Leaf::Open {
                unlock_ends_at: ends,
                held,
            } => Leaf::Open {
                unlock_ends_at: ends.max(unlock_ends_at),
                held,
            },
            // Already open beyond any unlock: the unlock changes nothing physical.
            open @ (Leaf::HeldOpen { .. } | Leaf::Forced { .. }) => open,
        };
    }

    fn move_door(&mut self, at: Duration) {
        match self.leaf {
            Leaf::Closed => {}
            Leaf::Unlocked {
                unlock_ends_at,
                held,
                ..
            } => {
                self.leaf = Leaf::Open {
                    unlock_ends_at,
                    held,
                };
                self.counts.opened += 1;
                self.state(DoorState::Opened, at);
            }
            Leaf::Open { held: true, .. } => {
                let closes_at = at + Duration::from_secs(self.rng.u64(15..=90));
                self.leaf = Leaf::HeldOpen { closes_at };
                self.counts.held_open += 1;
                self.state(DoorState::HeldOpen, at);
            }
            Leaf::Open { held: false, .. } | Leaf::HeldOpen { .. } | Leaf::Forced { .. } => {
                self.leaf = Leaf::Closed;
                self.counts.closed += 1;
                self.state(DoorState::Closed, at);
            }
        }
    }

    fn state(&mut self, state: DoorState, at: Duration) {
        self.output.push_back(DoorOutput::State(DoorStateEvent {
            state,
            ts: Some(self.clock.timestamp_us(at)),
        }));
    }

    fn read(&mut self, at: Duration) {
        let Some(index) = self.pick_credential() else {
            return;
        };
        let credential = &self.credentials[index];
        let inbound = inbound_share(self.clock.seconds_of_day(at));
        let reader = if self.rng.f64() < inbound {
            Direction::In
        } else {
            Direction::Out
        };
        self.counts.reads += 1;
        let read = DoorRead {
            kind: credential.kind,
            value: credential.value.clone(),
            reader: Some(reader),
            ts: Some(self.clock.timestamp_us(at)),
            id: Some(format!(
                "{}-{}-{}",
                self.door, self.run_tag, self.counts.reads
            )),
        };
        self.output.push_back(DoorOutput::Read {
            read,
            role: credential.role,
        });
    }

    fn pick_credential(&mut self) -> Option<usize> {
        let total: f64 = self.by_role.iter().map(|(role, _)| role.weight()).sum();
        let mut x = self.rng.f64() * total;
        for (role, indices) in &self.by_role {
            x -= role.weight();
            if x < 0.0 {
                return Some(indices[self.rng.usize(..indices.len())]);
            }
        }
        let (_, indices) = self.by_role.last()?;
        Some(indices[self.rng.usize(..indices.len())])
    }

    /// The next read after `after`: a Poisson process whose rate follows the daily curve in
    /// simulated time, drawn by thinning a process at the curve's maximum rate.
    fn draw_next_read(&mut self, after: Duration) -> Duration {
        if self.traffic_scale == 0.0 || self.by_role.is_empty() {
            return Duration::MAX;
        }
        let max_per_s = MAX_READS_PER_MINUTE * self.traffic_scale / 60.0;
        let mut t = self.clock.sim_unix_s(after);
        // Night-time acceptance is about 1 in 120; the bound only guards against a day of
        // rejections that cannot happen while the curve is above zero everywhere.
        for _ in 0..1_000_000 {
            t += self.exponential(max_per_s);
            let rate = reads_per_minute(seconds_of_day(t, self.clock.utc_offset_s()));
            if self.rng.f64() * MAX_READS_PER_MINUTE < rate {
                break;
            }
        }
        self.clock.elapsed_at(t).max(after)
    }

    fn draw_next_forced(&mut self, after: Duration) -> Duration {
        if self.traffic_scale == 0.0 {
            return Duration::MAX;
        }
        let per_s = 1.0 / (MEAN_HOURS_BETWEEN_FORCED * 3600.0);
        let t = self.clock.sim_unix_s(after) + self.exponential(per_s);
        self.clock.elapsed_at(t).max(after)
    }

    /// An exponentially distributed time with the given rate, in seconds.
    fn exponential(&mut self, rate_per_s: f64) -> f64 {
        -(1.0 - self.rng.f64()).ln() / rate_per_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::encode;

    const HOUR: f64 = 3600.0;

    fn clock_at(hour: f64, compression: f64) -> SimClock {
        SimClock::new(1_795_860_000.0, 8 * 3600, Some(hour * HOUR), compression)
    }

    fn quiet_door() -> DoorModel {
        DoorModel::new("d1", 1, clock_at(3.0, 1.0), 0.0, demo_credentials(1, 10))
    }

    fn drain(model: &mut DoorModel) -> Vec<DoorOutput> {
        std::iter::from_fn(|| model.poll_output()).collect()
    }

    fn states(outputs: &[DoorOutput]) -> Vec<DoorState> {
        outputs
            .iter()
            .filter_map(|o| match o {
                DoorOutput::State(event) => Some(event.state),
                DoorOutput::Read { .. } => None,
            })
            .collect()
    }

    #[test]
    fn traffic_is_higher_at_half_past_eight_than_at_three_in_the_morning() {
        assert!(reads_per_minute(8.5 * HOUR) > 20.0 * reads_per_minute(3.0 * HOUR));
        // Lunch is busier than mid-afternoon, the evening out-flow busier than lunch.
        assert!(reads_per_minute(12.0 * HOUR) > reads_per_minute(15.5 * HOUR));
        assert!(reads_per_minute(18.0 * HOUR) > reads_per_minute(12.0 * HOUR));
        assert!(reads_per_minute(23.5 * HOUR) < reads_per_minute(15.5 * HOUR));
    }

    #[test]
    fn the_traffic_curve_is_positive_bounded_and_wraps_around_midnight() {
        for minute in 0..1440 {
            let s = f64::from(minute) * 60.0;
            let rate = reads_per_minute(s);
            assert!(
                rate > 0.0 && rate <= MAX_READS_PER_MINUTE,
                "{minute}: {rate}"
            );
            assert_eq!(rate, reads_per_minute(s + SECONDS_PER_DAY));
            let share = inbound_share(s);
            assert!((0.0..=1.0).contains(&share), "{minute}: {share}");
        }
        assert!((reads_per_minute(0.0) - reads_per_minute(SECONDS_PER_DAY - 1.0)).abs() < 0.01);
    }

    #[test]
    fn people_come_in_in_the_morning_and_go_out_in_the_evening() {
        assert!(inbound_share(8.5 * HOUR) > 0.85);
        assert!(inbound_share(18.0 * HOUR) < 0.25);
        assert!(inbound_share(11.9 * HOUR) < 0.4);
        assert!(inbound_share(13.0 * HOUR) > 0.6);
    }

    #[test]
    fn a_simulated_day_has_its_peak_in_the_morning_and_few_reads_at_night() {
        // 1440 times faster: one real minute is a day.
        let mut door = DoorModel::new(
            "d1",
            42,
            clock_at(0.0, 1440.0),
            1.0,
            demo_credentials(1, 50),
        );
        let mut per_hour = [0u32; 24];
        door.handle_timeout(Duration::from_secs(60));
        for output in drain(&mut door) {
            if let DoorOutput::Read { read, .. } = output {
                // Time stamps are wall time: map them back to simulated time.
                let elapsed = (read.ts.unwrap() as f64 / 1e6 - 1_795_860_000.0).max(0.0);
                let hour = door.clock.seconds_of_day(Duration::from_secs_f64(elapsed)) / HOUR;
                per_hour[hour as usize] += 1;
            }
        }
        let total: u32 = per_hour.iter().sum();
        // The curve integrates to about 3,600 reads a day.
        assert!((3000..4600).contains(&total), "{total}: {per_hour:?}");
        assert!(per_hour[8] > 400, "{per_hour:?}");
        assert!(per_hour[3] < 20, "{per_hour:?}");
        assert!(per_hour[18] > 3 * per_hour[15], "{per_hour:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_reads() {
        let run = |seed| {
            let mut door = DoorModel::new(
                "d1",
                seed,
                clock_at(8.0, 60.0),
                1.0,
                demo_credentials(1, 20),
            );
            door.handle_timeout(Duration::from_secs(30));
            drain(&mut door)
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn reads_are_contract_payloads_from_the_configured_credentials_in_every_role() {
        let credentials = demo_credentials(3, 30);
        let mut door = DoorModel::new("gate-1", 3, clock_at(8.0, 60.0), 1.0, credentials.clone());
        door.handle_timeout(Duration::from_secs(600));
        let mut roles = std::collections::BTreeMap::new();
        let mut ids = std::collections::HashSet::new();
        for output in drain(&mut door) {
            let DoorOutput::Read { read, role } = output else {
                continue;
            };
            let json: serde_json::Value = serde_json::from_str(&encode(&read)).unwrap();
            assert!(
                ["card", "qr", "pin"].contains(&json["type"].as_str().unwrap()),
                "{json}"
            );
            assert!(
                ["in", "out"].contains(&json["reader"].as_str().unwrap()),
                "{json}"
            );
            assert!(
                json["ts"].as_i64().unwrap() >= 1_795_860_000_000_000,
                "{json}"
            );
            let value = json["value"].as_str().unwrap();
            let credential = credentials.iter().find(|c| c.value == value).unwrap();
            assert_eq!(credential.role, role);
            assert!(
                ids.insert(json["id"].as_str().unwrap().to_owned()),
                "{json}"
            );
            *roles.entry(role).or_insert(0u32) += 1;
        }
        let staff = roles[&CredentialRole::Staff];
        assert!(staff > 1000, "{roles:?}");
        for role in [
            CredentialRole::Visitor,
            CredentialRole::Unknown,
            CredentialRole::Expired,
        ] {
            assert!(roles[&role] > 0 && roles[&role] < staff / 5, "{roles:?}");
        }
    }

    #[test]
    fn an_unlock_opens_the_door_and_it_closes_when_the_time_is_over() {
        let mut door = quiet_door();
        let t0 = Duration::from_secs(10);
        let outcome = door
            .handle_command(
                t0,
                br#"{"command":"unlock","duration_ms":5000,"decision":"ev-1"}"#,
            )
            .unwrap();
        assert!(matches!(
            outcome,
            CommandOutcome::Applied(DoorCommand::Unlock {
                duration_ms: 5000,
                ..
            })
        ));
        assert!(door.poll_timeout() <= t0 + Duration::from_millis(1500));
        door.handle_timeout(t0 + Duration::from_secs(2));
        assert_eq!(states(&drain(&mut door)), [DoorState::Opened]);
        assert_eq!(door.poll_timeout(), t0 + Duration::from_secs(5));
        door.handle_timeout(t0 + Duration::from_secs(5));
        let out = drain(&mut door);
        // Unless this unlock was one of the few held open, which seed 1's is not.
        assert_eq!(states(&out), [DoorState::Closed]);
        let DoorOutput::State(closed) = &out[0] else {
            unreachable!()
        };
        assert_eq!(
            closed.ts,
            Some(door.clock.timestamp_us(t0 + Duration::from_secs(5)))
        );
        let counts = door.counts();
        assert_eq!((counts.unlocks, counts.opened, counts.closed), (1, 1, 1));
    }

    #[test]
    fn a_deny_moves_nothing_and_a_repeated_decision_is_counted_once() {
        let mut door = quiet_door();
        let deny = br#"{"command":"deny","reason":"expired","decision":"ev-2"}"#;
        assert!(matches!(
            door.handle_command(Duration::ZERO, deny),
            Ok(CommandOutcome::Applied(_))
        ));
        assert!(matches!(
            door.handle_command(Duration::ZERO, deny),
            Ok(CommandOutcome::Duplicate(_))
        ));
        door.handle_timeout(Duration::from_secs(60));
        assert!(drain(&mut door).is_empty());
        assert_eq!(door.poll_timeout(), Duration::MAX);
        let counts = door.counts();
        assert_eq!(
            (counts.denies, counts.duplicate_commands, counts.unlocks),
            (1, 1, 0)
        );
    }

    #[test]
    fn a_second_unlock_while_open_extends_the_time_instead_of_reopening() {
        let mut door = quiet_door();
        let unlock =
            |d: &str| format!(r#"{{"command":"unlock","duration_ms":4000,"decision":"{d}"}}"#);
        door.handle_command(Duration::ZERO, unlock("a").as_bytes())
            .unwrap();
        door.handle_timeout(Duration::from_secs(3));
        door.handle_command(Duration::from_secs(3), unlock("b").as_bytes())
            .unwrap();
        door.handle_timeout(Duration::from_secs(6));
        assert_eq!(states(&drain(&mut door)), [DoorState::Opened]);
        door.handle_timeout(Duration::from_secs(7));
        assert_eq!(states(&drain(&mut door)), [DoorState::Closed]);
    }

    #[test]
    fn some_unlocks_end_held_open_and_the_door_closes_later() {
        let mut door = quiet_door();
        let mut now = Duration::ZERO;
        let mut all = Vec::new();
        for i in 0..400 {
            let unlock =
                format!(r#"{{"command":"unlock","duration_ms":3000,"decision":"ev-{i}"}}"#);
            door.handle_command(now, unlock.as_bytes()).unwrap();
            now += Duration::from_secs(200);
            door.handle_timeout(now);
            all.extend(states(&drain(&mut door)));
        }
        let held = all.iter().filter(|s| **s == DoorState::HeldOpen).count();
        assert!((2..40).contains(&held), "{held} of 400 held open");
        for window in all.windows(2) {
            if window[0] == DoorState::HeldOpen {
                assert_eq!(window[1], DoorState::Closed);
            }
        }
        assert_eq!(all.iter().filter(|s| **s == DoorState::Opened).count(), 400);
        assert_eq!(all.iter().filter(|s| **s == DoorState::Closed).count(), 400);
    }

    #[test]
    fn a_busy_door_is_forced_now_and_then_and_closes_again() {
        // The door stays forced open for 5 to 20 real seconds, so the clock may not run so fast
        // that the next forcing comes while it is still open: 360 times faster, 6,000 real
        // seconds are 600 simulated hours.
        let mut door = DoorModel::new("d1", 9, clock_at(0.0, 360.0), 0.05, demo_credentials(1, 5));
        door.handle_timeout(Duration::from_secs(6000));
        let all = states(&drain(&mut door));
        let forced = all.iter().filter(|s| **s == DoorState::Forced).count();
        assert!((40..120).contains(&forced), "{forced} forced in 600 h");
        for window in all.windows(2) {
            if window[0] == DoorState::Forced {
                assert_eq!(window[1], DoorState::Closed);
            }
        }
    }

    #[test]
    fn a_door_with_nothing_to_do_returns_even_when_run_to_the_end_of_time() {
        let mut door = quiet_door();
        door.handle_timeout(Duration::MAX);
        assert!(door.poll_output().is_none());
    }

    #[test]
    fn a_command_that_does_not_decode_is_counted_and_changes_nothing() {
        let mut door = quiet_door();
        for bad in [&b"unlock"[..], b"{}", br#"{"command":"unlock"}"#, &[0xff]] {
            assert!(door.handle_command(Duration::ZERO, bad).is_err());
        }
        assert_eq!(door.counts().invalid_commands, 4);
        assert_eq!(door.poll_timeout(), Duration::MAX);
    }

    #[test]
    fn time_compression_shortens_the_real_gaps_between_reads() {
        let mean_gap = |compression| {
            let mut door = DoorModel::new(
                "d1",
                4,
                clock_at(8.5, compression),
                1.0,
                demo_credentials(1, 5),
            );
            let first = door.poll_timeout();
            door.handle_timeout(first);
            drain(&mut door);
            let mut last = first;
            for _ in 0..200 {
                last = door.poll_timeout();
                door.handle_timeout(last);
            }
            (last - first).as_secs_f64() / 200.0
        };
        // About 11.5 reads a minute at 08:30: five seconds apart, or a twelfth of that.
        let normal = mean_gap(1.0);
        assert!((3.5..7.0).contains(&normal), "{normal}");
        let fast = mean_gap(12.0);
        assert!((normal / fast - 12.0).abs() < 3.0, "{normal} vs {fast}");
    }

    #[test]
    fn demo_credentials_hold_every_role_and_distinct_values() {
        let list = demo_credentials(8, 25);
        assert_eq!(list.len(), 25 + 1 + 3 + 1 + 2);
        let values: std::collections::HashSet<_> = list.iter().map(|c| &c.value).collect();
        assert_eq!(values.len(), list.len());
        assert_eq!(list, demo_credentials(8, 25));
        for role in [
            CredentialRole::Staff,
            CredentialRole::Visitor,
            CredentialRole::Unknown,
            CredentialRole::Expired,
        ] {
            assert!(list.iter().any(|c| c.role == role));
        }
        assert!(
            list.iter()
                .all(|c| c.kind != CredentialKind::Qr || c.role == CredentialRole::Visitor)
        );
    }
}

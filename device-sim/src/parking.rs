//! The model of a simulated car park: cars arriving at and leaving its lanes on a working
//! day's pattern, what the plate cameras read, and what the drivers do when the barrier opens
//! or holds and when the exit display shows a fee (they pay at the lane's terminal).
//!
//! Who comes: monthly pass holders (in around 08:15, out around 18:00, most days), visitors
//! ([`visitor_arrivals_per_hour`]) who stay 15 minutes to 4 hours, and now and then a blocked
//! plate. Some reads come out with a confidence below [`LOW_CONFIDENCE`]. The lot starts
//! empty.
//!
//! Sans-IO, like [`crate::door`]: [`LotModel`] takes the real time elapsed since the
//! simulator started, hands back what to publish ([`LotModel::poll_output`]) and when to wake
//! it ([`LotModel::poll_timeout`]). Arrivals and stays follow the simulated clock; lane
//! actions (the next car moving up, paying, giving up on a barrier) take real time. It does
//! not decide who may enter or what a stay costs: the edge does, and the model follows its
//! barrier commands and displays.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use crate::clock::{SECONDS_PER_DAY, SimClock, seconds_of_day};
use crate::contract::{
    BarrierCommand, Direction, LOW_CONFIDENCE, LaneDisplay, LanePayment, PayloadError,
    PaymentMethod, PlateRead, decode,
};
use crate::meter::smoothstep;
use crate::plate::PlateGenerator;

/// An upper bound of [`visitor_arrivals_per_hour`] over the day.
pub const MAX_VISITOR_ARRIVALS_PER_HOUR: f64 = 12.5;

/// The shortest and longest visitor stays, in simulated time.
const VISITOR_STAY_S: (f64, f64) = (15.0 * 60.0, 4.0 * 3600.0);
/// Decisions remembered per lane to recognise a command delivered twice.
const REMEMBERED_DECISIONS: usize = 64;
/// How long a driver whose entry is held (and whose read was clear) waits before reversing
/// out: they know they will not get in.
const TURN_AWAY_AFTER_HOLD: Duration = Duration::from_secs(10);

fn gauss(hour: f64, centre: f64, sigma: f64) -> f64 {
    (-0.5 * ((hour - centre) / sigma).powi(2)).exp()
}

/// Visitor cars arriving per hour at a local time of day, for a park of a few buildings
/// (about 90 a day): hardly any at night, a ramp from 08:00, busy mid-morning and
/// mid-afternoon with a dip at lunch, tailing off from 17:00. Times outside a day wrap.
pub fn visitor_arrivals_per_hour(seconds_of_day: f64) -> f64 {
    let hour = seconds_of_day.rem_euclid(SECONDS_PER_DAY) / 3600.0;
    let daytime = smoothstep(8.0, 9.5, hour) * (1.0 - smoothstep(17.0, 19.5, hour));
    let rate = 0.3 + 7.0 * daytime + 4.0 * gauss(hour, 10.5, 1.0) + 3.0 * gauss(hour, 14.5, 1.2)
        - 2.5 * daytime * gauss(hour, 12.3, 0.5);
    rate.max(0.1)
}

/// A lane of the car park: its camera, barrier, display and, at exits, pay terminal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneConfig {
    /// The lane's id in topics: `[A-Za-z0-9_.-]+`.
    pub id: String,
    pub direction: Direction,
}

impl LaneConfig {
    pub fn new(id: &str, direction: Direction) -> Self {
        LaneConfig {
            id: id.to_owned(),
            direction,
        }
    }
}

/// What a configured plate is, as the simulator uses it (the edge has its own lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlateRole {
    /// Comes most mornings and leaves in the evening.
    MonthlyPass,
    /// Tries to get in now and then (about every other day).
    Blocked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlateConfig {
    pub plate: String,
    pub role: PlateRole,
}

impl PlateConfig {
    pub fn new(plate: &str, role: PlateRole) -> Self {
        PlateConfig {
            plate: plate.to_owned(),
            role,
        }
    }
}

/// Plates for a demo, the same for the same seed: `passes` monthly pass holders, then
/// `blocked` blocked plates, all distinct.
pub fn demo_plates(seed: u64, passes: usize, blocked: usize) -> Vec<PlateConfig> {
    PlateGenerator::new(seed)
        .distinct(passes + blocked)
        .into_iter()
        .enumerate()
        .map(|(i, plate)| PlateConfig {
            plate,
            role: if i < passes {
                PlateRole::MonthlyPass
            } else {
                PlateRole::Blocked
            },
        })
        .collect()
}

/// The car park's lanes and plates and how its drivers behave.
#[derive(Clone, Debug, PartialEq)]
pub struct LotConfig {
    pub lanes: Vec<LaneConfig>,
    pub plates: Vec<PlateConfig>,
    /// Visitor arrivals relative to [`visitor_arrivals_per_hour`]; 0 for none.
    pub visitor_scale: f64,
    /// The share of plate reads whose confidence is below [`LOW_CONFIDENCE`].
    pub low_confidence_share: f64,
    /// How long (real time) a car at a lane waits for its barrier to open: at an entry the
    /// driver then leaves, at an exit an attendant lets the car out. It leaves time for the
    /// edge's manual confirmation of a low-confidence read.
    pub barrier_timeout: Duration,
    /// How long (real time) a driver takes to pay once the exit display shows a fee, drawn
    /// uniformly between the two.
    pub payment_delay: (Duration, Duration),
}

impl LotConfig {
    /// Visitors at scale 1, 5 % low-confidence reads, a 2-minute barrier timeout, paying in
    /// 3 to 12 seconds.
    pub fn new(lanes: Vec<LaneConfig>, plates: Vec<PlateConfig>) -> Self {
        LotConfig {
            lanes,
            plates,
            visitor_scale: 1.0,
            low_confidence_share: 0.05,
            barrier_timeout: Duration::from_secs(120),
            payment_delay: (Duration::from_secs(3), Duration::from_secs(12)),
        }
    }
}

/// Who drives a car, as the simulator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CarKind {
    MonthlyPass,
    Visitor,
    Blocked,
}

/// What happened in the car park, counted since the simulator started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LotCounts {
    /// Cars that came to an entry lane.
    pub arrivals: u64,
    pub plate_reads: u64,
    pub low_confidence_reads: u64,
    /// Cars that entered (an `open` at an entry lane).
    pub entries: u64,
    /// Cars that left through an opened exit barrier.
    pub exits: u64,
    /// Cars that left an entry lane without getting in.
    pub turned_away: u64,
    /// Cars that an attendant let out because the exit barrier never opened.
    pub exit_timeouts: u64,
    pub holds: u64,
    pub displays: u64,
    pub payments: u64,
    pub paid_fen: u64,
    /// Commands whose decision had already been handled at that lane, ignored.
    pub duplicate_commands: u64,
    /// Commands and displays that did not decode.
    pub invalid_commands: u64,
    /// `open` commands for a lane with no car at it.
    pub unexpected_opens: u64,
    /// Plate reads and payments dropped because the broker was away.
    pub unsent: u64,
    /// Cars parked now.
    pub occupancy: u64,
}

/// Something for a lane to publish; `lane` indexes [`LotConfig::lanes`].
#[derive(Clone, Debug, PartialEq)]
pub enum LotOutput {
    /// For `lpr/{lane}/plate`.
    Plate {
        lane: usize,
        read: PlateRead,
        kind: CarKind,
    },
    /// For `lane/{lane}/payment`.
    Payment { lane: usize, payment: LanePayment },
}

/// What a barrier command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BarrierOutcome {
    /// Applied to the car at the lane, if there was one.
    Applied {
        command: BarrierCommand,
        plate: Option<String>,
    },
    /// Its decision was handled before at this lane; nothing was done.
    Duplicate(BarrierCommand),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Arrive {
        plate: String,
        kind: CarKind,
        /// The simulated Unix time a pass holder plans to leave.
        leave_at_s: Option<u64>,
    },
    Leave {
        plate: String,
    },
}

#[derive(Clone, Debug)]
struct Car {
    kind: CarKind,
    session: Option<String>,
    /// How long a visitor stays, in simulated seconds.
    stay_s: f64,
    leave_at_s: Option<u64>,
}

#[derive(Clone, Debug)]
struct AtLane {
    plate: String,
    low_confidence: bool,
    deadline: Duration,
    /// The fee shown, with its currency.
    fee: Option<(u64, String)>,
    pay_at: Option<Duration>,
}

#[derive(Clone, Debug)]
struct Lane {
    direction: Direction,
    queue: VecDeque<String>,
    current: Option<AtLane>,
    /// When the next car in the queue moves up to the camera.
    free_at: Duration,
    recent_decisions: VecDeque<String>,
}

impl Lane {
    fn deadline(&self) -> Duration {
        match &self.current {
            Some(car) => car.pay_at.unwrap_or(Duration::MAX).min(car.deadline),
            None if !self.queue.is_empty() => self.free_at,
            None => Duration::MAX,
        }
    }
}

/// A simulated car park with its lanes.
///
/// Call order: [`LotModel::new`]; then, in a loop, drain [`LotModel::poll_output`], wait until
/// [`LotModel::poll_timeout`] or a message from the edge, and call
/// [`LotModel::handle_timeout`], [`LotModel::handle_barrier_command`] or
/// [`LotModel::handle_display`] with the elapsed time.
#[derive(Clone, Debug)]
pub struct LotModel {
    clock: SimClock,
    rng: fastrand::Rng,
    visitor_plates: PlateGenerator,
    config: LotConfig,
    run_tag: String,
    lanes: Vec<Lane>,
    entry_lanes: Vec<usize>,
    exit_lanes: Vec<usize>,
    configured: HashSet<String>,
    /// Cars queued, at a lane or parked, by plate.
    cars: HashMap<String, Car>,
    schedule: BinaryHeap<Reverse<(Duration, u64, Due)>>,
    scheduled: u64,
    next_plan_at: Duration,
    next_visitor_at: Duration,
    output: VecDeque<LotOutput>,
    counts: LotCounts,
}

impl LotModel {
    pub fn new(seed: u64, clock: SimClock, config: LotConfig) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let lanes: Vec<Lane> = config
            .lanes
            .iter()
            .map(|lane| Lane {
                direction: lane.direction,
                queue: VecDeque::new(),
                current: None,
                free_at: Duration::ZERO,
                recent_decisions: VecDeque::new(),
            })
            .collect();
        let lanes_going = |direction| {
            (0..lanes.len())
                .filter(|&i| lanes[i].direction == direction)
                .collect::<Vec<_>>()
        };
        let (entry_lanes, exit_lanes) = (lanes_going(Direction::In), lanes_going(Direction::Out));
        let mut model = LotModel {
            clock,
            visitor_plates: PlateGenerator::new(rng.u64(..)),
            rng,
            run_tag: format!("{:x}", (clock.wall_start_unix_s() * 1000.0) as u64),
            entry_lanes,
            exit_lanes,
            lanes,
            configured: config.plates.iter().map(|p| p.plate.clone()).collect(),
            config,
            cars: HashMap::new(),
            schedule: BinaryHeap::new(),
            scheduled: 0,
            next_plan_at: Duration::MAX,
            next_visitor_at: Duration::MAX,
            output: VecDeque::new(),
            counts: LotCounts::default(),
        };
        model.plan_day(Duration::ZERO);
        model.next_visitor_at = model.draw_next_visitor(Duration::ZERO);
        model
    }

    pub fn lane_id(&self, lane: usize) -> &str {
        &self.config.lanes[lane].id
    }

    pub fn lane_direction(&self, lane: usize) -> Direction {
        self.config.lanes[lane].direction
    }

    pub fn counts(&self) -> LotCounts {
        self.counts
    }

    /// Counts outputs that could not be published.
    pub fn note_unsent(&mut self) {
        self.counts.unsent += 1;
    }

    pub fn poll_output(&mut self) -> Option<LotOutput> {
        self.output.pop_front()
    }

    /// When [`LotModel::handle_timeout`] should next be called; `Duration::MAX` for never.
    pub fn poll_timeout(&self) -> Duration {
        self.lanes
            .iter()
            .map(Lane::deadline)
            .chain([self.next_plan_at, self.next_visitor_at])
            .chain(self.schedule.peek().map(|Reverse((at, _, _))| *at))
            .min()
            .unwrap_or(Duration::MAX)
    }

    /// Lets time run to `now`: arrivals, departures, cars moving up, payments and timeouts
    /// that fell due, in time order.
    pub fn handle_timeout(&mut self, now: Duration) {
        loop {
            let at = self.poll_timeout();
            // `Duration::MAX` means never, even when asked to run to the end of time.
            if at > now || at == Duration::MAX {
                return;
            }
            if let Some(lane) = (0..self.lanes.len()).find(|&i| self.lanes[i].deadline() == at) {
                self.lane_due(lane, at);
            } else if self.next_plan_at == at {
                self.plan_day(at);
            } else if self.next_visitor_at == at {
                self.visitor_arrives(at);
                self.next_visitor_at = self.draw_next_visitor(at);
            } else if let Some(Reverse((_, _, due))) = self.schedule.pop() {
                match due {
                    Due::Arrive {
                        plate,
                        kind,
                        leave_at_s,
                    } => self.arrive(at, plate, kind, 0.0, leave_at_s),
                    Due::Leave { plate } => self.leave(at, &plate),
                }
            }
        }
    }

    /// Handles a payload from `barrier/{lane}/command`. `open` lets the car at the lane in
    /// (remembering its session) or out; `hold` keeps it waiting, and a driver whose clear
    /// read is held at an entry soon gives up. A decision seen before at the lane is ignored.
    pub fn handle_barrier_command(
        &mut self,
        now: Duration,
        lane: usize,
        payload: &[u8],
    ) -> Result<BarrierOutcome, PayloadError> {
        let command: BarrierCommand = decode(payload).inspect_err(|_| {
            self.counts.invalid_commands += 1;
        })?;
        self.handle_timeout(now);
        let recent = &mut self.lanes[lane].recent_decisions;
        if recent.iter().any(|d| d == command.decision()) {
            self.counts.duplicate_commands += 1;
            return Ok(BarrierOutcome::Duplicate(command));
        }
        if recent.len() == REMEMBERED_DECISIONS {
            recent.pop_front();
        }
        recent.push_back(command.decision().to_owned());
        let plate = self.lanes[lane].current.as_ref().map(|c| c.plate.clone());
        match &command {
            BarrierCommand::Open { session, .. } => match &plate {
                Some(plate) => self.pass_barrier(now, lane, plate, session),
                None => self.counts.unexpected_opens += 1,
            },
            BarrierCommand::Hold { .. } => {
                self.counts.holds += 1;
                let entry = self.lanes[lane].direction == Direction::In;
                if let Some(car) = &mut self.lanes[lane].current
                    && entry
                    && !car.low_confidence
                {
                    car.deadline = car.deadline.min(now + TURN_AWAY_AFTER_HOLD);
                }
            }
        }
        Ok(BarrierOutcome::Applied { command, plate })
    }

    /// Handles a payload from `lane/{lane}/display`. A fee shown at an exit lane with a car
    /// whose session is known makes the driver pay it after the payment delay.
    pub fn handle_display(
        &mut self,
        now: Duration,
        lane: usize,
        payload: &[u8],
    ) -> Result<LaneDisplay, PayloadError> {
        let display: LaneDisplay = decode(payload).inspect_err(|_| {
            self.counts.invalid_commands += 1;
        })?;
        self.handle_timeout(now);
        self.counts.displays += 1;
        let exit = self.lanes[lane].direction == Direction::Out;
        let delay = self.draw_payment_delay();
        let timeout = self.config.barrier_timeout;
        if let (true, Some(fee), Some(car)) = (exit, display.fee_fen, &mut self.lanes[lane].current)
            && fee > 0
            && car.pay_at.is_none()
            && self
                .cars
                .get(&car.plate)
                .is_some_and(|c| c.session.is_some())
        {
            let currency = display.currency.clone().unwrap_or_else(|| "CNY".into());
            car.fee = Some((fee, currency));
            car.pay_at = Some(now + delay);
            car.deadline = car.deadline.max(now + delay + timeout);
        }
        Ok(display)
    }

    fn plan_day(&mut self, now: Duration) {
        let day = self.clock.day(now);
        let day_start_s = day as f64 * SECONDS_PER_DAY - f64::from(self.clock.utc_offset_s());
        self.next_plan_at = self
            .clock
            .elapsed_at(day_start_s + SECONDS_PER_DAY)
            .max(now);
        let now_s = self.clock.sim_unix_s(now);
        for index in 0..self.config.plates.len() {
            let PlateConfig { plate, role } = self.config.plates[index].clone();
            if self.cars.contains_key(&plate) {
                continue;
            }
            let (kind, arrive_s, leave_at_s) = match role {
                PlateRole::MonthlyPass => {
                    if self.rng.f64() >= 0.92 {
                        continue;
                    }
                    let arrive = self.normal(8.25, 0.5).clamp(6.5, 10.5) * 3600.0;
                    let leave = self.normal(18.0, 0.75).clamp(16.0, 21.5) * 3600.0;
                    (
                        CarKind::MonthlyPass,
                        arrive,
                        Some((day_start_s + leave) as u64),
                    )
                }
                PlateRole::Blocked => {
                    if self.rng.bool() {
                        continue;
                    }
                    let arrive = (9.0 + 11.0 * self.rng.f64()) * 3600.0;
                    (CarKind::Blocked, arrive, None)
                }
            };
            let arrive_s = day_start_s + arrive_s;
            if arrive_s >= now_s {
                let at = self.clock.elapsed_at(arrive_s);
                self.push_due(
                    at,
                    Due::Arrive {
                        plate,
                        kind,
                        leave_at_s,
                    },
                );
            }
        }
    }

    fn push_due(&mut self, at: Duration, due: Due) {
        self.scheduled += 1;
        self.schedule.push(Reverse((at, self.scheduled, due)));
    }

    fn visitor_arrives(&mut self, at: Duration) {
        let plate = loop {
            let plate = self.visitor_plates.next_plate();
            if !self.configured.contains(&plate) && !self.cars.contains_key(&plate) {
                break plate;
            }
        };
        let (short, long) = VISITOR_STAY_S;
        // Log-uniform: many short visits, a few long ones.
        let stay_s = short * (long / short).powf(self.rng.f64());
        self.arrive(at, plate, CarKind::Visitor, stay_s, None);
    }

    fn arrive(
        &mut self,
        at: Duration,
        plate: String,
        kind: CarKind,
        stay_s: f64,
        leave_at_s: Option<u64>,
    ) {
        if self.entry_lanes.is_empty() || self.cars.contains_key(&plate) {
            return;
        }
        self.counts.arrivals += 1;
        self.cars.insert(
            plate.clone(),
            Car {
                kind,
                session: None,
                stay_s,
                leave_at_s,
            },
        );
        let lane = self.entry_lanes[self.rng.usize(..self.entry_lanes.len())];
        self.queue(at, lane, plate);
    }

    fn leave(&mut self, at: Duration, plate: &str) {
        if self.exit_lanes.is_empty() || !self.cars.contains_key(plate) {
            return;
        }
        self.counts.occupancy = self.counts.occupancy.saturating_sub(1);
        let lane = self.exit_lanes[self.rng.usize(..self.exit_lanes.len())];
        self.queue(at, lane, plate.to_owned());
    }

    fn queue(&mut self, at: Duration, lane: usize, plate: String) {
        let lane = &mut self.lanes[lane];
        if lane.current.is_none() && lane.queue.is_empty() {
            lane.free_at = lane.free_at.max(at);
        }
        lane.queue.push_back(plate);
    }

    fn lane_due(&mut self, lane: usize, at: Duration) {
        let Some(car) = &self.lanes[lane].current else {
            // The next car moves up to the camera.
            if let Some(plate) = self.lanes[lane].queue.pop_front() {
                self.present(at, lane, plate);
            }
            return;
        };
        if car.pay_at.is_some_and(|pay_at| pay_at <= car.deadline) {
            self.pay(at, lane);
            return;
        }
        let plate = car.plate.clone();
        self.cars.remove(&plate);
        if self.lanes[lane].direction == Direction::In {
            self.counts.turned_away += 1;
        } else {
            self.counts.exit_timeouts += 1;
        }
        self.free_lane(at, lane);
    }

    fn present(&mut self, at: Duration, lane: usize, plate: String) {
        let Some(kind) = self.cars.get(&plate).map(|c| c.kind) else {
            return;
        };
        let low_confidence = self.rng.f64() < self.config.low_confidence_share;
        let confidence = if low_confidence {
            self.counts.low_confidence_reads += 1;
            // Whole hundredths from 0.30 to 0.59: below the threshold even when rounded.
            f64::from(self.rng.u32(30..60)) / 100.0
        } else {
            f64::from(self.rng.u32(80..100)) / 100.0
        };
        debug_assert!(!low_confidence || confidence < LOW_CONFIDENCE);
        self.counts.plate_reads += 1;
        let lane_id = &self.config.lanes[lane].id;
        let id = format!("{lane_id}-{}-{}", self.run_tag, self.counts.plate_reads);
        let read = PlateRead {
            plate: plate.clone(),
            confidence,
            direction: self.lanes[lane].direction,
            image: Some(format!("snap/{lane_id}/{id}.jpg")),
            ts: Some(self.clock.timestamp_us(at)),
            id: Some(id),
        };
        self.lanes[lane].current = Some(AtLane {
            plate,
            low_confidence,
            deadline: at + self.config.barrier_timeout,
            fee: None,
            pay_at: None,
        });
        self.output.push_back(LotOutput::Plate { lane, read, kind });
    }

    fn pay(&mut self, at: Duration, lane: usize) {
        let method = match self.rng.u32(0..100) {
            0..70 => PaymentMethod::Qr,
            70..90 => PaymentMethod::Card,
            _ => PaymentMethod::Cash,
        };
        let Some(car) = &mut self.lanes[lane].current else {
            return;
        };
        car.pay_at = None;
        car.deadline = car.deadline.max(at + self.config.barrier_timeout);
        let (Some((amount_fen, currency)), Some(session)) = (
            car.fee.clone(),
            self.cars.get(&car.plate).and_then(|c| c.session.clone()),
        ) else {
            return;
        };
        self.counts.payments += 1;
        self.counts.paid_fen += amount_fen;
        let id = format!(
            "pay-{}-{}-{}",
            self.config.lanes[lane].id, self.run_tag, self.counts.payments
        );
        let payment = LanePayment {
            session,
            amount_fen,
            currency,
            method,
            ts: Some(self.clock.timestamp_us(at)),
            id,
        };
        self.output.push_back(LotOutput::Payment { lane, payment });
    }

    fn pass_barrier(&mut self, now: Duration, lane: usize, plate: &str, session: &str) {
        if self.lanes[lane].direction == Direction::Out {
            self.cars.remove(plate);
            self.counts.exits += 1;
        } else if let Some(car) = self.cars.get_mut(plate) {
            car.session = Some(session.to_owned());
            let now_s = self.clock.sim_unix_s(now);
            let leave_s = match (car.kind, car.leave_at_s) {
                // A pass holder who came in late, past their planned time, stays 1 to 3 hours.
                (CarKind::MonthlyPass, Some(planned)) if planned as f64 > now_s + 1800.0 => {
                    planned as f64
                }
                (CarKind::MonthlyPass, _) => now_s + 3600.0 * (1.0 + 2.0 * self.rng.f64()),
                // Visitors stay as planned; a blocked plate let in stays like a visitor.
                (CarKind::Visitor, _) => now_s + car.stay_s,
                (CarKind::Blocked, _) => now_s + 1800.0,
            };
            let at = self.clock.elapsed_at(leave_s).max(now);
            self.counts.entries += 1;
            self.counts.occupancy += 1;
            self.push_due(
                at,
                Due::Leave {
                    plate: plate.to_owned(),
                },
            );
        }
        self.free_lane(now, lane);
    }

    fn free_lane(&mut self, now: Duration, lane: usize) {
        // The next car takes 2 to 4 s to move up.
        let gap = Duration::from_millis(self.rng.u64(2000..=4000));
        let lane = &mut self.lanes[lane];
        lane.current = None;
        lane.free_at = now + gap;
    }

    fn draw_next_visitor(&mut self, after: Duration) -> Duration {
        let scale = self.config.visitor_scale;
        if !(scale.is_finite() && scale > 0.0) || self.entry_lanes.is_empty() {
            return Duration::MAX;
        }
        let max_per_s = MAX_VISITOR_ARRIVALS_PER_HOUR * scale / 3600.0;
        let mut t = self.clock.sim_unix_s(after);
        for _ in 0..1_000_000 {
            t += -(1.0 - self.rng.f64()).ln() / max_per_s;
            let rate = visitor_arrivals_per_hour(seconds_of_day(t, self.clock.utc_offset_s()));
            if self.rng.f64() * MAX_VISITOR_ARRIVALS_PER_HOUR < rate {
                break;
            }
        }
        self.clock.elapsed_at(t).max(after)
    }

    fn draw_payment_delay(&mut self) -> Duration {
        let (low, high) = self.config.payment_delay;
        let high = high.max(low);
        low + (high - low).mul_f64(self.rng.f64())
    }

    /// A normally distributed number (Box–Muller).
    fn normal(&mut self, mean: f64, sigma: f64) -> f64 {
        let u1 = 1.0 - self.rng.f64();
        let u2 = self.rng.f64();
        mean + sigma * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{encode, is_valid_id};
    use crate::plate::is_valid_plate;

    const HOUR: f64 = 3600.0;
    const START: f64 = 1_795_860_000.0;

    fn lanes() -> Vec<LaneConfig> {
        vec![
            LaneConfig::new("north-in", Direction::In),
            LaneConfig::new("north-out", Direction::Out),
            LaneConfig::new("south-in", Direction::In),
            LaneConfig::new("south-out", Direction::Out),
        ]
    }

    /// A stand-in for the edge: opens for pass holders and visitors, holds blocked plates,
    /// puts low-confidence reads on hold and has an operator confirm them 20 s later, and at
    /// exits charges visitors 5 yuan per started hour after 15 free minutes.
    struct FakeEdge {
        clock: SimClock,
        blocked: HashSet<String>,
        passes: HashSet<String>,
        /// Session by plate, with the simulated entry time.
        sessions: HashMap<String, (String, f64)>,
        fees: HashMap<String, u64>,
        decisions: u64,
        pending: Vec<(Duration, usize, Message)>,
        stays_s: Vec<f64>,
        payments: Vec<LanePayment>,
        reads: Vec<(usize, PlateRead, CarKind)>,
    }

    #[derive(Clone, Debug)]
    enum Message {
        Barrier(String),
        Display(String),
    }

    impl FakeEdge {
        fn new(clock: SimClock, plates: &[PlateConfig]) -> Self {
            let of = |role| {
                plates
                    .iter()
                    .filter(|p| p.role == role)
                    .map(|p| p.plate.clone())
                    .collect()
            };
            FakeEdge {
                clock,
                blocked: of(PlateRole::Blocked),
                passes: of(PlateRole::MonthlyPass),
                sessions: HashMap::new(),
                fees: HashMap::new(),
                decisions: 0,
                pending: Vec::new(),
                stays_s: Vec::new(),
                payments: Vec::new(),
                reads: Vec::new(),
            }
        }

        fn decision(&mut self) -> String {
            self.decisions += 1;
            format!("ev-{}", self.decisions)
        }

        fn send(&mut self, at: Duration, lane: usize, message: Message) {
            self.pending.push((at, lane, message));
        }

        fn open(&mut self, at: Duration, lane: usize, session: &str) {
            let decision = self.decision();
            let payload = encode(&BarrierCommand::Open {
                decision,
                session: session.into(),
            });
            self.send(at, lane, Message::Barrier(payload));
        }

        fn hold(&mut self, at: Duration, lane: usize, reason: &str) {
            let decision = self.decision();
            let payload = encode(&BarrierCommand::Hold {
                reason: reason.into(),
                decision,
            });
            self.send(at, lane, Message::Barrier(payload));
        }

        fn handle(&mut self, now: Duration, output: LotOutput) {
            let now_s = self.clock.sim_unix_s(now);
            match output {
                LotOutput::Plate { lane, read, kind } => {
                    self.reads.push((lane, read.clone(), kind));
                    let delay = if read.confidence < LOW_CONFIDENCE {
                        self.hold(now, lane, "manual_confirmation");
                        Duration::from_secs(20)
                    } else {
                        Duration::ZERO
                    };
                    let at = now + delay;
                    match read.direction {
                        Direction::In if self.blocked.contains(&read.plate) => {
                            if delay.is_zero() {
                                self.hold(at, lane, "blocked");
                            }
                        }
                        Direction::In => {
                            let session = format!("s-{}", self.sessions.len() + 1);
                            self.sessions
                                .insert(read.plate.clone(), (session.clone(), now_s));
                            self.open(at, lane, &session);
                        }
                        Direction::Out => {
                            let (session, entered_s) = self.sessions[&read.plate].clone();
                            let stay_s = now_s - entered_s;
                            if self.passes.contains(&read.plate) {
                                self.open(at, lane, &session);
                                return;
                            }
                            self.stays_s.push(stay_s);
                            let fee = if stay_s <= 900.0 {
                                0
                            } else {
                                500 * (stay_s / HOUR).ceil() as u64
                            };
                            if fee == 0 {
                                self.open(at, lane, &session);
                            } else {
                                self.fees.insert(session, fee);
                                let payload = encode(&LaneDisplay {
                                    text: format!("{} ¥{}", read.plate, fee / 100),
                                    fee_fen: Some(fee),
                                    currency: Some("CNY".into()),
                                });
                                self.send(at, lane, Message::Display(payload));
                            }
                        }
                    }
                }
                LotOutput::Payment { lane, payment } => {
                    assert_eq!(
                        Some(&payment.amount_fen),
                        self.fees.get(&payment.session),
                        "{payment:?}"
                    );
                    self.payments.push(payment.clone());
                    self.open(now, lane, &payment.session);
                }
            }
        }
    }

    struct Day {
        model: LotModel,
        edge: FakeEdge,
        /// Occupancy at the start of each simulated hour.
        occupancy: [u64; 24],
    }

    fn clock() -> SimClock {
        SimClock::new(START, 8 * 3600, Some(0.0), 1.0)
    }

    /// Runs a simulated day from local midnight, in real time (compression 1).
    fn simulate_day(seed: u64, config: LotConfig) -> Day {
        let clock = clock();
        let mut edge = FakeEdge::new(clock, &config.plates);
        let mut model = LotModel::new(seed, clock, config);
        let mut occupancy = [0; 24];
        let mut now = Duration::ZERO;
        let mut hour = 0;
        loop {
            while let Some(output) = model.poll_output() {
                edge.handle(now, output);
            }
            edge.pending.sort_by_key(|(at, _, _)| *at);
            let edge_at = edge.pending.first().map(|(at, _, _)| *at);
            let next = model.poll_timeout().min(edge_at.unwrap_or(Duration::MAX));
            while hour < 24 && Duration::from_secs_f64(hour as f64 * HOUR) <= next {
                occupancy[hour] = model.counts().occupancy;
                hour += 1;
            }
            if next >= Duration::from_secs(86_400) {
                break;
            }
            now = next;
            if edge_at == Some(next) {
                let (_, lane, message) = edge.pending.remove(0);
                match message {
                    Message::Barrier(payload) => {
                        model
                            .handle_barrier_command(now, lane, payload.as_bytes())
                            .unwrap();
                    }
                    Message::Display(payload) => {
                        model.handle_display(now, lane, payload.as_bytes()).unwrap();
                    }
                }
            } else {
                model.handle_timeout(now);
            }
        }
        Day {
            model,
            edge,
            occupancy,
        }
    }

    fn standard_config() -> LotConfig {
        LotConfig::new(lanes(), demo_plates(11, 150, 4))
    }

    #[test]
    fn visitors_come_by_day_and_hardly_at_night() {
        assert!(
            visitor_arrivals_per_hour(10.5 * HOUR) > 20.0 * visitor_arrivals_per_hour(3.0 * HOUR)
        );
        assert!(visitor_arrivals_per_hour(12.3 * HOUR) < visitor_arrivals_per_hour(10.5 * HOUR));
        let mut per_day = 0.0;
        for minute in 0..1440 {
            let rate = visitor_arrivals_per_hour(f64::from(minute) * 60.0);
            assert!(
                rate > 0.0 && rate <= MAX_VISITOR_ARRIVALS_PER_HOUR,
                "{minute}: {rate}"
            );
            per_day += rate / 60.0;
        }
        assert!((70.0..110.0).contains(&per_day), "{per_day}");
    }

    #[test]
    fn a_working_day_fills_the_lot_in_the_morning_and_empties_it_in_the_evening() {
        let day = simulate_day(1, standard_config());
        let occupancy = day.occupancy;
        // A night-time visitor or two at most.
        assert!(occupancy[3] <= 3, "{occupancy:?}");
        // About 92 % of 150 pass holders, and the morning's visitors.
        assert!(occupancy[11] >= 120, "{occupancy:?}");
        assert!(occupancy[11] > occupancy[7] + 100, "{occupancy:?}");
        assert!(occupancy[23] < 10, "{occupancy:?}");
        let counts = day.model.counts();
        assert!(counts.arrivals > 200, "{counts:?}");
        assert_eq!(counts.unexpected_opens, 0, "{counts:?}");
        assert_eq!(counts.exit_timeouts, 0, "{counts:?}");
        assert_eq!(
            counts.entries,
            counts.exits + counts.occupancy,
            "{counts:?}"
        );
    }

    #[test]
    fn every_fee_shown_is_paid_once_with_the_session_given_at_entry() {
        let day = simulate_day(2, standard_config());
        let counts = day.model.counts();
        assert!(day.edge.fees.len() > 30, "{} fees", day.edge.fees.len());
        // Every visitor who saw a fee paid it, exactly once, and was let out.
        assert_eq!(day.edge.payments.len(), day.edge.fees.len());
        let paid: HashSet<&str> = day
            .edge
            .payments
            .iter()
            .map(|p| p.session.as_str())
            .collect();
        assert_eq!(paid.len(), day.edge.payments.len());
        assert_eq!(counts.payments as usize, day.edge.payments.len());
        assert_eq!(counts.paid_fen, day.edge.fees.values().sum::<u64>());
        for payment in &day.edge.payments {
            assert_eq!(payment.currency, "CNY");
            assert!(
                payment.id.starts_with("pay-north-out-")
                    || payment.id.starts_with("pay-south-out-")
            );
        }
        let ids: HashSet<&str> = day.edge.payments.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids.len(), day.edge.payments.len());
    }

    #[test]
    fn visitors_stay_between_a_quarter_of_an_hour_and_four_hours() {
        let day = simulate_day(3, standard_config());
        assert!(day.edge.stays_s.len() > 40);
        for stay in &day.edge.stays_s {
            // Measured from the entry read to the exit read: lane queues add a little.
            assert!((15.0 * 60.0..4.0 * HOUR + 600.0).contains(stay), "{stay}");
        }
        let short = day.edge.stays_s.iter().filter(|s| **s < HOUR).count();
        assert!(short > day.edge.stays_s.len() / 3, "most visits are short");
    }

    #[test]
    fn plate_reads_are_contract_payloads_with_valid_plates_and_the_lane_direction() {
        let day = simulate_day(4, standard_config());
        let mut ids = HashSet::new();
        for (lane, read, _) in &day.edge.reads {
            let json: serde_json::Value = serde_json::from_str(&encode(read)).unwrap();
            let plate = json["plate"].as_str().unwrap();
            assert!(is_valid_plate(plate), "{json}");
            let confidence = json["confidence"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&confidence), "{json}");
            let direction = if lanes()[*lane].direction == Direction::In {
                "in"
            } else {
                "out"
            };
            assert_eq!(json["direction"], direction, "{json}");
            assert!(
                json["ts"].as_i64().unwrap() >= (START * 1e6) as i64,
                "{json}"
            );
            let id = json["id"].as_str().unwrap();
            assert!(is_valid_id(id) && ids.insert(id.to_owned()), "{json}");
            assert!(json["image"].as_str().unwrap().ends_with(".jpg"), "{json}");
        }
    }

    #[test]
    fn low_confidence_reads_fall_below_the_threshold_about_as_often_as_configured() {
        let day = simulate_day(5, standard_config());
        let reads = &day.edge.reads;
        let low = reads
            .iter()
            .filter(|(_, r, _)| r.confidence < LOW_CONFIDENCE)
            .count();
        assert_eq!(low as u64, day.model.counts().low_confidence_reads);
        let share = low as f64 / reads.len() as f64;
        assert!((0.02..0.09).contains(&share), "{low} of {}", reads.len());
        // The rest are confident.
        assert!(
            reads
                .iter()
                .all(|(_, r, _)| r.confidence < LOW_CONFIDENCE || r.confidence >= 0.8)
        );
        // Confirmed low-confidence entries got in: nobody but blocked plates turned away.
        let blocked_reads = reads
            .iter()
            .filter(|(_, _, kind)| *kind == CarKind::Blocked)
            .count();
        assert_eq!(day.model.counts().turned_away as usize, blocked_reads);
    }

    #[test]
    fn blocked_plates_are_held_at_the_entry_and_drive_away() {
        let mut config = standard_config();
        config.plates = demo_plates(11, 10, 20);
        let day = simulate_day(6, config);
        let counts = day.model.counts();
        let blocked: Vec<_> = day
            .edge
            .reads
            .iter()
            .filter(|(_, _, k)| *k == CarKind::Blocked)
            .collect();
        assert!(blocked.len() >= 4, "{} blocked attempts", blocked.len());
        assert!(blocked.iter().all(|(_, r, _)| r.direction == Direction::In));
        assert_eq!(counts.turned_away as usize, blocked.len());
        assert!(counts.holds as usize >= blocked.len());
    }

    #[test]
    fn the_same_seed_gives_the_same_day() {
        let reads = |seed| {
            let day = simulate_day(seed, standard_config());
            day.edge
                .reads
                .into_iter()
                .map(|(lane, read, _)| (lane, read.plate, read.ts))
                .collect::<Vec<_>>()
        };
        assert_eq!(reads(7), reads(7));
        assert_ne!(reads(7), reads(8));
    }

    fn one_lane_lot() -> (LotModel, Duration) {
        let mut config = LotConfig::new(
            vec![
                LaneConfig::new("in1", Direction::In),
                LaneConfig::new("out1", Direction::Out),
            ],
            demo_plates(1, 1, 0),
        );
        config.visitor_scale = 0.0;
        config.low_confidence_share = 0.0;
        // Starts at 06:00, before the pass holders come.
        let clock = SimClock::new(START, 8 * 3600, Some(6.0 * HOUR), 1.0);
        let mut model = LotModel::new(1, clock, config);
        let first = model.poll_timeout();
        assert!(first < Duration::from_secs(5 * 3600), "{first:?}");
        model.handle_timeout(first);
        let mut read_at = first;
        while model.output.is_empty() {
            read_at = model.poll_timeout();
            model.handle_timeout(read_at);
        }
        (model, read_at)
    }

    #[test]
    fn a_car_the_edge_never_answers_leaves_the_entry_after_the_barrier_timeout() {
        let (mut model, read_at) = one_lane_lot();
        assert!(matches!(
            model.poll_output(),
            Some(LotOutput::Plate { lane: 0, .. })
        ));
        assert_eq!(model.poll_timeout(), read_at + Duration::from_secs(120));
        model.handle_timeout(read_at + Duration::from_secs(120));
        assert_eq!(model.counts().turned_away, 1);
        assert_eq!(model.counts().entries, 0);
        // A barrier that opens now opens for nobody.
        let late = br#"{"command":"open","decision":"late","session":"s"}"#;
        model
            .handle_barrier_command(read_at + Duration::from_secs(121), 0, late)
            .unwrap();
        assert_eq!(model.counts().unexpected_opens, 1);
    }

    #[test]
    fn an_open_delivered_twice_admits_one_car() {
        let (mut model, read_at) = one_lane_lot();
        let Some(LotOutput::Plate { read, .. }) = model.poll_output() else {
            panic!("no plate read");
        };
        let open = br#"{"command":"open","decision":"ev-1","session":"s-1"}"#;
        let outcome = model.handle_barrier_command(read_at, 0, open).unwrap();
        assert_eq!(
            outcome,
            BarrierOutcome::Applied {
                command: BarrierCommand::Open {
                    decision: "ev-1".into(),
                    session: "s-1".into()
                },
                plate: Some(read.plate),
            }
        );
        let again = model.handle_barrier_command(read_at, 0, open).unwrap();
        assert!(matches!(again, BarrierOutcome::Duplicate(_)));
        let counts = model.counts();
        assert_eq!(
            (counts.entries, counts.occupancy, counts.duplicate_commands),
            (1, 1, 1)
        );
        assert_eq!(counts.unexpected_opens, 0);
    }

    #[test]
    fn a_display_with_a_fee_at_an_entry_lane_or_without_a_car_asks_for_no_payment() {
        let (mut model, read_at) = one_lane_lot();
        model.poll_output();
        let fee = br#"{"text":"pay","fee_fen":500,"currency":"CNY"}"#;
        model.handle_display(read_at, 0, fee).unwrap();
        model.handle_display(read_at, 1, fee).unwrap();
        assert_eq!(model.counts().displays, 2);
        model.handle_timeout(read_at + Duration::from_secs(119));
        assert!(model.poll_output().is_none());
        assert!(model.handle_display(read_at, 1, b"{").is_err());
        assert_eq!(model.counts().invalid_commands, 1);
    }

    #[test]
    fn a_lot_without_plates_or_visitors_only_wakes_at_midnight_to_plan_the_day() {
        let mut config = LotConfig::new(lanes(), vec![]);
        config.visitor_scale = 0.0;
        let mut model = LotModel::new(1, clock(), config);
        // Only the daily plans remain, and they plan nothing.
        let mut now = Duration::ZERO;
        for _ in 0..3 {
            now = model.poll_timeout();
            model.handle_timeout(now);
        }
        assert_eq!(now, Duration::from_secs(3 * 86_400));
        assert!(model.poll_output().is_none());
    }

    #[test]
    fn demo_plates_are_distinct_valid_and_have_both_roles() {
        let plates = demo_plates(3, 20, 2);
        assert_eq!(plates.len(), 22);
        assert!(plates.iter().all(|p| is_valid_plate(&p.plate)));
        assert_eq!(
            plates
                .iter()
                .filter(|p| p.role == PlateRole::Blocked)
                .count(),
            2
        );
        assert_eq!(plates, demo_plates(3, 20, 2));
    }
}

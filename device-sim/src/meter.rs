//! The physics of a simulated three-phase energy meter: a building's load on a daily curve,
//! mains voltage and frequency with small wander, and energy counters that integrate power.
//!
//! Pure: it does no IO and reads no clock. [`MeterState::new`] takes the time of day to start
//! at and [`MeterState::advance`] the time that has passed, so tests can run a day in a
//! microsecond. It knows nothing about registers; `sdm630` lays the readings out on the wire.

use std::f64::consts::PI;
use std::time::Duration;

use crate::clock::SECONDS_PER_DAY;

/// Nominal line-to-neutral voltage of the low-voltage grid (IEC 60038).
pub const NOMINAL_VOLTAGE_V: f64 = 230.0;
/// Nominal mains frequency.
pub const NOMINAL_FREQUENCY_HZ: f64 = 50.0;

/// Night-time base load (servers, ventilation, lighting on standby) as a share of the peak.
const BASE_LOAD_SHARE: f64 = 0.22;
/// Longest stretch integrated with one power value; longer advances are cut into such steps
/// so that energy follows the daily curve even when a test jumps hours at once.
const MAX_STEP_S: f64 = 60.0;

/// The load of a working building at a time of day, in kW, without noise.
///
/// Base load at night, a ramp from 06:00 to 09:00, a broad peak around 13:00 that reaches
/// `peak_kw`, and a fall from 17:00 to 21:00. Times outside a day wrap; the result is never
/// negative (a negative or NaN `peak_kw` gives 0).
///
/// ```
/// use device_sim::daily_power_kw;
///
/// let hour = 3600.0;
/// assert!(daily_power_kw(12.0 * hour, 50.0) > 2.0 * daily_power_kw(3.0 * hour, 50.0));
/// assert_eq!(daily_power_kw(13.0 * hour, 50.0), 50.0);
/// ```
pub fn daily_power_kw(seconds_of_day: f64, peak_kw: f64) -> f64 {
    let hour = seconds_of_day.rem_euclid(SECONDS_PER_DAY) / 3600.0;
    let working = smoothstep(6.0, 9.0, hour) * (1.0 - smoothstep(17.0, 21.0, hour));
    let midday = 0.8 + 0.2 * (-((hour - 13.0) / 2.5).powi(2)).exp();
    let share = BASE_LOAD_SHARE + (1.0 - BASE_LOAD_SHARE) * working * midday;
    // `f64::max` returns the other operand for NaN, so this also turns NaN into 0.
    (peak_kw.max(0.0) * share).max(0.0)
}

/// 0 below `edge0`, 1 above `edge1`, and a smooth S-curve between.
pub(crate) fn smoothstep(edge0: f64, edge1: f64, x: f64) -> f64 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// What the meter measures at one moment, in SI units and kWh.
#[derive(Clone, Debug, PartialEq)]
pub struct Readings {
    /// Line-to-neutral voltages L1, L2, L3.
    pub voltage_v: [f64; 3],
    pub current_a: [f64; 3],
    /// Active power per phase; positive is import.
    pub power_w: [f64; 3],
    pub power_factor: [f64; 3],
    pub frequency_hz: f64,
    pub import_kwh: f64,
    pub export_kwh: f64,
    pub import_kvarh: f64,
    pub export_kvarh: f64,
}

impl Readings {
    pub fn apparent_power_va(&self) -> [f64; 3] {
        std::array::from_fn(|i| self.voltage_v[i] * self.current_a[i])
    }

    /// Reactive power per phase, positive for the inductive load this meter simulates.
    pub fn reactive_power_var(&self) -> [f64; 3] {
        let s = self.apparent_power_va();
        std::array::from_fn(|i| {
            (s[i] * s[i] - self.power_w[i] * self.power_w[i])
                .max(0.0)
                .sqrt()
        })
    }

    pub fn total_power_w(&self) -> f64 {
        self.power_w.iter().sum()
    }

    pub fn total_apparent_power_va(&self) -> f64 {
        self.apparent_power_va().iter().sum()
    }

    pub fn total_reactive_power_var(&self) -> f64 {
        self.reactive_power_var().iter().sum()
    }

    /// Total active over total apparent power; 1 when nothing flows.
    pub fn total_power_factor(&self) -> f64 {
        let s = self.total_apparent_power_va();
        if s > 0.0 {
            self.total_power_w() / s
        } else {
            1.0
        }
    }

    /// Line-to-line voltages L1-L2, L2-L3, L3-L1, from phasors 120° apart.
    pub fn line_voltage_v(&self) -> [f64; 3] {
        let v = self.voltage_v;
        std::array::from_fn(|i| {
            let (a, b) = (v[i], v[(i + 1) % 3]);
            (a * a + b * b + a * b).sqrt()
        })
    }

    /// The current in the neutral: the phasor sum of the phase currents, each lagging its
    /// voltage by the angle of its power factor.
    pub fn neutral_current_a(&self) -> f64 {
        let (mut re, mut im) = (0.0, 0.0);
        for i in 0..3 {
            let angle = -2.0 * PI * i as f64 / 3.0 - self.power_factor[i].clamp(-1.0, 1.0).acos();
            re += self.current_a[i] * angle.cos();
            im += self.current_a[i] * angle.sin();
        }
        re.hypot(im)
    }

    /// Import plus export, as the SDM630 counts its "total kWh".
    pub fn total_kwh(&self) -> f64 {
        self.import_kwh + self.export_kwh
    }

    pub fn total_kvarh(&self) -> f64 {
        self.import_kvarh + self.export_kvarh
    }
}

/// A first-order random walk that returns to zero: `x' = a·x + √(1-a²)·σ·u`, with `u` uniform
/// of unit variance and `a = exp(-dt/τ)`, so its spread stays `σ` whatever the step.
#[derive(Clone, Debug)]
struct Wander {
    value: f64,
    sigma: f64,
    tau_s: f64,
    limit: f64,
}

impl Wander {
    fn new(sigma: f64, tau_s: f64, limit: f64) -> Self {
        Wander {
            value: 0.0,
            sigma,
            tau_s,
            limit,
        }
    }

    fn step(&mut self, rng: &mut fastrand::Rng, dt_s: f64) -> f64 {
        let a = (-dt_s / self.tau_s).exp();
        let unit = (rng.f64() * 2.0 - 1.0) * 3f64.sqrt();
        self.value = (a * self.value + (1.0 - a * a).sqrt() * self.sigma * unit)
            .clamp(-self.limit, self.limit);
        self.value
    }
}

/// The evolving state of a simulated meter. Call order: [`MeterState::new`], then
/// [`MeterState::advance`] as time passes, reading [`MeterState::readings`] in between.
#[derive(Clone, Debug)]
pub struct MeterState {
    rng: fastrand::Rng,
    peak_kw: f64,
    seconds_of_day: f64,
    load: Wander,
    phase_share: [Wander; 3],
    voltage: [Wander; 3],
    frequency: Wander,
    readings: Readings,
}

impl MeterState {
    /// A meter at `seconds_of_day` whose load peaks near `peak_kw`. The seed fixes the noise
    /// and the counters' starting values (an installed meter never starts at zero).
    pub fn new(seed: u64, seconds_of_day: f64, peak_kw: f64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let import_kwh = 10_000.0 + rng.f64() * 40_000.0;
        let readings = Readings {
            voltage_v: [NOMINAL_VOLTAGE_V; 3],
            current_a: [0.0; 3],
            power_w: [0.0; 3],
            power_factor: [1.0; 3],
            frequency_hz: NOMINAL_FREQUENCY_HZ,
            import_kwh,
            export_kwh: (rng.f64() * 50.0).floor(),
            import_kvarh: import_kwh * (0.25 + rng.f64() * 0.1),
            export_kvarh: 0.0,
        };
        let mut state = MeterState {
            rng,
            peak_kw: peak_kw.max(0.0),
            seconds_of_day: seconds_of_day.rem_euclid(SECONDS_PER_DAY),
            // Load: ±2 % typical, slow (a minute), never beyond ±6 %.
            load: Wander::new(0.02, 60.0, 0.06),
            phase_share: std::array::from_fn(|_| Wander::new(0.01, 120.0, 0.03)),
            // Voltage: ±0.6 % typical, within ±1.4 % so that with the load drop it stays inside ±2 %.
            voltage: std::array::from_fn(|_| Wander::new(0.006, 30.0, 0.014)),
            frequency: Wander::new(0.02, 20.0, 0.08),
            readings,
        };
        state.step_noise(1.0);
        state.update_instantaneous();
        state
    }

    pub fn readings(&self) -> &Readings {
        &self.readings
    }

    pub fn seconds_of_day(&self) -> f64 {
        self.seconds_of_day
    }

    /// Lets `dt` pass: integrates the energy counters over it, moves the time of day on and
    /// draws new instantaneous values.
    pub fn advance(&mut self, dt: Duration) {
        let mut remaining = dt.as_secs_f64();
        while remaining > 0.0 {
            let step = remaining.min(MAX_STEP_S);
            remaining -= step;
            let hours = step / 3600.0;
            let r = &mut self.readings;
            let p_kw = r.total_power_w() / 1000.0;
            let q_kvar = r.total_reactive_power_var() / 1000.0;
            if p_kw >= 0.0 {
                r.import_kwh += p_kw * hours;
            } else {
                r.export_kwh -= p_kw * hours;
            }
            if q_kvar >= 0.0 {
                r.import_kvarh += q_kvar * hours;
            } else {
                r.export_kvarh -= q_kvar * hours;
            }
            self.seconds_of_day = (self.seconds_of_day + step).rem_euclid(SECONDS_PER_DAY);
            self.step_noise(step);
            self.update_instantaneous();
        }
    }

    fn step_noise(&mut self, dt_s: f64) {
        let rng = &mut self.rng;
        self.load.step(rng, dt_s);
        self.frequency.step(rng, dt_s);
        for w in self.phase_share.iter_mut().chain(self.voltage.iter_mut()) {
            w.step(rng, dt_s);
        }
    }

    fn update_instantaneous(&mut self) {
        let total_w =
            daily_power_kw(self.seconds_of_day, self.peak_kw) * 1000.0 * (1.0 + self.load.value);
        let load_share = if self.peak_kw > 0.0 {
            (total_w / 1000.0 / self.peak_kw).min(1.0)
        } else {
            0.0
        };
        // Unbalanced on purpose: real buildings load L1 most.
        let weights: [f64; 3] =
            std::array::from_fn(|i| [0.35, 0.33, 0.32][i] + self.phase_share[i].value);
        let weight_sum: f64 = weights.iter().sum();
        let r = &mut self.readings;
        for (i, weight) in weights.iter().enumerate() {
            // A heavier load pulls the voltage down by up to 0.5 %.
            r.voltage_v[i] = NOMINAL_VOLTAGE_V * (1.0 + self.voltage[i].value - 0.005 * load_share);
            r.power_w[i] = total_w * weight / weight_sum;
            // Motors and drives at light load have the worst power factor.
            r.power_factor[i] = (0.90 + 0.07 * load_share).clamp(0.85, 0.99);
            r.current_a[i] = r.power_w[i] / (r.voltage_v[i] * r.power_factor[i]);
        }
        r.frequency_hz = NOMINAL_FREQUENCY_HZ + self.frequency.value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: f64 = 3600.0;

    #[test]
    fn the_daily_curve_is_higher_at_noon_than_at_three_in_the_morning() {
        let noon = daily_power_kw(12.0 * HOUR, 100.0);
        let night = daily_power_kw(3.0 * HOUR, 100.0);
        assert!(noon > 2.0 * night, "noon {noon} kW, 3 am {night} kW");
        assert!((night - 22.0).abs() < 0.5, "night base load {night} kW");
    }

    #[test]
    fn the_daily_curve_ramps_in_the_morning_and_falls_in_the_evening() {
        let at = |h: f64| daily_power_kw(h * HOUR, 100.0);
        assert!(at(5.0) < at(7.0) && at(7.0) < at(9.0) && at(9.0) < at(13.0));
        assert!(at(13.0) > at(18.0) && at(18.0) > at(20.0) && at(20.0) > at(23.0) - 1e-9);
        assert!(
            (at(13.0) - 100.0).abs() < 1e-9,
            "the peak is reached at 13:00"
        );
    }

    #[test]
    fn the_daily_curve_is_never_negative_and_wraps_around_midnight() {
        for minute in -2000..4000 {
            let s = f64::from(minute) * 60.0;
            let p = daily_power_kw(s, 80.0);
            assert!((0.0..=80.0).contains(&p), "{p} kW at {s} s");
            assert_eq!(p, daily_power_kw(s + SECONDS_PER_DAY, 80.0));
        }
        assert_eq!(daily_power_kw(f64::NAN, 80.0), 0.0);
        assert_eq!(daily_power_kw(12.0 * HOUR, -5.0), 0.0);
    }

    #[test]
    fn energy_counters_never_decrease_over_many_steps() {
        let mut meter = MeterState::new(7, 0.0, 120.0);
        let mut last = meter.readings().clone();
        for i in 0..20_000 {
            meter.advance(Duration::from_millis(250 + (i % 7) * 1000));
            let now = meter.readings();
            assert!(now.import_kwh >= last.import_kwh, "step {i}");
            assert!(now.export_kwh >= last.export_kwh, "step {i}");
            assert!(now.import_kvarh >= last.import_kvarh, "step {i}");
            assert!(now.total_kwh() >= last.total_kwh(), "step {i}");
            last = now.clone();
        }
    }

    #[test]
    fn a_day_of_energy_matches_the_integral_of_the_curve() {
        let mut meter = MeterState::new(3, 0.0, 100.0);
        let start = meter.readings().import_kwh;
        meter.advance(Duration::from_secs(86_400));
        let used = meter.readings().import_kwh - start;
        let expected: f64 = (0..1440)
            .map(|m| daily_power_kw(f64::from(m) * 60.0, 100.0) / 60.0)
            .sum();
        assert!(
            (used / expected - 1.0).abs() < 0.03,
            "used {used} kWh, curve {expected} kWh"
        );
        assert!((meter.seconds_of_day() - 0.0).abs() < 1e-6);
    }

    #[test]
    fn voltages_frequency_and_currents_stay_plausible() {
        // 45 kW at the peak stays within a direct-connected SDM630's 100 A.
        let mut meter = MeterState::new(11, 5.0 * HOUR, 45.0);
        for _ in 0..5000 {
            meter.advance(Duration::from_secs(13));
            let r = meter.readings();
            for i in 0..3 {
                assert!(
                    (r.voltage_v[i] / NOMINAL_VOLTAGE_V - 1.0).abs() <= 0.02,
                    "{r:?}"
                );
                let expected_a = r.power_w[i] / (r.voltage_v[i] * r.power_factor[i]);
                assert!((r.current_a[i] - expected_a).abs() < 1e-9);
                assert!(r.current_a[i] >= 0.0 && r.current_a[i] < 100.0, "{r:?}");
                assert!((0.85..=0.99).contains(&r.power_factor[i]));
            }
            assert!(
                (r.frequency_hz - NOMINAL_FREQUENCY_HZ).abs() <= 0.1,
                "{r:?}"
            );
            let neutral = r.neutral_current_a();
            assert!(
                neutral < r.current_a.iter().copied().fold(0.0, f64::max),
                "{neutral} A"
            );
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_meter() {
        let mut a = MeterState::new(42, 12.0 * HOUR, 50.0);
        let mut b = MeterState::new(42, 12.0 * HOUR, 50.0);
        a.advance(Duration::from_secs(600));
        b.advance(Duration::from_secs(600));
        assert_eq!(a.readings(), b.readings());
        let c = MeterState::new(43, 12.0 * HOUR, 50.0);
        assert_ne!(a.readings().import_kwh, c.readings().import_kwh);
    }

    #[test]
    fn line_voltages_are_root_three_times_the_phase_voltage() {
        let mut r = MeterState::new(1, 0.0, 10.0).readings().clone();
        r.voltage_v = [230.0; 3];
        for v in r.line_voltage_v() {
            assert!((v - 230.0 * 3f64.sqrt()).abs() < 1e-9);
        }
    }
}

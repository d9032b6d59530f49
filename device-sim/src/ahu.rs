//! The air-handling unit behind the simulated BACnet controller ([`crate::bacnet_ahu`]): a
//! variable-air-volume unit with an economizer, chilled- and hot-water coils and supply and
//! return fans, its sensors following the weather and the building's occupancy through the
//! day, and its own control sequence (fan speeds, valves and dampers) following the settings
//! an operator writes.
//!
//! Pure: [`AhuState::advance`] takes the time of day, the time that passed and the settings
//! in force, and nothing here reads a clock or touches a socket. The physics is a handful of
//! first-order lags and mixing rules, enough for values that look like a real unit's on a
//! trend chart (the supply air settles on its setpoint over minutes, the return air and CO2
//! follow the occupants); it is not a thermal model of a building, and the fan fault and the
//! filter alarm never trip.

use std::f64::consts::PI;
use std::time::Duration;

use crate::clock::SECONDS_PER_DAY;

/// Supply airflow at 100 % fan speed, in m³/h: a mid-sized unit serving a few floors.
pub const DESIGN_AIRFLOW_M3H: f64 = 12_000.0;

/// How far the chilled-water coil can cool the air at full valve, in kelvin.
const MAX_COOLING_K: f64 = 14.0;
/// How far the hot-water coil can heat the air at full valve, in kelvin.
const MAX_HEATING_K: f64 = 20.0;
/// Time constant of the supply air temperature loop: a setpoint change settles in about
/// three of them (a quarter of an hour).
const SUPPLY_TEMP_TAU_S: f64 = 300.0;
/// Fan speed change per second while a drive ramps, in percent.
const FAN_RAMP_PCT_PER_S: f64 = 4.0;
/// Below this speed a fan's flow switch shows no flow.
const PROOF_OF_FLOW_PCT: f64 = 10.0;

/// What the operator (or the controller's defaults) set: the values of the unit's writable
/// objects that feed back into its sequence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AhuSettings {
    /// Operator enable of the unit's sequences (binary-value 1).
    pub enabled: bool,
    /// Supply fan start/stop (binary-output 1).
    pub supply_fan_start: bool,
    /// Return fan start/stop (binary-output 2).
    pub return_fan_start: bool,
    /// Supply air temperature setpoint, °C (analog-value 1).
    pub supply_air_temp_setpoint_c: f64,
    /// Duct static pressure setpoint, Pa (analog-value 2).
    pub static_pressure_setpoint_pa: f64,
    /// Minimum outside airflow, m³/h (analog-value 3).
    pub min_outside_airflow_m3h: f64,
    /// 1 occupied, 2 unoccupied, 3 standby, 4 warm-up, 5 cool-down (multi-state-value 1).
    pub occupancy_mode: u32,
}

impl Default for AhuSettings {
    /// The controller's relinquish defaults: enabled, both fans started, 13 °C supply air
    /// (ASHRAE Guideline 36's usual cooling design value), 250 Pa and 1,500 m³/h, occupied.
    fn default() -> Self {
        AhuSettings {
            enabled: true,
            supply_fan_start: true,
            return_fan_start: true,
            supply_air_temp_setpoint_c: 13.0,
            static_pressure_setpoint_pa: 250.0,
            min_outside_airflow_m3h: 1_500.0,
            occupancy_mode: 1,
        }
    }
}

impl AhuSettings {
    /// Whether the sequence runs the supply fan: enabled, started and not unoccupied.
    pub fn running(&self) -> bool {
        self.enabled && self.supply_fan_start && self.occupancy_mode != 2
    }
}

/// The unit's operating mode as its multi-state input reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatingMode {
    Off = 1,
    Heating = 2,
    Economizer = 3,
    MechanicalCooling = 4,
}

/// Everything the controller reports, in engineering units.
#[derive(Clone, Debug, PartialEq)]
pub struct AhuReadings {
    pub supply_air_temp_c: f64,
    pub return_air_temp_c: f64,
    pub mixed_air_temp_c: f64,
    pub outside_air_temp_c: f64,
    pub supply_static_pressure_pa: f64,
    pub building_static_pressure_pa: f64,
    pub outside_airflow_m3h: f64,
    pub return_co2_ppm: f64,
    pub filter_pressure_drop_pa: f64,
    /// The sequence's commands, in percent.
    pub supply_fan_speed_pct: f64,
    pub return_fan_speed_pct: f64,
    pub cooling_valve_pct: f64,
    pub heating_valve_pct: f64,
    pub outside_air_damper_pct: f64,
    /// Proof of flow of each fan.
    pub supply_fan_running: bool,
    pub return_fan_running: bool,
    pub supply_fan_fault: bool,
    pub freeze_stat: bool,
    pub filter_alarm: bool,
    pub operating_mode: OperatingMode,
}

/// The evolving unit: slow states (temperatures, pressures, fan speeds, CO2) and the
/// readings they give.
#[derive(Clone, Debug)]
pub struct AhuState {
    rng: fastrand::Rng,
    /// This site's weather runs a little warm or cool.
    outside_offset_c: f64,
    /// Slow random walks around the daily patterns.
    outside_drift_c: f64,
    return_drift_c: f64,
    /// Filter pressure drop at design airflow; grows as the filter loads.
    filter_loading_pa: f64,
    supply_air_temp_c: f64,
    return_air_temp_c: f64,
    supply_static_pa: f64,
    supply_fan_pct: f64,
    return_fan_pct: f64,
    co2_ppm: f64,
    readings: AhuReadings,
}

impl AhuState {
    /// A unit that has been running steadily with `settings` up to `seconds_of_day`.
    pub fn new(seed: u64, seconds_of_day: f64, settings: &AhuSettings) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let outside_offset_c = (rng.f64() - 0.5) * 4.0;
        let filter_loading_pa = 90.0 + rng.f64() * 60.0;
        let load = occupancy_load(seconds_of_day);
        let running = settings.running();
        let fan = if running { fan_speed_pct(load) } else { 0.0 };
        let mut state = AhuState {
            rng,
            outside_offset_c,
            outside_drift_c: 0.0,
            return_drift_c: 0.0,
            filter_loading_pa,
            supply_air_temp_c: 0.0,
            return_air_temp_c: return_air_target_c(seconds_of_day, load, running),
            supply_static_pa: if running {
                settings.static_pressure_setpoint_pa
            } else {
                0.0
            },
            supply_fan_pct: fan,
            return_fan_pct: if running && settings.return_fan_start {
                fan * 0.9
            } else {
                0.0
            },
            co2_ppm: co2_target_ppm(load, 0.2, running),
            readings: AhuReadings {
                supply_air_temp_c: 0.0,
                return_air_temp_c: 0.0,
                mixed_air_temp_c: 0.0,
                outside_air_temp_c: 0.0,
                supply_static_pressure_pa: 0.0,
                building_static_pressure_pa: 0.0,
                outside_airflow_m3h: 0.0,
                return_co2_ppm: 0.0,
                filter_pressure_drop_pa: 0.0,
                supply_fan_speed_pct: 0.0,
                return_fan_speed_pct: 0.0,
                cooling_valve_pct: 0.0,
                heating_valve_pct: 0.0,
                outside_air_damper_pct: 0.0,
                supply_fan_running: false,
                return_fan_running: false,
                supply_fan_fault: false,
                freeze_stat: false,
                filter_alarm: false,
                operating_mode: OperatingMode::Off,
            },
        };
        // Start settled: the supply air where the sequence holds it.
        let mix = state.mix(seconds_of_day, settings);
        state.supply_air_temp_c = supply_air_target_c(settings, running, mix.mixed_c);
        state.update(seconds_of_day, settings, Duration::ZERO);
        state
    }

    pub fn readings(&self) -> &AhuReadings {
        &self.readings
    }

    /// Lets `dt` pass under `settings` and recomputes the readings for `seconds_of_day`
    /// (the new time).
    pub fn advance(&mut self, seconds_of_day: f64, dt: Duration, settings: &AhuSettings) {
        self.update(seconds_of_day, settings, dt);
    }

    fn update(&mut self, seconds_of_day: f64, settings: &AhuSettings, dt: Duration) {
        let dt_s = dt.as_secs_f64().min(SECONDS_PER_DAY);
        let running = settings.running();
        let load = occupancy_load(seconds_of_day);

        // Weather and return air wander slowly around their daily patterns.
        let pull = (-dt_s / 1800.0).exp();
        let spread = (1.0 - pull * pull).sqrt();
        self.outside_drift_c =
            (self.outside_drift_c * pull + spread * 0.8 * self.noise()).clamp(-1.5, 1.5);
        self.return_drift_c =
            (self.return_drift_c * pull + spread * 0.3 * self.noise()).clamp(-0.5, 0.5);
        let return_target =
            return_air_target_c(seconds_of_day, load, running) + self.return_drift_c;
        self.return_air_temp_c = lag(self.return_air_temp_c, return_target, dt_s, 900.0);

        // Drives ramp towards the sequence's speed; the return fan tracks the supply fan.
        let supply_target = if running { fan_speed_pct(load) } else { 0.0 };
        let return_target = if running && settings.return_fan_start {
            self.supply_fan_pct * 0.9
        } else {
            0.0
        };
        self.supply_fan_pct = ramp(self.supply_fan_pct, supply_target, dt_s);
        self.return_fan_pct = ramp(self.return_fan_pct, return_target, dt_s);

        let mix = self.mix(seconds_of_day, settings);
        let sat_target = supply_air_target_c(settings, running, mix.mixed_c);
        self.supply_air_temp_c = lag(self.supply_air_temp_c, sat_target, dt_s, SUPPLY_TEMP_TAU_S);
        let static_target = if running {
            settings.static_pressure_setpoint_pa.clamp(0.0, 2000.0)
                * (self.supply_fan_pct / 100.0 / 0.45).min(1.0)
        } else {
            0.0
        };
        self.supply_static_pa = lag(self.supply_static_pa, static_target, dt_s, 15.0);
        self.co2_ppm = lag(
            self.co2_ppm,
            co2_target_ppm(load, mix.outside_fraction, running),
            dt_s,
            900.0,
        );

        // What the sequence commands to the coils: as much as it takes to bring the mixed
        // air to the setpoint.
        let sp = settings.supply_air_temp_setpoint_c.clamp(5.0, 35.0);
        let (cooling, heating) = if running {
            (
                ((mix.mixed_c - sp) / MAX_COOLING_K * 100.0).clamp(0.0, 100.0),
                ((sp - mix.mixed_c) / MAX_HEATING_K * 100.0).clamp(0.0, 100.0),
            )
        } else {
            (0.0, 0.0)
        };
        let operating_mode = if !running {
            OperatingMode::Off
        } else if heating > 0.5 {
            OperatingMode::Heating
        } else if cooling > 0.5 {
            OperatingMode::MechanicalCooling
        } else {
            OperatingMode::Economizer
        };
        let supply_airflow = DESIGN_AIRFLOW_M3H * self.supply_fan_pct / 100.0;
        let flow_ratio = self.supply_fan_pct / 100.0;
        let filter_dp = self.filter_loading_pa * flow_ratio * flow_ratio;
        let building_static = if running { 12.0 } else { 0.0 };

        let supply_air_temp_c = self.supply_air_temp_c + 0.05 * self.noise();
        let supply_static_pressure_pa =
            (self.supply_static_pa + if running { 3.0 } else { 0.3 } * self.noise()).max(0.0);
        let building_static_pressure_pa = building_static + 1.0 * self.noise();
        let return_co2_ppm = self.co2_ppm + 5.0 * self.noise();
        let filter_pressure_drop_pa = (filter_dp + 0.5 * self.noise()).max(0.0);
        self.readings = AhuReadings {
            supply_air_temp_c: round_to(supply_air_temp_c, 0.01),
            return_air_temp_c: round_to(self.return_air_temp_c + 0.03 * self.noise(), 0.01),
            mixed_air_temp_c: round_to(mix.mixed_c + 0.05 * self.noise(), 0.01),
            outside_air_temp_c: round_to(mix.outside_c, 0.01),
            supply_static_pressure_pa: round_to(supply_static_pressure_pa, 0.1),
            building_static_pressure_pa: round_to(building_static_pressure_pa, 0.1),
            outside_airflow_m3h: round_to(supply_airflow * mix.outside_fraction, 1.0),
            return_co2_ppm: round_to(return_co2_ppm, 1.0),
            filter_pressure_drop_pa: round_to(filter_pressure_drop_pa, 0.1),
            supply_fan_speed_pct: round_to(self.supply_fan_pct, 0.1),
            return_fan_speed_pct: round_to(self.return_fan_pct, 0.1),
            cooling_valve_pct: round_to(cooling, 0.1),
            heating_valve_pct: round_to(heating, 0.1),
            outside_air_damper_pct: round_to(mix.damper_pct, 0.1),
            supply_fan_running: self.supply_fan_pct >= PROOF_OF_FLOW_PCT,
            return_fan_running: self.return_fan_pct >= PROOF_OF_FLOW_PCT,
            supply_fan_fault: false,
            freeze_stat: supply_air_temp_c < 3.0,
            filter_alarm: filter_pressure_drop_pa > 250.0,
            operating_mode,
        };
    }

    /// The economizer: the outside air share (and damper position) that brings the mixed
    /// air nearest the setpoint without going below the minimum outside airflow.
    fn mix(&self, seconds_of_day: f64, settings: &AhuSettings) -> Mix {
        let outside_c =
            outside_air_c(seconds_of_day) + self.outside_offset_c + self.outside_drift_c;
        let return_c = self.return_air_temp_c;
        let supply_airflow = DESIGN_AIRFLOW_M3H * self.supply_fan_pct / 100.0;
        if !settings.running() || supply_airflow < 1.0 {
            return Mix {
                outside_c,
                mixed_c: return_c,
                outside_fraction: 0.0,
                damper_pct: 0.0,
            };
        }
        let minimum = (settings.min_outside_airflow_m3h.max(0.0) / supply_airflow).clamp(0.05, 1.0);
        let sp = settings.supply_air_temp_setpoint_c;
        let fraction = if outside_c >= return_c - 1.0 {
            // Outside air is no help: minimum ventilation only.
            minimum
        } else if outside_c >= sp {
            // All the outside air there is, and the coil does the rest.
            1.0
        } else {
            ((return_c - sp) / (return_c - outside_c)).clamp(minimum, 1.0)
        };
        Mix {
            outside_c,
            mixed_c: outside_c * fraction + return_c * (1.0 - fraction),
            outside_fraction: fraction,
            damper_pct: fraction * 100.0,
        }
    }

    /// A uniform number in [-1, 1).
    fn noise(&mut self) -> f64 {
        self.rng.f64() * 2.0 - 1.0
    }
}

struct Mix {
    outside_c: f64,
    mixed_c: f64,
    outside_fraction: f64,
    damper_pct: f64,
}

/// The share of the building's people present: none before 07:00, all from 09:00 to
/// 17:00, none after 19:00, with smooth ramps between.
pub fn occupancy_load(seconds_of_day: f64) -> f64 {
    let hour = seconds_of_day.rem_euclid(SECONDS_PER_DAY) / 3600.0;
    let ramp = |x: f64| {
        let t = x.clamp(0.0, 1.0);
        t * t * (3.0 - 2.0 * t)
    };
    ramp((hour - 7.0) / 2.0) * (1.0 - ramp((hour - 17.0) / 2.0))
}

/// A mild climate's outside air: 16 °C on average, warmest at 15:00, 10 K between night and
/// afternoon.
fn outside_air_c(seconds_of_day: f64) -> f64 {
    let phase = 2.0 * PI * (seconds_of_day.rem_euclid(SECONDS_PER_DAY) / 3600.0 - 9.0) / 24.0;
    16.0 + 5.0 * phase.sin()
}

/// The zones' air coming back: warmer with people and sun in them; closer to the outside
/// air when the unit is off.
fn return_air_target_c(seconds_of_day: f64, load: f64, running: bool) -> f64 {
    let inside = 22.5 + 1.5 * load + 0.3 * (outside_air_c(seconds_of_day) - 16.0) / 5.0;
    if running {
        inside
    } else {
        inside * 0.8 + outside_air_c(seconds_of_day) * 0.2
    }
}

/// Where the supply air settles: the setpoint, as far as the coils can reach from the mixed
/// air; the mixed air itself when the unit is off.
fn supply_air_target_c(settings: &AhuSettings, running: bool, mixed_c: f64) -> f64 {
    if !running {
        return mixed_c;
    }
    let sp = settings.supply_air_temp_setpoint_c.clamp(5.0, 35.0);
    sp.clamp(mixed_c - MAX_COOLING_K, mixed_c + MAX_HEATING_K)
}

/// The supply fan speed the static pressure loop ends up at for a building load.
fn fan_speed_pct(load: f64) -> f64 {
    45.0 + 35.0 * load
}

/// Return air CO2: outdoor air's 420 ppm plus what the occupants add, diluted by the
/// outside air share.
fn co2_target_ppm(load: f64, outside_fraction: f64, running: bool) -> f64 {
    let ventilation = if running {
        1.0 - 0.5 * outside_fraction
    } else {
        1.6
    };
    420.0 + 450.0 * load * ventilation
}

/// A first-order lag of `value` towards `target` over `dt_s` with time constant `tau_s`.
fn lag(value: f64, target: f64, dt_s: f64, tau_s: f64) -> f64 {
    target + (value - target) * (-dt_s / tau_s).exp()
}

/// A drive's ramp towards `target` at its fixed rate.
fn ramp(value: f64, target: f64, dt_s: f64) -> f64 {
    let step = FAN_RAMP_PCT_PER_S * dt_s;
    value + (target - value).clamp(-step, step)
}

fn round_to(x: f64, step: f64) -> f64 {
    (x / step).round() * step
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);

    #[test]
    fn a_running_unit_holds_its_supply_air_at_the_setpoint() {
        let settings = AhuSettings::default();
        let unit = AhuState::new(1, 14.0 * 3600.0, &settings);
        let r = unit.readings();
        assert!((r.supply_air_temp_c - 13.0).abs() < 0.1, "{r:?}");
        assert!(r.supply_fan_running && r.return_fan_running, "{r:?}");
        assert!(
            (240.0..=260.0).contains(&r.supply_static_pressure_pa),
            "{r:?}"
        );
        assert!(r.outside_airflow_m3h >= 1_400.0, "{r:?}");
    }

    #[test]
    fn the_supply_air_drifts_to_a_new_setpoint_over_minutes() {
        let mut settings = AhuSettings::default();
        let mut unit = AhuState::new(2, 10.0 * 3600.0, &settings);
        settings.supply_air_temp_setpoint_c = 16.0;
        let mut t = 10.0 * 3600.0;
        let mut last = unit.readings().supply_air_temp_c;
        // After a minute the air has moved, but not all the way.
        for _ in 0..6 {
            t += 10.0;
            unit.advance(t, TEN_S, &settings);
            let now = unit.readings().supply_air_temp_c;
            assert!((now - last).abs() < 0.4, "{last} -> {now}");
            last = now;
        }
        assert!((13.3..15.5).contains(&last), "{last}");
        // After a quarter of an hour it has arrived.
        for _ in 0..84 {
            t += 10.0;
            unit.advance(t, TEN_S, &settings);
        }
        let settled = unit.readings().supply_air_temp_c;
        assert!((settled - 16.0).abs() < 0.25, "{settled}");
    }

    #[test]
    fn stopping_the_supply_fan_loses_proof_of_flow_and_the_air_goes_to_the_mixed_temperature() {
        let mut settings = AhuSettings::default();
        let mut unit = AhuState::new(3, 12.0 * 3600.0, &settings);
        settings.supply_fan_start = false;
        let mut t = 12.0 * 3600.0;
        unit.advance(t + 1.0, Duration::from_secs(1), &settings);
        assert!(
            unit.readings().supply_fan_running,
            "the drive ramps down, it does not stop dead"
        );
        for _ in 0..180 {
            t += 10.0;
            unit.advance(t, TEN_S, &settings);
        }
        let r = unit.readings();
        assert!(!r.supply_fan_running && !r.return_fan_running, "{r:?}");
        assert_eq!(r.operating_mode, OperatingMode::Off);
        assert_eq!(r.supply_fan_speed_pct, 0.0);
        assert!(
            (r.supply_air_temp_c - r.return_air_temp_c).abs() < 0.5,
            "{r:?}"
        );
        assert!(r.supply_static_pressure_pa < 2.0, "{r:?}");
    }

    #[test]
    fn a_whole_day_stays_within_the_profile_ranges_and_changes_smoothly() {
        let settings = AhuSettings::default();
        let mut unit = AhuState::new(4, 0.0, &settings);
        let mut last = unit.readings().clone();
        let mut modes = std::collections::BTreeSet::new();
        for step in 1..=8640 {
            unit.advance(f64::from(step) * 10.0, TEN_S, &settings);
            let r = unit.readings().clone();
            assert!((-10.0..=60.0).contains(&r.supply_air_temp_c), "{r:?}");
            assert!((15.0..=30.0).contains(&r.return_air_temp_c), "{r:?}");
            assert!((-30.0..=50.0).contains(&r.mixed_air_temp_c), "{r:?}");
            assert!((0.0..=35.0).contains(&r.outside_air_temp_c), "{r:?}");
            assert!(
                (0.0..=2500.0).contains(&r.supply_static_pressure_pa),
                "{r:?}"
            );
            assert!(
                (-100.0..=100.0).contains(&r.building_static_pressure_pa),
                "{r:?}"
            );
            assert!((400.0..=1500.0).contains(&r.return_co2_ppm), "{r:?}");
            assert!((0.0..=1000.0).contains(&r.filter_pressure_drop_pa), "{r:?}");
            for pct in [
                r.supply_fan_speed_pct,
                r.return_fan_speed_pct,
                r.cooling_valve_pct,
                r.heating_valve_pct,
                r.outside_air_damper_pct,
            ] {
                assert!((0.0..=100.0).contains(&pct), "{r:?}");
            }
            assert!(r.outside_airflow_m3h >= 0.0, "{r:?}");
            assert!(
                !r.supply_fan_fault && !r.freeze_stat && !r.filter_alarm,
                "{r:?}"
            );
            assert!(
                (r.supply_air_temp_c - last.supply_air_temp_c).abs() <= 0.3,
                "{last:?} -> {r:?}"
            );
            assert!(
                (r.return_air_temp_c - last.return_air_temp_c).abs() <= 0.2,
                "{last:?} -> {r:?}"
            );
            modes.insert(r.operating_mode as u32);
            last = r;
        }
        // A mild day: free cooling in the morning, the chiller in the afternoon.
        assert!(
            modes.contains(&(OperatingMode::Economizer as u32)),
            "{modes:?}"
        );
        assert!(
            modes.contains(&(OperatingMode::MechanicalCooling as u32)),
            "{modes:?}"
        );
    }

    #[test]
    fn an_occupied_afternoon_has_more_co2_and_warmer_return_air_than_the_night() {
        let settings = AhuSettings::default();
        let night = AhuState::new(5, 3.0 * 3600.0, &settings);
        let afternoon = AhuState::new(5, 14.0 * 3600.0, &settings);
        assert!(
            afternoon.readings().return_co2_ppm > night.readings().return_co2_ppm + 150.0,
            "{:?} vs {:?}",
            night.readings(),
            afternoon.readings()
        );
        assert!(afternoon.readings().return_air_temp_c > night.readings().return_air_temp_c + 1.0);
        assert!(afternoon.readings().supply_fan_speed_pct > night.readings().supply_fan_speed_pct);
    }

    #[test]
    fn the_unoccupied_mode_or_a_disable_stops_the_unit() {
        for settings in [
            AhuSettings {
                occupancy_mode: 2,
                ..AhuSettings::default()
            },
            AhuSettings {
                enabled: false,
                ..AhuSettings::default()
            },
        ] {
            let unit = AhuState::new(6, 12.0 * 3600.0, &settings);
            let r = unit.readings();
            assert!(!r.supply_fan_running, "{settings:?}: {r:?}");
            assert_eq!(r.operating_mode, OperatingMode::Off);
            assert_eq!(r.outside_air_damper_pct, 0.0);
        }
    }
}

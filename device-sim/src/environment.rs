//! The model of a simulated indoor environment sensor (an AM2301 on a Tasmota board):
//! temperature and humidity drifting slowly around a daily pattern, and the Tasmota
//! `tele/<topic>/SENSOR` payload that reports them.
//!
//! Pure: no IO, no clock. [`EnvironmentState::advance`] takes the time of day and the elapsed
//! time; [`tasmota_sensor_payload`] takes the timestamp to print. `mqtt_sensor` does the
//! publishing.

use std::f64::consts::PI;
use std::time::Duration;

use crate::clock::{SECONDS_PER_DAY, format_tasmota_time};

/// One reading of the sensor, rounded as Tasmota reports it (one decimal).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EnvironmentReading {
    pub temperature_c: f64,
    pub humidity_pct: f64,
}

impl EnvironmentReading {
    /// Dew point from the Magnus formula (coefficients for water over −45..60 °C).
    pub fn dew_point_c(&self) -> f64 {
        const B: f64 = 17.62;
        const C: f64 = 243.12;
        let rh = self.humidity_pct.clamp(0.1, 100.0) / 100.0;
        let gamma = rh.ln() + B * self.temperature_c / (C + self.temperature_c);
        C * gamma / (B - gamma)
    }
}

/// The drifting state of one sensor. Call order: [`EnvironmentState::new`], then
/// [`EnvironmentState::advance`] before each [`EnvironmentState::reading`].
#[derive(Clone, Debug)]
pub struct EnvironmentState {
    rng: fastrand::Rng,
    /// Offsets from the daily pattern, wandering slowly.
    temperature_drift: f64,
    humidity_drift: f64,
    reading: EnvironmentReading,
}

impl EnvironmentState {
    pub fn new(seed: u64, seconds_of_day: f64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        // Each room runs a little warm or cool and damp or dry.
        let temperature_drift = (rng.f64() - 0.5) * 1.5;
        let humidity_drift = (rng.f64() - 0.5) * 8.0;
        let mut state = EnvironmentState {
            rng,
            temperature_drift,
            humidity_drift,
            reading: EnvironmentReading {
                temperature_c: 0.0,
                humidity_pct: 0.0,
            },
        };
        state.update(seconds_of_day);
        state
    }

    pub fn reading(&self) -> EnvironmentReading {
        self.reading
    }

    /// Lets `dt` pass and recomputes the reading for `seconds_of_day` (the new time).
    pub fn advance(&mut self, seconds_of_day: f64, dt: Duration) {
        let dt_s = dt.as_secs_f64().min(SECONDS_PER_DAY);
        // A random walk pulled back to zero over half an hour keeps the drift slow and bounded.
        let pull = (-dt_s / 1800.0).exp();
        let spread = (1.0 - pull * pull).sqrt();
        self.temperature_drift = (self.temperature_drift * pull
            + spread * 0.6 * (self.rng.f64() * 2.0 - 1.0))
            .clamp(-2.0, 2.0);
        self.humidity_drift = (self.humidity_drift * pull
            + spread * 4.0 * (self.rng.f64() * 2.0 - 1.0))
            .clamp(-10.0, 10.0);
        self.update(seconds_of_day);
    }

    fn update(&mut self, seconds_of_day: f64) {
        // Warmest mid-afternoon (15:00), coolest before dawn; air gets drier as it warms.
        let phase = 2.0 * PI * (seconds_of_day.rem_euclid(SECONDS_PER_DAY) / 3600.0 - 9.0) / 24.0;
        let temperature = 22.0 + 1.5 * phase.sin() + self.temperature_drift;
        let humidity = 45.0 - 5.0 * phase.sin() + self.humidity_drift;
        self.reading = EnvironmentReading {
            temperature_c: round1(temperature.clamp(15.0, 30.0)),
            humidity_pct: round1(humidity.clamp(20.0, 80.0)),
        };
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The Tasmota telemetry payload for an AM2301 sensor, with the keys in Tasmota's order:
/// `{"Time":"2026-11-28T10:00:00","AM2301":{"Temperature":22.4,"Humidity":45.1,"DewPoint":9.9},"TempUnit":"C"}`.
/// `local_unix_s` is the Unix time already shifted to the sensor's time zone.
pub fn tasmota_sensor_payload(local_unix_s: i64, reading: &EnvironmentReading) -> String {
    format!(
        r#"{{"Time":"{}","AM2301":{{"Temperature":{:.1},"Humidity":{:.1},"DewPoint":{:.1}}},"TempUnit":"C"}}"#,
        format_tasmota_time(local_unix_s),
        reading.temperature_c,
        reading.humidity_pct,
        reading.dew_point_c(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_matches_tasmota_byte_for_byte() {
        let reading = EnvironmentReading {
            temperature_c: 22.4,
            humidity_pct: 45.1,
        };
        assert_eq!(
            tasmota_sensor_payload(1_795_860_000, &reading),
            r#"{"Time":"2026-11-28T10:00:00","AM2301":{"Temperature":22.4,"Humidity":45.1,"DewPoint":9.9},"TempUnit":"C"}"#
        );
    }

    #[test]
    fn the_payload_is_json_with_the_pointers_a_profile_uses() {
        let reading = EnvironmentReading {
            temperature_c: -3.0,
            humidity_pct: 80.0,
        };
        let json: serde_json::Value =
            serde_json::from_str(&tasmota_sensor_payload(0, &reading)).unwrap();
        assert_eq!(
            json.pointer("/AM2301/Temperature").and_then(|v| v.as_f64()),
            Some(-3.0)
        );
        assert_eq!(
            json.pointer("/AM2301/Humidity").and_then(|v| v.as_f64()),
            Some(80.0)
        );
        assert_eq!(
            json.pointer("/TempUnit").and_then(|v| v.as_str()),
            Some("C")
        );
        assert_eq!(
            json.pointer("/Time").and_then(|v| v.as_str()),
            Some("1970-01-01T00:00:00")
        );
    }

    #[test]
    fn the_dew_point_is_below_the_temperature_and_equal_at_saturation() {
        let dry = EnvironmentReading {
            temperature_c: 22.0,
            humidity_pct: 40.0,
        };
        assert!(
            (dry.dew_point_c() - 7.8).abs() < 0.2,
            "{}",
            dry.dew_point_c()
        );
        let saturated = EnvironmentReading {
            temperature_c: 22.0,
            humidity_pct: 100.0,
        };
        assert!((saturated.dew_point_c() - 22.0).abs() < 1e-9);
    }

    #[test]
    fn readings_drift_slowly_and_stay_indoor_plausible() {
        let mut sensor = EnvironmentState::new(9, 0.0);
        let mut last = sensor.reading();
        for step in 1..=8640 {
            // Ten seconds a step: a whole day.
            sensor.advance(f64::from(step) * 10.0, Duration::from_secs(10));
            let now = sensor.reading();
            assert!((15.0..=30.0).contains(&now.temperature_c), "{now:?}");
            assert!((20.0..=80.0).contains(&now.humidity_pct), "{now:?}");
            assert!(
                (now.temperature_c - last.temperature_c).abs() <= 0.3,
                "{last:?} -> {now:?}"
            );
            assert!(
                (now.humidity_pct - last.humidity_pct).abs() <= 2.0,
                "{last:?} -> {now:?}"
            );
            last = now;
        }
    }

    #[test]
    fn the_afternoon_is_warmer_than_the_early_morning_on_average() {
        let mean = |hour: f64| {
            (0..50u64)
                .map(|seed| {
                    EnvironmentState::new(seed, hour * 3600.0)
                        .reading()
                        .temperature_c
                })
                .sum::<f64>()
                / 50.0
        };
        assert!(mean(15.0) > mean(3.0) + 2.0);
    }
}

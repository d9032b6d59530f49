//! The size of raw telemetry on the wire, measured on realistic building data: the
//! system's goal is at most 8 bytes per raw sample. This checks a size property of the
//! encoding, not a speed.

use sync_protocol::{Message, Quality, RawBatch, RawSample, RawSeries, Value};

/// A small deterministic generator (xorshift64*), so the data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [-a, a].
    fn noise(&mut self, a: f64) -> f64 {
        (self.unit() * 2.0 - 1.0) * a
    }
}

/// Rounds to the resolution a device register gives (scale factor 10^-digits).
fn quantize(v: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (v * p).round() / p
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    EnergyMeter,
    Hvac,
    Environment,
}

/// One point's generator: given the sample index and the time in seconds, a value.
type PointFn = Box<dyn FnMut(&mut Rng, usize, f64) -> Value>;

fn points(class: Class, device: usize) -> Vec<(String, PointFn)> {
    let d = device as f64;
    let mut out: Vec<(String, PointFn)> = Vec::new();
    match class {
        Class::EnergyMeter => {
            for phase in 1..=3 {
                let base = 229.0 + d % 3.0 + phase as f64 * 0.3;
                out.push((
                    format!("meter-{device:03}/voltage_l{phase}"),
                    Box::new(move |r, _, t| {
                        Value::Float(quantize(base + (t / 900.0).sin() * 1.5 + r.noise(0.2), 1))
                    }),
                ));
            }
            for phase in 1..=3 {
                let base = 12.0 + (d * 7.0) % 30.0;
                out.push((
                    format!("meter-{device:03}/current_l{phase}"),
                    Box::new(move |r, _, t| {
                        Value::Float(quantize(base + (t / 600.0).sin() * 2.0 + r.noise(0.05), 2))
                    }),
                ));
            }
            let base = 8.0 + (d * 3.0) % 20.0;
            out.push((
                format!("meter-{device:03}/power_kw"),
                Box::new(move |r, _, t| {
                    Value::Float(quantize(base + (t / 600.0).sin() * 1.2 + r.noise(0.02), 3))
                }),
            ));
            out.push((
                format!("meter-{device:03}/frequency"),
                Box::new(|r, _, _| Value::Float(quantize(50.0 + r.noise(0.02), 2))),
            ));
            out.push((
                format!("meter-{device:03}/power_factor"),
                Box::new(|r, _, _| Value::Float(quantize(0.95 + r.noise(0.004), 3))),
            ));
            let mut energy = 100_000.0 + d * 1_234.5;
            out.push((
                format!("meter-{device:03}/energy_kwh"),
                Box::new(move |r, _, _| {
                    energy += 0.003 + r.unit() * 0.002;
                    Value::Float(quantize(energy, 2))
                }),
            ));
        }
        Class::Hvac => {
            for (name, base, amp) in [
                ("supply_temp", 16.0, 0.8),
                ("return_temp", 24.0, 0.5),
                ("room_temp", 22.5, 0.4),
            ] {
                out.push((
                    format!("ahu-{device:03}/{name}"),
                    Box::new(move |r, _, t| {
                        Value::Float(quantize(base + (t / 1800.0).sin() * amp + r.noise(0.05), 1))
                    }),
                ));
            }
            out.push((
                format!("ahu-{device:03}/setpoint"),
                Box::new(|_, _, _| Value::Float(22.0)),
            ));
            out.push((
                format!("ahu-{device:03}/valve_pct"),
                Box::new(|_, i, _| Value::Int(40 + (i / 20) as i64)),
            ));
            out.push((
                format!("ahu-{device:03}/fan_on"),
                Box::new(|_, _, _| Value::Bool(true)),
            ));
            out.push((
                format!("ahu-{device:03}/fan_rpm"),
                Box::new(|r, _, _| Value::Int(1450 + (r.noise(8.0)) as i64)),
            ));
            out.push((
                format!("ahu-{device:03}/filter_dp_pa"),
                Box::new(|r, _, t| Value::Float(quantize(120.0 + t / 3600.0 + r.noise(0.3), 1))),
            ));
            out.push((
                format!("ahu-{device:03}/alarm"),
                Box::new(|_, _, _| Value::Bool(false)),
            ));
            out.push((
                format!("ahu-{device:03}/mode"),
                Box::new(|_, _, _| Value::Int(2)),
            ));
        }
        Class::Environment => {
            for room in 0..2 {
                out.push((
                    format!("env-{device:03}/room{room}_temp"),
                    Box::new(|r, _, t| {
                        Value::Float(quantize(23.0 + (t / 2400.0).cos() + r.noise(0.05), 1))
                    }),
                ));
                out.push((
                    format!("env-{device:03}/room{room}_humidity"),
                    Box::new(|r, _, t| {
                        Value::Float(quantize(45.0 + (t / 3000.0).sin() * 3.0 + r.noise(0.2), 1))
                    }),
                ));
                out.push((
                    format!("env-{device:03}/room{room}_co2_ppm"),
                    Box::new(|r, _, t| {
                        Value::Int((600.0 + (t / 1200.0).sin() * 80.0 + r.noise(4.0)) as i64)
                    }),
                ));
                out.push((
                    format!("env-{device:03}/room{room}_lux"),
                    Box::new(|r, _, _| Value::Int((350.0 + r.noise(3.0)) as i64)),
                ));
                out.push((
                    format!("env-{device:03}/room{room}_occupied"),
                    Box::new(|_, i, _| Value::Bool(i >= 30)),
                ));
            }
        }
    }
    out
}

/// 1,000 points (40 energy meters, 30 air handlers, 30 room sensor boxes, 10 points each),
/// 60 samples per point. Meters are read every second, air handlers every 5 s, sensors
/// every 10 s; each read completes with ±2 ms of jitter, and one sensor box times out for
/// 12 reads (bad samples without a value).
fn building_minute() -> Vec<(Class, RawSeries)> {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let start: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z
    let mut out = Vec::new();
    for device in 0..100 {
        let (class, interval_s) = match device {
            0..40 => (Class::EnergyMeter, 1),
            40..70 => (Class::Hvac, 5),
            _ => (Class::Environment, 10),
        };
        let mut pts = points(class, device);
        let mut series: Vec<RawSeries> = pts
            .iter()
            .map(|(name, _)| RawSeries {
                point: name.clone(),
                samples: Vec::new(),
            })
            .collect();
        let offset = (device as i64) * 7_919; // devices are polled at staggered instants
        for i in 0..60 {
            let jitter = (rng.noise(2_000.0)) as i64;
            let ts = start + offset + i as i64 * interval_s * 1_000_000 + jitter;
            let t = (ts - start) as f64 / 1e6;
            let offline = device == 77 && (20..32).contains(&i);
            for ((_, f), s) in pts.iter_mut().zip(series.iter_mut()) {
                let value = f(&mut rng, i, t);
                s.samples.push(if offline {
                    RawSample {
                        ts,
                        value: None,
                        quality: Quality::Bad("timeout".into()),
                    }
                } else {
                    RawSample {
                        ts,
                        value: Some(value),
                        quality: Quality::Good,
                    }
                });
            }
        }
        out.extend(series.into_iter().map(|s| (class, s)));
    }
    out
}

fn frame_len(series: Vec<RawSeries>) -> (usize, usize) {
    let batch = RawBatch { series };
    let samples = batch.sample_count();
    let bytes = Message::Raw(batch.clone()).encode(1_234_567).unwrap();
    let (_, back) = Message::decode(&bytes).unwrap();
    assert_eq!(back, Message::Raw(batch), "the batch must round-trip");
    (bytes.len(), samples)
}

#[test]
fn a_minute_of_a_thousand_realistic_points_takes_at_most_8_bytes_per_sample() {
    let data = building_minute();
    assert_eq!(data.len(), 1_000);
    for class in [Class::EnergyMeter, Class::Hvac, Class::Environment] {
        let (bytes, samples) = frame_len(
            data.iter()
                .filter(|(c, _)| *c == class)
                .map(|(_, s)| s.clone())
                .collect(),
        );
        println!(
            "{class:?}: {samples} samples in {bytes} bytes = {:.2} bytes/sample",
            bytes as f64 / samples as f64
        );
    }
    let (bytes, samples) = frame_len(data.into_iter().map(|(_, s)| s).collect());
    let per_sample = bytes as f64 / samples as f64;
    println!(
        "sync_wire_bytes_per_sample={per_sample:.3} ({samples} samples, {bytes} bytes in one frame)"
    );
    assert_eq!(samples, 60_000);
    assert!(per_sample <= 8.0, "{per_sample:.3} bytes per sample");
}

#[test]
fn full_precision_noise_is_reported_not_hidden() {
    // Values with no short decimal form (computed floats) are the encoding's worst
    // realistic case; this prints their cost so that the figure is known, and checks only
    // that it stays below the plain 8-byte float plus an 8-byte timestamp.
    let mut rng = Rng(7);
    let series: Vec<RawSeries> = (0..100)
        .map(|p| RawSeries {
            point: format!("calc-{p:03}/efficiency"),
            samples: (0..60)
                .map(|i| RawSample {
                    ts: 1_767_225_600_000_000 + i * 1_000_000 + rng.noise(2_000.0) as i64,
                    value: Some(Value::Float(
                        0.9 + (i as f64 / 50.0).sin() * 0.01 + rng.noise(1e-4),
                    )),
                    quality: Quality::Good,
                })
                .collect(),
        })
        .collect();
    let (bytes, samples) = frame_len(series);
    let per_sample = bytes as f64 / samples as f64;
    println!("full-precision floats: {per_sample:.2} bytes/sample");
    assert!(per_sample < 16.0);
}

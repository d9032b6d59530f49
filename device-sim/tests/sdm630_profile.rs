//! Checks the simulated SDM630 against `firmware-configs/profiles/eastron-sdm630.toml`: every
//! point the profile names is served, decodes as the profile says, and lies in its plausible
//! range, and the block reads its gap settings imply are all answered.
//!
//! It reads the profile as plain TOML rather than through `device-drivers`, so it checks the
//! register layout only, not the profile format (the profile loader's own tests do that).

use std::borrow::Cow;

use device_sim::meter::MeterState;
use device_sim::sdm630::{Sdm630, read_input_registers};
use tokio_modbus::{Request, Response};

struct Point {
    name: String,
    table: String,
    address: u16,
    min: Option<f64>,
    max: Option<f64>,
}

struct Profile {
    max_block: u16,
    max_gap: u16,
    points: Vec<Point>,
}

fn load_profile() -> Profile {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../firmware-configs/profiles/eastron-sdm630.toml"
    );
    let text = std::fs::read_to_string(path).expect("the SDM630 profile exists");
    let table: toml::Table = text.parse().expect("the SDM630 profile is TOML");
    let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    let modbus = table["modbus"].as_table().unwrap();
    let points = table["point"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["type"].as_str(), Some("f32"), "{p}");
            Point {
                name: p["name"].as_str().unwrap().to_owned(),
                table: p["table"].as_str().unwrap().to_owned(),
                address: u16::try_from(p["address"].as_integer().unwrap()).unwrap(),
                min: p.get("min").and_then(number),
                max: p.get("max").and_then(number),
            }
        })
        .collect();
    Profile {
        max_block: u16::try_from(modbus["max_block_registers"].as_integer().unwrap()).unwrap(),
        max_gap: u16::try_from(modbus["max_gap_registers"].as_integer().unwrap()).unwrap(),
        points,
    }
}

fn decode(words: &[u16]) -> f64 {
    f64::from(f32::from_bits(
        u32::from(words[0]) << 16 | u32::from(words[1]),
    ))
}

fn busy_meter() -> Sdm630 {
    let mut meter = MeterState::new(8, 11.0 * 3600.0, 45.0);
    meter.advance(std::time::Duration::from_secs(3 * 3600));
    Sdm630::new(meter)
}

#[test]
fn every_profile_point_is_served_and_within_its_plausible_range() {
    let profile = load_profile();
    let mut sdm = busy_meter();
    for p in &profile.points {
        let words = match p.table.as_str() {
            "input" => read_input_registers(sdm.meter.readings(), p.address, 2)
                .unwrap_or_else(|e| panic!("{} at {:#06x}: {e:?}", p.name, p.address)),
            "holding" => match sdm.handle_request(&Request::ReadHoldingRegisters(p.address, 2)) {
                Ok(Response::ReadHoldingRegisters(words)) => words,
                other => panic!("{}: {other:?}", p.name),
            },
            other => panic!("{}: unexpected table {other}", p.name),
        };
        let value = decode(&words);
        assert!(p.min.is_none_or(|min| value >= min), "{} = {value}", p.name);
        assert!(p.max.is_none_or(|max| value <= max), "{} = {value}", p.name);
    }
}

#[test]
fn the_blocks_that_the_gap_settings_join_are_all_answered() {
    let profile = load_profile();
    let sdm = busy_meter();
    let mut inputs: Vec<u16> = profile
        .points
        .iter()
        .filter(|p| p.table == "input")
        .map(|p| p.address)
        .collect();
    inputs.sort_unstable();
    // Join points greedily while the gap and the block size allow, as a poller would.
    let mut blocks: Vec<(u16, u16)> = Vec::new();
    for address in inputs {
        match blocks.last_mut() {
            Some((start, end))
                if address - *end <= profile.max_gap
                    && address + 2 - *start <= profile.max_block =>
            {
                *end = address + 2;
            }
            _ => blocks.push((address, address + 2)),
        }
    }
    assert!(
        blocks.len() <= 5,
        "the map should read in few blocks: {blocks:x?}"
    );
    for (start, end) in blocks {
        let answer = read_input_registers(sdm.meter.readings(), start, end - start);
        assert!(answer.is_ok(), "block {start:#06x}..{end:#06x}: {answer:?}");
    }
}

#[test]
fn the_writable_point_accepts_a_documented_demand_period() {
    let profile = load_profile();
    let point = profile
        .points
        .iter()
        .find(|p| p.table == "holding")
        .expect("one setting");
    let mut sdm = busy_meter();
    let bits = 15f32.to_bits();
    let words = vec![(bits >> 16) as u16, bits as u16];
    let answer = sdm.handle_request(&Request::WriteMultipleRegisters(
        point.address,
        Cow::Owned(words),
    ));
    assert_eq!(
        answer,
        Ok(Response::WriteMultipleRegisters(point.address, 2))
    );
    assert_eq!(sdm.demand_period_min(), 15.0);
}

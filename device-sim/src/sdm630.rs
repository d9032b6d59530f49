//! The Eastron SDM630 (Modbus V2) register layout of the simulated meter: which addresses it
//! answers, how readings become IEEE 754 floats in big-endian register pairs, and the one
//! setting it lets a client write (the demand period).
//!
//! Pure: [`Sdm630::handle_request`] maps one Modbus request to a response or an exception,
//! with no sockets, so the layout is tested without a network. The addresses are those of
//! `firmware-configs/profiles/eastron-sdm630.toml`. Registers inside an answered window that
//! the simulation does not model (phase angles, demand values) read as 0.0; a real meter
//! would fill them in.

use std::ops::Range;

use tokio_modbus::{ExceptionCode, Request, Response};

use crate::meter::{MeterState, Readings};

/// Input-register windows the meter answers. A read must lie wholly inside one of them,
/// otherwise it gets `IllegalDataAddress`, as the real meter does outside its map.
pub const INPUT_WINDOWS: [Range<u16>; 3] = [0x0000..0x0050, 0x00C8..0x00E2, 0x0156..0x015A];

/// The SDM630 answers at most 40 parameters (80 registers) in one request.
pub const MAX_READ_REGISTERS: u16 = 80;

/// The holding register of the demand period, in minutes, as an f32.
pub const DEMAND_PERIOD_ADDRESS: u16 = 0x0002;

/// Demand periods the meter accepts, in minutes (0 shows instantaneous values as demand).
pub const DEMAND_PERIODS_MIN: [f32; 8] = [0.0, 5.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0];

/// A simulated SDM630: the evolving measurement plus its writable settings.
#[derive(Clone, Debug)]
pub struct Sdm630 {
    pub meter: MeterState,
    demand_period_min: f32,
}

impl Sdm630 {
    pub fn new(meter: MeterState) -> Self {
        // 60 minutes is the factory setting.
        Sdm630 {
            meter,
            demand_period_min: 60.0,
        }
    }

    pub fn demand_period_min(&self) -> f32 {
        self.demand_period_min
    }

    /// Answers one request. Function codes 03, 04 and 16 are served, as on the real meter;
    /// everything else is `IllegalFunction`.
    pub fn handle_request(&mut self, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        match request {
            Request::ReadInputRegisters(address, count) => {
                read_input_registers(self.meter.readings(), *address, *count)
                    .map(Response::ReadInputRegisters)
            }
            Request::ReadHoldingRegisters(address, count) => {
                check_count(*count)?;
                if *address != DEMAND_PERIOD_ADDRESS || *count > 2 {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                let words = f32_words(self.demand_period_min);
                Ok(Response::ReadHoldingRegisters(
                    words[..usize::from(*count)].to_vec(),
                ))
            }
            Request::WriteMultipleRegisters(address, words) => {
                if *address != DEMAND_PERIOD_ADDRESS || words.len() != 2 {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                let minutes = f32::from_bits(u32::from(words[0]) << 16 | u32::from(words[1]));
                if !DEMAND_PERIODS_MIN.contains(&minutes) {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                self.demand_period_min = minutes;
                Ok(Response::WriteMultipleRegisters(*address, 2))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

fn check_count(count: u16) -> Result<(), ExceptionCode> {
    if count == 0 || count > MAX_READ_REGISTERS {
        return Err(ExceptionCode::IllegalDataValue);
    }
    Ok(())
}

/// Reads `count` input registers from `address`, every parameter an f32 with the high word
/// first. A read may start in the middle of a parameter; it then gets its low word.
pub fn read_input_registers(
    readings: &Readings,
    address: u16,
    count: u16,
) -> Result<Vec<u16>, ExceptionCode> {
    check_count(count)?;
    let end = u32::from(address) + u32::from(count);
    let inside = INPUT_WINDOWS
        .iter()
        .any(|w| address >= w.start && end <= u32::from(w.end));
    if !inside {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok((address..address + count)
        .map(|a| f32_words(input_value(readings, a & !1))[usize::from(a & 1)])
        .collect())
}

/// The value of the parameter whose first register is `address`, in the meter's units.
fn input_value(r: &Readings, address: u16) -> f32 {
    let phase = |base: u16| usize::from((address - base) / 2);
    let va = r.apparent_power_va();
    let var = r.reactive_power_var();
    let value = match address {
        0x0000..=0x0004 => r.voltage_v[phase(0x0000)],
        0x0006..=0x000A => r.current_a[phase(0x0006)],
        0x000C..=0x0010 => r.power_w[phase(0x000C)],
        0x0012..=0x0016 => va[phase(0x0012)],
        0x0018..=0x001C => var[phase(0x0018)],
        0x001E..=0x0022 => r.power_factor[phase(0x001E)],
        0x002A => r.voltage_v.iter().sum::<f64>() / 3.0,
        0x002E => r.current_a.iter().sum::<f64>() / 3.0,
        0x0030 => r.current_a.iter().sum(),
        0x0034 => r.total_power_w(),
        0x0038 => r.total_apparent_power_va(),
        0x003C => r.total_reactive_power_var(),
        0x003E => r.total_power_factor(),
        0x0046 => r.frequency_hz,
        0x0048 => r.import_kwh,
        0x004A => r.export_kwh,
        0x004C => r.import_kvarh,
        0x004E => r.export_kvarh,
        0x00C8..=0x00CC => r.line_voltage_v()[phase(0x00C8)],
        0x00CE => r.line_voltage_v().iter().sum::<f64>() / 3.0,
        0x00E0 => r.neutral_current_a(),
        0x0156 => r.total_kwh(),
        0x0158 => r.total_kvarh(),
        _ => 0.0,
    };
    value as f32
}

/// An f32 as two registers, high word first (the SDM630's only word order).
fn f32_words(value: f32) -> [u16; 2] {
    let bits = value.to_bits();
    [(bits >> 16) as u16, bits as u16]
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn meter() -> Sdm630 {
        Sdm630::new(MeterState::new(5, 12.0 * 3600.0, 90.0))
    }

    fn float_at(words: &[u16], index: usize) -> f32 {
        f32::from_bits(u32::from(words[index]) << 16 | u32::from(words[index + 1]))
    }

    #[test]
    fn one_block_read_returns_every_basic_parameter_in_order() {
        let mut m = meter();
        let Ok(Response::ReadInputRegisters(words)) =
            m.handle_request(&Request::ReadInputRegisters(0, 80))
        else {
            panic!("the first 80 registers are one window");
        };
        let r = m.meter.readings();
        assert_eq!(float_at(&words, 0x00), r.voltage_v[0] as f32);
        assert_eq!(float_at(&words, 0x04), r.voltage_v[2] as f32);
        assert_eq!(float_at(&words, 0x08), r.current_a[1] as f32);
        assert_eq!(float_at(&words, 0x0C), r.power_w[0] as f32);
        assert_eq!(float_at(&words, 0x34), r.total_power_w() as f32);
        assert_eq!(float_at(&words, 0x46), r.frequency_hz as f32);
        assert_eq!(float_at(&words, 0x48), r.import_kwh as f32);
        let pf = float_at(&words, 0x3E);
        assert!((0.85..=1.0).contains(&pf), "{pf}");
        assert_eq!(
            float_at(&words, 0x24),
            0.0,
            "phase angles are not simulated"
        );
    }

    #[test]
    fn reads_outside_the_map_or_across_its_end_are_illegal_addresses() {
        let r = meter().meter.readings().clone();
        assert_eq!(
            read_input_registers(&r, 0x1000, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_input_registers(&r, 0x004E, 4),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_input_registers(&r, 0x0154, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_input_registers(&r, 0xFFFF, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        let total = read_input_registers(&r, 0x0156, 2).unwrap();
        assert_eq!(float_at(&total, 0), r.total_kwh() as f32);
    }

    #[test]
    fn more_than_forty_parameters_in_one_request_is_an_illegal_value() {
        let r = meter().meter.readings().clone();
        assert_eq!(
            read_input_registers(&r, 0, 82),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            read_input_registers(&r, 0, 0),
            Err(ExceptionCode::IllegalDataValue)
        );
    }

    #[test]
    fn the_demand_period_can_be_written_only_with_a_documented_value() {
        let mut m = meter();
        let write = |minutes: f32| {
            Request::WriteMultipleRegisters(
                DEMAND_PERIOD_ADDRESS,
                Cow::Owned(f32_words(minutes).to_vec()),
            )
        };
        assert_eq!(
            m.handle_request(&write(15.0)),
            Ok(Response::WriteMultipleRegisters(2, 2))
        );
        assert_eq!(m.demand_period_min(), 15.0);
        assert_eq!(
            m.handle_request(&write(7.0)),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(m.demand_period_min(), 15.0);
        let read = m.handle_request(&Request::ReadHoldingRegisters(DEMAND_PERIOD_ADDRESS, 2));
        assert_eq!(
            read,
            Ok(Response::ReadHoldingRegisters(f32_words(15.0).to_vec()))
        );
        assert_eq!(
            m.handle_request(&Request::ReadHoldingRegisters(0x0000, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn function_codes_the_meter_lacks_are_illegal_functions() {
        let mut m = meter();
        assert_eq!(
            m.handle_request(&Request::ReadCoils(0, 8)),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(
            m.handle_request(&Request::WriteSingleRegister(DEMAND_PERIOD_ADDRESS, 0)),
            Err(ExceptionCode::IllegalFunction)
        );
    }
}

//! One Modbus device's work over a [`Link`]: a poll cycle that turns block reads into
//! samples, and a verified write. Shared by the TCP driver and the RTU bus.
//!
//! It does not own the link, keep time, schedule polls or reconnect: the caller decides
//! when to poll and what a failed exchange means for the connection.

use std::sync::Arc;

use tracing::{debug, warn};

use crate::device::{Connection, DeviceSpec};
use crate::driver::WriteError;
use crate::modbus::codec::{self, Encoded, Raw, Reading};
use crate::modbus::link::{BlockData, Link, LinkError, Timing};
use crate::modbus::plan::{Block, plan_blocks};
use crate::profile::{ModbusPoint, PointSource, PointSpec, RegisterTable};
use crate::sample::{PointKey, Sample, Timestamp, Value, now_micros};

/// A device's points, keys and read plan, computed once.
#[derive(Debug)]
pub struct Poller {
    pub id: String,
    spec: DeviceSpec,
    keys: Vec<PointKey>,
    blocks: Vec<Block>,
    unit: u8,
}

/// What one poll cycle produced.
#[derive(Debug)]
pub struct PollOutcome {
    /// One sample per Modbus point, all with the cycle's timestamp.
    pub samples: Vec<Sample>,
    /// The device answered at least one request (with data or with an exception).
    pub answered: bool,
    /// The failure that ended the cycle early, when the caller's `stops` said so.
    pub stopped_by: Option<Stop>,
}

/// A failure that ended a poll cycle, and the reason its points were given.
#[derive(Debug)]
pub struct Stop {
    pub error: LinkError,
    /// The error, naming the read that failed.
    pub reason: Arc<str>,
}

/// A write that passed validation and encoding, ready for the wire.
#[derive(Debug, Clone)]
pub struct PreparedWrite {
    index: usize,
    encoded: Encoded,
}

/// Why a write failed: refused before or by the device, or lost on the link.
#[derive(Debug)]
pub enum WriteFailure {
    Refused(WriteError),
    Link(LinkError),
}

impl Poller {
    pub fn new(spec: &DeviceSpec) -> Self {
        let profile = &spec.profile;
        let keys = profile
            .points
            .iter()
            .map(|p| PointKey::new(&spec.id, &p.name))
            .collect();
        let blocks = plan_blocks(&profile.points, &profile.modbus);
        let unit = match &spec.connection {
            Connection::ModbusTcp { unit, .. } => *unit,
            Connection::ModbusRtu(line) => line.unit,
            Connection::Mqtt { .. } | Connection::Bacnet(_) => 0,
        };
        Poller {
            id: spec.id.clone(),
            spec: spec.clone(),
            keys,
            blocks,
            unit,
        }
    }

    /// Why a read of `block` gave no data: `holding registers 100–131 of unit 2: timed out
    /// after 300 ms`.
    fn read_failure(&self, block: &Block, e: &LinkError) -> Arc<str> {
        format!("{} of unit {}: {e}", block.describe(), self.unit).into()
    }

    fn bad_block(&self, block: &Block, ts: Timestamp, reason: &Arc<str>) -> Vec<Sample> {
        block
            .points
            .iter()
            .map(|&i| Sample::bad(self.keys[i].clone(), ts, reason.clone()))
            .collect()
    }

    fn modbus_point(&self, index: usize) -> Option<(&PointSpec, &ModbusPoint)> {
        let spec = &self.spec.profile.points[index];
        match &spec.source {
            PointSource::Modbus(m) => Some((spec, m)),
            PointSource::Mqtt(_) | PointSource::Bacnet(_) => None,
        }
    }

    /// A bad sample for every Modbus point, for a device that cannot be reached.
    pub fn bad_batch(&self, ts: Timestamp, reason: &Arc<str>) -> Vec<Sample> {
        self.blocks
            .iter()
            .flat_map(|b| &b.points)
            .map(|&i| Sample::bad(self.keys[i].clone(), ts, reason.clone()))
            .collect()
    }

    /// Reads every block in turn. A failed block gives bad samples for its points; when
    /// `stops` says a failure breaks the link, the blocks not yet read get the same reason
    /// without being asked for, so that every point still has exactly one sample.
    pub async fn poll(
        &self,
        link: &mut Link,
        timing: Timing,
        ts: Timestamp,
        stops: impl Fn(&LinkError) -> bool,
    ) -> PollOutcome {
        let mut samples = Vec::with_capacity(self.keys.len());
        let mut answered = false;
        let mut stopped_by: Option<Stop> = None;
        for block in &self.blocks {
            if let Some(stop) = &stopped_by {
                let reason: Arc<str> = format!("not read: {}", stop.reason).into();
                samples.extend(self.bad_block(block, ts, &reason));
                continue;
            }
            match link
                .read(block.table, block.address, block.count, timing)
                .await
            {
                Ok(data) => {
                    answered = true;
                    samples.extend(
                        block
                            .points
                            .iter()
                            .map(|&i| self.sample_from(block, &data, i, ts)),
                    );
                }
                Err(e) => {
                    if matches!(e, LinkError::Exception(_)) {
                        answered = true;
                    }
                    let reason = self.read_failure(block, &e);
                    debug!(device = %self.id, %reason, "Modbus read failed.");
                    samples.extend(self.bad_block(block, ts, &reason));
                    if stops(&e) {
                        stopped_by = Some(Stop { error: e, reason });
                    }
                }
            }
        }
        PollOutcome {
            samples,
            answered,
            stopped_by,
        }
    }

    fn sample_from(&self, block: &Block, data: &BlockData, index: usize, ts: Timestamp) -> Sample {
        let Some((spec, m)) = self.modbus_point(index) else {
            return Sample::bad(self.keys[index].clone(), ts, "not a Modbus point");
        };
        let reading = decode_at(spec, m, block.address, data);
        Sample {
            point: self.keys[index].clone(),
            ts,
            value: reading.value,
            quality: reading.quality,
        }
    }

    /// Checks a write against the profile and encodes it. Nothing is sent.
    pub fn prepare_write(&self, point: &str, value: &Value) -> Result<PreparedWrite, WriteError> {
        let index = self
            .spec
            .profile
            .points
            .iter()
            .position(|p| p.name == point)
            .ok_or_else(|| WriteError::UnknownPoint(point.to_string()))?;
        let Some((spec, m)) = self.modbus_point(index) else {
            return Err(WriteError::UnknownPoint(point.to_string()));
        };
        if !spec.writable || matches!(m.table, RegisterTable::Input | RegisterTable::Discrete) {
            return Err(WriteError::NotWritable(point.to_string()));
        }
        let encoded = codec::encode(spec, m, value)?;
        Ok(PreparedWrite { index, encoded })
    }

    /// Writes, then reads the same registers back. Returns the read-back sample; its value is
    /// what the caller replies with.
    pub async fn write(
        &self,
        link: &mut Link,
        timing: Timing,
        w: &PreparedWrite,
    ) -> Result<Sample, WriteFailure> {
        let Some((spec, m)) = self.modbus_point(w.index) else {
            return Err(WriteFailure::Refused(WriteError::UnknownPoint(
                String::new(),
            )));
        };
        let width = m.width();
        let (written, data, took) = match &w.encoded {
            Encoded::Registers(words) => {
                link.write_registers(m.address, words, timing)
                    .await
                    .map_err(WriteFailure::Link)?;
                let data = link
                    .read(RegisterTable::Holding, m.address, width, timing)
                    .await
                    .map_err(WriteFailure::Link)?;
                let written = BlockData::Registers(words.clone());
                let took = data == written;
                (
                    codec::describe(&decode_at(spec, m, m.address, &written)),
                    data,
                    took,
                )
            }
            Encoded::Coil(value) => {
                link.write_coil(m.address, *value, timing)
                    .await
                    .map_err(WriteFailure::Link)?;
                let data = link
                    .read(RegisterTable::Coil, m.address, 1, timing)
                    .await
                    .map_err(WriteFailure::Link)?;
                let took = data == BlockData::Bits(vec![*value]);
                (value.to_string().into(), data, took)
            }
            Encoded::Bit { bit, value } => {
                // Read-modify-write: function 22 (mask write) would be atomic, but many
                // devices do not implement it, and every device implements 3 and 6.
                let before = match link
                    .read(RegisterTable::Holding, m.address, 1, timing)
                    .await
                    .map_err(WriteFailure::Link)?
                {
                    BlockData::Registers(r) if r.len() == 1 => r[0],
                    _ => {
                        return Err(WriteFailure::Link(LinkError::Protocol(format!(
                            "the read of holding register {} before the write gave no register",
                            m.address
                        ))));
                    }
                };
                link.write_registers(m.address, &[codec::with_bit(before, *bit, *value)], timing)
                    .await
                    .map_err(WriteFailure::Link)?;
                let data = link
                    .read(RegisterTable::Holding, m.address, 1, timing)
                    .await
                    .map_err(WriteFailure::Link)?;
                // Only the written bit is compared: the device may change the others meanwhile.
                // A reply with no register (a faulty device) is a failed read-back, not a
                // panic.
                let took = matches!(&data, BlockData::Registers(r)
                    if r.first().is_some_and(|r0| (r0 >> bit & 1 == 1) == *value));
                (value.to_string().into(), data, took)
            }
        };
        let reading = decode_at(spec, m, m.address, &data);
        if !took || reading.value.is_none() {
            let read_back = codec::describe(&reading);
            warn!(device = %self.id, point = %spec.name, %written, %read_back, "Modbus write did not take.");
            return Err(WriteFailure::Refused(WriteError::VerifyFailed {
                written: written.to_string(),
                read_back: read_back.to_string(),
            }));
        }
        Ok(Sample {
            point: self.keys[w.index].clone(),
            ts: now_micros(),
            value: reading.value,
            quality: reading.quality,
        })
    }
}
/// Decodes a point out of a block that starts at `block_address`.
fn decode_at(spec: &PointSpec, m: &ModbusPoint, block_address: u16, data: &BlockData) -> Reading {
    let offset = (m.address - block_address) as usize;
    let width = m.width() as usize;
    let raw = match data {
        BlockData::Registers(r) => Raw::Registers(r.get(offset..offset + width).unwrap_or(&[])),
        BlockData::Bits(b) => Raw::Bits(b.get(offset..offset + width).unwrap_or(&[])),
    };
    codec::decode(spec, m, raw)
}

impl WriteFailure {
    /// The error the requester sees.
    pub fn into_write_error(self) -> WriteError {
        match self {
            WriteFailure::Refused(e) => e,
            WriteFailure::Link(LinkError::Timeout(d)) => WriteError::Timeout(d),
            WriteFailure::Link(e @ LinkError::Exception(_)) => WriteError::Refused(e.to_string()),
            WriteFailure::Link(e) => WriteError::Offline(e.to_string()),
        }
    }
}

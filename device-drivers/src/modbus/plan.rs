//! The block planner: which Modbus reads fetch all of a device's points.
//!
//! Points of one table are sorted by address and coalesced into as few reads as the
//! profile's `max_block_registers` and `max_gap_registers` allow. A point is never split
//! across two reads. Pure: the plan is computed once per device from its profile; nothing
//! here talks to a device, and nothing adapts the plan to what a device refuses at run time.

use crate::profile::{ModbusDefaults, PointSource, PointSpec, RegisterTable};

/// The protocol's ceiling for one read of coils or discrete inputs (function codes 1 and 2).
pub const MAX_BITS_PER_READ: u32 = 2000;

/// The protocol's ceiling for one read of holding or input registers (function codes 3, 4).
pub const MAX_REGISTERS_PER_READ: u32 = 125;

/// One read request and the points it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub table: RegisterTable,
    /// First register (or bit) read, zero-based.
    pub address: u16,
    /// Registers (or bits) read.
    pub count: u16,
    /// Indexes into the profile's points, in address order.
    pub points: Vec<usize>,
}

impl Block {
    /// The registers or bits read, in words: `holding registers 100–131`, `coil 7`.
    pub fn describe(&self) -> String {
        let (one, many) = match self.table {
            RegisterTable::Holding => ("holding register", "holding registers"),
            RegisterTable::Input => ("input register", "input registers"),
            RegisterTable::Coil => ("coil", "coils"),
            RegisterTable::Discrete => ("discrete input", "discrete inputs"),
        };
        let last = self.address as u32 + self.count as u32 - 1;
        if self.count <= 1 {
            format!("{one} {}", self.address)
        } else {
            format!("{many} {}\u{2013}{last}", self.address)
        }
    }
}

/// Plans the reads for a profile's Modbus points; other points are ignored.
///
/// For coils and discrete inputs the limits are counted in bits, sixteen to a register, and
/// capped at what the protocol allows. A point wider than `max_block_registers` (a 64-bit
/// value with a limit under four) gets a read of its own rather than being split.
pub fn plan_blocks(points: &[PointSpec], limits: &ModbusDefaults) -> Vec<Block> {
    let mut blocks = Vec::new();
    for table in [
        RegisterTable::Coil,
        RegisterTable::Discrete,
        RegisterTable::Holding,
        RegisterTable::Input,
    ] {
        let (max_count, max_gap) = if table.is_bit_table() {
            (
                (limits.max_block_registers as u32 * 16).min(MAX_BITS_PER_READ),
                limits.max_gap_registers as u32 * 16,
            )
        } else {
            (
                (limits.max_block_registers as u32).min(MAX_REGISTERS_PER_READ),
                limits.max_gap_registers as u32,
            )
        };
        let mut items: Vec<(u32, u32, usize)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match &p.source {
                PointSource::Modbus(m) if m.table == table => {
                    Some((m.address as u32, m.width() as u32, i))
                }
                _ => None,
            })
            .collect();
        items.sort();
        // The open block: first address, end (exclusive), points.
        let mut open: Option<(u32, u32, Vec<usize>)> = None;
        for (address, width, index) in items {
            let end = address + width;
            if let Some((start, block_end, members)) = &mut open {
                // Overlapping points (bit fields of one register, or a value and its halves)
                // join with no gap at all.
                let gap = address.saturating_sub(*block_end);
                if gap <= max_gap && end.max(*block_end) - *start <= max_count {
                    *block_end = end.max(*block_end);
                    members.push(index);
                    continue;
                }
            }
            if let Some(done) = open.replace((address, end, vec![index])) {
                blocks.push(block(table, done));
            }
        }
        if let Some(done) = open {
            blocks.push(block(table, done));
        }
    }
    blocks
}

fn block(table: RegisterTable, (start, end, points): (u32, u32, Vec<usize>)) -> Block {
    // Profiles keep address + width within 65536 and limits within the protocol's, so both
    // fit a u16.
    Block {
        table,
        address: start as u16,
        count: (end - start) as u16,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use crate::profile::Profile;

    fn profile(points: &str, max_block: u16, max_gap: u16) -> Profile {
        let text = format!(
            "id = \"t\"\nprotocol = \"modbus\"\nmanufacturer = \"A\"\nmodel = \"B\"\nsource = \"test\"\n\
             [modbus]\nmax_block_registers = {max_block}\nmax_gap_registers = {max_gap}\n{points}"
        );
        Profile::parse(Path::new("t.toml"), &text).unwrap()
    }

    fn point(name: &str, table: &str, address: u16, ty: &str) -> String {
        format!(
            "[[point]]\nname = \"{name}\"\ntable = \"{table}\"\naddress = {address}\ntype = \"{ty}\"\n"
        )
    }

    fn spans(blocks: &[Block]) -> Vec<(RegisterTable, u16, u16)> {
        blocks
            .iter()
            .map(|b| (b.table, b.address, b.count))
            .collect()
    }

    #[test]
    fn a_block_is_described_by_its_table_and_range() {
        let block = |table, address, count| Block {
            table,
            address,
            count,
            points: vec![],
        };
        for (table, address, count, described) in [
            (
                RegisterTable::Holding,
                100,
                32,
                "holding registers 100\u{2013}131",
            ),
            (RegisterTable::Input, 4, 1, "input register 4"),
            (RegisterTable::Coil, 0, 16, "coils 0\u{2013}15"),
            (RegisterTable::Discrete, 7, 1, "discrete input 7"),
        ] {
            assert_eq!(block(table, address, count).describe(), described);
        }
    }

    #[test]
    fn adjacent_points_share_one_read() {
        let p = profile(
            &[
                point("a", "holding", 0, "u16"),
                point("b", "holding", 1, "u32"),
                point("c", "holding", 3, "f32"),
            ]
            .concat(),
            125,
            0,
        );
        let blocks = plan_blocks(&p.points, &p.modbus);
        assert_eq!(spans(&blocks), [(RegisterTable::Holding, 0, 5)]);
        assert_eq!(blocks[0].points, [0, 1, 2]);
    }

    #[test]
    fn a_gap_splits_reads_unless_the_profile_allows_it() {
        let points = [
            point("a", "input", 10, "u16"),
            point("b", "input", 14, "u16"),
        ]
        .concat();
        let p = profile(&points, 125, 0);
        assert_eq!(
            spans(&plan_blocks(&p.points, &p.modbus)),
            [(RegisterTable::Input, 10, 1), (RegisterTable::Input, 14, 1)]
        );
        let p = profile(&points, 125, 2);
        assert_eq!(spans(&plan_blocks(&p.points, &p.modbus)).len(), 2);
        let p = profile(&points, 125, 3);
        assert_eq!(
            spans(&plan_blocks(&p.points, &p.modbus)),
            [(RegisterTable::Input, 10, 5)]
        );
    }

    #[test]
    fn reads_stay_within_the_block_limit_without_splitting_a_point() {
        // Ten u32 values back to back, five registers per read: a read of two values would
        // be four registers, a third would make six.
        let points: String = (0..10)
            .map(|i| point(&format!("p{i}"), "holding", i * 2, "u32"))
            .collect();
        let p = profile(&points, 5, 0);
        let blocks = plan_blocks(&p.points, &p.modbus);
        assert_eq!(blocks.len(), 5);
        for b in &blocks {
            assert_eq!(b.count, 4);
            assert_eq!(b.points.len(), 2);
        }
        let covered: Vec<usize> = blocks.iter().flat_map(|b| b.points.clone()).collect();
        assert_eq!(covered, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_point_wider_than_the_limit_gets_a_read_of_its_own() {
        let p = profile(
            &[
                point("a", "holding", 0, "u16"),
                point("big", "holding", 1, "f64"),
                point("c", "holding", 5, "u16"),
            ]
            .concat(),
            2,
            0,
        );
        assert_eq!(
            spans(&plan_blocks(&p.points, &p.modbus)),
            [
                (RegisterTable::Holding, 0, 1),
                (RegisterTable::Holding, 1, 4),
                (RegisterTable::Holding, 5, 1)
            ]
        );
    }

    #[test]
    fn tables_are_planned_apart_and_unsorted_points_are_sorted() {
        let points = [
            point("h2", "holding", 2, "u16"),
            point("i0", "input", 0, "u16"),
            point("h0", "holding", 0, "u16"),
            point("h1", "holding", 1, "u16"),
            "[[point]]\nname = \"c3\"\ntable = \"coil\"\naddress = 3\n".to_string(),
            "[[point]]\nname = \"c1\"\ntable = \"coil\"\naddress = 1\n".to_string(),
            "[[point]]\nname = \"d0\"\ntable = \"discrete\"\naddress = 0\n".to_string(),
        ]
        .concat();
        let p = profile(&points, 125, 1);
        let blocks = plan_blocks(&p.points, &p.modbus);
        assert_eq!(
            spans(&blocks),
            [
                (RegisterTable::Coil, 1, 3),
                (RegisterTable::Discrete, 0, 1),
                (RegisterTable::Holding, 0, 3),
                (RegisterTable::Input, 0, 1)
            ]
        );
        assert_eq!(blocks[0].points, [5, 4]);
        assert_eq!(blocks[2].points, [2, 3, 0]);
    }

    #[test]
    fn bit_fields_of_one_register_are_one_read() {
        let points = "[[point]]\nname = \"a\"\ntable = \"holding\"\naddress = 7\nbit = 0\n\
                      [[point]]\nname = \"b\"\ntable = \"holding\"\naddress = 7\nbit = 9\n\
                      [[point]]\nname = \"raw\"\ntable = \"holding\"\naddress = 7\ntype = \"u16\"\n";
        let p = profile(points, 1, 0);
        let blocks = plan_blocks(&p.points, &p.modbus);
        assert_eq!(spans(&blocks), [(RegisterTable::Holding, 7, 1)]);
        assert_eq!(blocks[0].points.len(), 3);
    }

    #[test]
    fn bit_tables_count_sixteen_bits_per_register_up_to_the_protocol_limit() {
        let coils: String = (0..40)
            .map(|i| {
                format!(
                    "[[point]]\nname = \"c{i}\"\ntable = \"coil\"\naddress = {}\n",
                    i * 100
                )
            })
            .collect();
        let p = profile(&coils, 125, 125);
        let blocks = plan_blocks(&p.points, &p.modbus);
        assert!(
            blocks.iter().all(|b| b.count as u32 <= MAX_BITS_PER_READ),
            "{:?}",
            spans(&blocks)
        );
        assert_eq!(blocks.iter().map(|b| b.points.len()).sum::<usize>(), 40);
        assert_eq!(spans(&blocks)[0], (RegisterTable::Coil, 0, 1901));
        let p = profile(&coils, 1, 10);
        // 16 bits per read, 160 bits of gap: no two coils 100 apart fit one read.
        assert_eq!(plan_blocks(&p.points, &p.modbus).len(), 40);
    }

    #[test]
    fn the_last_registers_of_the_address_space_are_reachable() {
        let p = profile(
            &[
                point("a", "holding", 65533, "u16"),
                point("b", "holding", 65534, "u16"),
                point("c", "holding", 65535, "u16"),
            ]
            .concat(),
            125,
            0,
        );
        assert_eq!(
            spans(&plan_blocks(&p.points, &p.modbus)),
            [(RegisterTable::Holding, 65533, 3)]
        );
    }
}

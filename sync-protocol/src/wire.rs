//! Byte-level building blocks shared by the codecs: a bounds-checked reader, LEB128
//! varints, zigzag integers, length-prefixed strings and a bit writer and reader for the
//! XOR float columns.
//!
//! Nothing here knows a message layout, and nothing here panics on input: every read
//! returns a [`DecodeError`] naming what it was reading when the bytes ran out or were
//! malformed.

use crate::codec::{DecodeError, VarintProblem};

/// The longest LEB128 encoding of a `u64`.
pub(crate) const MAX_VARINT_LEN: usize = 10;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, zigzag(v));
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Decodes one canonical LEB128 varint from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` ends inside the varint, so that stream readers can wait
/// for more bytes; the [`Reader`] turns that into [`DecodeError::Truncated`].
pub(crate) fn decode_varint(
    buf: &[u8],
    what: &'static str,
) -> Result<Option<(u64, usize)>, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..MAX_VARINT_LEN {
        let Some(&byte) = buf.get(i) else {
            return Ok(None);
        };
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            // The tenth byte may only hold the 64th bit.
            return Err(DecodeError::BadVarint {
                what,
                problem: VarintProblem::Overflow,
            });
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(DecodeError::BadVarint {
                    what,
                    problem: VarintProblem::Overlong,
                });
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::BadVarint {
        what,
        problem: VarintProblem::Overflow,
    })
}

/// A cursor over untrusted bytes. Every method checks bounds and names what it reads.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let byte = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::Truncated { what })?;
        self.pos += 1;
        Ok(byte)
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match decode_varint(&self.buf[self.pos..], what)? {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(DecodeError::Truncated { what }),
        }
    }

    pub(crate) fn zigzag(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.varint(what).map(unzigzag)
    }

    /// A varint that must fit in `u32`.
    pub(crate) fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| DecodeError::Invalid {
            what,
            reason: "value does not fit in 32 bits",
        })
    }

    /// A count of items that each take at least `min_item_len` bytes of what is left, so
    /// that a hostile count cannot make the decoder loop or allocate beyond the input.
    pub(crate) fn count(
        &mut self,
        what: &'static str,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        let max = (self.remaining() / min_item_len.max(1)) as u64;
        if n > max {
            return Err(DecodeError::Truncated { what });
        }
        Ok(n as usize)
    }

    pub(crate) fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.varint(what)?;
        if n > self.remaining() as u64 {
            return Err(DecodeError::Truncated { what });
        }
        self.bytes(n as usize, what)
    }

    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let bytes = self.len_prefixed(what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::BadUtf8 { what })
    }

    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { what, count }),
        }
    }
}

/// Writes bits most significant first; the last byte is padded with zero bits.
#[derive(Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte of `bytes` (0 means the last byte is full or absent).
    used: u32,
}

impl BitWriter {
    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the low `n` bits of `value`, `n <= 64`.
    pub(crate) fn write_bits(&mut self, value: u64, mut n: u32) {
        debug_assert!(n <= 64);
        while n > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - self.used;
            let take = free.min(n);
            let chunk = ((value >> (n - take)) & ((1u64 << take) - 1)) as u8;
            let last = self.bytes.len() - 1;
            self.bytes[last] |= chunk << (free - take);
            self.used = (self.used + take) % 8;
            n -= take;
        }
    }

    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads what [`BitWriter`] wrote.
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    bit: usize,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        BitReader {
            bytes,
            bit: 0,
            what,
        }
    }

    pub(crate) fn read_bit(&mut self) -> Result<bool, DecodeError> {
        Ok(self.read_bits(1)? == 1)
    }

    /// Reads `n <= 64` bits as the low bits of a `u64`.
    pub(crate) fn read_bits(&mut self, n: u32) -> Result<u64, DecodeError> {
        debug_assert!(n <= 64);
        if self.bit + n as usize > self.bytes.len() * 8 {
            return Err(DecodeError::Truncated { what: self.what });
        }
        let mut out: u64 = 0;
        let mut left = n;
        while left > 0 {
            let byte = self.bytes[self.bit / 8];
            let offset = (self.bit % 8) as u32;
            let avail = 8 - offset;
            let take = avail.min(left);
            let chunk = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            // `take` is at most 8, so the shift never overflows.
            out = (out << take) | chunk;
            self.bit += take as usize;
            left -= take;
        }
        Ok(out)
    }

    /// Checks that only zero padding, less than a byte of it, is left.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        let total = self.bytes.len() * 8;
        if total - self.bit >= 8 {
            return Err(DecodeError::TrailingBytes {
                what: self.what,
                count: (total - self.bit) / 8,
            });
        }
        if self.bit < total {
            let last = self.bytes[self.bytes.len() - 1];
            let pad = (total - self.bit) as u32;
            if last & ((1u8 << pad) - 1) != 0 {
                return Err(DecodeError::Invalid {
                    what: self.what,
                    reason: "padding bits are not zero",
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_length_boundary() {
        for shift in 0..64 {
            for v in [(1u64 << shift) - 1, 1u64 << shift, (1u64 << shift) + 1] {
                let mut out = Vec::new();
                put_varint(&mut out, v);
                assert_eq!(out.len(), varint_len(v));
                assert_eq!(decode_varint(&out, "test").unwrap(), Some((v, out.len())));
            }
        }
        let mut out = Vec::new();
        put_varint(&mut out, u64::MAX);
        assert_eq!(out.len(), MAX_VARINT_LEN);
        assert_eq!(decode_varint(&out, "test").unwrap(), Some((u64::MAX, 10)));
    }

    #[test]
    fn a_varint_with_a_redundant_zero_byte_is_overlong() {
        assert_eq!(
            decode_varint(&[0x81, 0x00], "x"),
            Err(DecodeError::BadVarint {
                what: "x",
                problem: VarintProblem::Overlong
            })
        );
    }

    #[test]
    fn a_varint_beyond_64_bits_is_an_overflow() {
        let mut bytes = vec![0xff; 9];
        bytes.push(0x02);
        assert_eq!(
            decode_varint(&bytes, "x"),
            Err(DecodeError::BadVarint {
                what: "x",
                problem: VarintProblem::Overflow
            })
        );
        assert!(decode_varint(&[0x80; 11], "x").is_err());
    }

    #[test]
    fn a_varint_cut_short_asks_for_more_bytes() {
        assert_eq!(decode_varint(&[0x80, 0x80], "x"), Ok(None));
        assert_eq!(decode_varint(&[], "x"), Ok(None));
    }

    #[test]
    fn zigzag_maps_small_magnitudes_to_small_numbers() {
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        for v in [i64::MIN, i64::MAX, -5, 5, 0] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn bits_round_trip_across_byte_boundaries() {
        let mut w = BitWriter::default();
        w.write_bit(true);
        w.write_bits(0b101, 3);
        w.write_bits(u64::MAX, 64);
        w.write_bits(0x1234, 13);
        let bytes = w.into_bytes();
        let mut r = BitReader::new(&bytes, "bits");
        assert!(r.read_bit().unwrap());
        assert_eq!(r.read_bits(3).unwrap(), 0b101);
        assert_eq!(r.read_bits(64).unwrap(), u64::MAX);
        assert_eq!(r.read_bits(13).unwrap(), 0x1234 & 0x1fff);
        r.finish().unwrap();
        assert!(r.clone_for_test().read_bits(8).is_err());
    }

    impl BitReader<'_> {
        fn clone_for_test(&self) -> Self {
            BitReader {
                bytes: self.bytes,
                bit: self.bit,
                what: self.what,
            }
        }
    }

    #[test]
    fn a_hostile_count_is_refused_before_any_allocation() {
        let mut bytes = Vec::new();
        put_varint(&mut bytes, u64::MAX);
        let mut r = Reader::new(&bytes);
        assert_eq!(
            r.count("items", 1),
            Err(DecodeError::Truncated { what: "items" })
        );
    }
}

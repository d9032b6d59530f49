//! Telemetry batches, raw samples and rollups, and their columnar encodings: the payloads
//! of the raw and rollups streams.
//!
//! This module only encodes and decodes. It does not decide what goes into a batch (the
//! edge's outbox does), compute rollups, or check values against point profiles. Decoding
//! never panics and never allocates beyond what the input can hold.
//!
//! # Raw batch layout
//!
//! A raw batch holds series, one per point, each a run of samples in the order the edge
//! recorded them. The encoding is columnar per series so that similar values sit together:
//!
//! ```text
//! series_count          varint
//! base_ts               zigzag varint: the first timestamp of the first non-empty series
//! point table           per series: point (varint length + UTF-8), sample count (varint)
//! per non-empty series, in table order:
//!   timestamps          zigzag(ts0 - base_ts), zigzag(ts1 - ts0), then for each later
//!                       sample the delta of deltas, zigzag(d_i - d_{i-1}); wrapping i64
//!   meta runs           run count (varint), then runs of (tag u8, [reason], length varint)
//!                       tag bits 0-2: value kind 0 none, 1 float, 2 int, 3 bool, 4 text
//!                       tag bits 3-4: quality 0 good, 1 uncertain, 2 bad, 3 stale
//!                       tag bits 5-7: zero; uncertain and bad carry a reason string
//!                       lengths are at least 1 and add up to the sample count
//!   floats (if any)     mode u8, then
//!                       mode 0, XOR: length-prefixed bit column: the first value's 64
//!                       bits, then per value '0' (same as previous) or '1' followed by
//!                       '0' + the meaningful bits in the previous window, or '1' +
//!                       5 bits of leading zeros + 6 bits of length (0 means 64) + bits
//!                       mode 1, decimal: scale k u8 (0..=9), then zigzag varints of
//!                       m0 and m_i - m_{i-1}; each value is (m as f64) / 10^k, used only
//!                       when that gives back every value bit for bit
//!   ints (if any)       zigzag(first), then zigzag(v_i - v_{i-1}), wrapping i64
//!   bools (if any)      bit-packed, least significant bit first, zero padding
//!   texts (if any)      varint length + UTF-8 each
//! ```
//!
//! # Rollup batch layout
//!
//! ```text
//! point_count varint, then each point name (varint length + UTF-8)
//! row_count   varint, then the columns, each row_count long:
//!   point index varint (< point_count)
//!   period      varint seconds
//!   bucket      zigzag(bucket_i - bucket_{i-1}), bucket_{-1} = 0
//!   count, bad  varint each
//!   last_ts     zigzag(last_ts - bucket)
//!   min, max, sum, last, delta: five XOR bit columns as in raw floats mode 0
//! ```

use crate::codec::DecodeError;
use crate::wire::{self, BitReader, BitWriter, Reader};

/// A sample's value. Integers stay integers so that counters keep every digit.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    Text(String),
}

/// How far a value can be trusted; it travels with every sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Quality {
    Good,
    Uncertain(String),
    Bad(String),
    Stale,
}

/// One raw sample of a point. `ts` is UTC microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    pub ts: i64,
    pub value: Option<Value>,
    pub quality: Quality,
}

/// The samples of one point within a batch, in the order the edge recorded them.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    pub point: String,
    pub samples: Vec<RawSample>,
}

/// A batch of raw samples: the record unit of the raw stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawBatch {
    pub series: Vec<RawSeries>,
}

/// One aggregate of a point over a bucket. Times are UTC microseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub point: String,
    /// The bucket length in seconds (60, 900, 3600).
    pub period_s: u32,
    /// The bucket's start.
    pub bucket: i64,
    pub count: u64,
    /// Samples without a usable value.
    pub bad: u64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub last: f64,
    pub last_ts: i64,
    /// Consumption within the bucket, for counters.
    pub delta: f64,
}

/// A batch of rollup rows: the record unit of the rollups stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RollupBatch {
    pub rows: Vec<RollupRow>,
}

const KIND_NONE: u8 = 0;
const KIND_FLOAT: u8 = 1;
const KIND_INT: u8 = 2;
const KIND_BOOL: u8 = 3;
const KIND_TEXT: u8 = 4;

const FLOAT_XOR: u8 = 0;
const FLOAT_DECIMAL: u8 = 1;
const MAX_DECIMAL_SCALE: usize = 9;
const POW10: [f64; MAX_DECIMAL_SCALE + 1] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];
/// Beyond this magnitude a scaled value no longer has an exact integer mantissa.
const EXACT_LIMIT: f64 = 9_007_199_254_740_992.0;

fn value_kind(v: &Option<Value>) -> u8 {
    match v {
        None => KIND_NONE,
        Some(Value::Float(_)) => KIND_FLOAT,
        Some(Value::Int(_)) => KIND_INT,
        Some(Value::Bool(_)) => KIND_BOOL,
        Some(Value::Text(_)) => KIND_TEXT,
    }
}

fn quality_code(q: &Quality) -> u8 {
    match q {
        Quality::Good => 0,
        Quality::Uncertain(_) => 1,
        Quality::Bad(_) => 2,
        Quality::Stale => 3,
    }
}

impl RawBatch {
    pub fn sample_count(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        wire::put_varint(out, self.series.len() as u64);
        let base = self
            .series
            .iter()
            .find_map(|s| s.samples.first())
            .map_or(0, |s| s.ts);
        wire::put_zigzag(out, base);
        for s in &self.series {
            wire::put_str(out, &s.point);
            wire::put_varint(out, s.samples.len() as u64);
        }
        for s in &self.series {
            if !s.samples.is_empty() {
                encode_series(out, base, &s.samples);
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<RawBatch, DecodeError> {
        let mut r = Reader::new(bytes);
        let series_count = r.count("raw series count", 2)?;
        let base = r.zigzag("raw base timestamp")?;
        let mut table = Vec::new();
        let mut total: u64 = 0;
        for _ in 0..series_count {
            let point = r.string("raw point name")?;
            let n = r.count("raw sample count", 1)?;
            total += n as u64;
            table.push((point, n));
        }
        if total > r.remaining() as u64 {
            return Err(DecodeError::Truncated {
                what: "raw sample columns",
            });
        }
        let mut series = Vec::new();
        for (point, n) in table {
            let samples = if n == 0 {
                Vec::new()
            } else {
                decode_series(&mut r, base, n)?
            };
            series.push(RawSeries { point, samples });
        }
        r.finish("raw batch")?;
        Ok(RawBatch { series })
    }
}

fn encode_series(out: &mut Vec<u8>, base: i64, samples: &[RawSample]) {
    // Timestamps: first against the batch base, then delta, then delta of deltas.
    let mut prev_ts = base;
    let mut prev_delta = 0i64;
    for (i, s) in samples.iter().enumerate() {
        let delta = s.ts.wrapping_sub(prev_ts);
        match i {
            0 | 1 => wire::put_zigzag(out, delta),
            _ => wire::put_zigzag(out, delta.wrapping_sub(prev_delta)),
        }
        if i > 0 {
            prev_delta = delta;
        }
        prev_ts = s.ts;
    }

    // Meta runs of (value kind, quality).
    let mut runs: Vec<(u8, &Quality, u64)> = Vec::new();
    for s in samples {
        let kind = value_kind(&s.value);
        match runs.last_mut() {
            Some((k, q, len)) if *k == kind && *q == &s.quality => *len += 1,
            _ => runs.push((kind, &s.quality, 1)),
        }
    }
    wire::put_varint(out, runs.len() as u64);
    for (kind, quality, len) in &runs {
        out.push(kind | (quality_code(quality) << 3));
        match quality {
            Quality::Uncertain(reason) | Quality::Bad(reason) => wire::put_str(out, reason),
            Quality::Good | Quality::Stale => {}
        }
        wire::put_varint(out, *len);
    }

    let mut floats = Vec::new();
    let mut ints = Vec::new();
    let mut bools = Vec::new();
    let mut texts = Vec::new();
    for s in samples {
        match &s.value {
            None => {}
            Some(Value::Float(v)) => floats.push(*v),
            Some(Value::Int(v)) => ints.push(*v),
            Some(Value::Bool(v)) => bools.push(*v),
            Some(Value::Text(v)) => texts.push(v.as_str()),
        }
    }
    if !floats.is_empty() {
        encode_floats(out, &floats);
    }
    if !ints.is_empty() {
        let mut prev = 0i64;
        for v in ints {
            wire::put_zigzag(out, v.wrapping_sub(prev));
            prev = v;
        }
    }
    if !bools.is_empty() {
        for chunk in bools.chunks(8) {
            let byte = chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &b)| acc | (u8::from(b) << i));
            out.push(byte);
        }
    }
    for t in texts {
        wire::put_str(out, t);
    }
}

fn decode_series(r: &mut Reader<'_>, base: i64, n: usize) -> Result<Vec<RawSample>, DecodeError> {
    let mut ts = Vec::new();
    let mut prev_ts = base;
    let mut prev_delta = 0i64;
    for i in 0..n {
        let v = r.zigzag("raw timestamp")?;
        let delta = match i {
            0 | 1 => v,
            _ => prev_delta.wrapping_add(v),
        };
        let t = prev_ts.wrapping_add(delta);
        if i > 0 {
            prev_delta = delta;
        }
        prev_ts = t;
        ts.push(t);
    }

    let run_count = r.count("raw meta run count", 2)?;
    let mut meta: Vec<(u8, Quality, usize)> = Vec::new();
    let mut covered: usize = 0;
    let (mut n_float, mut n_int, mut n_bool, mut n_text) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..run_count {
        let tag = r.u8("raw meta tag")?;
        if tag >> 5 != 0 {
            return Err(DecodeError::Invalid {
                what: "raw meta tag",
                reason: "reserved bits are set",
            });
        }
        let kind = tag & 0x07;
        if kind > KIND_TEXT {
            return Err(DecodeError::Invalid {
                what: "raw meta tag",
                reason: "unknown value kind",
            });
        }
        let quality = match (tag >> 3) & 0x03 {
            0 => Quality::Good,
            1 => Quality::Uncertain(r.string("quality reason")?),
            2 => Quality::Bad(r.string("quality reason")?),
            _ => Quality::Stale,
        };
        let len = r.varint("raw meta run length")?;
        if len == 0 || len > (n - covered) as u64 {
            return Err(DecodeError::Invalid {
                what: "raw meta run length",
                reason: "runs must be non-empty and add up to the sample count",
            });
        }
        let len = len as usize;
        covered += len;
        match kind {
            KIND_FLOAT => n_float += len,
            KIND_INT => n_int += len,
            KIND_BOOL => n_bool += len,
            KIND_TEXT => n_text += len,
            _ => {}
        }
        meta.push((kind, quality, len));
    }
    if covered != n {
        return Err(DecodeError::Invalid {
            what: "raw meta runs",
            reason: "runs must be non-empty and add up to the sample count",
        });
    }

    let floats = if n_float > 0 {
        decode_floats(r, n_float)?
    } else {
        Vec::new()
    };
    let mut ints = Vec::new();
    let mut prev = 0i64;
    for _ in 0..n_int {
        prev = prev.wrapping_add(r.zigzag("raw int value")?);
        ints.push(prev);
    }
    let mut bools = Vec::new();
    if n_bool > 0 {
        let bytes = r.bytes(n_bool.div_ceil(8), "raw bool column")?;
        for i in 0..n_bool {
            bools.push((bytes[i / 8] >> (i % 8)) & 1 == 1);
        }
        if n_bool % 8 != 0 && bytes[bytes.len() - 1] >> (n_bool % 8) != 0 {
            return Err(DecodeError::Invalid {
                what: "raw bool column",
                reason: "padding bits are not zero",
            });
        }
    }
    let mut texts = Vec::new();
    for _ in 0..n_text {
        texts.push(r.string("raw text value")?);
    }

    let (mut fi, mut ii, mut bi, mut ti) = (
        floats.into_iter(),
        ints.into_iter(),
        bools.into_iter(),
        texts.into_iter(),
    );
    let mut samples = Vec::new();
    let mut ts = ts.into_iter();
    for (kind, quality, len) in meta {
        for _ in 0..len {
            // The counts above were taken from the same runs, so every column has exactly
            // enough values; `None` here would be a bug, reported rather than panicking.
            let missing = DecodeError::Invalid {
                what: "raw value columns",
                reason: "column shorter than its runs",
            };
            let value = match kind {
                KIND_FLOAT => Some(Value::Float(fi.next().ok_or(missing)?)),
                KIND_INT => Some(Value::Int(ii.next().ok_or(missing)?)),
                KIND_BOOL => Some(Value::Bool(bi.next().ok_or(missing)?)),
                KIND_TEXT => Some(Value::Text(ti.next().ok_or(missing)?)),
                _ => None,
            };
            let t = ts.next().ok_or(DecodeError::Invalid {
                what: "raw timestamps",
                reason: "column shorter than its runs",
            })?;
            samples.push(RawSample {
                ts: t,
                value,
                quality: quality.clone(),
            });
        }
    }
    Ok(samples)
}

fn decimal_value(m: i64, scale: usize) -> f64 {
    (m as f64) / POW10[scale]
}

/// The smallest decimal scale at which every value is exactly `m / 10^k` for an integer
/// `m`, checked bit for bit with the decoder's own arithmetic.
fn decimal_scale(values: &[f64]) -> Option<(usize, Vec<i64>)> {
    'scale: for (k, pow) in POW10.iter().enumerate() {
        let mut ms = Vec::with_capacity(values.len());
        for &v in values {
            let x = v * pow;
            if !x.is_finite() || x.abs() >= EXACT_LIMIT {
                // Larger scales only make the magnitude larger.
                return None;
            }
            let m = x.round() as i64;
            if decimal_value(m, k).to_bits() != v.to_bits() {
                continue 'scale;
            }
            ms.push(m);
        }
        return Some((k, ms));
    }
    None
}

fn encode_floats(out: &mut Vec<u8>, values: &[f64]) {
    let xor = encode_xor(values);
    if let Some((scale, ms)) = decimal_scale(values) {
        let mut dec = Vec::new();
        let mut prev = 0i64;
        for m in ms {
            wire::put_zigzag(&mut dec, m.wrapping_sub(prev));
            prev = m;
        }
        if 1 + dec.len() < wire::varint_len(xor.len() as u64) + xor.len() {
            out.push(FLOAT_DECIMAL);
            out.push(scale as u8);
            out.extend_from_slice(&dec);
            return;
        }
    }
    out.push(FLOAT_XOR);
    wire::put_bytes(out, &xor);
}

fn decode_floats(r: &mut Reader<'_>, n: usize) -> Result<Vec<f64>, DecodeError> {
    match r.u8("raw float mode")? {
        FLOAT_XOR => {
            let bits = r.len_prefixed("raw float column")?;
            decode_xor(bits, n, "raw float column")
        }
        FLOAT_DECIMAL => {
            let scale = usize::from(r.u8("raw decimal scale")?);
            if scale > MAX_DECIMAL_SCALE {
                return Err(DecodeError::Invalid {
                    what: "raw decimal scale",
                    reason: "above 9",
                });
            }
            let mut out = Vec::new();
            let mut m = 0i64;
            for _ in 0..n {
                m = m.wrapping_add(r.zigzag("raw decimal value")?);
                out.push(decimal_value(m, scale));
            }
            Ok(out)
        }
        _ => Err(DecodeError::Invalid {
            what: "raw float mode",
            reason: "unknown mode",
        }),
    }
}

/// XOR-with-previous float encoding after Gorilla (Pelkonen et al., VLDB 2015).
fn encode_xor(values: &[f64]) -> Vec<u8> {
    let mut w = BitWriter::default();
    let mut prev = 0u64;
    // The current window: leading and trailing zeros of the last written XOR.
    let mut window: Option<(u32, u32)> = None;
    for (i, v) in values.iter().enumerate() {
        let bits = v.to_bits();
        if i == 0 {
            w.write_bits(bits, 64);
            prev = bits;
            continue;
        }
        let xor = bits ^ prev;
        prev = bits;
        if xor == 0 {
            w.write_bit(false);
            continue;
        }
        w.write_bit(true);
        let lead = xor.leading_zeros().min(31);
        let trail = xor.trailing_zeros();
        match window {
            Some((wl, wt)) if lead >= wl && trail >= wt => {
                w.write_bit(false);
                w.write_bits(xor >> wt, 64 - wl - wt);
            }
            _ => {
                let len = 64 - lead - trail;
                w.write_bit(true);
                w.write_bits(u64::from(lead), 5);
                w.write_bits(u64::from(len % 64), 6);
                w.write_bits(xor >> trail, len);
                window = Some((lead, trail));
            }
        }
    }
    w.into_bytes()
}

fn decode_xor(bytes: &[u8], n: usize, what: &'static str) -> Result<Vec<f64>, DecodeError> {
    let mut r = BitReader::new(bytes, what);
    let mut out = Vec::new();
    let mut prev = 0u64;
    let mut window: Option<(u32, u32)> = None;
    for i in 0..n {
        if i == 0 {
            prev = r.read_bits(64)?;
            out.push(f64::from_bits(prev));
            continue;
        }
        if r.read_bit()? {
            let xor = if r.read_bit()? {
                let lead = r.read_bits(5)? as u32;
                let len = match r.read_bits(6)? as u32 {
                    0 => 64,
                    len => len,
                };
                if lead + len > 64 {
                    return Err(DecodeError::Invalid {
                        what,
                        reason: "leading zeros and length exceed 64 bits",
                    });
                }
                let trail = 64 - lead - len;
                window = Some((lead, trail));
                r.read_bits(len)? << trail
            } else {
                let (wl, wt) = window.ok_or(DecodeError::Invalid {
                    what,
                    reason: "reuses a window before one was set",
                })?;
                r.read_bits(64 - wl - wt)? << wt
            };
            prev ^= xor;
        }
        out.push(f64::from_bits(prev));
    }
    r.finish()?;
    Ok(out)
}

impl RollupBatch {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut names: Vec<&str> = Vec::new();
        let mut index = std::collections::HashMap::new();
        let idx: Vec<usize> = self
            .rows
            .iter()
            .map(|row| {
                *index.entry(row.point.as_str()).or_insert_with(|| {
                    names.push(&row.point);
                    names.len() - 1
                })
            })
            .collect();
        wire::put_varint(out, names.len() as u64);
        for name in &names {
            wire::put_str(out, name);
        }
        wire::put_varint(out, self.rows.len() as u64);
        for i in &idx {
            wire::put_varint(out, *i as u64);
        }
        for row in &self.rows {
            wire::put_varint(out, u64::from(row.period_s));
        }
        let mut prev = 0i64;
        for row in &self.rows {
            wire::put_zigzag(out, row.bucket.wrapping_sub(prev));
            prev = row.bucket;
        }
        for row in &self.rows {
            wire::put_varint(out, row.count);
        }
        for row in &self.rows {
            wire::put_varint(out, row.bad);
        }
        for row in &self.rows {
            wire::put_zigzag(out, row.last_ts.wrapping_sub(row.bucket));
        }
        if self.rows.is_empty() {
            return;
        }
        let fields: [fn(&RollupRow) -> f64; 5] =
            [|r| r.min, |r| r.max, |r| r.sum, |r| r.last, |r| r.delta];
        for field in fields {
            let values: Vec<f64> = self.rows.iter().map(field).collect();
            wire::put_bytes(out, &encode_xor(&values));
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<RollupBatch, DecodeError> {
        let mut r = Reader::new(bytes);
        let point_count = r.count("rollup point count", 1)?;
        let mut names = Vec::new();
        for _ in 0..point_count {
            names.push(r.string("rollup point name")?);
        }
        let n = r.count("rollup row count", 1)?;
        let mut idx = Vec::new();
        for _ in 0..n {
            let i = r.varint("rollup point index")?;
            if i >= names.len() as u64 {
                return Err(DecodeError::Invalid {
                    what: "rollup point index",
                    reason: "beyond the point table",
                });
            }
            idx.push(i as usize);
        }
        let mut period = Vec::new();
        for _ in 0..n {
            period.push(r.varint_u32("rollup period")?);
        }
        let mut bucket = Vec::new();
        let mut prev = 0i64;
        for _ in 0..n {
            prev = prev.wrapping_add(r.zigzag("rollup bucket")?);
            bucket.push(prev);
        }
        let mut count = Vec::new();
        for _ in 0..n {
            count.push(r.varint("rollup count")?);
        }
        let mut bad = Vec::new();
        for _ in 0..n {
            bad.push(r.varint("rollup bad count")?);
        }
        let mut last_ts = Vec::new();
        for b in &bucket {
            last_ts.push(b.wrapping_add(r.zigzag("rollup last timestamp")?));
        }
        let mut columns: Vec<Vec<f64>> = Vec::new();
        if n > 0 {
            for what in [
                "rollup min column",
                "rollup max column",
                "rollup sum column",
                "rollup last column",
                "rollup delta column",
            ] {
                let bits = r.len_prefixed(what)?;
                columns.push(decode_xor(bits, n, what)?);
            }
        }
        r.finish("rollup batch")?;
        let rows = (0..n)
            .map(|i| RollupRow {
                point: names[idx[i]].clone(),
                period_s: period[i],
                bucket: bucket[i],
                count: count[i],
                bad: bad[i],
                min: columns[0][i],
                max: columns[1][i],
                sum: columns[2][i],
                last: columns[3][i],
                last_ts: last_ts[i],
                delta: columns[4][i],
            })
            .collect();
        Ok(RollupBatch { rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts: i64, value: Option<Value>, quality: Quality) -> RawSample {
        RawSample { ts, value, quality }
    }

    fn same_bits(a: &RawBatch, b: &RawBatch) -> bool {
        a.encode() == b.encode()
    }

    #[test]
    fn a_mixed_series_round_trips() {
        let batch = RawBatch {
            series: vec![
                RawSeries {
                    point: "meter-1/voltage".into(),
                    samples: vec![
                        sample(1_000_000, Some(Value::Float(230.4)), Quality::Good),
                        sample(2_000_100, Some(Value::Float(230.5)), Quality::Good),
                        sample(3_000_000, None, Quality::Bad("timeout".into())),
                        sample(
                            4_000_000,
                            Some(Value::Int(-7)),
                            Quality::Uncertain("range".into()),
                        ),
                        sample(5_000_000, Some(Value::Bool(true)), Quality::Stale),
                        sample(6_000_000, Some(Value::Text("on".into())), Quality::Good),
                        sample(i64::MIN, Some(Value::Float(f64::NAN)), Quality::Good),
                        sample(i64::MAX, Some(Value::Float(-0.0)), Quality::Good),
                    ],
                },
                RawSeries {
                    point: "empty/point".into(),
                    samples: vec![],
                },
            ],
        };
        let decoded = RawBatch::decode(&batch.encode()).unwrap();
        assert!(same_bits(&batch, &decoded));
        assert_eq!(decoded.series[0].samples[2], batch.series[0].samples[2]);
        assert!(matches!(decoded.series[0].samples[6].value, Some(Value::Float(v)) if v.is_nan()));
    }

    #[test]
    fn decimal_floats_use_the_scaled_integer_mode_and_stay_exact() {
        let values: Vec<f64> = (0..50).map(|i| 230.0 + f64::from(i % 7) / 10.0).collect();
        let mut out = Vec::new();
        encode_floats(&mut out, &values);
        assert_eq!(out[0], FLOAT_DECIMAL);
        let back = decode_floats(&mut Reader::new(&out), values.len()).unwrap();
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn floats_without_a_short_decimal_form_use_xor() {
        let values: Vec<f64> = (0..50)
            .map(|i| (f64::from(i) * 0.37).sin() * 1e-3)
            .collect();
        let mut out = Vec::new();
        encode_floats(&mut out, &values);
        assert_eq!(out[0], FLOAT_XOR);
        let back = decode_floats(&mut Reader::new(&out), values.len()).unwrap();
        assert_eq!(
            values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_constant_series_costs_about_one_bit_per_value_in_xor_mode() {
        let values = vec![21.5f64; 800];
        let bytes = encode_xor(&values);
        assert_eq!(bytes.len(), 8 + 100);
    }

    #[test]
    fn rollups_round_trip_with_a_shared_point_table() {
        let row = |point: &str, bucket: i64, min: f64| RollupRow {
            point: point.into(),
            period_s: 60,
            bucket,
            count: 12,
            bad: 1,
            min,
            max: min + 1.0,
            sum: min * 12.0,
            last: min + 0.5,
            last_ts: bucket + 59_000_000,
            delta: 0.0,
        };
        let batch = RollupBatch {
            rows: vec![
                row("a/x", 60_000_000, 1.0),
                row("b/y", 60_000_000, f64::INFINITY),
                row("a/x", 120_000_000, -3.25),
            ],
        };
        let bytes = batch.encode();
        assert_eq!(RollupBatch::decode(&bytes).unwrap(), batch);
        assert_eq!(
            RollupBatch::decode(&RollupBatch::default().encode()).unwrap(),
            RollupBatch::default()
        );
    }

    #[test]
    fn meta_runs_that_do_not_cover_the_samples_are_refused() {
        let batch = RawBatch {
            series: vec![RawSeries {
                point: "a/b".into(),
                samples: vec![sample(1, Some(Value::Int(1)), Quality::Good); 3],
            }],
        };
        let mut bytes = batch.encode();
        // Layout: count, base, name, n=3, ts x3, runs=1, tag, len=3, ints x3.
        let len_at = 1 + 1 + 4 + 1 + 3 + 1 + 1;
        assert_eq!(bytes[len_at], 3);
        bytes[len_at] = 2;
        assert!(matches!(
            RawBatch::decode(&bytes),
            Err(DecodeError::Invalid { .. })
        ));
    }
}

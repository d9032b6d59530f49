//! Rollups: 1 minute, 15 minute and 1 hour aggregates per point (min, max, average, last,
//! count, and for counters the consumption as a sum of deltas, with wraps and meter resets
//! handled).
//!
//! Pure bookkeeping with no IO: the store feeds samples in and writes the rows that come
//! out. A bucket is closed by wall time (the store's sweep), never by the arrival of a
//! later sample, so that replaying the raw samples after the 1-minute watermark rebuilds
//! exactly the open state after a crash. Higher levels are folded from closed 1-minute rows.

use std::collections::HashMap;

use device_drivers::Timestamp;
use device_drivers::profile::PointKind;

pub const MINUTE: i64 = 60_000_000;
pub const LEVELS: [Level; 3] = [Level::M1, Level::M15, Level::H1];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    M1,
    M15,
    H1,
}

impl Level {
    pub fn micros(self) -> i64 {
        match self {
            Level::M1 => MINUTE,
            Level::M15 => 15 * MINUTE,
            Level::H1 => 60 * MINUTE,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Level::M1 => 1,
            Level::M15 => 15,
            Level::H1 => 60,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::M1 => "1m",
            Level::M15 => "15m",
            Level::H1 => "1h",
        }
    }

    pub fn bucket(self, ts: Timestamp) -> i64 {
        ts.div_euclid(self.micros()) * self.micros()
    }
}

/// One aggregate. Merging two aggregates of the same bucket gives the aggregate of both.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agg {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
    pub last: f64,
    pub last_ts: Timestamp,
    /// Consumption within the bucket, for counters; 0 for other kinds.
    pub delta: f64,
    /// Samples without a usable value (bad or stale).
    pub bad: u64,
}

impl Agg {
    fn empty() -> Self {
        Agg {
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            count: 0,
            last: f64::NAN,
            last_ts: i64::MIN,
            delta: 0.0,
            bad: 0,
        }
    }

    fn add(&mut self, ts: Timestamp, v: f64, delta: f64) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v;
        self.count += 1;
        if ts >= self.last_ts {
            self.last = v;
            self.last_ts = ts;
        }
        self.delta += delta;
    }

    pub fn merge(&mut self, o: &Agg) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
        if o.count > 0 && o.last_ts >= self.last_ts {
            self.last = o.last;
            self.last_ts = o.last_ts;
        }
        self.delta += o.delta;
        self.bad += o.bad;
    }

    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

/// A row to upsert: rows for a bucket that already has one are merged into it.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub level: Level,
    pub point: i64,
    pub bucket: i64,
    pub agg: Agg,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointMeta {
    pub kind: PointKind,
    /// Where a counter wraps, in engineering units.
    pub wrap: Option<f64>,
}

/// What a counter sample did, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterEvent {
    None,
    Wrapped,
    Reset,
}

#[derive(Debug, Default)]
pub struct Rollups {
    meta: HashMap<i64, PointMeta>,
    open: [HashMap<(i64, i64), Agg>; 3],
    /// Per counter point: the last value seen and its time, for deltas across buckets.
    counter_last: HashMap<i64, (f64, Timestamp)>,
    /// Everything before this is closed at each level.
    watermark: [i64; 3],
}

impl Rollups {
    pub fn new(watermarks: [i64; 3]) -> Self {
        Rollups {
            watermark: watermarks,
            ..Default::default()
        }
    }

    pub fn set_meta(&mut self, point: i64, meta: PointMeta) {
        self.meta.insert(point, meta);
    }

    /// The points whose rollups are counter consumption.
    pub fn counters(&self) -> Vec<i64> {
        self.meta
            .iter()
            .filter(|(_, m)| m.kind == PointKind::Counter)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn watermarks(&self) -> [i64; 3] {
        self.watermark
    }

    /// Seeds a counter's previous value (from storage, after a restart).
    pub fn seed_counter(&mut self, point: i64, value: f64, ts: Timestamp) {
        self.counter_last.insert(point, (value, ts));
    }

    /// Adds a sample; `value` is `None` for bad or stale samples. Returns rows to write at
    /// once (for samples older than the watermark, which merge into closed buckets) and what
    /// happened to a counter.
    pub fn add(
        &mut self,
        point: i64,
        ts: Timestamp,
        value: Option<f64>,
        out: &mut Vec<RollupRow>,
    ) -> CounterEvent {
        let mut agg = Agg::empty();
        let mut event = CounterEvent::None;
        match value {
            None => agg.bad = 1,
            Some(v) => {
                let meta = self.meta.get(&point).copied().unwrap_or(PointMeta {
                    kind: PointKind::Gauge,
                    wrap: None,
                });
                let mut delta = 0.0;
                if meta.kind == PointKind::Counter {
                    match self.counter_last.get(&point).copied() {
                        Some((prev, prev_ts)) if ts > prev_ts => {
                            let d = v - prev;
                            delta = if d >= 0.0 {
                                d
                            } else if let Some(wrap) =
                                meta.wrap.filter(|w| prev > w * 0.5 && v < w * 0.5)
                            {
                                event = CounterEvent::Wrapped;
                                wrap - prev + v
                            } else {
                                // A meter that was reset counts from zero again: what it
                                // shows now is what it measured since the reset.
                                event = CounterEvent::Reset;
                                v
                            };
                            self.counter_last.insert(point, (v, ts));
                        }
                        Some(_) => {} // A late counter sample adds nothing to consumption.
                        None => {
                            self.counter_last.insert(point, (v, ts));
                        }
                    }
                }
                agg.add(ts, v, delta);
            }
        }
        self.fold(0, point, ts, &agg, out);
        event
    }

    fn fold(
        &mut self,
        level: usize,
        point: i64,
        ts: Timestamp,
        agg: &Agg,
        out: &mut Vec<RollupRow>,
    ) {
        let l = LEVELS[level];
        let bucket = l.bucket(ts);
        if bucket < self.watermark[level] {
            // The bucket is already closed: merge into its stored row, and the levels above.
            out.push(RollupRow {
                level: l,
                point,
                bucket,
                agg: *agg,
            });
            if level + 1 < LEVELS.len() {
                self.fold(level + 1, point, ts, agg, out);
            }
        } else {
            self.open[level]
                .entry((point, bucket))
                .or_insert_with(Agg::empty)
                .merge(agg);
        }
    }

    /// Folds a closed 1-minute row into the open higher levels (used when rebuilding after
    /// a restart from stored 1-minute rows).
    pub fn replay_closed_minute(&mut self, point: i64, bucket: i64, agg: &Agg) {
        for (level, l) in LEVELS.iter().enumerate().filter(|(i, _)| *i > 0) {
            if l.bucket(bucket) >= self.watermark[level] {
                self.open[level]
                    .entry((point, l.bucket(bucket)))
                    .or_insert_with(Agg::empty)
                    .merge(agg);
            }
        }
    }

    /// Closes every bucket that ends at or before `until`, returning the rows to write and
    /// the new watermarks (to store in the same transaction).
    pub fn sweep(&mut self, until: Timestamp, out: &mut Vec<RollupRow>) -> [i64; 3] {
        for level in 0..LEVELS.len() {
            let l = LEVELS[level];
            let new_wm = l.bucket(until);
            if new_wm <= self.watermark[level] {
                continue;
            }
            let closed: Vec<(i64, i64)> = self.open[level]
                .keys()
                .filter(|(_, b)| *b < new_wm)
                .copied()
                .collect();
            let mut rows: Vec<RollupRow> = closed
                .into_iter()
                .filter_map(|k| {
                    self.open[level].remove(&k).map(|agg| RollupRow {
                        level: l,
                        point: k.0,
                        bucket: k.1,
                        agg,
                    })
                })
                .collect();
            rows.sort_by_key(|r| (r.point, r.bucket));
            if level + 1 < LEVELS.len() {
                let up = LEVELS[level + 1];
                for r in &rows {
                    let b = up.bucket(r.bucket);
                    if b >= self.watermark[level + 1] {
                        self.open[level + 1]
                            .entry((r.point, b))
                            .or_insert_with(Agg::empty)
                            .merge(&r.agg);
                    } else {
                        out.push(RollupRow {
                            level: up,
                            point: r.point,
                            bucket: b,
                            agg: r.agg,
                        });
                    }
                }
            }
            out.extend(rows);
            self.watermark[level] = new_wm;
        }
        self.watermark
    }

    pub fn open_buckets(&self) -> usize {
        self.open.iter().map(|m| m.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> PointMeta {
        PointMeta {
            kind: PointKind::Gauge,
            wrap: None,
        }
    }

    #[test]
    fn a_minute_closes_by_wall_time_with_min_max_avg_last() {
        let mut r = Rollups::new([0; 3]);
        r.set_meta(1, gauge());
        let mut out = vec![];
        for (i, v) in [3.0, 1.0, 2.0].into_iter().enumerate() {
            r.add(1, i as i64 * 1_000_000, Some(v), &mut out);
        }
        r.add(1, 5_000_000, None, &mut out);
        assert!(out.is_empty());
        r.sweep(MINUTE - 1, &mut out);
        assert!(out.is_empty(), "the minute is still open");
        let wm = r.sweep(MINUTE, &mut out);
        assert_eq!(wm, [MINUTE, 0, 0]);
        assert_eq!(out.len(), 1);
        let a = out[0].agg;
        assert_eq!(
            (a.min, a.max, a.count, a.last, a.bad),
            (1.0, 3.0, 3, 2.0, 1)
        );
        assert_eq!(a.avg(), Some(2.0));
    }

    #[test]
    fn higher_levels_fold_from_closed_minutes() {
        let mut r = Rollups::new([0; 3]);
        r.set_meta(7, gauge());
        let mut out = vec![];
        for m in 0..16 {
            r.add(7, m * MINUTE + 1, Some(m as f64), &mut out);
        }
        r.sweep(16 * MINUTE, &mut out);
        let m15: Vec<_> = out.iter().filter(|r| r.level == Level::M15).collect();
        assert_eq!(m15.len(), 1);
        assert_eq!(m15[0].agg.count, 15);
        assert_eq!(m15[0].agg.max, 14.0);
        assert_eq!(out.iter().filter(|r| r.level == Level::M1).count(), 16);
        assert_eq!(out.iter().filter(|r| r.level == Level::H1).count(), 0);
    }

    #[test]
    fn counters_sum_deltas_across_wraps_and_resets() {
        let mut r = Rollups::new([0; 3]);
        r.set_meta(
            2,
            PointMeta {
                kind: PointKind::Counter,
                wrap: Some(1000.0),
            },
        );
        let mut out = vec![];
        let mut events = vec![];
        for (t, v) in [
            (0, 990.0),
            (1, 995.0),
            (2, 5.0),
            (3, 7.0),
            (4, 2.0),
            (5, 3.0),
        ] {
            events.push(r.add(2, t * 1_000_000, Some(v), &mut out));
        }
        r.sweep(MINUTE, &mut out);
        // 5 + (1000 - 995 + 5) + 2 + (reset: 2) + 1 = 20
        assert_eq!(out[0].agg.delta, 20.0);
        assert_eq!(events[2], CounterEvent::Wrapped);
        assert_eq!(events[4], CounterEvent::Reset);
    }

    #[test]
    fn a_late_sample_merges_into_its_closed_bucket() {
        let mut r = Rollups::new([0; 3]);
        r.set_meta(1, gauge());
        let mut out = vec![];
        r.add(1, 10, Some(1.0), &mut out);
        r.sweep(2 * MINUTE, &mut out);
        out.clear();
        r.add(1, 20, Some(9.0), &mut out);
        assert_eq!(
            out.len(),
            1,
            "1m row merged at once; 15m and 1h are still open"
        );
        assert_eq!(out[0].bucket, 0);
        assert_eq!(out[0].agg.max, 9.0);
    }

    #[test]
    fn merging_aggregates_is_order_independent() {
        let mut a = Agg::empty();
        a.add(1, 5.0, 0.0);
        let mut b = Agg::empty();
        b.add(2, 7.0, 1.0);
        let mut ab = a;
        ab.merge(&b);
        let mut ba = b;
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.last, 7.0);
    }
}

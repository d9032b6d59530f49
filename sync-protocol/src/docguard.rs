//! A bound on what an automerge sync message makes its receiver build, checked before
//! automerge sees the message.
//!
//! A document message's payload is an automerge sync message, whose changes automerge
//! decodes without a limit of its own: a compressed change chunk is inflated whole (a few
//! kilobytes of DEFLATE can stand for gigabytes), a column run of repeated values says how
//! many values it stands for in a varint (one run can claim billions of operations), and a
//! Bloom filter names its own number of probes (each probe of each hash allocates). So the
//! receiver first walks the message with [`check_sync_message`]: the envelope (heads, needs,
//! Bloom filters), then each chunk of its changes, inflating compressed chunks and
//! compressed document columns into a budget ([`DocLimits::max_inflated_bytes`]) and
//! counting the values of every column without expanding them
//! ([`DocLimits::max_column_values`]). A message over a limit is refused whole, before any
//! allocation it asks for is made.
//!
//! The layouts are automerge's binary format (chunk header: magic bytes, checksum, type,
//! length; change and document chunks; column specifications with their type in the low
//! three bits and compression in the fourth; run-length, delta and boolean encodings).
//! Bundles (chunk type 3) are refused: the sync protocol does not send them.

use std::io::Read as _;

use thiserror::Error;

/// What one sync message may make its receiver build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocLimits {
    /// Bytes inflated from compressed chunks and columns, in total.
    pub max_inflated_bytes: usize,
    /// Values any one column of any one chunk may stand for (operations, changes,
    /// predecessors).
    pub max_column_values: u64,
    /// Change and document chunks in one message.
    pub max_chunks: usize,
    /// Probes per hash in a Bloom filter (automerge uses 7).
    pub max_bloom_probes: u32,
    /// Bits per entry in a Bloom filter (automerge uses 10).
    pub max_bloom_bits_per_entry: u32,
}

impl DocLimits {
    /// For what an edge sends the hub: local edits, a few at a time.
    pub const FROM_EDGE: DocLimits = DocLimits {
        max_inflated_bytes: 16 << 20,
        max_column_values: 1_000_000,
        max_chunks: 20_000,
        max_bloom_probes: 32,
        max_bloom_bits_per_entry: 64,
    };

    /// For what the hub sends an edge: a whole park directory on first sync.
    pub const FROM_HUB: DocLimits = DocLimits {
        max_inflated_bytes: 256 << 20,
        max_column_values: 20_000_000,
        max_chunks: 1_000_000,
        max_bloom_probes: 32,
        max_bloom_bits_per_entry: 64,
    };
}

/// Why a sync message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("automerge sync message refused: {0}")]
pub struct DocRefused(pub String);

/// What a checked message holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocSummary {
    /// Change and document chunks.
    pub chunks: usize,
    /// Bytes inflated while checking.
    pub inflated_bytes: usize,
}

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const HASH_LEN: usize = 32;

/// Checks an automerge sync message against `limits` (see the module docs).
pub fn check_sync_message(bytes: &[u8], limits: &DocLimits) -> Result<DocSummary, DocRefused> {
    let mut r = Reader::new(bytes);
    match r.byte("message type")? {
        0x42 | 0x43 => {}
        other => return Err(refused(format!("unknown sync message type 0x{other:02x}"))),
    }
    for what in ["heads", "needs"] {
        let n = r.uleb(what)?;
        r.advance(n.saturating_mul(HASH_LEN as u64), what)?;
    }
    let haves = r.uleb("haves")?;
    for _ in 0..haves {
        let n = r.uleb("have's last sync")?;
        r.advance(n.saturating_mul(HASH_LEN as u64), "have's last sync")?;
        let bloom = r.bytes("Bloom filter")?;
        check_bloom(bloom, limits)?;
    }
    let n = r.uleb("changes")?;
    let mut budget = Budget {
        limits,
        summary: DocSummary::default(),
    };
    for _ in 0..n {
        let chunks = r.bytes("change")?;
        let mut c = Reader::new(chunks);
        while !c.is_empty() {
            budget.chunk(&mut c)?;
        }
    }
    // What follows is the flags section, which allocates nothing of note.
    Ok(budget.summary)
}

/// Runs automerge work on input from outside (a sync message that passed
/// [`check_sync_message`]) with a panic inside automerge turned into an error: automerge
/// 0.12 panics on some malformed changes instead of refusing them (fuzzing found
/// `op_set2/change/batch.rs` unwrapping a missing value). The caller must treat the
/// document the work was done on as unusable after an error (apply to a copy, or reload).
pub fn contained<T>(f: impl FnOnce() -> T) -> Result<T, DocRefused> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        refused(format!("automerge failed on it: {what}"))
    })
}

fn refused(reason: impl Into<String>) -> DocRefused {
    DocRefused(reason.into())
}

fn check_bloom(bytes: &[u8], limits: &DocLimits) -> Result<(), DocRefused> {
    if bytes.is_empty() {
        return Ok(());
    }
    let mut b = Reader::new(bytes);
    let entries = b.uleb("Bloom filter entries")?;
    let bits = b.uleb("Bloom filter bits per entry")?;
    let probes = b.uleb("Bloom filter probes")?;
    if probes > u64::from(limits.max_bloom_probes) {
        return Err(refused(format!(
            "a Bloom filter asks for {probes} probes per hash, more than {}",
            limits.max_bloom_probes
        )));
    }
    if bits > u64::from(limits.max_bloom_bits_per_entry) {
        return Err(refused(format!(
            "a Bloom filter has {bits} bits per entry, more than {}",
            limits.max_bloom_bits_per_entry
        )));
    }
    if entries > 0 && (bits == 0 || probes == 0) {
        return Err(refused("a Bloom filter has entries but no bits or probes"));
    }
    let want = entries.saturating_mul(bits).div_ceil(8);
    if want > b.remaining() as u64 {
        return Err(refused(format!(
            "a Bloom filter of {entries} entries needs {want} bytes and has {}",
            b.remaining()
        )));
    }
    Ok(())
}

struct Budget<'l> {
    limits: &'l DocLimits,
    summary: DocSummary,
}

impl Budget<'_> {
    fn chunk(&mut self, r: &mut Reader<'_>) -> Result<(), DocRefused> {
        self.summary.chunks += 1;
        if self.summary.chunks > self.limits.max_chunks {
            return Err(refused(format!(
                "more than {} chunks in one message",
                self.limits.max_chunks
            )));
        }
        if r.take(4, "chunk magic bytes")? != MAGIC {
            return Err(refused(
                "a chunk does not start with automerge's magic bytes",
            ));
        }
        r.take(4, "chunk checksum")?;
        let kind = r.byte("chunk type")?;
        let body = r.bytes("chunk")?;
        match kind {
            0 => self.document(body),
            1 => self.change(body),
            2 => {
                let inflated = self.inflate(body, "a compressed change")?;
                self.change(&inflated)
            }
            3 => Err(refused(
                "a bundle chunk, which the sync protocol never sends",
            )),
            other => Err(refused(format!("unknown chunk type {other}"))),
        }
    }

    fn inflate(&mut self, data: &[u8], what: &str) -> Result<Vec<u8>, DocRefused> {
        let left = self
            .limits
            .max_inflated_bytes
            .saturating_sub(self.summary.inflated_bytes);
        let mut out = Vec::new();
        let read = flate2::bufread::DeflateDecoder::new(data)
            .take(left as u64 + 1)
            .read_to_end(&mut out);
        if read.is_err() {
            return Err(refused(format!("{what} does not inflate")));
        }
        if out.len() > left {
            return Err(refused(format!(
                "{what} inflates beyond the message's budget of {} bytes",
                self.limits.max_inflated_bytes
            )));
        }
        self.summary.inflated_bytes += out.len();
        Ok(out)
    }

    /// A change: dependencies, actor, sequence, start op, time, message, other actors,
    /// then the op columns.
    fn change(&mut self, body: &[u8]) -> Result<(), DocRefused> {
        let mut r = Reader::new(body);
        let deps = r.uleb("change dependencies")?;
        r.advance(deps.saturating_mul(HASH_LEN as u64), "change dependencies")?;
        r.bytes("change actor")?;
        r.uleb("change sequence number")?;
        r.uleb("change start op")?;
        r.sleb("change time")?;
        r.bytes("change message")?;
        let actors = r.uleb("change's other actors")?;
        for _ in 0..actors {
            r.bytes("change's other actor")?;
        }
        let columns = column_specs(&mut r)?;
        self.columns(&mut r, &columns, "change")
    }

    /// A document: actors, heads, change column specs, op column specs, then the change
    /// columns' data and the op columns' data (then head indexes).
    fn document(&mut self, body: &[u8]) -> Result<(), DocRefused> {
        let mut r = Reader::new(body);
        let actors = r.uleb("document actors")?;
        for _ in 0..actors {
            r.bytes("document actor")?;
        }
        let heads = r.uleb("document heads")?;
        r.advance(heads.saturating_mul(HASH_LEN as u64), "document heads")?;
        let change_columns = column_specs(&mut r)?;
        let op_columns = column_specs(&mut r)?;
        self.columns(&mut r, &change_columns, "document change")?;
        self.columns(&mut r, &op_columns, "document op")
    }

    fn columns(
        &mut self,
        r: &mut Reader<'_>,
        columns: &[(u32, u64)],
        what: &str,
    ) -> Result<(), DocRefused> {
        for &(spec, len) in columns {
            let data = r.take(len, "column data")?;
            let inflated;
            let data = if spec & 0b1000 != 0 {
                inflated = self.inflate(data, &format!("a compressed {what} column"))?;
                &inflated[..]
            } else {
                data
            };
            let values = column_values(spec & 0b111, data, self.limits.max_column_values)?;
            if values > self.limits.max_column_values {
                return Err(refused(format!(
                    "a {what} column stands for more than {} values",
                    self.limits.max_column_values
                )));
            }
        }
        Ok(())
    }
}

fn column_specs(r: &mut Reader<'_>) -> Result<Vec<(u32, u64)>, DocRefused> {
    let n = r.uleb("column count")?;
    // Each column takes at least two bytes of metadata.
    if n > r.remaining() as u64 / 2 {
        return Err(refused(format!(
            "{n} columns announced in {} bytes",
            r.remaining()
        )));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let spec = r.uleb("column specification")?;
        let spec =
            u32::try_from(spec).map_err(|_| refused("a column specification beyond 32 bits"))?;
        let len = r.uleb("column length")?;
        out.push((spec, len));
    }
    Ok(out)
}

/// How many values a column stands for, counted without expanding runs; stops counting
/// once past `max`.
fn column_values(kind: u32, data: &[u8], max: u64) -> Result<u64, DocRefused> {
    let mut r = Reader::new(data);
    let mut total: u64 = 0;
    match kind {
        // Value bytes: their count is given by the metadata column.
        7 => return Ok(0),
        // Booleans: alternating run lengths.
        4 => {
            while !r.is_empty() && total <= max {
                total = total.saturating_add(r.uleb("boolean run")?);
            }
        }
        // Run-length encoded: group, actor, integer, delta, string, value metadata.
        _ => {
            while !r.is_empty() && total <= max {
                let n = r.sleb("run length")?;
                if n > 0 {
                    skip_value(&mut r, kind)?;
                    total = total.saturating_add(n as u64);
                } else if n < 0 {
                    let literals = n.unsigned_abs();
                    for _ in 0..literals {
                        skip_value(&mut r, kind)?;
                        total += 1;
                        if total > max {
                            break;
                        }
                    }
                } else {
                    total = total.saturating_add(r.uleb("null run")?);
                }
            }
        }
    }
    Ok(total)
}

fn skip_value(r: &mut Reader<'_>, kind: u32) -> Result<(), DocRefused> {
    match kind {
        3 => r.sleb("delta value").map(drop),
        5 => r.bytes("string value").map(drop),
        _ => r.uleb("integer value").map(drop),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn byte(&mut self, what: &str) -> Result<u8, DocRefused> {
        Ok(self.take(1, what)?[0])
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], DocRefused> {
        if n > self.buf.len() as u64 {
            return Err(refused(format!(
                "{what}: {n} bytes announced, {} left",
                self.buf.len()
            )));
        }
        let (head, tail) = self.buf.split_at(n as usize);
        self.buf = tail;
        Ok(head)
    }

    fn advance(&mut self, n: u64, what: &str) -> Result<(), DocRefused> {
        self.take(n, what).map(drop)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], DocRefused> {
        let n = self.uleb(what)?;
        self.take(n, what)
    }

    fn uleb(&mut self, what: &str) -> Result<u64, DocRefused> {
        let mut value: u64 = 0;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                break;
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(refused(format!("{what}: a bad or overlong LEB128 number")))
    }

    fn sleb(&mut self, what: &str) -> Result<i64, DocRefused> {
        let mut value: i64 = 0;
        let mut shift = 0;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            value |= i64::from(b & 0x7f).wrapping_shl(shift);
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                self.buf = &self.buf[i + 1..];
                return Ok(value);
            }
        }
        Err(refused(format!("{what}: a bad or overlong LEB128 number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::sync::SyncDoc as _;
    use automerge::transaction::Transactable as _;

    fn message_with(doc: &mut automerge::Automerge) -> Vec<u8> {
        let mut state = automerge::sync::State::new();
        doc.generate_sync_message(&mut state).unwrap().encode()
    }

    fn doc_with(n: usize) -> automerge::Automerge {
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        let map = tx
            .put_object(automerge::ROOT, "credentials", automerge::ObjType::Map)
            .unwrap();
        for i in 0..n {
            tx.put(&map, format!("c-{i}"), "active").unwrap();
        }
        tx.commit();
        doc
    }

    #[test]
    fn real_messages_pass_and_their_answers_too() {
        let mut a = doc_with(2000);
        let mut b = automerge::Automerge::new();
        let (mut sa, mut sb) = (automerge::sync::State::new(), automerge::sync::State::new());
        for _ in 0..10 {
            if let Some(m) = a.generate_sync_message(&mut sa) {
                let bytes = m.encode();
                check_sync_message(&bytes, &DocLimits::FROM_EDGE).unwrap();
                b.receive_sync_message(&mut sb, automerge::sync::Message::decode(&bytes).unwrap())
                    .unwrap();
            }
            if let Some(m) = b.generate_sync_message(&mut sb) {
                let bytes = m.encode();
                check_sync_message(&bytes, &DocLimits::FROM_EDGE).unwrap();
                a.receive_sync_message(&mut sa, automerge::sync::Message::decode(&bytes).unwrap())
                    .unwrap();
            }
        }
        assert_eq!(a.get_heads(), b.get_heads());
    }

    #[test]
    fn a_whole_document_in_one_message_is_checked_column_by_column() {
        let mut doc = doc_with(5000);
        let saved = doc.save();
        // A message carrying a document chunk, as a version 2 message does.
        let mut m = automerge::sync::Message::decode(&message_with(&mut doc)).unwrap();
        m.changes = saved.into();
        let bytes = m.encode();
        let summary = check_sync_message(&bytes, &DocLimits::FROM_EDGE).unwrap();
        assert_eq!(summary.chunks, 1);
        let tight = DocLimits {
            max_column_values: 1000,
            ..DocLimits::FROM_EDGE
        };
        let err = check_sync_message(&bytes, &tight).unwrap_err();
        assert!(err.0.contains("more than 1000 values"), "{err}");
    }

    /// A chunk of `kind` with `body`, as automerge frames it (the checksum is not checked
    /// here; automerge checks it after).
    fn chunk(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([0; 4]);
        out.push(kind);
        put_uleb(&mut out, body.len() as u64);
        out.extend(body);
        out
    }

    fn put_uleb(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn message(changes: &[Vec<u8>], have_bloom: Option<Vec<u8>>) -> Vec<u8> {
        let mut out = vec![0x42, 0, 0];
        match have_bloom {
            Some(bloom) => {
                out.extend([1, 0]);
                put_uleb(&mut out, bloom.len() as u64);
                out.extend(bloom);
            }
            None => out.push(0),
        }
        put_uleb(&mut out, changes.len() as u64);
        for c in changes {
            put_uleb(&mut out, c.len() as u64);
            out.extend(c);
        }
        out
    }

    #[test]
    fn a_deflate_bomb_is_refused_before_it_is_inflated_whole() {
        use std::io::Write as _;
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let bytes = message(&[chunk(2, &bomb)], None);
        let err = check_sync_message(&bytes, &DocLimits::FROM_EDGE).unwrap_err();
        assert!(err.0.contains("inflates beyond"), "{err}");
        // automerge itself would inflate all 64 MiB of it.
        assert!(automerge::sync::Message::decode(&bytes).is_ok());
    }

    #[test]
    fn a_run_that_claims_billions_of_operations_is_refused() {
        // A change whose one op column is a single run of 2^40 copies.
        let mut body = vec![0]; // no dependencies
        body.extend([1, 0xaa]); // actor
        body.extend([1, 1, 0, 0, 0]); // seq, start op, time, message, other actors
        let mut column = Vec::new();
        // sLEB128 of 2^40
        let mut n: i64 = 1 << 40;
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 && b & 0x40 == 0 {
                column.push(b);
                break;
            }
            column.push(b | 0x80);
        }
        column.push(1); // the value
        body.push(1); // one column
        put_uleb(&mut body, (1 << 4) | 2); // id 1, integer
        put_uleb(&mut body, column.len() as u64);
        body.extend(&column);
        let bytes = message(&[chunk(1, &body)], None);
        let err = check_sync_message(&bytes, &DocLimits::FROM_EDGE).unwrap_err();
        assert!(err.0.contains("more than 1000000 values"), "{err}");
    }

    #[test]
    fn a_bloom_filter_asking_for_billions_of_probes_is_refused() {
        let bloom = vec![1, 10, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xff, 0xff];
        let bytes = message(&[], Some(bloom));
        let err = check_sync_message(&bytes, &DocLimits::FROM_EDGE).unwrap_err();
        assert!(err.0.contains("probes"), "{err}");
        let empty_bits = vec![5, 0, 7];
        let err =
            check_sync_message(&message(&[], Some(empty_bits)), &DocLimits::FROM_EDGE).unwrap_err();
        assert!(err.0.contains("no bits"), "{err}");
    }

    #[test]
    fn truncated_and_foreign_input_is_refused_not_panicked_on() {
        let mut doc = doc_with(50);
        let bytes = message_with(&mut doc);
        for cut in 0..bytes.len() {
            let _ = check_sync_message(&bytes[..cut], &DocLimits::FROM_EDGE);
        }
        assert!(check_sync_message(b"\x99", &DocLimits::FROM_EDGE).is_err());
        assert!(
            check_sync_message(&message(&[chunk(3, b"")], None), &DocLimits::FROM_EDGE).is_err()
        );
    }
}

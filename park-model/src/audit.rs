//! The audit log's hash chain. Each record carries the SHA-256 of the record before it, and
//! its own hash covers that and every field, so a record altered, deleted or moved breaks
//! the chain at that point. Verification names the first record that does not fit.
//!
//! Pure: the stores of the edge and the hub keep the rows and hand them here in the order
//! they were written. The hash is over a length-prefixed encoding of the fields, so no
//! choice of text in one field can imitate another field.

use serde::{Deserialize, Serialize};

use crate::identity::secret::sha256;

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// One audited act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub ts: i64,
    /// The user's id, or empty for the system (a rule, a command on the host).
    pub user_id: String,
    /// The username, or `rule:ID`, `host:COMMAND` for acts without a user.
    pub actor: String,
    /// The client's address, when the act came over the network.
    pub client: String,
    pub action: String,
    pub target: String,
    /// JSON with what the act was about; never a secret or a full card number.
    pub detail: String,
    /// `ok`, or `refused: why`, `failed: why`.
    pub outcome: String,
}

fn put(buf: &mut Vec<u8>, field: &[u8]) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field);
}

impl AuditRecord {
    /// The hash of this record following `prev`.
    pub fn hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(b"smartpark-audit-v1");
        buf.extend_from_slice(prev);
        buf.extend_from_slice(&self.seq.to_be_bytes());
        buf.extend_from_slice(&self.ts.to_be_bytes());
        for f in [
            &self.user_id,
            &self.actor,
            &self.client,
            &self.action,
            &self.target,
            &self.detail,
            &self.outcome,
        ] {
            put(&mut buf, f.as_bytes());
        }
        sha256(&buf)
    }
}

/// A stored record with its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedRecord {
    pub record: AuditRecord,
    pub prev_hash: [u8; 32],
    pub hash: [u8; 32],
}

impl ChainedRecord {
    /// Chains `record` after a record whose hash is `prev`.
    pub fn new(record: AuditRecord, prev: [u8; 32]) -> Self {
        let hash = record.hash(&prev);
        ChainedRecord {
            record,
            prev_hash: prev,
            hash,
        }
    }
}

/// Where a chain stops holding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("record {seq} was altered: its content does not give its stored hash")]
    Altered { seq: u64 },
    #[error("records {from} to {to} are missing (deleted)")]
    Deleted { from: u64, to: u64 },
    #[error("record {seq} is out of order: it is stored after record {after}")]
    Reordered { seq: u64, after: u64 },
    #[error("record {seq} does not follow the record before it (its link was rewritten)")]
    Unlinked { seq: u64 },
    #[error("the chain starts at record {seq}: the records before it are missing (deleted)")]
    BadStart { seq: u64 },
}

/// The last record of a chain: its sequence number and hash.
pub type ChainEnd = (u64, [u8; 32]);

/// Checks records in the order they were stored. `start` is where the chain is expected to
/// begin: `None` for the whole chain (first record 1 after [`GENESIS`]), or the sequence
/// number and hash of a record known good (a copy that began later). Returns how many
/// records were checked and the last one's sequence number and hash.
pub fn verify(
    records: &[ChainedRecord],
    start: Option<ChainEnd>,
) -> Result<(u64, Option<ChainEnd>), ChainBreak> {
    let mut expected_seq = start.map_or(1, |(s, _)| s + 1);
    let mut prev = start.map_or(GENESIS, |(_, h)| h);
    let mut last = start;
    for (i, r) in records.iter().enumerate() {
        let seq = r.record.seq;
        if r.record.hash(&r.prev_hash) != r.hash {
            return Err(ChainBreak::Altered { seq });
        }
        if seq < expected_seq {
            return Err(ChainBreak::Reordered {
                seq,
                after: expected_seq - 1,
            });
        }
        if seq > expected_seq {
            // Moved or deleted? If a record of the gap is stored later, it was moved.
            let missing = expected_seq..seq;
            if let Some(moved) = records[i + 1..]
                .iter()
                .find(|m| missing.contains(&m.record.seq))
            {
                return Err(ChainBreak::Reordered {
                    seq: moved.record.seq,
                    after: seq,
                });
            }
            return Err(if i == 0 && start.is_none() {
                ChainBreak::BadStart { seq }
            } else {
                ChainBreak::Deleted {
                    from: expected_seq,
                    to: seq - 1,
                }
            });
        }
        if r.prev_hash != prev {
            return Err(ChainBreak::Unlinked { seq });
        }
        prev = r.hash;
        expected_seq = seq + 1;
        last = Some((seq, r.hash));
    }
    Ok((records.len() as u64, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<ChainedRecord> {
        let mut prev = GENESIS;
        (1..=n)
            .map(|seq| {
                let r = ChainedRecord::new(
                    AuditRecord {
                        seq,
                        ts: seq as i64 * 1000,
                        user_id: "u1".into(),
                        actor: "amy".into(),
                        client: "10.0.0.5".into(),
                        action: "door_open".into(),
                        target: format!("door-{seq}"),
                        detail: "{}".into(),
                        outcome: "ok".into(),
                    },
                    prev,
                );
                prev = r.hash;
                r
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(5);
        let last = c[4].hash;
        assert_eq!(verify(&c, None), Ok((5, Some((5, last)))));
        assert_eq!(verify(&[], None), Ok((0, None)));
    }

    #[test]
    fn an_altered_record_is_named() {
        let mut c = chain(5);
        c[2].record.outcome = "refused".into();
        assert_eq!(verify(&c, None), Err(ChainBreak::Altered { seq: 3 }));
    }

    #[test]
    fn a_rehashed_alteration_breaks_the_next_link() {
        let mut c = chain(5);
        c[2].record.target = "elsewhere".into();
        c[2].hash = c[2].record.hash(&c[2].prev_hash);
        assert_eq!(verify(&c, None), Err(ChainBreak::Unlinked { seq: 4 }));
    }

    #[test]
    fn a_deleted_record_is_named() {
        let mut c = chain(5);
        c.remove(1);
        assert_eq!(
            verify(&c, None),
            Err(ChainBreak::Deleted { from: 2, to: 2 })
        );
    }

    #[test]
    fn reordered_records_are_named() {
        let mut c = chain(5);
        c.swap(1, 3);
        assert_eq!(
            verify(&c, None),
            Err(ChainBreak::Reordered { seq: 3, after: 4 })
        );
        let mut c = chain(5);
        c.swap(2, 3);
        assert_eq!(
            verify(&c, None),
            Err(ChainBreak::Reordered { seq: 3, after: 4 })
        );
        let mut c = chain(5);
        let moved = c.remove(0);
        c.push(moved);
        assert_eq!(
            verify(&c, None),
            Err(ChainBreak::Reordered { seq: 1, after: 2 })
        );
        let mut c = chain(5);
        c.remove(0);
        assert_eq!(verify(&c, None), Err(ChainBreak::BadStart { seq: 2 }));
    }

    #[test]
    fn a_copy_that_starts_later_verifies_from_a_known_record() {
        let c = chain(5);
        let start = (2, c[1].hash);
        assert_eq!(verify(&c[2..], Some(start)).unwrap().0, 3);
    }

    #[test]
    fn fields_cannot_borrow_from_each_other() {
        let mut a = chain(1).remove(0).record;
        let mut b = a.clone();
        a.actor = "amy".into();
        a.client = "x".into();
        b.actor = "am".into();
        b.client = "yx".into();
        assert_ne!(a.hash(&GENESIS), b.hash(&GENESIS));
    }
}

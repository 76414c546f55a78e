//! Chain replay: recomputes every hash and checks the fields inside the bytes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;

use super::{
    BadRecord, CheckpointProblem, GENESIS, Hash, Head, Record, StoredCheckpoint, VerifyOptions,
    VerifyReport, chain_hash,
};
use crate::tenant::TenantId;

/// The chain fields every receipt carries; other fields are skipped.
#[derive(Deserialize)]
struct ChainFields<'a> {
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    seq: u64,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow, default)]
    sku: Option<Cow<'a, str>>,
}

/// Replays records in append order and remembers the first bad one.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Per tenant: the last good (seq, hash), or `None` once the chain broke.
    heads: HashMap<Box<str>, Option<(u64, Hash)>>,
    receipts: u64,
    first_bad: Option<BadRecord>,
    checkpoint: Option<CheckpointProblem>,
    /// The SKU every receipt must name, when one is expected.
    sku: Option<Box<str>>,
}

impl Verifier {
    /// An empty verifier.
    pub fn new() -> Verifier {
        Verifier::default()
    }

    /// A verifier that takes `heads` as verified: the next record of each
    /// of those tenants must extend its head there (checking a log's tail
    /// after a checkpoint whose heads the records before it vouched for).
    pub fn starting_at(heads: &BTreeMap<TenantId, Head>) -> Verifier {
        Verifier {
            heads: heads
                .iter()
                .map(|(tenant, head)| (Box::from(tenant.as_str()), Some((head.seq, head.hash))))
                .collect(),
            ..Verifier::default()
        }
    }

    /// Expects every receipt fed from now on to name `sku` (when `Some`):
    /// see [`VerifyOptions::sku`].
    pub fn expecting(mut self, options: &VerifyOptions<'_>) -> Verifier {
        self.sku = options.sku.map(Box::from);
        self
    }

    /// Checks one record against its tenant's chain so far.
    pub fn feed(&mut self, record: &Record) {
        self.feed_parts(
            record.tenant.as_str(),
            record.seq,
            &record.hash,
            &record.bytes,
        );
    }

    /// [`Verifier::feed`] without building a [`Record`].
    pub fn feed_parts(&mut self, tenant: &str, seq: u64, hash: &Hash, bytes: &[u8]) {
        self.receipts += 1;
        let slot = match self.heads.get_mut(tenant) {
            Some(slot) => slot,
            None => self
                .heads
                .entry(Box::from(tenant))
                .or_insert(Some((0, GENESIS))),
        };
        // A broken chain reports its first bad record only.
        let Some((last, prev)) = *slot else { return };
        match check(tenant, seq, hash, bytes, last, &prev, self.sku.as_deref()) {
            Ok(()) => *slot = Some((seq, *hash)),
            Err(reason) => {
                *slot = None;
                self.bad(tenant.to_owned(), seq, reason);
            }
        }
    }

    /// Records damage found outside any chain (e.g. a corrupt frame).
    pub fn bad(&mut self, tenant: String, seq: u64, reason: String) {
        if self.first_bad.is_none() {
            self.first_bad = Some(BadRecord {
                tenant,
                seq,
                reason,
            });
        }
    }

    /// The first bad record found so far.
    pub fn first_bad(&self) -> Option<&BadRecord> {
        self.first_bad.as_ref()
    }

    /// Whether something bad was found.
    pub fn has_bad(&self) -> bool {
        self.first_bad.is_some()
    }

    /// `tenant`'s head as fed so far (`None`: not fed, or its chain broke).
    pub fn head(&self, tenant: &str) -> Option<Head> {
        let (seq, hash) = (*self.heads.get(tenant)?)?;
        Some(Head { seq, hash })
    }

    /// Records fed so far.
    pub fn receipts(&self) -> u64 {
        self.receipts
    }

    /// Called when the records fed so far are exactly those before the
    /// stored checkpoint's mark: judges it against every chain's head here,
    /// unless a chain already broke (then the heads prove nothing).
    pub fn at_mark(&mut self, options: &VerifyOptions<'_>, records: u64, blob: &Arc<[u8]>) {
        let Some(judge) = options.checkpoint else {
            return;
        };
        if self.has_bad() {
            return;
        }
        let heads: BTreeMap<TenantId, Head> = self
            .heads
            .iter()
            .filter_map(|(tenant, head)| {
                let (seq, hash) = (*head)?;
                // Fed tenants are valid ids (frames and records carry valid ids).
                let tenant = TenantId::new(tenant).ok()?;
                Some((tenant, Head { seq, hash }))
            })
            .collect();
        self.checkpoint = judge(&StoredCheckpoint {
            records,
            blob: Arc::clone(blob),
            heads,
        });
    }

    /// The report so far.
    pub fn report(self) -> VerifyReport {
        VerifyReport {
            tenants: self.heads.len(),
            receipts: self.receipts,
            first_bad: self.first_bad,
            checkpoint: self.checkpoint,
        }
    }
}

/// Checks a record as the successor of (`last`, `prev`).
fn check(
    tenant: &str,
    seq: u64,
    hash: &Hash,
    bytes: &[u8],
    last: u64,
    prev: &Hash,
    sku: Option<&str>,
) -> Result<(), String> {
    let Some(next) = last.checked_add(1) else {
        return Err(format!(
            "found seq `{seq}` after seq `{last}`, the largest a chain can hold"
        ));
    };
    if seq != next {
        return Err(format!("expected seq `{next}`, found seq `{seq}`"));
    }
    if chain_hash(prev, bytes) != *hash {
        return Err("stored hash does not match SHA-256(prev ‖ bytes)".to_owned());
    }
    check_fields(tenant, seq, bytes, prev, sku)
}

/// Checks the chain fields inside a receipt's bytes against where it is
/// stored: `tenant`'s record `seq`, after the record whose hash is `prev`;
/// and, when `sku` is given, that the receipt names that SKU.
pub(crate) fn check_fields(
    tenant: &str,
    seq: u64,
    bytes: &[u8],
    prev: &Hash,
    sku: Option<&str>,
) -> Result<(), String> {
    let fields: ChainFields<'_> = serde_json::from_slice(bytes)
        .map_err(|e| format!("receipt bytes lack valid `tenant`, `seq`, `prev`: {e}"))?;
    if let Some(expected) = sku
        && fields.sku.as_deref() != Some(expected)
    {
        return Err(match fields.sku {
            Some(found) => format!(
                "receipt was written by sku `{found}`, this governor is sku `{expected}`: the wrong ledger"
            ),
            None => format!("receipt names no sku, this governor is sku `{expected}`"),
        });
    }
    if fields.tenant != tenant {
        return Err(format!(
            "receipt names tenant `{}`, stored under `{tenant}`",
            fields.tenant
        ));
    }
    if fields.seq != seq {
        return Err(format!(
            "receipt names seq `{}`, stored as seq `{seq}`",
            fields.seq
        ));
    }
    let mut expected = [0u8; 64];
    hex::encode_to_slice(prev, &mut expected).map_err(|e| e.to_string())?;
    if fields.prev.as_bytes() != expected {
        return Err(format!(
            "receipt names prev `{}`, chain has `{}`",
            fields.prev,
            hex::encode(prev)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tenant::TenantId;

    fn record(tenant: &str, seq: u64, prev: &Hash) -> Record {
        let bytes = format!(
            r#"{{"kind":"signal","prev":"{}","seq":{seq},"tenant":"{tenant}"}}"#,
            hex::encode(prev)
        )
        .into_bytes();
        Record {
            tenant: TenantId::new(tenant).unwrap(),
            seq,
            hash: chain_hash(prev, &bytes),
            bytes: Arc::from(bytes),
        }
    }

    #[test]
    fn good_chains_verify() {
        let mut v = Verifier::new();
        let a1 = record("a", 1, &GENESIS);
        let b1 = record("b", 1, &GENESIS);
        let a2 = record("a", 2, &a1.hash);
        for r in [&a1, &b1, &a2] {
            v.feed(r);
        }
        assert_eq!(
            v.report(),
            VerifyReport {
                tenants: 2,
                receipts: 3,
                first_bad: None,
                checkpoint: None,
            }
        );
    }

    #[test]
    fn each_kind_of_damage_is_reported() {
        let a1 = record("a", 1, &GENESIS);
        let cases: Vec<(Record, &str)> = vec![
            (record("a", 3, &a1.hash), "expected seq `2`"),
            (record("a", 2, &[9; 32]), "stored hash"),
            (
                Record {
                    hash: [0; 32],
                    ..record("a", 2, &a1.hash)
                },
                "stored hash",
            ),
            (
                {
                    let mut r = record("b", 2, &a1.hash);
                    r.tenant = TenantId::new("a").unwrap();
                    r
                },
                "names tenant",
            ),
        ];
        for (bad, reason) in cases {
            let mut v = Verifier::new();
            v.feed(&a1);
            v.feed(&bad);
            let report = v.report();
            let first = report.first_bad.expect("damage not reported");
            assert_eq!((first.tenant.as_str(), first.seq), ("a", bad.seq));
            assert!(first.reason.contains(reason), "{}", first.reason);
        }
    }
}

//! Capacity from the spec: the volume and memory a governor needs, from its
//! expected load (`deploy.signals_per_second`), its retention
//! (`deploy.retain`) and its tenant bound (`tenancy.max_tenants`), with the
//! constants measured on the file ledger (`docs/BENCHMARKS.md`, issue 12;
//! `docs/operations.md`, "Capacity").

/// Ledger bytes per receipt (measured 583 for a calm signal receipt of the
/// cost-guard spec, frame and index entry included: 600 with headroom).
pub const BYTES_PER_RECEIPT: u64 = 600;
/// Bytes per receipt of the Merkle tree the file ledger keeps beside its
/// segments, for the receipts it keeps locally (retention prunes the rest):
/// 32 for the leaf, 32 for the nodes above it, 8 for its log position.
pub const TREE_BYTES_PER_RECEIPT: u64 = 72;
/// A segment (the writer's default size).
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// Receipts between background checkpoints (serve's default): a segment is
/// archived only once a checkpoint covers it, so this many receipts can
/// wait past the bound.
pub const CHECKPOINT_EVERY: u64 = 200_000;
/// Memory of a governor before its tenants (measured 45 MiB RSS under load
/// with 1,000 tenants; 64 MiB with headroom).
pub const BASE_MEMORY: u64 = 64 << 20;
/// Memory per tenant held (measured 774 B for an idle tenant with one
/// remembered message id: 1 KiB with headroom).
pub const TENANT_MEMORY: u64 = 1 << 10;
/// The volume size without a retention bound (the ledger then grows
/// without bound: see the capacity section of `docs/operations.md`).
pub const UNBOUNDED_VOLUME_GI: u64 = 10;

const GI: u64 = 1 << 30;
const MI: u64 = 1 << 20;

/// A retention bound as the spec gives it (`7d`, `12h`, `30m`, `90s`, or
/// `20GiB`, `500MiB`, `1TiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// Seconds of receipts kept locally.
    Seconds(u64),
    /// Bytes of segments kept locally.
    Bytes(u64),
}

impl Retain {
    /// Parses the spec's text (the schema's pattern admits only these forms).
    pub fn parse(text: &str) -> Option<Retain> {
        let digits = text.find(|c: char| !c.is_ascii_digit())?;
        let number: u64 = text[..digits].parse().ok().filter(|&n| n > 0)?;
        let (seconds, bytes) = match &text[digits..] {
            "s" => (Some(1), None),
            "m" => (Some(60), None),
            "h" => (Some(3600), None),
            "d" => (Some(86_400), None),
            "MiB" => (None, Some(MI)),
            "GiB" => (None, Some(GI)),
            "TiB" => (None, Some(GI << 10)),
            _ => return None,
        };
        match (seconds, bytes) {
            (Some(scale), _) => number.checked_mul(scale).map(Retain::Seconds),
            (_, Some(scale)) => number.checked_mul(scale).map(Retain::Bytes),
            _ => None,
        }
    }

    /// The bytes it keeps locally at `rate` signals per second: the
    /// receipts' segments (what a size bound counts) and the tree over
    /// them.
    pub fn bytes(self, rate: u64) -> u64 {
        let segments = match self {
            Retain::Seconds(seconds) => seconds
                .saturating_mul(rate)
                .saturating_mul(BYTES_PER_RECEIPT),
            Retain::Bytes(bytes) => bytes,
        };
        segments.saturating_add(segments / BYTES_PER_RECEIPT * TREE_BYTES_PER_RECEIPT)
    }
}

/// The ledger volume, in GiB: what retention keeps, the segment being
/// written and one waiting for its checkpoint, a checkpoint interval of
/// receipts, all over the 95% of the volume below `--min-free`'s default.
pub fn volume_gi(retain: Option<Retain>, rate: u64) -> u64 {
    let Some(retain) = retain else {
        return UNBOUNDED_VOLUME_GI;
    };
    let local = retain
        .bytes(rate)
        .saturating_add(2 * SEGMENT_BYTES)
        .saturating_add(CHECKPOINT_EVERY * (BYTES_PER_RECEIPT + TREE_BYTES_PER_RECEIPT));
    (local / 95).saturating_mul(100).div_ceil(GI).max(1)
}

/// The memory limit, in MiB: the base and every tenant the spec allows,
/// and at least what the spec asks for (`spec_mi`, when it is a quantity
/// in `Mi` or `Gi`).
pub fn memory_mi(max_tenants: u32, spec_mi: Option<u64>) -> u64 {
    let needed = (BASE_MEMORY + u64::from(max_tenants) * TENANT_MEMORY).div_ceil(MI);
    needed.max(spec_mi.unwrap_or(0))
}

/// The memory quantity to render: the spec's (`quantity`), raised to what
/// `max_tenants` needs when it is in `Mi` or `Gi` (any other form is kept
/// as written).
pub fn memory(max_tenants: u32, quantity: &str) -> String {
    match quantity_mi(quantity).map(|mi| (mi, memory_mi(max_tenants, Some(mi)))) {
        Some((mi, needed)) if needed > mi => format!("{needed}Mi"),
        _ => quantity.to_owned(),
    }
}

/// A Kubernetes memory quantity in MiB, for the forms `256Mi` and `2Gi`.
pub fn quantity_mi(quantity: &str) -> Option<u64> {
    if let Some(mi) = quantity.strip_suffix("Mi") {
        return mi.parse().ok();
    }
    quantity
        .strip_suffix("Gi")?
        .parse::<u64>()
        .ok()?
        .checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_parses() {
        assert_eq!(Retain::parse("7d"), Some(Retain::Seconds(7 * 86_400)));
        assert_eq!(Retain::parse("20GiB"), Some(Retain::Bytes(20 * GI)));
        for bad in ["", "d", "0d", "7", "7w", "-7d", "99999999999999999999d"] {
            assert_eq!(Retain::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_volume_follows_rate_and_retention() {
        // 1,000 signals/s for a day: 51.8 GB of segments and 6.2 GB of
        // tree, plus 128 MiB and 134 MB, over 95%.
        assert_eq!(volume_gi(Some(Retain::Seconds(86_400)), 1000), 58);
        assert_eq!(volume_gi(Some(Retain::Bytes(20 * GI)), 1000), 24);
        assert_eq!(volume_gi(Some(Retain::Seconds(60)), 1), 1);
        assert_eq!(volume_gi(None, 1000), UNBOUNDED_VOLUME_GI);
        // Saturates instead of overflowing.
        assert!(volume_gi(Some(Retain::Seconds(u64::MAX)), u64::MAX) > 0);
    }

    #[test]
    fn memory_covers_every_tenant_and_the_spec() {
        assert_eq!(memory_mi(1000, None), 65);
        assert_eq!(memory_mi(100_000, None), 162);
        assert_eq!(memory_mi(1000, Some(256)), 256);
        assert_eq!(quantity_mi("256Mi"), Some(256));
        assert_eq!(quantity_mi("2Gi"), Some(2048));
        assert_eq!(quantity_mi("500M"), None);
        assert_eq!(memory(1000, "256Mi"), "256Mi");
        assert_eq!(memory(1_000_000, "256Mi"), "1041Mi");
        assert_eq!(memory(1_000_000, "2Gi"), "2Gi");
        assert_eq!(memory(1_000_000, "500M"), "500M");
    }
}

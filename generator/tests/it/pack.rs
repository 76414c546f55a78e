//! The interpreted policy pack means exactly what the generated crate
//! does, for every shipped spec ([`super::pack_proof`]; the edge-case spec
//! is proven by `scripts/check-edge-spec`).

use std::path::Path;

use ggen_runtime_core::sku::PolicyPack;
use proptest::prelude::*;

use super::pack_proof::{assert_same_tables, receipts, stream};

/// Each shipped spec and its generated crate's compiled pack.
fn shipped() -> [(&'static str, &'static dyn PolicyPack); 3] {
    [
        ("specs/cost_guard.json", &cost_guard_governor::PACK),
        ("specs/queue_valve.json", &queue_valve_governor::PACK),
        ("specs/rollback_guard.json", &rollback_guard_governor::PACK),
    ]
}

/// The interpreted pack of the spec at `path` (relative to the project).
fn interpreted(path: &str) -> &'static dyn PolicyPack {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    super::pack_proof::interpreted(&root.join(path))
}

#[test]
fn the_interpreted_tables_are_the_compiled_ones() {
    for (path, compiled) in shipped() {
        assert_same_tables(interpreted(path), compiled, path);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn the_interpreted_pack_writes_the_compiled_packs_receipts(steps in stream()) {
        for (path, compiled) in shipped() {
            let ours = receipts(interpreted(path), &steps);
            let theirs = receipts(compiled, &steps);
            prop_assert!(!theirs.is_empty());
            prop_assert_eq!(ours, theirs, "{}", path);
        }
    }
}

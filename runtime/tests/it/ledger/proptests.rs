//! Property: after random appends across tenants, any single-byte mutation
//! of the segment files is detected by `verify_dir` or by open.

use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_single_byte_mutation_is_detected(
        appends in proptest::collection::vec((0usize..4, "[a-z ]{0,40}"), 1..40),
        pick in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let options = FileOptions { segment_bytes: 4096, ..fast_options() };
        {
            let ledger = FileLedger::open(dir.path(), options.clone()).unwrap();
            for (t, note) in &appends {
                append_next(&ledger, &tenant(&format!("t{t}")), note);
            }
        }
        prop_assert_eq!(verify_dir(dir.path()).unwrap().first_bad, None);
        let files = segments(dir.path());
        let sizes: Vec<usize> = files.iter().map(|f| fs_err::metadata(f).unwrap().len() as usize).collect();
        let total: usize = sizes.iter().sum();
        let mut at = pick.index(total);
        let mut which = 0;
        while at >= sizes[which] {
            at -= sizes[which];
            which += 1;
        }
        let mut bytes = fs_err::read(&files[which]).unwrap();
        bytes[at] ^= xor;
        fs_err::write(&files[which], &bytes).unwrap();

        let report = verify_dir(dir.path()).unwrap();
        prop_assert!(report.first_bad.is_some(), "mutation at {}:{} not reported", which, at);
        match FileLedger::open(dir.path(), options) {
            Err(_) => {}
            // Accepted only as a torn final record, and then reported as a repair.
            Ok(ledger) => {
                prop_assert_eq!(which + 1, files.len());
                let repair = ledger.repair().cloned();
                prop_assert!(repair.is_some_and(|r| r.offset as usize <= at));
            }
        }
    }
}

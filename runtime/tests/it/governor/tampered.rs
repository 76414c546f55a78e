//! Rewritten checkpoints: whatever a blob with a valid CRC claims, recovery
//! ends with the states the ledger's receipts say, on both backends.

use std::path::Path;
use std::sync::Arc;

use ggen_runtime::ledger::file::{ANCHOR_FILE, FileLedger, FileOptions};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::ledger::{Ledger, Recovered};
use ggen_runtime::receipt::Input;
use ggen_runtime::registry::{Registry, RegistryError};
use ggen_runtime::tenant::TenantId;
use serde_json::{Value, json};

use super::sku::{AVAIL, ENTITLED, LOAD, OPEN};

const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn tenant(name: &str) -> TenantId {
    TenantId::new(name).unwrap()
}

fn at(secs: i64) -> ggen_runtime::clock::Timestamp {
    ggen_runtime::clock::Timestamp(T0 + secs * 1000)
}

fn signal(signal: ggen_runtime::sku::SignalId, value: f64) -> Input {
    Input::Signal {
        via: Default::default(),
        signal,
        value,
        id: None,
        observed: None,
    }
}

fn fast() -> FileOptions {
    FileOptions {
        sync: Arc::new(|_| Ok(())),
        ..FileOptions::default()
    }
}

/// Tenants `a`, `b` (intervening: an in-flight set and an applied action)
/// and `c`, checkpointed with a record of `a` after the mark.
fn populate(ledger: Arc<dyn Ledger>) -> Registry {
    let registry = Registry::new(&OPEN, ledger);
    for (i, name) in ["a", "b", "c", "a"].iter().enumerate() {
        registry
            .apply(&tenant(name), signal(LOAD, 60.0), at(i as i64))
            .unwrap();
    }
    registry
        .apply(&tenant("b"), signal(AVAIL, 90.0), at(10))
        .unwrap();
    registry.checkpoint().unwrap();
    registry
        .apply(&tenant("a"), signal(LOAD, 10.0), at(11))
        .unwrap();
    registry
}

/// The blob's entry for `name`.
fn entry<'v>(blob: &'v mut Value, name: &str) -> &'v mut Value {
    blob["tenants"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|e| e[0] == name)
        .map(|e| &mut e[1])
        .unwrap()
}

/// Rewrites the blob inside a `CHECKPOINT` file and recomputes its CRC:
/// what anyone who can write the ledger directory can do.
fn rewrite_file(dir: &Path, edit: &dyn Fn(&mut Value)) {
    let path = dir.join("CHECKPOINT");
    let buf = fs_err::read(&path).unwrap();
    fs_err::write(&path, rewrite_checkpoint(&buf, edit)).unwrap();
}

/// A checkpoint file's bytes with its blob edited and its CRC recomputed.
fn rewrite_checkpoint(buf: &[u8], edit: &dyn Fn(&mut Value)) -> Vec<u8> {
    let body = &buf[..buf.len() - 4];
    let mut blob: Value = serde_json::from_slice(&body[32..]).unwrap();
    edit(&mut blob);
    let blob = serde_json::to_vec(&blob).unwrap();
    let mut out = body[..24].to_vec();
    out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
    out.extend_from_slice(&blob);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The same inside the copy of a checkpoint an `ANCHOR` keeps (the
/// anchor's own CRC recomputed too).
fn rewrite_anchor(dir: &Path, edit: &dyn Fn(&mut Value)) {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let path = dir.join(ANCHOR_FILE);
    let buf = fs_err::read(&path).unwrap();
    let mut anchor: Value = serde_json::from_slice(&buf[12..buf.len() - 4]).unwrap();
    let kept = engine
        .decode(anchor["checkpoint"].as_str().unwrap())
        .unwrap();
    anchor["checkpoint"] = json!(engine.encode(rewrite_checkpoint(&kept, edit)));
    let json = serde_json::to_vec(&anchor).unwrap();
    let mut out = buf[..8].to_vec();
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&json);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    fs_err::write(&path, out).unwrap();
}

/// The same on the memory backend: a checkpoint stored at the same mark.
fn rewrite_memory(
    ledger: &MemoryLedger,
    mark: ggen_runtime::ledger::Mark,
    edit: &dyn Fn(&mut Value),
) {
    let mut blob = None;
    ledger
        .recover(&mut |item| {
            if let Recovered::Checkpoint(stored) = item {
                blob = Some(serde_json::from_slice::<Value>(&stored.blob).unwrap());
            }
            Ok(())
        })
        .unwrap();
    let mut blob = blob.unwrap();
    edit(&mut blob);
    ledger
        .checkpoint(mark, &serde_json::to_vec(&blob).unwrap())
        .unwrap();
}

/// One forgery: its name, the edit, and the tenant recovery must name
/// (`None`: the blob as a whole).
type Forgery = (&'static str, Box<dyn Fn(&mut Value)>, Option<&'static str>);

fn forgeries() -> Vec<Forgery> {
    vec![
        (
            "a tenant the ledger never saw, cancelled",
            Box::new(|blob| {
                let mut victim = entry(blob, "c").clone();
                victim["entitlement"] = json!({ "state": "cancelled", "seen": true });
                blob["tenants"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(["victim", victim]));
            }),
            Some("victim"),
        ),
        (
            "a tenant left out",
            Box::new(|blob| {
                blob["tenants"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|e| e[0] != "b");
            }),
            Some("b"),
        ),
        (
            "a head shifted back one seq",
            Box::new(|blob| {
                let seq = entry(blob, "c")["seq"].as_u64().unwrap();
                entry(blob, "c")["seq"] = json!(seq - 1);
            }),
            Some("c"),
        ),
        (
            "a head hash changed",
            Box::new(|blob| entry(blob, "a")["hash"][0] = json!(7)),
            Some("a"),
        ),
        (
            "a profile id out of range",
            Box::new(|blob| entry(blob, "c")["governor"]["profile"] = json!(99)),
            Some("c"),
        ),
        (
            "an applied action id out of range",
            Box::new(|blob| entry(blob, "b")["governor"]["applied"] = json!([7])),
            Some("b"),
        ),
        (
            "an in-flight action id out of range",
            Box::new(|blob| entry(blob, "b")["governor"]["flight"][0]["action"] = json!(9)),
            Some("b"),
        ),
        (
            "a blob that is not a checkpoint",
            Box::new(|blob| *blob = json!({ "v": 1 })),
            None,
        ),
    ]
}

/// Recovers over `ledger` and checks that the forgery was caught, that the
/// states are the ones the receipts say, and that every tenant still works.
fn recovers_exactly(
    ledger: Arc<dyn Ledger>,
    name: &str,
    expected: Option<&str>,
    states: &std::collections::BTreeMap<TenantId, ggen_runtime::registry::TenantState>,
) {
    let fresh = Registry::new(&OPEN, Arc::clone(&ledger));
    let stats = fresh.recover().unwrap();
    let mismatch = stats
        .checkpoint_rejected
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: forged checkpoint accepted: {stats:?}"));
    assert_eq!(
        mismatch.tenant.as_ref().map(TenantId::as_str),
        expected,
        "{name}: {mismatch}"
    );
    // Everything was replayed from the start of the log.
    assert_eq!(
        (stats.from_checkpoint, stats.skipped, stats.records),
        (0, 0, ledger.verify().unwrap().receipts),
        "{name}"
    );
    assert_eq!(&fresh.states(), states, "{name}");
    assert!(fresh.view(&tenant("victim")).is_none(), "{name}");
    // Every tenant extends its chain: no chain mismatch, no panic.
    for t in ["a", "b", "c"] {
        fresh
            .apply(&tenant(t), signal(LOAD, 20.0), at(100))
            .unwrap_or_else(|e| panic!("{name}: tenant {t}: {e}"));
    }
    assert_eq!(ledger.verify().unwrap().first_bad, None, "{name}");
}

#[test]
fn forged_memory_checkpoints_fall_back_to_a_full_replay() {
    for (name, edit, expected) in forgeries() {
        let ledger = Arc::new(MemoryLedger::new());
        let registry = populate(ledger.clone());
        // Checkpointed again at the end (so the forgery can be stored at
        // the same mark), then one more record after that mark.
        registry.checkpoint().unwrap();
        rewrite_memory(&ledger, ledger.mark().unwrap(), &*edit);
        registry
            .apply(&tenant("c"), signal(LOAD, 30.0), at(12))
            .unwrap();
        let states = registry.states();
        recovers_exactly(ledger, name, expected, &states);
    }
}

#[test]
fn forged_checkpoint_files_fall_back_to_a_full_replay() {
    for (name, edit, expected) in forgeries() {
        let dir = tempfile::tempdir().unwrap();
        let states = {
            let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
            populate(ledger).states()
        };
        rewrite_file(dir.path(), &*edit);
        let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
        recovers_exactly(ledger, name, expected, &states);
    }
}

/// [`populate`] on 4 KiB segments, more receipts of `a` and `c` over
/// several segments, checkpointed; the first segment (all of `b`'s
/// receipts among them) archived and cut behind the anchor; then a newer
/// checkpoint and a receipt after it. Returns the states.
fn populate_and_cut(
    dir: &Path,
) -> std::collections::BTreeMap<TenantId, ggen_runtime::registry::TenantState> {
    let options = || FileOptions {
        segment_bytes: 4096,
        ..fast()
    };
    let ledger = Arc::new(FileLedger::open(dir, options()).unwrap());
    let registry = populate(ledger.clone());
    let mut now = 20;
    let mut more = |registry: &Registry, n: usize| {
        for i in 0..n {
            let t = ["a", "c"][i % 2];
            let value = [10.0, 60.0, 30.0][i % 3];
            registry
                .apply(&tenant(t), signal(LOAD, value), at(now))
                .unwrap();
            now += 1;
        }
    };
    more(&registry, 40);
    registry.checkpoint().unwrap();
    let (segments, _) = ledger.segments().unwrap();
    assert!(segments.len() > 3, "{segments:?}");
    assert!(ledger.cut(segments[0]).unwrap());
    assert_eq!(
        ledger.read(&tenant("b"), 0, 10).unwrap().len(),
        0,
        "b is all archived"
    );
    more(&registry, 10);
    registry.checkpoint().unwrap();
    more(&registry, 1);
    let states = registry.states();
    drop(registry);
    drop(ledger);
    states
}

#[test]
fn a_forged_checkpoint_on_a_cut_ledger_falls_back_to_the_one_the_anchor_keeps() {
    for (name, edit, expected) in forgeries().into_iter().filter(|(name, ..)| {
        // Those that need `b` in flight: the receipts after populate's
        // settle it.
        !name.contains("action id")
    }) {
        let dir = tempfile::tempdir().unwrap();
        let states = populate_and_cut(dir.path());
        rewrite_file(dir.path(), &*edit);
        let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
        let fresh = Registry::new(&OPEN, ledger.clone());
        let stats = fresh.recover().unwrap();
        let mismatch = stats
            .checkpoint_rejected
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: forged checkpoint accepted: {stats:?}"));
        assert_eq!(
            mismatch.tenant.as_ref().map(TenantId::as_str),
            expected,
            "{name}: {mismatch}"
        );
        // From the anchor's copy (every tenant, `b` included, whose
        // receipts are all archived), then the 11 receipts after it.
        assert_eq!(stats.from_checkpoint, 3, "{name}: {stats:?}");
        assert_eq!(stats.records, 11, "{name}: {stats:?}");
        assert!(stats.quarantined.is_empty(), "{name}: {stats:?}");
        assert_eq!(fresh.states(), states, "{name}");
        for t in ["a", "b", "c"] {
            fresh
                .apply(&tenant(t), signal(LOAD, 20.0), at(1_000))
                .unwrap_or_else(|e| panic!("{name}: tenant {t}: {e}"));
        }
        assert_eq!(ledger.verify().unwrap().first_bad, None, "{name}");
    }
}

#[test]
fn a_cut_ledger_whose_kept_checkpoint_is_forged_too_refuses_to_recover() {
    let dir = tempfile::tempdir().unwrap();
    populate_and_cut(dir.path());
    let edit = |blob: &mut Value| entry(blob, "b")["hash"][0] = json!(7);
    rewrite_file(dir.path(), &edit);
    rewrite_anchor(dir.path(), &edit);
    let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
    let receipts = ledger.verify().unwrap().receipts;
    let fresh = Registry::new(&OPEN, ledger.clone());
    let err = fresh.recover().unwrap_err();
    assert!(
        matches!(&err, RegistryError::NoUsableCheckpoint { rejected, fallback }
            if rejected.tenant.as_ref().map(TenantId::as_str) == Some("b")
                && fallback.tenant.as_ref().map(TenantId::as_str) == Some("b")),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("retention cut") && text.contains("ledger verify --archive"),
        "{text}"
    );
    // Nothing was half-loaded, nothing written.
    assert_eq!(fresh.len(), 0);
    assert_eq!(ledger.verify().unwrap().receipts, receipts);
}

#[test]
fn genuine_checkpoints_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let states = {
        let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
        populate(ledger).states()
    };
    let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
    let fresh = Registry::new(&OPEN, ledger);
    let stats = fresh.recover().unwrap();
    assert_eq!(stats.checkpoint_rejected, None);
    assert_eq!((stats.from_checkpoint, stats.records), (3, 1), "{stats:?}");
    assert_eq!(fresh.states(), states);
}

#[test]
fn a_tenant_out_of_step_with_its_chain_fails_alone() {
    let ledger = Arc::new(MemoryLedger::new());
    let stale = populate(ledger.clone());
    // Another writer moves `a`'s chain on: `stale` no longer knows its head.
    let other = Registry::new(&OPEN, ledger.clone());
    other.recover().unwrap();
    other
        .apply(&tenant("a"), signal(LOAD, 20.0), at(20))
        .unwrap();
    let receipts = ledger.verify().unwrap().receipts;
    let err = stale
        .apply(&tenant("a"), signal(LOAD, 30.0), at(21))
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::ChainMismatch { tenant, .. } if tenant.as_str() == "a"),
        "{err}"
    );
    assert!(err.to_string().contains("run `ledger verify`"), "{err}");
    assert_eq!(
        ledger.verify().unwrap().receipts,
        receipts,
        "nothing written"
    );
    // The other tenants keep working, timers included.
    for t in ["b", "c"] {
        stale.apply(&tenant(t), signal(LOAD, 30.0), at(22)).unwrap();
    }
    assert!(stale.tick(at(10_000)).is_ok());
    assert_eq!(ledger.verify().unwrap().first_bad, None);
}

/// Appends raw receipt bytes for `t` (chain-correct, whatever they say).
fn append_raw(ledger: &dyn Ledger, t: &str, bytes: Vec<u8>) {
    let t = tenant(t);
    let head = ledger.head(&t);
    ledger
        .append(ggen_runtime::ledger::Entry {
            tenant: t,
            seq: head.seq + 1,
            prev: head.hash,
            bytes,
        })
        .unwrap();
}

#[test]
fn a_tenant_whose_receipts_cannot_be_replayed_is_quarantined_alone() {
    let ledger = Arc::new(MemoryLedger::new());
    let registry = populate(ledger.clone());
    let states = registry.states();
    // Chain-correct receipts `b` cannot replay (a signal this SKU lacks),
    // then more of `b` and `a`.
    let head = ledger.head(&tenant("b"));
    let bad = serde_json::to_vec(&json!({
        "v": 1, "sku": "test_guard", "tenant": "b", "seq": head.seq + 1, "kind": "signal",
        "at": "2026-01-01T00:01:00Z", "to": "warning",
        "event": { "signal": "nope", "value": "1" },
        "prev": hex::encode(head.hash),
    }))
    .unwrap();
    append_raw(&*ledger, "b", bad);
    let head = ledger.head(&tenant("b"));
    let next = serde_json::to_vec(&json!({
        "v": 1, "sku": "test_guard", "tenant": "b", "seq": head.seq + 1, "kind": "signal",
        "at": "2026-01-01T00:01:01Z", "to": "warning",
        "event": { "signal": "load", "value": "1" },
        "prev": hex::encode(head.hash),
    }))
    .unwrap();
    append_raw(&*ledger, "b", next);
    registry
        .apply(&tenant("a"), signal(LOAD, 40.0), at(31))
        .unwrap();
    let a_state = registry.states()[&tenant("a")].clone();
    let mut checkpointed = 0;
    ledger
        .recover(&mut |item| {
            if let Recovered::Checkpoint(stored) = item {
                checkpointed = stored.records;
            }
            Ok(())
        })
        .unwrap();

    let fresh = Registry::new(&OPEN, ledger.clone());
    let stats = fresh.recover().unwrap();
    assert_eq!(stats.quarantined, [tenant("b")], "{stats:?}");
    assert_eq!(stats.unreplayed, 2, "{stats:?}");
    assert_eq!(
        checkpointed + stats.records,
        ledger.verify().unwrap().receipts,
        "every record after the checkpoint is counted"
    );
    // `b` is refused, and says why; nothing is written for it.
    let err = fresh
        .apply(&tenant("b"), signal(LOAD, 30.0), at(40))
        .unwrap_err();
    assert!(matches!(err, RegistryError::Quarantined { .. }), "{err}");
    assert!(err.to_string().contains("unknown signal `nope`"), "{err}");
    assert!(fresh.quarantined(&tenant("b")).is_some());
    // The others recovered exactly and keep working.
    assert_eq!(fresh.states()[&tenant("a")], a_state);
    assert_eq!(fresh.states()[&tenant("c")], states[&tenant("c")]);
    fresh
        .apply(&tenant("c"), signal(LOAD, 30.0), at(41))
        .unwrap();
    assert!(fresh.tick(at(10_000)).is_ok());
    assert_eq!(ledger.verify().unwrap().first_bad, None);
}

#[test]
fn ledger_verify_reports_a_forged_checkpoint_and_still_the_chains() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
        populate(ledger);
    }
    let (text, ok) = ggen_runtime::cli::verify_report(&OPEN, dir.path()).unwrap();
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    for (name, edit, expected) in forgeries() {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
            populate(ledger);
        }
        rewrite_file(dir.path(), &*edit);
        let report = ggen_runtime::cli::verify_report(&OPEN, dir.path()).unwrap();
        assert_forgery_reported(name, expected, report);
    }
}

/// `ledger verify` of a forged checkpoint: the chains verify (8 receipts in
/// 3 chains), the checkpoint is said to contradict them (at `expected`).
fn assert_forgery_reported(name: &str, expected: Option<&str>, (text, ok): (String, bool)) {
    assert!(!ok, "{name}: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ok: 8 receipts in 3 tenant chains"),
        "{name}: {text}"
    );
    let named = expected.map_or_else(String::new, |t| format!(" at tenant `{t}`"));
    let line = format!("checkpoint contradicts the chains{named}: ");
    assert!(lines[1].starts_with(&line), "{name}: {text}");
}

#[test]
fn ledger_verify_on_postgres_reports_a_forged_checkpoint_and_still_the_chains() {
    use ggen_runtime::pg::{PgLedger, PgOptions};
    let Some(url) = crate::ledger::postgres::fresh_schema() else {
        return;
    };
    let fresh = || {
        let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let _ = db.batch_execute("TRUNCATE ggen_receipts, ggen_heads, ggen_checkpoint");
        populate(Arc::new(
            PgLedger::open(&url, PgOptions::default()).unwrap(),
        ));
        db
    };
    drop(fresh());
    let (text, ok) = ggen_runtime::cli::verify_database_report(&OPEN, &url, None).unwrap();
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    for (name, edit, expected) in forgeries() {
        let mut db = fresh();
        let blob: Vec<u8> = db
            .query_one("SELECT blob FROM ggen_checkpoint", &[])
            .unwrap()
            .get(0);
        let mut value: Value = serde_json::from_slice(&blob).unwrap();
        edit(&mut value);
        db.execute(
            "UPDATE ggen_checkpoint SET blob = $1",
            &[&serde_json::to_vec(&value).unwrap()],
        )
        .unwrap();
        let report = ggen_runtime::cli::verify_database_report(&OPEN, &url, None).unwrap();
        assert_forgery_reported(name, expected, report);
    }
}

/// One way to rewrite a tenant's entry in a checkpoint blob.
#[derive(Debug, Clone)]
enum Mutation {
    /// Moves its head's seq by a non-zero amount.
    Seq(i64),
    /// Flips bits of one byte of its head's hash.
    Hash(usize, u8),
    /// Sets its profile id out of range.
    Profile(u16),
    /// Leaves it out.
    Drop,
    /// Adds a copy of it under a name the ledger never saw.
    Clone,
}

fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
    use proptest::prelude::*;
    prop_oneof![
        (1i64..5).prop_flat_map(|d| prop_oneof![Just(Mutation::Seq(d)), Just(Mutation::Seq(-d))]),
        (0usize..32, 1u8..=255).prop_map(|(i, x)| Mutation::Hash(i, x)),
        (2u16..=u16::MAX).prop_map(Mutation::Profile),
        Just(Mutation::Drop),
        Just(Mutation::Clone),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever one tenant's entry is rewritten to, recovery names that
    /// tenant and ends with the states the receipts say.
    #[test]
    fn any_rewritten_tenant_entry_is_caught(
        inputs in proptest::collection::vec((0usize..5, 0usize..4), 1..40),
        after in proptest::collection::vec(0usize..5, 0..6),
        pick in proptest::prelude::any::<proptest::sample::Index>(),
        mutation in mutation(),
    ) {
        let ledger = Arc::new(MemoryLedger::new());
        let registry = Registry::new(&OPEN, ledger.clone());
        let values = [10.0, 60.0, 120.0, 30.0];
        for (i, (t, v)) in inputs.iter().enumerate() {
            registry
                .apply(&tenant(&format!("t{t}")), signal(LOAD, values[*v]), at(i as i64))
                .unwrap();
        }
        registry.checkpoint().unwrap();
        let names: Vec<String> = registry.states().keys().map(ToString::to_string).collect();
        let name = names[pick.index(names.len())].clone();
        let edit = |blob: &mut Value| {
            let entry_of = |blob: &mut Value| entry(blob, &name).clone();
            match &mutation {
                Mutation::Seq(d) => {
                    let seq = entry(blob, &name)["seq"].as_i64().unwrap();
                    entry(blob, &name)["seq"] = json!((seq + d).max(0));
                }
                Mutation::Hash(i, x) => {
                    let byte = entry(blob, &name)["hash"][*i].as_u64().unwrap();
                    entry(blob, &name)["hash"][*i] = json!(byte ^ u64::from(*x));
                }
                Mutation::Profile(p) => entry(blob, &name)["governor"]["profile"] = json!(p),
                Mutation::Drop => {
                    blob["tenants"].as_array_mut().unwrap().retain(|e| e[0] != name.as_str());
                }
                Mutation::Clone => {
                    let copy = entry_of(blob);
                    let tenants = blob["tenants"].as_array_mut().unwrap();
                    let at = tenants.iter().position(|e| e[0] == name.as_str()).unwrap();
                    tenants.insert(at + 1, json!([format!("{name}x"), copy]));
                }
            }
        };
        rewrite_memory(&ledger, ledger.mark().unwrap(), &edit);
        for (i, t) in after.iter().enumerate() {
            registry
                .apply(&tenant(&format!("t{t}")), signal(LOAD, 30.0), at(1000 + i as i64))
                .unwrap();
        }
        let fresh = Registry::new(&OPEN, ledger.clone());
        let stats = fresh.recover().unwrap();
        let expected = match mutation {
            Mutation::Clone => format!("{name}x"),
            _ => name.clone(),
        };
        let mismatch = stats.checkpoint_rejected.clone();
        proptest::prop_assert_eq!(
            mismatch.as_ref().and_then(|m| m.tenant.as_ref()).map(ToString::to_string),
            Some(expected),
            "{:?}: {:?}", mutation, mismatch
        );
        proptest::prop_assert_eq!(fresh.states(), registry.states());
    }
}

/// A forgery the heads cannot see: every head, tenant and id stays valid,
/// only a tenant's state is rewritten (cancelled with no receipt saying so,
/// or moved to another FSM state). `ledger verify` replays the log up to
/// the mark and names the tenant.
#[test]
fn ledger_verify_replays_the_log_to_catch_a_rewritten_state() {
    type Edit = Box<dyn Fn(&mut Value)>;
    // An id a future Pub/Sub message will carry, remembered in advance: that
    // message would be dropped as a duplicate, with no receipt.
    let planted = {
        use base64::Engine as _;
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(b"signal\0msg-from-the-future");
        let mut bytes = digest[..16].to_vec();
        bytes.extend_from_slice(&at(3).as_millis().to_be_bytes());
        bytes.push(0);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    // What was rewritten, and the part the report must name.
    let edits: [(&str, Edit); 4] = [
        (
            "entitlement's state",
            Box::new(|blob| {
                entry(blob, "c")["entitlement"]["state"] = "cancelled".into();
            }),
        ),
        // A part the state name does not show: the report must name it.
        (
            "entitlement's first-event flag",
            Box::new(|blob| {
                let seen = entry(blob, "c")["entitlement"]["seen"].as_bool() == Some(true);
                entry(blob, "c")["entitlement"]["seen"] = (!seen).into();
            }),
        ),
        (
            "governor's state",
            Box::new(|blob| entry(blob, "c")["governor"]["state"] = "refusing".into()),
        ),
        (
            "event id",
            Box::new(move |blob| {
                entry(blob, "c")["recent"]
                    .as_array_mut()
                    .unwrap()
                    .push(planted.clone().into());
            }),
        ),
    ];
    for (what, edit) in edits {
        let dir = tempfile::tempdir().unwrap();
        {
            let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
            populate(ledger);
        }
        rewrite_file(dir.path(), &*edit);
        let stored = {
            let ledger = FileLedger::open(dir.path(), fast()).unwrap();
            let mut stored = None;
            ledger
                .recover(&mut |item| {
                    if let Recovered::Checkpoint(s) = item {
                        stored = Some(s.clone());
                    }
                    Ok(())
                })
                .unwrap();
            stored.unwrap()
        };
        // The heads still hold: only the replay can tell.
        assert!(
            ggen_runtime::registry::check_checkpoint(&OPEN, &stored).is_ok(),
            "{what}"
        );
        let (text, ok) = ggen_runtime::cli::verify_report(&OPEN, dir.path()).unwrap();
        assert!(!ok, "{what}: {text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ok: "), "{what}: {text}");
        assert!(
            lines[1].starts_with("checkpoint contradicts the chains at tenant `c`: "),
            "{what}: {text}"
        );
        assert!(lines[1].contains(what), "{what}: {text}");
    }
}

/// A ledger another SKU wrote is the wrong ledger, however sound its
/// chains: `ledger verify` says so, and recovery refuses it whole rather
/// than serving (or quarantining) tenants on receipts it never decided.
#[test]
fn a_ledger_another_sku_wrote_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
        populate(ledger);
    }
    // Without its checkpoint (whose SKU recovery already checks), only the
    // receipts say whose ledger it is.
    fs_err::remove_file(dir.path().join(ggen_runtime::ledger::file::CHECKPOINT_FILE)).unwrap();
    let (text, ok) = ggen_runtime::cli::verify_report(&OPEN, dir.path()).unwrap();
    assert!(ok, "{text}");
    let (text, ok) = ggen_runtime::cli::verify_report(&ENTITLED, dir.path()).unwrap();
    assert!(!ok, "{text}");
    assert!(
        text.contains(
            "receipt was written by sku `test_guard`, this governor is sku `test_guard_paid`"
        ),
        "{text}"
    );
    let ledger = Arc::new(FileLedger::open(dir.path(), fast()).unwrap());
    let error = Registry::new(&ENTITLED, ledger).recover().unwrap_err();
    assert!(
        error.to_string().contains("tenant") && format!("{:?}", error).contains("OtherSku"),
        "{error:?}"
    );
}

//! `ggen backtest`: a generated week of cost_guard signals through two
//! versions of the spec — from a signals file, a file ledger, a PostgreSQL
//! ledger and a git revision — with its gates, and a tampered ledger refused.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use assert_cmd::cargo::cargo_bin_cmd;
use ggen::lab::Settle;
use ggen::lab::backtest::{Gates, Report};
use ggen::lab::recorded::Recorded;
use ggen_runtime_core::ledger::Ledger;
use ggen_runtime_core::ledger::file::{FileLedger, FileOptions};
use ggen_runtime_core::registry::Registry;
use serde_json::Value;

use super::support::{ggen, repo};

fn cost_guard() -> String {
    repo().join("specs/cost_guard.json").display().to_string()
}

/// A week of cost_guard readings, every ten minutes, for `tenants` tenants
/// (deterministic): each approved at the start (every fifth on
/// `enterprise`), readings that wander around the tenant's baseline with
/// bursts past every threshold.
fn week(tenants: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let at = |minutes: u64| {
        let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
        format!("2026-11-{:02}T{h:02}:{m:02}:00Z", d + 1)
    };
    let mut out = String::new();
    let base: Vec<f64> = (0..tenants).map(|_| 10.0 + next() * 40.0).collect();
    for t in 0..tenants {
        let plan = if t % 5 == 0 {
            r#","plan":"enterprise""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"{{"tenant":"t{t:03}","entitlement":"approved","at":"{}"{plan}}}"#,
            at(0)
        );
    }
    let mut burst = vec![0u32; tenants];
    for minute in (10..7 * 1440).step_by(10) {
        for t in 0..tenants {
            if burst[t] == 0 && next() < 0.01 {
                burst[t] = 2 + (next() * 8.0) as u32;
            }
            let factor = if burst[t] > 0 {
                burst[t] -= 1;
                1.5 + next() * 20.0
            } else {
                0.8 + next() * 0.4
            };
            let rate = base[t] * factor;
            let spike = (factor - 1.0).max(0.0) * 100.0;
            let _ = writeln!(
                out,
                r#"{{"tenant":"t{t:03}","signal":"spend_rate","value":{rate:.2},"at":"{}","id":"r{t}-{minute}"}}"#,
                at(minute)
            );
            let _ = writeln!(
                out,
                r#"{{"tenant":"t{t:03}","signal":"spend_spike","value":{spike:.2},"at":"{}","id":"s{t}-{minute}"}}"#,
                at(minute)
            );
        }
    }
    out
}

/// cost_guard with `spend_rate`'s refuse threshold lowered from 500 to 300.
fn stricter(dir: &Path) -> String {
    let spec = fs_err::read_to_string(repo().join("specs/cost_guard.json")).expect("spec");
    let from = r#""refuse": 500,"#;
    assert_eq!(spec.matches(from).count(), 1);
    let path = dir.join("stricter.json");
    fs_err::write(&path, spec.replace(from, r#""refuse": 300,"#)).expect("write");
    path.display().to_string()
}

fn backtest(old: &str, new: &str, recorded: &Recorded) -> Report {
    ggen::pipeline::backtest(old, new, recorded, Settle::Succeed, &Gates::default())
        .expect("backtest")
}

/// What a report (as JSON) says about the change, without where the
/// inputs came from (a ledger numbers its receipts, a file its lines).
fn outcome(doc: &Value) -> Value {
    let divergences: Vec<Value> = doc["divergences"]
        .as_array()
        .expect("divergences")
        .iter()
        .map(|d| serde_json::json!([d["tenant"], d["at"], d["old"], d["new"]]))
        .collect();
    let mut kept = serde_json::Map::new();
    for key in [
        "tenants",
        "interventions",
        "refusals",
        "actions",
        "old_totals",
        "new_totals",
        "profiles",
        "from",
        "to",
    ] {
        kept.insert(key.to_owned(), doc[key].clone());
    }
    kept.insert("divergences".to_owned(), Value::Array(divergences));
    Value::Object(kept)
}

fn json(report: &Report) -> Value {
    serde_json::to_value(report).expect("a report is JSON")
}

#[test]
fn a_spec_against_itself_changes_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let signals = temp.path().join("week.jsonl");
    fs_err::write(&signals, week(12)).expect("signals");
    let report = backtest(&cost_guard(), &cost_guard(), &Recorded::Signals(signals));
    assert_eq!(report.inputs, 12 + 12 * 2 * (7 * 144 - 1));
    assert_eq!(report.bad_inputs, 0, "{:?}", report.bad);
    assert_eq!(report.tenants, 12);
    assert!(
        report.interventions.old > 20 && report.refusals.old > 0,
        "the week must exercise the policy: {:?} {:?}",
        report.interventions,
        report.refusals
    );
    assert_eq!(report.old_totals, report.new_totals);
    assert_eq!(report.diverged, 0);
    for change in [report.interventions, report.refusals, report.actions] {
        assert_eq!(
            (change.old, change.added, change.removed),
            (change.new, 0, 0)
        );
    }
    // Every tenant-minute from the first input to the last (10 minutes
    // before the week's end) is in some state, under some profile.
    let ms: u64 = report.old_totals.state_ms.values().sum();
    assert_eq!(
        ms,
        12 * (7 * 1440 - 10) * 60_000,
        "{:?}",
        report.old_totals.state_ms
    );
    assert!(report.profiles["enterprise"].old.actions > 0);
}

#[test]
fn a_stricter_spec_adds_refusals_and_crosses_the_gate() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    fs_err::write(dir.join("week.jsonl"), week(12)).expect("signals");
    let new = stricter(dir);
    let old = cost_guard();
    let args = [
        "--format",
        "json",
        "backtest",
        "--old",
        &old,
        "--new",
        &new,
        "--signals",
        "week.jsonl",
        "--max-new-refusals",
        "0",
        "--max-action-increase",
        "1000",
    ];
    let (json, _) = ggen(dir, &args, 1);
    let doc: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["ok"], false);
    let (old_refusals, new_refusals) = (
        doc["refusals"]["old"].as_u64().unwrap(),
        doc["refusals"]["new"].as_u64().unwrap(),
    );
    assert!(new_refusals > old_refusals, "{}", doc["refusals"]);
    assert_eq!(doc["refusals"]["removed"], 0);
    let gate = &doc["gates"][0];
    assert_eq!(gate["name"], "max-new-refusals");
    assert_eq!(gate["crossed"], true);
    let crossed: Vec<&str> = gate["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(!crossed.is_empty());
    assert_eq!(doc["gates"][1]["crossed"], false, "{}", doc["gates"][1]);
    // Enterprise tenants have no refuse level: the change cannot touch them.
    assert_eq!(
        doc["profiles"]["enterprise"]["old"],
        doc["profiles"]["enterprise"]["new"]
    );
    let divergences = doc["divergences"].as_array().unwrap();
    assert_eq!(doc["diverged"].as_u64(), Some(divergences.len() as u64));
    for d in divergences {
        assert_ne!(d["old"], d["new"], "{d}");
        assert!(crossed.contains(&d["tenant"].as_str().unwrap()), "{d}");
    }
    assert!(
        divergences.iter().any(|d| d["new"] == "refusing"),
        "{divergences:?}"
    );

    // On a terminal: the table and the verdict; within the gate, exit 0.
    let (text, _) = ggen(dir, &args[2..], 1);
    assert!(
        text.contains("gate --max-new-refusals 0: CROSSED ("),
        "{text}"
    );
    assert!(text.contains("refusals"), "{text}");
    let limit = (new_refusals - old_refusals).to_string();
    let (text, _) = ggen(
        dir,
        &[
            "backtest",
            "--old",
            &old,
            "--new",
            &new,
            "--signals",
            "week.jsonl",
            "--max-new-refusals",
            &limit,
        ],
        0,
    );
    assert!(
        text.contains(&format!("gate --max-new-refusals {limit}: ok (+{limit})")),
        "{text}"
    );
}

#[test]
fn a_ledger_backtests_like_the_signals_it_recorded_and_a_tampered_one_is_refused() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let signals = week(6);
    fs_err::write(dir.join("week.jsonl"), &signals).expect("signals");
    // A governor's ledger: the week through the compiled cost_guard.
    let ledger_dir = dir.join("ledger");
    {
        let ledger = Arc::new(FileLedger::open(&ledger_dir, FileOptions::default()).unwrap());
        let registry = Registry::new(&cost_guard_governor::PACK, ledger as Arc<dyn Ledger>);
        let summary =
            ggen_runtime_core::replay::run(&registry, signals.as_bytes()).expect("replay");
        assert!(summary.bad_lines.is_empty(), "{:?}", summary.bad_lines);
    }
    let new = stricter(dir);
    let from_file = backtest(
        &cost_guard(),
        &new,
        &Recorded::Signals(dir.join("week.jsonl")),
    );
    let from_ledger = backtest(&cost_guard(), &new, &Recorded::Ledger(ledger_dir.clone()));
    assert!(from_file.diverged > 0);
    assert_eq!(outcome(&json(&from_ledger)), outcome(&json(&from_file)));
    assert_eq!(from_ledger.unit, "receipt");

    // One byte of a receipt changed (its frame rewritten to match would
    // still break the chain): the backtest stops, naming the damage.
    let segment = fs_err::read_dir(&ledger_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a segment");
    let mut bytes = fs_err::read(&segment).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"\"to\":\"")
        .expect("a receipt");
    bytes[at + 6] ^= 0x01;
    fs_err::write(&segment, bytes).unwrap();
    let (_, stderr) = ggen(
        dir,
        &[
            "backtest",
            "--old",
            &cost_guard(),
            "--new",
            &new,
            "--ledger",
            "ledger",
        ],
        1,
    );
    assert!(
        stderr.starts_with("error: reading the recorded inputs: "),
        "{stderr}"
    );
    assert!(stderr.contains("ledger"), "{stderr}");
}

#[test]
fn a_postgres_ledger_backtests_like_the_signals_it_recorded() {
    let Some(url) = fresh_schema() else { return };
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let signals = week(4);
    fs_err::write(dir.join("week.jsonl"), &signals).expect("signals");
    {
        let ledger = ggen_runtime::pg::PgLedger::open(&url, Default::default()).unwrap();
        let registry = Registry::new(
            &cost_guard_governor::PACK,
            Arc::new(ledger) as Arc<dyn Ledger>,
        );
        let summary =
            ggen_runtime_core::replay::run(&registry, signals.as_bytes()).expect("replay");
        assert!(summary.bad_lines.is_empty(), "{:?}", summary.bad_lines);
    }
    let new = stricter(dir);
    let from_file = backtest(
        &cost_guard(),
        &new,
        &Recorded::Signals(dir.join("week.jsonl")),
    );
    // The URL from the environment, as a user should pass it.
    let output = cargo_bin_cmd!("ggen")
        .current_dir(dir)
        .env("GOVERNOR_DATABASE_URL", &url)
        .args([
            "--format",
            "json",
            "backtest",
            "--old",
            &cost_guard(),
            "--new",
            &new,
        ])
        .output()
        .expect("ggen runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let doc: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(outcome(&doc), outcome(&json(&from_file)));
    assert!(!doc["recorded"].as_str().unwrap().contains("password"));
}

/// A fresh schema in the test database (`./scripts/test` starts one), as a
/// URL whose `search_path` names it; `None` only with `GGEN_SKIP_POSTGRES=1`.
fn fresh_schema() -> Option<String> {
    let Ok(url) = std::env::var("GGEN_TEST_DATABASE_URL") else {
        if std::env::var("GGEN_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("SKIPPED: a PostgreSQL test (GGEN_SKIP_POSTGRES=1)");
            return None;
        }
        panic!("GGEN_TEST_DATABASE_URL is not set: run the tests with ./scripts/test");
    };
    let schema = format!("ggen_backtest_{}", std::process::id());
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let joiner = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{joiner}options=-c%20search_path%3D{schema}"))
}

#[test]
fn the_old_spec_can_be_a_git_revision() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let git = |args: &[&str]| {
        let status = std::process::Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    fs_err::create_dir_all(dir.join("specs")).unwrap();
    fs_err::copy(
        repo().join("specs/cost_guard.json"),
        dir.join("specs/cost_guard.json"),
    )
    .unwrap();
    fs_err::write(dir.join("week.jsonl"), week(6)).unwrap();
    git(&["init", "-q"]);
    git(&["add", "specs"]);
    git(&["commit", "-q", "-m", "spec"]);
    let changed = stricter(dir);
    fs_err::copy(&changed, dir.join("specs/cost_guard.json")).unwrap();
    let args = [
        "--format",
        "json",
        "backtest",
        "--old",
        "HEAD:specs/cost_guard.json",
        "--new",
        "specs/cost_guard.json",
        "--signals",
        "week.jsonl",
    ];
    let (json, _) = ggen(dir, &args, 0);
    let doc: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["old"], "HEAD:specs/cost_guard.json");
    assert!(
        doc["refusals"]["added"].as_u64().unwrap() > 0,
        "{}",
        doc["refusals"]
    );
    // A revision git does not have is named, and is the user's error.
    let mut bad = args;
    bad[4] = "NOPE:specs/cost_guard.json";
    let (_, stderr) = ggen(dir, &bad[2..], 1);
    assert!(
        stderr.starts_with("error: cannot read `NOPE:specs/cost_guard.json` from git: "),
        "{stderr}"
    );
}

#[test]
fn inputs_one_spec_cannot_take_are_counted_and_named() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    // The new spec renames `enterprise` to `premium`.
    let spec = fs_err::read_to_string(repo().join("specs/cost_guard.json")).unwrap();
    fs_err::write(
        dir.join("new.json"),
        spec.replace("\"enterprise\"", "\"premium\""),
    )
    .unwrap();
    fs_err::write(
        dir.join("signals.jsonl"),
        concat!(
            r#"{"tenant":"a","entitlement":"approved","plan":"enterprise","at":"2026-11-01T00:00:00Z"}"#,
            "\nnot json\n",
            r#"{"tenant":"a","signal":"spend_rate","value":1,"at":"2026-11-01T00:01:00Z"}"#,
            "\n"
        ),
    )
    .unwrap();
    let (json, _) = ggen(
        dir,
        &[
            "--format",
            "json",
            "backtest",
            "--old",
            &cost_guard(),
            "--new",
            "new.json",
            "--signals",
            "signals.jsonl",
            "--max-unreadable",
            "1",
        ],
        0,
    );
    let doc: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["inputs"], 3);
    assert_eq!(doc["bad_inputs"], 2);
    assert_eq!(doc["bad"][0]["input"], 1);
    assert_eq!(
        doc["bad"][0]["message"],
        "new spec: unknown plan `enterprise`"
    );
    assert_eq!(doc["bad"][1]["input"], 2);
    assert_eq!(doc["warnings"], serde_json::json!([]));
    // Two different SKUs: the report says the comparison is not one.
    let other = repo().join("specs/queue_valve.json").display().to_string();
    let (text, _) = ggen(
        dir,
        &[
            "backtest",
            "--old",
            &cost_guard(),
            "--new",
            &other,
            "--signals",
            "signals.jsonl",
            "--max-unreadable",
            "1",
        ],
        0,
    );
    assert!(
        text.contains("warning: the specs are different SKUs (`cost_guard`, `queue_valve`)"),
        "{text}"
    );
    // No recorded inputs named, or a percentage that is none: rejected
    // input (exit 1), not an internal error.
    let (_, stderr) = ggen(
        dir,
        &["backtest", "--old", &cost_guard(), "--new", "new.json"],
        1,
    );
    assert!(
        stderr.contains("--signals FILE, --ledger DIR or --database-url URL"),
        "{stderr}"
    );
    for pct in ["NaN", "inf", "-1"] {
        let (_, stderr) = ggen(
            dir,
            &[
                "backtest",
                "--old",
                &cost_guard(),
                "--new",
                "new.json",
                "--signals",
                "signals.jsonl",
                &format!("--max-action-increase={pct}"),
            ],
            1,
        );
        assert!(
            stderr.contains("error: --max-action-increase takes a finite percentage"),
            "{pct}: {stderr}"
        );
    }
}

#[test]
fn out_of_order_inputs_count_time_as_the_registry_decides_it() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    // Readings of 01:00 arrive after those of 11:00: the registry decides
    // them at 11:00 (never before the tenant's last decision), and the
    // report counts time the same way, whatever the actions do.
    let line = |value: u32, at: &str| {
        format!(
            r#"{{"tenant":"a","signal":"spend_rate","value":{value},"at":"2026-11-01T{at}:00Z"}}"#
        )
    };
    let lines = [
        r#"{"tenant":"a","entitlement":"approved","at":"2026-11-01T10:00:00Z"}"#.to_owned(),
        line(60, "10:00"),
        line(60, "11:00"),
        line(10, "01:00"),
        line(10, "01:00"),
        line(10, "01:00"),
        line(10, "12:00"),
    ];
    fs_err::write(dir.join("late.jsonl"), lines.join("\n")).expect("signals");
    let recorded = Recorded::Signals(dir.join("late.jsonl"));
    for settle in [Settle::Succeed, Settle::Fail] {
        let report = ggen::pipeline::backtest(
            &cost_guard(),
            &cost_guard(),
            &recorded,
            settle,
            &Gates::default(),
        )
        .expect("backtest");
        let ms: u64 = report.old_totals.state_ms.values().sum();
        assert_eq!(
            ms,
            2 * 3_600_000,
            "{settle:?}: {:?}",
            report.old_totals.state_ms
        );
        assert_eq!(report.old_totals, report.new_totals);
    }
}

#[test]
fn a_source_with_nothing_to_replay_is_an_error_not_a_pass() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    fs_err::write(dir.join("empty.jsonl"), "").expect("file");
    fs_err::write(dir.join("garbage.jsonl"), "a,b\nc,d\n").expect("file");
    fs_err::create_dir_all(dir.join("not-a-ledger")).expect("dir");
    let old = cost_guard();
    for (flag, source, said) in [
        (
            "--signals",
            "empty.jsonl",
            "no input from signals `empty.jsonl` could be replayed (0 read)",
        ),
        (
            "--signals",
            "garbage.jsonl",
            "2 of 2 recorded input(s) from signals `garbage.jsonl` cannot be read (allowed: 0); the first, line 1: ",
        ),
        (
            "--ledger",
            "not-a-ledger",
            "no input from ledger `not-a-ledger` could be replayed (0 read)",
        ),
    ] {
        let (_, stderr) = ggen(
            dir,
            &[
                "backtest",
                "--old",
                &old,
                "--new",
                &old,
                flag,
                source,
                "--max-new-refusals",
                "0",
            ],
            1,
        );
        assert!(stderr.contains(said), "{stderr}");
    }
}

#[test]
fn a_revision_cannot_smuggle_options_into_git() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    fs_err::write(dir.join("week.jsonl"), week(2)).expect("signals");
    let target = dir.join("written:x");
    let old = format!("--output={}", target.display());
    let (_, stderr) = ggen(
        dir,
        &[
            "backtest",
            &format!("--old={old}"),
            "--new",
            &cost_guard(),
            "--signals",
            "week.jsonl",
        ],
        1,
    );
    assert!(
        stderr.contains("a revision does not start with `-`"),
        "{stderr}"
    );
    assert!(!target.exists());
}

#[test]
fn a_recording_with_unreadable_lines_fails_unless_allowed() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    // One good line, then a thousand truncated ones: no evidence at all.
    let mut text = String::from(
        r#"{"tenant":"a","signal":"spend_rate","value":1,"at":"2026-11-01T00:01:00Z"}"#,
    );
    text.push('\n');
    for _ in 0..1000 {
        text.push_str("{\"tenant\":\"a\",\"signal\":\"spend_ra\n");
    }
    fs_err::write(dir.join("cut.jsonl"), text).expect("signals");
    let args = |allowed: &'static str| {
        let mut args = vec![
            "backtest".to_owned(),
            "--old".to_owned(),
            cost_guard(),
            "--new".to_owned(),
            cost_guard(),
            "--signals".to_owned(),
            "cut.jsonl".to_owned(),
            "--max-new-refusals".to_owned(),
            "0".to_owned(),
        ];
        if !allowed.is_empty() {
            args.extend(["--max-unreadable".to_owned(), allowed.to_owned()]);
        }
        args
    };
    let run = |allowed, code| {
        let args = args(allowed);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ggen(dir, &args, code)
    };
    let (stdout, stderr) = run("", 1);
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with(
            "error: 1000 of 1001 recorded input(s) from signals `cut.jsonl` cannot be read (allowed: 0); the first, line 2: invalid replay line: "
        ),
        "{stderr}"
    );
    assert!(stderr.contains("line 1 column"), "{stderr}");
    run("999", 1);
    let (stdout, _) = run("1000", 0);
    assert!(stdout.contains("gate --max-new-refusals 0: ok"), "{stdout}");
}

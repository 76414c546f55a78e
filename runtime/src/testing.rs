//! Test support for generated governor crates: end-to-end checks of a
//! governor binary's command line, driven by its own policy pack.
//!
//! Every generated crate's `tests/cli.rs` calls these with the path cargo
//! gives its binary (`env!("CARGO_BIN_EXE_<crate>")`), its `PACK` and a
//! scratch folder (`env!("CARGO_TARGET_TMPDIR")`), so the checks are written
//! once, here, and hold for any spec:
//!
//! - [`replay_verify_show_and_detect_tampering`]: `replay` drives the default
//!   profile's first rule past a threshold through the live code path, then
//!   `ledger verify` and `ledger show` agree with what the replay wrote, and a
//!   byte flipped in the segment file is caught by `ledger verify` (exit 1).
//! - [`replay_reports_bad_lines`]: incomplete, non-JSON and non-UTF-8 lines
//!   are reported with their line numbers, skipped, and make `replay` exit 1.
//! - [`policy_prints_every_profile`]: `policy` names every profile.
//!
//! Each check panics (with the binary's output) when the binary misbehaves;
//! it is meant to be the body of a `#[test]`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::policy::{Level, raw_level, threshold};
use crate::sku::PolicyPack;

/// The tenant every check's replay file speaks for.
pub const TENANT: &str = "t-1";

/// A replay file that breaches the default profile's first rule, and where
/// it must leave [`TENANT`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreachingReplay {
    /// JSON Lines: an `approved` entitlement event first when the SKU requires
    /// one, then `dwell` readings of the rule's signal at its most telling
    /// threshold (`intervene`, else `warn`, else `refuse`).
    pub lines: String,
    /// The FSM state `replay` must print for the tenant: `refusing` when the
    /// reading reaches `refuse`, `warning` otherwise (replay's `log` actions
    /// confirm at once, so an intervention ends back in `warning`).
    pub final_state: &'static str,
}

/// The replay file that breaches `pack`'s default profile's first rule
/// `dwell` times.
///
/// # Panics
/// If the default profile has no rule, or its first rule no threshold
/// (validation forbids both).
pub fn breaching_replay(pack: &dyn PolicyPack) -> BreachingReplay {
    let sku = pack.sku();
    let rule = sku
        .profile(sku.default_profile)
        .rules
        .first()
        .expect("the default profile has a rule");
    let value = [Level::Intervene, Level::Warn, Level::Refuse]
        .into_iter()
        .find_map(|level| threshold(rule, level))
        .expect("a rule has at least one threshold");
    let final_state = match raw_level(rule, value) {
        Level::Refuse => "refusing",
        _ => "warning",
    };
    let mut lines = String::new();
    if sku.entitlement_required {
        lines.push_str(&format!(
            "{{\"tenant\":\"{TENANT}\",\"entitlement\":\"approved\",\"at\":\"2026-01-01T00:00:00Z\"}}\n"
        ));
    }
    for i in 0..rule.dwell {
        lines.push_str(&format!(
            "{{\"tenant\":\"{TENANT}\",\"signal\":\"{}\",\"value\":{value:?},\"at\":\"2026-01-01T00:01:{:02}Z\",\"id\":\"m-{i}\"}}\n",
            sku.signal(rule.signal).name,
            i % 60,
        ));
    }
    BreachingReplay { lines, final_state }
}

/// `replay` breaches a threshold; `ledger verify` counts what it wrote;
/// `ledger show` prints those receipts in sequence; `ledger show`, `ledger
/// verify` and `policy` into a closed pipe end quietly; a flipped byte in
/// the segment file makes `ledger verify` exit 1 naming the tenant.
///
/// `tmp` is a folder for scratch files; the check works in a fresh
/// subfolder named for the SKU, the check and the process.
///
/// # Panics
/// When any of those does not hold (that is the test failing).
pub fn replay_verify_show_and_detect_tampering(binary: &Path, pack: &dyn PolicyPack, tmp: &Path) {
    let dir = scratch(tmp, pack, "replay");
    let signals = dir.join("signals.jsonl");
    let ledger = dir.join("ledger");
    let replay = breaching_replay(pack);
    fs_err::write(&signals, &replay.lines).expect("write signals");
    let (signals, ledger) = (path_arg(&signals), path_arg(&ledger));

    let out = run(
        binary,
        &["replay", "--signals", signals, "--ledger", ledger],
    );
    assert!(out.status.success(), "replay failed: {}", describe(&out));
    let stdout = String::from_utf8(out.stdout).expect("replay prints UTF-8");
    assert_eq!(stdout.lines().count(), 1, "one summary line: {stdout}");
    assert_summary_state(&stdout, &replay);
    let count = receipts(&stdout);
    assert!(count >= 1, "{stdout}");

    let out = run(binary, &["ledger", "verify", "--ledger", ledger]);
    assert!(out.status.success(), "ledger verify: {}", describe(&out));
    let ok = format!("ok: {count} receipts");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.starts_with(&ok), "expected `{ok}`: {report}");

    let out = run(
        binary,
        &["ledger", "show", "--ledger", ledger, "--tenant", TENANT],
    );
    assert!(out.status.success(), "ledger show: {}", describe(&out));
    let shown = String::from_utf8(out.stdout).expect("ledger show prints UTF-8");
    assert_eq!(shown.lines().count(), count, "{shown}");
    let tenant = format!("\"tenant\":\"{TENANT}\"");
    for (i, line) in shown.lines().enumerate() {
        let seq = format!("\"seq\":{},", i + 1);
        assert!(line.contains(&seq) && line.contains(&tenant), "{line}");
    }

    // A reader that goes away (`… | head`) ends the output quietly: the
    // command's own exit code, nothing on stderr, no panic.
    for args in [
        &["ledger", "show", "--ledger", ledger][..],
        &["ledger", "verify", "--ledger", ledger][..],
        &["policy"][..],
    ] {
        let out = run_into_closed_pipe(binary, args);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{args:?} into a closed pipe: {}",
            describe(&out)
        );
    }

    // Flip one byte inside the first receipt's JSON: verification names the tenant.
    let segment = fs_err::read_dir(ledger)
        .expect("the ledger folder")
        .map(|entry| entry.expect("a ledger folder entry").path())
        .find(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .expect("a segment file");
    let mut bytes = fs_err::read(&segment).expect("read the segment");
    let at = bytes
        .windows(5)
        .position(|w| w == b"\"seq\"")
        .expect("a receipt")
        + 2;
    bytes[at] ^= 0x01;
    fs_err::write(&segment, bytes).expect("write the segment");
    let out = run(binary, &["ledger", "verify", "--ledger", ledger]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("tampered") && report.contains(TENANT),
        "{report}"
    );
}

/// `replay` reports an incomplete line, a line that is not JSON and one that
/// is not UTF-8, each with its line number, replays the good lines after
/// them (the tenant ends where [`breaching_replay`] says) and exits 1.
///
/// `tmp` is as for [`replay_verify_show_and_detect_tampering`].
///
/// # Panics
/// When any of those does not hold.
pub fn replay_reports_bad_lines(binary: &Path, pack: &dyn PolicyPack, tmp: &Path) {
    let dir = scratch(tmp, pack, "bad-lines");
    let signals = dir.join("signals.jsonl");
    let mut lines = format!("{{\"tenant\":\"{TENANT}\"}}\nnot json\n").into_bytes();
    lines.extend_from_slice(b"\xff\xfe\n");
    let replay = breaching_replay(pack);
    lines.extend_from_slice(replay.lines.as_bytes());
    fs_err::write(&signals, lines).expect("write signals");
    let ledger = dir.join("ledger");
    let out = run(
        binary,
        &[
            "replay",
            "--signals",
            path_arg(&signals),
            "--ledger",
            path_arg(&ledger),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for bad in [
        "line 1: ",
        "line 2: ",
        "line 3: invalid replay line: not UTF-8",
    ] {
        assert!(stderr.contains(bad), "expected `{bad}`: {stderr}");
    }
    assert_summary_state(&String::from_utf8_lossy(&out.stdout), &replay);
}

/// The replay summary starts with [`TENANT`] in the state `replay` ends in.
fn assert_summary_state(stdout: &str, replay: &BreachingReplay) {
    let prefix = format!(
        "{{\"tenant\":\"{TENANT}\",\"state\":\"{}\",",
        replay.final_state
    );
    assert!(
        stdout.starts_with(&prefix),
        "expected `{prefix}…`: {stdout}"
    );
}

/// `policy` exits 0 and prints a heading for every profile of `pack`;
/// `--version` names the SKU's version, id and spec hash, `--help` its name.
///
/// # Panics
/// When it does not.
pub fn policy_prints_every_profile(binary: &Path, pack: &dyn PolicyPack) {
    let out = run(binary, &["policy"]);
    assert!(out.status.success(), "policy: {}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for profile in pack.sku().profiles {
        let heading = format!("profile {}:", profile.name);
        assert!(text.contains(&heading), "expected `{heading}`: {text}");
    }
    // `--version` matches the binary to its spec; `--help` names the SKU.
    let sku = pack.sku();
    let out = run(binary, &["--version"]);
    assert!(out.status.success(), "--version: {}", describe(&out));
    let version = String::from_utf8_lossy(&out.stdout);
    for part in [sku.version, sku.id, sku.spec_sha256] {
        assert!(version.contains(part), "`{part}` missing from `{version}`");
    }
    let out = run(binary, &["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains(sku.name),
        "`{}` missing from {help}",
        sku.name
    );
}

/// Runs `binary` with `args`.
fn run(binary: &Path, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", binary.display()))
}

/// Runs `binary` with `args`, its stdout a pipe whose reading end is closed
/// before it starts (as `… | head` after `head` exits).
fn run_into_closed_pipe(binary: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    Command::new(binary)
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", binary.display()))
}

/// Exit status and both streams, for assertion messages.
fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh folder under `tmp` for one check of one SKU in this process.
fn scratch(tmp: &Path, pack: &dyn PolicyPack, check: &str) -> PathBuf {
    let dir = tmp.join(format!("{}-{check}-{}", pack.sku().id, std::process::id()));
    // Left over from an earlier run with the same process id, if anything.
    let _ = fs_err::remove_dir_all(&dir);
    fs_err::create_dir_all(&dir).expect("create the scratch folder");
    dir
}

/// `path` as a command-line argument (scratch paths are UTF-8 in practice).
fn path_arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 scratch path")
}

/// The `receipts` count of a replay summary line.
fn receipts(summary: &str) -> usize {
    summary
        .split("\"receipts\":")
        .nth(1)
        .and_then(|count| count.trim_end_matches(['}', '\n']).parse().ok())
        .unwrap_or_else(|| panic!("no receipt count in the summary: {summary}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sku::{
        Direction, GovernorTiming, IngressDef, ProfileDef, ProfileId, Rule, SignalDef, SignalId,
        Sku, TablePack,
    };

    static SIGNALS: [SignalDef; 1] = [SignalDef {
        name: "load",
        unit: "percent",
        description: "load",
        min: None,
        max: None,
        direction: Direction::Above,
    }];
    static RULES: [Rule; 1] = [Rule {
        signal: SignalId(0),
        direction: Direction::Above,
        warn: Some(50.0),
        intervene: None,
        refuse: Some(90.0),
        clear: 50.0,
        dwell: 2,
        actions: &[],
    }];
    static PROFILES: [ProfileDef; 1] = [ProfileDef {
        name: "standard",
        rules: &RULES,
        cooldown_s: 0,
        max_actions_per_hour: None,
    }];
    static SKU: Sku = Sku {
        id: "testing_test",
        name: "Testing test",
        version: "1.0.0",
        spec_sha256: "00",
        tenant_attribute: "tenant_id",
        max_tenants: 10,
        signals: &SIGNALS,
        actions: &[],
        profiles: &PROFILES,
        default_profile: ProfileId(0),
        governor: GovernorTiming {
            intervention_timeout_s: 60,
            recovery_evaluations: 1,
            degraded_retry_s: 60,
        },
        entitlement_required: true,
        ingress: IngressDef {
            pubsub_audience: None,
            max_body_bytes: 1024,
        },
    };

    #[test]
    fn the_replay_approves_then_breaches_dwell_times_at_the_most_telling_threshold() {
        let replay = breaching_replay(&TablePack(&SKU));
        assert_eq!(
            replay.lines,
            "{\"tenant\":\"t-1\",\"entitlement\":\"approved\",\"at\":\"2026-01-01T00:00:00Z\"}\n\
             {\"tenant\":\"t-1\",\"signal\":\"load\",\"value\":50.0,\"at\":\"2026-01-01T00:01:00Z\",\"id\":\"m-0\"}\n\
             {\"tenant\":\"t-1\",\"signal\":\"load\",\"value\":50.0,\"at\":\"2026-01-01T00:01:01Z\",\"id\":\"m-1\"}\n"
        );
        assert_eq!(replay.final_state, "warning");
    }

    #[test]
    fn the_receipt_count_is_read_from_the_summary() {
        assert_eq!(
            receipts("{\"tenant\":\"t-1\",\"state\":\"warning\",\"receipts\":12}\n"),
            12
        );
    }

    #[test]
    #[should_panic(expected = "cannot run")]
    fn a_binary_that_does_not_run_fails_the_check() {
        policy_prints_every_profile(Path::new("/nonexistent/governor-binary"), &TablePack(&SKU));
    }
}

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
//! - [`serve_preflight`]: `serve --check` exits 0 once the spec's actions,
//!   Pub/Sub audience and authentication are provided for, and 1 listing
//!   every missing piece otherwise; `serve` itself refuses to start with
//!   the same list, the ledger untouched.
//!
//! Each check panics (with the binary's output) when the binary misbehaves;
//! it is meant to be the body of a `#[test]`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::policy::{Level, raw_level, threshold};
use crate::sku::{Adapter, PolicyPack};

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

/// A JWK set with one RSA key (public, from the runtime's test fixtures):
/// what `serve` needs for a spec's Pub/Sub audience.
const JWKS: &str = r#"{"keys":[{"kty":"RSA","alg":"RS256","use":"sig","kid":"test-key-1","n":"spB9Nx0_7M8gun9tGeOfl0ZXnl-NHOpI2oMhBDH-DYPflLooAOxiwJOesQtfuwTAHwMKoDJB5OqWKu-0TEm13Yhp-mpdr3apXMjurctnPOV_DBGefa6yQjdO-s7IcmEZBam1-Ixr4ypKQu7CPNk0h6-8BBK4fobNxrOenzs4x3TDf9FJlciArn7Jjnr_WsJ8SyULVB4YNSeXMw-KA5e_Xi5sgnnow3wKf4xvmnXpWQk9pND_8heXzyVlqGGJXniAP-WpGAWr4zYLzzbfDVM3R4QQ-zRN0jSerJI3LHu3vJ8n0Wl-DIDuPODnYBmVqzEw3PtaIDSPE6_QUH3_i0qp2Q","e":"AQAB"}]}"#;

/// The longest a `serve` that must refuse to start may run before the
/// check gives up on it (it would otherwise serve until killed).
const REFUSAL_PATIENCE: Duration = Duration::from_secs(30);

/// `serve --check` and `serve` against what `pack`'s spec needs to start:
///
/// - with everything provided (`GOVERNOR_AUTH_TOKEN`; a stub program on
///   `PATH` for each `command` action; `GOVERNOR_WEBHOOK_URL` when a
///   `webhook` action has no `params.url`; a JWKS and an email when the
///   spec sets a Pub/Sub audience), `serve --check` exits 0, names every
///   action's target and does not create the ledger;
/// - with nothing provided, it exits 1 listing every problem, one a line:
///   authentication, each command's program, each webhook without a URL;
/// - with a spec's audience but no JWKS it exits 1 naming `--jwks` and
///   `--no-pubsub`, and 0 with `--no-pubsub`;
/// - a program on `PATH` without execute permission is named as such;
/// - `serve` (no `--check`) with nothing provided exits 1 with the same
///   problems, the ledger never created.
///
/// Programs the spec names by absolute path are not stubbed: where they do
/// not exist, only the refusals are checked.
///
/// # Panics
/// When any of those does not hold (that is the test failing).
pub fn serve_preflight(binary: &Path, pack: &dyn PolicyPack, tmp: &Path) {
    let sku = pack.sku();
    let dir = scratch(tmp, pack, "preflight");
    let ledger = dir.join("ledger");
    let bin = dir.join("bin");
    let empty = dir.join("empty");
    fs_err::create_dir_all(&bin).expect("create the stub folder");
    fs_err::create_dir_all(&empty).expect("create the empty folder");
    let params = |params: &str| serde_json::from_str::<Value>(params).unwrap_or_default();
    let mut bare_programs = Vec::new();
    let mut absolute_missing = false;
    let mut commands = Vec::new();
    let mut urlless_webhooks = Vec::new();
    for action in sku.actions {
        let params = params(action.params);
        match action.adapter {
            Adapter::Command => {
                commands.push(action.name);
                match params["program"].as_str() {
                    Some(program) if !program.contains('/') => {
                        bare_programs.push(program.to_owned());
                    }
                    Some(program) => absolute_missing |= !Path::new(program).is_file(),
                    None => absolute_missing = true,
                }
            }
            Adapter::Webhook if params.get("url").is_none() => urlless_webhooks.push(action.name),
            Adapter::Webhook | Adapter::Log => {}
        }
    }
    for program in &bare_programs {
        let stub = bin.join(program);
        fs_err::write(&stub, "#!/bin/sh\nexit 0\n").expect("write a stub program");
        fs_err::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))
            .expect("make the stub executable");
    }
    let jwks = dir.join("jwks.json");
    fs_err::write(&jwks, JWKS).expect("write the jwks");
    let base = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--ledger",
        path_arg(&ledger),
    ];
    let oidc = [
        "--jwks",
        path_arg(&jwks),
        "--oidc-email",
        "pusher@project.iam.gserviceaccount.com",
    ];
    let audience = sku.ingress.pubsub_audience.is_some();
    let provided: Vec<(&str, &str)> = [
        ("PATH", path_arg(&bin)),
        ("GOVERNOR_AUTH_TOKEN", "preflight-token"),
        ("GOVERNOR_WEBHOOK_URL", "http://127.0.0.1:9/hook"),
    ]
    .into_iter()
    .filter(|(name, _)| *name != "GOVERNOR_WEBHOOK_URL" || !urlless_webhooks.is_empty())
    .collect();
    let check = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = base.to_vec();
        args.push("--check");
        args.extend_from_slice(extra);
        run_in(binary, &args, env)
    };

    if !absolute_missing {
        let extra: &[&str] = if audience { &oidc } else { &[] };
        let out = check(extra, &provided);
        assert_eq!(
            out.status.code(),
            Some(0),
            "serve --check: {}",
            describe(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("ok: "), "{stdout}");
        for action in sku.actions {
            assert!(
                stdout.contains(&format!("action {}: ", action.name)),
                "{stdout}"
            );
        }
        for program in &bare_programs {
            let stub = bin.join(program);
            assert!(
                stdout.contains(path_arg(&stub)),
                "`{program}` not found in {stdout}"
            );
        }
        if audience {
            let out = check(&[], &provided);
            assert_eq!(out.status.code(), Some(1), "no jwks: {}", describe(&out));
            let stderr = String::from_utf8_lossy(&out.stderr);
            for fix in ["pub/sub", "--jwks", "--oidc-email", "--no-pubsub"] {
                assert!(stderr.contains(fix), "`{fix}` missing: {stderr}");
            }
            let out = check(&["--no-pubsub"], &provided);
            assert_eq!(
                out.status.code(),
                Some(0),
                "--no-pubsub: {}",
                describe(&out)
            );
        }
        if let Some(program) = bare_programs.first() {
            let stub = bin.join(program);
            fs_err::set_permissions(&stub, std::fs::Permissions::from_mode(0o644))
                .expect("drop the stub's execute bit");
            let out = check(extra, &provided);
            assert_eq!(
                out.status.code(),
                Some(1),
                "not executable: {}",
                describe(&out)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("is not executable"), "{stderr}");
            fs_err::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))
                .expect("restore the stub's execute bit");
        }
    }

    // Nothing provided: every problem listed, one a line.
    let nothing = [("PATH", path_arg(&empty))];
    let out = check(&[], &nothing);
    assert_eq!(
        out.status.code(),
        Some(1),
        "serve --check: {}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = 1 + commands.len() + urlless_webhooks.len();
    assert!(
        stderr.starts_with(&format!(
            "error: `serve` would refuse to start: {expected} problem"
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("  - ")).count(),
        expected,
        "{stderr}"
    );
    assert!(
        stderr.contains("  - auth: no authentication configured"),
        "{stderr}"
    );
    for name in &commands {
        assert!(
            stderr.contains(&format!("  - action `{name}`: program")),
            "{stderr}"
        );
    }
    for name in &urlless_webhooks {
        assert!(
            stderr.contains(&format!(
                "  - action `{name}`: a webhook with no `params.url`"
            )),
            "{stderr}"
        );
    }
    assert!(!ledger.exists(), "serve --check created the ledger");

    // `serve` itself refuses with the same problems.
    let out = run_bounded(binary, &base, &nothing);
    assert_eq!(out.status.code(), Some(1), "serve: {}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{expected} configuration problem")),
        "{stderr}"
    );
    assert!(!ledger.exists(), "serve opened the ledger before refusing");
}

/// Runs `binary` with `args` in exactly the environment `env`.
fn run_in(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", binary.display()))
}

/// [`run_in`] for a command that must exit by itself: killed (and the
/// check failed) after [`REFUSAL_PATIENCE`].
fn run_bounded(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(binary)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", binary.display()));
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if started.elapsed() > REFUSAL_PATIENCE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect the killed child");
            panic!("`{args:?}` did not exit: {}", describe(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collect the child's output")
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
        marketplace: None,
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

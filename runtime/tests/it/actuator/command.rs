//! The command adapter: exit status, retries, timeout + kill, argument
//! templating, no shell, environment.

use std::time::Duration;

use ggen_runtime::actuator::command::CommandActuator;
use ggen_runtime::actuator::{ActionCall, Report, perform};
use ggen_runtime::fsm::State;
use ggen_runtime::receipt::IdempotencyKey;
use ggen_runtime::registry::Dispatch;
use ggen_runtime::sku::{ActionId, Adapter};
use serde_json::json;

use super::harness::{FAST, Harness, at, tenant};
use super::pack::{PackSpec, TestPack, action};

/// A pack whose only action is `run` with these params.
fn pack(params: serde_json::Value, timeout_ms: u32, retries: u32) -> &'static TestPack {
    PackSpec {
        actions: vec![action(
            "run",
            Adapter::Command,
            None,
            params.to_string(),
            timeout_ms,
            retries,
        )],
        rule_actions: vec![0],
        cooldown_s: 0,
        intervention_timeout_s: 30,
        recovery_evaluations: 1,
    }
    .leak()
}

async fn run(params: serde_json::Value, timeout_ms: u32, retries: u32) -> Report {
    let sku = ggen_runtime::sku::PolicyPack::sku(pack(params, timeout_ms, retries));
    let dispatch = Dispatch {
        key: IdempotencyKey::new(sku, tenant("acme"), 7, ActionId(0)),
        undo: false,
    };
    let call = ActionCall::new(sku, &dispatch, at(0)).unwrap();
    perform(&CommandActuator, &call, FAST).await
}

#[tokio::test]
async fn exit_status_zero_is_ok() {
    let report = run(json!({"program": "true"}), 5000, 3).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.attempts, 1);
}

#[tokio::test]
async fn a_non_zero_exit_is_retried_then_fails() {
    let report = run(json!({"program": "false"}), 5000, 2).await;
    assert!(!report.ok);
    assert_eq!(report.attempts, 3);
    assert!(
        report.detail.contains("`false` exited 1"),
        "{}",
        report.detail
    );
}

#[tokio::test]
async fn a_missing_program_is_a_permanent_failure() {
    let report = run(
        json!({"program": "/nonexistent/ggen-no-such-program"}),
        5000,
        3,
    )
    .await;
    assert!(!report.ok);
    assert_eq!(report.attempts, 1);
    assert!(report.detail.contains("cannot start"), "{}", report.detail);
}

#[tokio::test]
async fn stderr_lands_in_the_detail() {
    let script = "echo 'jobctl: tenant is locked' >&2; exit 3";
    let report = run(json!({"program": "sh", "args": ["-c", script]}), 5000, 0).await;
    assert!(!report.ok);
    assert!(
        report.detail.contains("exited 3: jobctl: tenant is locked"),
        "{}",
        report.detail
    );
}

/// The process id a script wrote to `file`.
fn pid_in(file: &std::path::Path) -> u32 {
    fs_err::read_to_string(file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether process `pid` is gone within two seconds.
async fn gone_within_2s(pid: u32) -> bool {
    for _ in 0..200 {
        if process_gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

fn process_gone(pid: u32) -> bool {
    match fs_err::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie waits for its reaper but no longer runs.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // `exec` keeps the pid: the recorded process is the sleeping one.
    let script = "echo $$ > \"$0\"; exec sleep 10";
    let params = json!({"program": "sh", "args": ["-c", script, pidfile.to_str().unwrap()]});
    let report = run(params, 300, 0).await;
    assert!(!report.ok);
    assert!(
        report.detail.contains("timed out after 300 ms"),
        "{}",
        report.detail
    );
    let pid = pid_in(&pidfile);
    let gone = gone_within_2s(pid).await;
    assert!(gone, "process {pid} still running after the timeout");
}

#[tokio::test]
async fn args_are_templated_and_never_interpreted_by_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // If a shell saw the second argument, the file name would differ (and
    // `id` would run); as one argv entry it is just a strange name.
    let literal = "$(id -u); `id` | & > * {nope} ~";
    let params = json!({
        "program": "touch",
        "args": [
            format!("{d}/{{tenant}}-{{action}}-{{sku}}-{{idempotency_key}}"),
            format!("{d}/{literal}"),
        ],
    });
    let report = run(params, 5000, 0).await;
    assert!(report.ok, "{report:?}");
    let mut names: Vec<String> = fs_err::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, [literal, "acme-run-act_guard-acme:7:run"]);
}

#[tokio::test]
async fn the_child_sees_the_action_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = "printf '%s|%s|%s|%s|%s' \"$GGEN_TENANT\" \"$GGEN_ACTION\" \
                  \"$GGEN_IDEMPOTENCY_KEY\" \"$GGEN_SKU\" \"$GGEN_UNDO\" > \"$0\"";
    let params = json!({"program": "sh", "args": ["-c", script, out.to_str().unwrap()]});
    let report = run(params, 5000, 0).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(
        fs_err::read_to_string(&out).unwrap(),
        "acme|run|acme:7:run|act_guard|false"
    );
}

#[tokio::test]
async fn through_the_registry_success_confirms_and_failure_degrades() {
    let ok = Harness::new(pack(json!({"program": "true"}), 5000, 0), None, None);
    let t = tenant("acme");
    ok.signal(&t, 120.0, 0);
    ok.settle().await;
    assert_eq!(ok.state(&t), State::Warning);

    let failing = Harness::new(pack(json!({"program": "false"}), 5000, 1), None, None);
    failing.signal(&t, 120.0, 0);
    failing.settle().await;
    assert_eq!(failing.state(&t).name(), "degraded");
    assert_eq!(failing.dispatcher.stats().attempts, 2);
}

/// Env var naming the file [`env_child`] makes its command write `env` into.
const CHILD_ENV_OUT: &str = "GGEN_IT_COMMAND_ENV_OUT";

/// Not a test: the service process of
/// [`the_child_gets_path_and_the_allowlist_but_no_service_secret`] (this test
/// binary re-executed with secrets in its environment).
#[test]
#[ignore = "entry point of a child process"]
fn env_child() {
    let Some(out) = std::env::var(CHILD_ENV_OUT).ok() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let params = json!({
        "program": "sh",
        "args": ["-c", "env > \"$0\"", out],
        "env": ["GGEN_IT_LISTED", "GGEN_IT_LISTED_BUT_UNSET"],
    });
    let report = runtime.block_on(run(params, 5000, 0));
    assert!(report.ok, "{report:?}");
}

#[test]
fn the_child_gets_path_and_the_allowlist_but_no_service_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    // The service's environment: this test binary re-executed, so that the
    // secret is really in the parent's environment (and in no other test's).
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "actuator::command::env_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ENV_OUT, &out)
        .env("GOVERNOR_AUTH_TOKEN", "s3cret-auth")
        .env("GOVERNOR_WEBHOOK_SECRET", "s3cret-hook")
        .env("GGEN_IT_LISTED", "visible")
        .env("GGEN_IT_NOT_LISTED", "hidden")
        .env_remove("GGEN_IT_LISTED_BUT_UNSET")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the service process failed: {status}");
    let env = fs_err::read_to_string(&out).unwrap();
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(n, _)| n)
        .collect();
    assert!(
        !env.contains("s3cret"),
        "a service secret reached the child:\n{env}"
    );
    assert!(env.lines().any(|l| l == "GGEN_IT_LISTED=visible"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
    assert!(env.lines().any(|l| l == "GGEN_TENANT=acme"), "{env}");
    for absent in [
        "GOVERNOR_AUTH_TOKEN",
        "GOVERNOR_WEBHOOK_SECRET",
        "GGEN_IT_NOT_LISTED",
        "GGEN_IT_LISTED_BUT_UNSET",
        CHILD_ENV_OUT,
    ] {
        assert!(
            !names.contains(&absent),
            "`{absent}` reached the child:\n{env}"
        );
    }
}

#[tokio::test]
async fn a_listed_governor_secret_is_a_permanent_failure() {
    let params = json!({"program": "true", "env": ["GOVERNOR_ADMIN_TOKEN"]});
    let report = run(params, 5000, 3).await;
    assert!(!report.ok);
    assert_eq!(report.attempts, 1);
    assert!(
        report.detail.contains("`GOVERNOR_ADMIN_TOKEN`"),
        "{}",
        report.detail
    );
}

#[tokio::test]
async fn only_the_escaped_tail_of_a_long_stderr_is_kept() {
    // 5000 bytes of noise, a line break, an escape sequence, then the last words.
    let script = "head -c 5000 /dev/zero | tr '\\0' 'n' >&2; \
                  printf 'secret-head\\n\\033[2Jlast words' >&2; exit 4";
    let report = run(json!({"program": "sh", "args": ["-c", script]}), 5000, 0).await;
    assert!(!report.ok);
    let (_, stderr) = report.detail.split_once("exited 4: ").unwrap();
    let stderr = stderr.trim_end_matches(" (attempt 1/1)");
    assert!(stderr.len() <= 200, "{} bytes: {stderr}", stderr.len());
    assert!(stderr.starts_with("…nnn"), "{stderr}");
    assert!(
        stderr.ends_with("secret-head\\n\\u{1b}[2Jlast words"),
        "{stderr}"
    );
    assert!(!stderr.contains(['\n', '\x1b']), "{stderr:?}");
}

/// A program that leaves a background process holding its stderr open
/// succeeds when it exits 0: the pipe's end is not waited for.
#[tokio::test]
async fn a_background_grandchild_holding_stderr_does_not_hang_the_action() {
    let report = run(
        json!({"program": "sh", "args": ["-c", "sleep 5 & echo started >&2; exit 0"]}),
        2000,
        0,
    )
    .await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.attempts, 1);
}

/// A program that forked and is killed at its timeout takes what it forked
/// with it: a real `jobctl` that forks must not pause jobs after the
/// receipt says the action timed out.
#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_what_it_forked() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // The shell stays the parent and waits; `sleep` is its child.
    let script = "sleep 10 & echo $! > \"$0\"; wait";
    let params = json!({"program": "sh", "args": ["-c", script, pidfile.to_str().unwrap()]});
    let report = run(params, 300, 0).await;
    assert!(!report.ok);
    assert!(report.detail.contains("timed out"), "{}", report.detail);
    let pid = pid_in(&pidfile);
    let gone = gone_within_2s(pid).await;
    assert!(gone, "forked process {pid} still running after the timeout");
}

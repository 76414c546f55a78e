//! `serve` refuses to start, naming the fix, when an action cannot work or
//! Pub/Sub pushes could never verify; `serve --check` runs the same checks
//! and opens nothing. (The binary's exit codes: `ggen_runtime::testing`,
//! run by every generated crate's `tests/cli.rs`.)
//!
//! The test environment sets no `GOVERNOR_*` variable.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use clap::Parser;
use ggen_runtime::ingress::auth::{Auth, Secret};
use ggen_runtime::ingress::service::{self, ServeArgs, ServeError};
use ggen_runtime::preflight::{self, Environment, Problem};
use ggen_runtime::report::error_chain;
use ggen_runtime::sku::{ActionDef, Adapter, PolicyPack, Sku};

use super::auth::EMAIL;
use super::harness::{fixture, full_auth};
use super::sku::{AUDIENCE, BROKEN, GUARD, PLAIN, with_actions};

/// `serve`'s flags as the command line gives them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// `serve --listen 127.0.0.1:0 --ledger LEDGER EXTRA…`.
fn args(ledger: &Path, extra: &[&str]) -> ServeArgs {
    let mut argv = vec!["governor", "--listen", "127.0.0.1:0", "--ledger"];
    argv.push(ledger.to_str().unwrap());
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).unwrap().serve
}

/// A webhook or command action named `name` with `params`.
fn action(name: &'static str, adapter: Adapter, params: &str) -> ActionDef {
    ActionDef {
        name,
        adapter,
        undo: None,
        params: Box::leak(params.to_owned().into_boxed_str()),
        timeout_ms: 1000,
        retries: 0,
    }
}

/// A SKU of `actions` (no Pub/Sub audience).
fn sku_of(actions: Vec<ActionDef>) -> Sku {
    with_actions(Box::leak(actions.into_boxed_slice()), None)
}

/// The problems' text, one a line.
fn text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{p}\n"))
        .collect::<String>()
}

#[test]
fn a_webhook_needs_a_url_from_its_params_or_the_environment() {
    let sku = sku_of(vec![
        action("bare", Adapter::Webhook, "{}"),
        action("bare_too", Adapter::Webhook, r#"{"endpoint":"x"}"#),
        action(
            "given",
            Adapter::Webhook,
            r#"{"url":"https://hooks.example.com/a"}"#,
        ),
        action(
            "not_http",
            Adapter::Webhook,
            r#"{"url":"ftp://user:s3cret@example.com/x"}"#,
        ),
        action("not_text", Adapter::Webhook, r#"{"url":5}"#),
        action("logged", Adapter::Log, "{}"),
    ]);
    let none = preflight::actions(&sku, &Environment::default());
    let shown = text(&none);
    let subjects: Vec<&str> = none.iter().map(|p| p.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "action `bare`",
            "action `bare_too`",
            "action `not_http`",
            "action `not_text`"
        ],
        "{shown}"
    );
    // The fix is named: the variable, the spec's params, or log mode.
    for fix in [
        "set `GOVERNOR_WEBHOOK_URL`",
        "`params.url`",
        "`--actions log`",
    ] {
        assert!(none[0].message.contains(fix), "{shown}");
    }
    assert!(none[2].message.contains("not an http(s) url"), "{shown}");
    assert!(
        !shown.contains("s3cret"),
        "a credential in a url is shown: {shown}"
    );
    assert!(none[3].message.contains("must be a string"), "{shown}");

    let set = Environment {
        webhook_url: Some("https://hooks.example.com/default".into()),
        path: None,
    };
    let with_url = preflight::actions(&sku, &set);
    assert_eq!(with_url.len(), 2, "{}", text(&with_url));

    // A bad `GOVERNOR_WEBHOOK_URL` is one problem, however many rely on it.
    let bad = Environment {
        webhook_url: Some("hooks.example.com".into()),
        path: None,
    };
    let problems = preflight::actions(&sku, &bad);
    let env: Vec<&Problem> = problems
        .iter()
        .filter(|p| p.subject == "GOVERNOR_WEBHOOK_URL")
        .collect();
    assert_eq!(env.len(), 1, "{}", text(&problems));
    assert_eq!(problems.len(), 3, "{}", text(&problems));
}

/// Writes `name` in `dir` with `mode`.
fn file(dir: &Path, name: &str, mode: u32) {
    let path = dir.join(name);
    fs_err::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    fs_err::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_command_needs_its_program_on_path_and_executable() {
    let bin = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    file(bin.path(), "tool", 0o755);
    file(bin.path(), "plain", 0o644);
    file(other.path(), "later", 0o700);
    std::fs::create_dir(bin.path().join("folder")).unwrap();
    let absolute = bin.path().join("tool");
    let sku = sku_of(vec![
        action(
            "found",
            Adapter::Command,
            r#"{"program":"tool","args":["{tenant}"]}"#,
        ),
        action("later_on_path", Adapter::Command, r#"{"program":"later"}"#),
        action(
            "absolute",
            Adapter::Command,
            &serde_json::json!({ "program": absolute }).to_string(),
        ),
        action("missing", Adapter::Command, r#"{"program":"no-such-tool"}"#),
        action("plain", Adapter::Command, r#"{"program":"plain"}"#),
        action("folder", Adapter::Command, r#"{"program":"folder"}"#),
        action(
            "gone",
            Adapter::Command,
            r#"{"program":"/nonexistent/ggen-test-action"}"#,
        ),
        action(
            "a_directory",
            Adapter::Command,
            &serde_json::json!({ "program": bin.path() }).to_string(),
        ),
        action("no_program", Adapter::Command, r#"{"args":[]}"#),
        action(
            "bad_params",
            Adapter::Command,
            r#"{"program":"tool","args":"x","env":["GOVERNOR_AUTH_TOKEN"]}"#,
        ),
    ]);
    let path: OsString = std::env::join_paths([bin.path(), other.path()]).unwrap();
    let env = Environment {
        webhook_url: None,
        path: Some(path.clone()),
    };
    let problems = preflight::actions(&sku, &env);
    let shown = text(&problems);
    let of = |name: &str| -> Vec<&str> {
        problems
            .iter()
            .filter(|p| p.subject == format!("action `{name}`"))
            .map(|p| p.message.as_str())
            .collect()
    };
    for fine in ["found", "later_on_path", "absolute"] {
        assert!(of(fine).is_empty(), "{fine}: {shown}");
    }
    assert!(
        of("missing")[0].contains("`no-such-tool` is not found on `PATH`"),
        "{shown}"
    );
    assert!(
        of("missing")[0].contains(bin.path().to_str().unwrap()),
        "{shown}"
    );
    assert!(of("plain")[0].contains("is not executable"), "{shown}");
    assert!(of("plain")[0].contains("chmod +x"), "{shown}");
    assert!(
        of("folder")[0].contains("is not found on `PATH`"),
        "{shown}"
    );
    assert!(of("gone")[0].contains("does not exist"), "{shown}");
    assert!(of("a_directory")[0].contains("is not a file"), "{shown}");
    assert!(of("no_program")[0].contains("`params.program`"), "{shown}");
    let bad = of("bad_params");
    assert_eq!(bad.len(), 2, "{shown}");
    assert!(bad[0].contains("`params.args`"), "{shown}");
    assert!(bad[1].contains("GOVERNOR_"), "{shown}");
    assert_eq!(problems.len(), 8, "{shown}");

    // Without `PATH`, a bare program name cannot be found.
    let unset = preflight::actions(&sku, &Environment::default());
    assert!(
        text(&unset).contains("program `tool` cannot be found: `PATH` is unset"),
        "{}",
        text(&unset)
    );
    // What `serve --check` reports where each action goes.
    let sku = sku_of(vec![
        action("found", Adapter::Command, r#"{"program":"tool"}"#),
        action(
            "hook",
            Adapter::Webhook,
            r#"{"url":"https://u:p@hooks.example.com/s"}"#,
        ),
    ]);
    assert_eq!(
        preflight::targets(&sku, &env),
        [
            format!("found: command `{}`", absolute.display()),
            "hook: webhook `https://hooks.example.com`".to_owned()
        ]
    );
}

#[tokio::test]
async fn a_pubsub_audience_needs_a_jwks_unless_pushes_are_off() {
    let sku = GUARD.sku();
    let token_only = Auth {
        token: Some(Secret::new("t")),
        ..Auth::default()
    };
    let problem = preflight::pubsub(sku, &token_only, false).expect("refused");
    assert_eq!(problem.subject, "pub/sub");
    for fix in [
        AUDIENCE,
        "--jwks",
        "GOVERNOR_OIDC_JWKS",
        "--oidc-email",
        "--no-pubsub",
    ] {
        assert!(problem.message.contains(fix), "{fix}: {problem}");
    }
    assert_eq!(preflight::pubsub(sku, &token_only, true), None);
    assert_eq!(preflight::pubsub(sku, &full_auth(), false), None);
    let insecure = Auth {
        insecure: true,
        ..Auth::default()
    };
    assert_eq!(preflight::pubsub(sku, &insecure, false), None);
    // No audience, nothing to verify: the bearer token guards pushes.
    assert_eq!(preflight::pubsub(PLAIN.sku(), &token_only, false), None);
}

/// `serve`'s error for `pack` with `args` (it must refuse).
fn refused(pack: &'static dyn PolicyPack, args: ServeArgs) -> (String, u8) {
    let error = service::run_until(pack, args, std::future::pending()).unwrap_err();
    assert!(matches!(error, ServeError::Preflight(_)), "{error:?}");
    (error_chain(&error), error.exit_code())
}

#[test]
fn serve_refuses_to_start_listing_every_problem_before_it_opens_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    // No token, a missing program, a webhook with nowhere to go.
    let (text, code) = refused(&BROKEN, args(&ledger, &[]));
    assert_eq!(code, 1, "{text}");
    for expected in [
        "3 configuration problems",
        "auth: no authentication configured",
        "action `throttle`: program `/nonexistent/ggen-test-action` does not exist",
        "action `unthrottle`: a webhook with no `params.url` and `GOVERNOR_WEBHOOK_URL` unset",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    assert!(!ledger.exists(), "the ledger was touched: {text}");

    // `--insecure-no-auth` settles authentication; the actions remain.
    let (text, _) = refused(&BROKEN, args(&ledger, &["--insecure-no-auth"]));
    assert!(text.contains("2 configuration problems"), "{text}");
    // `--actions log` runs nothing live: the actions need nothing.
    let (text, _) = refused(&BROKEN, args(&ledger, &["--actions", "log"]));
    assert!(text.contains("1 configuration problem: auth:"), "{text}");
    assert!(!ledger.exists(), "the ledger was touched: {text}");
}

#[test]
fn serve_check_reports_what_serve_would_start_with_and_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let jwks = fixture("jwks.json");
    let jwks = jwks.to_str().unwrap();
    let good = args(
        &ledger,
        &["--check", "--insecure-no-auth", "--actions", "log"],
    );
    assert!(good.check);
    let text = service::check(&GUARD, &good).unwrap();
    assert!(
        text.starts_with("ok: `serve` can start: sku `ingress_guard` 1.0.0"),
        "{text}"
    );
    assert!(text.contains("auth: insecure-no-auth"), "{text}");
    assert!(text.contains("actions: log only"), "{text}");
    assert!(text.contains("(not opened)"), "{text}");
    assert!(!ledger.exists(), "--check created the ledger");

    // With OIDC configured (a file) and the audience satisfied.
    let oidc = args(&ledger, &["--check", "--jwks", jwks, "--oidc-email", EMAIL]);
    let text = service::check(&GUARD, &oidc).unwrap();
    assert!(text.contains("auth: pubsub-oidc"), "{text}");
    assert!(text.contains("action throttle: log"), "{text}");

    // `--no-pubsub` stands in for the keys, and says so.
    let off = args(&ledger, &["--check", "--insecure-no-auth", "--no-pubsub"]);
    assert!(off.no_pubsub);
    assert!(
        service::check(&GUARD, &off)
            .unwrap()
            .contains("pub/sub: off")
    );

    // Every problem, the same as `serve` would refuse with.
    let bad = args(&ledger, &["--check"]);
    match service::check(&BROKEN, &bad) {
        Err(ServeError::Preflight(problems)) => assert_eq!(problems.0.len(), 3, "{problems}"),
        other => panic!("{other:?}"),
    }
    assert!(!ledger.exists(), "--check created the ledger");
}

#[test]
fn marketplace_settings_are_checked_before_anything_opens() {
    use super::sku::SOLD;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let jwks = fixture("jwks.json");
    let jwks = jwks.to_str().unwrap();
    // Half the push settings; plain http to a remote API; a missing key file.
    let (text, code) = refused(
        &SOLD,
        args(
            &ledger,
            &[
                "--insecure-no-auth",
                "--marketplace-audience",
                "https://governor.test/marketplace/pubsub",
                "--procurement-url",
                "http://procurement.example/",
                "--gcp-key-file",
                "/nonexistent/key.json",
            ],
        ),
    );
    assert_eq!(code, 1, "{text}");
    for expected in [
        "missing: `--jwks`, `--marketplace-oidc-email`",
        "procurement url `http://procurement.example` is plain `http://`",
        "/nonexistent/key.json",
    ] {
        assert!(text.contains(expected), "{expected}: {text}");
    }
    // A plain-http token endpoint off loopback and off the metadata server.
    let (text, _) = refused(
        &SOLD,
        args(
            &ledger,
            &[
                "--insecure-no-auth",
                "--gcp-token-url",
                "http://tokens.example/token",
            ],
        ),
    );
    assert!(
        text.contains("gcp token url `http://tokens.example` is plain `http://`"),
        "{text}"
    );
    // Push settings for a spec that is not sold on the Marketplace.
    let (text, _) = refused(
        &GUARD,
        args(
            &ledger,
            &[
                "--jwks",
                jwks,
                "--oidc-email",
                EMAIL,
                "--marketplace-audience",
                "https://governor.test/marketplace/pubsub",
                "--marketplace-oidc-email",
                "push@provider.iam.gserviceaccount.com",
            ],
        ),
    );
    assert!(
        text.contains("no `entitlement.marketplace` section"),
        "{text}"
    );
    // The signals subscription's audience: tokens would pass either route's check.
    let (text, _) = refused(
        &SOLD,
        args(
            &ledger,
            &[
                "--jwks",
                jwks,
                "--oidc-email",
                EMAIL,
                "--marketplace-audience",
                AUDIENCE,
                "--marketplace-oidc-email",
                "push@provider.iam.gserviceaccount.com",
            ],
        ),
    );
    assert!(text.contains("is the spec's pub/sub audience"), "{text}");
    assert!(!ledger.exists(), "the ledger was touched: {text}");

    // Complete: `serve --check` says what the route and client will use.
    let ok = args(
        &ledger,
        &[
            "--jwks",
            jwks,
            "--oidc-email",
            EMAIL,
            "--marketplace-audience",
            "https://governor.test/marketplace/pubsub",
            "--marketplace-oidc-email",
            "push@provider.iam.gserviceaccount.com",
            "--gcp-token-url",
            "http://127.0.0.1:9/token",
            "--actions",
            "log",
        ],
    );
    let text = service::check(&SOLD, &ok).unwrap();
    assert!(
        text.contains("marketplace: provider `acme-partner`, auto-approve, `/marketplace/pubsub` on, procurement api `https://cloudcommerceprocurement.googleapis.com`, tokens from `http://127.0.0.1:9`"),
        "{text}"
    );
    assert!(text.contains("marketplace-oidc"), "{text}");
}

#[test]
fn background_intervals_are_bounded_like_every_other_timer_flag() {
    let parse = |flag: &str| {
        Cli::try_parse_from(["governor", "--listen", "127.0.0.1:0", "--ledger", "l", flag])
    };
    // A day at most, as every other timer flag (`u64::MAX` seconds would
    // overflow the timer's clock).
    assert_eq!(
        parse("--verify-every=86400").unwrap().serve.verify_every,
        86_400
    );
    for refused in [
        "--verify-every=86401",
        "--verify-every=18446744073709551615",
    ] {
        let error = parse(refused).unwrap_err().to_string();
        assert!(error.contains("--verify-every"), "{refused}: {error}");
    }
}

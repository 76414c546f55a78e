//! The `ggen` binary: exit codes and output of validate, build (write,
//! `--check`, `--dry-run`, `--force`), schema, explain and init, on a
//! project in a temp folder.

use std::path::Path;

use assert_cmd::cargo::cargo_bin_cmd;

use super::support::{project, repo};

/// Runs `ggen ARGS` in `dir`: exit code, stdout, stderr.
fn ggen(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let output = cargo_bin_cmd!("ggen")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("ggen runs");
    (
        output.status.code().expect("exited normally"),
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

/// Asserts the exit code and returns (stdout, stderr).
fn expect(dir: &Path, args: &[&str], code: i32) -> (String, String) {
    let (actual, stdout, stderr) = ggen(dir, args);
    assert_eq!(
        actual, code,
        "ggen {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn build_then_check_is_fresh() {
    let p = project();
    let dir = p.path();
    expect(dir, &["build"], 0);
    assert!(dir.join("generated/cost_guard/src/policy.rs").is_file());
    let (stdout, _) = expect(dir, &["build", "--check"], 0);
    assert_eq!(stdout, "");
    // A second build writes nothing.
    let (_, stderr) = expect(dir, &["build"], 0);
    assert!(stderr.contains("0 file(s) written"), "{stderr}");
}

#[test]
fn check_reports_an_edited_file_with_a_diff_and_build_refuses_it() {
    let p = project();
    let dir = p.path();
    expect(dir, &["build"], 0);
    let policy = dir.join("generated/cost_guard/src/policy.rs");
    let text = fs_err::read_to_string(&policy).expect("read");
    fs_err::write(
        &policy,
        text.replace("REFUSE: f64 = 500.0", "REFUSE: f64 = 501.0"),
    )
    .expect("edit");

    let (stdout, _) = expect(dir, &["build", "--check"], 1);
    assert!(
        stdout.contains("--- a/generated/cost_guard/src/policy.rs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-        pub const REFUSE: f64 = 501.0;"),
        "{stdout}"
    );
    assert!(
        stdout.contains("+        pub const REFUSE: f64 = 500.0;"),
        "{stdout}"
    );

    let (_, stderr) = expect(dir, &["build"], 1);
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(
        stderr.contains("generated/cost_guard/src/policy.rs"),
        "{stderr}"
    );
    assert!(
        fs_err::read_to_string(&policy)
            .expect("read")
            .contains("501.0"),
        "nothing written"
    );

    expect(dir, &["build", "--force"], 0);
    expect(dir, &["build", "--check"], 0);
}

#[test]
fn check_reports_missing_and_stale_files() {
    let p = project();
    let dir = p.path();
    expect(dir, &["build"], 0);
    fs_err::remove_file(dir.join("generated/cost_guard/README.md")).expect("remove");
    let (stdout, stderr) = expect(dir, &["build", "--check"], 1);
    assert!(
        stderr.contains("generated/cost_guard/README.md (create)"),
        "{stderr}"
    );
    assert!(
        stdout.contains("+++ b/generated/cost_guard/README.md"),
        "{stdout}"
    );
    expect(dir, &["build"], 0);

    // Dropping a spec makes its whole folder stale; only owned files go.
    let owned = count_files(&dir.join("generated/queue_valve"));
    fs_err::remove_file(dir.join("specs/queue_valve.json")).expect("remove spec");
    fs_err::write(dir.join("generated/queue_valve/NOTES.txt"), "mine\n").expect("write");
    let (_, stderr) = expect(dir, &["build", "--check"], 1);
    assert!(
        stderr.contains("generated/queue_valve/src/lib.rs (delete)"),
        "{stderr}"
    );
    let (_, stderr) = expect(dir, &["build"], 0);
    assert!(stderr.contains(&format!("{owned} deleted")), "{stderr}");
    assert!(!dir.join("generated/queue_valve/src").exists());
    assert!(dir.join("generated/queue_valve/NOTES.txt").is_file());
    // What is left is no crate: cargo's `generated/*` glob fails on it.
    let (_, stderr) = expect(dir, &["build", "--check"], 1);
    assert!(
        stderr.contains("stale: generated/queue_valve (not written by ggen)"),
        "{stderr}"
    );
    fs_err::remove_dir_all(dir.join("generated/queue_valve")).expect("move out");
    expect(dir, &["build", "--check"], 0);
}

#[test]
fn an_edited_stale_file_is_kept() {
    let p = project();
    let dir = p.path();
    expect(dir, &["build"], 0);
    fs_err::remove_file(dir.join("specs/queue_valve.json")).expect("remove spec");
    fs_err::write(
        dir.join("generated/queue_valve/src/lib.rs"),
        "// mine now\n",
    )
    .expect("edit");
    let (_, stderr) = expect(dir, &["build"], 0);
    assert!(
        stderr.contains("kept `generated/queue_valve/src/lib.rs`"),
        "{stderr}"
    );
    assert!(dir.join("generated/queue_valve/src/lib.rs").is_file());
    assert!(!dir.join("generated/queue_valve/src/policy.rs").exists());
}

#[test]
fn dry_run_prints_the_plan_and_writes_nothing() {
    let p = project();
    let dir = p.path();
    let (stdout, _) = expect(dir, &["build", "--dry-run"], 0);
    assert!(
        stdout.contains("create    generated/cost_guard/src/policy.rs"),
        "{stdout}"
    );
    assert!(
        stdout.contains("generated/queue_valve/ggen-manifest.json"),
        "{stdout}"
    );
    assert!(!dir.join("generated").exists());
    expect(dir, &["build"], 0);
    let (stdout, _) = expect(dir, &["build", "--dry-run"], 0);
    assert!(
        stdout.contains("unchanged generated/cost_guard/src/policy.rs"),
        "{stdout}"
    );
}

#[test]
fn json_output_for_ci() {
    let p = project();
    let dir = p.path();
    let (stdout, _) = expect(dir, &["--format", "json", "build", "--check"], 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json on stdout");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["drift"], true);
    assert_eq!(doc["crates"][0]["id"], "cost_guard");
    assert_eq!(doc["crates"][0]["changes"][0]["op"], "create");

    let (stdout, _) = expect(dir, &["--format", "json", "validate"], 0);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json on stdout");
    assert_eq!(doc["ok"], true);
}

#[test]
fn invalid_specs_exit_1_with_located_diagnostics() {
    let p = project();
    let dir = p.path();
    fs_err::write(dir.join("specs/bad.json"), "{\n  \"spec_version\": 2\n}\n").expect("write");
    let (_, stderr) = expect(dir, &["validate", "specs/bad.json"], 1);
    let first = stderr.lines().next().expect("a diagnostic");
    assert!(first.starts_with("specs/bad.json:"), "{stderr}");
    assert!(
        first
            .split(':')
            .nth(3)
            .is_some_and(|p| p.trim_start().starts_with('/')),
        "{first}"
    );
    // A build with one invalid spec writes nothing at all.
    expect(dir, &["build"], 1);
    assert!(!dir.join("generated").exists());
    let (stdout, _) = expect(dir, &["--format", "json", "validate", "specs/bad.json"], 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json on stdout");
    assert!(doc["diagnostics"][0]["line"].as_u64().is_some(), "{doc}");
}

#[test]
fn schema_explain_and_init() {
    let p = project();
    let dir = p.path();
    for kind in ["spec", "config", "test"] {
        let (stdout, _) = expect(dir, &["schema", kind], 0);
        serde_json::from_str::<serde_json::Value>(&stdout).expect("the schema is json");
    }
    let (stdout, _) = expect(dir, &["explain", "specs/cost_guard.json"], 0);
    assert!(
        stdout.contains("### Profile `enterprise` (extends `standard`)"),
        "{stdout}"
    );
    assert!(stdout.contains("stateDiagram-v2"), "{stdout}");

    expect(dir, &["init", "disk_guard"], 0);
    expect(dir, &["validate", "specs/disk_guard.json"], 0);
    let (_, stderr) = expect(dir, &["init", "disk_guard"], 1);
    assert!(stderr.contains("already exist"), "{stderr}");
    expect(dir, &["init", "Bad-Id"], 1);
}

#[test]
fn template_overrides_shadow_embedded_templates() {
    let p = project();
    let dir = p.path();
    fs_err::create_dir_all(dir.join("my-templates")).expect("dir");
    fs_err::write(
        dir.join("my-templates/README.md.tera"),
        "# {{ sku.md.name }} (custom)\n",
    )
    .expect("write");
    let config = dir.join("ggen.toml");
    let text = fs_err::read_to_string(&config).expect("read");
    fs_err::write(&config, format!("{text}templates = \"my-templates\"\n")).expect("write");
    expect(dir, &["build"], 0);
    let readme = fs_err::read_to_string(dir.join("generated/cost_guard/README.md")).expect("read");
    assert!(
        readme.ends_with("# Cost Circuit Breaker (custom)\n"),
        "{readme}"
    );
    let manifest =
        fs_err::read_to_string(dir.join("generated/cost_guard/ggen-manifest.json")).expect("read");
    assert!(
        manifest.contains("\"name\": \"README.md.tera\""),
        "{manifest}"
    );

    fs_err::write(dir.join("my-templates/typo.rs.tera"), "x").expect("write");
    let (_, stderr) = expect(dir, &["build"], 1);
    assert!(stderr.contains("typo.rs.tera"), "{stderr}");
}

#[test]
fn a_template_override_can_shadow_the_imported_macros() {
    let p = project();
    let dir = p.path();
    fs_err::create_dir_all(dir.join("my-templates")).expect("dir");
    let (name, text) = ggen::render::EMBEDDED_MACROS
        .iter()
        .find(|(name, _)| *name == "macros.tera")
        .expect("the embedded macros");
    let custom = text.replace("/// The spec name.", "/// The spec name (custom).");
    assert_ne!(&custom, text, "the override changes the macro");
    fs_err::write(dir.join("my-templates").join(name), custom).expect("write");
    let config = dir.join("ggen.toml");
    let text = fs_err::read_to_string(&config).expect("read");
    fs_err::write(&config, format!("{text}templates = \"my-templates\"\n")).expect("write");
    expect(dir, &["build"], 0);
    // Every template that imports the macros renders the override.
    for file in ["signals", "actions", "policy"] {
        let path = dir.join(format!("generated/cost_guard/src/{file}.rs"));
        let source = fs_err::read_to_string(path).expect("read");
        assert!(
            source.contains("/// The spec name (custom)."),
            "{file}.rs: {source}"
        );
    }
    let manifest =
        fs_err::read_to_string(dir.join("generated/cost_guard/ggen-manifest.json")).expect("read");
    assert!(manifest.contains("\"name\": \"macros.tera\""), "{manifest}");
}

#[test]
fn build_into_a_workspace_says_what_to_add() {
    let p = project();
    let dir = p.path();
    fs_err::write(
        dir.join("Cargo.toml"),
        "[workspace]\nresolver = \"3\"\nmembers = []\n",
    )
    .expect("write");
    let (_, stderr) = expect(dir, &["build", "specs/cost_guard.json"], 0);
    assert!(
        stderr.contains("`ggen-runtime` is not a workspace dependency"),
        "{stderr}"
    );
    assert!(
        stderr.contains("is not a workspace member: add `\"generated/*\"` to `members`"),
        "{stderr}"
    );
}

/// Number of files below `dir`, recursively.
fn count_files(dir: &std::path::Path) -> usize {
    fs_err::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("dir entry").path())
        .map(|path| if path.is_dir() { count_files(&path) } else { 1 })
        .sum()
}

/// Runs `ggen ARGS` in `dir` with stdout a pipe whose reader is already
/// closed, so its first write fails with `EPIPE`: exit code and stderr.
fn ggen_into_closed_pipe(dir: &Path, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ggen"))
        .current_dir(dir)
        .args(args)
        .stdout(writer)
        .output()
        .expect("ggen runs");
    (
        output.status.code().expect("exited normally"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

#[test]
fn a_closed_stdout_ends_output_quietly_with_the_commands_exit_code() {
    let p = project();
    let dir = p.path();
    let spec = repo().join("specs/cost_guard.json");
    let spec = spec.to_str().unwrap();
    for (args, code) in [
        (&["build", "--check"][..], 1),
        (&["build", "--dry-run"], 0),
        (&["build", "--dry-run", "--format", "json"], 0),
        (&["validate", "--format", "json"], 0),
        (&["schema"], 0),
        (&["explain", spec], 0),
        (&["validate", "specs/missing.json", "--format", "json"], 1),
    ] {
        let (actual, stderr) = ggen_into_closed_pipe(dir, args);
        assert_eq!(actual, code, "ggen {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "ggen {args:?}: {stderr}");
        assert!(!stderr.contains("Broken pipe"), "ggen {args:?}: {stderr}");
    }
}

#[test]
fn any_other_stdout_failure_is_an_internal_error() {
    let p = project();
    // Every write to /dev/full fails with `ENOSPC`.
    let full = fs_err::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ggen"))
        .current_dir(p.path())
        .arg("schema")
        .stdout(std::fs::File::from(full))
        .output()
        .expect("ggen runs");
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: writing to stdout failed: "),
        "{stderr}"
    );
}

#[test]
fn the_config_is_found_in_the_nearest_parent_as_cargo_does() {
    let p = project();
    let dir = p.path();
    let deep = dir.join("specs").join("nested");
    fs_err::create_dir_all(&deep).expect("nested folder");
    // From two folders down, the project's own paths still apply.
    let (stdout, _) = expect(&deep, &["validate"], 0);
    assert!(
        stdout.contains("cost_guard.json: ok") && stdout.contains("queue_valve.json: ok"),
        "{stdout}"
    );
    expect(&deep, &["build"], 0);
    assert!(dir.join("generated/cost_guard/Cargo.toml").is_file());
    assert!(
        !deep.join("generated").exists(),
        "written beside the config"
    );
    // The same bytes as a build from the project root.
    expect(dir, &["build", "--check"], 0);
    // `--config` wins over the search.
    let other = tempfile::tempdir().expect("temp dir");
    let config = dir.join("ggen.toml");
    expect(
        other.path(),
        &["validate", "--config", config.to_str().unwrap()],
        0,
    );
}

#[test]
fn without_a_config_anywhere_up_the_tree_ggen_says_how_to_make_one() {
    let empty = tempfile::tempdir().expect("temp dir");
    for args in [&["build"][..], &["validate"][..]] {
        let (_, stderr) = expect(empty.path(), args, 1);
        assert!(
            stderr.contains("no `ggen.toml` in") && stderr.contains("ggen init"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains(":1:1:"), "no invented position: {stderr}");
    }
    // Commands that need no project work anywhere.
    expect(empty.path(), &["schema"], 0);
}

#[test]
fn completions_and_the_man_page() {
    let empty = tempfile::tempdir().expect("temp dir");
    let dir = empty.path();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (script, _) = expect(dir, &["completions", shell], 0);
        for word in ["validate", "build", "explain", "check"] {
            assert!(script.contains(word), "{shell} completions lack `{word}`");
        }
    }
    // bash itself parses the bash script.
    let (script, _) = expect(dir, &["completions", "bash"], 0);
    let path = dir.join("ggen.bash");
    fs_err::write(&path, script).expect("write the script");
    let status = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .expect("bash runs");
    assert!(status.success(), "bash -n rejects the completion script");
    let (page, _) = expect(dir, &["man"], 0);
    assert!(page.contains(".TH ggen 1"), "{page}");
    assert!(
        page.contains("build") && page.contains("validate"),
        "{page}"
    );
    expect(dir, &["completions", "tcsh"], 2);
}

#[test]
fn explain_and_schema_honour_format_json() {
    let p = project();
    let dir = p.path();
    let (stdout, _) = expect(
        dir,
        &["--format", "json", "explain", "specs/cost_guard.json"],
        0,
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(doc["sku"], "cost_guard");
    assert_eq!(doc["spec"], "specs/cost_guard.json");
    assert!(doc["thresholds"].as_str().unwrap().contains("spend_rate"));
    assert!(
        doc["state_machine"]
            .as_str()
            .unwrap()
            .contains("stateDiagram-v2")
    );
    let (stdout, _) = expect(dir, &["--format", "json", "schema"], 0);
    serde_json::from_str::<serde_json::Value>(&stdout).expect("the schema is json");
    // A spec that is not valid: the located diagnostics, as JSON, exit 1.
    fs_err::write(dir.join("specs/broken.json"), "{").expect("write");
    let (stdout, _) = expect(
        dir,
        &["--format", "json", "explain", "specs/broken.json"],
        1,
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(doc["ok"], false, "{doc}");
}

#[test]
fn diagnostics_show_a_caret_on_a_terminal_and_plain_lines_otherwise() {
    let p = project();
    let dir = p.path();
    fs_err::write(
        dir.join("specs/bad.json"),
        fs_err::read_to_string(dir.join("specs/cost_guard.json"))
            .unwrap()
            .replace("\"cost_guard\"", "\"Bad Id\""),
    )
    .unwrap();
    // Piped: one plain line per problem.
    let (_, stderr) = expect(dir, &["validate", "specs/bad.json"], 1);
    assert!(stderr.contains("specs/bad.json:"), "{stderr}");
    assert!(!stderr.contains(" | "), "no snippet when piped: {stderr}");
    // On a terminal (`script` gives the command a pseudo-terminal): the
    // source line and a caret under the offending value.
    let ggen = assert_cmd::cargo::cargo_bin!("ggen");
    let output = std::process::Command::new("script")
        .current_dir(dir)
        .args([
            "-qec",
            &format!("{} validate specs/bad.json", ggen.display()),
            "/dev/null",
        ])
        .output()
        .expect("script runs");
    let screen = String::from_utf8_lossy(&output.stdout);
    assert!(screen.contains("\"id\": \"Bad Id\""), "{screen}");
    let caret = screen
        .lines()
        .find(|l| l.trim_end().ends_with('^'))
        .unwrap_or_else(|| panic!("no caret: {screen}"));
    let source = screen.lines().find(|l| l.contains("\"Bad Id\"")).unwrap();
    assert_eq!(
        caret.trim_end().len() - 1,
        source.find("\"Bad Id\"").unwrap(),
        "the caret is under the value:\n{source}\n{caret}"
    );
}

#[test]
fn init_makes_a_project_in_an_empty_folder_and_then_refuses() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let (stdout, _) = expect(dir, &["init", "new_guard", "--runtime-path", "rt"], 0);
    for line in [
        "wrote ggen.toml",
        "wrote Cargo.toml",
        "wrote .gitignore",
        "wrote specs/new_guard.test.json",
        "next steps:",
        "  ggen test",
        "  ggen build",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    let (stdout, _) = expect(dir, &["validate"], 0);
    assert_eq!(stdout, "specs/new_guard.json: ok\n");
    let (stdout, _) = expect(dir, &["test"], 0);
    assert!(
        stdout.ends_with("test result: ok. 4 passed; 0 failed\n"),
        "{stdout}"
    );
    // A path runtime that is not there is named before anything is generated.
    let (_, stderr) = expect(dir, &["build"], 1);
    assert!(stderr.contains("rt/Cargo.toml"), "{stderr}");
    let (_, stderr) = expect(dir, &["init", "new_guard"], 1);
    assert!(
        stderr.contains("`specs/new_guard.json`, `specs/new_guard.test.json` already exist"),
        "{stderr}"
    );
    expect(dir, &["init", "new_guard", "--force"], 0);
}

#[test]
fn init_honours_format_json() {
    let temp = tempfile::tempdir().expect("temp dir");
    let (stdout, _) = expect(
        temp.path(),
        &[
            "--format",
            "json",
            "init",
            "json_guard",
            "--runtime-path",
            "rt",
        ],
        0,
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["new_project"], true);
    let written: Vec<&str> = doc["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        written.contains(&"ggen.toml") && written.contains(&"specs/json_guard.json"),
        "{doc}"
    );
    assert!(!doc["next_steps"].as_array().unwrap().is_empty(), "{doc}");
}

#[test]
fn a_spec_whose_file_name_cannot_be_written_into_generated_files_is_refused() {
    // A quote, a backslash, a backtick, a bidi override, a line break:
    // characters the spec's name would carry into comments, strings and docs.
    for name in ["a\"b", "a\\b", "a`b", "a\u{202E}b", "a\nb"] {
        let p = project();
        let dir = p.path();
        fs_err::rename(
            dir.join("specs/queue_valve.json"),
            dir.join(format!("specs/{name}.json")),
        )
        .expect("rename");
        for command in ["validate", "build"] {
            let (_, stderr) = expect(dir, &[command], 1);
            assert!(
                stderr.contains("the file name holds"),
                "{name:?} {command}: {stderr}"
            );
        }
        assert!(
            !dir.join("generated").exists(),
            "{name:?}: something was written"
        );
    }
}

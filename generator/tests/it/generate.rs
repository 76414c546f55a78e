//! Generation end to end: every generated file of every spec in `specs/`
//! and of every valid fixture (`tests/fixtures/valid/`) is an insta
//! snapshot, together with the manifest and the file list. This is the
//! review workflow: one `cargo test` leaves a pending snapshot for every
//! generated file a template or spec change touches (a mismatch does not stop
//! the others), `cargo insta review` shows them all, and a snapshot no crate
//! produces any more fails the test. Freshness of the checked-in
//! `generated/` is `ggen build --check`'s job (CI), not a test's.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use ggen::pipeline::{self, Generated, Project};
use ggen::render::TemplateSet;
use ggen::workspace::PackageSettings;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn repo_project() -> Project {
    Project::open(&repo().join("ggen.toml")).expect("the repository's ggen.toml loads")
}

/// Insta's prefix for the snapshots of this module.
const PREFIX: &str = "it__generate__";

/// Snapshot names of one generated crate: its file list, then every file.
fn snapshots(generated: &Generated) -> Vec<(String, String)> {
    let id = &generated.model.id;
    let list: Vec<String> = generated
        .files
        .iter()
        .map(|(path, text)| format!("{path} ({} bytes)", text.len()))
        .collect();
    let mut out = vec![(format!("{id}__files"), list.join("\n"))];
    for (path, text) in &generated.files {
        out.push((format!("{id}__{}", path.replace('/', "__")), text.clone()));
    }
    out
}

/// Asserts every snapshot of every crate, all of them even when some differ,
/// and that no other snapshot of this module is left in the folder.
fn assert_crates(crates: &[Generated]) {
    let mut differ = Vec::new();
    let mut expected = BTreeSet::new();
    for generated in crates {
        for (name, text) in snapshots(generated) {
            expected.insert(format!("{PREFIX}{name}.snap"));
            // insta panics on a mismatch (after writing the pending snapshot);
            // catching it lets the other files leave theirs too.
            if catch_unwind(AssertUnwindSafe(|| {
                insta::assert_snapshot!(name.as_str(), text)
            }))
            .is_err()
            {
                differ.push(name);
            }
        }
    }
    let orphans: Vec<String> = fs_err::read_dir(snapshot_dir())
        .expect("the snapshot folder")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(PREFIX) && name.ends_with(".snap"))
        .filter(|name| !expected.contains(name))
        .collect();
    let mut problems = Vec::new();
    if !differ.is_empty() {
        problems.push(format!(
            "{} generated file(s) differ from their snapshots (review with `cargo insta review`): {}",
            differ.len(),
            differ.join(", ")
        ));
    }
    if !orphans.is_empty() {
        problems.push(format!(
            "snapshots of files no spec or fixture generates any more (delete them): {}",
            orphans.join(", ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots")
}

/// The crates of the shipped specs (`specs/`, through ggen.toml) and of every
/// valid fixture, each crate id once.
fn every_crate() -> Vec<Generated> {
    let project = repo_project();
    let paths = project.spec_files(&[]).expect("globs expand");
    assert!(paths.len() >= 3, "expected the three product specs");
    let mut crates = pipeline::generate_all(&project, &paths, 1).expect("every spec generates");
    let templates = TemplateSet::embedded().expect("embedded templates compile");
    let fixtures = repo().join("generator/tests/fixtures/valid");
    let mut fixture_paths: Vec<PathBuf> = fs_err::read_dir(&fixtures)
        .expect("the valid fixtures")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    fixture_paths.sort();
    assert!(!fixture_paths.is_empty(), "expected valid fixtures");
    for path in fixture_paths {
        let name = path.file_name().expect("file name").to_string_lossy();
        let rel = format!("generator/tests/fixtures/valid/{name}");
        let model = pipeline::model(&path, &rel).expect("a valid fixture is valid");
        crates.push(
            pipeline::generate(model, &templates, &PackageSettings::inherited())
                .expect("a valid fixture generates"),
        );
    }
    let ids: BTreeSet<&str> = crates.iter().map(|g| g.model.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        crates.len(),
        "two specs or fixtures share an id, and so their snapshots"
    );
    crates
}

#[test]
fn every_generated_file_is_snapshotted() {
    assert_crates(&every_crate());
}

#[test]
fn edge_cases_generate_valid_rust() {
    let path = repo().join("generator/tests/fixtures/valid/edge_cases.json");
    let model = pipeline::model(&path, "generator/tests/fixtures/valid/edge_cases.json")
        .expect("the edge-case fixture is valid");
    // Keywords become raw or suffixed identifiers; every profile is flattened.
    let variants: Vec<&str> = model.signals.iter().map(|s| s.variant.as_str()).collect();
    assert_eq!(variants, ["Type", "Self_", "Match", "P99Latency"]);
    let top = model
        .profiles
        .iter()
        .find(|p| p.name == "super")
        .expect("profile `super`");
    assert_eq!(
        top.rules.len(),
        4,
        "3-level extends chain flattens to one rule per signal"
    );
    assert_eq!(
        top.max_actions_per_hour,
        Some(3),
        "budget inherited from `impl`"
    );

    let templates = TemplateSet::embedded().expect("embedded templates compile");
    let generated =
        pipeline::generate(model, &templates, &PackageSettings::inherited()).expect("generates");
    for (path, text) in &generated.files {
        if path.ends_with(".rs") {
            syn::parse_file(text).unwrap_or_else(|e| panic!("{path} does not parse: {e}"));
        }
    }
}

/// Outside a workspace that provides them, a crate writes its own package
/// settings and lints, and takes `ggen-runtime` from `runtime` in ggen.toml
/// (a path relative to ggen.toml becomes relative to the crate).
#[test]
fn a_crate_outside_this_workspace_carries_its_own_settings() {
    let project = tempfile::tempdir().expect("temp dir");
    let settings = PackageSettings::detect(
        project.path(),
        Path::new("generated"),
        Some(&ggen::config::Runtime::Path(PathBuf::from(
            "../ggen/runtime",
        ))),
    )
    .expect("no Cargo.toml is fine");
    let path = repo().join("specs/cost_guard.json");
    let model = pipeline::model(&path, "specs/cost_guard.json").expect("valid");
    let templates = TemplateSet::embedded().expect("embedded templates compile");
    let generated = pipeline::generate(model, &templates, &settings).expect("generates");
    assert_eq!(
        generated.files["Cargo.toml"],
        format!(
            r#"# @generated by ggen from specs/cost_guard.json. Do not edit.
[package]
name = "cost-guard-governor"
version = "1.2.0"
description = "Throttles and pauses workloads whose spend runs away."
edition = "2024"
rust-version = "{}"
publish = false
build = false
autolib = false
autobins = false
autoexamples = false
autotests = false
autobenches = false

[lib]
path = "src/lib.rs"

[[bin]]
name = "cost-guard-governor"
path = "src/main.rs"

[[test]]
name = "cli"
path = "tests/cli.rs"

[[test]]
name = "policy"
path = "tests/policy.rs"

[dependencies]
ggen-runtime = {{ path = "../../../ggen/runtime" }}

[lints.rust]
unsafe_code = "forbid"
missing_debug_implementations = "warn"

[lints.clippy]
all = {{ level = "warn", priority = -1 }}
"#,
            ggen::workspace::RUST_VERSION
        )
    );
}

//! Generation end to end: every generated file of every spec in `specs/`
//! (and of the edge-case fixture) is an insta snapshot, together with the
//! manifest and the file list; the checked-in `generated/` must equal a fresh
//! regeneration byte for byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ggen::pipeline::{self, BuildOptions, Generated, Mode, Project};
use ggen::render::TemplateSet;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn repo_project() -> Project {
    Project::open(&repo().join("ggen.toml")).expect("the repository's ggen.toml loads")
}

/// Snapshots every file of one generated crate and its file list.
fn snapshot_crate(generated: &Generated) {
    let id = &generated.model.id;
    let list: Vec<String> = generated
        .files
        .iter()
        .map(|(path, text)| format!("{path} ({} bytes)", text.len()))
        .collect();
    insta::assert_snapshot!(format!("{id}__files"), list.join("\n"));
    for (path, text) in &generated.files {
        insta::assert_snapshot!(format!("{id}__{}", path.replace('/', "__")), text);
    }
}

#[test]
fn every_spec_generates_its_snapshotted_crate() {
    let project = repo_project();
    let paths = project.spec_files(&[]).expect("globs expand");
    assert!(paths.len() >= 3, "expected the three product specs");
    let generated = pipeline::generate_all(&project, &paths, 1).expect("every spec generates");
    for g in &generated {
        snapshot_crate(g);
    }
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
        Some(1),
        "budget inherited from `impl`"
    );

    let templates = TemplateSet::embedded().expect("embedded templates compile");
    let generated = pipeline::generate(model, &templates).expect("generates");
    for (path, text) in &generated.files {
        if path.ends_with(".rs") {
            syn::parse_file(text).unwrap_or_else(|e| panic!("{path} does not parse: {e}"));
        }
    }
    snapshot_crate(&generated);
}

/// Every file under `dir`, by `/`-separated relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs_err::read_dir(dir).expect("readable folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(rel, fs_err::read(&path).expect("readable file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

#[test]
fn checked_in_generated_tree_is_fresh() {
    let project = repo_project();
    let temp = tempfile::tempdir().expect("temp dir");
    let options = BuildOptions {
        specs: vec![],
        out_dir: Some(temp.path().to_owned()),
        mode: Mode::Write,
        force: false,
        jobs: 2,
    };
    pipeline::build(&project, &options).expect("builds into a temp folder");
    let fresh = tree(temp.path());
    let checked_in = tree(&repo().join("generated"));
    let fresh_names: Vec<&String> = fresh.keys().collect();
    let checked_names: Vec<&String> = checked_in.keys().collect();
    assert_eq!(
        checked_names, fresh_names,
        "generated/ has a different file list: run `cargo run -p ggen -- build`"
    );
    for (name, bytes) in &fresh {
        assert!(
            checked_in[name] == *bytes,
            "generated/{name} is stale: run `cargo run -p ggen -- build`"
        );
    }
}

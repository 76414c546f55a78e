//! Same specs, same generator ⇒ byte-identical output, whatever the thread
//! count, the project's location on disk or the working directory.

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;
use ggen::pipeline::{self, Project};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A copy of the repository's specs and config under a fresh temp folder.
fn copy_project() -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("temp dir");
    let specs = temp.path().join("nested/project/specs");
    fs_err::create_dir_all(&specs).expect("create specs");
    for entry in fs_err::read_dir(repo().join("specs")).expect("specs folder") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            fs_err::copy(&path, specs.join(path.file_name().expect("file name"))).expect("copy");
        }
    }
    fs_err::copy(
        repo().join("ggen.toml"),
        temp.path().join("nested/project/ggen.toml"),
    )
    .expect("copy config");
    // Package settings come from the project's own workspace manifest.
    fs_err::copy(
        repo().join("Cargo.toml"),
        temp.path().join("nested/project/Cargo.toml"),
    )
    .expect("copy workspace manifest");
    temp
}

fn render_all(config: &Path, jobs: usize) -> Vec<(String, Vec<(String, String)>)> {
    let project = Project::open(config).expect("config loads");
    let paths = project.spec_files(&[]).expect("globs expand");
    pipeline::generate_all(&project, &paths, jobs)
        .expect("generates")
        .into_iter()
        .map(|g| (g.model.id, g.files.into_iter().collect()))
        .collect()
}

#[test]
fn thread_count_and_location_do_not_change_output() {
    let one = render_all(&repo().join("ggen.toml"), 1);
    let two = render_all(&repo().join("ggen.toml"), 2);
    assert_eq!(one, two, "1 vs 2 worker threads");
    let copy = copy_project();
    let moved = render_all(&copy.path().join("nested/project/ggen.toml"), 2);
    assert_eq!(one, moved, "a copy of the project elsewhere");
    for (_, files) in &one {
        for (path, text) in files {
            assert!(!text.contains('\r'), "{path} has a CR");
            assert!(
                !text.contains(env!("CARGO_MANIFEST_DIR")),
                "{path} leaks an absolute path"
            );
        }
    }
}

#[test]
fn working_directory_does_not_change_output() {
    let copy = copy_project();
    let project = copy.path().join("nested/project");
    let out_a = copy.path().join("out-a");
    let out_b = copy.path().join("out-b");
    // From the project root with a relative config, and from elsewhere with an absolute one.
    cargo_bin_cmd!("ggen")
        .current_dir(&project)
        .args(["build", "--out"])
        .arg(&out_a)
        .assert()
        .success();
    cargo_bin_cmd!("ggen")
        .current_dir(copy.path())
        .arg("--config")
        .arg(project.join("ggen.toml"))
        .args(["build", "--jobs", "1", "--out"])
        .arg(&out_b)
        .assert()
        .success();
    for id in ["cost_guard", "queue_valve", "rollback_guard"] {
        for file in ["src/policy.rs", "README.md", "ggen-manifest.json"] {
            let a = fs_err::read(out_a.join(id).join(file)).expect("file in out-a");
            let b = fs_err::read(out_b.join(id).join(file)).expect("file in out-b");
            assert!(a == b, "{id}/{file} differs between working directories");
        }
    }
}

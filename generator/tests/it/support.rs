//! Helpers shared by the modules that run the `ggen` binary.

use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `ggen ARGS` in `dir` and asserts the exit code: (stdout, stderr).
pub fn ggen(dir: &Path, args: &[&str], code: i32) -> (String, String) {
    let output = cargo_bin_cmd!("ggen")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("ggen runs");
    let stdout = String::from_utf8(output.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8(output.stderr).expect("utf-8 stderr");
    assert_eq!(
        output.status.code(),
        Some(code),
        "ggen {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// A temp project holding `specs/cost_guard.json` and
/// `specs/queue_valve.json`, writing into `generated/`.
pub fn project() -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("temp dir");
    fs_err::create_dir_all(temp.path().join("specs")).expect("specs folder");
    for spec in ["cost_guard.json", "queue_valve.json"] {
        fs_err::copy(
            repo().join("specs").join(spec),
            temp.path().join("specs").join(spec),
        )
        .expect("copy spec");
    }
    fs_err::write(
        temp.path().join("ggen.toml"),
        "version = 1\nspecs = [\"specs/*.json\"]\nout_dir = \"generated\"\n",
    )
    .expect("config");
    temp
}

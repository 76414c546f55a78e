//! A generated crate folder is project content a pull request can edit:
//! its manifest, links and files ggen does not own must never make `build`
//! read, write or delete outside it, nor pass `build --check` unseen.

use std::path::Path;

use super::support::{ggen, project};

/// Adds `entry` (owning `bytes`) to the manifest of `generated/<id>`.
fn add_manifest_entry(dir: &Path, id: &str, entry: &str, bytes: &[u8]) {
    let path = dir.join(format!("generated/{id}/ggen-manifest.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(&path).expect("read")).expect("json");
    let files = manifest["files"].as_array_mut().expect("files");
    files.push(serde_json::json!({
        "path": entry,
        "sha256": ggen::digest::sha256_hex(bytes),
        "size": bytes.len(),
    }));
    fs_err::write(
        &path,
        serde_json::to_string_pretty(&manifest).expect("json"),
    )
    .expect("write");
}

#[test]
fn a_manifest_entry_outside_its_crate_folder_is_refused() {
    let p = project();
    let dir = p.path();
    ggen(dir, &["build"], 0);
    let secret = b"RUNNER_TOKEN=hunter2\n";
    fs_err::write(dir.join("secret.env"), secret).expect("write");
    let absolute = dir.join("secret.env").to_string_lossy().into_owned();
    for entry in [
        "../../secret.env",
        absolute.as_str(),
        "src/../../../secret.env",
    ] {
        // Owned and no longer generated, with the right hash: it used to be
        // deleted by `build` and printed by `--check` and `--dry-run`.
        add_manifest_entry(dir, "queue_valve", entry, secret);
        for args in [
            &["build"][..],
            &["build", "--check"],
            &["build", "--dry-run"],
        ] {
            let (stdout, stderr) = ggen(dir, args, 1);
            assert!(!stdout.contains("hunter2"), "{args:?}: {stdout}");
            assert!(
                stderr.contains("generated/queue_valve/ggen-manifest.json`: /files/"),
                "{args:?}: {stderr}"
            );
            assert!(stderr.contains(entry), "{args:?}: {stderr}");
        }
        assert_eq!(fs_err::read(dir.join("secret.env")).expect("kept"), secret);
        ggen(dir, &["build", "--force"], 1);
        // Restored by hand, as the message says.
        fs_err::remove_dir_all(dir.join("generated/queue_valve")).expect("remove");
        ggen(dir, &["build"], 0);
    }
}

#[cfg(unix)]
#[test]
fn links_in_a_crate_folder_are_neither_followed_nor_written_through() {
    let p = project();
    let dir = p.path();
    ggen(dir, &["build"], 0);
    // `src` replaced by a link to a folder elsewhere holding a changed copy.
    let elsewhere = dir.join("elsewhere");
    let src = dir.join("generated/cost_guard/src");
    fs_err::rename(&src, &elsewhere).expect("move");
    fs_err::write(elsewhere.join("policy.rs"), "// elsewhere\n").expect("write");
    std::os::unix::fs::symlink(&elsewhere, &src).expect("link");
    for (args, code) in [
        (&["build"][..], 1),
        (&["build", "--force"], 1),
        (&["build", "--check"], 1),
        (&["build", "--dry-run"], 1),
    ] {
        let (stdout, stderr) = ggen(dir, args, code);
        assert!(!stdout.contains("// elsewhere"), "{args:?}: {stdout}");
        assert!(
            stderr.contains("`generated/cost_guard/src` is a symbolic link"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        fs_err::read_to_string(elsewhere.join("policy.rs")).expect("read"),
        "// elsewhere\n",
        "nothing written through the link"
    );

    // A stale crate's owned file replaced by a link to a file elsewhere
    // (same bytes): not deleted, not read.
    fs_err::remove_file(&src).expect("unlink");
    ggen(dir, &["build"], 0);
    let lib = dir.join("generated/queue_valve/src/lib.rs");
    let copy = dir.join("lib-copy.rs");
    fs_err::rename(&lib, &copy).expect("move");
    std::os::unix::fs::symlink(&copy, &lib).expect("link");
    fs_err::remove_file(dir.join("specs/queue_valve.json")).expect("drop the spec");
    let (_, stderr) = ggen(dir, &["build"], 1);
    assert!(
        stderr.contains("`generated/queue_valve/src/lib.rs` is a symbolic link"),
        "{stderr}"
    );
    assert!(copy.is_file(), "the link's target is kept");
}

#[test]
fn paths_blocked_by_a_file_or_a_folder_are_rejected_input() {
    let p = project();
    let dir = p.path();
    ggen(dir, &["build"], 0);
    // A folder where a generated file goes.
    let readme = dir.join("generated/cost_guard/README.md");
    fs_err::remove_file(&readme).expect("remove");
    fs_err::create_dir_all(&readme).expect("mkdir");
    let (_, stderr) = ggen(dir, &["build"], 1);
    assert!(
        stderr.contains("`generated/cost_guard/README.md` is a folder"),
        "{stderr}"
    );
    fs_err::remove_dir(&readme).expect("rmdir");
    // A file where the crate folder goes.
    let folder = dir.join("generated/cost_guard");
    fs_err::remove_dir_all(&folder).expect("remove");
    fs_err::write(&folder, "a file\n").expect("write");
    let (_, stderr) = ggen(dir, &["build", "--check"], 1);
    assert!(
        stderr.contains("`generated/cost_guard` is not a folder"),
        "{stderr}"
    );
}

#[test]
fn a_file_too_large_to_read_is_reported_not_read() {
    let p = project();
    let dir = p.path();
    ggen(dir, &["build"], 0);
    let readme = dir.join("generated/cost_guard/README.md");
    let file = fs_err::File::create(&readme).expect("create");
    file.set_len(ggen::owned::MAX_READ + 1).expect("grow");
    let (stdout, stderr) = ggen(dir, &["build", "--check"], 1);
    assert!(
        stdout.contains(&format!(
            "the file on disk is {} bytes: not read",
            ggen::owned::MAX_READ + 1
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("generated/cost_guard/README.md (refuse)"),
        "{stderr}"
    );
    ggen(dir, &["build"], 1);
    ggen(dir, &["build", "--force"], 0);
    ggen(dir, &["build", "--check"], 0);
}

#[test]
fn files_ggen_does_not_own_in_a_crate_folder_fail_the_check() {
    let p = project();
    let dir = p.path();
    ggen(dir, &["build"], 0);
    let crate_dir = dir.join("generated/cost_guard");
    // What cargo would build or run if it found it.
    let added = [
        "build.rs",
        "src/bin/x.rs",
        "tests/x.rs",
        "examples/x.rs",
        "benches/x.rs",
        ".cargo/config.toml",
    ];
    for file in added {
        let path = crate_dir.join(file);
        fs_err::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs_err::write(&path, "fn main() {}\n").expect("write");
    }
    // What a build of the crate on its own leaves: not reported.
    fs_err::create_dir_all(crate_dir.join("target/debug")).expect("mkdir");
    fs_err::write(crate_dir.join("target/debug/x"), "").expect("write");
    fs_err::write(crate_dir.join("Cargo.lock"), "").expect("write");

    let (stdout, stderr) = ggen(dir, &["build", "--check"], 1);
    for file in added {
        assert!(
            stderr.contains(&format!("stale: generated/cost_guard/{file} (unowned)")),
            "{file}: {stderr}"
        );
        assert!(
            stdout.contains(&format!(
                "Only in generated/cost_guard: {file} (not generated"
            )),
            "{file}: {stdout}"
        );
    }
    assert!(!stderr.contains("target/debug"), "{stderr}");
    assert!(!stderr.contains("Cargo.lock"), "{stderr}");
    // `build` writes what it owns, leaves the rest and says so.
    let (_, stderr) = ggen(dir, &["build"], 0);
    assert!(
        stderr.contains("`generated/cost_guard/build.rs` is not generated by ggen"),
        "{stderr}"
    );
    assert!(crate_dir.join("build.rs").is_file());
    for file in added {
        fs_err::remove_file(crate_dir.join(file)).expect("remove");
    }
    ggen(dir, &["build", "--check"], 0);
}

/// Copies the folder `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).expect("mkdir");
    for entry in fs_err::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs_err::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn a_copied_crate_folder_is_not_pruned() {
    let p = project();
    let dir = p.path();
    ggen(dir, &["build"], 0);
    let fork = dir.join("generated/my_fork");
    copy_dir(&dir.join("generated/cost_guard"), &fork);
    let files = fs_err::read_dir(fork.join("src")).expect("list").count();
    for args in [
        &["build"][..],
        &["build", "--check"],
        &["build", "--dry-run"],
    ] {
        let (_, stderr) = ggen(dir, args, 1);
        assert!(
            stderr.contains(
                "`generated/my_fork/ggen-manifest.json` is the manifest of sku `cost_guard`, not of `my_fork`"
            ),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(
        fs_err::read_dir(fork.join("src")).expect("list").count(),
        files,
        "nothing deleted"
    );
    assert!(fork.join("ggen-manifest.json").is_file());
}

#[test]
fn what_ggen_did_not_write_in_the_output_folder_fails_the_check() {
    let p = project();
    let dir = p.path();
    ggen(dir, &["build"], 0);
    // A folder without a manifest (cargo's `generated/*` members glob
    // would fail on it), a file, a hidden file beside the crates, and a
    // hidden crate (the glob matches it too: cargo would build it).
    let out = dir.join("generated");
    fs_err::create_dir_all(out.join("old_sku/src")).expect("mkdir");
    fs_err::write(out.join("old_sku/src/lib.rs"), "").expect("write");
    fs_err::write(out.join("NOTES.md"), "hand-written\n").expect("write");
    fs_err::write(out.join(".gitignore"), "target\n").expect("write");
    fs_err::create_dir_all(out.join(".x")).expect("mkdir");
    fs_err::write(out.join(".x/Cargo.toml"), "[package]\nname = \"x\"\n").expect("write");

    let (_, stderr) = ggen(dir, &["build", "--check"], 1);
    for path in ["generated/old_sku", "generated/NOTES.md", "generated/.x"] {
        assert!(
            stderr.contains(&format!("stale: {path} (not written by ggen)")),
            "{path}: {stderr}"
        );
    }
    assert!(!stderr.contains(".gitignore"), "{stderr}");
    assert!(!stderr.contains("run `ggen build`"), "{stderr}");
    let (stdout, _) = ggen(dir, &["--format", "json", "build", "--check"], 1);
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        doc["foreign"],
        serde_json::json!(["generated/.x", "generated/NOTES.md", "generated/old_sku"])
    );
    assert_eq!(doc["ok"], false);
    let (stdout, _) = ggen(dir, &["build", "--dry-run"], 0);
    assert!(stdout.contains("foreign   generated/old_sku"), "{stdout}");

    // `build` leaves them alone and says why the check fails.
    let (_, stderr) = ggen(dir, &["build"], 0);
    assert!(
        stderr.contains("`generated/old_sku` is not a crate ggen wrote"),
        "{stderr}"
    );
    assert!(out.join("old_sku/src/lib.rs").is_file());
    assert!(out.join("NOTES.md").is_file());

    // A spec's own folder is never foreign, even before its manifest is
    // written: it is planned as that spec's crate.
    fs_err::remove_file(out.join("cost_guard/ggen-manifest.json")).expect("remove");
    let (_, stderr) = ggen(dir, &["build", "--check"], 1);
    assert!(
        !stderr.contains("generated/cost_guard (not written"),
        "{stderr}"
    );

    fs_err::remove_dir_all(out.join("old_sku")).expect("remove");
    fs_err::remove_file(out.join("NOTES.md")).expect("remove");
    fs_err::remove_dir_all(out.join(".x")).expect("remove");
    ggen(dir, &["build", "--force"], 0);
    ggen(dir, &["build", "--check"], 0);
}

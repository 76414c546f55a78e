//! `ggen bundle` and the CI recipe: byte-reproducible bundles, `--check` against changed
//! specs and tampered bundles, `--verify`/`--with-binary` in a temporary
//! workspace, and bad input that leaves nothing behind.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use assert_cmd::cargo::cargo_bin_cmd;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A project in a temp folder (nested, so no path matches the repo's):
/// the repository's specs, config and workspace manifest, the latter's
/// `path` dependencies pointing back at this checkout.
fn copy_project() -> (tempfile::TempDir, PathBuf) {
    let temp = tempfile::tempdir().expect("temp dir");
    let root = temp.path().join("elsewhere/project");
    fs_err::create_dir_all(root.join("specs")).expect("specs");
    for entry in fs_err::read_dir(repo().join("specs")).expect("specs") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            fs_err::copy(
                &path,
                root.join("specs").join(path.file_name().expect("name")),
            )
            .expect("copy");
        }
    }
    fs_err::copy(repo().join("ggen.toml"), root.join("ggen.toml")).expect("config");
    let manifest = fs_err::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let repo = repo().to_string_lossy().into_owned();
    let manifest = manifest
        .replace("path = \"core\"", &format!("path = \"{repo}/core\""))
        .replace("path = \"runtime\"", &format!("path = \"{repo}/runtime\""));
    fs_err::write(root.join("Cargo.toml"), manifest).expect("Cargo.toml");
    fs_err::copy(repo_path("Cargo.lock"), root.join("Cargo.lock")).expect("Cargo.lock");
    (temp, root)
}

fn repo_path(name: &str) -> PathBuf {
    repo().join(name)
}

/// The target folder this test binary was built in (`target/`): crates
/// `--verify` builds go there too, so the runtime's dependencies compile
/// once, whatever folder the project under test is in.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    exe.ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Runs `ggen ARGS` in `dir` with `env`: exit code, stdout, stderr.
fn ggen(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = cargo_bin_cmd!("ggen");
    command
        .current_dir(dir)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("CARGO_TARGET_DIR", target_dir());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("ggen runs");
    (
        output.status.code().expect("exited normally"),
        String::from_utf8(output.stdout).expect("utf-8 stdout"),
        String::from_utf8(output.stderr).expect("utf-8 stderr"),
    )
}

fn expect(dir: &Path, args: &[&str], env: &[(&str, &str)], code: i32) -> (String, String) {
    let (actual, stdout, stderr) = ggen(dir, args, env);
    assert_eq!(
        actual, code,
        "ggen {args:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// Every file of a folder, by name.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs_err::read_dir(dir)
        .expect("bundle folder")
        .map(|e| {
            let path = e.expect("entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            (name, fs_err::read(&path).expect("read"))
        })
        .collect()
}

/// `(path, mode, uid, gid, mtime, type)` of every tar entry, in order.
fn listing(tarball: &[u8]) -> Vec<(String, u32, u64, u64, u64, u8)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    archive
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            let h = e.header();
            (
                String::from_utf8(e.path_bytes().into_owned()).expect("utf-8 path"),
                h.mode().expect("mode"),
                h.uid().expect("uid"),
                h.gid().expect("gid"),
                h.mtime().expect("mtime"),
                h.entry_type().as_byte(),
            )
        })
        .collect()
}

#[test]
fn bundles_are_byte_identical_across_runs_folders_and_threads() {
    let out = tempfile::tempdir().expect("out");
    let a = out.path().join("a");
    let b = out.path().join("b");
    expect(
        &repo(),
        &["bundle", "--jobs", "1", "--out", a.to_str().unwrap()],
        &[],
        0,
    );
    let (_t, copy) = copy_project();
    // Another folder, thread count, working directory and time zone.
    expect(
        &copy.join("specs"),
        &["bundle", "--jobs", "3", "--out", b.to_str().unwrap()],
        &[("TZ", "Asia/Kolkata")],
        0,
    );
    let (first, second) = (files(&a), files(&b));
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        [
            "cost_guard-1.2.0.bundle.json",
            "cost_guard-1.2.0.tar.gz",
            "queue_valve-1.0.0.bundle.json",
            "queue_valve-1.0.0.tar.gz",
            "rollback_guard-0.4.0.bundle.json",
            "rollback_guard-0.4.0.tar.gz",
        ]
    );
    assert_eq!(first, second, "bundles differ between two folders");

    let tarball = &first["queue_valve-1.0.0.tar.gz"];
    // gzip header: no name, mtime 0, OS unknown.
    assert_eq!(
        &tarball[..4],
        &[0x1f, 0x8b, 8, 0],
        "FLG must be 0 (no name)"
    );
    assert_eq!(&tarball[4..8], &[0, 0, 0, 0], "gzip mtime");
    assert_eq!(tarball[9], 255, "gzip OS byte");
    let entries = listing(tarball);
    let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_unstable();
    assert_eq!(paths, sorted, "entries sorted");
    for (path, mode, uid, gid, mtime, _) in &entries {
        assert!(path.starts_with("queue_valve-1.0.0/"), "{path}");
        assert_eq!((*uid, *gid, *mtime), (0, 0, 315_532_800), "{path}");
        let want = if path.ends_with('/') { 0o755 } else { 0o644 };
        assert_eq!(*mode, want, "{path}");
    }
    for needed in [
        "queue_valve-1.0.0/bundle.json",
        "queue_valve-1.0.0/spec/queue_valve.json",
        "queue_valve-1.0.0/src/lib.rs",
        "queue_valve-1.0.0/deploy/kubernetes.yaml",
        "queue_valve-1.0.0/ggen-manifest.json",
    ] {
        assert!(paths.contains(&needed), "{needed} missing from {paths:?}");
    }

    // The outer manifest records the tarball's hash; the crate's files are
    // the bytes `ggen build` wrote to generated/.
    let outer: serde_json::Value =
        serde_json::from_slice(&first["queue_valve-1.0.0.bundle.json"]).expect("json");
    assert_eq!(outer["bundle"]["sha256"], ggen::digest::sha256_hex(tarball));
    assert_eq!(outer["sku"]["id"], "queue_valve");
    assert_eq!(outer["generator"]["version"], env!("CARGO_PKG_VERSION"));
    let lib = outer["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == "src/lib.rs")
        .expect("src/lib.rs listed");
    let on_disk = fs_err::read(repo().join("generated/queue_valve/src/lib.rs")).expect("lib.rs");
    assert_eq!(lib["sha256"], ggen::digest::sha256_hex(&on_disk));
}

#[test]
fn source_date_epoch_sets_every_mtime_and_check_follows_it() {
    let out = tempfile::tempdir().expect("out");
    let dir = out.path().to_str().unwrap();
    let env = [("SOURCE_DATE_EPOCH", "1700000000")];
    expect(
        &repo(),
        &["bundle", "specs/cost_guard.json", "--out", dir],
        &env,
        0,
    );
    let tarball = fs_err::read(out.path().join("cost_guard-1.2.0.tar.gz")).expect("tarball");
    assert!(listing(&tarball).iter().all(|e| e.4 == 1_700_000_000));
    // `--check` re-derives at the epoch the bundle records, whatever the env says.
    let (stdout, _) = expect(
        &repo(),
        &["bundle", "specs/cost_guard.json", "--check", dir],
        &[],
        0,
    );
    assert_eq!(stdout, "same: cost_guard-1.2.0\n");
    let (_, stderr) = expect(
        &repo(),
        &["bundle", "--out", dir],
        &[("SOURCE_DATE_EPOCH", "soon")],
        1,
    );
    assert!(
        stderr.contains("SOURCE_DATE_EPOCH `soon` is not a whole number"),
        "{stderr}"
    );
}

/// Rewrites the tar.gz at `path`, changing `file`'s bytes with `edit`, and
/// (if `rehash`) records the new tarball's hash in its `.bundle.json`.
fn repack(dir: &Path, name: &str, file: &str, edit: impl Fn(&mut Vec<u8>), rehash: bool) {
    repack_at(dir, name, file, edit, rehash, 6);
}

/// [`repack`], gzip at `level`.
fn repack_at(
    dir: &Path,
    name: &str,
    file: &str,
    edit: impl Fn(&mut Vec<u8>),
    rehash: bool,
    level: u32,
) {
    let path = dir.join(format!("{name}.tar.gz"));
    let bytes = fs_err::read(&path).expect("tarball");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut header = entry.header().clone();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).expect("read");
        let entry_path = String::from_utf8(entry.path_bytes().into_owned()).expect("path");
        if entry_path == format!("{name}/{file}") {
            edit(&mut content);
            header.set_size(content.len() as u64);
        }
        builder
            .append_data(&mut header, &entry_path, content.as_slice())
            .expect("append");
    }
    let tar = builder.into_inner().expect("tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    std::io::Write::write_all(&mut gz, &tar).expect("gzip");
    let tarball = gz.finish().expect("gzip");
    fs_err::write(&path, &tarball).expect("write");
    if rehash {
        let json = dir.join(format!("{name}.bundle.json"));
        let mut outer: serde_json::Value =
            serde_json::from_slice(&fs_err::read(&json).expect("json")).expect("json");
        outer["bundle"]["sha256"] = ggen::digest::sha256_hex(&tarball).into();
        outer["bundle"]["size"] = tarball.len().into();
        fs_err::write(&json, serde_json::to_vec(&outer).expect("json")).expect("write");
    }
}

#[test]
fn check_catches_a_changed_spec_a_tampered_bundle_and_a_missing_one() {
    let (_t, root) = copy_project();
    let out = root.join("dist");
    let dir = out.to_str().unwrap();
    expect(&root, &["bundle", "--out", dir], &[], 0);
    let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 0);
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("same: ")).count(),
        3,
        "{stdout}"
    );
    let pristine = files(&out);

    // A description changed, version kept: the bundle no longer matches.
    let spec = root.join("specs/queue_valve.json");
    let original = fs_err::read_to_string(&spec).expect("spec");
    let changed = original.replacen("\"description\": \"", "\"description\": \"Now: ", 1);
    assert_ne!(changed, original);
    fs_err::write(&spec, &changed).expect("edit spec");
    let (stdout, stderr) = expect(&root, &["bundle", "--check", dir], &[], 1);
    assert!(stdout.contains("differs: queue_valve-1.0.0: "), "{stdout}");
    assert!(stdout.contains("spec/queue_valve.json differs"), "{stdout}");
    assert!(stdout.contains("same: cost_guard-1.2.0"), "{stdout}");
    assert!(stderr.contains("bundles differ from the specs"), "{stderr}");
    let (json, _) = expect(
        &root,
        &["--format", "json", "bundle", "--check", dir],
        &[],
        1,
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["ok"], false);
    fs_err::write(&spec, &original).expect("restore spec");

    // A flipped byte: the tarball no longer hashes as recorded.
    let tar_path = out.join("rollback_guard-0.4.0.tar.gz");
    let mut bytes = pristine["rollback_guard-0.4.0.tar.gz"].clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    fs_err::write(&tar_path, &bytes).expect("tamper");
    let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 1);
    assert!(
        stdout.contains("tampered: rollback_guard-0.4.0: ")
            && stdout.contains("does not hash as its `.bundle.json` records"),
        "{stdout}"
    );

    // A file edited and the outer hash forged: the inner manifest catches it.
    fs_err::write(&tar_path, &pristine["rollback_guard-0.4.0.tar.gz"]).expect("restore");
    repack(
        &out,
        "rollback_guard-0.4.0",
        "src/policy.rs",
        |b| b.extend_from_slice(b"// edited\n"),
        true,
    );
    let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 1);
    assert!(
        stdout.contains("tampered: rollback_guard-0.4.0: the files inside"),
        "{stdout}"
    );

    // The same files, recompressed (or re-owned, re-timed, reordered): not ggen's bytes.
    fs_err::write(&tar_path, &pristine["rollback_guard-0.4.0.tar.gz"]).expect("restore");
    fs_err::write(
        out.join("rollback_guard-0.4.0.bundle.json"),
        &pristine["rollback_guard-0.4.0.bundle.json"],
    )
    .expect("restore");
    repack_at(
        &out,
        "rollback_guard-0.4.0",
        "src/policy.rs",
        |_| {},
        true,
        9,
    );
    let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 1);
    assert!(
        stdout.contains("holds the right files, but not in the bytes ggen writes"),
        "{stdout}"
    );

    // A manifest that calls another file "the binary", to exempt it from the comparison.
    fs_err::write(&tar_path, &pristine["rollback_guard-0.4.0.tar.gz"]).expect("restore");
    let claim = |doc: &mut serde_json::Value| {
        doc["binary"] =
            serde_json::json!({ "path": "deploy/kubernetes.yaml", "reproducible": false });
    };
    repack(
        &out,
        "rollback_guard-0.4.0",
        "bundle.json",
        |bytes| {
            let mut doc: serde_json::Value = serde_json::from_slice(bytes).expect("json");
            claim(&mut doc);
            *bytes = serde_json::to_vec(&doc).expect("json");
        },
        true,
    );
    let json = out.join("rollback_guard-0.4.0.bundle.json");
    let mut outer: serde_json::Value =
        serde_json::from_slice(&fs_err::read(&json).expect("json")).expect("json");
    claim(&mut outer);
    fs_err::write(&json, serde_json::to_vec(&outer).expect("json")).expect("write");
    let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 1);
    assert!(
        stdout.contains("names `\"deploy/kubernetes.yaml\"` as the binary"),
        "{stdout}"
    );
    fs_err::write(&tar_path, &pristine["rollback_guard-0.4.0.tar.gz"]).expect("restore");
    fs_err::write(&json, &pristine["rollback_guard-0.4.0.bundle.json"]).expect("restore");

    // A file no spec makes, in a folder the release uploads whole.
    fs_err::write(out.join("zz-extra.tar.gz"), b"not ours").expect("write");
    let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 1);
    assert!(stdout.contains("extra: zz-extra.tar.gz"), "{stdout}");
    fs_err::remove_file(out.join("zz-extra.tar.gz")).expect("remove");
    expect(&root, &["bundle", "--check", dir], &[], 0);

    // A folder where a bundle file belongs: a verdict (exit 1), not an
    // internal error.
    for file in ["cost_guard-1.2.0.tar.gz", "cost_guard-1.2.0.bundle.json"] {
        let path = out.join(file);
        let kept = fs_err::read(&path).expect("read");
        fs_err::remove_file(&path).expect("remove");
        fs_err::create_dir(&path).expect("mkdir");
        let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 1);
        assert!(
            stdout.contains(&format!(
                "tampered: cost_guard-1.2.0: `{dir}/{file}` is not a regular file"
            )),
            "{stdout}"
        );
        fs_err::remove_dir(&path).expect("rmdir");
        fs_err::write(&path, kept).expect("restore");
    }
    expect(&root, &["bundle", "--check", dir], &[], 0);

    // Gone.
    fs_err::remove_file(out.join("cost_guard-1.2.0.bundle.json")).expect("remove");
    let (stdout, _) = expect(&root, &["bundle", "--check", dir], &[], 1);
    assert!(stdout.contains("missing: cost_guard-1.2.0: "), "{stdout}");
}

#[test]
fn bad_input_leaves_no_partial_bundle() {
    let (_t, root) = copy_project();
    // An invalid spec: located diagnostics, exit 1, no folder made.
    let spec = root.join("specs/cost_guard.json");
    let text = fs_err::read_to_string(&spec).expect("spec");
    fs_err::write(&spec, text.replace("\"replicas\": 1", "\"replicas\": 0")).expect("edit");
    let (stdout, stderr) = expect(&root, &["bundle", "--out", "dist"], &[], 1);
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("specs/cost_guard.json:") && all.contains("/deploy/replicas"),
        "{all}"
    );
    assert!(
        !root.join("dist").exists(),
        "a bundle folder was made for invalid input"
    );
    fs_err::write(&spec, text).expect("restore");

    // An output folder that cannot be made: exit 2, named, nothing left.
    fs_err::write(root.join("blocker"), "a file").expect("file");
    let (_, stderr) = expect(&root, &["bundle", "--out", "blocker/dist"], &[], 2);
    assert!(stderr.contains("cannot create `blocker/dist`"), "{stderr}");

    // A missing spec.
    let (_, stderr) = expect(
        &root,
        &["bundle", "specs/nope.json", "--out", "dist"],
        &[],
        1,
    );
    assert!(stderr.contains("specs/nope.json"), "{stderr}");
    assert!(!root.join("dist").exists());

    // Neither --out nor --check.
    let (_, stderr) = expect(&root, &["bundle"], &[], 2);
    assert!(stderr.contains("--out"), "{stderr}");
}

/// A bundle that carries a binary is checked by the binary's recorded
/// hash only (a binary is not reproducible): `--check` says it is there
/// and that it was not rebuilt, instead of a bare `same` and `"binary":
/// false`.
#[test]
fn check_says_a_bundled_binary_is_there_and_not_rebuilt() {
    let (_t, root) = copy_project();
    let project = ggen::pipeline::Project::open(&root.join("ggen.toml")).expect("project");
    let spec = root.join("specs/queue_valve.json");
    let generated =
        ggen::pipeline::generate_all(&project, std::slice::from_ref(&spec), 1).expect("generated");
    let binary = ggen::bundle::Binary {
        name: format!("queue-valve-governor{}", std::env::consts::EXE_SUFFIX),
        bytes: b"anything at all: --check cannot rebuild a binary".to_vec(),
    };
    let canonical = fs_err::canonicalize(&spec).expect("spec");
    ggen::bundle::Bundle::new(&generated[0], &canonical, Some(binary), 315_532_800)
        .expect("bundle")
        .write(&root.join("dist"))
        .expect("written");
    let (stdout, _) = expect(
        &root,
        &["bundle", "specs/queue_valve.json", "--check", "dist"],
        &[],
        0,
    );
    assert_eq!(
        stdout,
        "same: queue_valve-1.0.0 (its binary is not rebuilt: only the sources, manifests and the binary's recorded hash were compared)\n"
    );
    let (json, _) = expect(
        &root,
        &[
            "--format",
            "json",
            "bundle",
            "specs/queue_valve.json",
            "--check",
            "dist",
        ],
        &[],
        0,
    );
    let doc: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["bundles"][0]["status"], "same");
    assert_eq!(doc["bundles"][0]["binary"], true);
    assert_eq!(doc["bundles"][0]["binary_rebuilt"], false);
}

#[test]
fn verify_tests_the_crate_and_with_binary_adds_it_by_hash() {
    let out = tempfile::tempdir().expect("out");
    let dir = out.path().to_str().unwrap();
    // An unoptimised "release" keeps the test's compile time down; what is
    // tested is that the binary is built and bundled, not its speed.
    let fast_release = [
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"),
        ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
    ];
    let (_, stderr) = expect(
        &repo(),
        &[
            "bundle",
            "specs/queue_valve.json",
            "--verify",
            "--with-binary",
            "--out",
            dir,
        ],
        &fast_release,
        0,
    );
    // Not a terminal: plain progress lines.
    assert!(
        stderr.contains("bundle: queue_valve: building and testing (1/1)"),
        "{stderr}"
    );
    assert!(!stderr.contains('\r'), "{stderr}");
    let tarball = fs_err::read(out.path().join("queue_valve-1.0.0.tar.gz")).expect("tarball");
    let entries = listing(&tarball);
    let binary = entries
        .iter()
        .find(|e| e.0 == "queue_valve-1.0.0/bin/queue-valve-governor")
        .expect("the binary is bundled");
    assert_eq!(binary.1, 0o755);
    let outer: serde_json::Value = serde_json::from_slice(
        &fs_err::read(out.path().join("queue_valve-1.0.0.bundle.json")).expect("json"),
    )
    .expect("json");
    assert_eq!(outer["binary"]["path"], "bin/queue-valve-governor");
    assert_eq!(outer["binary"]["reproducible"], false);
    // The binary is not reproducible, but `--check` accepts it by its recorded hash.
    let (stdout, _) = expect(
        &repo(),
        &["bundle", "specs/queue_valve.json", "--check", dir],
        &[],
        0,
    );
    assert!(
        stdout.starts_with("same: queue_valve-1.0.0 (its binary is not rebuilt"),
        "{stdout}"
    );
    repack(
        out.path(),
        "queue_valve-1.0.0",
        "bin/queue-valve-governor",
        |b| b.push(0),
        true,
    );
    let (stdout, _) = expect(
        &repo(),
        &["bundle", "specs/queue_valve.json", "--check", dir],
        &[],
        1,
    );
    assert!(stdout.contains("tampered: queue_valve-1.0.0"), "{stdout}");
}

#[test]
fn verify_refuses_a_crate_whose_tests_fail_and_writes_nothing() {
    let (_t, root) = copy_project();
    // A template override whose generated test fails.
    fs_err::create_dir_all(root.join("tpl/tests")).expect("tpl");
    fs_err::write(
        root.join("tpl/tests/cli.rs.tera"),
        "#[test]\nfn the_override_fails() {\n    assert_eq!(1 + 1, 3, \"planted failure\");\n}\n",
    )
    .expect("override");
    let config = fs_err::read_to_string(root.join("ggen.toml")).expect("config");
    fs_err::write(
        root.join("ggen.toml"),
        format!("{config}templates = \"tpl\"\n"),
    )
    .expect("config");
    let (stdout, stderr) = expect(
        &root,
        &[
            "bundle",
            "specs/rollback_guard.json",
            "--verify",
            "--out",
            "dist",
        ],
        &[],
        1,
    );
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("`cargo test --quiet -p rollback-guard-governor` failed"),
        "{all}"
    );
    assert!(all.contains("planted failure"), "{all}");
    assert!(
        !root.join("dist").exists(),
        "bundles were written for a failing crate"
    );
}

/// Copies the folder `from` to `to`, recursively.
fn copy_tree(from: &Path, to: &Path) {
    fs_err::create_dir_all(to).expect("mkdir");
    for entry in fs_err::read_dir(from).expect("read_dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            fs_err::copy(&path, &target).expect("copy");
        }
    }
}

/// Runs `git ARGS` in `dir` as the user `ci`.
fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// Runs the CI recipe's ggen steps in `root`: (success, report).
fn run_recipe(root: &Path) -> (bool, String) {
    let ggen = assert_cmd::cargo::cargo_bin!("ggen");
    let output = std::process::Command::new(repo().join("scripts/check-ci-recipe"))
        .arg(repo().join("docs/examples/github-workflow.yml"))
        .arg("--project")
        .arg(root)
        .arg("--ggen")
        .arg(ggen)
        .env_remove("SOURCE_DATE_EPOCH")
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("scripts/check-ci-recipe runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

/// Rewrites `specs/cost_guard.json` in `root` with `from` → `to`, regenerates
/// and commits it, as a pull request's merge commit would hold it.
fn change_spec(root: &Path, from: &str, to: &str, message: &str) {
    let path = root.join("specs/cost_guard.json");
    let spec = fs_err::read_to_string(&path).expect("spec");
    assert_eq!(spec.matches(from).count(), 1, "{from}");
    fs_err::write(&path, spec.replace(from, to)).expect("spec");
    let build = std::process::Command::new(assert_cmd::cargo::cargo_bin!("ggen"))
        .arg("build")
        .current_dir(root)
        .status()
        .expect("ggen runs");
    assert!(build.success());
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", message]);
}

#[test]
fn the_ci_recipe_runs_on_the_repositorys_specs() {
    let (_t, root) = copy_project();
    copy_tree(&repo().join("generated"), &root.join("generated"));
    // A repository, as the workflow's checkout of a pull request gives
    // (SOURCE_DATE_EPOCH comes from it): the base commit, then the change,
    // with recorded signals for the backtest step.
    git(&root, &["init", "-q"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "specs"]);
    let mut recorded = String::from(
        "{\"tenant\":\"a\",\"entitlement\":\"approved\",\"at\":\"2026-11-01T00:00:00Z\"}\n",
    );
    for (minute, value) in [10, 400, 400, 400, 30, 30, 30, 30].iter().enumerate() {
        recorded.push_str(&format!(
            "{{\"tenant\":\"a\",\"signal\":\"spend_rate\",\"value\":{value},\"at\":\"2026-11-01T00:{minute:02}:30Z\"}}\n"
        ));
    }
    fs_err::create_dir_all(root.join("recorded")).expect("recorded");
    fs_err::write(root.join("recorded/cost_guard.jsonl"), recorded).expect("recorded");
    change_spec(
        &root,
        "Throttles and pauses workloads whose spend runs away.",
        "Throttles and pauses workloads whose spend runs away, per tenant.",
        "a change the backtest passes",
    );
    let (ok, report) = run_recipe(&root);
    assert!(ok, "{report}");
    assert!(
        report.contains("check-ci-recipe: 7 step(s) ran"),
        "{report}"
    );
    // The bundles carry the commit's time, and `--check` accepted them.
    let outer: serde_json::Value = serde_json::from_slice(
        &fs_err::read(root.join("dist/cost_guard-1.2.0.bundle.json")).expect("a bundle"),
    )
    .expect("json");
    assert_ne!(outer["source_date_epoch"], 315_532_800);

    // A change that refuses on the recorded signals fails the pull request
    // at the backtest (its scenarios, which would fail first, removed).
    fs_err::remove_file(root.join("specs/cost_guard.test.json")).expect("scenarios");
    change_spec(
        &root,
        r#""refuse": 500,"#,
        r#""refuse": 300,"#,
        "a change the backtest refuses",
    );
    let (ok, report) = run_recipe(&root);
    assert!(!ok, "{report}");
    assert!(
        report.contains("Backtest each changed spec on recorded signals): exit 1"),
        "{report}"
    );
    assert!(
        report.contains("gate --max-new-refusals 0: CROSSED (+1) by a"),
        "{report}"
    );
}

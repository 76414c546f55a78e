//! The generated deploy and monitoring assets, checked by real tools:
//! `scripts/check-deploy` (every manifest validates against the Kubernetes
//! API schemas, the cross-checks hold, and each governor passes its
//! preflight and starts locally with its container's own args and
//! environment) and `scripts/check-monitoring` (promtool checks and unit
//! tests the rules, every dashboard query parses, and every metric they use
//! is on a running governor's `/metrics`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ggen::pipeline;
use ggen::render::TemplateSet;
use ggen::workspace::PackageSettings;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// The generated crate folders, sorted.
fn generated() -> Vec<PathBuf> {
    let mut crates: Vec<PathBuf> = fs_err::read_dir(root().join("generated"))
        .expect("generated/")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.join("deploy").is_dir())
        .collect();
    crates.sort();
    assert!(!crates.is_empty(), "no generated crates");
    crates
}

/// Where this test binary's profile puts binaries (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Builds the governors of `crates` as the workspace's test run does, and
/// returns the folder holding them.
fn build_governors(crates: &[PathBuf]) -> PathBuf {
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--locked", "--quiet"]);
    for dir in crates {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("a name");
        build.args(["-p", &format!("{}-governor", name.replace('_', "-"))]);
    }
    let status = build.current_dir(root()).status().expect("cargo runs");
    assert!(status.success(), "the governors do not build");
    profile_dir()
}

fn check_deploy(args: &[&Path]) -> Output {
    run_script("scripts/check-deploy", args)
}

fn check_monitoring(args: &[&Path]) -> Output {
    run_script("scripts/check-monitoring", args)
}

fn run_script(script: &str, args: &[&Path]) -> Output {
    let output = Command::new(root().join(script))
        .args(args)
        .current_dir(root())
        .output()
        .expect("scripts/check-deploy runs");
    eprintln!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn generated_manifests_validate_and_start_as_written() {
    let crates = generated();
    let bin = build_governors(&crates);
    let mut args: Vec<&Path> = crates.iter().map(PathBuf::as_path).collect();
    args.extend([Path::new("--bin"), bin.as_path()]);
    let output = check_deploy(&args);
    assert!(
        output.status.success(),
        "the deploy assets fail their checks"
    );
}

#[test]
fn check_deploy_catches_a_broken_manifest() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let source = root().join("generated/rollback_guard");
    let copy = tmp.path().join("rollback_guard");
    fs_err::create_dir_all(copy.join("deploy")).expect("mkdir");
    fs_err::copy(
        source.join("ggen-manifest.json"),
        copy.join("ggen-manifest.json"),
    )
    .expect("copy");
    fs_err::copy(source.join("Cargo.toml"), copy.join("Cargo.toml")).expect("copy");
    let mut manifest = fs_err::read_to_string(source.join("deploy/kubernetes.yaml")).expect("read");
    for (from, to) in [
        // The selector no longer matches the pod.
        (
            "  selector:\n    matchLabels:\n      app.kubernetes.io/name: rollback-guard-governor\n  template:",
            "  selector:\n    matchLabels:\n      app.kubernetes.io/name: rollback-guard\n  template:",
        ),
        // A port other than deploy.port.
        ("containerPort: 8080", "containerPort: 9090"),
        // A named, not numeric, user.
        ("runAsUser: 65532", "runAsUser: nonroot"),
        // A key the Secret template lacks.
        ("key: database-url }", "key: db-url }"),
    ] {
        assert!(manifest.contains(from), "{from}");
        manifest = manifest.replacen(from, to, 1);
    }
    fs_err::write(copy.join("deploy/kubernetes.yaml"), manifest).expect("write");
    let containerfile = fs_err::read_to_string(source.join("deploy/Containerfile")).expect("read");
    fs_err::write(
        copy.join("deploy/Containerfile"),
        containerfile.replace("USER 65532:65532", "USER nonroot"),
    )
    .expect("write");
    fs_err::copy(
        source.join("deploy/secret.yaml.example"),
        copy.join("deploy/secret.yaml.example"),
    )
    .expect("copy");

    let output = check_deploy(&[&copy]);
    assert_eq!(output.status.code(), Some(1));
    let report = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "Deployment selector does not match its pod labels",
        "container ports [9090] are not deploy.port 8080",
        "invalid against Kubernetes 1.30.0: 'nonroot' is not of type 'integer'",
        "USER is not numeric",
        "reads key `db-url`, which deploy/secret.yaml.example does not define",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
}

/// The valid fixtures whose `deploy.archive` is a bucket, generated as
/// `<tmp>/<id>/` (their spec is found in this repository by its path).
fn bucket_archive_crates(tmp: &Path) -> Vec<PathBuf> {
    fixture_crates(
        tmp,
        &["postgres_archive_to_gcs.json", "file_archive_to_s3.json"],
    )
}

/// The valid fixtures `names`, generated as `<tmp>/<id>/`.
fn fixture_crates(tmp: &Path, names: &[&str]) -> Vec<PathBuf> {
    let templates = TemplateSet::embedded().expect("embedded templates compile");
    names
        .iter()
        .map(|name| {
            let rel = format!("generator/tests/fixtures/valid/{name}");
            let model = pipeline::model(&root().join(&rel), &rel).expect("a valid fixture");
            let generated = pipeline::generate(model, &templates, &PackageSettings::inherited())
                .expect("a valid fixture generates");
            let dir = tmp.join(&generated.model.id);
            for (path, text) in &generated.files {
                let file = dir.join(path);
                fs_err::create_dir_all(file.parent().expect("a folder")).expect("mkdir");
                fs_err::write(file, text).expect("write");
            }
            dir
        })
        .collect()
}

/// A bucket archive on either ledger: the manifests validate against the
/// Kubernetes schemas and pass the cross-checks (`--archive` is the bucket,
/// no archive volume, HTTPS egress, the optional `aws-*` keys documented).
/// Not started: the preflight would list a bucket this machine cannot reach.
#[test]
fn bucket_archive_manifests_validate() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let crates = bucket_archive_crates(tmp.path());
    let manifest = fs_err::read_to_string(crates[1].join("deploy/kubernetes.yaml")).expect("read");
    assert!(
        manifest.contains("- \"s3://governor-ledgers.example/eu/archive_s3/\"")
            && !manifest.contains("governor-archive"),
        "{manifest}"
    );
    let args: Vec<&Path> = crates.iter().map(PathBuf::as_path).collect();
    let output = check_deploy(&args);
    assert!(
        output.status.success(),
        "the bucket-archive deploy assets fail their checks"
    );
}

/// A spec sold on Google Cloud Marketplace (the edge-case fixture): the
/// manifests validate, read the Marketplace push settings from the Secret
/// (documented there), and reach the metadata server and HTTPS.
#[test]
fn marketplace_manifests_validate() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let crates = fixture_crates(tmp.path(), &["edge_cases.json"]);
    let manifest = fs_err::read_to_string(crates[0].join("deploy/kubernetes.yaml")).expect("read");
    for expected in [
        "key: marketplace-audience",
        "key: marketplace-oidc-email",
        "cidr: 169.254.169.254/32",
        "port: 443",
    ] {
        assert!(manifest.contains(expected), "{expected}\n{manifest}");
    }
    let args: Vec<&Path> = crates.iter().map(PathBuf::as_path).collect();
    let output = check_deploy(&args);
    assert!(
        output.status.success(),
        "the marketplace deploy assets fail their checks"
    );
}

#[test]
fn check_deploy_catches_a_bucket_archive_out_of_step() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let crates = bucket_archive_crates(tmp.path());
    let (gcs, s3) = (&crates[0], &crates[1]);
    let edit = |dir: &Path, edits: &[(&str, &str)]| {
        let path = dir.join("deploy/kubernetes.yaml");
        let mut manifest = fs_err::read_to_string(&path).expect("read");
        for (from, to) in edits {
            assert!(manifest.contains(from), "{from}");
            manifest = manifest.replacen(from, to, 1);
        }
        fs_err::write(path, manifest).expect("write");
    };
    edit(
        gcs,
        &[
            // Another bucket than the spec's.
            (
                "- \"gs://governor-ledgers/archive_gcs\"",
                "- \"gs://other-ledgers/archive_gcs\"",
            ),
            // HTTPS egress gone.
            ("        - port: 443\n", "        - port: 8443\n"),
        ],
    );
    edit(
        s3,
        &[
            // An archive volume after all.
            (
                "          volumeMounts:\n            - name: ledger\n              mountPath: /var/lib/governor\n",
                "          volumeMounts:\n            - name: ledger\n              mountPath: /var/lib/governor\n            - name: archive\n              mountPath: /var/lib/governor-archive\n",
            ),
            (
                "  volumeClaimTemplates:\n",
                "  volumeClaimTemplates:\n    - metadata:\n        name: archive\n      spec:\n        accessModes: [ReadWriteOnce]\n        resources:\n          requests: { storage: \"100Gi\" }\n",
            ),
            // A key the Secret template neither defines nor documents.
            ("key: aws-region,", "key: aws-default-region,"),
        ],
    );
    let output = check_deploy(&[gcs, s3]);
    assert_eq!(output.status.code(), Some(1));
    let report = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "--archive 'gs://other-ledgers/archive_gcs' is not deploy.archive 'gs://governor-ledgers/archive_gcs'",
        "NetworkPolicy egress does not admit HTTPS (443), which the archive bucket needs",
        "a bucket archive needs no volume, but the pod has ['archive']",
        "AWS_REGION reads optional key `aws-default-region`, which deploy/secret.yaml.example neither defines nor documents",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
}

#[test]
fn generated_monitoring_passes_promtool_and_matches_a_scrape() {
    let crates = generated();
    let bin = build_governors(&crates);
    let mut args: Vec<&Path> = crates.iter().map(PathBuf::as_path).collect();
    args.extend([Path::new("--bin"), bin.as_path()]);
    let output = check_monitoring(&args);
    assert!(
        output.status.success(),
        "the monitoring assets fail their checks"
    );
}

#[test]
fn check_monitoring_catches_broken_rules_tests_queries_and_metrics() {
    let crates = generated();
    let source = crates
        .iter()
        .find(|c| c.ends_with("queue_valve"))
        .expect("generated/queue_valve");
    let bin = build_governors(std::slice::from_ref(source));
    let tmp = tempfile::tempdir().expect("a temp dir");
    let copy = tmp.path().join("queue_valve");
    fs_err::create_dir_all(copy.join("monitoring")).expect("mkdir");
    for file in ["ggen-manifest.json", "Cargo.toml"] {
        fs_err::copy(source.join(file), copy.join(file)).expect("copy");
    }
    let read =
        |name: &str| fs_err::read_to_string(source.join("monitoring").join(name)).expect("read");
    let write = |name: &str, text: String| {
        fs_err::write(copy.join("monitoring").join(name), text).expect("write")
    };
    // A threshold moved: the unit test expecting the alert at 20m fails.
    write(
        "rules.yaml",
        read("rules.yaml").replacen("for: 10m", "for: 30m", 1),
    );
    // An alert no test makes fire.
    let tests = read("rules.test.yaml");
    let cut = tests
        .find("  # Tenants refused for an hour.")
        .expect("the refusing test");
    let end = tests[cut..]
        .find("  # Half the actions")
        .expect("the next test")
        + cut;
    write(
        "rules.test.yaml",
        format!("{}{}", &tests[..cut], &tests[end..]),
    );
    // The resource no longer matches the plain rules.
    write(
        "prometheus-rule.yaml",
        read("prometheus-rule.yaml").replacen("severity: warning", "severity: info", 1),
    );
    // A query that does not parse, and a metric no governor exports.
    let dashboard = read("dashboard.json")
        .replacen("sum(governor_ready{", "sum(governor_ready{{", 1)
        .replacen(
            "governor_requests_shed_total",
            "governor_requests_dropped_total",
            1,
        );
    write("dashboard.json", dashboard);

    let output = check_monitoring(&[&copy, Path::new("--bin"), &bin]);
    assert_eq!(output.status.code(), Some(1));
    let report = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "promtool test rules:",
        "no test expects alert GovernorTenantsRefusing to fire",
        "prometheus-rule.yaml: its spec differs from rules.yaml",
        "a query does not parse",
        "uses governor_requests_dropped_total, which the governor does not export",
    ] {
        assert!(
            report.contains(expected),
            "missing `{expected}` in:\n{report}"
        );
    }
}

//! Validation end to end: every spec in `specs/` passes, and every invalid
//! fixture in `tests/fixtures/invalid/` yields exactly its snapshotted
//! diagnostics (one fixture per rule, plus one with many errors at once).

use std::path::Path;

use ggen::diagnostic::Diagnostic;
use ggen::load;
use ggen::validate::{self, ValidateError, Violation};

/// All diagnostics for one file, one per line, as `ggen validate` prints them.
fn diagnostics(path: &Path) -> String {
    let lines: Vec<String> = match validate::check_file(path) {
        Ok(_) => vec!["ok".to_owned()],
        Err(ValidateError::Invalid(all)) => all.iter().map(ToString::to_string).collect(),
        Err(internal) => panic!("internal fault: {internal:?}"),
    };
    lines.join("\n")
}

#[test]
fn every_spec_in_the_repository_is_valid() {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut seen = 0;
    for entry in fs_err::read_dir(&specs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json")
            && !ggen::lab::scenario::is_scenario_file(&path)
        {
            seen += 1;
            let source = load::read(&path).unwrap();
            if let Err(error) = validate::check(&source) {
                let all = rejected(Err(error));
                let text: Vec<_> = all.iter().map(ToString::to_string).collect();
                panic!("{} is invalid:\n{}", path.display(), text.join("\n"));
            }
        }
    }
    assert!(seen >= 1, "no spec found in {}", specs.display());
}

#[test]
fn invalid_fixture() {
    insta::glob!("../fixtures/invalid", "*.json", |path| {
        // A relative path keeps machine-specific folders out of the snapshots.
        let name = path.file_name().unwrap();
        let relative = Path::new("tests/fixtures/invalid").join(name);
        let text = diagnostics(&relative);
        assert_ne!(text, "ok", "{} validated", relative.display());
        insta::assert_snapshot!(text);
    });
}

/// The violations of a rejected spec (an internal fault fails the test).
fn rejected(result: Result<validate::Checked, ValidateError>) -> Vec<Diagnostic> {
    match result {
        Err(ValidateError::Invalid(all)) => all,
        other => panic!("expected violations, got {other:?}"),
    }
}

#[test]
fn diagnostics_are_sorted_by_position() {
    let source = load::read(Path::new("tests/fixtures/invalid/many_errors.json")).unwrap();
    let all = rejected(validate::check(&source));
    assert!(all.len() >= 10, "{all:#?}");
    let keys: Vec<_> = all.iter().map(|d| (d.line, d.column)).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[test]
fn every_diagnostic_points_at_its_value() {
    // For pointers that exist, the reported position is where the value starts.
    let source = load::read(Path::new("tests/fixtures/invalid/many_errors.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&source.text).unwrap();
    for diagnostic in rejected(validate::check(&source)) {
        if value.pointer(&diagnostic.pointer).is_some() {
            assert_eq!(
                load::position(&source, &diagnostic.pointer),
                (diagnostic.line, diagnostic.column),
                "{diagnostic}"
            );
            let line = source.text.lines().nth(diagnostic.line - 1).unwrap();
            let rest: String = line.chars().skip(diagnostic.column - 1).collect();
            let first = rest.chars().next().unwrap();
            assert!(
                first == '"'
                    || first == '{'
                    || first == '['
                    || first == '-'
                    || first.is_ascii_alphanumeric(),
                "{diagnostic}: `{rest}`"
            );
        }
    }
}

#[test]
fn semantic_diagnostics_keep_their_typed_violation() {
    let source = load::read(Path::new("tests/fixtures/invalid/unknown_signal.json")).unwrap();
    let all = rejected(validate::check(&source));
    let violation = all
        .iter()
        .find_map(|d| d.cause_as::<Violation>())
        .unwrap_or_else(|| panic!("no typed violation in {all:#?}"));
    assert!(
        matches!(violation, Violation::Unknown { kind: "signal", .. }),
        "{violation:?}"
    );
}

#[test]
fn an_unreadable_spec_keeps_its_io_error() {
    let error = validate::check_file(Path::new("tests/fixtures/invalid/absent.json"));
    let all = match error {
        Err(ValidateError::Invalid(all)) => all,
        other => panic!("expected a diagnostic, got {other:?}"),
    };
    let load_error = all[0]
        .cause_as::<load::LoadError>()
        .unwrap_or_else(|| panic!("untyped: {all:#?}"));
    let load::LoadError::Read { error, .. } = load_error else {
        panic!("not a read error: {load_error:?}");
    };
    assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    // Named once, without an invented position.
    assert_eq!(
        all[0].to_string(),
        "tests/fixtures/invalid/absent.json: cannot read: No such file or directory"
    );
}

#[test]
fn the_schema_is_json_with_an_id() {
    let schema: serde_json::Value = serde_json::from_str(validate::SKU_SCHEMA).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(schema["$id"].is_string());
}

#[test]
fn rust_keywords_are_valid_names() {
    // Keywords are escaped when generating code, so specs may use them.
    let text = include_str!("../../../specs/cost_guard.json")
        .replace("spend_rate", "type")
        .replace("spend_spike", "self")
        .replace("pause_jobs", "match")
        .replace("\"enterprise\"", "\"crate\"");
    let source = load::Source::from_text("keywords.json", text);
    let spec = validate::check(&source).unwrap_or_else(|all| panic!("{all:#?}"));
    assert_eq!(spec.signals[0].name, "type");
    assert!(spec.policy.profiles.contains_key("crate"));
}

#[test]
fn a_clean_spec_deserializes_with_defaults() {
    let source = load::read(Path::new("../specs/cost_guard.json")).unwrap();
    let spec = validate::check(&source).unwrap();
    assert_eq!(spec.sku.id, "cost_guard");
    assert_eq!(spec.signals.len(), 2);
    assert_eq!(
        spec.policy.profiles["enterprise"].extends.as_deref(),
        Some("standard")
    );
    assert_eq!(source.path, "../specs/cost_guard.json");
    assert_eq!(source.sha256.len(), 64);
}

#[test]
fn max_tenants_past_u32_is_rejected_where_it_stands() {
    let text = include_str!("../../../specs/cost_guard.json");
    let line = text
        .lines()
        .position(|l| l.contains("\"max_tenants\""))
        .expect("cost_guard sets max_tenants")
        + 1;
    let text = text.replace("\"max_tenants\": 100000", "\"max_tenants\": 5000000000");
    let all = rejected(validate::check(&load::Source::from_text("big.json", text)));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0].line, line, "{}", all[0]);
    assert!(all[0].message.contains("5000000000"), "{}", all[0]);
}

/// The published schema on its own, as an editor uses it: every fixture that
/// differs from a valid spec only by its `spec_version` is flagged.
#[test]
fn the_published_schema_pins_spec_version_1() {
    let schema: serde_json::Value = serde_json::from_str(validate::SKU_SCHEMA).unwrap();
    let validator = jsonschema::draft202012::new(&schema).unwrap();
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let spec: serde_json::Value =
        serde_json::from_str(&fs_err::read_to_string(specs.join("cost_guard.json")).unwrap())
            .unwrap();
    assert!(validator.is_valid(&spec), "a repository spec must be valid");
    for version in [
        serde_json::json!(2),
        serde_json::json!(0),
        serde_json::json!("1"),
        serde_json::json!(1.5),
    ] {
        let mut spec = spec.clone();
        spec["spec_version"] = version.clone();
        assert!(
            !validator.is_valid(&spec),
            "spec_version `{version}` passed the published schema"
        );
    }
}

/// Two specs with one `sku.id` (they would generate one crate folder) fail
/// `validate` and `test`, located at the second one's `/sku/id`; a spec
/// named twice, by another path, is one spec.
#[test]
fn duplicate_sku_ids_are_located_and_a_file_named_twice_is_one_spec() {
    use crate::support::{ggen, project};
    let p = project();
    let dir = p.path();
    ggen(
        dir,
        &[
            "validate",
            "specs/cost_guard.json",
            "./specs/cost_guard.json",
        ],
        0,
    );
    fs_err::copy(
        dir.join("specs/cost_guard.json"),
        dir.join("specs/copy.json"),
    )
    .expect("copy");
    for args in [&["validate"][..], &["test"]] {
        let (_, stderr) = ggen(dir, args, 1);
        let line = stderr
            .lines()
            .find(|l| l.contains("sku id `cost_guard` is also the id of"))
            .unwrap_or_else(|| panic!("{args:?}: {stderr}"));
        assert!(line.starts_with("specs/cost_guard.json:"), "{line}");
        assert!(line.contains(": /sku/id: "), "{line}");
        assert!(line.contains("`specs/copy.json`"), "{line}");
    }
}

/// The repository's cost_guard spec as a value, to be made invalid.
fn cost_guard() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs/cost_guard.json");
    serde_json::from_str(&fs_err::read_to_string(path).unwrap()).unwrap()
}

/// The violations of `spec`, checked as `name`.
fn violations_of(name: &str, spec: &serde_json::Value) -> Vec<Diagnostic> {
    let source = load::Source::from_text(name, serde_json::to_string_pretty(spec).unwrap());
    rejected(validate::check(&source))
}

/// A `signals` list of unitless signals with these names.
fn signals_named(names: impl Iterator<Item = String>) -> serde_json::Value {
    names
        .map(|name| serde_json::json!({ "name": name, "unit": "" }))
        .collect()
}

/// The first of `all` whose violation `is` the one looked for.
fn found(all: &[Diagnostic], is: impl Fn(&Violation) -> bool) -> &Diagnostic {
    all.iter()
        .find(|d| d.cause_as::<Violation>().is_some_and(&is))
        .unwrap_or_else(|| panic!("{all:#?}"))
}

#[test]
fn specs_too_large_to_generate_are_refused_cheaply() {
    // Every profile has a threshold table (and a test) for every signal:
    // 300 × 300 would be 90,000 of them.
    let mut spec = cost_guard();
    spec["signals"] = signals_named((0..300).map(|i| format!("s{i:04}")));
    let profiles: serde_json::Map<_, _> = (0..300)
        .map(|i| (format!("p{i:04}"), serde_json::json!({})))
        .collect();
    spec["policy"]["profiles"] = serde_json::Value::Object(profiles);
    spec["policy"]["default_profile"] = serde_json::json!("p0000");
    let all = violations_of("big.json", &spec);
    let pairs = found(&all, |v| matches!(v, Violation::TooManyPairs { .. }));
    assert_eq!(pairs.pointer, "/policy/profiles");
    assert!(
        pairs.to_string().ends_with(
            "`300` profiles × `300` signals make `90000` threshold tables (at most `65536`): the generated crate holds one per pair"
        ),
        "{pairs}"
    );

    // 20,000 signals: collisions are found by lookup (comparing every pair
    // took minutes), and the earliest name is the one reported.
    let mut spec = cost_guard();
    let names = (0..20_000).map(|i| format!("s{i:05}"));
    spec["signals"] = signals_named(names.chain(["S00007".to_owned()]));
    let all = violations_of("many.json", &spec);
    let collision = found(&all, |v| matches!(v, Violation::IdentCollision { .. }));
    assert_eq!(collision.pointer, "/signals/20000/name");
    assert!(
        collision
            .to_string()
            .contains("names `s00007` and `S00007` both become"),
        "{collision}"
    );

    // A reference to a megabyte-long unknown name: no quadratic "did you
    // mean", and the name is quoted cut.
    let mut spec = cost_guard();
    let long = "b".repeat(1_000_000);
    spec["signals"][0]["name"] = serde_json::json!("a".repeat(1_000_000));
    spec["policy"]["profiles"]["standard"]["rules"][0]["signal"] = serde_json::json!(long);
    let all = violations_of("long.json", &spec);
    let unknown = all
        .iter()
        .find(|d| d.pointer == "/policy/profiles/standard/rules/0/signal")
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert!(
        matches!(
            unknown.cause_as::<Violation>(),
            Some(Violation::Unknown { kind: "signal", .. })
        ),
        "{unknown}"
    );
    assert!(
        unknown.to_string().len() < 300,
        "{}",
        unknown.to_string().len()
    );
}

#[test]
fn a_version_must_fit_a_kubernetes_label() {
    let mut spec = cost_guard();
    spec["sku"]["version"] = serde_json::json!(format!("1.0.0-{}", "a".repeat(58)));
    let all = violations_of("v.json", &spec);
    let [found] = all.as_slice() else {
        panic!("{all:#?}")
    };
    assert_eq!(found.pointer, "/sku/version");
    assert!(
        matches!(
            found.cause_as::<Violation>(),
            Some(Violation::VersionTooLong { len: 64 })
        ),
        "{found}"
    );
    spec["sku"]["version"] = serde_json::json!(format!("1.0.0-{}", "a".repeat(57)));
    let source = load::Source::from_text("v.json", serde_json::to_string(&spec).unwrap());
    assert!(validate::check(&source).is_ok());
}

#[test]
fn a_long_bad_key_is_located_by_its_whole_name() {
    let mut spec = cost_guard();
    let key = format!("Bad{}", "x".repeat(70));
    let profile = spec["policy"]["profiles"]["standard"].clone();
    spec["policy"]["profiles"][&key] = profile;
    let all = violations_of("k.json", &spec);
    let found = all
        .iter()
        .find(|d| d.pointer.starts_with("/policy/profiles/Bad"))
        .unwrap_or_else(|| panic!("{all:#?}"));
    assert_eq!(found.pointer, format!("/policy/profiles/{key}"));
    let source = load::Source::from_text("k.json", serde_json::to_string_pretty(&spec).unwrap());
    assert_eq!(
        load::position(&source, &found.pointer),
        (found.line, found.column)
    );
    assert_ne!(
        load::position(&source, "/policy/profiles"),
        (found.line, found.column),
        "located at the parent"
    );
}

//! `ggen init ID`: a project that builds, or a spec added to one.
//!
//! In a folder without `ggen.toml`, [`init`] makes a project: `ggen.toml`,
//! a starter spec `specs/<id>.json` that validates as written, the schema
//! files its `$schema` (and ggen.toml's `#:schema`) point at, a cargo
//! workspace `Cargo.toml` when the folder has none, and a `.gitignore` when
//! it has none. In a folder that has a `ggen.toml` it adds the spec (and any
//! missing schema file) only. It never edits a file it did not write: an
//! existing `Cargo.toml` or `.gitignore` gets instructions instead, and
//! other existing files are refused unless `force`. "Existing" does not
//! follow links: a dangling link is an existing file, and a link is never
//! written through, even with `force`.
//!
//! JSON has no comments, so the starter explains itself through its
//! `description` fields; `docs/spec.md` documents every key.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::config::{self, CONFIG_SCHEMA};
use crate::escape;
use crate::lab::scenario::SCENARIOS_SCHEMA;
use crate::load::display_path;
use crate::validate::SKU_SCHEMA;

/// Why `init` wrote nothing.
#[derive(Debug, Error)]
pub enum InitError {
    /// The id does not match `^[a-z][a-z0-9_]{1,39}$`.
    #[error(
        "`{0}` is not a valid sku id: use 2 to 40 lowercase letters, digits or `_`, starting with a letter"
    )]
    BadId(String),
    /// Files `init` would write exist already (paths as displayed).
    #[error("{} {}; not overwriting without `--force`", .0.join(", "), if .0.len() == 1 { "already exists" } else { "already exist" })]
    Exists(Vec<String>),
    /// Paths `init` would write are symbolic links (as displayed): refused
    /// even with `--force`, since writing would follow the link.
    #[error("{} {} a symbolic link; init does not write through links (remove {}, or write the file by hand)", .0.join(", "), if .0.len() == 1 { "is" } else { "are" }, if .0.len() == 1 { "it" } else { "them" })]
    Link(Vec<String>),
    /// `--runtime-path` for a project whose ggen.toml exists already.
    #[error(
        "`{0}` exists already: set `runtime = {{ path = \"…\" }}` in it instead of passing `--runtime-path`"
    )]
    RuntimeForExisting(String),
    /// A file could not be written (fs-err names it).
    #[error("cannot write the project")]
    Io(#[source] std::io::Error),
}

impl InitError {
    /// The process exit code: 1 for refused input, 2 for I/O failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::BadId(_)
            | InitError::Exists(_)
            | InitError::Link(_)
            | InitError::RuntimeForExisting(_) => 1,
            InitError::Io(_) => 2,
        }
    }
}

/// Options of `ggen init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The project folder (empty: the current folder); created if missing.
    pub root: PathBuf,
    /// The SKU id of the starter spec.
    pub id: String,
    /// `runtime = { path = … }` for a new project's ggen.toml, written as
    /// given (so, like every path in ggen.toml, relative to `root`); without
    /// it a new project takes `ggen-runtime` by version from crates.io.
    pub runtime_path: Option<PathBuf>,
    /// Overwrite files `init` writes (never `Cargo.toml`, `.gitignore` or a link).
    pub force: bool,
}

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initialized {
    /// Whether a new project was made (false: a spec added to an existing one).
    pub new_project: bool,
    /// Files written, in the order written, as displayed.
    pub written: Vec<String>,
    /// What to do next, one command or instruction per line.
    pub next_steps: Vec<String>,
}

/// The `Cargo.toml` a new project gets when its folder has none: a
/// workspace of the generated crates. It provides no package settings, so
/// the crates carry their own, and no `ggen-runtime`: ggen.toml's `runtime`
/// is written into each crate.
const WORKSPACE: &str = "# Cargo workspace of the crates ggen generates (see ggen.toml).
[workspace]
resolver = \"3\"
members = [\"generated/*\"]
";

/// The config file a new project gets; `{runtime}` is filled in.
const CONFIG: &str = "#:schema ./specs/schema/ggen.schema.json
# ggen project config: which specs to read, where generated crates go and
# where they get ggen-runtime. Paths are relative to this file's folder.
# Reference: `ggen schema config`.
version = 1
specs = [\"specs/*.json\"]
out_dir = \"generated\"
runtime = {runtime}
";

/// Whether anything is at `path`, links not followed: a dangling link is
/// something (writing there would create its target), and so is a path
/// that cannot be looked at (it is never written over).
fn present(path: &Path) -> bool {
    match fs_err::symlink_metadata(path) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// Whether `path` is a symbolic link.
fn is_link(path: &Path) -> bool {
    fs_err::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Whether a `.gitignore`'s bytes ignore cargo's `target` folder (read as
/// bytes: a `.gitignore` need not be UTF-8).
fn ignores_target(bytes: &[u8]) -> bool {
    bytes.split(|&b| b == b'\n').any(|line| {
        matches!(
            line.trim_ascii(),
            b"/target" | b"target" | b"target/" | b"/target/"
        )
    })
}

/// Makes a project in `options.root`, or adds a spec to the one there.
pub fn init(options: &InitOptions) -> Result<Initialized, InitError> {
    let spec_text = starter_spec(&options.id)?;
    let root = &options.root;
    let config_path = root.join(config::FILE_NAME);
    let new_project = !present(&config_path);
    if !new_project && options.runtime_path.is_some() {
        return Err(InitError::RuntimeForExisting(display_path(&config_path)));
    }
    let spec_rel = format!("specs/{}.json", options.id);
    // (path relative to root, text, whether an existing file is refused)
    let mut files: Vec<(String, String, bool)> = Vec::new();
    if new_project {
        let runtime = match &options.runtime_path {
            Some(path) => format!(
                "{{ path = {} }}",
                escape::quoted(&path.to_string_lossy().replace('\\', "/"))
            ),
            None => format!(
                "{{ version = {} }}",
                escape::quoted(ggen_runtime_core::VERSION)
            ),
        };
        files.push((
            config::FILE_NAME.to_owned(),
            CONFIG.replace("{runtime}", &runtime),
            true,
        ));
    }
    files.push((spec_rel.clone(), spec_text, true));
    files.push((
        format!("specs/{}.test.json", options.id),
        STARTER_SCENARIOS.to_owned(),
        true,
    ));
    // In an existing project, schema files already there are left alone.
    for (rel, text) in [
        ("specs/schema/sku.schema.json", SKU_SCHEMA),
        ("specs/schema/ggen.schema.json", CONFIG_SCHEMA),
        ("specs/schema/scenarios.schema.json", SCENARIOS_SCHEMA),
    ] {
        files.push((rel.to_owned(), text.to_owned(), new_project));
    }

    let exists = |rel: &str| present(&root.join(rel));
    let shown = |rel: &str| format!("`{}`", display_path(&root.join(rel)));
    let refused: Vec<String> = files
        .iter()
        .filter(|(rel, _, refuse)| *refuse && exists(rel))
        .map(|(rel, _, _)| shown(rel))
        .collect();
    if !refused.is_empty() && !options.force {
        return Err(InitError::Exists(refused));
    }
    let links: Vec<String> = files
        .iter()
        .filter(|(rel, _, refuse)| *refuse && is_link(&root.join(rel)))
        .map(|(rel, _, _)| shown(rel))
        .collect();
    if !links.is_empty() {
        return Err(InitError::Link(links));
    }
    files.retain(|(rel, _, refuse)| *refuse || !exists(rel));

    let mut next_steps = Vec::new();
    let cargo_toml = root.join("Cargo.toml");
    let gitignore = root.join(".gitignore");
    if new_project {
        if present(&cargo_toml) {
            next_steps.push(format!(
                "make the generated crates members of your cargo workspace: add `\"generated/*\"` to `members` under `[workspace]` in `{}` (a package manifest needs a `[workspace]` table with `members = [\".\", \"generated/*\"]`)",
                display_path(&cargo_toml)
            ));
        } else {
            files.push(("Cargo.toml".to_owned(), WORKSPACE.to_owned(), false));
        }
        if !present(&gitignore) {
            files.push((".gitignore".to_owned(), "/target\n".to_owned(), false));
        } else {
            // Never rewritten: checked as bytes, or left alone if unreadable.
            match fs_err::read(&gitignore) {
                Ok(bytes) if ignores_target(&bytes) => {}
                Ok(_) => {
                    next_steps.push(format!("add `/target` to `{}`", display_path(&gitignore)));
                }
                Err(e) => next_steps.push(format!(
                    "`{}` could not be read ({}): left alone; make sure it ignores `/target`",
                    display_path(&gitignore),
                    e.kind()
                )),
            }
        }
    } else if let Ok(config) = config::load(&config_path) {
        // Matched against the globs, not the disk: the spec is not written yet.
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        let listed = config.specs.iter().any(|pattern| {
            glob::Pattern::new(pattern.trim_start_matches("./"))
                .is_ok_and(|p| p.matches_with(&spec_rel, options))
        });
        if !listed {
            next_steps.push(format!(
                "add `{spec_rel}` to `specs` in `{}`",
                display_path(&config_path)
            ));
        }
    }

    let mut written = Vec::new();
    for (rel, text, _) in &files {
        let path = root.join(rel);
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir).map_err(InitError::Io)?;
        }
        if present(&path) {
            // Only a regular file refused above and forced: replaced in place.
            fs_err::write(&path, text).map_err(InitError::Io)?;
        } else {
            // `create_new` fails on anything that appeared since, a dangling link included.
            let mut file = fs_err::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(InitError::Io)?;
            std::io::Write::write_all(&mut file, text.as_bytes()).map_err(InitError::Io)?;
        }
        written.push(display_path(&path));
    }

    let spec_shown = display_path(&root.join(&spec_rel));
    next_steps.push(format!(
        "describe your governor in `{spec_shown}` (`docs/spec.md` of ggen, or `ggen schema spec`)"
    ));
    if new_project && options.runtime_path.is_none() {
        next_steps.push(format!(
            "ggen.toml takes ggen-runtime `{}` from crates.io; to use a local checkout, set `runtime = {{ path = \"…/runtime\" }}` in it (or run `ggen init --runtime-path …`)",
            ggen_runtime_core::VERSION
        ));
    }
    if !root.as_os_str().is_empty() {
        next_steps.push(format!("cd {}", display_path(root)));
    }
    next_steps.extend(
        [
            "ggen validate",
            "ggen test",
            "ggen build",
            "cargo build",
            "cargo test",
        ]
        .map(str::to_owned),
    );
    Ok(Initialized {
        new_project,
        written,
        next_steps,
    })
}

/// The starter text; `{id}` and `{name}` are filled in.
const STARTER: &str = r#"{
  "$schema": "./schema/sku.schema.json",
  "spec_version": 1,
  "sku": {
    "id": "{id}",
    "name": "{name}",
    "version": "0.1.0",
    "publisher": "Your team",
    "description": "What this governor protects. Replace the example signal, action and thresholds below with your own; docs/spec.md describes every key."
  },
  "tenancy": { "tenant_attribute": "tenant_id", "max_tenants": 10000 },
  "signals": [
    {
      "name": "error_rate",
      "unit": "percent",
      "min": 0,
      "max": 100,
      "description": "Example signal: share of failed requests over the last minute (higher is worse)."
    }
  ],
  "actions": [
    {
      "name": "notify",
      "adapter": "log",
      "params": { "message": "error rate is past its intervene threshold" }
    }
  ],
  "policy": {
    "default_profile": "standard",
    "profiles": {
      "standard": {
        "rules": [
          { "signal": "error_rate", "warn": 2, "intervene": 5, "refuse": 20, "clear": 1, "dwell": 2, "actions": ["notify"] }
        ],
        "cooldown_s": 300,
        "max_actions_per_hour": 6
      }
    }
  },
  "governor": { "intervention_timeout_s": 120, "recovery_evaluations": 3, "degraded_retry_s": 600 },
  "entitlement": { "required": false },
  "deploy": { "port": 8080, "replicas": 1 }
}
"#;

/// The starter spec's scenarios (`ggen test`): they pass as written and
/// show each kind of input and expectation.
const STARTER_SCENARIOS: &str = r#"{
  "$schema": "./schema/scenarios.schema.json",
  "scenarios": [
    {
      "name": "error_rate below warn stays stable",
      "inputs": [
        { "signal": "error_rate", "value": 1.9, "at": "+1m", "expect": { "state": "stable", "level": "normal" } },
        { "signal": "error_rate", "value": 1.9, "at": "+1m", "expect": { "state": "stable", "dispatched": [] } }
      ]
    },
    {
      "name": "two readings at intervene notify, and three clear readings recover",
      "inputs": [
        { "signal": "error_rate", "value": 5, "at": "+1m", "note": "dwell 2: one reading is not enough", "expect": { "state": "stable", "dispatched": [] } },
        { "signal": "error_rate", "value": 5, "at": "+1m", "expect": { "dispatched": ["notify"], "reason": "dispatched" } },
        { "signal": "error_rate", "value": 0.5, "at": "+1m" },
        { "signal": "error_rate", "value": 0.5, "at": "+1m" },
        { "signal": "error_rate", "value": 0.5, "at": "+1m", "note": "recovery_evaluations 3", "expect": { "state": "stable", "level": "normal" } }
      ]
    },
    {
      "name": "a notify that fails degrades, and is retried after degraded_retry_s",
      "actions": "manual",
      "inputs": [
        { "signal": "error_rate", "value": 5, "at": "+1m" },
        { "signal": "error_rate", "value": 5, "at": "+1m", "expect": { "state": "intervening", "in_flight": ["notify"] } },
        { "result": "notify", "ok": false, "at": "+5s", "expect": { "state": "degraded", "reason": "action_failed" } },
        { "at": "+10m", "expect": { "state": "intervening", "dispatched": ["notify"], "receipts": { "timeout": 1 } } }
      ]
    },
    {
      "name": "the refuse level refuses the tenant",
      "inputs": [
        { "signal": "error_rate", "value": 20, "at": "+1m" },
        { "signal": "error_rate", "value": 20, "at": "+1m", "expect": { "state": "refusing", "level": "refuse" } }
      ]
    }
  ]
}
"#;

/// A starter spec for `id` that passes `validate::check`; rejects a bad id.
pub fn starter_spec(id: &str) -> Result<String, InitError> {
    if !valid_id(id) {
        return Err(InitError::BadId(id.to_owned()));
    }
    Ok(STARTER
        .replace("{id}", id)
        .replace("{name}", &display_name(id)))
}

/// Whether `id` matches `^[a-z][a-z0-9_]{1,39}$`.
fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && (2..=40).contains(&id.len())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `cost_guard` → `Cost Guard`.
fn display_name(id: &str) -> String {
    id.split('_')
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::load::Source;
    use crate::validate;

    fn options(root: &Path, runtime: Option<&str>) -> InitOptions {
        InitOptions {
            root: root.to_owned(),
            id: "my_guard".to_owned(),
            runtime_path: runtime.map(PathBuf::from),
            force: false,
        }
    }

    #[test]
    fn an_empty_folder_becomes_a_project() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let done = init(&options(root, Some("../ggen/runtime"))).unwrap();
        assert!(done.new_project);
        let names: Vec<String> = done
            .written
            .iter()
            .map(|p| p.strip_prefix(&display_path(root)).unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "/ggen.toml",
                "/specs/my_guard.json",
                "/specs/my_guard.test.json",
                "/specs/schema/sku.schema.json",
                "/specs/schema/ggen.schema.json",
                "/specs/schema/scenarios.schema.json",
                "/Cargo.toml",
                "/.gitignore"
            ]
        );
        let config = config::load(&root.join("ggen.toml")).unwrap();
        assert_eq!(
            config.runtime,
            Some(config::Runtime::Path(PathBuf::from("../ggen/runtime")))
        );
        validate::check_file(&root.join("specs/my_guard.json")).unwrap();
        // The starter scenarios pass on the starter spec.
        let tested = crate::pipeline::test(&[root.join("specs/my_guard.json")], true).unwrap();
        assert_eq!(tested.counts(), (4, 0), "{tested:?}");
        assert_eq!(
            fs_err::read_to_string(root.join(".gitignore")).unwrap(),
            "/target\n"
        );
        assert!(done.next_steps.ends_with(&[
            "ggen validate".to_owned(),
            "ggen test".to_owned(),
            "ggen build".to_owned(),
            "cargo build".to_owned(),
            "cargo test".to_owned()
        ]));

        // A second run refuses, naming every file, unless forced.
        let error = init(&options(root, None)).unwrap_err();
        assert_eq!(error.exit_code(), 1);
        let InitError::Exists(files) = &error else {
            panic!("{error:?}")
        };
        assert_eq!(
            files.len(),
            2,
            "ggen.toml exists: only the spec and its scenarios are refused"
        );
        let forced = InitOptions {
            force: true,
            ..options(root, None)
        };
        let again = init(&forced).unwrap();
        assert!(!again.new_project);
        assert_eq!(again.written.len(), 2, "{again:?}");
    }

    #[test]
    fn existing_user_files_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::write(root.join("Cargo.toml"), "[workspace]\nmembers = []\n").unwrap();
        fs_err::write(root.join(".gitignore"), "*.log\n").unwrap();
        fs_err::create_dir_all(root.join("specs/schema")).unwrap();
        fs_err::write(root.join("specs/schema/sku.schema.json"), "{}").unwrap();
        let error = init(&options(root, None)).unwrap_err().to_string();
        assert!(
            error.ends_with("sku.schema.json` already exists; not overwriting without `--force`"),
            "{error}"
        );
        let done = init(&InitOptions {
            force: true,
            ..options(root, None)
        })
        .unwrap();
        assert_eq!(done.written.len(), 6, "{done:?}");
        assert_eq!(
            fs_err::read_to_string(root.join("Cargo.toml")).unwrap(),
            "[workspace]\nmembers = []\n"
        );
        assert_eq!(
            fs_err::read_to_string(root.join(".gitignore")).unwrap(),
            "*.log\n"
        );
        assert!(
            done.next_steps[0].contains("add `\"generated/*\"` to `members`"),
            "{done:?}"
        );
        assert!(done.next_steps[1].contains("add `/target` to"), "{done:?}");
    }

    #[cfg(unix)]
    #[test]
    fn dangling_links_are_existing_files_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("project");
        let outside = dir.path().join("outside");
        fs_err::create_dir_all(root.join("specs")).unwrap();
        fs_err::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(outside.join("Cargo.toml"), root.join("Cargo.toml")).unwrap();
        std::os::unix::fs::symlink(outside.join("spec.json"), root.join("specs/my_guard.json"))
            .unwrap();
        let error = init(&options(&root, None)).unwrap_err();
        assert!(
            matches!(&error, InitError::Exists(f) if f.len() == 1),
            "{error}"
        );
        // Forced: a link is still refused, and nothing is written.
        let forced = InitOptions {
            force: true,
            ..options(&root, None)
        };
        let error = init(&forced).unwrap_err();
        assert_eq!(error.exit_code(), 1);
        assert!(
            error.to_string().ends_with(
                "my_guard.json` is a symbolic link; init does not write through links (remove it, or write the file by hand)"
            ),
            "{error}"
        );
        assert!(!root.join("ggen.toml").exists());
        // Without the spec link, the project is made; the Cargo.toml link
        // counts as the user's Cargo.toml.
        fs_err::remove_file(root.join("specs/my_guard.json")).unwrap();
        let done = init(&options(&root, None)).unwrap();
        assert!(
            done.next_steps[0].contains("add `\"generated/*\"` to `members`"),
            "{done:?}"
        );
        assert_eq!(
            fs_err::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn a_gitignore_that_is_not_utf8_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let bytes = b"# caf\xe9\n*.log\n".to_vec();
        fs_err::write(root.join(".gitignore"), &bytes).unwrap();
        let done = init(&options(root, None)).unwrap();
        assert_eq!(fs_err::read(root.join(".gitignore")).unwrap(), bytes);
        assert!(
            done.next_steps
                .iter()
                .any(|s| s.starts_with("add `/target` to")),
            "{done:?}"
        );
        assert!(!done.written.iter().any(|w| w.ends_with(".gitignore")));
        // One that ignores target, in any encoding, needs nothing.
        assert!(ignores_target(b"\xff\xfe\n/target\r\n"));
    }

    #[test]
    fn an_existing_project_gets_a_spec_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs_err::write(
            root.join("ggen.toml"),
            "version = 1\nspecs = [\"governors/*.json\"]\nout_dir = \"g\"\n",
        )
        .unwrap();
        assert!(matches!(
            init(&options(root, Some("rt"))),
            Err(InitError::RuntimeForExisting(_))
        ));
        let done = init(&options(root, None)).unwrap();
        assert!(!done.new_project);
        assert_eq!(
            done.written.len(),
            5,
            "spec, scenarios and the three missing schemas: {done:?}"
        );
        assert!(!root.join("Cargo.toml").exists());
        assert!(
            done.next_steps[0].starts_with("add `specs/my_guard.json` to `specs`"),
            "{done:?}"
        );

        fs_err::write(
            root.join("ggen.toml"),
            "version = 1\nspecs = [\"specs/*.json\"]\nout_dir = \"g\"\n",
        )
        .unwrap();
        let other = init(&InitOptions {
            id: "other_guard".to_owned(),
            ..options(root, None)
        })
        .unwrap();
        assert_eq!(
            other.written.len(),
            2,
            "the spec and its scenarios: {other:?}"
        );
        assert!(other.next_steps[0].starts_with("describe"), "{other:?}");
    }

    #[test]
    fn starter_passes_validation() {
        let text = starter_spec("queue_valve").unwrap();
        let spec = validate::check(&Source::from_text("specs/queue_valve.json", text))
            .unwrap_or_else(|all| panic!("{all:#?}"));
        assert_eq!(spec.sku.id, "queue_valve");
        assert_eq!(spec.sku.name, "Queue Valve");
    }

    #[test]
    fn bad_ids_are_rejected() {
        for id in [
            "",
            "a",
            "Cost",
            "9lives",
            "cost-guard",
            &"x".repeat(41),
            "ünï",
        ] {
            assert!(starter_spec(id).is_err(), "`{id}` accepted");
        }
        assert!(starter_spec(&"x".repeat(40)).is_ok());
        assert!(starter_spec("a_").is_ok());
    }

    #[test]
    fn display_names_are_title_cased() {
        assert_eq!(display_name("cost_guard"), "Cost Guard");
        assert_eq!(display_name("a__b2"), "A B2");
    }
}

//! `ggen.toml`: which specs to read, where output goes, optional template
//! overrides. Versioned; unknown keys and wrong types are rejected with
//! their line and column, all of them in one run.
//!
//! serde reads the file (`deny_unknown_fields`, every value [`Spanned`]);
//! values are read leniently so a wrong type is reported rather than ending
//! the run, and the rules serde cannot express (version, non-empty strings,
//! glob syntax, required keys) are checked on the result.
//!
//! ```toml
//! version = 1
//! specs = ["specs/*.json"]
//! out_dir = "generated"
//! # templates = "my-templates"
//! # runtime = { path = "../ggen/runtime" }   # or { version = "0.1.0" }, or { git = "…", rev = "…" }
//! ```
//!
//! Without `runtime`, generated crates inherit `ggen-runtime` from the cargo
//! workspace (`ggen-runtime.workspace = true`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;
use toml::de::DeTable;

use crate::diagnostic::{self, Diagnostic};
use crate::lab;
use crate::load::{self, Source};

/// The JSON Schema of `ggen.toml`, as printed by `ggen schema config`.
pub const CONFIG_SCHEMA: &str = include_str!("../schema/ggen.schema.json");

/// The config `version` this ggen reads.
pub const CONFIG_VERSION: u32 = 1;

/// The project config's file name, found in a folder or its parents.
pub const FILE_NAME: &str = "ggen.toml";

/// The keys `ggen.toml` may hold.
const KEYS: [&str; 5] = ["version", "specs", "out_dir", "templates", "runtime"];

/// What `runtime` must be, as the error says it.
const RUNTIME_EXPECTED: &str = "a table with exactly one of `version`, `path` or `git` (`git` with `rev`), each a non-empty string";

/// A checked `ggen.toml`. Paths are relative to the folder holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Config format version; always [`CONFIG_VERSION`] once loaded.
    pub version: u32,
    /// Glob patterns of spec files, as written.
    pub specs: Vec<String>,
    /// Folder receiving one crate per spec.
    pub out_dir: PathBuf,
    /// Folder whose files shadow the embedded templates.
    pub templates: Option<PathBuf>,
    /// Where generated crates get `ggen-runtime` from; `None`: the cargo workspace.
    pub runtime: Option<Runtime>,
}

/// The `ggen-runtime` dependency of generated crates (`runtime` in ggen.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// A crates.io version requirement (`{ version = "0.1.0" }`).
    Version(String),
    /// A local checkout's runtime folder, relative to ggen.toml unless absolute.
    Path(PathBuf),
    /// A git repository at a fixed revision.
    Git {
        /// The repository URL.
        url: String,
        /// The commit (or tag) to build.
        rev: String,
    },
}

/// `runtime` as serde reads it; which combination is valid is checked after.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    version: Option<String>,
    path: Option<String>,
    git: Option<String>,
    rev: Option<String>,
}

/// What is wrong with a `ggen.toml` or its globs.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// TOML syntax error.
    #[error("{0}")]
    Syntax(String),
    /// A key this ggen does not know.
    #[error("unknown key `{key}`{hint}")]
    UnknownKey {
        /// The key.
        key: String,
        /// A "did you mean" suffix, or empty.
        hint: String,
    },
    /// A required key is absent.
    #[error("missing required key `{0}`")]
    MissingKey(&'static str),
    /// A value of the wrong type.
    #[error("`{key}` must be {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What it must be.
        expected: &'static str,
    },
    /// An `out_dir` that leaves the project folder.
    #[error(
        "`out_dir` `{0}` leaves the project folder: ggen writes (and deletes stale files) only inside it; give a relative path without `..`"
    )]
    OutDirOutside(String),
    /// A version this ggen does not read.
    #[error("unsupported config version `{0}`: this ggen reads version `{CONFIG_VERSION}`")]
    UnsupportedVersion(String),
    /// A glob that does not parse.
    #[error("invalid glob pattern `{pattern}`")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        #[source]
        source: glob::PatternError,
    },
    /// A pattern without wildcards that names no file.
    #[error("spec file not found (listed in `specs` as `{0}`)")]
    MissingSpec(String),
    /// A file system error while expanding a glob.
    #[error("cannot read a folder while expanding `{pattern}`")]
    Walk {
        /// The pattern.
        pattern: String,
        /// The I/O failure.
        #[source]
        source: glob::GlobError,
    },
}

/// Reads and checks a `ggen.toml`.
pub fn load(path: &Path) -> Result<Config, Vec<Diagnostic>> {
    let source = load::read(path).map_err(|d| vec![d])?;
    parse(&source)
}

/// `ggen.toml` as serde reads it: unknown keys are refused by serde, every
/// value keeps its span, and a value of the wrong type is kept as
/// [`Lenient::Wrong`] so one run reports every bad key.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: Option<Field<i64>>,
    specs: Option<Spanned<Lenient<Vec<Field<String>>>>>,
    out_dir: Option<Field<String>>,
    templates: Option<Field<String>>,
    runtime: Option<Field<RawRuntime>>,
}

/// One value of `ggen.toml`: where it is, and what it is.
type Field<T> = Spanned<Lenient<T>>;

/// A value as `T`, or the fact that it was something else.
#[derive(Debug)]
enum Lenient<T> {
    /// The value deserialized as `T`.
    Ok(T),
    /// The value has another type (reported as [`ConfigError::WrongType`]).
    Wrong,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // toml hands each value over already parsed, so a failure inside one
        // value leaves the rest of the table readable.
        Ok(T::deserialize(deserializer).map_or(Lenient::Wrong, Lenient::Ok))
    }
}

/// Collects the diagnostics of one `ggen.toml`.
struct Report<'a> {
    source: &'a Source,
    found: Vec<Diagnostic>,
}

impl Report<'_> {
    fn add(&mut self, span: Option<Range<usize>>, pointer: &str, error: ConfigError) {
        let (line, column) = load::line_column(&self.source.text, span.map_or(0, |s| s.start));
        self.found.push(Diagnostic::from_error(
            &self.source.path,
            line,
            column,
            pointer,
            error,
        ));
    }

    /// A string value that must be non-empty, or a wrong-type report.
    fn path(&mut self, key: &str, value: Field<String>) -> Option<PathBuf> {
        let span = value.span();
        match value.into_inner() {
            Lenient::Ok(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
            _ => {
                self.wrong_type(span, key, "a non-empty string (a path)");
                None
            }
        }
    }

    fn wrong_type(&mut self, span: Range<usize>, key: &str, expected: &'static str) {
        let error = ConfigError::WrongType {
            key: key.to_owned(),
            expected,
        };
        self.add(Some(span), &diagnostic::join_pointer("", key), error);
    }
}

/// Checks the text of a `ggen.toml`: the config, or every problem found.
pub fn parse(source: &Source) -> Result<Config, Vec<Diagnostic>> {
    let mut report = Report {
        source,
        found: Vec::new(),
    };
    let (table, errors) = DeTable::parse_recoverable(&source.text);
    for error in errors {
        let message = error.message().to_owned();
        report.add(error.span(), "", ConfigError::Syntax(message));
    }
    let raw = if report.found.is_empty() {
        deserialize(&mut report, &table)
    } else {
        None
    };
    let config = raw.and_then(|raw| check(&mut report, raw));
    match config {
        Some(config) if report.found.is_empty() => Ok(config),
        _ => {
            diagnostic::sort(&mut report.found);
            Err(report.found)
        }
    }
}

/// Deserializes the (syntactically valid) `parsed` text. serde stops at the
/// first unknown key; each is reported and left out of the next attempt, so
/// every unknown key is reported and the known ones are still checked.
fn deserialize(report: &mut Report<'_>, parsed: &Spanned<DeTable<'_>>) -> Option<RawConfig> {
    let mut unknown: Vec<String> = Vec::new();
    loop {
        let mut table = parsed.clone();
        let dropped: Vec<_> = (table.get_ref().keys())
            .filter(|key| unknown.iter().any(|u| u == key.get_ref()))
            .cloned()
            .collect();
        for key in dropped {
            table.get_mut().remove(&key);
        }
        let keys: Vec<(Range<usize>, String)> = table
            .get_ref()
            .keys()
            .map(|key| (key.span(), key.get_ref().to_string()))
            .collect();
        let error = match RawConfig::deserialize(toml::de::Deserializer::from(table)) {
            Ok(raw) => return Some(raw),
            Err(error) => error,
        };
        // Values are `Lenient`, so only a key can fail: find which.
        let Some((span, key)) = keys
            .into_iter()
            .find(|(span, _)| Some(span) == error.span().as_ref())
        else {
            report.add(
                error.span(),
                "",
                ConfigError::Syntax(error.message().to_owned()),
            );
            return None;
        };
        let hint = crate::validate::closest(&key, KEYS.into_iter())
            .map(|near| format!("; did you mean `{near}`?"))
            .unwrap_or_default();
        let pointer = diagnostic::join_pointer("", &key);
        let error = ConfigError::UnknownKey {
            key: key.clone(),
            hint,
        };
        report.add(Some(span), &pointer, error);
        unknown.push(key);
    }
}

/// The rules serde cannot express: the version, non-empty strings, glob
/// syntax and required keys.
fn check(report: &mut Report<'_>, raw: RawConfig) -> Option<Config> {
    let version = raw.version.map(|value| {
        let span = value.span();
        match value.into_inner() {
            Lenient::Ok(version) if version == i64::from(CONFIG_VERSION) => CONFIG_VERSION,
            Lenient::Ok(other) => {
                let error = ConfigError::UnsupportedVersion(other.to_string());
                report.add(Some(span), "/version", error);
                0
            }
            Lenient::Wrong => {
                report.wrong_type(span, "version", "the integer `1`");
                0
            }
        }
    });
    let specs = raw.specs.map(|value| {
        let span = value.span();
        let Lenient::Ok(items) = value.into_inner() else {
            report.wrong_type(span, "specs", "an array of glob patterns");
            return Vec::new();
        };
        let mut patterns = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let span = item.span();
            let pointer = format!("/specs/{i}");
            match item.into_inner() {
                Lenient::Ok(pattern) if !pattern.is_empty() => {
                    if let Err(source) = glob::Pattern::new(&pattern) {
                        let error = ConfigError::BadPattern {
                            pattern: pattern.clone(),
                            source,
                        };
                        report.add(Some(span), &pointer, error);
                    }
                    patterns.push(pattern);
                }
                _ => {
                    let error = ConfigError::WrongType {
                        key: format!("specs[{i}]"),
                        expected: "a non-empty string (a glob pattern)",
                    };
                    report.add(Some(span), &pointer, error);
                }
            }
        }
        patterns
    });
    // A known key with a bad value is reported once, never also as missing.
    let out_dir = raw.out_dir.map(|value| {
        let span = value.span();
        let dir = report.path("out_dir", value)?;
        // Generated folders are replaced and their stale files deleted:
        // never outside the project.
        let leaves = dir.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        });
        if leaves {
            let error = ConfigError::OutDirOutside(dir.display().to_string());
            report.add(Some(span), "/out_dir", error);
            return None;
        }
        Some(dir)
    });
    let templates = raw
        .templates
        .and_then(|value| report.path("templates", value));
    let runtime = raw.runtime.and_then(|value| {
        let span = value.span();
        let runtime = match value.into_inner() {
            Lenient::Ok(raw) => runtime(raw),
            Lenient::Wrong => None,
        };
        if runtime.is_none() {
            report.wrong_type(span, "runtime", RUNTIME_EXPECTED);
        }
        runtime
    });
    for (key, present) in [
        ("version", version.is_some()),
        ("specs", specs.is_some()),
        ("out_dir", out_dir.is_some()),
    ] {
        if !present {
            report.add(None, "", ConfigError::MissingKey(key));
        }
    }
    Some(Config {
        version: version?,
        specs: specs?,
        out_dir: out_dir.flatten()?,
        templates,
        runtime,
    })
}

/// The runtime a well-formed `runtime` table names, or `None`.
fn runtime(raw: RawRuntime) -> Option<Runtime> {
    let empty = [&raw.version, &raw.path, &raw.git, &raw.rev]
        .iter()
        .any(|s| s.as_deref() == Some(""));
    if empty {
        return None;
    }
    match (raw.version, raw.path, raw.git, raw.rev) {
        (Some(version), None, None, None) => Some(Runtime::Version(version)),
        (None, Some(path), None, None) => Some(Runtime::Path(PathBuf::from(path))),
        (None, None, Some(url), Some(rev)) => Some(Runtime::Git { url, rev }),
        _ => None,
    }
}

impl Config {
    /// The spec files the globs name under `root` (the folder of `ggen.toml`),
    /// sorted and deduplicated by file (not by path text), each as
    /// `root.join(relative path)`.
    ///
    /// A pattern with wildcards may match nothing; a plain path must exist.
    pub fn spec_files(&self, root: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
        let mut files = BTreeSet::new();
        let prefix = glob::Pattern::escape(&root.to_string_lossy());
        for pattern in &self.specs {
            let full = if root.as_os_str().is_empty() {
                pattern.clone()
            } else {
                format!("{prefix}/{pattern}")
            };
            let fail = |error: ConfigError| {
                Diagnostic::from_error(load::display_path(&root.join(pattern)), 1, 1, "", error)
            };
            let matches = glob::glob(&full).map_err(|source| {
                fail(ConfigError::BadPattern {
                    pattern: pattern.clone(),
                    source,
                })
            })?;
            let literal = glob::Pattern::escape(pattern) == *pattern;
            let mut any = false;
            for entry in matches {
                let path = entry.map_err(|source| {
                    fail(ConfigError::Walk {
                        pattern: pattern.clone(),
                        source,
                    })
                })?;
                // A glob never picks up a scenario file (`x.test.json`
                // beside `x.json`); a literal path is taken as given.
                if path.is_file() && (literal || !lab::scenario::is_scenario_file(&path)) {
                    any = true;
                    files.insert(path);
                }
            }
            if literal && !any {
                return Err(fail(ConfigError::MissingSpec(pattern.clone())));
            }
        }
        // One file reached by several paths (a link, a link loop under
        // `specs/**`) is one spec: the shortest path names it.
        let mut by_file: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
        for path in files {
            let key = fs_err::canonicalize(&path).unwrap_or_else(|_| path.clone());
            let depth = |p: &Path| p.components().count();
            match by_file.get(&key) {
                Some(kept) if depth(kept) <= depth(&path) => {}
                _ => {
                    by_file.insert(key, path);
                }
            }
        }
        let mut files: Vec<PathBuf> = by_file.into_values().collect();
        files.sort();
        Ok(files)
    }
}

/// `paths` with every file named a second time (by the same or another
/// path, or through a link) left out, in the order given. A path that
/// cannot be resolved is kept as given (reading it reports the problem).
pub fn distinct_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    paths
        .iter()
        .filter(|path| seen.insert(fs_err::canonicalize(path).unwrap_or_else(|_| (*path).clone())))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Config, Vec<String>> {
        parse(&Source::from_text("ggen.toml", text))
            .map_err(|all| all.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn the_documented_config_loads() {
        let config = parse_text(
            "version = 1\nspecs = [\"specs/*.json\"]\nout_dir = \"generated\"\n# templates = \"t\"\n",
        )
        .unwrap();
        assert_eq!(config.version, 1);
        assert_eq!(config.specs, ["specs/*.json"]);
        assert_eq!(config.out_dir, Path::new("generated"));
        assert_eq!(config.templates, None);
        assert_eq!(config.runtime, None);
    }

    #[test]
    fn runtime_takes_one_source() {
        let with = |runtime: &str| {
            parse_text(&format!(
                "version = 1\nspecs = []\nout_dir = \"g\"\nruntime = {runtime}\n"
            ))
        };
        assert_eq!(
            with("{ version = \"0.1.0\" }").unwrap().runtime,
            Some(Runtime::Version("0.1.0".to_owned()))
        );
        assert_eq!(
            with("{ path = \"../runtime\" }").unwrap().runtime,
            Some(Runtime::Path(PathBuf::from("../runtime")))
        );
        assert_eq!(
            with("{ git = \"https://example.com/ggen\", rev = \"abc123\" }")
                .unwrap()
                .runtime,
            Some(Runtime::Git {
                url: "https://example.com/ggen".to_owned(),
                rev: "abc123".to_owned()
            })
        );
        for bad in [
            "\"0.1.0\"",
            "{}",
            "{ version = \"1\", path = \"r\" }",
            "{ git = \"u\" }",
            "{ rev = \"r\" }",
            "{ path = \"\" }",
            "{ path = 3 }",
            "{ branch = \"main\" }",
        ] {
            let errors = with(bad).unwrap_err();
            assert_eq!(
                errors,
                [format!(
                    "ggen.toml:4:11: /runtime: `runtime` must be {RUNTIME_EXPECTED}"
                )],
                "{bad}"
            );
        }
    }

    #[test]
    fn an_out_dir_that_leaves_the_project_is_refused() {
        for dir in ["../escape", "/tmp/abs", "generated/../../x"] {
            let errors = parse_text(&format!(
                "version = 1\nspecs = [\"specs/*.json\"]\nout_dir = \"{dir}\"\n"
            ))
            .unwrap_err();
            assert_eq!(errors.len(), 1, "{dir}: {errors:?}");
            assert!(
                errors[0].starts_with("ggen.toml:3:11: /out_dir: `out_dir`")
                    && errors[0].contains("leaves the project folder"),
                "{dir}: {errors:?}"
            );
        }
        for dir in ["generated", "./out", "out/crates"] {
            let text = format!("version = 1\nspecs = [\"specs/*.json\"]\nout_dir = \"{dir}\"\n");
            assert!(parse_text(&text).is_ok(), "{dir}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let errors = parse_text(
            "version = 2\nspecs = [\"a/[.json\", 3]\nout_dri = \"generated\"\ntemplates = 5\n",
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "ggen.toml:1:1: /: missing required key `out_dir`",
                "ggen.toml:1:11: /version: unsupported config version `2`: this ggen reads version `1`",
                "ggen.toml:2:10: /specs/0: invalid glob pattern `a/[.json`: Pattern syntax error near position 2: invalid range pattern",
                "ggen.toml:2:22: /specs/1: `specs[1]` must be a non-empty string (a glob pattern)",
                "ggen.toml:3:1: /out_dri: unknown key `out_dri`; did you mean `out_dir`?",
                "ggen.toml:4:13: /templates: `templates` must be a non-empty string (a path)",
            ]
        );
    }

    #[test]
    fn every_unknown_key_is_reported_and_known_keys_still_checked() {
        let errors =
            parse_text("verison = 1\nversion = 7\nspecs = 5\nout_dir = \"\"\n[extra]\nx = 1\n")
                .unwrap_err();
        assert_eq!(
            errors,
            [
                "ggen.toml:1:1: /verison: unknown key `verison`; did you mean `version`?",
                "ggen.toml:2:11: /version: unsupported config version `7`: this ggen reads version `1`",
                "ggen.toml:3:9: /specs: `specs` must be an array of glob patterns",
                "ggen.toml:4:11: /out_dir: `out_dir` must be a non-empty string (a path)",
                "ggen.toml:5:2: /extra: unknown key `extra`",
            ]
        );
    }

    #[test]
    fn diagnostics_keep_the_typed_config_error() {
        let source = Source::from_text(
            "ggen.toml",
            "version = 1\nspecs = [\"[\"]\nout_dir = \"g\"\n",
        );
        let all = parse(&source).unwrap_err();
        let error = all[0].cause_as::<ConfigError>().expect("typed cause");
        assert!(matches!(error, ConfigError::BadPattern { .. }), "{error:?}");
        assert!(std::error::Error::source(error).is_some());
    }

    #[test]
    fn every_listed_key_is_accepted() {
        let text = "version = 1\nspecs = []\nout_dir = \"g\"\ntemplates = \"t\"\nruntime = { version = \"1\" }\n";
        assert_eq!(KEYS.len(), 5);
        for key in KEYS {
            assert!(text.contains(&format!("{key} = ")), "{key}");
        }
        assert!(parse_text(text).is_ok());
    }

    #[test]
    fn syntax_errors_are_located() {
        let errors = parse_text("version = 1\nspecs = [\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("ggen.toml:"), "{errors:?}");
    }

    /// `files` as paths from `root`.
    fn below(root: &Path, files: &[PathBuf]) -> Vec<PathBuf> {
        files
            .iter()
            .map(|f| f.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    }

    fn touch(path: &Path) {
        fs_err::create_dir_all(path.parent().unwrap()).unwrap();
        fs_err::write(path, "{}").unwrap();
    }

    fn config(specs: &[&str]) -> Config {
        Config {
            version: 1,
            specs: specs.iter().map(|s| (*s).to_owned()).collect(),
            out_dir: PathBuf::from("generated"),
            templates: None,
            runtime: None,
        }
    }

    #[test]
    fn spec_files_are_expanded_sorted_and_deduplicated() {
        let root = tempfile::tempdir().unwrap();
        for file in [
            "specs/b.json",
            "specs/a.json",
            "specs/notes.txt",
            "more/c.json",
        ] {
            touch(&root.path().join(file));
        }
        fs_err::create_dir_all(root.path().join("specs/dir.json")).unwrap();
        let files = config(&["specs/*.json", "more/c.json", "specs/a.json", "none/*.json"])
            .spec_files(root.path())
            .unwrap();
        let relative = below(root.path(), &files);
        assert_eq!(
            relative,
            [
                PathBuf::from("more/c.json"),
                PathBuf::from("specs/a.json"),
                PathBuf::from("specs/b.json"),
            ]
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_reached_by_several_paths_is_listed_once() {
        let root = tempfile::tempdir().unwrap();
        touch(&root.path().join("specs/a.json"));
        touch(&root.path().join("specs/z.json"));
        // A loop (`specs/loop/loop/…/a.json`) and a second name for a file.
        std::os::unix::fs::symlink(".", root.path().join("specs/loop")).unwrap();
        std::os::unix::fs::symlink("a.json", root.path().join("specs/b.json")).unwrap();
        let files = config(&["specs/**/*.json", "./specs/a.json"])
            .spec_files(root.path())
            .unwrap();
        let relative = below(root.path(), &files);
        assert_eq!(
            relative,
            [PathBuf::from("specs/a.json"), PathBuf::from("specs/z.json")]
        );
        let named = [
            root.path().join("specs/z.json"),
            root.path().join("specs/./z.json"),
            root.path().join("specs/loop/loop/z.json"),
            root.path().join("specs/gone.json"),
        ];
        assert_eq!(distinct_files(&named), [named[0].clone(), named[3].clone()]);
    }

    #[test]
    fn a_listed_file_that_is_missing_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let error = config(&["specs/gone.json"])
            .spec_files(root.path())
            .unwrap_err();
        assert!(error.file.ends_with("specs/gone.json"), "{error}");
        assert_eq!(
            error.message,
            "spec file not found (listed in `specs` as `specs/gone.json`)"
        );
    }

    #[test]
    fn a_root_with_glob_characters_is_taken_literally() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("odd[1]");
        touch(&root.join("specs/a.json"));
        let files = config(&["specs/*.json"]).spec_files(&root).unwrap();
        assert_eq!(files, [root.join("specs/a.json")]);
    }

    #[test]
    fn the_repository_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ggen.toml");
        let config = load(&path).unwrap();
        assert_eq!(config.version, CONFIG_VERSION);
        assert!(!config.specs.is_empty());
    }

    #[test]
    fn the_config_schema_names_every_key() {
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        let mut names: Vec<_> = properties.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut keys = KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(names, keys);
    }
}

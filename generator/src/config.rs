//! `ggen.toml`: which specs to read, where output goes, optional template
//! overrides. Versioned; unknown keys and wrong types are rejected with
//! their line and column, all of them in one run.
//!
//! ```toml
//! version = 1
//! specs = ["specs/*.json"]
//! out_dir = "generated"
//! # templates = "my-templates"
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use thiserror::Error;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{self, Diagnostic};
use crate::load::{self, Source};

/// The JSON Schema of `ggen.toml`, as printed by `ggen schema config`.
pub const CONFIG_SCHEMA: &str = include_str!("../../specs/schema/ggen.schema.json");

/// The config `version` this ggen reads.
pub const CONFIG_VERSION: u32 = 1;

/// The keys `ggen.toml` may hold.
const KEYS: [&str; 4] = ["version", "specs", "out_dir", "templates"];

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

/// Checks the text of a `ggen.toml`: the config, or every problem found.
pub fn parse(source: &Source) -> Result<Config, Vec<Diagnostic>> {
    let mut found = Vec::new();
    let report = |found: &mut Vec<Diagnostic>,
                  span: Option<std::ops::Range<usize>>,
                  pointer: &str,
                  error: ConfigError| {
        let (line, column) = load::line_column(&source.text, span.map_or(0, |s| s.start));
        found.push(Diagnostic::new(
            &source.path,
            line,
            column,
            pointer,
            diagnostic::error_chain(&error),
        ));
    };
    let (table, errors) = DeTable::parse_recoverable(&source.text);
    if !errors.is_empty() {
        for error in errors {
            let message = error.message().to_owned();
            report(&mut found, error.span(), "", ConfigError::Syntax(message));
        }
        diagnostic::sort(&mut found);
        return Err(found);
    }

    let mut version = None;
    let mut specs = None;
    let mut out_dir = None;
    let mut templates = None;
    for (key, value) in table.get_ref() {
        let name: &str = key.get_ref();
        let pointer = diagnostic::join_pointer("", name);
        let span = Some(value.span());
        match (name, value.get_ref()) {
            ("version", DeValue::Integer(int)) => {
                match u32::from_str_radix(int.as_str(), int.radix()) {
                    Ok(CONFIG_VERSION) => version = Some(CONFIG_VERSION),
                    _ => {
                        let error = ConfigError::UnsupportedVersion(int.to_string());
                        report(&mut found, span, &pointer, error);
                        version = Some(0);
                    }
                }
            }
            ("specs", DeValue::Array(items)) => {
                let mut patterns = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let item_pointer = format!("{pointer}/{i}");
                    match item.get_ref() {
                        DeValue::String(pattern) if !pattern.is_empty() => {
                            if let Err(e) = glob::Pattern::new(pattern) {
                                let error = ConfigError::BadPattern {
                                    pattern: pattern.to_string(),
                                    source: e,
                                };
                                report(&mut found, Some(item.span()), &item_pointer, error);
                            }
                            patterns.push(pattern.to_string());
                        }
                        _ => {
                            let error = ConfigError::WrongType {
                                key: format!("specs[{i}]"),
                                expected: "a non-empty string (a glob pattern)",
                            };
                            report(&mut found, Some(item.span()), &item_pointer, error);
                        }
                    }
                }
                specs = Some(patterns);
            }
            ("out_dir", DeValue::String(dir)) if !dir.is_empty() => {
                out_dir = Some(PathBuf::from(dir.as_ref()));
            }
            ("templates", DeValue::String(dir)) if !dir.is_empty() => {
                templates = Some(PathBuf::from(dir.as_ref()));
            }
            ("version" | "specs" | "out_dir" | "templates", _) => {
                let expected = match name {
                    "version" => "the integer `1`",
                    "specs" => "an array of glob patterns",
                    _ => "a non-empty string (a path)",
                };
                let error = ConfigError::WrongType {
                    key: name.to_owned(),
                    expected,
                };
                report(&mut found, span, &pointer, error);
                // Known key, bad value: do not also report it missing.
                match name {
                    "version" => version = Some(0),
                    "specs" => specs = Some(Vec::new()),
                    "out_dir" => out_dir = Some(PathBuf::new()),
                    _ => {}
                }
            }
            _ => {
                let hint = crate::validate::closest(name, KEYS.into_iter())
                    .map(|near| format!("; did you mean `{near}`?"))
                    .unwrap_or_default();
                let error = ConfigError::UnknownKey {
                    key: name.to_owned(),
                    hint,
                };
                report(&mut found, Some(key.span()), &pointer, error);
            }
        }
    }
    for (key, present) in [
        ("version", version.is_some()),
        ("specs", specs.is_some()),
        ("out_dir", out_dir.is_some()),
    ] {
        if !present {
            report(&mut found, None, "", ConfigError::MissingKey(key));
        }
    }
    match (version, specs, out_dir) {
        (Some(version), Some(specs), Some(out_dir)) if found.is_empty() => Ok(Config {
            version,
            specs,
            out_dir,
            templates,
        }),
        _ => {
            diagnostic::sort(&mut found);
            Err(found)
        }
    }
}

impl Config {
    /// The spec files the globs name under `root` (the folder of `ggen.toml`),
    /// sorted and deduplicated, each as `root.join(relative path)`.
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
                Diagnostic::whole_file(
                    load::display_path(&root.join(pattern)),
                    diagnostic::error_chain(&error),
                )
            };
            let matches = glob::glob(&full).map_err(|source| {
                fail(ConfigError::BadPattern {
                    pattern: pattern.clone(),
                    source,
                })
            })?;
            let mut any = false;
            for entry in matches {
                let path = entry.map_err(|source| {
                    fail(ConfigError::Walk {
                        pattern: pattern.clone(),
                        source,
                    })
                })?;
                if path.is_file() {
                    any = true;
                    files.insert(path);
                }
            }
            let literal = glob::Pattern::escape(pattern) == *pattern;
            if literal && !any {
                return Err(fail(ConfigError::MissingSpec(pattern.clone())));
            }
        }
        Ok(files.into_iter().collect())
    }
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
    fn syntax_errors_are_located() {
        let errors = parse_text("version = 1\nspecs = [\n").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("ggen.toml:"), "{errors:?}");
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
        let relative: Vec<_> = files
            .iter()
            .map(|f| f.strip_prefix(root.path()).unwrap().to_path_buf())
            .collect();
        assert_eq!(
            relative,
            [
                PathBuf::from("more/c.json"),
                PathBuf::from("specs/a.json"),
                PathBuf::from("specs/b.json"),
            ]
        );
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

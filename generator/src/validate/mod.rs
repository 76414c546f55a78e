//! Validation of a spec: every violation in one run, each located.
//!
//! Three passes over one parsed document, all of which run so a single
//! `ggen validate` reports everything:
//! 1. syntax (serde_json) — a syntax error stops here, nothing else is knowable;
//!    then duplicate object keys (serde_json would silently keep the last);
//! 2. the JSON Schema `specs/schema/sku.schema.json` (draft 2020-12), with
//!    messages rewritten for people (`unknown key `thresold``);
//! 3. semantic rules (`semantic`), which read the document defensively and so
//!    run even where the schema already found problems.
//!
//! Only a document with no diagnostic at all is deserialized into a
//! [`Spec`] and handed out as [`Checked`]. These passes are the only home of
//! spec rules: lowering relies on them and checks nothing again.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;
use serde_path_to_error::Segment;
use thiserror::Error;

use crate::diagnostic::{self, Diagnostic, join_pointer};
use crate::load::{self, Source};
use crate::spec::Spec;

mod semantic;

pub use semantic::Violation;

/// The JSON Schema of a spec (draft 2020-12), as printed by `ggen schema spec`.
pub const SKU_SCHEMA: &str = include_str!("../../schema/sku.schema.json");

/// The `spec_version` this ggen reads.
pub const SPEC_VERSION: u64 = 1;

/// Why a spec was not checked: its violations (input rejected, exit 1), or
/// a fault of the validation machinery itself (internal, exit 2).
#[derive(Debug, Error)]
pub enum ValidateError {
    /// The spec breaks rules: every violation, located and sorted.
    #[error("{} problem(s) in the spec", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// The embedded schema does not parse as JSON.
    #[error("internal error: an embedded schema is not json")]
    SchemaJson(#[source] serde_json::Error),
    /// The embedded schema is not a valid JSON Schema.
    #[error("internal error: an embedded schema is invalid")]
    SchemaInvalid(#[source] Box<ValidationError<'static>>),
}

/// A spec that passed every check: the only input [`crate::model::lower`]
/// accepts, so lowering can rely on what the rules guarantee instead of
/// checking it again (ripgrep's low-level → high-level arguments split).
#[derive(Debug, Clone)]
pub struct Checked(Spec);

impl Checked {
    /// The checked spec.
    pub fn spec(&self) -> &Spec {
        &self.0
    }
}

impl std::ops::Deref for Checked {
    type Target = Spec;

    fn deref(&self) -> &Spec {
        &self.0
    }
}

/// The parsed schema and its validator.
type Schema = (Value, Validator);

/// Parses `text` as a draft 2020-12 schema and builds its validator.
fn build_schema(text: &str) -> Result<Schema, ValidateError> {
    let schema: Value = serde_json::from_str(text).map_err(ValidateError::SchemaJson)?;
    let validator = jsonschema::draft202012::options()
        .build(&schema)
        .map_err(|e| ValidateError::SchemaInvalid(Box::new(e)))?;
    Ok((schema, validator))
}

/// A schema embedded in ggen, built on first use.
pub(crate) struct EmbeddedSchema {
    text: &'static str,
    built: OnceLock<Schema>,
}

impl EmbeddedSchema {
    /// The schema `text` (draft 2020-12), not built yet.
    pub(crate) const fn new(text: &'static str) -> EmbeddedSchema {
        EmbeddedSchema {
            text,
            built: OnceLock::new(),
        }
    }

    /// The built schema, or why it cannot be used (an internal fault). A
    /// failure is not cached, so the cell never holds an error value.
    fn get(&self) -> Result<&Schema, ValidateError> {
        if let Some(schema) = self.built.get() {
            return Ok(schema);
        }
        let schema = build_schema(self.text)?;
        Ok(self.built.get_or_init(|| schema))
    }
}

static EMBEDDED: EmbeddedSchema = EmbeddedSchema::new(SKU_SCHEMA);

/// The first passes for any of ggen's JSON inputs: syntax (an error there
/// is the only problem reported), then duplicate keys and `schema`. Returns
/// the document and every problem those passes found.
pub(crate) fn check_document(
    source: &Source,
    schema: &EmbeddedSchema,
) -> Result<(Value, Vec<Diagnostic>), ValidateError> {
    let (schema, validator) = schema.get()?;
    let value: Value = match serde_json::from_str(&source.text) {
        Ok(value) => value,
        Err(e) => return Err(ValidateError::Invalid(vec![json_error(source, &e)])),
    };
    let mut found = duplicate_keys(source);
    found.extend(schema_errors(source, &value, schema, validator));
    Ok((value, found))
}

/// Checks a spec: the checked spec, [`ValidateError::Invalid`] with ALL
/// violations sorted by (line, column, pointer), or an internal fault.
pub fn check(source: &Source) -> Result<Checked, ValidateError> {
    let (value, mut found) = check_document(source, &EMBEDDED)?;
    found.extend(semantic::check(source, &value));
    if found.is_empty() {
        // The schema mirrors `spec.rs`; this catches what it cannot express
        // (`2.0` is a JSON Schema integer but not a `u32`, and the schema
        // bounds no integer by its Rust type). Built from the value already
        // parsed, which locates a failure by the path to the value.
        match serde_path_to_error::deserialize::<_, Spec>(&value) {
            Ok(spec) => return Ok(Checked(spec)),
            Err(error) => {
                let pointer = error
                    .path()
                    .iter()
                    .map_while(|segment| match segment {
                        Segment::Seq { index } => Some(index.to_string()),
                        Segment::Map { key } | Segment::Enum { variant: key } => Some(key.clone()),
                        Segment::Unknown => None,
                    })
                    .fold(String::new(), |pointer, token| {
                        join_pointer(&pointer, &token)
                    });
                let message = readable_serde(&error.inner().to_string());
                found.push(at(source, &pointer, message));
            }
        }
    }
    diagnostic::sort(&mut found);
    Err(ValidateError::Invalid(found))
}

/// Reads and checks one spec file: its source (for hashes and positions) and
/// the checked spec, or every diagnostic (an unreadable file gives one).
pub fn check_file(path: &std::path::Path) -> Result<(Source, Checked), ValidateError> {
    let source = load::read(path).map_err(|d| ValidateError::Invalid(vec![d]))?;
    let spec = check(&source)?;
    Ok((source, spec))
}

/// Specs that share a `sku.id` with an earlier one, located at their
/// `/sku/id`: two specs with one id would generate one crate folder.
/// `specs` pairs each spec's source with its id, in the order given.
pub fn duplicate_ids<'a>(
    specs: impl IntoIterator<Item = (&'a Source, &'a str)>,
) -> Vec<Diagnostic> {
    let mut first: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    let mut found = Vec::new();
    for (source, id) in specs {
        match first.get(id) {
            Some(earlier) => found.push(at(
                source,
                "/sku/id",
                format!(
                    "sku id `{id}` is also the id of `{earlier}`: each spec needs its own id (its crate is generated into a folder named after it)"
                ),
            )),
            None => {
                first.insert(id, &source.path);
            }
        }
    }
    found
}

/// A diagnostic at `pointer` in `source`.
pub(crate) fn at(source: &Source, pointer: &str, message: impl Into<String>) -> Diagnostic {
    let (line, column) = load::position(source, pointer);
    Diagnostic::new(&source.path, line, column, pointer, message)
}

/// A serde_json error (syntax or shape) at its own position, pointer `""`.
pub(crate) fn json_error(source: &Source, error: &serde_json::Error) -> Diagnostic {
    let (line, column) = load::json_error_position(&source.text, error.line(), error.column());
    let text = error.to_string();
    // serde_json appends the position, which the diagnostic already carries.
    let suffix = format!(" at line {} column {}", error.line(), error.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    Diagnostic::new(&source.path, line, column, "", readable_serde(message))
}

/// serde's type errors in spec terms: `invalid type: floating point `2.0`,
/// expected u32` becomes `expected an integer, found `2.0``.
fn readable_serde(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("invalid type: floating point ")
        && let Some((found, expected)) = rest.split_once(", expected ")
        && matches!(expected, "u16" | "u32" | "u64")
    {
        return format!("expected an integer, found {found}");
    }
    lowercase_first(message)
}

fn duplicate_keys(source: &Source) -> Vec<Diagnostic> {
    load::duplicate_keys(&source.text)
        .into_iter()
        .map(|dup| {
            let (line, column) = load::line_column(&source.text, dup.offset);
            let (first_line, first_column) = load::line_column(&source.text, dup.first_offset);
            Diagnostic::new(
                &source.path,
                line,
                column,
                dup.pointer,
                format!(
                    "duplicate key `{}` (first at line {first_line}, column {first_column})",
                    dup.key
                ),
            )
        })
        .collect()
}

fn schema_errors(
    source: &Source,
    value: &Value,
    schema: &Value,
    validator: &Validator,
) -> Vec<Diagnostic> {
    validator
        .iter_errors(value)
        .filter(|error| !explained_by_semantic(error))
        .flat_map(|error| describe(&error, Some(schema)))
        .map(|(pointer, message)| at(source, &pointer, message))
        .collect()
}

/// Whether the semantic layer reports `error` itself, with a better message:
/// a numeric `spec_version` other than 1 (the schema pins `const: 1` for
/// editors; ggen says which versions it reads).
fn explained_by_semantic(error: &ValidationError<'_>) -> bool {
    matches!(error.kind(), ValidationErrorKind::Constant { .. })
        && error.instance_path().as_str() == "/spec_version"
        && error.instance().is_number()
}

/// A schema error as (pointer, readable message) pairs.
fn describe(error: &ValidationError<'_>, schema: Option<&Value>) -> Vec<(String, String)> {
    let pointer = error.instance_path().as_str().to_owned();
    let instance = error.instance();
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let known = schema
                .map(|s| known_keys(s, error.schema_path().as_str()))
                .unwrap_or_default();
            return unexpected
                .iter()
                .map(|key| {
                    let mut message = format!("unknown key `{key}`");
                    if let Some(near) = closest(key, known.iter().map(String::as_str)) {
                        message.push_str(&format!("; did you mean `{near}`?"));
                    }
                    (join_pointer(&pointer, key), message)
                })
                .collect();
        }
        ValidationErrorKind::Required { property } => {
            format!("missing required key `{}`", plain(property))
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => with_article(&t.to_string()),
                TypeKind::Multiple(set) => set
                    .iter()
                    .map(|t| with_article(&t.to_string()))
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("expected {expected}, found {}", found(instance))
        }
        ValidationErrorKind::Enum { options } => {
            let options = match options.as_ref() {
                Value::Array(items) => items
                    .iter()
                    .map(|o| format!("`{}`", plain(o)))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => format!("`{}`", plain(other)),
            };
            format!("expected one of {options}, found {}", found(instance))
        }
        ValidationErrorKind::Pattern { pattern } => pattern_message(instance, pattern),
        ValidationErrorKind::PropertyNames { error: inner } => {
            let message = match inner.kind() {
                ValidationErrorKind::Pattern { pattern } => {
                    pattern_message(inner.instance(), pattern)
                }
                _ => format!("invalid key `{}`", plain(inner.instance())),
            };
            // The pointer names the key whole (the message may cut it).
            let key = match inner.instance().as_ref() {
                Value::String(key) => key.clone(),
                other => plain(other),
            };
            return vec![(join_pointer(&pointer, &key), message)];
        }
        ValidationErrorKind::Minimum { limit } => {
            format!("`{}` is less than the minimum `{limit}`", plain(instance))
        }
        ValidationErrorKind::Maximum { limit } => {
            format!(
                "`{}` is greater than the maximum `{limit}`",
                plain(instance)
            )
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            format!("`{}` must be greater than `{limit}`", plain(instance))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            format!("`{}` must be less than `{limit}`", plain(instance))
        }
        ValidationErrorKind::MinItems { limit: 1 } => "must not be empty".to_owned(),
        ValidationErrorKind::MinItems { limit } => format!("needs at least `{limit}` items"),
        ValidationErrorKind::MaxItems { limit } => format!("allows at most `{limit}` items"),
        ValidationErrorKind::MinLength { limit: 1 } => "must not be empty".to_owned(),
        ValidationErrorKind::MinLength { limit } => {
            format!("needs at least `{limit}` characters")
        }
        ValidationErrorKind::MaxLength { limit } => {
            format!("allows at most `{limit}` characters")
        }
        ValidationErrorKind::MinProperties { limit: 1 } => "must not be empty".to_owned(),
        ValidationErrorKind::MinProperties { limit } => {
            format!("needs at least `{limit}` entries")
        }
        ValidationErrorKind::UniqueItems => match repeated_item(instance) {
            Some(item) => format!("`{item}` is listed more than once"),
            None => "items must be unique".to_owned(),
        },
        ValidationErrorKind::Constant { expected_value } => {
            format!(
                "expected `{}`, found {}",
                plain(expected_value),
                found(instance)
            )
        }
        _ => lowercase_first(&error.to_string()),
    };
    vec![(pointer, message)]
}

/// The property names the schema allows where an `additionalProperties` error arose.
fn known_keys(schema: &Value, schema_path: &str) -> Vec<String> {
    let Some(parent) = schema_path.strip_suffix("/additionalProperties") else {
        return Vec::new();
    };
    let mut node = schema.pointer(parent);
    // A `$ref` at that place names the definition that holds the properties.
    if let Some(reference) = node
        .and_then(|n| n.get("$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
    {
        node = schema.pointer(reference);
    }
    node.and_then(|n| n.get("properties"))
        .and_then(Value::as_object)
        .map(|props| props.keys().cloned().collect())
        .unwrap_or_default()
}

/// Readable explanation of a failed `pattern`, by which pattern it is.
fn pattern_message(instance: &Value, pattern: &str) -> String {
    let text = plain(instance);
    if pattern.starts_with("^[a-z][a-z0-9_]{1,39}") {
        format!(
            "`{text}` is not a valid sku id: use 2 to 40 lowercase letters, digits or `_`, starting with a letter"
        )
    } else if pattern.starts_with("^[a-z][a-z0-9]*(_") {
        format!(
            "`{text}` is not a snake_case name: use lowercase letters and digits, words joined by single `_`, starting with a letter"
        )
    } else if pattern.starts_with("^(0|[1-9]") {
        format!("`{text}` is not a semantic version such as `1.2.0`")
    } else if pattern.starts_with("^((([a-zA-Z0-9]") {
        format!(
            "`{text}` is not an image repository such as `registry.example.com/team/governor`: an optional registry host (and `:port`), then lowercase path components separated by `/`, no tag"
        )
    } else if pattern.starts_with("^[1-9][0-9]{0,8}(s|m") {
        format!(
            "`{text}` is not a retention bound: a number with `s`, `m`, `h`, `d` (age) or `MiB`, `GiB`, `TiB` (size), such as `7d` or `20GiB`"
        )
    } else if pattern.starts_with("^[0-9]+(\\.[0-9]+)?([eE]") {
        format!(
            "`{text}` is not a Kubernetes quantity: a number with an optional suffix (`m`, `k`, `M`, `G`, `Ki`, `Mi`, `Gi`, …), such as `500m`, `2` or `256Mi`"
        )
    } else if pattern.starts_with("^(gs://") {
        format!(
            "`{text}` is not a bucket URL: `gs://<bucket>[/prefix]` or `s3://<bucket>[/prefix]`, the bucket 3 to 63 lowercase letters, digits, `-` or `.` (and `_` for `gs`), starting and ending with a letter or digit, the prefix names of letters, digits, `.`, `_`, `=` or `-` separated by single `/`"
        )
    } else {
        format!("`{text}` does not match the pattern `{pattern}`")
    }
}

/// A value as text: strings without quotes, long text shortened.
pub(crate) fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => cut(s),
        other => cut(&other.to_string()),
    }
}

/// `text`, cut to 60 characters and `…` when longer.
pub(crate) fn cut(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// "a string `abc`", "an object", … for the value actually found.
fn found(value: &Value) -> String {
    match value {
        Value::Null => "`null`".to_owned(),
        Value::Bool(b) => format!("a boolean `{b}`"),
        Value::Number(n) => format!("a number `{n}`"),
        Value::String(_) => format!("a string `{}`", plain(value)),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

fn with_article(kind: &str) -> String {
    match kind {
        "null" => "`null`".to_owned(),
        "integer" | "array" | "object" => format!("an {kind}"),
        _ => format!("a {kind}"),
    }
}

fn repeated_item(value: &Value) -> Option<String> {
    let items = value.as_array()?;
    items
        .iter()
        .enumerate()
        .find(|(i, item)| items[..*i].contains(item))
        .map(|(_, item)| plain(item))
}

/// Lowercases the first letter of a sentence, leaving acronyms (`EOF`) alone.
fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(_), Some(second)) if second.is_uppercase() => text.to_owned(),
        (Some(first), _) => first.to_lowercase().chain(text.chars().skip(1)).collect(),
        (None, _) => String::new(),
    }
}

/// The longest word (and candidate) [`closest`] compares: a longer name is
/// no typo of a name anyone wrote, and the distance costs the product of
/// the lengths.
const MAX_TYPO_CHARS: usize = 64;

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let chars = word.chars().count();
    if chars > MAX_TYPO_CHARS {
        return None;
    }
    let limit = (chars / 3).max(1);
    candidates
        // A length further off than the limit is further off in edits too.
        .filter(|c| c.len() <= 4 * MAX_TYPO_CHARS && c.chars().count().abs_diff(chars) <= limit)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_builds() {
        assert!(EMBEDDED.get().is_ok(), "{:?}", EMBEDDED.get().err());
    }

    #[test]
    fn a_broken_schema_is_an_internal_fault_not_a_diagnostic() {
        let not_json = build_schema("{").unwrap_err();
        assert!(
            matches!(not_json, ValidateError::SchemaJson(_)),
            "{not_json:?}"
        );
        let invalid = build_schema(r#"{"type": 5}"#).unwrap_err();
        assert!(
            matches!(invalid, ValidateError::SchemaInvalid(_)),
            "{invalid:?}"
        );
        // The cause stays a typed `source()`, not text in the message.
        assert!(std::error::Error::source(&invalid).is_some());
        assert!(!invalid.to_string().contains("5"), "{invalid}");
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("thresold", "threshold"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn closest_suggests_only_near_names() {
        let names = ["spend_rate", "spend_spike"];
        assert_eq!(closest("spend_rat", names.into_iter()), Some("spend_rate"));
        assert_eq!(closest("latency", names.into_iter()), None);
    }

    #[test]
    fn sentences_start_lowercase_but_acronyms_stay() {
        assert_eq!(lowercase_first("Trailing comma"), "trailing comma");
        assert_eq!(lowercase_first("EOF while parsing"), "EOF while parsing");
        assert_eq!(lowercase_first(""), "");
    }

    #[test]
    fn serde_float_for_integer_reads_as_integer_expected() {
        assert_eq!(
            readable_serde("invalid type: floating point `2.0`, expected u32"),
            "expected an integer, found `2.0`"
        );
        assert_eq!(readable_serde("Trailing comma"), "trailing comma");
    }

    #[test]
    fn plain_shortens_long_text() {
        let long = Value::String("x".repeat(100));
        assert_eq!(plain(&long).chars().count(), 61);
        assert_eq!(plain(&Value::from(5)), "5");
    }
}

//! One problem found in an input file, located by line, column and JSON
//! pointer. Every front-end stage (load, validate, config) reports through
//! [`Diagnostic`]; the CLI prints them, the library never does.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// The typed error a diagnostic was made from.
pub type Cause = Arc<dyn Error + Send + Sync + 'static>;

/// A located problem in an input file.
///
/// `line` and `column` are 1-based (the column counts characters, not bytes);
/// `pointer` is an RFC 6901 JSON pointer (`""` is the document root).
/// Equality ignores [`Diagnostic::cause`]: two diagnostics are the same
/// problem when they say the same thing at the same place.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    /// The file as the user named it, `/`-separated.
    pub file: String,
    /// 1-based line of the offending value.
    pub line: usize,
    /// 1-based column (in characters) of the offending value.
    pub column: usize,
    /// JSON pointer of the offending value (`""` for the whole document).
    pub pointer: String,
    /// What is wrong: lowercase, values in backticks; the cause's whole
    /// `source()` chain when made from a typed error.
    pub message: String,
    /// The typed error (`semantic::Violation`, `LoadError`, `ConfigError`, …)
    /// the message renders, with its chain intact; `None` for text-only problems.
    #[serde(skip)]
    pub cause: Option<Cause>,
}

impl PartialEq for Diagnostic {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.file,
            self.line,
            self.column,
            &self.pointer,
            &self.message,
        ) == (
            &other.file,
            other.line,
            other.column,
            &other.pointer,
            &other.message,
        )
    }
}

impl Eq for Diagnostic {}

impl Diagnostic {
    /// A diagnostic at an explicit position.
    pub fn new(
        file: impl Into<String>,
        line: usize,
        column: usize,
        pointer: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            column,
            pointer: pointer.into(),
            message: message.into(),
            cause: None,
        }
    }

    /// A diagnostic made from a typed error: the message renders its whole
    /// chain, and the error itself is kept as [`Diagnostic::cause`].
    pub fn from_error(
        file: impl Into<String>,
        line: usize,
        column: usize,
        pointer: impl Into<String>,
        error: impl Error + Send + Sync + 'static,
    ) -> Self {
        let mut diagnostic = Diagnostic::new(file, line, column, pointer, error_chain(&error));
        diagnostic.cause = Some(Arc::new(error));
        diagnostic
    }

    /// The typed error behind this diagnostic, if it is an `E`.
    pub fn cause_as<E: Error + 'static>(&self) -> Option<&E> {
        self.cause.as_deref()?.downcast_ref::<E>()
    }

    /// A diagnostic about a whole file (position 1:1, pointer `""`).
    pub fn whole_file(file: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic::new(file, 1, 1, "", message)
    }

    /// The key diagnostics are reported in: position first, then pointer and message.
    pub fn sort_key(&self) -> (usize, usize, &str, &str) {
        (self.line, self.column, &self.pointer, &self.message)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Line 0: about the file as a whole (it could not be read), no position.
        if self.line == 0 {
            return write!(f, "{}: {}", self.file, self.message);
        }
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, pointer, self.message
        )
    }
}

// No `source()`: the message already renders the cause's chain, so a chain
// walk over a diagnostic would print it twice; use `cause` for the typed error.
impl Error for Diagnostic {}

/// Sorts diagnostics by (line, column, pointer, message) and drops exact duplicates.
pub fn sort(diagnostics: &mut Vec<Diagnostic>) {
    diagnostics.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    diagnostics.dedup();
}

/// Renders an error and its `source()` chain as one line: `outer: inner: …`
/// (the runtime's own, so both tools word a chain alike).
pub use ggen_runtime_core::report::error_chain;

/// Escapes one JSON-pointer reference token (`~` → `~0`, `/` → `~1`).
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Appends one reference token to a JSON pointer.
pub fn join_pointer(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", escape_token(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_root_pointer_as_slash() {
        let d = Diagnostic::whole_file("specs/a.json", "bad");
        assert_eq!(d.to_string(), "specs/a.json:1:1: /: bad");
        let d = Diagnostic::new("a.json", 3, 7, "/sku/id", "bad id");
        assert_eq!(d.to_string(), "a.json:3:7: /sku/id: bad id");
    }

    #[test]
    fn pointer_tokens_are_escaped() {
        assert_eq!(join_pointer("/a", "b/c~d"), "/a/b~1c~0d");
        assert_eq!(join_pointer("", "x"), "/x");
    }

    #[test]
    fn sort_orders_by_position_and_dedups() {
        let mut all = vec![
            Diagnostic::new("f", 2, 1, "/b", "m"),
            Diagnostic::new("f", 1, 5, "/a", "m"),
            Diagnostic::new("f", 2, 1, "/b", "m"),
            Diagnostic::new("f", 1, 2, "/c", "m"),
        ];
        sort(&mut all);
        let order: Vec<_> = all.iter().map(|d| d.pointer.as_str()).collect();
        assert_eq!(order, ["/c", "/a", "/b"]);
    }
}

/// `diagnostic` as a terminal shows it: its line, then the offending source
/// line of `text` (the file it names) with a caret under its column, as
/// rustc and miette do. Without a position, or past the text's end, only the
/// line. Columns count characters; tabs are kept so the caret lines up.
pub fn with_snippet(diagnostic: &Diagnostic, text: &str) -> String {
    let head = diagnostic.to_string();
    if diagnostic.line == 0 {
        return head;
    }
    let Some(source) = text.lines().nth(diagnostic.line - 1) else {
        return head;
    };
    let number = diagnostic.line.to_string();
    let gutter = " ".repeat(number.len());
    let pad: String = source
        .chars()
        .take(diagnostic.column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!("{head}\n{gutter} |\n{number} | {source}\n{gutter} | {pad}^")
}

#[cfg(test)]
mod snippet_tests {
    use super::*;

    #[test]
    fn a_caret_under_the_offending_column() {
        let d = Diagnostic::new("s.json", 2, 14, "/sku/id", "bad id");
        let text = "{\n  \"sku\": { \"id\": \"Bad\" }\n}\n";
        assert_eq!(
            with_snippet(&d, text),
            "s.json:2:14: /sku/id: bad id\n  |\n2 |   \"sku\": { \"id\": \"Bad\" }\n  |              ^"
        );
    }

    #[test]
    fn no_position_or_no_such_line_is_the_plain_line() {
        let whole = Diagnostic::new("s.json", 0, 0, "", "cannot read: gone");
        assert_eq!(with_snippet(&whole, "x"), "s.json: cannot read: gone");
        let past = Diagnostic::new("s.json", 9, 1, "", "m");
        assert_eq!(with_snippet(&past, "x"), past.to_string());
    }
}

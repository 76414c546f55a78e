//! Spec text made safe for each output language: Rust literals and doc
//! comments, Markdown table cells, TOML, YAML and Containerfile strings.
//!
//! Spec strings are free text (unicode, quotes, newlines, bidi controls): every
//! template receives them only through one of these functions.

use std::fmt::Write as _;

/// Characters that must never appear raw in generated text: controls, the
/// Unicode line/paragraph separators, bidi overrides (rustc denies them in
/// comments and literals) and the byte-order mark.
pub(crate) fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200B}'..='\u{200F}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// A Rust string literal (with quotes) that evaluates to `s`.
pub fn rust_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if is_hazard(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Rust `f64` literal that round-trips (`50.0`, `1e-7`, `-0.5`).
pub fn rust_f64(value: f64) -> String {
    format!("{value:?}")
}

/// `Some(<f64>)` or `None`.
pub fn rust_opt_f64(value: Option<f64>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| format!("Some({})", rust_f64(v)))
}

/// One line of doc-comment text: never empty, no line breaks, hazards shown
/// as `\u{..}`, and never the start of a code fence (rustdoc would compile
/// the rest of the comment as a doctest): a leading ```` ``` ```` or `~~~`
/// gets a backslash.
pub fn doc_line(s: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    if ["```", "~~~"]
        .iter()
        .any(|fence| s.trim().starts_with(fence))
    {
        out.push('\\');
    }
    for c in s.trim().chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            c if is_hazard(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    if out.trim().is_empty() {
        fallback.to_owned()
    } else {
        out
    }
}

/// Text for a Markdown table cell or paragraph: one line, `|`, `\`, `<`, `>`,
/// `` ` ``, `*`, `_`, `[`, `]` escaped so spec text renders literally.
pub fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        match c {
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' | '\t' => out.push(' '),
            c if is_hazard(c) => {
                let _ = write!(out, "&#x{:X};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A double-quoted string for TOML, YAML and JSON alike (`\uXXXX` escapes).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // YAML also treats U+0085 as a line break, and refuses U+FFFE
            // and U+FFFF unescaped: escape every hazard. Every hazard is
            // in the Basic Multilingual Plane: `\uXXXX` suffices.
            c if is_hazard(c) || matches!(c, '\u{85}' | '\u{FFFE}' | '\u{FFFF}') => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Containerfile `LABEL` value: double-quoted, on one line.
pub fn containerfile(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if is_hazard(c) || c == '\u{85}' => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_strings_escape_quotes_newlines_and_bidi() {
        assert_eq!(rust_str("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(rust_str("é \u{202E}x"), "\"é \\u{202e}x\"");
        let parsed: syn::LitStr =
            syn::parse_str(&rust_str("Überlast ≥ 5 % \"q\"\u{2028}")).expect("a valid literal");
        assert_eq!(parsed.value(), "Überlast ≥ 5 % \"q\"\u{2028}");
    }

    #[test]
    fn floats_round_trip() {
        for v in [50.0, 1e-7, -0.5, 99.995, 1e21, f64::MIN_POSITIVE] {
            let lit = rust_f64(v);
            let back: f64 = lit.parse().expect("a float");
            assert_eq!(back.to_bits(), v.to_bits(), "{lit}");
        }
        assert_eq!(rust_f64(50.0), "50.0");
    }

    #[test]
    fn docs_are_one_non_empty_line() {
        assert_eq!(doc_line("  a\nb ", "x"), "a b");
        assert_eq!(doc_line(" \n", "fallback"), "fallback");
        // A fence would open a doctest of the rest of the comment.
        assert_eq!(doc_line(" ```", "x"), "\\```");
        assert_eq!(doc_line("~~~ rust", "x"), "\\~~~ rust");
        assert_eq!(doc_line("a ``` b", "x"), "a ``` b");
    }

    #[test]
    fn markdown_cells_cannot_break_tables() {
        assert_eq!(md("a|b <c>\nd_e"), "a\\|b &lt;c&gt; d\\_e");
    }

    #[test]
    fn quoted_strings_are_valid_json() {
        let s = "tab\t \"q\" \u{2028} \u{1F600} \u{7} \u{FFFE}\u{FFFF}";
        let v: String = serde_json::from_str(&quoted(s)).expect("valid json");
        assert_eq!(v, s);
        // Characters YAML does not allow unescaped are escaped.
        assert_eq!(quoted("\u{FFFE}\u{FFFF}"), "\"\\uFFFE\\uFFFF\"");
    }
}

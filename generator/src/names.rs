//! Rust identifiers from spec names.
//!
//! Spec names are snake_case (the schema enforces it), so the conversions are
//! total; they still return a valid identifier for any other input. Rust
//! keywords are escaped, never rejected: raw identifiers (`r#type`) where Rust
//! allows them, a trailing `_` for the four that have no raw form (`self`,
//! `Self`, `super`, `crate`). Two distinct spec names that still convert to
//! the same identifier (`a_1b` and `a1b` both become `A1b`) are rejected by
//! `validate`, using [`collision`].

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};

/// Keywords of Rust 2024 (strict and reserved) that cannot name an item as-is.
const KEYWORDS: &[&str] = &[
    "abstract", "as", "async", "await", "become", "box", "break", "const", "continue", "crate",
    "do", "dyn", "else", "enum", "extern", "false", "final", "fn", "for", "gen", "if", "impl",
    "in", "let", "loop", "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref",
    "return", "self", "Self", "static", "struct", "super", "trait", "true", "try", "type",
    "typeof", "unsafe", "unsized", "use", "virtual", "where", "while", "yield",
];

/// Keywords that have no raw-identifier form.
const NO_RAW_FORM: &[&str] = &["self", "Self", "super", "crate"];

/// Whether `word` is a Rust 2024 keyword (strict or reserved).
pub fn is_keyword(word: &str) -> bool {
    KEYWORDS.contains(&word)
}

/// UpperCamelCase type or variant name, never a keyword (`self` → `Self_`).
pub fn type_ident(name: &str) -> String {
    let ident = start_with_letter(name.to_upper_camel_case());
    if is_keyword(&ident) {
        format!("{ident}_")
    } else {
        ident
    }
}

/// SCREAMING_SNAKE_CASE constant name.
pub fn const_ident(name: &str) -> String {
    // No Rust keyword is upper case except `Self`, which has a lowercase letter.
    start_with_letter(name.to_shouty_snake_case())
}

/// snake_case name for modules, functions and fields: keywords as raw
/// identifiers (`r#type`), `self`/`super`/`crate`/`Self` suffixed `_`.
pub fn value_ident(name: &str) -> String {
    let ident = start_with_letter(name.to_snake_case());
    if NO_RAW_FORM.contains(&ident.as_str()) {
        format!("{ident}_")
    } else if is_keyword(&ident) {
        format!("r#{ident}")
    } else {
        ident
    }
}

/// The first identifier two distinct names share (type, constant or value
/// form), or `None` when they stay apart in every form.
pub fn collision(a: &str, b: &str) -> Option<String> {
    if a == b {
        return None;
    }
    forms(a)
        .into_iter()
        .zip(forms(b))
        .find(|(x, y)| x == y)
        .map(|(x, _)| x)
}

/// The identifiers `name` becomes, in the order [`collision`] compares
/// them: type, const, value.
pub fn forms(name: &str) -> [String; 3] {
    [type_ident(name), const_ident(name), value_ident(name)]
}

/// Prefixes `_` when a converted name is empty or starts with a digit
/// (a lone `_` is not an identifier, so the empty name becomes `__`).
fn start_with_letter(ident: String) -> String {
    match ident.chars().next() {
        Some(c) if c.is_alphabetic() => ident,
        Some('_') if ident.len() > 1 => ident,
        None => "__".to_owned(),
        _ => format!("_{ident}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses(ident: &str) -> bool {
        syn::parse_str::<syn::Ident>(ident).is_ok()
    }

    #[test]
    fn plain_names_convert_by_case() {
        assert_eq!(type_ident("spend_rate"), "SpendRate");
        assert_eq!(const_ident("spend_rate"), "SPEND_RATE");
        assert_eq!(value_ident("spend_rate"), "spend_rate");
        assert_eq!(type_ident("p99_latency_ms"), "P99LatencyMs");
    }

    #[test]
    fn keywords_are_escaped_in_every_form() {
        assert_eq!(type_ident("self"), "Self_");
        assert_eq!(value_ident("type"), "r#type");
        assert_eq!(value_ident("match"), "r#match");
        assert_eq!(value_ident("self"), "self_");
        assert_eq!(value_ident("super"), "super_");
        assert_eq!(value_ident("crate"), "crate_");
        assert_eq!(value_ident("gen"), "r#gen");
        assert_eq!(type_ident("type"), "Type");
        assert_eq!(const_ident("self"), "SELF");
    }

    #[test]
    fn every_keyword_yields_an_identifier_syn_accepts() {
        for keyword in KEYWORDS {
            for ident in [
                type_ident(keyword),
                const_ident(keyword),
                value_ident(keyword),
            ] {
                assert!(parses(&ident), "`{keyword}` gave `{ident}`");
            }
        }
    }

    #[test]
    fn odd_input_still_yields_identifiers() {
        for name in ["", "9lives", "__", "Already_Camel", "a-b c"] {
            for ident in [type_ident(name), const_ident(name), value_ident(name)] {
                assert!(parses(&ident), "`{name}` gave `{ident}`");
            }
        }
    }

    #[test]
    fn collisions_after_conversion_are_detected() {
        assert_eq!(collision("a_1b", "a1b").as_deref(), Some("A1b"));
        assert_eq!(collision("spend_rate", "spend_rate"), None);
        assert_eq!(collision("spend_rate", "spend_rates"), None);
        assert_eq!(collision("a_b", "ab"), None);
    }
}

//! Reading spec files and locating JSON values in their text.
//!
//! `serde_json::Value` keeps no positions, so this module carries a small
//! scanner over the original text: [`position`] maps a JSON pointer to the
//! line and column of its value, and [`duplicate_keys`] finds object keys that
//! occur twice (serde_json silently keeps the last one). The scanner is
//! iterative, so no input nests deep enough to overflow the stack, and it
//! never panics on malformed text: it stops where the text stops making sense.

use std::collections::HashMap;
use std::path::Path;

use thiserror::Error;

use crate::diagnostic::{self, Diagnostic};
use crate::digest::sha256_hex;

/// A spec file as read from disk: its name, text and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The path as the user named it, `/`-separated (relative when given relative).
    pub path: String,
    /// The whole file, valid UTF-8.
    pub text: String,
    /// Lowercase hex SHA-256 of the raw bytes.
    pub sha256: String,
}

impl Source {
    /// A source from text already in memory (tests, `init`, stdin).
    pub fn from_text(path: impl Into<String>, text: impl Into<String>) -> Source {
        let text = text.into();
        Source {
            path: path.into(),
            sha256: sha256_hex(text.as_bytes()),
            text,
        }
    }
}

/// Why a file could not be turned into a [`Source`].
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read (`reason`: the operating system's words).
    #[error("cannot read: {reason}")]
    Read {
        /// Why, as the operating system says it (`No such file or directory`).
        reason: String,
        /// The I/O error (kept for callers; the message already says why).
        error: std::io::Error,
    },
    /// The bytes are not UTF-8.
    #[error("the file is not valid utf-8 (bad byte at offset `{offset}`)")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
}

/// Reads a file into a [`Source`]; I/O and UTF-8 errors become a [`Diagnostic`].
pub fn read(path: &Path) -> Result<Source, Diagnostic> {
    let name = display_path(path);
    // std rather than fs_err: the diagnostic names the file already, and
    // the OS error's own words are what it should say.
    #[expect(clippy::disallowed_methods, reason = "the diagnostic names the path")]
    let bytes = std::fs::read(path).map_err(|error| {
        // Invent no position (0:0: the file as a whole).
        let text = error.to_string();
        let reason = match text.rfind(" (os error ") {
            Some(at) => text[..at].to_owned(),
            None => text,
        };
        Diagnostic::from_error(&name, 0, 0, "", LoadError::Read { reason, error })
    })?;
    from_bytes(name, bytes)
}

/// A [`Source`] from raw bytes named `path`; invalid UTF-8 becomes a
/// [`Diagnostic`] at the first bad byte. A UTF-8 byte order mark (some
/// editors write one) is not part of the text; the hash covers the bytes
/// as they are.
pub fn from_bytes(path: impl Into<String>, bytes: Vec<u8>) -> Result<Source, Diagnostic> {
    let path = path.into();
    let sha256 = sha256_hex(&bytes);
    match String::from_utf8(bytes) {
        Ok(text) => {
            let text = match text.strip_prefix('\u{feff}') {
                Some(rest) => rest.to_owned(),
                None => text,
            };
            Ok(Source { path, text, sha256 })
        }
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            // The valid prefix is text, so the bad byte can still be located.
            let prefix = String::from_utf8_lossy(&e.as_bytes()[..offset]);
            let (line, column) = line_column(&prefix, offset);
            let error = LoadError::NotUtf8 { offset };
            Err(Diagnostic::from_error(path, line, column, "", error))
        }
    }
}

/// A path as the user named it, with `/` separators.
pub fn display_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    if std::path::MAIN_SEPARATOR == '/' {
        text.into_owned()
    } else {
        text.replace(std::path::MAIN_SEPARATOR, "/")
    }
}

/// 1-based line and column (in characters) of the value at `pointer`.
///
/// When the pointer names something absent, the position of the deepest
/// value on its path that exists is returned (at worst the document start).
pub fn position(source: &Source, pointer: &str) -> (usize, usize) {
    line_column(&source.text, offset(&source.text, pointer))
}

/// 1-based line and column (in characters) of a byte offset into `text`.
///
/// Offsets past the end are clamped; offsets inside a character are moved
/// to its start.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Line and column in characters from serde_json's line and byte column.
pub fn json_error_position(text: &str, line: usize, byte_column: usize) -> (usize, usize) {
    let line_start = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let offset = (line_start + byte_column.saturating_sub(1)).min(line_end);
    line_column(text, offset)
}

/// Byte offset of the value at `pointer` (or of the deepest existing value on its path).
pub fn offset(text: &str, pointer: &str) -> usize {
    let mut cursor = Cursor::new(text);
    cursor.skip_ws();
    let mut best = cursor.at;
    let Some(rest) = pointer.strip_prefix('/') else {
        return best;
    };
    for token in rest.split('/') {
        let token = unescape_token(token);
        if cursor.enter(&token).is_none() {
            return best;
        }
        best = cursor.at;
    }
    best
}

/// Keys that occur more than once in one object: for each repeat, the JSON
/// pointer of the member, the byte offset of the repeated key and that of
/// its first occurrence.
pub fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    let mut found = Vec::new();
    let mut cursor = Cursor::new(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut pending = Some(String::new());
    loop {
        if let Some(pointer) = pending.take() {
            cursor.skip_ws();
            match cursor.peek() {
                Some(b'{') => {
                    cursor.at += 1;
                    stack.push(Frame::Object {
                        pointer,
                        keys: HashMap::new(),
                        started: false,
                    });
                }
                Some(b'[') => {
                    cursor.at += 1;
                    stack.push(Frame::Array { pointer, next: 0 });
                }
                Some(_) => {
                    if cursor.skip_value().is_none() {
                        return found;
                    }
                }
                None => return found,
            }
        }
        let Some(top) = stack.last_mut() else {
            return found;
        };
        cursor.skip_ws();
        match top {
            Frame::Object {
                pointer,
                keys,
                started,
            } => {
                if cursor.peek() == Some(b'}') {
                    cursor.at += 1;
                    stack.pop();
                    continue;
                }
                if *started {
                    if cursor.peek() != Some(b',') {
                        return found;
                    }
                    cursor.at += 1;
                    cursor.skip_ws();
                }
                let key_at = cursor.at;
                let Some(key) = cursor.string() else {
                    return found;
                };
                cursor.skip_ws();
                if cursor.peek() != Some(b':') {
                    return found;
                }
                cursor.at += 1;
                let member = diagnostic::join_pointer(pointer, &key);
                if let Some(&first) = keys.get(&key) {
                    found.push(DuplicateKey {
                        pointer: member.clone(),
                        key,
                        offset: key_at,
                        first_offset: first,
                    });
                } else {
                    keys.insert(key, key_at);
                }
                *started = true;
                pending = Some(member);
            }
            Frame::Array { pointer, next } => {
                if cursor.peek() == Some(b']') {
                    cursor.at += 1;
                    stack.pop();
                    continue;
                }
                if *next > 0 {
                    if cursor.peek() != Some(b',') {
                        return found;
                    }
                    cursor.at += 1;
                }
                pending = Some(format!("{pointer}/{next}"));
                *next += 1;
            }
        }
    }
}

/// One repeated object key found by [`duplicate_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// JSON pointer of the member whose key repeats.
    pub pointer: String,
    /// The key, decoded.
    pub key: String,
    /// Byte offset of the repeated key.
    pub offset: usize,
    /// Byte offset of the key's first occurrence.
    pub first_offset: usize,
}

/// An open container while walking the whole document.
enum Frame {
    Object {
        pointer: String,
        keys: HashMap<String, usize>,
        started: bool,
    },
    Array {
        pointer: String,
        next: usize,
    },
}

/// Turns a pointer reference token back into a key (`~1` → `/`, `~0` → `~`).
fn unescape_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// A position in JSON text; every method stops (returns `None`) instead of
/// panicking on text that is not JSON.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Moves from a container to the value of its member `token`.
    fn enter(&mut self, token: &str) -> Option<()> {
        match self.peek()? {
            b'{' => {
                self.at += 1;
                loop {
                    self.skip_ws();
                    if self.peek()? == b'}' {
                        return None;
                    }
                    let key = self.string()?;
                    self.skip_ws();
                    if self.peek()? != b':' {
                        return None;
                    }
                    self.at += 1;
                    self.skip_ws();
                    if key == token {
                        return Some(());
                    }
                    self.skip_value()?;
                    self.skip_ws();
                    if self.peek()? != b',' {
                        return None;
                    }
                    self.at += 1;
                }
            }
            b'[' => {
                let index: usize = token.parse().ok()?;
                // `01` is not an array index in a JSON pointer.
                if token.len() > 1 && token.starts_with('0') {
                    return None;
                }
                self.at += 1;
                let mut current = 0;
                loop {
                    self.skip_ws();
                    if self.peek()? == b']' {
                        return None;
                    }
                    if current == index {
                        return Some(());
                    }
                    self.skip_value()?;
                    self.skip_ws();
                    if self.peek()? != b',' {
                        return None;
                    }
                    self.at += 1;
                    current += 1;
                }
            }
            _ => None,
        }
    }

    /// Skips one value of any kind without recursion.
    fn skip_value(&mut self) -> Option<()> {
        let start = self.at;
        match self.peek()? {
            b'"' => {
                self.skip_string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b':' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.at += 1;
                }
            }
        }
        (self.at > start).then_some(())
    }

    /// Skips a string starting at its opening quote.
    fn skip_string(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.at += 1;
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(());
                }
                b'\\' => self.at += 2,
                _ => self.at += 1,
            }
        }
    }

    /// Reads and decodes a string starting at its opening quote.
    fn string(&mut self) -> Option<String> {
        let start = self.at;
        self.skip_string()?;
        let raw = self.bytes.get(start..self.at)?;
        // The raw token, quotes included, is itself a JSON string.
        serde_json::from_slice(raw).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(text: &str, pointer: &str) -> (usize, usize) {
        line_column(text, offset(text, pointer))
    }

    #[test]
    fn a_byte_order_mark_is_dropped_from_the_text_not_the_hash() {
        let with = from_bytes("a.json", "\u{feff}{\"k\": 1}".as_bytes().to_vec()).unwrap();
        let without = from_bytes("a.json", b"{\"k\": 1}".to_vec()).unwrap();
        assert_eq!(with.text, without.text);
        assert_ne!(with.sha256, without.sha256);
        assert_eq!(position(&with, "/k"), (1, 7));
    }

    #[test]
    fn positions_of_nested_values() {
        let text = "{\n  \"a\": {\"b\": [10, {\"c\": true}]},\n  \"d\": \"x\"\n}";
        assert_eq!(pos(text, ""), (1, 1));
        assert_eq!(pos(text, "/a"), (2, 8));
        assert_eq!(pos(text, "/a/b"), (2, 14));
        assert_eq!(pos(text, "/a/b/0"), (2, 15));
        assert_eq!(pos(text, "/a/b/1/c"), (2, 25));
        assert_eq!(pos(text, "/d"), (3, 8));
    }

    #[test]
    fn missing_pointer_falls_back_to_deepest_existing_value() {
        let text = "{\"a\": {\"b\": 1}}";
        assert_eq!(pos(text, "/a/zzz"), (1, 7));
        assert_eq!(pos(text, "/nope/deeper"), (1, 1));
        assert_eq!(pos(text, "/a/b/too/deep"), (1, 13));
        assert_eq!(pos("[1, 2]", "/01"), (1, 1));
        assert_eq!(pos("[1, 2]", "/5"), (1, 1));
    }

    #[test]
    fn escaped_keys_and_pointer_tokens() {
        let text = r#"{"a/b": 1, "c~d": 2, "\u00e9\"q": 3}"#;
        assert_eq!(pos(text, "/a~1b"), (1, 9));
        assert_eq!(pos(text, "/c~0d"), (1, 19));
        assert_eq!(pos(text, "/é\"q"), (1, 35));
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let text = "{\"ünïcødé\": \"ü\", \"k\": 1}";
        assert_eq!(pos(text, "/k"), (1, 23));
    }

    #[test]
    fn strings_with_brackets_and_escapes_are_skipped() {
        let text = r#"{"a": "}]\"{[", "b": {"x": "]"}, "c": 3}"#;
        assert_eq!(pos(text, "/c"), (1, 39));
    }

    #[test]
    fn duplicate_keys_are_found_at_every_depth() {
        let text = "{\"a\": 1, \"b\": [{\"x\": 1, \"x\": 2}], \"a\": 3}";
        let found = duplicate_keys(text);
        let pointers: Vec<_> = found.iter().map(|d| d.pointer.as_str()).collect();
        assert_eq!(pointers, ["/b/0/x", "/a"]);
        assert_eq!(found[1].first_offset, 1);
        assert_eq!(found[1].offset, 34);
    }

    #[test]
    fn same_key_in_sibling_objects_is_not_a_duplicate() {
        assert!(duplicate_keys(r#"[{"a": 1}, {"a": 2}]"#).is_empty());
    }

    #[test]
    fn malformed_text_never_panics() {
        for text in [
            "",
            "{",
            "{\"a\"",
            "[1,",
            "{\"a\":}",
            "\"\\",
            "}}}]]",
            "{\"a\" 1}",
        ] {
            let _ = duplicate_keys(text);
            let _ = offset(text, "/a/0/b");
        }
    }

    #[test]
    fn serde_json_positions_convert_to_characters() {
        let text = "{\n  \"é\": x\n}";
        // serde_json reports byte column 9 for `x` on line 2.
        assert_eq!(json_error_position(text, 2, 9), (2, 8));
        assert_eq!(json_error_position(text, 9, 99), (3, 2));
        assert_eq!(json_error_position("", 1, 0), (1, 1));
    }

    #[test]
    fn unreadable_and_non_utf8_files_become_diagnostics() {
        let missing = read(Path::new("no/such/spec.json")).unwrap_err();
        assert_eq!(
            (missing.file.as_str(), missing.line, missing.column),
            ("no/such/spec.json", 0, 0)
        );
        assert_eq!(
            missing.to_string(),
            "no/such/spec.json: cannot read: No such file or directory"
        );

        let bad = from_bytes("b.json", b"{\n  \"a\": \"\xff\"}".to_vec()).unwrap_err();
        assert_eq!(
            bad.to_string(),
            "b.json:2:9: /: the file is not valid utf-8 (bad byte at offset `10`)"
        );
    }

    #[test]
    fn from_text_hashes_the_bytes() {
        let source = Source::from_text("a.json", "abc");
        assert_eq!(
            source.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

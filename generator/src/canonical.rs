//! Canonical JSON text for everything ggen writes as JSON (action params,
//! the manifest): object keys sorted by their UTF-16 code units (as RFC 8785
//! orders them), whatever order the map kept them in, so no build feature of
//! `serde_json` can change output bytes.

use std::fmt::Write as _;

use serde_json::Value;

/// Compact canonical JSON: sorted keys, no insignificant whitespace.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value, None, 0);
    out
}

/// Canonical JSON pretty-printed with two-space indentation and a final newline.
pub fn to_string_pretty(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value, Some(2), 0);
    out.push('\n');
    out
}

fn newline(out: &mut String, indent: Option<usize>, depth: usize) {
    if let Some(width) = indent {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', width * depth));
    }
}

fn write(out: &mut String, value: &Value, indent: Option<usize>, depth: usize) {
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                write(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, indent, depth + 1);
                let _ = write!(out, "{}", Value::String(key.clone()));
                out.push(':');
                if indent.is_some() {
                    out.push(' ');
                }
                write(out, item, indent, depth + 1);
            }
            newline(out, indent, depth);
            out.push('}');
        }
        // Scalars and empty containers: serde_json's compact form is canonical.
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_at_every_depth() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"z":[1,{"y":2,"x":3}],"c":{}}}"#)
            .expect("valid json");
        assert_eq!(
            to_string(&v),
            r#"{"a":{"c":{},"z":[1,{"x":3,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn pretty_form_is_stable() {
        let v: Value = serde_json::from_str(r#"{"b":[],"a":["é"]}"#).expect("valid json");
        assert_eq!(
            to_string_pretty(&v),
            "{\n  \"a\": [\n    \"é\"\n  ],\n  \"b\": []\n}\n"
        );
    }
}

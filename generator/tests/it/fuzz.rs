//! Robustness: mutated specs never panic the validator, and every rejection
//! carries at least one located diagnostic.

use ggen::diagnostic::Diagnostic;
use ggen::load;
use ggen::validate;
use proptest::prelude::*;
use serde_json::Value;

const VALID: &str = include_str!("../../../specs/cost_guard.json");

/// Validates bytes the way `ggen validate` would, returning the diagnostics.
fn run(bytes: Vec<u8>) -> Result<(), Vec<Diagnostic>> {
    let source = load::from_bytes("fuzz.json", bytes).map_err(|d| vec![d])?;
    match validate::check(&source) {
        Ok(_) => Ok(()),
        Err(validate::ValidateError::Invalid(all)) => Err(all),
        Err(internal) => panic!("internal fault: {internal:?}"),
    }
}

fn assert_reported(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
    if let Err(all) = run(bytes) {
        prop_assert!(!all.is_empty());
        for d in &all {
            prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
            prop_assert!(d.line <= lines, "{d} is past the last line {lines}");
            prop_assert!(!d.message.is_empty(), "{d}");
        }
    }
    Ok(())
}

/// Every JSON pointer of `value`, root included.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                pointers(
                    v,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(serde_json::json!(1.0e308)),
        "[a-zA-Z_ ]{0,12}".prop_map(Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!({"unexpected": [1, {"deeper": null}]})),
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Retype(usize, Value),
    DuplicateLine(usize),
    Byte(usize, u8),
    Truncate(usize),
    Splice(usize, Vec<u8>),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), replacement()).prop_map(|(i, v)| Edit::Retype(i, v)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(i, b)| Edit::Splice(i, b)),
    ]
}

/// Applies an edit to the text of a spec.
fn apply(text: &[u8], edit: &Edit) -> Vec<u8> {
    match edit {
        Edit::Delete(i) | Edit::Retype(i, _) => {
            let Ok(mut value) = serde_json::from_slice::<Value>(text) else {
                return text.to_vec();
            };
            let mut all = Vec::new();
            pointers(&value, String::new(), &mut all);
            let pointer = all[i % all.len()].clone();
            if let Edit::Retype(_, replacement) = edit {
                if let Some(slot) = value.pointer_mut(&pointer) {
                    *slot = replacement.clone();
                }
            } else if let Some((parent, last)) = pointer.rsplit_once('/') {
                match value.pointer_mut(parent) {
                    Some(Value::Object(map)) => {
                        map.remove(&last.replace("~1", "/").replace("~0", "~"));
                    }
                    Some(Value::Array(items)) => {
                        if let Ok(k) = last.parse::<usize>() {
                            items.remove(k);
                        }
                    }
                    _ => {}
                }
            }
            serde_json::to_vec_pretty(&value).unwrap()
        }
        Edit::DuplicateLine(i) => {
            // Repeating a line inside an object repeats its keys.
            let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
            if lines.is_empty() {
                return text.to_vec();
            }
            let k = i % lines.len();
            let mut out = Vec::with_capacity(text.len() * 2);
            for (j, line) in lines.iter().enumerate() {
                out.extend_from_slice(line);
                if j == k {
                    out.extend_from_slice(line);
                }
            }
            out
        }
        Edit::Byte(i, b) => {
            let mut out = text.to_vec();
            if !out.is_empty() {
                let k = i % out.len();
                out[k] = *b;
            }
            out
        }
        Edit::Truncate(i) => text[..i % (text.len() + 1)].to_vec(),
        Edit::Splice(i, bytes) => {
            let mut out = text.to_vec();
            let k = i % (out.len() + 1);
            out.splice(k..k, bytes.iter().copied());
            out
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_never_panic_and_are_located(edits in proptest::collection::vec(edit(), 1..4)) {
        let mut text = VALID.as_bytes().to_vec();
        for e in &edits {
            text = apply(&text, e);
        }
        assert_reported(text)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        assert_reported(bytes)?;
    }
}

#[test]
fn the_unmutated_spec_is_valid() {
    assert!(run(VALID.as_bytes().to_vec()).is_ok());
}

#[test]
fn deep_nesting_is_reported_not_overflowed() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(run(deep.into_bytes()).is_err());
    let deep_objects = format!(
        r#"{{"spec_version": {}1{}}}"#,
        r#"{"a":"#.repeat(5_000),
        "}".repeat(5_000)
    );
    assert!(run(deep_objects.into_bytes()).is_err());
}

//! RFC 8785 examples and the agreement of the serde path with the value walker.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use super::*;

fn both(value: &serde_json::Value) -> String {
    let direct = to_vec(value).unwrap();
    let mut walked = Vec::new();
    write_value(value, &mut walked).unwrap();
    assert_eq!(direct, walked, "to_vec and write_value disagree");
    String::from_utf8(direct).unwrap()
}

/// RFC 8785 §3.2.3: members sorted by UTF-16 code units.
#[test]
fn rfc8785_sorting_example() {
    let value = json!({
        "\u{20ac}": "Euro Sign",
        "\r": "Carriage Return",
        "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\u{1f600}": "Emoji: Grinning Face",
        "\u{80}": "Control",
        "\u{f6}": "Latin Small Letter O With Diaeresis"
    });
    let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
        \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
        \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
    assert_eq!(both(&value), expected);
}

/// RFC 8785 §3.2.2.2 string escaping, with the §3.2.4 example's strings.
#[test]
fn rfc8785_string_escaping() {
    let value = json!({ "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/" });
    assert_eq!(
        both(&value),
        "{\"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
    let value = json!([
        "\u{1f}",
        "\u{8}\t\n\u{c}\r",
        "\u{0}",
        "\u{7f}",
        "\u{2028}",
        "a/b"
    ]);
    assert_eq!(
        both(&value),
        "[\"\\u001f\",\"\\b\\t\\n\\f\\r\",\"\\u0000\",\"\u{7f}\",\"\u{2028}\",\"a/b\"]"
    );
}

/// RFC 8785 §3.2.4 example minus its float members.
#[test]
fn rfc8785_structure_example() {
    let value = json!({
        "literals": [null, true, false],
        "string": "\u{20ac}$\u{000F}\u{000a}A'\u{0042}\u{0022}\u{005c}\\\"/",
        "numbers": [333333333, 4, 2e0 as i64, 0, -0, 9007199254740991_i64, -9007199254740991_i64]
    });
    assert_eq!(
        both(&value),
        "{\"literals\":[null,true,false],\
         \"numbers\":[333333333,4,2,0,0,9007199254740991,-9007199254740991],\
         \"string\":\"\u{20ac}$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
    );
}

#[test]
fn floats_are_refused() {
    assert_eq!(to_vec(&json!({"a": 1.5})), Err(CanonicalError::Float));
    assert_eq!(to_vec(&1.0_f64), Err(CanonicalError::Float));
    let mut out = Vec::new();
    assert_eq!(
        write_value(&json!([0.5]), &mut out),
        Err(CanonicalError::Float)
    );
}

#[test]
fn unsafe_integers_are_refused() {
    assert!(matches!(
        to_vec(&(1_u64 << 53)),
        Err(CanonicalError::IntegerOutOfRange { .. })
    ));
    assert!(matches!(
        to_vec(&i64::MIN),
        Err(CanonicalError::IntegerOutOfRange { .. })
    ));
    assert!(matches!(
        to_vec(&u128::MAX),
        Err(CanonicalError::IntegerOutOfRange { .. })
    ));
    assert_eq!(to_vec(&-42_i8).unwrap(), b"-42");
    assert_eq!(to_vec(&u64::from(u32::MAX)).unwrap(), b"4294967295");
}

#[derive(Serialize)]
struct Inner {
    z: u32,
    a: Option<&'static str>,
}

#[derive(Serialize)]
enum Kind {
    Unit,
    New(u8),
    Tuple(u8, u8),
    Struct { y: u8, b: u8 },
}

#[derive(Serialize)]
struct Outer {
    seq: u64,
    kind: Vec<Kind>,
    inner: Inner,
    map: BTreeMap<String, i32>,
    #[serde(flatten)]
    extra: BTreeMap<u32, bool>,
    bytes: &'static [u8],
    tuple: (char, ()),
}

/// The direct serializer agrees with serde_json + write_value on derived types.
#[test]
fn derived_types_match_value_path() {
    let value = Outer {
        seq: 7,
        kind: vec![
            Kind::Unit,
            Kind::New(1),
            Kind::Tuple(2, 3),
            Kind::Struct { y: 4, b: 5 },
        ],
        inner: Inner { z: 1, a: None },
        map: [("b".into(), 2), ("a".into(), 1), ("\u{e9}".into(), 3)].into(),
        extra: [(10, true), (9, false)].into(),
        bytes: &[1, 2],
        tuple: ('x', ()),
    };
    let direct = String::from_utf8(to_vec(&value).unwrap()).unwrap();
    let mut walked = Vec::new();
    write_value(&serde_json::to_value(&value).unwrap(), &mut walked).unwrap();
    assert_eq!(direct, String::from_utf8(walked).unwrap());
    assert_eq!(
        direct,
        "{\"10\":true,\"9\":false,\"bytes\":[1,2],\"inner\":{\"a\":null,\"z\":1},\
         \"kind\":[\"Unit\",{\"New\":1},{\"Tuple\":[2,3]},{\"Struct\":{\"b\":5,\"y\":4}}],\
         \"map\":{\"a\":1,\"b\":2,\"\u{e9}\":3},\"seq\":7,\"tuple\":[\"x\",null]}"
    );
}

#[test]
fn duplicate_and_non_string_keys_are_refused() {
    #[derive(Serialize)]
    struct Dup {
        b: u8,
        #[serde(flatten)]
        rest: BTreeMap<&'static str, u8>,
    }
    let dup = Dup {
        b: 1,
        rest: [("a", 2), ("b", 3)].into(),
    };
    assert_eq!(
        to_vec(&dup),
        Err(CanonicalError::DuplicateKey { key: "b".into() })
    );
    let bad: BTreeMap<bool, u8> = [(true, 1)].into();
    assert!(matches!(
        to_vec(&bad),
        Err(CanonicalError::KeyNotString { .. })
    ));
}

#[test]
fn utf16_order() {
    assert_eq!(cmp_utf16("\u{1f600}", "\u{fb33}"), Ordering::Less);
    assert_eq!(cmp_utf16("\u{fb33}", "\u{1f600}"), Ordering::Greater);
    assert_eq!(cmp_utf16("a", "ab"), Ordering::Less);
    assert_eq!(cmp_utf16("b", "\u{e9}"), Ordering::Less);
    assert_eq!(cmp_utf16("same", "same"), Ordering::Equal);
}

#[test]
fn escape_scan_finds_specials_at_every_offset() {
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 64, 100] {
        let plain = "a".repeat(len);
        assert!(!super::needs_escape(plain.as_bytes()), "{len}");
        for at in 0..len {
            for special in [b'"', b'\\', b'\n', 0x1f] {
                let mut bytes = plain.clone().into_bytes();
                bytes[at] = special;
                assert!(super::needs_escape(&bytes), "{len} {at} {special}");
            }
        }
    }
    // Non-ASCII is written as is.
    assert!(!super::needs_escape("žluťoučký kůň é€𝄞".as_bytes()));
}

//! JSON from peers, read strictly: an object that names a key twice is refused.
//!
//! RFC 8259 §4 leaves duplicate names to each parser ("the behavior of software that
//! receives such an object is unpredictable"); serde_json keeps the last. A peer whose
//! document reads one way to keyway and another way to the next parser along (the
//! MCP server behind the gateway, another client of the same authorization server)
//! is either broken or probing for exactly that difference, so keyway takes neither
//! reading. serde_json has no switch for this; [`parse`] is its own `Value` built by
//! a serde visitor that checks each key as the object is read, at every depth, with
//! serde_json's own recursion limit.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Parse `bytes` as one JSON value (whitespace around it allowed), refusing an
/// object with a repeated key anywhere in it.
pub fn parse(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parse `text` as [`parse`] does.
pub fn parse_str(text: &str) -> Result<Value, serde_json::Error> {
    parse(text.as_bytes())
}

/// The seed and visitor: a `Value`, with every object's keys unique.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json hands only finite numbers here; `from_f64` says None otherwise.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "the key {:?} appears twice in one object",
                    shown(&key)
                )));
            }
            let value = map.next_value_seed(Strict)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A key as an error may show it.
fn shown(key: &str) -> String {
    crate::text::shown(key, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_read_as_serde_json_reads_them() {
        for text in [
            r#"{"a":1,"b":[true,null,"x",{"c":-2.5}],"d":{"e":{}}}"#,
            " [1, 2, 18446744073709551615, -9223372036854775808] ",
            r#""\u00e9\ud83d\ude00""#,
            "1e308",
        ] {
            assert_eq!(
                parse_str(text).unwrap(),
                serde_json::from_str::<Value>(text).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn a_repeated_key_is_refused_at_any_depth() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"[{"x":[{"k":1,"\u006b":2}]}]"#,
        ] {
            let e = parse_str(text).unwrap_err().to_string();
            assert!(e.contains("appears twice"), "{text}: {e}");
        }
        // The same key in sibling objects is no repetition.
        assert!(parse_str(r#"[{"a":1},{"a":2}]"#).is_ok());
    }

    #[test]
    fn what_serde_json_refuses_is_refused() {
        for text in ["", "{", "{}x", "[1,]", "\"\\ud800\"x", "NaN"] {
            assert!(parse_str(text).is_err(), "{text}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(parse_str(&deep).is_err(), "recursion is limited");
    }

    #[test]
    fn the_error_shows_the_key_printable_and_short() {
        let key = format!("\u{1b}[31m{}", "k".repeat(500));
        let text = format!(r#"{{"{0}":1,"{0}":2}}"#, key.replace('\u{1b}', "\\u001b"));
        let e = parse_str(&text).unwrap_err().to_string();
        assert!(!e.contains('\u{1b}') && e.len() < 200, "{e}");
    }
}

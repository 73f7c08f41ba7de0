//! JSON parsing that refuses duplicate object keys.
//!
//! `serde_json` keeps the last of two equal keys (`{"add":1,"add":2}` reads as
//! `{"add":2}`), so two components that parse the same body differently could disagree
//! on what it says. The API refuses such bodies instead: [`from_slice`] parses into a
//! [`Value`] through a visitor that fails on a repeated key at any depth, then
//! deserializes the wanted type from that value. Nesting depth stays bounded by
//! `serde_json`'s recursion limit (128).

use std::any::Any;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Parses `bytes` as one JSON document into `T`, refusing duplicate keys and trailing
/// content. The error is a message for a 400.
pub(crate) fn from_slice<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = deserializer
        .deserialize_any(StrictVisitor)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|e| format!("malformed JSON body: {e}"))?;
    // A `Value` wanted (most routes): the parsed one as it is, not rebuilt by
    // deserializing it into another `Value`.
    let mut parsed = Some(value);
    if let Some(wanted) = (&mut parsed as &mut dyn Any).downcast_mut::<Option<T>>() {
        if let Some(value) = wanted.take() {
            return Ok(value);
        }
    }
    let value = parsed.unwrap_or_default();
    T::deserialize(value).map_err(|e| format!("unexpected JSON body: {e}"))
}

/// Builds a [`Value`], failing on a duplicate key.
struct StrictVisitor;

/// One value inside a sequence or map, parsed strictly.
struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
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
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for bad in [
            r#"{"add":1,"add":2}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"[{"x":[{"k":null,"k":null}]}]"#,
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let error = from_slice::<Value>(bad.as_bytes()).unwrap_err();
            assert!(error.contains("duplicate key"), "{bad}: {error}");
        }
        let value: Value =
            from_slice(br#"{"a":[1,-2,3.5,"s",true,null,{"b":{}}],"c":{"a":1}}"#).unwrap();
        assert_eq!(
            value,
            json!({"a":[1,-2,3.5,"s",true,null,{"b":{}}],"c":{"a":1}})
        );
        assert!(from_slice::<Value>(b"{} {}").is_err(), "trailing content");
        assert!(from_slice::<Value>(b"").is_err());
        let deep = "[".repeat(10_000);
        assert!(from_slice::<Value>(deep.as_bytes()).is_err());
    }
}

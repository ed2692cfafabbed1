//! YAML documents -> JSON values, the way the Kubernetes YAML decoder
//! (sigs.k8s.io/yaml, which converts YAML to JSON before decoding) reads
//! them:
//!
//! - a key that appears twice in one mapping is an error (the API server's
//!   strict decoding refuses it; a plain map would silently keep the last
//!   value, so `image:` written twice would run the wrong image);
//! - scalar keys that are not strings (`1: a`, `true: b`) become strings, as
//!   JSON object keys must be;
//! - floats JSON cannot hold (`.nan`, `.inf`) are errors.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Where the first duplicate key was found, as a field path
/// (`spec.containers[0].image`), so the error can name the field.
#[derive(Default)]
pub struct Duplicates(RefCell<Option<String>>);

impl Duplicates {
    pub fn take(&self) -> Option<String> {
        self.0.borrow_mut().take()
    }
}

/// Deserializes one value at `path`, refusing duplicate keys.
pub struct Strict<'a> {
    pub path: String,
    pub duplicates: &'a Duplicates,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value that JSON can represent")
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
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{}: {v} is not a JSON number", self.path)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
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
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            path: format!("{}[{}]", self.path, out.len()),
            duplicates: self.duplicates,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let path = child(&self.path, &key);
            if out.contains_key(&key) {
                let msg = format!("{path}: duplicate key {key:?}");
                *self.duplicates.0.borrow_mut() = Some(path);
                return Err(de::Error::custom(msg));
            }
            let value = map.next_value_seed(Strict {
                path,
                duplicates: self.duplicates,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping key: any scalar, as a string.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Key {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Value, (String, Option<String>)> {
        let dups = Duplicates::default();
        let de = serde_norway::Deserializer::from_str(text);
        Strict {
            path: String::new(),
            duplicates: &dups,
        }
        .deserialize(de)
        .map_err(|e| (e.to_string(), dups.take()))
    }

    #[test]
    fn duplicate_keys_name_their_path() {
        let err =
            parse("spec:\n  containers:\n  - name: a\n    image: x\n    image: y\n").unwrap_err();
        assert_eq!(err.1.as_deref(), Some("spec.containers[0].image"));
        assert!(err.0.contains("duplicate key"), "{}", err.0);
        let err = parse("kind: Pod\nkind: Pod\n").unwrap_err();
        assert_eq!(err.1.as_deref(), Some("kind"));
    }

    #[test]
    fn scalar_keys_become_strings_and_values_are_kept() {
        let v = parse("data:\n  1: a\n  true: b\nn: 1.5\nlist: [1, x, null]\n").unwrap();
        assert_eq!(v["data"]["1"], "a");
        assert_eq!(v["data"]["true"], "b");
        assert_eq!(v["n"], 1.5);
        assert_eq!(v["list"], serde_json::json!([1, "x", null]));
    }

    #[test]
    fn nan_is_refused() {
        assert!(parse("a: .nan\n").is_err());
    }
}

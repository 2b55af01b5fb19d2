//! Deserializers that refuse an object naming a key twice, for the model's maps.
//!
//! serde keeps the last of two equal keys in a map (a release's `phases`, `phase_details`,
//! `outputs`, unknown fields kept verbatim), so `{"build": "completed", "build": "failed"}`
//! silently read as failed. The original tool never wrote such a file; one that has it was
//! edited by hand or damaged, and guessing which value was meant could turn a completed release
//! into a failed one. So every map of the model, and every object inside the unknown values it
//! keeps, is read with these, and a duplicate is an error naming the key (serde_json adds the
//! line and column). Duplicate *fields* of the model's structs are refused by serde itself
//! (`duplicate field `serial``). The check happens while parsing, so it costs no second pass
//! over the file.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

fn duplicate<E: de::Error>(key: &str, within: &str) -> E {
    E::custom(format!("duplicate key {key:?} in {within}"))
}

/// `phases`: a map of phase names to `T`, refusing a name given twice.
pub(super) fn phases<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_map(UniqueMap::<T>("phases", PhantomData))
}

/// `phase_details`: as [`phases`].
pub(super) fn phase_details<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_map(UniqueMap::<T>("phase_details", PhantomData))
}

/// `outputs`: as [`phases`].
pub(super) fn outputs<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    d.deserialize_map(UniqueMap::<T>("outputs", PhantomData))
}

struct UniqueMap<T>(&'static str, PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for UniqueMap<T> {
    type Value = BTreeMap<String, T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object ({})", self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            match out.entry(key) {
                std::collections::btree_map::Entry::Occupied(taken) => {
                    return Err(duplicate(taken.key(), self.0));
                }
                std::collections::btree_map::Entry::Vacant(slot) => {
                    slot.insert(map.next_value()?);
                }
            }
        }
        Ok(out)
    }
}

/// Unknown fields kept verbatim (`#[serde(flatten)]`), and every object inside them.
pub(super) fn unknown_fields<'de, D>(d: D) -> Result<Map<String, Value>, D::Error>
where
    D: Deserializer<'de>,
{
    d.deserialize_map(StrictObject("the unknown fields"))
}

/// A JSON value whose objects, at any depth, name no key twice.
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
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
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
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
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictValue)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        StrictObject("an object").visit_map(map).map(Value::Object)
    }
}

/// An object of strict values, refusing a key given twice; the `&str` names it in errors.
struct StrictObject(&'static str);

impl<'de> Visitor<'de> for StrictObject {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(duplicate(&key, self.0));
            }
            let value = map.next_value_seed(StrictValue)?;
            out.insert(key, value);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::state::{Release, State};

    fn err<T: serde::de::DeserializeOwned + std::fmt::Debug>(json: &str) -> String {
        serde_json::from_str::<T>(json).unwrap_err().to_string()
    }

    const RELEASE: &str = r#""id": "rel-20261125-060000", "environment": "prod", "version": "v1", "timestamp": "2026-11-25T06:00:00Z""#;

    #[test]
    fn a_duplicate_in_any_map_of_a_release_is_refused_naming_the_key() {
        let e = err::<Release>(&format!(
            r#"{{{RELEASE}, "phases": {{"build": "completed", "build": "failed"}}}}"#
        ));
        assert!(
            e.starts_with("duplicate key \"build\" in phases at line 1"),
            "{e}"
        );
        let e = err::<Release>(&format!(
            r#"{{{RELEASE}, "phase_details": {{"build": {{}}, "build": {{}}}}}}"#
        ));
        assert!(
            e.starts_with("duplicate key \"build\" in phase_details"),
            "{e}"
        );
        let e = err::<Release>(&format!(
            r#"{{{RELEASE}, "phase_details": {{"build": {{"outputs": {{"a": "1", "a": "2"}}}}}}}}"#
        ));
        assert!(e.starts_with("duplicate key \"a\" in outputs"), "{e}");
        let e = err::<Release>(&format!(r#"{{{RELEASE}, "by": "a", "by": "b"}}"#));
        assert!(
            e.starts_with("duplicate key \"by\" in the unknown fields"),
            "{e}"
        );
        let e = err::<Release>(&format!(
            r#"{{{RELEASE}, "deep": [{{"x": {{"k": 1, "k": 2}}}}]}}"#
        ));
        assert!(e.starts_with("duplicate key \"k\" in an object"), "{e}");
        // Keys equal once unescaped are the same key.
        let e = err::<Release>(&format!(r#"{{{RELEASE}, "a": 1, "\u0061": 2}}"#));
        assert!(e.starts_with("duplicate key \"a\""), "{e}");
    }

    #[test]
    fn duplicate_fields_and_top_level_keys_are_refused_too() {
        let e = err::<State>(r#"{"serial": 1, "serial": 2}"#);
        assert!(e.starts_with("duplicate field `serial`"), "{e}");
        let e = err::<State>(r#"{"custom": 1, "custom": 2}"#);
        assert!(e.starts_with("duplicate key \"custom\""), "{e}");
    }

    #[test]
    fn distinct_keys_and_unknown_values_of_every_kind_round_trip() {
        let json = format!(
            r#"{{{RELEASE}, "phases": {{"build": "completed", "push": "failed"}}, "x": [1, -2, 1.5, "s", null, true, {{"a": {{"a": []}}}}]}}"#
        );
        let release: Release = serde_json::from_str(&json).unwrap();
        assert_eq!(release.phases.len(), 2);
        assert_eq!(
            release.extra["x"],
            serde_json::json!([1, -2, 1.5, "s", null, true, {"a": {"a": []}}])
        );
    }
}

//! Refuses a JSON document in which any object names a key twice.
//!
//! serde keeps the last of two equal keys in a map (a release's `phases`, `phase_details`,
//! unknown fields kept verbatim), so `{"build": "completed", "build": "failed"}` silently read as
//! failed. The original tool never wrote such a file; one that has it was edited by hand or
//! damaged, and guessing which value was meant could turn a completed release into a failed one.
//! So every object at every depth is checked, and a duplicate is a state error naming the key
//! and where it is (`releases[0].phases`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Walk `bytes` as JSON and fail at the first duplicate key (a serde_json data error with its
/// line and column), or at the first syntax error, as parsing it would.
pub(super) fn check(bytes: &[u8]) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let path = RefCell::new(Vec::new());
    Walk { path: &path }.deserialize(&mut de)?;
    de.end()
}

/// A step from the document's root to a value.
enum Step<'de> {
    Key(Cow<'de, str>),
    Index(usize),
}

/// `releases[0].phases` (empty at the root).
fn render(path: &[Step<'_>]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Visits one value; the path to it is shared by the whole walk.
struct Walk<'p, 'de> {
    path: &'p RefCell<Vec<Step<'de>>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for i in 0.. {
            self.path.borrow_mut().push(Step::Index(i));
            let more = seq.next_element_seed(Walk { path: self.path })?;
            self.path.borrow_mut().pop();
            if more.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // Objects are small (a release has about a dozen keys): a list is faster than a set
        // until one is not.
        const LIST_UP_TO: usize = 32;
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        let mut many: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let duplicate = if seen.len() < LIST_UP_TO {
                seen.contains(&key)
            } else {
                if many.is_empty() {
                    many.extend(seen.iter().cloned());
                }
                many.contains(&key)
            };
            if duplicate {
                let at = render(&self.path.borrow());
                let within = if at.is_empty() {
                    String::new()
                } else {
                    format!(" in {at}")
                };
                return Err(de::Error::custom(format!("duplicate key {key:?}{within}")));
            }
            self.path.borrow_mut().push(Step::Key(key.clone()));
            map.next_value_seed(Walk { path: self.path })?;
            self.path.borrow_mut().pop();
            if seen.len() < LIST_UP_TO {
                seen.push(key);
            } else {
                many.insert(key);
            }
        }
        Ok(())
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    fn err(json: &str) -> String {
        check(json.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn a_duplicate_at_any_depth_is_named_with_its_path() {
        assert_eq!(
            err(r#"{"releases": [{"phases": {"build": "completed", "build": "failed"}}]}"#),
            "duplicate key \"build\" in releases[0].phases at line 1 column 55"
        );
        assert!(err(r#"{"serial": 1, "serial": 2}"#).starts_with("duplicate key \"serial\" at"));
        assert!(err(r#"{"x": [{}, {"a": {"b": 1, "b": 1}}]}"#)
            .starts_with("duplicate key \"b\" in x[1].a at"));
        // Keys equal once unescaped are the same key.
        assert!(err(r#"{"a": 1, "\u0061": 2}"#).starts_with("duplicate key \"a\""));
    }

    #[test]
    fn large_objects_are_checked_too_and_distinct_keys_pass() {
        let keys: Vec<String> = (0..100).map(|i| format!("\"k{i}\": {i}")).collect();
        let doc = format!("{{{}}}", keys.join(", "));
        check(doc.as_bytes()).unwrap();
        let doc = format!("{{{}, \"k77\": 0}}", keys.join(", "));
        assert!(check(doc.as_bytes())
            .unwrap_err()
            .to_string()
            .starts_with("duplicate key \"k77\""));
        check(br#"{"a": {"a": {"a": [1, "a", null, true, 1.5]}}}"#).unwrap();
    }

    #[test]
    fn syntax_errors_and_trailing_bytes_are_errors_as_in_parsing() {
        assert!(check(b"{\"a\": ").is_err());
        assert!(check(b"{} x").is_err());
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(err(&deep).contains("recursion limit exceeded"));
    }
}

//! Which user(s) an event belongs to: per event type, a list of dotted JSON paths (default
//! `data.attributes.user_id`). Every path that resolves to a non-empty string or a number
//! names a user; an event named by several paths (a buyer and a seller) goes into each of
//! their histories once. Lookups walk the raw JSON, skipping what is not on the path,
//! without building a `Value`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The default path of the user.
pub const DEFAULT_USER_PATH: &str = "data.attributes.user_id";
/// Longest user id kept (DynamoDB partition keys hold up to 2048 bytes).
pub const MAX_USER_BYTES: usize = 1024;

/// The configured paths, per type and by default.
#[derive(Debug, Clone)]
pub struct UserPaths {
    default: Vec<Vec<String>>,
    per_type: BTreeMap<String, Vec<Vec<String>>>,
}

fn split(path: &str) -> Result<Vec<String>, String> {
    let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
    if path.is_empty() || parts.iter().any(String::is_empty) {
        return Err(format!("invalid JSON path {path:?}: use dotted keys like data.attributes.user_id"));
    }
    Ok(parts)
}

impl UserPaths {
    /// Paths from the configuration (dotted keys).
    pub fn new(default: &[String], per_type: &BTreeMap<String, Vec<String>>) -> Result<UserPaths, String> {
        if default.is_empty() {
            return Err("default_user_paths is empty".into());
        }
        let default = default.iter().map(|p| split(p)).collect::<Result<Vec<_>, _>>()?;
        let mut map = BTreeMap::new();
        for (t, paths) in per_type {
            if paths.is_empty() {
                return Err(format!("no user path for type {t}"));
            }
            map.insert(t.clone(), paths.iter().map(|p| split(p)).collect::<Result<Vec<_>, _>>()?);
        }
        Ok(UserPaths { default, per_type: map })
    }

    /// The paths of a type.
    pub fn for_type(&self, event_type: &str) -> &[Vec<String>] {
        self.per_type.get(event_type).map(Vec::as_slice).unwrap_or(&self.default)
    }

    /// The distinct users of an event (in path order). `attributes` is `data.attributes`
    /// already split out (paths below it are resolved from there).
    pub fn users(&self, event_type: &str, root: &str, attributes: Option<&RawValue>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for path in self.for_type(event_type) {
            let found = match (path.first().map(String::as_str), path.get(1).map(String::as_str), attributes) {
                (Some("data"), Some("attributes"), Some(a)) => lookup(a.get(), &path[2..]),
                _ => lookup(root, path),
            };
            if let Some(u) = found.and_then(|raw| user_text(raw.get()))
                && !out.contains(&u)
            {
                out.push(u);
            }
        }
        out
    }
}

/// A user id from a JSON value: a non-empty string or a number, bounded in size.
fn user_text(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let text = if raw.starts_with('"') {
        serde_json::from_str::<Cow<'_, str>>(raw).ok()?.into_owned()
    } else if raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        raw.to_owned()
    } else {
        return None;
    };
    (!text.is_empty() && text.len() <= MAX_USER_BYTES).then_some(text)
}

/// The raw value at `path` below the JSON object `json`, if any.
fn lookup<'a>(json: &'a str, path: &[String]) -> Option<&'a RawValue> {
    let mut current: &'a RawValue = serde_json::from_str(json).ok()?;
    for key in path {
        let mut de = serde_json::Deserializer::from_str(current.get());
        current = FindKey(key).deserialize(&mut de).ok()??;
    }
    Some(current)
}

/// Finds one key of a JSON object, skipping the other values unparsed.
struct FindKey<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FindKey<'_> {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            if found.is_none() && k == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(default: &[&str], per: &[(&str, &[&str])]) -> UserPaths {
        let d: Vec<String> = default.iter().map(|s| s.to_string()).collect();
        let m = per.iter().map(|(t, p)| (t.to_string(), p.iter().map(|s| s.to_string()).collect())).collect();
        UserPaths::new(&d, &m).expect("paths")
    }

    #[test]
    fn finds_users_by_type_and_skips_the_rest() {
        let p = paths(&[DEFAULT_USER_PATH], &[("product_sold", &["data.attributes.user_id", "data.attributes.owner_id", "meta.actor.id"])]);
        let ev = r#"{"data":{"id":"e1","type":"product_sold","attributes":{"big":[1,{"user_id":"no"}],"user_id":"u1","owner_id":"u2"}},"meta":{"created_at":1,"actor":{"id":7}}}"#;
        let attrs: &RawValue = serde_json::from_str(r#"{"big":[1,{"user_id":"no"}],"user_id":"u1","owner_id":"u2"}"#).expect("raw");
        assert_eq!(p.users("product_sold", ev, Some(attrs)), vec!["u1", "u2", "7"]);
        assert_eq!(p.users("product_viewed", ev, Some(attrs)), vec!["u1"]);
        let none = r#"{"data":{"id":"e1","type":"x","attributes":{"user_id":null}},"meta":{"created_at":1}}"#;
        let a: &RawValue = serde_json::from_str(r#"{"user_id":null}"#).expect("raw");
        assert!(p.users("x", none, Some(a)).is_empty());
        let same = paths(&["data.attributes.user_id", "data.attributes.buyer"], &[]);
        let a: &RawValue = serde_json::from_str(r#"{"user_id":"u\"1","buyer":"u\"1"}"#).expect("raw");
        assert_eq!(same.users("x", "{}", Some(a)), vec!["u\"1"]);
    }

    #[test]
    fn rejects_bad_paths() {
        assert!(UserPaths::new(&["data..x".into()], &BTreeMap::new()).is_err());
        assert!(UserPaths::new(&[], &BTreeMap::new()).is_err());
    }
}

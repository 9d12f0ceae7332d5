//! Which user(s) an event belongs to: per event type, a list of dotted JSON paths (default
//! `data.attributes.user_id`). Every path that resolves to a non-empty string or an integer
//! names a user; an event named by several paths (a buyer and a seller) goes into each of
//! their histories once. Paths are resolved on the event's [`EventView`] (the slice they
//! start in, scanned up to the key), without building a `Value`.

use std::collections::BTreeMap;

use event_contract::wire::{EventView, FieldPath, id_text};

/// The default path of the user.
pub const DEFAULT_USER_PATH: &str = "data.attributes.user_id";
/// Longest user id kept (DynamoDB partition keys hold up to 2048 bytes).
pub const MAX_USER_BYTES: usize = 1024;

/// The configured paths, per type and by default.
#[derive(Debug, Clone)]
pub struct UserPaths {
    default: Vec<FieldPath>,
    per_type: BTreeMap<String, Vec<FieldPath>>,
}

impl UserPaths {
    /// Paths from the configuration (dotted keys).
    pub fn new(default: &[String], per_type: &BTreeMap<String, Vec<String>>) -> Result<UserPaths, String> {
        if default.is_empty() {
            return Err("default_user_paths is empty".into());
        }
        let default = default.iter().map(|p| FieldPath::parse(p)).collect::<Result<Vec<_>, _>>()?;
        let mut map = BTreeMap::new();
        for (t, paths) in per_type {
            if paths.is_empty() {
                return Err(format!("no user path for type {t}"));
            }
            map.insert(t.clone(), paths.iter().map(|p| FieldPath::parse(p)).collect::<Result<Vec<_>, _>>()?);
        }
        Ok(UserPaths { default, per_type: map })
    }

    /// The paths of a type.
    pub fn for_type(&self, event_type: &str) -> &[FieldPath] {
        self.per_type.get(event_type).map(Vec::as_slice).unwrap_or(&self.default)
    }

    /// The distinct users of an event (in path order).
    pub fn users(&self, event: &EventView<'_>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for path in self.for_type(&event.event_type) {
            if let Some(u) = event.get(path).and_then(id_text).filter(|u| u.len() <= MAX_USER_BYTES)
                && !out.iter().any(|o| *o == *u)
            {
                out.push(u.into_owned());
            }
        }
        out
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

    fn view(ev: &str) -> EventView<'_> {
        EventView::parse(ev.as_bytes()).expect("event")
    }

    #[test]
    fn finds_users_by_type_and_skips_the_rest() {
        let p = paths(&[DEFAULT_USER_PATH], &[("product_sold", &["data.attributes.user_id", "data.attributes.owner_id", "meta.actor.id"])]);
        let ev = r#"{"data":{"id":"e1","type":"product_sold","attributes":{"big":[1,{"user_id":"no"}],"user_id":"u1","owner_id":"u2"}},"meta":{"created_at":1,"actor":{"id":7}}}"#;
        assert_eq!(p.users(&view(ev)), vec!["u1", "u2", "7"]);
        let other = ev.replace("product_sold", "product_viewed");
        assert_eq!(p.users(&view(&other)), vec!["u1"]);
        let none = r#"{"data":{"id":"e1","type":"x","attributes":{"user_id":null}},"meta":{"created_at":1}}"#;
        assert!(p.users(&view(none)).is_empty());
        let same = paths(&["data.attributes.user_id", "data.attributes.buyer"], &[]);
        let ev = r#"{"data":{"id":"e1","type":"x","attributes":{"user_id":"u\"1","buyer":"u\"1"}},"meta":{"created_at":1}}"#;
        assert_eq!(same.users(&view(ev)), vec!["u\"1"]);
        let long = format!(r#"{{"data":{{"id":"e1","type":"x","attributes":{{"user_id":"{}"}}}},"meta":{{"created_at":1}}}}"#, "u".repeat(MAX_USER_BYTES + 1));
        assert!(same.users(&view(&long)).is_empty(), "user ids beyond the bound are not users");
    }

    #[test]
    fn rejects_bad_paths() {
        assert!(UserPaths::new(&["data..x".into()], &BTreeMap::new()).is_err());
        assert!(UserPaths::new(&[], &BTreeMap::new()).is_err());
    }
}

//! Metric definitions (configuration) and the extraction of counts from an event.
//!
//! A metric has a name, the event types that count, the attribute naming the credited user
//! (a favorite counts for the product's owner: `owner_id`), an optional filter on another
//! attribute, and optionally an attribute whose distinct values are counted instead of the
//! events (`distinct = "product_id"`: one product contacted by 40 buyers counts once). An
//! event is read through the contract's [`EventView`]: its type and `meta.created_at`
//! borrowed, and only the credited, filtered and distinct attributes looked up.

use std::borrow::Cow;
use std::collections::HashMap;

use event_contract::wire::EventView;
use serde::{Deserialize, Serialize};

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// One metric: which events count, for whom.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricDef {
    /// Its name in the API (`[a-z0-9_]`).
    pub name: String,
    /// Event types (`data.type`) that count.
    pub event_types: Vec<String>,
    /// The attribute holding the id of the user credited with the event.
    pub credit: String,
    /// Only events whose attribute `field` equals `equals` count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// Count the distinct values of this attribute (a string of 1 to [`MAX_VALUE_BYTES`]
    /// bytes, or an integer) per user and day instead of the events; events without it do
    /// not count. Window totals are then distinct unions over the days, not sums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<String>,
    /// Distinct metrics: at most this many values are kept per (user, day) (the memory
    /// bound); further values are not counted (`stats_distinct_capped_total`).
    #[serde(default = "default_max_distinct_per_day")]
    pub max_distinct_per_day: u32,
}

/// The default bound on distinct values per (user, day) of a distinct metric.
pub const DEFAULT_MAX_DISTINCT_PER_DAY: u32 = 10_000;

fn default_max_distinct_per_day() -> u32 {
    DEFAULT_MAX_DISTINCT_PER_DAY
}

/// Longest user id or distinct value, in bytes (longer ones do not count).
pub const MAX_VALUE_BYTES: usize = 256;

impl MetricDef {
    /// A metric counting events of one type for the user named by `credit`.
    pub fn count(name: &str, event_type: &str, credit: &str) -> MetricDef {
        MetricDef {
            name: name.into(),
            event_types: vec![event_type.into()],
            credit: credit.into(),
            filter: None,
            distinct: None,
            max_distinct_per_day: DEFAULT_MAX_DISTINCT_PER_DAY,
        }
    }

    /// A metric counting the distinct values of `attribute` in events of one type.
    pub fn distinct(name: &str, event_type: &str, credit: &str, attribute: &str) -> MetricDef {
        MetricDef { distinct: Some(attribute.into()), ..MetricDef::count(name, event_type, credit) }
    }

    /// True when it counts distinct values.
    pub fn is_distinct(&self) -> bool {
        self.distinct.is_some()
    }
}

/// An equality filter on a top-level attribute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The attribute.
    pub field: String,
    /// The JSON value it must equal (string, number, boolean).
    pub equals: serde_json::Value,
}

/// The shipped metrics, matching the business events of the platform (`eventctl gen`).
pub fn default_metrics() -> Vec<MetricDef> {
    vec![
        // Distinct products of the user (the owner) that buyers contacted: one product
        // contacted by 40 buyers is one product.
        MetricDef::distinct("products_contacted", "product_contacted", "owner_id", "product_id"),
        // Favorites of the user's products (the owner): every favorite counts.
        MetricDef::count("favorites_received", "product_favorited", "owner_id"),
        // Views of the user's products (the owner).
        MetricDef::count("views_received", "product_viewed", "owner_id"),
        // Conversations the user started about a product.
        MetricDef::count("conversations_started", "conversation_started", "user_id"),
        // Distinct products the user sold (the seller, `owner_id`; `user_id` is the buyer).
        MetricDef::distinct("products_sold", "product_sold", "owner_id", "product_id"),
    ]
}

/// Checks names (unique, `[a-z0-9_]`, at most 64) and that every metric counts something.
pub fn validate_metrics(metrics: &[MetricDef]) -> Result<(), String> {
    if metrics.is_empty() {
        return Err("at least one metric is needed".into());
    }
    if metrics.len() > 64 {
        return Err("at most 64 metrics".into());
    }
    let mut seen = std::collections::HashSet::new();
    for m in metrics {
        if m.name.is_empty() || m.name.len() > 64 || !m.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(format!("metric name {:?} must be 1-64 characters of [a-z0-9_]", m.name));
        }
        if !seen.insert(m.name.as_str()) {
            return Err(format!("metric {:?} is defined twice", m.name));
        }
        if m.event_types.is_empty() || m.event_types.iter().any(String::is_empty) {
            return Err(format!("metric {:?}: event_types must list at least one type", m.name));
        }
        if m.credit.is_empty() {
            return Err(format!("metric {:?}: credit (the attribute naming the user) is empty", m.name));
        }
        if let Some(f) = &m.filter
            && (f.field.is_empty() || !(f.equals.is_string() || f.equals.is_number() || f.equals.is_boolean()))
        {
            return Err(format!("metric {:?}: filter needs a field and a string, number or boolean", m.name));
        }
        if m.distinct.as_ref().is_some_and(String::is_empty) {
            return Err(format!("metric {:?}: distinct names no attribute", m.name));
        }
        if m.max_distinct_per_day == 0 || m.max_distinct_per_day > 1_000_000 {
            return Err(format!("metric {:?}: max_distinct_per_day must be from 1 to 1000000", m.name));
        }
    }
    Ok(())
}

/// The `[[metrics]]` of a TOML file (the stats service's configuration file), or the
/// defaults when the file defines none.
pub fn load_metrics_file(path: &std::path::Path) -> Result<Vec<MetricDef>, String> {
    #[derive(Deserialize)]
    struct OnlyMetrics {
        #[serde(default)]
        metrics: Vec<MetricDef>,
    }
    use figment::providers::{Format, Toml};
    let only: OnlyMetrics = figment::Figment::from(Toml::file_exact(path)).extract().map_err(|e| format!("{}: {e}", path.display()))?;
    let metrics = if only.metrics.is_empty() { default_metrics() } else { only.metrics };
    validate_metrics(&metrics)?;
    Ok(metrics)
}

/// Why an event could not be read.
#[derive(Debug, thiserror::Error)]
#[error("unreadable event: {0}")]
pub struct ParseError(String);

/// What one event contributes.
pub struct Counted<'a> {
    /// The event id (`data.id`).
    pub id: Cow<'a, str>,
    /// The UTC day (days since 1970-01-01) of `meta.created_at`.
    pub day: i32,
}

/// Extracts (user, day, metric) counts from events, for the users of one shard.
#[derive(Debug, Clone)]
pub struct Extractor {
    metrics: Vec<MetricDef>,
    by_type: HashMap<String, Vec<usize>>,
    shard: u32,
    shards: u32,
}

impl Extractor {
    /// For all users (one shard).
    pub fn new(metrics: Vec<MetricDef>) -> Self {
        Self::sharded(metrics, 0, 1)
    }

    /// For the users with `user_shard(user, shards) == shard`.
    pub fn sharded(metrics: Vec<MetricDef>, shard: u32, shards: u32) -> Self {
        let mut by_type: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, m) in metrics.iter().enumerate() {
            for t in &m.event_types {
                by_type.entry(t.clone()).or_default().push(i);
            }
        }
        Extractor { metrics, by_type, shard, shards: shards.max(1) }
    }

    /// The metrics, by index.
    pub fn metrics(&self) -> &[MetricDef] {
        &self.metrics
    }

    /// True when an event of this type may count (cheap pre-check on the bus subject).
    pub fn counts_type(&self, event_type: &str) -> bool {
        self.by_type.contains_key(event_type)
    }

    /// Calls `credit(user, metric_index, value)` for each metric the event counts for (in
    /// this shard; `value` is the distinct value of a distinct metric, `None` for counted
    /// metrics) and returns its id and day; `Ok(None)` when it counts for nothing.
    pub fn extract<'a>(&self, payload: &'a [u8], mut credit: impl FnMut(&str, usize, Option<&str>)) -> Result<Option<Counted<'a>>, ParseError> {
        let ev = EventView::parse(payload).map_err(|e| ParseError(e.to_string()))?;
        let Some(indexes) = self.by_type.get(ev.event_type.as_ref()) else {
            return Ok(None);
        };
        let mut any = false;
        for &i in indexes {
            let m = &self.metrics[i];
            if let Some(f) = &m.filter {
                let matches = ev
                    .attribute(&f.field)
                    .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
                    .is_some_and(|v| v == f.equals);
                if !matches {
                    continue;
                }
            }
            let Some(raw) = ev.attribute(&m.credit) else { continue };
            let Ok(user) = serde_json::from_str::<Cow<'_, str>>(raw) else { continue };
            if user.is_empty() || user.len() > MAX_VALUE_BYTES || user_shard(&user, self.shards) != self.shard {
                continue;
            }
            match &m.distinct {
                None => credit(&user, i, None),
                Some(field) => {
                    let Some(value) = ev.attribute(field).and_then(distinct_value) else { continue };
                    credit(&user, i, Some(&value));
                }
            }
            any = true;
        }
        if !any {
            return Ok(None);
        }
        let day = i32::try_from(ev.created_at.div_euclid(DAY_MS)).map_err(|_| ParseError("created_at out of range".into()))?;
        Ok(Some(Counted { id: ev.id, day }))
    }
}

/// The distinct value of a raw attribute: a string of 1 to [`MAX_VALUE_BYTES`] bytes, or an
/// integer (as its decimal text, so `7` and `"7"` are one value); anything else is `None`.
fn distinct_value(text: &str) -> Option<Cow<'_, str>> {
    if text.starts_with('"') {
        let s = serde_json::from_str::<Cow<'_, str>>(text).ok()?;
        return (!s.is_empty() && s.len() <= MAX_VALUE_BYTES).then_some(s);
    }
    text.parse::<i64>().ok().map(|n| Cow::Owned(n.to_string()))
}

/// The shard of a user: FNV-1a of the id modulo `shards` (stable across releases).
pub fn user_shard(user: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards)) as u32
}

/// Days since 1970-01-01 of a date.
pub fn day_number(d: chrono::NaiveDate) -> i32 {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    (d - epoch).num_days() as i32
}

/// The date of a day number.
pub fn day_date(day: i32) -> chrono::NaiveDate {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    epoch + chrono::Days::new(u64::try_from(day.max(0)).unwrap_or(0))
}

/// Today's UTC day number.
pub fn today() -> i32 {
    chrono::Utc::now().timestamp_millis().div_euclid(DAY_MS) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_the_configured_field_and_applies_filters() {
        let mut metrics = default_metrics();
        metrics.push(MetricDef {
            filter: Some(Filter { field: "price".into(), equals: serde_json::json!(100.5) }),
            ..MetricDef::count("big_sales", "product_sold", "owner_id")
        });
        let x = Extractor::new(metrics);
        let ev = br#"{"data":{"id":"e1","type":"product_sold","attributes":{"user_id":"u1","product_id":"p1","owner_id":"u2","price":100.5,"big":{"a":[1,2]}}},"meta":{"created_at":86400001}}"#;
        let mut got = Vec::new();
        let c = x.extract(ev, |u, m, v| got.push((u.to_owned(), x.metrics()[m].name.clone(), v.map(str::to_owned)))).unwrap().unwrap();
        assert_eq!(c.day, 1);
        assert_eq!(c.id, "e1");
        assert_eq!(
            got,
            vec![("u2".to_owned(), "products_sold".to_owned(), Some("p1".to_owned())), ("u2".to_owned(), "big_sales".to_owned(), None)]
        );
        let other = br#"{"data":{"id":"e2","type":"user_created","attributes":{"user_id":"u1"}},"meta":{"created_at":1}}"#;
        assert!(x.extract(other, |_, _, _| panic!("no metric")).unwrap().is_none());
        assert!(x.extract(b"{not json", |_, _, _| {}).is_err());
    }

    #[test]
    fn distinct_values_are_strings_or_integers() {
        let x = Extractor::new(default_metrics());
        let contacted = |product: &str| {
            format!(r#"{{"data":{{"id":"e","type":"product_contacted","attributes":{{"user_id":"b","owner_id":"s","product_id":{product}}}}},"meta":{{"created_at":0}}}}"#)
        };
        let value = |product: &str| {
            let mut got = None;
            let ev = contacted(product);
            let counted = x.extract(ev.as_bytes(), |u, _, v| got = Some((u.to_owned(), v.map(str::to_owned)))).unwrap().is_some();
            counted.then_some(got)
        };
        assert_eq!(value(r#""p1""#), Some(Some(("s".to_owned(), Some("p1".to_owned())))), "credited to the owner");
        assert_eq!(value("7"), Some(Some(("s".to_owned(), Some("7".to_owned())))));
        for bad in [r#""""#, "1.5", "null", "[1]", "true", &format!("\"{}\"", "x".repeat(MAX_VALUE_BYTES + 1))] {
            assert_eq!(value(bad), None, "{bad} does not count");
        }
    }

    #[test]
    fn shards_partition_users() {
        let x0 = Extractor::sharded(default_metrics(), 0, 2);
        let x1 = Extractor::sharded(default_metrics(), 1, 2);
        let mut n = [0, 0];
        for i in 0..100 {
            let ev = format!(r#"{{"data":{{"id":"e","type":"conversation_started","attributes":{{"user_id":"u{i}"}}}},"meta":{{"created_at":0}}}}"#);
            let a = x0.extract(ev.as_bytes(), |_, _, _| n[0] += 1).unwrap().is_some();
            let b = x1.extract(ev.as_bytes(), |_, _, _| n[1] += 1).unwrap().is_some();
            assert!(a ^ b);
        }
        assert_eq!(n[0] + n[1], 100);
        assert!(n[0] > 20 && n[1] > 20);
    }
}

//! The compact item stored per (user, event): the keys, the type, the attributes when the
//! item still fits its budget (raw JSON, zstd-compressed when that is smaller), where the
//! event sits in the lake, and the TTL of the hot window.
//!
//! Keys: partition key `pk` = the user id, sort key `sk` = the event time in epoch ms,
//! zero-padded to 13 digits, `#`, the event id. A redelivered event has the same keys and
//! overwrites its own item; the sort key orders a user's events by time (ties by id).

use std::sync::Arc;

use event_contract::wire::EventView;
use event_lake::PartitionKey;
use serde_json::value::RawValue;

use crate::user::UserPaths;

/// Attribute names, short on purpose: DynamoDB bills attribute names as item bytes.
pub mod attr {
    /// Partition key: the user id.
    pub const PK: &str = "pk";
    /// Sort key: `<created_at ms, 13 digits>#<event id>`.
    pub const SK: &str = "sk";
    /// Event type.
    pub const TYPE: &str = "t";
    /// Attributes as raw JSON text.
    pub const ATTRS_JSON: &str = "a";
    /// Attributes as zstd-compressed JSON.
    pub const ATTRS_ZSTD: &str = "z";
    /// Lake partition of the event: `events/type=<t>/date=<d>/hour=<h>`.
    pub const LAKE: &str = "l";
    /// Expiry, epoch seconds (the table's TTL attribute).
    pub const TTL: &str = "ttl";
}

/// Digits of the time part of the sort key.
pub const TIME_DIGITS: usize = 13;
/// Largest event time a sort key holds.
pub const MAX_TIME_MS: i64 = 9_999_999_999_999;
/// Longest sort key (DynamoDB's limit for a sort key): an event whose id makes it longer
/// can never be stored and is refused (dead-lettered).
pub const MAX_SORT_KEY_BYTES: usize = 1024;

/// The attributes of an event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attrs {
    /// JSON text.
    Json(String),
    /// zstd frame of the JSON text.
    Zstd(Vec<u8>),
}

impl Attrs {
    /// The JSON text back.
    pub fn to_json(&self) -> Result<Box<RawValue>, String> {
        let text = match self {
            Attrs::Json(s) => s.clone(),
            Attrs::Zstd(z) => {
                let bytes = zstd::stream::decode_all(z.as_slice()).map_err(|e| format!("corrupt compressed attributes: {e}"))?;
                String::from_utf8(bytes).map_err(|e| format!("compressed attributes are not UTF-8: {e}"))?
            }
        };
        RawValue::from_string(text).map_err(|e| format!("stored attributes are not JSON: {e}"))
    }

    fn stored_len(&self) -> usize {
        match self {
            Attrs::Json(s) => s.len(),
            Attrs::Zstd(z) => z.len(),
        }
    }
}

/// One stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The user (partition key).
    pub user: String,
    /// The sort key.
    pub sk: String,
    /// Event type.
    pub event_type: String,
    /// Attributes, when they fit the item budget.
    pub attrs: Option<Attrs>,
    /// Lake partition of the event.
    pub lake: String,
    /// Expiry, epoch seconds.
    pub expires_at: i64,
}

/// The sort key of an event.
pub fn sort_key(created_at: i64, id: &str) -> String {
    format!("{:0width$}#{id}", created_at.clamp(0, MAX_TIME_MS), width = TIME_DIGITS)
}

/// The (created_at, id) of a sort key made by [`sort_key`].
pub fn parse_sort_key(sk: &str) -> Option<(i64, String)> {
    let (t, id) = sk.split_once('#')?;
    Some((t.parse().ok()?, id.to_owned()))
}

/// Inclusive sort-key bounds selecting event times in `[from, to)`: no sort key equals
/// `hi` (they all carry `#id` after the time), so BETWEEN lo AND hi is exactly that range.
pub fn range_bounds(from: i64, to: i64) -> (String, String) {
    let f = |t: i64| format!("{:0width$}", t.clamp(0, MAX_TIME_MS), width = TIME_DIGITS);
    (f(from), f(to))
}

impl Item {
    /// The event id (after the `#` of the sort key).
    pub fn id(&self) -> &str {
        self.sk.get(TIME_DIGITS + 1..).unwrap_or("")
    }
    /// The event time, epoch ms.
    pub fn created_at(&self) -> i64 {
        self.sk.get(..TIME_DIGITS).and_then(|t| t.parse().ok()).unwrap_or(0)
    }
    /// The item's size as DynamoDB counts it (attribute names plus values; a number costs
    /// about one byte per two digits plus one).
    pub fn size_bytes(&self) -> usize {
        let s = |name: &str, len: usize| name.len() + len;
        let digits = self.expires_at.max(1).ilog10() as usize + 1;
        s(attr::PK, self.user.len())
            + s(attr::SK, self.sk.len())
            + s(attr::TYPE, self.event_type.len())
            + s(attr::LAKE, self.lake.len())
            + s(attr::TTL, digits.div_ceil(2) + 1)
            + self.attrs.as_ref().map_or(0, |a| s(attr::ATTRS_JSON, a.stored_len()))
    }
}

/// How items are built.
#[derive(Debug, Clone)]
pub struct ItemOptions {
    /// Where the users are.
    pub paths: UserPaths,
    /// Seconds an item lives after its event time.
    pub hot_window_secs: i64,
    /// Attributes are kept only if the whole item stays within this size.
    pub item_budget_bytes: usize,
    /// Attributes from this size on are compressed when that is smaller.
    pub compress_min_bytes: usize,
}

/// What became of one event.
#[derive(Debug)]
pub enum Built {
    /// One item per user of the event.
    Items(Vec<Item>),
    /// No configured path named a user.
    NoUser,
    /// The event is older than the hot window: nothing to store.
    Expired,
    /// Not an event (the lake writer quarantines those).
    Invalid(String),
    /// An event that can never be stored (its sort key would be too long): a dead letter.
    Unstorable(String),
}

/// Builds items; holds a reusable zstd context.
pub struct ItemBuilder {
    opts: Arc<ItemOptions>,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl ItemBuilder {
    /// A builder.
    pub fn new(opts: Arc<ItemOptions>) -> Self {
        ItemBuilder { opts, zstd: zstd::bulk::Compressor::new(3).ok() }
    }

    /// The items of one event (the raw JSON as on the bus), at time `now_secs`.
    pub fn build(&mut self, payload: &[u8], now_secs: i64) -> Built {
        let ev = match EventView::parse(payload) {
            Ok(ev) => ev,
            Err(e) => return Built::Invalid(e.to_string()),
        };
        let created_at = ev.created_at;
        if ev.id.is_empty() || ev.event_type.is_empty() || !(0..=MAX_TIME_MS).contains(&created_at) {
            return Built::Invalid("empty id or type, or created_at out of range".into());
        }
        let expires_at = created_at.div_euclid(1000) + self.opts.hot_window_secs;
        if expires_at <= now_secs {
            return Built::Expired;
        }
        let users = self.opts.paths.users(&ev);
        if users.is_empty() {
            return Built::NoUser;
        }
        let lake = PartitionKey::of(Arc::from(ev.event_type.as_ref()), created_at).dir().to_string();
        let sk = sort_key(created_at, &ev.id);
        if sk.len() > MAX_SORT_KEY_BYTES {
            return Built::Unstorable(format!(
                "data.id is {} bytes: the sort key would be {} bytes, more than DynamoDB's {MAX_SORT_KEY_BYTES}",
                ev.id.len(),
                sk.len()
            ));
        }
        let items = users
            .into_iter()
            .map(|user| Item { user, sk: sk.clone(), event_type: ev.event_type.to_string(), attrs: None, lake: lake.clone(), expires_at })
            .collect::<Vec<_>>();
        // The room left for the attributes in the largest item (users differ in length).
        let base = items.iter().map(Item::size_bytes).max().unwrap_or(0) + attr::ATTRS_JSON.len();
        let room = self.opts.item_budget_bytes.saturating_sub(base);
        let attrs = ev.attributes().and_then(|a| self.encode(a.get(), room));
        let items = items.into_iter().map(|mut it| {
            it.attrs = attrs.clone();
            it
        });
        Built::Items(items.collect())
    }

    /// The attributes as stored within `room` bytes, if they fit: raw when small or when
    /// compression does not pay, zstd otherwise. Attributes far larger than the room (more
    /// than `MAX_RATIO` times) are not even compressed: JSON does not shrink that much, and
    /// 10 KB events would spend most of the consumer's CPU on compression thrown away.
    fn encode(&mut self, json: &str, room: usize) -> Option<Attrs> {
        const MAX_RATIO: usize = 8;
        if json.len() < self.opts.compress_min_bytes {
            return (json.len() <= room).then(|| Attrs::Json(json.to_owned()));
        }
        if json.len() > room.saturating_mul(MAX_RATIO) {
            return None;
        }
        match self.zstd.as_mut().and_then(|c| c.compress(json.as_bytes()).ok()) {
            Some(z) if z.len() < json.len() && z.len() <= room => Some(Attrs::Zstd(z)),
            _ => (json.len() <= room).then(|| Attrs::Json(json.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(budget: usize) -> ItemBuilder {
        let paths = UserPaths::new(&["data.attributes.user_id".into()], &Default::default()).expect("paths");
        ItemBuilder::new(Arc::new(ItemOptions { paths, hot_window_secs: 86_400, item_budget_bytes: budget, compress_min_bytes: 64 }))
    }

    fn items(b: Built) -> Vec<Item> {
        match b {
            Built::Items(v) => v,
            other => panic!("expected items, got {other:?}"),
        }
    }

    #[test]
    fn keys_time_lake_and_ttl() {
        let ev = br#"{"data":{"id":"e-1","type":"product_viewed","attributes":{"user_id":"u7","x":1}},"meta":{"created_at":1700000000123}}"#;
        let it = items(builder(1024).build(ev, 1_700_000_000));
        assert_eq!(it.len(), 1);
        let i = &it[0];
        assert_eq!((i.user.as_str(), i.sk.as_str()), ("u7", "1700000000123#e-1"));
        assert_eq!((i.id(), i.created_at()), ("e-1", 1_700_000_000_123));
        assert_eq!(i.lake, "events/type=product_viewed/date=2023-11-14/hour=22");
        assert_eq!(i.expires_at, 1_700_000_000 + 86_400);
        assert_eq!(i.attrs, Some(Attrs::Json(r#"{"user_id":"u7","x":1}"#.into())));
        assert!(matches!(builder(1024).build(ev, 1_800_000_000), Built::Expired));
        assert!(matches!(builder(1024).build(br#"{"data":{"id":"e","type":"t","attributes":{}},"meta":{"created_at":1}}"#, 0), Built::NoUser));
        assert!(matches!(builder(1024).build(b"{", 0), Built::Invalid(_)));
        let long = format!(r#"{{"data":{{"id":"{}","type":"t","attributes":{{"user_id":"u"}}}},"meta":{{"created_at":1000}}}}"#, "x".repeat(1011));
        assert!(matches!(builder(1024).build(long.as_bytes(), 0), Built::Unstorable(_)), "a 1025-byte sort key");
        let fits = format!(r#"{{"data":{{"id":"{}","type":"t","attributes":{{"user_id":"u"}}}},"meta":{{"created_at":1000}}}}"#, "x".repeat(1010));
        assert!(matches!(builder(1024).build(fits.as_bytes(), 0), Built::Items(_)));
    }

    #[test]
    fn attributes_compressed_when_it_pays_and_dropped_beyond_the_budget() {
        let long = "word ".repeat(100);
        let ev = format!(r#"{{"data":{{"id":"e","type":"t","attributes":{{"user_id":"u","text":"{long}"}}}},"meta":{{"created_at":1000}}}}"#);
        let it = items(builder(1024).build(ev.as_bytes(), 0));
        let Some(a @ Attrs::Zstd(z)) = &it[0].attrs else { panic!("expected compressed attributes") };
        assert!(z.len() < long.len() / 4);
        let back: serde_json::Value = serde_json::from_str(a.to_json().expect("decode").get()).expect("json");
        assert_eq!(back["text"], long.as_str());
        assert!(it[0].size_bytes() <= 1024);

        let mut x = 12345u64;
        let random: String = (0..2000)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                char::from(b'a' + ((x >> 33) % 26) as u8)
            })
            .collect();
        let big = format!(r#"{{"data":{{"id":"e","type":"t","attributes":{{"user_id":"u","k":"{random}"}}}},"meta":{{"created_at":1000}}}}"#);
        let it = items(builder(300).build(big.as_bytes(), 0));
        assert_eq!(it[0].attrs, None, "attributes beyond the budget stay in the lake only");
        assert!(it[0].size_bytes() <= 300);
    }

    #[test]
    fn range_bounds_select_half_open_intervals() {
        let (lo, hi) = range_bounds(1000, 2000);
        let inside = sort_key(1000, "a");
        let last = sort_key(1999, "zzzz");
        let out = sort_key(2000, "");
        assert!(lo <= inside && inside <= hi && last <= hi);
        assert!(out > hi);
        assert!(sort_key(999, "zzz") < lo);
    }
}

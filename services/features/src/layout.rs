//! The counters and windows compiled from the configuration, the bucket arithmetic both
//! stores share, the parsing of a bus message into a hit, and the aggregation of hits into
//! per-product increments.
//!
//! Semantics (also in the README): an event counts at its event time `meta.created_at`,
//! clamped to its arrival time at the updater (`t = min(created_at, arrival)`, so a producer
//! clock running ahead cannot keep an event in the windows longer). Window `w` with bucket
//! size `g` and `n = length / g` buckets holds, at time `now`, the events whose bucket
//! `floor(t / g)` is one of the last `n` buckets, the current one included:
//! `t >= (floor(now / g) - n + 1) * g`. It therefore covers between `length - g` and `length`
//! of time: compared with an exact sliding window `(now - length, now]` it misses at most
//! the events of one bucket span at the old edge, and never counts an older one.

use std::collections::HashMap;

use event_contract::wire::{EventView, event_type_of, id_text};

use crate::config::{CounterSpec, WindowSpec};

/// One window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Name (`1h`).
    pub name: String,
    /// Bucket size, ms.
    pub bucket_ms: i64,
    /// Buckets in the window.
    pub buckets: i64,
}

impl Window {
    /// The bucket of an instant.
    pub fn bucket(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.bucket_ms)
    }

    /// Bucket `b` is inside the window while the current bucket is below `b + buckets` (the
    /// bucket "falls due" at `b + buckets`).
    pub fn due(&self, bucket: i64) -> i64 {
        bucket + self.buckets
    }

    /// Length, ms.
    pub fn length_ms(&self) -> i64 {
        self.bucket_ms * self.buckets
    }

    /// Oldest event time the window counts at `now` (inclusive).
    pub fn start_ms(&self, now_ms: i64) -> i64 {
        (self.bucket(now_ms) - self.buckets + 1) * self.bucket_ms
    }
}

/// Counters and windows.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Counter names, in column order.
    pub counters: Vec<String>,
    /// Windows, in column order.
    pub windows: Vec<Window>,
    types: HashMap<String, (usize, Key)>,
    columns: Vec<String>,
}

/// Where a counted type's product id is.
#[derive(Debug, Clone)]
struct Key {
    path: event_contract::wire::FieldPath,
    /// Every item of a list.
    list: bool,
}

/// What an event counts for: its products (one, or the distinct ones of a list), the counter
/// and the event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The products.
    pub products: Vec<String>,
    /// Counter index.
    pub counter: usize,
    /// Event time, clamped to arrival, ms.
    pub t_ms: i64,
    /// True when the products come from a list.
    pub listed: bool,
}

impl Layout {
    /// From the (validated) configuration.
    pub fn new(counters: &[CounterSpec], windows: &[WindowSpec]) -> Layout {
        let mut types = HashMap::new();
        for (i, c) in counters.iter().enumerate() {
            for t in &c.event_types {
                // Paths are checked with the configuration (a bad one is refused at start).
                let path = c.keys.get(t).map_or(crate::config::DEFAULT_KEY_PATH, String::as_str);
                let Ok((path, list)) = crate::config::parse_key_path(path) else { continue };
                types.insert(t.clone(), (i, Key { path, list }));
            }
        }
        let windows: Vec<Window> = windows
            .iter()
            .map(|w| Window {
                name: w.name.clone(),
                bucket_ms: (w.bucket_secs * 1000) as i64,
                buckets: (w.length_secs / w.bucket_secs.max(1)) as i64,
            })
            .collect();
        let counters: Vec<String> = counters.iter().map(|c| c.name.clone()).collect();
        let columns = counters
            .iter()
            .flat_map(|c| windows.iter().map(move |w| format!("{c}_{}", w.name)))
            .collect();
        Layout { counters, windows, types, columns }
    }

    /// The default counters and windows.
    pub fn default_layout() -> Layout {
        Layout::new(&crate::config::default_counters(), &crate::config::default_windows())
    }

    /// Column names `<counter>_<window>`, counter-major (the order of the values).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Column index of (counter, window).
    pub fn column(&self, counter: usize, window: usize) -> usize {
        counter * self.windows.len() + window
    }

    /// The counter an event type feeds, if any.
    pub fn counter_of(&self, event_type: &str) -> Option<usize> {
        self.types.get(event_type).map(|(c, _)| *c)
    }

    /// The event types counted (one bus consumer each).
    pub fn event_types(&self) -> Vec<String> {
        let mut t: Vec<String> = self.types.keys().cloned().collect();
        t.sort();
        t
    }

    /// The longest window, ms.
    pub fn longest_ms(&self) -> i64 {
        self.windows.iter().map(Window::length_ms).max().unwrap_or(0)
    }

    /// Parses a bus message (`raw-event.<type>`) into what it counts: `None` for a type no
    /// counter counts, or an event without a product id (an empty list, a list of nothing
    /// usable) or a usable `meta.created_at` (such events are skipped and counted in
    /// `features_events_skipped_total`). The ids of a list are deduplicated.
    pub fn hit_of(&self, subject: &str, payload: &[u8], arrival_ms: i64) -> Option<Counted> {
        let event_type = event_type_of(subject).unwrap_or(subject);
        let (counter, key) = self.types.get(event_type)?;
        let ev = EventView::parse(payload).ok()?;
        if ev.created_at < 0 {
            return None;
        }
        let raw = ev.get(&key.path)?;
        let products = if key.list {
            let items: Vec<&serde_json::value::RawValue> = serde_json::from_str(raw).ok()?;
            let mut ids: Vec<String> = items.iter().filter_map(|r| id_text(r.get()).map(std::borrow::Cow::into_owned)).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        } else {
            vec![id_text(raw)?.into_owned()]
        };
        if products.is_empty() {
            return None;
        }
        Some(Counted { products, counter: *counter, t_ms: ev.created_at.min(arrival_ms), listed: key.list })
    }
}

/// One counted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// `attributes.product_id`.
    pub product: String,
    /// Counter index.
    pub counter: usize,
    /// Event time (already clamped to arrival), ms.
    pub t_ms: i64,
    /// Index of the bus source (consumer) in [`Batch::sources`].
    pub source: usize,
    /// Bus position within that source.
    pub seq: u64,
}

/// What the updater writes at once: hits plus the bus positions they advance.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The updater's clock when it writes, ms (decides which windows a late event still
    /// enters).
    pub now_ms: i64,
    /// Names of the bus sources (positions are per source).
    pub sources: Vec<String>,
    /// Counted events.
    pub hits: Vec<Hit>,
    /// Highest position delivered per source in this batch (counted or not).
    pub positions: Vec<(usize, u64)>,
    /// Positions recorded as applied without a hit (a rebuild from the lake marks the bus
    /// positions the lake holds, so that the updater skips them when they come again).
    pub marks: Vec<(usize, u64)>,
    /// The hits' positions are not bus positions (a rebuild's running numbers): they are
    /// counted without being looked up or recorded.
    pub unmarked: bool,
}

/// One increment of one window bucket (and of the window's sum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increment {
    /// Window index.
    pub window: usize,
    /// Counter index.
    pub counter: usize,
    /// Bucket of that window.
    pub bucket: i64,
    /// Events.
    pub delta: i64,
}

/// Hits summed per product and (window, counter, bucket), skipping what is already outside a
/// window at `now` (late events). Sorted by product (and increments by window, counter,
/// bucket) for a deterministic write. One sort of flat tuples, no map per product.
pub fn aggregate<'h>(layout: &Layout, hits: impl IntoIterator<Item = &'h Hit>, now_ms: i64) -> Vec<(&'h str, Vec<Increment>)> {
    let current: Vec<i64> = layout.windows.iter().map(|w| w.bucket(now_ms)).collect();
    let mut flat: Vec<(&'h str, usize, usize, i64)> = Vec::new();
    for h in hits {
        let t = h.t_ms.min(now_ms);
        for (wi, w) in layout.windows.iter().enumerate() {
            let b = w.bucket(t);
            if w.due(b) > current[wi] {
                flat.push((h.product.as_str(), wi, h.counter, b));
            }
        }
    }
    flat.sort_unstable();
    let mut out: Vec<(&'h str, Vec<Increment>)> = Vec::new();
    for run in flat.chunk_by(|a, b| a == b) {
        let (product, window, counter, bucket) = run[0];
        let inc = Increment { window, counter, bucket, delta: run.len() as i64 };
        match out.last_mut() {
            Some((p, list)) if *p == product => list.push(inc),
            _ => out.push((product, vec![inc])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_generator_shape_and_clamps_future_times() {
        let l = Layout::default_layout();
        let ev = br#"{"data":{"id":"x","type":"product_viewed","attributes":{"user_id":"u1","product_id":"p42"}},"meta":{"created_at":5000,"source":"web"}}"#;
        let one = |p: &str, counter, t_ms| Some(Counted { products: vec![p.to_owned()], counter, t_ms, listed: false });
        assert_eq!(l.hit_of("raw-event.product_viewed", ev, 9000), one("p42", 0, 5000));
        assert_eq!(l.hit_of("raw-event.product_viewed", ev, 4000), one("p42", 0, 4000));
        assert_eq!(l.hit_of("raw-event.product_sold", ev, 9000), None);
        let num = br#"{"data":{"id":"n","type":"product_liked","attributes":{"product_id":17}},"meta":{"created_at":1}}"#;
        assert_eq!(l.hit_of("raw-event.product_liked", num, 9), one("17", 1, 1));
        let none = br#"{"data":{"id":"n","type":"product_liked","attributes":{}},"meta":{"created_at":1}}"#;
        assert_eq!(l.hit_of("raw-event.product_liked", none, 9), None);
        // A results page counts one impression for each distinct listed product.
        let page = br#"{"data":{"id":"s","type":"search_results_shown","attributes":{"query":"bike","product_ids":["p1",2,"p1","",null,"p3"]}},"meta":{"created_at":7}}"#;
        assert_eq!(
            l.hit_of("raw-event.search_results_shown", page, 9),
            Some(Counted { products: vec!["2".into(), "p1".into(), "p3".into()], counter: 0, t_ms: 7, listed: true })
        );
        let empty = br#"{"data":{"id":"s","type":"search_results_shown","attributes":{"product_ids":[]}},"meta":{"created_at":7}}"#;
        assert_eq!(l.hit_of("raw-event.search_results_shown", empty, 9), None);
        assert_eq!(l.columns()[0], "impressions_1h");
        assert_eq!(l.columns()[8], "conversations_7d");
    }

    #[test]
    fn window_start_is_bucket_aligned_and_within_one_bucket_of_exact() {
        let w = Window { name: "1h".into(), bucket_ms: 60_000, buckets: 60 };
        let now = 10 * 3_600_000 + 90_500;
        let start = w.start_ms(now);
        assert_eq!(start % 60_000, 0);
        assert!(start > now - w.length_ms() && start <= now - w.length_ms() + 60_000);
    }
}

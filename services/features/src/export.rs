//! Point-in-time feature values for training: for each row of a spine (a product and an
//! instant `ts`), what the online store answers at `ts` for every counter and window, with
//! the same definitions and bucket semantics ([`crate::layout`]), counting every event at
//! its event time `meta.created_at`.
//!
//! At `ts`, window `w` (bucket `g`, `n` buckets) holds the events with
//! `start(ts) <= t <= ts`, where `start(ts) = (floor(ts / g) - n + 1) * g`: the buckets the
//! online store keeps once its expiry ran at `ts`, and the events that happened by then.
//! (The online store counts an event from its arrival on; the export as if it arrived at
//! its event time, which is what a model trained on "the value at `ts`" should see. Events
//! arriving later than their window are counted by neither.)
//!
//! One pass, no replay per row: the events of the spine's products are sorted by
//! (product, counter, time) once; each spine row then takes, per counter and window, the
//! number of times in `[start(ts), ts]` by two binary searches in its product's run. Memory:
//! 16 bytes per counted event of a spine product, plus the spine.

use std::collections::HashMap;

use crate::layout::Layout;

/// The spine: rows of (product, instant), products interned.
#[derive(Debug, Default, Clone)]
pub struct Spine {
    index: HashMap<String, u32>,
    products: Vec<String>,
    rows: Vec<(u32, i64)>,
}

impl Spine {
    /// An empty spine.
    pub fn new() -> Spine {
        Spine::default()
    }

    /// Adds a row.
    pub fn push(&mut self, product: &str, ts: i64) {
        let id = match self.index.get(product) {
            Some(&id) => id,
            None => {
                let id = self.products.len() as u32;
                self.index.insert(product.to_owned(), id);
                self.products.push(product.to_owned());
                id
            }
        };
        self.rows.push((id, ts));
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True without rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The product of a row and its instant.
    pub fn row(&self, i: usize) -> (&str, i64) {
        let (p, ts) = self.rows[i];
        (&self.products[p as usize], ts)
    }

    /// The interned id of a product of the spine (events of other products are not needed).
    pub fn product_id(&self, product: &str) -> Option<u32> {
        self.index.get(product).copied()
    }

    /// Earliest and latest instants (`None` when empty).
    pub fn span(&self) -> Option<(i64, i64)> {
        let min = self.rows.iter().map(|r| r.1).min()?;
        let max = self.rows.iter().map(|r| r.1).max()?;
        Some((min, max))
    }
}

/// The counted events of the spine's products: (product id, counter, event time).
#[derive(Debug, Default)]
pub struct EventTimes {
    events: Vec<(u32, u32, i64)>,
}

impl EventTimes {
    /// No events.
    pub fn new() -> EventTimes {
        EventTimes::default()
    }

    /// One event of a spine product.
    pub fn push(&mut self, product: u32, counter: usize, t_ms: i64) {
        self.events.push((product, counter as u32, t_ms));
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True without events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// The values at every spine row, row-major in spine order: `layout.columns().len()` values
/// per row (`impressions_1h` ... `conversations_7d`); zeros for products without events.
pub fn point_in_time(layout: &Layout, spine: &Spine, events: EventTimes) -> Vec<i64> {
    let counters = layout.counters.len();
    let columns = layout.columns().len();
    let mut events = events.events;
    events.sort_unstable();
    let times: Vec<i64> = events.iter().map(|e| e.2).collect();
    // Per (product, counter), the run of its times in `times`.
    let mut runs: Vec<(usize, usize)> = vec![(0, 0); spine.products.len() * counters];
    let mut k = 0;
    while k < events.len() {
        let (p, c, _) = events[k];
        let end = k + events[k..].iter().take_while(|e| e.0 == p && e.1 == c).count();
        if let Some(r) = runs.get_mut(p as usize * counters + c as usize) {
            *r = (k, end);
        }
        k = end;
    }
    let mut out = vec![0i64; spine.rows.len() * columns];
    for (i, &(p, ts)) in spine.rows.iter().enumerate() {
        for c in 0..counters {
            let (from, to) = runs[p as usize * counters + c];
            let run = &times[from..to];
            if run.is_empty() {
                continue;
            }
            let upto = run.partition_point(|&t| t <= ts);
            for (w, window) in layout.windows.iter().enumerate() {
                let start = window.start_ms(ts);
                let first = run[..upto].partition_point(|&t| t < start);
                out[i * columns + layout.column(c, w)] = (upto - first) as i64;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_buckets_the_online_store_keeps() {
        let layout = Layout::default_layout();
        let mut spine = Spine::new();
        let hour = 3_600_000;
        let ts = 100 * hour + 30 * 60_000 + 5_000; // 100h 30m 5s
        spine.push("p", ts);
        spine.push("q", ts);
        spine.push("p", ts - 2 * hour);
        let p = spine.product_id("p").unwrap();
        let mut ev = EventTimes::new();
        // impressions: inside 1h (bucket-aligned start is 99h31m), exactly at the start, just
        // before it, at ts, after ts; a like 6 days ago.
        for t in [ts - 10 * 60_000, 99 * hour + 31 * 60_000, 99 * hour + 31 * 60_000 - 1, ts, ts + 1] {
            ev.push(p, 0, t);
        }
        ev.push(p, 1, ts - 6 * 24 * hour);
        let v = point_in_time(&layout, &spine, ev);
        let cols = layout.columns().len();
        let row = |i: usize| &v[i * cols..(i + 1) * cols];
        // impressions_1h, _1d, _7d; likes_1h, _1d, _7d; conversations ...
        assert_eq!(row(0), &[3, 4, 4, 0, 0, 1, 0, 0, 0]);
        assert_eq!(row(1), &[0; 9]);
        // Two hours earlier: every impression is in its future; the like is in the 7d window.
        assert_eq!(row(2), &[0, 0, 0, 0, 0, 1, 0, 0, 0]);
    }
}

//! What a set of events adds to the store, shared by the live aggregator (one batch) and the
//! backfill (one day): event counts per (user, day, metric), and the distinct values of
//! distinct metrics per (user, day, metric), each value once. Both paths turn events into
//! rows through this one type, so they compute the same numbers.

use std::collections::{BTreeSet, HashMap};

use crate::definitions::MetricDef;
use crate::store::{Changes, Rows, Values};

/// Counts and distinct values of a batch or a day, in memory: one entry per (user, day,
/// metric) for counts, one per (user, day, metric, value) for distinct metrics.
#[derive(Debug, Default)]
pub struct Tally {
    counts: HashMap<(String, i32, usize), i64>,
    values: BTreeSet<(String, i32, usize, String)>,
}

impl Tally {
    /// Empty.
    pub fn new() -> Self {
        Tally::default()
    }

    /// One event credited to `user` on `day` for metric `metric` (an index into the
    /// metrics), with its distinct value for a distinct metric.
    pub fn add(&mut self, user: &str, day: i32, metric: usize, value: Option<&str>) {
        match value {
            None => *self.counts.entry((user.to_owned(), day, metric)).or_insert(0) += 1,
            Some(v) => {
                self.values.insert((user.to_owned(), day, metric, v.to_owned()));
            }
        }
    }

    /// Nothing was added.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.values.is_empty()
    }

    /// The rows to write, sorted (counts by user, day, metric; values by user, day, metric,
    /// value: the order the stores' bounds take values in).
    pub fn into_changes(self, metrics: &[MetricDef]) -> Changes {
        let mut keys: Vec<((String, i32, usize), i64)> = self.counts.into_iter().collect();
        keys.sort_unstable();
        let mut counts = Rows::default();
        for ((user, day, m), n) in keys {
            counts.push(user, day, metrics[m].name.clone(), n);
        }
        let mut values = Values::default();
        for (user, day, m, v) in self.values {
            let cap = i32::try_from(metrics[m].max_distinct_per_day).unwrap_or(i32::MAX);
            values.push(user, day, metrics[m].name.clone(), v, cap);
        }
        Changes { counts, values }
    }
}

impl Changes {
    /// The users these changes touch, each with whether a day before `today` is among them
    /// (the cache's closed days changed too).
    pub fn touched_users(&self, today: i32) -> Vec<(String, bool)> {
        let mut touched: HashMap<&str, bool> = HashMap::new();
        let rows = self.counts.users.iter().zip(&self.counts.days).chain(self.values.users.iter().zip(&self.values.days));
        for (user, day) in rows {
            *touched.entry(user.as_str()).or_insert(false) |= *day < today;
        }
        let mut out: Vec<(String, bool)> = touched.into_iter().map(|(u, c)| (u.to_owned(), c)).collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definitions::default_metrics;

    #[test]
    fn counts_add_up_and_values_count_once() {
        let metrics = default_metrics();
        let contacted = metrics.iter().position(|m| m.name == "products_contacted").unwrap_or(0);
        let favorites = metrics.iter().position(|m| m.name == "favorites_received").unwrap_or(0);
        let mut t = Tally::new();
        for _ in 0..3 {
            t.add("s", 10, favorites, None);
            t.add("s", 10, contacted, Some("p1"));
        }
        t.add("s", 11, contacted, Some("p1"));
        t.add("s", 10, contacted, Some("p2"));
        let c = t.into_changes(&metrics);
        assert_eq!(c.counts.counts, vec![3]);
        assert_eq!(c.values.values, vec!["p1", "p2", "p1"]);
        assert_eq!(c.values.days, vec![10, 10, 11]);
        assert_eq!(c.touched_users(11), vec![("s".to_owned(), true)]);
        assert_eq!(c.touched_users(10), vec![("s".to_owned(), false)]);
    }
}

//! A user's statistics over the last N days: cache lookups, one database query on a miss
//! (shared by concurrent misses of the same key), zeros filled, rendered once with its ETag.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::cache::{Counts, Rendered, StatsCache};
use crate::definitions::day_date;
use crate::store::{DayCount, Store};

/// Largest window, in days.
pub const MAX_DAYS: u16 = 90;
/// Window when `days` is not given.
pub const DEFAULT_DAYS: u16 = 7;

/// A user's statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserStats {
    /// The user.
    pub user_id: String,
    /// Days in the window (today included).
    pub days: u16,
    /// First day (UTC), YYYY-MM-DD.
    pub from: String,
    /// Last day (UTC, today), YYYY-MM-DD.
    pub to: String,
    /// The days of the window, oldest first; `series` entries follow this order.
    pub dates: Vec<String>,
    /// One entry per configured metric.
    pub metrics: Vec<MetricStats>,
}

/// One metric over the window.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricStats {
    /// Metric name (e.g. `favorites_received`).
    pub name: String,
    /// Sum over the window.
    pub total: i64,
    /// Count per day, aligned with `dates` (zeros filled).
    pub series: Vec<i64>,
}

/// Why statistics could not be computed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub Arc<str>);

/// Reads statistics through the cache.
#[derive(Clone)]
pub struct StatsReader {
    store: Store,
    cache: Arc<StatsCache>,
    metric_names: Arc<Vec<String>>,
}

impl StatsReader {
    /// Over a store and a cache, for the configured metric names.
    pub fn new(store: Store, cache: Arc<StatsCache>, metric_names: Vec<String>) -> Self {
        StatsReader { store, cache, metric_names: Arc::new(metric_names) }
    }

    /// The cache.
    pub fn cache(&self) -> &Arc<StatsCache> {
        &self.cache
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The statistics of `user` for the `days` (1..=90) days ending `today` (a day number).
    pub async fn user_stats(&self, user: &str, days: u16, today: i32) -> Result<Arc<Rendered>, QueryError> {
        if let Some(r) = self.cache.response(user, days, today).await {
            metrics::counter!("stats_cache_total", "layer" => "response", "result" => "hit").increment(1);
            return Ok(r);
        }
        let key = format!("{user}\u{0}{days}\u{0}{today}");
        let this = self.clone();
        let user = user.to_owned();
        self.cache
            .flights()
            .run(key, move || async move { this.compute(&user, days, today).await.map_err(|e| e.0) })
            .await
            .map_err(QueryError)
    }

    async fn compute(&self, user: &str, days: u16, today: i32) -> Result<Arc<Rendered>, QueryError> {
        let first = today - i32::from(days) + 1;
        let (closed, today_counts) = self.cache.pieces(user, days, first, today).await;
        let n = self.metric_names.len();
        let closed_len = usize::from(days) - 1;
        let valid = |c: &Option<Counts>, len: usize| c.as_ref().is_some_and(|c| c.len() == n && c.iter().all(|s| s.len() == len));
        let closed_ok = days == 1 || valid(&closed, closed_len);
        let today_ok = valid(&today_counts, 1);
        metrics::counter!("stats_cache_total", "layer" => "pieces", "result" => if closed_ok && today_ok { "hit" } else { "miss" })
            .increment(1);
        let (closed, today_counts) = match (closed_ok, today_ok) {
            (true, true) => (closed.filter(|_| days > 1), today_counts),
            (true, false) => (closed.filter(|_| days > 1), Some(self.load(user, today, today).await?)),
            (false, true) => (Some(self.load(user, first, today - 1).await?), today_counts),
            (false, false) => {
                let all = self.load(user, first, today).await?;
                let (c, t) = split_last(all);
                (Some(c), Some(t))
            }
        };
        let closed = if days == 1 { None } else { closed };
        if !(closed_ok && today_ok) {
            self.cache.put_pieces(user, days, first, today, if closed_ok { None } else { closed.as_ref() }, if today_ok { None } else { today_counts.as_ref() }).await;
        }
        let rendered = Arc::new(self.render(user, days, first, closed.as_ref(), today_counts.as_ref()));
        self.cache.put_response(user, days, today, rendered.clone()).await;
        Ok(rendered)
    }

    /// One database query: counts of `from..=to` per metric per day, zeros filled.
    async fn load(&self, user: &str, from: i32, to: i32) -> Result<Counts, QueryError> {
        metrics::counter!("stats_db_queries_total").increment(1);
        let rows = self.store.user_counts(user, from, to).await.map_err(|e| QueryError(Arc::from(e.to_string())))?;
        Ok(fill(&self.metric_names, &rows, from, to))
    }

    fn render(&self, user: &str, days: u16, first: i32, closed: Option<&Counts>, today: Option<&Counts>) -> Rendered {
        let metrics = self
            .metric_names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut series: Vec<i64> = closed.and_then(|c| c.get(i)).cloned().unwrap_or_default();
                series.extend(today.and_then(|t| t.get(i)).cloned().unwrap_or_else(|| vec![0]));
                MetricStats { name: name.clone(), total: series.iter().sum(), series }
            })
            .collect();
        let dates: Vec<String> = (0..i32::from(days)).map(|k| day_date(first + k).to_string()).collect();
        let stats = UserStats {
            user_id: user.to_owned(),
            days,
            from: dates.first().cloned().unwrap_or_default(),
            to: dates.last().cloned().unwrap_or_default(),
            dates,
            metrics,
        };
        let body = serde_json::to_vec(&stats).unwrap_or_default();
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", hex::encode(&digest[..12]));
        let etag_header = axum::http::HeaderValue::from_str(&etag).unwrap_or(axum::http::HeaderValue::from_static("\"\""));
        Rendered { body: body.into(), etag, etag_header }
    }
}

/// Counts per metric per day of `from..=to` from stored rows (unknown metrics ignored).
pub fn fill(metric_names: &[String], rows: &[DayCount], from: i32, to: i32) -> Counts {
    let len = usize::try_from(to - from + 1).unwrap_or(0);
    let mut out = vec![vec![0i64; len]; metric_names.len()];
    for r in rows {
        let Some(m) = metric_names.iter().position(|n| *n == r.metric) else { continue };
        if let Ok(k) = usize::try_from(r.day - from)
            && k < len
        {
            out[m][k] += r.count;
        }
    }
    out
}

/// Splits counts of a window into (all days but the last, the last day).
fn split_last(mut all: Counts) -> (Counts, Counts) {
    let mut last = Vec::with_capacity(all.len());
    for s in &mut all {
        last.push(vec![s.pop().unwrap_or(0)]);
    }
    (all, last)
}

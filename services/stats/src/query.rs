//! A user's statistics over the last N days: cache lookups, one database query on a miss
//! (shared by concurrent misses of the same key), zeros filled, rendered once with its ETag.
//! A counted metric's total is the sum of its days; a distinct metric's total is the number
//! of distinct values over the whole window (a union, not a sum), read from the database
//! with today's piece.

use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::cache::{Counts, Rendered, StatsCache, TodayPiece};
use crate::definitions::{MetricDef, day_date};
use crate::store::{DayCount, Store, UserCounts};

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
    /// Present for a distinct metric: the attribute whose distinct values are counted
    /// (e.g. `product_id` for `products_contacted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distinct: Option<String>,
    /// Over the window: the sum of `series` for a counted metric; for a distinct metric the
    /// number of distinct values over all the days (a product contacted on 3 days counts
    /// once), so at most the sum of `series`.
    pub total: i64,
    /// Per day, aligned with `dates` (zeros filled): the events counted, or for a distinct
    /// metric the distinct values of that day.
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
    /// Per metric: the attribute of a distinct metric.
    distinct: Arc<Vec<Option<String>>>,
}

impl StatsReader {
    /// Over a store and a cache, for the configured metrics.
    pub fn new(store: Store, cache: Arc<StatsCache>, metrics: &[MetricDef]) -> Self {
        StatsReader {
            store,
            cache,
            metric_names: Arc::new(metrics.iter().map(|m| m.name.clone()).collect()),
            distinct: Arc::new(metrics.iter().map(|m| m.distinct.clone()).collect()),
        }
    }

    /// Names of the distinct metrics, in configuration order.
    fn distinct_names(&self) -> impl Iterator<Item = &String> {
        self.metric_names.iter().zip(self.distinct.iter()).filter(|(_, d)| d.is_some()).map(|(n, _)| n)
    }

    fn has_distinct(&self) -> bool {
        self.distinct.iter().any(Option::is_some)
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
        // The versions are read before the database: see the cache's module doc.
        let found = self.cache.pieces(user, days, first, today).await;
        let (closed, today_piece) = (found.closed, found.today);
        let n = self.metric_names.len();
        let k = self.distinct.iter().filter(|d| d.is_some()).count();
        let closed_len = usize::from(days) - 1;
        let closed_ok = days == 1 || closed.as_ref().is_some_and(|c| c.len() == n && c.iter().all(|s| s.len() == closed_len));
        let today_ok = today_piece.as_ref().is_some_and(|p| p.counts.len() == n && p.totals.len() == k);
        metrics::counter!("stats_cache_total", "layer" => "pieces", "result" => if closed_ok && today_ok { "hit" } else { "miss" })
            .increment(1);
        // The distinct totals span the window: they come with today's piece.
        let union_from = self.has_distinct().then_some(first);
        let (closed, today_piece) = match (closed_ok, today_ok) {
            (true, true) => (closed.filter(|_| days > 1), today_piece),
            (true, false) => (closed.filter(|_| days > 1), Some(self.today_piece(&self.load(user, today, today, union_from).await?, today))),
            (false, true) => (Some(self.counts(&self.load(user, first, today - 1, None).await?, first, today - 1)), today_piece),
            (false, false) => {
                let loaded = self.load(user, first, today, union_from).await?;
                let (c, t) = split_last(self.counts(&loaded, first, today));
                (Some(c), Some(TodayPiece { counts: t, totals: self.totals(&loaded) }))
            }
        };
        let closed = if days == 1 { None } else { closed };
        if !(closed_ok && today_ok) {
            let (new_closed, new_today) = (if closed_ok { None } else { closed.as_ref() }, if today_ok { None } else { today_piece.as_ref() });
            self.cache.put_pieces(user, days, first, today, &found.tag, new_closed, new_today).await;
        }
        let rendered = Arc::new(self.render(user, days, first, closed.as_ref(), today_piece.as_ref()));
        self.cache.put_response(user, days, today, found.local, rendered.clone()).await;
        Ok(rendered)
    }

    /// One database query: per-day counts of `from..=to`, and the distinct totals over
    /// `union_from..=to` when asked.
    async fn load(&self, user: &str, from: i32, to: i32, union_from: Option<i32>) -> Result<UserCounts, QueryError> {
        metrics::counter!("stats_db_queries_total").increment(1);
        self.store.user_stats(user, from, to, union_from).await.map_err(|e| QueryError(Arc::from(e.to_string())))
    }

    /// Per metric per day of `from..=to`, zeros filled.
    fn counts(&self, loaded: &UserCounts, from: i32, to: i32) -> Counts {
        fill(&self.metric_names, &loaded.days, from, to)
    }

    /// The distinct metrics' totals (zeros for metrics without values).
    fn totals(&self, loaded: &UserCounts) -> Vec<i64> {
        self.distinct_names()
            .map(|name| loaded.unions.iter().find(|(m, _)| m == name).map_or(0, |(_, n)| *n))
            .collect()
    }

    /// Today's piece from a load of today alone (with the window's distinct totals).
    fn today_piece(&self, loaded: &UserCounts, today: i32) -> TodayPiece {
        let counts = self.counts(loaded, today, today).into_iter().map(|s| s.first().copied().unwrap_or(0)).collect();
        TodayPiece { counts, totals: self.totals(loaded) }
    }

    fn render(&self, user: &str, days: u16, first: i32, closed: Option<&Counts>, today: Option<&TodayPiece>) -> Rendered {
        let mut distinct_index = 0;
        let metrics = self
            .metric_names
            .iter()
            .zip(self.distinct.iter())
            .enumerate()
            .map(|(i, (name, distinct))| {
                let mut series: Vec<i64> = closed.and_then(|c| c.get(i)).cloned().unwrap_or_default();
                series.push(today.and_then(|t| t.counts.get(i)).copied().unwrap_or(0));
                let total = match distinct {
                    None => series.iter().sum(),
                    Some(_) => {
                        distinct_index += 1;
                        today.and_then(|t| t.totals.get(distinct_index - 1)).copied().unwrap_or(0)
                    }
                };
                MetricStats { name: name.clone(), distinct: distinct.clone(), total, series }
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

/// Splits counts of a window into (all days but the last, the last day's count per metric).
fn split_last(mut all: Counts) -> (Counts, Vec<i64>) {
    let mut last = Vec::with_capacity(all.len());
    for s in &mut all {
        last.push(s.pop().unwrap_or(0));
    }
    (all, last)
}

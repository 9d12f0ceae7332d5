//! Recomputing one day from the lake (`eventctl stats backfill --date D`): the day's files of
//! every event type a metric counts, repeated event ids counted once, the configured metrics
//! tallied exactly as the live aggregator does (event counts, distinct values), and the day
//! replaced in one transaction (readers see the old counts until the commit), then the cache
//! of every affected user invalidated.
//!
//! Meant for closed days: the live aggregator keeps adding to today's counts, and a backfill
//! of today would drop what it counted after the lake's last flush.

use std::collections::HashSet;

use event_lake::Lake;

use crate::cache::StatsCache;
use crate::definitions::{Extractor, day_date, day_number};
use crate::store::{Store, StoreError};
use crate::tally::Tally;

/// What a backfill did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackfillReport {
    /// The day, YYYY-MM-DD.
    pub date: String,
    /// Lake files read.
    pub files: usize,
    /// Events read from those files.
    pub events: u64,
    /// Events seen again (same type and id) and not counted twice.
    pub duplicates: u64,
    /// Events that counted for a metric.
    pub counted: u64,
    /// Count rows and distinct values written.
    pub rows: usize,
    /// Distinct values not counted because their (user, metric) reached the metric's
    /// `max_distinct_per_day` that day.
    pub capped: u64,
    /// Users whose cache was invalidated.
    pub users_invalidated: usize,
    /// Users whose cached entries could not be invalidated (Redis unreachable for 10 s):
    /// their closed days refresh within the service's closed-day TTL.
    pub users_not_invalidated: usize,
}

/// Why a backfill failed (nothing was replaced).
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Reading the lake failed.
    #[error("lake: {0}")]
    Lake(#[from] event_lake::LakeError),
    /// Writing the database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Recomputes `date` from the lake and replaces it in the store.
pub async fn backfill_day(lake: &Lake, store: &Store, cache: Option<&StatsCache>, extractor: &Extractor, date: chrono::NaiveDate) -> Result<BackfillReport, BackfillError> {
    let day = day_number(date);
    let mut report = BackfillReport { date: date.to_string(), ..BackfillReport::default() };
    let mut types: Vec<&str> = extractor.metrics().iter().flat_map(|m| m.event_types.iter().map(String::as_str)).collect();
    types.sort_unstable();
    types.dedup();
    let mut tally = Tally::new();
    let mut credited: Vec<(String, usize, Option<String>)> = Vec::new();
    for t in types {
        // The day's committed files, pruned by the log's partition values.
        let first_hour = i64::from(day) * 24;
        let files = lake.data_files(Some(t), Some((first_hour, first_hour + 24))).await?;
        let mut seen: HashSet<String> = HashSet::new();
        for f in &files {
            report.files += 1;
            for ev in lake.read_events(f).await? {
                report.events += 1;
                let Ok(bytes) = serde_json::to_vec(&ev) else { continue };
                credited.clear();
                match extractor.extract(&bytes, |u, m, v| credited.push((u.to_owned(), m, v.map(str::to_owned)))) {
                    Ok(Some(c)) if c.day == day => {
                        if !c.id.is_empty() && !seen.insert(c.id.into_owned()) {
                            report.duplicates += 1;
                            continue;
                        }
                        report.counted += 1;
                        for (u, m, v) in &credited {
                            tally.add(u, day, *m, v.as_deref());
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, file = %f.meta.location, "unreadable event in the lake; skipped"),
                }
            }
        }
    }
    let changes = tally.into_changes(extractor.metrics());
    report.rows = changes.counts.len() + changes.values.len();
    let names: Vec<String> = extractor.metrics().iter().map(|m| m.name.clone()).collect();
    let (users, applied) = store.replace_day(day, &names, &changes).await?;
    report.capped = applied.capped;
    if let Some(cache) = cache {
        let touched: Vec<(String, bool)> = users.into_iter().map(|u| (u, true)).collect();
        report.users_invalidated = touched.len();
        cache.invalidate(&touched, crate::definitions::today()).await;
        if let Some(link) = cache.redis_link()
            && link.pending() != (0, false)
        {
            // This process exits next: wait a little for Redis rather than drop them.
            report.users_not_invalidated = link.settle(std::time::Duration::from_secs(10)).await;
            report.users_invalidated = report.users_invalidated.saturating_sub(report.users_not_invalidated);
        }
    }
    tracing::info!(date = %day_date(day), ?report, "day replaced");
    Ok(report)
}

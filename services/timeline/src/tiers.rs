//! One history over two tiers: the hot items (DynamoDB; SQLite embedded) and the lake's
//! history table ([`event_lake::history`]), stitched at a seam instant `S`.
//!
//! The history table holds every event committed to the lake before its last build started
//! (`history:built`, recorded by [`crate::history::build`]); an event reaches the lake within
//! `lateness` of its event time (the lake writer's max age plus a commit, far below the
//! default hour). So the cold tier is complete below `S = built - lateness`, and the hot tier
//! is complete above `now - hot window`: while the build runs more often than
//! `hot window - lateness`, `S` is inside the hot window and every event is in one tier on
//! each side of it. A page reads the cold tier for event times below `S` and the hot tier at
//! or above it, in the page's order, and fills up from the second when the first runs out.
//! The cursor is a position (event time, id), not a tier: when `S` moves between two pages
//! (a build finished), the next page continues from the same position and sees each event
//! once.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use event_lake::history::{HistoryRow, HistorySnapshot, UserQuery};
use event_lake::{Lake, LakeError};
use serde_json::value::RawValue;

/// How long a snapshot of the history table (and so the seam) is kept: one read of its log
/// per period, not per page.
const SNAPSHOT_TTL: Duration = Duration::from_secs(10);

/// The cold tier of the API.
pub struct ColdTier {
    lake: Arc<Lake>,
    lateness_ms: AtomicI64,
    cached: tokio::sync::Mutex<Option<(Instant, Option<Arc<HistorySnapshot>>)>>,
}

impl ColdTier {
    /// The history of `lake`, complete `lateness_ms` below its last build.
    pub fn new(lake: Arc<Lake>, lateness_ms: i64) -> ColdTier {
        ColdTier { lake, lateness_ms: AtomicI64::new(lateness_ms), cached: tokio::sync::Mutex::new(None) }
    }

    /// Changes the lateness (and so the seam) at run time; the next page uses it.
    pub fn set_lateness_ms(&self, lateness_ms: i64) {
        self.lateness_ms.store(lateness_ms, Ordering::Relaxed);
    }

    /// Forgets the cached snapshot (after a build in the same process).
    pub async fn refresh(&self) {
        *self.cached.lock().await = None;
    }

    /// The snapshot pages read (the newest at most [`SNAPSHOT_TTL`] old; `None`: no table).
    pub async fn snapshot(&self) -> Result<Option<Arc<HistorySnapshot>>, LakeError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, snapshot)) = &*cached
            && at.elapsed() < SNAPSHOT_TTL
        {
            return Ok(snapshot.clone());
        }
        let snapshot = self.lake.root.history_snapshot().await?.map(Arc::new);
        // Alert when it nears the configured max build lag: past it, the hot tier has let go
        // of events the history does not hold yet.
        if let Some(b) = snapshot.as_ref().and_then(|s| s.built) {
            let age = (chrono::Utc::now().timestamp_millis() - b).max(0) as f64 / 1000.0;
            metrics::gauge!("timeline_history_build_age_seconds").set(age);
        }
        *cached = Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    /// The seam `S` of a snapshot, or `None` while the history table has never been built
    /// (every page is then served by the hot tier alone).
    pub fn seam_of(&self, snapshot: &HistorySnapshot) -> Option<i64> {
        snapshot.built.map(|b| b - self.lateness_ms.load(Ordering::Relaxed))
    }

    /// One page of the cold tier, from a snapshot.
    pub async fn page(&self, snapshot: &HistorySnapshot, q: &UserQuery<'_>) -> Result<event_lake::history::UserPage, LakeError> {
        self.lake.root.read_user_history_at(snapshot, q).await
    }
}

/// A cold row as the API's event: the whole event is at hand (its attributes, and its
/// payload when asked for).
pub fn cold_event(row: HistoryRow, with_payload: bool) -> Result<crate::api::TimelineEvent, String> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        #[serde(borrow)]
        data: Data<'a>,
    }
    #[derive(serde::Deserialize)]
    struct Data<'a> {
        #[serde(borrow)]
        attributes: Option<&'a RawValue>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(&row.event).map_err(|e| format!("history row {}: {e}", row.id))?;
    let attributes = envelope.data.attributes.map(|a| a.to_owned());
    let payload = if with_payload { Some(RawValue::from_string(row.event.clone()).map_err(|e| e.to_string())?) } else { None };
    let hour = row.created_at.div_euclid(3_600_000);
    let partition = event_lake::layout::PartitionKey { event_type: Arc::from(row.event_type.as_str()), hour };
    Ok(crate::api::TimelineEvent {
        id: row.id,
        event_type: row.event_type,
        created_at: row.created_at,
        attributes_in_lake_only: attributes.is_none(),
        attributes,
        lake_partition: partition.dir().to_string(),
        expires_at: 0,
        payload,
    })
}

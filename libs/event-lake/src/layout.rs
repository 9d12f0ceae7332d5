//! The lake's layout: where events, quarantined lines and schemas live under the root.
//!
//! ```text
//! events/type=<type>/date=<YYYY-MM-DD>/hour=<HH>/<file>.parquet   valid events, by event time
//! quarantine/date=<YYYY-MM-DD>/hour=<HH>/<file>.parquet           rejected lines, by arrival time
//! _schemas/<type>/v<0000000001>.json                              each type's schema versions
//! ```
//! File names start with a UUIDv7 (time-ordered, unique across concurrent writers).

use std::sync::Arc;

use chrono::{DateTime, Timelike, Utc};
use object_store::path::Path;

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;

/// One partition of the events dataset: a type and an hour of event time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    /// The event type (valid per the contract, so a safe path segment).
    pub event_type: Arc<str>,
    /// Hours since the epoch (UTC).
    pub hour: i64,
}

impl PartitionKey {
    /// The partition of an event.
    pub fn of(event_type: Arc<str>, created_at_ms: i64) -> Self {
        PartitionKey { event_type, hour: created_at_ms.div_euclid(HOUR_MS) }
    }

    /// `type=<t>/date=<d>/hour=<h>` below `events/`.
    pub fn dir(&self) -> Path {
        let (date, hour) = date_hour(self.hour);
        Path::from(format!("events/type={}/date={date}/hour={hour:02}", self.event_type))
    }

    /// Start of the hour, epoch ms.
    pub fn start_ms(&self) -> i64 {
        self.hour * HOUR_MS
    }

    /// Parses `events/type=../date=../hour=..` (with or without a file name after it).
    pub fn parse(path: &str) -> Option<PartitionKey> {
        let mut parts = path.split('/');
        if parts.next()? != "events" {
            return None;
        }
        let t = parts.next()?.strip_prefix("type=")?;
        let d = parts.next()?.strip_prefix("date=")?;
        let h: u32 = parts.next()?.strip_prefix("hour=")?.parse().ok()?;
        let date = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
        let dt = date.and_hms_opt(h, 0, 0)?.and_utc();
        Some(PartitionKey { event_type: Arc::from(t), hour: dt.timestamp_millis().div_euclid(HOUR_MS) })
    }
}

/// The quarantine partition for an arrival hour.
pub fn quarantine_dir(arrival_hour: i64) -> Path {
    let (date, hour) = date_hour(arrival_hour);
    Path::from(format!("quarantine/date={date}/hour={hour:02}"))
}

/// `YYYY-MM-DD` and hour of an epoch hour.
pub fn date_hour(epoch_hour: i64) -> (String, u32) {
    let dt: DateTime<Utc> = DateTime::from_timestamp(epoch_hour * 3600, 0).unwrap_or_default();
    (dt.format("%Y-%m-%d").to_string(), dt.hour())
}

/// A new unique data file name: `<uuidv7>-<tag>.parquet`.
pub fn new_file_name(tag: &str) -> String {
    format!("{}-{tag}.parquet", uuid::Uuid::now_v7().simple())
}

/// The folder of a type's schema versions.
pub fn schema_dir(event_type: &str) -> Path {
    Path::from(format!("_schemas/{event_type}"))
}

/// The path of one schema version.
pub fn schema_path(event_type: &str, version: u64) -> Path {
    Path::from(format!("_schemas/{event_type}/v{version:010}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_paths_round_trip() {
        let k = PartitionKey::of(Arc::from("product_viewed"), 1_700_000_000_000);
        assert_eq!(k.dir().as_ref(), "events/type=product_viewed/date=2023-11-14/hour=22");
        assert_eq!(PartitionKey::parse("events/type=product_viewed/date=2023-11-14/hour=22/x.parquet"), Some(k));
    }
}

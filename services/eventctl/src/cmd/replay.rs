//! `eventctl replay`: re-publishes a consumer's dead letters once the cause is fixed. They are
//! read from the bus (`dead-letter.<consumer>`, kept for the stream's retention) and published
//! to `replay.<consumer>.<type>`, which only that consumer's durable takes; each replayed dead
//! letter is removed from the bus, so a second run does not send it again (see
//! `event_bus::replay`). A message that still fails becomes a new dead letter.

use anyhow::{Context, Result};
use clap::Args;
use event_bus::{JetStreamBus, JetStreamConfig};

/// Options of `eventctl replay`.
#[derive(Args, Clone)]
pub struct ReplayArgs {
    /// The consumer whose dead letters are replayed (its durable name: lake-writer,
    /// lake-writer-quarantine, timeline, stats-aggregator, features...).
    #[arg(long)]
    pub consumer: String,
    /// Only dead letters published at or after this time: RFC 3339 (2026-12-07T10:00:00Z),
    /// epoch milliseconds, or an age (30m, 2h, 3d).
    #[arg(long)]
    pub since: Option<String>,
    /// At most this many dead letters (oldest first).
    #[arg(long, default_value_t = 100_000)]
    pub limit: usize,
    /// NATS server URL(s) of the bus.
    #[arg(long, env = "EVENTCTL_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// The platform's stream.
    #[arg(long, env = "EVENTCTL_STREAM", default_value = "EVENTS")]
    pub stream: String,
}

/// Replays and prints the report (JSON); exit 1 when some could not be replayed.
pub fn run(args: ReplayArgs) -> Result<i32> {
    let since_ms = match &args.since {
        Some(s) => parse_since(s, chrono::Utc::now().timestamp_millis())?,
        None => 0,
    };
    let rt = super::runtime(Some(2))?;
    let report = rt.block_on(async {
        let config = JetStreamConfig { url: args.nats_url.clone(), stream: args.stream.clone(), ..JetStreamConfig::default() };
        let bus = JetStreamBus::connect(&config).await.context("connecting to NATS JetStream")?;
        event_bus::replay(&bus, &args.consumer, since_ms, args.limit).await.with_context(|| format!("replaying the dead letters of {}", args.consumer))
    })?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(if report.failed > 0 { 1 } else { 0 })
}

/// `--since`: RFC 3339, epoch ms, or an age before `now_ms` (`30m`, `2h`, `3d`).
fn parse_since(s: &str, now_ms: i64) -> Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = n.parse().with_context(|| format!("--since {s:?}: an RFC 3339 time, epoch milliseconds, or an age like 30m, 2h, 3d"))?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("--since {s:?}: an RFC 3339 time, epoch milliseconds, or an age like 30m, 2h, 3d"),
    };
    Ok(now_ms - n.saturating_mul(unit_ms))
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_times_millis_and_ages() {
        assert_eq!(parse_since("2026-12-07T00:00:00Z", 0).ok(), Some(1_796_601_600_000));
        assert_eq!(parse_since("1234", 0).ok(), Some(1234));
        assert_eq!(parse_since("2h", 10_000_000).ok(), Some(10_000_000 - 7_200_000));
        assert!(parse_since("yesterday", 0).is_err());
        assert!(parse_since("5w", 0).is_err());
    }
}

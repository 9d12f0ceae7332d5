//! `eventctl cat`: events of the lake read back as NDJSON, as they came in.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{LakeArgs, runtime};

/// Options of `eventctl cat`.
#[derive(Args)]
pub struct CatArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Only this event type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Only this date (YYYY-MM-DD).
    #[arg(long)]
    pub date: Option<String>,
    /// Only this hour (0-23).
    #[arg(long)]
    pub hour: Option<u32>,
}

/// Runs `eventctl cat`.
pub fn run(args: CatArgs) -> Result<i32> {
    let CatArgs { lake, event_type, date, hour } = args;
    let lake = lake.open()?;
    let rt = runtime(Some(2))?;
    if hour.is_some_and(|h| h > 23) {
        bail!("--hour is 0 to 23");
    }
    // A date prunes the tables' files by their partition values (read from the logs).
    let hours = match &date {
        Some(d) => {
            let day = chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").with_context(|| format!("--date {d:?} is not YYYY-MM-DD"))?;
            let first = day.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis() / 3_600_000).unwrap_or_default();
            Some(match hour {
                Some(h) => (first + i64::from(h), first + i64::from(h) + 1),
                None => (first, first + 24),
            })
        }
        None => None,
    };
    let files = rt.block_on(lake.data_files(event_type.as_deref(), hours))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for f in files {
        let (d, h) = event_lake::layout::date_hour(f.partition.hour);
        if date.as_ref().is_some_and(|want| *want != d) || hour.is_some_and(|want| want != h) {
            continue;
        }
        for ev in rt.block_on(lake.read_events_json(&f))? {
            if let Err(e) = out.write_all(ev.as_bytes()).and_then(|()| out.write_all(b"\n")) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(0);
                }
                return Err(e.into());
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

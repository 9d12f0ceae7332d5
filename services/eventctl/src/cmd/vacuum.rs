//! `eventctl vacuum`: deletes the data files that no recent snapshot of the tables needs:
//! files compaction removed, and files a crashed writer uploaded but never committed, once
//! they are older than the retention (default 7 days, so readers of older snapshots and time
//! travel within a week keep working).

use anyhow::{Result, bail};
use clap::Args;

use super::{LakeArgs, runtime};

/// Options of `eventctl vacuum`.
#[derive(Args)]
pub struct VacuumArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Only this event type.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// Keep files removed (or written) less than this many hours ago.
    #[arg(long, default_value_t = 168)]
    pub retention_hours: i64,
    /// Only report what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `eventctl vacuum`.
pub fn run(args: VacuumArgs) -> Result<i32> {
    let VacuumArgs { lake, event_type, retention_hours, dry_run, json } = args;
    if retention_hours < 0 {
        bail!("--retention-hours must not be negative");
    }
    let lake = lake.open()?;
    let retention = chrono::Duration::hours(retention_hours);
    let report = runtime(Some(2))?.block_on(lake.vacuum(event_type.as_deref(), retention, dry_run))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let verb = if dry_run { "would delete" } else { "deleted" };
        println!("vacuum of {} tables: {verb} {} files", report.tables, report.files_deleted);
    }
    Ok(0)
}

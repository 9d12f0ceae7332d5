//! `eventctl lake`: operations on the lake as a whole. `eventctl lake migrate` turns a lake in
//! the folder layout of before the Delta tables (`_schemas/`, files found by listing) into
//! Delta tables in place, without rewriting a data file; it is idempotent and resumes after a
//! crash (see `event_lake::migrate`).

use anyhow::Result;
use clap::{Args, Subcommand};
use event_lake::migrate::MigrateOptions;

use super::{LakeArgs, runtime};

/// `eventctl lake ...`
#[derive(Subcommand)]
pub enum LakeCommand {
    /// Turn a lake in the folder layout into Delta tables in place (no data file rewritten).
    Migrate(MigrateArgs),
}

/// Options of `eventctl lake migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Data files per commit (a crash redoes at most one commit's worth).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub files_per_commit: u64,
    /// Only report what would be committed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `eventctl lake ...`.
pub fn run(command: LakeCommand) -> Result<i32> {
    match command {
        LakeCommand::Migrate(args) => migrate(args),
    }
}

fn migrate(args: MigrateArgs) -> Result<i32> {
    let MigrateArgs { lake, files_per_commit, dry_run, json } = args;
    let lake = lake.open()?;
    let opts = MigrateOptions { files_per_commit: files_per_commit as usize, dry_run, ..MigrateOptions::default() };
    let report = runtime(Some(2))?.block_on(lake.migrate_folder_layout(&opts))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let verb = if dry_run { "would commit" } else { "committed" };
    for (table, t) in &report.tables {
        println!(
            "{table}: {verb} {} files ({} rows) in {} commits; {} already in the table{}",
            t.files_added,
            t.rows_added,
            t.commits,
            t.files_already,
            if t.created { "; table created" } else { "" }
        );
    }
    println!("{} tables, {} files {verb}", report.tables.len(), report.files_added());
    Ok(0)
}

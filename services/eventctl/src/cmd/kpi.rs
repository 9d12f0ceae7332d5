//! `eventctl kpi`: daily KPIs straight from the lake (local folder or S3), with the
//! `lake-query` library.
//!
//! - `eventctl kpi --date D`: the KPI SQL files of `libs/lake-query/kpis/`, printed as a table and
//!   written as JSON, CSV and a PNG chart; `--shard i/n` computes one share of the partitions
//!   into a partial file, `eventctl kpi merge partial-*.json` combines the shares.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lake_query::kpi::{self, Progress, Report};
use lake_query::{LakeSession, SessionOptions, Shard};

use super::{mib, runtime};

/// Options of `eventctl kpi`.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct KpiArgs {
    #[command(subcommand)]
    pub command: Option<KpiCommand>,
    #[command(flatten)]
    pub run: KpiRunArgs,
}

/// `eventctl kpi` subcommands.
#[derive(Subcommand)]
pub enum KpiCommand {
    /// Combine the partial files of every shard of a day into the KPIs.
    Merge(KpiMergeArgs),
}

/// Options of a KPI run.
#[derive(Args)]
pub struct KpiRunArgs {
    /// The UTC day, YYYY-MM-DD.
    #[arg(long)]
    pub date: Option<String>,
    /// Lake root: a local folder or s3://bucket/prefix.
    #[arg(long, env = "EVENTCTL_LAKE", default_value = "./lake")]
    pub lake: String,
    /// Compute only shard i of n (e.g. 1/2): writes a partial file for `eventctl kpi merge`.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Output folder (default: kpi-<date>).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Print the report (or the shard's summary) as JSON on stdout; no progress bar.
    #[arg(long)]
    pub json: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Query threads (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run the KPI files (`*.sql`, each with a `-- kpi:` / `-- merge:` header) of this folder
    /// instead of the built-in ones (libs/lake-query/kpis/).
    #[arg(long, value_name = "DIR")]
    pub kpis: Option<PathBuf>,
}

/// Options of `eventctl kpi merge`.
#[derive(Args)]
pub struct KpiMergeArgs {
    /// The partial files, one per shard.
    #[arg(required = true)]
    pub partials: Vec<PathBuf>,
    /// Output folder (default: kpi-<date>).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// The KPI folder the shards were computed with (`--kpis` of the runs).
    #[arg(long, value_name = "DIR")]
    pub kpis: Option<PathBuf>,
}

/// Runs `eventctl kpi` (a day, a shard of it, or `merge`).
pub fn run(args: KpiArgs) -> Result<i32> {
    match args.command {
        Some(KpiCommand::Merge(m)) => merge(m),
        None => run_day(args.run),
    }
}

fn progress_bar(enabled: bool) -> Option<indicatif::ProgressBar> {
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let p = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} KPIs  {prefix:24}  {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    p.set_style(style);
    p.enable_steady_tick(Duration::from_millis(200));
    Some(p)
}

fn run_day(args: KpiRunArgs) -> Result<i32> {
    let Some(date) = args.date.clone() else { bail!("--date YYYY-MM-DD is required (or use `eventctl kpi merge`)") };
    kpi::parse_date(&date)?;
    let defs = kpi::load(args.kpis.as_deref())?;
    let shard = args.shard.unwrap_or(Shard::WHOLE);
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("kpi-{date}")));
    let rt = runtime(args.threads)?;
    let session = LakeSession::open(&args.lake, &SessionOptions { shard, threads: args.threads, ..SessionOptions::default() })
        .with_context(|| format!("opening the lake {}", args.lake))?;
    let bar = progress_bar(!args.json && !args.no_progress);
    let partial = rt.block_on(async {
        let ticker = bar.clone().map(|bar| {
            let stats = session.stats().clone();
            tokio::spawn(async move {
                loop {
                    bar.set_message(format!("{} read", mib(stats.bytes())));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        });
        let on_progress = |p: Progress<'_>| {
            if let Some(bar) = &bar {
                match p {
                    Progress::Started { name, index, total } => {
                        bar.set_length(total as u64);
                        bar.set_position(index as u64);
                        bar.set_prefix(name.to_owned());
                    }
                    Progress::Finished { .. } => bar.inc(1),
                }
            }
        };
        let r = kpi::run(&session, &date, &defs, &on_progress).await;
        if let Some(t) = ticker {
            t.abort();
        }
        r
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let partial = partial?;
    if args.shard.is_some() {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join(kpi::partial_file_name(&date, shard));
        let body = serde_json::to_vec(&partial)?;
        kpi::write_atomic(&path, &body)?;
        let summary = serde_json::json!({
            "date": date, "shard": shard.to_string(), "partial": path.display().to_string(),
            "partial_bytes": body.len(), "read": partial.read, "elapsed_ms": partial.elapsed_ms,
        });
        report_failures(&partial.failed);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&summary)?);
        } else {
            println!(
                "shard {shard} of {date}: read {} from {} files in {:.2}s -> {}\nmerge with: eventctl kpi merge {}/partial-{date}-*-of-{}.json",
                mib(partial.read.bytes_read),
                partial.read.files_read,
                partial.elapsed_ms as f64 / 1000.0,
                path.display(),
                out.display(),
                shard.count
            );
        }
        return Ok(if partial.failed.is_empty() { 0 } else { 1 });
    }
    let report = kpi::merge(std::slice::from_ref(&partial), &defs)?;
    finish(&report, &out, args.json)
}

fn merge(args: KpiMergeArgs) -> Result<i32> {
    let partials = args.partials.iter().map(|p| kpi::read_partial(p)).collect::<Result<Vec<_>, _>>()?;
    let defs = kpi::load(args.kpis.as_deref())?;
    let report = kpi::merge(&partials, &defs)?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("kpi-{}", report.date)));
    finish(&report, &out, args.json)
}

/// Tells on stderr which KPIs failed and why.
fn report_failures(failed: &std::collections::BTreeMap<String, String>) {
    for (name, why) in failed {
        eprintln!("eventctl kpi: KPI {name} failed: {why}");
    }
    if !failed.is_empty() {
        eprintln!("eventctl kpi: {} KPI(s) failed; the others were computed and written", failed.len());
    }
}

/// Writes the report's files and prints it; exit code 1 when a KPI failed (the others are
/// written all the same).
fn finish(report: &Report, out: &Path, json: bool) -> Result<i32> {
    let mut files = kpi::write_report(report, out)?;
    if report.kpis.contains_key("events_by_type_hour") {
        let png = out.join("hourly_volume.png");
        lake_query::chart::draw_hourly(report, &png)?;
        files.push(png);
    }
    report_failures(&report.failed);
    let code = if report.failed.is_empty() { 0 } else { 1 };
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(code);
    }
    print_report(report);
    println!(
        "\nread {} from {} files ({} GETs, {} LISTs) in {:.2}s{}",
        mib(report.read.bytes_read),
        report.read.files_read,
        report.read.get_requests,
        report.read.list_requests,
        report.elapsed_ms as f64 / 1000.0,
        if report.shards > 1 { format!(" (slowest of {} shards)", report.shards) } else { String::new() }
    );
    println!("wrote {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(code)
}

fn print_report(report: &Report) {
    println!("KPIs of {} (UTC){}", report.date, if report.shards > 1 { format!(", merged from {} shards", report.shards) } else { String::new() });
    let lines = kpi::scalar_lines(report);
    let w = lines.iter().map(|(n, _, _)| n.len()).max().unwrap_or(10);
    println!("{:<w$}  {:>14}  title", "kpi", "value");
    for (name, title, v) in &lines {
        println!("{name:<w$}  {v:>14}  {title}");
    }
    let series = lake_query::chart::hourly_series(report);
    if !series.is_empty() {
        println!("\nevents by type (busiest first; per hour in events_by_type_hour.csv):");
        let total: u64 = series.iter().map(|(_, h)| h.iter().sum::<u64>()).sum();
        for (t, h) in &series {
            let n: u64 = h.iter().sum();
            println!("  {t:<40} {n:>12}  {:>5.1}%", 100.0 * n as f64 / total.max(1) as f64);
        }
        println!("  {:<40} {total:>12}", "total");
    }
}

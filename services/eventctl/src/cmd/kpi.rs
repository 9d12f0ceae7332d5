//! `eventctl kpi`: daily KPIs straight from the lake (local folder or S3), with the
//! `lake-query` library.
//!
//! `eventctl kpi --date D`: the KPI SQL files of `libs/lake-query/kpis/` (or `--kpis DIR`),
//! printed as a table and written as JSON, CSV and a PNG chart; with `--cluster HOST:PORT`
//! the same files run on a Ballista cluster (`eventctl cluster scheduler|executor`) and give
//! the same outputs.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use lake_query::kpi::{self, Progress, Report};
use lake_query::{LakeSession, SessionOptions};

use super::{mib, runtime};

/// Options of `eventctl kpi`.
#[derive(Args)]
pub struct KpiArgs {
    /// The UTC day, YYYY-MM-DD.
    #[arg(long)]
    pub date: String,
    /// Lake root: a local folder or s3://bucket/prefix.
    #[arg(long, env = "EVENTCTL_LAKE", default_value = "./lake")]
    pub lake: String,
    /// Run on the KPI cluster of this scheduler (`eventctl cluster scheduler`), HOST:PORT.
    /// Needs the `cluster` feature.
    #[arg(long, env = "EVENTCTL_CLUSTER", value_name = "HOST:PORT")]
    pub cluster: Option<String>,
    /// Output folder (default: kpi-<date>).
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Print the report as JSON on stdout; no progress bar.
    #[arg(long)]
    pub json: bool,
    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Query threads here (default: the number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run the KPI files (`*.sql`, each with a `-- kpi:` header) of this folder instead of
    /// the built-in ones (libs/lake-query/kpis/).
    #[arg(long, value_name = "DIR")]
    pub kpis: Option<PathBuf>,
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

/// Runs `eventctl kpi`: exit code 1 when a KPI failed (the others are written all the same).
pub fn run(args: KpiArgs) -> Result<i32> {
    let date = args.date.clone();
    kpi::parse_date(&date)?;
    let defs = kpi::load(args.kpis.as_deref())?;
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("kpi-{date}")));
    let rt = runtime(args.threads)?;
    let options = SessionOptions { threads: args.threads, cluster: args.cluster.clone(), ..SessionOptions::default() };
    let session = LakeSession::open(&args.lake, &options).with_context(|| format!("opening the lake {}", args.lake))?;
    let bar = progress_bar(!args.json && !args.no_progress);
    let report = rt.block_on(async {
        let ticker = bar.clone().map(|bar| {
            let stats = session.stats().clone();
            let remote = args.cluster.is_some();
            tokio::spawn(async move {
                loop {
                    // On a cluster the executors read; their bytes arrive as each KPI ends.
                    let bytes = if remote { stats.snapshot().scanned_bytes } else { stats.bytes() };
                    bar.set_message(format!("{} read", mib(bytes)));
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
    finish(&report?, &out, args.json)
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
    let r = &report.read;
    if report.engine == "local" {
        println!(
            "\nread {} from {} files ({} GETs, {} LISTs; {} of column data) in {:.2}s",
            mib(r.bytes_read),
            r.files_read,
            r.get_requests,
            r.list_requests,
            mib(r.scanned_bytes),
            report.elapsed_ms as f64 / 1000.0
        );
    } else {
        println!(
            "\nran on the {}: the executors read {} of column data from {} files; the tables' logs here {} in {} GETs; {:.2}s",
            report.engine,
            mib(r.scanned_bytes),
            r.files_read,
            mib(r.log_bytes_read),
            r.log_get_requests,
            report.elapsed_ms as f64 / 1000.0
        );
    }
    println!("wrote {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(code)
}

fn print_report(report: &Report) {
    println!("KPIs of {} (UTC)", report.date);
    let lines = kpi::scalar_lines(report);
    let w = lines.iter().map(|(n, _, _)| n.len()).max().unwrap_or(10);
    println!("{:<w$}  {:>14}  title", "kpi", "value");
    for (name, title, v) in &lines {
        println!("{name:<w$}  {v:>14}  {title}");
    }
    // Short tables (top-N) in full; long ones (events_by_type_hour) are in their CSV.
    for (name, value) in &report.kpis {
        let kpi::KpiValue::Rows(rows) = value else { continue };
        if rows.is_empty() || rows.len() > 20 {
            continue;
        }
        let cols = report.columns.get(name).cloned().unwrap_or_else(|| rows[0].keys().cloned().collect());
        println!("\n{} ({name}):", report.titles.get(name).map_or(name.as_str(), String::as_str));
        let cells: Vec<Vec<String>> = rows.iter().map(|r| cols.iter().map(|c| r.get(c).map(kpi::cell).unwrap_or_default()).collect()).collect();
        let widths: Vec<usize> =
            cols.iter().enumerate().map(|(i, c)| cells.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(c.chars().count())).collect();
        let line = |values: Vec<&str>| values.iter().zip(&widths).map(|(v, w)| format!("{v:>w$}")).collect::<Vec<_>>().join("  ");
        println!("  {}", line(cols.iter().map(String::as_str).collect()));
        for r in &cells {
            println!("  {}", line(r.iter().map(String::as_str).collect()));
        }
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

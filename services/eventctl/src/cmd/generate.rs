//! `eventctl gen`: seeded synthetic events as NDJSON (plain, .gz or .zst), for demos, tests
//! and benchmarks.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::{generator, size};

/// Options of `eventctl gen`.
#[derive(Args)]
pub struct GenArgs {
    /// Number of lines.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    pub events: u64,
    /// Output file (.gz / .zst compress), or - for stdout.
    #[arg(long, short = 'o', default_value = "-")]
    pub out: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Distinct event types.
    #[arg(long, default_value_t = 300)]
    pub types: usize,
    #[arg(long, default_value_t = 100_000)]
    pub users: u64,
    #[arg(long, default_value_t = 1_000_000)]
    pub products: u64,
    /// Approximate size of a valid line.
    #[arg(long, default_value = "1KiB", value_parser = size::parse)]
    pub size: u64,
    /// Fraction of invalid lines.
    #[arg(long, default_value_t = 0.0)]
    pub bad_ratio: f64,
    /// Start of event time (RFC 3339 or epoch ms); default `--hours` before now, so the
    /// events fall in the windows that the statistics and the features show.
    #[arg(long)]
    pub start: Option<String>,
    /// Hours of event time covered.
    #[arg(long, default_value_t = 6)]
    pub hours: i64,
    /// No schema evolution or type conflicts.
    #[arg(long)]
    pub no_evolve: bool,
}

/// Runs `eventctl gen`.
pub fn run(args: GenArgs) -> Result<i32> {
    let start_ms = match &args.start {
        None => chrono::Utc::now().timestamp_millis() - args.hours * 3_600_000,
        Some(s) => match s.parse::<i64>() {
            Ok(ms) => ms,
            Err(_) => chrono::DateTime::parse_from_rfc3339(s)
                .with_context(|| format!("--start {s:?} is neither epoch ms nor RFC 3339"))?
                .timestamp_millis(),
        },
    };
    if !(0.0..=1.0).contains(&args.bad_ratio) {
        bail!("--bad-ratio must be within [0, 1]");
    }
    let opts = generator::GenOptions {
        events: args.events,
        seed: args.seed,
        types: args.types,
        users: args.users,
        products: args.products,
        event_size: usize::try_from(args.size).context("--size")?,
        bad_ratio: args.bad_ratio,
        start_ms,
        span_ms: args.hours * 3_600_000,
        evolve: !args.no_evolve,
    };
    let summary = if args.out == "-" {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let s = generator::generate(&opts, &mut out)?;
        out.flush()?;
        s
    } else {
        let file = std::fs::File::create(&args.out).with_context(|| format!("creating {}", args.out))?;
        let mut buf = std::io::BufWriter::with_capacity(1 << 20, file);
        
        if args.out.ends_with(".zst") {
            let mut enc = zstd::Encoder::new(buf, 3)?;
            let s = generator::generate(&opts, &mut enc)?;
            enc.finish()?.flush()?;
            s
        } else if args.out.ends_with(".gz") {
            let mut enc = flate2::write::GzEncoder::new(buf, flate2::Compression::fast());
            let s = generator::generate(&opts, &mut enc)?;
            enc.finish()?.flush()?;
            s
        } else {
            let s = generator::generate(&opts, &mut buf)?;
            buf.flush()?;
            s
        }
    };
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(0)
}

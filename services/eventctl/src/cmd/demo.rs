//! `eventctl demo`: a generated sample (1% invalid lines) ingested into a local lake, with the
//! commands to read it back.

use anyhow::Result;
use clap::Args;

use super::LakeArgs;
use super::ingest::IngestArgs;
use crate::generator;

/// Options of `eventctl demo`.
#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Events to generate.
    #[arg(long, short = 'n', default_value_t = 200_000)]
    pub events: u64,
}

/// Runs `eventctl demo`.
pub fn run(args: DemoArgs) -> Result<i32> {
    let DemoArgs { lake, events } = args;
    let dir = std::env::temp_dir().join(format!("eventctl-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sample = dir.join("sample.ndjson.zst");
    let opts = generator::GenOptions { events, bad_ratio: 0.01, ..generator::GenOptions::default() };
    let file = std::fs::File::create(&sample)?;
    let mut enc = zstd::Encoder::new(file, 3)?.auto_finish();
    let g = generator::generate(&opts, &mut enc)?;
    drop(enc);
    eprintln!("generated {} events ({} invalid) into {}", g.lines, g.invalid, sample.display());
    let code = super::ingest::run(IngestArgs {
        inputs: vec![sample.display().to_string()],
        lake: lake.clone(),
        memory: 1 << 30,
        max_event_size: 1 << 20,
        min_created_at: 0,
        max_created_at: 4_102_444_800_000,
        workers: None,
        json: false,
        no_progress: false,
        spill_dir: dir.clone(),
        spill_max: 16 << 30,
        no_spill: false,
        force: false,
    })?;
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nread it back:   eventctl cat --lake {} --type product_viewed | head", lake.lake);
    println!(
        "query it:       duckdb -c \"SELECT type, count(*) FROM read_parquet('{}/events/*/*/*/*.parquet', hive_partitioning=true, union_by_name=true) GROUP BY 1 ORDER BY 2 DESC LIMIT 10\"",
        lake.lake.trim_end_matches('/')
    );
    Ok(code)
}

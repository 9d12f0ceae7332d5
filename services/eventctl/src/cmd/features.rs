//! `eventctl features ...`: the features' windows from the lake.
//!
//! - `backfill`: rebuilds the windows in Redis (`--redis`, `FEATURES_REDIS_URL`) from the
//!   lake and records the handover that the features updater takes over exactly once at its
//!   next start ([`features::backfill`]);
//! - `export`: point-in-time training values for a spine of (product, ts) rows, as Parquet
//!   ([`features::export`]).
//!
//! Counters and windows are the features service's configuration (`--config FILE`, then
//! `FEATURES_*` variables), so both commands count as the online store does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use clap::{Args, Subcommand};
use event_lake::Lake;
use features::config::MAX_LIST_IDS;
use features::export::{EventTimes, Spine, point_in_time};
use features::{FeaturesConfig, Layout, RedisStore};

use super::LakeArgs;

/// Subcommands of `eventctl features`.
#[derive(Subcommand)]
pub enum FeaturesCommand {
    /// Rebuild the windows in Redis from the lake (stop the updater first); it takes over
    /// exactly once at its next start.
    Backfill(BackfillArgs),
    /// Point-in-time feature values for a spine of (product_id, ts), as Parquet.
    Export(ExportArgs),
}

/// Options of `eventctl features backfill`.
#[derive(Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Redis URL (default: the features service's `FEATURES_REDIS_URL`).
    #[arg(long)]
    pub redis: Option<String>,
    /// Features configuration file (counters, windows, key prefix, bus stream).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Clear what the store holds first (else a store holding windows is refused).
    #[arg(long)]
    pub reset: bool,
    /// Handover margin, seconds (default: the configuration's `backfill.margin_secs`, 900).
    #[arg(long)]
    pub margin_secs: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `eventctl features export`.
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The spine: CSV with the header `product_id,ts` or Parquet with those columns (`ts` in
    /// epoch ms).
    #[arg(long)]
    pub spine: PathBuf,
    /// Output Parquet file: `product_id`, `ts`, then one column per counter and window.
    #[arg(long)]
    pub out: PathBuf,
    /// Features configuration file (counters and windows).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs one `features` subcommand.
pub fn run(cmd: FeaturesCommand) -> Result<i32> {
    let rt = super::runtime(None)?;
    match cmd {
        FeaturesCommand::Backfill(args) => rt.block_on(backfill(args)),
        FeaturesCommand::Export(args) => rt.block_on(export(args)),
    }
}

fn config(file: Option<&Path>) -> Result<FeaturesConfig> {
    let config: FeaturesConfig = service_kit::config::load_unchecked("FEATURES", file).context("the features configuration")?;
    config.validate_layout().context("the features configuration")?;
    Ok(config)
}

async fn backfill(args: BackfillArgs) -> Result<i32> {
    let mut config = config(args.config.as_deref())?;
    if let Some(url) = args.redis {
        config.redis_url = url;
    }
    let layout = Layout::new(&config.counters, &config.windows);
    let lake = args.lake.open()?;
    let store = RedisStore::connect(layout.clone(), config.redis_options(1))
    .await
    .with_context(|| format!("connecting to Redis at {}", event_bus::redact_url(&config.redis_url)))?;
    let options = features::backfill::BackfillOptions {
        margin_ms: (args.margin_secs.unwrap_or(config.backfill.margin_secs) as i64).saturating_mul(1000),
        // The updater's positions are the JetStream stream's sequences.
        source: Some(config.bus.stream.clone()),
        reset: args.reset,
        max_id_bytes: config.max_id_bytes,
    };
    let now = chrono::Utc::now().timestamp_millis();
    let report = features::backfill::backfill(&lake, &layout, &store, now, &options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let h = &report.handover;
        println!(
            "rebuilt {} windows from {} events ({} hits) in {} files ({:.1} MB) in {:.1} s ({:.0} events/s); {} bus positions marked; the updater takes over from {} at its next start",
            layout.columns().len(),
            h.events,
            h.hits,
            report.files,
            report.bytes as f64 / 1e6,
            report.seconds,
            h.events as f64 / report.seconds.max(1e-9),
            h.marked,
            chrono::DateTime::from_timestamp_millis(h.from_ms).map(|t| t.to_rfc3339()).unwrap_or_default(),
        );
    }
    Ok(0)
}

/// What an export did.
#[derive(Debug, serde::Serialize)]
struct ExportReport {
    rows: usize,
    products: usize,
    events: u64,
    counted: usize,
    files: usize,
    seconds: f64,
    rows_per_sec: f64,
    out: String,
}

async fn export(args: ExportArgs) -> Result<i32> {
    let config = config(args.config.as_deref())?;
    let layout = Layout::new(&config.counters, &config.windows);
    let started = Instant::now();
    let spine = read_spine(&args.spine).with_context(|| format!("reading the spine {}", args.spine.display()))?;
    let Some((min_ts, max_ts)) = spine.span() else { bail!("the spine {} has no rows", args.spine.display()) };
    let lake = args.lake.open()?;
    let hours = ((min_ts - layout.longest_ms()).div_euclid(3_600_000), max_ts.div_euclid(3_600_000) + 1);
    let (events, read, files) = spine_events(&lake, &layout, &spine, hours).await?;
    let counted = events.len();
    let values = point_in_time(&layout, &spine, events);
    write_parquet(&args.out, &layout, &spine, &values).with_context(|| format!("writing {}", args.out.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let report = ExportReport {
        rows: spine.len(),
        products: (0..spine.len()).map(|i| spine.row(i).0).collect::<std::collections::HashSet<_>>().len(),
        events: read,
        counted,
        files,
        seconds,
        rows_per_sec: spine.len() as f64 / seconds.max(1e-9),
        out: args.out.display().to_string(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} rows ({} products) x {} features to {} in {:.2} s ({:.0} rows/s); {} events read from {} files, {} counted",
            report.rows,
            report.products,
            layout.columns().len(),
            report.out,
            report.seconds,
            report.rows_per_sec,
            report.events,
            report.files,
            report.counted
        );
    }
    Ok(0)
}

/// The counted events of the spine's products in `hours`, read from the lake's counted
/// tables (two files decoded at once); events read and files.
async fn spine_events(lake: &Arc<Lake>, layout: &Layout, spine: &Spine, hours: (i64, i64)) -> Result<(EventTimes, u64, usize)> {
    use futures::StreamExt;
    let mut out = EventTimes::new();
    let (mut read, mut files) = (0u64, 0usize);
    for event_type in layout.event_types() {
        let list = lake.data_files(Some(&event_type), Some(hours)).await.with_context(|| format!("listing the table of {event_type}"))?;
        files += list.len();
        let mut decoded = futures::stream::iter(list.into_iter().map(|f| {
            let lake = lake.clone();
            async move { lake.read_events_json(&f).await.with_context(|| format!("reading {}", f.meta.location)) }
        }))
        .buffered(2);
        while let Some(events) = decoded.next().await {
            for event in events? {
                read += 1;
                let Some(c) = layout.hit_of(&event_type, event.as_bytes(), i64::MAX) else { continue };
                if c.products.len() > MAX_LIST_IDS {
                    continue;
                }
                for p in &c.products {
                    if let Some(id) = spine.product_id(p) {
                        out.push(id, c.counter, c.t_ms);
                    }
                }
            }
        }
    }
    Ok((out, read, files))
}

/// A spine from CSV (`product_id,ts` header) or Parquet (by its magic bytes).
fn read_spine(path: &Path) -> Result<Spine> {
    let mut head = [0u8; 4];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let n = f.read(&mut head)?;
        if n == 4 && &head == b"PAR1" {
            return read_spine_parquet(path);
        }
    }
    read_spine_csv(path)
}

fn read_spine_csv(path: &Path) -> Result<Spine> {
    use std::io::BufRead;
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut lines = file.lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    let columns: Vec<&str> = header.trim().split(',').map(str::trim).collect();
    let (Some(p), Some(t)) = (columns.iter().position(|c| *c == "product_id"), columns.iter().position(|c| *c == "ts")) else {
        bail!("the CSV header must name the columns product_id and ts, found {header:?}");
    };
    let mut spine = Spine::new();
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let (Some(product), Some(ts)) = (fields.get(p), fields.get(t)) else { bail!("line {}: fewer than {} fields", n + 2, columns.len()) };
        let product = product.trim_matches('"');
        let ts: i64 = ts.parse().with_context(|| format!("line {}: ts {ts:?} is not epoch milliseconds", n + 2))?;
        spine.push(product, ts);
    }
    Ok(spine)
}

fn read_spine_parquet(path: &Path) -> Result<Spine> {
    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type, TimestampMillisecondType, UInt64Type};
    use arrow_schema::{DataType, TimeUnit};
    let file = std::fs::File::open(path)?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.with_batch_size(65_536).build()?;
    let mut spine = Spine::new();
    for batch in reader {
        let batch = batch?;
        let (Some(p), Some(t)) = (batch.column_by_name("product_id"), batch.column_by_name("ts")) else {
            bail!("the Parquet spine must have the columns product_id and ts");
        };
        let ts: Vec<Option<i64>> = match t.data_type() {
            DataType::Int64 => t.as_primitive::<Int64Type>().iter().collect(),
            DataType::Int32 => t.as_primitive::<Int32Type>().iter().map(|v| v.map(i64::from)).collect(),
            DataType::UInt64 => t.as_primitive::<UInt64Type>().iter().map(|v| v.and_then(|v| i64::try_from(v).ok())).collect(),
            DataType::Timestamp(TimeUnit::Millisecond, _) => t.as_primitive::<TimestampMillisecondType>().iter().collect(),
            other => bail!("ts is {other}: epoch milliseconds are an integer (or a timestamp in ms)"),
        };
        let product = |i: usize| -> Result<Option<String>> {
            if p.is_null(i) {
                return Ok(None);
            }
            Ok(Some(match p.data_type() {
                DataType::Utf8 => p.as_string::<i32>().value(i).to_owned(),
                DataType::LargeUtf8 => p.as_string::<i64>().value(i).to_owned(),
                DataType::Utf8View => p.as_string_view().value(i).to_owned(),
                DataType::Int64 => p.as_primitive::<Int64Type>().value(i).to_string(),
                DataType::Int32 => p.as_primitive::<Int32Type>().value(i).to_string(),
                other => bail!("product_id is {other}: text or an integer is expected"),
            }))
        };
        for (i, ts) in ts.into_iter().enumerate() {
            let (Some(product), Some(ts)) = (product(i)?, ts) else { bail!("row {i} of a batch has a null product_id or ts") };
            spine.push(&product, ts);
        }
    }
    Ok(spine)
}

fn write_parquet(path: &Path, layout: &Layout, spine: &Spine, values: &[i64]) -> Result<()> {
    use arrow_schema::{DataType, Field, Schema};
    let columns = layout.columns();
    let mut fields = vec![Field::new("product_id", DataType::Utf8, false), Field::new("ts", DataType::Int64, false)];
    fields.extend(columns.iter().map(|c| Field::new(c, DataType::Int64, false)));
    let schema = Arc::new(Schema::new(fields));
    let tmp = path.with_extension("parquet.partial");
    let file = std::fs::File::create(&tmp)?;
    let props = parquet::file::properties::WriterProperties::builder().set_compression(parquet::basic::Compression::ZSTD(Default::default())).build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    const ROWS: usize = 65_536;
    let n = columns.len();
    let mut start = 0;
    while start < spine.len() {
        let end = (start + ROWS).min(spine.len());
        let rows = start..end;
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.clone().map(|i| spine.row(i).0))),
            Arc::new(Int64Array::from_iter_values(rows.clone().map(|i| spine.row(i).1))),
        ];
        for c in 0..n {
            arrays.push(Arc::new(Int64Array::from_iter_values(rows.clone().map(|i| values[i * n + c]))));
        }
        writer.write(&RecordBatch::try_new(schema.clone(), arrays)?)?;
        start = end;
    }
    writer.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

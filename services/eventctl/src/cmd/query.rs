//! `eventctl query`: one SQL statement over the lake (each event type a table, `lake.events`
//! all of them), results as a table, CSV, JSON or Parquet, bytes read reported on stderr.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use lake_query::output::{self, Format};
use lake_query::{LakeSession, SessionOptions};

use super::{is_broken_pipe, mib, runtime};

/// Options of `eventctl query`.
#[derive(Args)]
pub struct QueryArgs {
    /// The SQL statement (tables: `<type>` per event type, `lake.events` for all types).
    pub sql: String,
    /// Lake root: a local folder or s3://bucket/prefix (AWS_ENDPOINT_URL for an S3-compatible store).
    #[arg(long, env = "EVENTCTL_LAKE", default_value = "./lake")]
    pub lake: String,
    /// Output format: table, csv, json (one object per line) or parquet (needs --out).
    #[arg(long, short = 'f', default_value = "table", value_parser = parse_format)]
    pub format: Format,
    /// Write the results to this file instead of stdout.
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
    /// Print the read statistics (bytes, files, requests) as JSON on stderr (with --explain:
    /// what planning read, the tables' logs).
    #[arg(long)]
    pub stats: bool,
    /// Print the physical plan instead of running the query.
    #[arg(long)]
    pub explain: bool,
    /// Time travel: read each table at this version (an integer; for a query on one type), or
    /// as it was at this time (RFC 3339, or `YYYY-MM-DD[ HH:MM[:SS]]` in UTC).
    #[arg(long, value_name = "VERSION|TIMESTAMP", value_parser = parse_as_of)]
    pub as_of: Option<event_lake::AsOf>,
    /// Run on the KPI cluster of this scheduler (`eventctl cluster scheduler`), HOST:PORT.
    /// Needs the `cluster` feature.
    #[arg(long, env = "EVENTCTL_CLUSTER", value_name = "HOST:PORT")]
    pub cluster: Option<String>,
}

fn parse_as_of(s: &str) -> Result<event_lake::AsOf, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// Runs `eventctl query`.
pub fn run(args: QueryArgs) -> Result<i32> {
    if args.format == Format::Parquet && args.out.is_none() {
        bail!("--format parquet needs --out FILE");
    }
    let rt = runtime(None)?;
    let session = LakeSession::open(&args.lake, &SessionOptions { as_of: args.as_of.unwrap_or_default(), cluster: args.cluster.clone(), ..SessionOptions::default() }).with_context(|| format!("opening the lake {}", args.lake))?;
    let started = std::time::Instant::now();
    if args.explain {
        println!("{}", rt.block_on(session.explain(&args.sql))?);
        // Planning reads the tables' logs: --stats reports what that cost.
        if args.stats {
            eprintln!("{}", serde_json::json!({"rows": 0, "elapsed_ms": started.elapsed().as_millis() as u64, "read": session.stats().snapshot()}));
        }
        return Ok(0);
    }
    let (schema, batches) = rt.block_on(session.collect_with_schema(&args.sql))?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            output::write(schema, &batches, args.format, &mut w)?;
            w.flush().with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let mut w = std::io::BufWriter::new(std::io::stdout());
            let written = output::write(schema, &batches, args.format, &mut w).map_err(anyhow::Error::from).and_then(|()| Ok(w.flush()?));
            if let Err(e) = written
                && !is_broken_pipe(&e)
            {
                return Err(e);
            }
        }
    }
    let read = session.stats().snapshot();
    if args.stats {
        eprintln!("{}", serde_json::json!({"rows": rows, "elapsed_ms": started.elapsed().as_millis() as u64, "read": read}));
    } else if args.cluster.is_some() {
        eprintln!(
            "{rows} rows in {:.2}s on the cluster: the executors read {} of column data from {} files",
            started.elapsed().as_secs_f64(),
            mib(read.scanned_bytes),
            read.files_read
        );
    } else {
        eprintln!(
            "{rows} rows in {:.2}s; read {} from {} files ({} GETs, {} LISTs)",
            started.elapsed().as_secs_f64(),
            mib(read.bytes_read),
            read.files_read,
            read.get_requests,
            read.list_requests
        );
    }
    Ok(0)
}

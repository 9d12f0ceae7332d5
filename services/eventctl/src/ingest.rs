//! `eventctl ingest`: NDJSON from files, folders, globs or stdin into the lake.
//!
//! A pipeline of threads with bounded queues between them, so memory stays within the
//! budget whatever the input size:
//!
//! ```text
//! reader --chunks--> validators (N) --validated--> router --partitions--> flushers (N) --> lake
//!                                                    \--rejected lines--> quarantine files
//! ```
//! The router buffers events per partition and hands a partition to the flushers when it is
//! full, the largest one when the buffers are over budget, and all of them at the end. Past
//! half the buffers' budget, full chunks of a partition are spilled to a local folder (a
//! buffered write now, a page-cache read at the flush), or compressed in memory with
//! `--no-spill`. Every line read is counted exactly once, as valid or quarantined.
//!
//! Commits: data files are written as the flushers go, but become part of their type's Delta
//! table only at the end, in one commit per table that also carries the table's schema
//! (staged in memory meanwhile, see `SchemaRegistry::stage`; a new type's table is created by
//! that commit), so a failed run leaves no partial load visible, not even an empty table. The load is keyed by the content hash of its input files (SHA-256): each commit
//! carries the Delta application transaction `eventctl-ingest/<hash>`, and a load history
//! entry `_loads/<hash>.json` is written once every table has committed. A re-run on the same
//! content finds the history entry and does nothing (exit 0, `already_loaded` in the
//! summary); a re-run after a crash part-way skips the tables that already hold the
//! transaction. `--force` loads again (no transaction). Standard input is not hashed: it is
//! always loaded.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use crossbeam_channel::{Receiver, Sender, bounded};
use event_contract::{Limits, Reason, Rejection, validate};
use event_lake::buffer::{BufferLimits, PartitionBuffer, PartitionBuffers, SpillLimits};
use event_lake::{Lake, PartitionKey, QuarantineRecord};
use foldhash::{HashMap, HashMapExt, HashSet};
use serde::Serialize;

use crate::input::{self, Chunk, Piece, Source};

/// Settings of one ingest run.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Memory budget of the whole pipeline, in bytes.
    pub memory_bytes: u64,
    /// The contract's limits.
    pub limits: Limits,
    /// Validation and flush threads (each).
    pub workers: usize,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
    /// Spill buffered events to this local folder, up to `spill_max_bytes`, instead of
    /// compressing them in memory (`None`: compress).
    pub spill_dir: Option<std::path::PathBuf>,
    /// Disk for spilled events, in bytes.
    pub spill_max_bytes: u64,
    /// Load even when the load history holds this content.
    pub force: bool,
}

/// What an ingest run did; printed at the end (`--json` for machines).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The lake written to.
    pub lake: String,
    /// Input sources read.
    pub sources: u64,
    /// Lines read.
    pub lines_read: u64,
    /// Lines that are valid events.
    pub valid: u64,
    /// Lines quarantined.
    pub quarantined: u64,
    /// Quarantined lines by reason code.
    pub quarantined_by_reason: BTreeMap<String, u64>,
    /// Valid events dropped because their `data.id` repeated in the same partition flush.
    pub duplicates_dropped: u64,
    /// Rows written to data files.
    pub rows_written: u64,
    /// Distinct partitions (type, hour) written.
    pub partitions_written: u64,
    /// Data files written.
    pub files_written: u64,
    /// Quarantine files written.
    pub quarantine_files: u64,
    /// Bytes of input (decompressed).
    pub bytes_read: u64,
    /// Bytes of Parquet written (data and quarantine).
    pub bytes_written: u64,
    /// Bytes of events spilled to the spill folder while they waited for their partition.
    pub bytes_spilled: u64,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Lines per second.
    pub events_per_s: f64,
    /// Input MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// valid + quarantined == lines_read.
    pub balanced: bool,
    /// Input errors (unreadable or corrupt sources); any makes the exit code non-zero.
    pub io_errors: Vec<String>,
    /// SHA-256 of the input files' contents (none for standard input): the load's key.
    pub load_id: Option<String>,
    /// The lake's load history already held this content: nothing was loaded.
    pub already_loaded: bool,
    /// Tables (types) committed to.
    pub tables_committed: u64,
    /// Tables that already held this load's transaction (a resumed run): not committed again.
    pub tables_skipped: u64,
    /// Time spent making the written files durable (one file-system sync on a local lake) and
    /// committing them to the tables' logs, seconds (included in `elapsed_s`).
    pub commit_s: f64,
    /// Rows committed by type and hour (`YYYY-MM-DDTHH`).
    pub rows_by_type_hour: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Validated lines of one chunk.
struct Validated {
    chunk: Chunk,
    /// (partition, byte range in chunk)
    valid: Vec<(PartitionKey, usize, usize)>,
    rejected: Vec<QuarantineRecord>,
    lines: u64,
}

/// What the router counted: quarantined lines by reason, bytes spilled.
struct Routed {
    by_reason: BTreeMap<String, u64>,
    bytes_spilled: u64,
}

enum Job {
    Partition(PartitionKey, PartitionBuffer),
    Quarantine(Vec<QuarantineRecord>),
}

#[derive(Default)]
struct Counters {
    lines: AtomicU64,
    valid: AtomicU64,
    quarantined: AtomicU64,
    bytes: AtomicU64,
}

#[derive(Default)]
struct Written {
    rows: u64,
    duplicates: u64,
    files: u64,
    quarantine_files: u64,
    bytes: u64,
    partitions: HashSet<PartitionKey>,
    /// Written, not yet committed data files, by type.
    pending: HashMap<Arc<str>, Vec<event_lake::WrittenFile>>,
    error: Option<String>,
}

/// The load history entry of a content hash.
fn load_marker(load_id: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("_loads/{load_id}.json"))
}

/// SHA-256 over the input files' contents, in order.
fn content_hash(paths: &[std::path::PathBuf], cancelled: &AtomicBool) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut all = Sha256::new();
    for path in paths {
        let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if cancelled.load(Ordering::Relaxed) {
                return Err(anyhow!("the load stopped before its content was hashed"));
            }
            let n = f.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        all.update(h.finalize());
    }
    Ok(hex::encode(all.finalize()))
}

/// What the load history says of this input, decided while the load runs.
#[derive(Debug, Clone)]
struct LoadCheck {
    /// The content hash (`None` with standard input).
    load_id: Option<String>,
    /// The lake's load history already holds it (and no `--force`): the load stops.
    already_loaded: bool,
}

/// Hashes the input and looks it up in the load history. Runs beside the load (the hash of
/// 1 GB takes about 2 s, a tenth of its ingest): a re-run of loaded content stops as soon as
/// this answers, having committed nothing.
fn check_load(
    paths: Option<&[std::path::PathBuf]>,
    force: bool,
    lake: &Lake,
    handle: &tokio::runtime::Handle,
    cancelled: &AtomicBool,
) -> Result<LoadCheck> {
    let Some(paths) = paths else { return Ok(LoadCheck { load_id: None, already_loaded: false }) };
    let id = content_hash(paths, cancelled)?;
    if force {
        return Ok(LoadCheck { load_id: Some(id), already_loaded: false });
    }
    use object_store::ObjectStoreExt;
    match handle.block_on(lake.store().head(&load_marker(&id))) {
        Ok(_) => Ok(LoadCheck { load_id: Some(id), already_loaded: true }),
        Err(object_store::Error::NotFound { .. }) => Ok(LoadCheck { load_id: Some(id), already_loaded: false }),
        Err(e) => Err(anyhow!("reading the load history: {e}")),
    }
}

/// Runs an ingest of `sources` into `lake`.
pub fn run(lake: Arc<Lake>, sources: Vec<Source>, opts: &IngestOptions) -> Result<Summary> {
    let started = Instant::now();
    let source_count = sources.len() as u64;
    let workers = opts.workers.max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let handle = runtime.handle().clone();

    // Files are hashed beside the load; standard input has no content id.
    let paths: Option<Vec<std::path::PathBuf>> = (!sources.is_empty())
        .then(|| sources.iter().map(|s| if let Source::File(p) = s { Some(p.clone()) } else { None }).collect())
        .flatten();
    let cancelled = Arc::new(AtomicBool::new(false));
    let check: Arc<std::sync::OnceLock<Result<LoadCheck, String>>> = Arc::new(std::sync::OnceLock::new());

    // Budget: half for buffers (open chunks, plus compressed ones without a spill folder); per
    // flush in flight at most 1/32 raw, which takes about 3x that while it is parsed and
    // encoded; the rest for queues and the allocator's slack. Measured on 200,000 events of
    // 10 KiB (2 GB, partitions up to 30 MB): 1 GiB budget, peak RSS about 450 MiB.
    let budget = opts.memory_bytes.max(64 << 20) as usize;
    let chunk_bytes = (budget / 256).clamp(256 << 10, 4 << 20);
    let buffer_limits = BufferLimits {
        max_bytes: budget / 2,
        max_partition_raw_bytes: (budget / 32).max(1 << 20),
        chunk_bytes: 16 << 10,
        spill: opts.spill_dir.as_ref().map(|dir| SpillLimits::new(dir, opts.spill_max_bytes)),
        ..BufferLimits::default()
    };
    let max_line = opts.limits.max_event_bytes;

    let counters = Arc::new(Counters::default());
    let written = Arc::new(Mutex::new(Written::default()));
    let io_errors = Arc::new(Mutex::new(Vec::<String>::new()));

    let (chunk_tx, chunk_rx) = bounded::<Piece>(workers * 2);
    let (valid_tx, valid_rx) = bounded::<Validated>(workers * 2);
    let (job_tx, job_rx) = bounded::<Job>(workers);

    let routed = std::thread::scope(|s| -> Result<Routed> {
        // The load history check.
        {
            let (check, cancelled, lake, handle, paths) = (check.clone(), cancelled.clone(), lake.clone(), handle.clone(), paths.clone());
            let force = opts.force;
            s.spawn(move || {
                let result = check_load(paths.as_deref(), force, &lake, &handle, &cancelled).map_err(|e| format!("{e:#}"));
                if !matches!(&result, Ok(c) if !c.already_loaded) {
                    cancelled.store(true, Ordering::Relaxed);
                }
                let _ = check.set(result);
            });
        }

        // Reader.
        let reader_errors = io_errors.clone();
        let reader_counters = counters.clone();
        let reader_cancelled = cancelled.clone();
        s.spawn(move || {
            for src in sources {
                if reader_cancelled.load(Ordering::Relaxed) {
                    break;
                }
                let name: Arc<str> = Arc::from(src.name());
                let emit = |p| !reader_cancelled.load(Ordering::Relaxed) && chunk_tx.send(p).is_ok();
                let result = src.open().and_then(|r| {
                    input::read_pieces(name.clone(), r, chunk_bytes, max_line, emit, |n| {
                        reader_counters.bytes.fetch_add(n, Ordering::Relaxed);
                    })
                });
                if let Err(e) = result {
                    tracing::error!(source = %name, error = %e, "input error");
                    if let Ok(mut errs) = reader_errors.lock() {
                        errs.push(format!("{name}: {e}"));
                    }
                }
            }
        });

        // Validators.
        for _ in 0..workers {
            let rx = chunk_rx.clone();
            let tx = valid_tx.clone();
            let limits = opts.limits.clone();
            s.spawn(move || validator(rx, tx, &limits));
        }
        drop(chunk_rx);
        drop(valid_tx);

        // Flushers.
        for _ in 0..workers {
            let rx = job_rx.clone();
            let lake = lake.clone();
            let handle = handle.clone();
            let written = written.clone();
            let (check, cancelled) = (check.clone(), cancelled.clone());
            s.spawn(move || flusher(rx, &lake, &handle, &written, &check, &cancelled));
        }
        drop(job_rx);

        // Router (this thread).
        let progress = (opts.progress && std::io::stderr().is_terminal()).then(progress_bar);
        let result = router(valid_rx, &job_tx, buffer_limits, &counters, &written, &cancelled, progress.as_ref());
        drop(job_tx);
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        result
    });
    // A failed flush stopped the load (and the hash with it): its error is the answer.
    if let Some(e) = written.lock().map_err(|_| anyhow!("a flush thread panicked"))?.error.clone() {
        return Err(anyhow!("writing to the lake failed: {e}"));
    }
    let check = match check.get() {
        Some(Ok(c)) => c.clone(),
        Some(Err(e)) => return Err(anyhow!("{e}")),
        None => return Err(anyhow!("the load history check did not finish")),
    };
    if check.already_loaded {
        // Nothing was committed: the files written before the check answered are deleted
        // (vacuum would remove them otherwise).
        let pending: Vec<object_store::path::Path> = written
            .lock()
            .map(|w| w.pending.values().flatten().map(|f| f.path.clone()).collect())
            .unwrap_or_default();
        handle.block_on(async {
            use object_store::ObjectStoreExt;
            for p in &pending {
                if let Err(e) = lake.store().delete(p).await {
                    tracing::warn!(path = %p, error = %e, "an uncommitted file of a stopped load was not deleted (vacuum removes it)");
                }
            }
        });
        return Ok(Summary {
            lake: lake.root.url.clone(),
            sources: source_count,
            load_id: check.load_id,
            already_loaded: true,
            balanced: true,
            elapsed_s: started.elapsed().as_secs_f64(),
            ..Summary::default()
        });
    }
    let load_id = check.load_id;
    let routed = routed?;

    let mut w = written.lock().map_err(|_| anyhow!("a flush thread panicked"))?;
    let io_errors = io_errors.lock().map(|e| e.clone()).unwrap_or_default();
    // A load that could not read all its input is not the content its hash names: commit
    // what was read, without the transaction or a history entry.
    let txn_id = match (&load_id, opts.force, io_errors.is_empty()) {
        (Some(id), false, true) => Some(format!("eventctl-ingest/{id}")),
        _ => None,
    };
    let commit_started = Instant::now();
    // Files first durable (written with deferred sync: one syncfs), then committed.
    handle.block_on(lake.sync_written()).map_err(|e| anyhow!("making the written files durable: {e}"))?;
    let pending = std::mem::take(&mut w.pending);
    let mut rows_by_type_hour: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (t, files) in &pending {
        let hours = rows_by_type_hour.entry(t.to_string()).or_default();
        for f in files {
            let (d, h) = event_lake::layout::date_hour(f.partition.hour);
            *hours.entry(format!("{d}T{h:02}")).or_default() += f.rows;
        }
    }
    let outcomes: Vec<event_lake::table::CommitOutcome> = handle.block_on(async {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(pending.iter().map(|(t, files)| {
            let lake = lake.clone();
            let txn = txn_id.clone();
            async move { lake.commit_appends(t, files, txn.as_deref().map(|a| (a, 1))).await }
        }))
        .buffer_unordered(8)
        .try_collect()
        .await
    })?;
    let tables_skipped = outcomes.iter().filter(|o| matches!(o, event_lake::table::CommitOutcome::AlreadyCommitted)).count() as u64;
    let commit_s = commit_started.elapsed().as_secs_f64();
    let elapsed = started.elapsed().as_secs_f64();
    let mut summary = Summary {
        lake: lake.root.url.clone(),
        sources: source_count,
        lines_read: counters.lines.load(Ordering::Relaxed),
        valid: counters.valid.load(Ordering::Relaxed),
        quarantined: counters.quarantined.load(Ordering::Relaxed),
        bytes_read: counters.bytes.load(Ordering::Relaxed),
        duplicates_dropped: w.duplicates,
        rows_written: w.rows,
        partitions_written: w.partitions.len() as u64,
        files_written: w.files,
        quarantine_files: w.quarantine_files,
        bytes_written: w.bytes,
        bytes_spilled: routed.bytes_spilled,
        elapsed_s: elapsed,
        io_errors,
        quarantined_by_reason: routed.by_reason,
        load_id,
        tables_committed: outcomes.len() as u64 - tables_skipped,
        tables_skipped,
        commit_s,
        rows_by_type_hour,
        ..Summary::default()
    };
    summary.events_per_s = summary.lines_read as f64 / elapsed.max(1e-9);
    summary.mb_per_s = summary.bytes_read as f64 / 1e6 / elapsed.max(1e-9);
    summary.balanced = summary.valid + summary.quarantined == summary.lines_read;
    if txn_id.is_some()
        && let Some(id) = &summary.load_id
    {
        use object_store::ObjectStoreExt;
        let body = serde_json::to_vec_pretty(&summary)?;
        handle
            .block_on(lake.store().put(&load_marker(id), object_store::PutPayload::from(body)))
            .map_err(|e| anyhow!("writing the load history: {e}"))?;
    }
    Ok(summary)
}

fn validator(rx: Receiver<Piece>, tx: Sender<Validated>, limits: &Limits) {
    let mut types: HashMap<String, Arc<str>> = HashMap::new();
    let now = || chrono::Utc::now().timestamp_millis();
    for piece in rx {
        let v = match piece {
            Piece::Long(l) => {
                let rejection = Rejection::new(
                    Reason::TooLarge,
                    format!("{} bytes, the limit is {} (first {} bytes kept)", l.len, limits.max_event_bytes, l.head.len()),
                );
                let rec = QuarantineRecord {
                    raw: l.head,
                    raw_len: l.len,
                    rejection,
                    source: l.source.to_string(),
                    line: l.line,
                    arrived_at: now(),
                };
                Validated {
                    chunk: Chunk { source: l.source, first_line: l.line, data: Vec::new() },
                    valid: Vec::new(),
                    rejected: vec![rec],
                    lines: 1,
                }
            }
            Piece::Lines(chunk) => {
                let mut valid = Vec::new();
                let mut rejected = Vec::new();
                let mut lines = 0u64;
                let base = chunk.data.as_ptr() as usize;
                for line in input::lines(&chunk.data) {
                    lines += 1;
                    match validate(line, limits) {
                        Ok(ev) => {
                            let t = match types.get(ev.event_type.as_ref()) {
                                Some(t) => t.clone(),
                                None => {
                                    let t: Arc<str> = Arc::from(ev.event_type.as_ref());
                                    types.insert(ev.event_type.to_string(), t.clone());
                                    t
                                }
                            };
                            let start = line.as_ptr() as usize - base;
                            valid.push((PartitionKey::of(t, ev.created_at), start, start + line.len()));
                        }
                        Err(rejection) => rejected.push(QuarantineRecord {
                            raw: line.to_vec(),
                            raw_len: line.len() as u64,
                            rejection,
                            source: chunk.source.to_string(),
                            line: chunk.first_line + lines - 1,
                            arrived_at: now(),
                        }),
                    }
                }
                Validated { chunk, valid, rejected, lines }
            }
        };
        if tx.send(v).is_err() {
            return;
        }
    }
}

fn router(
    rx: Receiver<Validated>,
    jobs: &Sender<Job>,
    limits: BufferLimits,
    counters: &Counters,
    written: &Mutex<Written>,
    cancelled: &AtomicBool,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Routed> {
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    const QUARANTINE_FLUSH_BYTES: usize = 32 << 20;
    let mut buffers = PartitionBuffers::new(limits);
    let mut quarantine: Vec<QuarantineRecord> = Vec::new();
    let mut quarantine_bytes = 0usize;
    let mut last_tick = Instant::now();
    let send = |job: Job| jobs.send(job).map_err(|_| anyhow!("the flush threads stopped"));
    for v in rx {
        if written.lock().map(|w| w.error.is_some()).unwrap_or(true) || cancelled.load(Ordering::Relaxed) {
            // A flush failed, or the content was already loaded: stop reading; the caller
            // reports it.
            return Ok(Routed { by_reason, bytes_spilled: buffers.spilled_total() });
        }
        counters.lines.fetch_add(v.lines, Ordering::Relaxed);
        counters.valid.fetch_add(v.valid.len() as u64, Ordering::Relaxed);
        counters.quarantined.fetch_add(v.rejected.len() as u64, Ordering::Relaxed);
        for (key, start, end) in &v.valid {
            if let Some((k, full)) = buffers.push(key, &v.chunk.data[*start..*end])? {
                send(Job::Partition(k, full))?;
            }
        }
        while buffers.over_budget() {
            match buffers.take_largest() {
                Some((k, p)) => send(Job::Partition(k, p))?,
                None => break,
            }
        }
        for r in v.rejected {
            *by_reason.entry(r.rejection.reason.code().to_owned()).or_default() += 1;
            quarantine_bytes += r.raw.len() + r.rejection.detail.len() + 64;
            quarantine.push(r);
        }
        if quarantine_bytes >= QUARANTINE_FLUSH_BYTES {
            send(Job::Quarantine(std::mem::take(&mut quarantine)))?;
            quarantine_bytes = 0;
        }
        if let Some(p) = progress
            && last_tick.elapsed() >= Duration::from_millis(200) {
                last_tick = Instant::now();
                p.set_position(counters.lines.load(Ordering::Relaxed));
                p.set_message(format!(
                    "{} MB read, {} quarantined, {} partitions buffered ({} MB in memory, {} MB spilled)",
                    counters.bytes.load(Ordering::Relaxed) / 1_000_000,
                    counters.quarantined.load(Ordering::Relaxed),
                    buffers.len(),
                    buffers.mem_bytes() >> 20,
                    buffers.spilled_bytes() >> 20
                ));
            }
    }
    let bytes_spilled = buffers.spilled_total();
    tracing::info!(
        partitions = buffers.len(),
        in_memory_bytes = buffers.mem_bytes(),
        spilled_bytes = buffers.spilled_bytes(),
        "input read; writing the buffered partitions"
    );
    if cancelled.load(Ordering::Relaxed) {
        return Ok(Routed { by_reason, bytes_spilled });
    }
    for (k, p) in buffers.take_all() {
        send(Job::Partition(k, p))?;
    }
    if !quarantine.is_empty() {
        send(Job::Quarantine(quarantine))?;
    }
    Ok(Routed { by_reason, bytes_spilled })
}

/// Files a flusher has encoded and is still storing, at most: it encodes the next partition
/// while they are written (their bytes are held meanwhile).
const UPLOADS_PER_FLUSHER: usize = 2;

fn flusher(
    rx: Receiver<Job>,
    lake: &Arc<Lake>,
    handle: &tokio::runtime::Handle,
    written: &Mutex<Written>,
    check: &std::sync::OnceLock<Result<LoadCheck, String>>,
    cancelled: &AtomicBool,
) {
    // A failed flush stops the whole load: the reader, the hash, the other flushers.
    let fail = |e: String| {
        tracing::error!(error = %e, "flush failed");
        if let Ok(mut w) = written.lock() {
            w.error.get_or_insert(e);
        }
        cancelled.store(true, Ordering::Relaxed);
    };
    let settle = |upload: tokio::task::JoinHandle<Result<event_lake::WrittenFile, event_lake::LakeError>>| {
        match handle.block_on(upload) {
            Ok(Ok(f)) => {
                if let Ok(mut w) = written.lock() {
                    w.rows += f.rows;
                    w.duplicates += f.duplicates_dropped;
                    w.files += 1;
                    w.bytes += f.bytes;
                    w.partitions.insert(f.partition.clone());
                    w.pending.entry(f.partition.event_type.clone()).or_default().push(f);
                }
            }
            Ok(Err(e)) => fail(e.to_string()),
            Err(e) => fail(format!("the upload task failed: {e}")),
        }
    };
    let mut uploads = std::collections::VecDeque::new();
    // The events of one partition at a time, in a buffer kept across partitions.
    let mut scratch = Vec::new();
    for job in rx {
        if cancelled.load(Ordering::Relaxed) {
            continue;
        }
        // Quarantine files are committed as they are written: only once the load is known
        // to be new (a re-run must not quarantine its lines twice).
        if matches!(job, Job::Quarantine(_)) && !matches!(check.wait(), Ok(c) if !c.already_loaded) {
            continue;
        }
        let result: Result<(), String> = match job {
            Job::Partition(key, buf) => buf
                .into_records_in(std::mem::take(&mut scratch))
                .map_err(|e| e.to_string())
                .and_then(|recs| {
                    let file = handle.block_on(lake.encode_events_file(&key, recs.iter())).map_err(|e| e.to_string());
                    scratch = recs.into_buffer();
                    file
                })
                .map(|file| {
                    if let Some(f) = file {
                        while uploads.len() >= UPLOADS_PER_FLUSHER {
                            if let Some(u) = uploads.pop_front() {
                                settle(u);
                            }
                        }
                        let lake = lake.clone();
                        uploads.push_back(handle.spawn(async move { lake.upload(f).await }));
                    }
                }),
            Job::Quarantine(records) => {
                handle.block_on(lake.write_quarantine(&records)).map_err(|e| e.to_string()).map(|files| {
                    if let Ok(mut w) = written.lock() {
                        w.quarantine_files += files.len() as u64;
                        w.bytes += files.iter().map(|(_, n)| n).sum::<u64>();
                    }
                })
            }
        };
        if let Err(e) = result {
            fail(e);
        }
    }
    for u in uploads {
        settle(u);
    }
}

fn progress_bar() -> indicatif::ProgressBar {
    let p = indicatif::ProgressBar::new_spinner();
    let style = indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {pos} lines ({per_sec}) {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    p.set_style(style);
    p.enable_steady_tick(Duration::from_millis(200));
    p
}

/// Prints the summary for people.
pub fn print_human(s: &Summary) {
    if s.already_loaded {
        println!(
            "already loaded into {}: the load history holds this content ({}); nothing done (--force loads it again)",
            s.lake,
            s.load_id.as_deref().unwrap_or("-")
        );
        return;
    }
    println!("ingested into {}", s.lake);
    println!("  lines read     {:>12}", s.lines_read);
    println!("  valid          {:>12}", s.valid);
    println!("  quarantined    {:>12}", s.quarantined);
    for (reason, n) in &s.quarantined_by_reason {
        println!("    {reason:<28}{n:>10}");
    }
    println!(
        "  check          valid + quarantined {} lines read ({} + {} = {})",
        if s.balanced { "==" } else { "!=" },
        s.valid,
        s.quarantined,
        s.valid + s.quarantined
    );
    if s.duplicates_dropped > 0 {
        println!("  repeated ids dropped {:>6}", s.duplicates_dropped);
    }
    println!("  rows written   {:>12}", s.rows_written);
    println!("  partitions     {:>12}", s.partitions_written);
    println!("  files          {:>12} data, {} quarantine", s.files_written, s.quarantine_files);
    println!("  bytes          {:>12} read, {} written", s.bytes_read, s.bytes_written);
    if s.bytes_spilled > 0 {
        println!("  spilled        {:>12} bytes (buffered on local disk)", s.bytes_spilled);
    }
    println!("  tables         {:>12} committed, {} already held this load", s.tables_committed, s.tables_skipped);
    println!("  throughput     {:>12.0} events/s, {:.1} MB/s in {:.2}s ({:.2}s committing)", s.events_per_s, s.mb_per_s, s.elapsed_s, s.commit_s);
    for e in &s.io_errors {
        println!("  input error    {e}");
    }
}

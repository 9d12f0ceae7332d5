//! Compaction of the per-user history table ([`crate::history`]): each build adds a file per
//! (month, bucket) it touches, so a month of builds every 10 minutes would leave thousands of
//! files in a partition, each opened by every reader of a user of that bucket. Compaction
//! merges them into *runs*: files sorted by (user, created_at, id) whose user ranges do not
//! overlap (a user's rows never straddle two files of a run), with the range in the file's
//! Delta statistics. A reader opens at most one file per run, and none of the others.
//!
//! Policy, per partition and run of the job (a size-tiered merge, bounded work per run):
//! - build files (`part-*`) are merged into a new run once there are [`l0_trigger`] of them;
//! - runs of the same size tier (tier `k` holds runs of `base · fanout^k` bytes) are merged
//!   once there are [`fanout`] of them, so a row is rewritten about log_fanout(month / base)
//!   times in its month;
//! - a closed month (its end [`month_grace_ms`] ago) is merged into one run;
//! - one merge per partition per run of the job, of at most [`max_inputs`] inputs (a run is
//!   one input, read file after file): memory stays at inputs × one row group.
//!
//! A merge is a streaming k-way merge of sorted inputs (nothing is sorted in memory) into
//! files of about [`target_file_bytes`], and commits the `remove` of its inputs with the `add`
//! of its outputs in one Delta commit (`dataChange: false`): readers see the old files or the
//! new ones, never both. A merge that loses a race with another (the same inputs removed
//! first) leaves its outputs uncommitted, for vacuum; a crash does the same.
//!
//! [`l0_trigger`]: HistoryCompactOptions::l0_trigger
//! [`fanout`]: HistoryCompactOptions::fanout
//! [`month_grace_ms`]: HistoryCompactOptions::month_grace_ms
//! [`max_inputs`]: HistoryCompactOptions::max_inputs
//! [`target_file_bytes`]: HistoryCompactOptions::target_file_bytes

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, Remove, Transaction};
use deltalake::protocol::DeltaOperation;
use deltalake::DeltaTableError;
use futures::StreamExt;
use object_store::path::Path;
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder};
use serde::Serialize;

use crate::history::{FileRange, HISTORY_DIR, history_add, history_schema, history_writer_properties};
use crate::writer::Lake;
use crate::LakeError;

/// Rows decoded at once from each input.
const READ_BATCH_ROWS: usize = 256;
/// Rows gathered before they are handed to the writer.
const WRITE_CHUNK_ROWS: usize = 1024;
/// Encoded bytes of a row group before it is flushed (bounds the writer's memory and what a
/// later merge holds per input).
pub const ROW_GROUP_BYTES: usize = 32 << 20;
/// The smallest size tier: runs below it are tier 0.
const TIER_BASE_BYTES: u64 = 16 << 20;

/// How the history table is compacted.
#[derive(Debug, Clone)]
pub struct HistoryCompactOptions {
    /// Build files of a partition that trigger their merge into a run (default 8).
    pub l0_trigger: usize,
    /// Runs of one size tier that trigger their merge (default 8: the table is written all
    /// the time and read rarely, so fewer rewrites (log_8 of a month's growth) are worth more
    /// files per page in the current month).
    pub fanout: usize,
    /// Inputs of one merge at most (default 16).
    pub max_inputs: usize,
    /// Bytes of an output file (default 256 MiB; a user's rows are never split, so a file
    /// may exceed it by one user's rows). Held in memory while written.
    pub target_file_bytes: u64,
    /// A month is closed (merged into one run) this long after its end (default 2 days: the
    /// history's lateness and the build's period are far below).
    pub month_grace_ms: i64,
    /// Only the partitions of the buckets `b` with `b % n == i` (`Some((i, n))`): `n` jobs
    /// compact disjoint partitions at once (a Kubernetes indexed Job).
    pub shard: Option<(u32, u32)>,
    /// zstd level of the runs (default 3: level 9 stored generated 10 KiB events 5% smaller and
    /// merged them several times slower, `scripts/bench-history.sh`).
    pub zstd_level: i32,
    /// Test hook: stop after writing the first merge's outputs, before committing them.
    #[doc(hidden)]
    pub crash_before_commit: bool,
}

impl Default for HistoryCompactOptions {
    fn default() -> Self {
        HistoryCompactOptions { l0_trigger: 8, fanout: 8, max_inputs: 16, target_file_bytes: 256 << 20, month_grace_ms: 2 * 86_400_000, shard: None, zstd_level: 3, crash_before_commit: false }
    }
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryCompactReport {
    /// Partitions (month, bucket) looked at.
    pub partitions_seen: u64,
    /// Merges committed.
    pub merges: u64,
    /// Merges another compaction got to first (their outputs stay uncommitted).
    pub superseded: u64,
    /// Files removed.
    pub files_in: u64,
    /// Files written.
    pub files_out: u64,
    /// Rows merged.
    pub rows: u64,
    /// Bytes of the files removed.
    pub bytes_in: u64,
    /// Bytes of the files written.
    pub bytes_out: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Stopped by a test hook.
    pub interrupted: bool,
}

/// A live file of the table.
#[derive(Debug, Clone)]
pub(crate) struct LiveFile {
    /// Path relative to the table.
    pub rel: String,
    pub size: u64,
    /// The user range (from the file's statistics).
    pub range: Option<FileRange>,
}

/// One input of a merge: a build file, or a run's files in user order.
#[derive(Debug, Clone)]
struct Input {
    files: Vec<LiveFile>,
}

impl Input {
    fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The application transaction counting a partition's compactions.
fn generation_app(month: &str, bucket: u32) -> String {
    format!("history-compact:{month}/{bucket}")
}

/// A run's id from a file name: `run-<id>-<seq>.parquet`; build files have none.
fn run_of(rel: &str) -> Option<&str> {
    let name = rel.rsplit('/').next()?;
    let rest = name.strip_prefix("run-")?;
    Some(&rest[..rest.rfind('-')?])
}

fn tier(bytes: u64, fanout: usize) -> u32 {
    let mut t = 0;
    let mut limit = TIER_BASE_BYTES;
    while bytes >= limit && t < 32 {
        t += 1;
        limit = limit.saturating_mul(fanout.max(2) as u64);
    }
    t
}

/// The first instant after a `YYYY-MM` month (epoch ms), if it parses.
fn month_end_ms(month: &str) -> Option<i64> {
    let (y, m) = month.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Some(chrono::NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The inputs of the partition's next merge, if one is due.
fn plan(files: &[LiveFile], closed: bool, opts: &HistoryCompactOptions) -> Vec<Input> {
    let mut l0: Vec<Input> = Vec::new();
    let mut runs: BTreeMap<&str, Vec<LiveFile>> = BTreeMap::new();
    for f in files {
        match run_of(&f.rel) {
            Some(r) => runs.entry(r).or_default().push(f.clone()),
            None => l0.push(Input { files: vec![f.clone()] }),
        }
    }
    let mut runs: Vec<Input> = runs
        .into_values()
        .map(|mut files| {
            files.sort_by(|a, b| a.range.as_ref().map(|r| &r.min).cmp(&b.range.as_ref().map(|r| &r.min)));
            Input { files }
        })
        .collect();
    let max = opts.max_inputs.max(2);
    if closed {
        if l0.len() + runs.len() < 2 {
            return Vec::new();
        }
        // The smallest first: later runs of the job merge their outputs with the larger.
        let mut all: Vec<Input> = l0.into_iter().chain(runs).collect();
        all.sort_by_key(Input::bytes);
        all.truncate(max);
        return all;
    }
    if l0.len() >= opts.l0_trigger.max(2) {
        l0.truncate(max);
        return l0;
    }
    let mut tiers: BTreeMap<u32, Vec<Input>> = BTreeMap::new();
    for r in runs.drain(..) {
        tiers.entry(tier(r.bytes(), opts.fanout)).or_default().push(r);
    }
    for (_, mut same) in tiers {
        if same.len() >= opts.fanout.max(2) {
            same.truncate(max);
            return same;
        }
    }
    Vec::new()
}

impl Lake {
    /// Compacts the history table (see the module's documentation); `now_ms` decides which
    /// months are closed.
    pub async fn compact_history(&self, opts: &HistoryCompactOptions, now_ms: i64) -> Result<HistoryCompactReport, LakeError> {
        let started = Instant::now();
        let mut report = HistoryCompactReport::default();
        let Some(table) = self.root.open_history().await? else { return Ok(report) };
        let mut partitions: BTreeMap<(String, u32), Vec<LiveFile>> = BTreeMap::new();
        for f in crate::history::live_files(&table)? {
            partitions.entry((f.0, f.1)).or_default().push(f.2);
        }
        let planned = table.snapshot()?;
        // The table brought up to date before each commit (the new commits only).
        let mut current = table.clone();
        for ((month, bucket), files) in partitions {
            if let Some((i, n)) = opts.shard
                && bucket % n.max(1) != i
            {
                continue;
            }
            report.partitions_seen += 1;
            let generation = planned.transaction_version(table.log_store().as_ref(), &generation_app(&month, bucket)).await?.unwrap_or(0);
            let closed = month_end_ms(&month).is_some_and(|end| end + opts.month_grace_ms <= now_ms);
            let inputs = plan(&files, closed, opts);
            if inputs.is_empty() {
                continue;
            }
            let (outputs, rows) = self.merge(&month, bucket, &inputs, opts).await?;
            let (files_out, bytes_out) = (outputs.len() as u64, outputs.iter().map(|a| a.size.max(0) as u64).sum::<u64>());
            if opts.crash_before_commit {
                report.interrupted = true;
                break;
            }
            let mut actions: Vec<Action> = outputs.into_iter().map(Action::Add).collect();
            let now = chrono::Utc::now().timestamp_millis();
            for f in inputs.iter().flat_map(|i| &i.files) {
                actions.push(Action::Remove(Remove {
                    path: f.rel.clone(),
                    data_change: false,
                    deletion_timestamp: Some(now),
                    extended_file_metadata: Some(true),
                    partition_values: Some(std::collections::HashMap::from([
                        ("month".to_owned(), Some(month.clone())),
                        ("bucket".to_owned(), Some(bucket.to_string())),
                    ])),
                    size: Some(f.size as i64),
                    ..Remove::default()
                }));
            }
            // One commit, on the newest snapshot, if the partition was not compacted since this
            // run planned: its generation (an application transaction) is unchanged, and as only
            // compaction removes history files, its inputs are then all live. delta-rs rebases
            // the commit over concurrent appends (builds); a compaction of the same partition
            // committed in between records the same transaction, which fails this one.
            // (delta-rs does not fail two commits removing the same files with `dataChange:
            // false`: without the generation, two compactions at once would both add their
            // outputs, and every row would be there twice.)
            current.update_incremental(None).await?;
            let op = DeltaOperation::Optimize { predicate: Some(format!("month = '{month}' AND bucket = {bucket}")), target_size: opts.target_file_bytes as i64 };
            let snapshot = current.snapshot()?;
            let app = generation_app(&month, bucket);
            if snapshot.transaction_version(current.log_store().as_ref(), &app).await?.unwrap_or(0) != generation {
                report.superseded += 1;
                continue;
            }
            let props = CommitProperties::default().with_application_transaction(Transaction::new_with_last_update(app, generation + 1, Some(now)));
            match CommitBuilder::from(props).with_actions(actions).build(Some(snapshot as &dyn TableReference), current.log_store(), op).await {
                Ok(c) => {
                    self.root.persist_commit(HISTORY_DIR, c.version() as i64).await?;
                    report.merges += 1;
                    report.rows += rows;
                    report.files_out += files_out;
                    report.bytes_out += bytes_out;
                    report.files_in += inputs.iter().map(|i| i.files.len() as u64).sum::<u64>();
                    report.bytes_in += inputs.iter().map(Input::bytes).sum::<u64>();
                }
                Err(DeltaTableError::Transaction { source }) => {
                    tracing::warn!(month, bucket, error = %source, "history partition compacted concurrently; skipped");
                    report.superseded += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Merges sorted inputs into run files; returns their `add`s and the rows merged.
    async fn merge(&self, month: &str, bucket: u32, inputs: &[Input], opts: &HistoryCompactOptions) -> Result<(Vec<Add>, u64), LakeError> {
        let mut rows = 0u64;
        let run = uuid::Uuid::new_v4().simple().to_string();
        let mut readers: Vec<Reader> = inputs.iter().map(|i| Reader { files: i.files.iter().cloned().collect(), stream: None, batch: None, row: 0 }).collect();
        // The inputs holding rows; the next row is the smallest of their current rows (a
        // linear scan of at most `max_inputs` keys borrowed from the batches: no allocation
        // per row).
        let mut live: Vec<usize> = Vec::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if r.fill(self).await? {
                live.push(i);
            }
        }
        let mut out = RunWriter::new(month, bucket, run, opts.zstd_level);
        let mut adds = Vec::new();
        // Rows gathered for the writer: (batch slot, row) over `slots`.
        let mut slots: Vec<RecordBatch> = Vec::new();
        let mut slot_of: Vec<Option<usize>> = vec![None; readers.len()];
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(WRITE_CHUNK_ROWS);
        let mut last_user = String::new();
        loop {
            let mut best: Option<(usize, (&str, i64, &str))> = None;
            for &i in &live {
                if let Some(k) = readers[i].key()
                    && best.as_ref().is_none_or(|(_, b)| k < *b)
                {
                    best = Some((i, k));
                }
            }
            let Some((i, (user, created_at, _))) = best else { break };
            let new_user = rows == 0 || last_user != user;
            if new_user && out.full(opts.target_file_bytes) {
                out.write(&slots, &picks)?;
                picks.clear();
                adds.push(self.finish_run_file(&mut out).await?);
            }
            out.note(user, created_at);
            if new_user {
                last_user.clear();
                last_user.push_str(user);
            }
            let reader = &mut readers[i];
            let Some(batch) = &reader.batch else { break };
            let slot = match slot_of[i] {
                Some(s) => s,
                None => {
                    slots.push(batch.clone());
                    slot_of[i] = Some(slots.len() - 1);
                    slots.len() - 1
                }
            };
            picks.push((slot, reader.row));
            rows += 1;
            reader.row += 1;
            if reader.row >= batch.num_rows() {
                // The batch is done: the next one gets a new slot.
                slot_of[i] = None;
            }
            if picks.len() >= WRITE_CHUNK_ROWS {
                out.write(&slots, &picks)?;
                picks.clear();
                slots.clear();
                slot_of.iter_mut().for_each(|s| *s = None);
            }
            if !readers[i].fill(self).await? {
                live.retain(|&l| l != i);
            }
        }
        out.write(&slots, &picks)?;
        if out.rows > 0 {
            adds.push(self.finish_run_file(&mut out).await?);
        }
        self.sync_written().await?;
        Ok((adds, rows))
    }

    async fn finish_run_file(&self, out: &mut RunWriter) -> Result<Add, LakeError> {
        let (rel, data, range, rows) = out.finish()?;
        let bytes = data.len() as u64;
        crate::writer::put_whole_with(&self.root, &Path::from(format!("{HISTORY_DIR}/{rel}")), data, !self.defers_sync()).await?;
        Ok(history_add(&rel, &out.month, out.bucket, bytes, rows, range.as_ref()))
    }
}

/// The rows of one input, in order.
struct Reader {
    files: VecDeque<LiveFile>,
    stream: Option<ParquetRecordBatchStream<ObjectReader>>,
    batch: Option<RecordBatch>,
    row: usize,
}

#[allow(deprecated)]
type ObjectReader = parquet::arrow::async_reader::ParquetObjectReader;

impl Reader {
    /// The current row's sort key (user, created_at, id), borrowed from its batch.
    fn key(&self) -> Option<(&str, i64, &str)> {
        let b = self.batch.as_ref().filter(|b| self.row < b.num_rows())?;
        let user = b.column(0).as_string_opt::<i32>()?.value(self.row);
        let created_at = b.column(1).as_primitive_opt::<arrow_array::types::Int64Type>()?.value(self.row);
        let id = b.column(2).as_string_opt::<i32>()?.value(self.row);
        Some((user, created_at, id))
    }

    /// Makes sure a row is current (loading the next batch or file when the batch is done);
    /// false at the end of the input.
    async fn fill(&mut self, lake: &Lake) -> Result<bool, LakeError> {
        loop {
            if let Some(b) = &self.batch
                && self.row < b.num_rows()
            {
                return Ok(true);
            }
            self.batch = None;
            self.row = 0;
            if let Some(stream) = &mut self.stream {
                match stream.next().await {
                    Some(b) => {
                        self.batch = Some(b?);
                        continue;
                    }
                    None => self.stream = None,
                }
            }
            let Some(file) = self.files.pop_front() else { return Ok(false) };
            #[allow(deprecated)]
            let reader = ObjectReader::new(lake.root.store.clone(), Path::from(format!("{HISTORY_DIR}/{}", file.rel))).with_file_size(file.size);
            let builder = ParquetRecordBatchStreamBuilder::new(reader).await?;
            if !builder.schema().fields().iter().map(|f| f.name()).eq(history_schema().fields().iter().map(|f| f.name())) {
                return Err(LakeError::Corrupt(format!("{HISTORY_DIR}/{}: not a history file", file.rel)));
            }
            self.stream = Some(builder.with_batch_size(READ_BATCH_ROWS).build()?);
        }
    }
}

/// The run file being written.
struct RunWriter {
    month: String,
    bucket: u32,
    run: String,
    seq: u32,
    writer: Option<ArrowWriter<Vec<u8>>>,
    range: Option<FileRange>,
    rows: usize,
    zstd_level: i32,
}

impl RunWriter {
    fn new(month: &str, bucket: u32, run: String, zstd_level: i32) -> RunWriter {
        RunWriter { month: month.to_owned(), bucket, run, seq: 0, writer: None, range: None, rows: 0, zstd_level }
    }

    fn full(&self, target: u64) -> bool {
        self.writer.as_ref().is_some_and(|w| (w.bytes_written() + w.in_progress_size()) as u64 >= target)
    }

    fn note(&mut self, user: &str, created_at: i64) {
        self.rows += 1;
        match &mut self.range {
            None => self.range = Some(FileRange { min: user.to_owned(), max: user.to_owned(), min_time: created_at, max_time: created_at }),
            Some(r) => {
                if r.max.as_str() != user {
                    r.max = user.to_owned();
                }
                r.min_time = r.min_time.min(created_at);
                r.max_time = r.max_time.max(created_at);
            }
        }
    }

    fn write(&mut self, slots: &[RecordBatch], picks: &[(usize, usize)]) -> Result<(), LakeError> {
        if picks.is_empty() {
            return Ok(());
        }
        let refs: Vec<&RecordBatch> = slots.iter().collect();
        let batch = arrow_select::interleave::interleave_record_batch(&refs, picks)?;
        let writer = match &mut self.writer {
            Some(w) => w,
            None => {
                let props = history_writer_properties(None, self.zstd_level);
                self.writer.insert(ArrowWriter::try_new(Vec::new(), history_schema(), Some(props))?)
            }
        };
        writer.write(&batch)?;
        if writer.in_progress_size() >= ROW_GROUP_BYTES {
            writer.flush()?;
        }
        Ok(())
    }

    /// The finished file: its path (relative to the table), bytes, range and rows.
    fn finish(&mut self) -> Result<(String, Vec<u8>, Option<FileRange>, usize), LakeError> {
        let Some(writer) = self.writer.take() else { return Err(LakeError::Internal("no history run file open".into())) };
        let data = writer.into_inner()?;
        let rel = format!("month={}/bucket={:02}/run-{}-{:05}.parquet", self.month, self.bucket, self.run, self.seq);
        self.seq += 1;
        let rows = std::mem::take(&mut self.rows);
        Ok((rel, data, self.range.take(), rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, size: u64) -> LiveFile {
        LiveFile { rel: rel.to_owned(), size, range: None }
    }

    #[test]
    fn plans_follow_the_tiers() {
        let opts = HistoryCompactOptions { fanout: 4, ..HistoryCompactOptions::default() };
        assert_eq!(run_of("month=2026-01/bucket=03/run-abc-00002.parquet"), Some("abc"));
        assert_eq!(run_of("month=2026-01/bucket=03/part-1234.parquet"), None);
        let l0: Vec<LiveFile> = (0..7).map(|i| file(&format!("part-{i}.parquet"), 1000)).collect();
        assert!(plan(&l0, false, &opts).is_empty(), "7 build files wait");
        assert_eq!(plan(&l0, true, &opts).len(), 7, "a closed month merges them");
        let mut l0b = l0.clone();
        l0b.push(file("part-7.parquet", 1000));
        assert_eq!(plan(&l0b, false, &opts).len(), 8);
        // Three small runs wait; a fourth of the same tier merges them; a big one stays.
        let mut runs: Vec<LiveFile> = (0..3).map(|i| file(&format!("run-r{i}-00000.parquet"), 1 << 20)).collect();
        runs.push(file("run-big-00000.parquet", 1 << 30));
        runs.push(file("run-big-00001.parquet", 1 << 30));
        assert!(plan(&runs, false, &opts).is_empty());
        runs.push(file("run-r3-00000.parquet", 2 << 20));
        let p = plan(&runs, false, &opts);
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|i| i.bytes() < 16 << 20));
        // A closed month: the big run is one input of two files.
        let p = plan(&runs, true, &opts);
        assert_eq!(p.len(), 5);
        assert_eq!(p.iter().map(|i| i.files.len()).max(), Some(2));
        assert_eq!(month_end_ms("2026-12"), Some(1_798_761_600_000));
        assert_eq!(tier(1, 4), 0);
        assert_eq!(tier(16 << 20, 4), 1);
        assert_eq!(tier(64 << 20, 4), 2);
    }
}

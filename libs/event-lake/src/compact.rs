//! Compaction of closed partitions: merges a partition's small files toward the target file
//! size, drops repeated events (same `data.id`, first written wins), and sorts by time.
//!
//! One Delta commit per partition: the `remove` of the inputs and the `add` of the merged,
//! deduplicated, sorted outputs go in the same commit (`dataChange: false`), so a reader sees
//! either the old files or the new ones, never both and never neither. Nothing is deleted:
//! removed files stay for readers of older snapshots until a vacuum. Safe beside writers
//! (their appends do not conflict) and after a crash (an output written but not committed is
//! an orphan no reader sees; the next run starts again from the log).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StructArray, ListArray, new_null_array};
use arrow_schema::{DataType, SchemaRef};
use arrow_select::concat::concat_batches;
use arrow_select::filter::filter_record_batch;
use arrow_select::take::take_record_batch;
use object_store::path::Path;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::Serialize;

use crate::layout::{HOUR_MS, PartitionKey, new_file_name};
use crate::reader::DataFile;
use crate::schema::{CREATED_AT, ID};
use crate::writer::Lake;
use crate::LakeError;

/// The application transaction counting a type table's compactions (its generation).
pub const COMPACT_APP: &str = "compact";

/// What to compact.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Only this type (all types when `None`).
    pub event_type: Option<String>,
    /// A partition is closed once its hour ended this long ago (default 1 h).
    pub grace_ms: i64,
    /// Memory for one merge: decoded bytes of the files merged at once (default 512 MiB).
    pub memory_bytes: u64,
    /// Test hook: stop after the first partition's commit (simulates a crash).
    #[doc(hidden)]
    pub crash_after_commit: bool,
    /// Test hook: stop after writing the first partition's outputs, before committing them
    /// (simulates a crash; the outputs stay orphans no reader sees).
    #[doc(hidden)]
    pub crash_before_commit: bool,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            event_type: None,
            grace_ms: HOUR_MS,
            memory_bytes: 512 << 20,
            crash_after_commit: false,
            crash_before_commit: false,
        }
    }
}

/// What a compaction run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactReport {
    /// Closed partitions looked at.
    pub partitions_seen: u64,
    /// Partitions rewritten.
    pub partitions_compacted: u64,
    /// Files read and removed.
    pub files_in: u64,
    /// Files written.
    pub files_out: u64,
    /// Rows read.
    pub rows_in: u64,
    /// Rows written.
    pub rows_out: u64,
    /// Repeated events dropped.
    pub duplicates_dropped: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// True when the run stopped early (crash simulation).
    pub interrupted: bool,
}

impl Lake {
    /// Compacts every closed partition (its hour ended `grace_ms` before `now_ms`).
    pub async fn compact(&self, opts: &CompactOptions, now_ms: i64) -> Result<CompactReport, LakeError> {
        let files = self.list_data_files(opts.event_type.as_deref()).await?;
        let mut by_partition: Vec<(PartitionKey, Vec<DataFile>)> = Vec::new();
        for f in files {
            match by_partition.last_mut() {
                Some((k, v)) if *k == f.partition => v.push(f),
                _ => by_partition.push((f.partition.clone(), vec![f])),
            }
        }
        let mut report = CompactReport::default();
        for (key, files) in by_partition {
            if key.start_ms() + HOUR_MS + opts.grace_ms > now_ms {
                continue;
            }
            report.partitions_seen += 1;
            if files.len() < 2 {
                continue;
            }
            self.compact_partition(&key, files, opts, &mut report).await?;
            if report.interrupted {
                break;
            }
        }
        Ok(report)
    }

    async fn compact_partition(
        &self,
        key: &PartitionKey,
        mut files: Vec<DataFile>,
        opts: &CompactOptions,
        report: &mut CompactReport,
    ) -> Result<(), LakeError> {
        // Oldest first: UUIDv7 names sort by creation time, so the first written row wins.
        files.sort_by(|a, b| a.meta.location.cmp(&b.meta.location));
        let schema = self.registry.load(&key.event_type).await?;
        let target = Arc::new(schema.arrow_schema());

        // Pass 1: ids only, to find repeats across the whole partition.
        let mut seen: HashSet<String> = HashSet::new();
        let mut keep: Vec<Vec<BooleanArray>> = Vec::with_capacity(files.len());
        let mut decoded: Vec<u64> = Vec::with_capacity(files.len());
        let mut dups = 0u64;
        for f in &files {
            let data = self.read_file(&f.meta.location).await?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(data)?;
            decoded.push(builder.metadata().row_groups().iter().map(|rg| rg.total_byte_size() as u64).sum());
            let idx = builder
                .schema()
                .index_of(ID)
                .map_err(|_| LakeError::Corrupt(format!("{} has no id column", f.meta.location)))?;
            let mask = ProjectionMask::roots(builder.parquet_schema(), [idx]);
            let mut masks = Vec::new();
            for batch in builder.with_projection(mask).build()? {
                let batch = batch?;
                let ids = batch.column(0).as_string_opt::<i32>().ok_or_else(|| LakeError::Corrupt("id is not a string".into()))?;
                let m: BooleanArray = ids.iter().map(|id| Some(id.is_some_and(|id| seen.insert(id.to_owned())))).collect();
                dups += m.false_count() as u64;
                masks.push(m);
            }
            keep.push(masks);
        }
        drop(seen);

        // Group consecutive files into merges bounded by the target size and the memory budget.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let (mut size, mut mem) = (0u64, 0u64);
        for (i, f) in files.iter().enumerate() {
            let start_new = match groups.last() {
                None => true,
                Some(_) => size + f.meta.size > self.options.target_file_bytes || mem + decoded[i] > opts.memory_bytes,
            };
            if start_new {
                groups.push(Vec::new());
                size = 0;
                mem = 0;
            }
            size += f.meta.size;
            mem += decoded[i];
            if let Some(g) = groups.last_mut() {
                g.push(i);
            }
        }

        let mut rewrote = false;
        let mut actions: Vec<deltalake::kernel::Action> = Vec::new();
        let mut removed = 0u64;
        for group in groups {
            let has_dups = group.iter().any(|&i| keep[i].iter().any(|m| m.false_count() > 0));
            if group.len() < 2 && !has_dups {
                continue;
            }
            let mut batches = Vec::new();
            let mut rows_in = 0u64;
            for &i in &group {
                let data = self.read_file(&files[i].meta.location).await?;
                report.bytes_in += data.len() as u64;
                let reader = ParquetRecordBatchReaderBuilder::try_new(data)?.build()?;
                let mut masks = keep[i].iter();
                for batch in reader {
                    let batch = batch?;
                    rows_in += batch.num_rows() as u64;
                    let batch = adapt_batch(&batch, &target)?;
                    let mask = masks.next().ok_or_else(|| LakeError::Internal("row batches changed between passes".into()))?;
                    batches.push(filter_record_batch(&batch, mask)?);
                }
            }
            let merged = concat_batches(&target, &batches)?;
            drop(batches);
            let times = merged.column_by_name(CREATED_AT).ok_or_else(|| LakeError::Corrupt("no created_at".into()))?;
            let order = arrow_ord::sort::sort_to_indices(times, None, None)?;
            let sorted = take_record_batch(&merged, &order)?;
            drop(merged);
            let path = Path::from(format!("{}/{}", key.dir(), new_file_name("c")));
            let stats = crate::table::file_stats(std::slice::from_ref(&sorted));
            let bytes = self.put_parquet(&path, std::slice::from_ref(&sorted), schema.version, true).await?;
            actions.push(deltalake::kernel::Action::Add(crate::table::add_action(key, &path, bytes, stats, false)));
            for &i in &group {
                actions.push(deltalake::kernel::Action::Remove(crate::table::remove_action(key, &files[i].meta, false)));
            }
            report.files_out += 1;
            report.bytes_out += bytes;
            report.rows_in += rows_in;
            report.rows_out += sorted.num_rows() as u64;
            removed += group.len() as u64;
            rewrote = true;
            tracing::info!(partition = %key.dir(), inputs = group.len(), rows = sorted.num_rows(), "compacted");
        }
        if rewrote && opts.crash_before_commit {
            report.interrupted = true;
            return Ok(());
        }
        if rewrote {
            // Only if the inputs are still live, and no compaction of the table committed
            // since (its generation, an application transaction, moves with each): delta-rs
            // lets two commits remove the same files with `dataChange: false`, so two
            // compactions of a partition at once would otherwise both add their outputs, and
            // readers would see every row twice. A compaction committed between this check and
            // the commit records the same generation: the commit is then refused.
            let Some(table) = self.root.open_table(&key.event_type).await? else { return Ok(()) };
            let live: HashSet<String> = table.files(Some((key.hour, key.hour + 1)))?.into_iter().map(|f| f.meta.location.to_string()).collect();
            let generation = table.table.snapshot()?.transaction_version(table.table.log_store().as_ref(), COMPACT_APP).await?.unwrap_or(0);
            if !files.iter().all(|f| live.contains(f.meta.location.as_ref())) {
                tracing::warn!(partition = %key.dir(), "partition compacted concurrently; skipped");
                return Ok(());
            }
            let txn = deltalake::kernel::Transaction::new_with_last_update(COMPACT_APP, generation + 1, Some(chrono::Utc::now().timestamp_millis()));
            let op = deltalake::protocol::DeltaOperation::Optimize {
                predicate: Some(format!("date = '{}' AND hour = {}", crate::layout::date_hour(key.hour).0, crate::layout::date_hour(key.hour).1)),
                target_size: self.options.target_file_bytes as i64,
            };
            match self.root.commit(&key.event_type, actions, op, Some(txn), Default::default()).await {
                Ok(crate::table::CommitOutcome::AlreadyCommitted) => {
                    tracing::warn!(partition = %key.dir(), "the table was compacted concurrently; partition skipped");
                    return Ok(());
                }
                Ok(_) => {}
                Err(LakeError::Delta(deltalake::DeltaTableError::Transaction { source })) => {
                    // Another compaction removed some of the same inputs first: its output
                    // stands, ours stays an uncommitted orphan for vacuum.
                    tracing::warn!(partition = %key.dir(), error = %source, "partition compacted concurrently; skipped");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
            report.files_in += removed;
            report.partitions_compacted += 1;
            report.duplicates_dropped += dups;
            if opts.crash_after_commit {
                report.interrupted = true;
            }
        }
        Ok(())
    }
}

/// Casts a batch written with an older schema version to the current one: columns and
/// struct fields it lacks become nulls. Types never change, so nothing else differs.
pub fn adapt_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, LakeError> {
    let columns = target
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(a) => adapt_array(a, f.data_type()),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(target.clone(), columns)?)
}

fn adapt_array(a: &ArrayRef, to: &DataType) -> Result<ArrayRef, LakeError> {
    if a.data_type() == to {
        return Ok(a.clone());
    }
    match (a.data_type(), to) {
        (DataType::Struct(_), DataType::Struct(fields)) => {
            let st = a.as_struct();
            let by_name: HashMap<&str, &ArrayRef> =
                st.fields().iter().map(|f| f.name().as_str()).zip(st.columns()).collect();
            let children = fields
                .iter()
                .map(|f| match by_name.get(f.name().as_str()) {
                    Some(c) => adapt_array(c, f.data_type()),
                    None => Ok(new_null_array(f.data_type(), st.len())),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(fields.clone(), children, st.nulls().cloned())?))
        }
        (DataType::List(_), DataType::List(item)) => {
            let list = a.as_list::<i32>();
            let values = adapt_array(list.values(), item.data_type())?;
            Ok(Arc::new(ListArray::try_new(item.clone(), list.offsets().clone(), values, list.nulls().cloned())?))
        }
        (from, to) => Err(LakeError::Corrupt(format!("column type {from:?} cannot become {to:?}"))),
    }
}

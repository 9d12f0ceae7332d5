//! Writing Parquet files into the lake: events of one partition, sorted, deduplicated,
//! typed by the type's schema, zstd-compressed, with statistics, page indexes and a Bloom
//! filter on `id`. A file is uploaded whole (one PUT, or a completed multipart upload; on a
//! local folder a rename), under a name unique across writers, and becomes part of its type's
//! Delta table when its `add` action is committed ([`Lake::write_events`] does both;
//! [`Lake::write_events_file`] only writes, for writers that commit several files at once).

use std::sync::Arc;

use arrow_array::RecordBatch;
use foldhash::{HashSet, HashSetExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{KeyValue, SortingColumn};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::column_plan;
use crate::layout::{PartitionKey, new_file_name};
use crate::registry::SchemaRegistry;
use crate::schema::{ID, Needs, Section};
use crate::shred::{ParsedEvent, encode};
use crate::{LakeError, LakeStore};

/// How files are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Target size of a data file after compaction (default 128 MiB).
    pub target_file_bytes: u64,
    /// Target size of a row group (default 64 MiB): large sequential reads on S3.
    pub row_group_bytes: usize,
    /// zstd level of freshly ingested files (default 1: ingest is CPU-bound).
    pub zstd_level: i32,
    /// zstd level of compacted files (default 3: they live long and are read often).
    pub compacted_zstd_level: i32,
    /// Local lakes: leave the fsync of data files to one [`Lake::sync_written`] before they are
    /// committed, instead of one fsync per file as it is written (the default). For a writer
    /// that commits many files at once: `eventctl ingest` writes thousands and commits them at
    /// its end, where one syncfs replaces thousands of fsyncs (a fifth of its run time).
    /// Linux only (syncfs); elsewhere each file is still fsynced as written.
    pub defer_sync: bool,
    /// Stage schema extensions and commit them with the files ([`Lake::commit_appends`])
    /// instead of a metadata commit before the first file that needs them. For a writer that
    /// commits all its files at once (`eventctl ingest`): one commit per table instead of a
    /// creation and an extension commit per new field, and a failed load leaves no empty
    /// table behind. Files written with it must be committed through [`Lake::commit_appends`].
    pub stage_schemas: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { target_file_bytes: 128 << 20, row_group_bytes: 64 << 20, zstd_level: 1, compacted_zstd_level: 3, defer_sync: false, stage_schemas: false }
    }
}

/// A data file encoded in memory, not stored yet ([`Lake::encode_events_file`]).
#[derive(Debug)]
pub struct EncodedFile {
    /// Its partition.
    pub partition: PartitionKey,
    /// Path below the lake root it will be stored at.
    pub path: Path,
    /// Rows in it.
    pub rows: u64,
    /// Repeated ids dropped from the partition's events.
    pub duplicates_dropped: u64,
    /// Its statistics for the `add` action.
    stats: String,
    /// The Parquet bytes.
    pub data: Vec<u8>,
}

/// A data file that was committed to the lake.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Its partition.
    pub partition: PartitionKey,
    /// Path below the lake root.
    pub path: Path,
    /// Rows in it.
    pub rows: u64,
    /// Bytes of the file.
    pub bytes: u64,
    /// Rows dropped because their id repeated an earlier row of the same batch.
    pub duplicates_dropped: u64,
    /// Its `add` action (partition values and statistics), to commit.
    pub add: deltalake::kernel::Add,
}

/// Commit-info field naming the consumer that wrote a commit's files.
pub const PROVENANCE_SOURCE: &str = "eventplat.source";
/// Commit-info field listing the bus positions of the committed events (`a-b,c,...`).
pub const PROVENANCE_POSITIONS: &str = "eventplat.positions";

/// Where the events of a file came from: a consumer (its durable name, which fixes the
/// stream) and the bus positions of the events.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// The consumer, e.g. `lake-writer:lake-writer`.
    pub source: &'a str,
    /// The bus positions (stream sequences) of the file's events.
    pub positions: &'a [u64],
}

impl Provenance<'_> {
    fn commit_info(&self) -> std::collections::HashMap<String, serde_json::Value> {
        std::collections::HashMap::from([
            (PROVENANCE_SOURCE.to_owned(), serde_json::Value::from(self.source)),
            (PROVENANCE_POSITIONS.to_owned(), serde_json::Value::from(format_ranges(self.positions))),
        ])
    }
}

/// Positions as sorted, merged ranges: `[1,2,3,7,9,10]` is `1-3,7,9-10` (a batch of
/// consecutive positions takes a few bytes in the log).
pub fn format_ranges(positions: &[u64]) -> String {
    let mut sorted = positions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Parses [`format_ranges`]' form back (a range may span at most 10 million positions).
pub fn parse_ranges(text: &str) -> Result<Vec<u64>, String> {
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u64 = a.parse().map_err(|_| format!("bad position range {part:?}"))?;
        let b: u64 = b.parse().map_err(|_| format!("bad position range {part:?}"))?;
        if b < a || b - a > 10_000_000 {
            return Err(format!("bad position range {part:?}"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// The lake: a store, its schema registry and write options (cheap to clone: shared).
#[derive(Clone)]
pub struct Lake {
    /// The opened root.
    pub root: LakeStore,
    /// Per-type schemas.
    pub registry: Arc<SchemaRegistry>,
    /// How files are written.
    pub options: WriteOptions,
}

impl Lake {
    /// Opens a lake at a URL (local folder or `s3://bucket/prefix`).
    pub fn open(url: &str, options: WriteOptions) -> Result<Lake, LakeError> {
        let root = LakeStore::open(url)?;
        let registry = Arc::new(SchemaRegistry::new(root.clone()));
        Ok(Lake { root, registry, options })
    }

    /// The object store of the root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.root.store
    }

    /// Writes the events of one partition (lines that passed the contract) as one file and
    /// commits it to the type's table. Rows are sorted by `created_at`; a repeated `data.id`
    /// keeps its first row.
    pub async fn write_events<'a>(
        &self,
        partition: &PartitionKey,
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<WrittenFile>, LakeError> {
        self.write_events_from(partition, lines, None).await
    }

    /// [`Lake::write_events`], recording in the commit where the events came from (a
    /// consumer and the bus positions of the events), so that a redelivery can be checked
    /// against what was committed ([`Lake::committed_positions`]).
    pub async fn write_events_from<'a>(
        &self,
        partition: &PartitionKey,
        lines: impl IntoIterator<Item = &'a [u8]>,
        provenance: Option<Provenance<'_>>,
    ) -> Result<Option<WrittenFile>, LakeError> {
        let Some(file) = self.write_events_file(partition, lines).await? else { return Ok(None) };
        let metadata = provenance.map(|p| p.commit_info()).unwrap_or_default();
        self.commit_appends_with(&partition.event_type, std::slice::from_ref(&file), None, metadata).await?;
        Ok(Some(file))
    }

    /// The bus positions that `source` committed to a type's table in its newest
    /// `max_commits` commits (read from their commit info). A consumer that gets a message
    /// again (a crash after the commit, before the ack) checks it here and skips it: readers
    /// never see the repeat.
    pub async fn committed_positions(
        &self,
        event_type: &str,
        source: &str,
        max_commits: usize,
    ) -> Result<std::collections::HashSet<u64>, LakeError> {
        use futures::StreamExt;
        let mut out = std::collections::HashSet::new();
        let Some(table) = self.root.open_table(event_type).await? else { return Ok(out) };
        let mut infos = table.table.history(Some(max_commits));
        while let Some(info) = infos.next().await {
            let info = info?;
            if info.info.get(PROVENANCE_SOURCE).and_then(|v| v.as_str()) != Some(source) {
                continue;
            }
            if let Some(ranges) = info.info.get(PROVENANCE_POSITIONS).and_then(|v| v.as_str()) {
                out.extend(crate::writer::parse_ranges(ranges).map_err(|e| LakeError::Corrupt(format!("commit info of {event_type:?}: {e}")))?);
            }
        }
        Ok(out)
    }

    /// Commits written files of one type as one append (one table version). With `txn`
    /// (application id, version) the append happens at most once: when the table already
    /// holds that transaction, nothing is committed and `AlreadyCommitted` is returned (the
    /// files stay uncommitted, invisible to readers, until vacuum). With
    /// [`WriteOptions::stage_schemas`], the type's staged schema is committed in the same
    /// version (creating the table when it has none).
    pub async fn commit_appends(
        &self,
        event_type: &str,
        files: &[WrittenFile],
        txn: Option<(&str, i64)>,
    ) -> Result<crate::table::CommitOutcome, LakeError> {
        self.commit_appends_with(event_type, files, txn, Default::default()).await
    }

    /// [`Lake::commit_appends`] with fields added to the commit info.
    pub async fn commit_appends_with(
        &self,
        event_type: &str,
        files: &[WrittenFile],
        txn: Option<(&str, i64)>,
        commit_info: std::collections::HashMap<String, serde_json::Value>,
    ) -> Result<crate::table::CommitOutcome, LakeError> {
        use deltalake::kernel::{Action, Transaction};
        use deltalake::protocol::{DeltaOperation, SaveMode};
        let actions: Vec<Action> = files.iter().map(|f| Action::Add(f.add.clone())).collect();
        let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
        let txn = txn.map(|(app, v)| Transaction::new_with_last_update(app, v, Some(chrono::Utc::now().timestamp_millis())));
        let staged = self.registry.staged(event_type);
        let (outcome, schema) = self
            .root
            .commit_with_schema(event_type, staged.as_deref(), actions, op, txn, commit_info, self.registry.max_columns)
            .await?;
        if let Some(schema) = schema {
            self.registry.committed_staged(schema);
        }
        Ok(outcome)
    }

    /// Writes the events of one partition as one file without committing it (see
    /// [`Lake::commit_appends`]). The type's table and schema are committed first.
    pub async fn write_events_file<'a>(
        &self,
        partition: &PartitionKey,
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<WrittenFile>, LakeError> {
        match self.encode_events_file(partition, lines).await? {
            Some(encoded) => Ok(Some(self.upload(encoded).await?)),
            None => Ok(None),
        }
    }

    /// The first half of [`Lake::write_events_file`]: the events of one partition sorted,
    /// deduplicated and encoded as a Parquet file in memory (the type's table and schema
    /// committed first), ready for [`Lake::upload`]. A writer of many files encodes the next
    /// one while the previous one is being written.
    pub async fn encode_events_file<'a>(
        &self,
        partition: &PartitionKey,
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<EncodedFile>, LakeError> {
        let mut events = Vec::new();
        for line in lines {
            events.push(ParsedEvent::parse(line)?);
        }
        let before = events.len();
        events.sort_by_key(|e| e.created_at);
        // Ids borrow from the lines, so the set copies pointers, not strings.
        let mut seen = HashSet::with_capacity(events.len());
        events.retain(|e| seen.insert(e.id.clone()));
        drop(seen);
        let duplicates_dropped = (before - events.len()) as u64;
        if events.is_empty() {
            return Ok(None);
        }
        let mut needs = Needs::default();
        for e in &events {
            for section in [Section::Meta, Section::Attributes] {
                if let Some(obj) = e.section(section) {
                    needs.observe(section, obj);
                }
            }
        }
        let schema = if self.options.stage_schemas {
            self.registry.stage(&partition.event_type, needs.as_slice()).await?
        } else {
            self.registry.ensure(&partition.event_type, needs.as_slice()).await?
        };
        let batch = encode(&schema, &events)?;
        drop(events);
        let rows = batch.num_rows() as u64;
        let stats = crate::table::file_stats(std::slice::from_ref(&batch));
        let path = Path::from(format!("{}/{}", partition.dir(), new_file_name("w")));
        let data = encode_parquet(batch.schema(), &[batch], &self.options, schema.version, false)?;
        Ok(Some(EncodedFile { partition: partition.clone(), path, rows, duplicates_dropped, stats, data }))
    }

    /// The second half of [`Lake::write_events_file`]: stores an encoded file (not committed).
    pub async fn upload(&self, file: EncodedFile) -> Result<WrittenFile, LakeError> {
        let EncodedFile { partition, path, rows, duplicates_dropped, stats, data } = file;
        let bytes = data.len() as u64;
        put_whole_with(&self.root, &path, data, !self.defers_sync()).await?;
        let add = crate::table::add_action(&partition, &path, bytes, stats, true);
        Ok(WrittenFile { partition, path, rows, bytes, duplicates_dropped, add })
    }

    /// Encodes batches (one schema) into a Parquet file and commits it at `path`.
    pub async fn put_parquet(
        &self,
        path: &Path,
        batches: &[RecordBatch],
        schema_version: u64,
        compacted: bool,
    ) -> Result<u64, LakeError> {
        let Some(first) = batches.first() else { return Ok(0) };
        let data = encode_parquet(first.schema(), batches, &self.options, schema_version, compacted)?;
        let bytes = data.len() as u64;
        put_whole_with(&self.root, path, data, !self.defers_sync()).await?;
        Ok(bytes)
    }

    /// True when data files skip their fsync until [`Lake::sync_written`]: asked for, and
    /// possible (syncfs is Linux's; elsewhere each file is fsynced as written).
    pub(crate) fn defers_sync(&self) -> bool {
        self.options.defer_sync && cfg!(target_os = "linux")
    }

    /// Makes every file written so far durable (a local lake with
    /// [`WriteOptions::defer_sync`] on Linux: one syncfs of its file system; otherwise nothing
    /// to do: files were fsynced as written, and S3 acknowledges a PUT once it is durable).
    /// Call it before committing files written with deferred sync.
    pub async fn sync_written(&self) -> Result<(), LakeError> {
        let Some(dir) = self.root.local_dir.clone() else { return Ok(()) };
        if !self.defers_sync() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || sync_filesystem(&dir))
            .await
            .map_err(|e| LakeError::Internal(format!("the sync task failed: {e}")))?
            .map_err(LakeError::from)
    }
}

/// Writer properties for a lake file holding `batches` (one schema): zstd and dictionaries
/// per column as [`column_plan`](crate::column_plan) chooses, page statistics, a Bloom filter
/// on `id` sized to the rows, and `created_at` as the sorting column.
pub fn writer_properties(
    options: &WriteOptions,
    schema_version: u64,
    compacted: bool,
    schema: &arrow_schema::Schema,
    batches: &[RecordBatch],
) -> WriterProperties {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let level = if compacted { options.compacted_zstd_level } else { options.zstd_level };
    let level = ZstdLevel::try_new(level).unwrap_or_default();
    let b = WriterProperties::builder()
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(None)
        .set_max_row_group_bytes(Some(options.row_group_bytes.max(1 << 20)))
        .set_column_bloom_filter_enabled(ColumnPath::from(ID), true)
        // Sized for this file's rows (the default sizes for a million distinct values).
        .set_column_bloom_filter_max_ndv(ColumnPath::from(ID), rows.max(1) as u64)
        .set_key_value_metadata(Some(vec![
            KeyValue::new("lake.schema_version".to_owned(), schema_version.to_string()),
            KeyValue::new("lake.compacted".to_owned(), compacted.to_string()),
        ]));
    let choices = column_plan::choose(schema, batches);
    let b = column_plan::apply(b, schema, &choices, Compression::ZSTD(level));
    let b = b.set_sorting_columns(Some(vec![SortingColumn { column_idx: 1, descending: false, nulls_first: false }]));
    b.build()
}

/// Flushes the file system holding `dir` to disk: every file written and renamed there
/// (syncfs; only called on Linux, see `Lake::defers_sync`).
fn sync_filesystem(dir: &std::path::Path) -> std::io::Result<()> {
    let folder = std::fs::File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        rustix::fs::syncfs(&folder).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        folder.sync_all()
    }
}

/// Writes `data` at `file` durably: into `<file>#<n>` (a name the local object store does
/// not list), fsync, rename, fsync of the folder.
pub fn write_durably(file: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    write_file(file, data, true)
}

/// [`write_durably`], without the two fsyncs when `durable` is false (the caller syncs
/// the file system before relying on the file: [`Lake::sync_written`]).
fn write_file(file: &std::path::Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    use std::io::Write;
    let dir = file.parent().ok_or_else(|| std::io::Error::other(format!("{} has no folder", file.display())))?;
    std::fs::create_dir_all(dir)?;
    let mut n = 1u32;
    let (mut staged, staged_path) = loop {
        let mut p = file.as_os_str().to_owned();
        p.push(format!("#{n}"));
        let p = std::path::PathBuf::from(p);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => break (f, p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(e),
        }
    };
    let written = staged.write_all(data).and_then(|()| if durable { staged.sync_all() } else { Ok(()) });
    drop(staged);
    if let Err(e) = written.and_then(|()| std::fs::rename(&staged_path, file)) {
        let _ = std::fs::remove_file(&staged_path);
        return Err(e);
    }
    if durable {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Encodes batches into Parquet bytes.
pub fn encode_parquet(
    schema: arrow_schema::SchemaRef,
    batches: &[RecordBatch],
    options: &WriteOptions,
    schema_version: u64,
    compacted: bool,
) -> Result<Vec<u8>, LakeError> {
    let mut data = Vec::new();
    let props = writer_properties(options, schema_version, compacted, &schema, batches);
    let mut writer = ArrowWriter::try_new(&mut data, schema, Some(props))?;
    for b in batches {
        writer.write(b)?;
    }
    writer.close()?;
    Ok(data)
}

/// Uploads bytes as one object, multipart above 32 MiB; visible only when complete. On a
/// local folder the file is written beside its final name, fsynced, renamed into place and
/// its folder fsynced: a power cut never leaves an empty or partial file under a lake name
/// (`object_store`'s local store renames without an fsync).
pub async fn put_whole(root: &LakeStore, path: &Path, data: Vec<u8>) -> Result<(), LakeError> {
    put_whole_with(root, path, data, true).await
}

/// [`put_whole`]; on a local lake without its fsyncs when `durable` is false (see
/// [`WriteOptions::defer_sync`]).
pub async fn put_whole_with(root: &LakeStore, path: &Path, data: Vec<u8>, durable: bool) -> Result<(), LakeError> {
    if let Some(dir) = &root.local_dir {
        let file = dir.join(path.as_ref());
        return tokio::task::spawn_blocking(move || write_file(&file, &data, durable))
            .await
            .map_err(|e| LakeError::Internal(format!("the writing task failed: {e}")))?
            .map_err(LakeError::from);
    }
    let store = &root.store;
    const PART: usize = 32 << 20;
    if data.len() <= PART {
        store.put(path, PutPayload::from(data)).await?;
        return Ok(());
    }
    let data = bytes::Bytes::from(data);
    let mut upload = store.put_multipart(path).await?;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + PART).min(data.len());
        if let Err(e) = upload.put_part(PutPayload::from(data.slice(offset..end))).await {
            let _ = upload.abort().await;
            return Err(e.into());
        }
        offset = end;
    }
    if let Err(e) = upload.complete().await {
        let _ = upload.abort().await;
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_as_merged_ranges() {
        assert_eq!(format_ranges(&[10, 3, 1, 2, 7, 9, 3]), "1-3,7,9-10");
        assert_eq!(parse_ranges("1-3,7,9-10").expect("parse"), vec![1, 2, 3, 7, 9, 10]);
        assert_eq!(format_ranges(&[]), "");
        assert!(parse_ranges("5-2").is_err());
        assert!(parse_ranges("x").is_err());
        assert!(parse_ranges("0-99999999999").is_err());
    }

    #[tokio::test]
    async fn a_local_file_is_committed_whole_and_its_staging_file_never_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = LakeStore::open(dir.path().to_str().expect("utf8")).expect("local lake");
        assert!(root.local_dir.is_some());
        let path = Path::from("events/type=t/date=2026-01-01/hour=00/f-w.parquet");
        put_whole(&root, &path, b"first".to_vec()).await.expect("put");
        // A stale staging file (a crash before the rename) is neither listed nor in the way.
        let on_disk = dir.path().join("events/type=t/date=2026-01-01/hour=00/f-w.parquet");
        std::fs::write(on_disk.with_file_name("f-w.parquet#1"), b"partial").expect("stale");
        put_whole(&root, &path, b"second".to_vec()).await.expect("put again");
        assert_eq!(std::fs::read(&on_disk).expect("read"), b"second");
        let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(root.store.list(None)).await.expect("list");
        assert_eq!(listed.iter().map(|m| m.location.to_string()).collect::<Vec<_>>(), [path.to_string()]);
    }
}

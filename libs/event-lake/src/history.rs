//! The per-user history table (`history/` below the lake root): every valid event once per
//! user it names, for the timeline's cold tier.
//!
//! Layout (one Delta table, readable by every Delta reader):
//! - columns `user` (text), `created_at` (epoch ms), `id`, `type`, `event` (the whole event
//!   as JSON text, as `eventctl cat` prints it), partitioned by `month` (`YYYY-MM` of the
//!   event time, UTC) and `bucket` (0..[`USER_BUCKETS`]: [`bucket_of`] the user);
//! - in each file, rows sorted by (`user`, `created_at`, `id`), a Bloom filter on `user`,
//!   page statistics and small pages ([`PAGE_ROWS`] rows), so that a reader of one user
//!   fetches the footer and the pages of that user only;
//! - each commit records, per source type, the newest version of the type's table whose
//!   events it holds (an application transaction `history:<type>`): the build goes on from
//!   there, and a build that died between writing files and committing them writes them again
//!   (the uncommitted ones are left to vacuum), so every event is in the table once per user.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, StructField, StructType, Transaction, new_metadata};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::DeltaTableError;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::metadata::SortingColumn;
use parquet::schema::types::ColumnPath;

use crate::layout::PartitionKey;
use crate::reader::DataFile;
use crate::table::{CHECKPOINT_INTERVAL, CHECKPOINT_INTERVAL_KEY, CommitOutcome, EventTable, MAX_ATTEMPTS, commit_creation, is_retryable, table_dir};
use crate::{LakeError, LakeStore};
use deltalake::ObjectMeta;

/// The table's folder below the lake root.
pub const HISTORY_DIR: &str = "history";
/// Days the files compaction removed from the history table are kept before a vacuum deletes
/// them (`eventctl vacuum`; at most the lake's retention).
pub const VACUUM_RETENTION_DAYS: i64 = 1;
/// User buckets: a reader of one user lists nothing and opens the files of one
/// (month, bucket) partition. 64 buckets keep a bucket's hour of the brief's traffic (1e9
/// events a day) at ~40 MB of compressed events per file, large enough for S3 reads.
pub const USER_BUCKETS: u32 = 64;
/// Bytes read from a file's end at once when it is opened: the footer, the metadata and the
/// page index in one request.
const FOOTER_HINT_BYTES: usize = 256 << 10;
/// Rows per data page: a user's events span few pages, each fetched alone.
pub const PAGE_ROWS: usize = 256;
/// The application transaction recording when the last complete build started (epoch ms):
/// every event committed to the lake before then is in the table.
pub const BUILT_APP: &str = "history:built";
/// The application transaction of a source type.
pub fn txn_app(event_type: &str) -> String {
    format!("history:{event_type}")
}

/// The application transaction of a type's first build, taken from a snapshot in chunks: its
/// version packs the snapshot's table version and the number of its files (in path order)
/// committed ([`pack_snapshot_progress`]), so that a build stopped half-way goes on with the
/// same snapshot after the files it committed, whatever its chunk size.
pub fn snapshot_txn_app(event_type: &str) -> String {
    format!("history-snapshot:{event_type}")
}

/// (table version, files committed) as one transaction version: the version in the high bits,
/// the files in the low 24 (16 M files in a type's snapshot). Grows with the files, as Delta
/// transaction versions must.
pub fn pack_snapshot_progress(version: i64, files: u32) -> i64 {
    (version << 24) | i64::from(files & 0xFF_FFFF)
}

/// The inverse of [`pack_snapshot_progress`].
pub fn unpack_snapshot_progress(packed: i64) -> (i64, u32) {
    (packed >> 24, (packed & 0xFF_FFFF) as u32)
}

/// A user's bucket: FNV-1a (64-bit) of the user's UTF-8 bytes, modulo `buckets`. Stable and
/// simple, so that other readers (DuckDB, Spark) can compute it: in SQL, filter on `user`
/// and let the Bloom filters and statistics skip the rest, or compute the bucket.
pub fn bucket_of(user: &str, buckets: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(buckets.max(1))) as u32
}

/// The `month` partition value of an instant (`YYYY-MM`, UTC).
pub fn month_of(created_at_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(created_at_ms).map_or_else(|| "1970-01".to_owned(), |t| t.format("%Y-%m").to_string())
}

/// One row: an event in one user's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The user.
    pub user: String,
    /// Event time, epoch ms.
    pub created_at: i64,
    /// `data.id`.
    pub id: String,
    /// `data.type`.
    pub event_type: String,
    /// The whole event, JSON.
    pub event: String,
}

/// The data columns (the partition columns `month` and `bucket` are in the paths).
pub fn history_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("created_at", DataType::Int64, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
    ]))
}

/// The user range of a history file and its event times, kept in the file's Delta
/// statistics (`minValues`/`maxValues` of `user` and `created_at`): readers skip the files
/// whose range leaves a user out without opening them (user keys are at most 1 KiB, so the
/// values are whole, never truncated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRange {
    /// The smallest user.
    pub min: String,
    /// The largest user.
    pub max: String,
    /// The earliest event time.
    pub min_time: i64,
    /// The latest event time.
    pub max_time: i64,
}

impl FileRange {
    /// True when the file may hold rows of `user`.
    pub fn may_hold(&self, user: &str) -> bool {
        self.min.as_str() <= user && user <= self.max.as_str()
    }
}

/// Writer properties of history files: zstd (level 3 for build files, written often; runs
/// get [`crate::history_compact::HistoryCompactOptions::zstd_level`]), page statistics, pages of [`PAGE_ROWS`] rows,
/// row groups of at most 16,384 rows, sorted by (user, created_at, id). `bloom_users`: a
/// Bloom filter on `user` sized for that many users (build files, which hold every user of
/// their bucket; runs are cut by user ranges and need none: the row groups' statistics of a
/// sorted file already tell).
pub fn history_writer_properties(bloom_users: Option<usize>, zstd_level: i32) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(PAGE_ROWS)
        .set_write_batch_size(PAGE_ROWS)
        .set_max_row_group_row_count(Some(16_384))
        .set_sorting_columns(Some(vec![
            SortingColumn { column_idx: 0, descending: false, nulls_first: false },
            SortingColumn { column_idx: 1, descending: false, nulls_first: false },
            SortingColumn { column_idx: 2, descending: false, nulls_first: false },
        ]));
    if let Some(users) = bloom_users {
        props = props.set_column_bloom_filter_enabled(ColumnPath::from("user"), true).set_column_bloom_filter_max_ndv(ColumnPath::from("user"), users.max(1) as u64);
    }
    props.build()
}

/// The rows of one partition as a Parquet file ([`history_writer_properties`], with a Bloom
/// filter), and their range.
pub fn encode_rows(rows: &mut [HistoryRow]) -> Result<(Vec<u8>, Option<FileRange>), LakeError> {
    rows.sort_unstable_by(|a, b| (&a.user, a.created_at, &a.id).cmp(&(&b.user, b.created_at, &b.id)));
    let schema = history_schema();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.user.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.created_at))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.event_type.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.event.as_str()))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| LakeError::Internal(format!("history batch: {e}")))?;
    let users = {
        let mut u: Vec<&str> = rows.iter().map(|r| r.user.as_str()).collect();
        u.dedup();
        u.len()
    };
    let range = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => Some(FileRange {
            min: first.user.clone(),
            max: last.user.clone(),
            min_time: rows.iter().map(|r| r.created_at).min().unwrap_or(first.created_at),
            max_time: rows.iter().map(|r| r.created_at).max().unwrap_or(last.created_at),
        }),
        _ => None,
    };
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(history_writer_properties(Some(users), 3)))?;
    w.write(&batch)?;
    w.close()?;
    Ok((out, range))
}

/// The `add` action of a history file (`path` relative to `history/`), its range in the
/// statistics.
pub fn history_add(path: &str, month: &str, bucket: u32, bytes: u64, rows: usize, range: Option<&FileRange>) -> Add {
    let stats = match range {
        Some(r) => serde_json::json!({
            "numRecords": rows,
            "minValues": { "user": r.min, "created_at": r.min_time },
            "maxValues": { "user": r.max, "created_at": r.max_time },
            "nullCount": { "user": 0, "created_at": 0, "id": 0, "type": 0, "event": 0 },
        }),
        None => serde_json::json!({ "numRecords": rows }),
    };
    Add {
        path: path.to_owned(),
        partition_values: HashMap::from([("month".to_owned(), Some(month.to_owned())), ("bucket".to_owned(), Some(bucket.to_string()))]),
        size: bytes as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats.to_string()),
        ..Add::default()
    }
}

/// The live files of the history table: (month, bucket, file), with their ranges.
pub(crate) fn live_files(table: &DeltaTable) -> Result<Vec<(String, u32, crate::history_compact::LiveFile)>, LakeError> {
    let mut out = Vec::new();
    for f in table.snapshot()?.log_data().iter() {
        let values = f.partition_values_map();
        let month = values.get("month").cloned().flatten().unwrap_or_default();
        let bucket: u32 = values.get("bucket").cloned().flatten().and_then(|b| b.parse().ok()).unwrap_or(u32::MAX);
        let stats: Option<serde_json::Value> = f.stats().and_then(|s| serde_json::from_str(&s).ok());
        let range = stats.as_ref().and_then(|s| {
            Some(FileRange {
                min: s["minValues"]["user"].as_str()?.to_owned(),
                max: s["maxValues"]["user"].as_str()?.to_owned(),
                min_time: s["minValues"]["created_at"].as_i64()?,
                max_time: s["maxValues"]["created_at"].as_i64()?,
            })
        });
        let rel = percent_decode(f.path().as_ref());
        out.push((month, bucket, crate::history_compact::LiveFile { rel, size: f.size().max(0) as u64, range }));
    }
    Ok(out)
}

impl LakeStore {
    /// The history table at its newest version, if it exists.
    pub async fn open_history(&self) -> Result<Option<DeltaTable>, LakeError> {
        if !self.is_table(HISTORY_DIR).await? {
            return Ok(None);
        }
        let mut table = DeltaTable::new(self.log_store_at(HISTORY_DIR)?);
        table.load().await?;
        Ok(Some(table))
    }

    /// The versions the history table's application transactions `apps` record (absent:
    /// none, or no table), from one snapshot.
    pub async fn history_txns(&self, apps: &[String]) -> Result<HashMap<String, i64>, LakeError> {
        let mut out = HashMap::new();
        let Some(table) = self.open_history().await? else { return Ok(out) };
        let snapshot = table.snapshot()?;
        for app in apps {
            if let Some(v) = snapshot.transaction_version(table.log_store().as_ref(), app).await? {
                out.insert(app.clone(), v);
            }
        }
        Ok(out)
    }

    /// When the last complete build of the history started (epoch ms; `None`: never built).
    pub async fn history_built(&self) -> Result<Option<i64>, LakeError> {
        Ok(self.history_txns(&[BUILT_APP.to_owned()]).await?.remove(BUILT_APP))
    }

    /// Commits history files with the source versions they hold (`txns`: `history:<type>`
    /// and the type table's version), creating the table with the first ones. Nothing is
    /// committed when one of those versions is already recorded (another build got there):
    /// `AlreadyCommitted`. Retries on conflicts.
    pub async fn commit_history(&self, adds: Vec<Add>, versions: &[(String, i64)]) -> Result<CommitOutcome, LakeError> {
        let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
        let now = chrono::Utc::now().timestamp_millis();
        let txns: Vec<Transaction> = versions.iter().map(|(app, v)| Transaction::new_with_last_update(app.clone(), *v, Some(now))).collect();
        for _ in 0..MAX_ATTEMPTS {
            let mut props = CommitProperties::default();
            for t in &txns {
                props = props.with_application_transaction(t.clone());
            }
            let result = match self.open_history().await? {
                Some(table) => {
                    let snapshot = table.snapshot()?;
                    for t in &txns {
                        if snapshot.transaction_version(table.log_store().as_ref(), &t.app_id).await?.is_some_and(|v| v >= t.version) {
                            return Ok(CommitOutcome::AlreadyCommitted);
                        }
                    }
                    let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
                    CommitBuilder::from(props)
                        .with_actions(actions.clone())
                        .build(Some(snapshot as &dyn TableReference), table.log_store(), op)
                        .await
                        .map(|c| c.version() as i64)
                }
                None => {
                    if let Some(d) = self.local_dir(HISTORY_DIR) {
                        std::fs::create_dir_all(d)?;
                    }
                    commit_creation(self.log_store_at(HISTORY_DIR)?, history_metadata()?, actions.iter().cloned(), props).await
                }
            };
            match result {
                Ok(version) => {
                    self.persist_commit(HISTORY_DIR, version).await?;
                    return Ok(CommitOutcome::Committed(version));
                }
                Err(e) if is_retryable(&e) || matches!(&e, DeltaTableError::Transaction { .. }) => {
                    tracing::debug!(error = %e, "history commit lost a race; re-reading");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(LakeError::CommitContended(HISTORY_DIR.to_owned()))
    }

    /// Writes one history file below `history/month=<m>/bucket=<b>/` and returns its `add`.
    pub async fn put_history_file(&self, month: &str, bucket: u32, rows: &mut [HistoryRow]) -> Result<Add, LakeError> {
        let (data, range) = encode_rows(rows)?;
        let bytes = data.len() as u64;
        let rel = format!("month={month}/bucket={bucket:02}/part-{}.parquet", uuid::Uuid::new_v4());
        crate::writer::put_whole(self, &Path::from(format!("{HISTORY_DIR}/{rel}")), data).await?;
        Ok(history_add(&rel, month, bucket, bytes, rows.len(), range.as_ref()))
    }
}

/// The data files a version of a type's table added (appends: `dataChange` true; the files
/// a compaction rewrote hold rows already added), from that version's log entry; an error
/// when that entry no longer exists.
pub async fn data_adds(table: &EventTable, version: i64) -> Result<Vec<DataFile>, LakeError> {
    let Ok(v) = u64::try_from(version) else { return Ok(Vec::new()) };
    let dir = table_dir(&table.event_type);
    // A version below the table's head whose entry is gone was removed by the log's retention:
    // the build fell too far behind, and skipping it would lose its events from the history.
    let Some(bytes) = table.table.log_store().read_commit_entry(v as _).await? else {
        return Err(LakeError::Corrupt(format!(
            "{dir}: the log entry of version {version} is gone (log retention): the history cannot be built past it; rebuild the type's history from its snapshot"
        )));
    };
    let mut out = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| LakeError::Corrupt(format!("{dir} version {version}: {e}")))?;
        let Some(add) = action.get("add") else { continue };
        if add["dataChange"].as_bool() != Some(true) {
            continue;
        }
        let Some(path) = add["path"].as_str() else { continue };
        let decoded = percent_decode(path);
        let location = Path::from(format!("{dir}/{decoded}"));
        let Some(partition) = PartitionKey::parse(location.as_ref()) else {
            return Err(LakeError::Corrupt(format!("{location}: no date/hour partition")));
        };
        let size = add["size"].as_u64().unwrap_or(0);
        out.push(DataFile { partition, meta: ObjectMeta { location, last_modified: chrono::Utc::now(), size, e_tag: None, version: None } });
    }
    Ok(out)
}

/// Delta log paths are percent-encoded (a space is `%20`).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = path.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Files of one month read at once by a page.
const FILES_AT_ONCE: usize = 8;
/// Months read at once by a page, at most (waves of 1, 2, 4, 8).
const MONTHS_AT_ONCE: usize = 8;

/// What a reader of the history table needs of one snapshot: its live files by bucket (with
/// their ranges) and its last complete build.
#[derive(Debug, Clone)]
pub struct HistorySnapshot {
    /// The table version.
    pub version: i64,
    /// When the last complete build started (`history:built`), epoch ms.
    pub built: Option<i64>,
    files: HashMap<u32, Vec<(String, crate::history_compact::LiveFile)>>,
}

/// One user's rows asked for: event time in `[from, to)`, optionally only some types, in
/// one order, after a cursor (the last row of the previous page), at most `limit`.
#[derive(Debug, Clone)]
pub struct UserQuery<'a> {
    /// The user.
    pub user: &'a str,
    /// Event time from (epoch ms, inclusive).
    pub from: i64,
    /// Event time to (epoch ms, exclusive).
    pub to: i64,
    /// Only these types (empty: all).
    pub types: &'a [String],
    /// Newest first.
    pub newest_first: bool,
    /// Rows after this (created_at, id) in the page's order.
    pub after: Option<(i64, String)>,
    /// Rows at most.
    pub limit: usize,
}

/// A page of one user's history and what reading it took.
#[derive(Debug, Clone, Default)]
pub struct UserPage {
    /// The rows, in the order asked for.
    pub rows: Vec<HistoryRow>,
    /// True when more rows follow.
    pub more: bool,
    /// Files of the user's bucket opened.
    pub files_opened: usize,
    /// Row groups read (after statistics and Bloom filters).
    pub row_groups_read: usize,
}

impl LakeStore {
    /// One page of a user's history: the files of the user's bucket in the months of the
    /// range, newest or oldest month first, stopping once the page is full. In each file,
    /// row groups whose `user` statistics or Bloom filter exclude the user are skipped; in
    /// the others only the `user` column is decoded whole, and the pages of the other columns
    /// holding the user's rows are fetched (page index).
    pub async fn read_user_history(&self, q: &UserQuery<'_>) -> Result<UserPage, LakeError> {
        match self.history_snapshot().await? {
            Some(snapshot) => self.read_user_history_at(&snapshot, q).await,
            None => Ok(UserPage::default()),
        }
    }

    /// The history table's newest snapshot, for [`LakeStore::read_user_history_at`] (`None`:
    /// no table yet). Readers of many pages keep one for a while (the timeline: 10 s) rather
    /// than read the log for each page.
    pub async fn history_snapshot(&self) -> Result<Option<HistorySnapshot>, LakeError> {
        let Some(table) = self.open_history().await? else { return Ok(None) };
        let built = table.snapshot()?.transaction_version(table.log_store().as_ref(), BUILT_APP).await?;
        let mut files: HashMap<u32, Vec<(String, crate::history_compact::LiveFile)>> = HashMap::new();
        for (month, bucket, f) in live_files(&table)? {
            files.entry(bucket).or_default().push((month, f));
        }
        Ok(Some(HistorySnapshot { version: table.version().map_or(-1, |v| v as i64), built, files }))
    }

    /// [`LakeStore::read_user_history`] on a snapshot.
    pub async fn read_user_history_at(&self, snapshot: &HistorySnapshot, q: &UserQuery<'_>) -> Result<UserPage, LakeError> {
        let mut page = UserPage::default();
        if q.limit == 0 || q.from >= q.to {
            return Ok(page);
        }
        let bucket = bucket_of(q.user, USER_BUCKETS);
        // (Instants beyond what a date holds bound nothing.)
        let month = |t: i64, beyond: &str| chrono::DateTime::from_timestamp_millis(t).map_or_else(|| beyond.to_owned(), |t| t.format("%Y-%m").to_string());
        let (mut first, mut last) = (month(q.from, "0000-00"), month(q.to.saturating_sub(1), "9999-99"));
        // Months the cursor has passed hold nothing for this page.
        if let Some((c, _)) = &q.after {
            let at = month(*c, "9999-99");
            if q.newest_first { last = last.min(at) } else { first = first.max(at) }
        }
        let mut months: std::collections::BTreeMap<&str, Vec<(String, u64)>> = std::collections::BTreeMap::new();
        for (month, f) in snapshot.files.get(&bucket).map(Vec::as_slice).unwrap_or_default() {
            // Files whose user or time range leaves the page out are not opened.
            if month.as_str() < first.as_str() || month.as_str() > last.as_str() || f.range.as_ref().is_some_and(|r| !r.may_hold(q.user) || r.max_time < q.from || r.min_time >= q.to) {
                continue;
            }
            months.entry(month.as_str()).or_default().push((format!("{HISTORY_DIR}/{}", f.rel), f.size));
        }
        let ordered: Vec<Vec<(String, u64)>> = if q.newest_first { months.into_values().rev().collect() } else { months.into_values().collect() };
        // Months in waves read at once (files of a month too): the first month alone (a dense
        // history fills its page from it; the cursor or the range may cut it, so it says
        // nothing of the months before), then one more, then as many as the rows per whole
        // month read so far say the page still needs (doubling while none held a row), at
        // most MONTHS_AT_ONCE: a sparse history spans many months without a round trip per
        // month one after another, and few months are read beyond the page.
        use futures::StreamExt;
        let mut ordered = ordered.into_iter().peekable();
        let (mut wave, mut months_read, mut whole_months, mut whole_rows) = (1usize, 0usize, 0usize, 0usize);
        'waves: while ordered.peek().is_some() {
            let months: Vec<Vec<(String, u64)>> = ordered.by_ref().take(wave).collect();
            // (Futures boxed in vectors: closures over borrowed paths would not be `Send` for
            // every lifetime, which axum's handlers need.)
            let mut reads = Vec::with_capacity(months.len());
            for files in &months {
                let mut month: Vec<futures::future::BoxFuture<'_, Result<(Vec<HistoryRow>, usize), LakeError>>> = Vec::with_capacity(files.len());
                for (path, size) in files {
                    month.push(Box::pin(self.user_rows(path, *size, q.user)));
                }
                reads.push(futures::stream::iter(month).buffered(FILES_AT_ONCE).collect::<Vec<_>>());
            }
            let read_months: Vec<Vec<Result<(Vec<HistoryRow>, usize), LakeError>>> = futures::future::join_all(reads).await;
            for (files, read) in months.iter().zip(read_months) {
                page.files_opened += files.len();
                let mut rows = Vec::new();
                for r in read {
                    let (r, groups) = r?;
                    page.row_groups_read += groups;
                    rows.extend(r);
                }
                rows.retain(|r| {
                    let key = (r.created_at, r.id.as_str());
                    let after = q.after.as_ref().is_none_or(|(c, id)| if q.newest_first { key < (*c, id.as_str()) } else { key > (*c, id.as_str()) });
                    r.created_at >= q.from && r.created_at < q.to && after && (q.types.is_empty() || q.types.contains(&r.event_type))
                });
                rows.sort_unstable_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                if q.newest_first {
                    rows.reverse();
                }
                if months_read > 0 {
                    whole_months += 1;
                    whole_rows += rows.len();
                }
                months_read += 1;
                page.rows.extend(rows);
                if page.rows.len() > q.limit {
                    page.rows.truncate(q.limit);
                    page.more = true;
                    break 'waves;
                }
            }
            wave = if page.rows.is_empty() {
                wave * 2
            } else if whole_months == 0 {
                1
            } else if whole_rows == 0 {
                wave * 2
            } else {
                let per_month = whole_rows.div_ceil(whole_months).max(1);
                (q.limit + 1 - page.rows.len()).div_ceil(per_month)
            }
            .clamp(1, MONTHS_AT_ONCE);
        }
        Ok(page)
    }

    /// The rows of `user` in one history file, and the row groups read.
    async fn user_rows(&self, path: &str, size: u64, user: &str) -> Result<(Vec<HistoryRow>, usize), LakeError> {
        use arrow_array::cast::AsArray;
        use futures::TryStreamExt;
        use parquet::arrow::arrow_reader::{ArrowPredicateFn, ArrowReaderOptions, RowFilter};
        #[allow(deprecated)]
        use parquet::arrow::async_reader::ParquetObjectReader;
        use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
        use parquet::file::statistics::Statistics;
        // (Deprecated in parquet 59 in favour of a hand-written `AsyncFileReader`; it still
        // reads ranges through object_store as wanted here.)
        #[allow(deprecated)]
        // One suffix read for the footer, the metadata and the page index (they sit at the end);
        // a small file is read whole by it.
        let reader = ParquetObjectReader::new(self.store.clone(), Path::from(path))
            .with_file_size(size)
            .with_footer_size_hint(FOOTER_HINT_BYTES.min(size as usize))
            .with_preload_column_index(true)
            .with_preload_offset_index(true);
        let options = ArrowReaderOptions::new().with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
        let mut builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, options).await?;
        let meta = builder.metadata().clone();
        let mut groups = Vec::new();
        for (i, rg) in meta.row_groups().iter().enumerate() {
            if let Some(Statistics::ByteArray(s)) = rg.column(0).statistics()
                && let (Some(min), Some(max)) = (s.min_opt(), s.max_opt())
                && (user.as_bytes() < min.data() || user.as_bytes() > max.data())
            {
                continue;
            }
            if let Some(bloom) = builder.get_row_group_column_bloom_filter(i, 0).await?
                && !bloom.check(user)
            {
                continue;
            }
            groups.push(i);
        }
        if groups.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let groups_read = groups.len();
        // With the page index (every history file has one): the pages whose `user` range holds
        // the user, all columns fetched at once (one round trip), the rows filtered here.
        // Without: a row filter on `user`, then the other columns' pages of its rows.
        let selection = user_pages(&meta, &groups, user);
        builder = builder.with_row_groups(groups);
        match selection {
            Some(selection) if !selection.selects_any() => return Ok((Vec::new(), groups_read)),
            Some(selection) => builder = builder.with_row_selection(selection),
            None => {
                let descr = meta.file_metadata().schema_descr_ptr();
                let wanted = user.to_owned();
                let predicate = ArrowPredicateFn::new(ProjectionMask::roots(&descr, [0]), move |batch: RecordBatch| {
                    let users = batch.column(0).as_string::<i32>();
                    Ok(arrow_array::BooleanArray::from_iter(users.iter().map(|u| Some(u == Some(wanted.as_str())))))
                });
                builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
            }
        }
        let batches: Vec<RecordBatch> = builder.build()?.try_collect().await?;
        let mut out = Vec::new();
        for b in &batches {
            let (u, c, id, t, e) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<arrow_array::types::Int64Type>(),
                b.column(2).as_string::<i32>(),
                b.column(3).as_string::<i32>(),
                b.column(4).as_string::<i32>(),
            );
            for r in 0..b.num_rows() {
                if u.value(r) != user {
                    continue;
                }
                out.push(HistoryRow { user: u.value(r).to_owned(), created_at: c.value(r), id: id.value(r).to_owned(), event_type: t.value(r).to_owned(), event: e.value(r).to_owned() });
            }
        }
        Ok((out, groups_read))
    }
}

/// The rows of the pages of `user` in the row groups `groups` (in the order read), from the
/// `user` column's page index; `None` when the file has none.
fn user_pages(meta: &parquet::file::metadata::ParquetMetaData, groups: &[usize], user: &str) -> Option<parquet::arrow::arrow_reader::RowSelection> {
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    let (columns, offsets) = (meta.column_index()?, meta.offset_index()?);
    let mut selectors: Vec<RowSelector> = Vec::new();
    for &g in groups {
        let ColumnIndexMetaData::BYTE_ARRAY(index) = columns.get(g)?.first()? else { return None };
        let pages = offsets.get(g)?.first()?.page_locations();
        let rows = meta.row_group(g).num_rows() as usize;
        for (k, page) in pages.iter().enumerate() {
            let start = page.first_row_index as usize;
            let end = pages.get(k + 1).map_or(rows, |p| p.first_row_index as usize);
            let holds = match (index.min_value(k), index.max_value(k)) {
                (Some(min), Some(max)) => min <= user.as_bytes() && user.as_bytes() <= max,
                _ => true,
            };
            selectors.push(if holds { RowSelector::select(end - start) } else { RowSelector::skip(end - start) });
        }
    }
    Some(RowSelection::from(selectors))
}

fn history_metadata() -> Result<deltalake::kernel::Metadata, LakeError> {
    let mut fields: Vec<StructField> = Vec::new();
    for f in history_schema().fields() {
        let field: StructField = f.as_ref().try_into_kernel().map_err(|e| LakeError::Internal(format!("column {} as Delta: {e}", f.name())))?;
        fields.push(field);
    }
    fields.push(StructField::new("month", deltalake::kernel::DataType::STRING, true));
    fields.push(StructField::new("bucket", deltalake::kernel::DataType::INTEGER, true));
    let schema = StructType::try_new(fields).map_err(|e| LakeError::Internal(format!("Delta schema: {e}")))?;
    new_metadata(&schema, ["month", "bucket"], [(CHECKPOINT_INTERVAL_KEY, CHECKPOINT_INTERVAL.to_string())])
        .map_err(|e| LakeError::Internal(format!("history table metadata: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed values: readers outside this code compute the same (FNV-1a 64).
        assert_eq!(bucket_of("", 64), (0xcbf2_9ce4_8422_2325u64 % 64) as u32);
        assert_eq!(bucket_of("u1", 64), bucket_of("u1", 64));
        let mut seen = std::collections::HashSet::new();
        for i in 0..1000 {
            seen.insert(bucket_of(&format!("user-{i}"), 64));
        }
        assert_eq!(seen.len(), 64);
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(1_796_000_000_000), "2026-11");
    }
}

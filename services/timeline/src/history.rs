//! Building the lake's per-user history table ([`event_lake::history`]) from the per-type
//! tables: every event once per user it names, with the same user paths as the hot tier
//! ([`UserPaths`]).
//!
//! Incremental and restartable, exactly once: for each type, the history records the newest
//! version of the type's table it holds (`history:<type>`). A type met for the first time is
//! taken from its table's current snapshot, in commits of about `chunk_bytes` of source
//! files (a build that stops goes on with the same snapshot, after the chunks committed);
//! after that, each new version's data files (appends; compactions rewrite rows already
//! held and are skipped) go in commits of about `chunk_bytes` of source files, each
//! recording the last version it holds. A build that stops anywhere writes nothing twice:
//! files written and not committed are invisible (vacuum removes them), and the next build
//! starts from the versions committed. The build must keep up within the lake's vacuum
//! retention (a source file vacuumed before the build read it is reported as an error).
//!
//! After the build, the history table is compacted ([`event_lake::history_compact`]): the
//! files each build adds are merged into runs with disjoint user ranges, so that a reader of
//! one user opens a bounded number of files whatever the build's period.

use std::collections::HashMap;

use futures::StreamExt;
use std::time::Instant;

use event_contract::wire::EventView;
use event_lake::history_compact::{HistoryCompactOptions, HistoryCompactReport};
use event_lake::history::{BUILT_APP, HistoryRow, USER_BUCKETS, bucket_of, data_adds, month_of, pack_snapshot_progress, snapshot_txn_app, txn_app, unpack_snapshot_progress};
use event_lake::reader::DataFile;
use event_lake::table::CommitOutcome;
use event_lake::{Lake, LakeError};

use crate::user::UserPaths;

/// How often a build that found nothing new still records its start (the seam moves on).
const IDLE_RECORD_MS: i64 = 3_600_000;

/// How a build runs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Source bytes per history commit (bounds the memory of a build: the rows of one chunk
    /// are held until their files are written).
    pub chunk_bytes: u64,
    /// Source files decoded, and history files written, at once (default: the cores).
    pub parallel: usize,
    /// Compaction after the build (`None`: none).
    pub compact: Option<HistoryCompactOptions>,
    /// Test hook: after this many commits, stop once the next chunk's files are written,
    /// before its commit (a build killed half-way).
    #[doc(hidden)]
    pub stop_after_commits: Option<usize>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            chunk_bytes: 256 << 20,
            parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            compact: Some(HistoryCompactOptions::default()),
            stop_after_commits: None,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BuildReport {
    /// Source types with new data.
    pub types: usize,
    /// History commits.
    pub commits: usize,
    /// Commits another build made first (this build's files for them stay uncommitted).
    pub superseded: usize,
    /// Source files read.
    pub files_read: usize,
    /// Source bytes read.
    pub bytes_read: u64,
    /// Events read.
    pub events: u64,
    /// History rows written (an event of two users is two rows).
    pub rows: u64,
    /// Events that name no user (not in any history).
    pub without_user: u64,
    /// History files written.
    pub files_written: usize,
    /// Stopped by the test hook.
    pub stopped: bool,
    /// The compaction that followed.
    pub compaction: Option<HistoryCompactReport>,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// One source file's history rows, keyed by (month, bucket).
struct FileRows {
    bytes: u64,
    events: u64,
    without_user: u64,
    rows: Vec<((String, u32), HistoryRow)>,
}

async fn rows_of(lake: &Lake, users: &UserPaths, event_type: &str, file: &DataFile) -> Result<FileRows, LakeError> {
    let mut out = FileRows { bytes: file.meta.size, events: 0, without_user: 0, rows: Vec::new() };
    for event in lake.read_events_json(file).await? {
        out.events += 1;
        let Ok(view) = EventView::parse(event.as_bytes()) else { continue };
        let named = users.users(&view);
        if named.is_empty() {
            out.without_user += 1;
            continue;
        }
        let month = month_of(view.created_at);
        let (created_at, id) = (view.created_at, view.id.to_string());
        for user in named {
            let bucket = bucket_of(&user, USER_BUCKETS);
            out.rows.push(((month.clone(), bucket), HistoryRow { user, created_at, id: id.clone(), event_type: event_type.to_owned(), event: event.clone() }));
        }
    }
    Ok(out)
}

/// Builds the history table up to the newest version of every type's table.
pub async fn build(lake: &Lake, users: &UserPaths, options: &BuildOptions) -> Result<BuildReport, LakeError> {
    let started = Instant::now();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let mut report = BuildReport::default();
    let types = lake.root.table_types().await?;
    // What is done, per type: its last version held, or how far its first build got.
    let apps: Vec<String> = types.iter().flat_map(|t| [txn_app(t), snapshot_txn_app(t)]).collect();
    let progress = lake.root.history_txns(&apps).await?;
    for event_type in &types {
        let Some(table) = lake.root.open_table(event_type).await? else { continue };
        let head = table.version();
        let done = progress.get(&txn_app(event_type)).copied();
        if done.is_some_and(|d| d >= head) || head < 0 {
            continue;
        }
        report.types += 1;
        // (files, the transactions their commit records) per commit.
        let mut chunks: Vec<(Vec<DataFile>, Vec<(String, i64)>)> = Vec::new();
        // The versions after the snapshot (or after what was done) go incrementally.
        let incremental_from = match done {
            None => {
                // First build of this type: a snapshot, in chunks (files in path order), each
                // commit recording how many of its files are done; the last one records the
                // version. A build that stopped half-way goes on with the same snapshot, after
                // the files committed.
                let snapshot_app = snapshot_txn_app(event_type);
                let (version, skip) = match progress.get(&snapshot_app) {
                    Some(&packed) => unpack_snapshot_progress(packed),
                    None => (head, 0),
                };
                let Some(at) = lake.root.open_table_at(event_type, Some(version)).await? else { continue };
                let mut files: Vec<DataFile> = at.files(None)?.into_iter().map(|f| DataFile { partition: f.partition, meta: f.meta }).collect();
                if files.len() > 0xFF_FFFF {
                    return Err(LakeError::Internal(format!("{event_type}: {} files in one snapshot; compact the table first", files.len())));
                }
                files.sort_by(|a, b| a.meta.location.cmp(&b.meta.location));
                let total = files.len();
                let mut rest = files.into_iter().skip(skip as usize).peekable();
                let mut done_files = skip as usize;
                if rest.peek().is_none() {
                    // Nothing (left) to take: record the version.
                    chunks.push((Vec::new(), vec![(snapshot_app.clone(), pack_snapshot_progress(version, total as u32)), (txn_app(event_type), version)]));
                }
                while rest.peek().is_some() {
                    let (mut group, mut bytes) = (Vec::new(), 0u64);
                    while let Some(f) = rest.next_if(|_| group.is_empty() || bytes < options.chunk_bytes) {
                        bytes += f.meta.size;
                        group.push(f);
                    }
                    done_files += group.len();
                    let mut txns = vec![(snapshot_app.clone(), pack_snapshot_progress(version, done_files as u32))];
                    if done_files == total {
                        txns.push((txn_app(event_type), version));
                    }
                    chunks.push((group, txns));
                }
                version
            }
            Some(done) => done,
        };
        let mut current: (Vec<DataFile>, u64) = (Vec::new(), 0);
        for version in incremental_from + 1..=head {
            for file in data_adds(&table, version).await? {
                current.1 += file.meta.size;
                current.0.push(file);
            }
            if current.1 >= options.chunk_bytes || version == head {
                chunks.push((std::mem::take(&mut current.0), vec![(txn_app(event_type), version)]));
                current.1 = 0;
            }
        }
        for (files, txns) in chunks {
            // The chunk's files decoded on every core (a task each, `parallel` at once), their
            // rows grouped by (month, bucket); then a file per group, written `parallel` at once.
            let mut groups: HashMap<(String, u32), Vec<HistoryRow>> = HashMap::new();
            let parallel = options.parallel.max(1);
            let mut decoded = futures::stream::iter(files.into_iter().map(|file| {
                let (lake, users, event_type) = (lake.clone(), users.clone(), event_type.clone());
                tokio::spawn(async move { rows_of(&lake, &users, &event_type, &file).await })
            }))
            .buffered(parallel);
            while let Some(joined) = decoded.next().await {
                let file = joined.map_err(|e| LakeError::Internal(format!("a history build task failed: {e}")))??;
                report.files_read += 1;
                report.bytes_read += file.bytes;
                report.events += file.events;
                report.without_user += file.without_user;
                for (key, row) in file.rows {
                    report.rows += 1;
                    groups.entry(key).or_default().push(row);
                }
            }
            let mut written = futures::stream::iter(groups.into_iter().map(|((month, bucket), mut rows)| {
                let lake = lake.clone();
                tokio::spawn(async move { lake.root.put_history_file(&month, bucket, &mut rows).await })
            }))
            .buffer_unordered(parallel);
            let mut adds = Vec::new();
            while let Some(joined) = written.next().await {
                adds.push(joined.map_err(|e| LakeError::Internal(format!("a history write task failed: {e}")))??);
            }
            report.files_written += adds.len();
            lake.sync_written().await?;
            if options.stop_after_commits.is_some_and(|n| report.commits >= n) {
                // (Its files are written: a build killed here leaves them uncommitted.)
                report.stopped = true;
                report.seconds = started.elapsed().as_secs_f64();
                return Ok(report);
            }
            match lake.root.commit_history(adds, &txns).await? {
                CommitOutcome::Committed(_) => report.commits += 1,
                // Another build committed these versions first: its files are the ones kept.
                CommitOutcome::AlreadyCommitted => report.superseded += 1,
            }
        }
    }
    // Every event committed before this build started is in the table now. (With nothing new,
    // the record moves on at most hourly: an idle lake does not get a commit per run.)
    let recorded = lake.root.history_built().await?;
    if report.commits > 0 || recorded.is_none_or(|b| b < started_ms - IDLE_RECORD_MS) {
        lake.root.commit_history(Vec::new(), &[(BUILT_APP.to_owned(), started_ms)]).await?;
    }
    if let Some(opts) = &options.compact {
        report.compaction = Some(lake.compact_history(opts, chrono::Utc::now().timestamp_millis()).await?);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

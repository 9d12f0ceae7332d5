//! Building the lake's per-user history table ([`event_lake::history`]) from the per-type
//! tables: every event once per user it names, with the same user paths as the hot tier
//! ([`UserPaths`]).
//!
//! Incremental and restartable, exactly once: for each type, the history records the newest
//! version of the type's table it holds (`history:<type>`). A type met for the first time is
//! taken whole from its table's current snapshot (one history commit for all its files);
//! after that, each new version's data files (appends; compactions rewrite rows already
//! held and are skipped) go in commits of about `chunk_bytes` of source files, each
//! recording the last version it holds. A build that stops anywhere writes nothing twice:
//! files written and not committed are invisible (vacuum removes them), and the next build
//! starts from the versions committed. The build must keep up within the lake's vacuum
//! retention (a source file vacuumed before the build read it is reported as an error).

use std::collections::HashMap;
use std::time::Instant;

use event_contract::wire::EventView;
use event_lake::history::{BUILT_APP, HistoryRow, USER_BUCKETS, bucket_of, data_adds, month_of, txn_app};
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
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { chunk_bytes: 256 << 20 }
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
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Builds the history table up to the newest version of every type's table.
pub async fn build(lake: &Lake, users: &UserPaths, options: &BuildOptions) -> Result<BuildReport, LakeError> {
    let started = Instant::now();
    let started_ms = chrono::Utc::now().timestamp_millis();
    let mut report = BuildReport::default();
    let types = lake.root.table_types().await?;
    let progress = lake.root.history_progress(&types).await?;
    for event_type in &types {
        let Some(table) = lake.root.open_table(event_type).await? else { continue };
        let head = table.version();
        let done = progress.get(event_type).copied();
        if done.is_some_and(|d| d >= head) || head < 0 {
            continue;
        }
        report.types += 1;
        // (files, last version they hold) per commit.
        let mut chunks: Vec<(Vec<DataFile>, i64)> = Vec::new();
        match done {
            None => {
                // First build of this type: its whole current snapshot, in one commit.
                let files = table.files(None)?.into_iter().map(|f| DataFile { partition: f.partition, meta: f.meta }).collect();
                chunks.push((files, head));
            }
            Some(done) => {
                let mut current: (Vec<DataFile>, u64) = (Vec::new(), 0);
                for version in done + 1..=head {
                    for file in data_adds(&table, version).await? {
                        current.1 += file.meta.size;
                        current.0.push(file);
                    }
                    if current.1 >= options.chunk_bytes || version == head {
                        chunks.push((std::mem::take(&mut current.0), version));
                        current.1 = 0;
                    }
                }
            }
        }
        for (files, version) in chunks {
            let mut groups: HashMap<(String, u32), Vec<HistoryRow>> = HashMap::new();
            for file in &files {
                report.files_read += 1;
                report.bytes_read += file.meta.size;
                for event in lake.read_events_json(file).await? {
                    report.events += 1;
                    let Ok(view) = EventView::parse(event.as_bytes()) else { continue };
                    let named = users.users(&view);
                    if named.is_empty() {
                        report.without_user += 1;
                        continue;
                    }
                    let month = month_of(view.created_at);
                    for user in named {
                        let bucket = bucket_of(&user, USER_BUCKETS);
                        groups.entry((month.clone(), bucket)).or_default().push(HistoryRow {
                            user,
                            created_at: view.created_at,
                            id: view.id.to_string(),
                            event_type: event_type.clone(),
                            event: event.clone(),
                        });
                        report.rows += 1;
                    }
                }
            }
            let mut adds = Vec::with_capacity(groups.len());
            for ((month, bucket), mut rows) in groups {
                adds.push(lake.root.put_history_file(&month, bucket, &mut rows).await?);
            }
            report.files_written += adds.len();
            lake.sync_written().await?;
            match lake.root.commit_history(adds, &[(txn_app(event_type), version)]).await? {
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
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

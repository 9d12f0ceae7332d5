//! Migration of a lake in the folder layout that came before Delta tables (`_schemas/<type>/
//! v<N>.json` for schemas, data files found by listing `events/type=/date=/hour=/` and
//! `quarantine/date=/hour=/`) into Delta tables in place, as `CONVERT TO DELTA` does: no data
//! file is rewritten or moved; each is committed as an `add` action with its row count and
//! the `id` / `created_at` statistics read from its Parquet footer.
//!
//! It is idempotent and resumable: files are committed in chunks of [`MigrateOptions::
//! files_per_commit`], and a run commits only the files that the table's log does not name
//! yet, so a re-run after a crash picks up where the last commit ended (and a re-run after a
//! finished migration commits nothing). `_schemas/` is left in place (only this module reads
//! it); a table that already exists keeps its schema, extended by the folder schema's
//! columns.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use deltalake::kernel::{Action, Add};
use deltalake::protocol::{DeltaOperation, SaveMode};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use serde_json::json;

use crate::layout::PartitionKey;
use crate::schema::{CREATED_AT, ID, TypeSchema};
use crate::table::{QUARANTINE_DIR, partition_values, table_dir};
use crate::{Lake, LakeError};

/// How a migration runs.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Files per commit (a crash loses at most one chunk's commit, redone by the next run).
    pub files_per_commit: usize,
    /// Footers read at once.
    pub concurrency: usize,
    /// Only say what would be committed.
    pub dry_run: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions { files_per_commit: 5000, concurrency: 16, dry_run: false }
    }
}

/// What a migration did, per table.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableMigration {
    /// Created by this run (it had no log).
    pub created: bool,
    /// Data files committed by this run.
    pub files_added: u64,
    /// Rows in those files.
    pub rows_added: u64,
    /// Data files the log already named (an earlier run).
    pub files_already: u64,
    /// Commits made.
    pub commits: u64,
}

/// What a migration did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct MigrateReport {
    /// Per type (and `quarantine`).
    pub tables: BTreeMap<String, TableMigration>,
    /// Nothing was committed.
    pub dry_run: bool,
}

impl MigrateReport {
    /// Files committed by this run, all tables.
    pub fn files_added(&self) -> u64 {
        self.tables.values().map(|t| t.files_added).sum()
    }
}

impl Lake {
    /// Turns the folder layout into Delta tables (see the module doc).
    pub async fn migrate_folder_layout(&self, opts: &MigrateOptions) -> Result<MigrateReport, LakeError> {
        let mut report = MigrateReport { dry_run: opts.dry_run, ..MigrateReport::default() };
        for event_type in self.folder_schema_types().await? {
            let Some(schema) = self.folder_schema(&event_type).await? else { continue };
            let migrated = self.migrate_type(&schema, opts).await?;
            report.tables.insert(event_type, migrated);
        }
        report.tables.insert(QUARANTINE_DIR.to_owned(), self.migrate_quarantine(opts).await?);
        Ok(report)
    }

    /// The types with a folder schema (`_schemas/<type>/`).
    async fn folder_schema_types(&self) -> Result<Vec<String>, LakeError> {
        let listed = self.store().list_with_delimiter(Some(&Path::from("_schemas"))).await?;
        let mut types: Vec<String> = listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
        types.sort();
        Ok(types)
    }

    /// The newest folder schema of a type.
    async fn folder_schema(&self, event_type: &str) -> Result<Option<TypeSchema>, LakeError> {
        let dir = crate::layout::schema_dir(event_type);
        let metas: Vec<ObjectMeta> = self.store().list(Some(&dir)).try_collect().await?;
        let newest = metas
            .iter()
            .filter_map(|m| {
                let v = m.location.filename()?.strip_prefix('v')?.strip_suffix(".json")?.parse::<u64>().ok()?;
                Some((v, m.location.clone()))
            })
            .max_by_key(|(v, _)| *v);
        let Some((_, path)) = newest else { return Ok(None) };
        let bytes = self.store().get(&path).await?.bytes().await?;
        let schema: TypeSchema = serde_json::from_slice(&bytes).map_err(|e| LakeError::Corrupt(format!("schema {path}: {e}")))?;
        Ok(Some(schema))
    }

    async fn migrate_type(&self, schema: &TypeSchema, opts: &MigrateOptions) -> Result<TableMigration, LakeError> {
        let event_type = schema.event_type.as_str();
        let mut out = TableMigration::default();
        let existing = self.root.open_table(event_type).await?;
        let known: HashSet<String> = match &existing {
            Some(t) => t.files(None)?.into_iter().map(|f| f.meta.location.to_string()).collect(),
            None => HashSet::new(),
        };
        let dir = table_dir(event_type);
        let listed: Vec<ObjectMeta> = self.store().list(Some(&Path::from(dir.as_str()))).try_collect().await?;
        let mut todo = Vec::new();
        for m in listed {
            if !m.location.as_ref().ends_with(".parquet") {
                continue;
            }
            let Some(partition) = PartitionKey::parse(m.location.as_ref()) else { continue };
            if known.contains(m.location.as_ref()) {
                out.files_already += 1;
            } else {
                todo.push((partition, m));
            }
        }
        out.created = existing.is_none();
        if opts.dry_run {
            out.files_added = todo.len() as u64;
            return Ok(out);
        }
        // The table with the folder schema (an existing table is extended by its columns).
        let needs: Vec<_> = schema.columns.iter().map(|c| (c.section, c.key.clone(), c.dtype.clone())).collect();
        match &existing {
            None => self.root.create_table_with(schema).await?,
            Some(_) => {
                self.root.ensure_schema(event_type, &needs, self.registry.max_columns).await?;
            }
        }
        for chunk in todo.chunks(opts.files_per_commit.max(1)) {
            let adds: Vec<(Add, u64)> = futures::stream::iter(chunk.iter().map(|(p, m)| self.footer_add(p, m)))
                .buffered(opts.concurrency.max(1))
                .try_collect()
                .await?;
            out.rows_added += adds.iter().map(|(_, rows)| rows).sum::<u64>();
            out.files_added += adds.len() as u64;
            let actions: Vec<Action> = adds.into_iter().map(|(a, _)| Action::Add(a)).collect();
            let op = DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
            let info = std::collections::HashMap::from([("eventplat.operation".to_owned(), json!("migrate"))]);
            self.root.commit(event_type, actions, op, None, info).await?;
            out.commits += 1;
            tracing::info!(event_type, files = chunk.len(), "migrated files committed");
        }
        Ok(out)
    }

    /// The `add` action of a data file in the folder layout, from its footer.
    async fn footer_add(&self, partition: &PartitionKey, meta: &ObjectMeta) -> Result<(Add, u64), LakeError> {
        let footer = self.read_footer(meta).await?;
        let rows = footer.file_metadata().num_rows().max(0) as u64;
        let stats = footer_stats(&footer);
        let add = crate::table::add_action(partition, &meta.location, meta.size, stats, true);
        Ok((Add { modification_time: meta.last_modified.timestamp_millis(), ..add }, rows))
    }

    /// A file's footer: two ranged GETs (the 8-byte tail, then the metadata).
    async fn read_footer(&self, meta: &ObjectMeta) -> Result<Arc<ParquetMetaData>, LakeError> {
        let corrupt = |why: &str| LakeError::Corrupt(format!("{}: {why}", meta.location));
        if meta.size < 12 {
            return Err(corrupt("too small for a Parquet file"));
        }
        let tail = self.store().get_range(&meta.location, meta.size - 8..meta.size).await?;
        if tail.len() != 8 || &tail[4..] != b"PAR1" {
            return Err(corrupt("no Parquet footer"));
        }
        let len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if len + 12 > meta.size {
            return Err(corrupt("footer longer than the file"));
        }
        let bytes = self.store().get_range(&meta.location, meta.size - 8 - len..meta.size - 8).await?;
        Ok(Arc::new(ParquetMetaDataReader::decode_metadata(&bytes)?))
    }

    async fn migrate_quarantine(&self, opts: &MigrateOptions) -> Result<TableMigration, LakeError> {
        let mut out = TableMigration::default();
        let known: HashSet<String> = self.root.quarantine_table_files().await?.into_iter().collect();
        let listed: Vec<ObjectMeta> = self.store().list(Some(&Path::from(QUARANTINE_DIR))).try_collect().await?;
        let mut todo = Vec::new();
        for m in listed {
            let Some(rel) = m.location.as_ref().strip_prefix("quarantine/") else { continue };
            if !rel.ends_with(".parquet") || rel.contains("_delta_log") {
                continue;
            }
            let Some(hour) = quarantine_hour(rel) else { continue };
            if known.contains(rel) {
                out.files_already += 1;
            } else {
                todo.push((rel.to_owned(), hour, m));
            }
        }
        out.created = known.is_empty() && !self.root.is_table(QUARANTINE_DIR).await?;
        if opts.dry_run || todo.is_empty() {
            out.files_added = if opts.dry_run { todo.len() as u64 } else { 0 };
            return Ok(out);
        }
        for chunk in todo.chunks(opts.files_per_commit.max(1)) {
            let mut adds = Vec::with_capacity(chunk.len());
            for (rel, hour, m) in chunk {
                let footer = self.read_footer(m).await?;
                let rows = footer.file_metadata().num_rows().max(0) as u64;
                out.rows_added += rows;
                adds.push(Add {
                    path: rel.clone(),
                    partition_values: partition_values(*hour),
                    size: m.size as i64,
                    modification_time: m.last_modified.timestamp_millis(),
                    data_change: true,
                    stats: Some(json!({ "numRecords": rows }).to_string()),
                    ..Add::default()
                });
            }
            out.files_added += adds.len() as u64;
            self.root.commit_quarantine(adds).await?;
            out.commits += 1;
        }
        Ok(out)
    }
}

/// The epoch hour of a quarantine file from its `date=<d>/hour=<h>/` folders.
fn quarantine_hour(rel: &str) -> Option<i64> {
    let mut parts = rel.split('/');
    let date = parts.next()?.strip_prefix("date=")?;
    let hour: u32 = parts.next()?.strip_prefix("hour=")?.parse().ok()?;
    let date = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(hour, 0, 0)?.and_utc().timestamp_millis().div_euclid(crate::layout::HOUR_MS))
}

/// Delta statistics of a file from its footer: `numRecords`, and min, max and null count of
/// `id` and `created_at` where every row group has them.
pub fn footer_stats(footer: &ParquetMetaData) -> String {
    let rows = footer.file_metadata().num_rows().max(0);
    let schema = footer.file_metadata().schema_descr();
    let column = |name: &str| (0..schema.num_columns()).find(|i| schema.column(*i).path().string() == name);
    let mut min = serde_json::Map::new();
    let mut max = serde_json::Map::new();
    let mut nulls = serde_json::Map::new();
    if let Some(i) = column(ID) {
        let mut acc: Option<(String, String, u64)> = Some((String::new(), String::new(), 0));
        let mut first = true;
        for rg in footer.row_groups() {
            let next = match (rg.column(i).statistics(), acc.take()) {
                (Some(Statistics::ByteArray(s)), Some((lo, hi, n))) => match (s.min_opt(), s.max_opt(), s.null_count_opt()) {
                    (Some(a), Some(b), Some(c)) => match (a.as_utf8(), b.as_utf8()) {
                        (Ok(a), Ok(b)) => Some(if first {
                            (a.to_owned(), b.to_owned(), c)
                        } else {
                            (lo.min(a.to_owned()), hi.max(b.to_owned()), n + c)
                        }),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            };
            first = false;
            acc = next;
        }
        if let Some((lo, hi, n)) = acc.filter(|_| !first) {
            min.insert(ID.into(), lo.into());
            max.insert(ID.into(), hi.into());
            nulls.insert(ID.into(), n.into());
        }
    }
    if let Some(i) = column(CREATED_AT) {
        let mut acc: Option<(i64, i64, u64)> = Some((i64::MAX, i64::MIN, 0));
        let mut any = false;
        for rg in footer.row_groups() {
            any = true;
            acc = match (rg.column(i).statistics(), acc) {
                (Some(Statistics::Int64(s)), Some((lo, hi, n))) => match (s.min_opt(), s.max_opt(), s.null_count_opt()) {
                    (Some(a), Some(b), Some(c)) => Some((lo.min(*a), hi.max(*b), n + c)),
                    _ => None,
                },
                _ => None,
            };
        }
        let ts = |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
        if let Some((lo, hi, n)) = acc.filter(|_| any)
            && let (Some(lo), Some(hi)) = (ts(lo), ts(hi))
        {
            min.insert(CREATED_AT.into(), lo.into());
            max.insert(CREATED_AT.into(), hi.into());
            nulls.insert(CREATED_AT.into(), n.into());
        }
    }
    json!({ "numRecords": rows, "minValues": min, "maxValues": max, "nullCount": nulls }).to_string()
}

//! Reading the lake back: the files of each type's table as its Delta log says (never a
//! listing of data folders, which may hold uncommitted or removed files), and rebuilding
//! events as JSON (`eventctl cat`) from the typed columns and the leftovers.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::layout::PartitionKey;
use crate::shred::{decode, decode_json};
use crate::writer::Lake;
use crate::LakeError;

/// A data file of a partition.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Its partition.
    pub partition: PartitionKey,
    /// Object metadata (path, size, last modified).
    pub meta: ObjectMeta,
}

/// A table's files and recent bus positions at one version ([`Lake::recent_snapshot`]).
#[derive(Debug, Clone)]
pub struct RecentSnapshot {
    /// The table version read.
    pub version: i64,
    /// Its data files (of the hours asked for).
    pub files: Vec<DataFile>,
    /// The bus positions its recent commits hold (unsorted, may repeat).
    pub positions: Vec<u64>,
}

impl Lake {
    /// The committed data files of the newest snapshot of each table (optionally of one
    /// type), by partition: read from the tables' logs.
    pub async fn list_data_files(&self, event_type: Option<&str>) -> Result<Vec<DataFile>, LakeError> {
        self.data_files(event_type, None).await
    }

    /// The committed data files of each table (optionally of one type) whose hour is in
    /// `[from, to)`, pruned by the log's partition values.
    pub async fn data_files(&self, event_type: Option<&str>, hours: Option<(i64, i64)>) -> Result<Vec<DataFile>, LakeError> {
        let types = match event_type {
            Some(t) => vec![t.to_owned()],
            None => self.registry.types().await?,
        };
        let mut files = Vec::new();
        for t in types {
            let Some(table) = self.root.open_table(&t).await? else { continue };
            files.extend(table.files(hours)?.into_iter().map(|f| DataFile { partition: f.partition, meta: f.meta }));
        }
        files.sort_by(|a, b| (&a.partition, &a.meta.location).cmp(&(&b.partition, &b.meta.location)));
        Ok(files)
    }

    /// One type's table at one snapshot, for a rebuild of state from the lake: its files of
    /// hours in `[from, to)` and the bus positions recorded by its commits made at or after
    /// `since_ms` (read from the newest commit back; `None` when the type has no table).
    /// Both come from the same version, so every event of the files listed was committed
    /// by a commit read here or by an older one.
    pub async fn recent_snapshot(&self, event_type: &str, hours: Option<(i64, i64)>, since_ms: i64) -> Result<Option<RecentSnapshot>, LakeError> {
        use futures::StreamExt;
        let Some(table) = self.root.open_table(event_type).await? else { return Ok(None) };
        let files = table.files(hours)?.into_iter().map(|f| DataFile { partition: f.partition, meta: f.meta }).collect();
        let mut positions = Vec::new();
        let mut infos = table.table.history(None);
        while let Some(info) = infos.next().await {
            let info = info?;
            if info.timestamp.is_some_and(|t| t < since_ms) {
                break;
            }
            if let Some(ranges) = info.info.get(crate::writer::PROVENANCE_POSITIONS).and_then(|v| v.as_str()) {
                positions.extend(crate::writer::parse_ranges(ranges).map_err(|e| LakeError::Corrupt(format!("commit info of {event_type:?}: {e}")))?);
            }
        }
        Ok(Some(RecentSnapshot { version: table.version(), files, positions }))
    }

    /// Reads a whole data file.
    pub async fn read_file(&self, path: &Path) -> Result<Bytes, LakeError> {
        Ok(self.store().get(path).await?.bytes().await?)
    }

    /// The events of one file, rebuilt as JSON values (a number no f64 holds exactly comes
    /// back as the nearest f64: [`Lake::read_events_json`] keeps its digits).
    pub async fn read_events(&self, file: &DataFile) -> Result<Vec<Value>, LakeError> {
        self.read_decoded(file, decode).await
    }

    /// The events of one file, rebuilt as JSON texts with every digit of their numbers, as
    /// written (`eventctl cat`); object members sorted by key.
    pub async fn read_events_json(&self, file: &DataFile) -> Result<Vec<String>, LakeError> {
        self.read_decoded(file, decode_json).await
    }

    /// The events of one file, each batch rebuilt by `decode`.
    async fn read_decoded<T>(
        &self,
        file: &DataFile,
        decode: fn(&crate::TypeSchema, &str, &arrow_array::RecordBatch) -> Result<Vec<T>, LakeError>,
    ) -> Result<Vec<T>, LakeError> {
        let (schema, batches) = self.read_batches(file).await?;
        let mut out = Vec::new();
        for batch in &batches {
            out.extend(decode(&schema, &file.partition.event_type, batch)?);
        }
        Ok(out)
    }

    /// The record batches of a data file, with the schema of its type that covers them.
    async fn read_batches(&self, file: &DataFile) -> Result<(std::sync::Arc<crate::TypeSchema>, Vec<arrow_array::RecordBatch>), LakeError> {
        let data = self.read_file(&file.meta.location).await?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(data)?;
        let mut schema = self.registry.get(&file.partition.event_type).await?;
        let known = |s: &crate::TypeSchema, name: &str| {
            matches!(name, crate::schema::ID | crate::schema::CREATED_AT | crate::schema::LEFTOVERS)
                || s.columns.iter().any(|c| c.name == name)
        };
        if builder.schema().fields().iter().any(|f| !known(&schema, f.name())) {
            // Written after our cached version: read the newest.
            schema = self.registry.load(&file.partition.event_type).await?;
        }
        let batches = builder.build()?.collect::<Result<Vec<_>, _>>()?;
        Ok((schema, batches))
    }
}

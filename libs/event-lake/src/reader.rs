//! Reading the lake back: listing partitions and files, and rebuilding events as JSON
//! (`eventctl cat`) from the typed columns and the leftovers.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::layout::PartitionKey;
use crate::shred::decode;
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

impl Lake {
    /// The committed data files below `events/` (optionally of one type), by partition.
    pub async fn list_data_files(&self, event_type: Option<&str>) -> Result<Vec<DataFile>, LakeError> {
        let prefix = match event_type {
            Some(t) => Path::from(format!("events/type={t}")),
            None => Path::from("events"),
        };
        let metas: Vec<ObjectMeta> = self.store().list(Some(&prefix)).try_collect().await?;
        let mut files: Vec<DataFile> = metas
            .into_iter()
            .filter(|m| m.location.as_ref().ends_with(".parquet"))
            .filter_map(|m| PartitionKey::parse(m.location.as_ref()).map(|partition| DataFile { partition, meta: m }))
            .collect();
        files.sort_by(|a, b| (&a.partition, &a.meta.location).cmp(&(&b.partition, &b.meta.location)));
        Ok(files)
    }

    /// Reads a whole data file.
    pub async fn read_file(&self, path: &Path) -> Result<Bytes, LakeError> {
        Ok(self.store().get(path).await?.bytes().await?)
    }

    /// The events of one file, rebuilt as JSON.
    pub async fn read_events(&self, file: &DataFile) -> Result<Vec<Value>, LakeError> {
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
        let mut out = Vec::new();
        for batch in builder.build()? {
            out.extend(decode(&schema, &file.partition.event_type, &batch?)?);
        }
        Ok(out)
    }
}

//! The quarantine: lines that failed the contract, kept as received with their reason, in
//! one Delta table at `quarantine/` partitioned by arrival `date` and `hour`
//! (`quarantine/date=<d>/hour=<h>/`); each call's files are one commit.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int64Builder, StringBuilder, TimestampMillisecondBuilder, UInt64Builder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use event_contract::Rejection;
use object_store::path::Path;

use crate::layout::{HOUR_MS, new_file_name, quarantine_dir};
use crate::schema::timestamp_type;
use crate::writer::{Lake, encode_parquet, put_whole};
use crate::LakeError;

/// One rejected line.
#[derive(Debug, Clone)]
pub struct QuarantineRecord {
    /// The bytes as received (the first `raw_limit` bytes of an oversized line).
    pub raw: Vec<u8>,
    /// Length of the line as received.
    pub raw_len: u64,
    /// Why it was rejected.
    pub rejection: Rejection,
    /// Where it came from: a file name, `-` for stdin, or a service name.
    pub source: String,
    /// Line number in the source (1-based), or the index in a request.
    pub line: u64,
    /// When it arrived, epoch ms.
    pub arrived_at: i64,
}

/// The Arrow schema of quarantine files.
pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("arrived_at", timestamp_type(), false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("line", DataType::UInt64, false),
        Field::new("raw_len", DataType::Int64, false),
        Field::new("raw", DataType::Binary, false),
    ]))
}

fn to_batch(records: &[QuarantineRecord]) -> Result<RecordBatch, LakeError> {
    let mut arrived = TimestampMillisecondBuilder::new().with_timezone("UTC");
    let mut reason = StringBuilder::new();
    let mut detail = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut line = UInt64Builder::new();
    let mut raw_len = Int64Builder::new();
    let mut raw = BinaryBuilder::new();
    for r in records {
        arrived.append_value(r.arrived_at);
        reason.append_value(r.rejection.reason.code());
        detail.append_value(&r.rejection.detail);
        source.append_value(&r.source);
        line.append_value(r.line);
        raw_len.append_value(r.raw_len as i64);
        raw.append_value(&r.raw);
    }
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(arrived.finish()),
        Arc::new(reason.finish()),
        Arc::new(detail.finish()),
        Arc::new(source.finish()),
        Arc::new(line.finish()),
        Arc::new(raw_len.finish()),
        Arc::new(raw.finish()),
    ];
    Ok(RecordBatch::try_new(quarantine_schema(), arrays)?)
}

impl Lake {
    /// Writes rejected lines, one file per arrival hour. Returns the files written.
    pub async fn write_quarantine(&self, records: &[QuarantineRecord]) -> Result<Vec<(Path, u64)>, LakeError> {
        let mut by_hour: BTreeMap<i64, Vec<QuarantineRecord>> = BTreeMap::new();
        for r in records {
            by_hour.entry(r.arrived_at.div_euclid(HOUR_MS)).or_default().push(r.clone());
        }
        let mut written = Vec::new();
        let mut adds = Vec::new();
        for (hour, recs) in by_hour {
            let batch = to_batch(&recs)?;
            let rows = batch.num_rows();
            let data = encode_parquet(batch.schema(), &[batch], &self.options, 0, false)?;
            let path = Path::from(format!("{}/{}", quarantine_dir(hour), new_file_name("q")));
            let len = data.len() as u64;
            put_whole(&self.root, &path, data).await?;
            let rel = path.as_ref().strip_prefix("quarantine/").unwrap_or(path.as_ref()).to_owned();
            adds.push(deltalake::kernel::Add {
                path: rel,
                partition_values: crate::table::partition_values(hour),
                size: len as i64,
                modification_time: chrono::Utc::now().timestamp_millis(),
                data_change: true,
                stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
                ..Default::default()
            });
            written.push((path, len));
        }
        self.root.commit_quarantine(adds).await?;
        Ok(written)
    }
}

//! What the lake writer's tests share: reading the lake's quarantine back.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, dead_code)]

use std::sync::Arc;

use arrow_array::{Array, BinaryArray, StringArray};

/// (reason, detail, source, raw) of every quarantine record.
pub fn quarantine_rows(root: &std::path::Path) -> Vec<(String, String, String, Vec<u8>)> {
    let mut rows = Vec::new();
    let mut stack = vec![root.join("quarantine")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "parquet") {
                continue;
            }
            let file = std::fs::File::open(&p).expect("open");
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet").build().expect("reader");
            for batch in reader {
                let batch = batch.expect("batch");
                let col = |name: &str| batch.column_by_name(name).unwrap_or_else(|| panic!("column {name}")).clone();
                let (reason, detail, source, raw) = (col("reason"), col("detail"), col("source"), col("raw"));
                let s = |a: &Arc<dyn Array>, i| a.as_any().downcast_ref::<StringArray>().expect("string").value(i).to_owned();
                let raw = raw.as_any().downcast_ref::<BinaryArray>().expect("binary").clone();
                for i in 0..batch.num_rows() {
                    rows.push((s(&reason, i), s(&detail, i), s(&source, i), raw.value(i).to_vec()));
                }
            }
        }
    }
    rows
}


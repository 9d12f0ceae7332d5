//! Query results out: a pretty table, CSV, NDJSON or a Parquet file.

use std::io::Write;
use std::str::FromStr;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::QueryError;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row (NDJSON).
    Json,
    /// A Parquet file (zstd).
    Parquet,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" | "ndjson" => Ok(Format::Json),
            "parquet" => Ok(Format::Parquet),
            other => Err(format!("unknown format {other:?}: table, csv, json or parquet")),
        }
    }
}

/// Writes batches of a schema in a format (Parquet too goes to any `Write`).
pub fn write(schema: SchemaRef, batches: &[RecordBatch], format: Format, out: &mut (dyn Write + Send)) -> Result<(), QueryError> {
    let to_io = |e: std::io::Error| QueryError::io("output", e);
    match format {
        Format::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
                writeln!(out, "(no rows{})", if names.is_empty() { String::new() } else { format!("; columns: {}", names.join(", ")) }).map_err(to_io)?;
            } else {
                writeln!(out, "{}", pretty_format_batches(batches)?).map_err(to_io)?;
            }
        }
        Format::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let props = datafusion::parquet::file::properties::WriterProperties::builder()
                .set_compression(datafusion::parquet::basic::Compression::ZSTD(Default::default()))
                .build();
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(out, schema, Some(props))?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(())
}

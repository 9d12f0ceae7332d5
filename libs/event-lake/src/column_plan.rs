//! Per-column encoding of one Parquet file, chosen from the data the file will hold.
//!
//! A day of fresh ingest is one file per type and hour, so most files are small (at 300
//! types, half of them hold under 20 events), and Parquet's costs there are per column chunk,
//! not per value: a zstd context pair and a dictionary hash table for every column of every
//! file. Creating a zstd context probes the CPU (`cpuid`), which traps to the hypervisor on a
//! VM: 14 µs per context here, two per compressed column chunk. With one setting for all
//! columns, 1,000,000 generated events of ~1 KiB (7,200 files, 111,000 column chunks) took
//! 8.6 s to encode; with these choices 4.9 s, for 7% more bytes. So each root column (and
//! every leaf below it) gets:
//! - **compression:** zstd when its values take at least [`MIN_COMPRESSED_BYTES`], stored plain
//!   below that (a zstd frame of a few hundred bytes saves a few hundred bytes at most, and
//!   compaction recompresses the merged, larger chunks anyway);
//! - **dictionary:** on when a sample of its values repeats (at most half distinct), off when
//!   they are all but unique (ids, timestamps, free text), where a dictionary page only adds
//!   a hash of every value and a page that holds them all once more. Small files get none.
//!
//! Readers are unaffected: compression and encodings are recorded per column chunk.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Schema, TimeUnit};
use parquet::arrow::ArrowSchemaConverter;
use parquet::basic::Compression;
use parquet::file::properties::WriterPropertiesBuilder;

/// Below this many bytes of values, a column chunk is stored uncompressed.
pub const MIN_COMPRESSED_BYTES: usize = 4 << 10;
/// Below this many rows a file uses no dictionaries.
pub const MIN_DICTIONARY_ROWS: usize = 64;
/// Values sampled per column to judge whether a dictionary pays.
const SAMPLE: usize = 256;

/// What one root column gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColumnChoice {
    /// Compress the column chunk with the file's codec.
    pub compress: bool,
    /// Dictionary-encode it.
    pub dictionary: bool,
}

/// The choice for each root column of `schema`, from the batches of one file.
pub fn choose(schema: &Schema, batches: &[RecordBatch]) -> Vec<ColumnChoice> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    (0..schema.fields().len())
        .map(|i| {
            let bytes: usize = batches.iter().map(|b| b.column(i).to_data().get_slice_memory_size().unwrap_or(0)).sum();
            let dictionary = rows >= MIN_DICTIONARY_ROWS
                && batches.first().is_none_or(|b| repeats(b.column(i).as_ref()));
            ColumnChoice { compress: bytes >= MIN_COMPRESSED_BYTES, dictionary }
        })
        .collect()
}

/// Applies `choices` (one per root column) to every leaf column of `schema`. `compression` is
/// the codec of the columns that are compressed.
pub fn apply(
    mut builder: WriterPropertiesBuilder,
    schema: &Schema,
    choices: &[ColumnChoice],
    compression: Compression,
) -> WriterPropertiesBuilder {
    builder = builder.set_compression(compression);
    // The Parquet schema as the writer derives it, for the leaves' paths.
    let Ok(descr) = ArrowSchemaConverter::new().convert(schema) else { return builder };
    for leaf in 0..descr.num_columns() {
        let Some(choice) = choices.get(descr.get_column_root_idx(leaf)) else { continue };
        let path = descr.column(leaf).path().clone();
        if !choice.compress {
            builder = builder.set_column_compression(path.clone(), Compression::UNCOMPRESSED);
        }
        builder = builder.set_column_dictionary_enabled(path, choice.dictionary);
    }
    builder
}

/// Does a sample of the column repeat values enough for a dictionary (at most half distinct)?
/// Nested columns keep their dictionaries: their leaves are not sampled.
fn repeats(array: &dyn Array) -> bool {
    // Sorting a small sample and counting runs needs no hashing of long strings.
    fn half_distinct<T: Ord>(values: impl Iterator<Item = T>) -> bool {
        let mut sample: Vec<T> = values.take(SAMPLE).collect();
        sample.sort_unstable();
        let distinct = sample.windows(2).filter(|w| w[0] != w[1]).count() + usize::from(!sample.is_empty());
        distinct * 2 <= sample.len()
    }
    match array.data_type() {
        DataType::Utf8 => half_distinct(array.as_string::<i32>().iter().flatten()),
        DataType::Int64 => half_distinct(array.as_primitive::<Int64Type>().iter().flatten()),
        DataType::Float64 => half_distinct(array.as_primitive::<Float64Type>().iter().flatten().map(f64::to_bits)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            half_distinct(array.as_primitive::<TimestampMillisecondType>().iter().flatten())
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, StringArray};
    use arrow_schema::Field;

    use super::*;

    fn batch(ids: Vec<String>, kinds: Vec<&str>, n: Vec<i64>) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ]);
        let cols: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(ids)), Arc::new(StringArray::from(kinds)), Arc::new(Int64Array::from(n))];
        RecordBatch::try_new(Arc::new(schema), cols).unwrap()
    }

    #[test]
    fn unique_and_small_columns_get_neither_dictionary_nor_compression() {
        let rows = 1000;
        let b = batch(
            (0..rows).map(|i| format!("event-{i:08}-{}", "x".repeat(20))).collect(),
            (0..rows).map(|i| ["a", "b", "c"][i % 3]).collect(),
            (0..rows as i64).map(|i| i % 2).collect(),
        );
        let c = choose(&b.schema(), std::slice::from_ref(&b));
        // ids: unique, large -> compressed, no dictionary.
        assert_eq!(c[0], ColumnChoice { compress: true, dictionary: false });
        // three kinds -> dictionary; 8 KB of i64 -> compressed.
        assert!(c[1].dictionary && c[2].dictionary && c[2].compress);

        // A small file: nothing is compressed (under 4 KiB each) and no dictionary.
        let small = batch(vec!["a".into(), "b".into()], vec!["k", "k"], vec![1, 1]);
        let c = choose(&small.schema(), std::slice::from_ref(&small));
        assert!(c.iter().all(|c| !c.compress && !c.dictionary));
    }
}

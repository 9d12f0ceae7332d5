//! The lake on a local folder and on the S3 stand-in: lossless storage, schema evolution and
//! conflicts, concurrent schema extension, compaction after an interrupted run.

mod common;

use std::sync::Arc;

use common::{event, local_lake, runtime, s3_lake_url};
use event_lake::compact::CompactOptions;
use event_lake::schema::{DType, Section};
use event_lake::{Lake, PartitionKey, WriteOptions};
use serde_json::{Value, json};

const T0: i64 = 1_763_856_000_000; // 2025-11-23T00:00:00Z


async fn read_all(lake: &Lake, t: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for f in lake.list_data_files(Some(t)).await.expect("list") {
        out.extend(lake.read_events(&f).await.expect("read"));
    }
    out
}

fn key(t: &str, ms: i64) -> PartitionKey {
    PartitionKey::of(Arc::from(t), ms)
}

fn tricky_events() -> Vec<Vec<u8>> {
    let mut lines = vec![
        event("a1", "t", T0 + 5, json!({"n": 1, "s": "x", "o": {"p": 1, "q": "r"}, "l": [1, 2], "f": 1.5})),
        event("a2", "t", T0 + 9, json!({"n": "not a number", "s": null, "o": {"p": "conflict"}, "l": [], "f": 2})),
        event("a3", "t", T0 + 3, json!({"o": {}, "l": [1, null, 3], "e": {}, "type": "kept", "ID": "upper",
            "weird key/~": "esc", "deep": {"a": {"b": {"c": {"d": {"e": 1}}}}}, "mixed": [1, "x", {"k": 1}],
            "big": 18446744073709551615u64, "uni": "caf\u{e9} \"q\" \n"})),
        event("a4", "t", T0 + 2, json!({"n": 2.0, "f": 9007199254740993i64, "o": {"p": 2, "new": true}})),
    ];
    // Extra keys at the top level and in data, meta fields, explicit null meta.
    lines.push(
        br#"{"links":{"self":"/x"},"data":{"id":"a5","type":"t","attributes":{"n":3},"relationships":{"u":[1]}},"meta":{"created_at":1763856000004,"source":"ios","trace":null}}"#.to_vec(),
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossless_round_trip_with_evolution_and_conflicts_local() {
    let (_dir, lake) = local_lake();
    round_trip(&lake).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossless_round_trip_on_s3() {
    let lake = Lake::open(&s3_lake_url("roundtrip"), WriteOptions::default()).expect("open s3 lake");
    round_trip(&lake).await;
}

async fn round_trip(lake: &Lake) {
    let lines = tricky_events();
    // Two batches: the second one evolves the schema (new struct field, new column).
    let k = key("t", T0);
    lake.write_events(&k, lines[..3].iter().map(Vec::as_slice)).await.expect("write 1");
    lake.write_events(&k, lines[3..].iter().map(Vec::as_slice)).await.expect("write 2");

    let mut back = read_all(lake, "t").await;
    back.sort_by(|a, b| a["data"]["id"].as_str().cmp(&b["data"]["id"].as_str()));
    assert_eq!(back.len(), lines.len());
    for (line, got) in lines.iter().zip(&back) {
        let want: Value = serde_json::from_slice(line).expect("json");
        assert!(event_lake::shred::json_equal(&want, got), "\nwant {want}\n got {got}");
    }

    let schema = lake.registry.load("t").await.expect("schema");
    assert_eq!(schema.version, 2, "one version per extending batch");
    let col = |k: &str| schema.column(Section::Attributes, k).map(|(_, c)| c.clone());
    // First type wins; conflicts do not change it.
    assert_eq!(col("n").expect("n").dtype, DType::Int);
    assert_eq!(col("f").expect("f").dtype, DType::Float);
    assert_eq!(col("l").expect("l").dtype, DType::List { item: Box::new(DType::Int) });
    assert_eq!(col("mixed").expect("mixed").dtype, DType::Json);
    // Reserved and case-colliding names are renamed, not dropped.
    assert_eq!(col("type").expect("type").name, "attr_type");
    // Additive evolution: the struct gained a field, a column was added by batch 2.
    let DType::Struct { fields } = col("o").expect("o").dtype else { panic!("o is a struct") };
    assert!(fields.iter().any(|f| f.name == "new"));
    assert!(schema.column(Section::Meta, "source").is_some());
    // A null-only field gets no column (its nulls are leftovers).
    assert!(col("e").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_sorted_deduplicated_and_typed_for_readers() {
    let (dir, lake) = local_lake();
    let k = key("t", T0);
    let lines = [
        event("b", "t", T0 + 30, json!({"x": 1})),
        event("a", "t", T0 + 10, json!({"x": 2})),
        event("b", "t", T0 + 20, json!({"x": 3})),
    ];
    let f = lake.write_events(&k, lines.iter().map(Vec::as_slice)).await.expect("write").expect("a file");
    assert_eq!((f.rows, f.duplicates_dropped), (2, 1));
    assert!(f.path.as_ref().starts_with("events/type=t/date=2025-11-23/hour=00/"));
    let path = dir.path().join(f.path.as_ref());
    let file = std::fs::File::open(path).expect("file on disk");
    let reader = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    let rg = meta.row_group(0);
    assert!(rg.sorting_columns().is_some(), "sorting columns recorded");
    // Column chunks this small are stored plain (see event_lake::column_plan).
    assert_eq!(rg.column(0).compression(), parquet::basic::Compression::UNCOMPRESSED);
    assert!(rg.column(1).statistics().is_some(), "statistics on created_at");
    let back = read_all(&lake, "t").await;
    let times: Vec<i64> = back.iter().map(|e| e["meta"]["created_at"].as_i64().expect("ms")).collect();
    assert_eq!(times, vec![T0 + 10, T0 + 20], "sorted by created_at, the earliest repeat kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_columns_are_zstd_compressed_and_unique_ones_skip_the_dictionary() {
    let (dir, lake) = local_lake();
    let k = key("t", T0);
    let kinds = ["a", "b"];
    let lines: Vec<Vec<u8>> = (0..2000)
        .map(|i| event(&format!("event-{i:06}"), "t", T0 + i, json!({"kind": kinds[i as usize % 2]})))
        .collect();
    let f = lake.write_events(&k, lines.iter().map(Vec::as_slice)).await.expect("write").expect("a file");
    let file = std::fs::File::open(dir.path().join(f.path.as_ref())).expect("file on disk");
    let reader = parquet::file::reader::SerializedFileReader::new(file).expect("parquet");
    use parquet::file::reader::FileReader;
    let meta = reader.metadata();
    let rg = meta.row_group(0);
    let column = |name: &str| {
        (0..rg.num_columns()).map(|i| rg.column(i)).find(|c| c.column_path().string() == name).expect("column")
    };
    let dictionary = |c: &parquet::file::metadata::ColumnChunkMetaData| c.dictionary_page_offset().is_some();
    // ids: unique and 24 KB -> zstd, no dictionary.
    assert!(matches!(column("id").compression(), parquet::basic::Compression::ZSTD(_)));
    assert!(!dictionary(column("id")), "unique ids get no dictionary");
    // two kinds: a dictionary (the indices are tiny, so plain).
    assert!(dictionary(column("kind")), "repeated values get a dictionary");
    assert_eq!(read_all(&lake, "t").await.len(), 2000);
}

#[test]
fn two_writers_extend_one_schema_at_once_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_extension(dir.path().to_str().expect("utf8"));
}

#[test]
fn two_writers_extend_one_schema_at_once_s3() {
    concurrent_extension(&s3_lake_url("schema-race"));
}

/// Two independent lakes (as two processes would) add different fields to one type at the
/// same moment, many times; every field of both ends up in the newest schema.
fn concurrent_extension(url: &str) {
    let rt = runtime();
    let writers: Vec<Arc<Lake>> =
        (0..2).map(|_| Arc::new(Lake::open(url, WriteOptions::default()).expect("open"))).collect();
    let rounds = 8;
    let barrier = Arc::new(std::sync::Barrier::new(2));
    std::thread::scope(|s| {
        for (w, lake) in writers.iter().enumerate() {
            let lake = lake.clone();
            let barrier = barrier.clone();
            let handle = rt.handle().clone();
            s.spawn(move || {
                for r in 0..rounds {
                    barrier.wait();
                    let line = event(&format!("w{w}r{r}"), "race", T0, json!({ format!("f_{w}_{r}"): r }));
                    handle.block_on(lake.write_events(&key("race", T0), [line.as_slice()])).expect("write");
                }
            });
        }
    });
    let schema = rt.block_on(writers[0].registry.load("race")).expect("schema");
    for w in 0..2 {
        for r in 0..rounds {
            assert!(
                schema.column(Section::Attributes, &format!("f_{w}_{r}")).is_some(),
                "field f_{w}_{r} lost; schema has {:?}",
                schema.columns.iter().map(|c| &c.name).collect::<Vec<_>>()
            );
        }
    }
    assert!(schema.version >= (rounds * 2) as u64 / 2);
    // Every event still reads back whole.
    let back = rt.block_on(read_all(&writers[1], "race"));
    assert_eq!(back.len(), rounds * 2);
    for e in back {
        let attrs = e["data"]["attributes"].as_object().expect("attributes");
        assert_eq!(attrs.len(), 1, "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_dedupes_and_survives_an_interrupted_run() {
    let (_dir, lake) = local_lake();
    let k = key("c", T0);
    // Six small files; ids repeat across files; the schema evolves between files.
    let mut all_ids = std::collections::BTreeSet::new();
    for f in 0..6 {
        let lines: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                let n = f * 40 + i; // overlaps with the next file
                all_ids.insert(format!("e{n}"));
                let mut attrs = json!({"n": n, "o": {"a": n}});
                if f >= 3 {
                    attrs["later"] = json!("x");
                    attrs["o"]["b"] = json!(true);
                }
                event(&format!("e{n}"), "c", T0 + (n as i64 * 7919) % 3_600_000, attrs)
            })
            .collect();
        lake.write_events(&k, lines.iter().map(Vec::as_slice)).await.expect("write");
    }
    let before = read_all(&lake, "c").await;
    assert_eq!(before.len(), 300);
    let now = T0 + 3 * 3_600_000;

    // A run that "crashes" after writing its output, before committing it: the output is an
    // orphan that no reader sees (the table still has its six files and 300 rows).
    let crash = CompactOptions { crash_before_commit: true, ..CompactOptions::default() };
    let r = lake.compact(&crash, now).await.expect("compact");
    assert!(r.interrupted);
    assert_eq!(lake.list_data_files(Some("c")).await.expect("list").len(), 6);
    assert_eq!(read_all(&lake, "c").await.len(), 300);

    // The re-run finishes the job: one file, every id once, every event intact.
    let r = lake.compact(&CompactOptions::default(), now).await.expect("compact again");
    assert_eq!(r.files_out, 1);
    let files = lake.list_data_files(Some("c")).await.expect("list");
    assert_eq!(files.len(), 1);
    let after = read_all(&lake, "c").await;
    let ids: std::collections::BTreeSet<String> =
        after.iter().map(|e| e["data"]["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids, all_ids);
    assert_eq!(after.len(), all_ids.len(), "no repeated id after compaction");
    let times: Vec<i64> = after.iter().map(|e| e["meta"]["created_at"].as_i64().expect("ms")).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "sorted by created_at");
    // Events from before the schema change read back without the later fields.
    for e in &after {
        let n = e["data"]["attributes"]["n"].as_i64().expect("n");
        let first = before.iter().find(|b| b["data"]["id"] == e["data"]["id"]).expect("same event before");
        assert_eq!(first, e, "event {n} changed by compaction");
    }

    // Open partitions are left alone; running again changes nothing.
    let r = lake.compact(&CompactOptions::default(), now).await.expect("idempotent");
    assert_eq!(r.files_out, 0);
    let open = lake.compact(&CompactOptions::default(), T0 + 30 * 60_000).await.expect("open partition");
    assert_eq!(open.partitions_seen, 0);
}

/// Two compactions of the same partitions at once (a CronJob and a hand-run `eventctl
/// compact`, or scheduled compaction in two lake writer replicas): every row stays once.
/// delta-rs accepts two commits removing the same files when both say `dataChange: false`;
/// the table's compaction generation refuses the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_compactions_at_once_keep_every_row_once() {
    let (_dir, lake) = local_lake();
    let mut ids = std::collections::BTreeSet::new();
    for hour in 0..6i64 {
        let k = key("d", T0 + hour * 3_600_000);
        for f in 0..4 {
            let lines: Vec<Vec<u8>> = (0..30)
                .map(|i| {
                    let id = format!("d{hour}-{f}-{i}");
                    ids.insert(id.clone());
                    event(&id, "d", T0 + hour * 3_600_000 + i * 1000, json!({"n": i}))
                })
                .collect();
            lake.write_events(&k, lines.iter().map(Vec::as_slice)).await.expect("write");
        }
    }
    let now = T0 + 10 * 3_600_000;
    let opts = CompactOptions::default();
    let (a, b) = tokio::join!(lake.compact(&opts, now), lake.compact(&opts, now));
    let (a, b) = (a.expect("a"), b.expect("b"));
    let after = read_all(&lake, "d").await;
    assert_eq!(after.len(), ids.len(), "every row once after two compactions at once: {a:?} {b:?}");
    // What one of them skipped, the next run does.
    lake.compact(&CompactOptions::default(), now).await.expect("again");
    assert_eq!(lake.list_data_files(Some("d")).await.expect("list").len(), 6, "one file per partition");
    assert_eq!(read_all(&lake, "d").await.len(), ids.len());
}

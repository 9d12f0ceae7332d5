//! The lake as Delta tables: writers on one table from several processes lose no commit (local
//! folder and S3 stand-in), committed files carry partition values and statistics, readers
//! see only committed files, and compaction swaps files in one commit while a reader holds
//! the older snapshot.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use event_lake::compact::CompactOptions;
use event_lake::reader::DataFile;
use event_lake::{Lake, PartitionKey, WriteOptions};
use object_store::ObjectStoreExt;
use serde_json::{Value, json};

const T0: i64 = 1_700_000_000_000;

fn key(t: &str, ms: i64) -> PartitionKey {
    PartitionKey::of(Arc::from(t), ms)
}

async fn ids_of(lake: &Lake, files: &[DataFile]) -> Vec<String> {
    let mut ids = Vec::new();
    for f in files {
        for e in lake.read_events(f).await.expect("read") {
            ids.push(e["data"]["id"].as_str().expect("id").to_owned());
        }
    }
    ids
}

/// The commits of a table's log, parsed (one `Vec` of actions per version).
async fn log_commits(lake: &Lake, t: &str) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for v in 0.. {
        let path = object_store::path::Path::from(format!("events/type={t}/_delta_log/{v:020}.json"));
        let Ok(got) = lake.store().get(&path).await else { break };
        let text = got.bytes().await.expect("bytes");
        out.push(
            text.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).expect("action")).collect(),
        );
    }
    out
}

/// Several independent writers (as separate processes would be) append to one table at
/// once; every file they wrote is in the final snapshot, and every commit is in the log.
fn concurrent_writers(url: &str, writers: usize, files_each: usize) {
    let rt = runtime();
    let lakes: Vec<Arc<Lake>> = (0..writers).map(|_| Arc::new(Lake::open(url, WriteOptions::default()).expect("open"))).collect();
    let barrier = Arc::new(std::sync::Barrier::new(writers));
    let written: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = lakes
            .iter()
            .enumerate()
            .map(|(w, lake)| {
                let lake = lake.clone();
                let barrier = barrier.clone();
                let handle = rt.handle().clone();
                s.spawn(move || {
                    let mut paths = Vec::new();
                    barrier.wait();
                    for f in 0..files_each {
                        // Two partitions, and a new field now and then (schema commits race too).
                        let ms = T0 + ((f % 2) as i64) * 3_600_000;
                        let lines: Vec<Vec<u8>> = (0..20)
                            .map(|i| event(&format!("w{w}f{f}i{i}"), "busy", ms + i, json!({ "n": i, format!("f{w}_{}", f % 3): true })))
                            .collect();
                        let file = handle
                            .block_on(lake.write_events(&key("busy", ms), lines.iter().map(Vec::as_slice)))
                            .expect("write and commit")
                            .expect("a file");
                        paths.push(file.path.to_string());
                    }
                    paths
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
    });
    let reader = Lake::open(url, WriteOptions::default()).expect("open");
    let files = rt.block_on(reader.list_data_files(Some("busy"))).expect("files");
    let in_snapshot: BTreeSet<String> = files.iter().map(|f| f.meta.location.to_string()).collect();
    let wanted: BTreeSet<String> = written.into_iter().flatten().collect();
    assert_eq!(wanted.len(), writers * files_each);
    assert_eq!(in_snapshot, wanted, "every committed file is in the snapshot");
    let ids = rt.block_on(ids_of(&reader, &files));
    assert_eq!(ids.len(), writers * files_each * 20);
    // One append commit per file, plus the create and the schema commits.
    let commits = rt.block_on(log_commits(&reader, "busy"));
    let appends = commits.iter().filter(|c| c.iter().any(|a| a.get("add").is_some())).count();
    assert_eq!(appends, writers * files_each);
    // Every field any writer added is in the table's schema.
    let schema = rt.block_on(reader.registry.load("busy")).expect("schema");
    for w in 0..writers {
        for k in 0..3.min(files_each) {
            assert!(schema.column(event_lake::schema::Section::Attributes, &format!("f{w}_{k}")).is_some(), "f{w}_{k} lost");
        }
    }
}

#[test]
fn concurrent_writers_on_one_table_lose_no_commit_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    concurrent_writers(dir.path().to_str().expect("utf8"), 4, 8);
}

#[test]
fn concurrent_writers_on_one_table_lose_no_commit_s3() {
    concurrent_writers(&s3_lake_url("delta-writers"), 3, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_carry_partition_values_and_statistics() {
    let (_dir, lake) = local_lake();
    let k = key("stats", T0);
    let lines: Vec<Vec<u8>> = [("b", 5), ("a", 9), ("c", 1)].iter().map(|(id, dt)| event(id, "stats", T0 + dt, json!({"x": 1}))).collect();
    let file = lake.write_events(&k, lines.iter().map(Vec::as_slice)).await.expect("write").expect("file");
    let commits = log_commits(&lake, "stats").await;
    // Version 0 creates the table: protocol, and metadata partitioned by date and hour.
    let meta = commits[0].iter().find_map(|a| a.get("metaData")).expect("metaData");
    assert_eq!(meta["partitionColumns"], json!(["date", "hour"]));
    let schema: Value = serde_json::from_str(meta["schemaString"].as_str().expect("schemaString")).expect("schema json");
    let names: Vec<&str> = schema["fields"].as_array().expect("fields").iter().map(|f| f["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["id", "created_at", "x", "_leftovers", "date", "hour"]);
    let add = commits.iter().flatten().find_map(|a| a.get("add")).expect("add");
    assert_eq!(add["path"], json!(file.path.as_ref().strip_prefix("events/type=stats/").expect("under the table")));
    assert!(add["path"].as_str().expect("path").starts_with("date=2023-11-14/hour=22/"), "Hive path kept: {add}");
    assert_eq!(add["partitionValues"], json!({"date": "2023-11-14", "hour": "22"}));
    assert_eq!(add["size"], json!(file.bytes));
    let stats: Value = serde_json::from_str(add["stats"].as_str().expect("stats")).expect("stats json");
    assert_eq!(stats["numRecords"], 3);
    assert_eq!(stats["minValues"]["id"], "a");
    assert_eq!(stats["maxValues"]["id"], "c");
    assert_eq!(stats["minValues"]["created_at"], "2023-11-14T22:13:20.001Z");
    assert_eq!(stats["maxValues"]["created_at"], "2023-11-14T22:13:20.009Z");
    assert_eq!(stats["nullCount"], json!({"id": 0, "created_at": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommitted_files_are_invisible_to_readers() {
    let (_dir, lake) = local_lake();
    let k = key("orphan", T0);
    let a = event("a", "orphan", T0, json!({}));
    lake.write_events(&k, [a.as_slice()]).await.expect("write");
    // A writer that "crashes" between writing its file and committing it.
    let b = event("b", "orphan", T0 + 1, json!({}));
    let orphan = lake.write_events_file(&k, [b.as_slice()]).await.expect("write").expect("file");
    assert!(lake.store().head(&orphan.path).await.is_ok(), "the orphan is on storage");
    let files = lake.list_data_files(Some("orphan")).await.expect("files");
    assert_eq!(files.len(), 1);
    assert_eq!(ids_of(&lake, &files).await, vec!["a".to_owned()]);
    // Committing it later (a retried commit) makes it visible, once.
    lake.commit_appends("orphan", std::slice::from_ref(&orphan), Some(("app", 1))).await.expect("commit");
    let again = lake.commit_appends("orphan", std::slice::from_ref(&orphan), Some(("app", 1))).await.expect("commit");
    assert_eq!(again, event_lake::table::CommitOutcome::AlreadyCommitted, "a transaction commits once");
    let files = lake.list_data_files(Some("orphan")).await.expect("files");
    let mut ids = ids_of(&lake, &files).await;
    ids.sort();
    assert_eq!(ids, vec!["a".to_owned(), "b".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_is_one_commit_and_an_older_snapshot_stays_readable() {
    let (_dir, lake) = local_lake();
    let k = key("comp", T0);
    for f in 0..4 {
        // ids repeat across files (f0 and f1 share e10..e19).
        let lines: Vec<Vec<u8>> = (0..20).map(|i| f * 10 + i).map(|n| event(&format!("e{n}"), "comp", T0 + n, json!({"n": n}))).collect();
        lake.write_events(&k, lines.iter().map(Vec::as_slice)).await.expect("write");
    }
    // A reader holds the snapshot before compaction.
    let old = lake.root.open_table("comp").await.expect("open").expect("table");
    let old_version = old.version();
    let old_files: Vec<DataFile> =
        old.files(None).expect("files").into_iter().map(|f| DataFile { partition: f.partition, meta: f.meta }).collect();
    assert_eq!(old_files.len(), 4);

    let report = lake.compact(&CompactOptions::default(), T0 + 3 * 3_600_000).await.expect("compact");
    assert_eq!((report.files_in, report.files_out), (4, 1));

    // One commit: the removes of the inputs and the add of the output together.
    let commits = log_commits(&lake, "comp").await;
    assert_eq!(commits.len() as i64, old_version + 2);
    let last = commits.last().expect("a commit");
    assert_eq!(last.iter().filter(|a| a.get("remove").is_some()).count(), 4);
    assert_eq!(last.iter().filter(|a| a.get("add").is_some()).count(), 1);
    assert!(last.iter().filter_map(|a| a.get("remove").or_else(|| a.get("add"))).all(|a| a["dataChange"] == false));

    // The older snapshot still reads: its files were not deleted.
    let old_ids = ids_of(&lake, &old_files).await;
    assert_eq!(old_ids.len(), 80);
    // The new snapshot: one file, each id once, the same set.
    let new_files = lake.list_data_files(Some("comp")).await.expect("files");
    assert_eq!(new_files.len(), 1);
    let new_ids = ids_of(&lake, &new_files).await;
    let unique: BTreeSet<&String> = old_ids.iter().collect();
    assert_eq!(new_ids.len(), unique.len());
    assert_eq!(new_ids.iter().collect::<BTreeSet<_>>(), unique);
    // Reopening the old version gives back the old files exactly.
    let reopened = lake.root.open_table_at("comp", Some(old_version)).await.expect("open").expect("table");
    assert_eq!(reopened.files(None).expect("files").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vacuum_deletes_orphans_and_removed_files_past_the_retention_only() {
    let (_dir, lake) = local_lake();
    let k = key("vac", T0);
    for f in 0..3 {
        let line = event(&format!("v{f}"), "vac", T0 + f, json!({"f": f}));
        lake.write_events(&k, [line.as_slice()]).await.expect("write");
    }
    // A writer that crashed between its upload and its commit.
    let stray = event("stray", "vac", T0 + 9, json!({}));
    let orphan = lake.write_events_file(&k, [stray.as_slice()]).await.expect("write").expect("file");
    lake.compact(&CompactOptions::default(), T0 + 3 * 3_600_000).await.expect("compact");
    let live = lake.list_data_files(Some("vac")).await.expect("files");
    assert_eq!(live.len(), 1);

    // Within the retention (7 days) nothing goes: older snapshots still read.
    let r = lake.vacuum(Some("vac"), chrono::Duration::days(7), false).await.expect("vacuum");
    assert_eq!(r.files_deleted, 0, "{r:?}");
    assert!(lake.store().head(&orphan.path).await.is_ok());

    // Past it: the three compacted inputs and the orphan go; the live file stays.
    let dry = lake.vacuum(Some("vac"), chrono::Duration::zero(), true).await.expect("dry run");
    assert_eq!(dry.files_deleted, 4, "{dry:?}");
    assert!(lake.store().head(&orphan.path).await.is_ok(), "a dry run deletes nothing");
    let r = lake.vacuum(Some("vac"), chrono::Duration::zero(), false).await.expect("vacuum");
    assert_eq!(r.files_deleted, 4, "{r:?}");
    assert!(lake.store().head(&orphan.path).await.is_err(), "the orphan is gone");
    assert!(lake.store().head(&live[0].meta.location).await.is_ok(), "the live file stays");
    let mut ids = ids_of(&lake, &lake.list_data_files(Some("vac")).await.expect("files")).await;
    ids.sort();
    assert_eq!(ids, vec!["v0", "v1", "v2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_is_one_delta_table_by_arrival_hour() {
    let (_dir, lake) = local_lake();
    let rec = |line: u64, at: i64| event_lake::QuarantineRecord {
        raw: b"{not json".to_vec(),
        raw_len: 9,
        rejection: event_contract::Rejection::new(event_contract::Reason::InvalidJson, "x"),
        source: "test".into(),
        line,
        arrived_at: at,
    };
    lake.write_quarantine(&[rec(1, T0), rec(2, T0 + 3_600_000)]).await.expect("write");
    lake.write_quarantine(&[rec(3, T0)]).await.expect("write again");
    let mut adds = Vec::new();
    for v in 0.. {
        let path = object_store::path::Path::from(format!("quarantine/_delta_log/{v:020}.json"));
        let Ok(got) = lake.store().get(&path).await else { break };
        let text = got.bytes().await.expect("bytes");
        for l in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let a: Value = serde_json::from_slice(l).expect("action");
            if let Some(add) = a.get("add") {
                adds.push(add.clone());
            }
        }
    }
    assert_eq!(adds.len(), 3, "{adds:?}");
    let hours: BTreeSet<String> = adds.iter().map(|a| a["partitionValues"]["hour"].as_str().expect("hour").to_owned()).collect();
    assert_eq!(hours, BTreeSet::from(["22".to_owned(), "23".to_owned()]));
}

/// Every event of a type's snapshot, by id.
async fn events_by_id(lake: &Lake, t: &str) -> std::collections::BTreeMap<String, Value> {
    let files = lake.list_data_files(Some(t)).await.expect("files");
    let mut out = std::collections::BTreeMap::new();
    for f in &files {
        for e in lake.read_events(f).await.expect("read") {
            out.insert(e["data"]["id"].as_str().expect("id").to_owned(), e);
        }
    }
    out
}

/// A writer that stages its schemas (`eventctl ingest`) commits nothing before its one commit
/// per table: that commit creates the table with the schema its files need; later, it merges
/// what another writer added meanwhile; a field another writer committed with another type
/// fails the commit with a clear error instead of committing files the table cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staged_schemas_are_committed_with_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().to_str().expect("utf8 path");
    let staged = Lake::open(url, WriteOptions { stage_schemas: true, ..Default::default() }).expect("open");
    let other = Lake::open(url, WriteOptions::default()).expect("open");
    let t = "staged";

    // A new type, two partitions with different fields: no table until the commit.
    let a = event("a", t, T0, json!({"x": 1}));
    let b = event("b", t, T0 + 3_600_000, json!({"y": "two"}));
    let fa = staged.write_events_file(&key(t, T0), [a.as_slice()]).await.expect("write").expect("file");
    let fb = staged.write_events_file(&key(t, T0 + 3_600_000), [b.as_slice()]).await.expect("write").expect("file");
    assert!(staged.root.open_table(t).await.expect("open").is_none(), "nothing is committed before the load's commit");
    staged.commit_appends(t, &[fa, fb], Some(("load", 1))).await.expect("commit");
    let commits = log_commits(&staged, t).await;
    assert_eq!(commits.len(), 1, "one commit creates the table and adds its files: {commits:?}");
    let meta = commits[0].iter().find_map(|a| a.get("metaData")).expect("metaData");
    let schema: Value = serde_json::from_str(meta["schemaString"].as_str().expect("schemaString")).expect("schema json");
    let names: Vec<&str> = schema["fields"].as_array().expect("fields").iter().map(|f| f["name"].as_str().expect("name")).collect();
    assert_eq!(names, ["id", "created_at", "x", "y", "_leftovers", "date", "hour"]);
    assert_eq!(commits[0].iter().filter(|a| a.get("add").is_some()).count(), 2);
    assert!(commits[0].iter().any(|a| a.get("txn").is_some()), "the load's transaction is in the same commit");

    // A type whose events have no field at all gets its table too.
    let bare = event("n", "bare", T0, json!({}));
    let fbare = staged.write_events_file(&key("bare", T0), [bare.as_slice()]).await.expect("write").expect("file");
    staged.commit_appends("bare", &[fbare], None).await.expect("commit creates the table");
    assert_eq!(events_by_id(&staged, "bare").await.len(), 1);

    // Another writer extends the table meanwhile (its own metadata commit): both fields kept.
    let c = event("c", t, T0 + 1, json!({"z": 3}));
    let fc = staged.write_events_file(&key(t, T0), [c.as_slice()]).await.expect("write").expect("file");
    let d = event("d", t, T0 + 2, json!({"w": true}));
    other.write_events(&key(t, T0), [d.as_slice()]).await.expect("other writer");
    staged.commit_appends(t, &[fc], None).await.expect("commit merges the other writer's field");
    let table = staged.root.open_table(t).await.expect("open").expect("table");
    let columns: Vec<String> = table.type_schema().expect("schema").columns.iter().map(|c| c.name.clone()).collect();
    assert_eq!(columns, ["x", "y", "w", "z"]);
    let events = events_by_id(&staged, t).await;
    assert_eq!(events.len(), 4);
    assert_eq!(events["a"]["data"]["attributes"]["x"], json!(1));
    assert_eq!(events["b"]["data"]["attributes"]["y"], json!("two"));
    assert_eq!(events["c"]["data"]["attributes"]["z"], json!(3));
    assert_eq!(events["d"]["data"]["attributes"]["w"], json!(true));

    // The same new field committed by another writer with another type: refused, clearly.
    let e = event("e", t, T0 + 3, json!({"q": 1}));
    let fe = staged.write_events_file(&key(t, T0), [e.as_slice()]).await.expect("write").expect("file");
    let f = event("f", t, T0 + 4, json!({"q": "text"}));
    other.write_events(&key(t, T0), [f.as_slice()]).await.expect("other writer");
    match staged.commit_appends(t, &[fe], None).await {
        Err(event_lake::LakeError::SchemaConflict { event_type, detail }) => {
            assert_eq!(event_type, t);
            assert!(detail.contains("\"q\""), "{detail}");
        }
        other => panic!("expected a schema conflict, got {other:?}"),
    }
    let events = events_by_id(&staged, t).await;
    assert!(!events.contains_key("e"), "the refused file is not visible");
    assert_eq!(events["f"]["data"]["attributes"]["q"], json!("text"));
}

/// Tables are checkpointed every `CHECKPOINT_INTERVAL` (20) commits, not Delta's default 100,
/// so a reader replays at most 19 commits past the newest checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_checkpointed_every_twenty_commits() {
    let (dir, lake) = local_lake();
    let t = "ckpt";
    // Version 0 creates the table, then one append per write: versions 1..=20.
    for i in 0..20 {
        let line = event(&format!("e{i}"), t, T0 + i, json!({"n": i}));
        lake.write_events(&key(t, T0), [line.as_slice()]).await.expect("write");
    }
    let log = dir.path().join(format!("events/type={t}/_delta_log"));
    let checkpoint = format!("{:020}.checkpoint.parquet", event_lake::table::CHECKPOINT_INTERVAL - 1);
    assert!(log.join(&checkpoint).exists(), "no {checkpoint} in {}", log.display());
    assert!(log.join("_last_checkpoint").exists());
    let meta = log_commits(&lake, t).await[0].iter().find_map(|a| a.get("metaData").cloned()).expect("metaData");
    assert_eq!(meta["configuration"]["delta.checkpointInterval"], json!("20"));
    // Readers see every event through the checkpoint.
    assert_eq!(events_by_id(&lake, t).await.len(), 20);
}

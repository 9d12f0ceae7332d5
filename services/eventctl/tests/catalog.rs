//! `eventctl catalog sync` against moto (S3 for the lake, Glue for the catalog): one Glue table
//! per type plus the quarantine, as Athena needs them (DELTA, location, date/hour partition
//! keys, columns); a second run changes nothing; a grown schema updates its table only;
//! a type whose table left the lake is reported stale, and deleted only with `--prune`;
//! colliding names, a reserved name and a table someone else made are refused per table while
//! the others sync; a local lake is refused.

#![cfg(feature = "aws")]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use aws_sdk_glue::Client;
use aws_sdk_glue::types::{Table, TableInput};
use serde_json::Value;

mod common;

use common::{eventctl, ok};

fn ingest(lake: &str, input: &Path) -> Value {
    let out = ok(eventctl().args(["ingest", "--json", "--no-progress", "--lake", lake]).arg(input).output().expect("run ingest"));
    serde_json::from_slice(&out.stdout).expect("ingest summary")
}

/// `catalog sync --json` (plus `extra`): the report and the exit code.
fn sync(lake: &str, database: &str, extra: &[&str]) -> (Value, i32, String) {
    let out = eventctl()
        .args(["catalog", "sync", "--json", "--glue-database", database, "--lake", lake])
        .args(extra)
        .output()
        .expect("run catalog sync");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("catalog sync printed no JSON ({e}):\n{}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (report, out.status.code().unwrap_or(-1), stderr)
}

/// Glue table name -> action of a report.
fn actions(report: &Value) -> BTreeMap<String, String> {
    report["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .map(|t| (format!("{}|{}", t["table"].as_str().expect("table"), t["lake_table"].as_str().expect("lake_table")), t["action"].as_str().expect("action").to_owned()))
        .collect()
}

fn glue_client(rt: &tokio::runtime::Runtime, endpoint: &str) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let sdk = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .endpoint_url(endpoint)
            .region(aws_sdk_glue::config::Region::new("us-east-1"))
            .load(),
    );
    Client::new(&sdk)
}

fn glue_tables(rt: &tokio::runtime::Runtime, glue: &Client, database: &str) -> BTreeMap<String, Table> {
    let out = rt.block_on(glue.get_tables().database_name(database).send()).expect("GetTables");
    out.table_list().iter().map(|t| (t.name().to_owned(), t.clone())).collect()
}

fn column_names(t: &Table) -> Vec<String> {
    t.storage_descriptor().expect("storage descriptor").columns().iter().map(|c| c.name().to_owned()).collect()
}

fn event_line(id: &str, event_type: &str, created_at: i64, attributes: &str) -> String {
    format!(r#"{{"data":{{"id":"{id}","type":"{event_type}","attributes":{attributes}}},"meta":{{"created_at":{created_at},"source":"catalog-test"}}}}"#)
}

#[test]
fn catalog_sync_registers_the_delta_tables_in_glue() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| panic!("AWS_ENDPOINT_URL is not set: run the tests with scripts/test.sh"));
    let stamp = format!("{}-{}", std::process::id(), chrono::Utc::now().timestamp_micros());
    let bucket = format!("catalog-{stamp}");
    assert!(Command::new("curl").args(["-sf", "-X", "PUT", &format!("{endpoint}/{bucket}")]).status().expect("curl").success());
    let lake = format!("s3://{bucket}/lake");
    let database = format!("catalog_test_{}", stamp.replace('-', "_"));
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("e.ndjson");
    ok(eventctl()
        .args(["gen", "--out", input.to_str().expect("utf8"), "--events", "3000", "--types", "6", "--hours", "2", "--bad-ratio", "0.02"])
        .args(["--start", "2025-01-01T00:00:00Z", "--seed", "7"])
        .output()
        .expect("run gen"));
    let summary = ingest(&lake, &input);
    let types: Vec<String> = summary["rows_by_type_hour"].as_object().expect("rows_by_type_hour").keys().cloned().collect();
    assert!(types.len() >= 6, "{summary}");
    assert!(summary["quarantined"].as_u64() > Some(0), "the quarantine has lines: {summary}");

    // First sync: the database, one table per type and the quarantine.
    let (first, code, stderr) = sync(&lake, &database, &[]);
    assert_eq!(code, 0, "{first}\n{stderr}");
    assert_eq!(first["database_action"], "created");
    assert_eq!(first["created"].as_u64(), Some(types.len() as u64 + 1), "{first}");
    assert_eq!(first["failed"], 0);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let glue = glue_client(&rt, &endpoint);
    let tables = glue_tables(&rt, &glue, &database);
    assert_eq!(tables.len(), types.len() + 1, "{:?}", tables.keys());
    for t in &types {
        let name: String = t.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
        let table = tables.get(&name).unwrap_or_else(|| panic!("no Glue table {name} for type {t}"));
        let params = table.parameters().expect("parameters");
        assert_eq!(params.get("table_type").map(String::as_str), Some("DELTA"), "{name}");
        assert_eq!(params.get("spark.sql.sources.provider").map(String::as_str), Some("delta"));
        assert_eq!(params.get("eventplat.lake_table"), Some(&format!("events/type={t}")));
        assert_eq!(table.table_type(), Some("EXTERNAL_TABLE"));
        let sd = table.storage_descriptor().expect("storage descriptor");
        assert_eq!(sd.location(), Some(format!("s3://{bucket}/lake/events/type={t}/").as_str()));
        assert_eq!(sd.serde_info().and_then(|s| s.serialization_library()), Some("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"));
        let keys: Vec<(&str, Option<&str>)> = table.partition_keys().iter().map(|c| (c.name(), c.r#type())).collect();
        assert_eq!(keys, vec![("date", Some("date")), ("hour", Some("int"))]);
        let columns = column_names(table);
        assert_eq!(&columns[..2], ["id", "created_at"], "{name}: {columns:?}");
        assert_eq!(sd.columns()[1].r#type(), Some("timestamp"));
        assert!(columns.contains(&"_leftovers".to_owned()));
    }
    let quarantine = tables.get("quarantine").expect("quarantine table");
    let sd = quarantine.storage_descriptor().expect("storage descriptor");
    assert_eq!(sd.location(), Some(format!("s3://{bucket}/lake/quarantine/").as_str()));
    let q: BTreeMap<&str, &str> = sd.columns().iter().map(|c| (c.name(), c.r#type().unwrap_or_default())).collect();
    assert_eq!((q.get("raw"), q.get("line"), q.get("arrived_at")), (Some(&"binary"), Some(&"bigint"), Some(&"timestamp")));

    // Nothing changed: every table unchanged, in a dry run too.
    for extra in [&[][..], &["--dry-run"][..]] {
        let (again, code, stderr) = sync(&lake, &database, extra);
        assert_eq!(code, 0, "{again}\n{stderr}");
        assert_eq!(again["unchanged"].as_u64(), Some(types.len() as u64 + 1), "{again}");
        assert_eq!((again["created"].as_u64(), again["updated"].as_u64()), (Some(0), Some(0)), "{again}");
    }

    // A new attribute field grows one type's schema: that table only is updated.
    let grown = &types[0];
    let grown_table: String = grown.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let start = 1_735_689_600_000_i64;
    let lines: Vec<String> = (0..3).map(|i| event_line(&format!("grow-{i}"), grown, start + i, r#"{"glue_new_field":"x","user_id":"u1"}"#)).collect();
    let more = dir.path().join("grow.ndjson");
    std::fs::write(&more, lines.join("\n") + "\n").expect("write");
    ingest(&lake, &more);
    let (dry, code, _) = sync(&lake, &database, &["--dry-run"]);
    assert_eq!((code, dry["updated"].as_u64(), dry["dry_run"].as_bool()), (0, Some(1), Some(true)), "{dry}");
    assert!(!column_names(&glue_tables(&rt, &glue, &database)[&grown_table]).contains(&"glue_new_field".to_owned()), "a dry run writes nothing");
    let (third, code, stderr) = sync(&lake, &database, &[]);
    assert_eq!(code, 0, "{third}\n{stderr}");
    let acts = actions(&third);
    assert_eq!(acts[&format!("{grown_table}|events/type={grown}")], "updated", "{third}");
    assert_eq!(third["unchanged"].as_u64(), Some(types.len() as u64), "{third}");
    let entry = third["tables"].as_array().expect("tables").iter().find(|t| t["event_type"] == grown.as_str()).expect("grown table");
    assert!(entry["changes"].to_string().contains("columns added: glue_new_field"), "{entry}");
    assert!(column_names(&glue_tables(&rt, &glue, &database)[&grown_table]).contains(&"glue_new_field".to_owned()));
    assert_eq!(sync(&lake, &database, &[]).0["unchanged"].as_u64(), Some(types.len() as u64 + 1));

    // A type's table deleted from the lake: its Glue table is reported stale and kept, until
    // --prune deletes it (a dry run only says so).
    let gone = &types[1];
    let gone_table: String = gone.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let store = event_lake::LakeStore::open(&lake).expect("open the lake");
    rt.block_on(async {
        use futures::TryStreamExt;
        use object_store::ObjectStoreExt;
        let prefix = object_store::path::Path::from(format!("events/type={gone}"));
        let objects: Vec<_> = store.store.list(Some(&prefix)).try_collect().await.expect("list the table");
        assert!(!objects.is_empty());
        for o in objects {
            store.store.delete(&o.location).await.expect("delete");
        }
    });
    let gone_key = format!("{gone_table}|events/type={gone}");
    let (stale, code, stderr) = sync(&lake, &database, &[]);
    assert_eq!(code, 0, "{stale}\n{stderr}");
    assert_eq!((stale["stale"].as_u64(), stale["deleted"].as_u64()), (Some(1), Some(0)), "{stale}");
    assert_eq!(actions(&stale)[&gone_key], "stale", "{stale}");
    assert!(glue_tables(&rt, &glue, &database).contains_key(&gone_table), "kept without --prune");
    let (dry, code, _) = sync(&lake, &database, &["--prune", "--dry-run"]);
    assert_eq!((code, dry["deleted"].as_u64()), (0, Some(1)), "{dry}");
    assert!(glue_tables(&rt, &glue, &database).contains_key(&gone_table), "a dry run deletes nothing");
    let (pruned, code, stderr) = sync(&lake, &database, &["--prune"]);
    assert_eq!(code, 0, "{pruned}\n{stderr}");
    assert_eq!(actions(&pruned)[&gone_key], "deleted", "{pruned}");
    assert_eq!(pruned["unchanged"].as_u64(), Some(types.len() as u64), "{pruned}");
    let now = glue_tables(&rt, &glue, &database);
    assert!(!now.contains_key(&gone_table), "pruned");
    assert_eq!(now.len(), types.len(), "the other tables stay");
    let (after_prune, _, _) = sync(&lake, &database, &["--prune"]);
    assert_eq!((after_prune["stale"].as_u64(), after_prune["deleted"].as_u64()), (Some(0), Some(0)), "{after_prune}");

    // Refused per table while the others sync: two types with one name, a type taking the
    // quarantine's name, a Glue table made by someone else.
    let foreign = TableInput::builder().name("foreign_made").table_type("EXTERNAL_TABLE").build().expect("input");
    rt.block_on(glue.create_table().database_name(&database).table_input(foreign).send()).expect("CreateTable");
    let clash = ["Clash.Me", "clash-me", "Quarantine", "foreign.made"];
    let lines: Vec<String> = clash.iter().enumerate().map(|(i, t)| event_line(&format!("clash-{i}"), t, start, r#"{"n":1}"#)).collect();
    let clashing = dir.path().join("clash.ndjson");
    std::fs::write(&clashing, lines.join("\n") + "\n").expect("write");
    ingest(&lake, &clashing);
    let (fourth, code, stderr) = sync(&lake, &database, &[]);
    assert_eq!(code, 1, "{fourth}\n{stderr}");
    assert_eq!((fourth["failed"].as_u64(), fourth["unchanged"].as_u64()), (Some(4), Some(types.len() as u64)), "{fourth}");
    let errors: BTreeMap<String, String> = fourth["tables"]
        .as_array()
        .expect("tables")
        .iter()
        .filter(|t| t["action"] == "failed")
        .map(|t| (t["event_type"].as_str().expect("type").to_owned(), t["error"].as_str().expect("error").to_owned()))
        .collect();
    assert!(errors["Clash.Me"].contains("\"clash_me\"") && errors["clash-me"].contains("\"Clash.Me\""), "{errors:?}");
    assert!(errors["Quarantine"].contains("kept for the quarantine table"), "{errors:?}");
    assert!(errors["foreign.made"].contains("not created by `eventctl catalog sync`"), "{errors:?}");
    assert!(stderr.contains("eventctl: error: Glue table foreign_made"), "{stderr}");
    let after = glue_tables(&rt, &glue, &database);
    assert!(after["foreign_made"].parameters().is_none_or(|p| p.is_empty()), "someone else's table is left alone");
    assert!(!after.contains_key("clash_me"));

    // A local lake is refused: Athena cannot read it.
    let local = dir.path().join("local-lake");
    let out = eventctl()
        .args(["catalog", "sync", "--glue-database", &database, "--lake", local.to_str().expect("utf8")])
        .output()
        .expect("run catalog sync");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only an s3:// lake can be registered in Glue"), "{stderr}");

    rt.block_on(glue.delete_database().name(&database).send()).expect("DeleteDatabase");
}

//! Daily KPIs: SQL files in `libs/lake-query/kpis/` (compiled into the binary), run over one day of
//! the lake, whole or as one shard of several, and merged.
//!
//! Each file starts with a header of `-- key: value` lines:
//! - `kpi`: the name; `title`: a human label; `tables`: the tables it reads (a KPI whose type
//!   the lake never held is 0 rather than an error);
//! - `merge: sum`: the query returns the `keys` columns (optional) and integer measures;
//!   partial results add up per key;
//! - `merge: distinct`: the query returns one column `value` of distinct values; partial
//!   results are the sets of values themselves, merged by union, so a merged distinct count is
//!   exactly the single-run count (at the price of partial files that grow with the number of
//!   distinct values: ~10 bytes a user id; see the README for the sketch alternative).
//!
//! `{date}` in the SQL is replaced by the day (validated `YYYY-MM-DD`).
//!
//! The built-in files are the defaults; `eventctl kpi --kpis DIR` runs the `*.sql` files of a
//! folder instead ([`definitions_in`]), since every business names its columns differently.
//!
//! One KPI that fails (a column the lake does not have, a type error) does not sink the
//! others: the run records it with its reason ([`Partial::failed`], [`Report::failed`]),
//! computes and writes the rest, and the CLI exits non-zero.
//!
//! A run (whole or shard) produces a [`Partial`]; [`merge`] turns partials of all shards into a
//! [`Report`]. A whole run is the merge of the single partial of shard 1/1, so shard + merge
//! and the whole run share the same code path and agree exactly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::counting::ReadSnapshot;
use crate::session::LakeSession;
use crate::shard::Shard;
use crate::QueryError;

/// The KPI SQL files, in report order.
const SOURCES: &[(&str, &str)] = &[
    ("daily_active_users.sql", include_str!("../kpis/daily_active_users.sql")),
    ("new_users.sql", include_str!("../kpis/new_users.sql")),
    ("events_by_type_hour.sql", include_str!("../kpis/events_by_type_hour.sql")),
    ("products_listed.sql", include_str!("../kpis/products_listed.sql")),
    ("products_contacted.sql", include_str!("../kpis/products_contacted.sql")),
    ("products_sold.sql", include_str!("../kpis/products_sold.sql")),
    ("sales.sql", include_str!("../kpis/sales.sql")),
    ("conversations_started.sql", include_str!("../kpis/conversations_started.sql")),
];

/// Version tag of partial files.
pub const PARTIAL_FORMAT: &str = "eventplat.kpi.partial/1";

/// How a KPI's partial results combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeKind {
    /// Integer measures added per key.
    Sum,
    /// Sets of values united, then counted.
    Distinct,
}

/// One KPI definition.
#[derive(Debug, Clone)]
pub struct KpiDef {
    /// Name (`daily_active_users`).
    pub name: String,
    /// Human label.
    pub title: String,
    /// How partials merge.
    pub merge: MergeKind,
    /// Group-by columns of a `sum` KPI.
    pub keys: Vec<String>,
    /// Tables it reads.
    pub tables: Vec<String>,
    /// The SQL with its `{date}` placeholder.
    pub sql: String,
}

impl KpiDef {
    fn parse(file: &str, text: &str) -> Result<KpiDef, QueryError> {
        let mut header: BTreeMap<&str, &str> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("--") else { break };
            if let Some((k, v)) = rest.split_once(':') {
                header.entry(k.trim()).or_insert(v.trim());
            }
        }
        let bad = |what: &str| QueryError::Invalid(format!("KPI file {file}: {what}"));
        let list = |k: &str| -> Vec<String> {
            header.get(k).map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
        };
        let merge = match header.get("merge").copied() {
            Some("sum") => MergeKind::Sum,
            Some("distinct") => MergeKind::Distinct,
            _ => return Err(bad("`-- merge: sum|distinct` missing")),
        };
        let name = header.get("kpi").ok_or_else(|| bad("`-- kpi: name` missing"))?.to_string();
        Ok(KpiDef {
            title: header.get("title").map_or_else(|| name.clone(), |t| t.to_string()),
            name,
            merge,
            keys: list("keys"),
            tables: list("tables"),
            sql: text.to_owned(),
        })
    }

    /// The SQL for a day.
    pub fn sql_for(&self, date: &str) -> String {
        self.sql.replace("{date}", date)
    }
}

/// The built-in KPI definitions.
pub fn definitions() -> Result<Vec<KpiDef>, QueryError> {
    SOURCES.iter().map(|(file, text)| KpiDef::parse(file, text)).collect()
}

/// The KPI definitions of the `*.sql` files of `dir` (in file name order), each with the
/// header the built-in ones have. A file without a valid header, or two KPIs of one name,
/// are refused with the file named.
pub fn definitions_in(dir: &Path) -> Result<Vec<KpiDef>, QueryError> {
    let entries = std::fs::read_dir(dir).map_err(|e| QueryError::io(dir, e))?;
    let mut files: Vec<std::path::PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(QueryError::Invalid(format!("{}: no *.sql KPI files", dir.display())));
    }
    let mut defs: Vec<KpiDef> = Vec::with_capacity(files.len());
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|e| QueryError::io(&f, e))?;
        let def = KpiDef::parse(&f.display().to_string(), &text)?;
        if defs.iter().any(|d| d.name == def.name) {
            return Err(QueryError::Invalid(format!("{}: a second KPI named {:?}", f.display(), def.name)));
        }
        defs.push(def);
    }
    Ok(defs)
}

/// The KPIs of `dir`, or the built-in ones.
pub fn load(dir: Option<&Path>) -> Result<Vec<KpiDef>, QueryError> {
    match dir {
        Some(d) => definitions_in(d),
        None => definitions(),
    }
}

/// A fingerprint of the definitions (FNV-1a of the SQL texts): partials computed with other
/// definitions are refused by the merge.
pub fn definitions_id(defs: &[KpiDef]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for d in defs {
        for b in d.sql.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Checks a `YYYY-MM-DD` day.
pub fn parse_date(date: &str) -> Result<chrono::NaiveDate, QueryError> {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == date)
        .ok_or_else(|| QueryError::Invalid(format!("date {date:?}: expected YYYY-MM-DD")))
}

/// The partial result of one KPI on one shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "merge", rename_all = "lowercase")]
pub enum PartialKpi {
    /// Measures per key.
    Sum {
        /// Key column names.
        keys: Vec<String>,
        /// Measure column names.
        measures: Vec<String>,
        /// Key values -> measures, sorted by key.
        rows: Vec<(Vec<Value>, Vec<i64>)>,
    },
    /// The distinct values, sorted.
    Distinct {
        /// The values.
        values: Vec<String>,
    },
}

/// What one run (a shard, or the whole day as shard 1/1) computed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Partial {
    /// [`PARTIAL_FORMAT`].
    pub format: String,
    /// The day.
    pub date: String,
    /// The shard computed.
    pub shard: Shard,
    /// [`definitions_id`] of the KPIs used.
    pub definitions: String,
    /// Per KPI.
    pub kpis: BTreeMap<String, PartialKpi>,
    /// KPIs that failed, with the reason (the others are in `kpis`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    /// What was read.
    pub read: ReadSnapshot,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

/// Progress of a run, for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// KPI `index` (0-based) of `total` starts.
    Started {
        /// Its name.
        name: &'a str,
        /// Position.
        index: usize,
        /// Number of KPIs.
        total: usize,
    },
    /// A KPI finished.
    Finished {
        /// Its name.
        name: &'a str,
    },
}

/// Runs every KPI of `defs` for a day on a session (whose shard it computes). A KPI that
/// fails is recorded in [`Partial::failed`] with its reason and the others still run; only
/// what concerns the whole run (a bad date, a lake that cannot be listed) is an error.
pub async fn run(session: &LakeSession, date: &str, defs: &[KpiDef], progress: &(dyn Fn(Progress<'_>) + Sync)) -> Result<Partial, QueryError> {
    parse_date(date)?;
    let started = Instant::now();
    let known: BTreeSet<String> = session.catalog().types().await?.into_iter().collect();
    let mut kpis = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for (index, def) in defs.iter().enumerate() {
        progress(Progress::Started { name: &def.name, index, total: defs.len() });
        let missing = def.tables.iter().any(|t| !t.starts_with("lake.") && !known.contains(t));
        let computed = if missing {
            tracing::warn!(kpi = %def.name, tables = ?def.tables, "a table of this KPI is not in the lake: counted as empty");
            partial_of(def, &[])
        } else {
            match session.collect(&def.sql_for(date)).await {
                Ok(batches) => partial_of(def, &batches),
                Err(e) => Err(e),
            }
        };
        match computed {
            Ok(p) => {
                kpis.insert(def.name.clone(), p);
            }
            Err(e) => {
                tracing::warn!(kpi = %def.name, error = %e, "KPI failed; the others go on");
                failed.insert(def.name.clone(), e.to_string());
            }
        }
        progress(Progress::Finished { name: &def.name });
    }
    Ok(Partial {
        format: PARTIAL_FORMAT.to_owned(),
        date: date.to_owned(),
        shard: session.catalog().shard(),
        definitions: definitions_id(defs),
        kpis,
        failed,
        read: session.stats().snapshot(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

fn json_value(array: &dyn Array, row: usize) -> Result<Value, QueryError> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    if array.data_type().is_integer() {
        let a = cast(&array.slice(row, 1), &DataType::Int64)?;
        return Ok(Value::from(a.as_primitive::<Int64Type>().value(0)));
    }
    let a = cast(&array.slice(row, 1), &DataType::Utf8)?;
    Ok(Value::from(a.as_string::<i32>().value(0)))
}

/// Turns a KPI's result batches into its partial.
fn partial_of(def: &KpiDef, batches: &[RecordBatch]) -> Result<PartialKpi, QueryError> {
    match def.merge {
        MergeKind::Distinct => {
            let mut values = BTreeSet::new();
            for b in batches {
                let col = b.column_by_name("value").ok_or_else(|| QueryError::Invalid(format!("KPI {}: no `value` column", def.name)))?;
                let col = cast(col, &DataType::Utf8)?;
                let s = col.as_string::<i32>();
                for i in 0..s.len() {
                    if s.is_valid(i) {
                        values.insert(s.value(i).to_owned());
                    }
                }
            }
            Ok(PartialKpi::Distinct { values: values.into_iter().collect() })
        }
        MergeKind::Sum => {
            let schema = match batches.first() {
                Some(b) => b.schema(),
                None => {
                    // No rows and no schema (table absent): no measures known; an empty sum.
                    return Ok(PartialKpi::Sum { keys: def.keys.clone(), measures: Vec::new(), rows: Vec::new() });
                }
            };
            let measures: Vec<String> =
                schema.fields().iter().map(|f| f.name().clone()).filter(|n| !def.keys.contains(n)).collect();
            let mut acc: BTreeMap<String, (Vec<Value>, Vec<i64>)> = BTreeMap::new();
            for b in batches {
                let keys: Vec<_> = def
                    .keys
                    .iter()
                    .map(|k| b.column_by_name(k).cloned().ok_or_else(|| QueryError::Invalid(format!("KPI {}: no key column {k}", def.name))))
                    .collect::<Result<_, _>>()?;
                let ms: Vec<_> = measures
                    .iter()
                    .map(|m| b.column_by_name(m).map(|c| cast(c, &DataType::Int64)).transpose())
                    .collect::<Result<Vec<_>, _>>()?;
                for row in 0..b.num_rows() {
                    let key: Vec<Value> = keys.iter().map(|k| json_value(k.as_ref(), row)).collect::<Result<_, _>>()?;
                    let id = serde_json::to_string(&key).map_err(|e| QueryError::Invalid(e.to_string()))?;
                    let entry = acc.entry(id).or_insert_with(|| (key, vec![0; measures.len()]));
                    for (slot, m) in entry.1.iter_mut().zip(&ms) {
                        if let Some(m) = m {
                            let a = m.as_primitive::<Int64Type>();
                            if a.is_valid(row) {
                                *slot += a.value(row);
                            }
                        }
                    }
                }
            }
            let mut rows: Vec<(Vec<Value>, Vec<i64>)> = acc.into_values().collect();
            rows.sort_by(|a, b| compare_keys(&a.0, &b.0));
            Ok(PartialKpi::Sum { keys: def.keys.clone(), measures, rows })
        }
    }
}

fn compare_keys(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (Value::Number(x), Value::Number(y)) => x.as_i64().cmp(&y.as_i64()),
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
            (Value::Null, _) => std::cmp::Ordering::Less,
            (_, Value::Null) => std::cmp::Ordering::Greater,
            _ => x.to_string().cmp(&y.to_string()),
        };
        if o.is_ne() {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// One KPI of the final report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KpiValue {
    /// A distinct count.
    Count(u64),
    /// Measures without keys (`{"sales": 10, "gmv_cents": 123}`).
    Measures(BTreeMap<String, i64>),
    /// Rows of keys and measures (`[{"type": .., "hour": .., "events": ..}]`).
    Rows(Vec<BTreeMap<String, Value>>),
}

/// The KPIs of a day, merged from all shards.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The day.
    pub date: String,
    /// How many shards were merged.
    pub shards: u32,
    /// Per KPI, in name order.
    pub kpis: BTreeMap<String, KpiValue>,
    /// KPIs that failed (in any shard), with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    /// KPI titles.
    pub titles: BTreeMap<String, String>,
    /// Reads of all shards together.
    pub read: ReadSnapshot,
    /// The slowest shard's wall time.
    pub elapsed_ms: u64,
}

/// Merges the partials of every shard of a day (each shard exactly once), computed with the
/// KPIs `defs`. A KPI that failed in any shard is reported failed, with the first reason.
pub fn merge(partials: &[Partial], defs: &[KpiDef]) -> Result<Report, QueryError> {
    let first = partials.first().ok_or_else(|| QueryError::Invalid("no partial results to merge".into()))?;
    let n = first.shard.count;
    let mut seen = BTreeSet::new();
    for p in partials {
        if p.format != PARTIAL_FORMAT {
            return Err(QueryError::Invalid(format!("shard {}: format {:?}, expected {PARTIAL_FORMAT}", p.shard, p.format)));
        }
        if p.date != first.date || p.shard.count != n {
            return Err(QueryError::Invalid(format!(
                "partials of different runs: {} shard {} and {} shard {}",
                first.date, first.shard, p.date, p.shard
            )));
        }
        if p.definitions != definitions_id(defs) {
            return Err(QueryError::Invalid(format!("shard {} was computed with other KPI definitions: re-run it", p.shard)));
        }
        if !seen.insert(p.shard.index) {
            return Err(QueryError::Invalid(format!("shard {} given twice", p.shard)));
        }
    }
    let missing: Vec<String> = (1..=n).filter(|i| !seen.contains(i)).map(|i| format!("{i}/{n}")).collect();
    if !missing.is_empty() {
        return Err(QueryError::Invalid(format!("missing shards {}: run them with --shard and merge again", missing.join(", "))));
    }
    let mut kpis = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for def in defs {
        if let Some(why) = partials.iter().find_map(|p| p.failed.get(&def.name)) {
            failed.insert(def.name.clone(), why.clone());
            continue;
        }
        let parts: Vec<&PartialKpi> = partials.iter().filter_map(|p| p.kpis.get(&def.name)).collect();
        if parts.len() != partials.len() {
            return Err(QueryError::Invalid(format!("KPI {} missing from a partial", def.name)));
        }
        kpis.insert(def.name.clone(), merge_kpi(def, &parts)?);
    }
    let mut read = ReadSnapshot::default();
    for p in partials {
        read.bytes_read += p.read.bytes_read;
        read.get_requests += p.read.get_requests;
        read.list_requests += p.read.list_requests;
        read.files_read += p.read.files_read;
        read.log_get_requests += p.read.log_get_requests;
        read.log_bytes_read += p.read.log_bytes_read;
    }
    Ok(Report {
        date: first.date.clone(),
        shards: n,
        kpis,
        failed,
        titles: defs.iter().map(|d| (d.name.clone(), d.title.clone())).collect(),
        read,
        elapsed_ms: partials.iter().map(|p| p.elapsed_ms).max().unwrap_or(0),
    })
}

fn merge_kpi(def: &KpiDef, parts: &[&PartialKpi]) -> Result<KpiValue, QueryError> {
    match def.merge {
        MergeKind::Distinct => {
            let mut all: BTreeSet<&str> = BTreeSet::new();
            for p in parts {
                let PartialKpi::Distinct { values } = p else {
                    return Err(QueryError::Invalid(format!("KPI {}: expected distinct values", def.name)));
                };
                all.extend(values.iter().map(String::as_str));
            }
            Ok(KpiValue::Count(all.len() as u64))
        }
        MergeKind::Sum => {
            let mut measures: Vec<String> = Vec::new();
            let mut acc: BTreeMap<String, (Vec<Value>, BTreeMap<String, i64>)> = BTreeMap::new();
            for p in parts {
                let PartialKpi::Sum { measures: ms, rows, .. } = p else {
                    return Err(QueryError::Invalid(format!("KPI {}: expected sums", def.name)));
                };
                for m in ms {
                    if !measures.contains(m) {
                        measures.push(m.clone());
                    }
                }
                for (key, values) in rows {
                    let id = serde_json::to_string(key).map_err(|e| QueryError::Invalid(e.to_string()))?;
                    let entry = acc.entry(id).or_insert_with(|| (key.clone(), BTreeMap::new()));
                    for (m, v) in ms.iter().zip(values) {
                        *entry.1.entry(m.clone()).or_default() += v;
                    }
                }
            }
            if def.keys.is_empty() {
                let mut out: BTreeMap<String, i64> = measures.iter().map(|m| (m.clone(), 0)).collect();
                for (_, (_, values)) in acc {
                    for (m, v) in values {
                        *out.entry(m).or_default() += v;
                    }
                }
                return Ok(KpiValue::Measures(out));
            }
            let mut rows: Vec<(Vec<Value>, BTreeMap<String, i64>)> = acc.into_values().collect();
            rows.sort_by(|a, b| compare_keys(&a.0, &b.0));
            Ok(KpiValue::Rows(
                rows.into_iter()
                    .map(|(key, values)| {
                        let mut row: BTreeMap<String, Value> = def.keys.iter().cloned().zip(key).collect();
                        for m in &measures {
                            row.insert(m.clone(), Value::from(values.get(m).copied().unwrap_or(0)));
                        }
                        row
                    })
                    .collect(),
            ))
        }
    }
}

/// Writes a file whole: a temporary name, then a rename (a re-run replaces it atomically).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), QueryError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| QueryError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| QueryError::io(path, e))
}

/// Reads a partial file.
pub fn read_partial(path: &Path) -> Result<Partial, QueryError> {
    let bytes = std::fs::read(path).map_err(|e| QueryError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| QueryError::Invalid(format!("{}: not a KPI partial: {e}", path.display())))
}

/// The file name of a shard's partial.
pub fn partial_file_name(date: &str, shard: Shard) -> String {
    format!("partial-{date}-{}-of-{}.json", shard.index, shard.count)
}

/// The scalar KPIs as (name, value) lines: distinct counts and keyless measures
/// (`sales.gmv_cents`).
pub fn scalar_lines(report: &Report) -> Vec<(String, String, i64)> {
    let mut out = Vec::new();
    for (name, v) in &report.kpis {
        let title = report.titles.get(name).cloned().unwrap_or_default();
        match v {
            KpiValue::Count(n) => out.push((name.clone(), title, *n as i64)),
            KpiValue::Measures(m) => {
                for (k, v) in m {
                    out.push((format!("{name}.{k}"), title.clone(), *v));
                }
            }
            KpiValue::Rows(_) => {}
        }
    }
    out
}

/// Writes `kpis.json`, `kpis.csv` (scalar KPIs) and one CSV per keyed KPI into `dir`.
pub fn write_report(report: &Report, dir: &Path) -> Result<Vec<std::path::PathBuf>, QueryError> {
    std::fs::create_dir_all(dir).map_err(|e| QueryError::io(dir, e))?;
    let mut written = Vec::new();
    let json = serde_json::to_vec_pretty(report).map_err(|e| QueryError::Invalid(e.to_string()))?;
    let p = dir.join("kpis.json");
    write_atomic(&p, &json)?;
    written.push(p);
    let mut csv = String::from("kpi,value\n");
    for (name, _, v) in scalar_lines(report) {
        csv.push_str(&format!("{name},{v}\n"));
    }
    let p = dir.join("kpis.csv");
    write_atomic(&p, csv.as_bytes())?;
    written.push(p);
    for (name, v) in &report.kpis {
        let KpiValue::Rows(rows) = v else { continue };
        let Some(first) = rows.first() else { continue };
        let cols: Vec<&String> = first.keys().collect();
        let mut csv = cols.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
        csv.push('\n');
        for r in rows {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| match r.get(*c) {
                    Some(Value::String(s)) => csv_cell(s),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect();
            csv.push_str(&cells.join(","));
            csv.push('\n');
        }
        let p = dir.join(format!("{name}.csv"));
        write_atomic(&p, csv.as_bytes())?;
        written.push(p);
    }
    Ok(written)
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_parse() {
        let defs = definitions().expect("definitions");
        assert_eq!(defs.len(), SOURCES.len());
        let e = defs.iter().find(|d| d.name == "events_by_type_hour").expect("events_by_type_hour");
        assert_eq!(e.merge, MergeKind::Sum);
        assert_eq!(e.keys, vec!["type", "hour"]);
        assert!(e.sql_for("2026-11-23").contains("DATE '2026-11-23'"));
        assert!(defs.iter().any(|d| d.name == "daily_active_users" && d.merge == MergeKind::Distinct));
    }

    #[test]
    fn dates_are_checked() {
        assert!(parse_date("2026-11-23").is_ok());
        for bad in ["2026-11-31", "2026-1-3", "x'; DROP", ""] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    fn partial(shard: Shard, users: &[&str], rows: Vec<(Vec<Value>, Vec<i64>)>) -> Partial {
        let defs = definitions().expect("defs");
        let mut kpis = BTreeMap::new();
        for d in &defs {
            let k = match d.merge {
                MergeKind::Distinct => PartialKpi::Distinct { values: users.iter().map(|s| s.to_string()).collect() },
                MergeKind::Sum if d.keys.is_empty() => PartialKpi::Sum { keys: vec![], measures: vec!["n".into()], rows: vec![(vec![], vec![2])] },
                MergeKind::Sum => PartialKpi::Sum { keys: d.keys.clone(), measures: vec!["events".into()], rows: rows.clone() },
            };
            kpis.insert(d.name.clone(), k);
        }
        Partial {
            format: PARTIAL_FORMAT.into(),
            date: "2026-11-23".into(),
            shard,
            definitions: definitions_id(&defs),
            kpis,
            failed: BTreeMap::new(),
            read: ReadSnapshot::default(),
            elapsed_ms: 1,
        }
    }

    #[test]
    fn merge_adds_sums_and_unites_sets() {
        let a = partial(Shard { index: 1, count: 2 }, &["u1", "u2"], vec![(vec![Value::from("t"), Value::from(1)], vec![3])]);
        let b = partial(Shard { index: 2, count: 2 }, &["u2", "u3"], vec![(vec![Value::from("t"), Value::from(1)], vec![4]), (vec![Value::from("t"), Value::from(2)], vec![1])]);
        let defs = definitions().expect("defs");
        let r = merge(&[b.clone(), a.clone()], &defs).expect("merge");
        assert_eq!(r.kpis["daily_active_users"], KpiValue::Count(3));
        assert_eq!(r.kpis["sales"], KpiValue::Measures(BTreeMap::from([("n".to_owned(), 4)])));
        let KpiValue::Rows(rows) = &r.kpis["events_by_type_hour"] else { panic!("rows") };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["events"], Value::from(7));
        // A KPI that failed in one shard is failed in the merge, with its reason; the others merge.
        let mut broken = b.clone();
        broken.kpis.remove("sales");
        broken.failed.insert("sales".into(), "column price not found".into());
        let r = merge(&[a.clone(), broken], &defs).expect("merge");
        assert_eq!(r.failed.get("sales").map(String::as_str), Some("column price not found"));
        assert!(!r.kpis.contains_key("sales") && r.kpis.contains_key("daily_active_users"));
        // Missing, repeated, or foreign shards are refused.
        assert!(merge(std::slice::from_ref(&a), &defs).is_err_and(|e| e.to_string().contains("2/2")));
        assert!(merge(&[a.clone(), a.clone()], &defs).is_err());
        let mut other = b.clone();
        other.date = "2026-11-24".into();
        assert!(merge(&[a, other], &defs).is_err());
    }
}

//! Daily KPIs: SQL files in `libs/lake-query/kpis/` (compiled into the binary), run over one day of
//! the lake, here or on a Ballista cluster (the session decides, see [`crate::session`]).
//!
//! Each file starts with a header of `-- key: value` lines: `kpi` (the name), `title` (a human
//! label), `tables` (the tables it reads: a KPI whose type the lake never held is reported
//! empty rather than failed). Any other header line, such as the `-- merge:` of the old
//! shard-and-merge files, is a comment. The body is any SQL DataFusion runs (medians, top-N,
//! joins across types): the engine computes the whole day, so no KPI needs a merge rule.
//! `{date}` in the SQL is replaced by the day (validated `YYYY-MM-DD`).
//!
//! A KPI's result becomes, by its shape: one row of one column -> that value; one row of
//! several columns -> an object of them; anything else -> the rows, in the query's order.
//!
//! The built-in files are the defaults; `eventctl kpi --kpis DIR` runs the `*.sql` files of a
//! folder instead ([`definitions_in`]), since every business names its columns differently.
//!
//! One KPI that fails (a column the lake does not have, a type error) does not sink the
//! others: the run records it with its reason ([`Report::failed`]), computes and writes the
//! rest, and the CLI exits non-zero.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::QueryError;
use crate::counting::ReadSnapshot;
use crate::session::LakeSession;

/// The KPI SQL files, in report order.
const SOURCES: &[(&str, &str)] = &[
    ("daily_active_users.sql", include_str!("../kpis/daily_active_users.sql")),
    ("new_users.sql", include_str!("../kpis/new_users.sql")),
    ("events_by_type_hour.sql", include_str!("../kpis/events_by_type_hour.sql")),
    ("products_listed.sql", include_str!("../kpis/products_listed.sql")),
    ("products_contacted.sql", include_str!("../kpis/products_contacted.sql")),
    ("products_sold.sql", include_str!("../kpis/products_sold.sql")),
    ("sales.sql", include_str!("../kpis/sales.sql")),
    ("median_order_value.sql", include_str!("../kpis/median_order_value.sql")),
    ("top_sellers.sql", include_str!("../kpis/top_sellers.sql")),
    ("conversations_started.sql", include_str!("../kpis/conversations_started.sql")),
];

/// One KPI definition.
#[derive(Debug, Clone)]
pub struct KpiDef {
    /// Name (`daily_active_users`).
    pub name: String,
    /// Human label.
    pub title: String,
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
        let name = header.get("kpi").filter(|n| !n.is_empty()).ok_or_else(|| bad("`-- kpi: name` missing"))?.to_string();
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') || name.len() > 64 {
            return Err(bad("the name must be 1-64 of [A-Za-z0-9_-] (it names the KPI's CSV file)"));
        }
        let tables = header
            .get("tables")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Ok(KpiDef { title: header.get("title").map_or_else(|| name.clone(), |t| t.to_string()), name, tables, sql: text.to_owned() })
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

/// Checks a `YYYY-MM-DD` day.
pub fn parse_date(date: &str) -> Result<chrono::NaiveDate, QueryError> {
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == date)
        .ok_or_else(|| QueryError::Invalid(format!("date {date:?}: expected YYYY-MM-DD")))
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

/// One KPI of the report, by the shape of its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KpiValue {
    /// One row of one column (`daily_active_users: 1234`).
    Scalar(Value),
    /// One row of several columns (`{"sales": 10, "gmv_cents": 123}`).
    Measures(BTreeMap<String, Value>),
    /// Rows, in the query's order (`[{"type": .., "hour": .., "events": ..}]`).
    Rows(Vec<BTreeMap<String, Value>>),
}

/// The KPIs of a day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The day.
    pub date: String,
    /// Where it ran: `local`, or `cluster <scheduler>`.
    pub engine: String,
    /// Per KPI, in name order.
    pub kpis: BTreeMap<String, KpiValue>,
    /// KPIs that failed, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    /// KPI titles.
    pub titles: BTreeMap<String, String>,
    /// The columns of each KPI with rows, in the query's order (the CSV's header).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, Vec<String>>,
    /// What was read.
    pub read: ReadSnapshot,
    /// Wall time of the run.
    pub elapsed_ms: u64,
}

/// Runs every KPI of `defs` for a day on a session. A KPI that fails is recorded in
/// [`Report::failed`] with its reason and the others still run; only what concerns the whole
/// run (a bad date, a lake that cannot be listed) is an error.
pub async fn run(session: &LakeSession, date: &str, defs: &[KpiDef], progress: &(dyn Fn(Progress<'_>) + Sync)) -> Result<Report, QueryError> {
    parse_date(date)?;
    session.check_engine().await?;
    let started = Instant::now();
    let known: BTreeSet<String> = session.catalog().types().await?.into_iter().collect();
    let mut kpis = BTreeMap::new();
    let mut columns = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for (index, def) in defs.iter().enumerate() {
        progress(Progress::Started { name: &def.name, index, total: defs.len() });
        let missing: Vec<&String> = def.tables.iter().filter(|t| !t.starts_with("lake.") && !known.contains(*t)).collect();
        if !missing.is_empty() {
            // Nothing to read: the KPI's query would fail on an unknown table.
            tracing::warn!(kpi = %def.name, tables = ?missing, "a table of this KPI is not in the lake: reported empty");
            kpis.insert(def.name.clone(), KpiValue::Rows(Vec::new()));
        } else {
            match session.collect_with_schema(&def.sql_for(date)).await.and_then(|(schema, batches)| value_of(&schema, &batches)) {
                Ok((value, cols)) => {
                    if matches!(value, KpiValue::Rows(_)) {
                        columns.insert(def.name.clone(), cols);
                    }
                    kpis.insert(def.name.clone(), value);
                }
                Err(e) => {
                    tracing::warn!(kpi = %def.name, error = %e, "KPI failed; the others go on");
                    failed.insert(def.name.clone(), e.to_string());
                }
            }
        }
        progress(Progress::Finished { name: &def.name });
    }
    Ok(Report {
        date: date.to_owned(),
        engine: session.engine(),
        kpis,
        failed,
        titles: defs.iter().map(|d| (d.name.clone(), d.title.clone())).collect(),
        columns,
        read: session.stats().snapshot(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// A cell as JSON: integers as integers, floats as numbers, the rest as text.
fn json_value(array: &dyn Array, row: usize) -> Result<Value, QueryError> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    let one = array.slice(row, 1);
    let dt = array.data_type();
    if dt.is_unsigned_integer() {
        let a = cast(&one, &DataType::UInt64)?;
        return Ok(Value::from(a.as_primitive::<UInt64Type>().value(0)));
    }
    if dt.is_integer() {
        let a = cast(&one, &DataType::Int64)?;
        return Ok(Value::from(a.as_primitive::<Int64Type>().value(0)));
    }
    if dt.is_floating() || matches!(dt, DataType::Decimal128(..) | DataType::Decimal256(..)) {
        let a = cast(&one, &DataType::Float64)?;
        let v = a.as_primitive::<Float64Type>().value(0);
        return Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number));
    }
    if dt == &DataType::Boolean {
        return Ok(Value::from(one.as_boolean().value(0)));
    }
    let a = cast(&one, &DataType::Utf8)?;
    Ok(Value::from(a.as_string::<i32>().value(0)))
}

/// A KPI's result as a value, with its column names.
fn value_of(schema: &datafusion::arrow::datatypes::Schema, batches: &[RecordBatch]) -> Result<(KpiValue, Vec<String>), QueryError> {
    let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(b.columns().iter().map(|c| json_value(c.as_ref(), r)).collect::<Result<_, _>>()?);
        }
    }
    let value = match (rows.len(), names.len()) {
        (1, 1) => KpiValue::Scalar(rows.remove(0).remove(0)),
        (1, _) => KpiValue::Measures(names.iter().cloned().zip(rows.remove(0)).collect()),
        _ => KpiValue::Rows(rows.into_iter().map(|r| names.iter().cloned().zip(r).collect()).collect()),
    };
    Ok((value, names))
}

/// Writes a file whole: a temporary name, then a rename (a re-run replaces it atomically).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), QueryError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| QueryError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| QueryError::io(path, e))
}

/// A value as a CSV or table cell.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// The one-value KPIs as (name, title, value) lines: scalars and the columns of one-row
/// results (`sales.gmv_cents`).
pub fn scalar_lines(report: &Report) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, v) in &report.kpis {
        let title = report.titles.get(name).cloned().unwrap_or_default();
        match v {
            KpiValue::Scalar(v) => out.push((name.clone(), title, cell(v))),
            KpiValue::Measures(m) => {
                for (k, v) in m {
                    out.push((format!("{name}.{k}"), title.clone(), cell(v)));
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
        csv.push_str(&format!("{name},{}\n", csv_cell(&v)));
    }
    let p = dir.join("kpis.csv");
    write_atomic(&p, csv.as_bytes())?;
    written.push(p);
    for (name, v) in &report.kpis {
        let KpiValue::Rows(rows) = v else { continue };
        let Some(first) = rows.first() else { continue };
        let cols: Vec<&String> = match report.columns.get(name) {
            Some(c) => c.iter().collect(),
            None => first.keys().collect(),
        };
        let mut csv = cols.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",");
        csv.push('\n');
        for r in rows {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| r.get(*c).map(|v| csv_cell(&cell(v))).unwrap_or_default())
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
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    #[test]
    fn definitions_parse() {
        let defs = definitions().expect("definitions");
        assert_eq!(defs.len(), SOURCES.len());
        let e = defs.iter().find(|d| d.name == "events_by_type_hour").expect("events_by_type_hour");
        assert_eq!(e.tables, vec!["lake.events"]);
        assert!(e.sql_for("2026-11-23").contains("DATE '2026-11-23'"));
        assert!(defs.iter().all(|d| !d.sql.contains("-- merge:")), "no KPI needs a merge rule");
        assert!(KpiDef::parse("x.sql", "-- kpi: ../etc\nSELECT 1").is_err(), "a name that is not a file name");
        assert!(KpiDef::parse("x.sql", "SELECT 1").is_err(), "no header");
        // The old header's merge line is a comment.
        assert_eq!(KpiDef::parse("x.sql", "-- kpi: a\n-- merge: sum\nSELECT 1").expect("old header").name, "a");
    }

    #[test]
    fn dates_are_checked() {
        assert!(parse_date("2026-11-23").is_ok());
        for bad in ["2026-11-31", "2026-1-3", "x'; DROP", ""] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_take_the_shape_of_their_rows() {
        let one = Arc::new(Schema::new(vec![Field::new("value", DataType::Int64, false)]));
        let b = RecordBatch::try_new(one.clone(), vec![Arc::new(Int64Array::from(vec![7]))]).expect("batch");
        assert_eq!(value_of(&one, &[b]).expect("scalar").0, KpiValue::Scalar(Value::from(7)));
        let two = Arc::new(Schema::new(vec![Field::new("seller", DataType::Utf8, false), Field::new("gmv", DataType::Float64, true)]));
        let b = RecordBatch::try_new(two.clone(), vec![Arc::new(StringArray::from(vec!["u1"])), Arc::new(Float64Array::from(vec![Some(2.5)]))]).expect("batch");
        assert_eq!(
            value_of(&two, std::slice::from_ref(&b)).expect("measures").0,
            KpiValue::Measures(BTreeMap::from([("seller".into(), Value::from("u1")), ("gmv".into(), Value::from(2.5))]))
        );
        let (rows, cols) = value_of(&two, &[b.clone(), b]).expect("rows");
        assert_eq!(cols, vec!["seller", "gmv"]);
        let KpiValue::Rows(rows) = rows else { panic!("rows") };
        assert_eq!(rows.len(), 2);
        assert_eq!(value_of(&two, &[]).expect("empty").0, KpiValue::Rows(Vec::new()));
    }
}

//! `eventctl catalog sync`: registers the Delta tables of an S3 lake in the AWS Glue Data
//! Catalog, so that Athena (or any engine reading Glue) queries them with no hand-written DDL.
//!
//! One Glue table per event type (`events/type=<t>/`) and one for the quarantine
//! (`quarantine/`), in one Glue database, created when missing. Each is an `EXTERNAL_TABLE`
//! with `table_type=DELTA` (Athena then reads the table through its Delta log: committed
//! files only, newest snapshot), located at the table's root, with the columns of its Arrow
//! schema as Hive types and `date` (date) / `hour` (int) as partition keys.
//!
//! - Names: a type becomes lowercase `[a-z0-9_]` (`Shop.Checkout-Done` -> `shop_checkout_done`).
//!   Types whose names collide are refused, each with an error, except the one the existing
//!   Glue table was registered for; `quarantine` is kept for the quarantine table.
//! - Idempotent: a table is created when missing, updated when what the sync manages differs
//!   (columns, location, partition keys, storage formats, table type, the parameters it sets),
//!   unchanged otherwise. New data alone changes nothing: Athena reads the log.
//!   [`DELTA_VERSION_PARAM`] records the Delta version read at the last create or update and
//!   is not compared.
//! - Glue tables it did not create (no [`LAKE_TABLE_PARAM`]) are never touched; parameters,
//!   description and owner that others set on its tables are kept on update.
//! - An update carries the Glue table's `VersionId` as read: a concurrent change of that table
//!   (another sync, a person in the console) fails this update instead of being overwritten;
//!   the next run syncs it.
//! - A Glue table this command registered for this lake whose Delta table is gone (its type's
//!   folder deleted) is reported `stale` and kept; `--prune` deletes it, after checking again
//!   that the lake has no table there. A lake with no tables at all is never pruned.
//! - An error on one table (after the SDK's retries of throttling and server errors) is
//!   reported with the table and the others go on; the exit code is 1 when any failed.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use arrow_schema::{DataType, Fields, SchemaRef};
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_glue::Client;
use aws_sdk_glue::config::Region;
use aws_sdk_glue::error::DisplayErrorContext;
use aws_sdk_glue::types::{Column, DatabaseInput, SerDeInfo, StorageDescriptor, Table, TableInput};
use clap::{Args, Subcommand};
use event_lake::schema::{JSON_METADATA, LEFTOVERS, PATH_METADATA};
use event_lake::table::{QUARANTINE_DIR, table_dir};
use event_lake::{Lake, WriteOptions};
use futures::StreamExt;
use serde::Serialize;

use super::runtime;

/// Table parameter naming the lake table a Glue table was registered for (`events/type=<t>`
/// or `quarantine`): the mark of the tables this command manages.
pub const LAKE_TABLE_PARAM: &str = "eventplat.lake_table";
/// Table parameter: the Delta version read at the last create or update (informational).
pub const DELTA_VERSION_PARAM: &str = "eventplat.delta_version";
/// The Glue name of the quarantine table.
pub const QUARANTINE_TABLE: &str = "quarantine";
/// The table parameters every synced table carries (besides [`LAKE_TABLE_PARAM`]).
const FIXED_PARAMS: [(&str, &str); 3] = [("table_type", "DELTA"), ("spark.sql.sources.provider", "delta"), ("classification", "delta")];
const TABLE_TYPE: &str = "EXTERNAL_TABLE";
const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
/// Glue's (and Athena's) longest database, table or column name; longest column comment.
const MAX_NAME: usize = 255;
/// Glue's longest column type string.
const MAX_TYPE_CHARS: usize = 131_072;
/// Tables synced at once (Glue throttles bursts of calls).
const CONCURRENCY: usize = 4;

/// Subcommands of `eventctl catalog`.
#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Register every Delta table of an S3 lake in a Glue database (idempotent).
    Sync(SyncArgs),
}

/// Options of `eventctl catalog sync`.
#[derive(Args)]
pub struct SyncArgs {
    /// Glue database (created if missing): lowercase letters, digits and `_`.
    #[arg(long, env = "EVENTCTL_GLUE_DATABASE")]
    pub glue_database: String,
    /// Lake root: s3://bucket/prefix (Athena reads S3; a local lake cannot be registered).
    #[arg(long, env = "EVENTCTL_LAKE")]
    pub lake: String,
    /// Report what would change without writing to Glue.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Delete the Glue tables this command registered for this lake whose Delta table no longer
    /// exists (without it they are reported as stale and kept).
    #[arg(long)]
    pub prune: bool,
    /// Glue endpoint (a Glue-compatible server); default: the region's AWS endpoint.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Region; default: the standard AWS chain (AWS_REGION, profile), else us-east-1.
    #[arg(long)]
    pub region: Option<String>,
}

/// Runs one `catalog` subcommand.
pub fn run(cmd: CatalogCommand) -> Result<i32> {
    match cmd {
        CatalogCommand::Sync(args) => sync(args),
    }
}

fn sync(args: SyncArgs) -> Result<i32> {
    check_database_name(&args.glue_database)?;
    if !args.lake.starts_with("s3://") {
        bail!(
            "only an s3:// lake can be registered in Glue (Athena reads tables from S3), not {:?}: \
             pass --lake s3://bucket/prefix",
            args.lake
        );
    }
    let lake = Lake::open(&args.lake, WriteOptions::default()).with_context(|| format!("opening the lake {}", args.lake))?;
    let report = runtime(Some(2))?.block_on(sync_lake(&args, &lake))?;
    print_report(&report, args.json)?;
    if report.failed > 0 {
        eprintln!("eventctl: error: {} of {} tables could not be synced (see each table's error)", report.failed, report.tables.len());
        return Ok(1);
    }
    Ok(0)
}

/// Glue database names as Athena accepts them: 1 to 255 of `a-z 0-9 _`.
fn check_database_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        bail!("--glue-database {name:?}: a Glue database for Athena is named with 1 to {MAX_NAME} lowercase letters, digits and _");
    }
    Ok(())
}

/// What the sync did, for the summary.
#[derive(Debug, Serialize)]
struct SyncReport {
    lake: String,
    database: String,
    /// `exists`, `created`, or (dry run) `missing`.
    database_action: &'static str,
    dry_run: bool,
    created: usize,
    updated: usize,
    unchanged: usize,
    /// Registered for this lake, its Delta table gone, kept (no `--prune`).
    stale: usize,
    /// Registered for this lake, its Delta table gone, deleted (`--prune`; in a dry run: would be).
    deleted: usize,
    failed: usize,
    tables: Vec<TableReport>,
}

/// What happened to one Glue table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    Created,
    Updated,
    Unchanged,
    Stale,
    Deleted,
    Failed,
}

/// One Glue table of the report.
#[derive(Debug, Serialize)]
struct TableReport {
    /// The Glue table name.
    table: String,
    /// The Delta table below the lake root (`events/type=<t>` or `quarantine`).
    lake_table: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_type: Option<String>,
    action: Action,
    location: String,
    columns: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta_version: Option<i64>,
    /// What an update changes (or would).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    changes: Vec<String>,
    /// Columns registered with a stand-in type, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    notes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The lake table a Glue table stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Type(String),
    Quarantine,
}

impl Source {
    /// Its folder below the lake root, as recorded in [`LAKE_TABLE_PARAM`].
    fn lake_table(&self) -> String {
        match self {
            Source::Type(t) => table_dir(t),
            Source::Quarantine => QUARANTINE_DIR.to_owned(),
        }
    }
}

/// A Glue table to sync.
#[derive(Debug)]
struct Target {
    source: Source,
    /// The Glue name.
    name: String,
    /// Why it is not synced at all (an unusable name).
    refused: Option<String>,
    /// Other types mapping to the same name.
    rivals: Vec<String>,
}

/// The Glue table name of a type: lowercase, every character but `a-z 0-9 _` as `_`.
pub fn glue_table_name(event_type: &str) -> String {
    event_type.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c.to_ascii_lowercase() } else { '_' }).collect()
}

/// The targets: one per type (with its rivals and refusals), then the quarantine when present.
fn plan(types: &[String], quarantine: bool) -> Vec<Target> {
    let mut by_name: HashMap<String, Vec<&str>> = HashMap::new();
    for t in types {
        by_name.entry(glue_table_name(t)).or_default().push(t);
    }
    let mut targets: Vec<Target> = types
        .iter()
        .map(|t| {
            let name = glue_table_name(t);
            let rivals: Vec<String> = by_name.get(&name).into_iter().flatten().copied().filter(|r| *r != t.as_str()).map(str::to_owned).collect();
            let refused = if name.is_empty() || name.len() > MAX_NAME {
                Some(format!("type {t:?} gives no Glue table name of 1 to {MAX_NAME} characters"))
            } else if name == QUARANTINE_TABLE {
                Some(format!("type {t:?} maps to the Glue name {QUARANTINE_TABLE:?}, which is kept for the quarantine table: rename the type"))
            } else {
                None
            };
            Target { source: Source::Type(t.clone()), name, refused, rivals }
        })
        .collect();
    if quarantine {
        targets.push(Target { source: Source::Quarantine, name: QUARANTINE_TABLE.to_owned(), refused: None, rivals: Vec::new() });
    }
    targets
}

/// What the sync manages of a Glue table: what an update compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Managed {
    table_type: Option<String>,
    location: Option<String>,
    input_format: Option<String>,
    output_format: Option<String>,
    serde: Option<String>,
    columns: Vec<GlueColumn>,
    partition_keys: Vec<GlueColumn>,
    /// The parameters the sync sets ([`FIXED_PARAMS`] and [`LAKE_TABLE_PARAM`]).
    parameters: BTreeMap<String, String>,
}

/// A column as Glue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GlueColumn {
    name: String,
    hive_type: String,
    comment: Option<String>,
}

impl GlueColumn {
    fn new(name: &str, hive_type: &str) -> Self {
        GlueColumn { name: name.to_owned(), hive_type: hive_type.to_owned(), comment: None }
    }

    fn to_glue(&self) -> Result<Column> {
        Column::builder()
            .name(&self.name)
            .r#type(&self.hive_type)
            .set_comment(self.comment.clone())
            .build()
            .with_context(|| format!("Glue column {}", self.name))
    }

    fn from_glue(c: &Column) -> Self {
        GlueColumn { name: c.name().to_owned(), hive_type: c.r#type().unwrap_or_default().to_owned(), comment: c.comment().map(str::to_owned) }
    }
}

/// The table the sync wants for a lake table, and notes on columns it could not type.
fn desired(source: &Source, location: &str, schema: &SchemaRef) -> (Managed, Vec<String>) {
    let mut notes = Vec::new();
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            let (hive_type, fallback) = match hive_type(f.data_type()) {
                Ok(t) if t.len() <= MAX_TYPE_CHARS => (t, None),
                Ok(_) => ("string".to_owned(), Some(format!("its Hive type is longer than Glue's {MAX_TYPE_CHARS} characters"))),
                Err(why) => ("string".to_owned(), Some(why)),
            };
            if let Some(why) = &fallback {
                notes.push(format!("column {}: {why}; registered as string (Athena reads its type from the Delta log)", f.name()));
            }
            let meta = f.metadata();
            let mut comment = match (meta.get(PATH_METADATA), f.name() == LEFTOVERS) {
                (Some(path), _) => Some(format!("from {path}")),
                (None, true) => Some("values no typed column holds, by JSON Pointer".to_owned()),
                (None, false) => None,
            };
            if meta.contains_key(JSON_METADATA) {
                comment = Some(comment.map_or_else(|| "JSON text".to_owned(), |c| format!("{c} (JSON text)")));
            }
            if let Some(why) = fallback {
                comment = Some(format!("Arrow type {}: {why}", f.data_type()));
            }
            GlueColumn { name: f.name().to_ascii_lowercase(), hive_type, comment: comment.map(|c| truncate(&c, MAX_NAME)) }
        })
        .collect();
    let mut parameters: BTreeMap<String, String> = FIXED_PARAMS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    parameters.insert(LAKE_TABLE_PARAM.to_owned(), source.lake_table());
    let managed = Managed {
        table_type: Some(TABLE_TYPE.to_owned()),
        location: Some(location.to_owned()),
        input_format: Some(INPUT_FORMAT.to_owned()),
        output_format: Some(OUTPUT_FORMAT.to_owned()),
        serde: Some(SERDE.to_owned()),
        columns,
        partition_keys: vec![GlueColumn::new("date", "date"), GlueColumn::new("hour", "int")],
        parameters,
    };
    (managed, notes)
}

/// The managed part of an existing Glue table.
fn managed_of(t: &Table) -> Managed {
    let sd = t.storage_descriptor();
    let params = t.parameters();
    let mut keys: Vec<&str> = FIXED_PARAMS.iter().map(|(k, _)| *k).collect();
    keys.push(LAKE_TABLE_PARAM);
    let parameters = keys.into_iter().filter_map(|k| params.and_then(|p| p.get(k)).map(|v| (k.to_owned(), v.clone()))).collect();
    Managed {
        table_type: t.table_type().map(str::to_owned),
        location: sd.and_then(|s| s.location()).map(str::to_owned),
        input_format: sd.and_then(|s| s.input_format()).map(str::to_owned),
        output_format: sd.and_then(|s| s.output_format()).map(str::to_owned),
        serde: sd.and_then(|s| s.serde_info()).and_then(|s| s.serialization_library()).map(str::to_owned),
        columns: sd.map(|s| s.columns().iter().map(GlueColumn::from_glue).collect()).unwrap_or_default(),
        partition_keys: t.partition_keys().iter().map(GlueColumn::from_glue).collect(),
        parameters,
    }
}

/// What differs between the table in Glue and the one wanted, for people.
fn changes(old: &Managed, new: &Managed) -> Vec<String> {
    let mut out = Vec::new();
    let old_cols: HashMap<&str, &GlueColumn> = old.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let new_cols: HashMap<&str, &GlueColumn> = new.columns.iter().map(|c| (c.name.as_str(), c)).collect();
    let added: Vec<&str> = new.columns.iter().map(|c| c.name.as_str()).filter(|n| !old_cols.contains_key(n)).collect();
    let removed: Vec<&str> = old.columns.iter().map(|c| c.name.as_str()).filter(|n| !new_cols.contains_key(n)).collect();
    let changed: Vec<String> = new
        .columns
        .iter()
        .filter_map(|c| old_cols.get(c.name.as_str()).filter(|o| **o != c).map(|o| (o, c)))
        .map(|(o, c)| if o.hive_type == c.hive_type { format!("{} (comment)", c.name) } else { format!("{} ({} -> {})", c.name, o.hive_type, c.hive_type) })
        .collect();
    for (what, list) in [("columns added", added.join(", ")), ("columns removed", removed.join(", ")), ("columns changed", changed.join(", "))] {
        if !list.is_empty() {
            out.push(format!("{what}: {list}"));
        }
    }
    if out.is_empty() && old.columns != new.columns {
        out.push("columns reordered".to_owned());
    }
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".to_owned());
    if old.location != new.location {
        out.push(format!("location: {} -> {}", show(&old.location), show(&new.location)));
    }
    if old.partition_keys != new.partition_keys {
        let keys = |k: &[GlueColumn]| k.iter().map(|c| format!("{} {}", c.name, c.hive_type)).collect::<Vec<_>>().join(", ");
        out.push(format!("partition keys: [{}] -> [{}]", keys(&old.partition_keys), keys(&new.partition_keys)));
    }
    if (&old.input_format, &old.output_format, &old.serde) != (&new.input_format, &new.output_format, &new.serde) {
        out.push("storage format: Parquet input/output formats and SerDe".to_owned());
    }
    if old.table_type != new.table_type {
        out.push(format!("table type: {} -> {}", show(&old.table_type), show(&new.table_type)));
    }
    let params: Vec<&str> = new.parameters.iter().filter(|(k, v)| old.parameters.get(*k) != Some(*v)).map(|(k, _)| k.as_str()).collect();
    if !params.is_empty() {
        out.push(format!("parameters: {}", params.join(", ")));
    }
    out
}

/// The Hive type of an Arrow type, or why there is none.
fn hive_type(dt: &DataType) -> Result<String, String> {
    Ok(match dt {
        DataType::Boolean => "boolean".to_owned(),
        DataType::Int8 => "tinyint".to_owned(),
        DataType::Int16 | DataType::UInt8 => "smallint".to_owned(),
        DataType::Int32 | DataType::UInt16 => "int".to_owned(),
        // Hive has no unsigned types: the next wider signed one (bigint for u64: values past
        // 2^63 - 1 do not fit, which line numbers and sizes never reach).
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "bigint".to_owned(),
        DataType::Float16 | DataType::Float32 => "float".to_owned(),
        DataType::Float64 => "double".to_owned(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".to_owned(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => "binary".to_owned(),
        DataType::Date32 | DataType::Date64 => "date".to_owned(),
        DataType::Timestamp(_, _) => "timestamp".to_owned(),
        DataType::Decimal128(p, s) if *p <= 38 && *s >= 0 => format!("decimal({p},{s})"),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => format!("array<{}>", hive_type(f.data_type())?),
        DataType::Struct(fields) => struct_type(fields)?,
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!("map<{},{}>", hive_type(kv[0].data_type())?, hive_type(kv[1].data_type())?),
            other => return Err(format!("map entries of type {other} have no Hive type")),
        },
        other => return Err(format!("Arrow type {other} has no Hive type")),
    })
}

/// `struct<a:..,b:..>`: field names must be Hive identifiers, distinct case-insensitively.
fn struct_type(fields: &Fields) -> Result<String, String> {
    if fields.is_empty() {
        return Err("an empty struct has no Hive type".to_owned());
    }
    let mut seen = std::collections::HashSet::new();
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        let name = f.name().to_ascii_lowercase();
        let identifier = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !identifier {
            return Err(format!("struct field {:?} is not a Hive identifier", f.name()));
        }
        if !seen.insert(name.clone()) {
            return Err(format!("struct fields named {:?} differ only in case", f.name()));
        }
        parts.push(format!("{name}:{}", hive_type(f.data_type())?));
    }
    Ok(format!("struct<{}>", parts.join(",")))
}

/// At most `max` characters of `s`.
fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// What a sync needs while syncing tables.
struct Ctx<'a> {
    client: &'a Client,
    lake: &'a Lake,
    database: &'a str,
    /// False in a dry run whose database does not exist yet (every table would be created).
    database_exists: bool,
    dry_run: bool,
}

async fn sync_lake(args: &SyncArgs, lake: &Lake) -> Result<SyncReport> {
    let types = lake.registry.types().await.with_context(|| format!("listing the tables of {}", args.lake))?;
    let quarantine = has_quarantine(lake).await?;
    tracing::info!(types = types.len(), quarantine, "lake tables listed");
    let client = glue_client(args.endpoint_url.as_deref(), args.region.as_deref()).await;
    let database_action = ensure_database(&client, &args.glue_database, &args.lake, args.dry_run).await?;
    let ctx = Ctx {
        client: &client,
        lake,
        database: &args.glue_database,
        database_exists: database_action != "missing",
        dry_run: args.dry_run,
    };
    let targets = plan(&types, quarantine);
    let mut tables: Vec<TableReport> = futures::stream::iter(targets.iter().map(|t| sync_target(&ctx, t))).buffer_unordered(CONCURRENCY).collect().await;
    if ctx.database_exists {
        let wanted: std::collections::HashSet<String> = targets.iter().map(|t| t.source.lake_table()).collect();
        let stale = stale_tables(&ctx, &wanted).await?;
        if args.prune && !stale.is_empty() && targets.is_empty() {
            bail!(
                "the lake {} holds no tables: refusing to --prune the {} Glue tables registered for it (is the lake URL right?)",
                args.lake,
                stale.len()
            );
        }
        let prune = args.prune;
        let removed: Vec<TableReport> =
            futures::stream::iter(stale.into_iter().map(|t| remove_stale(&ctx, t, prune))).buffer_unordered(CONCURRENCY).collect().await;
        tables.extend(removed);
    }
    tables.sort_by(|a, b| (&a.table, &a.lake_table).cmp(&(&b.table, &b.lake_table)));
    let count = |a: Action| tables.iter().filter(|t| t.action == a).count();
    Ok(SyncReport {
        lake: args.lake.clone(),
        database: args.glue_database.clone(),
        database_action,
        dry_run: args.dry_run,
        created: count(Action::Created),
        updated: count(Action::Updated),
        unchanged: count(Action::Unchanged),
        stale: count(Action::Stale),
        deleted: count(Action::Deleted),
        failed: count(Action::Failed),
        tables,
    })
}

/// True when the lake has a quarantine table (a `quarantine/_delta_log/`).
async fn has_quarantine(lake: &Lake) -> Result<bool> {
    lake.root.is_table(QUARANTINE_DIR).await.with_context(|| format!("looking for the quarantine table of {}", lake.root.url))
}

/// The Glue client: region and credentials from the standard environment (region defaults to
/// us-east-1), `endpoint_url` for a Glue-compatible server, rustls (ring) over hyper, the
/// SDK's standard retries (throttling, server errors), as the timeline's DynamoDB client.
async fn glue_client(endpoint_url: Option<&str>, region: Option<&str>) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let loader = || {
        let mut l = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http.clone())
            .retry_config(RetryConfig::standard().with_max_attempts(5))
            .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(3)).operation_attempt_timeout(Duration::from_secs(20)).build());
        if let Some(e) = endpoint_url {
            l = l.endpoint_url(e);
        }
        if let Some(r) = region {
            l = l.region(Region::new(r.to_owned()));
        }
        l
    };
    let sdk = loader().load().await;
    if sdk.region().is_some() {
        return Client::new(&sdk);
    }
    Client::new(&loader().region(Region::new("us-east-1")).load().await)
}

/// Creates the database when missing (not in a dry run): `exists`, `created` or `missing`.
async fn ensure_database(client: &Client, database: &str, lake: &str, dry_run: bool) -> Result<&'static str> {
    match client.get_database().name(database).send().await {
        Ok(_) => return Ok("exists"),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => {}
        Err(e) => bail!("reading Glue database {database}: {}", DisplayErrorContext(e)),
    }
    if dry_run {
        return Ok("missing");
    }
    let input = DatabaseInput::builder()
        .name(database)
        .description(truncate(&format!("Delta tables of the event lake {lake} (eventctl catalog sync)"), 2048))
        .build()
        .context("Glue database input")?;
    match client.create_database().database_input(input).send().await {
        Ok(_) => {
            tracing::info!(database, "Glue database created");
            Ok("created")
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_already_exists_exception()) => Ok("exists"),
        Err(e) => bail!("creating Glue database {database}: {}", DisplayErrorContext(e)),
    }
}

/// The location of a lake table: its root URL with a trailing `/`.
fn location(lake: &Lake, source: &Source) -> String {
    format!("{}{}/", lake.root.base_url, source.lake_table())
}

/// Syncs one table; errors become the report's `failed`.
async fn sync_target(ctx: &Ctx<'_>, target: &Target) -> TableReport {
    let mut report = TableReport {
        table: target.name.clone(),
        lake_table: target.source.lake_table(),
        event_type: match &target.source {
            Source::Type(t) => Some(t.clone()),
            Source::Quarantine => None,
        },
        action: Action::Failed,
        location: location(ctx.lake, &target.source),
        columns: 0,
        delta_version: None,
        changes: Vec::new(),
        notes: Vec::new(),
        error: None,
    };
    match try_sync(ctx, target, &mut report).await {
        Ok(action) => {
            tracing::info!(table = %report.table, action = ?action, dry_run = ctx.dry_run, "Glue table synced");
            report.action = action;
        }
        Err(e) => {
            tracing::debug!(table = %report.table, error = %format!("{e:#}"), "Glue table not synced");
            report.error = Some(format!("{e:#}"));
        }
    }
    report
}

async fn try_sync(ctx: &Ctx<'_>, target: &Target, report: &mut TableReport) -> Result<Action> {
    if let Some(why) = &target.refused {
        bail!("{why}");
    }
    let (schema, version) = lake_schema(ctx.lake, &target.source, &report.location).await?;
    report.delta_version = version;
    let (want, notes) = desired(&target.source, &report.location, &schema);
    report.columns = want.columns.len();
    report.notes = notes;
    let existing = if ctx.database_exists { get_table(ctx.client, ctx.database, &target.name).await? } else { None };
    check_ownership(ctx.database, target, existing.as_ref())?;
    let Some(existing) = existing else {
        if !ctx.dry_run {
            let input = table_input(&target.name, &want, version, None)?;
            ctx.client
                .create_table()
                .database_name(ctx.database)
                .table_input(input)
                .send()
                .await
                .map_err(|e| anyhow!("CreateTable {}.{}: {}", ctx.database, target.name, DisplayErrorContext(e)))?;
        }
        return Ok(Action::Created);
    };
    let have = managed_of(&existing);
    if have == want {
        return Ok(Action::Unchanged);
    }
    report.changes = changes(&have, &want);
    if !ctx.dry_run {
        let input = table_input(&target.name, &want, version, Some(&existing))?;
        ctx.client
            .update_table()
            .database_name(ctx.database)
            .table_input(input)
            .set_version_id(existing.version_id().map(str::to_owned))
            .send()
            .await
            .map_err(|e| anyhow!("UpdateTable {}.{}: {}", ctx.database, target.name, DisplayErrorContext(e)))?;
    }
    Ok(Action::Updated)
}

/// The Glue tables of the database registered by this command for this lake (their
/// [`LAKE_TABLE_PARAM`] set, their location below the lake root) whose lake table is not
/// among `wanted`.
async fn stale_tables(ctx: &Ctx<'_>, wanted: &std::collections::HashSet<String>) -> Result<Vec<Table>> {
    let root = ctx.lake.root.base_url.as_str();
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = ctx
            .client
            .get_tables()
            .database_name(ctx.database)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| anyhow!("GetTables {}: {}", ctx.database, DisplayErrorContext(e)))?;
        for t in page.table_list() {
            let Some(lake_table) = t.parameters().and_then(|p| p.get(LAKE_TABLE_PARAM)) else { continue };
            let here = t.storage_descriptor().and_then(|sd| sd.location()).is_some_and(|l| l.starts_with(root));
            if here && !wanted.contains(lake_table) {
                out.push(t.clone());
            }
        }
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(out)
}

/// Reports (and with `prune`, deletes) a Glue table whose lake table is gone, after checking
/// once more that no Delta table is there (a writer may have just created it).
async fn remove_stale(ctx: &Ctx<'_>, table: Table, prune: bool) -> TableReport {
    let lake_table = table.parameters().and_then(|p| p.get(LAKE_TABLE_PARAM)).cloned().unwrap_or_default();
    let mut report = TableReport {
        table: table.name().to_owned(),
        event_type: lake_table.strip_prefix("events/type=").map(str::to_owned),
        lake_table: lake_table.clone(),
        action: Action::Stale,
        location: table.storage_descriptor().and_then(|sd| sd.location()).unwrap_or_default().to_owned(),
        columns: table.storage_descriptor().map_or(0, |sd| sd.columns().len()),
        delta_version: None,
        changes: vec!["its Delta table is gone from the lake".to_owned()],
        notes: Vec::new(),
        error: None,
    };
    if !prune {
        return report;
    }
    let result = async {
        if ctx.lake.root.is_table(&lake_table).await.with_context(|| format!("checking the lake table {lake_table}"))? {
            bail!("a Delta table appeared at {lake_table} meanwhile: not deleted");
        }
        if !ctx.dry_run {
            ctx.client
                .delete_table()
                .database_name(ctx.database)
                .name(table.name())
                .send()
                .await
                .map_err(|e| anyhow!("DeleteTable {}.{}: {}", ctx.database, table.name(), DisplayErrorContext(e)))?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            tracing::info!(table = %report.table, dry_run = ctx.dry_run, "stale Glue table deleted");
            report.action = Action::Deleted;
        }
        Err(e) => {
            report.action = Action::Failed;
            report.error = Some(format!("{e:#}"));
        }
    }
    report
}

/// The Arrow schema of a lake table and its Delta version (types only).
async fn lake_schema(lake: &Lake, source: &Source, location: &str) -> Result<(SchemaRef, Option<i64>)> {
    match source {
        Source::Quarantine => Ok((event_lake::quarantine::quarantine_schema(), None)),
        Source::Type(t) => {
            let table = lake.root.open_table(t).await.with_context(|| format!("opening the Delta table of type {t:?} at {location}"))?;
            let Some(table) = table else {
                bail!("no Delta table at {location} (no _delta_log): nothing to register");
            };
            let schema = table.type_schema().with_context(|| format!("reading the schema of type {t:?}"))?;
            Ok((schema.arrow_schema(), Some(table.version())))
        }
    }
}

/// The Glue table, `None` when it does not exist.
async fn get_table(client: &Client, database: &str, name: &str) -> Result<Option<Table>> {
    match client.get_table().database_name(database).name(name).send().await {
        Ok(out) => Ok(out.table),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_entity_not_found_exception()) => Ok(None),
        Err(e) => bail!("GetTable {database}.{name}: {}", DisplayErrorContext(e)),
    }
}

/// Refuses a Glue table the sync did not create for this lake table, and a name several
/// types map to (unless this type already holds it).
fn check_ownership(database: &str, target: &Target, existing: Option<&Table>) -> Result<()> {
    let mine = target.source.lake_table();
    let owner = existing.map(|t| t.parameters().and_then(|p| p.get(LAKE_TABLE_PARAM)));
    if !target.rivals.is_empty() && owner.flatten() != Some(&mine) {
        bail!(
            "type {:?} maps to the Glue table name {:?} as type(s) {} do, and that table is not registered for it: \
             not synced (rename the types so that their names differ)",
            target_type(target),
            target.name,
            target.rivals.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>().join(", ")
        );
    }
    match owner {
        Some(None) => bail!(
            "Glue table {database}.{} exists and was not created by `eventctl catalog sync` (no {LAKE_TABLE_PARAM} parameter): left alone",
            target.name
        ),
        Some(Some(o)) if *o != mine => bail!("Glue table {database}.{} is registered for the lake table {o}, not {mine}: left alone", target.name),
        _ => Ok(()),
    }
}

fn target_type(target: &Target) -> &str {
    match &target.source {
        Source::Type(t) => t,
        Source::Quarantine => QUARANTINE_DIR,
    }
}

/// The TableInput of a create or an update: what the sync manages, plus (on update) the
/// description, owner, retention and parameters others set.
fn table_input(name: &str, want: &Managed, version: Option<i64>, existing: Option<&Table>) -> Result<TableInput> {
    let mut parameters: HashMap<String, String> = existing.and_then(|t| t.parameters()).cloned().unwrap_or_default();
    parameters.extend(want.parameters.iter().map(|(k, v)| (k.clone(), v.clone())));
    match version {
        Some(v) => parameters.insert(DELTA_VERSION_PARAM.to_owned(), v.to_string()),
        None => parameters.remove(DELTA_VERSION_PARAM),
    };
    let serde = SerDeInfo::builder()
        .set_serialization_library(want.serde.clone())
        .parameters("serialization.format", "1")
        .build();
    let columns = want.columns.iter().map(GlueColumn::to_glue).collect::<Result<Vec<_>>>()?;
    let partition_keys = want.partition_keys.iter().map(GlueColumn::to_glue).collect::<Result<Vec<_>>>()?;
    let sd = StorageDescriptor::builder()
        .set_columns(Some(columns))
        .set_location(want.location.clone())
        .set_input_format(want.input_format.clone())
        .set_output_format(want.output_format.clone())
        .serde_info(serde)
        .build();
    let description = existing
        .and_then(|t| t.description().map(str::to_owned))
        .unwrap_or_else(|| format!("Delta table {} (eventctl catalog sync)", want.location.as_deref().unwrap_or_default()));
    TableInput::builder()
        .name(name)
        .description(description)
        .set_owner(existing.and_then(|t| t.owner().map(str::to_owned)))
        .set_retention(existing.map(|t| t.retention()))
        .set_table_type(want.table_type.clone())
        .set_partition_keys(Some(partition_keys))
        .storage_descriptor(sd)
        .set_parameters(Some(parameters))
        .build()
        .with_context(|| format!("Glue table input of {name}"))
}

fn print_report(report: &SyncReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print_human(report);
    }
    for t in report.tables.iter().filter(|t| t.action == Action::Failed) {
        eprintln!("eventctl: error: Glue table {} ({}): {}", t.table, t.lake_table, t.error.as_deref().unwrap_or("failed"));
    }
    Ok(())
}

fn print_human(report: &SyncReport) {
    let would = if report.dry_run { "would be " } else { "" };
    let db = match report.database_action {
        "missing" => "missing (would be created)".to_owned(),
        other => other.to_owned(),
    };
    println!("Glue database {}: {db}", report.database);
    let width = report.tables.iter().map(|t| t.table.len()).max().unwrap_or(0);
    for t in &report.tables {
        let action = match (t.action, report.dry_run) {
            (Action::Created, true) => "would create",
            (Action::Created, false) => "created",
            (Action::Updated, true) => "would update",
            (Action::Updated, false) => "updated",
            (Action::Unchanged, _) => "unchanged",
            (Action::Stale, _) => "stale",
            (Action::Deleted, true) => "would delete",
            (Action::Deleted, false) => "deleted",
            (Action::Failed, _) => "FAILED",
        };
        let detail = match t.action {
            Action::Created => format!("{} ({} columns)", t.location, t.columns),
            Action::Updated => t.changes.join("; "),
            Action::Stale => format!("{} is gone from the lake; --prune deletes this Glue table", t.lake_table),
            Action::Deleted => format!("{} is gone from the lake", t.lake_table),
            Action::Unchanged => String::new(),
            Action::Failed => t.error.clone().unwrap_or_default(),
        };
        println!("{}", format!("  {action:<12} {:<width$}  {detail}", t.table).trim_end());
        for n in &t.notes {
            println!("  {:<12} {:<width$}  note: {n}", "", "");
        }
    }
    println!(
        "catalog sync of {} into Glue database {}: {} {would}created, {} {would}updated, {} unchanged, {} stale, {} {would}deleted, {} failed",
        report.lake, report.database, report.created, report.updated, report.unchanged, report.stale, report.deleted, report.failed
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn type_names_map_to_lowercase_identifiers() {
        assert_eq!(glue_table_name("Shop.Checkout-Done_2"), "shop_checkout_done_2");
        assert_eq!(glue_table_name("page_view"), "page_view");
    }

    #[test]
    fn colliding_and_reserved_names_are_planned_as_such() {
        let types = ["a.b".to_owned(), "A_b".to_owned(), "c".to_owned(), "Quarantine".to_owned()];
        let plan = plan(&types, true);
        assert_eq!(plan.len(), 5);
        assert_eq!(plan[0].rivals, vec!["A_b".to_owned()]);
        assert_eq!(plan[1].rivals, vec!["a.b".to_owned()]);
        assert!(plan[2].rivals.is_empty() && plan[2].refused.is_none());
        assert!(plan[3].refused.as_deref().is_some_and(|r| r.contains("quarantine")));
        assert_eq!(plan[4].source, Source::Quarantine);
    }

    #[test]
    fn arrow_types_become_hive_types() {
        use arrow_schema::{Field, TimeUnit};
        let list = DataType::List(Arc::new(Field::new("item", DataType::Int64, true)));
        assert_eq!(hive_type(&list).as_deref(), Ok("array<bigint>"));
        let st = DataType::Struct(vec![Field::new("A", DataType::Utf8, true), Field::new("n", DataType::Float64, true)].into());
        assert_eq!(hive_type(&st).as_deref(), Ok("struct<a:string,n:double>"));
        assert_eq!(hive_type(&DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))).as_deref(), Ok("timestamp"));
        let bad = DataType::Struct(vec![Field::new("a b", DataType::Utf8, true)].into());
        assert!(hive_type(&bad).is_err());
        assert!(hive_type(&DataType::Null).is_err());
    }
}

//! The lake as DataFusion tables.
//!
//! - Each event type is a table named after the type (quote names with `.` or `-`), with the
//!   columns of the type's newest schema version (a superset of the older ones: files written
//!   before a column existed read it as NULL) plus the partition columns `date` (DATE) and
//!   `hour` (INT).
//! - `lake.events` is every type at once with the columns common to all of them: `id`,
//!   `created_at`, `user_id` (NULL for types without one), `type`, `date`, `hour`.
//!
//! A scan never lists the lake: each type is a Delta table (see `event_lake::table`) and its
//! files come from the table's log, read once per session; the time predicates (see
//! [`crate::prune`]) prune them by the log's `date`/`hour` partition values. Files that are
//! not committed, or were removed by compaction, are never read. Parquet then reads only the
//! projected columns, and row groups are pruned by their statistics.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::{DataFusionError, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchemaBuilder;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;

use event_lake::LakeStore;
use event_lake::layout::PartitionKey;
use event_lake::registry::SchemaRegistry;
use event_lake::schema::{CREATED_AT, DType, ID, Section};

use crate::prune::HourRange;

/// Concurrent table log / schema reads.
const LIST_CONCURRENCY: usize = 32;

type DfResult<T> = Result<T, DataFusionError>;

fn df_err(e: impl std::error::Error + Send + Sync + 'static) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// A data file with its partition.
#[derive(Debug, Clone)]
pub struct LakeFile {
    /// Type and hour.
    pub partition: PartitionKey,
    /// Path and size.
    pub meta: ObjectMeta,
}

/// One type's table as a session reads it.
struct Snapshot {
    /// The type's schema at that version (`None`: no table).
    schema: Option<Arc<event_lake::TypeSchema>>,
    /// Its live files.
    files: Arc<Vec<LakeFile>>,
}

/// What every table of a session shares: the store, the schemas, the snapshots.
pub struct LakeCatalog {
    root: LakeStore,
    registry: SchemaRegistry,
    url: ObjectStoreUrl,
    /// Prepended to the files' lake-relative paths in scans: empty when `url` is the lake's
    /// own store, the lake's prefix when `url` is the bucket (or `file:///`), as executors of
    /// a cluster resolve it.
    path_prefix: object_store::path::Path,
    as_of: event_lake::AsOf,
    /// Each type's snapshot, read from its log once per session (schema and files together).
    snapshots: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<Snapshot>>>>>,
    types: tokio::sync::OnceCell<Vec<String>>,
}

impl std::fmt::Debug for LakeCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LakeCatalog").field("store", &self.root.store).field("url", &self.url).finish_non_exhaustive()
    }
}

impl LakeCatalog {
    /// A catalog over a lake whose files are found under `url` (a store registered in the
    /// session) at `path_prefix` + their path in the lake.
    pub fn new(root: LakeStore, url: ObjectStoreUrl, path_prefix: object_store::path::Path, as_of: event_lake::AsOf) -> Self {
        LakeCatalog {
            registry: SchemaRegistry::new(root.clone()),
            root,
            url,
            path_prefix,
            as_of,
            snapshots: Mutex::new(HashMap::new()),
            types: tokio::sync::OnceCell::new(),
        }
    }

    /// Every type with a table (one LIST of `events/` with a delimiter).
    pub async fn types(&self) -> DfResult<Vec<String>> {
        self.types.get_or_try_init(|| async { self.registry.types().await.map_err(df_err) }).await.cloned()
    }

    /// The schema of a type in this session's snapshot, or `None` for a type the lake never
    /// held. A table that did not exist yet at an `--as-of` moment has its newest schema (and
    /// no files), so a query on it answers nothing rather than failing.
    pub async fn type_schema(&self, event_type: &str) -> DfResult<Option<Arc<event_lake::TypeSchema>>> {
        let snapshot = self.snapshot(event_type).await?;
        if snapshot.schema.is_some() || self.as_of == event_lake::AsOf::Latest {
            return Ok(snapshot.schema.clone());
        }
        let s = self.registry.get(event_type).await.map_err(df_err)?;
        Ok((s.version > 0).then_some(s))
    }

    /// A type's table at this session's snapshot: its log is read once per session, and its
    /// schema and files both come from that one read.
    async fn snapshot(&self, event_type: &str) -> DfResult<Arc<Snapshot>> {
        let cell = {
            let mut map = self.snapshots.lock().map_err(|_| DataFusionError::Internal("snapshot cache poisoned".into()))?;
            map.entry(event_type.to_owned()).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let snapshot = match self.root.open_table_as_of(event_type, self.as_of).await.map_err(df_err)? {
                Some(t) => {
                    let schema = t.type_schema().map_err(df_err)?;
                    let files = t
                        .files(None)
                        .map_err(df_err)?
                        .into_iter()
                        .map(|f| LakeFile { partition: f.partition, meta: f.meta })
                        .collect();
                    Snapshot { schema: Some(Arc::new(schema)), files: Arc::new(files) }
                }
                None => Snapshot { schema: None, files: Arc::new(Vec::new()) },
            };
            Ok::<_, DataFusionError>(Arc::new(snapshot))
        })
        .await
        .cloned()
    }

    /// The live files of a type's table in this session's snapshot.
    async fn table_files(&self, event_type: String) -> DfResult<Arc<Vec<LakeFile>>> {
        Ok(self.snapshot(&event_type).await?.files.clone())
    }

    /// The data files of some types within a range of hours, sorted by partition and path.
    pub async fn files(&self, types: &[String], range: &HourRange) -> DfResult<Vec<LakeFile>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let reads: Vec<_> = types.iter().cloned().map(|t| self.table_files(t)).collect();
        let tables: Vec<Arc<Vec<LakeFile>>> = futures::stream::iter(reads)
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        let mut files: Vec<LakeFile> = tables
            .iter()
            .flat_map(|l| l.iter())
            .filter(|f| f.meta.size > 0 && range.contains(f.partition.hour))
            .cloned()
            .collect();
        files.sort_by(|a, b| (&a.partition, &a.meta.location).cmp(&(&b.partition, &b.meta.location)));
        files.dedup_by(|a, b| a.meta.location == b.meta.location);
        Ok(files)
    }

    /// A Parquet scan of files (one file schema) with partition values per file.
    async fn scan(
        &self,
        state: &dyn Session,
        file_schema: SchemaRef,
        partition_cols: Vec<FieldRef>,
        files: Vec<(LakeFile, Vec<ScalarValue>)>,
        projection: Option<&Vec<usize>>,
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let table_schema = TableSchemaBuilder::from(&file_schema).with_table_partition_cols(partition_cols).build();
        if files.is_empty() {
            let full = table_schema.table_schema().clone();
            let projected = match projection {
                Some(p) => Arc::new(full.project(p)?),
                None => full,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        // Balanced groups by size, one per target partition (largest first).
        let n = state.config().target_partitions().max(1).min(files.len());
        let mut order: Vec<usize> = (0..files.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(files[i].0.meta.size));
        let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
        let mut files: Vec<Option<(LakeFile, Vec<ScalarValue>)>> = files.into_iter().map(Some).collect();
        for i in order {
            let Some((f, values)) = files[i].take() else { continue };
            let g = groups.iter_mut().min_by_key(|g| g.0).ok_or_else(|| DataFusionError::Internal("no file group".into()))?;
            g.0 += f.meta.size;
            let mut meta = f.meta;
            if !self.path_prefix.as_ref().is_empty() {
                meta.location = self.path_prefix.parts().chain(meta.location.parts()).collect();
            }
            g.1.push(PartitionedFile::new_from_meta(meta).with_partition_values(values));
        }
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(table_schema);
        let config = FileScanConfigBuilder::new(self.url.clone(), source)
            .with_file_groups(groups.into_iter().map(|g| FileGroup::new(g.1)).collect())
            .with_statistics(Statistics::new_unknown(&file_schema))
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

fn date_value(epoch_hour: i64) -> ScalarValue {
    ScalarValue::Date32(i32::try_from(epoch_hour.div_euclid(24)).ok())
}

fn hour_value(epoch_hour: i64) -> ScalarValue {
    ScalarValue::Int32(Some(epoch_hour.rem_euclid(24) as i32))
}

fn time_partition_cols() -> Vec<FieldRef> {
    vec![Arc::new(Field::new("date", DataType::Date32, false)), Arc::new(Field::new("hour", DataType::Int32, false))]
}

/// Top-level text columns as `Utf8View`: the Parquet reader decodes them straight into views,
/// which DataFusion hashes and compares faster (DISTINCT user ids, GROUP BY type).
fn with_view_types(schema: &Schema) -> SchemaRef {
    let fields: Vec<FieldRef> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.data_type() == &DataType::Utf8 {
                Arc::new(f.as_ref().clone().with_data_type(DataType::Utf8View))
            } else {
                f.clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn full_schema(file_schema: &Schema, partition_cols: &[FieldRef]) -> SchemaRef {
    let mut fields: Vec<FieldRef> = file_schema.fields().iter().cloned().collect();
    fields.extend(partition_cols.iter().cloned());
    Arc::new(Schema::new(fields))
}

/// One event type as a table.
#[derive(Debug)]
pub struct TypeTable {
    catalog: Arc<LakeCatalog>,
    event_type: String,
    file_schema: SchemaRef,
    schema: SchemaRef,
}

impl TypeTable {
    /// The table of a type with its newest schema.
    pub fn new(catalog: Arc<LakeCatalog>, schema: &event_lake::TypeSchema) -> Self {
        let file_schema = with_view_types(&schema.arrow_schema());
        let full = full_schema(&file_schema, &time_partition_cols());
        TypeTable { catalog, event_type: schema.event_type.clone(), file_schema, schema: full }
    }
}

#[async_trait]
impl TableProvider for TypeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Pruning is by whole hours: every predicate is applied to the rows again.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let range = HourRange::from_filters(filters);
        let files = self.catalog.files(std::slice::from_ref(&self.event_type), &range).await?;
        let files = files
            .into_iter()
            .map(|f| {
                let values = vec![date_value(f.partition.hour), hour_value(f.partition.hour)];
                (f, values)
            })
            .collect();
        self.catalog.scan(state, self.file_schema.clone(), time_partition_cols(), files, projection, limit).await
    }
}

/// Every event type as one table: `id`, `created_at`, `user_id`, `type`, `date`, `hour`.
#[derive(Debug)]
pub struct AllEventsTable {
    catalog: Arc<LakeCatalog>,
    file_schema: SchemaRef,
    schema: SchemaRef,
}

fn all_partition_cols() -> Vec<FieldRef> {
    let mut cols = vec![Arc::new(Field::new("type", DataType::Utf8, false))];
    cols.extend(time_partition_cols());
    cols
}

/// Name of the user column of `lake.events`.
pub const USER_ID: &str = "user_id";

impl AllEventsTable {
    /// The union table of a catalog.
    pub fn new(catalog: Arc<LakeCatalog>) -> Self {
        let file_schema = Arc::new(Schema::new(vec![
            Field::new(ID, DataType::Utf8View, false),
            Field::new(CREATED_AT, event_lake::schema::timestamp_type(), false),
            Field::new(USER_ID, DataType::Utf8View, true),
        ]));
        let schema = full_schema(&file_schema, &all_partition_cols());
        AllEventsTable { catalog, file_schema, schema }
    }
}

/// The types a set of filters allows (`type = 'x'`, `type IN (...)`), `None` for any.
fn types_of_filters(filters: &[Expr]) -> Option<BTreeSet<String>> {
    fn lit_str(e: &Expr) -> Option<String> {
        match e {
            Expr::Literal(ScalarValue::Utf8(Some(s)) | ScalarValue::Utf8View(Some(s)) | ScalarValue::LargeUtf8(Some(s)), _) => Some(s.clone()),
            _ => None,
        }
    }
    fn is_type(e: &Expr) -> bool {
        match e {
            Expr::Column(c) => c.name == "type",
            Expr::Cast(c) => is_type(&c.expr),
            _ => false,
        }
    }
    fn of(e: &Expr) -> Option<BTreeSet<String>> {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => match (of(left), of(right)) {
                (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
                (a, None) => a,
                (None, b) => b,
            },
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) => {
                let (a, b) = (of(left)?, of(right)?);
                Some(a.union(&b).cloned().collect())
            }
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => {
                if is_type(left) {
                    lit_str(right).map(|s| BTreeSet::from([s]))
                } else if is_type(right) {
                    lit_str(left).map(|s| BTreeSet::from([s]))
                } else {
                    None
                }
            }
            Expr::InList(l) if !l.negated && is_type(&l.expr) => l.list.iter().map(lit_str).collect(),
            _ => None,
        }
    }
    filters.iter().filter_map(of).reduce(|a, b| a.intersection(&b).cloned().collect())
}

#[async_trait]
impl TableProvider for AllEventsTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let range = HourRange::from_filters(filters);
        let mut types = self.catalog.types().await?;
        if let Some(allowed) = types_of_filters(filters) {
            types.retain(|t| allowed.contains(t));
        }
        // A type whose user_id is not a scalar cannot be read as text: such types are left
        // out (with a warning) rather than failing the query.
        let reads_user = projection.is_none_or(|p| p.contains(&2));
        if reads_user {
            let schemas: Vec<(String, Option<Arc<event_lake::TypeSchema>>)> = futures::stream::iter(types.iter().cloned())
                .map(|t| async move {
                    let s = self.catalog.type_schema(&t).await?;
                    Ok::<_, DataFusionError>((t, s))
                })
                .buffer_unordered(LIST_CONCURRENCY)
                .try_collect()
                .await?;
            let incompatible: BTreeSet<String> = schemas
                .into_iter()
                .filter(|(_, s)| {
                    s.as_ref().is_some_and(|s| {
                        s.columns.iter().any(|c| {
                            c.name == USER_ID && (c.section != Section::Attributes || matches!(c.dtype, DType::List { .. } | DType::Struct { .. }))
                        })
                    })
                })
                .map(|(t, _)| t)
                .collect();
            if !incompatible.is_empty() {
                tracing::warn!(?incompatible, "types whose user_id column is not text or a number are left out of lake.events");
                types.retain(|t| !incompatible.contains(t));
            }
        }
        let files = self.catalog.files(&types, &range).await?;
        let files = files
            .into_iter()
            .map(|f| {
                let values = vec![
                    ScalarValue::Utf8(Some(f.partition.event_type.to_string())),
                    date_value(f.partition.hour),
                    hour_value(f.partition.hour),
                ];
                (f, values)
            })
            .collect();
        self.catalog.scan(state, self.file_schema.clone(), all_partition_cols(), files, projection, limit).await
    }
}

/// The default schema: one table per event type, resolved when a query names it.
#[derive(Debug)]
pub struct TypesSchema {
    catalog: Arc<LakeCatalog>,
    tables: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

impl TypesSchema {
    /// The schema of a catalog.
    pub fn new(catalog: Arc<LakeCatalog>) -> Self {
        TypesSchema { catalog, tables: Mutex::new(HashMap::new()) }
    }
}

#[async_trait]
impl SchemaProvider for TypesSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.lock().map(|t| t.keys().cloned().collect()).unwrap_or_default()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.tables.lock().ok().and_then(|t| t.get(name).cloned()) {
            return Ok(Some(t));
        }
        // Type names are path segments: refuse anything else before touching the store.
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Ok(None);
        }
        let Some(schema) = self.catalog.type_schema(name).await? else { return Ok(None) };
        let table: Arc<dyn TableProvider> = Arc::new(TypeTable::new(self.catalog.clone(), &schema));
        if let Ok(mut t) = self.tables.lock() {
            t.insert(name.to_owned(), table.clone());
        }
        Ok(Some(table))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.lock().is_ok_and(|t| t.contains_key(name))
    }
}

/// The `lake` schema: `lake.events`, all types together.
#[derive(Debug)]
pub struct UnionSchema {
    events: Arc<dyn TableProvider>,
}

impl UnionSchema {
    /// The schema of a catalog.
    pub fn new(catalog: Arc<LakeCatalog>) -> Self {
        UnionSchema { events: Arc::new(AllEventsTable::new(catalog)) }
    }
}

#[async_trait]
impl SchemaProvider for UnionSchema {
    fn table_names(&self) -> Vec<String> {
        vec!["events".to_owned()]
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok((name == "events").then(|| self.events.clone()))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == "events"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn type_filters_select_types() {
        let f = [col("type").in_list(vec![lit("a"), lit("b")], false), col("type").eq(lit("b")).or(col("type").eq(lit("c")))];
        assert_eq!(types_of_filters(&f), Some(BTreeSet::from(["b".to_owned()])));
        assert_eq!(types_of_filters(&[col("user_id").eq(lit("u1"))]), None);
    }
}

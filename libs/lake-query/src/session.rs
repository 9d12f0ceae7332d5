//! A DataFusion session over a lake: the lake's store (local folder or S3, opened as the lake
//! library opens it) wrapped to count reads, registered in the runtime, and the lake's tables
//! in the catalog (`<type>` tables in the default schema, `lake.events`).

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use event_lake::LakeStore;
use url::Url;

use crate::QueryError;
use crate::counting::{CountingStore, ReadStats};
use crate::shard::Shard;
use crate::table::{LakeCatalog, TypesSchema, UnionSchema};

/// The URL the lake's store is registered under in the session.
const STORE_URL: &str = "lake://root/";
/// Bytes read from the end of a Parquet file in the first request.
const FOOTER_HINT: usize = 16 << 10;
/// Memory for cached Parquet footers.
const METADATA_CACHE: usize = 512 << 20;

/// A query session over one lake.
pub struct LakeSession {
    ctx: SessionContext,
    stats: Arc<ReadStats>,
    catalog: Arc<LakeCatalog>,
}

/// How a session runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// The share of partitions this session reads.
    pub shard: Shard,
    /// Query threads (default: the number of cores).
    pub threads: Option<usize>,
    /// The snapshot of the tables to read (time travel).
    pub as_of: event_lake::AsOf,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { shard: Shard::WHOLE, threads: None, as_of: event_lake::AsOf::Latest }
    }
}

impl LakeSession {
    /// Opens the lake at `url` (a local folder or `s3://bucket/prefix`).
    pub fn open(url: &str, options: &SessionOptions) -> Result<LakeSession, QueryError> {
        let root = LakeStore::open(url)?;
        let stats = Arc::new(ReadStats::default());
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(CountingStore::new(root.store.clone(), stats.clone()));
        let store_url = ObjectStoreUrl::parse(STORE_URL)?;
        // Footers stay cached across the queries of a session (the KPIs scan the same files
        // several times): 512 MiB holds the footers of a day of a large lake; bounded, LRU.
        let runtime = RuntimeEnvBuilder::new().with_metadata_cache_limit(METADATA_CACHE).build_arc()?;
        let base = Url::parse(STORE_URL).map_err(|e| QueryError::Invalid(e.to_string()))?;
        runtime.register_object_store(&base, store.clone());
        let threads = options.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())).max(1);
        // Lake files carry footers of a few KiB: the default 512 KiB footer read would fetch
        // small files whole and defeat column projection; 16 KiB covers the footers seen
        // (a larger one costs one more request).
        // On S3 every stream waits on one request at a time: more streams than cores keep the
        // link busy (each request is tens of milliseconds of latency).
        let partitions = if url.starts_with("s3://") { (threads * 4).max(16) } else { threads };
        let config = SessionConfig::new()
            .set_usize("datafusion.execution.parquet.metadata_size_hint", FOOTER_HINT)
            .with_target_partitions(partitions)
            .with_information_schema(false)
            .with_default_catalog_and_schema("datafusion", "public");
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        // Delta's log store reads the log through the unprefixed store (absolute paths): count
        // those reads too, and read each commit file once per session.
        let counted: Arc<dyn object_store::ObjectStore> = Arc::new(CountingStore::new(root.root_store.clone(), stats.clone()));
        let root_store: Arc<dyn object_store::ObjectStore> = Arc::new(crate::log_cache::LogCache::new(counted));
        let catalog = Arc::new(LakeCatalog::new(LakeStore { store, root_store, ..root }, store_url, options.shard, options.as_of));
        let cat = ctx.catalog("datafusion").ok_or_else(|| QueryError::Invalid("no default catalog".into()))?;
        cat.register_schema("public", Arc::new(TypesSchema::new(catalog.clone())))?;
        cat.register_schema("lake", Arc::new(UnionSchema::new(catalog.clone())))?;
        Ok(LakeSession { ctx, stats, catalog })
    }

    /// The DataFusion context (to register more tables or run DataFrame code).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// What the session has read so far.
    pub fn stats(&self) -> &Arc<ReadStats> {
        &self.stats
    }

    /// The tables' shared state.
    pub fn catalog(&self) -> &Arc<LakeCatalog> {
        &self.catalog
    }

    /// Plans one SQL statement.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame, QueryError> {
        Ok(self.ctx.sql(sql).await?)
    }

    /// Runs one SQL statement and collects its rows.
    pub async fn collect(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        Ok(self.sql(sql).await?.collect().await?)
    }
}

impl LakeSession {
    /// Runs one SQL statement: the result's schema and rows.
    pub async fn collect_with_schema(&self, sql: &str) -> Result<(datafusion::arrow::datatypes::SchemaRef, Vec<RecordBatch>), QueryError> {
        let df = self.sql(sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        Ok((schema, df.collect().await?))
    }

    /// The physical plan of a statement, indented (files, projections and pruning predicates).
    pub async fn explain(&self, sql: &str) -> Result<String, QueryError> {
        let plan = self.sql(sql).await?.create_physical_plan().await?;
        Ok(datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string())
    }
}

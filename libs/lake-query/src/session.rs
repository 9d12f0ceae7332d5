//! A DataFusion session over a lake: the lake's store (local folder or S3, opened as the lake
//! library opens it) wrapped to count reads, registered in the runtime, and the lake's tables
//! in the catalog (`<type>` tables in the default schema, `lake.events`).
//!
//! Queries run here, or, with [`SessionOptions::cluster`], on a Ballista cluster: the plan is
//! made here (the tables' files come from the Delta logs, read and pruned by this session,
//! exactly as for a local run) and the physical plan goes to the scheduler, whose executors
//! read the files from the lake with their own credentials (see [`crate::cluster`]).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use event_lake::LakeStore;
use url::Url;

use crate::QueryError;
use crate::counting::{CountingStore, ReadStats};
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
    /// The scheduler (`http://host:port`) queries run on, or `None` to run here.
    cluster: Option<String>,
}

/// How a session runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Query threads (default: the number of cores).
    pub threads: Option<usize>,
    /// The snapshot of the tables to read (time travel).
    pub as_of: event_lake::AsOf,
    /// Run queries on the Ballista cluster of this scheduler (`HOST:PORT`); needs the
    /// `cluster` feature.
    pub cluster: Option<String>,
    /// Partitions of a scan (default: the cores, x4 on S3; on a cluster, at least 16 so
    /// that the work spreads over every executor's slots).
    pub partitions: Option<usize>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { threads: None, as_of: event_lake::AsOf::Latest, cluster: None, partitions: None }
    }
}

impl LakeSession {
    /// Opens the lake at `url` (a local folder or `s3://bucket/prefix`).
    pub fn open(url: &str, options: &SessionOptions) -> Result<LakeSession, QueryError> {
        let root = LakeStore::open(url)?;
        let stats = Arc::new(ReadStats::default());
        let store: Arc<dyn object_store::ObjectStore> = Arc::new(CountingStore::new(root.store.clone(), stats.clone()));
        let cluster = match &options.cluster {
            None => None,
            #[cfg(not(feature = "cluster"))]
            Some(_) => return Err(no_cluster()),
            #[cfg(feature = "cluster")]
            Some(addr) => Some(scheduler_url(addr)?),
        };
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
        let partitions = options.partitions.unwrap_or(if url.starts_with("s3://") {
            (threads * 4).max(16)
        } else if cluster.is_some() {
            threads.max(16)
        } else {
            threads
        });
        let config = SessionConfig::new()
            .set_usize("datafusion.execution.parquet.metadata_size_hint", FOOTER_HINT)
            .with_target_partitions(partitions)
            .with_information_schema(false)
            .with_default_catalog_and_schema("datafusion", "public");
        let ctx = SessionContext::new_with_config_rt(config, runtime.clone());
        // Delta's log store reads the log through the unprefixed store (absolute paths): count
        // those reads too, and read each commit file once per session.
        let counted: Arc<dyn object_store::ObjectStore> = Arc::new(CountingStore::new(root.root_store.clone(), stats.clone()));
        let root_store: Arc<dyn object_store::ObjectStore> = Arc::new(crate::log_cache::LogCache::new(counted));
        // Here the scans read the counted lake store (`lake://root/`, paths in the lake). On a
        // cluster they name the files as any machine resolves them: the bucket (or `file:///`)
        // and the full path; that store is registered here too, counted.
        let (store_url, prefix) = if cluster.is_some() {
            let host = root.base_url.host_str().unwrap_or_default();
            let url = ObjectStoreUrl::parse(format!("{}://{host}/", root.base_url.scheme()))?;
            let trimmed = root.base_url.path().trim_matches('/');
            let prefix = object_store::path::Path::from_url_path(trimmed).map_err(|e| QueryError::Invalid(e.to_string()))?;
            let counted_root: Arc<dyn object_store::ObjectStore> = Arc::new(CountingStore::new(root.root_store.clone(), stats.clone()));
            runtime.register_object_store(url.as_ref(), counted_root);
            (url, prefix)
        } else {
            (ObjectStoreUrl::parse(STORE_URL)?, object_store::path::Path::default())
        };
        let catalog = Arc::new(LakeCatalog::new(LakeStore { store, root_store, ..root }, store_url, prefix, options.as_of));
        let cat = ctx.catalog("datafusion").ok_or_else(|| QueryError::Invalid("no default catalog".into()))?;
        cat.register_schema("public", Arc::new(TypesSchema::new(catalog.clone())))?;
        cat.register_schema("lake", Arc::new(UnionSchema::new(catalog.clone())))?;
        Ok(LakeSession { ctx, stats, catalog, cluster })
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
        Ok(self.collect_with_schema(sql).await?.1)
    }

    /// Where queries run: `local`, or `cluster http://host:port`.
    pub fn engine(&self) -> String {
        match &self.cluster {
            Some(url) => format!("cluster {url}"),
            None => "local".to_owned(),
        }
    }

    /// Runs one SQL statement, here or on the cluster: the result's schema and rows. The
    /// column bytes the scans fetched are added to [`LakeSession::stats`] either way.
    pub async fn collect_with_schema(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
        let df = self.sql(sql).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let plan = df.create_physical_plan().await?;
        let batches = match &self.cluster {
            None => {
                let batches = datafusion::physical_plan::collect(plan.clone(), self.ctx.task_ctx()).await?;
                self.stats.add_scanned(scanned_bytes(plan.as_ref()));
                batches
            }
            Some(url) => self.run_on_cluster(url, plan).await?,
        };
        Ok((schema, batches))
    }

    /// Checks that the engine is there: nothing to do here; on a cluster, that the scheduler
    /// answers (a run fails at once rather than query by query).
    pub async fn check_engine(&self) -> Result<(), QueryError> {
        match &self.cluster {
            None => Ok(()),
            #[cfg(feature = "cluster")]
            Some(url) => crate::cluster::connect(url).await.map(drop),
            // `open` refused a cluster in a build without the feature.
            #[cfg(not(feature = "cluster"))]
            Some(_) => Err(no_cluster()),
        }
    }

    #[cfg(feature = "cluster")]
    async fn run_on_cluster(&self, url: &str, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>, QueryError> {
        let files = files_of(plan.as_ref());
        let job = crate::cluster::run_plan(url, plan, &self.ctx.copied_config()).await?;
        tracing::debug!(job = %job.job_id, queued_ms = job.queued_ms, running_ms = job.running_ms, "cluster job done");
        self.stats.add_scanned(job.scanned_bytes);
        self.stats.add_files_read(files);
        Ok(job.batches)
    }

    #[cfg(not(feature = "cluster"))]
    async fn run_on_cluster(&self, _url: &str, _plan: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>, QueryError> {
        Err(no_cluster())
    }

    /// The physical plan of a statement, indented (files, projections and pruning predicates).
    pub async fn explain(&self, sql: &str) -> Result<String, QueryError> {
        let plan = self.sql(sql).await?.create_physical_plan().await?;
        Ok(datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string())
    }
}

/// The refusal of `--cluster` by a build without the `cluster` feature.
#[cfg(not(feature = "cluster"))]
fn no_cluster() -> QueryError {
    QueryError::Cluster("this build has no cluster support: build eventctl with `--features cluster`".into())
}

/// `http://HOST:PORT` from `HOST:PORT` (or a URL given whole), checked.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
fn scheduler_url(addr: &str) -> Result<String, QueryError> {
    let url = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let parsed = Url::parse(&url).map_err(|e| QueryError::Invalid(format!("scheduler {addr:?}: {e} (expected HOST:PORT)")))?;
    if parsed.scheme() != "http" {
        return Err(QueryError::Invalid(format!("scheduler {addr:?}: the cluster speaks plain gRPC (no TLS): give HOST:PORT, on a LAN or VPN")));
    }
    if parsed.host_str().is_none_or(str::is_empty) || parsed.port().is_none() {
        return Err(QueryError::Invalid(format!("scheduler {addr:?}: expected HOST:PORT, e.g. 192.168.1.20:50050")));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// The column bytes the plan's Parquet scans fetched (their `bytes_scanned` metric).
pub fn scanned_bytes(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan.metrics().and_then(|m| m.sum_by_name("bytes_scanned")).map_or(0, |v| v.as_usize() as u64);
    own + plan.children().iter().map(|c| scanned_bytes(c.as_ref())).sum::<u64>()
}

/// The files the plan's scans read.
pub fn files_of(plan: &dyn ExecutionPlan) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(source) = plan.downcast_ref::<DataSourceExec>()
        && let Some(config) = source.data_source().downcast_ref::<FileScanConfig>()
    {
        for group in &config.file_groups {
            out.extend(group.iter().map(|f| f.object_meta.location.to_string()));
        }
    }
    for c in plan.children() {
        out.extend(files_of(c.as_ref()));
    }
    out
}

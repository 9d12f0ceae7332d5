//! The executor process: Ballista's executor (a Flight port serving shuffle data, a gRPC port
//! taking tasks) with the lake's object stores.
//!
//! Scans name their files by full URL, resolved by [`super::stores`]: `s3://bucket/...` with this
//! machine's AWS credentials, `file:///...` on the local file system (a local lake must be at
//! the same path on every machine, e.g. a shared mount). Shuffle files go to the work folder; a
//! memory pool bounds each task (spilling there when it is full).

use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::RuntimeProducer;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;

use super::cluster_err;
use super::stores::LakeStores;
use crate::QueryError;

/// Memory for cached Parquet footers on an executor.
const METADATA_CACHE: usize = 512 << 20;

/// How an executor runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's host.
    pub scheduler_host: String,
    /// The scheduler's port.
    pub scheduler_port: u16,
    /// The address the executor's ports bind (`0.0.0.0` for every interface).
    pub bind_host: String,
    /// The Flight (shuffle data) port.
    pub port: u16,
    /// The gRPC (tasks) port.
    pub grpc_port: u16,
    /// The name or address other machines reach this one at (default: the address the
    /// scheduler sees it connect from).
    pub external_host: Option<String>,
    /// Tasks run at once (default: the cores).
    pub concurrency: usize,
    /// Shuffle and spill files.
    pub work_dir: PathBuf,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_secs: u64,
    /// Memory pool of all tasks together, in bytes (default: Ballista's share of the
    /// machine's memory).
    pub memory_pool_bytes: Option<u64>,
}

/// Runs an executor until the process gets Ctrl-C / SIGTERM (it then tells the scheduler it
/// stops) or the scheduler stays unreachable.
pub async fn run_executor(options: &ExecutorOptions) -> Result<(), QueryError> {
    std::fs::create_dir_all(&options.work_dir).map_err(|e| QueryError::io(&options.work_dir, e))?;
    let work_dir = options.work_dir.to_str().ok_or_else(|| QueryError::Invalid(format!("work dir {}: not UTF-8", options.work_dir.display())))?.to_owned();
    let stores = Arc::new(LakeStores::default());
    let temp = work_dir.clone();
    let runtime: RuntimeProducer = Arc::new(move |_config| {
        let registry: Arc<dyn ObjectStoreRegistry> = stores.clone();
        Ok(Arc::new(
            RuntimeEnvBuilder::new()
                .with_object_store_registry(registry)
                .with_temp_file_path(temp.clone())
                .with_metadata_cache_limit(METADATA_CACHE)
                .build()?,
        ))
    });
    let config = ExecutorProcessConfig {
        bind_host: options.bind_host.clone(),
        external_host: options.external_host.clone(),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler_host.clone(),
        scheduler_port: options.scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: options.concurrency.max(1),
        work_dir: Some(work_dir),
        executor_heartbeat_interval_seconds: options.heartbeat_secs.max(1),
        memory_pool_size: options.memory_pool_bytes,
        // Shuffle files of finished jobs are removed after a day, looked for hourly.
        job_data_ttl_seconds: 24 * 3600,
        job_data_clean_up_interval_seconds: 3600,
        print_thread_info: false,
        override_runtime_producer: Some(runtime),
        ..ExecutorProcessConfig::default()
    };
    tracing::info!(scheduler = %format!("{}:{}", options.scheduler_host, options.scheduler_port), port = options.port, grpc_port = options.grpc_port, "KPI cluster executor starting");
    start_executor_process(Arc::new(config)).await.map_err(|e| cluster_err("executor", e))
}

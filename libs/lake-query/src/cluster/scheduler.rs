//! The scheduler process: Ballista's scheduler on one TCP listener (gRPC for clients and
//! executors, `/healthz`-style health routes on the same port), keeping its state in memory.
//!
//! Executors send a heartbeat every few seconds; one silent for [`SchedulerOptions::
//! executor_timeout_secs`] is declared lost, and the tasks it ran, or whose shuffle output it
//! held, are run again on the others (up to 4 attempts per task, as Ballista counts them).

use std::sync::Arc;

use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use super::cluster_err;
use super::stores::LakeStores;
use crate::QueryError;

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// The name or address executors and clients use to reach this machine (advertised).
    pub external_host: String,
    /// An executor without a heartbeat for this long is lost: its tasks run elsewhere.
    pub executor_timeout_secs: u64,
    /// How often lost executors are looked for.
    pub expire_interval_secs: u64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        // Laptops on Wi-Fi: a lost laptop's work moves after ~30 s, not Ballista's 3 minutes.
        SchedulerOptions { external_host: "localhost".into(), executor_timeout_secs: 30, expire_interval_secs: 5 }
    }
}

/// Serves the scheduler on `listener` until the process stops.
pub async fn run_scheduler(listener: tokio::net::TcpListener, options: &SchedulerOptions) -> Result<(), QueryError> {
    let addr = listener.local_addr().map_err(|e| cluster_err("scheduler listener", e))?;
    // The scheduler decodes the plans it gets, and decoding a scan resolves its store: the
    // lake's stores, as the executors have them (no data is read here).
    let stores: Arc<dyn ObjectStoreRegistry> = Arc::new(LakeStores::default());
    let runtime = Arc::new(RuntimeEnvBuilder::new().with_object_store_registry(stores).build().map_err(|e| cluster_err("scheduler runtime", e))?);
    let session_builder: ballista_scheduler::scheduler_server::SessionBuilder = Arc::new(move |config| {
        let state = ballista_core::utils::default_session_builder(config)?;
        Ok(SessionStateBuilder::new_from_existing(state).with_runtime_env(runtime.clone()).build())
    });
    let config = SchedulerConfig {
        bind_host: addr.ip().to_string(),
        bind_port: addr.port(),
        external_host: options.external_host.clone(),
        executor_timeout_seconds: options.executor_timeout_secs,
        expire_dead_executor_interval_seconds: options.expire_interval_secs,
        no_executors_grace_period_seconds: options.executor_timeout_secs,
        override_session_builder: Some(session_builder),
        ..SchedulerConfig::default()
    };
    config.validate().map_err(|e| cluster_err("scheduler configuration", e))?;
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(|e| cluster_err("scheduler state", e))?;
    let server = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, Arc::new(config))
        .await
        .map_err(|e| cluster_err("starting the scheduler", e))?;
    tracing::info!(%addr, "KPI cluster scheduler listening");
    start_grpc_service_with_listener(listener, server).await.map_err(|e| cluster_err("scheduler", e))
}

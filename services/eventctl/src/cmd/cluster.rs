//! `eventctl cluster scheduler|executor`: the KPI cluster's processes (Apache DataFusion
//! Ballista, through `lake_query::cluster`). One scheduler; executors anywhere that reach it
//! and each other, several per machine if they take other ports and work folders. Then
//! `eventctl kpi --cluster HOST:PORT` (or `query --cluster`) runs there.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use lake_query::cluster::{self, ExecutorOptions, SchedulerOptions};

use super::runtime;

/// `eventctl cluster` subcommands.
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The scheduler: takes KPI and SQL jobs, hands their tasks to executors, retries the tasks
    /// of an executor that is lost.
    Scheduler(SchedulerArgs),
    /// An executor: runs tasks, reading the lake with this machine's credentials.
    Executor(ExecutorArgs),
}

/// Options of `eventctl cluster scheduler`.
#[derive(Args)]
pub struct SchedulerArgs {
    /// Address to listen on (clients and executors connect here).
    #[arg(long, default_value = "0.0.0.0:50050")]
    pub bind: String,
    /// The name or address the others reach this machine at (advertised to them).
    #[arg(long, default_value = "localhost")]
    pub external_host: String,
    /// Seconds without a heartbeat after which an executor is lost and its tasks run elsewhere.
    #[arg(long, default_value_t = SchedulerOptions::default().executor_timeout_secs)]
    pub executor_timeout_secs: u64,
    /// Seconds between looks for lost executors.
    #[arg(long, default_value_t = SchedulerOptions::default().expire_interval_secs)]
    pub expire_interval_secs: u64,
}

/// Options of `eventctl cluster executor`.
#[derive(Args)]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT.
    #[arg(long, env = "EVENTCTL_CLUSTER")]
    pub scheduler: String,
    /// Address of the executor's data (Flight) port; its task (gRPC) port is the next one
    /// unless --grpc-port says otherwise. Another executor on the same machine takes other ports.
    #[arg(long, default_value = "0.0.0.0:50051")]
    pub bind: String,
    /// The task (gRPC) port (default: the --bind port + 1).
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// The name or address other machines reach this one at (default: the address the
    /// scheduler sees it connect from).
    #[arg(long)]
    pub external_host: Option<String>,
    /// Tasks run at once (default: the number of cores).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Folder for shuffle and spill files (default: a folder per data port under the
    /// system's temporary folder).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Seconds between heartbeats to the scheduler (keep it well under the scheduler's
    /// --executor-timeout-secs).
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,
    /// Memory for all tasks together (e.g. 8GiB; default: Ballista's share of the machine's
    /// memory); tasks spill to the work folder beyond it.
    #[arg(long, value_parser = crate::size::parse)]
    pub memory: Option<u64>,
}

/// Runs `eventctl cluster ...` until Ctrl-C.
pub fn run(command: ClusterCommand) -> Result<i32> {
    let rt = runtime(None)?;
    match command {
        ClusterCommand::Scheduler(a) => rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(&a.bind).await.with_context(|| format!("listening on {}", a.bind))?;
            let options = SchedulerOptions { external_host: a.external_host, executor_timeout_secs: a.executor_timeout_secs.max(1), expire_interval_secs: a.expire_interval_secs.max(1) };
            eprintln!("eventctl cluster: scheduler on {} (executors: eventctl cluster executor --scheduler HOST:{})", a.bind, listener.local_addr()?.port());
            tokio::select! {
                r = cluster::run_scheduler(listener, &options) => r?,
                _ = tokio::signal::ctrl_c() => eprintln!("eventctl cluster: scheduler stopped"),
            }
            Ok(0)
        }),
        ClusterCommand::Executor(a) => {
            let (scheduler_host, scheduler_port) = cluster::host_port(&a.scheduler)?;
            let (bind_host, port) = cluster::host_port(&a.bind).context("--bind")?;
            let grpc_port = match a.grpc_port {
                Some(p) => p,
                None => port.checked_add(1).context("--bind port 65535 leaves no room for the task port: give --grpc-port")?,
            };
            let concurrency = a.concurrency.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let work_dir = a.work_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("eventctl-executor-{port}")));
            let options = ExecutorOptions {
                scheduler_host,
                scheduler_port,
                bind_host,
                port,
                grpc_port,
                external_host: a.external_host,
                concurrency,
                work_dir,
                heartbeat_secs: a.heartbeat_secs.max(1),
                memory_pool_bytes: a.memory,
            };
            eprintln!("eventctl cluster: executor on ports {port}/{grpc_port}, {concurrency} tasks at once, scheduler {}", a.scheduler);
            rt.block_on(cluster::run_executor(&options))?;
            Ok(0)
        }
    }
}

//! Submitting a physical plan to the scheduler and collecting the result: the plan goes as
//! DataFusion protobuf with the session's settings; the client polls the job's status, then
//! fetches the result partitions from the executors that hold them (Arrow Flight), and asks
//! the scheduler for the job's metrics (the column bytes the scans fetched).
//!
//! A job that fails (a task failed on every attempt, a bad column) is an error carrying the
//! executor's message; a job waits while no executor is registered (the scheduler fails it
//! once its executors have been gone for the executor timeout).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ballista_core::JobId;
use ballista_core::client::BallistaClient;
use ballista_core::serde::BallistaPhysicalExtensionCodec;
use ballista_core::serde::protobuf::execute_query_params::Query;
use ballista_core::serde::protobuf::execute_query_result::Result as SubmitResult;
use ballista_core::serde::protobuf::job_status::Status;
use ballista_core::serde::protobuf::operator_metric::Metric;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{ExecuteQueryParams, GetJobMetricsParams, GetJobStatusParams, KeyValuePair, PartitionLocation};
use ballista_core::serde::scheduler::PartitionId;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;
use datafusion_proto::physical_plan::AsExecutionPlan;
use datafusion_proto::protobuf::PhysicalPlanNode;
use futures::TryStreamExt;
use tonic::transport::Channel;

use super::cluster_err;
use crate::QueryError;

/// Largest gRPC message (plans of a day of hundreds of types carry thousands of file paths).
const MAX_MESSAGE: usize = 256 << 20;
/// Status polls.
const POLL: Duration = Duration::from_millis(50);
/// A job queued this long without starting is reported (no executor registered?).
const QUEUED_WARNING: Duration = Duration::from_secs(30);

/// A finished job.
#[derive(Debug)]
pub struct Job {
    /// The scheduler's id of the job.
    pub job_id: String,
    /// The result rows.
    pub batches: Vec<RecordBatch>,
    /// Column bytes the job's Parquet scans fetched (`bytes_scanned`), on every executor.
    pub scanned_bytes: u64,
    /// Milliseconds the job waited in the scheduler's queue.
    pub queued_ms: u64,
    /// Milliseconds the job ran on the cluster.
    pub running_ms: u64,
}

/// Submissions of a job whose result could not be fetched (its executor was lost after the job
/// finished): the job is read-only, so it is simply run again.
const ATTEMPTS: usize = 3;

/// Runs `plan` on the cluster of the scheduler at `url` (`http://host:port`).
pub async fn run_plan(url: &str, plan: Arc<dyn ExecutionPlan>, config: &SessionConfig) -> Result<Job, QueryError> {
    // Encoded once: a day's plan names thousands of files, and a retry sends the same bytes.
    let codec = BallistaPhysicalExtensionCodec::default();
    let mut plan_bytes = Vec::new();
    PhysicalPlanNode::try_from_physical_plan(plan, &codec)?.try_encode(&mut plan_bytes)?;
    let settings: Vec<KeyValuePair> = config.options().entries().into_iter().map(|e| KeyValuePair { key: e.key, value: e.value }).collect();
    let mut attempt = 1;
    loop {
        match run_once(url, &plan_bytes, &settings).await {
            Err(Fetch(e)) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "the job's result was lost with its executor: running the job again");
                attempt += 1;
            }
            Err(Fetch(e) | Other(e)) => return Err(e),
            Ok(job) => return Ok(job),
        }
    }
}

/// Why one submission failed.
enum Failure {
    /// The result could not be fetched from its executor.
    Fetch(QueryError),
    /// Anything else.
    Other(QueryError),
}
use Failure::{Fetch, Other};

impl From<QueryError> for Failure {
    fn from(e: QueryError) -> Self {
        Other(e)
    }
}

impl From<datafusion::error::DataFusionError> for Failure {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        Other(e.into())
    }
}

/// One submission of an encoded plan with the session's settings.
async fn run_once(url: &str, plan_bytes: &[u8], settings: &[KeyValuePair]) -> Result<Job, Failure> {
    let mut scheduler = connect(url).await?;
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut request = tonic::Request::new(ExecuteQueryParams {
        query: Some(Query::PhysicalPlan(plan_bytes.to_vec())),
        settings: settings.to_vec(),
        session_id,
        operation_id: uuid::Uuid::now_v7().to_string(),
    });
    ballista_core::version::insert_version_header(request.metadata_mut());
    let submitted = scheduler.execute_query(request).await.map_err(|e| cluster_err("submitting the job", e.message()))?.into_inner();
    let job_id = match submitted.result {
        Some(SubmitResult::Success(s)) => s.job_id,
        Some(SubmitResult::Failure(f)) => return Err(QueryError::Cluster(format!("the scheduler refused the job: {:?}", f.failure)).into()),
        None => return Err(QueryError::Cluster("the scheduler answered the job without a result".into()).into()),
    };
    let started = Instant::now();
    let mut warned = false;
    let (locations, queued_ms, running_ms) = loop {
        let status = scheduler
            .get_job_status(GetJobStatusParams { job_id: job_id.clone() })
            .await
            .map_err(|e| cluster_err(&format!("job {job_id} status"), e.message()))?
            .into_inner();
        match status.status.and_then(|s| s.status) {
            Some(Status::Failed(f)) => return Err(QueryError::Cluster(format!("job {job_id} failed: {}", f.error)).into()),
            Some(Status::Successful(s)) => {
                break (s.partition_location, s.started_at.saturating_sub(s.queued_at), s.ended_at.saturating_sub(s.started_at));
            }
            Some(Status::Queued(_)) if !warned && started.elapsed() > QUEUED_WARNING => {
                warned = true;
                tracing::warn!(%job_id, "the job has been queued for 30 s: is an executor registered with the scheduler?");
            }
            _ => {}
        }
        tokio::time::sleep(POLL).await;
    };
    let mut batches = Vec::new();
    for location in locations {
        batches.extend(fetch(location).await.map_err(Fetch)?);
    }
    let metrics = scheduler
        .get_job_metrics(GetJobMetricsParams { job_id: job_id.clone() })
        .await
        .map_err(|e| cluster_err(&format!("job {job_id} metrics"), e.message()))?
        .into_inner();
    let scanned_bytes = metrics
        .stages
        .iter()
        .flat_map(|s| &s.operators)
        .flat_map(|o| &o.metrics)
        .filter_map(|m| match &m.metric {
            Some(Metric::Count(c)) if c.name == "bytes_scanned" => Some(c.value),
            _ => None,
        })
        .sum();
    Ok(Job { job_id, batches, scanned_bytes, queued_ms, running_ms })
}

/// A connection to the scheduler at `url`, or an error that says it cannot be reached.
pub async fn connect(url: &str) -> Result<SchedulerGrpcClient<Channel>, QueryError> {
    let channel = Channel::from_shared(url.to_owned())
        .map_err(|e| cluster_err(&format!("scheduler {url}"), e))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| cluster_err(&format!("cannot reach the scheduler at {url} (is `eventctl cluster scheduler` running there?)"), e))?;
    Ok(SchedulerGrpcClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
}

/// The rows of one result partition, from the executor holding it.
async fn fetch(location: PartitionLocation) -> Result<Vec<RecordBatch>, QueryError> {
    let layout = location.layout();
    let executor = location.executor_meta.ok_or_else(|| QueryError::Cluster("a result partition without its executor".into()))?;
    let id = location.partition_id.ok_or_else(|| QueryError::Cluster("a result partition without its id".into()))?;
    let port = u16::try_from(executor.port).map_err(|_| QueryError::Cluster(format!("executor {} port {}", executor.id, executor.port)))?;
    let mut client = BallistaClient::try_new(&executor.host, port, MAX_MESSAGE, false, None, 3, 500, 0, 0)
        .await
        .map_err(|e| cluster_err(&format!("executor {} at {}:{port}", executor.id, executor.host), e))?;
    let partition = PartitionId::new(&JobId::from(id.job_id), id.stage_id as usize, id.partition_id as usize);
    let stream = client
        .fetch_partition(&executor.id, &partition, location.file_id, layout, true)
        .await
        .map_err(|e| cluster_err(&format!("fetching a result from executor {}", executor.id), e))?;
    Ok(stream.try_collect().await?)
}

//! The gRPC API (`features.v1.Features`, proto/features.proto): the same read function as
//! HTTP, the same answers. Next to it on the same port: `grpc.health.v1.Health` (`SERVING`
//! while the store answers, for the whole server `""` and for `features.v1.Features`;
//! `NOT_SERVING` once it stops answering or the server is stopping) and server reflection
//! (`grpc.reflection.v1` and `v1alpha`, so `grpcurl` and `grpc_health_probe` work without
//! the .proto files).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::proto::features_server::{Features, FeaturesServer};
use crate::proto::{GetFeaturesRequest, GetFeaturesResponse, ProductFeatures};
use crate::api::Access;
use crate::query::{FeatureReader, QueryError};

/// Connections of a gRPC listener, with TCP_NODELAY (without it a response waits for the
/// client's delayed ACK: ~40 ms per call).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// How often the health service asks the store whether it answers.
pub const HEALTH_CHECK_EVERY: Duration = Duration::from_secs(2);

/// The encoded descriptors of `proto/features.proto` (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/features_descriptor.bin"));

/// Serves the features, health and reflection services on `listener` until `stop` turns
/// true; health turns `NOT_SERVING` as soon as it does.
pub async fn serve(reader: Arc<FeatureReader>, access: Access, listener: tokio::net::TcpListener, stop: watch::Receiver<bool>) -> Result<(), ServeError> {
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| ServeError::Reflection(e.to_string()))?;
    let (reporter, health) = tonic_health::server::health_reporter();
    report_health(&reporter, &reader).await;
    let watcher = tokio::spawn(watch_health(reporter, reader.clone(), stop.clone()));
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(FeaturesGrpc::server(reader, access))
        .serve_with_incoming_shutdown(incoming(listener), service_kit::shutdown::stopped(stop))
        .await;
    watcher.abort();
    served.map_err(ServeError::Transport)
}

/// Why the gRPC server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not read the descriptors.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

async fn report_health(reporter: &HealthReporter, reader: &FeatureReader) {
    let status = match reader.store().ready().await {
        Ok(()) => ServingStatus::Serving,
        Err(e) => {
            tracing::debug!(error = %e, "store not ready: gRPC health NOT_SERVING");
            ServingStatus::NotServing
        }
    };
    set_health(reporter, status).await;
}

async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(<FeaturesServer<FeaturesGrpc> as NamedService>::NAME, status).await;
}

async fn watch_health(reporter: HealthReporter, reader: Arc<FeatureReader>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(HEALTH_CHECK_EVERY) => report_health(&reporter, &reader).await,
            stopping = async { stop.wait_for(|s| *s).await.is_ok() } => {
                if stopping {
                    set_health(&reporter, ServingStatus::NotServing).await;
                }
                return;
            }
        }
    }
}

/// The service.
pub struct FeaturesGrpc {
    reader: Arc<FeatureReader>,
    access: Access,
}

impl FeaturesGrpc {
    /// The tonic server of the service (messages up to 4 MiB); calls need a key of `access`
    /// (`authorization: Bearer <key>` metadata): UNAUTHENTICATED without one,
    /// PERMISSION_DENIED for a revoked one. Health and reflection stay open.
    pub fn server(reader: Arc<FeatureReader>, access: Access) -> FeaturesServer<FeaturesGrpc> {
        FeaturesServer::new(FeaturesGrpc { reader, access }).max_decoding_message_size(4 << 20)
    }
}

#[tonic::async_trait]
impl Features for FeaturesGrpc {
    async fn get_features(&self, request: Request<GetFeaturesRequest>) -> Result<Response<GetFeaturesResponse>, Status> {
        let authorization = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        match self.access.check(authorization) {
            service_kit::auth::AuthResult::Allowed => {}
            service_kit::auth::AuthResult::Unauthenticated => {
                return Err(Status::unauthenticated("send authorization: Bearer <API key> metadata"));
            }
            service_kit::auth::AuthResult::Revoked => return Err(Status::permission_denied("this key is revoked")),
        }
        let ids = request.into_inner().product_ids;
        match self.reader.features(ids).await {
            Ok(a) => {
                metrics::counter!("features_grpc_requests_total", "code" => "ok").increment(1);
                Ok(Response::new(GetFeaturesResponse {
                    columns: a.columns,
                    products: a.products.into_iter().map(|(product_id, values)| ProductFeatures { product_id, values }).collect(),
                    as_of_ms: a.as_of_ms,
                }))
            }
            Err(e) => {
                let status = match &e {
                    QueryError::Empty { .. } | QueryError::TooMany { .. } | QueryError::BadId { .. } => Status::invalid_argument(e.to_string()),
                    QueryError::Overloaded => Status::resource_exhausted(e.to_string()),
                    QueryError::Store(_) => Status::unavailable(e.to_string()),
                };
                metrics::counter!("features_grpc_requests_total", "code" => format!("{:?}", status.code())).increment(1);
                Err(status)
            }
        }
    }
}

//! The gRPC API (`features.v1.Features`, proto/features.proto): the same read function as
//! HTTP, the same answers.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::features_server::{Features, FeaturesServer};
use crate::proto::{GetFeaturesRequest, GetFeaturesResponse, ProductFeatures};
use crate::query::{FeatureReader, QueryError};

/// Connections of a gRPC listener, with TCP_NODELAY (without it a response waits for the
/// client's delayed ACK: ~40 ms per call).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The service.
pub struct FeaturesGrpc {
    reader: Arc<FeatureReader>,
}

impl FeaturesGrpc {
    /// The tonic server of the service (messages up to 4 MiB).
    pub fn server(reader: Arc<FeatureReader>) -> FeaturesServer<FeaturesGrpc> {
        FeaturesServer::new(FeaturesGrpc { reader }).max_decoding_message_size(4 << 20)
    }
}

#[tonic::async_trait]
impl Features for FeaturesGrpc {
    async fn get_features(&self, request: Request<GetFeaturesRequest>) -> Result<Response<GetFeaturesResponse>, Status> {
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

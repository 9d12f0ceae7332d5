//! The gRPC port answers `grpc.health.v1.Health` (what `grpc_health_probe` and Kubernetes'
//! gRPC probes call) and server reflection (what `grpcurl` lists), next to
//! `features.v1.Features`, in the assembled service.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use futures::StreamExt;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_on_the_grpc_port() {
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let config = features::FeaturesConfig {
        backend: features::Backend::Memory,
        updater: false,
        api_key_hashes: vec![service_kit::auth::hash_key("test-key")],
        ..features::FeaturesConfig::default()
    };
    let service = features::Features::build(&config, None).await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", grpc.local_addr().unwrap());
    let task = tokio::spawn(service.run(http, grpc, service_kit::shutdown::Shutdown::on(stop)));

    let channel = tonic::transport::Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "features.v1.Features"] {
        let r = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.such.Service".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut answers = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let Some(Ok(answer)) = answers.next().await else { panic!("no reflection answer") };
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["features.v1.Features", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not listed: {names:?}");
    }

    stop_tx.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), task).await.expect("stops").unwrap().unwrap();
}

//! The benchmark's baseline: a minimal axum handler returning a fixed JSON body of the size
//! of a 7-day stats response, on the same runtime settings as the stats binary, so the
//! benchmark reports the stats API as a ratio of what axum alone does on this machine.

use axum::Router;
use clap::Parser;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;

const BODY: &str = r#"{"user_id":"u1","days":7,"from":"2026-01-01","to":"2026-01-07","dates":["2026-01-01","2026-01-02","2026-01-03","2026-01-04","2026-01-05","2026-01-06","2026-01-07"],"metrics":[{"name":"products_contacted","total":0,"series":[0,0,0,0,0,0,0]},{"name":"favorites_received","total":3,"series":[0,1,0,0,2,0,0]},{"name":"views_received","total":40,"series":[5,6,7,8,4,5,5]},{"name":"conversations_started","total":0,"series":[0,0,0,0,0,0,0]},{"name":"products_sold","total":1,"series":[0,0,0,1,0,0,0]}]}"#;

/// The stats benchmark's baseline: axum answering a fixed 7-day stats body.
#[derive(Parser)]
#[command(name = "stats-baseline", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "BASELINE_LISTEN", default_value = "127.0.0.1:8090")]
    listen: String,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = Cli::parse().listen;
    let app = Router::new().route(
        "/v1/users/{user_id}/stats",
        get(|| async { ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], BODY).into_response() }),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await
}

//! Serving: one way to run a service's HTTP router and its gRPC services on a bound
//! listener until a stop signal, finishing the requests in flight.

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shutdown::stopped;

/// A listener whose connections have TCP_NODELAY (without it a small response can wait for
/// the client's delayed ACK, ~40 ms).
pub fn nodelay(listener: TcpListener) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    })
}

/// Serves `router` on `listener` until `stop` turns true, then finishes the requests in flight.
pub async fn http(listener: TcpListener, router: axum::Router, stop: watch::Receiver<bool>) -> std::io::Result<()> {
    axum::serve(nodelay(listener), router).with_graceful_shutdown(stopped(stop)).await
}

//! What every service of the platform shares, so no service writes it again: typed layered
//! configuration, API keys (stored as SHA-256 hashes), the HTTP error body and overload answers, structured logs, Prometheus metrics, `/healthz` `/readyz` `/metrics`, serving
//! until a stop signal, and the shutdown signal (SIGTERM or Ctrl-C).

pub mod auth;
pub mod cli;
pub mod config;
pub mod health;
pub mod http;
pub mod rate;
pub mod serve;
pub mod shutdown;
pub mod telemetry;

/// Ends a service binary: on error, one readable line on stderr and exit code 1 (no
/// backtrace dump for a bad configuration).
pub fn exit_on_error<E: std::fmt::Display>(service: &str, result: Result<(), E>) {
    if let Err(e) = result {
        eprintln!("{service}: error: {e:#}");
        std::process::exit(1);
    }
}

//! What every service of the platform shares, so no service writes it again: typed layered
//! configuration, structured logs, Prometheus metrics, `/healthz` `/readyz` `/metrics`, and a
//! shutdown signal (SIGTERM or Ctrl-C).

pub mod config;
pub mod health;
pub mod shutdown;
pub mod telemetry;

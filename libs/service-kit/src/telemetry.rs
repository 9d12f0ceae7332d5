//! Structured logs and the Prometheus recorder every service exposes at `/metrics`.
//!
//! Logs: one initialisation per process for every binary (the services and every `eventctl`
//! subcommand, `dev` included), on stderr, filtered by `RUST_LOG`, as text or, with
//! `LOG_FORMAT=json`, as one JSON object per line.
//!
//! Metrics: the Prometheus recorder every service exposes at `/metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default; `LOG_FORMAT=text`).
    Text,
    /// One JSON object per line (`LOG_FORMAT=json`), for log collectors.
    Json,
}

impl LogFormat {
    /// The format named by a `LOG_FORMAT` value (case-insensitive; unset or empty: text),
    /// or `None` for an unknown name.
    pub fn parse(value: Option<&str>) -> Option<LogFormat> {
        match value.map(str::trim).unwrap_or("") {
            "" => Some(LogFormat::Text),
            v if v.eq_ignore_ascii_case("text") => Some(LogFormat::Text),
            v if v.eq_ignore_ascii_case("json") => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// Initialises logging once per process (later calls do nothing): `RUST_LOG` (else
/// `default_filter`) and `LOG_FORMAT`. An unknown `LOG_FORMAT` falls back to text, with a
/// warning saying so.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let requested = std::env::var("LOG_FORMAT").ok();
    let format = LogFormat::parse(requested.as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        Some(LogFormat::Json) => builder.json().try_init().is_ok(),
        Some(LogFormat::Text) | None => builder.try_init().is_ok(),
    };
    if installed && format.is_none() {
        tracing::warn!(log_format = ?requested, "unknown LOG_FORMAT (use text or json); logging as text");
    }
}

/// The process-wide Prometheus handle (installed on first use).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_names() {
        assert_eq!(LogFormat::parse(None), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("")), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("text")), Some(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("JSON")), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some(" json ")), Some(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some("logfmt")), None);
    }
}

//! Structured logs and the Prometheus recorder every service exposes at `/metrics`.
//!
//! Logs: one initialisation per process for every binary (the services and every `eventctl`
//! subcommand, `dev` included), on stderr, filtered by `RUST_LOG`, as text or, with
//! `LOG_FORMAT=json`, as one JSON object per line.
//!
//! Metrics: histograms are Prometheus histograms with buckets (`_bucket`, `_sum`, `_count`),
//! so latencies can be aggregated across instances and turned into quantiles by the server:
//! [`LATENCY_BUCKETS`] for every metric named `*_seconds`, [`SIZE_BUCKETS`] for `*_bytes`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Bucket bounds (seconds) of the `*_seconds` histograms: 0.5 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Bucket bounds (bytes) of the `*_bytes` histograms: 1 KiB to 64 MiB, by powers of 4.
pub const SIZE_BUCKETS: &[f64] = &[1024.0, 4096.0, 16384.0, 65536.0, 262_144.0, 1_048_576.0, 4_194_304.0, 16_777_216.0, 67_108_864.0];

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

/// What the default filter adds for the Delta Lake library: its transaction module logs every
/// commit at INFO and a normal race between two writers at WARN or ERROR ("conflict
/// detected", "version already exists"), which our commit path retries and reports itself;
/// its kernel's snapshot builder logs an ERROR when asked for a table that does not exist
/// yet ("No files in log segment"), which it returns to us as "not a table"; the kernel logs
/// every snapshot it loads and every scan at INFO (kept at WARN). Other Delta warnings stay. `RUST_LOG` replaces the whole default (set
/// `RUST_LOG=info,deltalake_core=debug` to see them all).
pub const LIBRARY_DIRECTIVES: &str =
    "deltalake_core=warn,deltalake_core::kernel::transaction=off,buoyant_kernel=warn,buoyant_kernel::snapshot::builder=off";

/// The filter used when `RUST_LOG` is unset: `default_filter`, then [`LIBRARY_DIRECTIVES`].
pub fn default_directives(default_filter: &str) -> String {
    if default_filter.trim().is_empty() {
        LIBRARY_DIRECTIVES.to_owned()
    } else {
        format!("{default_filter},{LIBRARY_DIRECTIVES}")
    }
}

/// Initialises logging once per process (later calls do nothing): `RUST_LOG` (else
/// `default_filter` with [`LIBRARY_DIRECTIVES`]) and `LOG_FORMAT`. An unknown `LOG_FORMAT`
/// falls back to text, with a warning saying so.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_directives(default_filter)));
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

/// The recorder's configuration: bucketed histograms for latencies and sizes.
fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), SIZE_BUCKETS)
}

/// The process-wide Prometheus handle (installed on first use).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match builder().and_then(PrometheusBuilder::install_recorder) {
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

    #[test]
    fn default_filter_quiets_delta_commit_races_only() {
        for base in ["info", "warn", ""] {
            let text = default_directives(base);
            let filter = tracing_subscriber::EnvFilter::try_new(&text).expect("valid directives");
            let shown = filter.to_string();
            assert!(shown.contains("deltalake_core::kernel::transaction=off"), "{shown}");
            assert!(shown.contains("deltalake_core=warn"), "{shown}");
            assert!(shown.contains("buoyant_kernel::snapshot::builder=off"), "{shown}");
            assert!(shown.contains("buoyant_kernel=warn"), "{shown}");
        }
        assert!(default_directives("info").starts_with("info,"));
    }

    #[test]
    fn latency_histograms_have_buckets() {
        let recorder = builder().expect("buckets").build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("demo_handler_seconds").record(0.003);
            metrics::histogram!("demo_payload_bytes").record(5000.0);
        });
        let text = handle.render();
        assert!(text.contains("demo_handler_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("demo_handler_seconds_bucket{le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("demo_payload_bytes_bucket{le=\"16384\"} 1"), "{text}");
    }
}

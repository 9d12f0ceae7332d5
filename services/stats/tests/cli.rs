//! The `stats` binary's command line (clap): `--help` and `--version` answer at once,
//! without binding its listen address or connecting to anything; `--config FILE` is read.

use std::time::Duration;

use service_kit::cli::answer_of;

const EXE: &str = env!("CARGO_BIN_EXE_stats");

#[test]
fn help_and_version_answer_without_serving() {
    service_kit::cli::check_service_cli(EXE, "stats", env!("CARGO_PKG_VERSION"), "STATS", &["migrate", "token"]);
}

#[test]
fn the_benchmark_baseline_answers_help_without_serving() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = held.local_addr().expect("addr").to_string();
    let exe = env!("CARGO_BIN_EXE_stats-baseline");
    let help = answer_of(exe, &["--help"], &[("BASELINE_LISTEN", listen.as_str())], Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    assert!(help.contains("Usage: stats-baseline") && help.contains("--listen"), "{help}");
}

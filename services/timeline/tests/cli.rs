//! The `timeline` binary's command line (clap): `--help` and `--version` answer at once,
//! without binding its listen address or connecting to anything; `--config FILE` is read.

const EXE: &str = env!("CARGO_BIN_EXE_timeline");

#[test]
fn help_and_version_answer_without_serving() {
    service_kit::cli::check_service_cli(EXE, "timeline", env!("CARGO_PKG_VERSION"), "TIMELINE", &["--print-openapi", "--init"]);
}

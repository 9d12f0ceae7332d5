//! The `lake-writer` binary's command line (clap): `--help` and `--version` answer at once,
//! without binding its listen address or connecting to anything; `--config FILE` is read.

const EXE: &str = env!("CARGO_BIN_EXE_lake-writer");

#[test]
fn help_and_version_answer_without_serving() {
    service_kit::cli::check_service_cli(EXE, "lake-writer", env!("CARGO_PKG_VERSION"), "LAKE_WRITER", &[]);
}

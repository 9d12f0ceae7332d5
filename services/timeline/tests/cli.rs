//! The `timeline` binary's command line (clap): `--help` and `--version` answer at once,
//! without binding its listen address or connecting to anything; `--config FILE` is read.

use std::time::Duration;

use service_kit::cli::answer_of;

const EXE: &str = env!("CARGO_BIN_EXE_timeline");

#[test]
fn help_and_version_answer_without_serving() {
    // The listen address is held here and the bus is a closed port: a binary that went on
    // to serve would fail (non-zero exit) or keep running (timeout), not exit 0.
    let held = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listen = held.local_addr().expect("addr").to_string();
    let env = [("TIMELINE_LISTEN", listen.as_str()), ("TIMELINE_BUS__URL", "nats://127.0.0.1:1")];
    let quick = Duration::from_secs(10);
    let help = answer_of(EXE, &["--help"], &env, quick).unwrap_or_else(|e| panic!("{e}"));
    for expected in ["Usage: timeline", "--config <FILE>", "--version", "--print-openapi", "--init"] {
        assert!(help.contains(expected), "--help lacks {expected:?}:\n{help}");
    }
    let version = answer_of(EXE, &["--version"], &env, quick).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(version.trim(), concat!("timeline ", env!("CARGO_PKG_VERSION")));
    let unknown = answer_of(EXE, &["--no-such-option"], &env, quick).expect_err("an unknown option is refused");
    assert!(unknown.contains("exit status: 2"), "{unknown}");
    let missing = answer_of(EXE, &["--config", "/nonexistent/timeline.toml"], &env, quick).expect_err("a missing file is refused");
    assert!(missing.contains("does not exist"), "{missing}");
}

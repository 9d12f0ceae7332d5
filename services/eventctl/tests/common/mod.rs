//! Helpers shared by eventctl's integration tests: run the built binary, require success.

#![allow(dead_code)]

use std::process::{Command, Output};

pub mod lakes;

/// The `eventctl` binary of this build, logging warnings only.
pub fn eventctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eventctl"));
    c.env("RUST_LOG", "warn");
    c
}

/// The output of a run that must have succeeded (panics with its stdout and stderr otherwise).
pub fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "eventctl failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

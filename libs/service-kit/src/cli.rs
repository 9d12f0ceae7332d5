//! The command line every service binary shares (clap): `--help`, `--version` and
//! `--config FILE`, the TOML file layered between the defaults and the `<PREFIX>_*`
//! environment (see [`crate::config::load`]). A binary with more options or subcommands
//! flattens [`ServiceArgs`] into its own `clap::Parser`; one without calls [`parse`].

use std::path::PathBuf;

use clap::{Args, FromArgMatches};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, Validate};

/// The options every service binary takes.
#[derive(Args, Debug, Clone, Default)]
pub struct ServiceArgs {
    /// A TOML configuration file, layered over the defaults; `<PREFIX>_*` environment
    /// variables override it.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

impl ServiceArgs {
    /// Loads the service's configuration: defaults, then `--config FILE`, then `<prefix>_*`.
    pub fn load<T>(&self, prefix: &str) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Serialize + Default + Validate,
    {
        crate::config::load(prefix, self.config.as_deref())
    }
}

/// Parses the command line of a service binary that has no options of its own: `--help` and
/// `--version` print and exit 0 (before anything is bound or connected), a wrong argument
/// prints the usage and exits 2.
pub fn parse(name: &'static str, about: &'static str) -> ServiceArgs {
    let command = ServiceArgs::augment_args(clap::Command::new(name).about(about).version(env!("CARGO_PKG_VERSION")));
    let matches = command.get_matches();
    ServiceArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// For the services' tests: runs a service binary with arguments that must answer at once
/// (`--help`, `--version`) and returns its stdout, or why it failed: it did not exit within
/// `timeout` (it went on to serve), exited non-zero, or wrote no output. `env` is set for the
/// run (e.g. a listen address the caller holds, so serving would fail).
pub fn answer_of(exe: &str, args: &[&str], env: &[(&str, &str)], timeout: std::time::Duration) -> Result<String, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {exe}: {e}"))?;
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < timeout => std::thread::sleep(std::time::Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{exe} {args:?} still running after {timeout:?}: it did not just answer"));
            }
            Err(e) => return Err(format!("waiting for {exe}: {e}")),
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    if !status.success() {
        return Err(format!("{exe} {args:?} exited with {status}: {err}"));
    }
    if out.trim().is_empty() {
        return Err(format!("{exe} {args:?} printed nothing on stdout"));
    }
    Ok(out)
}

/// For the services' tests: checks the command line every service binary shares, and panics
/// with what is wrong. With `<PREFIX>_LISTEN` pointed at an address held by the test and
/// `<PREFIX>_BUS__URL` at a closed port (a binary that went on to serve would fail or keep
/// running): `--help` exits 0 at once and names the usage, `--config <FILE>`, `--version` and
/// `help_mentions`; `--version` prints `<name> <version>`; an unknown option exits 2; a
/// `--config` file that does not exist is refused.
pub fn check_service_cli(exe: &str, name: &str, version: &str, prefix: &str, help_mentions: &[&str]) {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let listen = held.local_addr().map(|a| a.to_string()).unwrap_or_else(|e| panic!("addr: {e}"));
    let (listen_var, bus_var) = (format!("{prefix}_LISTEN"), format!("{prefix}_BUS__URL"));
    let env = [(listen_var.as_str(), listen.as_str()), (bus_var.as_str(), "nats://127.0.0.1:1")];
    let quick = std::time::Duration::from_secs(10);
    let help = answer_of(exe, &["--help"], &env, quick).unwrap_or_else(|e| panic!("{e}"));
    let usage = format!("Usage: {name}");
    for expected in [usage.as_str(), "--config <FILE>", "--version"].into_iter().chain(help_mentions.iter().copied()) {
        assert!(help.contains(expected), "--help lacks {expected:?}:\n{help}");
    }
    let printed = answer_of(exe, &["--version"], &env, quick).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(printed.trim(), format!("{name} {version}"));
    let unknown = answer_of(exe, &["--no-such-option"], &env, quick).expect_err("an unknown option is refused");
    assert!(unknown.contains("exit status: 2"), "{unknown}");
    let config = format!("/nonexistent/{name}.toml");
    let missing = answer_of(exe, &["--config", &config], &env, quick).expect_err("a missing file is refused");
    assert!(missing.contains("does not exist"), "{missing}");
}

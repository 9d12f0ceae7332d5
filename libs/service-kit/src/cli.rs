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

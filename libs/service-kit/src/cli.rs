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
    /// Load and validate the configuration (defaults, file, environment), print the verdict
    /// and exit (0 when valid) without binding or connecting anything.
    #[arg(long, global = true)]
    pub check_config: bool,
}

impl ServiceArgs {
    /// Loads the service's configuration: defaults, then `--config FILE`, then `<prefix>_*`.
    /// With `--check-config`, a valid configuration prints `configuration OK` and the process
    /// exits 0 here (an invalid one is returned as the error, as without the flag).
    pub fn load<T>(&self, prefix: &str) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Serialize + Default + Validate,
    {
        let config = crate::config::load(prefix, self.config.as_deref())?;
        if self.check_config {
            println!("configuration OK ({prefix}_*)");
            std::process::exit(0);
        }
        Ok(config)
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
    let mut command = std::process::Command::new(exe);
    command.envs(env.iter().copied());
    answer_with(command, exe, args, timeout)
}

/// Runs `command` with `args` and waits for its answer (see [`answer_of`]).
fn answer_with(mut command: std::process::Command, exe: &str, args: &[&str], timeout: std::time::Duration) -> Result<String, String> {
    use std::io::Read;
    let mut child = command
        .args(args)
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
    check_deploy_env(exe, name);
}

/// For the services' tests: every environment the deployment files give the service (each
/// k8s container of its image, with its ConfigMaps' prefixes and placeholders for its
/// secrets, and its docker-compose service; listed by `scripts/validate_deploy.py --env`)
/// is accepted by its configuration (`--check-config`), so that an unknown or malformed
/// variable fails a test instead of crash-looping a pod. Uses the project's Python
/// (`EVENTPLAT_PYTHON` from `scripts/services.sh env`; else `python3` with PyYAML).
pub fn check_deploy_env(exe: &str, service: &str) {
    let python = std::env::var("EVENTPLAT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/validate_deploy.py");
    let out = std::process::Command::new(&python)
        .args([script, "--env", service])
        .output()
        .unwrap_or_else(|e| panic!("running {python} {script}: {e} (scripts/services.sh env sets EVENTPLAT_PYTHON)"));
    assert!(out.status.success(), "{script} --env {service}: {}", String::from_utf8_lossy(&out.stderr));
    let envs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{script} --env {service}: {e}"));
    assert!(!envs.is_empty(), "no deployment of {service} found in k8s/ or docker-compose.yml");
    for deployment in &envs {
        let vars: Vec<(String, String)> = deployment["env"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
            .unwrap_or_default();
        let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Err(e) = answer_of_clean(exe, &["--check-config"], &env, std::time::Duration::from_secs(10)) {
            panic!("{}: the service refuses its environment: {e}", deployment["where"]);
        }
    }
}

/// [`answer_of`] with only `env` in the environment (as a container starts).
fn answer_of_clean(exe: &str, args: &[&str], env: &[(&str, &str)], timeout: std::time::Duration) -> Result<String, String> {
    let mut child = std::process::Command::new(exe);
    child.env_clear().envs(env.iter().copied());
    answer_with(child, exe, args, timeout)
}

//! Every service's OpenAPI document, fuzzed by schemathesis against `eventctl dev` (the
//! gateway, the timeline, the stats and the features APIs in one process): schemathesis
//! generates requests from each document (valid and invalid: bodies from the event contract's
//! JSON Schema, boundary values, malformed input) and checks that no answer is a server error
//! (5xx) and that answers conform to the documents.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use common::eventctl;

const KEY: &str = "schemathesis-key";

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn schemathesis() -> PathBuf {
    let python = std::env::var("EVENTPLAT_PYTHON")
        .unwrap_or_else(|_| panic!("EVENTPLAT_PYTHON is not set: run the tests with scripts/test.sh (it installs schemathesis)"));
    PathBuf::from(python).with_file_name("schemathesis")
}

/// The base URL printed on the banner line of `service` (`  gateway    http://127.0.0.1:P/...`).
fn base_of(line: &str) -> Option<String> {
    let url = line.split_whitespace().nth(1)?;
    let rest = url.strip_prefix("http://")?;
    Some(format!("http://{}", rest.split('/').next()?))
}

#[test]
fn every_api_answers_schemathesis_without_a_server_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let child = eventctl()
        .args(["dev", "--lake", lake.to_str().expect("utf8"), "--listen", "127.0.0.1:0", "--api-key", KEY, "--max-age-secs", "1"])
        .args(["--timeline-listen", "127.0.0.1:0", "--stats-listen", "127.0.0.1:0"])
        .args(["--features-listen", "127.0.0.1:0", "--features-grpc-listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start eventctl dev");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let mut bases = std::collections::BTreeMap::new();
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("banner line");
        let name = line.split_whitespace().next().unwrap_or_default().to_owned();
        if ["gateway", "timeline", "stats", "features"].contains(&name.as_str())
            && let Some(base) = base_of(&line)
        {
            bases.insert(name, base);
        }
        if bases.len() == 4 {
            break;
        }
    }
    assert_eq!(bases.len(), 4, "the banner names the four APIs: {bases:?}");
    // The rest of stdout is drained on a thread: a closed pipe would make the next line
    // `eventctl dev` prints fail.
    let _drain = std::thread::spawn(move || lines.map_while(Result::ok).count());

    let mut failures = Vec::new();
    for (name, base) in &bases {
        let started = Instant::now();
        let out = Command::new(schemathesis())
            .args(["--no-color", "run", &format!("{base}/openapi.json")])
            .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"])
            .args(["--header", &format!("Authorization: Bearer {KEY}")])
            .args(["--max-examples", "40", "--seed", "25", "--request-timeout", "10"])
            .output()
            .expect("run schemathesis");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        eprintln!("== schemathesis {name} ({:?}): {}", started.elapsed(), text.lines().rev().take(3).collect::<Vec<_>>().join(" | "));
        if !out.status.success() {
            failures.push(format!("{name}:\n{text}"));
        }
    }
    assert!(failures.is_empty(), "schemathesis found problems:\n{}", failures.join("\n\n"));
}

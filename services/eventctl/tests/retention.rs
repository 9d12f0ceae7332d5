//! One retention per thing: the bus's, the timeline's hot window and the stats' days are the
//! services' configuration defaults, and the cost model (docs/cost-model.toml) and the
//! architecture document (its tables are the cost model's output) use the same values. The
//! deployment files must not override them with others.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The numeric `key = value` lines of one `[section]` of a TOML file (comments dropped).
fn section(text: &str, name: &str) -> Vec<(String, f64)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
            continue;
        }
        if let (true, Some((k, v))) = (inside, line.split_once('=')) {
            if let Ok(n) = v.trim().replace('_', "").parse::<f64>() {
                out.push((k.trim().to_owned(), n));
            }
        }
    }
    out
}

fn value(pairs: &[(String, f64)], key: &str) -> f64 {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| *v).unwrap_or_else(|| panic!("docs/cost-model.toml [retention] has no {key}"))
}

#[test]
fn the_cost_model_uses_the_configuration_defaults() {
    let model = std::fs::read_to_string(root().join("docs/cost-model.toml")).expect("docs/cost-model.toml");
    let retention = section(&model, "retention");
    assert_eq!(value(&retention, "bus_hours") * 3600.0, event_bus::JetStreamConfig::default().max_age_secs as f64, "bus retention");
    let hot_days = timeline::TimelineConfig::default().hot_window_secs() as f64 / 86_400.0;
    assert!((value(&retention, "timeline_hot_days") - hot_days).abs() < 0.01, "timeline hot window: {hot_days:.2} days");
    assert_eq!(value(&retention, "history_vacuum_days"), event_lake::history::VACUUM_RETENTION_DAYS as f64, "history table's vacuum retention");
    assert_eq!(value(&retention, "stats_days"), f64::from(stats::StatsConfig::default().retention_days), "stats retention");
}

/// The hot window follows from the history build's period: the CronJob runs as often as the
/// timeline's configuration says.
#[test]
fn the_history_cronjob_runs_as_often_as_the_hot_window_assumes() {
    let text = std::fs::read_to_string(root().join("k8s/timeline.yaml")).expect("k8s/timeline.yaml");
    let every = timeline::TimelineConfig::default().history_build_every_secs;
    assert_eq!(every % 60, 0);
    let schedule = format!("schedule: \"*/{} * * * *\"", every / 60);
    assert!(text.contains(&schedule), "k8s/timeline.yaml: the timeline-history CronJob should have {schedule}");
}

#[test]
fn deployments_do_not_override_the_retentions() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("k8s")).expect("k8s/").filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.push(root().join("docker-compose.yml"));
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml")) {
        let text = std::fs::read_to_string(f).expect("deployment file");
        for setting in ["BUS__MAX_AGE_SECS", "TIMELINE_HISTORY_MAX_BUILD_LAG_SECS", "STATS_RETENTION_DAYS"] {
            assert!(!text.contains(setting), "{} sets {setting}: the retention is the configuration default (docs/cost-model.toml)", f.display());
        }
    }
}

#[test]
fn the_architecture_document_shows_the_cost_models_output() {
    let out = std::process::Command::new("python3")
        .arg(root().join("scripts/cost-model.py"))
        .arg("--markdown")
        .output()
        .expect("python3 runs scripts/cost-model.py");
    assert!(out.status.success(), "cost-model.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let generated = String::from_utf8(out.stdout).expect("utf-8");
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("docs/architecture.md");
    let (begin, end) = ("<!-- cost-model:begin -->\n", "<!-- cost-model:end -->");
    let start = doc.find(begin).expect("the cost-model block in docs/architecture.md") + begin.len();
    let stop = doc[start..].find(end).expect("the end of the cost-model block") + start;
    assert_eq!(
        doc[start..stop].trim(),
        generated.trim(),
        "docs/architecture.md is stale: paste the output of `python3 scripts/cost-model.py --markdown` between the cost-model markers"
    );
}

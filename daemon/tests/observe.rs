//! What operators watch the daemon with: the Grafana dashboards in `dashboards/` and the
//! Prometheus alert rules in `prometheus/`, checked against the running daemon's `/metrics`
//! (every metric they name exists, and the counters are there at 0 from start) and against
//! how telemetry is written to InfluxDB; the front page on `/`.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{gridwatch, metrics, Daemon};
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn dashboard(name: &str) -> Value {
    let text = std::fs::read_to_string(repo("dashboards").join(name)).unwrap_or_else(|e| panic!("dashboards/{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("dashboards/{name} is not JSON: {e}"))
}

/// Every `gridwatch_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("gridwatch_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The sample names a Prometheus exposition declares: `# TYPE name kind` gives `name_total`
/// for a counter, `name_bucket`/`_sum`/`_count` for a histogram, `name` otherwise — so a
/// family with no series yet (a serial port that is not configured) still counts as existing.
fn exposed(text: &str) -> HashSet<String> {
    let mut names = HashSet::new();
    for line in text.lines() {
        let Some(declaration) = line.strip_prefix("# TYPE ") else { continue };
        let mut words = declaration.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else { continue };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => names.extend(["_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}"))),
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The demo's daemon with `/metrics` on a free port, once it answers.
fn demo_metrics() -> (Daemon, tempfile::TempDir, u16, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let port = gridwatch_tests::free_port();
    let listen = format!("127.0.0.1:{port}");
    let daemon = Daemon::start(&["demo", "--for", "60s", "--state-dir", "state", "--http-listen", &listen], dir.path());
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let text = runtime.block_on(async {
        for _ in 0..400 {
            let text = metrics(port).await;
            if text.contains("# EOF") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        String::new()
    });
    assert!(text.contains("# EOF"), "no /metrics from the demo on {listen}; log: {:?}", daemon.stderr());
    (daemon, dir, port, text)
}

/// Each panel: a type, a unique id, a gridPos inside the 24 columns, and — unless it is a
/// row — a datasource that is one of the dashboard's datasource variables and targets with
/// unique refIds and a query. Returns every query text (targets and annotations).
fn check_structure(name: &str, board: &Value) -> Vec<(String, String)> {
    for key in ["title", "uid", "schemaVersion", "panels", "templating", "time"] {
        assert!(board.get(key).is_some(), "{name}: no `{key}`");
    }
    let variables: Vec<&Value> = board["templating"]["list"].as_array().expect("templating.list").iter().collect();
    let datasource_vars: HashSet<String> =
        variables.iter().filter(|v| v["type"] == "datasource").map(|v| format!("${{{}}}", v["name"].as_str().expect("variable name"))).collect();
    assert!(!datasource_vars.is_empty(), "{name}: no datasource variable");
    let mut ids = HashSet::new();
    let mut queries = Vec::new();
    let panels = board["panels"].as_array().expect("panels");
    assert!(panels.len() > 3, "{name}: {} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_else(|| panic!("{name}: panel without title: {panel}"));
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("{name}: `{title}` has no numeric id"));
        assert!(ids.insert(id), "{name}: id {id} used twice (`{title}`)");
        let kind = panel["type"].as_str().unwrap_or_else(|| panic!("{name}: `{title}` has no type"));
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap_or_else(|| panic!("{name}: `{title}` gridPos.{k}")));
        assert!(w >= 1 && h >= 1 && x + w <= 24, "{name}: `{title}` gridPos x={x} w={w} h={h} y={y}");
        if kind == "row" {
            continue;
        }
        let source = panel["datasource"]["uid"].as_str().unwrap_or_else(|| panic!("{name}: `{title}` has no datasource"));
        assert!(datasource_vars.contains(source), "{name}: `{title}` uses datasource {source}, not one of {datasource_vars:?}");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{name}: `{title}` has no targets"));
        assert!(!targets.is_empty(), "{name}: `{title}` has no targets");
        let mut refs = HashSet::new();
        for target in targets {
            let reference = target["refId"].as_str().unwrap_or_else(|| panic!("{name}: `{title}` target without refId"));
            assert!(refs.insert(reference), "{name}: `{title}` refId {reference} twice");
            let query =
                target["expr"].as_str().or(target["query"].as_str()).unwrap_or_else(|| panic!("{name}: `{title}` target {reference} has no expr/query"));
            assert!(!query.trim().is_empty(), "{name}: `{title}` empty query");
            queries.push((source.to_string(), query.to_string()));
        }
    }
    for annotation in board["annotations"]["list"].as_array().expect("annotations.list") {
        if let Some(expr) = annotation["expr"].as_str() {
            let source = annotation["datasource"]["uid"].as_str().expect("annotation datasource");
            assert!(datasource_vars.contains(source), "{name}: annotation `{}` uses {source}", annotation["name"]);
            queries.push((source.to_string(), expr.to_string()));
        }
    }
    queries
}

#[test]
fn dashboards_and_alert_rules_name_only_metrics_the_daemon_exposes_and_counters_start_at_zero() {
    let (mut daemon, _dir, port, text) = demo_metrics();
    let mut names = exposed(&text);
    // The demo has no serial port, and a family without a series is not rendered: the same
    // registry with one port shows the per-port names.
    let with_port = gridwatch::metrics::Metrics::new();
    let _ = with_port.serial_frames.get_or_create(&gridwatch::metrics::PortResultLabel { port: "/dev/ttyUSB0".into(), result: "good".into() });
    let _ = with_port.serial_port_errors.get_or_create(&gridwatch::metrics::Metrics::port("/dev/ttyUSB0"));
    names.extend(exposed(&with_port.render()));

    // Counters there at 0 from start, for the channels the demo configures (console, mqtt).
    for series in [
        "gridwatch_alert_delivery_failures_total{sink=\"mqtt\"} 0",
        "gridwatch_alert_delivery_retries_total{sink=\"console\"} 0",
        "gridwatch_telemetry_points_dropped_total{reason=\"spool_full\"} 0",
        "gridwatch_reloads_total{result=\"invalid\"} 0",
    ] {
        assert!(text.contains(series), "{series} not in /metrics:\n{text}");
    }
    assert!(common::metric(&text, "gridwatch_reload_success") == Some(1.0), "rules loaded at start:\n{text}");
    let build = text.lines().find(|l| l.starts_with("gridwatch_build_info{")).unwrap_or_else(|| panic!("no build info:\n{text}"));
    assert!(build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))) && build.ends_with(" 1"), "{build}");

    // The front page links to the rest, from the same port.
    let front =
        tokio::runtime::Runtime::new().unwrap().block_on(async { reqwest::get(format!("http://127.0.0.1:{port}/")).await.unwrap().text().await.unwrap() });
    assert!(front.contains("href=\"incidents\"") && front.contains("href=\"metrics\"") && front.contains("href=\"api/balance\""), "{front}");
    daemon.stop();

    let rules = std::fs::read_to_string(repo("prometheus/gridwatch.rules.yml")).unwrap();
    let mut used = metric_names(&rules);
    let daemon_board = dashboard("gridwatch-daemon.json");
    let telemetry_board = dashboard("gridwatch-telemetry.json");
    for (name, board) in [("gridwatch-daemon.json", &daemon_board), ("gridwatch-telemetry.json", &telemetry_board)] {
        for (source, query) in check_structure(name, board) {
            if source == "${prometheus}" {
                used.extend(metric_names(&query));
            }
        }
    }
    assert!(used.len() > 25, "the dashboards and rules use {} metrics: {used:?}", used.len());
    let missing: Vec<&String> = used.iter().filter(|name| !names.contains(*name)).collect();
    assert!(missing.is_empty(), "named in dashboards/ or prometheus/ but not in /metrics: {missing:?}\n{text}");
}

#[test]
fn the_telemetry_dashboard_asks_influxdb_for_what_the_writer_stores() {
    let board = dashboard("gridwatch-telemetry.json");
    let queries: Vec<String> =
        check_structure("gridwatch-telemetry.json", &board).into_iter().filter(|(source, _)| source == "${influxdb}").map(|(_, q)| q).collect();
    assert!(queries.len() >= 5, "{queries:?}");
    // daemon/src/telemetry/writer.rs: measurement = the sensor kind, tags sensor, site,
    // building, grid; fields as the readings name them (tilt boxes x and y).
    let measurements = ["tilt", "water"];
    let tags = ["sensor", "site", "building", "grid"];
    let packs: String = ["water-gb3838.toml", "drinking-gb5749.toml"].iter().map(|p| std::fs::read_to_string(repo("rules/packs").join(p)).unwrap()).collect();
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(at) = rest.find("r._measurement == \"") {
            let name = rest[at + 19..].split('"').next().unwrap();
            assert!(measurements.contains(&name), "unknown measurement {name} in {query}");
            rest = &rest[at + 19..];
        }
        let mut rest = query.as_str();
        while let Some(at) = [rest.find("r._field == \""), rest.find("r._field != \"")].into_iter().flatten().min() {
            let field = rest[at + 13..].split('"').next().unwrap();
            let judged = |field: &str| packs.contains(&format!("value = \"{field}\"")) || packs.contains(&format!("value = \"within({field},"));
            let known = if query.contains("\"tilt\"") { ["x", "y"].contains(&field) } else { judged(field) };
            assert!(known, "field {field} is not one the readings have: {query}");
            rest = &rest[at + 13..];
        }
        for tag in ["site", "sensor", "building", "grid", "station", "house", "device"] {
            if query.contains(&format!("r.{tag} ")) {
                assert!(tags.contains(&tag), "tag {tag} is not written: {query}");
            }
        }
    }
    assert!(queries.iter().any(|q| q.contains("\"tilt\"") && q.contains("cumulativeSum")), "a tilt-change panel");
    assert!(queries.iter().any(|q| q.contains("\"water\"") && q.contains("\"III\"")), "a water-class panel");
    let alarms = board["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["expr"].as_str().is_some_and(|e| e.contains("gridwatch_rule_events_total{event=\"fired\"}")))
        .count();
    assert_eq!(alarms, 1, "alarms as annotations");
}

#[test]
fn alert_rules_pass_promtool_check_and_their_own_tests() {
    let dir = repo("prometheus");
    for args in [vec!["check", "rules", "gridwatch.rules.yml"], vec!["test", "rules", "gridwatch.rules.test.yml"]] {
        let output = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("promtool not found ({e}): install Debian's `prometheus` package (.ci/run does)"));
        assert!(output.status.success(), "promtool {args:?}:\n{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    }
    let rules = std::fs::read_to_string(dir.join("gridwatch.rules.yml")).unwrap();
    for alert in ["GridwatchMqttBrokerDown", "GridwatchSpoolGrowing", "GridwatchAlertChannelFailing", "GridwatchRulesReloadFailed", "GridwatchStoreNotWritable"]
    {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert} missing");
    }
}

#[test]
fn a_refused_rule_reload_shows_in_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = gridwatch_tests::free_port();
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"x\"\nvalue = \"do\"\nbelow = 5\nseverity = \"warning\"\n").unwrap();
    let config = format!("state_dir = \"state\"\n[mqtt]\nbroker = \"embedded\"\nembedded_listen = \"127.0.0.1:{}\"\n[rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[http]\nlisten = \"127.0.0.1:{port}\"\n", gridwatch_tests::free_port());
    std::fs::write(dir.path().join("gridwatch.toml"), &config).unwrap();
    let validate = gridwatch().args(["validate", "--config", "gridwatch.toml"]).current_dir(dir.path()).output().unwrap();
    assert!(validate.status.success(), "{}", String::from_utf8_lossy(&validate.stderr));
    let mut daemon = Daemon::start(&["run", "--config", "gridwatch.toml"], dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let value = |name: &'static str| runtime.block_on(async { common::metric(&metrics(port).await, name) });
    let until = |name: &'static str, want: f64| {
        for _ in 0..200 {
            if value(name) == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    assert!(until("gridwatch_reload_success", 1.0), "loaded at start; log: {:?}", daemon.stderr());
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"x\"\nvalue = \"do\"\nbelwo = 5\n").unwrap();
    daemon.signal("HUP");
    assert!(until("gridwatch_reload_success", 0.0), "refused reload; log: {:?}", daemon.stderr());
    // SIGHUP, and the file watcher may have seen the change too.
    assert!(value("gridwatch_reloads_total{result=\"invalid\"}").is_some_and(|n| n >= 1.0));
    std::fs::write(dir.path().join("rules.toml"), "[[rule]]\nid = \"x\"\nvalue = \"do\"\nbelow = 4\nseverity = \"warning\"\n").unwrap();
    daemon.signal("HUP");
    assert!(until("gridwatch_reload_success", 1.0), "good reload; log: {:?}", daemon.stderr());
    assert!(value("gridwatch_reloads_total{result=\"ok\"}").is_some_and(|n| n >= 1.0));
    daemon.stop();
}

//! Helpers for black-box tests of the `gridwatch` binary.

#![allow(dead_code)] // each test file uses a different part of this module

pub mod sd_card;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn gridwatch() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gridwatch"))
}

/// Debian's libfaketime (multi-threaded flavour: the daemon runs tokio worker threads).
pub fn libfaketime() -> std::path::PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
    ];
    candidates
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libfaketime is not installed (apt-get install faketime; .ci/run does): looked for {candidates:?}"))
}

/// A `gridwatch` process whose stdout and stderr lines are collected as they arrive.
pub struct Daemon {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(pipe: impl std::io::Read + Send + 'static, lines: Arc<Mutex<Vec<String>>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    })
}

impl Daemon {
    pub fn start(args: &[&str], dir: &Path) -> Daemon {
        let mut command = gridwatch();
        command.args(args);
        Daemon::spawn(command, dir)
    }

    /// Starts `command` (gridwatch, or a wrapper that ends by executing it) in `dir`.
    pub fn spawn(mut command: Command, dir: &Path) -> Daemon {
        let mut child = command
            .current_dir(dir)
            .env("RUST_LOG", "info,rumqttd=off")
            .env("NO_COLOR", "1")
            // The test machine's kernel may not be NTP-disciplined; tests of an unset clock
            // say so in their configuration (`[ingest] clock_synchronized`).
            .env("GRIDWATCH_CLOCK_SYNCHRONIZED", "always")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gridwatch");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers =
            vec![collect(child.stdout.take().expect("stdout pipe"), stdout.clone()), collect(child.stderr.take().expect("stderr pipe"), stderr.clone())];
        Daemon { child, stdout, stderr, readers }
    }

    /// `gridwatch` with `args` in `dir` under libfaketime, its wall clock read from the returned
    /// file (written with `faked`, libfaketime's syntax: "-3d", "@1970-01-02 00:00:00"; rewrite it
    /// to step the clock, as NTP does); the monotonic clock stays true.
    pub fn start_with_faked_clock(args: &[&str], dir: &Path, faked: &str) -> (Daemon, std::path::PathBuf) {
        let faketime_file = dir.join("faketime");
        std::fs::write(&faketime_file, faked).unwrap();
        let mut command = gridwatch();
        command
            .args(args)
            .env("LD_PRELOAD", libfaketime())
            .env("FAKETIME_TIMESTAMP_FILE", &faketime_file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        (Daemon::spawn(command, dir), faketime_file)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// The log so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL: the power cut. Waits until the process is gone.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }

    /// Sends SIGTERM (what systemd does) and waits for the process and its output.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        let status = self.child.wait().expect("wait for gridwatch");
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fetches the daemon's /metrics text ("" while it is not up yet).
pub async fn metrics(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The value of one sample line of a Prometheus exposition, e.g.
/// `gridwatch_payloads_rejected_total{reason="not_json"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

pub const SECOND: Duration = Duration::from_secs(1);

/// Where screenshots are written: docs/screenshots/ when `GRIDWATCH_SCREENSHOTS=docs`, else
/// the test's temporary dir.
pub fn screenshot_dir() -> std::path::PathBuf {
    let dir = match std::env::var("GRIDWATCH_SCREENSHOTS").as_deref() {
        Ok("docs") => Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots"),
        _ => Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Publishes `payload()` on `topic` until the daemon serving `/metrics` on `http_port` has
/// evaluated a reading (it is subscribed and running); false after 20 s.
pub async fn publish_until_evaluated(mosquitto: &gridwatch_tests::Mosquitto, topic: &str, payload: impl Fn() -> String, http_port: u16) -> bool {
    gridwatch_tests::wait_for(20 * SECOND, || {
        mosquitto.publish(topic, &payload()).unwrap();
        async move { metric(&metrics(http_port).await, "gridwatch_samples_accepted_total").unwrap_or(0.0) >= 1.0 }
    })
    .await
}

/// The daemon's per-sink accounts (`/api/balance`; `null` while it is not up).
pub async fn balance(http_port: u16) -> serde_json::Value {
    match reqwest::get(format!("http://127.0.0.1:{http_port}/api/balance")).await {
        Ok(response) => response.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    }
}

/// Waits until every sink's accounts balance (taken on = delivered + dropped + pending);
/// the last accounts seen when they do not within 20 s.
pub async fn wait_balanced(http_port: u16) -> Result<serde_json::Value, serde_json::Value> {
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        last = balance(http_port).await;
        if last["balanced"] == true {
            return Ok(last);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

/// The configuration of a box in the field tests of its SD card (`sd_card`): its state directory
/// on the card with a runtime directory beside it, tilt sensors `sensors` of north-lane in grid-5,
/// the rules in `rules.toml` and the roster in `roster.toml`, and one webhook; `http` and
/// `dispatch` add lines to those tables.
pub fn card_box_config(client_id: &str, broker: &str, webhook: &str, http_port: u16, sensors: &[&str], http: &str, dispatch: &str) -> String {
    let sensors: String = sensors.iter().map(|id| format!("[[sensor]]\nid = \"{id}\"\nkind = \"tilt\"\nsite = \"north-lane\"\ngrid = \"grid-5\"\n")).collect();
    format!(
        "state_dir = \"state\"\nruntime_dir = \"run\"\n[mqtt]\nbroker = \"{broker}\"\nclient_id = \"{client_id}-{http_port}\"\n{sensors}\
         [rules]\nbuiltin_packs = false\npaths = [\"rules.toml\"]\n[alerts]\nconsole = false\n\
         [[alerts.webhook]]\nname = \"office\"\nurl = \"{webhook}\"\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n{http}[dispatch]\nroster = \"roster.toml\"\n{dispatch}"
    )
}

/// A grid with 王芳 on duty around the clock and 陈刚 its leader; an `alarm` must be accepted
/// within 4 s (reminded every 1.5 s meanwhile) and reached on site within 12 s, else it goes to
/// the grid leader.
pub const ALARM_LADDER_ROSTER: &str = r#"
timezone = "+08:00"

[[grid]]
id = "grid-5"

[[member]]
id = "wang"
name = "王芳"
role = "worker"
phone = "13800000001"
grids = ["grid-5"]

[[member]]
id = "chen"
name = "陈刚"
role = "grid_leader"
phone = "13800000002"
grids = ["grid-5"]

[[shift]]
member = "wang"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
from = "00:00"
to = "00:00"

[[policy]]
severity = "alarm"
accept_within = "4s"
on_site_within = "12s"
remind_every = "1500ms"
escalate_to = [["grid_leader"]]
"#;

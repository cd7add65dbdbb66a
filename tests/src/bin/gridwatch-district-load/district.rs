//! The district a load run measures, all on loopback: a 3-node NATS JetStream cluster, a
//! throw-away PostgreSQL, one `gridwatch hub` (box-down to a webhook receiver; with readings,
//! `--influx` to a VictoriaMetrics standing in for the district's InfluxDB), and N community
//! boxes, each a `gridwatch run` process with its own mosquitto, its own inventory of water
//! probes (the default packs plus a marker rule), its link to the cluster through a
//! [`LinkProxy`] (that can be blackholed) and `[cluster]` settings at their defaults plus the
//! run's own. Every process is stopped when the [`District`] drops.

use anyhow::{bail, Context};
use gridwatch_tests::{free_port, wait_for, LinkProxy, Mosquitto, NatsCluster, Postgres, VictoriaMetrics, WebhookReceiver};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The district every box belongs to.
const DISTRICT: &str = "load";
/// The site of every simulated sensor: topics are `gridwatch/load/<sensor>/telemetry`.
pub const SITE: &str = "load";
/// The marker rule: a reading with `marker` 1 fires it, the next with 0 clears it.
const MARKER_RULE: &str =
    "[[rule]]\nid = \"load-marker\"\ntitle = \"Load harness marker\"\nkind = \"water\"\nvalue = \"marker\"\nabove = 0.5\nseverity = \"warning\"\n";

/// A process of ours (hub or box), stopped with SIGTERM when dropped (SIGKILL after
/// [`STOP_GRACE`]).
#[derive(Debug)]
pub struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(command: &mut Command, log: PathBuf, what: &str) -> anyhow::Result<Running> {
        let child = command
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            // The machine's kernel clock may not say it is NTP-disciplined; the harness's is the truth.
            .env("GRIDWATCH_CLOCK_SYNCHRONIZED", "always")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        Ok(Running { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines of the process's log (warnings and errors) that contain `text`.
    pub fn log_lines_with(&self, text: &str) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().filter(|line| line.contains(text)).map(str::to_string).collect()
    }

    /// The last lines of the process's log (warnings and errors), for a failed run's message.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

/// How long a process has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not exit within {STOP_GRACE:?} of SIGTERM: killed", self.log.display());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One community: its broker and its box.
#[derive(Debug)]
pub struct CommunityBox {
    pub id: String,
    pub mosquitto: Mosquitto,
    pub process: Running,
    /// The box's link to the cluster (its 4G).
    pub proxy: LinkProxy,
    /// The box's `/metrics`.
    pub metrics_url: String,
    _dir: tempfile::TempDir,
}

/// The district's services, its hub and its boxes.
#[derive(Debug)]
pub struct District {
    pub boxes: Vec<CommunityBox>,
    pub hub: Running,
    pub postgres: Postgres,
    pub webhook: WebhookReceiver,
    /// The hub's `/metrics`.
    pub hub_metrics_url: String,
    /// The district's InfluxDB, when boxes send readings up.
    pub influx: Option<VictoriaMetrics>,
    _hub_dir: tempfile::TempDir,
    pub nats: NatsCluster,
}

/// What a district is made of.
#[derive(Debug, Clone)]
pub struct Setup<'a> {
    pub daemon: &'a Path,
    pub boxes: usize,
    pub sensors_per_box: usize,
    /// Readings go up to a district InfluxDB (the hub's `--influx`).
    pub influx: bool,
    /// Lines added to each box's `[cluster]` table.
    pub cluster_settings: String,
}

impl District {
    /// Starts everything and waits until the hub is active and every box is connected to its
    /// broker.
    pub async fn start(setup: &Setup<'_>) -> anyhow::Result<District> {
        let daemon = setup.daemon;
        let nats = NatsCluster::start(3).await?;
        let influx = if setup.influx { Some(VictoriaMetrics::start().await?) } else { None };
        let postgres = Postgres::start().await?;
        let webhook = WebhookReceiver::start(Vec::new()).await;
        let hub_dir = tempfile::tempdir()?;
        let hub_listen = format!("127.0.0.1:{}", free_port());
        let mut hub_command = Command::new(daemon);
        hub_command.current_dir(hub_dir.path()).args(["hub", "--postgres", &postgres.conninfo(), "--webhook", &webhook.url(), "--listen", &hub_listen]);
        for url in nats.urls() {
            hub_command.args(["--nats", &url]);
        }
        if let Some(vm) = &influx {
            hub_command.args(["--influx", &vm.url()]);
        }
        let hub = Running::spawn(&mut hub_command, hub_dir.path().join("hub.log"), "the hub")?;
        let hub_metrics_url = format!("http://{hub_listen}/metrics");
        let http = reqwest::Client::new();
        if !wait_for(Duration::from_secs(60), || async { metric_sum(&http, &hub_metrics_url, "gridwatch_hub_active").await == Some(1.0) }).await {
            bail!("the hub did not become active within 60 s:\n{}", hub.log_tail());
        }
        let mut community_boxes = Vec::with_capacity(setup.boxes);
        for index in 1..=setup.boxes {
            community_boxes.push(start_box(setup, &format!("box-{index:02}"), &nats).await?);
        }
        for community in &community_boxes {
            let connected =
                wait_for(Duration::from_secs(60), || async { metric_sum(&http, &community.metrics_url, "gridwatch_mqtt_connected").await == Some(1.0) }).await;
            if !connected {
                bail!("box {} did not connect to its broker within 60 s:\n{}", community.id, community.process.log_tail());
            }
        }
        Ok(District { boxes: community_boxes, hub, postgres, webhook, hub_metrics_url, influx, _hub_dir: hub_dir, nats })
    }
}

async fn start_box(setup: &Setup<'_>, id: &str, nats: &NatsCluster) -> anyhow::Result<CommunityBox> {
    let (daemon, sensors) = (setup.daemon, setup.sensors_per_box);
    let proxy = LinkProxy::start(nats.addrs()).await?;
    // Unlimited queue: a box falling behind shows as a lower rate, not as broker drops.
    let mosquitto = Mosquitto::start_with("max_queued_messages 0").await?;
    let dir = tempfile::tempdir()?;
    let http_port = free_port();
    let config = format!(
        "inventory = \"sensors.csv\"\nstate_dir = \"state\"\n[mqtt]\nbroker = \"{}\"\nclient_id = \"gw-{id}\"\n[rules]\nbuiltin_packs = true\npaths = [\"load.toml\"]\n\
         [alerts]\nconsole = false\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [cluster]\nnats_urls = [\"{}\"]\nbox_id = \"{id}\"\ndistrict = \"{DISTRICT}\"\n{}\n\
         [dispatch]\nack_secret = \"district-load-ack-secret\"\n",
        mosquitto.url(),
        proxy.nats_url(),
        setup.cluster_settings
    );
    std::fs::write(dir.path().join("gridwatch.toml"), config)?;
    std::fs::write(dir.path().join("load.toml"), MARKER_RULE)?;
    let mut inventory = String::from("id,kind,site,interval_secs,tag.use\n");
    for sensor in 0..sensors {
        let _ = writeln!(inventory, "p{sensor},water,{SITE},60,surface");
    }
    std::fs::write(dir.path().join("sensors.csv"), inventory)?;
    let mut command = Command::new(daemon);
    command.current_dir(dir.path()).args(["run", "--config", "gridwatch.toml"]);
    let process = Running::spawn(&mut command, dir.path().join("box.log"), id)?;
    Ok(CommunityBox { id: id.to_string(), mosquitto, process, proxy, metrics_url: format!("http://127.0.0.1:{http_port}/metrics"), _dir: dir })
}

/// The sum of every sample of `name` (all its label sets) on a `/metrics` page; `None` when the
/// page does not answer or has no such series.
pub async fn metric_sum(http: &reqwest::Client, url: &str, name: &str) -> Option<f64> {
    let text = http.get(url).timeout(Duration::from_secs(5)).send().await.ok()?.text().await.ok()?;
    sum_of_series(&text, name)
}

/// [`metric_sum`] of a page's text.
fn sum_of_series(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = if rest.starts_with('{') { rest.rsplit_once(' ')?.1 } else { rest.strip_prefix(' ')? };
            value.trim().parse().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_sums_over_its_labels_and_not_over_longer_names() {
        let page =
            "# HELP x\ngridwatch_rule_events_total{event=\"fired\"} 3\ngridwatch_rule_events_total{event=\"cleared\"} 2\ngridwatch_rule_events_total_other 9\n";
        assert_eq!(sum_of_series(page, "gridwatch_rule_events_total"), Some(5.0));
        assert_eq!(sum_of_series("gridwatch_up 1\n", "gridwatch_up"), Some(1.0));
        assert_eq!(sum_of_series("gridwatch_up nonsense\n", "gridwatch_up"), None);
        assert_eq!(sum_of_series("", "gridwatch_up"), None);
    }
}

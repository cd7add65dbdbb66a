//! `[cluster]`: this box's place in a district (issue 23) — the NATS JetStream cluster it sends
//! its alert events, incident transitions and (capped) readings to, its id and district, and
//! how its uplink paces itself. Accepted by every build so that a default (Pi) build refuses the table with a clear
//! error instead of an unknown key; only a build with `--features cluster` runs the uplink.

use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// `nats://host:port` of the district's nodes (any of them; the client fails over).
    pub nats_urls: Spanned<Vec<String>>,
    /// This box's id in the district: letters, digits, `-` and `_` (it names subjects and keys).
    pub box_id: Spanned<String>,
    pub district: Spanned<String>,
    pub batch_rows: Option<Spanned<u64>>,
    pub lease_renew_secs: Option<Spanned<u64>>,
    pub commit_wait_secs: Option<Spanned<u64>>,
    pub uplink_points_per_sec: Option<Spanned<u64>>,
    pub readings_batch_secs: Option<Spanned<u64>>,
    pub sensors_via_hub: Option<bool>,
    pub standby_copy_secs: Option<Spanned<u64>>,
}

/// `[cluster]`, checked.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub nats_urls: Vec<String>,
    pub box_id: String,
    pub district: String,
    /// Rows in one uplink message at most.
    pub batch_rows: usize,
    /// How often the box renews its lease (the hub's lease lifetime must be a few times longer).
    pub lease_renew: Duration,
    /// How long a box waits for the hub to commit a batch it sent (its high-water mark in KV to
    /// reach the batch's last row) before it sends the same batch again.
    pub commit_wait: Duration,
    /// Most readings a second the box sends up (thinned per sensor beyond it); 0: none.
    pub uplink_points_per_sec: u64,
    /// How long chosen readings gather before they are written for the uplink (and so how
    /// late they reach the district, and how many a crash of the box can cost it).
    pub readings_batch: Duration,
    /// Whether this box also judges its sensors with their own 4G link, which publish to the
    /// hub's MQTT listener (`gw/s/<district>/<box>/<sensor>`), from the district's stream.
    pub sensors_via_hub: bool,
    /// How often at most this box puts a new copy of its 4G sensors' rule state into the
    /// district's KV, for the hub to judge them from while the box is down.
    pub standby_copy: Duration,
}

const BATCH_ROWS: (u64, std::ops::RangeInclusive<u64>) = (500, 1..=10_000);
const LEASE_RENEW_SECS: (u64, std::ops::RangeInclusive<u64>) = (5, 1..=300);
const COMMIT_WAIT_SECS: (u64, std::ops::RangeInclusive<u64>) = (10, 1..=600);
/// 5 a second: a 200-sensor community at one reading a minute (3.3/s) goes up whole with room
/// for bursts, about 41 MB a day on the link (≈ 144 bytes a reading, docs/district.md), at most
/// ~62 MB a day at the cap; a larger one is thinned to an equal share per sensor (1,000
/// sensors: one reading each every 200 s).
const UPLINK_POINTS_PER_SEC: (u64, std::ops::RangeInclusive<u64>) = (5, 0..=10_000);
const READINGS_BATCH_SECS: (u64, std::ops::RangeInclusive<u64>) = (30, 1..=600);
/// Ten minutes: a 4G tilt box's copy is ~3 KB, so ~0.5 MB a day on the link per such box; an
/// older copy costs the district's standby only a longer replay (docs/district.md).
const STANDBY_COPY_SECS: (u64, std::ops::RangeInclusive<u64>) = (600, 1..=86_400);

/// Whether `id` can name a NATS subject token and a KV key.
pub fn is_token(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl super::Checker<'_> {
    pub(super) fn cluster(&mut self, raw: RawCluster) -> Option<ClusterConfig> {
        let before = self.diagnostics.len();
        if !cfg!(feature = "cluster") {
            self.error(raw.box_id.span(), Some("cluster"), "this gridwatch was built without the district uplink (build with --features cluster)".into());
        }
        if raw.nats_urls.get_ref().is_empty() {
            self.error(raw.nats_urls.span(), Some("cluster.nats_urls"), "name at least one NATS server (nats://host:port)".into());
        }
        for (key, value) in [("cluster.box_id", &raw.box_id), ("cluster.district", &raw.district)] {
            if !is_token(value.get_ref()) {
                self.error(value.span(), Some(key), format!("`{}`: use 1 to 64 letters, digits, `-` or `_`", value.get_ref()));
            }
        }
        let batch_rows = self.bounded(raw.batch_rows, "cluster.batch_rows", BATCH_ROWS) as usize;
        let lease_renew = Duration::from_secs(self.bounded(raw.lease_renew_secs, "cluster.lease_renew_secs", LEASE_RENEW_SECS));
        let commit_wait = Duration::from_secs(self.bounded(raw.commit_wait_secs, "cluster.commit_wait_secs", COMMIT_WAIT_SECS));
        let uplink_points_per_sec = self.bounded(raw.uplink_points_per_sec, "cluster.uplink_points_per_sec", UPLINK_POINTS_PER_SEC);
        let readings_batch = Duration::from_secs(self.bounded(raw.readings_batch_secs, "cluster.readings_batch_secs", READINGS_BATCH_SECS));
        let standby_copy = Duration::from_secs(self.bounded(raw.standby_copy_secs, "cluster.standby_copy_secs", STANDBY_COPY_SECS));
        (self.diagnostics.len() == before).then(|| ClusterConfig {
            nats_urls: raw.nats_urls.into_inner(),
            box_id: raw.box_id.into_inner(),
            district: raw.district.into_inner(),
            batch_rows,
            lease_renew,
            commit_wait,
            uplink_points_per_sec,
            readings_batch,
            sensors_via_hub: raw.sensors_via_hub.unwrap_or(false),
            standby_copy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_token;
    use crate::config::{Config, ConfigError};
    use std::path::Path;

    const WITH_CLUSTER: &str = "state_dir = \"state\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\n[cluster]\nnats_urls = [\"nats://10.0.0.1:4222\"]\nbox_id = \"east-canal\"\ndistrict = \"old-town\"\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse("gridwatch.toml", text, Path::new("/etc/gridwatch"))
    }

    #[cfg(not(feature = "cluster"))]
    #[test]
    fn a_default_build_refuses_the_cluster_table() {
        let Err(ConfigError::Invalid(diagnostics)) = parse(WITH_CLUSTER) else { panic!("accepted [cluster] without the feature") };
        assert!(diagnostics.iter().any(|d| d.to_string().contains("--features cluster")), "{diagnostics:?}");
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn the_cluster_table_gets_defaults_and_checks_its_box_id() {
        let cluster = parse(WITH_CLUSTER).unwrap().cluster.unwrap();
        assert_eq!((cluster.box_id.as_str(), cluster.batch_rows, cluster.lease_renew.as_secs(), cluster.commit_wait.as_secs()), ("east-canal", 500, 5, 10));
        assert_eq!((cluster.uplink_points_per_sec, cluster.readings_batch.as_secs(), cluster.sensors_via_hub), (5, 30, false));
        let Err(ConfigError::Invalid(diagnostics)) = parse(&WITH_CLUSTER.replace("east-canal", "east.canal")) else { panic!("accepted a box id with a dot") };
        assert!(diagnostics.iter().any(|d| d.to_string().contains("cluster.box_id")), "{diagnostics:?}");
    }

    #[test]
    fn an_ack_secret_without_a_topic_is_for_the_districts_relayed_actions() {
        let text = "state_dir = \"state\"\n[mqtt]\nbroker = \"mqtt://127.0.0.1:1883\"\n[dispatch]\nack_secret = \"district-shared-ack-secret\"\n";
        let acks = parse(text).unwrap().incident_acks.expect("a key for relayed actions");
        assert_eq!(acks.topic, None, "nothing is subscribed over MQTT");
        assert_eq!(acks.box_id(), None, "a box alone takes actions that name no box");
        let Err(ConfigError::Invalid(diagnostics)) = parse(&text.replace("district-shared-ack-secret", "short")) else { panic!("accepted a short secret") };
        assert!(diagnostics.iter().any(|d| d.to_string().contains("at least 16")), "{diagnostics:?}");
    }

    #[cfg(feature = "cluster")]
    #[test]
    fn a_district_box_takes_only_actions_that_name_it() {
        let text = format!("{WITH_CLUSTER}[dispatch]\nack_secret = \"district-shared-ack-secret\"\nack_topic = \"gridwatch/acks/east\"\n");
        let acks = parse(&text).unwrap().incident_acks.expect("a key for relayed actions");
        assert_eq!(acks.box_id(), Some("east-canal"), "on the ack topic too");
    }

    #[test]
    fn box_ids_are_subject_tokens() {
        assert!(is_token("east-canal_01"));
        assert!(!is_token(""));
        assert!(!is_token("east.canal"));
        assert!(!is_token("east canal"));
        assert!(!is_token("东区"));
    }
}

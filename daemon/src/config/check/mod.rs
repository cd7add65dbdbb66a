//! Turns the raw file into a checked [`crate::config::Config`]: the [`Checker`] collects every
//! problem with its file, line, column and key. `config` assembles the sections, each checked in
//! its own file here (`[[serial]]` and `[cluster]` are checked beside their types, one folder up).

mod channels;
mod inventory;
mod language;
mod mqtt;
mod roster;
mod sensors;
mod store;
mod web;

pub use channels::sink_names;
pub use mqtt::{check_topic_filter, tls_client_config};

use crate::config::raw::{self, RawConfig};
use crate::config::types::{Config, RulesConfig, SensorConfig};
use gridwatch_rules::diagnostic::line_column;
use gridwatch_rules::Diagnostic;
use sensors::SharedParts;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toml::Spanned;

/// Collects diagnostics while turning the raw file into a [`Config`].
pub(in crate::config) struct Checker<'a> {
    pub(in crate::config) name: &'a str,
    pub(in crate::config) text: &'a str,
    pub(in crate::config) diagnostics: Vec<Diagnostic>,
    /// `[alerts.failover]` entries and where they are written, checked once the channels are known.
    pub(in crate::config) failover_spans: Vec<(String, Range<usize>)>,
    /// The roster's text to use instead of reading `[dispatch] roster` (the last good copy's).
    pub(in crate::config) roster_text: Option<&'a str>,
}

impl Checker<'_> {
    pub(in crate::config) fn error(&mut self, span: Range<usize>, key: Option<&str>, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.diagnostics.push(Diagnostic { file: self.name.to_string(), line, column, key: key.map(str::to_string), message });
    }

    /// A whole number of `key` within `bounds`, or the default (with an error when out of
    /// bounds).
    pub(in crate::config) fn bounded(&mut self, value: Option<Spanned<u64>>, key: &str, (default, bounds): (u64, std::ops::RangeInclusive<u64>)) -> u64 {
        let Some(value) = value else { return default };
        if !bounds.contains(value.get_ref()) {
            self.error(value.span(), Some(key), format!("must be {} to {}", bounds.start(), bounds.end()));
            return default;
        }
        value.into_inner()
    }

    pub(in crate::config) fn config(&mut self, mut raw: RawConfig, base: &Path) -> Config {
        let state_dir = base.join(raw.state_dir.get_ref());
        let state_reserve_bytes = raw.state_reserve_kib.saturating_mul(1024);
        let runtime_dir = raw.runtime_dir.map(|dir| base.join(dir.get_ref()));
        let mut shared = SharedParts::default();
        let mut sensors = self.sensors(raw.sensors, &mut shared);
        if let Some(inventory) = raw.inventory.and_then(|file| self.existing_path(base, file, "inventory")) {
            self.add_inventory(&inventory, &mut sensors, &mut shared);
        }
        let mqtt = self.mqtt(raw.mqtt, &sensors, base);
        let state_save = self.state_save(raw.rules.state_save_secs);
        let rules = RulesConfig {
            builtin_packs: raw.rules.builtin_packs,
            paths: raw.rules.paths.into_iter().filter_map(|p| self.existing_path(base, p, "rules.paths")).collect(),
            state_save,
        };
        let clock_synchronized = self.clock_synchronized(raw.ingest.clock_synchronized.take());
        let ingest = self.ingest(raw.ingest);
        let wording = self.wording(raw.language.as_ref(), raw.time_zone.as_ref());
        let alerts = self.alerts(raw.alerts, base, wording);
        let influxdb = raw.influxdb.and_then(|raw| self.influx(raw, base));
        let photo_max_bytes = raw.http.as_ref().map_or(raw::DEFAULT_PHOTO_MAX_BYTES, |http| http.photo_max_bytes);
        let (http_listen, worker_links) = match raw.http {
            Some(http) => (self.socket_addr(&http.listen, "http.listen"), self.worker_links(&http, base)),
            None => (None, None),
        };
        let serial = raw.serial.into_iter().filter_map(|port| self.serial(port, &sensors, base)).collect();
        let incident_acks = raw.dispatch.as_ref().and_then(|d| self.incident_acks(d, base));
        let (dispatch, roster_file) = self.dispatch(raw.dispatch, base);
        let gpio = raw.gpio.and_then(|g| self.gpio(g, &sensors));
        let channels = sink_names(&alerts, gpio.as_ref());
        self.diagnostics.extend(dispatch.roster.unknown_channels(&channels));
        self.check_failover(&alerts.failover, &channels);
        let places = self.places(raw.names, &sensors);
        let board_token = raw.board.and_then(|board| board.token).filter(|token| !token.is_empty());
        let report_digest = raw.report.and_then(|report| self.report_digest(report, &channels));
        let cluster = raw.cluster.and_then(|c| self.cluster(c));
        // A district box signs its id into its links: the hub checks every box's under one secret.
        let worker_links = worker_links.map(|links| match &cluster {
            Some(cluster) => links.for_box(&cluster.box_id),
            None => links,
        });
        // So do its workers' actions: the district's boxes share the ack secret too.
        let incident_acks = incident_acks.map(|acks| match &cluster {
            Some(cluster) => acks.for_box(&cluster.box_id),
            None => acks,
        });
        let sensors: Arc<[SensorConfig]> = sensors.into();
        Config {
            source: None,
            cluster,
            places,
            state_dir,
            state_reserve_bytes,
            runtime_dir,
            mqtt,
            sensors,
            rules,
            ingest,
            clock_synchronized,
            alerts,
            influxdb,
            http_listen,
            worker_links,
            photo_max_bytes,
            serial,
            dispatch,
            roster_file,
            incident_acks,
            gpio,
            time_zone: wording.time_zone,
            board_token,
            report_digest,
        }
    }

    pub(in crate::config) fn read_secret(&mut self, file: &Spanned<String>, base: &Path, key: &str) -> Option<String> {
        let path = base.join(file.get_ref());
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text.trim().to_string()),
            Err(error) => {
                self.error(file.span(), Some(key), format!("cannot read {}: {error}", path.display()));
                None
            }
        }
    }

    pub(in crate::config) fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(value.span(), Some(key), format!("`{}` is not an address such as \"127.0.0.1:9181\"", value.get_ref()));
                None
            }
        }
    }

    pub(in crate::config) fn http_url(&mut self, value: &Spanned<String>, key: &str) -> Option<reqwest::Url> {
        match reqwest::Url::parse(value.get_ref()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
            Ok(_) => {
                self.error(value.span(), Some(key), "must be an http:// or https:// URL".into());
                None
            }
            Err(err) => {
                self.error(value.span(), Some(key), format!("not a URL: {err}"));
                None
            }
        }
    }

    pub(in crate::config) fn existing_path(&mut self, base: &Path, value: Spanned<String>, key: &str) -> Option<PathBuf> {
        let path = base.join(value.get_ref());
        if path.exists() {
            Some(path)
        } else {
            self.error(value.span(), Some(key), format!("{} does not exist", path.display()));
            None
        }
    }
}

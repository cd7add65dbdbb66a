//! `[mqtt]` and `[ingest]` checks: the broker's address and TLS, topic maps and payload maps,
//! and the limits on what a reading may carry.

use super::Checker;
use crate::config::raw;
use crate::config::types::{BrokerConfig, IngestConfig, MqttConfig, PayloadMap, SensorConfig, TopicMapConfig, ValueSource};
use crate::config::types::{CLOCK_BEHIND_FOR_SECS, CLOCK_BEHIND_SECS};
use crate::config::types::{
    MAX_FIELDS_PER_READING, MAX_FIELD_NAMES_PER_SENSOR, MAX_FIELD_NAME_BYTES, MAX_FUTURE_SKEW_SECS, MQTT_MAX_PACKET_BYTES, PACKET_OVERHEAD_BYTES,
    REANCHOR_AFTER_READINGS, REANCHOR_AFTER_SECS,
};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use toml::Spanned;

impl Checker<'_> {
    pub(super) fn mqtt(&mut self, raw: raw::RawMqtt, sensors: &[SensorConfig], base: &Path) -> MqttConfig {
        let broker = match raw.broker.get_ref().as_str() {
            "embedded" => {
                let listen = match &raw.embedded_listen {
                    Some(listen) => self.socket_addr(listen, "mqtt.embedded_listen"),
                    None => Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
                };
                BrokerConfig::Embedded { listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1883))) }
            }
            url => {
                if let Some(listen) = &raw.embedded_listen {
                    self.error(listen.span(), Some("mqtt.embedded_listen"), "only used with broker = \"embedded\"".into());
                }
                match parse_mqtt_url(url) {
                    Ok((host, port, _)) => BrokerConfig::External { host, port },
                    Err(message) => {
                        self.error(raw.broker.span(), Some("mqtt.broker"), message);
                        BrokerConfig::External { host: String::new(), port: 0 }
                    }
                }
            }
        };
        let tls = self.mqtt_tls(&raw, base);
        let password = match (raw.password.clone(), &raw.password_file) {
            (password, None) => password,
            (None, Some(file)) => self.read_secret(file, base, "mqtt.password_file"),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some("mqtt.password_file"), "give either `password` or `password_file`, not both".into());
                None
            }
        };
        if *raw.max_payload_bytes.get_ref() == 0 {
            self.error(raw.max_payload_bytes.span(), Some("mqtt.max_payload_bytes"), "must be at least 1".into());
        }
        let packet_floor = raw.max_payload_bytes.get_ref().saturating_add(PACKET_OVERHEAD_BYTES);
        if *raw.max_packet_bytes.get_ref() < packet_floor || *raw.max_packet_bytes.get_ref() > MQTT_MAX_PACKET_BYTES {
            let message = format!(
                "must be at least max_payload_bytes ({}) + {PACKET_OVERHEAD_BYTES} for the topic and header, i.e. {packet_floor}, and at most {MQTT_MAX_PACKET_BYTES} (MQTT's largest)",
                raw.max_payload_bytes.get_ref()
            );
            self.error(raw.max_packet_bytes.span(), Some("mqtt.max_packet_bytes"), message);
        }
        if *raw.keep_alive_secs.get_ref() < 5 {
            self.error(raw.keep_alive_secs.span(), Some("mqtt.keep_alive_secs"), "must be at least 5 seconds".into());
        }
        let topic_maps: Vec<TopicMapConfig> = raw.topics.into_iter().filter_map(|map| self.topic_map(map, sensors)).collect();
        let read_filters: Vec<&str> =
            topic_maps.iter().map(|map: &TopicMapConfig| map.filter.as_str()).chain([crate::sources::mqtt::topics::DEFAULT_FILTER]).collect();
        let report_rate_topic = raw.report_rate_topic.and_then(|topic| match report_rate_topic_problem(topic.get_ref(), &read_filters) {
            Some(message) => {
                self.error(topic.span(), Some("mqtt.report_rate_topic"), message);
                None
            }
            None => Some(topic.into_inner()),
        });
        MqttConfig {
            broker,
            client_id: raw.client_id,
            username: raw.username,
            password,
            max_payload_bytes: raw.max_payload_bytes.into_inner(),
            max_packet_bytes: raw.max_packet_bytes.into_inner(),
            keep_alive: Duration::from_secs(raw.keep_alive_secs.into_inner()),
            topic_maps,
            tls,
            report_rate_topic,
        }
    }

    /// TLS settings: required with mqtts://, refused without it (no silent plaintext).
    pub(super) fn mqtt_tls(&mut self, raw: &raw::RawMqtt, base: &Path) -> Option<Arc<rustls::ClientConfig>> {
        let wants_tls = raw.broker.get_ref().starts_with("mqtts://");
        let given = [&raw.ca_file, &raw.client_cert_file, &raw.client_key_file].into_iter().flatten().next();
        if !wants_tls {
            if let Some(key) = given {
                self.error(key.span(), Some("mqtt.ca_file"), "TLS settings need an mqtts:// broker; gridwatch never sends them over plain TCP".into());
            }
            return None;
        }
        let Some(ca_file) = &raw.ca_file else {
            self.error(raw.broker.span(), Some("mqtt.ca_file"), "an mqtts:// broker needs `ca_file`: the CA that signed the broker's certificate".into());
            return None;
        };
        let read = |checker: &mut Self, file: &Spanned<String>, key: &str| -> Option<Vec<u8>> {
            let path = base.join(file.get_ref());
            std::fs::read(&path).map_err(|e| checker.error(file.span(), Some(key), format!("cannot read {}: {e}", path.display()))).ok()
        };
        let ca = read(self, ca_file, "mqtt.ca_file")?;
        let client = match (&raw.client_cert_file, &raw.client_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((read(self, cert, "mqtt.client_cert_file")?, read(self, key, "mqtt.client_key_file")?)),
            (Some(file), None) | (None, Some(file)) => {
                self.error(file.span(), Some("mqtt.client_cert_file"), "give both `client_cert_file` and `client_key_file`, or neither".into());
                return None;
            }
        };
        match tls_client_config(&ca, client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()))) {
            Ok(config) => Some(Arc::new(config)),
            Err(message) => {
                self.error(ca_file.span(), Some("mqtt.ca_file"), message);
                None
            }
        }
    }

    pub(super) fn topic_map(&mut self, raw: raw::RawTopicMap, sensors: &[SensorConfig]) -> Option<TopicMapConfig> {
        let filter = raw.filter.get_ref();
        if let Err(message) = check_topic_filter(filter) {
            self.error(raw.filter.span(), Some("mqtt.topic.filter"), message);
            return None;
        }
        let wildcards = filter.split('/').filter(|level| *level == "+").count();
        let sensor = raw.sensor.get_ref();
        match placeholder_index(sensor) {
            Some(n) if n == 0 || n > wildcards => {
                self.error(raw.sensor.span(), Some("mqtt.topic.sensor"), format!("`{sensor}` refers to `+` level {n}, but the filter has {wildcards}"));
                return None;
            }
            Some(_) => {}
            None if !sensors.iter().any(|s| *s.id == **sensor) => {
                self.error(
                    raw.sensor.span(),
                    Some("mqtt.topic.sensor"),
                    format!("no sensor `{sensor}` in the inventory (use `{{1}}` to take the id from the first `+` level)"),
                );
                return None;
            }
            None => {}
        }
        let payload = self.payload_map(&raw)?;
        Some(TopicMapConfig { filter: filter.clone(), sensor: sensor.clone(), payload })
    }

    /// Checks a topic map's payload description: pointers, scales, field names.
    pub(super) fn payload_map(&mut self, raw: &raw::RawTopicMap) -> Option<PayloadMap> {
        let span = raw.filter.span();
        let before = self.diagnostics.len();
        if !raw.fields.is_empty() && !raw.values.is_empty() {
            self.error(
                span.clone(),
                Some("mqtt.topic.values"),
                "use `fields` (renames of a flat payload) or `values` (JSON pointers into a nested one), not both".into(),
            );
        }
        let pointer_ok = |pointer: &str| pointer.is_empty() || pointer.starts_with('/');
        let mut values = Vec::new();
        for (field, source) in &raw.values {
            let (pointer, scale, offset) = match source {
                raw::RawValueSource::Pointer(pointer) => (pointer.clone(), 1.0, 0.0),
                raw::RawValueSource::Scaled(scaled) => (scaled.path.clone(), scaled.scale, scaled.offset),
            };
            if !pointer_ok(&pointer) {
                self.error(span.clone(), Some("mqtt.topic.values"), format!("`{field}`: `{pointer}` is not a JSON pointer; write it like \"/data/angle_x\""));
            }
            if !(scale.is_finite() && scale != 0.0 && offset.is_finite()) {
                self.error(span.clone(), Some("mqtt.topic.values"), format!("`{field}`: scale must be a finite, non-zero number and offset a finite one"));
            }
            if field.is_empty() || field.chars().any(char::is_control) || matches!(field.as_str(), "ts" | "seq") {
                self.error(span.clone(), Some("mqtt.topic.values"), format!("`{}` cannot be a field name", field.escape_debug()));
            }
            values.push(ValueSource { field: field.clone(), pointer, scale, offset });
        }
        for (key, pointer) in [("mqtt.topic.ts", &raw.ts), ("mqtt.topic.seq", &raw.seq)] {
            if pointer.as_deref().is_some_and(|p| !pointer_ok(p)) {
                self.error(span.clone(), Some(key), "must be a JSON pointer, like \"/meta/time\"".into());
            }
        }
        (self.diagnostics.len() == before).then(|| PayloadMap { renames: raw.fields.clone(), values, ts: raw.ts.clone(), seq: raw.seq.clone() })
    }

    pub(super) fn clock_synchronized(&mut self, raw: Option<Spanned<String>>) -> crate::clock::SyncSource {
        let Some(raw) = raw else {
            return std::env::var("GRIDWATCH_CLOCK_SYNCHRONIZED").ok().and_then(|text| text.parse().ok()).unwrap_or_default();
        };
        raw.get_ref().parse().unwrap_or_else(|message| {
            self.error(raw.span(), Some("ingest.clock_synchronized"), message);
            crate::clock::SyncSource::default()
        })
    }

    pub(super) fn ingest(&mut self, raw: raw::RawIngest) -> IngestConfig {
        IngestConfig {
            max_future_skew: Duration::from_secs(self.bounded(raw.max_future_skew_secs, "ingest.max_future_skew_secs", MAX_FUTURE_SKEW_SECS)),
            reanchor_after_readings: self.bounded(raw.reanchor_after_readings, "ingest.reanchor_after_readings", REANCHOR_AFTER_READINGS) as u32,
            reanchor_after: Duration::from_secs(self.bounded(raw.reanchor_after_secs, "ingest.reanchor_after_secs", REANCHOR_AFTER_SECS)),
            clock_behind: Duration::from_secs(self.bounded(raw.clock_behind_secs, "ingest.clock_behind_secs", CLOCK_BEHIND_SECS)),
            clock_behind_for: Duration::from_secs(self.bounded(raw.clock_behind_for_secs, "ingest.clock_behind_for_secs", CLOCK_BEHIND_FOR_SECS)),
            max_fields_per_reading: self.bounded(raw.max_fields_per_reading, "ingest.max_fields_per_reading", MAX_FIELDS_PER_READING) as usize,
            max_field_names_per_sensor: self.bounded(raw.max_field_names_per_sensor, "ingest.max_field_names_per_sensor", MAX_FIELD_NAMES_PER_SENSOR) as usize,
            max_field_name_bytes: self.bounded(raw.max_field_name_bytes, "ingest.max_field_name_bytes", MAX_FIELD_NAME_BYTES) as usize,
        }
    }
}

pub(in crate::config) fn placeholder_index(template: &str) -> Option<usize> {
    template.strip_prefix('{')?.strip_suffix('}')?.parse().ok()
}

/// host, port and whether it is TLS (mqtts://, default port 8883).
pub(in crate::config) fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = match url.strip_prefix("mqtts://") {
        Some(rest) => (rest, true),
        None => (
            url.strip_prefix("mqtt://")
                .or_else(|| url.strip_prefix("tcp://"))
                .ok_or_else(|| format!("`{url}` is neither \"embedded\" nor an mqtt://host:port or mqtts://host:port URL"))?,
            false,
        ),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("`{port}` is not a port number"))?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("`{url}` has no host"));
    }
    Ok((host.to_string(), port, tls))
}

/// The rustls client configuration for a broker: trusts only `ca_pem`, offers the client
/// certificate when one is given.
pub fn tls_client_config(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.map_err(|e| format!("CA file: {e}"))?).map_err(|e| format!("CA file: {e}"))?;
    }
    if roots.is_empty() {
        return Err("CA file holds no PEM certificate".into());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().map_err(|e| format!("client certificate: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("client key: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate and key: {e}"))
        }
    }
}

/// Checks an MQTT subscription filter: `+` fills a whole level, `#` only the last.
pub fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("a topic filter cannot be empty".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!("`{filter}`: `#` must be a whole level at the end"));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!("`{filter}`: `+` must be a whole level"));
        }
    }
    Ok(())
}

/// What is wrong with a `report_rate_topic` template, if anything: it must name each box
/// (`{sensor}`), know no other placeholder than `{site}`, have no wildcard, not be a system topic,
/// and not be a topic the daemon reads readings from (`read_filters`): a retained command there
/// came back as a reading of the box at every reconnect, and made a dead box look alive.
fn report_rate_topic_problem(template: &str, read_filters: &[&str]) -> Option<String> {
    if !template.contains("{sensor}") {
        return Some("needs `{sensor}` (each box has a topic of its own), e.g. \"gridwatch/{site}/{sensor}/set\"".into());
    }
    let rendered = template.replace("{site}", "site").replace("{sensor}", "sensor");
    if rendered.contains(['{', '}']) {
        return Some("knows only the placeholders `{site}` and `{sensor}`".into());
    }
    if rendered.contains(['+', '#']) || rendered.starts_with('$') {
        return Some("a topic to publish on has no wildcards (`+`, `#`) and is no system (`$…`) topic".into());
    }
    read_filters.iter().find(|filter| crate::sources::mqtt::topics::match_filter(filter, &rendered).is_some()).map(|filter| {
        format!(
            "is a topic the daemon reads readings from (`{filter}`): the command would come back as a reading; use e.g. \"gridwatch/{{site}}/{{sensor}}/set\""
        )
    })
}

//! Checks of where data goes: `[rules] state_save_secs` (the rule state saved to the store) and
//! `[influxdb]` (telemetry).

use super::Checker;
use crate::config::raw;
use crate::config::types::{InfluxConfig, STATE_SAVE_SECS};
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

impl Checker<'_> {
    pub(super) fn state_save(&mut self, secs: Option<Spanned<u64>>) -> Duration {
        let (default, bounds) = STATE_SAVE_SECS;
        let Some(secs) = secs else { return Duration::from_secs(default) };
        if !bounds.contains(secs.get_ref()) {
            self.error(secs.span(), Some("rules.state_save_secs"), format!("must be {} to {} seconds", bounds.start(), bounds.end()));
            return Duration::from_secs(default);
        }
        Duration::from_secs(*secs.get_ref())
    }

    pub(super) fn influx(&mut self, raw: raw::RawInflux, base: &Path) -> Option<InfluxConfig> {
        let url = self.http_url(&raw.url, "influxdb.url");
        let token = match (raw.token, &raw.token_file) {
            (Some(_), Some(file)) => {
                self.error(file.span(), Some("influxdb.token_file"), "give either `token` or `token_file`, not both".into());
                None
            }
            (Some(token), None) => Some(token),
            (None, Some(file)) => {
                let path = base.join(file.get_ref());
                match std::fs::read_to_string(&path) {
                    Ok(token) => Some(token.trim().to_string()),
                    Err(err) => {
                        self.error(file.span(), Some("influxdb.token_file"), format!("cannot read {}: {err}", path.display()));
                        None
                    }
                }
            }
            (None, None) => Some(String::new()),
        };
        if *raw.batch_size.get_ref() == 0 {
            self.error(raw.batch_size.span(), Some("influxdb.batch_size"), "must be at least 1".into());
        }
        if *raw.spool_max_points.get_ref() < *raw.batch_size.get_ref() as u64 {
            self.error(raw.spool_max_points.span(), Some("influxdb.spool_max_points"), "must be at least batch_size".into());
        }
        if *raw.drain_points_per_sec.get_ref() == 0 {
            self.error(raw.drain_points_per_sec.span(), Some("influxdb.drain_points_per_sec"), "must be at least 1".into());
        }
        if *raw.flush_interval_ms.get_ref() == 0 {
            self.error(raw.flush_interval_ms.span(), Some("influxdb.flush_interval_ms"), "must be at least 1".into());
        }
        Some(InfluxConfig {
            url: url?,
            org: raw.org,
            bucket: raw.bucket,
            token: token?,
            batch_size: raw.batch_size.into_inner(),
            flush_interval: Duration::from_millis(raw.flush_interval_ms.into_inner()),
            spool_max_points: raw.spool_max_points.into_inner(),
            drain_points_per_sec: raw.drain_points_per_sec.into_inner(),
        })
    }
}

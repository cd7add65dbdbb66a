//! `[dispatch]` and `[report]` checks: the roster and escalation file, the hub's signed incident
//! acknowledgements, and the daily digest.

use super::Checker;
use crate::config::raw;
use crate::config::DigestConfig;
use gridwatch_rules::Diagnostic;
use std::path::Path;

impl Checker<'_> {
    pub(super) fn incident_acks(&mut self, raw: &raw::RawDispatch, base: &Path) -> Option<crate::sources::mqtt::incident_acks::AckConfig> {
        // A secret without a topic: the actions come from the district (`[cluster]`) only.
        if raw.ack_topic.is_none() && raw.ack_secret.is_none() && raw.ack_secret_file.is_none() {
            return None;
        }
        let span = raw.ack_topic.as_ref().or(raw.ack_secret_file.as_ref()).map_or(0..0, toml::Spanned::span);
        if let Some(topic) = &raw.ack_topic {
            if topic.get_ref().is_empty() || topic.get_ref().contains(['+', '#']) {
                self.error(topic.span(), Some("dispatch.ack_topic"), "must be one topic, without wildcards".into());
                return None;
            }
        }
        let secret = match (&raw.ack_secret, &raw.ack_secret_file) {
            (Some(secret), None) => Some(secret.clone()),
            (None, Some(file)) => self.read_secret(file, base, "dispatch.ack_secret_file"),
            _ => {
                self.error(span.clone(), Some("dispatch.ack_secret"), "workers' actions need exactly one of `ack_secret` or `ack_secret_file`".into());
                None
            }
        }?;
        if secret.len() < 16 {
            self.error(span, Some("dispatch.ack_secret"), "use a secret of at least 16 characters".into());
            return None;
        }
        use crate::sources::mqtt::incident_acks::AckConfig;
        Some(match &raw.ack_topic {
            Some(topic) => AckConfig::new(topic.get_ref().clone(), &secret),
            None => AckConfig::without_topic(&secret),
        })
    }

    /// The roster file, checked like the configuration itself (its errors are this file's), and
    /// its path.
    pub(super) fn dispatch(&mut self, raw: Option<raw::RawDispatch>, base: &Path) -> (crate::dispatch::Dispatch, Option<std::path::PathBuf>) {
        let Some(roster) = raw.and_then(|d| d.roster) else {
            return (crate::dispatch::Dispatch::default(), None);
        };
        if let Some(text) = self.roster_text {
            let path = base.join(roster.get_ref());
            let name = format!("{} (last good copy)", path.display());
            let parsed = crate::dispatch::Dispatch::parse(&name, text).unwrap_or_else(|errors| {
                self.diagnostics.extend(errors.0);
                crate::dispatch::Dispatch::default()
            });
            return (parsed, Some(path));
        }
        let Some(path) = self.existing_path(base, roster, "dispatch.roster") else {
            return (crate::dispatch::Dispatch::default(), None);
        };
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| vec![Diagnostic { file: path.display().to_string(), line: 1, column: 1, key: None, message: format!("cannot read: {e}") }])
            .and_then(|text| crate::dispatch::Dispatch::parse(&path.display().to_string(), &text).map_err(|e| e.0));
        let dispatch = parsed.unwrap_or_else(|errors| {
            self.diagnostics.extend(errors);
            crate::dispatch::Dispatch::default()
        });
        (dispatch, Some(path))
    }

    /// `[report]`: a local time and configured channels.
    pub(super) fn report_digest(&mut self, raw: raw::RawReport, channels: &[String]) -> Option<DigestConfig> {
        let at = chrono::NaiveTime::parse_from_str(raw.daily_digest_at.get_ref(), "%H:%M");
        if at.is_err() {
            self.error(
                raw.daily_digest_at.span(),
                Some("report.daily_digest_at"),
                format!("`{}`: expected a local time like \"08:00\"", raw.daily_digest_at.get_ref()),
            );
        }
        let span = raw.daily_digest_channels.span();
        let wanted = raw.daily_digest_channels.into_inner();
        if wanted.is_empty() {
            self.error(span.clone(), Some("report.daily_digest_channels"), "name the grid leaders' group's channel(s)".into());
        }
        for unknown in wanted.iter().filter(|c| !channels.contains(c)) {
            self.error(
                span.clone(),
                Some("report.daily_digest_channels"),
                format!("channel `{unknown}` is not configured in [alerts] (have: {})", channels.join(", ")),
            );
        }
        Some(DigestConfig { at: at.ok()?, channels: wanted })
    }
}

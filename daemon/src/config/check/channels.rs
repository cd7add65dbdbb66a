//! `[alerts]` checks: the alert channels (console, webhooks, SMS gateways, group robots), their
//! failover and the silences configured in the file.

use super::Checker;
use crate::config::raw;
use crate::config::types::{AlertsConfig, GpioConfig, RobotConfig, SmsConfig, SmsSuccess, WebhookConfig, SMS_PER_PHONE_PER_HOUR, SMS_TIMEOUT_SECS};
use crate::config::wording;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

impl Checker<'_> {
    pub(super) fn alerts(&mut self, raw: raw::RawAlerts, base: &Path, wording: wording::Wording) -> AlertsConfig {
        let mqtt_topic_prefix = raw.mqtt.and_then(|mqtt| {
            let prefix = mqtt.topic_prefix.get_ref().trim_end_matches('/');
            if prefix.is_empty() || prefix.contains(['+', '#']) {
                self.error(mqtt.topic_prefix.span(), Some("alerts.mqtt.topic_prefix"), "must be a topic without wildcards".into());
                None
            } else {
                Some(prefix.to_string())
            }
        });
        let mut webhooks = Vec::new();
        for (index, hook) in raw.webhook.into_iter().enumerate() {
            let url = self.http_url(&hook.url, "alerts.webhook.url");
            if *hook.max_attempts.get_ref() == 0 {
                self.error(hook.max_attempts.span(), Some("alerts.webhook.max_attempts"), "must be at least 1".into());
            }
            if *hook.timeout_secs.get_ref() == 0 {
                self.error(hook.timeout_secs.span(), Some("alerts.webhook.timeout_secs"), "must be at least 1".into());
            }
            let secret = match (hook.secret, &hook.secret_file) {
                (secret, None) => secret,
                (None, Some(file)) => self.read_secret(file, base, "alerts.webhook.secret_file"),
                (Some(_), Some(file)) => {
                    self.error(file.span(), Some("alerts.webhook.secret_file"), "give either `secret` or `secret_file`, not both".into());
                    None
                }
            };
            if let Some(url) = url {
                webhooks.push(WebhookConfig {
                    name: hook.name.unwrap_or_else(|| format!("webhook-{}", index + 1)),
                    url,
                    secret,
                    timeout: Duration::from_secs(hook.timeout_secs.into_inner()),
                    max_attempts: hook.max_attempts.into_inner(),
                });
            }
        }
        let wecom = raw.wecom.into_iter().enumerate().filter_map(|(i, r)| self.robot(r, "wecom", i, base, wording)).collect();
        let dingtalk = raw.dingtalk.into_iter().enumerate().filter_map(|(i, r)| self.robot(r, "dingtalk", i, base, wording)).collect();
        let sms = raw.sms.into_iter().enumerate().filter_map(|(i, r)| self.sms(r, i, base, wording)).collect();
        let silences = raw.silence.into_iter().filter_map(|s| self.silence(s)).collect();
        let failover: Vec<_> = raw.failover.into_iter().collect();
        self.failover_spans = failover.iter().map(|(from, to)| (from.clone(), to.span())).collect();
        let failover_after = Duration::from_secs(raw.failover_after_secs);
        let failover: BTreeMap<String, String> = failover.into_iter().map(|(from, to)| (from, to.into_inner())).collect();
        let mut alerts = AlertsConfig {
            console: raw.console,
            flap_window: Duration::from_secs(raw.flap_window_secs),
            mqtt_topic_prefix,
            webhooks,
            wecom,
            dingtalk,
            sms,
            silences,
            failover,
            failover_after,
            bus_down_after: Duration::from_secs(raw.bus_down_after_secs),
            group_window: Duration::from_secs(raw.group_window_secs),
            fold_into_open_alarm: raw.fold_into_open_alarm,
        };
        for robot in alerts.wecom.iter_mut().chain(alerts.dingtalk.iter_mut()) {
            if alerts.failover.contains_key(&robot.name) {
                robot.throttle_patience = Some(failover_after);
            }
        }
        alerts
    }

    /// Every failover names channels that exist, and no chain of them comes back on itself.
    pub(super) fn check_failover(&mut self, failover: &BTreeMap<String, String>, channels: &[String]) {
        let spans = std::mem::take(&mut self.failover_spans);
        for (from, span) in spans {
            let Some(to) = failover.get(&from) else { continue };
            if !channels.contains(&from) {
                self.error(span.clone(), Some("alerts.failover"), format!("`{from}` is not an alert channel (have: {})", channels.join(", ")));
            } else if !channels.contains(to) {
                self.error(span.clone(), Some("alerts.failover"), format!("`{to}` is not an alert channel (have: {})", channels.join(", ")));
            } else {
                let mut seen = vec![from.as_str()];
                let mut next = to.as_str();
                while let Some(after) = (!seen.contains(&next)).then(|| failover.get(next)).flatten() {
                    seen.push(next);
                    next = after;
                }
                if seen.contains(&next) {
                    seen.push(next);
                    self.error(span, Some("alerts.failover"), format!("failover goes round in a circle: {}", seen.join(" -> ")));
                }
            }
        }
    }

    pub(super) fn silence(&mut self, raw: raw::RawSilence) -> Option<crate::dispatch::silence::Silence> {
        let scope =
            raw.scope.get_ref().parse::<crate::dispatch::silence::Scope>().map_err(|e| self.error(raw.scope.span(), Some("alerts.silence.scope"), e)).ok();
        let mut time = |text: &Spanned<String>, key: &str| {
            chrono::DateTime::parse_from_rfc3339(text.get_ref())
                .map(|t| t.timestamp_millis())
                .map_err(|e| {
                    self.error(text.span(), Some(key), format!("`{}` is not an RFC 3339 time ({e}), e.g. \"2026-12-01T18:00:00+08:00\"", text.get_ref()))
                })
                .ok()
        };
        let from = match &raw.from {
            Some(from) => Some(time(from, "alerts.silence.from")?),
            None => None,
        };
        let until = time(&raw.until, "alerts.silence.until")?;
        // Config silences have no store id; they show as #0.
        Some(crate::dispatch::silence::Silence {
            id: 0,
            scope: scope?,
            target: raw.target,
            include_red: raw.include_red,
            reason: raw.reason,
            author: raw.author,
            created_ms: from.unwrap_or(i64::MIN),
            expires_ms: until,
            ended_ms: None,
        })
    }

    pub(super) fn sms(&mut self, raw: raw::RawSms, index: usize, base: &Path, wording: wording::Wording) -> Option<SmsConfig> {
        let url = self.http_url(&raw.url, "alerts.sms.url");
        let probe = raw.body.get_ref().replace("{phone}", "13800000000").replace("{message}", "x");
        if let Err(error) = serde_json::from_str::<serde_json::Value>(&probe) {
            self.error(raw.body.span(), Some("alerts.sms.body"), format!("not a JSON template once {{phone}} and {{message}} are filled in: {error}"));
        }
        if !raw.body.get_ref().contains("{phone}") || !raw.body.get_ref().contains("{message}") {
            self.error(raw.body.span(), Some("alerts.sms.body"), "the template needs both {phone} and {message}".into());
        }
        let token = match (raw.token, &raw.token_file) {
            (token, None) => token,
            (None, Some(file)) => self.read_secret(file, base, "alerts.sms.token_file"),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some("alerts.sms.token_file"), "give either `token` or `token_file`, not both".into());
                None
            }
        };
        let severities = raw.severities.unwrap_or_else(|| vec!["alarm".into(), "danger".into()]);
        let per_phone_per_hour = self.bounded(raw.per_phone_per_hour, &format!("alerts.sms[{index}].per_phone_per_hour"), SMS_PER_PHONE_PER_HOUR) as u32;
        let success = self.sms_success(raw.success_field, raw.success_value);
        let timeout = Duration::from_secs(self.bounded(raw.timeout_secs, &format!("alerts.sms[{index}].timeout_secs"), SMS_TIMEOUT_SECS));
        Some(SmsConfig {
            name: raw.name.unwrap_or_else(|| format!("sms-{}", index + 1)),
            url: url?,
            body: raw.body.into_inner(),
            token,
            severities,
            per_phone_per_hour,
            wording,
            success,
            timeout,
        })
    }

    /// `success_field` (a JSON pointer) and `success_value` (a string, number or boolean), both
    /// or neither.
    fn sms_success(&mut self, field: Option<Spanned<String>>, value: Option<Spanned<toml::Value>>) -> Option<SmsSuccess> {
        match (field, value) {
            (None, None) => None,
            (Some(field), Some(value)) => {
                if !field.get_ref().starts_with('/') {
                    let message = format!(
                        "`{}` is not a JSON pointer into the gateway's answer; write it as \"/Code\" or \"/Response/SendStatusSet/0/Code\"",
                        field.get_ref()
                    );
                    self.error(field.span(), Some("alerts.sms.success_field"), message);
                    return None;
                }
                let text = match value.get_ref() {
                    toml::Value::String(text) => text.clone(),
                    toml::Value::Integer(number) => number.to_string(),
                    toml::Value::Boolean(flag) => flag.to_string(),
                    other => {
                        let message = format!("`{other}` cannot be what a gateway's field holds; give a string, an integer or true/false");
                        self.error(value.span(), Some("alerts.sms.success_value"), message);
                        return None;
                    }
                };
                Some(SmsSuccess { field: field.into_inner(), value: text })
            }
            (Some(field), None) => {
                self.error(
                    field.span(),
                    Some("alerts.sms.success_value"),
                    "`success_field` needs `success_value`: what the field holds when the SMS was taken".into(),
                );
                None
            }
            (None, Some(value)) => {
                self.error(
                    value.span(),
                    Some("alerts.sms.success_field"),
                    "`success_value` needs `success_field`: where in the gateway's answer it stands".into(),
                );
                None
            }
        }
    }

    pub(super) fn robot(&mut self, raw: raw::RawRobot, kind: &str, index: usize, base: &Path, mut wording: wording::Wording) -> Option<RobotConfig> {
        let key = format!("alerts.{kind}");
        let url_text = match (&raw.url, &raw.url_file) {
            (Some(url), None) => Some(url.clone()),
            (None, Some(file)) => self.read_secret(file, base, &format!("{key}.url_file")).map(|text| Spanned::new(file.span(), text)),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some(&format!("{key}.url_file")), "give either `url` or `url_file`, not both".into());
                None
            }
            (None, None) => {
                self.error(0..0, Some(&format!("{key}.url")), "a robot needs `url` (or `url_file`)".into());
                None
            }
        };
        let url = url_text.and_then(|u| self.http_url(&u, &format!("{key}.url")));
        let secret = match (raw.secret, &raw.secret_file) {
            (Some(secret), None) => Some(secret),
            (None, Some(file)) => self.read_secret(file, base, &format!("{key}.secret_file")),
            (Some(_), Some(file)) => {
                self.error(file.span(), Some(&format!("{key}.secret_file")), "give either `secret` or `secret_file`, not both".into());
                None
            }
            (None, None) => None,
        };
        if let Some(language) = &raw.language {
            wording.chinese = self.language(language, &format!("{key}.language"));
        }
        Some(RobotConfig {
            throttle_patience: None,
            name: raw.name.unwrap_or_else(|| format!("{kind}-{}", index + 1)),
            url: url?,
            secret,
            mention_mobiles: raw.mention_mobiles,
            wording,
        })
    }
}

/// The names of the alert sinks a configuration sets up (what a roster's `channels` name).
pub fn sink_names(alerts: &AlertsConfig, gpio: Option<&GpioConfig>) -> Vec<String> {
    let mut names = Vec::new();
    if alerts.console {
        names.push("console".to_string());
    }
    if alerts.mqtt_topic_prefix.is_some() {
        names.push("mqtt".to_string());
    }
    names.extend(alerts.webhooks.iter().map(|w| w.name.clone()));
    names.extend(alerts.wecom.iter().chain(&alerts.dingtalk).map(|r| r.name.clone()));
    names.extend(alerts.sms.iter().map(|s| s.name.clone()));
    if gpio.is_some_and(|g| g.siren_pin.is_some()) {
        names.push("siren".to_string());
    }
    names
}

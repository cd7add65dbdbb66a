//! A rule event made readable: the [`Alert`] grid workers and installers get, with the rule's
//! words in each language, the value rounded by unit and the sensor's place.

use crate::alert::{Alert, Audience};
use crate::clock::rfc3339;
use crate::config::SensorConfig;
use crate::sinks::text;
use gridwatch_rules::rule::Check;
use gridwatch_rules::{EventKind, Rule, RuleEvent};
use std::collections::BTreeMap;

/// The alert of a rule event; `since` is when its breach began as people read it (the wall clock:
/// the engine's own times run on the monotonic timeline, which a step of the clock does not
/// move), `None` while the clock is not set; `time_zone` is where people read the messages'
/// times, `places` the display names of sites and buildings.
pub fn alert_of(
    event: &RuleEvent,
    rule: &Rule,
    sensor: &SensorConfig,
    since: Option<gridwatch_rules::Millis>,
    time_zone: chrono_tz::Tz,
    places: &text::Places,
) -> Alert {
    let alert = Alert {
        event: event.kind.into(),
        rule: rule.id.clone(),
        title: rule.title.clone(),
        severity: event.severity,
        colour: event.severity.colour().into(),
        previous_severity: event.previous,
        audience: if rule.device { Audience::Installer } else { Audience::Grid },
        sensor: sensor.id.to_string(),
        agreement: event.agreement.map(|a| format!("{} of {} sensors", a.agreeing, a.of)),
        kind: sensor.kind.as_str().into(),
        site: sensor.place.site.to_string(),
        building: sensor.place.building.as_deref().map(Into::into),
        site_name: places.site(&sensor.place.site).map(Into::into),
        building_name: sensor.place.building.as_deref().and_then(|b| places.building(&sensor.place.site, b)).map(Into::into),
        grid: sensor.place.grid.as_deref().map(Into::into),
        value: event.value,
        unit: rule.unit.clone(),
        condition: condition(event, rule),
        at: rfc3339(event.at),
        at_ms: event.at,
        since: rfc3339(event.since),
        messages: messages(event, rule, sensor, since, time_zone, places),
        incident_id: None,
        event_id: None,
        link: None,
        member_links: BTreeMap::new(),
        recipients: Vec::new(),
        mentions: Vec::new(),
        no_data: matches!(rule.check_of(event.variant), Check::NoData { .. }),
        incident_resolved: false,
        folded_into: None,
        location: sensor.location,
        unset_clock: None,
    };
    if event.kind != EventKind::Cleared {
        return alert;
    }
    // A clear says it is over in its own words: the rule's message is the alarm's sentence, and
    // filled in with the clear's value it read "墙体倾斜 0.10°，橙色预警" in a webhook's or an
    // app's `messages` (an outside tester).
    let words = |chinese| text::sentence(&alert, crate::config::wording::Wording { chinese, time_zone });
    let messages = BTreeMap::from([("en".to_string(), words(false)), ("zh".to_string(), words(true))]);
    Alert { messages, ..alert }
}

/// The rule's message templates filled in for this event, per language.
/// Values are rounded by unit ([`text::value`]); `{since}` is a local time, or "time unknown".
fn messages(
    event: &RuleEvent,
    rule: &Rule,
    sensor: &SensorConfig,
    since: Option<gridwatch_rules::Millis>,
    time_zone: chrono_tz::Tz,
    places: &text::Places,
) -> BTreeMap<String, String> {
    // A building's boxes as the message names them; a house with one box: the box, not "1 of 1
    // sensors".
    let needed = |a: gridwatch_rules::engine::Agreeing| rule.agree.unwrap_or(1).min(a.of);
    let boxes = |chinese| event.agreement.filter(|a| a.of > 1).map(|a| text::agreement(a.agreeing, a.of, needed(a), chinese));
    let unconfirmed = event.agreement.is_some_and(|a| a.of > 1 && a.agreeing < needed(a));
    let mut rendered: BTreeMap<String, String> = rule
        .messages
        .iter()
        .map(|(language, template)| {
            let chinese = language == "zh";
            let named_boxes = std::cell::Cell::new(false);
            let mut text = template.render(|name| match name {
                "sensor" => {
                    named_boxes.set(true);
                    Some(boxes(chinese).unwrap_or_else(|| sensor.id.to_string()))
                }
                "site" => Some(places.site(&sensor.place.site).unwrap_or(&sensor.place.site).to_string()),
                "building" => sensor.place.building.as_deref().map(|b| places.building(&sensor.place.site, b).unwrap_or(b).to_string()),
                "grid" => sensor.place.grid.as_deref().map(Into::into),
                // A silence, or how far ahead or behind a clock runs, in words ("2小时5分钟"), not "7500.00"
                // seconds.
                "value" if matches!(rule.check, Check::NoData { .. } | Check::Clock { .. } | Check::ClockBehind { .. }) => {
                    Some(text::silence(event.value, language == "zh"))
                }
                "value" => Some(shown_value(event, rule)),
                "unit" => Some(rule.unit.clone()),
                // A device fault has no warning level (`text::level`).
                "severity" if rule.device => Some(text::device_level(chinese).to_string()),
                "severity" if chinese => Some(event.severity.zh().to_string()),
                "severity" => Some(event.severity.as_str().to_string()),
                "since" => Some(match since {
                    Some(since) => crate::local_time::short(since, time_zone, language == "zh"),
                    None if language == "zh" => "时间未知".to_string(),
                    None => crate::clock::TIME_UNKNOWN.to_string(),
                }),
                _ => None,
            });
            // A message that does not name the boxes still says that the alarm is unconfirmed.
            if let Some(boxes) = boxes(chinese).filter(|_| unconfirmed && !named_boxes.get()) {
                text.push_str(&if chinese { format!("（{boxes}）") } else { format!(" ({boxes})") });
            }
            if event.agreement.is_some_and(|a| a.doubted) {
                let doubt = text::doubted(chinese);
                text.push_str(&if chinese { format!("（{doubt}）") } else { format!(" ({doubt})") });
            }
            (language.clone(), text)
        })
        .collect();
    rendered.entry("en".into()).or_insert_with(|| rule.title.clone());
    rendered
}

/// The event's value as people read it: rounded by unit ([`text::rounded`]), with as many more
/// decimals as it takes to stay on the side of the level it broke — NH3-N 1.004 read "1.0",
/// "above class III's 1.0", and DO 5.999 "6.0, below class II's 6" (an outside tester): a worker
/// or an inspector takes a value shown on the limit for one within it.
fn shown_value(event: &RuleEvent, rule: &Rule) -> String {
    let rounded = text::rounded(event.value, &rule.unit);
    let Some(level) = rule.level(event.variant, event.severity).filter(|_| event.kind != EventKind::Cleared) else { return rounded };
    let reads_as_breach = |shown: &str| shown.parse::<f64>().is_ok_and(|read| level.bound.breached(read));
    if !level.bound.breached(event.value) || reads_as_breach(&rounded) {
        return rounded;
    }
    let decimals = rounded.split('.').nth(1).map_or(0, str::len);
    (decimals + 1..=decimals + 4)
        .map(|decimals| format!("{:.decimals$}", event.value))
        .find(|shown| reads_as_breach(shown))
        // The shortest text that reads back as the value itself.
        .unwrap_or_else(|| event.value.to_string())
}

/// What decided the event, in words: "permille(hypot(x, y)) from baseline above 7" when it
/// fires, "… back below 6.5" when it clears, "no data for 7200 s" for a silent box.
fn condition(event: &RuleEvent, rule: &Rule) -> String {
    match rule.check_of(event.variant) {
        Check::Ladder(_) => {
            let Some(level) = rule.level(event.variant, event.severity) else { return rule.value_label() };
            let condition = match event.kind {
                EventKind::Cleared => format!("{} {}", rule.value_label(), level.bound.describe_clear()),
                EventKind::Fired | EventKind::Changed => format!("{} {}", rule.value_label(), level.bound.describe()),
            };
            match event.agreement {
                Some(a) => format!("{condition} on {} of {} sensors of the building", a.agreeing, a.of),
                None => condition,
            }
        }
        Check::NoData { .. } => match event.kind {
            EventKind::Cleared => format!("heard again after {} s", event.value),
            _ => format!("no data for {} s", event.value),
        },
        Check::Clock { allowed_ms, .. } => match event.kind {
            EventKind::Cleared => "readings stamped on time are judged again".to_string(),
            _ => format!("reading stamped {} s ahead of this box's clock (allowed: {} s)", event.value, allowed_ms / 1000),
        },
        Check::ClockBehind { allowed_ms, hold_ms, .. } => match event.kind {
            EventKind::Cleared => "a reading stamped on time is judged again".to_string(),
            _ => format!(
                "readings stamped {} s behind this box's clock for {} s without catching up (allowed: {} s)",
                event.value,
                hold_ms / 1000,
                allowed_ms / 1000
            ),
        },
        Check::FlatLine { samples, lasting_ms, .. } => match event.kind {
            EventKind::Cleared => format!("{} changes again", rule.value_label()),
            _ => format!("{}: {}", rule.value_label(), gridwatch_rules::rule::describe_flat_line(*samples, *lasting_ms)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_rendered_in_each_language() {
        let rules = gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).unwrap();
        let rule = rules.rules.iter().find(|r| r.id == "tilt-danger").unwrap();
        let sensor = crate::commands::demo::sensors().remove(2);
        let event = RuleEvent {
            rule: gridwatch_rules::RuleId(0),
            subject: gridwatch_rules::SubjectId(2),
            kind: EventKind::Fired,
            severity: gridwatch_rules::Severity::Danger,
            previous: None,
            variant: None,
            value: 7.3126,
            at: 1_795_392_000_000,
            since: 1_795_391_940_000,
            agreement: None,
        };
        let alert = alert_of(&event, rule, &sensor, Some(event.since), crate::local_time::DEFAULT, &text::Places::default());
        assert_eq!(alert.messages["en"], "east-yard B2 (house-03): wall tilt changed 7.3‰ since installation — danger");
        assert_eq!(alert.messages["zh"], "east-yard B2（house-03）墙体倾斜较安装时变化7.3‰，已达危险值，红色预警");
        assert_eq!(alert.message(), alert.messages["en"]);

        let cleared = RuleEvent { kind: EventKind::Cleared, value: 0.1, ..event };
        let alert = alert_of(&cleared, rule, &sensor, Some(event.since), crate::local_time::DEFAULT, &text::Places::default());
        assert_eq!(alert.messages["zh"], "east-yard B2（house-03）墙体倾斜已恢复正常，当前0.10‰", "a clear in its own words, not the alarm's");
        assert_eq!(alert.messages["en"], "house-03, east-yard B2: back to normal, now 0.10‰");
    }

    /// One box of a two-box house alone at red (`agree = 2`, `alone = "alarm"`): an unconfirmed
    /// orange, said plainly — "（2个传感器中1个一致）" told an outside tester's workers nothing of
    /// it. What two agreeing boxes say is as before; so is a house with one box. A rule whose
    /// message does not name the boxes says it too.
    #[test]
    fn a_lone_box_s_alarm_says_plainly_that_it_is_unconfirmed() {
        let rules = gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).unwrap();
        let rule = rules.rules.iter().find(|r| r.id == "tilt-danger").unwrap();
        let sensor = crate::commands::demo::sensors().remove(2);
        let doubted_event = |severity, agreeing, of, doubted| RuleEvent {
            rule: gridwatch_rules::RuleId(0),
            subject: gridwatch_rules::SubjectId(2),
            kind: EventKind::Fired,
            severity,
            previous: None,
            variant: None,
            value: 7.3126,
            at: 1_795_392_000_000,
            since: 1_795_391_940_000,
            agreement: Some(gridwatch_rules::engine::Agreeing { agreeing, of, doubted }),
        };
        let event = |severity, agreeing, of| doubted_event(severity, agreeing, of, false);
        let messages =
            |event: &RuleEvent, rule: &Rule| alert_of(event, rule, &sensor, Some(event.since), crate::local_time::DEFAULT, &text::Places::default()).messages;
        let lone = messages(&event(gridwatch_rules::Severity::Alarm, 1, 2), rule);
        assert_eq!(lone["zh"], "east-yard B2（未经确认：同楼2个监测仪中仅1个报警）墙体倾斜较安装时变化7.3‰，已达危险值，橙色预警");
        assert_eq!(lone["en"], "east-yard B2 (unconfirmed: only 1 of the building's 2 boxes): wall tilt changed 7.3‰ since installation — alarm");
        let agreed = messages(&event(gridwatch_rules::Severity::Danger, 2, 3), rule);
        assert_eq!(agreed["zh"], "east-yard B2（3个传感器中2个一致）墙体倾斜较安装时变化7.3‰，已达危险值，红色预警");
        assert_eq!(agreed["en"], "east-yard B2 (2 of 3 sensors): wall tilt changed 7.3‰ since installation — danger");
        assert!(messages(&event(gridwatch_rules::Severity::Danger, 1, 1), rule)["zh"].starts_with("east-yard B2（house-03）"));
        // A house of one box whose box was told erratic before: capped at orange, and said so.
        let doubted = messages(&doubted_event(gridwatch_rules::Severity::Alarm, 1, 1, true), rule);
        assert_eq!(
            doubted["zh"],
            "east-yard B2（house-03）墙体倾斜较安装时变化7.3‰，已达危险值，橙色预警（未经确认：仅由正报设备异常的监测仪显示，读数可能有误）"
        );
        assert_eq!(doubted["en"], "east-yard B2 (house-03): wall tilt changed 7.3‰ since installation — alarm (unconfirmed: shown only by a box under a device alarm, whose readings may be wrong)");

        let source = gridwatch_rules::RuleSource {
            name: "test".into(),
            text: "[[rule]]\nid = \"leans\"\nkind = \"tilt\"\nvalue = \"x\"\nunit = \"°\"\nabove = 4\nseverity = \"danger\"\nagree = 2\nalone = \"alarm\"\n\
                   message = { en = \"{site} {building}: wall leans {value}{unit}\", zh = \"{site}{building}墙体倾斜{value}{unit}\" }\n"
                .into(),
        };
        let rules = gridwatch_rules::RuleSet::compile(&[source]).unwrap();
        let lone = messages(&event(gridwatch_rules::Severity::Alarm, 1, 2), &rules.rules[0]);
        assert_eq!(lone["zh"], "east-yard B2墙体倾斜7.31°（未经确认：同楼2个监测仪中仅1个报警）");
        assert_eq!(lone["en"], "east-yard B2: wall leans 7.31° (unconfirmed: only 1 of the building's 2 boxes)");
        assert_eq!(messages(&event(gridwatch_rules::Severity::Danger, 2, 2), &rules.rules[0])["zh"], "east-yard B2墙体倾斜7.31°", "agreed: as before");
    }

    /// A value rounded onto the limit it broke read as one within it (an outside tester's NH3-N
    /// 1.004 "1.0, above class III", DO 5.999 "6.0, below class II", free chlorine 0.0195 "0.02"
    /// at the red line of 0.02): it keeps the decimals that show the breach.
    #[test]
    fn a_value_is_never_shown_on_the_limit_it_broke() {
        let rules = gridwatch_rules::RuleSet::compile(&gridwatch_rules::builtin_packs()).unwrap();
        let rule = |id: &str| rules.rules.iter().find(|r| r.id == id).unwrap();
        let fired = |value: f64, severity: gridwatch_rules::Severity| RuleEvent {
            rule: gridwatch_rules::RuleId(0),
            subject: gridwatch_rules::SubjectId(0),
            kind: EventKind::Fired,
            severity,
            previous: None,
            variant: None,
            value,
            at: 1_795_392_000_000,
            since: 1_795_391_940_000,
            agreement: None,
        };
        use gridwatch_rules::Severity::{Danger, Warning};
        let shown = |id: &str, value: f64, severity| shown_value(&fired(value, severity), rule(id));
        let nh3n_class_iii = rule("water-nh3n-class-iii").level(None, Warning).map(|l| l.bound.describe());
        assert_eq!(shown("water-nh3n-class-iii", 1.004, Warning), "1.004", "{nh3n_class_iii:?}");
        assert_eq!(shown("water-nh3n-class-iii", 1.04, Warning), "1.04");
        assert_eq!(shown("water-nh3n-class-iii", 1.06, Warning), "1.1", "one decimal shows it above 1");
        assert_eq!(shown("water-do-class-ii", 5.999, Warning), "5.999");
        assert_eq!(shown("drinking-chlorine-low", 0.0195, Danger), "0.019", "below the red line of 0.02");
        assert_eq!(shown("water-nh3n-class-iii", 3.04, Warning), "3.0", "far past the limit: rounded as ever");
        assert_eq!(shown("water-do-class-iii", 1.0, Danger), "1.0");
    }
}

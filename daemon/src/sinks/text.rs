//! What people read: an alert written as a short message in the installation's language
//! (Chinese by default, English by configuration) and time zone. A message has a headline
//! (colour, level, the incident's number), a plain sentence of what happened (the rule's
//! message, values rounded by unit), what to do, when (local time), and the incident's link.
//! The formula (`condition`) and the machine times (`at`, `at_ms`) stay in the JSON for
//! machines; no message shows them.
//!
//! Invariants: every message about an incident carries its number (`#12`) and, when links are
//! configured, its link — digests and grouped house messages too; a digest never drops an entry:
//! [`digest`] splits it into pages under the channel's size limit; a red (danger) alarm carries
//! what to do in every message it is in ([`red_instruction`]); a device fault never reads as a
//! warning level ([`is_device`]).

use crate::alert::{Alert, Audience, Event};
use gridwatch_rules::Severity;

pub use crate::config::wording::{Places, Wording};

/// The channel's markup: a WeCom *text* message or an SMS is plain (no `**`, no `[..](..)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    Markdown,
    Plain,
}

/// A value with its unit, rounded as the unit is read (see [`rounded`]): "7.3‰", "0.52 mg/L",
/// "pH 7.21".
pub fn value(value: f64, unit: &str) -> String {
    let shown = rounded(value, unit);
    match unit {
        "pH" => format!("pH {shown}"),
        "" => shown,
        "mg/L" | "NTU" | "mV" => format!("{shown} {unit}"),
        _ => format!("{shown}{unit}"),
    }
}

/// The number alone, rounded as its unit is read: ‰ to 0.1 (0.01 below 1‰), ° to 0.01, mg/L to
/// 0.1 (0.01 below 1 mg/L: ammonia limits are 0.15, 0.5; 0.001 below 0.1 mg/L: a lake's
/// phosphorus limits are 0.01, 0.025, and TP 0.0254 read "0.03", 18% off what the probe sent —
/// an outside tester), pH to 0.01, NTU to 0.1, mV to 1.
pub fn rounded(value: f64, unit: &str) -> String {
    let decimals = match unit {
        u if u.starts_with('‰') && value.abs() >= 1.0 => 1,
        u if u.starts_with('‰') || u == "°" || u == "pH" || u.is_empty() => 2,
        "mg/L" if value.abs() < 0.1 => 3,
        "mg/L" if value.abs() < 1.0 => 2,
        "mg/L" | "NTU" | "×" | "%" | "°C" => 1,
        "mV" => 0,
        _ => 2,
    };
    let shown = format!("{value:.decimals$}");
    // "-0.0" reads as a sign error.
    if shown.trim_start_matches(['-', '0', '.']).is_empty() {
        shown.trim_start_matches('-').to_string()
    } else {
        shown
    }
}

/// A silence of `seconds` in words: whole minutes under an hour, hours and minutes under two
/// days, days and hours beyond ("45分钟", "2小时5分钟", "3天4小时"; "45 min", "2 h 5 min", "3 d 4 h").
pub fn silence(seconds: f64, chinese: bool) -> String {
    let minutes = (seconds.max(0.0) / 60.0).round() as i64;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let [d, h, m] = if chinese { ["天", "小时", "分钟"] } else { [" d", " h", " min"] };
    let gap = if chinese { "" } else { " " };
    if days > 0 {
        format!("{days}{d}{gap}{hours}{h}")
    } else if hours > 0 {
        format!("{hours}{h}{gap}{minutes}{m}")
    } else {
        format!("{}{m}", minutes.max(1))
    }
}

fn severity_zh(severity: Severity) -> &'static str {
    match severity {
        Severity::Danger => "红色预警",
        Severity::Alarm => "橙色预警",
        Severity::Warning => "黄色预警",
        Severity::Notice => "蓝色提示",
    }
}

/// How many of a building's boxes show a building's alarm (a rule with `agree`), as its message
/// names them: "2个传感器中2个一致" / "2 of 2 sensors" when they agree, and plainly unconfirmed
/// when fewer than `needed` do — "未经确认：同楼2个监测仪中仅1个报警" / "unconfirmed: only 1 of
/// the building's 2 boxes" (one box alone, the others do not show it: the box may be faulty,
/// someone should still look; "2个传感器中1个一致" told a worker none of that, an outside
/// tester).
pub fn agreement(agreeing: u8, of: u8, needed: u8, chinese: bool) -> String {
    match (agreeing < needed, chinese) {
        (true, true) => format!("未经确认：同楼{of}个监测仪中仅{agreeing}个报警"),
        (true, false) => format!("unconfirmed: only {agreeing} of the building's {of} boxes"),
        (false, true) => format!("{of}个传感器中{agreeing}个一致"),
        (false, false) => format!("{agreeing} of {of} sensors"),
    }
}

/// What a building's alarm says when only a box in doubt shows it (a rule's `doubted_by`: the
/// box was told to installers as erratic before it reached the level, which is capped at the
/// rule's `alone`): an outside tester's one-box houses were red from boxes already told faulty.
pub fn doubted(chinese: bool) -> &'static str {
    if chinese {
        "未经确认：仅由正报设备异常的监测仪显示，读数可能有误"
    } else {
        "unconfirmed: shown only by a box under a device alarm, whose readings may be wrong"
    }
}

/// The headline's marker: the warning colour's dot, or a spanner for a device fault (it has no
/// warning colour: it is about a box, not a house).
fn marker(alert: &Alert) -> &'static str {
    if is_device(alert) {
        return "🔧";
    }
    match alert.colour.as_str() {
        "red" => "🔴",
        "orange" => "🟠",
        "yellow" => "🟡",
        _ => "🔵",
    }
}

/// Whether the alert is about a device (a stuck or silent box, its clock, its link: for
/// installers) rather than a house or the water. A device fault is never worded as a warning
/// level: in a grid group it read "🟡 黄色预警" like a house's tilt (an outside tester).
pub fn is_device(alert: &Alert) -> bool {
    alert.audience == Audience::Installer
}

/// The level as people call it: "红色预警" / "danger"; a device fault is "设备故障" /
/// "device fault", whatever its severity.
pub fn level(alert: &Alert, wording: Wording) -> String {
    match (is_device(alert), wording.chinese) {
        (true, chinese) => device_level(chinese).to_string(),
        (false, true) => severity_zh(alert.severity).to_string(),
        (false, false) => alert.severity.as_str().to_string(),
    }
}

/// What a device fault is called where a house's alarm says its level: "设备故障" / "device
/// fault".
pub fn device_level(chinese: bool) -> &'static str {
    if chinese {
        "设备故障"
    } else {
        "device fault"
    }
}

/// "#12" (or nothing for an event that belongs to no incident).
fn number(alert: &Alert) -> String {
    alert.incident_id.map(|id| format!("#{id}")).unwrap_or_default()
}

/// The house as people call it: "北巷社区 7号楼" with display names, else "north-lane B7".
pub fn house(alert: &Alert) -> String {
    let site = alert.site_name.as_ref().unwrap_or(&alert.site);
    match (&alert.building_name, &alert.building) {
        (Some(name), _) => format!("{site} {name}"),
        (None, Some(building)) => format!("{site} {building}"),
        (None, None) => site.clone(),
    }
}

/// "north-lane B7（house-07）" / "house-07, north-lane B7".
fn place(alert: &Alert, chinese: bool) -> String {
    let house = house(alert);
    if chinese {
        format!("{house}（{}）", alert.sensor)
    } else {
        format!("{}, {house}", alert.sensor)
    }
}

/// The headline: "🔴 红色预警 #12", "✅ 已恢复正常 #12", "⏰ 催办 #12 · 红色预警"; a device
/// fault "🔧 设备故障 #12", "✅ 设备已恢复正常 #12".
pub fn headline(alert: &Alert, wording: Wording) -> String {
    let n = number(alert);
    let level = level(alert, wording);
    let marker = marker(alert);
    let device = is_device(alert);
    match (alert.event, wording.chinese) {
        (Event::Report, true) => "📋 督办日报".to_string(),
        (Event::Report, false) => "📋 Supervision report".to_string(),
        (Event::HandedOver, true) => format!("📌 事件转交给你 {n} · {level}"),
        (Event::HandedOver, false) => format!("📌 Handed to you {n} · {level}"),
        (Event::HelpAsked, true) => format!("🤝 请协助处理 {n} · {level}"),
        (Event::HelpAsked, false) => format!("🤝 Asked to help {n} · {level}"),
        (Event::Cleared, true) if device => format!("✅ 设备已恢复正常 {n}"),
        (Event::Cleared, false) if device => format!("✅ Device back to normal {n}"),
        (Event::Cleared, true) => format!("✅ 已恢复正常 {n}"),
        (Event::Cleared, false) => format!("✅ Back to normal {n}"),
        (Event::Reminder, true) => format!("⏰ 催办 {n} · {level}"),
        (Event::Reminder, false) => format!("⏰ Reminder {n} · {level}"),
        (Event::Escalated, true) => format!("⚠️ 督办 {n} · {level}"),
        (Event::Escalated, false) => format!("⚠️ Escalated {n} · {level}"),
        // A device fault has no level to move between: it reads as one.
        (Event::Changed, true) if !device => {
            let was = alert.previous_severity.map(|p| format!("（原{}）", severity_zh(p))).unwrap_or_default();
            format!("{marker} 级别变为{level}{was} {n}")
        }
        (Event::Changed, false) if !device => {
            let was = alert.previous_severity.map(|p| format!(" (was {})", p.as_str())).unwrap_or_default();
            format!("{marker} Now {level}{was} {n}")
        }
        (_, true) => format!("{marker} {level} {n}"),
        (_, false) => format!("{marker} {} {n}", level.to_uppercase()),
    }
}

/// The plain sentence of what happened: the rule's message in the wording's language with the
/// value rounded; a `cleared` event has its own words.
pub fn sentence(alert: &Alert, wording: Wording) -> String {
    let shown = value(alert.value, &alert.unit);
    if alert.event == Event::Cleared {
        // A device fault's clear is the device's, whatever its unit: "墙体倾斜已恢复正常，当前0.00°"
        // ended a "readings jump about" alarm (an outside tester).
        return match (wording.chinese, alert.audience == Audience::Installer, judges_a_change(alert)) {
            (true, true, _) => format!("{}设备已恢复正常", place(alert, true)),
            (true, false, false) => format!("{}{}已恢复正常，当前{shown}", place(alert, true), what_zh(alert)),
            (true, false, true) => format!("{}{}已恢复正常，变化量回落至{shown}", place(alert, true), what_zh(alert)),
            (false, true, _) => format!("{}: the device is back to normal", place(alert, false)),
            (false, false, false) => format!("{}: back to normal, now {shown}", place(alert, false)),
            (false, false, true) => format!("{}: back to normal, the change down to {shown}", place(alert, false)),
        };
    }
    let language = if wording.chinese { "zh" } else { "en" };
    // A rule without a message has its title as its English one: that names no place, and a
    // worker could not tell the houses of a digest apart.
    match alert.messages.get(language).filter(|message| **message != alert.title) {
        Some(message) => message.clone(),
        None if wording.chinese && alert.audience == Audience::Installer => format!("{}设备异常，请安装人员检查", place(alert, true)),
        None if wording.chinese => format!("{}{}{shown}，{}", place(alert, true), what_zh(alert), severity_zh(alert.severity)),
        None => format!("{}: {} ({shown})", place(alert, false), alert.title),
    }
}

/// Whether the alert's rule judges a change (a swing, a change over a window, the change from a
/// recent level), not the quantity itself: its clear must not read "pH back to normal, now 0.05"
/// for a swing of 0.05 (an outside tester).
fn judges_a_change(alert: &Alert) -> bool {
    ["swing within", "change over", "from its level over"].iter().any(|words| alert.condition.contains(words))
}

/// What is measured, in Chinese: "墙体倾斜"; for the water, the quantity its condition reads
/// ("溶解氧", "氨氮"), else "水质" (an operator's rule without a message read "水质1.0 mg/L",
/// which names no quantity).
fn what_zh(alert: &Alert) -> &'static str {
    match alert.kind.as_str() {
        "tilt" => "墙体倾斜",
        "water" => alert.condition.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).find_map(water_quantity_zh).unwrap_or("水质"),
        _ => "监测值",
    }
}

/// A water field's name in Chinese, for the fields the shipped profiles and packs use.
fn water_quantity_zh(field: &str) -> Option<&'static str> {
    Some(match field {
        "do" => "溶解氧",
        "ph" => "pH",
        "nh3n" => "氨氮",
        "codmn" => "高锰酸盐指数",
        "cod" => "化学需氧量",
        "bod5" => "五日生化需氧量",
        "tp" => "总磷",
        "tn" => "总氮",
        "turbidity" => "浊度",
        "cl2" => "余氯",
        "orp" => "氧化还原电位",
        "conductivity" => "电导率",
        _ => return None,
    })
}

/// What to do, in one sentence.
pub fn what_to_do(alert: &Alert, wording: Wording) -> &'static str {
    let closes_itself = crate::dispatch::incident::closes_when_sensor_clears(alert.severity.as_str());
    match (alert.event, alert.audience, alert.severity, wording.chinese) {
        (Event::Report, _, _, true) => "请网格长督促超时事件办结。",
        (Event::Report, _, _, false) => "Grid leaders: follow up the overdue incidents.",
        (Event::Cleared, _, _, true) if alert.incident_resolved => "事件已办结，无需再到场。",
        (Event::Cleared, _, _, false) if alert.incident_resolved => "The incident was resolved already; nobody needs to go.",
        (Event::Cleared, _, _, true) if closes_itself => "事件已自动关闭，无需处理。",
        (Event::Cleared, _, _, true) => "数值已回落，但仍需到场核实后办结。",
        (Event::Cleared, _, _, false) if closes_itself => "The incident closed by itself; nothing to do.",
        (Event::Cleared, _, _, false) => "The value is back, but someone must still check on site and resolve it.",
        (_, Audience::Installer, _, true) => "请安装人员检查设备和线路。",
        (_, Audience::Installer, _, false) => "Installers: check the device and its link.",
        // Water is not a house: nobody is evacuated for it (an outside tester's pH and DO reds
        // said so), people are kept from using it.
        (_, _, Severity::Danger, true) if alert.kind == "water" => "请立即到场查看，提醒居民暂勿取用或接触该处水体，并报告上级。",
        (_, _, Severity::Danger, true) => "请立即到场查看，必要时疏散住户。",
        (_, _, Severity::Alarm, true) => "请尽快到场查看。",
        (_, _, Severity::Warning, true) => "请今天内到场查看。",
        (_, _, _, true) => "请留意，无需立即到场。",
        (_, _, Severity::Danger, false) if alert.kind == "water" => "Go and look now; tell people not to use or touch the water, and report it up.",
        (_, _, Severity::Danger, false) => "Go and look now; evacuate if needed.",
        (_, _, Severity::Alarm, false) => "Go and look soon.",
        (_, _, Severity::Warning, false) => "Go and look today.",
        (_, _, _, false) => "For your information; no visit needed now.",
    }
}

/// What to do about a red (danger) alarm of a house or the water, for the messages that keep
/// each alert short (summaries, an SMS summary): a red carries its instruction wherever it
/// goes — in a summary with an orange it had none (an outside tester). `None` for anything
/// else, and for a red that is over.
pub fn red_instruction(alert: &Alert, wording: Wording) -> Option<&'static str> {
    let acts = !matches!(alert.event, Event::Cleared | Event::Report);
    (alert.severity == Severity::Danger && alert.audience == Audience::Grid && acts).then(|| what_to_do(alert, wording))
}

/// When it happened, in the installation's time zone — or that the box cannot tell yet (its
/// clock was not set when the alert was made: nothing stamped 1970 reaches a person).
pub fn shown_time(alert: &Alert, wording: Wording) -> String {
    if alert.at == crate::clock::TIME_UNKNOWN {
        unknown_time(wording.chinese).into()
    } else {
        crate::local_time::short(alert.at_ms, wording.time_zone, wording.chinese)
    }
}

/// What a person reads for a time stamped before this box's clock was set.
pub fn unknown_time(chinese: bool) -> &'static str {
    if chinese {
        "时间未知（本机时钟尚未校准）"
    } else {
        "time unknown (this box's clock is not set yet)"
    }
}

/// "时间：12月3日 23:28（自 23:27 起）".
fn when(alert: &Alert, wording: Wording) -> String {
    let at = shown_time(alert, wording);
    let since_ms = chrono::DateTime::parse_from_rfc3339(&alert.since).map_or(alert.at_ms, |t| t.timestamp_millis());
    let since = (alert.event == Event::Fired && alert.at_ms - since_ms >= 60_000).then(|| crate::local_time::clock_time(since_ms, wording.time_zone));
    match (since, wording.chinese) {
        (Some(since), true) => format!("时间：{at}（自 {since} 起）"),
        (None, true) => format!("时间：{at}"),
        (Some(since), false) => format!("Time: {at} (since {since})"),
        (None, false) => format!("Time: {at}"),
    }
}

/// The links to act on: each person named gets their own (what they do through it is recorded
/// as theirs); else the incident's link. Empty without links configured.
fn links(alert: &Alert, wording: Wording, markup: Markup, label: &str) -> Vec<String> {
    let label = match (label.is_empty(), alert.incident_resolved, wording.chinese) {
        (false, _, _) => label,
        // Nothing is left to do on an incident a person resolved: the link is to look.
        (true, true, true) => "查看",
        (true, true, false) => "View",
        (true, false, true) => "接单 / 到场 / 办结",
        (true, false, false) => "Accept / on site / resolve",
    };
    let link = |who: Option<&str>, url: &str| {
        let who = who.map(|w| format!("{w}{}", if wording.chinese { "：" } else { ": " })).unwrap_or_default();
        match markup {
            Markup::Markdown => format!("{who}[{label}]({url})"),
            Markup::Plain => format!("{who}{label} {url}"),
        }
    };
    if alert.member_links.is_empty() {
        alert.link.iter().map(|url| link(None, url)).collect()
    } else {
        alert.member_links.iter().map(|(name, url)| link(Some(name), url)).collect()
    }
}

/// One alert as one message.
pub fn message(alert: &Alert, wording: Wording, markup: Markup) -> String {
    let mut lines = message_head(alert, wording, markup);
    lines.extend(links(alert, wording, markup, ""));
    lines.join("\n")
}

/// A message's lines before its links: headline, sentence, what to do, when.
fn message_head(alert: &Alert, wording: Wording, markup: Markup) -> Vec<String> {
    let headline = match markup {
        Markup::Markdown => format!("**{}**", headline(alert, wording)),
        Markup::Plain => headline(alert, wording),
    };
    vec![headline, sentence(alert, wording), what_to_do(alert, wording).to_string(), when(alert, wording)]
}

/// One alert as messages of at most `max_bytes` each: the message, and when everyone's link does
/// not fit (16 people on duty and a WeCom text of 2,048 bytes cut the links of five of them), the
/// links left over in messages of their own under the alert's headline and number — never cut.
pub fn message_pages(alert: &Alert, wording: Wording, markup: Markup, max_bytes: usize) -> Vec<String> {
    let whole = message(alert, wording, markup);
    if whole.len() <= max_bytes {
        return vec![whole];
    }
    let mut pages = vec![message_head(alert, wording, markup).join("\n")];
    let more = format!("{} {}", headline(alert, wording), if wording.chinese { "（处理链接续）" } else { "(links, continued)" });
    for link in links(alert, wording, markup, "") {
        if pages.last().is_some_and(|page| page.len() + 1 + link.len() > max_bytes) {
            pages.push(more.clone());
        }
        if let Some(page) = pages.last_mut() {
            page.push('\n');
            page.push_str(&link);
        }
    }
    pages
}

/// The title of a message where the channel wants one (DingTalk): the headline and the house.
pub fn title(alert: &Alert, wording: Wording) -> String {
    format!("{} {}", headline(alert, wording), house(alert))
}

/// The title of a digest: about the house when all its alerts share one.
pub fn digest_title(alerts: &[&Alert], wording: Wording) -> String {
    let house = alerts.first().and_then(|first| {
        let building = first.building.as_ref()?;
        alerts.iter().all(|a| a.site == first.site && a.building.as_ref() == Some(building)).then(|| house(first))
    });
    let firing = alerts.iter().all(|a| a.event == Event::Fired);
    let title = match (house, wording.chinese) {
        (Some(house), true) if firing => format!("{house}：{} 个传感器告警", alerts.len()),
        (Some(house), false) if firing => format!("{house}: {} sensors alarm", alerts.len()),
        (Some(house), true) => format!("{house}：{} 条消息", alerts.len()),
        (Some(house), false) => format!("{house}: {} messages", alerts.len()),
        (None, true) => format!("{} 条告警汇总", alerts.len()),
        (None, false) => format!("{} alerts", alerts.len()),
    };
    // The title is what a phone's notification shows: a summary with reds says so first (an
    // outside tester's "50 条告警汇总" carried eleven reds unseen).
    match (alerts.iter().filter(|a| a.is_red()).count(), wording.chinese) {
        (0, _) => title,
        (reds, true) => format!("🔴 含红色预警{reds}条 · {title}"),
        (reds, false) => format!("🔴 {reds} red · {title}"),
    }
}

/// One digest line: headline, time, sentence, a red's instruction ([`red_instruction`]), link.
fn entry(alert: &Alert, wording: Wording, markup: Markup) -> String {
    let at = shown_time(alert, wording);
    let mut line = format!("- {} {at} {}", headline(alert, wording), sentence(alert, wording));
    for part in entry_tail(alert, wording, markup, if wording.chinese { "处理" } else { "open" }) {
        line.push(' ');
        line.push_str(&part);
    }
    line
}

/// What a digest line keeps even when its sentence is cut: a red's instruction and the links
/// (labelled `label`).
fn entry_tail(alert: &Alert, wording: Wording, markup: Markup, label: &str) -> Vec<String> {
    red_instruction(alert, wording).map(str::to_string).into_iter().chain(links(alert, wording, markup, label)).collect()
}

/// Several alerts as messages of at most `max_bytes` each: every alert in full (number and
/// link), in order, split over as many pages as it takes — never cut off. Each page is titled,
/// with "（2/3）" when there are several. The incidents that are red come first (each with all
/// its alerts, in order): an outside tester's red was the 41st entry of a digest of oranges, on
/// its sixth page.
pub fn digest(alerts: &[&Alert], wording: Wording, markup: Markup, max_bytes: usize) -> Vec<String> {
    let incident = |a: &Alert| (a.incident_id, a.rule.clone(), a.sensor.clone());
    let red: Vec<_> = alerts.iter().filter(|a| a.is_red()).map(|a| incident(a)).collect();
    let mut ordered = alerts.to_vec();
    ordered.sort_by_key(|a| !red.contains(&incident(a)));
    let alerts = ordered.as_slice();
    let title = digest_title(alerts, wording);
    // Room for the title with its page mark ("（12/12）") and markup.
    let budget = max_bytes.saturating_sub(title.len() + 32).max(64);
    let mut pages: Vec<Vec<String>> = vec![Vec::new()];
    let mut used = 0;
    for alert in alerts {
        let mut line = entry(alert, wording, markup);
        if line.len() > budget {
            // Only a rule message longer than a whole page gets here: keep the number, a red's
            // instruction and the link.
            let tail: String = entry_tail(alert, wording, markup, "").join(" ");
            let head = super::robot::truncate(&format!("- {} {}", headline(alert, wording), sentence(alert, wording)), budget.saturating_sub(tail.len() + 1));
            line = format!("{head} {tail}");
        }
        if used + line.len() + 1 > budget && pages.last().is_some_and(|p| !p.is_empty()) {
            pages.push(Vec::new());
            used = 0;
        }
        used += line.len() + 1;
        if let Some(page) = pages.last_mut() {
            page.push(line);
        }
    }
    let count = pages.len();
    pages
        .into_iter()
        .enumerate()
        .map(|(i, lines)| {
            let mark = if count > 1 { format!("（{}/{count}）", i + 1) } else { String::new() };
            let title = match markup {
                Markup::Markdown => format!("**{title}{mark}**"),
                Markup::Plain => format!("{title}{mark}"),
            };
            format!("{title}\n{}", lines.join("\n"))
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_silence_reads_in_minutes_hours_and_days() {
        assert_eq!(silence(120.0, true), "2分钟");
        assert_eq!(silence(7_500.0, true), "2小时5分钟");
        assert_eq!(silence(3.0 * 86_400.0 + 4.0 * 3_600.0, true), "3天4小时");
        assert_eq!(silence(7_500.0, false), "2 h 5 min");
        assert_eq!(silence(10.0, false), "1 min", "never \"0 min\" of silence");
    }

    use super::*;
    use crate::alert::tests::sample_alert;

    fn incident(mut alert: Alert, id: i64) -> Alert {
        (alert.incident_id, alert.link) = (Some(id), Some(format!("http://10.8.0.5:9181/incident/{id}?exp=1&sig=ab")));
        alert
    }

    #[test]
    fn a_rule_without_a_message_still_names_the_house_in_english() {
        let mut alert = sample_alert("fired", 3.0);
        alert.messages = std::collections::BTreeMap::from([("en".to_string(), alert.title.clone())]);
        let en = Wording { chinese: false, time_zone: chrono_tz::Asia::Shanghai };
        assert_eq!(sentence(&alert, en), "house-07, north-lane B7: Wall tilt past 7‰ (red) (3.00°)");
        alert.messages.insert("en".into(), "B7 leans".into());
        assert_eq!(sentence(&alert, en), "B7 leans", "a rule's own message as it is");
    }

    #[test]
    fn a_water_rule_without_a_message_names_its_quantity() {
        let mut alert = sample_alert("fired", 1.0);
        (alert.kind, alert.unit, alert.condition) = ("water".into(), "mg/L".into(), "within(do, -0.2, 25) below 2".into());
        alert.messages = std::collections::BTreeMap::from([("en".to_string(), alert.title.clone())]);
        assert!(sentence(&alert, Wording::default()).contains("溶解氧1.0 mg/L"), "{}", sentence(&alert, Wording::default()));
        alert.condition = "x_custom above 3".into();
        assert!(sentence(&alert, Wording::default()).contains("水质1.0 mg/L"), "a field it does not know: {}", sentence(&alert, Wording::default()));
    }

    #[test]
    fn a_red_of_the_water_keeps_people_from_it_and_evacuates_nobody() {
        let mut water = sample_alert("fired", 4.2);
        (water.kind, water.rule) = ("water".into(), "water-ph-range".into());
        let zh = Wording::default();
        assert_eq!(what_to_do(&water, zh), "请立即到场查看，提醒居民暂勿取用或接触该处水体，并报告上级。");
        assert_eq!(red_instruction(&water, zh), Some(what_to_do(&water, zh)), "a summary carries it too");
        assert!(!message(&water, zh, Markup::Plain).contains("疏散"));
        assert_eq!(what_to_do(&sample_alert("fired", 7.3), zh), "请立即到场查看，必要时疏散住户。", "a house's red as before");
    }

    #[test]
    fn an_alert_made_before_the_clock_was_set_says_so_instead_of_1970() {
        let mut alert = sample_alert("fired", 7.3);
        (alert.at, alert.since, alert.at_ms) = (crate::clock::TIME_UNKNOWN.into(), crate::clock::TIME_UNKNOWN.into(), 86_400_000);
        let zh = Wording::default();
        assert_eq!(when(&alert, zh), "时间：时间未知（本机时钟尚未校准）");
        assert!(!entry(&alert, zh, Markup::Plain).contains("1月2日") && !entry(&alert, zh, Markup::Plain).contains("1970"));
    }

    #[test]
    fn values_are_rounded_as_their_unit_is_read() {
        assert_eq!(value(8.899702868529431, "‰"), "8.9‰");
        assert_eq!(value(0.4567, "‰"), "0.46‰");
        assert_eq!(value(0.123456, "°"), "0.12°");
        assert_eq!(value(0.1549, "mg/L"), "0.15 mg/L");
        assert_eq!(value(0.0254, "mg/L"), "0.025 mg/L", "a lake's phosphorus, whose limits are 0.01 and 0.025");
        assert_eq!(value(5.678, "mg/L"), "5.7 mg/L");
        assert_eq!(value(7.2149, "pH"), "pH 7.21");
        assert_eq!(value(-0.001, "°"), "0.00°", "no negative zero");
    }

    #[test]
    fn a_chinese_message_is_all_chinese_with_number_time_and_link() {
        let mut alert = incident(sample_alert("fired", 7.3126), 12);
        alert.messages.insert("zh".into(), "north-lane B7（house-07）墙体倾斜较安装时变化7.3‰，已达危险值，红色预警".into());
        let text = message(&alert, Wording::default(), Markup::Plain);
        assert_eq!(
            text,
            "🔴 红色预警 #12\nnorth-lane B7（house-07）墙体倾斜较安装时变化7.3‰，已达危险值，红色预警\n请立即到场查看，必要时疏散住户。\n时间：11月23日 08:00（自 07:59 起）\n接单 / 到场 / 办结 http://10.8.0.5:9181/incident/12?exp=1&sig=ab"
        );
        for leak in ["danger", "hypot", "permille", "**", "](", "T00:00", "Z"] {
            assert!(!text.contains(leak), "`{leak}` in {text}");
        }
    }

    #[test]
    fn a_clear_says_it_is_back_to_normal_and_what_is_left_to_do() {
        let alert = incident(sample_alert("cleared", 5.912), 12);
        let text = message(&alert, Wording::default(), Markup::Markdown);
        assert_eq!(
            text,
            "**✅ 已恢复正常 #12**\nnorth-lane B7（house-07）墙体倾斜已恢复正常，当前5.91°\n数值已回落，但仍需到场核实后办结。\n时间：11月23日 08:00\n[接单 / 到场 / 办结](http://10.8.0.5:9181/incident/12?exp=1&sig=ab)"
        );
        let resolved = Alert { incident_resolved: true, ..alert };
        let text = message(&resolved, Wording::default(), Markup::Markdown);
        assert!(text.ends_with("事件已办结，无需再到场。\n时间：11月23日 08:00\n[查看](http://10.8.0.5:9181/incident/12?exp=1&sig=ab)"), "{text}");
        let sms = crate::sinks::sms::sms_text(&[&resolved], Wording::default(), None);
        assert!(sms.contains("事件已办结，无需再到场。") && sms.contains(" 查看：http://10.8.0.5:9181/"), "{sms}");
    }

    #[test]
    fn the_clear_of_a_rule_that_judges_a_change_names_the_change_not_the_quantity() {
        // An outside tester read "pH已恢复正常，当前0.05": the swing of a pH jump, shown as the pH.
        let mut alert = incident(sample_alert("cleared", 0.05), 12);
        (alert.kind, alert.unit, alert.building) = ("water".into(), String::new(), None);
        alert.condition = "swing within 1 h of median 3 samples of within(ph, 0, 14) back below 0.5".into();
        assert_eq!(sentence(&alert, Wording::default()), "north-lane（house-07）pH已恢复正常，变化量回落至0.05");
        let english = Wording { chinese: false, ..Wording::default() };
        assert_eq!(sentence(&alert, english), "house-07, north-lane: back to normal, the change down to 0.05");
        alert.condition = "within(ph, 0, 14) back inside 6.2–8.8".into();
        alert.value = 7.41;
        assert_eq!(sentence(&alert, Wording::default()), "north-lane（house-07）pH已恢复正常，当前7.41");
    }

    #[test]
    fn english_by_configuration_in_another_zone() {
        let wording = Wording { chinese: false, time_zone: crate::local_time::parse("Europe/Berlin").unwrap() };
        let text = message(&incident(sample_alert("fired", 7.31), 3), wording, Markup::Plain);
        assert!(text.starts_with("🔴 DANGER #3\nnorth-lane B7 (house-07): wall tilt changed 7.31‰"), "{text}");
        assert!(text.contains("Time: 23 Nov 01:00 (since 00:59)"), "{text}");
    }

    #[test]
    fn display_names_stand_for_the_ids() {
        let mut alert = incident(sample_alert("cleared", 5.912), 12);
        (alert.site_name, alert.building_name) = (Some("北巷社区".into()), Some("7号楼".into()));
        assert!(message(&alert, Wording::default(), Markup::Plain).contains("\n北巷社区 7号楼（house-07）墙体倾斜已恢复正常"));
        assert_eq!(title(&alert, Wording::default()), "✅ 已恢复正常 #12 北巷社区 7号楼");
    }

    #[test]
    fn a_long_digest_is_split_into_pages_and_keeps_every_number_and_link() {
        let alerts: Vec<Alert> = (1..=21)
            .map(|i| {
                let mut alert = incident(sample_alert("fired", 7.3), i);
                alert.messages.insert("zh".into(), format!("north-lane B{i}（house-{i:02}）墙体倾斜较安装时变化7.3‰，已达危险值，红色预警"));
                alert.building = Some(format!("B{i}"));
                alert
            })
            .collect();
        let refs: Vec<&Alert> = alerts.iter().collect();
        let pages = digest(&refs, Wording::default(), Markup::Plain, 2048);
        assert!(pages.len() > 1, "{pages:?}");
        assert!(pages.iter().all(|p| p.len() <= 2048), "{:?}", pages.iter().map(String::len).collect::<Vec<_>>());
        assert!(
            pages[0].starts_with(&format!("🔴 含红色预警21条 · 21 条告警汇总（1/{}）\n- 🔴 红色预警 #1 11月23日 08:00 north-lane B1", pages.len())),
            "{}",
            pages[0]
        );
        let all = pages.join("\n");
        for i in 1..=21 {
            assert!(all.contains(&format!(" #{i} ")) && all.contains(&format!("处理 http://10.8.0.5:9181/incident/{i}?")), "#{i} missing");
        }
        assert!(!all.contains("**"), "plain pages carry no markdown");
    }

    /// Sixteen people on duty: every one's link reaches the group, in a second message when the
    /// first is full.
    #[test]
    fn every_link_of_many_people_on_duty_goes_out_whole() {
        let mut alert = incident(sample_alert("fired", 7.3), 9);
        alert.member_links =
            (1..=16).map(|i| (format!("网格员{i}号"), format!("http://10.8.0.5:9181/incident/9?m={i}&exp=1796400000&sig={}", "a".repeat(64)))).collect();
        let pages = message_pages(&alert, Wording::default(), Markup::Plain, 2048);
        assert!(pages.len() > 1 && pages.iter().all(|p| p.len() <= 2048), "{:?}", pages.iter().map(String::len).collect::<Vec<_>>());
        let all = pages.join("\n");
        for i in 1..=16 {
            assert!(
                all.contains(&format!("网格员{i}号：接单 / 到场 / 办结 http://10.8.0.5:9181/incident/9?m={i}&exp=1796400000&sig={}", "a".repeat(64))),
                "{i}: {all}"
            );
        }
        assert!(pages[1].starts_with("🔴 红色预警 #9 （处理链接续）"), "{}", pages[1]);
        assert_eq!(message_pages(&incident(sample_alert("fired", 7.3), 9), Wording::default(), Markup::Plain, 2048).len(), 1, "one link fits");
    }

    /// A red among many oranges leads the digest, with the whole of its incident; the rest keep
    /// their order.
    #[test]
    fn a_red_incident_leads_its_digest() {
        let mut alerts: Vec<Alert> = (1..=40)
            .map(|i| {
                let mut alert = incident(sample_alert("fired", 3.0), i);
                (alert.severity, alert.building) = (Severity::Alarm, Some(format!("B{i}")));
                alert
            })
            .collect();
        let mut worse = incident(sample_alert("changed", 7.3), 7);
        worse.building = Some("B7".into());
        alerts.push(worse);
        let refs: Vec<&Alert> = alerts.iter().collect();
        let first = digest(&refs, Wording::default(), Markup::Plain, 2048).remove(0);
        let numbers: Vec<&str> = first.lines().skip(1).take(4).map(|line| line.split_whitespace().nth(3).unwrap_or("")).collect();
        assert_eq!(numbers, ["#7", "#7", "#1", "#2"], "{first}");
    }

    /// An outside tester's burst: a red of one house and an orange of another in one robot
    /// summary; the red had no instruction there. It keeps it, and so does a red reminder; the
    /// orange stays one short line.
    #[test]
    fn a_red_keeps_its_instruction_in_a_summary_with_other_houses() {
        let mut red = incident(sample_alert("fired", 7.3), 12);
        red.messages.insert("zh".into(), "north-lane B7（house-07）墙体倾斜7.3‰，红色预警".into());
        let mut orange = incident(sample_alert("fired", 4.2), 13);
        (orange.severity, orange.colour, orange.building) = (Severity::Alarm, "orange".into(), Some("B8".into()));
        orange.messages.insert("zh".into(), "north-lane B8（house-08）墙体倾斜4.2‰，橙色预警".into());
        let pages = digest(&[&orange, &red], Wording::default(), Markup::Plain, 2048);
        assert_eq!(
            pages,
            ["🔴 含红色预警1条 · 2 条告警汇总\n\
              - 🔴 红色预警 #12 11月23日 08:00 north-lane B7（house-07）墙体倾斜7.3‰，红色预警 请立即到场查看，必要时疏散住户。 处理 http://10.8.0.5:9181/incident/12?exp=1&sig=ab\n\
              - 🟠 橙色预警 #13 11月23日 08:00 north-lane B8（house-08）墙体倾斜4.2‰，橙色预警 处理 http://10.8.0.5:9181/incident/13?exp=1&sig=ab"]
        );
        let reminder = Alert { event: Event::Reminder, ..red.clone() };
        let english = Wording { chinese: false, ..Wording::default() };
        let pages = digest(&[&orange, &reminder], english, Markup::Markdown, 4096);
        assert!(pages[0].contains("- ⏰ Reminder #12 · danger 23 Nov 08:00 north-lane B7 (house-07): wall tilt changed 7.31‰ since installation — danger Go and look now; evacuate if needed. [open]("), "{}", pages[0]);
        let cleared = Alert { event: Event::Cleared, ..red };
        let pages = digest(&[&orange, &cleared], Wording::default(), Markup::Plain, 2048);
        assert!(!pages[0].contains("请立即到场") && !pages[0].contains("请尽快到场"), "a clear and an orange say no more in a summary: {}", pages[0]);
    }

    /// A device fault (a silent or stuck box) in a grid group read "🟡 黄色预警" like a yellow
    /// tilt warning of a house (an outside tester): alone, in a summary, reminded, cleared, in
    /// English, it reads as a device fault.
    #[test]
    fn a_device_fault_reads_apart_from_a_warning_about_a_house() {
        let mut fault = incident(sample_alert("fired", 7_200.0), 5);
        (fault.rule, fault.severity, fault.colour, fault.audience, fault.unit) =
            ("tilt-no-data".into(), Severity::Warning, "yellow".into(), Audience::Installer, String::new());
        fault.messages.insert("zh".into(), "north-lane B7倾斜监测仪house-07已2小时无数据，请检查设备".into());
        let text = message(&fault, Wording::default(), Markup::Plain);
        assert_eq!(
            text,
            "🔧 设备故障 #5\nnorth-lane B7倾斜监测仪house-07已2小时无数据，请检查设备\n请安装人员检查设备和线路。\n时间：11月23日 08:00（自 07:59 起）\n接单 / 到场 / 办结 http://10.8.0.5:9181/incident/5?exp=1&sig=ab"
        );
        let mut warning = incident(sample_alert("fired", 2.4), 6);
        (warning.severity, warning.colour, warning.building) = (Severity::Warning, "yellow".into(), Some("B9".into()));
        let summary = digest(&[&warning, &fault], Wording::default(), Markup::Plain, 2048).join("\n");
        assert!(summary.contains("\n- 🟡 黄色预警 #6 ") && summary.contains("\n- 🔧 设备故障 #5 "), "{summary}");
        let english = Wording { chinese: false, ..Wording::default() };
        assert_eq!(headline(&fault, english), "🔧 DEVICE FAULT #5");
        assert_eq!(headline(&Alert { event: Event::Reminder, ..fault.clone() }, Wording::default()), "⏰ 催办 #5 · 设备故障");
        assert_eq!(headline(&Alert { event: Event::Changed, previous_severity: Some(Severity::Alarm), ..fault.clone() }, Wording::default()), "🔧 设备故障 #5");
        assert_eq!(headline(&Alert { event: Event::Cleared, ..fault.clone() }, Wording::default()), "✅ 设备已恢复正常 #5");
        let erratic = Alert { event: Event::Cleared, rule: "tilt-erratic".into(), unit: "°".into(), value: 0.0, ..fault.clone() };
        assert_eq!(sentence(&erratic, Wording::default()), format!("{}设备已恢复正常", place(&erratic, true)), "not the wall's tilt");
        assert_eq!(title(&fault, english), "🔧 DEVICE FAULT #5 north-lane B7");
        for text in [text, summary] {
            assert!(!text.contains("🔧 黄色预警") && !text.contains("🟡 黄色预警 #5"), "{text}");
        }
    }

    #[test]
    fn a_house_digest_is_titled_by_the_house_and_links_each_incident() {
        let (a, mut b) = (incident(sample_alert("fired", 7.3), 12), incident(sample_alert("fired", 6.2), 13));
        b.sensor = "house-08".into();
        let pages = digest(&[&a, &b], Wording::default(), Markup::Markdown, 4096);
        assert_eq!(pages.len(), 1);
        assert!(pages[0].starts_with("**🔴 含红色预警2条 · north-lane B7：2 个传感器告警**\n- 🔴 红色预警 #12 "), "{}", pages[0]);
        assert!(pages[0].contains("[处理](http://10.8.0.5:9181/incident/13?exp=1&sig=ab)"), "{}", pages[0]);
    }
}

//! The demo's grid worker on duty, 王芳: she reads the alarms that name her (the MQTT alert
//! topic carries each message as the channels send it, with her own signed link), opens her
//! link like a phone would, and presses 接单, 到场 and 办结 on the page after a few simulated
//! minutes each — so a newcomer watching the board sees the loop close.

use crate::alert::Alert;
use crate::clock::Clock;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The worker's roster id and name (see [`super::ROSTER`]).
pub const MEMBER: (&str, &str) = ("wang", "王芳");

/// Simulated minutes from the alarm to each step.
const STEPS: [(&str, f64, &str); 3] =
    [("accept", 3.0, ""), ("on_site", 12.0, "已到场，正在查看墙体"), ("resolve", 35.0, "已加设临时支撑，裂缝已封堵，住户已告知")];

/// Follows the alerts on `topic` until `stop`, working each new incident that names the worker.
pub async fn run(options: MqttOptions, topic: String, clock: Clock, stop: CancellationToken) {
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    if client.subscribe(topic, QoS::AtLeastOnce).await.is_err() {
        return;
    }
    let http = reqwest::Client::new();
    let mut working = std::collections::HashSet::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = eventloop.poll() => event,
        };
        let Ok(Event::Incoming(Packet::Publish(publish))) = event else {
            if event.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        let Ok(alert) = serde_json::from_slice::<Alert>(&publish.payload) else { continue };
        let (Some(incident), Some(link)) = (alert.incident_id, alert.member_links.get(MEMBER.1)) else { continue };
        if alert.event != crate::alert::Event::Fired || alert.audience != crate::alert::Audience::Grid || !working.insert(incident) {
            continue;
        }
        tokio::spawn(work(http.clone(), link.clone(), incident, crate::sinks::text::house(&alert), clock, stop.clone()));
    }
}

/// Opens the link, then takes each step after its simulated wait.
async fn work(http: reqwest::Client, link: String, incident: i64, house: String, clock: Clock, stop: CancellationToken) {
    let mut waited = 0.0;
    for (action, minute, note) in STEPS {
        let wait = Duration::from_secs_f64((minute - waited) * 60.0 / clock.speed());
        waited = minute;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let opened = http.get(&link).send().await.map(|r| r.status().is_success());
        let posted = http.post(&link).form(&[("action", action), ("note", note)]).send().await;
        let page = match (opened, posted) {
            (Ok(true), Ok(response)) => response.text().await.unwrap_or_default(),
            _ => {
                println!("demo worker: {} could not open the link of #{incident}", MEMBER.1);
                return;
            }
        };
        let step = match action {
            "accept" => "接单",
            "on_site" => "到场",
            _ => "办结",
        };
        if page.contains("未记录") {
            println!("demo worker: {} {step} #{incident} ({house}) was refused", MEMBER.1);
            return;
        }
        println!("demo worker: {} {step} #{incident} ({house}) from her link", MEMBER.1);
    }
}

//! Which way each sensor's readings come — the MQTT connection, or one serial bus — and whether
//! that way is up. A bus that is down explains the silence of every sensor on it: their no-data
//! alarms are held back by the dispatcher, and [`watch`] sends one "bus down" device alarm for
//! the bus instead (one message instead of twenty), and its recovery.
//!
//! A serial bus is down when its port cannot be opened or fails, or when every device on it
//! failed to answer twice in a row; any reading from it marks it up. The MQTT bus is down from
//! the first failure of the ingest connection until a connection has held for a while
//! (`crate::sources::mqtt::source`): a connection that keeps dropping counts as down, however often it
//! reconnects in between. The alarm names the last failure and how many there were.
//!
//! Boxes behind one gateway (the sensor tag `gateway = "gw-3"`, at least two boxes) form a bus of
//! their own, `gateway:gw-3`, judged from their readings by [`crate::sources::gateways::watch`]: when all
//! of them go silent, one "gateway down" alarm goes out instead of a no-data alarm per box.

use crate::alert::{Alert, Event};
use crate::config::{SensorIndex, SerialConfig};
use gridwatch_rules::Severity;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The rule name of bus alarms (their incidents are keyed by it and the bus name).
pub const BUS_DOWN_RULE: &str = "bus-down";
/// The rule name of gateway alarms (all boxes behind a gateway silent).
pub const GATEWAY_DOWN_RULE: &str = "gateway-down";
/// The sensor tag naming the gateway (or bus converter) a box reports through.
pub const GATEWAY_TAG: &str = "gateway";

/// Up or down, since when, for every bus; shared by the sources (who report) and the
/// dispatcher (who asks).
#[derive(Debug)]
pub struct Buses {
    /// `mqtt`, then `serial:<port>` for each serial port.
    names: Vec<String>,
    sensors: SensorIndex,
    /// The bus of each sensor, by inventory position.
    bus_of: Vec<u16>,
    /// The gateway of each sensor (an index into `names`), when it has one shared with others.
    gateway_of: Vec<Option<u16>>,
    /// How many sensors each bus has.
    counts: Vec<usize>,
    /// Since when each bus is down (ms since the epoch); 0 while up.
    down_since: Vec<AtomicI64>,
    /// Per bus while down: the last failure reported and how many since it went down.
    failures: Vec<Mutex<(String, u64)>>,
}

/// One bus, as a source reports on it.
#[derive(Debug, Clone)]
pub struct BusHandle {
    buses: Arc<Buses>,
    index: usize,
}

impl BusHandle {
    pub fn down(&self, now_ms: i64) {
        self.buses.set_down(self.index, now_ms);
    }

    /// Down because of `reason` (one more failure while down; the alarm names the last one).
    pub fn failed(&self, now_ms: i64, reason: &str) {
        self.buses.set_down(self.index, now_ms);
        if let Some(Ok(mut failure)) = self.buses.failures.get(self.index).map(|f| f.lock()) {
            *failure = (reason.chars().take(200).collect(), failure.1 + 1);
        }
    }

    pub fn up(&self) {
        self.buses.set_up(self.index);
    }
}

impl Buses {
    /// Sensors polled or streamed on a serial port belong to that port's bus; every other
    /// sensor to the MQTT bus.
    pub fn new(sensors: SensorIndex, serial: &[SerialConfig]) -> Arc<Buses> {
        let mut names = vec!["mqtt".to_string()];
        let mut bus_of: Vec<Option<u16>> = vec![None; sensors.sensors().len()];
        for port in serial {
            let Ok(index) = u16::try_from(names.len()) else { break };
            names.push(format!("serial:{}", port.port.display()));
            for device in &port.devices {
                if let Some(bus) = bus_of.get_mut(device.sensor) {
                    bus.get_or_insert(index);
                }
            }
        }
        let bus_of: Vec<u16> = bus_of.into_iter().map(|bus| bus.unwrap_or(0)).collect();
        let tag_of = |sensor: &crate::config::SensorConfig| sensor.tags.get(GATEWAY_TAG).map(str::to_string);
        let mut behind: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
        for gateway in sensors.sensors().iter().filter_map(tag_of) {
            *behind.entry(gateway).or_default() += 1;
        }
        let mut gateway_index = std::collections::BTreeMap::new();
        for (gateway, _) in behind.into_iter().filter(|&(_, boxes)| boxes >= 2) {
            let Ok(index) = u16::try_from(names.len()) else { break };
            names.push(format!("gateway:{gateway}"));
            gateway_index.insert(gateway, index);
        }
        let gateway_of: Vec<Option<u16>> = sensors.sensors().iter().map(|s| tag_of(s).and_then(|g| gateway_index.get(&g).copied())).collect();
        let mut counts = vec![0; names.len()];
        for &bus in &bus_of {
            counts[usize::from(bus)] += 1;
        }
        for &gateway in gateway_of.iter().flatten() {
            counts[usize::from(gateway)] += 1;
        }
        let down_since = names.iter().map(|_| AtomicI64::new(0)).collect();
        let failures = names.iter().map(|_| Mutex::default()).collect();
        Arc::new(Buses { names, sensors, bus_of, gateway_of, counts, down_since, failures })
    }

    /// The ids of the sensors on a bus, in inventory order.
    fn sensors_on(&self, bus: usize) -> Vec<&str> {
        let on = |position: usize| usize::from(self.bus_of[position]) == bus || self.gateway_of[position].map(usize::from) == Some(bus);
        self.sensors.sensors().iter().enumerate().filter(|&(position, _)| on(position)).map(|(_, sensor)| &*sensor.id).collect()
    }

    /// Each gateway's bus, with the positions of the boxes behind it.
    pub fn gateways(self: &Arc<Self>) -> Vec<(BusHandle, Vec<usize>)> {
        let mut gateways: std::collections::BTreeMap<u16, Vec<usize>> = std::collections::BTreeMap::new();
        for (position, gateway) in self.gateway_of.iter().enumerate() {
            if let Some(gateway) = gateway {
                gateways.entry(*gateway).or_default().push(position);
            }
        }
        gateways.into_iter().map(|(index, boxes)| (BusHandle { buses: self.clone(), index: usize::from(index) }, boxes)).collect()
    }

    pub fn mqtt(self: &Arc<Self>) -> BusHandle {
        BusHandle { buses: self.clone(), index: 0 }
    }

    /// The bus of the `index`-th `[[serial]]` port.
    pub fn serial(self: &Arc<Self>, index: usize) -> BusHandle {
        BusHandle { buses: self.clone(), index: index + 1 }
    }

    fn set_down(&self, bus: usize, now_ms: i64) {
        if let Some(since) = self.down_since.get(bus) {
            // Keeps the first time: a bus that fails again while down is down since then.
            let _ = since.compare_exchange(0, now_ms.max(1), Ordering::SeqCst, Ordering::SeqCst);
        }
    }

    fn set_up(&self, bus: usize) {
        if let Some(since) = self.down_since.get(bus) {
            since.store(0, Ordering::SeqCst);
        }
        if let Some(Ok(mut failure)) = self.failures.get(bus).map(|f| f.lock()) {
            *failure = (String::new(), 0);
        }
    }

    /// The last failure reported for a bus and how many there were since it went down.
    fn failure(&self, bus: usize) -> (String, u64) {
        self.failures.get(bus).and_then(|f| f.lock().ok().map(|f| f.clone())).unwrap_or_default()
    }

    /// The position of `sensor` in the inventory.
    pub fn position(&self, sensor: &str) -> Option<usize> {
        self.sensors.position(sensor)
    }

    /// The name of the bus that is down under `sensor`, if it is.
    pub fn down_under(&self, sensor: &str) -> Option<&str> {
        let position = self.sensors.position(sensor)?;
        let bus = usize::from(*self.bus_of.get(position)?);
        let gateway = self.gateway_of.get(position).copied().flatten().map(usize::from);
        [Some(bus), gateway].into_iter().flatten().find(|&bus| self.down_since[bus].load(Ordering::SeqCst) != 0).map(|bus| self.names[bus].as_str())
    }
}

/// Sends a "bus down" alarm for each bus with sensors that has been down for `after`, and a
/// clear when it is back; checks every second until `shutdown`.
pub async fn watch(buses: Arc<Buses>, after: Duration, alerts: mpsc::Sender<Alert>, clock: crate::clock::Clock, shutdown: CancellationToken) {
    let mut alerted: Vec<Option<i64>> = vec![None; buses.names.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = clock.now();
        for (bus, name) in buses.names.iter().enumerate() {
            if buses.counts[bus] == 0 {
                continue;
            }
            let since = buses.down_since[bus].load(Ordering::SeqCst);
            let event = match (since, alerted[bus]) {
                (0, Some(down_since)) => {
                    alerted[bus] = None;
                    Some((Event::Cleared, down_since))
                }
                (since, None) if since != 0 && now - since >= after_ms => {
                    alerted[bus] = Some(since);
                    Some((Event::Fired, since))
                }
                _ => None,
            };
            let Some((event, since)) = event else { continue };
            let (reason, failures) = buses.failure(bus);
            let alert = bus_alert(name, &buses.sensors_on(bus), &buses.sensors, event, since, now, (&reason, failures));
            tracing::warn!(bus = %name, event = event.as_str(), sensors = buses.counts[bus], reason = %reason, failures, "bus alarm");
            if alerts.send(alert).await.is_err() {
                return;
            }
        }
    }
}

/// The device alarm for a bus: what is silent, since when, which sensors.
/// `(reason, failures)`: the last failure reported while down, and how many (0: none reported).
fn bus_alert(bus: &str, on_bus: &[&str], sensors: &SensorIndex, event: Event, since: i64, now: i64, (reason, failures): (&str, u64)) -> Alert {
    let first = on_bus.first().and_then(|id| sensors.get(id));
    let site = first.map_or_else(|| "gridwatch".to_string(), |s| s.place.site.to_string());
    let named: Vec<&str> = on_bus.iter().take(5).copied().collect();
    let more = if on_bus.len() > 5 { format!(" and {} more", on_bus.len() - 5) } else { String::new() };
    let list = format!("{}{more}", named.join(", "));
    let silent_secs = (now - since) / 1000;
    let (why_en, why_zh) = if failures > 0 {
        (format!(" Last error ({failures} failure(s) since it went down): {reason}."), format!("最近错误（中断以来失败 {failures} 次）：{reason}。"))
    } else {
        (String::new(), String::new())
    };
    let (en, zh, condition) = if event == Event::Cleared {
        (
            format!("{bus} is back after {silent_secs} s: readings from {} sensor(s) arrive again", on_bus.len()),
            format!("{bus} 已恢复（中断 {silent_secs} 秒），{} 个传感器重新上报", on_bus.len()),
            format!("{bus} back after {silent_secs} s"),
        )
    } else {
        (
            format!(
                "{bus} is down: no readings from its {} sensor(s) ({list}); their no-data alarms are held back. Check the adapter, cable or gateway.{why_en}",
                on_bus.len()
            ),
            format!("{bus} 通信中断：其下 {} 个传感器（{list}）无数据，单个无数据告警已合并。请检查转换器、线缆或网关。{why_zh}", on_bus.len()),
            if failures > 0 { format!("{bus} down for {silent_secs} s: {reason}") } else { format!("{bus} down for {silent_secs} s") },
        )
    };
    let (rule, title) = if bus.starts_with("gateway:") {
        (GATEWAY_DOWN_RULE, "A gateway is down: every box behind it is silent")
    } else {
        (BUS_DOWN_RULE, "A sensor bus or gateway is down")
    };
    let mut alert = Alert::device(rule, bus, &site, event, Severity::Warning, title, condition, now);
    alert.since = crate::clock::rfc3339(since);
    alert.value = silent_secs as f64;
    alert.unit = "s".into();
    alert.messages = [("en".to_string(), en), ("zh".to_string(), zh)].into_iter().collect();
    alert
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SensorConfig, SerialDevice};

    fn sensor(id: &str) -> SensorConfig {
        SensorConfig::test_tilt(id, "north-lane")
    }

    fn port(devices: &[usize]) -> SerialConfig {
        SerialConfig {
            port: "/dev/ttyUSB0".into(),
            baud: 9600,
            protocol: crate::config::SerialProtocol::Rion,
            timeout: Duration::from_millis(200),
            min_interval: Duration::ZERO,
            devices: devices
                .iter()
                .map(|&sensor| SerialDevice { sensor, profile: None, slave: 1, address: 1, device_id: String::new(), interval: Duration::from_secs(1) })
                .collect(),
        }
    }

    #[test]
    fn a_bus_down_explains_only_its_own_sensors() {
        let sensors: Arc<[SensorConfig]> = vec![sensor("house-01"), sensor("house-02"), sensor("canal-02")].into();
        let buses = Buses::new(SensorIndex::new(sensors), &[port(&[0, 1])]);
        assert_eq!(buses.down_under("house-01"), None);
        buses.serial(0).down(1_000);
        assert_eq!(buses.down_under("house-02"), Some("serial:/dev/ttyUSB0"));
        assert_eq!(buses.down_under("canal-02"), None, "canal-02 comes over MQTT");
        buses.serial(0).down(5_000);
        assert_eq!(buses.down_since[1].load(Ordering::SeqCst), 1_000, "down since the first failure");
        buses.mqtt().down(2_000);
        assert_eq!(buses.down_under("canal-02"), Some("mqtt"));
        buses.serial(0).up();
        assert_eq!(buses.down_under("house-01"), None);
    }

    #[test]
    fn a_failing_bus_alarm_names_the_last_failure_and_how_many() {
        let sensors: Arc<[SensorConfig]> = vec![sensor("house-01")].into();
        let buses = Buses::new(SensorIndex::new(sensors), &[]);
        buses.mqtt().failed(1_000, "connection reset");
        buses.mqtt().failed(2_000, "packet of 2097200 bytes over max_packet_bytes");
        assert_eq!(buses.down_since[0].load(Ordering::SeqCst), 1_000);
        let (reason, failures) = buses.failure(0);
        let alert = bus_alert("mqtt", &["house-01"], &buses.sensors, Event::Fired, 1_000, 9_000, (&reason, failures));
        assert!(alert.message().contains("Last error (2 failure(s) since it went down): packet of 2097200 bytes"), "{}", alert.message());
        buses.mqtt().up();
        assert_eq!(buses.failure(0), (String::new(), 0), "forgotten once up");
    }

    #[tokio::test]
    async fn one_alarm_per_bus_after_the_grace_time_and_one_clear() {
        let sensors: Arc<[SensorConfig]> = vec![sensor("house-01"), sensor("house-02")].into();
        let buses = Buses::new(SensorIndex::new(sensors), &[port(&[0, 1])]);
        let (tx, mut rx) = mpsc::channel(8);
        let clock = crate::clock::Clock::System;
        let stop = CancellationToken::new();
        tokio::spawn(watch(buses.clone(), Duration::from_millis(1500), tx, clock, stop.clone()));
        buses.serial(0).down(clock.now());
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert!(rx.try_recv().is_err(), "not before the grace time");
        let fired = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.unwrap().unwrap();
        assert_eq!(
            (fired.rule.as_str(), fired.sensor.as_str(), fired.event.as_str(), fired.audience.as_str()),
            (BUS_DOWN_RULE, "serial:/dev/ttyUSB0", "fired", "installer")
        );
        assert!(fired.message().contains("2 sensor(s) (house-01, house-02)"), "{}", fired.message());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(rx.try_recv().is_err(), "one alarm, not one a second");
        buses.serial(0).up();
        let cleared = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await.unwrap().unwrap();
        assert_eq!(cleared.event, Event::Cleared);
        stop.cancel();
    }
}

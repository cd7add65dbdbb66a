//! `[[serial]]`: serial ports (RS-485 adapters, USB serial) and the devices on each.
//!
//! ```toml
//! [[serial]]
//! port = "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"   # open ports by stable path
//! baud = 9600
//! protocol = "modbus"            # modbus | witmotion | rion | line
//! timeout_ms = 500               # per request (modbus, rion)
//! min_interval_ms = 1000         # stream protocols: at most one reading per device this often
//!
//! [[serial.device]]
//! sensor = "canal-02"            # from the inventory
//! profile = "sensecap-ph"        # modbus: a shipped profile or a profile file
//! slave = 1                      # modbus: overrides the profile's address
//! interval_secs = 60             # polled protocols
//! ```

use super::raw::{RawSerial, SerialProtocol};
use super::{Checker, SensorConfig};
use gridwatch_bridge::profile::{builtin_profiles, Profile};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SerialConfig {
    pub port: PathBuf,
    pub baud: u32,
    pub protocol: SerialProtocol,
    pub timeout: Duration,
    pub min_interval: Duration,
    pub devices: Vec<SerialDevice>,
}

#[derive(Debug, Clone)]
pub struct SerialDevice {
    /// Position of the sensor in the inventory.
    pub sensor: usize,
    pub profile: Option<Profile>,
    pub slave: u8,
    /// RION address.
    pub address: u8,
    /// Line protocol: the id the box sends.
    pub device_id: String,
    pub interval: Duration,
}

impl Checker<'_> {
    pub(super) fn serial(&mut self, raw: RawSerial, sensors: &[SensorConfig], base: &Path) -> Option<SerialConfig> {
        if raw.port.get_ref().is_empty() {
            self.error(raw.port.span(), Some("serial.port"), "must name a device, e.g. /dev/serial/by-id/…".into());
        }
        if *raw.baud.get_ref() == 0 {
            self.error(raw.baud.span(), Some("serial.baud"), "must be a baud rate such as 9600".into());
        }
        if *raw.timeout_ms.get_ref() == 0 {
            self.error(raw.timeout_ms.span(), Some("serial.timeout_ms"), "must be at least 1".into());
        }
        let polled = matches!(raw.protocol, SerialProtocol::Modbus | SerialProtocol::Rion);
        if polled && raw.devices.is_empty() {
            self.error(raw.port.span(), Some("serial.device"), "a polled port needs at least one [[serial.device]]".into());
        }
        if raw.protocol == SerialProtocol::Witmotion && raw.devices.len() != 1 {
            self.error(raw.port.span(), Some("serial.device"), "a WitMotion stream carries one device: give exactly one [[serial.device]]".into());
        }
        let mut devices = Vec::new();
        for device in raw.devices {
            let Some(sensor) = sensors.iter().position(|s| *s.id == **device.sensor.get_ref()) else {
                self.error(device.sensor.span(), Some("serial.device.sensor"), format!("no sensor `{}` in the inventory", device.sensor.get_ref()));
                continue;
            };
            if *device.interval_secs.get_ref() == 0 {
                self.error(device.interval_secs.span(), Some("serial.device.interval_secs"), "must be at least 1".into());
            }
            let profile = match (&device.profile, raw.protocol) {
                (Some(name), SerialProtocol::Modbus) => self.profile(name, base),
                (None, SerialProtocol::Modbus) => {
                    self.error(device.sensor.span(), Some("serial.device.profile"), "a Modbus device needs a `profile`".into());
                    None
                }
                (Some(name), _) => {
                    self.error(name.span(), Some("serial.device.profile"), "profiles are for Modbus devices".into());
                    None
                }
                (None, _) => None,
            };
            let slave = device.slave.as_ref().map(|s| *s.get_ref()).or(profile.as_ref().map(|p| p.slave)).unwrap_or(1);
            if let Some(s) = &device.slave {
                if !(1..=247).contains(s.get_ref()) {
                    self.error(s.span(), Some("serial.device.slave"), "a Modbus slave address is 1–247".into());
                }
            }
            devices.push(SerialDevice {
                sensor,
                profile,
                slave,
                address: device.address.unwrap_or(0),
                device_id: device.device_id.unwrap_or_else(|| sensors[sensor].id.to_string()),
                interval: Duration::from_secs(*device.interval_secs.get_ref()),
            });
        }
        Some(SerialConfig {
            port: PathBuf::from(raw.port.into_inner()),
            baud: raw.baud.into_inner(),
            protocol: raw.protocol,
            timeout: Duration::from_millis(raw.timeout_ms.into_inner()),
            min_interval: Duration::from_millis(raw.min_interval_ms.into_inner()),
            devices,
        })
    }

    fn profile(&mut self, name: &toml::Spanned<String>, base: &Path) -> Option<Profile> {
        let text = match builtin_profiles().into_iter().find(|(builtin, _)| builtin == name.get_ref()) {
            Some((_, text)) => text.to_string(),
            None => match std::fs::read_to_string(base.join(name.get_ref())) {
                Ok(text) => text,
                Err(error) => {
                    let shipped: Vec<&str> = builtin_profiles().into_iter().map(|(n, _)| n).collect();
                    self.error(
                        name.span(),
                        Some("serial.device.profile"),
                        format!("`{}` is neither a shipped profile ({}) nor a readable file: {error}", name.get_ref(), shipped.join(", ")),
                    );
                    return None;
                }
            },
        };
        match Profile::parse(name.get_ref(), &text) {
            Ok(profile) => Some(profile),
            Err(error) => {
                self.error(name.span(), Some("serial.device.profile"), error.to_string());
                None
            }
        }
    }
}

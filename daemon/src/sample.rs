//! A reading as it travels through the daemon: one message from one device.

use gridwatch_rules::Millis;

/// One message from one device. Tilt boxes send `x` and `y` together, probes several
/// quantities at once.
///
/// Invariant: every field value is finite (sources reject NaN and infinities).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Position of the sensor in the configured inventory (and in the rule engine).
    pub sensor: usize,
    /// Measurement time: the device's own `ts` when it sent one, else the receive time.
    pub ts: Millis,
    /// The device's sequence number, when it sends one.
    pub seq: Option<u64>,
    pub fields: Vec<(String, f64)>,
    /// Stamped by this box while its clock was not set (no device time): judged by the rules,
    /// never stored (it would land in 1970).
    pub clock_untrusted: bool,
    /// `ts` is the device's own time (else this box stamped it on receipt).
    pub own_time: bool,
    /// The device's own time, refused: further ahead of this box's clock than `[ingest]
    /// max_future_skew_secs` allows, or before 2000 or years behind (a clock never set). `ts` is then its
    /// arrival (it is judged, stored and shown there); the rules' clock checks (`clock_ahead`,
    /// `clock_behind`) still see this time. `None` for every other reading.
    pub refused_stamp: Option<Millis>,
    /// The district stream's sequence of a reading from a sensor with its own 4G link
    /// (`[cluster] sensors_via_hub`): where a standby evaluator would go on judging after it.
    pub hub_seq: Option<u64>,
}

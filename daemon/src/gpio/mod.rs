//! GPIO on the Raspberry Pi: a siren or relay for red incidents (`crate::sinks::siren`), a status LED
//! ([`led`]) and digital inputs — a tilt switch, a door contact — read as sensors with debounce
//! (`crate::sources::gpio_input`). Everything talks to pins through the small traits below: the `rpi` cargo feature
//! provides them with rppal; every other build (and the tests) uses [`MemoryPin`].

pub mod led;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A pin the daemon drives.
pub trait OutputPin: Send + 'static {
    fn set(&mut self, on: bool);
}

/// A pin the daemon reads.
pub trait InputPin: Send + 'static {
    fn is_high(&mut self) -> bool;
}

/// An in-memory pin: what a non-Pi build and the tests drive and read. Clones share the level.
#[derive(Debug, Clone, Default)]
pub struct MemoryPin(Arc<AtomicBool>);

impl MemoryPin {
    pub fn level(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl OutputPin for MemoryPin {
    fn set(&mut self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }
}

impl InputPin for MemoryPin {
    fn is_high(&mut self) -> bool {
        self.level()
    }
}

/// Opens a BCM pin as an output (rppal).
#[cfg(feature = "rpi")]
pub fn open_output(pin: u8) -> anyhow::Result<Box<dyn OutputPin>> {
    struct Rppal(rppal::gpio::OutputPin);
    impl OutputPin for Rppal {
        fn set(&mut self, on: bool) {
            if on {
                self.0.set_high();
            } else {
                self.0.set_low();
            }
        }
    }
    let mut output = rppal::gpio::Gpio::new()?.get(pin)?.into_output_low();
    output.set_reset_on_drop(true);
    Ok(Box::new(Rppal(output)))
}

/// Opens a BCM pin as an input with the pull-up on (contacts to ground).
#[cfg(feature = "rpi")]
pub fn open_input(pin: u8) -> anyhow::Result<Box<dyn InputPin>> {
    struct Rppal(rppal::gpio::InputPin);
    impl InputPin for Rppal {
        fn is_high(&mut self) -> bool {
            self.0.is_high()
        }
    }
    Ok(Box::new(Rppal(rppal::gpio::Gpio::new()?.get(pin)?.into_input_pullup())))
}

#[cfg(not(feature = "rpi"))]
pub fn open_output(pin: u8) -> anyhow::Result<Box<dyn OutputPin>> {
    anyhow::bail!("GPIO {pin}: this gridwatch was built without GPIO support (build with --features rpi)")
}

#[cfg(not(feature = "rpi"))]
pub fn open_input(pin: u8) -> anyhow::Result<Box<dyn InputPin>> {
    anyhow::bail!("GPIO {pin}: this gridwatch was built without GPIO support (build with --features rpi)")
}

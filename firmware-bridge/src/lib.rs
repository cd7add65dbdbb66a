//! gridwatch-bridge: serial bytes -> readings, as a pure library (no ports, no tokio, no
//! clock). The daemon owns the serial ports and the polling schedule; it feeds bytes in here
//! and gets named fields out.
//!
//! - [`modbus`]: Modbus RTU framing (CRC-16/MODBUS, read requests, responses and exceptions).
//! - [`profile`]: device profiles as data — which registers a probe has and how to decode them
//!   (f32 in all four byte orders, 16/32-bit integers with scale, value + decimal places).
//!   Shipped profiles are in `firmware-bridge/profiles/`.
//! - [`resolution`]: values rounded to what the probe resolves (a float32 register's 8.62 is
//!   8.62, not 8.619999885559082).
//! - [`witmotion`]: the WitMotion 0x55 stream (angles, acceleration), resynchronising.
//! - [`rion`]: RION-style 0x68 inclinometers (request/response, packed BCD).
//! - [`line`]: the gridwatch line protocol for our own firmware (encoder and decoder).
//! - [`fuzzing`]: one entry point per decoder for the fuzz targets and the corpus replay test.
//!
//! Every decoder is a state machine fed arbitrary bytes: it never panics, never keeps more than
//! one frame's worth of bytes, and never yields a value from a frame whose checksum failed.

pub mod fuzzing;
pub mod line;
pub mod modbus;
pub mod profile;
pub mod resolution;
pub mod rion;
pub mod witmotion;

/// The low byte of the sum of `bytes`: the checksum of WitMotion and RION frames.
pub(crate) fn sum8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// Bytes from spaced hex (`"55 53 00 …"`), for the table tests.
#[cfg(test)]
pub(crate) fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect()
}

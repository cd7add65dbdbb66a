//! Numbers as the device meant them. A probe that measures pH to 0.01 and sends it as a float32
//! register sends 8.62 as the nearest float32, 8.619999885559082; judged as it is, that value
//! falls on the wrong side of an exact limit (0.15 mg/L arrives as 0.15000000596, 0.02 as
//! 0.0199999996) and prints with sixteen digits. Rounding it to the probe's resolution gives
//! back the decimal the probe measured, as the `f64` nearest to it, so it compares, stores and
//! prints as that decimal.
//!
//! - [`to_resolution`]: to a multiple of a profile's `resolution` (0.01, 0.1, 0.5 …);
//! - [`to_significant`]: to a number of significant digits — [`F32_DIGITS`] is what a float32
//!   carries, the default for float32 registers whose profile declares no resolution.
//!
//! Both are pure arithmetic (no formatting, no allocation) and return non-finite values as they
//! are.

/// Significant decimal digits a float32 carries (24-bit mantissa: 7.2 digits). Any decimal of
/// at most 6 significant digits survives float32 and this rounding unchanged (7-digit ones
/// almost always; at worst the 7th digit moves by one).
pub const F32_DIGITS: i32 = 7;

/// Most decimal places a resolution may have (10^15 is still exact in an `f64`).
const MAX_DECIMALS: i32 = 15;

/// `value` rounded to the nearest multiple of `resolution` (> 0), as the `f64` nearest to that
/// decimal: `to_resolution(8.619999885559082, 0.01) == 8.62`.
pub fn to_resolution(value: f64, resolution: f64) -> f64 {
    if !(value.is_finite() && resolution.is_finite() && resolution > 0.0) {
        return value;
    }
    let steps = (value / resolution).round();
    to_decimals(steps * resolution, decimals_of(resolution))
}

/// `value` rounded to `digits` significant decimal digits:
/// `to_significant(0.15000000596046448, 7) == 0.15`.
pub fn to_significant(value: f64, digits: i32) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return value;
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = digits - 1 - magnitude;
    if decimals > MAX_DECIMALS {
        // Below 1e-9 or so: nothing a probe sends; leave it.
        return value;
    }
    if decimals >= 0 {
        to_decimals(value, decimals)
    } else {
        let unit = 10f64.powi(-decimals);
        (value / unit).round() * unit
    }
}

/// How many decimal places a resolution is written with (0.01 -> 2, 0.5 -> 1, 10 -> 0).
pub fn decimals_of(resolution: f64) -> i32 {
    (0..=MAX_DECIMALS).find(|&d| to_decimals(resolution, d) == resolution).unwrap_or(MAX_DECIMALS)
}

/// `value` rounded to `decimals` places (0..=15). Dividing an integer by a power of ten, both
/// exact in an `f64`, yields the correctly rounded quotient: the `f64` nearest to the decimal.
fn to_decimals(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals.clamp(0, MAX_DECIMALS));
    let scaled = (value * scale).round();
    if scaled.abs() >= 2f64.powi(53) {
        return value;
    }
    scaled / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn float32_values_come_back_as_the_decimals_the_probe_measured() {
        for (sent, resolution) in [(8.62f32, 0.01), (0.15, 0.01), (0.02, 0.01), (7.35, 0.01), (24.5, 0.1), (-3.7, 0.1), (1234.5, 0.1), (0.0, 0.01)] {
            let widened = f64::from(sent);
            let expected: f64 = sent.to_string().parse().unwrap();
            assert_eq!(to_resolution(widened, resolution), expected, "{sent} at {resolution}");
            assert_eq!(to_significant(widened, F32_DIGITS), expected, "{sent} to 7 digits");
        }
        assert_eq!(to_resolution(f64::from(8.62f32), 0.01).to_string(), "8.62");
        assert_eq!(to_significant(f64::from(0.02f32), F32_DIGITS).to_string(), "0.02");
    }

    #[test]
    fn a_resolution_that_is_not_a_power_of_ten_rounds_to_its_steps() {
        assert_eq!(to_resolution(7.26, 0.05), 7.25);
        assert_eq!(to_resolution(7.28, 0.05), 7.3);
        assert_eq!(to_resolution(12.74, 0.5), 12.5);
        assert_eq!(to_resolution(1234.0, 10.0), 1230.0);
    }

    #[test]
    fn scaled_integers_lose_their_binary_tails() {
        // 862 × 0.01 is 8.620000000000001 in binary floating point.
        assert_ne!(862.0 * 0.01, 8.62);
        assert_eq!(to_resolution(862.0 * 0.01, 0.01), 8.62);
        assert_eq!(to_resolution(-146.0 * 0.1, 0.1), -14.6);
    }

    #[test]
    fn decimals_are_counted_as_written() {
        assert_eq!(decimals_of(0.01), 2);
        assert_eq!(decimals_of(0.1), 1);
        assert_eq!(decimals_of(0.05), 2);
        assert_eq!(decimals_of(1.0), 0);
        assert_eq!(decimals_of(0.0054931640625), 13);
    }

    #[test]
    fn large_small_and_non_finite_values_are_safe() {
        assert_eq!(to_significant(123_456_789.0, F32_DIGITS), 123_456_800.0);
        assert_eq!(to_significant(1e-12, F32_DIGITS), 1e-12);
        assert!(to_significant(f64::NAN, F32_DIGITS).is_nan());
        assert_eq!(to_resolution(f64::INFINITY, 0.1), f64::INFINITY);
        assert_eq!(to_resolution(1e300, 0.01), 1e300);
    }

    proptest! {
        /// Any decimal of up to 6 significant digits survives float32 and the rounding.
        #[test]
        fn six_digit_decimals_survive_float32(mantissa in -999_999i64..=999_999, exponent in -6i32..=2) {
            let text = format!("{mantissa}e{exponent}");
            let meant: f64 = text.parse().unwrap();
            let register: f32 = text.parse().unwrap();
            prop_assert_eq!(to_significant(f64::from(register), F32_DIGITS), meant);
        }

        /// Rounding to a resolution never moves a value by more than half a step (plus the
        /// last bit), and the result prints with no more decimals than the resolution has.
        #[test]
        fn rounding_moves_less_than_half_a_step(value in -1e6f64..1e6, index in 0usize..4) {
            let resolution = [0.01, 0.1, 0.05, 1.0][index];
            let rounded = to_resolution(value, resolution);
            prop_assert!((rounded - value).abs() <= resolution / 2.0 * (1.0 + 1e-9), "{value} -> {rounded}");
            let printed = rounded.to_string();
            let decimals = printed.split('.').nth(1).map_or(0, str::len);
            prop_assert!(decimals as i32 <= decimals_of(resolution), "{printed}");
        }
    }
}

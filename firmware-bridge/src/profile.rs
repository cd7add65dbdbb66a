//! Device profiles as data: which registers a Modbus device has and how to read them. Profiles
//! are TOML files (shipped in `firmware-bridge/profiles/`, or the operator's own):
//!
//! ```toml
//! name = "sensecap-ph"
//! baud = 9600
//! slave = 1
//! function = "holding"          # or "input"
//!
//! [[field]]
//! name = "ph"
//! address = 0x0001
//! type = "i16"                  # u16 | i16 | u32 | i32 | f32 | u16_decimals
//! scale = 0.01                  # integers only: value = raw × scale
//! # order = "ABCD"              # 32-bit types: ABCD | CDAB | DCBA | BADC
//! # decimals_address = 0x0002   # u16_decimals: value = raw / 10^decimals
//! resolution = 0.01             # what the probe resolves: values are rounded to it
//! unit = ""
//! range = [0, 14]               # what it can physically read (probe rejects a misfit)
//! ```
//!
//! A profile is checked when loaded; decoding registers with it cannot fail, it only skips a
//! field whose registers were not read.
//!
//! Every value leaves [`Profile::decode`] as the decimal the device meant (see
//! [`crate::resolution`]): rounded to the field's `resolution` when the profile declares one;
//! otherwise a float32 to [`F32_DIGITS`] significant digits, an integer × scale to the scale's
//! decimal places, and a value + decimal places to those places.

use crate::resolution::{to_resolution, to_significant, F32_DIGITS};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Most registers one Modbus read may ask for.
pub const MAX_READ: u16 = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    Holding,
    Input,
}

/// Byte order of a 32-bit value over two registers, named by where bytes A (most significant)
/// to D land: ABCD is big-endian, DCBA fully little-endian, CDAB word-swapped, BADC byte-swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Order {
    ABCD,
    CDAB,
    DCBA,
    BADC,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    U16,
    I16,
    U32,
    I32,
    F32,
    /// A value register plus a register holding its number of decimal places.
    U16Decimals,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    pub address: u16,
    #[serde(rename = "type")]
    pub kind: Kind,
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default = "abcd")]
    pub order: Order,
    pub decimals_address: Option<u16>,
    /// The smallest step the probe resolves (0.01 for pH): the decoded value is rounded to a
    /// multiple of it. Without it, see [`FieldSpec::round`].
    #[serde(default)]
    pub resolution: Option<f64>,
    #[serde(default)]
    pub unit: String,
    /// What the quantity can physically read, `[low, high]` (pH `[0, 14]`): `gridwatch probe`
    /// rejects a profile whose values fall outside, so a DO probe is never offered as a pH probe.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
}

fn one() -> f64 {
    1.0
}

fn abcd() -> Order {
    Order::ABCD
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub baud: u32,
    pub slave: u8,
    pub function: Function,
    #[serde(rename = "field")]
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("profile {source_name}: {message}")]
pub struct ProfileError {
    pub source_name: String,
    pub message: String,
}

/// One read request covering several fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub address: u16,
    pub count: u16,
}

impl FieldSpec {
    fn width(&self) -> u16 {
        match self.kind {
            Kind::U16 | Kind::I16 | Kind::U16Decimals => 1,
            Kind::U32 | Kind::I32 | Kind::F32 => 2,
        }
    }

    /// A decoded value as the device meant it: rounded to the declared resolution, else a
    /// float32 to the digits it carries and a scaled integer to the scale's decimal places
    /// (862 × 0.01 is 8.620000000000001 in binary; the probe meant 8.62).
    fn round(&self, value: f64) -> f64 {
        match (self.resolution, self.kind) {
            (Some(resolution), _) => to_resolution(value, resolution),
            (None, Kind::F32) => to_significant(value, F32_DIGITS),
            (None, Kind::U16Decimals) => value,
            (None, _) => to_resolution(value, self.scale.abs()),
        }
    }

    /// Every register the field needs.
    fn registers(&self) -> Vec<u16> {
        let mut registers: Vec<u16> = (self.address..self.address.saturating_add(self.width())).collect();
        registers.extend(self.decimals_address);
        registers
    }
}

impl Profile {
    /// Parses and checks a profile; `source_name` labels errors.
    pub fn parse(source_name: &str, text: &str) -> Result<Profile, ProfileError> {
        let error = |message: String| ProfileError { source_name: source_name.to_string(), message };
        let profile: Profile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1).unwrap_or(0);
            error(format!("line {line}: {}", e.message().trim_end()))
        })?;
        if profile.slave == 0 || profile.slave > 247 {
            return Err(error(format!("slave {} is not a Modbus slave address (1–247)", profile.slave)));
        }
        if profile.fields.is_empty() {
            return Err(error("has no [[field]]".into()));
        }
        for field in &profile.fields {
            if !field.scale.is_finite() || field.scale == 0.0 {
                return Err(error(format!("field `{}`: scale must be a finite, non-zero number", field.name)));
            }
            if let Some(resolution) = field.resolution {
                if !(resolution.is_finite() && resolution > 0.0) {
                    return Err(error(format!("field `{}`: resolution must be a positive number, like 0.01", field.name)));
                }
            }
            if let Some([low, high]) = field.range {
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return Err(error(format!("field `{}`: range must be [low, high] with low < high, like [0, 14]", field.name)));
                }
            }
            if (field.kind == Kind::U16Decimals) != field.decimals_address.is_some() {
                return Err(error(format!("field `{}`: `decimals_address` goes with type u16_decimals, and only with it", field.name)));
            }
        }
        Ok(profile)
    }

    /// The reads that cover every field: registers grouped into blocks of at most
    /// [`MAX_READ`], starting a new block where a gap is wider than 8 registers.
    pub fn plan(&self) -> Vec<ReadBlock> {
        let mut registers: Vec<u16> = self.fields.iter().flat_map(FieldSpec::registers).collect();
        registers.sort_unstable();
        registers.dedup();
        let mut blocks: Vec<ReadBlock> = Vec::new();
        for register in registers {
            match blocks.last_mut() {
                Some(block) if register - (block.address + block.count - 1) <= 8 && register - block.address < MAX_READ => {
                    block.count = register - block.address + 1;
                }
                _ => blocks.push(ReadBlock { address: register, count: 1 }),
            }
        }
        blocks
    }

    /// Decodes registers read (address -> value) into named fields.
    pub fn decode(&self, registers: &BTreeMap<u16, u16>) -> Vec<(String, f64)> {
        self.fields.iter().filter_map(|field| Some((field.name.clone(), field.round(decode_field(field, registers)?)))).filter(|(_, v)| v.is_finite()).collect()
    }
}

fn decode_field(field: &FieldSpec, registers: &BTreeMap<u16, u16>) -> Option<f64> {
    let at = |offset: u16| registers.get(&field.address.checked_add(offset)?).copied();
    let bytes32 = || -> Option<[u8; 4]> {
        let [a, b] = at(0)?.to_be_bytes();
        let [c, d] = at(1)?.to_be_bytes();
        // Registers as they came: a b | c d. Reorder into ABCD.
        Some(match field.order {
            Order::ABCD => [a, b, c, d],
            Order::CDAB => [c, d, a, b],
            Order::DCBA => [d, c, b, a],
            Order::BADC => [b, a, d, c],
        })
    };
    Some(match field.kind {
        Kind::U16 => f64::from(at(0)?) * field.scale,
        Kind::I16 => f64::from(at(0)? as i16) * field.scale,
        Kind::U32 => f64::from(u32::from_be_bytes(bytes32()?)) * field.scale,
        Kind::I32 => f64::from(i32::from_be_bytes(bytes32()?)) * field.scale,
        Kind::F32 => f64::from(f32::from_be_bytes(bytes32()?)),
        Kind::U16Decimals => {
            let decimals = registers.get(&field.decimals_address?)?;
            f64::from(at(0)?) / 10f64.powi(i32::from((*decimals).min(9)))
        }
    })
}

/// How well values read from a device fit a profile: the evidence `gridwatch probe` ranks
/// candidate profiles by.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fit {
    /// Fields read whose value lies inside the field's declared range.
    pub in_range: usize,
    /// Fields read whose value lies outside it: (field, value, range).
    pub out_of_range: Vec<(String, f64, [f64; 2])>,
    /// Fields of the profile that were not read.
    pub missing: usize,
    /// Every value read is exactly zero: registers the device does not use, not a reading.
    pub all_zero: bool,
}

impl Fit {
    /// Every field was read and none is outside its range.
    pub fn plausible(&self) -> bool {
        self.out_of_range.is_empty() && self.missing == 0 && !self.all_zero
    }
}

impl Profile {
    /// Judges decoded values (as [`Profile::decode`] returns them) against the declared ranges.
    pub fn fit(&self, decoded: &[(String, f64)]) -> Fit {
        let mut fit = Fit { in_range: 0, out_of_range: Vec::new(), missing: 0, all_zero: !decoded.is_empty() && decoded.iter().all(|(_, v)| *v == 0.0) };
        for field in &self.fields {
            match (decoded.iter().find(|(name, _)| *name == field.name), field.range) {
                (None, _) => fit.missing += 1,
                (Some(&(_, value)), Some([low, high])) if (low..=high).contains(&value) => fit.in_range += 1,
                (Some(&(_, value)), Some(range)) => fit.out_of_range.push((field.name.clone(), value, range)),
                (Some(_), None) => {}
            }
        }
        fit
    }
}

/// The profiles shipped with gridwatch, by file name.
pub fn builtin_profiles() -> Vec<(&'static str, &'static str)> {
    vec![
        ("sensecap-ph", include_str!("../profiles/sensecap-ph.toml")),
        ("sensecap-do", include_str!("../profiles/sensecap-do.toml")),
        ("yosemitech-ph", include_str!("../profiles/yosemitech-ph.toml")),
        ("yosemitech-do", include_str!("../profiles/yosemitech-do.toml")),
        ("renke-do", include_str!("../profiles/renke-do.toml")),
        ("dfrobot-turbidity", include_str!("../profiles/dfrobot-turbidity.toml")),
        ("witmotion-rs485", include_str!("../profiles/witmotion-rs485.toml")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registers(start: u16, values: &[u16]) -> BTreeMap<u16, u16> {
        values.iter().enumerate().map(|(i, v)| (start + i as u16, *v)).collect()
    }

    fn f32_field(order: Order) -> Profile {
        Profile {
            name: "t".into(),
            description: String::new(),
            baud: 9600,
            slave: 1,
            function: Function::Holding,
            fields: vec![FieldSpec {
                name: "v".into(),
                address: 0,
                kind: Kind::F32,
                scale: 1.0,
                order,
                decimals_address: None,
                resolution: None,
                unit: String::new(),
                range: None,
            }],
        }
    }

    #[test]
    fn f32_in_all_four_byte_orders_from_the_domain_notes() {
        // 7.35 = 0x40EB3333.
        for (order, words) in
            [(Order::ABCD, [0x40EB, 0x3333]), (Order::CDAB, [0x3333, 0x40EB]), (Order::DCBA, [0x3333, 0xEB40]), (Order::BADC, [0xEB40, 0x3333])]
        {
            let fields = f32_field(order).decode(&registers(0, &words));
            assert!((fields[0].1 - 7.35).abs() < 1e-6, "{order:?}: {fields:?}");
        }
    }

    #[test]
    fn every_shipped_profile_parses_and_plans_small_reads() {
        for (name, text) in builtin_profiles() {
            let profile = Profile::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(profile.name, name);
            for block in profile.plan() {
                assert!(block.count >= 1 && block.count <= MAX_READ, "{name}: {block:?}");
            }
        }
    }

    #[test]
    fn sensecap_ph_decodes_the_domain_reply() {
        let profile = Profile::parse("sensecap-ph", include_str!("../profiles/sensecap-ph.toml")).unwrap();
        assert_eq!(profile.plan(), vec![ReadBlock { address: 0, count: 2 }]);
        let fields = profile.decode(&registers(0, &[0x0992, 0x02D1]));
        assert_eq!(fields, vec![("temperature".to_string(), 24.5), ("ph".to_string(), 7.21)]);
    }

    #[test]
    fn value_with_decimal_places_register() {
        let text = "name = \"x\"\nbaud = 9600\nslave = 1\nfunction = \"holding\"\n[[field]]\nname = \"turbidity\"\naddress = 0\ntype = \"u16_decimals\"\ndecimals_address = 1\n";
        let profile = Profile::parse("x", text).unwrap();
        assert_eq!(profile.decode(&registers(0, &[1234, 2])), vec![("turbidity".to_string(), 12.34)]);
    }

    #[test]
    fn far_apart_registers_become_separate_reads() {
        let profile = Profile::parse("yosemitech-ph", include_str!("../profiles/yosemitech-ph.toml")).unwrap();
        assert_eq!(profile.plan().len(), 2);
    }

    #[test]
    fn bad_profiles_say_what_is_wrong() {
        assert!(Profile::parse("p", "name = \"x\"\nbaud = 9600\nslave = 0\nfunction = \"holding\"\n[[field]]\nname = \"a\"\naddress = 0\ntype = \"u16\"\n")
            .unwrap_err()
            .to_string()
            .contains("slave 0"));
        let err = Profile::parse("p", "name = \"x\"\nbaud = 9600\nslave = 1\nfunction = \"holding\"\n[[field]]\nname = \"a\"\naddress = 0\ntype = \"float\"\n")
            .unwrap_err();
        assert!(err.to_string().starts_with("profile p: line 8:"), "{err}");
        assert!(Profile::parse(
            "p",
            "name = \"x\"\nbaud = 9600\nslave = 1\nfunction = \"holding\"\n[[field]]\nname = \"a\"\naddress = 0\ntype = \"u16\"\ndecimals_address = 1\n"
        )
        .is_err());
    }

    #[test]
    fn missing_registers_skip_the_field() {
        let profile = Profile::parse("sensecap-ph", include_str!("../profiles/sensecap-ph.toml")).unwrap();
        assert_eq!(profile.decode(&registers(1, &[0x02D1])), vec![("ph".to_string(), 7.21)]);
    }

    fn shipped(name: &str) -> Profile {
        let (_, text) = builtin_profiles().into_iter().find(|(n, _)| *n == name).unwrap();
        Profile::parse(name, text).unwrap()
    }

    /// A Renke DO probe's registers (three big-endian floats) read through other profiles.
    fn renke_registers(saturation: f32, dissolved: f32, temperature: f32) -> BTreeMap<u16, u16> {
        let words: Vec<u16> = [saturation, dissolved, temperature]
            .iter()
            .flat_map(|v| {
                let b = v.to_be_bytes();
                [u16::from_be_bytes([b[0], b[1]]), u16::from_be_bytes([b[2], b[3]])]
            })
            .collect();
        registers(0, &words)
    }

    #[test]
    fn a_do_probe_read_as_a_ph_probe_is_out_of_range() {
        let registers = renke_registers(95.3, 8.62, 21.4);
        let as_ph = shipped("sensecap-ph");
        let fit = as_ph.fit(&as_ph.decode(&registers));
        assert!(!fit.plausible(), "{fit:?}");
        assert!(fit.out_of_range.iter().any(|(name, _, _)| name == "temperature" || name == "ph"), "{fit:?}");
        let as_renke = shipped("renke-do");
        let fit = as_renke.fit(&as_renke.decode(&registers));
        assert!(fit.plausible(), "{fit:?}");
        assert_eq!(fit.in_range, 3);
    }

    #[test]
    fn unread_fields_and_all_zero_registers_are_not_plausible() {
        let profile = shipped("sensecap-ph");
        assert_eq!(profile.fit(&profile.decode(&registers(1, &[721]))).missing, 1);
        let zeros = profile.fit(&profile.decode(&registers(0, &[0, 0])));
        assert!(zeros.all_zero && !zeros.plausible(), "{zeros:?}");
        assert!(profile.fit(&profile.decode(&registers(0, &[2450, 721]))).plausible());
    }

    #[test]
    fn every_shipped_field_declares_its_range() {
        for (name, text) in builtin_profiles() {
            let profile = Profile::parse(name, text).unwrap();
            assert!(profile.fields.iter().all(|f| f.range.is_some()), "{name}");
        }
        let err = Profile::parse(
            "p",
            "name = \"x\"\nbaud = 9600\nslave = 1\nfunction = \"holding\"\n[[field]]\nname = \"a\"\naddress = 0\ntype = \"u16\"\nrange = [14, 0]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("low < high"), "{err}");
    }
}

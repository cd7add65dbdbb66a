//! Whole Modbus RTU answers (bytes as on the wire, CRC checked by the parser) through the
//! shipped profiles: every value comes out as the decimal the probe measured, in every byte
//! order, and prints as that decimal. The float32 frames hold the vendors' register layouts
//! (domain.md §2) with values on GB 3838 / GB 5749 limits, where a float32 tail flips a class.

use gridwatch_bridge::modbus::{parse_read_response, ReadFunction, Response};
use gridwatch_bridge::profile::{builtin_profiles, Profile};
use std::collections::BTreeMap;

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect()
}

fn shipped(name: &str) -> Profile {
    let (_, text) = builtin_profiles().into_iter().find(|(n, _)| *n == name).expect("shipped profile");
    Profile::parse(name, text).expect("shipped profile parses")
}

/// The registers of one answer to a read at `address`, as the daemon collects them.
fn registers(frame: &str, slave: u8, function: ReadFunction, address: u16) -> BTreeMap<u16, u16> {
    let bytes = hex(frame);
    let count = u16::from(bytes[2]) / 2;
    match parse_read_response(&bytes, slave, function, count) {
        Ok(Some(Response::Registers(values))) => (address..).zip(values).collect(),
        other => panic!("{frame}: {other:?}"),
    }
}

/// Each decoded field's value and how it prints.
fn printed(fields: &[(String, f64)]) -> Vec<(String, String)> {
    fields.iter().map(|(name, value)| (name.clone(), value.to_string())).collect()
}

fn expect(fields: &[(String, f64)], expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> = expected.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    assert_eq!(printed(fields), expected);
    for ((_, value), (_, text)) in fields.iter().zip(&expected) {
        assert_eq!(text.parse::<f64>(), Ok(*value), "the value is the decimal, not just printed as it");
    }
}

#[test]
fn shipped_float32_profiles_give_the_decimals_the_probes_measured() {
    // (profile, slave, function, start address, answer, fields as printed)
    type Case<'a> = (&'a str, u8, ReadFunction, u16, &'a str, &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        // Renke DO, ABCD: 96.3 %, 8.62 mg/L (8.619999885559082 as float32), 21.4 °C.
        (
            "renke-do",
            1,
            ReadFunction::Holding,
            0x0000,
            "01 03 0C 42 C0 99 9A 41 09 EB 85 41 AB 33 33 24 7F",
            &[("do_saturation", "96.3"), ("do", "8.62"), ("temperature", "21.4")],
        ),
        // Yosemitech DO, DCBA: 21.4 °C, 8.62 mg/L.
        ("yosemitech-do", 1, ReadFunction::Holding, 0x2600, "01 03 08 33 33 AB 41 85 EB 09 41 6F 59", &[("temperature", "21.4"), ("do", "8.62")]),
        // Yosemitech pH, DCBA: 7.35 (7.349999904632568 as float32); its temperature is another read.
        ("yosemitech-ph", 1, ReadFunction::Holding, 0x2800, "01 03 04 33 33 EB 40 4A 78", &[("ph", "7.35")]),
        // SenseCAP DO, i16 × 0.01: 862 × 0.01 is 8.620000000000001 in binary.
        ("sensecap-do", 55, ReadFunction::Holding, 0x0100, "37 03 04 00 D6 03 5E CC C0", &[("temperature", "21.4"), ("do", "8.62")]),
    ];
    for (name, slave, function, address, frame, expected) in cases {
        let fields = shipped(name).decode(&registers(frame, slave, function, address));
        assert_eq!(fields.len(), expected.len(), "{name}: {fields:?}");
        expect(&fields, expected);
    }
}

#[test]
fn the_domain_notes_sensecap_ph_answer_is_exact() {
    let fields = shipped("sensecap-ph").decode(&registers("01 03 04 09 92 02 D1 99 7E", 1, ReadFunction::Holding, 0));
    expect(&fields, &[("temperature", "24.5"), ("ph", "7.21")]);
}

/// Ammonia 0.15 and free chlorine 0.02 — class-I and GB 5749 limits — in each byte order,
/// with a declared resolution and without one (float32 default: 7 significant digits).
#[test]
fn limit_values_in_all_four_byte_orders_land_on_the_limit() {
    let answers = [
        ("ABCD", "01 04 08 3E 19 99 9A 3C A3 D7 0A 48 04"),
        ("CDAB", "01 04 08 99 9A 3E 19 D7 0A 3C A3 86 D1"),
        ("DCBA", "01 04 08 9A 99 19 3E 0A D7 A3 3C 44 DA"),
        ("BADC", "01 04 08 19 3E 9A 99 A3 3C 0A D7 9F F8"),
    ];
    for (order, frame) in answers {
        for resolution in ["resolution = 0.01\n", ""] {
            let text = format!(
                "name = \"p\"\nbaud = 9600\nslave = 1\nfunction = \"input\"\n\
                 [[field]]\nname = \"nh3n\"\naddress = 0\ntype = \"f32\"\norder = \"{order}\"\n{resolution}\
                 [[field]]\nname = \"free_chlorine\"\naddress = 2\ntype = \"f32\"\norder = \"{order}\"\n{resolution}"
            );
            let profile = Profile::parse("p", &text).unwrap();
            let fields = profile.decode(&registers(frame, 1, ReadFunction::Input, 0));
            expect(&fields, &[("nh3n", "0.15"), ("free_chlorine", "0.02")]);
            assert!(fields[0].1 <= 0.15 && fields[1].1 >= 0.02, "{order} {resolution:?}: on the limit, not past it");
        }
    }
}

#[test]
fn a_coarser_resolution_rounds_to_its_steps() {
    let text = "name = \"p\"\nbaud = 9600\nslave = 1\nfunction = \"holding\"\n[[field]]\nname = \"do\"\naddress = 0\ntype = \"f32\"\nresolution = 0.1\n";
    // 8.62 in ABCD (from the Renke answer above).
    let fields = Profile::parse("p", text).unwrap().decode(&registers("01 03 04 41 09 EB 85 B1 5E", 1, ReadFunction::Holding, 0));
    expect(&fields, &[("do", "8.6")]);
}

#[test]
fn a_bad_resolution_is_refused_when_the_profile_is_loaded() {
    for bad in ["0", "-0.01", "nan"] {
        let text = format!(
            "name = \"p\"\nbaud = 9600\nslave = 1\nfunction = \"holding\"\n[[field]]\nname = \"do\"\naddress = 0\ntype = \"f32\"\nresolution = {bad}\n"
        );
        let error = Profile::parse("p", &text).expect_err(bad);
        assert!(error.to_string().contains("resolution must be a positive number"), "{error}");
    }
}

#[test]
fn every_shipped_probe_field_declares_its_resolution() {
    for (name, text) in builtin_profiles() {
        for field in Profile::parse(name, text).unwrap().fields {
            assert!(field.resolution.is_some(), "{name}: field `{}` has no resolution", field.name);
        }
    }
}

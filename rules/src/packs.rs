//! The default rule packs shipped inside the binary (the TOML files in `rules/packs/`).
//! They are ordinary rule files: operators can read them, copy them and override them.
//!
//! The tests (`packs/tests.rs`) are built from the standards' own tables: for every indicator,
//! class and boundary, a value on the limit or just inside must stay quiet (or at the lower
//! level) and a value just outside must reach the level, also when it arrives as a float32.

use crate::load::RuleSource;

/// (pack name, file text) for every shipped pack.
const PACKS: &[(&str, &str)] = &[
    ("tilt", include_str!("../packs/tilt.toml")),
    ("water-gb3838", include_str!("../packs/water-gb3838.toml")),
    ("drinking-gb5749", include_str!("../packs/drinking-gb5749.toml")),
];

/// The shipped packs as rule sources named `builtin:<pack>`.
pub fn builtin_packs() -> Vec<RuleSource> {
    PACKS.iter().map(|(name, text)| RuleSource { name: format!("builtin:{name}"), text: (*text).to_string() }).collect()
}

#[cfg(test)]
mod tests;

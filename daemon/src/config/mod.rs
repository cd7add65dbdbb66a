//! The daemon's configuration: loaded from TOML in two phases — [`raw`] mirrors the file, then
//! [`Config::parse`] checks it into typed values (`types.rs`). Every problem is reported with the
//! file, line, column and key (all semantic problems at once; a TOML syntax or type error stops
//! at the first). Relative paths are resolved against the config file's directory.
//!
//! The checks are split by section in `check/`; `[[serial]]` and `[cluster]` keep their types,
//! raw form and checks together in their own files.
//!
//! The annotated example is `gridwatch.example.toml` at the top of the repository; the reference
//! is docs/configuration.md.

mod check;
mod cluster;
mod raw;
mod sensor_index;
mod serial;
mod types;
pub mod wording;

pub use check::{check_topic_filter, sink_names, tls_client_config};
pub use cluster::{is_token, ClusterConfig};
pub use raw::{SerialProtocol, DEFAULT_PHOTO_MAX_BYTES};
pub use sensor_index::SensorIndex;
pub use serial::{SerialConfig, SerialDevice};
// Every checked type is `crate::config::…`, as before the types had a file of their own.
pub use types::*;

use check::Checker;
use raw::RawConfig;
use std::path::Path;

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config::parse(&path.display().to_string(), &text, base)?;
        config.source = Some(path.to_path_buf());
        Ok(config)
    }

    /// Checks configuration text; `name` labels diagnostics, `base` resolves relative paths.
    pub fn parse(name: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        Config::parse_with_roster(name, text, base, None)
    }

    /// [`Config::parse`] with the roster's text given (`roster_text`) instead of read from the
    /// file `[dispatch] roster` names: the last good copy's.
    pub fn parse_with_roster(name: &str, text: &str, base: &Path, roster_text: Option<&str>) -> Result<Config, ConfigError> {
        let mut check = Checker { name, text, diagnostics: Vec::new(), failover_spans: Vec::new(), roster_text };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                check.error(err.span().unwrap_or(0..0), None, err.message().trim_end().to_string());
                return Err(ConfigError::Invalid(check.diagnostics));
            }
        };
        let config = check.config(raw, base);
        if check.diagnostics.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(check.diagnostics))
        }
    }

    /// Position of a sensor in the inventory, by id.
    pub fn sensor_index(&self, id: &str) -> Option<usize> {
        self.sensors.iter().position(|s| &*s.id == id)
    }
}

#[cfg(test)]
mod tests;

//! `gridwatch validate`: loads the configuration and its rules, opening nothing else, and says
//! what it found.

use super::{load_config, EX_CONFIG};
use crate::rule_files;
use std::path::Path;
use std::process::ExitCode;

/// Prints `ok: …` (and a warning for each rule that matches no sensor) and exits 0, or prints
/// every error and exits 78.
pub fn command(config: &Path) -> ExitCode {
    let loaded = match load_config(config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match rule_files::load(&loaded.rules.paths, loaded.rules.builtin_packs) {
        Ok((rules, files)) => {
            println!("ok: {} sensors, {} serial ports, {} rules in {files} files", loaded.sensors.len(), loaded.serial.len(), rules.rules.len());
            for warning in crate::reload::rule_scope_warnings(&rules, &loaded.sensors) {
                eprintln!("warning: {warning}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

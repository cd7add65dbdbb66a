//! `gridwatch run`: the daemon, on the configuration and rules [`crate::last_good::prepare`]
//! loaded (or their last good copy), until SIGTERM.

use super::{block_on, cancelled_on_stop_signal, EX_CONFIG};
use crate::clock::Clock;
use crate::daemon::{self, Boot};
use crate::last_good::LastGood;
use crate::metrics::Metrics;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Runs the daemon; exit code 78 when neither the configuration nor a last good copy loads.
pub fn command(config: &Path, last_good: Option<PathBuf>) -> ExitCode {
    let last_good = LastGood::locate(last_good);
    match crate::last_good::prepare(config, last_good.as_ref()) {
        Ok(prepared) => {
            let save = prepared.to_save.and_then(|saved| Some((last_good.clone()?, saved)));
            let boot = Boot { rules: Some((prepared.rules, prepared.rule_files)), degraded: prepared.degraded, save, last_good };
            block_on(async move { daemon::run_with(prepared.config, boot, Clock::System, Arc::new(Metrics::new()), cancelled_on_stop_signal()).await })
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

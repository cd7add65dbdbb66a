//! `gridwatch hub` (feature `cluster`): the district hub, until SIGTERM (docs/district.md).

use super::{block_on, cancelled_on_stop_signal};
use crate::cluster::hub::{self, HubOptions};
use std::process::ExitCode;

/// Runs the hub with `options`.
pub fn command(options: HubOptions) -> ExitCode {
    block_on(async move { hub::run(options, cancelled_on_stop_signal()).await })
}

/// This hub's name when none is given: the host's name and the process id.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "hub" } else { host.as_str() }, std::process::id())
}

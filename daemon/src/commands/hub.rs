//! `gridwatch hub` (feature `cluster`): the district hub, until SIGTERM (docs/district.md).

use super::{block_on, cancelled_on_stop_signal};
use crate::cluster::hub::{self, HubOptions};
use std::process::ExitCode;

/// Runs the hub with `options`.
pub fn command(options: HubOptions) -> ExitCode {
    block_on(async move { hub::run(options, cancelled_on_stop_signal()).await })
}

//! Every subcommand's body: `main` parses the command line ([`cli`]) and hands each command to
//! its module here, which returns the process's exit code.
//!
//! Exit codes: 0 done, 1 failure, 69 the daemon did not answer, 78 invalid configuration or
//! rules (EX_CONFIG).

pub mod bridge;
pub mod cli;
pub mod demo;
#[cfg(feature = "cluster")]
pub mod hub;
pub mod incidents;
pub mod installer;
pub mod manual;
pub mod probe;
pub mod replay;
pub mod report;
pub mod rules;
pub mod run;
pub mod selftest;
pub mod validate;

use crate::config::{Config, ConfigError};
use crate::rule_files::RuleLoadError;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

/// sysexits' EX_CONFIG: the configuration or the rules are invalid.
pub const EX_CONFIG: u8 = 78;
/// sysexits' EX_UNAVAILABLE: the daemon did not answer.
pub const EX_UNAVAILABLE: u8 = 69;

/// Loads a configuration, or prints why not and gives exit code 78.
pub fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        match error {
            ConfigError::Invalid(_) => eprintln!("{error}"),
            ConfigError::Read { .. } => eprintln!("error: {error}"),
        }
        ExitCode::from(EX_CONFIG)
    })
}

/// Prints a command's text, or its error with exit code 1.
pub fn print_or_fail(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `task` on a multi-threaded runtime; its error is printed and chooses the exit code.
pub fn block_on(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<installer::Unreachable>().is_some() {
                return ExitCode::from(EX_UNAVAILABLE);
            }
            match error.downcast_ref::<RuleLoadError>() {
                Some(RuleLoadError::Invalid(_)) => ExitCode::from(EX_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// A token cancelled on SIGTERM (systemd stop) or SIGINT (Ctrl-C). Call inside the runtime.
pub fn cancelled_on_stop_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        signals.cancel();
    });
    shutdown
}

/// SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn wait_for_stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(error = %error, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

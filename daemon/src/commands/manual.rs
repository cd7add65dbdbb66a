//! `gridwatch completions SHELL` and `gridwatch man`: the shell completions and the manual
//! page, both generated from [`super::cli::Cli`].

use super::cli::Cli;
use clap::CommandFactory;
use std::process::ExitCode;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(shell, &mut Cli::command(), "gridwatch", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Prints the manual page (roff).
pub fn man() -> ExitCode {
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

//! The `gridwatch` binary: parse the command line, set up logging, run the command.
//! Exit codes: 0 done, 1 failure, 78 invalid configuration or rules (EX_CONFIG).

use anyhow::Context;
use clap::CommandFactory;
use clap::Parser;
use gridwatch::commands::cli::{Baud, Cli, Command, Output, RulesCommand};
use gridwatch::commands::demo;
use gridwatch::commands::rules;
use gridwatch::config::{Config, ConfigError};
use gridwatch::rule_files::{self, RuleLoadError};
use gridwatch::{clock::Clock, daemon, metrics::Metrics};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const EX_CONFIG: u8 = 78;
/// sysexits' EX_UNAVAILABLE: the daemon did not answer.
const EX_UNAVAILABLE: u8 = 69;

/// `status` found the daemon degraded: exit code 1 after printing the status.
#[derive(Debug, thiserror::Error)]
#[error("the daemon is degraded")]
struct Degraded;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    gridwatch::logging::init(cli.log_format, matches!(cli.command, Command::Demo { .. }));

    let output = cli.output;
    match cli.command {
        Command::Rules { command: RulesCommand::Check { paths, with_builtin } } => rules::check(&paths, with_builtin || paths.is_empty()),
        Command::Rules { command: RulesCommand::Test { data, rules, from, to } } => print_or_fail(rules::test(&data, &rules, from, to, output)),
        Command::Rules { command: RulesCommand::Explain { sensor, rules } } => print_or_fail(rules::explain(&sensor, &rules, output)),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "gridwatch", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, last_good } => {
            let last_good = gridwatch::last_good::LastGood::locate(last_good);
            match gridwatch::last_good::prepare(&config, last_good.as_ref()) {
                Ok(prepared) => {
                    let save = prepared.to_save.and_then(|saved| Some((last_good?, saved)));
                    let boot = daemon::Boot { rules: Some((prepared.rules, prepared.rule_files)), degraded: prepared.degraded, save };
                    block_on(run_daemon(prepared.config, boot))
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::from(EX_CONFIG)
                }
            }
        }
        Command::Validate { config } => match load_config(&config) {
            Ok(loaded) => match rule_files::load(&loaded.rules.paths, loaded.rules.builtin_packs) {
                Ok((rules, files)) => {
                    println!("ok: {} sensors, {} serial ports, {} rules in {files} files", loaded.sensors.len(), loaded.serial.len(), rules.rules.len());
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(EX_CONFIG)
                }
            },
            Err(code) => code,
        },
        Command::Bridge { config } => match load_config(&config) {
            Ok(config) => block_on(async move {
                let shutdown = CancellationToken::new();
                let signals = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_stop_signal().await;
                    signals.cancel();
                });
                gridwatch::commands::bridge::run(config, shutdown).await
            }),
            Err(code) => code,
        },
        Command::Incidents { config, command } => match load_config(&config) {
            Ok(config) => print_or_fail(gridwatch::commands::incidents::run(&config, command, output)),
            Err(code) => code,
        },
        Command::Report { config, from, to, last, format } => match load_config(&config) {
            Ok(config) => print_or_fail(gridwatch::report::cli(&config, from.map(|from| (from, to.unwrap_or(from))), last.as_deref(), &format)),
            Err(code) => code,
        },
        Command::Selftest { config } => match load_config(&config) {
            Ok(loaded) => match rule_files::load(&loaded.rules.paths, loaded.rules.builtin_packs) {
                Ok((rules, _)) => block_on(async move {
                    let checks = gridwatch::commands::selftest::run(&loaded, rules.rules.len()).await;
                    print!("{}", output.render(|| gridwatch::commands::selftest::report(&checks), || serde_json::to_value(&checks).unwrap_or_default()));
                    anyhow::ensure!(checks.iter().all(|c| c.passed), "selftest failed");
                    Ok(())
                }),
                Err(error) => {
                    eprintln!("{error}");
                    ExitCode::from(EX_CONFIG)
                }
            },
            Err(code) => code,
        },
        Command::Status { config } => match load_config(&config) {
            Ok(config) => block_on(async move {
                let (text, degraded) = gridwatch::commands::installer::status(&config, output).await?;
                print!("{text}");
                anyhow::ensure!(!degraded, Degraded);
                Ok(())
            }),
            Err(code) => code,
        },
        Command::Watch { config, sensors, building, once } => match load_config(&config) {
            Ok(config) => block_on(async move {
                loop {
                    let table = gridwatch::commands::installer::watch_table(&config, &sensors, building.as_deref(), output).await?;
                    if once || output == Output::Json {
                        print!("{table}");
                        return Ok(());
                    }
                    // Clear the screen and redraw in place.
                    print!("\x1b[H\x1b[2J{table}\n(every 2 s; Ctrl-C to stop)\n");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                }
            }),
            Err(code) => code,
        },
        Command::Calibrate { config, sensor, window, by } => match load_config(&config) {
            Ok(config) => block_on(async move {
                print!("{}", gridwatch::commands::installer::calibrate(&config, &sensor, window, &by).await?);
                Ok(())
            }),
            Err(code) => code,
        },
        Command::Probe { port, baud, profiles } => {
            let bauds: Vec<u32> = match baud {
                Baud::Auto => gridwatch::commands::probe::AUTO_BAUDS.to_vec(),
                Baud::Fixed(rate) => vec![rate],
            };
            block_on(async move {
                let mut own = Vec::new();
                for path in &profiles {
                    let text = std::fs::read_to_string(path).with_context(|| format!("reading profile {}", path.display()))?;
                    own.push(gridwatch_bridge::profile::Profile::parse(&path.display().to_string(), &text)?);
                }
                let found = gridwatch::commands::probe::probe(&port, &bauds, &gridwatch::commands::probe::profiles_to_try(own)).await?;
                print!("{}", output.render(|| gridwatch::commands::probe::report(&port, &found), || serde_json::to_value(&found).unwrap_or_default()));
                if found.is_empty() {
                    anyhow::bail!("no device found on {}", port.display());
                }
                Ok(())
            })
        }
        #[cfg(feature = "cluster")]
        Command::Hub { nats_urls, postgres, webhook, lease_ttl, replicas } => block_on(async move {
            let shutdown = CancellationToken::new();
            let signals = shutdown.clone();
            tokio::spawn(async move {
                wait_for_stop_signal().await;
                signals.cancel();
            });
            gridwatch::cluster::hub::run(gridwatch::cluster::hub::HubOptions { nats_urls, postgres, webhook, lease_ttl, replicas }, shutdown).await
        }),
        Command::Demo { duration, speed, state_dir, http_listen } => block_on(demo::run(demo::DemoOptions { duration, speed, state_dir, http_listen })),
    }
}

/// Loads a configuration, or prints why not and gives exit code 78.
fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        match error {
            ConfigError::Invalid(_) => eprintln!("{error}"),
            ConfigError::Read { .. } => eprintln!("error: {error}"),
        }
        ExitCode::from(EX_CONFIG)
    })
}

fn print_or_fail(result: anyhow::Result<String>) -> ExitCode {
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

async fn run_daemon(config: Config, boot: daemon::Boot) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        signals.cancel();
    });
    daemon::run_with(config, boot, Clock::System, Arc::new(Metrics::new()), shutdown).await
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

/// glibc gives threads that allocate at the same time arenas of their own (up to eight per
/// core), each keeping freed memory apart. For a daemon whose threads mostly wait, one shared
/// arena is as fast and keeps about 5 MB less resident at 10,000 sensors (docs/BENCHMARKS.md).
/// `MALLOC_ARENA_MAX` in the environment still wins. The workspace's only `unsafe`: a C call.
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator tuning parameter, and this runs first in
        // main, before any other thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn block_on(task: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
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
            if error.downcast_ref::<gridwatch::commands::installer::Unreachable>().is_some() {
                return ExitCode::from(EX_UNAVAILABLE);
            }
            match error.downcast_ref::<RuleLoadError>() {
                Some(RuleLoadError::Invalid(_)) => ExitCode::from(EX_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

//! The `gridwatch` binary: parse the command line, set up logging, hand the command to its
//! module in [`gridwatch::commands`], exit with the code it returns (see there).

use clap::Parser;
use gridwatch::commands::cli::{Cli, Command};
use gridwatch::commands::{self, demo::DemoOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    gridwatch::logging::init(cli.log_format, matches!(cli.command, Command::Demo { .. }));

    let output = cli.output;
    match cli.command {
        Command::Run { config, last_good } => commands::run::command(&config, last_good),
        Command::Validate { config } => commands::validate::command(&config),
        Command::Demo { duration, speed, state_dir, http_listen } => commands::demo::command(DemoOptions { duration, speed, state_dir, http_listen }),
        Command::Bridge { config } => commands::bridge::command(&config),
        #[cfg(feature = "cluster")]
        Command::Hub { command: Some(command), .. } => commands::hub::subcommand(command),
        #[cfg(feature = "cluster")]
        Command::Hub {
            command: None,
            nats_urls,
            postgres,
            webhook,
            lease_ttl,
            replicas,
            listen,
            hub_lease,
            name,
            influx,
            influx_org,
            influx_bucket,
            ack_secret_file,
            link_secret_file,
            view_token_file,
            mqtt_listen,
            mqtt_passwords,
            mqtt_anonymous: _,
            mqtt_tls_cert,
            mqtt_tls_key,
        } => {
            let secrets = match commands::hub::secrets(ack_secret_file.as_deref(), link_secret_file.as_deref()) {
                Ok(secrets) => secrets,
                Err(code) => return code,
            };
            let view_token = match commands::hub::view_token(view_token_file.as_deref()) {
                Ok(token) => token,
                Err(code) => return code,
            };
            let name = name.unwrap_or_else(commands::hub::default_name);
            let (postgres, webhook) = (postgres.unwrap_or_default(), webhook.unwrap_or_default());
            let token = std::env::var("GRIDWATCH_HUB_INFLUX_TOKEN").unwrap_or_default();
            let influx = influx.map(|url| gridwatch::cluster::hub::influx::InfluxTarget { url, org: influx_org, bucket: influx_bucket, token });
            commands::hub::command(gridwatch::cluster::hub::HubOptions {
                nats_urls,
                postgres,
                webhook,
                lease_ttl,
                replicas,
                listen,
                hub_lease,
                name,
                influx,
                secrets,
                view_token,
                mqtt_listen,
                mqtt_passwords,
                mqtt_tls: mqtt_tls_cert.zip(mqtt_tls_key),
            })
        }
        Command::Rules { command } => commands::rules::command(command, output),
        Command::Incidents { config, command } => commands::incidents::command(&config, command, output),
        Command::Report { config, from, to, last, format } => commands::report::command(&config, from, to, last.as_deref(), &format),
        Command::Selftest { config } => commands::selftest::command(&config, output),
        Command::Status { config } => commands::installer::status_command(&config, output),
        Command::Watch { config, sensors, building, once } => commands::installer::watch_command(&config, &sensors, building.as_deref(), once, output),
        Command::Calibrate { config, sensor, window, by, even_in_alarm } => {
            commands::installer::calibrate_command(&config, &sensor, window, &by, even_in_alarm)
        }
        Command::Probe { port, baud, profiles } => commands::probe::command(port, baud, profiles, output),
        Command::Completions { shell } => commands::manual::completions(shell),
        Command::Man => commands::manual::man(),
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

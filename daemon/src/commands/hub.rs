//! `gridwatch hub` (feature `cluster`): the district hub, until SIGTERM, and its commands
//! (`hub roster put`) (docs/district.md).

use super::cli::{HubCommand, RosterCommand};
use super::{block_on, cancelled_on_stop_signal, EX_CONFIG};
use crate::cluster::hub::pages::DistrictSecrets;
use crate::cluster::hub::{self, HubOptions};
use crate::dispatch::roster::RosterErrors;
use std::path::Path;
use std::process::ExitCode;

/// Runs the hub with `options`.
pub fn command(options: HubOptions) -> ExitCode {
    block_on(async move { hub::run(options, cancelled_on_stop_signal()).await })
}

/// The district's secrets from their files (`--ack-secret-file`, `--link-secret-file`; the link
/// secret is the ack secret when only that is given); exit 78 when a file cannot be read or a
/// secret is too short.
pub fn secrets(ack_file: Option<&Path>, link_file: Option<&Path>) -> Result<Option<DistrictSecrets>, ExitCode> {
    let Some(ack_file) = ack_file else { return Ok(None) };
    let read = |file: &Path| {
        std::fs::read_to_string(file).map(|text| text.trim().to_string()).map_err(|error| {
            eprintln!("error: cannot read the secret file {}: {error}", file.display());
            ExitCode::from(EX_CONFIG)
        })
    };
    let ack = read(ack_file)?;
    let link = match link_file {
        Some(file) => read(file)?,
        None => ack.clone(),
    };
    DistrictSecrets::new(&link, &ack).map(Some).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EX_CONFIG)
    })
}

/// The board's and report's token from its file (`--view-token-file`); exit 78 when the file
/// cannot be read or the token is shorter than 16 characters (it is all that guards the
/// district's incidents and places).
pub fn view_token(file: Option<&Path>) -> Result<Option<String>, ExitCode> {
    let Some(file) = file else { return Ok(None) };
    let token = std::fs::read_to_string(file).map(|text| text.trim().to_string()).map_err(|error| {
        eprintln!("error: cannot read the view token file {}: {error}", file.display());
        ExitCode::from(EX_CONFIG)
    })?;
    if token.chars().count() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        eprintln!("error: the view token in {} must be at least 16 characters, without spaces", file.display());
        return Err(ExitCode::from(EX_CONFIG));
    }
    Ok(Some(token))
}

/// This hub's name when none is given: the host's name and the process id.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    format!("{}-{}", if host.is_empty() { "hub" } else { host.as_str() }, std::process::id())
}

/// `gridwatch hub roster put`: exit 78 with the file's errors when the roster is invalid.
pub fn subcommand(command: HubCommand) -> ExitCode {
    let HubCommand::Roster { command: RosterCommand::Put { nats_urls, district, replicas, allow_empty, file } } = command;
    let name = file.display().to_string();
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: cannot read {name}: {error}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let mut invalid = false;
    let code = block_on(async {
        match hub::put_roster(&nats_urls, &district, (&name, &text, allow_empty), replicas).await {
            Ok((revision, channels)) => {
                println!("the roster of {district} is {name} (revision {revision}); boxes take it as they hear of it");
                if !channels.is_empty() {
                    println!(
                        "it names the channels {}: a box without one of them refuses it and keeps the roster it has (its log says so)",
                        channels.join(", ")
                    );
                }
                Ok(())
            }
            Err(error) => {
                if let Some(errors) = error.downcast_ref::<RosterErrors>() {
                    invalid = true;
                    eprintln!("{errors}");
                    eprintln!("roster refused: the district's roster in force stays");
                    return Ok(());
                }
                Err(error)
            }
        }
    });
    if invalid {
        ExitCode::from(EX_CONFIG)
    } else {
        code
    }
}

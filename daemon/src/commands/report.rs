//! `gridwatch report`: the supervision report of chosen local days, read from the store the
//! daemon writes (the figures themselves are [`crate::report`]'s).

use crate::report::{day_start, previous, today, Report};
use crate::store::Store;
use chrono::NaiveDate;

/// `gridwatch report`: the report of the local days `days` (first, last), or of the previous
/// `last` day, week or month, as `format` (csv or markdown).
pub fn run(config: &crate::config::Config, days: Option<(NaiveDate, NaiveDate)>, last: Option<&str>, format: &str) -> anyhow::Result<String> {
    let zone = config.time_zone;
    let now = crate::clock::Clock::System.now();
    let (first, last_day) = match (days, last) {
        (Some(days), _) => days,
        (None, Some(period)) => previous(period, today(now, zone))?,
        (None, None) => anyhow::bail!("say which days: --from YYYY-MM-DD [--to YYYY-MM-DD], or --last day|week|month"),
    };
    anyhow::ensure!(first <= last_day, "--to {last_day} is before --from {first}");
    let from_ms = day_start(first, zone)?;
    let to_ms = day_start(last_day.succ_opt().unwrap_or(last_day), zone)?;
    if !config.state_dir.join("gridwatch.db").exists() {
        anyhow::bail!("no store yet in {} (has the daemon run with this configuration?)", config.state_dir.display());
    }
    let store = Store::open(&config.state_dir)?;
    let report = Report::build(&store, &config.sensors, &config.dispatch, from_ms, to_ms, now.min(to_ms))?;
    Ok(if format == "csv" { report.csv() } else { report.markdown(zone) })
}

/// `gridwatch report` on the configuration at `config`.
pub fn command(config: &std::path::Path, from: Option<NaiveDate>, to: Option<NaiveDate>, last: Option<&str>, format: &str) -> std::process::ExitCode {
    match super::load_config(config) {
        Ok(config) => super::print_or_fail(run(&config, from.map(|from| (from, to.unwrap_or(from))), last, format)),
        Err(code) => code,
    }
}

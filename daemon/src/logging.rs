//! Where the daemon's log lines go and how they look: stderr, text or JSON; colours only on a
//! terminal (never in files and pipes); under systemd no time stamp (journald stamps each line)
//! and a `<N>` syslog priority prefix on each line, so `journalctl -p warning` filters by level.
//! tokio-modbus logs every garbled frame as a multi-line WARN: it is held to errors, and the
//! serial poller counts and reports such frames itself (`gridwatch_serial_frames_total`).
//! rustls (the hub's MQTT listener over TLS) logs a WARN for every client that names the server
//! by an IP address: anyone could write a line per connection without a password; held to errors.

use crate::commands::cli::LogFormat;
use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Installs the global subscriber. `RUST_LOG` overrides the default levels.
pub fn init(format: LogFormat, quiet: bool) {
    let default = if quiet { "warn,rumqttd=off,tokio_modbus=error,rustls=error" } else { "info,rumqttd=off,tokio_modbus=error,rustls=error" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_ansi(!journald && std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text if journald => logs.event_format(SyslogPriority(tracing_subscriber::fmt::format().without_time())).init(),
        LogFormat::Text => logs.init(),
    }
}

/// Prefixes each line with its syslog priority (`<3>` error … `<7>` debug), which journald
/// reads as the line's level (`SyslogLevelPrefix=`, on by default).
struct SyslogPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for SyslogPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!([Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG].map(priority), [3, 4, 6, 7]);
    }
}

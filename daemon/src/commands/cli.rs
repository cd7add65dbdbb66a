//! Command-line interface: `run` (the daemon), `demo` (everything on embedded defaults), the
//! installers' and operators' commands, `completions` and `man`.
//!
//! Exit codes scripts can use: 0 done; 1 a check failed or something is wrong (selftest failed,
//! `status` degraded, probe found nothing, an error); 2 bad usage; 69 the daemon did not answer
//! (`status`, `watch`, `calibrate`); 78 the configuration is invalid.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "gridwatch", version, about = "Community monitoring: tilt sensors and water probes -> alarm rules -> grid workers")]
pub struct Cli {
    /// Log lines as text (journald adds time and level) or as JSON objects, one per line, for
    /// log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How listings print: text for people, or JSON for scripts (`-o json | jq`).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// How a command prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

impl Output {
    /// The JSON form, pretty-printed with a final newline, or the text form.
    pub fn render(self, text: impl FnOnce() -> String, json: impl FnOnce() -> serde_json::Value) -> String {
        match self {
            Output::Text => text(),
            Output::Json => format!("{:#}\n", json()),
        }
    }
}

/// `gridwatch hub …` commands besides running the hub.
#[cfg(feature = "cluster")]
#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// The district's one roster, which every box follows.
    Roster {
        #[command(subcommand)]
        command: RosterCommand,
    },
}

#[cfg(feature = "cluster")]
#[derive(Debug, Subcommand)]
pub enum RosterCommand {
    /// Check a roster file as a box does and make it the district's (exit 78 when invalid: the
    /// roster in force stays).
    Put {
        /// A NATS server of the district's cluster (repeat for each node).
        #[arg(long = "nats", required = true, value_name = "URL")]
        nats_urls: Vec<String>,
        /// The district, as in the boxes' `[cluster] district`.
        #[arg(long)]
        district: String,
        /// Copies of the roster bucket on the cluster, if it is created here.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// Put a roster that names nobody (every box then sends each alarm to all its channels,
        /// naming no one on duty): refused without it.
        #[arg(long)]
        allow_empty: bool,
        /// The roster file (the format of `[dispatch] roster`, docs/incidents.md).
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Made once at start from the command line: the size of its largest variant (the hub's
// options) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon with a configuration file.
    #[command(
        after_help = "Examples:\n  gridwatch run --config /etc/gridwatch/gridwatch.toml\n  systemctl start gridwatch        # the same, supervised (systemd/gridwatch.service)"
    )]
    Run {
        /// The configuration file (see gridwatch.example.toml).
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
        /// Where the last configuration that started is kept, to start on when the current one
        /// is invalid (default: $STATE_DIRECTORY/last-good under systemd; otherwise none).
        #[arg(long)]
        last_good: Option<PathBuf>,
    },
    /// Check a configuration and its rule files without starting anything (exit 78 when invalid).
    #[command(after_help = "Examples:\n  gridwatch validate --config /etc/gridwatch/gridwatch.toml && systemctl reload gridwatch")]
    Validate {
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
    },
    /// Run the district hub: consume every box's uplink from NATS JetStream into PostgreSQL and
    /// raise `box-down` when a box's lease expires (build with --features cluster).
    #[cfg(feature = "cluster")]
    #[command(
        subcommand_negates_reqs = true,
        args_conflicts_with_subcommands = true,
        group = clap::ArgGroup::new("sensor_access").args(["mqtt_passwords", "mqtt_anonymous"]),
        after_help = "Examples:\n  gridwatch hub --nats nats://10.0.0.1:4222 --nats nats://10.0.0.2:4222 --nats nats://10.0.0.3:4222 \\\n      --postgres 'host=127.0.0.1 user=gridwatch dbname=district' --webhook https://office.example/hook\n  gridwatch hub roster put --nats nats://10.0.0.1:4222 --district old-town roster.toml"
    )]
    Hub {
        #[command(subcommand)]
        command: Option<HubCommand>,
        /// A NATS server of the district's cluster (repeat for each node).
        #[arg(long = "nats", required = true, value_name = "URL")]
        nats_urls: Vec<String>,
        /// PostgreSQL connection string (libpq key=value form).
        #[arg(long, required = true)]
        postgres: Option<String>,
        /// Where `box-down` alarms and their clearing are posted.
        #[arg(long, required = true)]
        webhook: Option<String>,
        /// How long a box's lease lives without renewal.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        lease_ttl: Duration,
        /// Copies of the stream and buckets on the cluster.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// How long the active hub's lease lives without renewal: start a second hub on another
        /// machine and it takes over within this after the active one dies.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
        hub_lease: Duration,
        /// This hub's name in the lease and the logs (default: the host name and process id).
        #[arg(long)]
        name: Option<String>,
        /// Serve here the district's board (`/`), report (`/report`), `/metrics` and `/healthz`,
        /// and take workers' signed actions (`POST /act/<district>/<box>`) to relay to their boxes.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// The district's InfluxDB 2 (`http://host:8086`), where the readings boxes send up are
        /// written; its token from the environment variable GRIDWATCH_HUB_INFLUX_TOKEN. Without
        /// it, readings are counted and dropped.
        #[arg(long, value_name = "URL")]
        influx: Option<String>,
        /// The InfluxDB organisation.
        #[arg(long, default_value = "gridwatch")]
        influx_org: String,
        /// The InfluxDB bucket of the district's readings.
        #[arg(long, default_value = "district")]
        influx_bucket: String,
        /// A file holding the district's ack secret (the boxes' `[dispatch] ack_secret`): with it,
        /// `--listen` also serves the boxes' incident pages (`/b/<box>/incident/<id>`) and signs
        /// the workers' steps there as actions for the boxes.
        #[arg(long, value_name = "FILE", requires = "listen")]
        ack_secret_file: Option<PathBuf>,
        /// A file holding the boxes' link secret (their `[http] link_secret`), when it is not the
        /// ack secret.
        #[arg(long, value_name = "FILE", requires = "ack_secret_file")]
        link_secret_file: Option<PathBuf>,
        /// A file holding the token the district's board and report ask for: open
        /// `/board?token=<token>` once (the browser keeps it in a cookie). Without it anyone who
        /// reaches `--listen` sees every box's incidents and places.
        #[arg(long, value_name = "FILE", requires = "listen")]
        view_token_file: Option<PathBuf>,
        /// Take readings of sensors with their own 4G link here (MQTT 3.1.1, QoS 1, topic
        /// `gw/s/<district>/<box>/<sensor>`); each is acknowledged once the district's stream
        /// holds it, and its box (`[cluster] sensors_via_hub`) judges it. Needs
        /// `--mqtt-passwords` or `--mqtt-anonymous`.
        #[arg(long, value_name = "ADDR", requires = "sensor_access")]
        mqtt_listen: Option<SocketAddr>,
        /// The sensors that may publish there: a mosquitto password file
        /// (`mosquitto_passwd -c FILE <district>/<box>/<sensor>`), each user on its own topic
        /// only; read again when it changes.
        #[arg(long, value_name = "FILE", requires = "mqtt_listen")]
        mqtt_passwords: Option<PathBuf>,
        /// Take any client that reaches `--mqtt-listen`, on any sensor's topic (only where the
        /// port is reachable by the district's sensors alone: a private APN or a VPN).
        #[arg(long, requires = "mqtt_listen")]
        mqtt_anonymous: bool,
        /// Speak MQTT over TLS on `--mqtt-listen` with this certificate chain (PEM; read again
        /// when it changes), so sensors' passwords do not cross the 4G internet in clear.
        #[arg(long, value_name = "FILE", requires_all = ["mqtt_listen", "mqtt_tls_key"])]
        mqtt_tls_cert: Option<PathBuf>,
        /// The private key of `--mqtt-tls-cert` (PEM).
        #[arg(long, value_name = "FILE", requires = "mqtt_tls_cert")]
        mqtt_tls_key: Option<PathBuf>,
    },
    /// Run everything on embedded defaults with simulated houses and water probes.
    #[command(
        after_help = "Examples:\n  gridwatch demo --for 30s\n  gridwatch demo --speed 60 --http-listen 127.0.0.1:9181   # then open http://127.0.0.1:9181/"
    )]
    Demo {
        /// Stop by itself after this long (e.g. 30s, 2m); runs until Ctrl-C when absent.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// How much faster than real time the simulation runs.
        #[arg(long, default_value_t = 120.0, value_parser = positive_speed)]
        speed: f64,
        /// Keep the local store here instead of in a temporary directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Serve /metrics on this address (e.g. 127.0.0.1:9181).
        #[arg(long)]
        http_listen: Option<SocketAddr>,
    },
    /// Run only the serial sources and publish their readings to MQTT (rules run elsewhere).
    Bridge {
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
    },
    /// Find out what is on a serial port (installers): prints what answered and a config snippet.
    #[command(
        after_help = "Examples:\n  gridwatch probe --port /dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0\n  gridwatch probe --port /dev/ttyUSB0 --baud 4800 --profile ./acme-orp.toml\n  gridwatch probe --port /dev/ttyUSB0 -o json | jq '.[0].profile'"
    )]
    Probe {
        /// The port, preferably by stable path (/dev/serial/by-id/…).
        #[arg(long)]
        port: PathBuf,
        /// A baud rate, or `auto` to try 9600, 4800, 115200 and 19200.
        #[arg(long, default_value = "auto", value_parser = baud)]
        baud: Baud,
        /// A device profile of your own (TOML, as in firmware-bridge/profiles/), tried besides
        /// the shipped ones; repeat for several.
        #[arg(long = "profile", value_name = "FILE")]
        profiles: Vec<PathBuf>,
    },
    /// Incidents: list them, show one with its audit trail, and act on them.
    #[command(
        after_help = "Examples:\n  gridwatch incidents list\n  gridwatch incidents show 12\n  gridwatch incidents act 12 accept --by '王芳 13800000001'\n  gridwatch incidents silence building B7 --for 2h --reason 'scaffolding' --by Li\n  gridwatch incidents list -o json | jq '.[] | select(.severity == \"danger\")'"
    )]
    Incidents {
        /// The configuration (for the state directory).
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Supervision report (督办): per grid and per worker, time to accept, to on site and to
    /// resolve (median and p90), escalations and overdue incidents, for the incidents opened in a
    /// period of local days.
    #[command(
        after_help = "Examples:\n  gridwatch report --from 2026-12-01 --to 2026-12-07\n  gridwatch report --last month --format markdown\n  gridwatch report --from 2026-12-03 --format csv > 2026-12-03.csv"
    )]
    Report {
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
        /// First local day (YYYY-MM-DD).
        #[arg(long, conflicts_with = "last")]
        from: Option<chrono::NaiveDate>,
        /// Last local day, included (default: the --from day).
        #[arg(long, requires = "from")]
        to: Option<chrono::NaiveDate>,
        /// The previous day, week (Monday to Sunday) or calendar month.
        #[arg(long, value_parser = ["day", "week", "month"])]
        last: Option<String>,
        /// csv or markdown.
        #[arg(long, default_value = "markdown", value_parser = ["csv", "markdown"])]
        format: String,
    },
    /// What the running daemon does now: sources, sensors reporting, open incidents, spool.
    #[command(
        after_help = "Exit code 0 when ready, 1 when degraded, 69 when the daemon does not answer.\n\nExamples:\n  gridwatch status\n  gridwatch status -o json | jq .open_incidents"
    )]
    Status {
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
    },
    /// A live table of sensors (all, the ones named, or one building's), refreshed in place.
    #[command(
        after_help = "Examples:\n  gridwatch watch house-07\n  gridwatch watch --building B7\n  gridwatch watch --once -o json | jq '.[] | select(.age_secs > 600) | .id'"
    )]
    Watch {
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
        sensors: Vec<String>,
        #[arg(long)]
        building: Option<String>,
        /// Print the table once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Check everything before leaving: config, rules, daemon, broker, InfluxDB, serial ports,
    /// and a marked test notification through every channel. Exit 1 when a check fails.
    #[command(after_help = "Examples:\n  gridwatch selftest\n  gridwatch selftest -o json | jq '.[] | select(.passed | not)'")]
    Selftest {
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
    },
    /// Zero a tilt box: the median of its recent readings becomes its installation baseline.
    #[command(after_help = "Examples:\n  gridwatch calibrate house-07 --by Li\n  gridwatch calibrate house-07 --window 1h --by Li")]
    Calibrate {
        #[arg(long, short, default_value = "/etc/gridwatch/gridwatch.toml")]
        config: PathBuf,
        sensor: String,
        /// How far back to take the median (the box must have reported in it).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
        window: std::time::Duration,
        /// Who calibrates (kept with the baseline).
        #[arg(long)]
        by: String,
        /// Zero it although an alarm on it or its building is still firing (refused otherwise):
        /// only for a box that was itself moved, after the house was checked on site.
        #[arg(long)]
        even_in_alarm: bool,
    },
    /// Work with rule files.
    #[command(
        after_help = "Examples:\n  gridwatch rules check /etc/gridwatch/rules.d\n  gridwatch rules test --config gridwatch.toml --data recorded.csv\n  gridwatch rules explain --config gridwatch.toml --sensor house-07 -o json"
    )]
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(
        after_help = "Examples:\n  gridwatch completions bash > /etc/bash_completion.d/gridwatch\n  gridwatch completions zsh > \"${fpath[1]}/_gridwatch\""
    )]
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff).
    #[command(after_help = "Examples:\n  gridwatch man | man -l -\n  gridwatch man > /usr/share/man/man1/gridwatch.1")]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Incidents not closed yet (all with --all), newest first.
    List {
        #[arg(long)]
        all: bool,
    },
    /// One incident and its audit trail.
    Show { id: i64 },
    /// The audit trail of every incident as CSV (incident, rule, sensor, severity, at, actor,
    /// action, note), oldest first — for the street office's records or a spreadsheet.
    Export {
        /// Only transitions at or after this time (RFC 3339), e.g. 2026-11-01T00:00:00+08:00.
        #[arg(long, value_parser = rfc3339_ms)]
        since: Option<i64>,
    },
    /// Take an incident: accept, on-site, resolve or close it.
    Act {
        id: i64,
        /// accept | on-site | resolve | close
        #[arg(value_parser = action)]
        action: crate::dispatch::incident::Action,
        /// Who acts (a name or phone number), kept in the audit trail.
        #[arg(long)]
        by: String,
        /// What was done or found.
        #[arg(long)]
        note: Option<String>,
    },
    /// Hold back alerts of a sensor, building, grid or rule for a while (a maintenance window).
    /// They are journaled and kept on their incidents, but not sent. Red passes unless
    /// --include-red.
    Silence {
        /// sensor | building | grid | rule
        #[arg(value_parser = silence_scope)]
        scope: crate::dispatch::silence::Scope,
        /// The sensor id, building, grid or rule id.
        target: String,
        /// How long, e.g. 2h, 30m.
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: std::time::Duration,
        /// Why (shown in the log and the list).
        #[arg(long)]
        reason: String,
        /// Who silences.
        #[arg(long)]
        by: String,
        /// Also hold back red (danger) alerts. Think twice.
        #[arg(long)]
        include_red: bool,
    },
    /// Silences in force (all, including ended ones, with --all).
    Silences {
        #[arg(long)]
        all: bool,
    },
    /// End a silence now.
    Unsilence { id: i64 },
}

fn silence_scope(text: &str) -> Result<crate::dispatch::silence::Scope, String> {
    text.parse()
}

fn action(text: &str) -> Result<crate::dispatch::incident::Action, String> {
    use crate::dispatch::incident::Action;
    match text {
        "accept" => Ok(Action::Accept),
        "on-site" | "on_site" => Ok(Action::OnSite),
        "resolve" => Ok(Action::Resolve),
        "close" => Ok(Action::Close),
        other => Err(format!("`{other}`: use accept, on-site, resolve or close")),
    }
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check rule files (or directories of them); prints file:line:column errors, exits 1 on any.
    Check {
        /// Rule files or directories. With none, the built-in packs are checked.
        paths: Vec<PathBuf>,
        /// Check the given files together with the built-in packs (catches id clashes).
        #[arg(long)]
        with_builtin: bool,
    },
    /// Replay recorded samples through rules and show what would have fired and cleared.
    Test {
        /// Recorded samples: CSV (ts,sensor,<fields>…) or JSON lines.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        rules: RuleSelection,
        /// Only samples at or after this time (RFC 3339).
        #[arg(long, value_parser = rfc3339_ms)]
        from: Option<i64>,
        /// Only samples at or before this time (RFC 3339).
        #[arg(long, value_parser = rfc3339_ms)]
        to: Option<i64>,
    },
    /// Show which rules apply to a sensor, with their effective parameters.
    Explain {
        /// The sensor id, as in the config's inventory.
        #[arg(long)]
        sensor: String,
        #[command(flatten)]
        rules: RuleSelection,
    },
}

/// Where `rules test` and `rules explain` take rules and sensors from.
#[derive(Debug, clap::Args)]
pub struct RuleSelection {
    /// Rule files or directories (default: the config's rules).
    #[arg(long = "rules", num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Add the built-in packs to --rules.
    #[arg(long)]
    pub with_builtin: bool,
    /// The daemon's configuration: its sensor inventory (and rules, without --rules).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

/// `--baud auto` or a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baud {
    Auto,
    Fixed(u32),
}

fn baud(text: &str) -> Result<Baud, String> {
    match text {
        "auto" => Ok(Baud::Auto),
        n => n.parse::<u32>().ok().filter(|b| *b > 0).map(Baud::Fixed).ok_or_else(|| format!("`{n}` is neither `auto` nor a baud rate")),
    }
}

fn rfc3339_ms(text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_millis()).map_err(|e| format!("`{text}`: {e}"))
}

fn positive_speed(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed > 0.0 => Ok(speed),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

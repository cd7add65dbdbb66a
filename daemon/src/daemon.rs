//! Start-to-shutdown of the daemon: opens the store, loads the rules, starts the broker (when
//! embedded), the sinks, the dispatcher, the telemetry writer, the pipeline and the MQTT source,
//! then waits for `shutdown` and drains them in data-flow order under a deadline.

use crate::clock::Clock;
use crate::config::{BrokerConfig, Config, SensorConfig};
use crate::dispatch::{run_dispatcher, DispatcherSetup, InForce, Judged};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::reload::build_engine;
use crate::sinks::console::ConsoleSink;
use crate::sinks::dingtalk::DingTalkSink;
use crate::sinks::mqtt::MqttAlertSink;
use crate::sinks::webhook::WebhookSink;
use crate::sinks::wecom::WeComSink;
use crate::sinks::{SinkContext, SinkSet};
use crate::sources::mqtt::source::{self, Ingest, Outputs};
use crate::sources::serial::SerialOutputs;
use crate::store::Store;
use crate::telemetry::spooler::{self, SpoolTarget};
use crate::telemetry::writer::TelemetryWriter;
use anyhow::Context;
use rumqttc::AsyncClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Samples waiting for the rule engine (and messages waiting for the spooler); the MQTT source
/// waits when either is full.
const SAMPLE_QUEUE: usize = 8192;
/// Alerts waiting to be journaled and fanned out; the pipeline waits when it is full.
const ALERT_QUEUE: usize = 1024;
/// How long shutdown may take to drain queues and deliver pending alerts.
const DRAIN_DEADLINE: Duration = Duration::from_secs(15);

/// The engine state saved by the last run, if it can be read (a bad one is logged and ignored).
/// Restores the engine from the state the store saved, logging what came of it.
fn restore_saved_state(store: &Store, engine: &mut gridwatch_rules::Engine) -> gridwatch_rules::snapshot::Restored {
    match store.restore_engine_state(engine) {
        Ok(Some(restored)) => {
            tracing::info!(states_kept = restored.checks, states_reset = restored.discarded, "rule state restored from the store");
            restored
        }
        Ok(None) => Default::default(),
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "saved rule state is unreadable; sensors read before the damage keep theirs, the rest start fresh");
            Default::default()
        }
    }
}

/// At start: the firing incidents to be settled at their sensors' next readings as after a
/// reload (`Pipeline::settle_afresh`) — those of rules whose definition changed while the daemon
/// was stopped (their state starts afresh; kept in the store from now on), and those a reload
/// started afresh that no reading settled before the daemon stopped (their rule's saved state is
/// already the new one's). Rules unchanged are left alone, whatever their saved state says: after
/// a crash that state can be older than the incidents, and their clears must still come.
fn started_afresh(store: &Store, changed_rules: &std::collections::BTreeSet<String>) -> std::collections::HashSet<(String, String)> {
    let changed: Vec<(String, String)> = match store.firing_incidents() {
        Ok(firing) => firing.into_iter().filter(|(rule, _)| changed_rules.contains(rule)).collect(),
        Err(error) => {
            store.report_failure("reading the incidents of rules changed while stopped (their next alarm may be taken for a repeat)", &error);
            Vec::new()
        }
    };
    if !changed.is_empty() {
        tracing::info!(incidents = ?changed, rules = ?changed_rules, "rules changed while the daemon was stopped: these incidents are settled at their sensors' next readings");
        if let Err(error) = store.keep_afresh(&changed) {
            store.report_failure("keeping the incidents of changed rules (a restart before their next reading forgets them)", &error);
        }
    }
    let unsettled = store.afresh_incidents().unwrap_or_else(|error| {
        store.report_failure("reading the incidents a reload started afresh (their next alarm may be taken for a repeat)", &error);
        Vec::new()
    });
    changed.into_iter().chain(unsettled).collect()
}

/// The status LED and the digital inputs of `[gpio]`.
fn spawn_gpio(
    config: &Config,
    outputs: &SerialOutputs,
    metrics: Arc<Metrics>,
    sensors: &[SensorConfig],
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let Some(gpio) = &config.gpio else { return Ok(Vec::new()) };
    let mut tasks = Vec::new();
    if let Some(pin) = gpio.led_pin {
        let status = move || {
            let red = metrics.open_incidents.get_or_create(&crate::metrics::SeverityLabel { severity: "danger".into() }).get() > 0;
            match (red, crate::web::degraded_reasons(&metrics).is_empty()) {
                (true, _) => crate::gpio::led::Status::RedOpen,
                (false, true) => crate::gpio::led::Status::Ok,
                (false, false) => crate::gpio::led::Status::Degraded,
            }
        };
        tasks.push(tokio::spawn(crate::gpio::led::run(crate::gpio::open_output(pin)?, status, shutdown.clone())));
    }
    for input in &gpio.inputs {
        let (levels, mut changes) = mpsc::unbounded_channel::<bool>();
        let interval = sensors.get(input.sensor).map_or(std::time::Duration::from_secs(600), |s| s.interval);
        tasks.push(tokio::spawn(crate::sources::gpio_input::run(
            crate::gpio::open_input(input.pin)?,
            input.debounce,
            interval,
            move |level| {
                let _ = levels.send(level);
            },
            shutdown.clone(),
        )));
        let (outputs, sensor, field) = (outputs.clone(), input.sensor, input.field.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(level) = changes.recv().await {
                if !outputs.emit(sensor, vec![(field.clone(), f64::from(u8::from(level)))]).await {
                    break;
                }
            }
        }));
    }
    Ok(tasks)
}

/// How a start was prepared by [`crate::last_good::prepare`]; the demo and tests start plainly
/// (`Boot::default()`: rules loaded from the configuration, nothing saved).
#[derive(Debug, Default)]
pub struct Boot {
    pub rules: Option<(gridwatch_rules::RuleSet, usize)>,
    /// Running on the last good copy, and why.
    pub degraded: Option<String>,
    /// Saved as the last good copy once the daemon is READY.
    pub save: Option<(crate::last_good::LastGood, crate::last_good::Saved)>,
    /// Where the last good copy lives: a roster reloaded while running is kept in it.
    pub last_good: Option<crate::last_good::LastGood>,
}

/// Runs the daemon until `shutdown` is cancelled and everything is drained.
pub async fn run(config: Config, clock: Clock, metrics: Arc<Metrics>, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with(config, Boot::default(), clock, metrics, shutdown).await
}

/// [`run`], with rules already loaded and what to do about the last good copy: the daemon's
/// life in four steps.
pub async fn run_with(config: Config, boot: Boot, clock: Clock, metrics: Arc<Metrics>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let built = build(&config, boot.rules, clock, &metrics)?;
    let (running, ready) = spawn(&config, (built, boot.last_good), clock, &metrics, &shutdown).await?;
    wait(ready, boot.degraded, boot.save, clock, &metrics, &shutdown).await;
    drain(running).await;
    Ok(())
}

/// What is made before any task starts: the store, the engine with its restored state, and
/// what the tasks share.
struct Built {
    store: Store,
    engine: gridwatch_rules::Engine,
    calibrations: Vec<crate::store::Calibration>,
    rule_count: usize,
    rule_files: usize,
    /// The latest readings: written by the pipeline, read by the installer API and the board.
    live: Arc<crate::live::LiveTable>,
    /// Sensors whose clocks are off: noted by the MQTT source and the pipeline, shown by /healthz.
    clocks: Arc<crate::sensor_clocks::SensorClocks>,
    /// Firing incidents of rules changed while the daemon was stopped ([`started_afresh`]).
    afresh: std::collections::HashSet<(String, String)>,
}

/// Where what the card cannot keep waits in memory: the configured `runtime_dir`, else the one
/// systemd made for the service (`RuntimeDirectory=`).
fn runtime_dir(config: &Config) -> Option<std::path::PathBuf> {
    config.runtime_dir.clone().or_else(|| std::env::var_os("RUNTIME_DIRECTORY").map(std::path::PathBuf::from))
}

/// Opens the store, checks the clock, loads the rules (unless `rules` were loaded already) and
/// builds the engine on the saved state.
fn build(config: &Config, rules: Option<(gridwatch_rules::RuleSet, usize)>, clock: Clock, metrics: &Metrics) -> anyhow::Result<Built> {
    metrics.started(clock.now());
    let store = Store::open_with_clock(&config.state_dir, clock)?;
    store.fold_into_open_alarms(config.alerts.fold_into_open_alarm);
    let store = match runtime_dir(config) {
        Some(dir) => store.clone().keep_beside_card(&dir).unwrap_or_else(|error| {
            tracing::error!(error = %format!("{error:#}"), "no runtime directory: readings the card cannot log are not judged again after a crash");
            store
        }),
        None => store,
    };
    // A read-only card cannot keep the reserve either; the store has said so already.
    if config.state_reserve_bytes > 0 && !store.keep_reserve(config.state_reserve_bytes) && !store.read_only() {
        tracing::error!(bytes = config.state_reserve_bytes, state_dir = %config.state_dir.display(), "no room for the disk reserve: the state directory is full; readings are not stored until there is room, alarms are");
    }
    crate::clock::use_sync_source(config.clock_synchronized.clone());
    metrics.clock_trusted.set(i64::from(clock.synchronized()));
    match store.take_over_unset_stamps() {
        Ok(0) => {}
        Ok(lost) => {
            tracing::warn!(lost, "times stamped before the clock was set, in an earlier run, cannot be re-stamped: people read \"time unknown\" for them")
        }
        Err(error) => store.report_failure("marking an earlier run's unset-clock times as unknown", &error),
    }
    if let Some(links) = &config.worker_links {
        match store.clock_steps() {
            Ok(steps) => links.clock_steps.load(steps, clock.now().div_euclid(1000)),
            Err(error) => store.report_failure("reading the clock's steps links signed before it was set are read through", &error),
        }
    }
    if !clock.synchronized() {
        tracing::error!(
            "the system clock is not synchronised: readings without their own time are judged but not stored, and people read \"time unknown\", until it is"
        );
    }
    let (rules, rule_files) = match rules {
        Some(loaded) => loaded,
        None => crate::rule_files::load(&config.rules.paths, config.rules.builtin_packs).context("loading rules")?,
    };
    for warning in crate::reload::rule_scope_warnings(&rules, &config.sensors) {
        tracing::warn!("{warning}");
    }
    let rule_count = rules.rules.len();
    let calibrations = store.calibrations().unwrap_or_else(|error| {
        tracing::error!(error = %format!("{error:#}"), "cannot read calibrated baselines; the inventory's are used");
        Vec::new()
    });
    let (engine, restored) = build_engine(rules, &config.sensors, |engine| restore_saved_state(&store, engine), &calibrations);
    let afresh = started_afresh(&store, &restored.changed_rules);
    crate::pipeline::settle_gone_rules(&store, &restored.gone_rules, clock.now());
    let live = Arc::new(crate::live::LiveTable::new(config.sensors.clone(), clock));
    Ok(Built { store, engine, calibrations, rule_count, rule_files, live, clocks: Arc::default(), afresh })
}

/// The running tasks, in the order [`drain`] waits for them.
struct Running {
    serial_tasks: Vec<JoinHandle<()>>,
    gpio_tasks: Vec<JoinHandle<()>>,
    spooler_task: JoinHandle<()>,
    /// Cancelled once the spooler has acknowledged what it took: the source may then disconnect.
    acks_flushed: CancellationToken,
    source_task: JoinHandle<()>,
    pipeline_task: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
    /// Cancelled once the dispatcher is done: each channel then sends what is due and ends.
    sinks_closing: CancellationToken,
    sink_tasks: Vec<JoinHandle<()>>,
    writer_stop: CancellationToken,
    writer_task: Option<JoinHandle<()>>,
}

/// What [`wait`] needs once everything runs.
struct Ready {
    /// The daemon's own alerts (the fallback configuration); dropped by [`wait`] so that the
    /// dispatcher can finish once every other sender is gone.
    fallback_alerts: mpsc::Sender<crate::alert::Alert>,
    /// Beaten by the pipeline, watched by the systemd watchdog task.
    heartbeat: crate::supervision::Heartbeat,
}

/// Starts everything in reverse data-flow order: the broker and the web pages, the sinks, the
/// dispatcher, telemetry, the pipeline, then the sources.
async fn spawn(
    config: &Config,
    (built, last_good): (Built, Option<crate::last_good::LastGood>),
    clock: Clock,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Running, Ready)> {
    let Built { store, engine, calibrations, rule_count, rule_files, live, clocks, afresh } = built;
    let sensors = config.sensors.clone();
    let dispatch = starting_dispatch(config);
    let command_rx = start_broker_and_web(config, &store, &live, &clocks, &dispatch, clock, metrics, shutdown).await?;

    let sinks_closing = CancellationToken::new();
    let sink_context = SinkContext { metrics: metrics.clone(), store: store.clone(), clock, closing: sinks_closing.clone() };
    let (sinks, handoff_rx) = sink_set(config, sink_context, metrics, &dispatch)?;
    let SinkSet { queues: sink_queues, tasks: sink_tasks, .. } = sinks;
    let sink_count = sink_queues.len();
    // The daemon's own alerts (bus down, fallback configuration) and the rule engine's, which
    // the pipeline counts to save its state only behind the journal.
    let (alert_tx, alert_rx) = mpsc::channel(ALERT_QUEUE);
    let (judged_tx, judged_rx) = mpsc::channel(ALERT_QUEUE);
    let (journaled_tx, journaled_rx) = tokio::sync::watch::channel(0u64);
    // One index of the inventory by id, shared by the topic router, the serial outputs, the
    // InfluxDB writer and the bus watcher.
    let index = crate::config::SensorIndex::new(sensors.clone());
    let buses = crate::sources::buses::Buses::new(index.clone(), &config.serial);
    tokio::spawn(crate::sources::buses::watch(buses.clone(), config.alerts.bus_down_after, alert_tx.clone(), clock, shutdown.clone()));
    tokio::spawn(crate::sources::gateways::watch(buses.clone(), live.clone(), sensors.clone(), clock, shutdown.clone()));
    let judged = Judged { alerts: judged_rx, journaled: journaled_tx };
    let rates = report_rates(config, &store);
    let setup = dispatcher_setup(config, &store, &dispatch, metrics, clock, handoff_rx, (buses.clone(), rates.clone()), judged);
    let dispatcher = tokio::spawn(run_dispatcher(alert_rx, sink_queues, setup));

    let telemetry = spawn_telemetry(config, &store, index.clone(), metrics, clock)?;
    let (sample_tx, sample_rx) = mpsc::channel(SAMPLE_QUEUE);
    let (reload_tx, reload_rx) = mpsc::channel(1);
    // In a district the hub puts the roster (`cluster::roster`); a box alone reloads its file.
    let in_a_district = cfg!(feature = "cluster") && config.cluster.is_some();
    let roster = config.roster_file.clone().filter(|_| !in_a_district).map(|file| (file, dispatch.clone()));
    let running = config.source.clone().map(|file| crate::reload::Running { file, sensors: config.sensors.clone(), roster, last_good });
    tokio::spawn(crate::reload::watch(config.rules.paths.clone(), config.rules.builtin_packs, running, reload_tx, metrics.clone(), clock, shutdown.clone()));
    let heartbeat = crate::supervision::Heartbeat::default();
    // The rules' timeline continues after the last reading the restored state judged.
    let judged_until = (0..sensors.len()).filter_map(|position| engine.last_at(gridwatch_rules::SubjectId(position))).max();
    // The district's standby evaluator judges the 4G sensors from copies of their state.
    #[cfg(feature = "cluster")]
    let (standby, standby_copies) = match config.cluster.as_ref().filter(|cluster| cluster.sensors_via_hub) {
        Some(cluster) => {
            let (tap, copies) = crate::pipeline::standby_copy::StandbyTap::new(cluster.standby_copy);
            let earlier = tap.earlier();
            (Some(tap), Some((copies, earlier)))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "cluster"))]
    let standby = None;
    let pipeline = Pipeline {
        engine,
        calibrations,
        live,
        sensors: sensors.clone(),
        time_zone: config.time_zone,
        places: config.places.clone(),
        alerts: judged_tx,
        journaled: journaled_rx,
        emitted: 0,
        metrics: metrics.clone(),
        clock,
        store: store.clone(),
        heartbeat: heartbeat.clone(),
        save_every: config.rules.state_save,
        unsaved: true,
        out_of_order: crate::sensor_clocks::OutOfOrder::new(config.ingest.reanchor_after_readings, config.ingest.reanchor_after),
        lags: crate::sensor_clocks::Lags::new(config.ingest.clock_behind, config.ingest.clock_behind_for),
        clocks: clocks.clone(),
        timeline: crate::timeline::Timeline::start(clock, judged_until),
        budget: Default::default(),
        standby,
        afresh,
    };
    let pipeline_task = tokio::spawn(pipeline.run(sample_rx, reload_rx, command_rx));

    #[cfg(feature = "cluster")]
    let uplink_sensors = index.clone();
    // The district's 4G sensors go through an ingest of their own into the same pipeline and spooler.
    #[cfg(feature = "cluster")]
    let hub_sensors = config.cluster.as_ref().filter(|cluster| cluster.sensors_via_hub).map(|_| crate::cluster::sensors::Feed {
        ingest: Ingest::new(config, index.clone(), clock, metrics.clone(), clocks.clone()),
        samples: sample_tx.clone(),
        spool: telemetry.spool.clone(),
        stored: sensors.clone(),
        metrics: metrics.clone(),
    });
    let inputs = Inputs { samples: sample_tx, spool: telemetry.spool, index, buses, clocks, store: store.clone(), report_rates: rates };
    let (serial_tasks, gpio_tasks, source_task, acks_flushed) = spawn_sources(config, inputs, telemetry.ingest_connection, clock, metrics, shutdown)?;

    tracing::info!(
        sensors = sensors.len(),
        rules = rule_count,
        rule_files,
        sinks = sink_count,
        serial_ports = config.serial.len(),
        influxdb = config.influxdb.is_some(),
        state_dir = %config.state_dir.display(),
        "gridwatch running"
    );
    // The district uplink reads what is already durable here; it stops with the rest.
    #[cfg(feature = "cluster")]
    if let Some(cluster) = config.cluster.clone() {
        let setup = crate::cluster::BoxSetup {
            config: cluster,
            store: store.clone(),
            state_dir: config.state_dir.clone(),
            channels: crate::config::sink_names(&config.alerts, config.gpio.as_ref()),
            in_force: dispatch.clone(),
            acks: config.incident_acks.clone(),
            metrics: metrics.clone(),
            clock,
            sensors: uplink_sensors,
            readings: telemetry.uplink_readings,
            hub_sensors,
            standby: standby_copies.map(|(copies, earlier)| crate::cluster::standby::Source {
                copies,
                earlier,
                rule_paths: config.rules.paths.clone(),
                builtin_packs: config.rules.builtin_packs,
                time_zone: config.time_zone,
                places: config.places.clone(),
                limits: crate::sources::mqtt::payload::Limits {
                    max_bytes: config.mqtt.max_payload_bytes,
                    max_fields: config.ingest.max_fields_per_reading,
                    max_field_name_bytes: config.ingest.max_field_name_bytes,
                },
                clocks: config.ingest,
            }),
        };
        tokio::spawn(crate::cluster::run_box(setup, shutdown.clone()));
    }
    let running = Running {
        serial_tasks,
        gpio_tasks,
        spooler_task: telemetry.spooler_task,
        acks_flushed,
        source_task,
        pipeline_task,
        dispatcher,
        sinks_closing,
        sink_tasks,
        writer_stop: telemetry.writer_stop,
        writer_task: telemetry.writer_task,
    };
    Ok((running, Ready { fallback_alerts: alert_tx, heartbeat }))
}

/// The embedded broker (when configured), the web pages and the supervision report; returns
/// where the installer API's commands to the pipeline arrive (closed when there is no web).
#[allow(clippy::too_many_arguments)] // the parts the pages share with the other tasks
async fn start_broker_and_web(
    config: &Config,
    store: &Store,
    live: &Arc<crate::live::LiveTable>,
    clocks: &Arc<crate::sensor_clocks::SensorClocks>,
    dispatch: &InForce,
    clock: Clock,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<mpsc::Receiver<crate::pipeline::Command>> {
    let (command_tx, command_rx) = mpsc::channel(8);
    if let BrokerConfig::Embedded { listen } = config.mqtt.broker {
        crate::sources::mqtt::broker::start(listen).await?;
    }
    if let Some(listen) = config.http_listen {
        let web = Web { store, live, commands: command_tx, clocks: clocks.clone(), dispatch: dispatch.clone(), clock, metrics: metrics.clone() };
        serve_web(config, listen, web, shutdown.clone()).await?;
    }
    tokio::spawn(crate::report::run(supervision(config, store, dispatch, metrics.clone(), clock), shutdown.clone()));
    Ok(command_rx)
}

/// The roster in force at start: the configuration's, or in a district the last district roster
/// this box kept (it is newer than the file, and a box restarted without its link needs it).
fn starting_dispatch(config: &Config) -> InForce {
    #[cfg(feature = "cluster")]
    if config.cluster.is_some() {
        let channels = crate::config::sink_names(&config.alerts, config.gpio.as_ref());
        if let Some(kept) = crate::cluster::roster::last_copy(&config.state_dir, &channels) {
            return InForce::new(kept);
        }
    }
    InForce::new(config.dispatch.clone())
}

/// What the dispatcher works with.
#[allow(clippy::too_many_arguments)] // each is a part the dispatcher shares with others
fn dispatcher_setup(
    config: &Config,
    store: &Store,
    dispatch: &InForce,
    metrics: &Arc<Metrics>,
    clock: Clock,
    handoffs: mpsc::UnboundedReceiver<crate::sinks::channel::Handoff>,
    (buses, report_rates): (Arc<crate::sources::buses::Buses>, Arc<crate::report_rate::ReportRates>),
    judged: Judged,
) -> DispatcherSetup {
    DispatcherSetup {
        store: store.clone(),
        silences: config.alerts.silences.clone(),
        metrics: metrics.clone(),
        flap_window_ms: config.alerts.flap_window.as_millis() as i64,
        group_window_ms: config.alerts.group_window.as_millis() as i64,
        links: config.worker_links.clone(),
        dispatch: dispatch.clone(),
        clock,
        handoffs,
        buses: Some(buses),
        judged: Some(judged),
        report_rates: Some(report_rates),
    }
}

/// The tilt boxes asked to report faster while their house is at yellow or above, starting from
/// what the store holds firing (a restart goes on asking), with the publisher of their MQTT
/// commands when `[mqtt] report_rate_topic` is set.
fn report_rates(config: &Config, store: &Store) -> Arc<crate::report_rate::ReportRates> {
    let commands = config.mqtt.report_rate_topic.as_ref().map(|template| {
        let (commands, changes) = mpsc::unbounded_channel();
        crate::report_rate::spawn_commands(&config.mqtt, template.clone(), changes);
        commands
    });
    let rates = crate::report_rate::ReportRates::new(&config.sensors, commands);
    match store.incidents(false) {
        Ok(open) => {
            for row in open.iter().filter(|row| !row.sensor_normal) {
                if let Ok(Some(latest)) = store.latest_alert(&row.rule, &row.sensor) {
                    rates.follow(&latest);
                }
            }
        }
        Err(error) => store.report_failure("reading the incidents still firing (tilt boxes report at their own rate until the next event)", &error),
    }
    Arc::new(rates)
}

/// Where the sources hand readings and what they share.
struct Inputs {
    samples: mpsc::Sender<crate::sample::Sample>,
    spool: mpsc::Sender<crate::telemetry::spooler::Spooled>,
    index: crate::config::SensorIndex,
    buses: Arc<crate::sources::buses::Buses>,
    clocks: Arc<crate::sensor_clocks::SensorClocks>,
    store: Store,
    report_rates: Arc<crate::report_rate::ReportRates>,
}

/// The serial ports, the GPIO inputs and the MQTT source: (serial tasks, GPIO tasks, the MQTT
/// source's task, the token that lets it disconnect once the spooler has acknowledged).
#[allow(clippy::type_complexity)] // the four handles drain() waits for
fn spawn_sources(
    config: &Config,
    inputs: Inputs,
    (client, eventloop): (AsyncClient, rumqttc::EventLoop),
    clock: Clock,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Vec<JoinHandle<()>>, Vec<JoinHandle<()>>, JoinHandle<()>, CancellationToken)> {
    let Inputs { samples: sample_tx, spool, index, buses, clocks, store, report_rates } = inputs;
    let sensors = config.sensors.clone();
    let serial_outputs = SerialOutputs {
        samples: sample_tx.clone(),
        // Kept with or without InfluxDB: the crash log must hold what is acknowledged.
        spool: Some(spool.clone()),
        sensors: index.clone(),
        clock,
        metrics: metrics.clone(),
        bus: None,
        report_rates: Some(report_rates),
    };
    let serial_tasks: Vec<JoinHandle<()>> = config
        .serial
        .iter()
        .enumerate()
        .map(|(index, port)| {
            let outputs = SerialOutputs { bus: Some(buses.serial(index)), ..serial_outputs.clone() };
            tokio::spawn(crate::sources::serial::run_port(port.clone(), outputs, shutdown.clone()))
        })
        .collect();
    let gpio_tasks = spawn_gpio(config, &serial_outputs, metrics.clone(), &sensors, shutdown.clone())?;
    drop(serial_outputs);
    let ingest = Ingest::new(config, index, clock, metrics.clone(), clocks);
    let acks = config.incident_acks.clone().map(|acks| (acks, store.clone()));
    let outputs = Outputs { samples: sample_tx, spool, stored: Some(sensors.clone()), acks, bus: buses.mqtt() };
    let acks_flushed = CancellationToken::new();
    let source_task = tokio::spawn(source::run(client, eventloop, ingest, outputs, shutdown.clone(), acks_flushed.clone()));

    Ok((serial_tasks, gpio_tasks, source_task, acks_flushed))
}

/// What the web pages read from the running daemon.
struct Web<'a> {
    store: &'a Store,
    live: &'a Arc<crate::live::LiveTable>,
    commands: mpsc::Sender<crate::pipeline::Command>,
    clocks: Arc<crate::sensor_clocks::SensorClocks>,
    dispatch: InForce,
    clock: Clock,
    metrics: Arc<Metrics>,
}

/// Serves the health, metrics, installer API, incident pages and the board on `listen`.
async fn serve_web(config: &Config, listen: std::net::SocketAddr, web: Web<'_>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Web { store, live, commands, clocks, dispatch, clock, metrics } = web;
    let sensors = config.sensors.clone();
    let installer =
        crate::web::installer_api::InstallerApi { live: live.clone(), commands, sensors: sensors.clone(), clock, started_ms: clock.elapsed_ms(), clocks };
    let ledger = crate::invariants::Ledger { channels: crate::config::sink_names(&config.alerts, config.gpio.as_ref()), telemetry: config.influxdb.is_some() };
    let state = crate::web::WebState {
        time_zone: config.time_zone,
        metrics,
        store: store.clone(),
        links: config.worker_links.clone(),
        installer: Some(installer),
        ledger: Some(ledger),
        members: Arc::new(dispatch.get().roster.member_names()),
        page: crate::web::incident_page::PageSetup { dispatch: dispatch.clone(), photo_max_bytes: config.photo_max_bytes },
        clock,
    };
    let board = crate::web::board::Board {
        sensors,
        places: config.places.clone(),
        dispatch,
        live: Some(live.clone()),
        store: store.clone(),
        clock,
        time_zone: config.time_zone,
        token: config.board_token.clone(),
        started_ms: clock.elapsed_ms(),
    };
    crate::web::serve(listen, state, Some(board), shutdown).await?;
    Ok(())
}

/// What the supervision report task reads.
fn supervision(config: &Config, store: &Store, dispatch: &InForce, metrics: Arc<Metrics>, clock: Clock) -> crate::report::Supervision {
    crate::report::Supervision {
        store: store.clone(),
        sensors: config.sensors.clone(),
        dispatch: dispatch.clone(),
        metrics,
        clock,
        time_zone: config.time_zone,
        digest: config.report_digest.clone(),
    }
}

/// Every configured channel, each with its task started.
fn sink_set(
    config: &Config,
    context: SinkContext,
    metrics: &Arc<Metrics>,
    roster: &crate::dispatch::InForce,
) -> anyhow::Result<(SinkSet, mpsc::UnboundedReceiver<crate::sinks::channel::Handoff>)> {
    let store = context.store.clone();
    let (mut sinks, handoff_rx) = SinkSet::new(context, &config.alerts);
    if config.alerts.console {
        sinks.add(ConsoleSink);
    }
    if let Some(prefix) = &config.alerts.mqtt_topic_prefix {
        sinks.add(MqttAlertSink::connect(&config.mqtt, prefix.clone()));
    }
    for hook in &config.alerts.webhooks {
        sinks.add(WebhookSink::new(hook, metrics.clone())?);
    }
    for robot in &config.alerts.wecom {
        sinks.add(WeComSink::new(robot.clone())?.kept_in(&store));
    }
    for robot in &config.alerts.dingtalk {
        sinks.add(DingTalkSink::new(robot.clone())?.kept_in(&store));
    }
    for gateway in &config.alerts.sms {
        sinks.add(crate::sinks::sms::SmsSink::new(gateway.clone(), store.clone())?.naming_links_from(roster.clone()));
    }
    if let Some(pin) = config.gpio.as_ref().and_then(|g| g.siren_pin) {
        let max_on = config.gpio.as_ref().map_or(std::time::Duration::from_secs(300), |g| g.siren_max_on);
        sinks.add(crate::sinks::siren::SirenSink::new(crate::gpio::open_output(pin)?, max_on));
    }
    Ok((sinks, handoff_rx))
}

/// The telemetry tasks and the ingest connection whose messages the spooler acknowledges.
struct Telemetry {
    spool: mpsc::Sender<crate::telemetry::spooler::Spooled>,
    spooler_task: JoinHandle<()>,
    writer_stop: CancellationToken,
    writer_task: Option<JoinHandle<()>>,
    ingest_connection: (AsyncClient, rumqttc::EventLoop),
    /// Readings offered to the district uplink (`[cluster]`), for `cluster::readings`.
    #[cfg(feature = "cluster")]
    uplink_readings: Option<mpsc::Receiver<Arc<Vec<crate::store::NewPoint>>>>,
}

/// Readings are kept in the crash log and in InfluxDB (from memory while it keeps up, else
/// through the spool), then acknowledged by the spooler.
fn spawn_telemetry(config: &Config, store: &Store, index: crate::config::SensorIndex, metrics: &Arc<Metrics>, clock: Clock) -> anyhow::Result<Telemetry> {
    let written = Arc::new(Notify::new());
    if config.influxdb.is_some() {
        match store.spool_stats() {
            Ok(stats) => {
                metrics.telemetry_points_taken_on.inc_by(stats.points);
            }
            Err(error) => tracing::error!(error = %format!("{error:#}"), "cannot count the spool"),
        }
    }
    let writer = match &config.influxdb {
        Some(influx) => Some(Arc::new(TelemetryWriter::new(influx, index, store.clone(), metrics.clone(), clock)?)),
        None => None,
    };
    #[cfg(feature = "cluster")]
    let (uplink, uplink_readings) = match &config.cluster {
        Some(_) => {
            let (tap, tapped) = mpsc::channel(crate::cluster::readings::TAP_QUEUE);
            (Some(tap), Some(tapped))
        }
        None => (None, None),
    };
    #[cfg(not(feature = "cluster"))]
    let uplink = None;
    let spool_target = Some(SpoolTarget {
        store: store.clone(),
        telemetry: writer.clone(),
        max_points: config.influxdb.as_ref().map_or(0, |influx| influx.spool_max_points),
        written: written.clone(),
        uplink,
    });
    let writer_stop = CancellationToken::new();
    let writer_task = writer.map(|writer| tokio::spawn(writer.run(written, writer_stop.clone())));
    let mut ingest_options = crate::sources::mqtt::options(&config.mqtt, "ingest");
    ingest_options.set_manual_acks(true);
    let (client, eventloop) = AsyncClient::new(ingest_options, 256);
    let (spool, spool_rx) = mpsc::channel(SAMPLE_QUEUE);
    let spooler_task = tokio::spawn(spooler::run(spool_rx, spool_target, client.clone(), metrics.clone()));
    Ok(Telemetry {
        spool,
        spooler_task,
        writer_stop,
        writer_task,
        ingest_connection: (client, eventloop),
        #[cfg(feature = "cluster")]
        uplink_readings,
    })
}

/// Tells systemd the daemon is ready, raises the fallback alarm when running on the last good
/// copy (else saves this configuration as the last good one), then waits for `shutdown`.
async fn wait(
    ready: Ready,
    degraded: Option<String>,
    save: Option<(crate::last_good::LastGood, crate::last_good::Saved)>,
    clock: Clock,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    let Ready { fallback_alerts, heartbeat } = ready;
    crate::supervision::ready();
    tokio::spawn(crate::supervision::watchdog(heartbeat, shutdown.clone()));
    if let Some(reason) = &degraded {
        metrics.config_fallback.set(1);
        tracing::error!(reason = %reason, "DEGRADED: running on the last good configuration; fix the files and restart");
        if fallback_alerts.send(crate::last_good::fallback_alert(reason, clock.now())).await.is_err() {
            tracing::error!("alert dispatcher is gone; the installer is not told about the fallback");
        }
    }
    // The dispatcher finishes once every sender is gone: do not hold this one to the end.
    drop(fallback_alerts);
    if let Some((last_good, saved)) = save {
        match last_good.save(&saved) {
            Ok(()) => tracing::debug!("configuration saved as the last good copy"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot save the last good configuration; a later typo could keep the daemon from starting")
            }
        }
    }
    shutdown.cancelled().await;
    crate::supervision::stopping();
    tracing::info!("shutting down: draining readings and pending alerts");
}

/// Waits for the tasks in data-flow order (sources → spooler → pipeline → dispatcher → sinks →
/// telemetry writer) under [`DRAIN_DEADLINE`].
async fn drain(running: Running) {
    let Running {
        serial_tasks,
        gpio_tasks,
        spooler_task,
        acks_flushed,
        source_task,
        pipeline_task,
        dispatcher,
        sinks_closing,
        sink_tasks,
        writer_stop,
        writer_task,
    } = running;
    let drain = async {
        for task in serial_tasks.into_iter().chain(gpio_tasks) {
            let _ = task.await;
        }
        // The source stops handing on messages; the spooler commits and acknowledges what it
        // has; then the source can disconnect.
        let _ = spooler_task.await;
        acks_flushed.cancel();
        let _ = source_task.await;
        let _ = pipeline_task.await;
        let _ = dispatcher.await;
        sinks_closing.cancel();
        for task in sink_tasks {
            let _ = task.await;
        }
        // Whatever InfluxDB has not taken yet stays in the spool for the next start.
        writer_stop.cancel();
        if let Some(task) = writer_task {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(DRAIN_DEADLINE, drain).await.is_err() {
        tracing::error!(deadline_secs = DRAIN_DEADLINE.as_secs(), "shutdown deadline passed with alerts or telemetry still pending");
    }
}

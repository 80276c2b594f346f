//! `stack bench`: the pipeline's figures on this machine, side by side with
//! PostgreSQL's own limit, measured on a fresh local stack with whatever
//! profile the `stack` binary was built with (use `--release`).
//!
//! # Layout
//! Each phase is one function, run in this order on one stack, so a phase's
//! load is gone before the next one measures:
//! 1. [`relay_and_catch_up`]: Connect and the projector stopped, a backlog
//!    written; Connect started: events/s onto the topics (counted in the
//!    broker's storage). Then a separate projector per batch size (1, 100,
//!    1000) with its own group and empty read database re-reads the whole
//!    backlog: events/s from its first to its last inbox row.
//! 2. [`writer_vs_pgbench`]: `writer load --mix place` against `pgbench` with
//!    `bench/place_order.sql` (the same statements) at 1, 4 and 16 clients.
//! 3. [`end_to_end`]: `writer load --mix full` at fixed offered rates;
//!    per event, read-DB `applied_at` (clock_timestamp at the batch's inbox
//!    insert, just before commit) minus `occurred_at` (the writer's clock when
//!    its transaction began): p50/p95/p99/max. CPU and peak RSS of every
//!    process are sampled over the run at 1,000 events/s.
//! 4. [`recovery`]: 1,000 events/s, the projector SIGKILLed and restarted;
//!    seconds from the kill until no event is applied more than 1 s late.
//!
//! The results render as Markdown and an SVG plot ([`render_markdown`],
//! [`render_svg`]); nothing here asserts a speed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Component, Result, Stack, StackError};

/// How big a run is.
#[derive(Debug, Clone)]
pub struct BenchSpec {
    /// Events of the relay / catch-up backlog.
    pub backlog: u64,
    /// Seconds of each writer and pgbench run.
    pub writer_seconds: u64,
    /// Offered rates (events/s) of the end-to-end runs, and seconds of each.
    pub rates: Vec<u64>,
    pub rate_seconds: u64,
    /// Seconds of the run at 1,000 events/s (the target's 60 s).
    pub sustained_seconds: u64,
    /// Longest a batch-size-1 catch-up is measured (it is slow by nature).
    pub batch_one_seconds: u64,
    pub recovery_seconds: u64,
    pub clients: Vec<usize>,
    /// Batch sizes of the catch-up runs.
    pub catch_up_batches: Vec<usize>,
    /// What to measure ([`Phase::ALL`] for a whole run).
    pub phases: Vec<Phase>,
    /// Projector instances in one consumer group: in each catch-up run, and
    /// (the main one and replicas) during the end-to-end and recovery runs.
    pub projectors: u32,
}

/// A part of a run. A lever's run (`stack bench --phases …`) measures what
/// the lever can move; the writer-vs-pgbench row at 4 clients, the
/// machine's yardstick, is measured in every run (the writer phase measures
/// every client count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The relay draining a backlog, then catch-up runs over it.
    Backlog,
    Writer,
    EndToEnd,
    Recovery,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Backlog,
        Phase::Writer,
        Phase::EndToEnd,
        Phase::Recovery,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Backlog => "backlog",
            Phase::Writer => "writer",
            Phase::EndToEnd => "e2e",
            Phase::Recovery => "recovery",
        }
    }
}

impl std::str::FromStr for Phase {
    type Err = StackError;
    fn from_str(s: &str) -> Result<Self> {
        Phase::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                StackError::BadInput(format!(
                    "phase {s:?}: one of {}",
                    Phase::ALL.map(Phase::name).join(", ")
                ))
            })
    }
}

impl BenchSpec {
    pub fn full() -> Self {
        Self {
            backlog: 100_000,
            writer_seconds: 15,
            // Fine enough steps to find the knee (p99 ≤ 500 ms, sustained).
            rates: vec![100, 250, 500, 750, 1000, 1500, 2000],
            rate_seconds: 20,
            sustained_seconds: 60,
            batch_one_seconds: 30,
            recovery_seconds: 30,
            clients: vec![1, 4, 16],
            catch_up_batches: vec![1, 100, 1000],
            phases: Phase::ALL.to_vec(),
            projectors: 1,
        }
    }

    /// A smoke run: every phase, tiny sizes (for tests).
    pub fn quick() -> Self {
        Self {
            backlog: 1_500,
            writer_seconds: 2,
            rates: vec![100, 300],
            rate_seconds: 3,
            sustained_seconds: 3,
            batch_one_seconds: 3,
            recovery_seconds: 8,
            clients: vec![1, 4],
            catch_up_batches: vec![1, 100, 1000],
            phases: Phase::ALL.to_vec(),
            projectors: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriterRow {
    pub clients: usize,
    pub writer_commands_per_second: f64,
    pub pgbench_tps: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchUpRow {
    pub batch_size: usize,
    pub events: u64,
    pub events_per_second: f64,
    /// Share of one core each process used while this catch-up ran (100 = one core).
    pub broker_cpu_percent: f64,
    pub projector_cpu_percent: f64,
    pub postgres_cpu_percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyRow {
    pub offered_rate: u64,
    pub achieved_rate: f64,
    pub seconds: u64,
    pub events: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Where the milliseconds go, per event (p50 and p99): from the commit
    /// (`occurred_at`) until a `read_committed` reader of the topics
    /// received it (the relay: WAL, Debezium's poll, Connect's transaction),
    /// and from then until the projector applied it (its fetch, batch and
    /// read-database transaction). Absent in runs older than the split.
    #[serde(default)]
    pub relay_p50_ms: Option<f64>,
    #[serde(default)]
    pub relay_p99_ms: Option<f64>,
    #[serde(default)]
    pub projector_p50_ms: Option<f64>,
    #[serde(default)]
    pub projector_p99_ms: Option<f64>,
    /// The saga's hop, per order placed in the run: from `OrderPlaced` to
    /// `OrderConfirmed` (both commit times, in the write database's outbox:
    /// relay, inventory, its relay, reactor), p50 and p99. Absent in runs
    /// older than the saga.
    #[serde(default)]
    pub confirmed_p50_ms: Option<f64>,
    #[serde(default)]
    pub confirmed_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceRow {
    pub component: String,
    pub cpu_seconds_per_million_events: f64,
    pub peak_rss_mb: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub machine: String,
    /// When the run measured (UTC), so a re-rendered report keeps its date.
    #[serde(default)]
    pub measured_at: String,
    pub relay_events: u64,
    pub relay_events_per_second: f64,
    pub writer: Vec<WriterRow>,
    pub catch_up: Vec<CatchUpRow>,
    pub latency: Vec<LatencyRow>,
    pub resources: Vec<ResourceRow>,
    /// The offered rate (events/s) during which `resources` were sampled.
    pub resources_rate: u64,
    pub recovery_seconds: Option<f64>,
    /// Events applied ≥ 1 s late after the kill's stretch had ended (the
    /// load's own lag spikes; see [`RECOVERY_QUIET_SECONDS`]).
    #[serde(default)]
    pub recovery_later_late_events: Option<u64>,
    /// What the run changed against the one before it (`stack bench
    /// --lever TEXT`): the levers table names each run by it.
    #[serde(default)]
    pub lever: String,
}

fn fail(step: &str, detail: impl Into<String>) -> StackError {
    StackError::Bench {
        step: step.into(),
        detail: detail.into(),
    }
}

/// Runs every phase on `stack` (which must be up) and returns the figures.
pub fn run(stack: &Stack, spec: &BenchSpec, progress: &dyn Fn(&str)) -> Result<Results> {
    let mut results = Results {
        machine: machine(Some(stack.state.shape), Some(spec.projectors)),
        measured_at: now_utc(),
        ..Results::default()
    };
    register_customers(stack)?;
    let on = |phase| spec.phases.contains(&phase);
    if on(Phase::Backlog) {
        relay_and_catch_up(stack, spec, &mut results, progress)?;
    }
    let yardstick_only = BenchSpec {
        clients: vec![4],
        ..spec.clone()
    };
    writer_vs_pgbench(
        stack,
        if on(Phase::Writer) {
            spec
        } else {
            &yardstick_only
        },
        &mut results,
        progress,
    )?;
    for n in 2..=spec.projectors {
        progress(&format!("starting projector replica {n}"));
        let url = crate::projector::start_replica(stack, n)?;
        crate::projector::await_assignment(&url, Duration::from_secs(60))?;
    }
    if on(Phase::EndToEnd) {
        end_to_end(stack, spec, &mut results, progress)?;
    }
    if on(Phase::Recovery) {
        recovery(stack, spec, &mut results, progress)?;
    }
    for n in 2..=spec.projectors {
        crate::projector::stop_replica(stack, n);
    }
    Ok(results)
}

/// The customers `bench-c-1` .. `bench-c-100` that the load and
/// `bench/*.sql` place orders for.
pub(crate) fn register_customers(stack: &Stack) -> Result<()> {
    stack.psql(
        crate::WRITE_DB,
        "INSERT INTO customers (customer_id, name, email, street, city, postal_code, country, version, created_at, updated_at) \
         SELECT 'bench-c-' || i, 'Bench', 'bench@example.com', '1 Main St', 'Berlin', '10115', 'DE', 1, now(), now() \
         FROM generate_series(1, 100) i ON CONFLICT DO NOTHING",
    )?;
    Ok(())
}

/// The events of both outboxes once the saga has answered every order: what
/// a fresh projector reading every topic must apply (waits up to 900 s).
pub(crate) fn settled_events(stack: &Stack, step: &str) -> Result<u64> {
    let mut last = crate::saga::Progress::default();
    let settled = crate::wait_until(Duration::from_secs(900), Duration::from_millis(300), || {
        crate::saga::Progress::read(stack).is_ok_and(|p| {
            last = p;
            p.saga_settled()
        })
    });
    if !settled {
        return Err(fail(
            step,
            format!(
                "the saga did not settle within 900 s: the inventory recorded {} of {} order events, \
                 the order reactor {} of {} replies",
                last.inventory_inbox, last.order_events, last.reactor_inbox, last.reservation_events
            ),
        ));
    }
    Ok(last.committed())
}

/// Waits until the topics hold every outbox row: `seen` counts the records
/// `reader` (opened before any event was written) has read so far.
pub(crate) fn await_published(
    stack: &Stack,
    reader: &mut crate::kafka::TopicReader,
    seen: &mut u64,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        *seen += reader.read_to_end(Duration::from_secs(120))?.len() as u64;
        let committed = outbox_events(stack)? as u64;
        if *seen >= committed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(fail(
                "relay",
                format!("{seen} of {committed} events on the topics after {limit:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `writer load` as a child process; `--json` report on stdout.
fn writer_load(stack: &Stack, args: &[&str]) -> Result<Child> {
    crate::bins::writer_command(stack)?
        .args(["--json", "load"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(crate::io_err("starting the writer"))
}

/// `writer load` with every command kind from 4 clients at `rate` commands/s.
fn full_mix_at(stack: &Stack, rate: u64, seconds: u64) -> Result<Child> {
    writer_load(
        stack,
        &[
            "--mix",
            "full",
            "--clients",
            "4",
            "--rate",
            &rate.to_string(),
            "--duration",
            &format!("{seconds}s"),
        ],
    )
}

fn load_report(child: Child, step: &str) -> Result<serde_json::Value> {
    let out = child
        .wait_with_output()
        .map_err(crate::io_err("waiting for writer load"))?;
    if !out.status.success() {
        return Err(fail(
            step,
            format!("writer load exited with {}", out.status),
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| fail(step, format!("writer load report: {e}")))
}

pub(crate) fn sql_number(stack: &Stack, db: &str, sql: &str) -> Result<f64> {
    let out = stack.psql(db, sql)?;
    Ok(out.trim().parse().unwrap_or(0.0))
}

pub(crate) fn outbox_events(stack: &Stack) -> Result<f64> {
    sql_number(stack, crate::WRITE_DB, "SELECT count(*) FROM outbox")
}

/// From `OrderPlaced` to `OrderConfirmed` (commit times, write outbox) of
/// the orders placed between `start` and `end`, p50 and p99 in ms, once
/// every one of them got its reply (up to 300 s); `None`: none was confirmed.
fn confirmation_latency(stack: &Stack, start: &str, end: &str) -> Result<Option<(f64, f64)>> {
    let placed = outbox_events::OrderStatus::Placed;
    let waiting = format!(
        "SELECT count(*) FROM orders WHERE status = '{placed}' AND created_at >= '{start}' AND created_at < '{end}'"
    );
    let answered = crate::wait_until(Duration::from_secs(300), Duration::from_millis(500), || {
        stack
            .psql(crate::WRITE_DB, &waiting)
            .is_ok_and(|n| n.trim() == "0")
    });
    if !answered {
        return Err(StackError::Bench {
            step: "end to end: stock replies".into(),
            detail: "orders of the run still wait for their stock reply after 300 s (stack status)"
                .into(),
        });
    }
    let (p, c) = (
        outbox_events::EventType::OrderPlaced,
        outbox_events::EventType::OrderConfirmed,
    );
    let row = stack.psql(
        crate::WRITE_DB,
        &format!(
            "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.99) WITHIN GROUP (ORDER BY l) \
             FROM (SELECT extract(epoch FROM c.occurred_at - p.occurred_at) * 1000 AS l \
                   FROM outbox p JOIN outbox c ON c.aggregate_type = p.aggregate_type AND c.aggregate_id = p.aggregate_id \
                     AND c.event_type = '{c}' \
                   WHERE p.event_type = '{p}' AND p.occurred_at >= '{start}' AND p.occurred_at < '{end}') x"
        ),
    )?;
    let v: Vec<f64> = row
        .trim()
        .split('|')
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    Ok((v.len() == 3 && v[0] > 0.0).then(|| (v[1], v[2])))
}

/// Waits until the stack has applied every event of both outboxes, the
/// saga's replies included (see [`crate::saga::Progress::read`]).
fn await_caught_up(stack: &Stack, step: &str, limit: Duration) -> Result<()> {
    let mut last = crate::saga::Progress::default();
    let mut error = None;
    // The saga's replies follow the orders: caught up once every consumer
    // has every event of its topics, not when the read side has as many
    // events as the order service's outbox alone.
    let done =
        crate::wait_until(
            limit,
            Duration::from_millis(300),
            || match crate::saga::Progress::read(stack) {
                Ok(progress) => {
                    last = progress;
                    progress.settled()
                }
                Err(e) => {
                    error = Some(e);
                    true
                }
            },
        );
    if let Some(e) = error {
        return Err(e);
    }
    if done {
        return Ok(());
    }
    Err(fail(
        step,
        format!(
            "not caught up within {limit:?}: the projector applied {} of {} events, the inventory {} of {} order events, \
             the order reactor {} of {} replies",
            last.read_inbox,
            last.committed(),
            last.inventory_inbox,
            last.order_events,
            last.reactor_inbox,
            last.reservation_events
        ),
    ))
}

pub(crate) fn relay_and_catch_up(
    stack: &Stack,
    spec: &BenchSpec,
    results: &mut Results,
    progress: &dyn Fn(&str),
) -> Result<()> {
    progress(&format!(
        "relay: writing a backlog of {} events with Connect stopped",
        spec.backlog
    ));
    stack.stop(Component::Projector)?;
    stack.stop(Component::Connect)?;
    // What a consumer sees (read_committed), counted as it arrives.
    // The order service's topics only: the inventory's replies, relayed by
    // its own connector meanwhile, are not part of the backlog.
    let mut topics = crate::kafka::TopicReader::open(stack, &outbox_events::outbox_topics())?;
    let before = topics.read_to_end(Duration::from_secs(120))?.len() as u64;
    let mut on_topics = before;
    let count = spec.backlog.to_string();
    let load = writer_load(
        stack,
        &[
            "--mix",
            "place",
            "--clients",
            "4",
            "--count",
            &count,
            "--duration",
            "30m",
        ],
    )?;
    load_report(load, "relay backlog")?;
    // Every event written so far (the topics are read from the beginning):
    // events of an earlier phase may still have been on their way when
    // `before` was counted.
    let expected = (before + spec.backlog).max(outbox_events(stack)? as u64);
    progress("relay: starting Connect; counting records on the topics");
    stack.start(Component::Connect, &|_| {})?;
    // When the relay's producer created each record of the backlog: a
    // reader that gets the whole backlog in one fetch still measures how
    // long the relay took to publish it.
    let mut stamps: Vec<i64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let records = topics.read_to_end(Duration::from_secs(120))?;
        on_topics += records.len() as u64;
        stamps.extend(records.iter().filter_map(|r| r.timestamp_ms));
        let now = on_topics;
        if now >= expected {
            break;
        }
        if Instant::now() > deadline {
            return Err(fail(
                "relay",
                format!(
                    "{} of {} events on the topics after 600 s",
                    now.saturating_sub(before),
                    spec.backlog
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let (Some(first), Some(last)) = (stamps.iter().min(), stamps.iter().max()) {
        // Events after the first, over the time from the first to the last.
        let events = stamps.len().saturating_sub(1) as u64;
        let seconds = ((last - first) as f64 / 1000.0).max(0.001);
        results.relay_events = events;
        results.relay_events_per_second = events as f64 / seconds;
    }

    let total = settled_events(stack, "relay")?;
    for &batch in &spec.catch_up_batches {
        progress(&format!(
            "catch-up: {} fresh projector(s) re-read {total} events with batch size {batch}",
            spec.projectors
        ));
        let (row, _) = catch_up(stack, spec, batch, total)?;
        results.catch_up.push(row);
    }
    stack.start(Component::Projector, &|_| {})?;
    await_caught_up(
        stack,
        "catch-up of the live projector",
        Duration::from_secs(900),
    )
}

/// A projector of its own (group, read database, batch size) over the whole topics.
/// Returns the row and the read database it filled (left for inspection).
pub(crate) fn catch_up(
    stack: &Stack,
    spec: &BenchSpec,
    batch: usize,
    total: u64,
) -> Result<(CatchUpRow, String)> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let dbname = format!("bench_{batch}_{}", &id[..8]);
    stack.admin_sql(
        "postgres",
        &format!("CREATE DATABASE {dbname} OWNER {}", crate::OWNER_USER),
    )?;
    stack.migrate_read_db(&dbname)?;
    let group = format!("projector-bench-{batch}-{id}");
    let mut children = Vec::new();
    for n in 1..=spec.projectors {
        let log = stack
            .state_dir
            .join(format!("logs/bench-projector-{batch}-{n}.log"));
        let log_file = fs::File::create(&log).map_err(crate::io_err("creating the bench log"))?;
        let child = crate::bins::projector_command(stack)?
            .env("PROJECTOR__DATABASE__DBNAME", &dbname)
            .env("PROJECTOR__KAFKA__GROUP_ID", &group)
            .env("PROJECTOR__BATCH__MAX_RECORDS", batch.to_string())
            .env("PROJECTOR__METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(crate::io_err("starting a bench projector"))?;
        children.push(child);
    }
    let log = stack.state_dir.join("logs/bench-projector-*.log");
    let projector_pids: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
    let broker_pid = stack.pid(Component::Broker).unwrap_or(0);
    let cpu = |pids: &[i32]| {
        pids.iter()
            .filter_map(|p| proc_sample(*p))
            .map(|(t, _)| t)
            .sum::<u64>()
    };
    let postgres_before = postgres_ticks(stack);
    let before = (cpu(&[broker_pid]), cpu(&projector_pids), Instant::now());
    let cap = if batch == 1 {
        Duration::from_secs(spec.batch_one_seconds)
    } else {
        Duration::from_secs(900)
    };
    let started = Instant::now();
    let mut applied_since_first: Option<Instant> = None;
    let stats = loop {
        std::thread::sleep(Duration::from_millis(300));
        let out = stack
            .psql(
                &dbname,
                "SELECT count(*), coalesce(extract(epoch FROM max(applied_at) - min(applied_at)), 0) FROM inbox",
            )
            .unwrap_or_default();
        let mut parts = out.trim().split('|');
        let n: u64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let span: f64 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        if n > 0 && applied_since_first.is_none() {
            applied_since_first = Some(Instant::now());
        }
        let measured_long_enough = applied_since_first.is_some_and(|t| t.elapsed() >= cap);
        if n >= total || measured_long_enough {
            break (n, span);
        }
        if started.elapsed() > cap + Duration::from_secs(900) {
            for child in &mut children {
                let _ = child.kill();
            }
            return Err(fail(
                "catch-up",
                format!(
                    "batch {batch}: {n} of {total} events; see {}",
                    log.display()
                ),
            ));
        }
    };
    let seconds = before.2.elapsed().as_secs_f64().max(0.001);
    let share = |ticks: u64| ticks as f64 / ticks_per_second() / seconds * 100.0;
    // Backends born during the run count from zero; those that ended are lost (few, short).
    let postgres_after = postgres_ticks(stack);
    let postgres_delta: u64 = postgres_after
        .iter()
        .map(|(pid, t)| t.saturating_sub(postgres_before.get(pid).copied().unwrap_or(0)))
        .sum();
    let (broker_cpu_percent, projector_cpu_percent, postgres_cpu_percent) = (
        share(cpu(&[broker_pid]).saturating_sub(before.0)),
        share(cpu(&projector_pids).saturating_sub(before.1)),
        share(postgres_delta),
    );
    for (pid, mut child) in projector_pids.into_iter().zip(children) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = child.wait();
    }
    let (events, span) = stats;
    let row = CatchUpRow {
        batch_size: batch,
        events,
        events_per_second: events.saturating_sub(1) as f64 / span.max(0.001),
        broker_cpu_percent,
        projector_cpu_percent,
        postgres_cpu_percent,
    };
    Ok((row, dbname))
}

pub(crate) fn writer_vs_pgbench(
    stack: &Stack,
    spec: &BenchSpec,
    results: &mut Results,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let db = stack.write_db();
    let seconds = spec.writer_seconds.to_string();
    for &clients in &spec.clients {
        progress(&format!(
            "writer vs pgbench: {clients} clients, {seconds} s each"
        ));
        let c = clients.to_string();
        let report = load_report(
            writer_load(
                stack,
                &[
                    "--mix",
                    "place",
                    "--clients",
                    &c,
                    "--duration",
                    &format!("{seconds}s"),
                ],
            )?,
            "writer load",
        )?;
        let writer = report["commands_per_second"].as_f64().unwrap_or(0.0);
        let threads = clients.min(2).to_string();
        let out = Command::new(format!("{}/pgbench", crate::postgres::PG_BIN))
            .args([
                "-n", "-M", "prepared", "-c", &c, "-j", &threads, "-T", &seconds,
            ])
            .arg("-f")
            .arg(stack.repo.join("bench/place_order.sql"))
            .args([
                "-h",
                &db.host,
                "-p",
                &db.port.to_string(),
                "-U",
                &db.user,
                &db.dbname,
            ])
            .env("PGPASSWORD", &db.password)
            .output()
            .map_err(crate::io_err(
                "running pgbench (apt-get install postgresql-contrib / postgresql-client)",
            ))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let tps = text
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| {
                fail(
                    "pgbench",
                    format!(
                        "no tps in its output: {text} {}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                )
            })?;
        results.writer.push(WriterRow {
            clients,
            writer_commands_per_second: writer,
            pgbench_tps: tps,
        });
        // Their events applied before the next run (unless the live projector
        // is stopped on purpose: `stack bench --scale` grows a history first).
        if stack.pid(Component::Projector).is_some() {
            await_caught_up(stack, "after writer vs pgbench", Duration::from_secs(900))?;
        }
    }
    Ok(())
}

/// CPU ticks of PostgreSQL's processes: the postmaster and its children
/// (backends, WAL sender, ...), by pid.
fn postgres_ticks(stack: &Stack) -> std::collections::HashMap<i32, u64> {
    let Some(postmaster) = stack.pid(Component::Postgres) else {
        return Default::default();
    };
    let mut pids = vec![postmaster];
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')').and_then(|(_, r)| {
                        r.split_whitespace()
                            .nth(1)
                            .and_then(|p| p.parse::<i32>().ok())
                    })
                });
            if parent == Some(postmaster) {
                pids.push(pid);
            }
        }
    }
    pids.into_iter()
        .filter_map(|pid| proc_sample(pid).map(|(ticks, _)| (pid, ticks)))
        .collect()
}

/// CPU ticks (user + system) and peak RSS (kB) of a process, from /proc.
fn proc_sample(pid: i32) -> Option<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: ") S ppid ...".
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((ticks, hwm))
}

fn ticks_per_second() -> f64 {
    // The kernel's USER_HZ; 100 on every Linux this runs on.
    100.0
}

pub(crate) fn end_to_end(
    stack: &Stack,
    spec: &BenchSpec,
    results: &mut Results,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let sustained = spec
        .rates
        .iter()
        .copied()
        .max()
        .map(|m| m.min(1000))
        .unwrap_or(0);
    // Enough stock that every order of the runs is confirmed: the saga's
    // hop is measured on its happy path.
    progress("end to end: stock for the load's SKUs (inventory stock set)");
    crate::saga::seed_stock(stack, 1_000_000_000)?;
    for &rate in &spec.rates {
        let seconds = if rate == sustained {
            spec.sustained_seconds
        } else {
            spec.rate_seconds
        };
        progress(&format!(
            "end to end: {rate} events/s offered for {seconds} s"
        ));
        let start = stack
            .psql(crate::READ_DB, "SELECT clock_timestamp()")?
            .trim()
            .to_owned();
        // Every process of the stack but PostgreSQL (its share is the
        // catch-up's column), the saga's two consumers included.
        let services: Vec<(Component, i32, (u64, u64))> = Component::ALL
            .into_iter()
            .filter(|c| *c != Component::Postgres)
            .filter_map(|c| {
                stack
                    .pid(c)
                    .and_then(|pid| proc_sample(pid).map(|s| (c, pid, s)))
            })
            .collect();
        let watcher = Watcher::start(stack)?;
        let child = full_mix_at(stack, rate, seconds)?;
        let writer_pid = child.id() as i32;
        let sampler = std::thread::spawn(move || {
            let mut last = None;
            while let Some(sample) = proc_sample(writer_pid) {
                last = Some(sample);
                std::thread::sleep(Duration::from_millis(200));
            }
            last
        });
        let report = load_report(child, "end-to-end load")?;
        let writer_sample = sampler.join().ok().flatten();
        let end = stack
            .psql(crate::READ_DB, "SELECT clock_timestamp()")?
            .trim()
            .to_owned();
        await_caught_up(stack, "end to end", Duration::from_secs(900))?;
        let split = watcher.split(stack, &start, &end)?;
        let confirmed = confirmation_latency(stack, &start, &end)?;
        let events = report["events"].as_u64().unwrap_or(0);
        let row = stack.psql(
            crate::READ_DB,
            &format!(
                "SELECT count(*), \
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY l), percentile_cont(0.95) WITHIN GROUP (ORDER BY l), \
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l) \
                 FROM (SELECT extract(epoch FROM applied_at - occurred_at) * 1000 AS l FROM inbox \
                       WHERE occurred_at >= '{start}' AND occurred_at < '{end}') x"
            ),
        )?;
        let v: Vec<f64> = row
            .trim()
            .split('|')
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        if v.len() == 5 {
            results.latency.push(LatencyRow {
                offered_rate: rate,
                achieved_rate: events as f64 / seconds as f64,
                seconds,
                events: v[0] as u64,
                p50_ms: v[1],
                p95_ms: v[2],
                p99_ms: v[3],
                max_ms: v[4],
                relay_p50_ms: split.map(|s| s.0),
                relay_p99_ms: split.map(|s| s.1),
                projector_p50_ms: split.map(|s| s.2),
                projector_p99_ms: split.map(|s| s.3),
                confirmed_p50_ms: confirmed.map(|c| c.0),
                confirmed_p99_ms: confirmed.map(|c| c.1),
            });
        }
        if rate == sustained && events > 0 {
            results.resources_rate = rate;
            let per_million = |ticks: u64| ticks as f64 / ticks_per_second() / events as f64 * 1e6;
            for (component, pid, (t0, _)) in services {
                if let Some((t1, hwm)) = proc_sample(pid) {
                    results.resources.push(ResourceRow {
                        component: component.to_string(),
                        cpu_seconds_per_million_events: per_million(t1.saturating_sub(t0)),
                        peak_rss_mb: hwm as f64 / 1024.0,
                    });
                }
            }
            if let Some((ticks, hwm)) = writer_sample {
                results.resources.push(ResourceRow {
                    component: "writer (load)".into(),
                    cpu_seconds_per_million_events: per_million(ticks),
                    peak_rss_mb: hwm as f64 / 1024.0,
                });
            }
        }
    }
    Ok(())
}

/// A `read_committed` reader of the topics on a thread of its own during an
/// end-to-end run: when each event became visible to consumers.
struct Watcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<(String, std::time::SystemTime)>>>,
}

impl Watcher {
    fn start(stack: &Stack) -> Result<Self> {
        let mut reader =
            crate::kafka::TopicReader::open_at_end(stack, &crate::kafka::outbox_topics(stack)?)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || reader.watch(&flag));
        // The reader resolves "the end" at its first fetch: before the load.
        std::thread::sleep(Duration::from_secs(1));
        Ok(Self { stop, thread })
    }

    /// p50 and p99 of commit → visible and of visible → applied (ms), over
    /// the events that occurred in [`start`, `end`).
    fn split(self, stack: &Stack, start: &str, end: &str) -> Result<Option<(f64, f64, f64, f64)>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = self
            .thread
            .join()
            .map_err(|_| fail("end to end", "the topic watcher panicked"))??;
        let visible: std::collections::HashMap<String, f64> = seen
            .into_iter()
            .filter_map(|(id, at)| {
                at.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| (id, d.as_secs_f64() * 1000.0))
            })
            .collect();
        let rows = stack.psql(
            crate::READ_DB,
            &format!(
                "SELECT event_id, extract(epoch FROM occurred_at) * 1000, extract(epoch FROM applied_at) * 1000 \
                 FROM inbox WHERE occurred_at >= '{start}' AND occurred_at < '{end}'"
            ),
        )?;
        let (mut relay, mut projector) = (Vec::new(), Vec::new());
        for line in rows.lines() {
            let f: Vec<&str> = line.split('|').collect();
            let (Some(id), Some(occurred), Some(applied)) = (
                f.first(),
                f.get(1).and_then(|v| v.parse::<f64>().ok()),
                f.get(2).and_then(|v| v.parse::<f64>().ok()),
            ) else {
                continue;
            };
            if let Some(at) = visible.get(*id) {
                relay.push(at - occurred);
                projector.push(applied - at);
            }
        }
        if relay.is_empty() {
            return Ok(None);
        }
        let pct = |v: &mut Vec<f64>, q: f64| {
            v.sort_by(f64::total_cmp);
            v[((v.len() - 1) as f64 * q).round() as usize]
        };
        Ok(Some((
            pct(&mut relay, 0.5),
            pct(&mut relay, 0.99),
            pct(&mut projector, 0.5),
            pct(&mut projector, 0.99),
        )))
    }
}

fn recovery(
    stack: &Stack,
    spec: &BenchSpec,
    results: &mut Results,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let seconds = spec.recovery_seconds;
    progress(&format!(
        "recovery: 1000 events/s for {seconds} s, the projector SIGKILLed after {} s",
        seconds / 3
    ));
    let child = full_mix_at(stack, 1000, seconds)?;
    std::thread::sleep(Duration::from_secs(seconds / 3));
    let killed_at = stack
        .psql(crate::READ_DB, "SELECT clock_timestamp()")?
        .trim()
        .to_owned();
    stack.kill(Component::Projector)?;
    stack.start(Component::Projector, &|_| {})?;
    load_report(child, "recovery load")?;
    await_caught_up(stack, "recovery", Duration::from_secs(900))?;
    // The kill's stretch of late events (applied ≥ 1 s after they occurred)
    // ends at the first gap of RECOVERY_QUIET_SECONDS without one: near
    // saturation the load has lag spikes of its own, and a spike long after
    // the restart is not the kill's doing. Those are counted apart.
    let row = stack.psql(
        crate::READ_DB,
        &format!(
            "WITH late AS (SELECT applied_at FROM inbox \
                 WHERE applied_at > '{killed_at}' AND applied_at - occurred_at >= interval '1 second'), \
             marked AS (SELECT applied_at, applied_at - lag(applied_at) OVER (ORDER BY applied_at) \
                 >= interval '{RECOVERY_QUIET_SECONDS} seconds' AS breaks FROM late), \
             cut AS (SELECT coalesce(min(applied_at), 'infinity') AS at FROM marked WHERE breaks) \
             SELECT coalesce(extract(epoch FROM (SELECT max(applied_at) FROM marked, cut WHERE applied_at < cut.at) \
                        - '{killed_at}'::timestamptz), 0), \
                    (SELECT count(*) FROM marked, cut WHERE applied_at >= cut.at)"
        ),
    )?;
    let mut fields = row.trim().split('|');
    results.recovery_seconds = fields.next().and_then(|v| v.parse().ok());
    results.recovery_later_late_events = fields.next().and_then(|v| v.parse().ok());
    Ok(())
}

/// Seconds without a late event that end the stretch a projector kill caused.
const RECOVERY_QUIET_SECONDS: u64 = 5;

/// What the figures were measured on.
/// What a run measured on; `shape` and `projectors` when one stack of one
/// shape ran it all.
pub(crate) fn machine(shape: Option<crate::Shape>, projectors: Option<u32>) -> String {
    let version = |pom: &str, property: &str| {
        crate::tools::pinned_version(&crate::repo_root(), pom, property)
            .unwrap_or_else(|| "?".into())
    };
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease");
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {}, {profile} build; PostgreSQL 15, Apache Kafka {kafka} (KRaft{nodes}), \
         Kafka Connect {kafka} distributed with exactly-once source + Debezium {debezium}{projectors}, every component on this one machine",
        kernel.trim(),
        nodes = match shape {
            None => String::new(),
            Some(shape) if shape.brokers == 1 => format!(", one node, {} partitions per topic", shape.partitions),
            Some(shape) => format!(
                ", {} nodes, replication factor {}, min.insync.replicas={}, {} partitions per topic",
                shape.brokers,
                shape.replication_factor(),
                shape.min_insync_replicas(),
                shape.partitions
            ),
        },
        projectors = match projectors {
            None => String::new(),
            Some(1) => ", one projector instance".to_owned(),
            Some(n) => format!(", {n} projector instances"),
        },
        kafka = version("kafka/pom.xml", "kafka.version"),
        debezium = version("debezium/pom.xml", "debezium.version"),
    )
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

/// The results as Markdown tables.
pub fn render_markdown(
    r: &Results,
    baseline: Option<&Results>,
    command: &str,
    when: &str,
    plot: &str,
) -> String {
    let mut md = format!("Measured {when} with `{command}` on: {}.\n\n", r.machine);
    md.push_str("### Writer vs PostgreSQL's limit (same statements: `bench/place_order.sql`)\n\n");
    md.push_str(
        "| clients | writer commands/s | pgbench tps | writer / pgbench |\n|---:|---:|---:|---:|\n",
    );
    for w in &r.writer {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} | {} |\n",
            w.clients,
            w.writer_commands_per_second,
            w.pgbench_tps,
            ratio(w.writer_commands_per_second, w.pgbench_tps)
        ));
    }
    md.push_str(&format!(
        "\n### Relay (Debezium → topics)\n\n{} events of a backlog on the topics at **{:.0} events/s** (first to last record).\n",
        r.relay_events, r.relay_events_per_second
    ));
    md.push_str("\n### Projector catch-up (a fresh group re-reads every topic into an empty read database)\n\n");
    md.push_str(
        "| batch size | events | events/s | vs writer at 4 clients | broker CPU % | projector CPU % | PostgreSQL CPU % |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let writer4 = r
        .writer
        .iter()
        .find(|w| w.clients == 4)
        .map_or(0.0, |w| w.writer_commands_per_second);
    for c in &r.catch_up {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.0} | {:.0} | {:.0} |\n",
            c.batch_size,
            c.events,
            c.events_per_second,
            ratio(c.events_per_second, writer4),
            c.broker_cpu_percent,
            c.projector_cpu_percent,
            c.postgres_cpu_percent
        ));
    }
    md.push_str("\n### End to end: commit → read model, per event\n\n");
    md.push_str(
        "The last four columns split each event's time: commit → visible on the topics (the relay) and \
         visible → applied (the projector), p50 / p99 of each. The saga's hop per order placed, \
         `OrderPlaced` → `OrderConfirmed` (commit to commit: the relay, the inventory, its relay, the \
         order reactor), is in the last two (– in runs before the saga).\n\n",
    );
    md.push_str("| offered events/s | achieved | seconds | events | p50 ms | p95 ms | p99 ms | max ms | relay p50 | relay p99 | projector p50 | projector p99 | placed → confirmed p50 | placed → confirmed p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.0}"));
    for l in &r.latency {
        md.push_str(&format!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            l.offered_rate,
            l.achieved_rate,
            l.seconds,
            l.events,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            l.max_ms,
            ms(l.relay_p50_ms),
            ms(l.relay_p99_ms),
            ms(l.projector_p50_ms),
            ms(l.projector_p99_ms),
            ms(l.confirmed_p50_ms),
            ms(l.confirmed_p99_ms),
        ));
    }
    md.push_str(&format!(
        "\nKnee (the highest offered rate sustained, ≥ {:.0} % achieved, with p99 ≤ {KNEE_P99_MS:.0} ms): **{}**.\n",
        KNEE_ACHIEVED * 100.0,
        knee(r).map_or("none of the rates".to_owned(), |k| format!("{k} events/s"))
    ));
    md.push_str(&format!(
        "\n### Recovery\n\nProjector SIGKILLed and restarted under 1,000 events/s: {}.\n",
        match (r.recovery_seconds, r.recovery_later_late_events) {
            (None, _) => "not measured".to_owned(),
            (Some(0.0), Some(0)) =>
                "**no event** was applied 1 s or more after it occurred, from the kill to the end of the run".to_owned(),
            (Some(s), Some(0)) => format!("lag back under 1 s after **{s:.1} s**, and no event 1 s late after that"),
            (Some(s), Some(n)) => format!(
                "lag back under 1 s after **{s:.1} s** ({n} events applied 1 s or more late later on, \
                 after {RECOVERY_QUIET_SECONDS} s or more without one: the load's own lag spikes)"
            ),
            // Runs saved before the stretch was measured.
            (Some(s), None) => format!("lag back under 1 s after **{s:.1} s**"),
        }
    ));
    md.push_str(&format!(
        "\n### Resources per million events (sampled during the {} events/s run)\n\n",
        r.resources_rate
    ));
    md.push_str("| process | CPU s / 1M events | peak RSS MB |\n|---|---:|---:|\n");
    for x in &r.resources {
        md.push_str(&format!(
            "| {} | {:.0} | {:.0} |\n",
            x.component, x.cpu_seconds_per_million_events, x.peak_rss_mb
        ));
    }
    md.push_str(&render_targets(r));
    if let Some(before) = baseline {
        md.push_str(&render_comparison(r, before));
    }
    md.push_str(&format!("\n![latency and catch-up]({plot})\n"));
    md
}

/// The knee's latency bound, and the share of the offered rate that counts
/// as sustained.
const KNEE_P99_MS: f64 = 500.0;
const KNEE_ACHIEVED: f64 = 0.97;

/// The highest offered rate of a run that the pipeline sustained with p99
/// within [`KNEE_P99_MS`]; rates above a failing one do not count.
pub fn knee(r: &Results) -> Option<u64> {
    let mut rows: Vec<&LatencyRow> = r.latency.iter().collect();
    rows.sort_by_key(|l| l.offered_rate);
    rows.into_iter()
        .take_while(|l| {
            l.p99_ms <= KNEE_P99_MS && l.achieved_rate >= l.offered_rate as f64 * KNEE_ACHIEVED
        })
        .map(|l| l.offered_rate)
        .last()
}

/// The performance targets (docs/benchmarks.md, "Targets") against this run:
/// each one's figure and whether it was met. Throughputs are compared as
/// ratios to this run's pgbench at 4 clients.
fn render_targets(r: &Results) -> String {
    let mut md = String::from("\n### Targets\n\n| target | this run | |\n|---|---|---|\n");
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let mut row = |target: &str, figure: String, met: Option<bool>| {
        md.push_str(&format!(
            "| {target} | {figure} | {} |\n",
            met.map_or("not measured", verdict)
        ));
    };
    let latency = |rate: u64| r.latency.iter().find(|l| l.offered_rate == rate);
    for (rate, p50, p99) in [(1000, Some(50.0), 150.0), (2000, None, 300.0)] {
        let target = match p50 {
            Some(p50) => format!(
                "end to end at {rate} events/s: p50 ≤ {p50:.0} ms, p99 ≤ {p99:.0} ms, ≥ {:.0}/s achieved",
                rate as f64 * 0.99
            ),
            None => format!(
                "end to end at {rate} events/s: p99 ≤ {p99:.0} ms, ≥ {:.0}/s achieved",
                rate as f64 * 0.99
            ),
        };
        match latency(rate) {
            Some(l) => row(
                &target,
                format!(
                    "{:.0}/s achieved, p50 {:.0} ms, p99 {:.0} ms",
                    l.achieved_rate, l.p50_ms, l.p99_ms
                ),
                Some(
                    l.achieved_rate >= rate as f64 * 0.99
                        && p50.is_none_or(|p| l.p50_ms <= p)
                        && l.p99_ms <= p99,
                ),
            ),
            None => row(&target, "–".into(), None),
        }
    }
    let writer4 = r
        .writer
        .iter()
        .find(|w| w.clients == 4)
        .map_or(0.0, |w| w.writer_commands_per_second);
    row(
        "knee (p99 ≤ 500 ms, sustained) ≥ the writer's own limit at 4 clients",
        format!(
            "{}, writer {writer4:.0} commands/s",
            knee(r).map_or("below every rate".to_owned(), |k| format!("{k} events/s"))
        ),
        (!r.latency.is_empty()).then(|| knee(r).is_some_and(|k| k as f64 >= writer4)),
    );
    row(
        "relay, 100k-event backlog: ≥ 15000 events/s",
        format!("{:.0} events/s", r.relay_events_per_second),
        Some(r.relay_events_per_second >= 15_000.0),
    );
    let pgbench4 = r
        .writer
        .iter()
        .find(|w| w.clients == 4)
        .map_or(0.0, |w| w.pgbench_tps);
    match r.catch_up.iter().find(|c| c.batch_size == 1000) {
        Some(c) if pgbench4 > 0.0 => row(
            "projector catch-up at batch 1000: ≥ 5× pgbench at 4 clients",
            format!(
                "{:.0} events/s, {}",
                c.events_per_second,
                ratio(c.events_per_second, pgbench4)
            ),
            Some(c.events_per_second >= 5.0 * pgbench4),
        ),
        _ => row(
            "projector catch-up at batch 1000: ≥ 5× pgbench at 4 clients",
            "–".into(),
            None,
        ),
    }
    row(
        "writer ≥ 1.0× pgbench (same statements) at each client count",
        r.writer
            .iter()
            .map(|w| ratio(w.writer_commands_per_second, w.pgbench_tps))
            .collect::<Vec<_>>()
            .join(" / "),
        Some(
            !r.writer.is_empty()
                && r.writer
                    .iter()
                    .all(|w| w.writer_commands_per_second >= w.pgbench_tps),
        ),
    );
    row(
        "projector SIGKILL → lag < 1 s again: ≤ 3 s",
        r.recovery_seconds
            .map_or("–".into(), |s| format!("{s:.1} s")),
        r.recovery_seconds.map(|s| s <= 3.0),
    );
    let cpu: f64 = r
        .resources
        .iter()
        .map(|x| x.cpu_seconds_per_million_events)
        .sum();
    row(
        "CPU-seconds per million events, all components: ≤ 450",
        format!("{cpu:.0}"),
        (!r.resources.is_empty()).then_some(cpu <= 450.0),
    );
    md
}

/// The figures of this run beside those of a baseline run
/// ([`BASELINE_FILE`]), with their ratio, and the ratio again
/// with the machine's speed taken out: each run's pgbench at 4 clients (the
/// same statements on the same box, measured in that run) is the yardstick,
/// throughputs divided by it, times and CPU-seconds multiplied by it.
fn render_comparison(now: &Results, before: &Results) -> String {
    let pgbench4 = |r: &Results| {
        r.writer
            .iter()
            .find(|w| w.clients == 4)
            .map_or(0.0, |w| w.pgbench_tps)
    };
    let speed = if pgbench4(before) > 0.0 {
        pgbench4(now) / pgbench4(before)
    } else {
        0.0
    };
    let mut md = format!(
        "\n### Side by side with the baseline run\n\nBefore: {}.\n\n\
         pgbench at 4 clients, the machine's yardstick for throughput: {:.0} tps before, {:.0} now ({:.2}×). \
         The last column divides the throughputs of the pipeline's stages by it and multiplies the CPU-seconds \
         per event by it (a slower machine spends more of them on the same work); latencies at a fixed offered \
         rate get no such correction.\n\n\
         | figure | before | now | now / before | same, machine-normalized |\n|---|---:|---:|---:|---:|\n",
        before.machine,
        pgbench4(before),
        pgbench4(now),
        speed
    );
    push_row(
        &mut md,
        speed,
        "relay, events/s".into(),
        before.relay_events_per_second,
        now.relay_events_per_second,
        0,
        Norm::Throughput,
    );
    for c in &now.catch_up {
        if let Some(b) = before
            .catch_up
            .iter()
            .find(|b| b.batch_size == c.batch_size)
        {
            push_row(
                &mut md,
                speed,
                format!("catch-up at batch {}, events/s", c.batch_size),
                b.events_per_second,
                c.events_per_second,
                0,
                Norm::Throughput,
            );
        }
    }
    for l in &now.latency {
        if let Some(b) = before
            .latency
            .iter()
            .find(|b| b.offered_rate == l.offered_rate)
        {
            let rate = l.offered_rate;
            push_row(
                &mut md,
                speed,
                format!("{rate}/s offered: achieved"),
                b.achieved_rate,
                l.achieved_rate,
                0,
                Norm::None,
            );
            push_row(
                &mut md,
                speed,
                format!("{rate}/s offered: p50 ms"),
                b.p50_ms,
                l.p50_ms,
                0,
                Norm::None,
            );
            push_row(
                &mut md,
                speed,
                format!("{rate}/s offered: p99 ms"),
                b.p99_ms,
                l.p99_ms,
                0,
                Norm::None,
            );
        }
    }
    if let (Some(b), Some(n)) = (before.recovery_seconds, now.recovery_seconds) {
        push_row(
            &mut md,
            speed,
            "projector SIGKILL → lag < 1 s, s".into(),
            b,
            n,
            1,
            Norm::None,
        );
    }
    for x in &now.resources {
        if let Some(b) = before.resources.iter().find(|b| b.component == x.component) {
            push_row(
                &mut md,
                speed,
                format!("{} CPU s / 1M events", x.component),
                b.cpu_seconds_per_million_events,
                x.cpu_seconds_per_million_events,
                0,
                Norm::Cost,
            );
            md_rss(&mut md, &x.component, b.peak_rss_mb, x.peak_rss_mb);
        }
    }
    let total = |r: &Results| -> f64 {
        r.resources
            .iter()
            .map(|x| x.cpu_seconds_per_million_events)
            .sum()
    };
    push_row(
        &mut md,
        speed,
        "all measured processes, CPU s / 1M events".into(),
        total(before),
        total(now),
        0,
        Norm::Cost,
    );
    md
}

/// One row of the comparison; `throughput`: a stage's rate, also shown
/// normalized (divided by the machine's speed); other figures are not.
/// How a comparison row takes the machine's speed out.
#[derive(Debug, Clone, Copy)]
enum Norm {
    /// Work per second: divided by the speed.
    Throughput,
    /// CPU-seconds per event: a slower machine spends more on the same work,
    /// so multiplied by the speed.
    Cost,
    /// Latencies and sizes: not normalized.
    None,
}

fn push_row(
    md: &mut String,
    speed: f64,
    figure: String,
    before: f64,
    now: f64,
    digits: usize,
    norm: Norm,
) {
    let normalized = match norm {
        Norm::Throughput => ratio(now / speed.max(f64::MIN_POSITIVE), before),
        Norm::Cost => ratio(now * speed, before),
        Norm::None => String::new(),
    };
    md.push_str(&format!(
        "| {figure} | {before:.digits$} | {now:.digits$} | {} | {normalized} |\n",
        ratio(now, before)
    ));
}

fn md_rss(md: &mut String, component: &str, before: f64, now: f64) {
    md.push_str(&format!(
        "| {component} peak RSS MB | {before:.0} | {now:.0} | {} | |\n",
        ratio(now, before)
    ));
}

/// Latency percentiles against offered rate, and catch-up rate against batch size.
pub fn render_svg(r: &Results, before: Option<&Results>, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let before_latency: &[LatencyRow] = before.map_or(&[], |b| &b.latency);
        let max_rate = r
            .latency
            .iter()
            .chain(before_latency)
            .map(|l| l.offered_rate)
            .max()
            .unwrap_or(100) as f64
            * 1.1;
        // Percentiles only (the max is in the table): the knee's p99 must stay readable.
        let max_ms = r
            .latency
            .iter()
            .chain(before_latency)
            .map(|l| l.p99_ms)
            .fold(10.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&left)
            .caption("commit → read model latency", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..max_rate, 0.0..max_ms)?;
        chart
            .configure_mesh()
            .x_desc("offered events/s")
            .y_desc("ms")
            .draw()?;
        type Series = (&'static str, fn(&LatencyRow) -> f64, RGBColor);
        let series: [Series; 3] = [
            ("p50", |l| l.p50_ms, BLUE),
            ("p95", |l| l.p95_ms, GREEN),
            ("p99", |l| l.p99_ms, RED),
        ];
        // The baseline run's curves, thin and pale, behind this run's.
        if !before_latency.is_empty() {
            for (name, value, color) in series {
                let points: Vec<(f64, f64)> = before_latency
                    .iter()
                    .map(|l| (l.offered_rate as f64, value(l)))
                    .collect();
                let pale = color.mix(0.35);
                chart
                    .draw_series(LineSeries::new(points, pale.stroke_width(1)))?
                    .label(format!("{name} before"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], pale));
            }
        }
        for (name, value, color) in series {
            let points: Vec<(f64, f64)> = r
                .latency
                .iter()
                .map(|l| (l.offered_rate as f64, value(l)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE)
            .draw()?;

        let before_catch_up: &[CatchUpRow] = before.map_or(&[], |b| &b.catch_up);
        let max_eps = r
            .catch_up
            .iter()
            .chain(before_catch_up)
            .map(|c| c.events_per_second)
            .fold(100.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&right)
            .caption("projector catch-up", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((0.5f64..2000.0).log_scale(), 0.0..max_eps)?;
        chart
            .configure_mesh()
            .x_desc("batch size (records per transaction)")
            .y_desc("events/s")
            .draw()?;
        let points: Vec<(f64, f64)> = r
            .catch_up
            .iter()
            .map(|c| (c.batch_size as f64, c.events_per_second))
            .collect();
        if !before_catch_up.is_empty() {
            let old: Vec<(f64, f64)> = before_catch_up
                .iter()
                .map(|c| (c.batch_size as f64, c.events_per_second))
                .collect();
            chart
                .draw_series(LineSeries::new(old, BLUE.mix(0.35).stroke_width(1)))?
                .label("before")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE.mix(0.35)));
        }
        chart
            .draw_series(LineSeries::new(points.clone(), BLUE.stroke_width(2)))?
            .label("now")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, BLUE.filled())))?;
        if !before_catch_up.is_empty() {
            chart
                .configure_series_labels()
                .border_style(BLACK)
                .background_style(WHITE)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| fail("plot", e.to_string()))
}

/// Writes the Markdown between the markers of `docs/benchmarks.md` (the
/// analysis around them is kept) and the plot beside it.
pub fn write_report(r: &Results, out_dir: &Path, command: &str) -> Result<PathBuf> {
    fs::create_dir_all(out_dir)
        .map_err(crate::io_err(format!("creating {}", out_dir.display())))?;
    let svg = out_dir.join("benchmarks.svg");
    let baseline = load_baseline(out_dir);
    render_svg(r, baseline.as_ref(), &svg)?;
    let when = if r.measured_at.is_empty() {
        now_utc()
    } else {
        r.measured_at.clone()
    };
    let generated = render_markdown(r, baseline.as_ref(), command, &when, "benchmarks.svg");
    let md_path = out_dir.join("benchmarks.md");
    write_section(&md_path, "bench", "stack bench", &generated)?;
    fs::write(
        out_dir.join("benchmarks.json"),
        serde_json::to_string_pretty(r).unwrap_or_default(),
    )
    .map_err(crate::io_err("writing benchmarks.json"))?;
    Ok(md_path)
}

/// The baseline's file name.
pub const BASELINE_FILE: &str = "benchmarks-before.json";

/// The baseline run the report compares with, kept as
/// `benchmarks-before.json` beside the report, if present (docs/: the last
/// run before the performance work of issue 18).
pub fn load_baseline(dir: &Path) -> Option<Results> {
    let text = fs::read_to_string(dir.join(BASELINE_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// One row per run of `runs` (in order: the first is the baseline, each
/// later one adds a lever), with the figures a lever can move, throughputs
/// also as ratios to the run's own pgbench at 4 clients and CPU-seconds
/// times it over the first run's (the machine's speed taken out).
pub fn render_levers(runs: &[(String, Results)]) -> String {
    let pgbench4 = |r: &Results| {
        r.writer
            .iter()
            .find(|w| w.clients == 4)
            .map_or(0.0, |w| w.pgbench_tps)
    };
    let base = runs.first().map_or(0.0, |(_, r)| pgbench4(r));
    let mut md = String::from(
        "| run | lever | pgbench tps (4 clients) | relay events/s (× pgbench) | catch-up b1000 events/s (× pgbench) | \
         e2e 100/s p50 / p99 ms | e2e 1000/s achieved, p50 / p99 ms | placed → confirmed p50 / p99 ms at 100/s, 1000/s | \
         recovery s | CPU s / 1M events (normalized) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let dash = || "–".to_owned();
    for (name, r) in runs {
        let pg = pgbench4(r);
        let catch_up = r
            .catch_up
            .iter()
            .find(|c| c.batch_size == 1000)
            .map_or_else(dash, |c| {
                format!(
                    "{:.0} ({})",
                    c.events_per_second,
                    ratio(c.events_per_second, pg)
                )
            });
        let at = |rate: u64| r.latency.iter().find(|l| l.offered_rate == rate);
        let low = at(100).map_or_else(dash, |l| format!("{:.0} / {:.0}", l.p50_ms, l.p99_ms));
        let high = at(1000).map_or_else(dash, |l| {
            format!("{:.0}, {:.0} / {:.0}", l.achieved_rate, l.p50_ms, l.p99_ms)
        });
        let confirmed = |rate: u64| {
            at(rate)
                .and_then(|l| l.confirmed_p50_ms.zip(l.confirmed_p99_ms))
                .map_or_else(dash, |(p50, p99)| format!("{p50:.0} / {p99:.0}"))
        };
        let confirmed = format!("{}, {}", confirmed(100), confirmed(1000));
        let recovery = r.recovery_seconds.map_or_else(dash, |s| format!("{s:.1}"));
        let cpu: f64 = r
            .resources
            .iter()
            .map(|x| x.cpu_seconds_per_million_events)
            .sum();
        let cpu = if r.resources.is_empty() {
            dash()
        } else {
            format!("{cpu:.0} ({:.0})", cpu * pg / base.max(f64::MIN_POSITIVE))
        };
        let relay = if r.relay_events_per_second > 0.0 {
            format!(
                "{:.0} ({})",
                r.relay_events_per_second,
                ratio(r.relay_events_per_second, pg)
            )
        } else {
            dash()
        };
        md.push_str(&format!(
            "| {name} | {} | {pg:.0} | {relay} | {catch_up} | {low} | {high} | {confirmed} | {recovery} | {cpu} |\n",
            if r.lever.is_empty() { "–" } else { &r.lever },
        ));
    }
    md
}

/// Writes [`render_levers`] of the runs in `dir` (`*.json`, in file-name
/// order) between the levers markers of `benchmarks.md` in `out_dir`.
pub fn write_levers(dir: &Path, out_dir: &Path) -> Result<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(crate::io_err(format!("reading {}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut runs = Vec::new();
    for file in files {
        let text = fs::read_to_string(&file)
            .map_err(crate::io_err(format!("reading {}", file.display())))?;
        let results: Results = serde_json::from_str(&text)
            .map_err(|e| fail("levers", format!("{}: {e}", file.display())))?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        runs.push((name, results));
    }
    let md_path = out_dir.join("benchmarks.md");
    write_section(
        &md_path,
        "bench-levers",
        "stack bench --render-levers",
        &render_levers(&runs),
    )?;
    Ok(md_path)
}

/// Replaces the section `name` of the report at `md_path` (between
/// `<!-- name:begin … -->` and `<!-- name:end -->`) with `generated`, keeping
/// the prose around it; appends the section if the report has none yet.
pub(crate) fn write_section(
    md_path: &Path,
    name: &str,
    command: &str,
    generated: &str,
) -> Result<()> {
    let begin =
        format!("<!-- {name}:begin (generated by `{command}`; edit outside the markers) -->");
    let end = format!("<!-- {name}:end -->");
    let existing = fs::read_to_string(md_path).unwrap_or_default();
    let text = match (existing.find(&begin), existing.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{begin}\n{generated}{}", &existing[..b], &existing[e..])
        }
        _ if existing.is_empty() => format!("# Benchmarks\n\n{begin}\n{generated}{end}\n"),
        _ => format!("{existing}\n{begin}\n{generated}{end}\n"),
    };
    fs::write(md_path, text).map_err(crate::io_err(format!("writing {}", md_path.display())))
}

/// UTC date and time, from `date` (the stack avoids a time crate).
pub(crate) fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

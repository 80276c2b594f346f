//! `stack chaos`: the kill-and-restart reliability suite, as a command.
//!
//! Load runs through the real write path while a seeded schedule SIGKILLs
//! every kind of process of the pipeline and starts it again; afterwards the
//! [`oracle`](crate::oracle) compares the read side with the write side.
//! Recovery is each component's own (retries with capped backoff): the suite
//! only restarts a killed process, as a supervisor (systemd, compose's
//! `restart:`) would.
//!
//! # Layout
//! - [`ChaosSpec`]: how long, how many kills, the seed, projector instances,
//!   the offered rate and how many writer processes offer it.
//! - Writers: each writer slot runs `writer load --mix chaos` (every command
//!   kind, ~5% commands the rules refuse) in short segments under a
//!   supervisor thread that restarts it when a segment ends or is killed.
//! - Faults ([`Target`]): writer processes, held inside their transactions
//!   by a short table lock (their open transaction ids are recorded before
//!   the kill; afterwards each must have committed — its COMMIT was already
//!   sent — or rolled back, nothing else), the inventory service and the
//!   order reactor (held the same way inside a batch's transaction, its
//!   inbox rows and stock or order changes written, by a lock on the outbox
//!   its replies go to), Kafka
//!   Connect, the broker, each projector instance, PostgreSQL (SIGKILL of the
//!   whole cluster: every connection dies, crash recovery on restart). The
//!   first faults cover every target once, in seeded order; the rest are drawn
//!   with weights. Each fault: SIGKILL, a seeded downtime of 0–3 s, restart.
//! - Duplicates: the broker's storage shows records published twice (the
//!   relay's at-least-once); `consumer_runs` shows what each projector
//!   process turned away, recorded with its batches (exact across kills).
//! - After the last fault: writers finish their segment, every component is
//!   up, the read side must converge (every committed event applied) within
//!   [`CONVERGE_LIMIT`], then the oracle runs. [`ChaosReport`] holds it all.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::oracle::{self, OracleReport};
use crate::{process, Component, Result, Shape, Stack, READ_DB, WRITE_DB};

/// How long the read side may take to apply every committed event after the last fault.
pub const CONVERGE_LIMIT: Duration = Duration::from_secs(300);
/// Units of each of the load's SKUs at the start: some run out.
const CHAOS_STOCK: u32 = 12;
/// Length of one writer segment; a slot's process is restarted after each.
const SEGMENT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct ChaosSpec {
    /// Length of the fault phase (load runs throughout).
    pub duration: Duration,
    pub kills: usize,
    pub seed: u64,
    /// Projector instances in the consumer group (1 or 2).
    pub projectors: u32,
    /// Commands per second offered in total.
    pub rate: f64,
    /// Writer processes sharing the rate (each with two clients).
    pub writers: usize,
    /// The stack's shape: with 3 brokers single brokers are killed too (the
    /// busiest partition's leader among them), with 2+ workers single
    /// Connect workers.
    pub shape: Shape,
}

impl ChaosSpec {
    /// The command that runs this spec again (same seed: same plan).
    pub fn command_line(&self) -> String {
        format!(
            "stack chaos --seed {} --kills {} --duration {} --projectors {} --rate {} --writers {} --brokers {} --connect-workers {}",
            self.seed,
            self.kills,
            humantime::format_duration(self.duration),
            self.projectors,
            self.rate,
            self.writers,
            self.shape.brokers,
            self.shape.connect_workers
        )
    }
}

/// What a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Writer,
    /// Every Connect worker at once.
    Connect,
    /// One Connect worker of several (the group moves its task).
    ConnectWorker,
    /// Every Kafka node at once.
    Broker,
    /// One Kafka node of three: the busiest partition's leader half the
    /// time, any node otherwise.
    BrokerNode,
    /// Projector instance 1 (the stack's) or 2, 3, … (replicas).
    Projector(u32),
    Postgres,
    /// The inventory service (the saga's other side), often inside a batch.
    Inventory,
    /// The order reactor (`writer react`).
    Reactor,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Writer => f.write_str("writer"),
            Target::Connect => f.write_str("connect"),
            Target::ConnectWorker => f.write_str("connect_worker"),
            Target::Broker => f.write_str("broker"),
            Target::BrokerNode => f.write_str("broker_node"),
            Target::Projector(n) => write!(f, "projector-{n}"),
            Target::Postgres => f.write_str("postgres"),
            Target::Inventory => f.write_str("inventory"),
            Target::Reactor => f.write_str("reactor"),
        }
    }
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// Seconds into the run when the SIGKILL was sent.
    pub at_s: f64,
    /// Wall clock of the SIGKILL (Unix seconds), to find the events it delayed.
    pub at_unix: f64,
    pub target: String,
    /// What exactly was hit, e.g. `broker-2 (leader of outbox.event.order/1)`.
    pub detail: String,
    /// The largest commit-to-read-model lag among events committed from 1 s
    /// before to 10 s after the kill: how long the fault paused the pipeline.
    pub pause_ms: f64,
    pub downtime_ms: u64,
    /// How long the restart took until the component was ready again.
    pub restart_ms: u64,
    /// Writer faults: transactions open in the killed process at the kill.
    pub open_transactions: usize,
    /// Inventory and reactor faults: batches whose transaction was open (inbox
    /// and changes written, replies not yet) when the process was killed.
    pub batches_killed: usize,
    /// Whether a process was killed (a writer fault finds none when every
    /// writer is between segments): only kills are counted as kills.
    pub killed: bool,
}

/// The run's figures and the oracle's verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub projectors: u32,
    pub seconds: f64,
    pub commands_committed: u64,
    pub commands_refused: u64,
    /// Commands that failed on the database (outages); nothing written.
    pub commands_failed: u64,
    /// Writer processes killed mid-run.
    pub writers_killed: usize,
    /// Writing transactions open in killed writers at the kill.
    pub transactions_killed: usize,
    /// Batches of the inventory and the order reactor killed inside their
    /// transaction (rolled back, then applied again once: the oracle checks).
    pub saga_batches_killed: usize,
    /// Of those: committed anyway (the COMMIT was already sent), rolled back,
    /// and neither (still in progress after the run: must be 0).
    pub transactions_committed_after_kill: usize,
    pub transactions_rolled_back: usize,
    pub transactions_unresolved: usize,
    pub events_committed: usize,
    pub events_applied: usize,
    /// Redeliveries the projector turned away (by event id or version), as
    /// every projector process recorded them with its batches.
    pub duplicates_absorbed: u64,
    /// Records a projector skipped unread because they were below the
    /// partition's stored position (a second owner during a rebalance).
    pub stale_skipped: u64,
    /// Projector processes that applied something (restarts included).
    pub consumer_runs: u64,
    pub kills: BTreeMap<String, usize>,
    /// Deliveries (`inventory stock add`) made between faults.
    pub restocks: usize,
    /// The inventory's reservations at the end, per status (`reserved`,
    /// `rejected`, `released`, `shipped`): the saga's paths the run took.
    pub reservations: BTreeMap<String, usize>,
    /// Per kind of fault: the longest pause it caused (ms), see [`Fault::pause_ms`].
    pub pause_ms_max: BTreeMap<String, f64>,
    /// Commit (event time) to read-model commit, over every event of the run.
    pub lag_ms_p99: f64,
    pub lag_ms_max: f64,
    /// From the last fault's restart until every committed event was applied.
    pub converge_seconds: f64,
    pub faults: Vec<Fault>,
    pub oracle: OracleReport,
    pub passed: bool,
    /// Why the run failed beyond the oracle (e.g. never converged).
    pub problems: Vec<String>,
}

impl ChaosReport {
    /// The human report.
    pub fn render(&self) -> String {
        let kills: Vec<String> = self.kills.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let mut out = format!(
            "chaos run, seed {seed}, {projectors} projector instance(s), {secs:.0} s\n\
             commands   {committed} committed, {refused} refused, {failed} failed on outages\n\
             writers    {wk} processes killed holding {tk} open transactions: {tr} rolled back, \
             {tc} committed (COMMIT already sent), {tu} unresolved\n\
             kills      {total} ({kills})\n\
             saga       {sbk} inventory and reactor batches killed inside their transaction, {restocks} restocks; \
             reservations {reservations}\n\
             pauses     longest per kind of fault: {pauses}\n\
             events     {ec} committed, {ea} applied; {bd} duplicate records on the topics, \
             {dup} redeliveries turned away by {runs} projector processes (+{stale} skipped below a stored position)\n\
             lag        commit to read model p99 {p99:.0} ms, max {max:.0} ms\n\
             converged  {conv:.1} s after the last fault\n\
             oracle     {rows}\n",
            seed = self.seed,
            projectors = self.projectors,
            secs = self.seconds,
            committed = self.commands_committed,
            refused = self.commands_refused,
            failed = self.commands_failed,
            wk = self.writers_killed,
            tk = self.transactions_killed,
            tr = self.transactions_rolled_back,
            tc = self.transactions_committed_after_kill,
            tu = self.transactions_unresolved,
            total = self.faults.len(),
            kills = kills.join(", "),
            sbk = self.saga_batches_killed,
            restocks = self.restocks,
            reservations = self
                .reservations
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            pauses = self
                .pause_ms_max
                .iter()
                .map(|(k, ms)| format!("{k} {ms:.0} ms"))
                .collect::<Vec<_>>()
                .join(", "),
            ec = self.events_committed,
            ea = self.events_applied,
            dup = self.duplicates_absorbed,
            stale = self.stale_skipped,
            runs = self.consumer_runs,
            bd = self.oracle.broker_duplicates,
            p99 = self.lag_ms_p99,
            max = self.lag_ms_max,
            conv = self.converge_seconds,
            rows = self
                .oracle
                .rows
                .iter()
                .map(|(m, n)| format!("{m} {n} rows"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let mut failures = self.problems.clone();
        failures.extend(self.oracle.failures());
        if failures.is_empty() {
            out.push_str(
                "PASS: 0 lost, 0 double effects, 0 inversions; read models equal the write side\n",
            );
        } else {
            out.push_str("FAIL:\n");
            for line in failures {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

/// Tallies of the writer processes.
#[derive(Debug, Default)]
struct WriterTally {
    committed: u64,
    refused: u64,
    failed: u64,
    killed: usize,
}

/// One writer slot: the pid of its current process, if any.
type Slot = Arc<Mutex<Option<i32>>>;

/// Runs the suite against `stack` (all components must be up).
pub fn run(stack: &Stack, spec: &ChaosSpec, progress: &dyn Fn(&str)) -> Result<ChaosReport> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(spec.seed);
    let mut report = ChaosReport {
        seed: spec.seed,
        projectors: spec.projectors,
        ..ChaosReport::default()
    };
    for n in 2..=spec.projectors {
        progress(&format!("starting projector replica {n}"));
        crate::projector::start_replica(stack, n)?;
    }
    // Few enough units that SKUs run out under the load (orders rejected),
    // restocked after each fault (orders confirmed again).
    progress(&format!(
        "stock: {} units of each of the load's {} SKUs",
        CHAOS_STOCK,
        crate::saga::LOAD_SKUS
    ));
    crate::saga::seed_stock(stack, CHAOS_STOCK)?;

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(WriterTally::default()));
    let rate_per_writer = spec.rate / spec.writers.max(1) as f64;
    let slots: Vec<Slot> = (0..spec.writers).map(|_| Slot::default()).collect();
    let supervisors: Vec<_> = slots
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let (stack, slot, stop, tally) =
                (stack.clone(), slot.clone(), stop.clone(), tally.clone());
            let seed = spec.seed ^ ((i as u64 + 1) << 32);
            thread::spawn(move || {
                supervise_writer(&stack, &slot, &stop, &tally, seed, rate_per_writer)
            })
        })
        .collect();

    let plan = schedule(&mut rng, spec);
    let mut last_restart = Instant::now();
    let result = (|| -> Result<()> {
        for (i, (at, target)) in plan.iter().enumerate() {
            let wait = at.saturating_sub(started.elapsed());
            thread::sleep(wait);
            let downtime = Duration::from_millis(rng.random_range(0..3000));
            let fault = inflict(stack, *target, downtime, &slots, &mut rng, started)?;
            progress(&format!(
                "fault {}/{}: {} killed at {:.1}s, down {} ms, ready again after {} ms{}",
                i + 1,
                plan.len(),
                fault.target,
                fault.at_s,
                fault.downtime_ms,
                fault.restart_ms,
                match target {
                    Target::Writer => format!(", {} open transactions", fault.open_transactions),
                    Target::Inventory | Target::Reactor => {
                        format!(
                            ", {} batches inside their transaction",
                            fault.batches_killed
                        )
                    }
                    _ => String::new(),
                }
            ));
            if fault.killed {
                *report.kills.entry(fault.target.clone()).or_default() += 1;
            }
            // A delivery for a few SKUs (the inventory may be down: then
            // this one waits for the next fault).
            let skus: Vec<String> = (0..3)
                .map(|_| crate::saga::load_sku(rng.random_range(0..crate::saga::LOAD_SKUS)))
                .collect();
            for sku in &skus {
                match crate::bins::inventory(stack, &["stock", "add", sku, "--quantity", "10"]) {
                    Ok(_) => report.restocks += 1,
                    Err(e) => progress(&format!("restock of {sku} not done now: {e}")),
                }
            }
            report.faults.push(fault);
            last_restart = Instant::now();
        }
        Ok(())
    })();
    progress("faults done; writers finish their segment");
    stop.store(true, Ordering::Relaxed);
    for s in supervisors {
        let _ = s.join();
    }
    result?;

    // Everything up (a restart that raced a later fault may have left a gap).
    stack.up(progress)?;
    for n in 2..=spec.projectors {
        if crate::projector::replica_pid(stack, n).is_none() {
            crate::projector::start_replica(stack, n)?;
        }
    }
    progress("waiting for the read side to apply every committed event");
    // Both outboxes feed the read side, and the saga's replies follow the
    // orders: settled once every consumer has every event of its topics.
    let converged = crate::wait_until(CONVERGE_LIMIT, Duration::from_millis(500), || {
        crate::saga::Progress::read(stack).is_ok_and(|p| p.settled())
    });
    report.converge_seconds = last_restart.elapsed().as_secs_f64();
    if !converged {
        report.problems.push(format!(
            "the read side did not apply every committed event within {} s of the last fault",
            CONVERGE_LIMIT.as_secs()
        ));
    }
    // Every projector process records its tallies with each batch it commits.
    let tallies = stack.psql(
        READ_DB,
        "SELECT coalesce(sum(duplicates_skipped), 0), coalesce(sum(stale_skipped), 0) FROM consumer_runs",
    )?;
    let mut tallies = tallies.trim().split('|').map(|v| v.parse().unwrap_or(0));
    report.duplicates_absorbed = tallies.next().unwrap_or(0);
    report.stale_skipped = tallies.next().unwrap_or(0);
    report.consumer_runs = stack
        .psql(READ_DB, "SELECT count(*) FROM consumer_runs")?
        .trim()
        .parse()
        .unwrap_or(0);

    for fault in &mut report.faults {
        fault.pause_ms = pause_after(stack, fault.at_unix)?;
        let kind = fault.target.clone();
        let worst = report.pause_ms_max.entry(kind).or_insert(0.0);
        *worst = worst.max(fault.pause_ms);
    }

    progress("oracle: recomputing the read models from the write side");
    report.oracle = oracle::check(stack)?;
    for row in stack
        .psql(
            crate::INVENTORY_DB,
            "SELECT status || '|' || count(*) FROM reservations GROUP BY status",
        )?
        .lines()
    {
        if let Some((status, n)) = row.trim().split_once('|') {
            report
                .reservations
                .insert(status.to_owned(), n.parse().unwrap_or(0));
        }
    }
    report.events_committed = report.oracle.events_committed;
    report.events_applied = report.oracle.events_applied;
    let lag = stack.psql(
        READ_DB,
        "SELECT coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), 0), coalesce(max(ms), 0) \
         FROM (SELECT extract(epoch FROM applied_at - occurred_at) * 1000 AS ms FROM inbox) t",
    )?;
    let mut lag = lag.trim().split('|').map(|v| v.parse().unwrap_or(f64::NAN));
    report.lag_ms_p99 = lag.next().unwrap_or(f64::NAN);
    report.lag_ms_max = lag.next().unwrap_or(f64::NAN);

    let tally = tally.lock().unwrap_or_else(|e| e.into_inner());
    report.commands_committed = tally.committed;
    report.commands_refused = tally.refused;
    report.commands_failed = tally.failed;
    report.writers_killed = tally.killed;
    report.transactions_killed = report.faults.iter().map(|f| f.open_transactions).sum();
    report.saga_batches_killed = report.faults.iter().map(|f| f.batches_killed).sum();
    let outcomes = killed_transaction_outcomes(stack)?;
    let outcome = |status: &str| outcomes.get(status).copied().unwrap_or(0);
    report.transactions_committed_after_kill = outcome("committed");
    report.transactions_rolled_back = outcome("aborted");
    report.transactions_unresolved = report.transactions_killed
        - report.transactions_committed_after_kill
        - report.transactions_rolled_back;
    if report.transactions_unresolved > 0 {
        report.problems.push(format!(
            "{} transactions of killed writers neither committed nor rolled back",
            report.transactions_unresolved
        ));
    }
    // Every command a writer reported committed wrote one event, and so did
    // every killed writer's transaction that committed anyway: the outbox holds
    // at least that many (a killed segment's earlier commits were never
    // reported, so more is expected; fewer is a lost commit).
    let reported = report.commands_committed + report.transactions_committed_after_kill as u64;
    if (report.events_committed as u64) < reported {
        report.problems.push(format!(
            "the writers reported {reported} commits (with killed transactions that committed), \
             the outbox holds {} events",
            report.events_committed
        ));
    }
    let covered: std::collections::BTreeSet<&str> = report
        .faults
        .iter()
        .map(|f| f.target.split('-').next().unwrap_or(""))
        .collect();
    if spec.kills >= 5 && covered.len() < 5 {
        report
            .problems
            .push(format!("faults covered only {covered:?}"));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.passed = report.problems.is_empty() && report.oracle.passed();
    Ok(report)
}

/// When each fault happens and what it hits: every target once first (in
/// seeded order), then weighted draws; times spread evenly with jitter.
fn schedule(rng: &mut StdRng, spec: &ChaosSpec) -> Vec<(Duration, Target)> {
    let mut first: Vec<Target> = vec![
        Target::Writer,
        Target::Connect,
        Target::Broker,
        Target::Postgres,
        Target::Inventory,
        Target::Reactor,
    ];
    let cluster = spec.shape.brokers > 1;
    let workers = spec.shape.connect_workers > 1;
    if cluster {
        first.push(Target::BrokerNode);
    }
    if workers {
        first.push(Target::ConnectWorker);
    }
    first.extend((1..=spec.projectors).map(Target::Projector));
    first.shuffle(rng);
    let weighted: Vec<(Target, u32)> = {
        let mut w = vec![
            (Target::Writer, 25),
            (Target::Connect, 15),
            (Target::Broker, 15),
            (Target::Postgres, 20),
            (Target::Inventory, 15),
            (Target::Reactor, 15),
        ];
        if cluster {
            w.push((Target::BrokerNode, 20));
        }
        if workers {
            w.push((Target::ConnectWorker, 15));
        }
        for n in 1..=spec.projectors {
            w.push((Target::Projector(n), 25 / spec.projectors.max(1)));
        }
        w
    };
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let spacing = spec.duration.as_secs_f64() / (spec.kills as f64 + 1.0);
    (0..spec.kills)
        .map(|i| {
            let target = first.get(i).copied().unwrap_or_else(|| {
                let mut pick = rng.random_range(0..total);
                weighted
                    .iter()
                    .find(|(_, w)| {
                        if pick < *w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .map_or(Target::Writer, |(t, _)| *t)
            });
            let jitter = rng.random_range(-0.3..0.3) * spacing;
            let at = ((i as f64 + 1.0) * spacing + jitter).max(0.0);
            (Duration::from_secs_f64(at), target)
        })
        .collect()
}

/// One fault: SIGKILL, downtime, restart (awaited).
fn inflict(
    stack: &Stack,
    target: Target,
    downtime: Duration,
    slots: &[Slot],
    rng: &mut StdRng,
    started: Instant,
) -> Result<Fault> {
    let mut fault = Fault {
        at_s: started.elapsed().as_secs_f64(),
        at_unix: unix_now(),
        target: target.to_string(),
        detail: target.to_string(),
        pause_ms: 0.0,
        downtime_ms: downtime.as_millis() as u64,
        restart_ms: 0,
        open_transactions: 0,
        batches_killed: 0,
        killed: true,
    };
    let component = match target {
        Target::Writer => {
            // Hold writers inside their transactions with a short table lock,
            // then kill one there. Locking `order_lines` stops them in their
            // reads, the order row already locked (a transaction id, no COMMIT
            // sent yet: it must roll back); locking the outbox stops them at
            // their last write, COMMIT already sent in the same pipeline (the
            // server may commit it after the client died: all or nothing).
            let slot = &slots[rng.random_range(0..slots.len())];
            let lock = if rng.random_bool(0.5) {
                "LOCK TABLE order_lines IN ACCESS EXCLUSIVE MODE"
            } else {
                "LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE"
            };
            let mut locker = crate::postgres::psql_command(&stack.write_db());
            locker
                .args(["-X", "-q", "-c"])
                .arg(format!("BEGIN; {lock}; SELECT pg_sleep(2); COMMIT;"))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut locker = locker.spawn().ok();
            let mut victim = None;
            crate::wait_until(
                Duration::from_millis(1800),
                Duration::from_millis(20),
                || {
                    let pid = *slot.lock().unwrap_or_else(|e| e.into_inner());
                    victim = pid.map(|pid| (pid, open_transactions(stack, pid)));
                    victim.as_ref().is_some_and(|(_, xids)| !xids.is_empty())
                },
            );
            fault.at_s = started.elapsed().as_secs_f64();
            fault.at_unix = unix_now();
            match victim {
                Some((pid, xids)) => {
                    process::kill_group(pid);
                    fault.open_transactions = xids.len();
                    record_killed_xids(stack, &xids)?;
                }
                None => {
                    fault.killed = false;
                    fault.detail = "no writer process was running: nothing killed".into();
                }
            }
            // The lock ends with the locker's sleep (a backend notices its
            // client is gone only then); the process itself can go now.
            if let Some(locker) = locker.as_mut() {
                let _ = locker.kill();
                let _ = locker.wait();
            }
            // The slot's supervisor starts the next process itself.
            return Ok(fault);
        }
        Target::Projector(n) if n > 1 => {
            crate::projector::kill_replica(stack, n);
            thread::sleep(downtime);
            let begun = Instant::now();
            crate::projector::start_replica(stack, n)?;
            fault.restart_ms = begun.elapsed().as_millis() as u64;
            return Ok(fault);
        }
        Target::BrokerNode => {
            let outbox = crate::kafka::outbox_topics(stack)?;
            // A cluster that cannot say (a node still catching up) gets a random victim.
            let leader = crate::kafka::busiest_leader(stack, &outbox).unwrap_or(None);
            let node = match leader {
                Some(node) if rng.random_bool(0.5) => {
                    fault.detail = format!("broker-{node} (leader of the busiest partition)");
                    node
                }
                _ => {
                    let node = rng.random_range(1..=stack.state.shape.brokers);
                    fault.detail = format!("broker-{node}");
                    node
                }
            };
            fault.at_unix = unix_now();
            crate::kafka::kill_node(stack, node)?;
            thread::sleep(downtime);
            let begun = Instant::now();
            stack.start(Component::Broker, &|_| {})?;
            fault.restart_ms = begun.elapsed().as_millis() as u64;
            return Ok(fault);
        }
        Target::ConnectWorker => {
            // The worker running the task, when one can tell: the one whose
            // loss moves the relay.
            let worker = crate::status::connector_task_worker(stack)
                .unwrap_or_else(|| rng.random_range(1..=stack.state.shape.connect_workers));
            fault.detail = crate::connect::unit(worker);
            fault.at_unix = unix_now();
            crate::connect::kill_worker(stack, worker)?;
            thread::sleep(downtime);
            let begun = Instant::now();
            stack.start(Component::Connect, &|_| {})?;
            fault.restart_ms = begun.elapsed().as_millis() as u64;
            return Ok(fault);
        }
        Target::Projector(_) => Component::Projector,
        Target::Connect => Component::Connect,
        Target::Broker => Component::Broker,
        Target::Postgres => Component::Postgres,
        Target::Inventory => Component::Inventory,
        Target::Reactor => Component::Reactor,
    };
    // The saga's processes are killed inside a batch's transaction when one
    // comes along: its inbox rows and state changes written, its replies not
    // yet appended (they must all roll back and be applied again, once).
    let held = match target {
        Target::Inventory => Some(hold_in_transaction(stack, crate::INVENTORY_DB, "inventory")),
        Target::Reactor => Some(hold_in_transaction(stack, WRITE_DB, "reactor")),
        _ => None,
    };
    fault.at_s = started.elapsed().as_secs_f64();
    fault.at_unix = unix_now();
    if stack.pid(component).is_some() {
        stack.kill(component)?;
    }
    if let Some(held) = held {
        fault.batches_killed = held.open_transactions;
        if held.open_transactions == 0 {
            fault.detail = format!(
                "{target} (no batch came within the lock's window: killed between batches)"
            );
        } else {
            fault.detail = format!("{target} (inside a batch's transaction)");
        }
        held.release(stack);
    }
    thread::sleep(downtime);
    let begun = Instant::now();
    stack.start(component, &|_| {})?;
    fault.restart_ms = begun.elapsed().as_millis() as u64;
    Ok(fault)
}

/// A saga process held inside its transaction (see [`hold_in_transaction`]).
struct Held {
    /// The psql client whose session holds the lock; see [`Held::release`].
    locker: Option<std::process::Child>,
    /// The process's sessions waiting on the lock with a transaction open.
    open_transactions: usize,
    /// The database whose outbox is locked.
    dbname: &'static str,
}

/// The `application_name` of the session that holds the lock.
const LOCKER: &str = "chaos lock";

impl Held {
    /// Ends the locking session at once: killing psql alone would leave its
    /// backend asleep, holding the lock, until `pg_sleep` returns.
    fn release(mut self, stack: &Stack) {
        let _ = stack.admin_sql(
            self.dbname,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{LOCKER}'"
            ),
        );
        if let Some(locker) = self.locker.as_mut() {
            let _ = locker.kill();
            let _ = locker.wait();
        }
    }
}

/// Holds the saga process `application` inside a batch's transaction: waits
/// (up to 30 s) until its inbox in `dbname` grows — batches flow again after
/// an earlier broker or relay fault — then locks the `outbox` of `dbname`
/// against inserts and waits (up to 3 s) until a session of `application`
/// waits on that lock with a transaction id: a batch whose inbox rows and
/// state changes are written and whose replies are being appended. Reads go
/// on meanwhile; the lock is released right after the kill.
fn hold_in_transaction(stack: &Stack, dbname: &'static str, application: &str) -> Held {
    let inbox = || {
        stack
            .psql(dbname, "SELECT count(*) FROM inbox")
            .ok()
            .map(|n| n.trim().to_owned())
    };
    let before = inbox();
    crate::wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        inbox() != before
    });
    let mut locker = crate::postgres::psql_command(&stack.db(dbname));
    locker
        .env("PGAPPNAME", LOCKER)
        .args(["-X", "-q", "-c"])
        .arg("BEGIN; LOCK TABLE outbox IN SHARE ROW EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let locker = locker.spawn().ok();
    let mut open_transactions = 0;
    crate::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        // As the superuser: other roles' transaction ids are hidden from the owner.
        open_transactions = stack
            .admin_sql(
                dbname,
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application}' \
                     AND backend_xid IS NOT NULL AND wait_event_type = 'Lock'"
                ),
            )
            .ok()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        open_transactions > 0
    });
    Held {
        locker,
        open_transactions,
        dbname,
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The largest commit-to-read-model lag (ms) among events committed from 1 s
/// before to 10 s after `at_unix`: load runs throughout, so a component that
/// stops the pipeline shows as the lag of the events it held up.
fn pause_after(stack: &Stack, at_unix: f64) -> Result<f64> {
    let out = stack.psql(
        READ_DB,
        &format!(
            "SELECT coalesce(max(extract(epoch FROM applied_at - occurred_at) * 1000), 0) FROM inbox \
             WHERE occurred_at BETWEEN to_timestamp({at_unix}) - interval '1 second' \
             AND to_timestamp({at_unix}) + interval '10 seconds'"
        ),
    )?;
    Ok(out.trim().parse().unwrap_or(f64::NAN))
}

/// Transaction ids of the open, writing transactions of writer process `pid`.
fn open_transactions(stack: &Stack, pid: i32) -> Vec<String> {
    // As the superuser: other roles' transaction ids are hidden from the owner.
    stack
        .admin_sql(
            WRITE_DB,
            &format!(
                "SELECT backend_xid FROM pg_stat_activity \
                 WHERE application_name = 'writer load {pid}' AND backend_xid IS NOT NULL"
            ),
        )
        .map(|out| {
            out.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Remembers killed transactions in a file next to the stack's logs, so the
/// check after the run can ask the database how each one ended.
fn record_killed_xids(stack: &Stack, xids: &[String]) -> Result<()> {
    use std::io::Write;
    let path = killed_xids_file(stack);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(crate::io_err(format!("opening {}", path.display())))?;
    for xid in xids {
        writeln!(file, "{xid}").map_err(crate::io_err("recording a killed transaction"))?;
    }
    Ok(())
}

fn killed_xids_file(stack: &Stack) -> PathBuf {
    stack.state_dir.join("run/chaos-killed-xids")
}

/// How the killed transactions ended, per `pg_xact_status`.
fn killed_transaction_outcomes(stack: &Stack) -> Result<BTreeMap<String, usize>> {
    let text = std::fs::read_to_string(killed_xids_file(stack)).unwrap_or_default();
    let xids: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    if xids.is_empty() {
        return Ok(BTreeMap::new());
    }
    // A fresh cluster is in xid epoch 0, so the 32-bit xid is the full xid8.
    let list = xids.join(",");
    let out = stack.psql(
        WRITE_DB,
        &format!(
            "SELECT pg_xact_status(x::text::xid8), count(*) \
             FROM unnest('{{{list}}}'::bigint[]) AS x GROUP BY 1"
        ),
    )?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(status, n)| (status.to_owned(), n.parse().unwrap_or(0)))
        .collect())
}

/// Runs writer segments in one slot until `stop`, restarting after each end or kill.
fn supervise_writer(
    stack: &Stack,
    slot: &Slot,
    stop: &AtomicBool,
    tally: &Mutex<WriterTally>,
    seed: u64,
    rate: f64,
) {
    let log = stack.state_dir.join("logs/writer-load.log");
    let mut segment = 0u64;
    while !stop.load(Ordering::Relaxed) {
        segment += 1;
        let Ok(mut command) = crate::bins::writer_command(stack) else {
            return;
        };
        command
            .args(["load", "--clients", "2", "--mix", "chaos", "--json"])
            .args(["--rate", &format!("{rate}")])
            .args(["--duration", &format!("{}s", SEGMENT.as_secs())])
            .args(["--seed", &(seed ^ segment).to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null());
        if let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
        {
            command.stderr(file);
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let Ok(mut child) = command.spawn() else {
            thread::sleep(Duration::from_millis(500));
            continue;
        };
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(child.id() as i32);
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_string(&mut stdout);
        }
        let status = child.wait();
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
        match status {
            Ok(s) if s.success() => {
                let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_default();
                let field = |k: &str| json.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
                tally.committed += field("committed");
                tally.refused += field("refused");
                tally.failed += field("failed");
            }
            Ok(s) if std::os::unix::process::ExitStatusExt::signal(&s).is_some() => {
                tally.killed += 1;
            }
            _ => {
                // Could not start (e.g. PostgreSQL down): try again shortly.
                drop(tally);
                thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

//! `stack bench --scale`: how the pipeline scales out and how its costs grow,
//! on fresh stacks of their own, with the building blocks of [`bench`].
//!
//! # Layout
//! 1. [`scale_out`], once per cell of [`ScaleSpec::cells`] (Kafka nodes ×
//!    partitions per topic), on a fresh stack of that shape: the yardstick
//!    (writer and pgbench at 4 clients), a backlog drained by the relay, then
//!    a catch-up of the whole history and an end-to-end run at a fixed rate
//!    with each number of projector instances of [`ScaleSpec::projectors`]
//!    (one consumer group; the end-to-end runs add replicas to the live
//!    projector).
//! 2. [`growth`], on one more fresh stack: the write database grows to each
//!    size of [`ScaleSpec::history`] (placed orders with their lines and
//!    events, written by `bench/grow_history.sql` in chunks the relay
//!    publishes as they commit), and at each size the writer is measured
//!    against pgbench; then one projector with a fresh group and an empty read
//!    database catches up on the whole history, and its rate is read off its
//!    inbox in a window ending at each size: whether catch-up stays flat as
//!    the read database grows.
//!
//! Nothing here asserts a speed; [`render_markdown`] writes the tables.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::bench::{self, BenchSpec, Results};
use crate::{Result, Shape, Stack};

/// What a scale run measures.
#[derive(Debug, Clone)]
pub struct ScaleSpec {
    /// Events of each cell's backlog (the catch-ups re-read the whole history).
    pub backlog: u64,
    /// Offered events/s and seconds of each cell's end-to-end runs.
    pub rate: u64,
    pub seconds: u64,
    /// Projector instances, one catch-up and one end-to-end run each.
    pub projectors: Vec<u32>,
    /// (Kafka nodes, partitions per topic), one fresh stack each.
    pub cells: Vec<(u8, u32)>,
    /// Sizes of the write database's history (orders, one event each) at
    /// which the writer and the catch-up are measured, ascending.
    pub history: Vec<u64>,
    /// Orders per transaction of `bench/grow_history.sql`.
    pub chunk: u64,
    /// Seconds of each writer and pgbench run.
    pub writer_seconds: u64,
}

impl ScaleSpec {
    pub fn full() -> Self {
        Self {
            backlog: 50_000,
            rate: 1000,
            seconds: 20,
            projectors: vec![1, 2, 3],
            cells: vec![(1, 3), (1, 12), (3, 3)],
            history: vec![10_000, 100_000, 1_000_000],
            chunk: 50_000,
            writer_seconds: 15,
        }
    }

    /// A smoke run (tests): one cell, two instances, small histories.
    pub fn quick() -> Self {
        Self {
            backlog: 600,
            rate: 200,
            seconds: 3,
            projectors: vec![1, 2],
            cells: vec![(1, 12)],
            history: vec![3_000, 6_000],
            chunk: 3_000,
            writer_seconds: 2,
        }
    }
}

/// One cell and instance count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRow {
    pub brokers: u8,
    pub partitions: u32,
    pub projectors: u32,
    /// The cell's yardstick: pgbench at 4 clients on its stack.
    pub pgbench_tps: f64,
    /// The cell's relay rate (one per stack, repeated on each row).
    pub relay_events_per_second: f64,
    pub catch_up_events: u64,
    pub catch_up_events_per_second: f64,
    pub offered_rate: u64,
    pub achieved_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The writer against pgbench with the write database at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WriterGrowthRow {
    /// Orders (and outbox rows) in the write database when the writer and
    /// pgbench started; their own orders come on top.
    pub orders: u64,
    pub outbox_rows: u64,
    pub writer_commands_per_second: f64,
    pub pgbench_tps: f64,
}

/// Catch-up speed in a window of the history that ends at `events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRow {
    pub events: u64,
    /// Events of the window (those applied after its first batch).
    pub window_events: u64,
    pub events_per_second: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScaleResults {
    pub machine: String,
    pub measured_at: String,
    pub cells: Vec<ScaleRow>,
    pub writer_growth: Vec<WriterGrowthRow>,
    pub history: Vec<HistoryRow>,
}

/// Runs every part; `open` makes a fresh stack of a shape (the caller's
/// state directories: the bench's own, or a test's).
pub fn run(
    spec: &ScaleSpec,
    open: &dyn Fn(Shape, &str) -> Result<Stack>,
    progress: &dyn Fn(&str),
) -> Result<ScaleResults> {
    let mut results = ScaleResults {
        measured_at: bench::now_utc(),
        ..ScaleResults::default()
    };
    for &(brokers, partitions) in &spec.cells {
        let shape = Shape {
            brokers,
            partitions,
            ..Shape::default()
        }
        .validate()?;
        progress(&format!(
            "scale-out: a stack of {brokers} Kafka node(s), {partitions} partitions per topic"
        ));
        let stack = open(shape, &format!("scale-{brokers}x{partitions}"))?;
        stack.up(progress)?;
        if results.machine.is_empty() {
            results.machine = bench::machine(None, None);
        }
        let measured = scale_out(&stack, spec, shape, &mut results, progress);
        stack.down(&|_| {})?;
        measured?;
    }
    if !spec.history.is_empty() {
        progress("growth: a stack of one Kafka node");
        let stack = open(Shape::default(), "growth")?;
        stack.up(progress)?;
        let measured = growth(&stack, spec, &mut results, progress);
        stack.down(&|_| {})?;
        measured?;
    }
    Ok(results)
}

/// The yardstick: writer and pgbench at 4 clients, into `into`.
fn yardstick(
    stack: &Stack,
    spec: &ScaleSpec,
    into: &mut Results,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let writer_spec = BenchSpec {
        clients: vec![4],
        writer_seconds: spec.writer_seconds,
        ..BenchSpec::full()
    };
    bench::writer_vs_pgbench(stack, &writer_spec, into, progress)
}

fn scale_out(
    stack: &Stack,
    spec: &ScaleSpec,
    shape: Shape,
    results: &mut ScaleResults,
    progress: &dyn Fn(&str),
) -> Result<()> {
    bench::register_customers(stack)?;
    let mut measured = Results::default();
    yardstick(stack, spec, &mut measured, progress)?;
    let pgbench_tps = measured.writer.first().map_or(0.0, |w| w.pgbench_tps);
    let backlog = BenchSpec {
        backlog: spec.backlog,
        catch_up_batches: Vec::new(),
        ..BenchSpec::full()
    };
    bench::relay_and_catch_up(stack, &backlog, &mut measured, progress)?;
    let total = bench::settled_events(stack, "scale")?;
    let mut catch_ups = Vec::new();
    for &projectors in &spec.projectors {
        progress(&format!(
            "scale-out: {projectors} projector(s) catch up on {total} events"
        ));
        let (row, _) = bench::catch_up(
            stack,
            &BenchSpec {
                projectors,
                ..backlog.clone()
            },
            1000,
            total,
        )?;
        catch_ups.push(row);
    }
    let e2e = BenchSpec {
        rates: vec![spec.rate],
        rate_seconds: spec.seconds,
        sustained_seconds: spec.seconds,
        ..BenchSpec::full()
    };
    let mut running = 1;
    for (&projectors, catch_up) in spec.projectors.iter().zip(catch_ups) {
        while running < projectors {
            running += 1;
            progress(&format!("scale-out: starting projector replica {running}"));
            let url = crate::projector::start_replica(stack, running)?;
            crate::projector::await_assignment(&url, Duration::from_secs(60))?;
        }
        let mut latency = Results::default();
        bench::end_to_end(stack, &e2e, &mut latency, progress)?;
        let Some(l) = latency.latency.first() else {
            continue;
        };
        results.cells.push(ScaleRow {
            brokers: shape.brokers,
            partitions: shape.partitions,
            projectors,
            pgbench_tps,
            relay_events_per_second: measured.relay_events_per_second,
            catch_up_events: catch_up.events,
            catch_up_events_per_second: catch_up.events_per_second,
            offered_rate: l.offered_rate,
            achieved_rate: l.achieved_rate,
            p50_ms: l.p50_ms,
            p99_ms: l.p99_ms,
        });
    }
    for n in 2..=running {
        crate::projector::stop_replica(stack, n);
    }
    Ok(())
}

fn count(stack: &Stack, table: &str) -> Result<u64> {
    Ok(bench::sql_number(
        stack,
        crate::WRITE_DB,
        &format!("SELECT count(*) FROM {table}"),
    )? as u64)
}

fn growth(
    stack: &Stack,
    spec: &ScaleSpec,
    results: &mut ScaleResults,
    progress: &dyn Fn(&str),
) -> Result<()> {
    bench::register_customers(stack)?;
    // The history is read back by a projector of its own below.
    stack.stop(crate::Component::Projector)?;
    // The order service's topics: `await_published` counts its outbox.
    let mut reader = crate::kafka::TopicReader::open(stack, &outbox_events::outbox_topics())?;
    let mut published = 0;
    let script = stack.repo.join("bench/grow_history.sql");
    for &size in &spec.history {
        let mut orders = count(stack, "orders")?;
        while orders < size {
            let n = spec.chunk.min(size - orders);
            progress(&format!(
                "growth: {orders} orders, adding {n} (bench/grow_history.sql)"
            ));
            let mut psql = crate::postgres::psql_command(&stack.db(crate::WRITE_DB));
            psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-v"])
                .arg(format!("n={n}"))
                .arg("-f")
                .arg(&script);
            crate::run_quiet(&mut psql)?;
            orders = count(stack, "orders")?;
            // Published before the next chunk: the slot holds little WAL.
            bench::await_published(stack, &mut reader, &mut published, Duration::from_secs(900))?;
        }
        // The sizes before the measurement (which adds its own orders).
        let (orders, outbox_rows) = (count(stack, "orders")?, count(stack, "outbox")?);
        let mut measured = Results::default();
        yardstick(stack, spec, &mut measured, progress)?;
        if let Some(w) = measured.writer.first() {
            results.writer_growth.push(WriterGrowthRow {
                orders,
                outbox_rows,
                writer_commands_per_second: w.writer_commands_per_second,
                pgbench_tps: w.pgbench_tps,
            });
        }
    }
    bench::await_published(stack, &mut reader, &mut published, Duration::from_secs(900))?;
    drop(reader);
    let total = bench::settled_events(stack, "scale")?;
    progress(&format!(
        "growth: a fresh projector catches up on {total} events"
    ));
    let catch_up = BenchSpec::full();
    let (_, dbname) = bench::catch_up(stack, &catch_up, 1000, total)?;
    for &size in &spec.history {
        // The window: the last 10,000 events of the history up to `size`
        // (ten batches of 1000: a batch's rows share one applied_at).
        let window = size.clamp(1, 10_000);
        let row = stack.psql(
            &dbname,
            &format!(
                "WITH w AS (SELECT applied_at FROM inbox ORDER BY applied_at OFFSET {} LIMIT {window}) \
                 SELECT count(*) FILTER (WHERE applied_at > (SELECT min(applied_at) FROM w)), \
                        coalesce(extract(epoch FROM max(applied_at) - min(applied_at)), 0) FROM w",
                size.saturating_sub(window)
            ),
        )?;
        let mut f = row.trim().split('|');
        let events: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let span: f64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        results.history.push(HistoryRow {
            events: size,
            window_events: events,
            events_per_second: if span > 0.0 {
                events as f64 / span
            } else {
                0.0
            },
        });
    }
    Ok(())
}

/// The scale and growth tables (Markdown).
pub fn render_markdown(r: &ScaleResults, command: &str) -> String {
    let mut md = format!(
        "Measured {} with `{command}` on: {}.\n\n",
        r.measured_at, r.machine
    );
    md.push_str("### Scale-out: projector instances, partitions, a three-node cluster\n\n");
    md.push_str(
        "Each cell is a fresh stack; catch-up re-reads its whole history (batch 1000, one consumer group), \
         end to end runs at a fixed offered rate with the live projector and its replicas. Throughputs are \
         also given as ratios to the cell's own pgbench at 4 clients.\n\n",
    );
    md.push_str(
        "| Kafka nodes | partitions | projectors | pgbench tps | relay events/s | catch-up events/s | catch-up / pgbench | offered/s | achieved/s | p50 ms | p99 ms |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for c in &r.cells {
        md.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
            c.brokers,
            c.partitions,
            c.projectors,
            c.pgbench_tps,
            c.relay_events_per_second,
            c.catch_up_events_per_second,
            bench::ratio(c.catch_up_events_per_second, c.pgbench_tps),
            c.offered_rate,
            c.achieved_rate,
            c.p50_ms,
            c.p99_ms
        ));
    }
    md.push_str("\n### Growth: the writer with a larger write database\n\n");
    md.push_str(
        "Orders and outbox rows already in the write database when the writer and then pgbench (same statements) \
         ran at 4 clients.\n\n\
         | orders | outbox rows | writer commands/s (4 clients) | pgbench tps | writer / pgbench |\n|---:|---:|---:|---:|---:|\n",
    );
    for w in &r.writer_growth {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} |\n",
            w.orders,
            w.outbox_rows,
            w.writer_commands_per_second,
            w.pgbench_tps,
            bench::ratio(w.writer_commands_per_second, w.pgbench_tps)
        ));
    }
    md.push_str("\n### Growth: catch-up as the read database grows\n\n");
    md.push_str(
        "One projector (batch 1000, a fresh group and read database) re-reads the whole history; events/s \
         in a window of its inbox (the last 10,000 events, or all if fewer) ending at each size.\n\n\
         | history, events | window events | events/s |\n|---:|---:|---:|\n",
    );
    for h in &r.history {
        md.push_str(&format!(
            "| {} | {} | {:.0} |\n",
            h.events, h.window_events, h.events_per_second
        ));
    }
    md
}

/// Writes the tables between the scale markers of `benchmarks.md` in
/// `out_dir` and the figures as `benchmarks-scale.json`.
pub fn write_report(r: &ScaleResults, out_dir: &Path, command: &str) -> Result<PathBuf> {
    fs::create_dir_all(out_dir)
        .map_err(crate::io_err(format!("creating {}", out_dir.display())))?;
    let md_path = out_dir.join("benchmarks.md");
    bench::write_section(
        &md_path,
        "bench-scale",
        "stack bench --scale",
        &render_markdown(r, command),
    )?;
    fs::write(
        out_dir.join("benchmarks-scale.json"),
        serde_json::to_string_pretty(r).unwrap_or_default(),
    )
    .map_err(crate::io_err("writing benchmarks-scale.json"))?;
    Ok(md_path)
}

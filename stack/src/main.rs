//! `stack`: the local stack's CLI (thin; see the library).
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use stack::{demo, status, Component, Stack};

/// The outbox/CDC stack on this machine, without Docker: PostgreSQL, Apache
/// Kafka (KRaft), Kafka Connect (distributed) + Debezium, the inventory
/// service, the order reactor and the projector.
#[derive(Debug, Parser)]
#[command(name = "stack", version)]
struct Cli {
    /// State directory (data, logs, ports, settings). Default: `.stack` in the repository.
    #[arg(long, global = true, env = "OUTBOX_STACK_DIR")]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start every component that is not running and wait until all are ready.
    Up {
        /// Kafka nodes of a NEW stack: 1, or 3 (replication factor 3,
        /// min.insync.replicas=2). An existing stack keeps its size.
        #[arg(long)]
        brokers: Option<u8>,
        /// Kafka Connect workers of a NEW stack (one distributed group).
        #[arg(long)]
        connect_workers: Option<u8>,
    },
    /// Stop every component (data is kept; `up` resumes).
    Down {
        /// Also delete the stack's data: its state directory and PostgreSQL's
        /// data directory (which, as root, lives under the postgres user's home).
        #[arg(long)]
        purge: bool,
    },
    /// Show each component: running or not, and its health.
    Status {
        #[arg(long)]
        json: bool,
        /// Refresh every SECONDS until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
    /// Print a component's log (postgres, broker, connect, inventory, reactor,
    /// projector), or one unit's: broker-2, connect-2, connect-watchdog, projector-2.
    Logs {
        component: String,
        #[arg(long, default_value_t = 100)]
        lines: usize,
    },
    /// SIGKILL a component (a crash, for reliability tests), or one unit of
    /// it: broker-N (one Kafka node), connect-N (one Connect worker).
    Kill { component: String },
    /// Start one component and wait until it is ready.
    Start { component: String },
    /// `up`, then a scripted order scenario through the writer, awaited in the read model.
    Demo,
    /// Print the settings files and a psql command for this stack.
    Env,
    /// Open psql on the read (default) or write database; extra arguments go to psql.
    Psql {
        /// `read` or `write`.
        #[arg(long = "db", default_value = "read")]
        database: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the pipeline on a fresh stack of its own (`target/bench-stack`
    /// unless --state-dir): writer vs pgbench, relay, catch-up, latency,
    /// recovery, resources. Build with --release for figures worth quoting.
    Bench {
        /// A smoke run with tiny sizes (seconds, not minutes).
        #[arg(long)]
        quick: bool,
        /// Where `benchmarks.md` and `benchmarks.svg` go.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Measure nothing: render the report again from the figures a run
        /// saved (its `benchmarks.json`), e.g. after the report's layout changed.
        #[arg(long, value_name = "BENCHMARKS_JSON", conflicts_with = "quick")]
        render: Option<PathBuf>,
        /// Measure only these parts (comma-separated: backlog, writer, e2e,
        /// recovery), e.g. for one lever's run; pgbench at 4 clients, the
        /// yardstick, is measured in every run.
        #[arg(long, value_delimiter = ',', value_parser = parse_phase)]
        phases: Option<Vec<stack::bench::Phase>>,
        /// Projector instances in one consumer group (catch-up, end to end,
        /// recovery).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4))]
        projectors: u32,
        /// Partitions of each outbox topic.
        #[arg(long, default_value_t = 3)]
        partitions: u32,
        /// Kafka nodes: 1, or 3 (replication factor 3, min.insync.replicas=2).
        #[arg(long, default_value_t = 1)]
        brokers: u8,
        /// Batch sizes of the catch-up runs (comma-separated).
        #[arg(long, value_delimiter = ',')]
        batches: Option<Vec<usize>>,
        /// Offered rates of the end-to-end runs (events/s, comma-separated).
        #[arg(long, value_delimiter = ',')]
        rates: Option<Vec<u64>>,
        /// Measure scale-out (1, 2, 3 projectors; 3 and 12 partitions; three
        /// Kafka nodes) and growth (the writer and catch-up with histories of
        /// 10k, 100k and 1M events) instead, each on fresh stacks of its own;
        /// writes its own section of `benchmarks.md`. Long: most of an hour.
        #[arg(long, conflicts_with_all = ["render", "phases"])]
        scale: bool,
        /// What this run changes against the previous one (a lever's name),
        /// recorded with its figures for the levers table.
        #[arg(long, default_value = "")]
        lever: String,
        /// Measure nothing: write the levers table of `benchmarks.md` from the
        /// runs saved in a folder (`*.json`, in file-name order; the first is
        /// the baseline).
        #[arg(long, value_name = "DIR", conflicts_with_all = ["render", "scale", "quick"])]
        render_levers: Option<PathBuf>,
    },
    /// Compare the write side with the read side, event by event; exit 1 on
    /// any difference (for cron or CI).
    Reconcile {
        /// Events younger than this (seconds) are still in flight and not compared.
        #[arg(long, default_value_t = 60)]
        settle: u64,
        /// Publish the missing events again (same rows, same event ids).
        #[arg(long)]
        republish: bool,
        #[arg(long)]
        json: bool,
        /// Also write the counts as Prometheus gauges to this file (for
        /// node_exporter's textfile collector), atomically.
        #[arg(long, value_name = "PATH")]
        textfile: Option<PathBuf>,
    },
    /// The reliability suite on a fresh stack of its own (`target/chaos-stack`
    /// unless --state-dir): load through the writer (orders that run the
    /// stock-reservation saga, restocks) while seeded SIGKILLs hit writers,
    /// Connect, the broker, the projector(s), the inventory, the order reactor
    /// and PostgreSQL; then an independent oracle compares the read models
    /// with the write and inventory databases and checks the saga's
    /// invariants. Exit 1 on any difference. See docs/reliability.md.
    Chaos {
        /// Length of the fault phase, e.g. 3m, 10m.
        #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// SIGKILLs spread over the fault phase (the first cover every component).
        #[arg(long, default_value_t = 20)]
        kills: usize,
        /// Seed of the schedule and the load; the same seed gives the same run plan.
        #[arg(long)]
        seed: Option<u64>,
        /// Projector instances in the consumer group (1 or 2).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4))]
        projectors: u32,
        /// Commands per second offered in total.
        #[arg(long, default_value_t = 40.0)]
        rate: f64,
        /// Writer processes sharing the rate.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=16))]
        writers: u64,
        #[arg(long)]
        json: bool,
        /// Leave the stack running afterwards (to inspect it).
        #[arg(long)]
        keep: bool,
        /// Kafka nodes: 3 adds single-broker kills (the busiest partition's leader among them).
        #[arg(long, default_value_t = 1)]
        brokers: u8,
        /// Connect workers: 2 adds single-worker kills (the task moves).
        #[arg(long, default_value_t = 1)]
        connect_workers: u8,
    },
    /// Rebuild every read model from the topics into a shadow schema while the
    /// live projector runs, then swap it in atomically (`projector rebuild`,
    /// as the owner role). Extra arguments go to it, e.g. --keep-old, --json.
    Rebuild {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Stop and remove test stacks whose test process has exited.
    #[command(hide = true)]
    ReapTests,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn component(name: &str) -> anyhow::Result<Component> {
    Component::parse(name).with_context(|| {
        let names: Vec<&str> = Component::ALL.iter().map(|c| c.name()).collect();
        format!(
            "unknown component {name:?}; use one of {}",
            names.join(", ")
        )
    })
}

/// Progress lines with elapsed time; a spinner on a terminal.
struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            started: Instant::now(),
        }
    }

    fn step(&self, message: &str) {
        let line = format!("[{:>5.1}s] {message}", self.started.elapsed().as_secs_f64());
        match &self.bar {
            Some(bar) => {
                bar.println(&line);
                bar.set_message(message.to_owned());
            }
            None => eprintln!("{line}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::ReapTests = cli.command {
        stack::reap_test_stacks();
        return Ok(());
    }
    if let Command::Bench {
        render: Some(figures),
        out,
        ..
    } = &cli.command
    {
        return render_bench(figures, out.clone());
    }
    if let Command::Bench {
        render_levers: Some(dir),
        out,
        ..
    } = &cli.command
    {
        let out = out
            .clone()
            .unwrap_or_else(|| stack::repo_root().join("docs"));
        let path = stack::bench::write_levers(dir, &out)?;
        println!("levers table written to {}", path.display());
        return Ok(());
    }
    if let Command::Bench {
        scale: true,
        quick,
        out,
        ..
    } = &cli.command
    {
        return bench_scale(cli.state_dir.clone(), *quick, out.clone());
    }
    if let Command::Bench {
        quick,
        out,
        phases,
        projectors,
        partitions,
        brokers,
        batches,
        rates,
        lever,
        ..
    } = &cli.command
    {
        let mut spec = if *quick {
            stack::bench::BenchSpec::quick()
        } else {
            stack::bench::BenchSpec::full()
        };
        if let Some(phases) = phases {
            spec.phases.clone_from(phases);
        }
        if let Some(batches) = batches {
            spec.catch_up_batches.clone_from(batches);
        }
        if let Some(rates) = rates {
            spec.rates.clone_from(rates);
        }
        spec.projectors = *projectors;
        let shape = stack::Shape {
            brokers: *brokers,
            partitions: *partitions,
            ..stack::Shape::default()
        }
        .validate()?;
        return bench(cli.state_dir.clone(), &spec, shape, lever, out.clone());
    }
    if let Command::Chaos {
        duration,
        kills,
        seed,
        projectors,
        rate,
        writers,
        json,
        keep,
        brokers,
        connect_workers,
    } = cli.command
    {
        let spec = stack::chaos::ChaosSpec {
            duration,
            kills,
            seed: seed.unwrap_or_else(rand::random),
            projectors,
            rate,
            writers: writers as usize,
            shape: stack::Shape {
                brokers,
                connect_workers,
                ..stack::Shape::default()
            }
            .validate()?,
        };
        return chaos(cli.state_dir, &spec, json, keep);
    }
    let state_dir = cli
        .state_dir
        .unwrap_or_else(|| stack::repo_root().join(".stack"));
    let shape = match &cli.command {
        Command::Up {
            brokers,
            connect_workers,
        } if brokers.is_some() || connect_workers.is_some() => Some(
            stack::Shape {
                brokers: brokers.unwrap_or(1),
                connect_workers: connect_workers.unwrap_or(1),
                ..stack::Shape::default()
            }
            .validate()?,
        ),
        _ => None,
    };
    let stack = Stack::open_with(&state_dir, stack::default_bin_dir(), shape)?;
    let progress = Progress::new();
    let step = |m: &str| progress.step(m);
    match cli.command {
        Command::Up { .. } => {
            stack.up(&step)?;
            progress.finish();
            print_status(&stack, false);
        }
        Command::Down { purge } => {
            stack.down(&step)?;
            progress.finish();
            if purge {
                stack::state::remove_stack_files(&stack.state_dir)?;
                println!("stack stopped; its data deleted");
            } else {
                println!("stack stopped; data kept in {}", state_dir.display());
            }
        }
        Command::Status {
            json,
            watch: Some(seconds),
        } => loop {
            // Clear the screen, then the same report as `status`.
            print!("\x1b[2J\x1b[H");
            println!("stack status, every {seconds} s (ctrl-c to stop)\n");
            print_status(&stack, json);
            std::thread::sleep(Duration::from_secs(seconds.max(1)));
        },
        Command::Status { json, watch: None } => {
            let all_healthy = print_status(&stack, json);
            if !all_healthy {
                bail!("some components are down or unhealthy (see `stack logs COMPONENT`)");
            }
        }
        Command::Logs {
            component: name,
            lines,
        } => {
            if Component::parse(&name).is_none() && stack.unit_log(&name).exists() {
                println!("{}", stack.tail_unit_log(&name, lines));
            } else {
                println!("{}", stack.tail_log(component(&name)?, lines));
            }
        }
        Command::Kill { component: name } if name.starts_with("broker-") => {
            let node = name["broker-".len()..]
                .parse()
                .ok()
                .filter(|n| (1..=stack.state.shape.brokers).contains(n))
                .with_context(|| format!("no Kafka node {name:?} in this stack"))?;
            stack::kafka::kill_node(&stack, node)?;
            println!("{name} killed (SIGKILL); `stack start broker` brings it back");
        }
        Command::Kill { component: name } if name.starts_with("connect-") => {
            let worker = name["connect-".len()..]
                .parse()
                .ok()
                .filter(|n| (1..=stack.state.shape.connect_workers).contains(n))
                .with_context(|| format!("no Connect worker {name:?} in this stack"))?;
            stack::connect::kill_worker(&stack, worker)?;
            println!("{name} killed (SIGKILL); `stack start connect` brings it back");
        }
        Command::Kill { component: name } => {
            let c = component(&name)?;
            stack.kill(c)?;
            println!("{c} killed (SIGKILL); `stack start {c}` brings it back");
        }
        Command::Start { component: name } => {
            stack.start(component(&name)?, &step)?;
            progress.finish();
        }
        Command::Demo => {
            stack.up(&step)?;
            step("running the order scenario through the writer CLI");
            let scenario = demo::run_scenario(&stack, &step)?;
            step("waiting until the projector has applied every event");
            let waited = demo::await_read_model(&stack, &scenario, Duration::from_secs(120))?;
            progress.finish();
            println!(
                "\n{} commands committed, {} refused; the read model caught up {:.1}s after the last command.\n",
                scenario.commands,
                scenario.refused.len(),
                waited.as_secs_f64()
            );
            println!("{}", demo::show_read_model(&stack, &scenario)?);
            print_env(
                &stack,
                scenario
                    .customers
                    .first()
                    .map(String::as_str)
                    .unwrap_or("c-1"),
            );
            println!("Stop the stack:          cargo run -q -p stack -- down");
        }
        Command::Env => print_env(&stack, "c-1"),
        Command::Psql { database, args } => {
            // People query the projections read-only; the write side is the
            // owner's (an operator's tool, not a dashboard's).
            let db = match database.as_str() {
                "read" => stack.login(stack::Role::Reader, stack::READ_DB),
                "write" => stack.write_db(),
                other => bail!("unknown database {other:?}; use read or write"),
            };
            use std::os::unix::process::CommandExt;
            let error = stack::postgres::psql_command(&db).args(&args).exec();
            bail!("running psql: {error}");
        }
        Command::Reconcile {
            settle,
            republish,
            json,
            textfile,
        } => {
            let report = stack::reconcile::run(&stack, settle)?;
            if let Some(path) = textfile {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let tmp = path.with_extension("prom.tmp");
                std::fs::write(&tmp, stack::reconcile::metrics_text(&report, now))
                    .and_then(|()| std::fs::rename(&tmp, &path))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} events committed more than {settle} s ago, {} applied; {} missing, {} unknown, {} aggregates behind",
                    report.committed,
                    report.applied,
                    report.missing.len(),
                    report.unknown.len(),
                    report.behind.len()
                );
                for (id, t, a, v) in &report.missing {
                    println!("missing: event {id} ({t} {a} version {v}) was committed but never applied, parked or dead-lettered");
                }
                for id in &report.unknown {
                    println!(
                        "unknown: event {id} was applied but the write side never committed it"
                    );
                }
                for (t, a, write, read) in &report.behind {
                    println!("behind: {t} {a} is at version {write} on the write side, {read} on the read side");
                }
            }
            if republish && !report.missing.is_empty() {
                let n = stack::reconcile::republish(&stack, &report.missing)?;
                println!("republished {n} events (same ids); run reconcile again in a minute");
            }
            if !report.is_clean() {
                bail!("the read side differs from the write side (see above)");
            }
        }
        Command::Rebuild { args } => {
            let status = stack
                .projector_as_owner()
                .arg("rebuild")
                .args(&args)
                .status()
                .context("running projector rebuild")?;
            if !status.success() {
                bail!("projector rebuild failed; the live tables are unchanged unless it reported a swap");
            }
        }
        Command::ReapTests | Command::Bench { .. } | Command::Chaos { .. } => {}
    }
    Ok(())
}

fn print_env(stack: &Stack, customer: &str) {
    println!(
        "Query the read database: cargo run -q -p stack -- psql -c 'SELECT * FROM order_view'"
    );
    println!(
        "  (or: PGSERVICEFILE={} psql service={})",
        stack.pg_service_file().display(),
        stack::READ_DB
    );
    println!(
        "Writer settings:         export WRITER_CONFIG={}",
        stack.writer_config().display()
    );
    println!("Run a command:           cargo run -q -p writer -- order place --customer {customer} --currency EUR --line BOOK-1:1:9.99");
    println!("All writer commands:     cargo run -q -p writer -- --help");
    println!("Stack status:            cargo run -q -p stack -- status");
}

fn render_bench(figures: &std::path::Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(figures)
        .with_context(|| format!("reading {}", figures.display()))?;
    let results: stack::bench::Results = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a benchmark's figures", figures.display()))?;
    let out = out.unwrap_or_else(|| stack::repo_root().join("docs"));
    // The command that measured them: a full run (the quick one asserts nothing worth keeping).
    let path = stack::bench::write_report(&results, &out, "cargo run --release -p stack -- bench")?;
    println!("re-rendered {} from {}", path.display(), figures.display());
    Ok(())
}

fn bench_scale(
    state_dir: Option<PathBuf>,
    quick: bool,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = state_dir.unwrap_or_else(|| stack::repo_root().join("target/bench-stack"));
    let spec = if quick {
        stack::scale::ScaleSpec::quick()
    } else {
        stack::scale::ScaleSpec::full()
    };
    let progress = Progress::new();
    let step = |m: &str| progress.step(m);
    let open = |shape: stack::Shape, name: &str| {
        Stack::open_fresh(dir.join(name), stack::default_bin_dir(), shape)
    };
    let results = stack::scale::run(&spec, &open, &step);
    progress.finish();
    let results = results
        .context("the scale benchmark failed (its stacks' logs are in the state directory)")?;
    let out = out.unwrap_or_else(|| stack::repo_root().join("docs"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("cargo run --release -p stack -- {}", args.join(" "));
    let path = stack::scale::write_report(&results, &out, &command)?;
    println!("{}", stack::scale::render_markdown(&results, &command));
    println!("written to {}", path.display());
    Ok(())
}

fn parse_phase(s: &str) -> Result<stack::bench::Phase, String> {
    s.parse().map_err(|e: stack::StackError| e.to_string())
}

fn bench(
    state_dir: Option<PathBuf>,
    spec: &stack::bench::BenchSpec,
    shape: stack::Shape,
    lever: &str,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let dir = state_dir.unwrap_or_else(|| stack::repo_root().join("target/bench-stack"));
    let stack = Stack::open_fresh(&dir, stack::default_bin_dir(), shape)?;
    let progress = Progress::new();
    let step = |m: &str| progress.step(m);
    stack.up(&step)?;
    let results = stack::bench::run(&stack, spec, &step);
    step("stopping the benchmark stack");
    stack.down(&|_| {})?;
    progress.finish();
    let mut results =
        results.context("the benchmark failed (its stack's logs are in the state directory)")?;
    results.lever = lever.to_owned();
    let out = out.unwrap_or_else(|| stack::repo_root().join("docs"));
    // The command as given (its options say what was measured).
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("cargo run --release -p stack -- {}", args.join(" "));
    let path = stack::bench::write_report(&results, &out, &command)?;
    println!(
        "{}",
        stack::bench::render_markdown(
            &results,
            stack::bench::load_baseline(&out).as_ref(),
            &command,
            "now",
            "benchmarks.svg"
        )
    );
    println!(
        "written to {} (and benchmarks.svg beside it)",
        path.display()
    );
    Ok(())
}

fn chaos(
    state_dir: Option<PathBuf>,
    spec: &stack::chaos::ChaosSpec,
    json: bool,
    keep: bool,
) -> anyhow::Result<()> {
    let dir = state_dir.unwrap_or_else(|| stack::repo_root().join("target/chaos-stack"));
    let stack = Stack::open_fresh(&dir, stack::default_bin_dir(), spec.shape)?;
    let progress = Progress::new();
    let step = |m: &str| progress.step(m);
    step(&format!("chaos run: {}", spec.command_line()));
    stack.up(&step)?;
    let report = stack::chaos::run(&stack, spec, &step);
    if !keep {
        step("stopping the chaos stack");
        stack.down(&|_| {})?;
    }
    progress.finish();
    let report = report.with_context(|| {
        format!(
            "the chaos run could not finish (logs in {})",
            dir.join("logs").display()
        )
    })?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("serializing the report")?
        );
    } else {
        print!("{}", report.render());
        println!("reproduce: {}", spec.command_line());
    }
    if !report.passed {
        bail!(
            "the chaos run failed (seed {}); logs of the run: {}",
            spec.seed,
            dir.join("logs").display()
        );
    }
    Ok(())
}

fn print_status(stack: &Stack, json: bool) -> bool {
    let report = status::report(stack);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for s in &report {
            let state = match (s.pid, s.healthy) {
                (None, _) => "down",
                (Some(_), true) => "up",
                (Some(_), false) => "unhealthy",
            };
            let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
            println!(
                "{:<10} {:<9} pid {:<8} {}",
                s.component, state, pid, s.detail
            );
        }
    }
    report.iter().all(|s| s.healthy)
}

//! `writer`: thin entry point; see the library for the design.
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use writer::cli::{self, Cli, OrderArgs, TopCommand};
use writer::settings::Settings;
use writer::store::{self, StoreError};

/// Exit code for input the writer refuses (bad values or a forbidden transition).
const EXIT_REFUSED: u8 = 2;

fn main() -> ExitCode {
    // One thread for one command (no cross-thread wake-ups on its round
    // trips); two workers when `writer load` drives many clients.
    let many_clients = matches!(
        Cli::try_parse().map(|c| c.command),
        Ok(TopCommand::Load(ref args)) if args.clients > 1
    );
    let runtime = if many_clients {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    match runtime {
        Ok(runtime) => runtime.block_on(async_main()),
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    // Held to the end: dropping it flushes the spans still to be exported.
    let _telemetry = service::telemetry::init("writer", "warn");
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            e.exit()
        }
        Err(e) => {
            // One clear line; `--help` has the rest.
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{} (see --help)", first.trim());
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    match run(&cli).await {
        Ok(output) => {
            // The command has committed: a closed stdout (`| head -1`) must not
            // turn that into a failure exit code.
            let _ = writeln!(std::io::stdout(), "{output}");
            ExitCode::SUCCESS
        }
        Err(Failure::Settings(error)) => {
            eprintln!("error: {error:#}");
            eprintln!("hint: pass --config FILE (or set WRITER_CONFIG); the local stack writes .stack/config/writer.toml, see `cargo run -p stack -- env`; or set WRITER__DATABASE__* variables");
            ExitCode::FAILURE
        }
        Err(Failure::Refused(message)) => {
            if cli.json {
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::json!({ "error": message })
                );
            }
            eprintln!("error: {message}");
            ExitCode::from(EXIT_REFUSED)
        }
        Err(Failure::Infrastructure(error)) => {
            eprintln!("error: {error:#}");
            if waited_for_a_lock(&error) {
                eprintln!("hint: another transaction held a row this command must lock for longer than database.lock_timeout_ms; nothing was written; try again");
            } else {
                eprintln!("hint: is the write database up and migrated? (`cargo run -p stack -- status`, `writer migrate`)");
            }
            ExitCode::FAILURE
        }
    }
}

/// The command gave up waiting for a lock (SQLSTATE 55P03, `lock_timeout`).
fn waited_for_a_lock(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
    })
}

enum Failure {
    Refused(String),
    /// The settings file or variables are missing or wrong.
    Settings(anyhow::Error),
    Infrastructure(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Infrastructure(e)
    }
}

async fn run(cli: &Cli) -> Result<String, Failure> {
    // Validate before touching the database: bad input never opens a connection.
    let refused = |e: writer::input::InvalidInput| Failure::Refused(e.to_string());
    let idempotency_key = cli
        .idempotency_key
        .as_deref()
        .map(|k| writer::input::identifier("idempotency-key", k))
        .transpose()
        .map_err(refused)?;
    let command = match &cli.command {
        TopCommand::Order(order) => {
            cli::order_command(order, idempotency_key.as_deref()).map_err(refused)?
        }
        TopCommand::Customer(customer) => Some(cli::customer_command(customer).map_err(refused)?),
        TopCommand::Catalog { out_dir } => {
            return write_catalog(out_dir).map_err(Failure::Infrastructure)
        }
        TopCommand::Migrate { .. } | TopCommand::Outbox(_) => None,
        TopCommand::Load(args) => return load(cli, args).await,
    };
    let settings = Settings::load(cli.config.as_deref())
        .map_err(|e| Failure::Settings(anyhow::Error::new(e).context("loading writer settings")))?;
    let db = &settings.database;
    let wait = match cli.command {
        TopCommand::Migrate { wait_for_db } => std::time::Duration::from_secs(wait_for_db),
        _ => std::time::Duration::ZERO,
    };
    let deadline = std::time::Instant::now() + wait;
    let mut backoff = std::time::Duration::from_millis(200);
    let (client, connection) = loop {
        match db.pg_config("writer").connect(tokio_postgres::NoTls).await {
            Ok(connected) => break connected,
            Err(e) if std::time::Instant::now() + backoff < deadline => {
                eprintln!(
                    "write database not reachable yet ({}); retrying",
                    service::show_db_error(&e)
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => {
                return Err(anyhow::Error::new(service::DbError(e))
                    .context(format!(
                        "connecting to the write database at {}",
                        db.describe()
                    ))
                    .into())
            }
        }
    };
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %service::show_db_error(&e), "write database connection closed");
        }
    });
    // The same client type as the pool's, so one command and `writer load` share the code.
    let mut client = deadpool_postgres::ClientWrapper::new(client, connection);

    if let Some(command) = command {
        let traceparent = std::env::var("TRACEPARENT").ok();
        let key = idempotency_key.as_deref();
        return match store::execute(&mut client, &command, traceparent.as_deref(), key).await {
            Ok(committed) => Ok(cli::render_committed(&committed, cli.json)),
            Err(StoreError::Rejected(r)) => Err(Failure::Refused(r.to_string())),
            Err(e) => Err(Failure::Infrastructure(
                anyhow::Error::new(e).context("running the command"),
            )),
        };
    }
    match &cli.command {
        TopCommand::Order(OrderArgs::Show { order_id }) => {
            let order = store::find_order(&*client, *order_id)
                .await
                .context("reading the order")?
                .ok_or_else(|| Failure::Refused(format!("order {order_id} does not exist")))?;
            Ok(cli::render_order(&order, cli.json))
        }
        TopCommand::Outbox(cli::OutboxArgs::Prune { older_than, batch }) => {
            let report = writer::retention::prune_outbox(&client, *older_than, *batch, |n| {
                eprintln!("outbox prune: {n} rows deleted so far")
            })
            .await
            .map_err(service::DbError)
            .context("pruning the outbox")?;
            Ok(cli::render_prune(&report, cli.json))
        }
        _ => {
            let applied = writer::migrate(&mut client)
                .await
                .context("migrating the write database")?;
            Ok(format!(
                "write database migrated ({applied} new migrations)"
            ))
        }
    }
}

/// `writer load`: many commands through a pool, with a progress line.
async fn load(cli: &Cli, args: &cli::LoadArgs) -> Result<String, Failure> {
    if args.clients == 0 || args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(Failure::Refused(
            "--clients and --rate must be positive".into(),
        ));
    }
    let settings = Settings::load(cli.config.as_deref())
        .map_err(|e| Failure::Settings(anyhow::Error::new(e).context("loading writer settings")))?;
    // Named per process, so a supervisor can tell which transactions are this run's.
    let application = format!("writer load {}", std::process::id());
    let manager = deadpool_postgres::Manager::new(
        settings.database.pg_config(&application),
        tokio_postgres::NoTls,
    );
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(args.clients)
        .build()
        .context("building the connection pool")?;
    drop(pool.get().await.with_context(|| {
        format!(
            "connecting to the write database at {}",
            settings.database.describe()
        )
    })?);
    let spec = writer::load::LoadSpec {
        clients: args.clients,
        rate: args.rate,
        duration: args.duration,
        mix: args.mix,
        seed: args.seed,
        count: args.count,
    };
    let live = std::sync::Arc::new(writer::load::Live::default());
    let bar = indicatif::ProgressBar::new(args.duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker = {
        let (bar, live) = (bar.clone(), live.clone());
        let started = std::time::Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let done = live.committed.load(std::sync::atomic::Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                bar.set_position(started.elapsed().as_millis() as u64);
                bar.set_message(format!(
                    "{done} committed ({:.0}/s), {} refused, {} failed",
                    done as f64 / secs,
                    live.refused.load(std::sync::atomic::Ordering::Relaxed),
                    live.failed.load(std::sync::atomic::Ordering::Relaxed)
                ));
            }
        })
    };
    let report = writer::load::run(pool, &spec, live).await;
    ticker.abort();
    bar.finish_and_clear();
    if cli.json {
        return serde_json::to_string(&report)
            .context("encoding the report")
            .map_err(Failure::Infrastructure);
    }
    let kinds: Vec<String> = report
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    Ok(format!(
        "{} clients, {:.1} s: {} committed ({:.0} commands/s), {} refused, {} failed, {} events; latency p50 {:.1} ms, p99 {:.1} ms\n  {}",
        report.clients,
        report.seconds,
        report.committed,
        report.commands_per_second,
        report.refused,
        report.failed,
        report.events,
        report.latency_ms_p50,
        report.latency_ms_p99,
        kinds.join(", ")
    ))
}

/// Writes the generated event catalog and JSON Schemas.
fn write_catalog(out_dir: &std::path::Path) -> anyhow::Result<String> {
    let schemas_dir = out_dir.join("schemas");
    std::fs::create_dir_all(&schemas_dir)
        .with_context(|| format!("creating {}", schemas_dir.display()))?;
    let catalog = out_dir.join("event_catalog.md");
    std::fs::write(&catalog, outbox_events::catalog::render_markdown())
        .with_context(|| format!("writing {}", catalog.display()))?;
    let schemas = outbox_events::catalog::schemas();
    for (name, text) in &schemas {
        let path = schemas_dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(format!(
        "wrote {} and {} schemas in {}",
        catalog.display(),
        schemas.len(),
        schemas_dir.display()
    ))
}

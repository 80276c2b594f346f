//! What the `writer` binary does once its arguments are parsed: run the
//! command, and say how it went.
//!
//! `main` parses the arguments ([`crate::cli`]), hands them to [`run`], prints
//! the output or the [`Failure`] and exits with [`Failure::exit_code`].
//! Everything else lives here, as library code the tests can reach:
//! - Input is validated before the database is touched: bad input never opens
//!   a connection, and is a refusal (exit 2, one line), not a failure.
//! - A failure outside the input (settings, database) prints the error with
//!   its causes, each once ([`service::chain`]), and a hint of what to check.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::{self, Cli, LoadArgs, OrderArgs, TopCommand};
use crate::settings::Settings;
use crate::store::{self, StoreError};

/// Exit code for input the writer refuses (bad values or a forbidden transition).
pub const EXIT_REFUSED: u8 = 2;
/// Exit code for every other failure (settings, database, file system).
pub const EXIT_FAILED: u8 = 1;

/// Why a command did not succeed.
#[derive(Debug)]
pub enum Failure {
    /// The input was refused: bad values or a forbidden transition. Nothing
    /// changed; the same command fails again.
    Refused(String),
    /// The settings file or variables are missing or wrong.
    Settings(anyhow::Error),
    /// The database (or the file system) failed.
    Infrastructure(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Infrastructure(e)
    }
}

impl Failure {
    /// [`EXIT_REFUSED`] for a refusal, [`EXIT_FAILED`] otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => EXIT_REFUSED,
            Failure::Settings(_) | Failure::Infrastructure(_) => EXIT_FAILED,
        }
    }

    /// What goes to stdout: with `--json`, a refusal as `{"error": …}`.
    pub fn stdout(&self, json: bool) -> Option<String> {
        match self {
            Failure::Refused(message) if json => {
                Some(serde_json::json!({ "error": message }).to_string())
            }
            _ => None,
        }
    }

    /// What goes to stderr (no final newline): `error:` with the error and its
    /// causes, each once; for failures outside the input a `hint:` line follows.
    pub fn stderr(&self) -> String {
        match self {
            Failure::Refused(message) => format!("error: {message}"),
            Failure::Settings(error) => format!(
                "error: {}\nhint: pass --config FILE (or set WRITER_CONFIG); the local stack writes .stack/config/writer.toml, see `cargo run -p stack -- env`; or set WRITER__DATABASE__* variables",
                service::chain(&**error)
            ),
            Failure::Infrastructure(error) => {
                let hint = if waited_for_a_lock(error) {
                    "another transaction held a row this command must lock for longer than database.lock_timeout_ms; nothing was written; try again"
                } else {
                    "is the write database up and migrated? (`cargo run -p stack -- status`, `writer migrate`)"
                };
                format!("error: {}\nhint: {hint}", service::chain(&**error))
            }
        }
    }
}

/// The command gave up waiting for a lock (SQLSTATE 55P03, `lock_timeout`).
fn waited_for_a_lock(error: &anyhow::Error) -> bool {
    let lock_not_available = |e: &tokio_postgres::Error| {
        e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
    };
    error.chain().any(|cause| {
        // A `DbError` ends its chain (it tells its cause itself); a bare
        // `tokio_postgres::Error` may sit in another crate's chain.
        cause
            .downcast_ref::<service::DbError>()
            .is_some_and(|e| lock_not_available(&e.0))
            || cause
                .downcast_ref::<tokio_postgres::Error>()
                .is_some_and(lock_not_available)
    })
}

fn load_settings(cli: &Cli) -> Result<Settings, Failure> {
    Settings::load(cli.config.as_deref())
        .map_err(|e| Failure::Settings(anyhow::Error::new(e).context("loading writer settings")))
}

/// Runs the command `cli` names; returns what to print. Customer, order,
/// outbox and migrate commands run on one connection ([`crate::db::connect`]).
pub async fn run(cli: &Cli) -> Result<String, Failure> {
    // Validate before touching the database: bad input never opens a connection.
    let refused = |e: crate::input::InvalidInput| Failure::Refused(e.to_string());
    let idempotency_key = cli
        .idempotency_key
        .as_deref()
        .map(|k| crate::input::identifier("idempotency-key", k))
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
        TopCommand::React { command } => return react(cli, command.as_ref()).await,
    };
    let settings = load_settings(cli)?;
    let wait = match cli.command {
        TopCommand::Migrate { wait_for_db } => Duration::from_secs(wait_for_db),
        _ => Duration::ZERO,
    };
    let mut client = crate::db::connect(&settings.database, "writer", wait, |e| {
        eprintln!("write database not reachable yet ({e}); retrying")
    })
    .await
    .map_err(anyhow::Error::new)?;

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
            let report = crate::retention::prune_outbox(&client, *older_than, *batch, |n| {
                eprintln!("outbox prune: {n} rows deleted so far")
            })
            .await
            .map_err(service::DbError)
            .context("pruning the outbox")?;
            Ok(cli::render_prune(&report, cli.json))
        }
        _ => {
            let applied = crate::migrate(&mut client)
                .await
                .context("migrating the write database")?;
            Ok(format!(
                "write database migrated ({applied} new migrations)"
            ))
        }
    }
}

/// `writer react`: the order reactor, until SIGTERM or ctrl-c; or with
/// `dead-letters …`, the operator's commands on its dead letters.
async fn react(cli: &Cli, command: Option<&cli::ReactCommand>) -> Result<String, Failure> {
    let settings = consumer::settings::Settings::load(cli.config.as_deref(), crate::react::SERVICE)
        .map_err(|e| {
            Failure::Settings(anyhow::Error::new(e).context(
                "loading the reactor's settings (pass --config FILE or set REACTOR__* variables)",
            ))
        })?;
    {
        let mut client = consumer::worker::connect(crate::react::SERVICE, &settings)
            .await
            .map_err(service::DbError)
            .with_context(|| {
                format!(
                    "connecting to the write database at {}",
                    settings.database.describe()
                )
            })?;
        if let Some(cli::ReactCommand::DeadLetters(command)) = command {
            consumer::cli::dead_letters(
                &mut client,
                &crate::react::OrderReactor,
                &consumer::record::Decoder::default(),
                command.clone(),
                cli.json,
            )
            .await?;
            return Ok(String::new());
        }
        let pending = crate::pending_migrations(&mut client)
            .await
            .context("reading the write database's migration history")?;
        if !pending.is_empty() {
            return Err(Failure::Infrastructure(anyhow::anyhow!(
                "the write database lacks migrations {pending:?}; run `writer migrate` as the owner role"
            )));
        }
    }
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(settings.metrics_addr)
        .install()
        .with_context(|| format!("serving metrics on {}", settings.metrics_addr))?;
    tokio::spawn(crate::react::export_awaiting_stock(settings.clone()));
    consumer::worker::run(
        settings,
        crate::react::OrderReactor,
        consumer::record::Decoder::default(),
        consumer::worker::shutdown_signal(),
    )
    .await
    .context("the order reactor stopped")?;
    Ok(String::new())
}

/// `writer load`: many commands through a pool, with a progress line.
async fn load(cli: &Cli, args: &LoadArgs) -> Result<String, Failure> {
    if args.clients == 0 || args.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(Failure::Refused(
            "--clients and --rate must be positive".into(),
        ));
    }
    let settings = load_settings(cli)?;
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
    let spec = crate::load::LoadSpec {
        clients: args.clients,
        rate: args.rate,
        duration: args.duration,
        mix: args.mix,
        seed: args.seed,
        count: args.count,
    };
    let live = std::sync::Arc::new(crate::load::Live::default());
    let bar = indicatif::ProgressBar::new(args.duration.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let ticker = {
        let (bar, live) = (bar.clone(), live.clone());
        let started = Instant::now();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
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
    let report = crate::load::run(pool, &spec, live).await;
    ticker.abort();
    bar.finish_and_clear();
    if cli.json {
        return serde_json::to_string(&report)
            .context("encoding the report")
            .map_err(Failure::Infrastructure);
    }
    Ok(render_load_report(&report))
}

/// The text summary of a `writer load` run.
fn render_load_report(report: &crate::load::Report) -> String {
    let kinds: Vec<String> = report
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
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
    )
}

/// `writer catalog`: writes the generated event catalog and JSON Schemas.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A database error without a server: an unparsable connection string.
    fn db_error() -> service::DbError {
        service::DbError(
            "port=none"
                .parse::<tokio_postgres::Config>()
                .expect_err("not a port"),
        )
    }

    #[test]
    fn a_store_error_prints_its_cause_once_through_anyhow() {
        let error = anyhow::Error::new(StoreError::from(db_error())).context("running the command");
        let text = format!("{error:#}");
        assert_eq!(
            text.matches("invalid connection string").count(),
            1,
            "{text}"
        );
        assert!(
            text.starts_with("running the command: write database: invalid connection string: "),
            "{text}"
        );
        assert_eq!(service::chain(&*error).to_string(), text, "the same line");
    }

    #[test]
    fn an_infrastructure_failure_prints_the_chain_and_a_hint() {
        let failure = Failure::Infrastructure(
            anyhow::Error::new(StoreError::from(db_error())).context("running the command"),
        );
        let stderr = failure.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 2, "{stderr}");
        assert!(
            lines[0].starts_with(
                "error: running the command: write database: invalid connection string: "
            ),
            "{stderr}"
        );
        assert!(
            lines[1].starts_with("hint: is the write database up and migrated?"),
            "{stderr}"
        );
        assert_eq!(failure.exit_code(), EXIT_FAILED);
        assert_eq!(failure.stdout(true), None);
    }

    #[test]
    fn a_settings_failure_names_the_cause_once() {
        let settings = service::SettingsError::MissingFile {
            path: "nowhere.toml".into(),
        };
        let failure =
            Failure::Settings(anyhow::Error::new(settings).context("loading writer settings"));
        let stderr = failure.stderr();
        assert!(
            stderr.starts_with(
                "error: loading writer settings: settings file nowhere.toml does not exist\nhint: pass --config FILE"
            ),
            "{stderr}"
        );
    }

    #[test]
    fn a_refusal_is_one_line_and_json_on_request() {
        let failure = Failure::Refused("order 1 does not exist".into());
        assert_eq!(failure.stderr(), "error: order 1 does not exist");
        assert_eq!(failure.exit_code(), EXIT_REFUSED);
        assert_eq!(failure.stdout(false), None);
        assert_eq!(
            failure.stdout(true).as_deref(),
            Some(r#"{"error":"order 1 does not exist"}"#)
        );
    }
}

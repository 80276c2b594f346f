//! `projector`: thin entry point; see the library for the design.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use projector::operator::{self, Replayed};
use projector::record::Decoder;
use projector::settings::Settings;

/// Consumes outbox events from Kafka into the read database (CQRS read side).
#[derive(Debug, Parser)]
#[command(name = "projector", version)]
struct Cli {
    /// Settings file (TOML); `PROJECTOR__*` variables override it.
    #[arg(long, global = true, env = "PROJECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Apply the read database's migrations and exit (same as `migrate`).
    #[arg(long)]
    migrate_only: bool,
    /// Print machine-readable JSON (dead-letter commands).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the projector (the default).
    Run,
    /// Apply the read database's migrations and exit.
    Migrate,
    /// Records the projector could not apply: list, show, replay, discard.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(DeadLetterCommand),
    /// Rebuild every read model from the beginning of the topics into a
    /// shadow schema while the live projection keeps running, then swap it in
    /// atomically. Run as the owner role (e.g. `PROJECTOR__DATABASE__USER=orders_owner`).
    Rebuild {
        /// Longest pause of the live projection while the copy takes its last steps.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        max_pause: std::time::Duration,
        /// Give up (the live tables stay) if no swap happened by then.
        #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
        deadline: std::time::Duration,
        /// Keep the old tables in a `retired_*` schema instead of dropping them.
        #[arg(long)]
        keep_old: bool,
    },
    /// Inbox maintenance: prune rows past the redelivery window.
    #[command(subcommand)]
    Inbox(InboxCommand),
}

#[derive(Debug, Subcommand)]
enum InboxCommand {
    /// Delete inbox rows applied longer ago than the window, oldest first, in
    /// batches (the rule: docs/operations.md, retention).
    Prune {
        /// Keep at least the outbox retention window (7d by default) plus margin.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Rows per delete transaction.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        batch: i64,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Open dead letters, with the events parked behind each.
    List {
        /// Include replayed and discarded ones.
        #[arg(long)]
        all: bool,
        /// Show at most this many (in id order).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=10_000))]
        limit: i64,
        /// Start after this dead letter id (the last one of the previous page).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// One dead letter with its record exactly as it arrived.
    Show { id: i64 },
    /// Apply again with this build's decoder, then the parked events behind it.
    Replay {
        /// The dead letter to replay.
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// Replay every open dead letter, oldest first.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Give up on a dead letter, recording why.
    Discard {
        id: i64,
        #[arg(long)]
        reason: String,
        /// Also move the aggregate past this version and apply what is parked
        /// behind it (the discarded event's effect is lost on purpose).
        #[arg(long)]
        skip_version: bool,
    },
}

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Cli::parse())) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain; the server's message, code and detail included.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let default_log = if matches!(
        cli.command,
        Some(Command::DeadLetters(_) | Command::Inbox(_))
    ) {
        "warn"
    } else {
        "info,rdkafka=warn"
    };
    // Held to the end: dropping it flushes the spans still to be exported.
    let _telemetry = service::telemetry::init("projector", default_log);
    let settings = Settings::load(cli.config.as_deref()).context(
        "loading projector settings (pass --config FILE or set PROJECTOR_CONFIG / PROJECTOR__* variables)",
    )?;
    let mut client = projector::consumer::connect(&settings)
        .await
        .map_err(service::DbError)
        .with_context(|| {
            format!(
                "connecting to the read database at {}",
                settings.database.describe()
            )
        })?;
    let decoder = Decoder::default();
    match cli.command {
        Some(Command::DeadLetters(command)) => {
            return dead_letters(&mut client, &decoder, command, cli.json).await;
        }
        Some(Command::Migrate) => return migrate(&mut client).await,
        Some(Command::Rebuild {
            max_pause,
            deadline,
            keep_old,
        }) => {
            drop(client);
            let spec = projector::rebuild::RebuildSpec {
                max_pause,
                deadline,
                keep_old,
            };
            let started = std::time::Instant::now();
            let progress =
                |m: &str| eprintln!("[{:>6.1}s] rebuild: {m}", started.elapsed().as_secs_f64());
            let report = projector::rebuild::rebuild(&settings, &spec, &progress)
                .await
                .context("rebuilding the read models (the live tables are unchanged unless the swap committed)")?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).context("serializing the report")?
                );
            } else {
                println!(
                    "rebuilt {} tables from {} events ({} duplicates turned away): caught up in {:.1} s, \
                     live paused {} ms for the swap, {:.1} s in all{}",
                    report.tables_swapped.len(),
                    report.events_applied,
                    report.duplicates_skipped,
                    report.catch_up_seconds,
                    report.pause_ms,
                    report.total_seconds,
                    report
                        .retired_schema
                        .as_deref()
                        .map(|s| format!("; old tables kept in schema {s}"))
                        .unwrap_or_default()
                );
            }
            return Ok(());
        }
        Some(Command::Inbox(InboxCommand::Prune { older_than, batch })) => {
            let deleted = projector::retention::prune_inbox(&client, older_than, batch, |n| {
                eprintln!("inbox prune: {n} rows deleted so far")
            })
            .await
            .map_err(service::DbError)
            .context("pruning the inbox")?;
            if cli.json {
                println!("{}", serde_json::json!({ "deleted": deleted }));
            } else {
                println!(
                    "inbox prune: {deleted} rows applied more than {} ago deleted",
                    humantime::format_duration(older_than)
                );
            }
            return Ok(());
        }
        Some(Command::Run) | None if cli.migrate_only => return migrate(&mut client).await,
        Some(Command::Run) | None => {
            let pending = projector::pending_migrations(&mut client)
                .await
                .context("reading the read database's migration history")?;
            anyhow::ensure!(
                pending.is_empty(),
                "the read database lacks migrations {pending:?}; run `projector migrate` as the owner role \
                 (the service's own role may not change the schema)"
            );
        }
    }
    drop(client);
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(settings.metrics_addr)
        .install()
        .with_context(|| format!("serving metrics on {}", settings.metrics_addr))?;
    projector::consumer::run(settings, decoder, shutdown_signal()).await?;
    Ok(())
}

async fn migrate(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let applied = projector::migrate(client)
        .await
        .context("migrating the read database")?;
    tracing::info!(applied, "read database migrated");
    Ok(())
}

async fn dead_letters(
    client: &mut tokio_postgres::Client,
    decoder: &Decoder,
    command: DeadLetterCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        DeadLetterCommand::List { all, limit, after } => {
            let letters = operator::list(&*client, all, operator::Page { after, limit }).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
                return Ok(());
            }
            let backlog = operator::backlog(&*client)
                .await
                .map_err(service::DbError)?;
            println!(
                "{} open dead letters, {} parked events in {} aggregates",
                backlog.dead_letters_open, backlog.parked_events, backlog.parked_aggregates
            );
            for d in &letters {
                println!(
                    "#{:<5} {:<9} {}/{}@{}  {} {} v{}  {}  parked behind: {}\n       reason: {}",
                    d.id,
                    d.status,
                    d.topic,
                    d.partition,
                    d.offset,
                    d.aggregate_type.as_deref().unwrap_or("?"),
                    d.aggregate_id.as_deref().unwrap_or("?"),
                    d.aggregate_version.map_or("?".into(), |v| v.to_string()),
                    d.event_type.as_deref().unwrap_or("?"),
                    d.parked_behind,
                    d.reason
                );
            }
            if letters.len() as i64 == limit {
                if let Some(last) = letters.last() {
                    println!("(more may follow: --after {})", last.id);
                }
            }
        }
        DeadLetterCommand::Show { id } => {
            let d = operator::show(&*client, id).await?;
            let r = &d.record;
            let text = |b: &Option<Vec<u8>>| match b {
                None => "(null)".to_owned(),
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => format!("{s:?}"),
                    Err(_) => format!(
                        "(not UTF-8, {} bytes) {}",
                        b.len(),
                        String::from_utf8_lossy(b)
                    ),
                },
            };
            if json {
                let headers: Vec<_> = r
                    .headers
                    .iter()
                    .map(|h| serde_json::json!({"name": String::from_utf8_lossy(&h.name), "value": h.value.as_deref().map(String::from_utf8_lossy)}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "dead_letter": d.summary,
                        "key": r.key.as_deref().map(String::from_utf8_lossy),
                        "headers": headers,
                        "value": r.payload.as_deref().map(String::from_utf8_lossy),
                    }))?
                );
                return Ok(());
            }
            let s = &d.summary;
            println!(
                "dead letter #{} ({}, {} attempts, failed {})",
                s.id, s.status, s.attempts, s.failed_at
            );
            println!("reason:   {}", s.reason);
            println!("record:   {}/{}@{}", s.topic, s.partition, s.offset);
            println!("key:      {}", text(&r.key));
            for h in &r.headers {
                println!(
                    "header:   {} = {}",
                    text(&Some(h.name.clone())),
                    text(&h.value)
                );
            }
            println!("value:    {}", text(&r.payload));
            println!("parked behind it: {}", s.parked_behind);
            if let Some(resolution) = &s.resolution {
                println!("resolution: {resolution}");
            }
        }
        DeadLetterCommand::Replay { id, all } => {
            let ids = match (id, all) {
                (Some(id), _) => vec![id],
                (None, _) => operator::open_ids(&*client).await?,
            };
            let mut failing = 0;
            for id in ids {
                let result = operator::replay(client, decoder, id).await?;
                if matches!(result, Replayed::StillFailing { .. }) {
                    failing += 1;
                }
                if json {
                    println!("{}", serde_json::json!({"id": id, "replay": result}));
                    continue;
                }
                match result {
                    Replayed::Applied { released } => {
                        println!("#{id}: applied; {released} parked events released")
                    }
                    Replayed::AlreadyApplied => println!("#{id}: already applied; marked replayed"),
                    Replayed::Parked => println!("#{id}: parked behind a missing earlier version"),
                    Replayed::StillFailing { reason } => println!("#{id}: still failing: {reason}"),
                }
            }
            if failing > 0 {
                anyhow::bail!("{failing} dead letters still fail; fix the cause (e.g. deploy an upcaster) and replay again, or discard them");
            }
        }
        DeadLetterCommand::Discard {
            id,
            reason,
            skip_version,
        } => {
            let result = operator::discard(client, decoder, id, &reason, skip_version).await?;
            if json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                println!(
                    "#{id}: discarded; {} parked events released, {} still parked{}",
                    result.released,
                    result.still_parked,
                    if result.still_parked > 0 && !skip_version {
                        " (they wait for the discarded version; `--skip-version` applies them without it)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing the current batch");
}

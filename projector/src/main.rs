//! `projector`: thin entry point; see the library for the design. Parses the
//! arguments, loads the settings, dispatches to [`projector::app`] and
//! [`projector::dead_letter_report`], prints what they return, and exits 0,
//! or 1 with the error and its causes, each once.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use projector::record::Decoder;
use projector::settings::Settings;
use projector::{app, rebuild::RebuildSpec};

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
    DeadLetters(consumer::cli::DeadLetterCommand),
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
            // One readable chain, each cause once; the server's message, code and detail included.
            eprintln!("error: {}", service::chain(&*e));
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
    let settings = Settings::load(cli.config.as_deref(), projector::SERVICE).context(
        "loading projector settings (pass --config FILE or set PROJECTOR_CONFIG / PROJECTOR__* variables)",
    )?;
    let mut client = app::connect(&settings).await?;
    let decoder = Decoder::default();
    match cli.command {
        Some(Command::DeadLetters(command)) => {
            consumer::cli::dead_letters(
                &mut client,
                &projector::ReadModels,
                &decoder,
                command,
                cli.json,
            )
            .await
        }
        Some(Command::Migrate) => app::migrate(&mut client).await,
        Some(Command::Rebuild {
            max_pause,
            deadline,
            keep_old,
        }) => {
            drop(client);
            let spec = RebuildSpec {
                max_pause,
                deadline,
                keep_old,
            };
            print!("{}", app::rebuild(&settings, &spec, cli.json).await?);
            Ok(())
        }
        Some(Command::Inbox(InboxCommand::Prune { older_than, batch })) => {
            print!(
                "{}",
                app::prune_inbox(&client, older_than, batch, cli.json).await?
            );
            Ok(())
        }
        Some(Command::Run) | None if cli.migrate_only => app::migrate(&mut client).await,
        Some(Command::Run) | None => app::serve(settings, client, decoder).await,
    }
}

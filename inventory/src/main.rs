//! `inventory`: thin entry point; see the library for the design. Parses the
//! arguments, loads the settings, runs one command, prints its result, and
//! exits 0, or 1 with the error and its causes, each once.
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use consumer::record::Decoder;
use consumer::settings::Settings;
use inventory::reservations::Reservations;
use inventory::stock;

/// The inventory service: stock per SKU, reservations for orders.
#[derive(Debug, Parser)]
#[command(name = "inventory", version)]
struct Cli {
    /// Settings file (TOML); `INVENTORY__*` variables override it.
    #[arg(long, global = true, env = "INVENTORY_CONFIG")]
    config: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume order events: reserve, reject, release and ship stock.
    Run,
    /// Apply the inventory database's migrations and exit (as the owner role).
    Migrate,
    /// Stock per SKU: set, add, show.
    #[command(subcommand)]
    Stock(StockCommand),
    /// Order events the inventory could not apply: list, show, replay, discard.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(consumer::cli::DeadLetterCommand),
}

#[derive(Debug, Subcommand)]
enum StockCommand {
    /// Set the units on hand of one or more SKUs (not below the units
    /// reserved), each in its own transaction with its event.
    Set {
        #[arg(required = true)]
        skus: Vec<String>,
        #[arg(long)]
        quantity: i64,
    },
    /// Add a delivery of units to a SKU whose stock was set.
    Add {
        sku: String,
        #[arg(long)]
        quantity: i64,
    },
    /// Every SKU: on hand, reserved, available.
    Show,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", service::chain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let default_log = match cli.command {
        Command::Run => "info,rdkafka=warn",
        _ => "warn",
    };
    let _telemetry = service::telemetry::init(inventory::SERVICE, default_log);
    let settings = Settings::load(cli.config.as_deref(), inventory::SERVICE).context(
        "loading inventory settings (pass --config FILE or set INVENTORY_CONFIG / INVENTORY__* variables)",
    )?;
    let mut client = consumer::worker::connect(inventory::SERVICE, &settings)
        .await
        .map_err(service::DbError)
        .with_context(|| {
            format!(
                "connecting to the inventory database at {}",
                settings.database.describe()
            )
        })?;
    match cli.command {
        Command::Migrate => {
            let applied = inventory::migrate(&mut client)
                .await
                .context("migrating the inventory database")?;
            tracing::info!(applied, "inventory database migrated");
            Ok(())
        }
        Command::Run => {
            let pending = inventory::pending_migrations(&mut client)
                .await
                .context("reading the inventory database's migration history")?;
            anyhow::ensure!(
                pending.is_empty(),
                "the inventory database lacks migrations {pending:?}; run `inventory migrate` as the owner role"
            );
            drop(client);
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .with_http_listener(settings.metrics_addr)
                .install()
                .with_context(|| format!("serving metrics on {}", settings.metrics_addr))?;
            consumer::worker::run(
                settings,
                Reservations,
                Decoder::default(),
                consumer::worker::shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        Command::Stock(StockCommand::Set { skus, quantity }) => {
            for sku in skus {
                let level = stock::set(&mut client, &sku, quantity).await?;
                print_level(&level, cli.json)?;
            }
            Ok(())
        }
        Command::Stock(StockCommand::Add { sku, quantity }) => {
            let level = stock::add(&mut client, &sku, quantity).await?;
            print_level(&level, cli.json)
        }
        Command::DeadLetters(command) => {
            consumer::cli::dead_letters(
                &mut client,
                &Reservations,
                &Decoder::default(),
                command,
                cli.json,
            )
            .await
        }
        Command::Stock(StockCommand::Show) => {
            let rows = stock::show(&client).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<24} {:>10} {:>10} {:>10}",
                    "sku", "on_hand", "reserved", "available"
                );
                for r in rows {
                    println!(
                        "{:<24} {:>10} {:>10} {:>10}",
                        r.sku, r.on_hand, r.reserved, r.available
                    );
                }
            }
            Ok(())
        }
    }
}

fn print_level(level: &outbox_events::StockLevel, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(level)?);
    } else {
        println!(
            "{}: {} on hand, {} reserved, {} available",
            level.sku,
            level.on_hand,
            level.reserved,
            level.on_hand - level.reserved
        );
    }
    Ok(())
}

//! `projector`: thin entry point; see the library for the design.
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use projector::settings::Settings;

/// Consumes outbox events from Kafka into the read database (CQRS read side).
#[derive(Debug, Parser)]
#[command(name = "projector", version)]
struct Cli {
    /// Settings file (TOML); `PROJECTOR__*` variables override it.
    #[arg(long, env = "PROJECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// Apply the read database's migrations and exit.
    #[arg(long)]
    migrate_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    service::init_tracing("info,rdkafka=warn");
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading projector settings")?;
    let mut client = projector::consumer::connect(&settings)
        .await
        .with_context(|| {
            format!(
                "connecting to the read database at {}",
                settings.database.describe()
            )
        })?;
    let applied = projector::migrate(&mut client)
        .await
        .context("migrating the read database")?;
    tracing::info!(applied, "read database migrated");
    drop(client);
    if cli.migrate_only {
        return Ok(());
    }
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(settings.metrics_addr)
        .install()
        .with_context(|| format!("serving metrics on {}", settings.metrics_addr))?;
    projector::consumer::run(settings, shutdown_signal()).await?;
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

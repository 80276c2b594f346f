//! What the `projector` binary does once its arguments are parsed.
//!
//! `main` parses the arguments, loads the settings, connects ([`connect`]) and
//! dispatches to a function here or in [`crate::dead_letter_report`]; it
//! prints what they return and, for an error, the error with its causes, each
//! once ([`service::chain`]), then exits 1. Progress goes to stderr, results
//! to stdout; every text returned ends with a newline.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::rebuild::{RebuildReport, RebuildSpec};
use crate::record::Decoder;
use crate::settings::Settings;

/// One connection to the read database, for a command or the start-up checks.
pub async fn connect(settings: &Settings) -> anyhow::Result<consumer::worker::Db> {
    consumer::worker::connect(crate::SERVICE, settings)
        .await
        .map_err(service::DbError)
        .with_context(|| {
            format!(
                "connecting to the read database at {}",
                settings.database.describe()
            )
        })
}

/// `projector migrate`: applies the read database's migrations.
pub async fn migrate(client: &mut tokio_postgres::Client) -> anyhow::Result<()> {
    let applied = crate::migrate(client)
        .await
        .context("migrating the read database")?;
    tracing::info!(applied, "read database migrated");
    Ok(())
}

/// `projector run`: checks that the read database has every migration of this
/// build, serves the metrics and runs the projection until SIGTERM or ctrl-c
/// ([`consumer::worker::shutdown_signal`]).
pub async fn serve(
    settings: Settings,
    mut client: consumer::worker::Db,
    decoder: Decoder,
) -> anyhow::Result<()> {
    let pending = crate::pending_migrations(&mut client)
        .await
        .context("reading the read database's migration history")?;
    anyhow::ensure!(
        pending.is_empty(),
        "the read database lacks migrations {pending:?}; run `projector migrate` as the owner role \
         (the service's own role may not change the schema)"
    );
    drop(client);
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(settings.metrics_addr)
        .install()
        .with_context(|| format!("serving metrics on {}", settings.metrics_addr))?;
    consumer::worker::run(
        settings,
        crate::ReadModels,
        decoder,
        consumer::worker::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// `projector rebuild`: progress on stderr; returns the report to print.
pub async fn rebuild(
    settings: &Settings,
    spec: &RebuildSpec,
    json: bool,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let progress = |m: &str| eprintln!("[{:>6.1}s] rebuild: {m}", started.elapsed().as_secs_f64());
    let report = crate::rebuild::rebuild(settings, spec, &progress)
        .await
        .context(
            "rebuilding the read models (the live tables are unchanged unless the swap committed)",
        )?;
    rebuild_text(&report, json)
}

/// What a rebuild did, as one line, or as pretty JSON.
pub fn rebuild_text(report: &RebuildReport, json: bool) -> anyhow::Result<String> {
    if json {
        return Ok(serde_json::to_string_pretty(report).context("serializing the report")? + "\n");
    }
    Ok(format!(
        "rebuilt {} tables from {} events ({} duplicates turned away): caught up in {:.1} s, \
         live paused {} ms for the swap, {:.1} s in all{}\n",
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
    ))
}

/// `projector inbox prune`: progress on stderr; returns what was deleted.
pub async fn prune_inbox(
    client: &tokio_postgres::Client,
    older_than: Duration,
    batch: i64,
    json: bool,
) -> anyhow::Result<String> {
    let deleted = crate::retention::prune_inbox(client, older_than, batch, |n| {
        eprintln!("inbox prune: {n} rows deleted so far")
    })
    .await
    .map_err(service::DbError)
    .context("pruning the inbox")?;
    Ok(prune_text(deleted, older_than, json))
}

fn prune_text(deleted: u64, older_than: Duration, json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::json!({ "deleted": deleted }));
    }
    format!(
        "inbox prune: {deleted} rows applied more than {} ago deleted\n",
        humantime::format_duration(older_than)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuild_report_is_one_line() {
        let report = RebuildReport {
            events_applied: 120,
            duplicates_skipped: 3,
            catch_up_seconds: 4.31,
            pause_ms: 80,
            total_seconds: 5.0,
            tables_swapped: vec!["order_view".into(), "inbox".into()],
            retired_schema: Some("retired_20240501120000".into()),
            ..RebuildReport::default()
        };
        assert_eq!(
            rebuild_text(&report, false).expect("text"),
            "rebuilt 2 tables from 120 events (3 duplicates turned away): caught up in 4.3 s, \
             live paused 80 ms for the swap, 5.0 s in all; old tables kept in schema retired_20240501120000\n"
        );
    }

    #[test]
    fn an_inbox_prune_says_what_it_deleted() {
        let week = Duration::from_secs(7 * 24 * 3600);
        assert_eq!(
            prune_text(12, week, false),
            "inbox prune: 12 rows applied more than 7days ago deleted\n"
        );
        assert_eq!(prune_text(12, week, true), "{\"deleted\":12}\n");
    }

    #[test]
    fn a_kafka_error_is_told_once() {
        let error =
            consumer::worker::WorkerError::Kafka(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure,
            ));
        assert_eq!(error.to_string(), "kafka", "its own part only");
        let text = service::chain(&error).to_string();
        assert_eq!(
            text.matches("BrokerTransportFailure").count(),
            1,
            "rdkafka repeats its code; the chain does not: {text}"
        );
        assert!(
            text.starts_with("kafka: Message consumption error: BrokerTransportFailure"),
            "{text}"
        );
    }
}

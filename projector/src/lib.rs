//! The read side: Kafka topics in, denormalized read models out.
//!
//! Delivery from Kafka is at-least-once. Each event's id goes into the `inbox`
//! table in the same read-database transaction as its projection change, so a
//! redelivered event is recognised and skipped: every event has exactly one
//! effect. Kafka offsets are stored only after that transaction commits; a
//! crash in between means redelivery, never loss.
//!
//! The machinery around the read models — batches, inbox, positions and the
//! fence, the version policy with parking, dead letters, retries, metrics — is
//! the consumer core (crate `consumer`), shared with the inventory service
//! and the order reactor; the projector supplies its handler
//! ([`read_model::ReadModels`]).
//!
//! # Layout
//! - [`read_model`]: each projection owns its tables and one pure `plan`
//!   function: an event in, the statements that apply it out; together the
//!   projector's [`consumer::Handler`].
//! - [`rebuild`]: `projector rebuild`, a shadow copy built from the topics
//!   and swapped in atomically.
//! - [`app`]: what the binary does with parsed arguments (connect, migrate,
//!   run, rebuild, prune); `main` only parses, dispatches, prints and exits.
//!   Errors print with their causes, each once ([`service::chain`]).
//! - The core's modules, re-exported for the projector's callers:
//!   [`batch`], [`worker`], [`operator`], [`dead_letter_report`],
//!   [`position`], [`record`], [`retention`], [`trace`], [`settings`].

pub mod app;
pub mod read_model;
pub mod rebuild;

pub use consumer::{
    batch, dead_letter_report, operator, position, record, retention, settings, trace, worker,
};
pub use read_model::ReadModels;

/// The projector's name: its metrics (`projector_*`), its environment
/// (`PROJECTOR__*`) and its default consumer group.
pub const SERVICE: &str = "projector";

/// Every metric the projector exports: the consumer core's
/// ([`consumer::worker::METRIC_SUFFIXES`]) named after it, spelled out for
/// the alerts, the dashboard and docs/operations.md (a test holds the two
/// lists together).
pub const METRICS: [&str; 13] = [
    "projector_events_applied_total",
    "projector_events_duplicate_total",
    "projector_records_stale_total",
    "projector_events_parked_total",
    "projector_dead_letters_total",
    "projector_batches_total",
    "projector_batch_failures_total",
    "projector_event_latency_seconds",
    "projector_dead_letters_open",
    "projector_parked_events",
    "projector_parked_aggregates",
    "projector_partition_lag",
    "projector_consumer_lag",
];

#[cfg(test)]
mod tests {
    #[test]
    fn the_listed_metrics_are_the_cores_named_after_the_projector() {
        let core: Vec<String> = consumer::worker::METRIC_SUFFIXES
            .iter()
            .map(|s| format!("{}_{s}", super::SERVICE))
            .collect();
        assert_eq!(core, super::METRICS);
    }
}

mod embedded {
    refinery::embed_migrations!("../sql/read");
}

/// Applies the read database's migrations (`sql/read/`); idempotent.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, refinery::Error> {
    let report = embedded::migrations::runner().run_async(client).await?;
    Ok(report.applied_migrations().len())
}

/// Migrations in this build that the read database has not applied yet.
///
/// The service checks instead of migrating: its role may change rows, not the
/// schema (`projector migrate` runs as the owner role).
pub async fn pending_migrations(
    client: &mut tokio_postgres::Client,
) -> Result<Vec<String>, refinery::Error> {
    service::pending_migrations(&embedded::migrations::runner(), client).await
}

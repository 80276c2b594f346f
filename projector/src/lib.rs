//! The read side: Kafka topics in, denormalized read models out.
//!
//! Delivery from Kafka is at-least-once. Each event's id goes into the `inbox`
//! table in the same read-database transaction as its projection change, so a
//! redelivered event is recognised and skipped: every event has exactly one
//! effect. Kafka offsets are stored only after that transaction commits; a
//! crash in between means redelivery, never loss.
//!
//! # Layout
//! - [`record`]: an owned copy of a Kafka record and its decoding into an
//!   [`outbox_events::Envelope`].
//! - [`batch`]: [`batch::apply_batch`], one step of the worker: one transaction
//!   for a batch of records (inbox, version policy, parking, projections, dead
//!   letters), pipelined, then an [`batch::Outcome`]. Tests drive it directly.
//! - [`read_model`]: each projection owns its tables and one pure `plan`
//!   function: an event in, the statements that apply it out.
//! - [`consumer`]: the thin loop around `apply_batch`: poll a batch, apply it
//!   with capped retries, store offsets, stop cleanly on the shutdown signal.
//! - [`operator`]: the dead-letter life cycle (list, show, replay, discard)
//!   and the backlog of parked events, for the CLI and the gauges.
//! - [`dead_letter_report`]: what `projector dead-letters …` prints, rendered
//!   by pure functions (text or `--json`).
//! - [`position`]: the consumer positions kept in the read database.
//! - [`rebuild`]: `projector rebuild`, a shadow copy built from the topics
//!   and swapped in atomically.
//! - [`retention`]: `projector inbox prune`.
//! - [`trace`]: each applied record's span, continuing the writer's trace.
//! - [`settings`]: typed settings (file + `PROJECTOR__*` environment).
//! - [`app`]: what the binary does with parsed arguments (connect, migrate,
//!   run, rebuild, prune); `main` only parses, dispatches, prints and exits.
//!   Errors print with their causes, each once ([`service::chain`]).

pub mod app;
pub mod batch;
pub mod consumer;
pub mod dead_letter_report;
pub mod operator;
pub mod position;
pub mod read_model;
pub mod rebuild;
pub mod record;
pub mod retention;
pub mod settings;
pub mod trace;

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
    let runner = embedded::migrations::runner();
    let applied = runner
        .get_applied_migrations_async(client)
        .await?
        .into_iter()
        .map(|m| m.version())
        .collect::<std::collections::HashSet<_>>();
    Ok(runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.contains(&m.version()))
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}

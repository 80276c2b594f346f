//! The write side of the order service.
//!
//! A command either commits its state change *and* its events together, or
//! changes nothing and says why. Events leave the service only through the
//! `outbox` table, which Debezium reads from the WAL: there is no dual write.
//!
//! # Layout
//! - [`input`]: parses and validates raw CLI text into domain values.
//! - [`domain`]: pure rules, `decide(state, command) -> events | rejection`.
//! - [`store`]: one transaction per command: lock the aggregate, decide, write
//!   state rows, append outbox rows with the next aggregate versions, commit.
//! - [`load`]: a load generator on the same `store::execute`, many commands
//!   per process through a connection pool (`writer load`).
//! - [`cli`]: the clap interface and its output (human or `--json`).
//! - [`app`]: what the binary does with parsed arguments: validate, connect,
//!   run, and report a failure (the error with its causes once, a hint, the
//!   exit code). `main` only parses, dispatches and exits.
//! - [`db`]: one command's connection to the write database; `migrate
//!   --wait-for-db` retries it with a capped backoff.
//! - [`retention`]: `writer outbox prune`, deleting published outbox rows
//!   past the retention window.
//! - [`settings`]: typed settings (file + `WRITER__*` environment).
//! - [`react`]: the order reactor (`writer react`): the consumer core's
//!   handler that confirms or rejects placed orders on the inventory's
//!   replies, in the write database, through the same rules and outbox.

pub mod app;
pub mod cli;
pub mod db;
pub mod domain;
pub mod input;
pub mod load;
pub mod react;
pub mod retention;
pub mod settings;
pub mod store;

mod embedded {
    refinery::embed_migrations!("../sql/write");
}

/// The write database's migrations: `sql/write/`, and as V8 the consumer
/// core's tables (`sql/consumer/core.sql`) for the order reactor.
pub fn migrations() -> refinery::Runner {
    let mut all = embedded::migrations::runner().get_migrations().clone();
    all.push(
        refinery::Migration::unapplied("V8__consumer_core", consumer::CORE_MIGRATION)
            .expect("a valid migration name"),
    );
    all.sort_by_key(|m| m.version());
    refinery::Runner::new(&all)
}

/// Migrations of this build the write database has not applied yet.
pub async fn pending_migrations(
    client: &mut tokio_postgres::Client,
) -> Result<Vec<String>, refinery::Error> {
    service::pending_migrations(&migrations(), client).await
}

/// Applies the write database's migrations; idempotent.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, refinery::Error> {
    let report = migrations().run_async(client).await?;
    Ok(report.applied_migrations().len())
}

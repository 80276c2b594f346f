//! What an operator does with records a consumer could not apply: list,
//! show, replay and discard dead letters; see the backlog of parked events.
//!
//! Every command is one read-database transaction that takes the dead letter's
//! row lock and applies through the same code as the running consumer
//! ([`crate::batch::apply_in`]), with the same guarded writes, so it is safe to
//! run while consumers run: at worst one side's check fails and it retries.

use chrono::{DateTime, Utc};
use serde::Serialize;
use service::DbError;

use crate::batch::{self, apply_in, stored_record, BatchError};
use crate::handler::Handler;
use crate::record::{Decoder, Record};

/// Where a dead letter is in its life: `open` until an operator replays it
/// (`replayed`) or gives it up (`discarded`); the names `dead_letters.status`
/// holds (its CHECK constraint lists them), bound as parameters, never
/// spelled in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterStatus {
    Open,
    Replayed,
    Discarded,
}

impl DeadLetterStatus {
    pub const ALL: [DeadLetterStatus; 3] = [Self::Open, Self::Replayed, Self::Discarded];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Replayed => "replayed",
            Self::Discarded => "discarded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl std::fmt::Display for DeadLetterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("dead letter {0} does not exist (see `projector dead-letters list --all`)")]
    NotFound(i64),
    #[error("dead letter {id} is {status}, not open; nothing to do")]
    NotOpen { id: i64, status: String },
    #[error("cannot skip version {version} of {aggregate}: {why}")]
    CannotSkip {
        aggregate: String,
        version: i64,
        why: String,
    },
    #[error("read database")]
    Database(#[from] DbError),
}

impl From<tokio_postgres::Error> for OperatorError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(DbError(e))
    }
}

impl From<BatchError> for OperatorError {
    fn from(e: BatchError) -> Self {
        Self::Database(e.0)
    }
}

/// What waits for an operator.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Backlog {
    pub dead_letters_open: i64,
    pub parked_events: i64,
    pub parked_aggregates: i64,
}

pub async fn backlog(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Backlog, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM dead_letters WHERE status = $1), \
                    (SELECT count(*) FROM parked_events), \
                    (SELECT count(*) FROM (SELECT DISTINCT aggregate_type, aggregate_id FROM parked_events) a)",
            &[&DeadLetterStatus::Open.as_str()],
        )
        .await?;
    Ok(Backlog {
        dead_letters_open: row.get(0),
        parked_events: row.get(1),
        parked_aggregates: row.get(2),
    })
}

/// One dead letter as `list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub status: String,
    pub reason: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub aggregate_version: Option<i64>,
    pub event_type: Option<String>,
    /// Events of the same aggregate waiting in `parked_events`.
    pub parked_behind: i64,
    pub attempts: i32,
    pub failed_at: DateTime<Utc>,
    pub resolution: Option<String>,
}

const SUMMARY: &str = "d.id, d.status, d.reason, d.topic, d.kafka_partition, d.kafka_offset, d.aggregate_type, d.aggregate_id, \
    d.aggregate_version, d.event_type, \
    (SELECT count(*) FROM parked_events p WHERE p.aggregate_type = d.aggregate_type AND p.aggregate_id = d.aggregate_id), \
    d.attempts, d.failed_at, d.resolution";

fn summary(row: &tokio_postgres::Row) -> DeadLetter {
    DeadLetter {
        id: row.get(0),
        status: row.get(1),
        reason: row.get(2),
        topic: row.get(3),
        partition: row.get(4),
        offset: row.get(5),
        aggregate_type: row.get(6),
        aggregate_id: row.get(7),
        aggregate_version: row.get(8),
        event_type: row.get(9),
        parked_behind: row.get(10),
        attempts: row.get(11),
        failed_at: row.get(12),
        resolution: row.get(13),
    }
}

/// Open dead letters (or all with `all`), oldest first.
/// One page of dead letters: those with an id above `after`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub after: i64,
    pub limit: i64,
}

impl Default for Page {
    /// The first 100.
    fn default() -> Self {
        Self {
            after: 0,
            limit: 100,
        }
    }
}

/// Dead letters in id order, one page at a time (a flood of bad records
/// must not make one listing read them all); `all` includes resolved ones.
pub async fn list(
    client: &impl tokio_postgres::GenericClient,
    all: bool,
    page: Page,
) -> Result<Vec<DeadLetter>, OperatorError> {
    let rows = client
        .query(
            &format!(
                "SELECT {SUMMARY} FROM dead_letters d WHERE ($1 OR d.status = $4) AND d.id > $2 \
                 ORDER BY d.id LIMIT $3"
            ),
            &[
                &all,
                &page.after,
                &page.limit,
                &DeadLetterStatus::Open.as_str(),
            ],
        )
        .await?;
    Ok(rows.iter().map(summary).collect())
}

/// A dead letter with the record exactly as it arrived.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    pub summary: DeadLetter,
    pub record: Record,
}

/// The columns [`stored_record`] reads, for `dead_letters d`.
const RECORD: &str = "d.topic, d.kafka_partition, d.kafka_offset, d.key_bytes, d.header_names, d.header_values, d.value_bytes";

pub async fn show(
    client: &impl tokio_postgres::GenericClient,
    id: i64,
) -> Result<DeadLetterRecord, OperatorError> {
    let row = client
        .query_opt(
            &format!("SELECT {SUMMARY}, {RECORD} FROM dead_letters d WHERE d.id = $1"),
            &[&id],
        )
        .await?
        .ok_or(OperatorError::NotFound(id))?;
    Ok(DeadLetterRecord {
        summary: summary(&row),
        record: stored_record(&row, 14),
    })
}

/// Locks dead letter `id` for this transaction and checks that it is open;
/// the row holds its status, then `columns` (of `dead_letters d`).
async fn lock_open(
    tx: &tokio_postgres::Transaction<'_>,
    id: i64,
    columns: &str,
) -> Result<tokio_postgres::Row, OperatorError> {
    let row = tx
        .query_opt(
            &format!("SELECT d.status, {columns} FROM dead_letters d WHERE d.id = $1 FOR UPDATE"),
            &[&id],
        )
        .await?
        .ok_or(OperatorError::NotFound(id))?;
    let status: String = row.get(0);
    if DeadLetterStatus::parse(&status) != Some(DeadLetterStatus::Open) {
        return Err(OperatorError::NotOpen { id, status });
    }
    Ok(row)
}

/// What a replay did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Replayed {
    /// Applied; `released` parked events of its aggregate applied after it.
    Applied { released: usize },
    /// Its version was applied meanwhile (e.g. redelivered): nothing to do.
    AlreadyApplied,
    /// An earlier version of its aggregate is still missing: it is parked now.
    Parked,
    /// It failed again; the dead letter stays open with the new reason.
    StillFailing { reason: String },
}

/// Re-applies dead letter `id` with today's code (`decoder`), then the parked
/// events behind it, in order.
pub async fn replay<H: Handler>(
    client: &mut crate::worker::Db,
    handler: &H,
    decoder: &Decoder,
    id: i64,
) -> Result<Replayed, OperatorError> {
    let mut tx = client.transaction().await?;
    let row = lock_open(&tx, id, RECORD).await?;
    let record = stored_record(&row, 1);
    let outcome = apply_in(&mut tx, handler, decoder, std::slice::from_ref(&record)).await?;
    let (result, resolution) = if outcome.dead_lettered > 0 {
        let reason: String = tx
            .query_one("SELECT reason FROM dead_letters WHERE id = $1", &[&id])
            .await?
            .get(0);
        (Replayed::StillFailing { reason }, None)
    } else if outcome.applied > 0 {
        let released = outcome.applied - 1;
        (
            Replayed::Applied { released },
            Some(format!(
                "replayed: applied, {released} parked events released"
            )),
        )
    } else if outcome.parked > 0 {
        (
            Replayed::Parked,
            Some("replayed: parked behind a missing version".to_owned()),
        )
    } else {
        (
            Replayed::AlreadyApplied,
            Some("replayed: already applied".to_owned()),
        )
    };
    if let Some(resolution) = resolution {
        tx.execute(
            "UPDATE dead_letters SET status = $3, resolution = $2, resolved_at = now() WHERE id = $1",
            &[&id, &resolution, &DeadLetterStatus::Replayed.as_str()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(result)
}

/// Open dead letters in the order they failed, for `replay --all`.
pub async fn open_ids(
    client: &impl tokio_postgres::GenericClient,
) -> Result<Vec<i64>, OperatorError> {
    let rows = client
        .query(
            "SELECT id FROM dead_letters WHERE status = $1 ORDER BY topic, kafka_partition, kafka_offset",
            &[&DeadLetterStatus::Open.as_str()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// What a discard did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Discarded {
    /// Events of the aggregate still parked (waiting for the discarded version).
    pub still_parked: i64,
    /// Parked events applied because the version was skipped.
    pub released: usize,
}

/// Gives up on dead letter `id`, recording `reason`. Parked events behind it
/// stay parked unless `skip_version`: then the aggregate moves past the
/// discarded version as if it had been applied (its effect is lost, on
/// purpose) and the parked events apply in order.
pub async fn discard<H: Handler>(
    client: &mut crate::worker::Db,
    handler: &H,
    decoder: &Decoder,
    id: i64,
    reason: &str,
    skip_version: bool,
) -> Result<Discarded, OperatorError> {
    let mut tx = client.transaction().await?;
    let row = lock_open(
        &tx,
        id,
        "d.aggregate_type, d.aggregate_id, d.aggregate_version",
    )
    .await?;
    let aggregate: Option<(String, String)> = match (
        row.get::<_, Option<String>>(1),
        row.get::<_, Option<String>>(2),
    ) {
        (Some(t), Some(i)) => Some((t, i)),
        _ => None,
    };
    let version: Option<i64> = row.get(3);
    let mut released = 0;
    if skip_version {
        let (Some((t, i)), Some(v)) = (&aggregate, version) else {
            return Err(OperatorError::CannotSkip {
                aggregate: "?".into(),
                version: 0,
                why: "the record's aggregate or version is unreadable; discard it without --skip-version".into(),
            });
        };
        let applied: i64 = tx
            .query_opt(
                "SELECT version FROM aggregate_versions WHERE aggregate_type = $1 AND aggregate_id = $2 FOR UPDATE",
                &[t, i],
            )
            .await?
            .map_or(0, |r| r.get(0));
        if applied != v - 1 {
            return Err(OperatorError::CannotSkip {
                aggregate: format!("{t} {i}"),
                version: v,
                why: format!(
                    "the aggregate is at version {applied}, so version {v} is not the next one"
                ),
            });
        }
        tx.execute(
            "INSERT INTO aggregate_versions (aggregate_type, aggregate_id, version) VALUES ($1, $2, $3) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET version = EXCLUDED.version",
            &[t, i, &v],
        )
        .await?;
        released = batch::release_parked(&mut tx, handler, decoder, t, i)
            .await?
            .applied;
    }
    let resolution = format!(
        "discarded{}: {reason}",
        if skip_version {
            " (version skipped)"
        } else {
            ""
        }
    );
    tx.execute(
        "UPDATE dead_letters SET status = $3, resolution = $2, resolved_at = now() WHERE id = $1",
        &[&id, &resolution, &DeadLetterStatus::Discarded.as_str()],
    )
    .await?;
    let still_parked: i64 = match &aggregate {
        Some((t, i)) => tx
            .query_one(
                "SELECT count(*) FROM parked_events WHERE aggregate_type = $1 AND aggregate_id = $2",
                &[t, i],
            )
            .await?
            .get(0),
        None => 0,
    };
    tx.commit().await?;
    Ok(Discarded {
        still_parked,
        released,
    })
}

#[cfg(test)]
mod status_tests {
    use super::DeadLetterStatus;

    /// The names are the ones the table's CHECK constraint admits, all of them.
    #[test]
    fn the_statuses_are_the_ones_the_table_admits() {
        let migration = include_str!("../../sql/read/V3__parking_and_dead_letter_life_cycle.sql");
        let names: Vec<String> = DeadLetterStatus::ALL
            .iter()
            .map(|s| format!("'{s}'"))
            .collect();
        assert!(
            migration.contains(&format!("CHECK (status IN ({}))", names.join(", "))),
            "sql/read/V3 lists other statuses than {names:?}"
        );
        for s in DeadLetterStatus::ALL {
            assert_eq!(DeadLetterStatus::parse(s.as_str()), Some(s));
        }
    }
}

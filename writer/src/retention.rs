//! Outbox retention: `writer outbox prune`.
//!
//! Debezium reads the WAL, not the table, so a published row has done its job
//! for delivery. It is kept for a while anyway, for two readers: `stack
//! reconcile` (which compares the outbox with the inbox) and the connector's
//! `snapshot.mode=when_needed`, which re-publishes the table after a lost
//! replication slot. The retention window is therefore also how far back a
//! lost slot heals by itself.
//!
//! Safety: a row is deleted only if it is older than the window *and* older
//! than the relay's last heartbeat minus a margin (the heartbeat table is
//! written by Debezium from its streaming loop), so a relay that has been down
//! longer than the window never loses unread rows. Deletes run in small
//! batches, each its own short transaction touching only old rows, so writers
//! (who only insert) are never blocked behind the prune.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Rows younger than the relay's last heartbeat by less than this are kept.
pub const RELAY_MARGIN: Duration = Duration::from_secs(300);

/// What a prune did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Rows older than this were deleted.
    pub cutoff: Option<DateTime<Utc>>,
    /// The relay's last heartbeat, if it ever beat.
    pub relay_heartbeat: Option<DateTime<Utc>>,
    /// Whether the relay's heartbeat, not the window, set the cutoff.
    pub limited_by_relay: bool,
    pub deleted: u64,
    pub batches: u64,
    /// Idempotency keys committed before the cutoff, deleted with the rows:
    /// a key is honoured for as long as the outbox keeps its events.
    pub keys_deleted: u64,
}

/// Deletes outbox rows older than `older_than` (see the module docs), `batch`
/// rows per transaction; `progress` gets the running total after each batch.
pub async fn prune_outbox(
    client: &tokio_postgres::Client,
    older_than: Duration,
    batch: i64,
    progress: impl Fn(u64),
) -> Result<PruneReport, tokio_postgres::Error> {
    let window = chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::MAX);
    let now: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
    let relay_heartbeat: Option<DateTime<Utc>> = client
        .query_opt("SELECT beat_at FROM debezium_heartbeat WHERE id = 1", &[])
        .await?
        .map(|r| r.get(0));
    let by_window = now.checked_sub_signed(window);
    let by_relay = relay_heartbeat.and_then(|b| {
        b.checked_sub_signed(chrono::Duration::from_std(RELAY_MARGIN).unwrap_or_default())
    });
    let cutoff = match (by_window, by_relay) {
        (Some(w), Some(r)) => Some(w.min(r)),
        // No heartbeat yet: the relay never confirmed anything; keep everything.
        (_, None) => None,
        (None, Some(_)) => None,
    };
    let mut report = PruneReport {
        cutoff,
        relay_heartbeat,
        limited_by_relay: matches!((by_window, by_relay), (Some(w), Some(r)) if r < w),
        deleted: 0,
        batches: 0,
        keys_deleted: 0,
    };
    let Some(cutoff) = cutoff else {
        return Ok(report);
    };
    let delete = client
        .prepare(
            "DELETE FROM outbox WHERE id IN ( \
               SELECT id FROM outbox WHERE occurred_at < $1 ORDER BY occurred_at LIMIT $2)",
        )
        .await?;
    loop {
        let n = client.execute(&delete, &[&cutoff, &batch]).await?;
        if n == 0 {
            break;
        }
        report.deleted += n;
        report.batches += 1;
        progress(report.deleted);
    }
    let delete_keys = client
        .prepare(
            "DELETE FROM idempotency_keys WHERE idempotency_key IN ( \
               SELECT idempotency_key FROM idempotency_keys WHERE committed_at < $1 \
               ORDER BY committed_at LIMIT $2)",
        )
        .await?;
    loop {
        let n = client.execute(&delete_keys, &[&cutoff, &batch]).await?;
        if n == 0 {
            break;
        }
        report.keys_deleted += n;
    }
    Ok(report)
}

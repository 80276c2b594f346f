//! Inbox retention: `projector inbox prune`.
//!
//! The inbox turns away a redelivered event by its id. Redeliveries come from
//! the relay (Debezium republishes what it had sent but not yet recorded, after
//! a crash: seconds to minutes) and from a lost replication slot, after which
//! the connector re-publishes the whole outbox table (`snapshot.mode=when_needed`:
//! as old as the outbox retention window, 7 days by default). The projector's
//! own re-reads are gone: it starts at the positions stored with its data. So
//! an inbox row is needed for at least the outbox retention window; the
//! default keeps it 30 days. Older redeliveries are still turned away, by the
//! version policy (`aggregate_versions`, never pruned): an event whose version
//! is not above its aggregate's applied version has no effect. Dead letters and
//! parked events are never pruned here: they wait for an operator.

use std::time::Duration;

/// Deletes inbox rows applied more than `older_than` ago, oldest first,
/// `batch` rows per transaction; `progress` gets the running total.
pub async fn prune_inbox(
    client: &tokio_postgres::Client,
    older_than: Duration,
    batch: i64,
    progress: impl Fn(u64),
) -> Result<u64, tokio_postgres::Error> {
    let seconds = older_than.as_secs_f64();
    let delete = client
        .prepare(
            "DELETE FROM inbox WHERE event_id IN ( \
               SELECT event_id FROM inbox WHERE applied_at < now() - make_interval(secs => $1) \
               ORDER BY applied_at LIMIT $2)",
        )
        .await?;
    let mut deleted = 0;
    loop {
        let n = client.execute(&delete, &[&seconds, &batch]).await?;
        if n == 0 {
            return Ok(deleted);
        }
        deleted += n;
        progress(deleted);
    }
}

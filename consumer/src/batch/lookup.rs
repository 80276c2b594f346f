//! What a batch reads before it decides: four queries, pipelined.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::Transaction;
use outbox_events::Envelope;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::policy::AggregateKey;
use super::stored::PARKED_COLUMNS;
use super::Failure;
use crate::record::Record;

/// At most this many parked events of one aggregate are read into a batch:
/// a long gap on a busy aggregate must not make every batch read (and hold
/// in memory) all that waits behind it. When a batch releases a full window,
/// [`super::release_parked`] takes the rest one at a time.
pub const PARKED_WINDOW: i64 = 100;

/// What a batch reads before it decides.
#[derive(Default)]
pub(super) struct Lookup {
    /// Events of the batch already in the inbox.
    pub in_inbox: HashSet<Uuid>,
    /// The version applied so far, per aggregate (absent: none).
    pub versions: HashMap<AggregateKey, i64>,
    /// Events of the batch already parked (redeliveries of parked events).
    pub parked_ids: HashSet<Uuid>,
    /// The first [`PARKED_WINDOW`] parked events of each aggregate whose next
    /// version the batch brings: the only ones it can release. None for an
    /// aggregate still waiting for its gap, however many are parked.
    pub releasable: Vec<tokio_postgres::Row>,
}

/// The reads of a batch, pipelined; `window` bounds the releasable parked
/// events read per aggregate (0: none).
pub(super) async fn lookup(
    tx: &Transaction<'_>,
    fresh: &[(&Record, Envelope)],
    window: i64,
) -> Result<Lookup, Failure> {
    if fresh.is_empty() {
        return Ok(Lookup::default());
    }
    let ids: Vec<Uuid> = fresh.iter().map(|(_, e)| e.event_id).collect();
    let types: Vec<&str> = fresh
        .iter()
        .map(|(_, e)| e.aggregate_type.as_str())
        .collect();
    let agg_ids: Vec<&str> = fresh.iter().map(|(_, e)| e.aggregate_id.as_str()).collect();
    let batch_versions: Vec<i64> = fresh.iter().map(|(_, e)| e.aggregate_version).collect();
    let releasable_sql = format!(
        "WITH next AS (SELECT DISTINCT b.t, b.i \
           FROM unnest($1::text[], $2::text[], $3::bigint[]) AS b(t, i, v) \
           LEFT JOIN aggregate_versions a ON a.aggregate_type = b.t AND a.aggregate_id = b.i \
           WHERE b.v = coalesce(a.version, 0) + 1) \
         SELECT {PARKED_COLUMNS} FROM next CROSS JOIN LATERAL \
           (SELECT * FROM parked_events q WHERE q.aggregate_type = next.t AND q.aggregate_id = next.i \
            ORDER BY q.aggregate_version LIMIT $4) p \
         ORDER BY p.aggregate_version"
    );
    let by_id: [&(dyn ToSql + Sync); 1] = [&ids];
    let by_aggregate: [&(dyn ToSql + Sync); 2] = [&types, &agg_ids];
    let by_version: [&(dyn ToSql + Sync); 4] = [&types, &agg_ids, &batch_versions, &window];
    // All four pipelined.
    let query = |sql, params| cached_query(tx, sql, params);
    let (inbox, versions, parked, releasable) = tokio::try_join!(
        query("SELECT event_id FROM inbox WHERE event_id = ANY($1)", &by_id),
        query(
            "SELECT aggregate_type, aggregate_id, version FROM aggregate_versions \
             WHERE (aggregate_type, aggregate_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            &by_aggregate,
        ),
        query("SELECT event_id FROM parked_events WHERE event_id = ANY($1)", &by_id),
        query(&releasable_sql, &by_version),
    )?;
    Ok(Lookup {
        in_inbox: inbox.iter().map(|r| r.get(0)).collect(),
        versions: versions
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect(),
        parked_ids: parked.iter().map(|r| r.get(0)).collect(),
        releasable,
    })
}

/// `sql` with the connection's cached statement (prepared on first use).
async fn cached_query(
    tx: &Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
    let statement = tx.prepare_cached(sql).await?;
    tx.query(&statement, params).await
}

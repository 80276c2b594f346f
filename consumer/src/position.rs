//! The projector's position, kept in the read database with its data.
//!
//! Every batch writes, in its own transaction, the next offset to read for
//! each partition it touched (`consumer_positions`, per consumer group) and
//! its run's tallies (`consumer_runs`). On partition assignment the consumer
//! seeks to these positions ([`load_blocking`], called from the rebalance
//! callback), so a crash anywhere re-delivers nothing that was committed, and
//! the data and the position can never disagree. Kafka's committed offsets
//! still follow (after the commit) for monitoring tools; they are a fallback
//! only where the read database has no position yet.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::batch::Outcome;
use crate::record::Record;

/// (topic, partition) → next offset to read.
pub type Positions = HashMap<(String, i32), i64>;

/// Whose position a batch advances: the consumer group, and this process's run.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub group_id: String,
    pub run_id: Uuid,
    /// Whether batches hold [`SWAP_LOCK`] shared, so `projector rebuild` can
    /// pause them while it swaps the rebuilt tables in (true for the live
    /// projection; a rebuild's own batches must not wait for its swap).
    pub yields_to_swap: bool,
    /// Whether a batch first locks its partitions' position rows and skips
    /// records below them. Two instances that both believe they own a
    /// partition (a broker that hands a partition over before its old owner
    /// let go) then take turns, and the second skips what the first applied
    /// instead of re-processing it. Off only where tests exercise the inbox
    /// and version policy with the same records twice.
    pub fenced: bool,
}

/// Advisory lock key of the rebuild swap (shared by every live batch,
/// exclusive while `projector rebuild` swaps tables).
pub const SWAP_LOCK: i64 = 0x0075_7462_6f78_5357; // "outboxSW"

impl Checkpoint {
    /// A new run of `group_id` (one per process start) of the live projection.
    pub fn new(group_id: impl Into<String>) -> Self {
        Self {
            group_id: group_id.into(),
            run_id: Uuid::new_v4(),
            yields_to_swap: true,
            fenced: true,
        }
    }

    /// Without the position fence (tests of the inbox and version policy).
    pub fn unfenced(self) -> Self {
        Self {
            fenced: false,
            ..self
        }
    }

    /// A run that builds a shadow copy (the projector's `rebuild` module).
    pub fn for_rebuild(group_id: impl Into<String>) -> Self {
        Self {
            yields_to_swap: false,
            ..Self::new(group_id)
        }
    }
}

/// Records the batch's positions and tallies inside its transaction.
pub(crate) async fn record(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    records: &[Record],
    outcome: &Outcome,
) -> Result<(), tokio_postgres::Error> {
    let mut next: std::collections::BTreeMap<(&str, i32), i64> = Default::default();
    for r in records {
        let offset = next.entry((r.topic.as_str(), r.partition)).or_default();
        *offset = (*offset).max(r.offset + 1);
    }
    // Sorted rows: two instances (mid-rebalance) lock them in the same order.
    let topics: Vec<&str> = next.keys().map(|k| k.0).collect();
    let partitions: Vec<i32> = next.keys().map(|k| k.1).collect();
    let offsets: Vec<i64> = next.values().copied().collect();
    let (applied, duplicates, stale) = (
        outcome.applied as i64,
        outcome.duplicates as i64,
        outcome.stale as i64,
    );
    let position_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&checkpoint.group_id, &topics, &partitions, &offsets];
    let run_params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
        &checkpoint.run_id,
        &checkpoint.group_id,
        &applied,
        &duplicates,
        &stale,
    ];
    let (position_sql, run_sql) = (
        "INSERT INTO consumer_positions (group_id, topic, kafka_partition, next_offset) \
         SELECT $1, t, p, o FROM unnest($2::text[], $3::int[], $4::bigint[]) AS x(t, p, o) \
         ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET \
           next_offset = greatest(consumer_positions.next_offset, EXCLUDED.next_offset), \
           updated_at = now()",
        "INSERT INTO consumer_runs AS r (run_id, group_id, batches, events_applied, duplicates_skipped, stale_skipped) \
         VALUES ($1, $2, 1, $3, $4, $5) \
         ON CONFLICT (run_id) DO UPDATE SET batches = r.batches + 1, \
           events_applied = r.events_applied + EXCLUDED.events_applied, \
           duplicates_skipped = r.duplicates_skipped + EXCLUDED.duplicates_skipped, \
           stale_skipped = r.stale_skipped + EXCLUDED.stale_skipped, \
           updated_at = now()",
    );
    // From the connection's cache; both statements travel together.
    let (position_statement, run_statement) =
        futures::try_join!(tx.prepare_cached(position_sql), tx.prepare_cached(run_sql))?;
    futures::try_join!(
        tx.execute(&position_statement, &position_params),
        tx.execute(&run_statement, &run_params)
    )?;
    Ok(())
}

/// Locks and reads the stored positions of the partitions in `records`
/// (rows in a fixed order, so concurrent batches cannot deadlock on them).
pub(crate) async fn fence(
    tx: &Transaction<'_>,
    checkpoint: &Checkpoint,
    records: &[Record],
) -> Result<Positions, tokio_postgres::Error> {
    let partitions: std::collections::BTreeSet<(&str, i32)> = records
        .iter()
        .map(|r| (r.topic.as_str(), r.partition))
        .collect();
    let topics: Vec<&str> = partitions.iter().map(|p| p.0).collect();
    let numbers: Vec<i32> = partitions.iter().map(|p| p.1).collect();
    let statement = tx
        .prepare_cached(
            "SELECT c.topic, c.kafka_partition, c.next_offset FROM consumer_positions c \
             JOIN unnest($2::text[], $3::int[]) AS x(t, p) ON c.topic = x.t AND c.kafka_partition = x.p \
             WHERE c.group_id = $1 ORDER BY c.topic, c.kafka_partition FOR UPDATE OF c",
        )
        .await?;
    let rows = tx
        .query(&statement, &[&checkpoint.group_id, &topics, &numbers])
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// The stored positions of `group_id` (in the connection's schema).
pub async fn load(
    client: &impl GenericClient,
    group_id: &str,
) -> Result<Positions, tokio_postgres::Error> {
    load_from(client, "consumer_positions", group_id).await
}

/// The stored positions of `group_id` in `table` (schema-qualified by
/// `projector rebuild`, which reads the live and the shadow copy side by side).
pub async fn load_from(
    client: &impl GenericClient,
    table: &str,
    group_id: &str,
) -> Result<Positions, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT topic, kafka_partition, next_offset FROM {table} WHERE group_id = $1"),
            &[&group_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// [`load`] from synchronous code (librdkafka's rebalance callback): a
/// short-lived connection on a helper thread with its own runtime, so it
/// works whatever runtime (if any) the calling thread belongs to.
pub fn load_blocking(
    config: tokio_postgres::Config,
    group_id: String,
) -> Result<Positions, String> {
    std::thread::spawn(move || -> Result<Positions, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async move {
            let (client, connection) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| service::show_db_error(&e).to_string())?;
            tokio::spawn(connection);
            load(&client, &group_id)
                .await
                .map_err(|e| service::show_db_error(&e).to_string())
        })
    })
    .join()
    .map_err(|_| "the position reader panicked".to_owned())?
}

//! One step of the projector: apply a batch of records in one transaction.

use serde_json::Value;
use tokio_postgres::{GenericClient, Transaction};

use crate::read_model::{self, ApplyError};
use crate::record::Record;

/// What a committed batch did. `applied + duplicates + dead_lettered` equals
/// the number of records in the batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// New events, now reflected in the read models.
    pub applied: usize,
    /// Events already in the inbox (redeliveries), skipped.
    pub duplicates: usize,
    /// Records that could not be decoded or applied, now in `dead_letters`.
    pub dead_lettered: usize,
}

/// Applies `records` in one read-database transaction.
///
/// For each record: decode it; claim its event id in the inbox
/// (`ON CONFLICT DO NOTHING`); apply it to the read models only if the claim
/// is new. A record that cannot be decoded or applied is written to
/// `dead_letters` instead (its partial changes undone by a savepoint).
///
/// On `Err` nothing was committed; the caller retries the same batch, which is
/// safe because the inbox makes the whole step idempotent.
pub async fn apply_batch(
    client: &mut tokio_postgres::Client,
    records: &[Record],
) -> Result<Outcome, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    let mut outcome = Outcome::default();
    for record in records {
        let envelope = match record.decode() {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, %error, "undecodable record dead-lettered");
                dead_letter(&tx, record, &error.to_string()).await?;
                outcome.dead_lettered += 1;
                continue;
            }
        };
        // A savepoint per event: a rejected event is undone alone, the batch goes on.
        let savepoint = tx.savepoint("event").await?;
        if !claim(&savepoint, record, &envelope).await? {
            outcome.duplicates += 1;
            continue; // dropping the savepoint rolls it back; it changed nothing
        }
        match read_model::apply(&savepoint, &envelope).await {
            Ok(()) => {
                savepoint.commit().await?;
                outcome.applied += 1;
            }
            Err(ApplyError::Rejected(reason)) => {
                savepoint.rollback().await?;
                tracing::warn!(event_id = %envelope.event_id, event_type = envelope.event.event_type(), %reason, "event dead-lettered");
                dead_letter(&tx, record, &reason).await?;
                outcome.dead_lettered += 1;
            }
            Err(ApplyError::Database(e)) => return Err(e),
        }
    }
    tx.commit().await?;
    Ok(outcome)
}

/// Records the event id in the inbox; `false` if it was there already.
async fn claim(
    tx: &Transaction<'_>,
    record: &Record,
    envelope: &outbox_events::Envelope,
) -> Result<bool, tokio_postgres::Error> {
    let inserted = tx
        .execute(
            "INSERT INTO inbox (event_id, event_type, aggregate_type, aggregate_id, aggregate_version, topic, kafka_partition, kafka_offset) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING",
            &[
                &envelope.event_id,
                &envelope.event.event_type(),
                &envelope.aggregate_type,
                &envelope.aggregate_id,
                &envelope.aggregate_version,
                &record.topic,
                &record.partition,
                &record.offset,
            ],
        )
        .await?;
    Ok(inserted == 1)
}

async fn dead_letter(
    client: &impl GenericClient,
    record: &Record,
    reason: &str,
) -> Result<(), tokio_postgres::Error> {
    let headers: Value = serde_json::to_value(&record.headers).unwrap_or_default();
    let key = record
        .key
        .as_deref()
        .map(|k| String::from_utf8_lossy(k).into_owned());
    let payload = record
        .payload
        .as_deref()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    client
        .execute(
            "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, record_key, headers, payload, reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (topic, kafka_partition, kafka_offset) DO NOTHING",
            &[&record.topic, &record.partition, &record.offset, &key, &headers, &payload, &reason],
        )
        .await?;
    Ok(())
}

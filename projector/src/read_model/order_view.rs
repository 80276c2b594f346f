//! `order_view`: one denormalized row per order, ready for a screen.
//!
//! Events of one order arrive in aggregate-version order (one Kafka key, one
//! partition). Each update is guarded by `last_version = version - 1`, so an
//! event that is stale or skips a version is rejected instead of applied.

use outbox_events::{Envelope, Event};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::ApplyError;

pub async fn apply(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), ApplyError> {
    let version = envelope.aggregate_version;
    let at = envelope.occurred_at;
    let (order_id, changed) = match &envelope.event {
        Event::OrderPlaced(e) => {
            if version != 1 {
                return Err(ApplyError::Rejected(format!(
                    "OrderPlaced must be version 1, got {version}"
                )));
            }
            let lines = serde_json::to_value(&e.lines).unwrap_or_default();
            let line_count = e.lines.len() as i32;
            let changed = tx
                .execute(
                    "INSERT INTO order_view (order_id, customer_id, status, currency, total_cents, lines, line_count, placed_at, last_version) \
                     VALUES ($1, $2, 'placed', $3, $4, $5, $6, $7, 1) ON CONFLICT (order_id) DO NOTHING",
                    &[&e.order_id, &e.customer_id, &e.currency, &e.total_cents, &lines, &line_count, &at],
                )
                .await?;
            (e.order_id, changed)
        }
        Event::OrderPaid(e) => {
            let changed = tx
                .execute(
                    "UPDATE order_view SET status = 'paid', payment_reference = $2, paid_at = $3, last_version = $4, updated_at = now() \
                     WHERE order_id = $1 AND last_version = $4::bigint - 1",
                    &[&e.order_id, &e.payment_reference, &at, &version],
                )
                .await?;
            (e.order_id, changed)
        }
        Event::OrderShipped(e) => {
            let changed = tx
                .execute(
                    "UPDATE order_view SET status = 'shipped', carrier = $2, tracking_number = $3, shipped_at = $4, last_version = $5, updated_at = now() \
                     WHERE order_id = $1 AND last_version = $5::bigint - 1",
                    &[&e.order_id, &e.carrier, &e.tracking_number, &at, &version],
                )
                .await?;
            (e.order_id, changed)
        }
        Event::OrderCancelled(e) => {
            let changed = tx
                .execute(
                    "UPDATE order_view SET status = 'cancelled', cancel_reason = $2, cancelled_at = $3, last_version = $4, updated_at = now() \
                     WHERE order_id = $1 AND last_version = $4::bigint - 1",
                    &[&e.order_id, &e.reason, &at, &version],
                )
                .await?;
            (e.order_id, changed)
        }
    };
    if changed == 1 {
        Ok(())
    } else {
        Err(ApplyError::Rejected(
            explain_mismatch(tx, order_id, version).await?,
        ))
    }
}

/// Says why a guarded change matched no row.
async fn explain_mismatch(
    tx: &Transaction<'_>,
    order_id: Uuid,
    version: i64,
) -> Result<String, ApplyError> {
    let last: Option<i64> = tx
        .query_opt(
            "SELECT last_version FROM order_view WHERE order_id = $1",
            &[&order_id],
        )
        .await?
        .map(|row| row.get(0));
    Ok(match last {
        None => format!(
            "order {order_id} is not in order_view (version {version} arrived before version 1)"
        ),
        Some(last) if version <= last => {
            format!("stale event: order {order_id} is at version {last}, got {version}")
        }
        Some(last) => format!("version gap: order {order_id} is at version {last}, got {version}"),
    })
}

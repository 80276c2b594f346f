//! `order_view`: one denormalized row per order, ready for a screen, with the
//! customer's current name and e-mail.
//!
//! Events of one order arrive in aggregate-version order (one Kafka key, one
//! partition). Each update is guarded by `last_version = version - 1`, so an
//! event that is stale or skips a version is rejected instead of applied.

use outbox_events::{Envelope, Event};
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::ApplyError;

pub async fn apply(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), ApplyError> {
    let v = envelope.aggregate_version;
    let at = envelope.occurred_at;
    match &envelope.event {
        Event::CustomerRegistered(e) => {
            customer_details(tx, &e.customer_id, &e.name, &e.email, v).await
        }
        Event::CustomerContactChanged(e) => {
            customer_details(tx, &e.customer_id, &e.name, &e.email, v).await
        }
        Event::CustomerAddressChanged(_) => Ok(()),
        Event::OrderPlaced(e) => {
            if v != 1 {
                return Err(ApplyError::Rejected(format!(
                    "OrderPlaced must be version 1, got {v}"
                )));
            }
            let lines = serde_json::to_value(&e.lines).unwrap_or_default();
            let line_count = e.lines.len() as i32;
            let shipping = e
                .shipping_address
                .as_ref()
                .and_then(|a| serde_json::to_value(a).ok());
            let changed = tx
                .execute(
                    "INSERT INTO order_view (order_id, customer_id, customer_name, customer_email, status, currency, total_cents, \
                     lines, line_count, shipping_address, placed_at, last_version) \
                     SELECT $1, $2, c.name, c.email, 'placed', $3, $4, $5, $6, $7, $8, 1 \
                     FROM (SELECT 1) one LEFT JOIN order_view_customers c ON c.customer_id = $2 \
                     ON CONFLICT (order_id) DO NOTHING",
                    &[&e.order_id, &e.customer_id, &e.currency, &e.total_cents, &lines, &line_count, &shipping, &at],
                )
                .await?;
            check(tx, changed, e.order_id, v).await
        }
        Event::OrderPaid(e) => {
            step(
                tx,
                e.order_id,
                v,
                "status = 'paid', payment_reference = $3, paid_at = $4",
                &[&e.payment_reference, &at],
            )
            .await
        }
        Event::OrderShipped(e) => {
            step(
                tx,
                e.order_id,
                v,
                "status = 'shipped', carrier = $3, tracking_number = $4, shipped_at = $5",
                &[&e.carrier, &e.tracking_number, &at],
            )
            .await
        }
        Event::OrderDelivered(e) => {
            step(
                tx,
                e.order_id,
                v,
                "status = 'delivered', delivered_at = $3",
                &[&at],
            )
            .await
        }
        Event::OrderCancelled(e) => {
            step(
                tx,
                e.order_id,
                v,
                "status = 'cancelled', cancel_reason = $3, cancelled_at = $4",
                &[&e.reason, &at],
            )
            .await
        }
        Event::OrderRefunded(e) => {
            step(
                tx,
                e.order_id,
                v,
                "status = 'refunded', refunded_cents = $3, refund_reason = $4, refunded_at = $5",
                &[&e.amount_cents, &e.reason, &at],
            )
            .await
        }
    }
}

/// Records a customer's latest name and e-mail and shows them on their orders.
async fn customer_details(
    tx: &Transaction<'_>,
    customer_id: &str,
    name: &str,
    email: &str,
    version: i64,
) -> Result<(), ApplyError> {
    let newer = tx
        .execute(
            "INSERT INTO order_view_customers (customer_id, name, email, last_version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (customer_id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, last_version = EXCLUDED.last_version \
             WHERE order_view_customers.last_version < EXCLUDED.last_version",
            &[&customer_id, &name, &email, &version],
        )
        .await?;
    if newer == 1 {
        tx.execute(
            "UPDATE order_view SET customer_name = $2, customer_email = $3, updated_at = now() WHERE customer_id = $1",
            &[&customer_id, &name, &email],
        )
        .await?;
    }
    Ok(())
}

/// Applies a guarded step: `SET <set>` only if the order is at `version - 1`.
/// `$1` is the order id, `$2` the version, `$3...` are `params`.
async fn step(
    tx: &Transaction<'_>,
    order_id: Uuid,
    version: i64,
    set: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<(), ApplyError> {
    let sql = format!(
        "UPDATE order_view SET {set}, last_version = $2, updated_at = now() WHERE order_id = $1 AND last_version = $2::bigint - 1"
    );
    let mut all: Vec<&(dyn ToSql + Sync)> = vec![&order_id, &version];
    all.extend_from_slice(params);
    let changed = tx.execute(&sql, &all).await?;
    check(tx, changed, order_id, version).await
}

/// Turns "no row changed" into a rejection that says why.
async fn check(
    tx: &Transaction<'_>,
    changed: u64,
    order_id: Uuid,
    version: i64,
) -> Result<(), ApplyError> {
    if changed == 1 {
        return Ok(());
    }
    let last: Option<i64> = tx
        .query_opt(
            "SELECT last_version FROM order_view WHERE order_id = $1",
            &[&order_id],
        )
        .await?
        .map(|row| row.get(0));
    Err(ApplyError::Rejected(match last {
        None => format!(
            "order {order_id} is not in order_view (version {version} arrived before version 1)"
        ),
        Some(last) if version <= last => {
            format!("stale event: order {order_id} is at version {last}, got {version}")
        }
        Some(last) => format!("version gap: order {order_id} is at version {last}, got {version}"),
    }))
}

//! `customer_summary`: per customer, who they are (from customer events) and
//! how they buy (from order events): orders placed, open orders, lifetime
//! value per currency, last order.
//!
//! Both kinds of event upsert the same row and touch disjoint columns, and the
//! counters only add, so the row converges whichever events come first.

use chrono::{DateTime, Utc};
use outbox_events::{Address, Envelope, Event};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::ApplyError;

pub async fn apply(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), ApplyError> {
    let v = envelope.aggregate_version;
    match &envelope.event {
        Event::CustomerRegistered(e) => {
            customer(
                tx,
                &e.customer_id,
                v,
                Some((&e.name, &e.email)),
                Some(&e.address),
            )
            .await
        }
        Event::CustomerContactChanged(e) => {
            customer(tx, &e.customer_id, v, Some((&e.name, &e.email)), None).await
        }
        Event::CustomerAddressChanged(e) => {
            customer(tx, &e.customer_id, v, None, Some(&e.address)).await
        }
        Event::OrderPlaced(e) => {
            tx.execute(
                "INSERT INTO customer_summary_orders (order_id, customer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&e.order_id, &e.customer_id],
            )
            .await?;
            orders(tx, &e.customer_id, 1, 1, None, Some(envelope.occurred_at)).await
        }
        Event::OrderPaid(e) => {
            let customer_id = owner(tx, e.order_id).await?;
            orders(
                tx,
                &customer_id,
                0,
                0,
                Some((&e.currency, e.amount_cents)),
                None,
            )
            .await
        }
        Event::OrderDelivered(e) => {
            orders(tx, &owner(tx, e.order_id).await?, 0, -1, None, None).await
        }
        Event::OrderCancelled(e) => {
            orders(tx, &owner(tx, e.order_id).await?, 0, -1, None, None).await
        }
        Event::OrderRefunded(e) => {
            let customer_id = owner(tx, e.order_id).await?;
            orders(
                tx,
                &customer_id,
                0,
                0,
                Some((&e.currency, -e.amount_cents)),
                None,
            )
            .await
        }
        Event::OrderShipped(_) => Ok(()),
    }
}

/// The customer of an order, recorded when it was placed.
async fn owner(tx: &Transaction<'_>, order_id: Uuid) -> Result<String, ApplyError> {
    tx.query_opt(
        "SELECT customer_id FROM customer_summary_orders WHERE order_id = $1",
        &[&order_id],
    )
    .await?
    .map(|row| row.get(0))
    .ok_or_else(|| {
        ApplyError::Rejected(format!(
            "order {order_id} was never placed (no OrderPlaced seen)"
        ))
    })
}

/// Applies customer details if `version` is newer than what the row has.
async fn customer(
    tx: &Transaction<'_>,
    customer_id: &str,
    version: i64,
    contact: Option<(&str, &str)>,
    address: Option<&Address>,
) -> Result<(), ApplyError> {
    let (name, email) = contact.map_or((None, None), |(n, e)| (Some(n), Some(e)));
    let city = address.map(|a| a.city.as_str());
    let country = address.map(|a| a.country.as_str());
    tx.execute(
        "INSERT INTO customer_summary (customer_id, name, email, city, country, customer_version) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (customer_id) DO UPDATE SET \
           name = coalesce(EXCLUDED.name, customer_summary.name), \
           email = coalesce(EXCLUDED.email, customer_summary.email), \
           city = coalesce(EXCLUDED.city, customer_summary.city), \
           country = coalesce(EXCLUDED.country, customer_summary.country), \
           customer_version = EXCLUDED.customer_version, updated_at = now() \
         WHERE customer_summary.customer_version < EXCLUDED.customer_version",
        &[&customer_id, &name, &email, &city, &country, &version],
    )
    .await?;
    Ok(())
}

/// Adds to a customer's order counters and lifetime value.
async fn orders(
    tx: &Transaction<'_>,
    customer_id: &str,
    placed: i32,
    open: i32,
    value: Option<(&str, i64)>,
    ordered_at: Option<DateTime<Utc>>,
) -> Result<(), ApplyError> {
    let (currency, cents) = value.map_or((None, 0), |(c, v)| (Some(c), v));
    tx.execute(
        "INSERT INTO customer_summary AS s (customer_id, orders_placed, open_orders, lifetime_value, last_order_at) \
         VALUES ($1, $2, $3, CASE WHEN $4::text IS NULL THEN '{}'::jsonb ELSE jsonb_build_object($4::text, $5::bigint) END, $6) \
         ON CONFLICT (customer_id) DO UPDATE SET \
           orders_placed = s.orders_placed + EXCLUDED.orders_placed, \
           open_orders = s.open_orders + EXCLUDED.open_orders, \
           lifetime_value = CASE WHEN $4::text IS NULL THEN s.lifetime_value \
             ELSE s.lifetime_value || jsonb_build_object($4::text, coalesce((s.lifetime_value ->> $4::text)::bigint, 0) + $5::bigint) END, \
           last_order_at = greatest(s.last_order_at, EXCLUDED.last_order_at), \
           updated_at = now()",
        &[&customer_id, &placed, &open, &currency, &cents, &ordered_at],
    )
    .await?;
    Ok(())
}

//! `product_sales_daily`: units and revenue per SKU, currency and day of
//! placement (UTC), net of cancellations and of refunds of returned orders.
//!
//! `product_sales_orders` remembers what was counted for each order, so a
//! cancellation or refund takes back exactly that, and only once (a refund of
//! an already cancelled order takes back nothing more).

use outbox_events::{Envelope, Event, OrderLine};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::ApplyError;

pub async fn apply(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), ApplyError> {
    match &envelope.event {
        Event::OrderPlaced(e) => {
            let day = envelope.occurred_at.date_naive();
            let lines = serde_json::to_value(&e.lines).unwrap_or_default();
            let inserted = tx
                .execute(
                    "INSERT INTO product_sales_orders (order_id, day, currency, lines, counted) VALUES ($1, $2, $3, $4, true) \
                     ON CONFLICT (order_id) DO NOTHING",
                    &[&e.order_id, &day, &e.currency, &lines],
                )
                .await?;
            if inserted == 1 {
                add(tx, day, &e.currency, &e.lines, 1).await?;
            }
            Ok(())
        }
        Event::OrderCancelled(e) => take_back(tx, e.order_id).await,
        Event::OrderRefunded(e) => take_back(tx, e.order_id).await,
        _ => Ok(()),
    }
}

/// Subtracts an order's counted lines, once.
async fn take_back(tx: &Transaction<'_>, order_id: Uuid) -> Result<(), ApplyError> {
    let Some(row) = tx
        .query_opt(
            "UPDATE product_sales_orders SET counted = false WHERE order_id = $1 AND counted RETURNING day, currency, lines",
            &[&order_id],
        )
        .await?
    else {
        return Ok(()); // already taken back (a refund after a cancellation)
    };
    let lines: Vec<OrderLine> = serde_json::from_value(row.get(2)).map_err(|e| {
        ApplyError::Rejected(format!(
            "stored lines of order {order_id} are unreadable: {e}"
        ))
    })?;
    let currency: String = row.get(1);
    Ok(add(tx, row.get(0), currency.trim(), &lines, -1).await?)
}

async fn add(
    tx: &Transaction<'_>,
    day: chrono::NaiveDate,
    currency: &str,
    lines: &[OrderLine],
    sign: i64,
) -> Result<(), tokio_postgres::Error> {
    for line in lines {
        let units = sign * i64::from(line.quantity);
        let revenue = units * line.unit_price_cents;
        tx.execute(
            "INSERT INTO product_sales_daily (day, sku, currency, units, revenue_cents) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (day, sku, currency) DO UPDATE SET \
               units = product_sales_daily.units + EXCLUDED.units, \
               revenue_cents = product_sales_daily.revenue_cents + EXCLUDED.revenue_cents",
            &[&day, &line.sku, &currency, &units, &revenue],
        )
        .await?;
    }
    Ok(())
}

//! `product_sales_daily`: units and revenue per SKU, currency and day of
//! placement (UTC), net of cancellations and of refunds of returned orders.
//!
//! `product_sales_orders` remembers what was counted for each order, so a
//! cancellation or refund takes back exactly that, and only once (a refund of
//! an already cancelled order takes back nothing more). Lines are added and
//! taken back set-wise, one statement per event.

use outbox_events::{Envelope, Event};
use uuid::Uuid;

use super::{p, Step};

pub fn plan(envelope: &Envelope, steps: &mut Vec<Step>) -> Result<(), String> {
    match &envelope.event {
        Event::OrderPlaced(e) => {
            let day = envelope.occurred_at.date_naive();
            let lines = serde_json::to_value(&e.lines).map_err(|e| e.to_string())?;
            steps.push(
                Step::new(
                    "INSERT INTO product_sales_orders (order_id, day, currency, lines, counted) VALUES ($1, $2, $3, $4, true) \
                     ON CONFLICT (order_id) DO NOTHING",
                    vec![p(e.order_id), p(day), p(e.currency.clone()), p(lines.clone())],
                )
                .expect(1, "record the order in product_sales_orders (already there)"),
            );
            steps.push(Step::new(
                "INSERT INTO product_sales_daily (day, sku, currency, units, revenue_cents) \
                 SELECT $1::date, l.sku, $2::text, sum(l.quantity), sum(l.quantity * l.unit_price_cents) \
                 FROM jsonb_to_recordset($3::jsonb) AS l(sku text, quantity bigint, unit_price_cents bigint) GROUP BY l.sku \
                 ON CONFLICT (day, sku, currency) DO UPDATE SET \
                   units = product_sales_daily.units + EXCLUDED.units, \
                   revenue_cents = product_sales_daily.revenue_cents + EXCLUDED.revenue_cents",
                vec![p(day), p(e.currency.clone()), p(lines)],
            ));
        }
        Event::OrderCancelled(e) => take_back(steps, e.order_id),
        Event::OrderRefunded(e) => take_back(steps, e.order_id),
        // Rejected for lack of stock: not a sale.
        Event::OrderRejected(e) => take_back(steps, e.order_id),
        _ => {}
    }
    Ok(())
}

/// Subtracts an order's counted lines, once.
fn take_back(steps: &mut Vec<Step>, order_id: Uuid) {
    steps.push(Step::new(
        "WITH taken AS ( \
           UPDATE product_sales_orders SET counted = false WHERE order_id = $1 AND counted \
           RETURNING day, currency, lines) \
         INSERT INTO product_sales_daily (day, sku, currency, units, revenue_cents) \
         SELECT t.day, l.sku, t.currency, -sum(l.quantity), -sum(l.quantity * l.unit_price_cents) \
         FROM taken t, jsonb_to_recordset(t.lines) AS l(sku text, quantity bigint, unit_price_cents bigint) \
         GROUP BY t.day, l.sku, t.currency \
         ON CONFLICT (day, sku, currency) DO UPDATE SET \
           units = product_sales_daily.units + EXCLUDED.units, \
           revenue_cents = product_sales_daily.revenue_cents + EXCLUDED.revenue_cents",
        vec![p(order_id)],
    ));
}

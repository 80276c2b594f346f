//! `order_view`: one denormalized row per order, ready for a screen, with the
//! customer's current name and e-mail.
//!
//! The core applies an order's versions strictly in order (or skips one on an
//! operator's explicit `discard --skip-version`), so each step only records the
//! version it applied; a step whose order row is missing is rejected.

use outbox_events::{Envelope, Event, OrderStatus};
use uuid::Uuid;

use super::{p, Param, Step};

pub fn plan(envelope: &Envelope, steps: &mut Vec<Step>) -> Result<(), String> {
    let v = envelope.aggregate_version;
    let at = envelope.occurred_at;
    // The status each order event leads to: the contract's one mapping.
    let status = OrderStatus::after(envelope.event.kind());
    match &envelope.event {
        Event::CustomerRegistered(e) => {
            customer_details(steps, &e.customer_id, &e.name, &e.email, v)
        }
        Event::CustomerContactChanged(e) => {
            customer_details(steps, &e.customer_id, &e.name, &e.email, v)
        }
        Event::CustomerAddressChanged(_) => {}
        Event::OrderPlaced(e) => {
            if v != 1 {
                return Err(format!("OrderPlaced must be version 1, got {v}"));
            }
            let lines = serde_json::to_value(&e.lines).map_err(|e| e.to_string())?;
            let shipping = e
                .shipping_address
                .as_ref()
                .map(serde_json::to_value)
                .transpose()
                .map_err(|e| e.to_string())?;
            let line_count = i32::try_from(e.lines.len()).map_err(|e| e.to_string())?;
            steps.push(
                Step::new(
                    "INSERT INTO order_view (order_id, customer_id, customer_name, customer_email, status, currency, total_cents, \
                     lines, line_count, shipping_address, placed_at, last_version) \
                     SELECT $1, $2, c.name, c.email, $9, $3, $4, $5, $6, $7, $8, 1 \
                     FROM (SELECT 1) one LEFT JOIN order_view_customers c ON c.customer_id = $2 \
                     ON CONFLICT (order_id) DO NOTHING",
                    vec![p(e.order_id), p(e.customer_id.clone()), p(e.currency.clone()), p(e.total_cents), p(lines), p(line_count), p(shipping), p(at), p(status.map(OrderStatus::as_str))],
                )
                .expect(1, "insert the order into order_view (already there)"),
            );
        }
        Event::OrderPaid(e) => step(
            steps,
            e.order_id,
            v,
            status,
            "payment_reference = $3, paid_at = $4",
            vec![p(e.payment_reference.clone()), p(at)],
        ),
        Event::OrderShipped(e) => step(
            steps,
            e.order_id,
            v,
            status,
            "carrier = $3, tracking_number = $4, shipped_at = $5",
            vec![p(e.carrier.clone()), p(e.tracking_number.clone()), p(at)],
        ),
        Event::OrderDelivered(e) => step(
            steps,
            e.order_id,
            v,
            status,
            "delivered_at = $3",
            vec![p(at)],
        ),
        Event::OrderCancelled(e) => step(
            steps,
            e.order_id,
            v,
            status,
            "cancel_reason = $3, cancelled_at = $4",
            vec![p(e.reason.clone()), p(at)],
        ),
        Event::OrderRefunded(e) => step(
            steps,
            e.order_id,
            v,
            status,
            "refunded_cents = $3, refund_reason = $4, refunded_at = $5",
            vec![p(e.amount_cents), p(e.reason.clone()), p(at)],
        ),
        // The stock-reservation saga's events: not projected yet.
        Event::OrderConfirmed(e) => step(
            steps,
            e.order_id,
            v,
            status,
            "confirmed_at = $3",
            vec![p(at)],
        ),
        Event::OrderRejected(e) => step(
            steps,
            e.order_id,
            v,
            status,
            "rejected_at = $3, reject_reason = $4",
            vec![p(at), p(e.reason.clone())],
        ),
        // The inventory's events feed `stock_view`.
        Event::StockSet(_)
        | Event::StockRestocked(_)
        | Event::StockReserved(_)
        | Event::StockRejected(_)
        | Event::StockReleased(_)
        | Event::StockShipped(_) => {}
    }
    Ok(())
}

/// Records a customer's latest name and e-mail and shows them on their orders.
fn customer_details(
    steps: &mut Vec<Step>,
    customer_id: &str,
    name: &str,
    email: &str,
    version: i64,
) {
    steps.push(Step::new(
        "INSERT INTO order_view_customers (customer_id, name, email, last_version) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (customer_id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email, last_version = EXCLUDED.last_version",
        vec![p(customer_id.to_owned()), p(name.to_owned()), p(email.to_owned()), p(version)],
    ));
    steps.push(Step::new(
        "UPDATE order_view SET customer_name = $2, customer_email = $3, updated_at = now() WHERE customer_id = $1",
        vec![p(customer_id.to_owned()), p(name.to_owned()), p(email.to_owned())],
    ));
}

/// An order step: `SET <set>` on the order's row, which must exist.
/// `$1` is the order id, `$2` the version, `$3...` are `params`.
/// `UPDATE order_view SET {set}` for one order event, which also moves the
/// order to `status` (its parameter follows `params`).
fn step(
    steps: &mut Vec<Step>,
    order_id: Uuid,
    version: i64,
    status: Option<OrderStatus>,
    set: &str,
    params: Vec<Param>,
) {
    let mut all = vec![p(order_id), p(version)];
    all.extend(params);
    all.push(p(status.map(OrderStatus::as_str)));
    let status_param = all.len();
    steps.push(
        Step::new(
            format!(
                "UPDATE order_view SET {set}, status = ${status_param}, last_version = $2, updated_at = now() \
                 WHERE order_id = $1"
            ),
            all,
        )
        .expect(
            1,
            "update order_view (the order is not at the previous version)",
        ),
    );
}

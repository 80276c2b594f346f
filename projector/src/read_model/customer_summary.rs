//! `customer_summary`: per customer, who they are (from customer events) and
//! how they buy (from order events): orders placed, open orders, lifetime
//! value per currency, last order.
//!
//! Both kinds of event upsert the same row and touch disjoint columns, and the
//! counters only add, so the row converges whichever events come first.

use chrono::{DateTime, Utc};
use outbox_events::{Address, Envelope, Event};
use uuid::Uuid;

use super::{p, Step};

pub fn plan(envelope: &Envelope, steps: &mut Vec<Step>) -> Result<(), String> {
    match &envelope.event {
        Event::CustomerRegistered(e) => customer(
            steps,
            &e.customer_id,
            envelope.aggregate_version,
            Some((&e.name, &e.email)),
            Some(&e.address),
        ),
        Event::CustomerContactChanged(e) => customer(
            steps,
            &e.customer_id,
            envelope.aggregate_version,
            Some((&e.name, &e.email)),
            None,
        ),
        Event::CustomerAddressChanged(e) => customer(
            steps,
            &e.customer_id,
            envelope.aggregate_version,
            None,
            Some(&e.address),
        ),
        Event::OrderPlaced(e) => {
            steps.push(Step::new(
                "INSERT INTO customer_summary_orders (order_id, customer_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                vec![p(e.order_id), p(e.customer_id.clone())],
            ));
            orders(steps, e.order_id, 1, 1, None, Some(envelope.occurred_at));
        }
        Event::OrderPaid(e) => orders(
            steps,
            e.order_id,
            0,
            0,
            Some((&e.currency, e.amount_cents)),
            None,
        ),
        Event::OrderDelivered(e) => orders(steps, e.order_id, 0, -1, None, None),
        Event::OrderCancelled(e) => orders(steps, e.order_id, 0, -1, None, None),
        // Rejected for lack of stock: no longer open (never paid).
        Event::OrderRejected(e) => orders(steps, e.order_id, 0, -1, None, None),
        Event::OrderRefunded(e) => orders(
            steps,
            e.order_id,
            0,
            0,
            Some((&e.currency, -e.amount_cents)),
            None,
        ),
        Event::OrderShipped(_) => {}
        // Confirmation changes nothing here; the inventory's events are not
        // about customers.
        Event::OrderConfirmed(_)
        | Event::StockSet(_)
        | Event::StockRestocked(_)
        | Event::StockReserved(_)
        | Event::StockRejected(_)
        | Event::StockReleased(_)
        | Event::StockShipped(_) => {}
    }
    Ok(())
}

/// Upserts customer details; `None` leaves a column as it is.
fn customer(
    steps: &mut Vec<Step>,
    customer_id: &str,
    version: i64,
    contact: Option<(&str, &str)>,
    address: Option<&Address>,
) {
    let (name, email) = contact.map_or((None, None), |(n, e)| {
        (Some(n.to_owned()), Some(e.to_owned()))
    });
    let city = address.map(|a| a.city.clone());
    let country = address.map(|a| a.country.clone());
    steps.push(Step::new(
        "INSERT INTO customer_summary (customer_id, name, email, city, country, customer_version) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (customer_id) DO UPDATE SET \
           name = coalesce(EXCLUDED.name, customer_summary.name), \
           email = coalesce(EXCLUDED.email, customer_summary.email), \
           city = coalesce(EXCLUDED.city, customer_summary.city), \
           country = coalesce(EXCLUDED.country, customer_summary.country), \
           customer_version = EXCLUDED.customer_version, updated_at = now()",
        vec![p(customer_id.to_owned()), p(name), p(email), p(city), p(country), p(version)],
    ));
}

/// Adds to the order counters and lifetime value of the customer who placed `order_id`.
fn orders(
    steps: &mut Vec<Step>,
    order_id: Uuid,
    placed: i32,
    open: i32,
    value: Option<(&str, i64)>,
    ordered_at: Option<DateTime<Utc>>,
) {
    let (currency, cents) = value.map_or((None, 0), |(c, v)| (Some(c.to_owned()), v));
    steps.push(
        Step::new(
            "INSERT INTO customer_summary AS s (customer_id, orders_placed, open_orders, lifetime_value, last_order_at) \
             SELECT o.customer_id, $2::int, $3::int, \
               CASE WHEN $4::text IS NULL THEN '{}'::jsonb ELSE jsonb_build_object($4::text, $5::bigint) END, $6::timestamptz \
             FROM customer_summary_orders o WHERE o.order_id = $1 \
             ON CONFLICT (customer_id) DO UPDATE SET \
               orders_placed = s.orders_placed + EXCLUDED.orders_placed, \
               open_orders = s.open_orders + EXCLUDED.open_orders, \
               lifetime_value = CASE WHEN $4::text IS NULL THEN s.lifetime_value \
                 ELSE s.lifetime_value || jsonb_build_object($4::text, coalesce((s.lifetime_value ->> $4::text)::bigint, 0) + $5::bigint) END, \
               last_order_at = greatest(s.last_order_at, EXCLUDED.last_order_at), \
               updated_at = now()",
            vec![p(order_id), p(placed), p(open), p(currency), p(cents), p(ordered_at)],
        )
        .expect(1, "update customer_summary (the order's OrderPlaced was never applied)"),
    );
}

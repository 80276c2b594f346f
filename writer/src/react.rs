//! The order reactor: the order service's side of the stock-reservation saga.
//!
//! `writer react` consumes the inventory's replies (topic
//! `outbox.event.reservation`) with the consumer core, into an inbox in the
//! **write** database, and in one transaction with that inbox row runs the
//! order command that follows through the same rules ([`crate::domain`]) and
//! the same writes and outbox ([`crate::store`]) as a person's command:
//!
//! | reply           | order placed          | order no longer placed (cancelled meanwhile) |
//! |-----------------|-----------------------|----------------------------------------------|
//! | `StockReserved` | confirm: `OrderConfirmed` | nothing (the inventory releases on `OrderCancelled`) |
//! | `StockRejected` | reject: `OrderRejected` with the shortages | nothing                |
//! | other replies   | nothing               | nothing                                      |
//!
//! `prepare` locks the batch's order rows in id order (`FOR UPDATE`, as a
//! command does), so a person's command on the same order waits for the
//! batch or the batch for it, and the rules see the latest state.

use std::collections::HashMap;

use chrono::Utc;
use consumer::{Handler, Step};
use deadpool_postgres::Transaction;
use outbox_events::{Envelope, Event, OrderStatus, Shortage};
use uuid::Uuid;

use crate::domain::{order, OrderCommand, OrderState, Rejection};
use crate::store::{event_writes, order_state, ORDER_STATE};

/// The reactor's name: its metrics (`reactor_*`), its environment
/// (`REACTOR__*`) and its consumer group.
pub const SERVICE: &str = "reactor";

/// The orders a batch's replies are about, locked.
#[derive(Debug, Default)]
pub struct Scope {
    orders: HashMap<Uuid, OrderState>,
}

/// The order reactor's [`Handler`] (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct OrderReactor;

/// The order a reply is about and the command it calls for, if any.
fn command_for(event: &Event) -> Option<OrderCommand> {
    match event {
        Event::StockReserved(e) => Some(OrderCommand::Confirm {
            order_id: e.order_id,
        }),
        Event::StockRejected(e) => Some(OrderCommand::Reject {
            order_id: e.order_id,
            reason: rejection_reason(&e.shortages),
            shortages: e.shortages.clone(),
        }),
        _ => None,
    }
}

/// `not enough stock: KBD-MECH (1 requested, 0 available), ...`
pub fn rejection_reason(shortages: &[Shortage]) -> String {
    let each: Vec<String> = shortages
        .iter()
        .map(|s| {
            format!(
                "{} ({} requested, {} available)",
                s.sku, s.requested, s.available
            )
        })
        .collect();
    format!("not enough stock: {}", each.join(", "))
}

impl Handler for OrderReactor {
    type Scope = Scope;

    fn name(&self) -> &'static str {
        SERVICE
    }

    async fn prepare(
        &self,
        tx: &Transaction<'_>,
        events: &[&Envelope],
    ) -> Result<Scope, tokio_postgres::Error> {
        let mut ids: Vec<Uuid> = events
            .iter()
            .filter_map(|e| command_for(&e.event).map(|c| c.order_id()))
            .collect();
        ids.sort();
        ids.dedup();
        let mut scope = Scope::default();
        if ids.is_empty() {
            return Ok(scope);
        }
        let rows = tx
            .query(
                &format!(
                    "SELECT order_id, {ORDER_STATE} FROM orders WHERE order_id = ANY($1) \
                     ORDER BY order_id FOR UPDATE"
                ),
                &[&ids],
            )
            .await?;
        for row in rows {
            let id: Uuid = row.get(0);
            // A status the code does not know stays out of the scope: the
            // reply about it is dead-lettered with that reason.
            if let Ok(state) = order_state(id, &row, 1) {
                scope.orders.insert(id, state);
            }
        }
        Ok(scope)
    }

    fn plan(&self, scope: &mut Scope, envelope: &Envelope) -> Result<Vec<Step>, String> {
        let Some(command) = command_for(&envelope.event) else {
            return Ok(Vec::new());
        };
        let order_id = command.order_id();
        let state = scope
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| format!("order {order_id} is not in the write database (or has a status this build does not know)"))?;
        let events = match order::decide(Some(state), None, &command) {
            Ok(events) => events,
            Err(Rejection::InvalidTransition { status, verb, .. }) => {
                tracing::info!(%order_id, %status, verb, "reply for an order that is no longer placed: no effect");
                return Ok(Vec::new());
            }
            Err(other) => return Err(other.to_string()),
        };
        let now = Utc::now();
        let mut steps = Vec::new();
        for event in events {
            state.version += 1;
            if let Some(status) = OrderStatus::after(event.kind()) {
                state.status = status;
            }
            let mut reply = Envelope::new(event, state.version, now);
            // One trace from the order's placement to its confirmation.
            reply.traceparent = envelope.traceparent.clone();
            steps.extend(event_writes(&reply, now).map_err(|e| e.to_string())?);
        }
        Ok(steps)
    }
}

/// Every metric the reactor exports: the consumer core's
/// ([`consumer::worker::METRIC_SUFFIXES`]) named after it, spelled out for
/// the alerts and docs/operations.md (a test holds the lists together), and
/// its own two gauges below.
pub const METRICS: [&str; 13] = [
    "reactor_events_applied_total",
    "reactor_events_duplicate_total",
    "reactor_records_stale_total",
    "reactor_events_parked_total",
    "reactor_dead_letters_total",
    "reactor_batches_total",
    "reactor_batch_failures_total",
    "reactor_event_latency_seconds",
    "reactor_dead_letters_open",
    "reactor_parked_events",
    "reactor_parked_aggregates",
    "reactor_partition_lag",
    "reactor_consumer_lag",
];

/// Gauge: orders placed and still waiting for the inventory's reply (the
/// saga's open orders). Refreshed every few seconds by `writer react`.
pub const AWAITING_STOCK: &str = "reactor_orders_awaiting_stock";
/// Gauge: how long the oldest of them has waited, in seconds (0: none). The
/// alert `OrdersAwaitingStock` fires when it stays high: the inventory, its
/// relay or the reactor is down or behind (docs/operations.md).
pub const OLDEST_AWAITING_STOCK: &str = "reactor_oldest_order_awaiting_stock_seconds";

/// Orders still `placed` and the age in seconds of the oldest: what the
/// saga has not answered yet.
pub async fn awaiting_stock(
    client: &impl tokio_postgres::GenericClient,
) -> Result<(i64, f64), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 \
             FROM orders WHERE status = $1",
            &[&OrderStatus::Placed.as_str()],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Refreshes [`AWAITING_STOCK`] and [`OLDEST_AWAITING_STOCK`] every 5 s on
/// its own connection until the process ends; a failed read keeps the last
/// values (and says so at DEBUG: the loop's own logs report the database).
pub async fn export_awaiting_stock(settings: consumer::settings::Settings) {
    let mut client: Option<consumer::worker::Db> = None;
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = consumer::worker::connect(SERVICE, &settings).await.ok();
        }
        if let Some(c) = &client {
            match awaiting_stock(&**c).await {
                Ok((count, oldest)) => {
                    metrics::gauge!(AWAITING_STOCK).set(count as f64);
                    metrics::gauge!(OLDEST_AWAITING_STOCK).set(oldest);
                }
                Err(e) => tracing::debug!(error = %e, "orders awaiting stock not read"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_listed_metrics_are_the_cores_named_after_the_reactor() {
        let core: Vec<String> = consumer::worker::METRIC_SUFFIXES
            .iter()
            .map(|s| format!("{}_{s}", super::SERVICE))
            .collect();
        assert_eq!(core, super::METRICS);
    }
}

//! The inventory's [`Handler`]: an order event in, a reservation decision
//! and its reply (in the outbox) out. See the crate docs for the table.
//!
//! `prepare` reads, in one pipelined round trip, the reservations of the
//! batch's orders and every stock row the batch may touch (the SKUs of the
//! orders placed, and of the reservations it may release or ship), locking
//! the stock rows in SKU order: two instances, or an instance and `inventory
//! stock set`, wait for each other instead of deciding from stale levels or
//! deadlocking. `plan` then decides in memory, event by event, and keeps the
//! levels it changed so the next event of the batch sees them.

use std::collections::{BTreeMap, HashMap};

use consumer::{p, Handler, Step};
use deadpool_postgres::Transaction;
use outbox_events::{
    Envelope, Event, OrderLineQuantity, Shortage, StockLevel, StockRejected, StockReleased,
    StockReserved, StockShipped,
};
use uuid::Uuid;

/// Where a reservation is (`reservations.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Units held for the order.
    Reserved,
    /// Not enough stock when the order was placed; nothing held.
    Rejected,
    /// Held, then given back: the order was cancelled (compensation).
    Released,
    /// Held, then gone with the order.
    Shipped,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Reserved,
        Status::Rejected,
        Status::Released,
        Status::Shipped,
    ];

    /// The name in SQL (the CHECK constraint of `reservations.status`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Reserved => "reserved",
            Status::Rejected => "rejected",
            Status::Released => "released",
            Status::Shipped => "shipped",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A reservation as the batch knows it.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub status: Status,
    /// Units per SKU, one entry per SKU.
    pub lines: Vec<OrderLineQuantity>,
    /// aggregate_version of its last event.
    pub version: i64,
}

/// What a batch decides from: the locked stock rows and the reservations.
#[derive(Debug, Default)]
pub struct Scope {
    stock: HashMap<String, StockLevel>,
    reservations: HashMap<Uuid, Reservation>,
}

/// The inventory's handler (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct Reservations;

impl Handler for Reservations {
    type Scope = Scope;

    fn name(&self) -> &'static str {
        crate::SERVICE
    }

    async fn prepare(
        &self,
        tx: &Transaction<'_>,
        events: &[&Envelope],
    ) -> Result<Scope, tokio_postgres::Error> {
        let mut skus: Vec<String> = Vec::new();
        let mut orders: Vec<Uuid> = Vec::new();
        for envelope in events {
            match &envelope.event {
                Event::OrderPlaced(e) => {
                    skus.extend(e.lines.iter().map(|l| l.sku.clone()));
                    orders.push(e.order_id);
                }
                Event::OrderCancelled(e) => orders.push(e.order_id),
                Event::OrderShipped(e) => orders.push(e.order_id),
                _ => {}
            }
        }
        if orders.is_empty() {
            return Ok(Scope::default());
        }
        let stock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&skus, &orders];
        let order_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&orders];
        let stock = tx.query(
            "SELECT sku, on_hand, reserved, version FROM stock \
             WHERE sku = ANY($1) OR sku IN (SELECT l->>'sku' FROM reservations r, jsonb_array_elements(r.lines) l \
                                           WHERE r.order_id = ANY($2) AND r.status = 'reserved') \
             ORDER BY sku FOR UPDATE",
            &stock_params,
        );
        let reservations = tx.query(
            "SELECT order_id, status, lines, version FROM reservations WHERE order_id = ANY($1)",
            &order_params,
        );
        let (stock, reservations) = futures::try_join!(stock, reservations)?;
        let mut scope = Scope::default();
        for row in stock {
            let sku: String = row.get(0);
            scope.stock.insert(
                sku.clone(),
                StockLevel {
                    sku,
                    on_hand: row.get(1),
                    reserved: row.get(2),
                    version: row.get(3),
                },
            );
        }
        for row in reservations {
            let status: String = row.get(1);
            let lines: serde_json::Value = row.get(2);
            scope.reservations.insert(
                row.get(0),
                Reservation {
                    // The CHECK constraint admits only these names.
                    status: Status::parse(&status).unwrap_or(Status::Rejected),
                    lines: serde_json::from_value(lines).unwrap_or_default(),
                    version: row.get(3),
                },
            );
        }
        Ok(scope)
    }

    fn plan(&self, scope: &mut Scope, envelope: &Envelope) -> Result<Vec<Step>, String> {
        match &envelope.event {
            Event::OrderPlaced(e) => {
                let wanted: BTreeMap<&str, i64> =
                    e.lines.iter().fold(BTreeMap::new(), |mut acc, l| {
                        *acc.entry(l.sku.as_str()).or_default() += i64::from(l.quantity);
                        acc
                    });
                place(scope, envelope, e.order_id, &wanted)
            }
            Event::OrderCancelled(e) => Ok(release(scope, envelope, e.order_id, &e.reason)),
            Event::OrderShipped(e) => ship(scope, envelope, e.order_id),
            // The order topic carries more than the inventory acts on.
            _ => Ok(Vec::new()),
        }
    }
}

/// The reply's envelope: the reservation's next version, the same trace.
fn reply(cause: &Envelope, event: Event, version: i64) -> Envelope {
    let mut envelope = Envelope::new(event, version, chrono::Utc::now());
    envelope.traceparent = cause.traceparent.clone();
    envelope
}

fn place(
    scope: &mut Scope,
    cause: &Envelope,
    order_id: Uuid,
    wanted: &BTreeMap<&str, i64>,
) -> Result<Vec<Step>, String> {
    if let Some(r) = scope.reservations.get(&order_id) {
        return Err(format!(
            "order {order_id} was placed again: its reservation is {} already",
            r.status.as_str()
        ));
    }
    let shortages: Vec<Shortage> = wanted
        .iter()
        .filter_map(|(sku, &requested)| {
            let available = scope.stock.get(*sku).map_or(0, |l| l.on_hand - l.reserved);
            (available < requested).then(|| Shortage {
                sku: (*sku).to_owned(),
                requested,
                available: available.max(0),
            })
        })
        .collect();
    let lines: Vec<OrderLineQuantity> = wanted
        .iter()
        .map(|(sku, &q)| OrderLineQuantity {
            sku: (*sku).to_owned(),
            quantity: i32::try_from(q).unwrap_or(i32::MAX),
        })
        .collect();
    let mut steps = Vec::new();
    let (status, event) = if shortages.is_empty() {
        let levels = lines
            .iter()
            .map(|l| change(scope, &l.sku, 0, i64::from(l.quantity), &mut steps))
            .collect();
        (
            Status::Reserved,
            Event::StockReserved(StockReserved {
                order_id,
                lines: lines.clone(),
                levels,
            }),
        )
    } else {
        (
            Status::Rejected,
            Event::StockRejected(StockRejected {
                order_id,
                shortages,
            }),
        )
    };
    steps.push(
        Step::new(
            "INSERT INTO reservations (order_id, status, lines, version) VALUES ($1, $2, $3, 1)",
            vec![
                p(order_id),
                p(status.as_str()),
                p(serde_json::to_value(&lines).unwrap_or_default()),
            ],
        )
        .expect(1, "record the order's reservation"),
    );
    steps.push(consumer::outbox::append(&reply(cause, event, 1)));
    scope.reservations.insert(
        order_id,
        Reservation {
            status,
            lines,
            version: 1,
        },
    );
    Ok(steps)
}

/// Compensation: the units held for a cancelled order go back. Nothing to
/// give back (rejected, released already) is no effect, not an error.
fn release(scope: &mut Scope, cause: &Envelope, order_id: Uuid, reason: &str) -> Vec<Step> {
    let Some(reservation) = scope
        .reservations
        .get(&order_id)
        .filter(|r| r.status == Status::Reserved)
        .cloned()
    else {
        return Vec::new();
    };
    let mut steps = Vec::new();
    let levels = reservation
        .lines
        .iter()
        .map(|l| change(scope, &l.sku, 0, -i64::from(l.quantity), &mut steps))
        .collect();
    let event = Event::StockReleased(StockReleased {
        order_id,
        lines: reservation.lines.clone(),
        levels,
        reason: format!("order cancelled: {reason}"),
    });
    finish(
        scope,
        cause,
        order_id,
        reservation,
        Status::Released,
        event,
        &mut steps,
    );
    steps
}

/// The units held for a shipped order leave the warehouse.
fn ship(scope: &mut Scope, cause: &Envelope, order_id: Uuid) -> Result<Vec<Step>, String> {
    let reservation = match scope.reservations.get(&order_id) {
        Some(r) if r.status == Status::Reserved => r.clone(),
        other => {
            return Err(format!(
                "order {order_id} shipped without stock held for it (reservation: {})",
                other.map_or("none", |r| r.status.as_str())
            ))
        }
    };
    let mut steps = Vec::new();
    let levels = reservation
        .lines
        .iter()
        .map(|l| {
            let q = i64::from(l.quantity);
            steps.push(Step::new(
                "INSERT INTO stock_movements (sku, kind, quantity, order_id) VALUES ($1, 'ship', $2, $3)",
                vec![p(l.sku.clone()), p(q), p(order_id)],
            ));
            change(scope, &l.sku, -q, -q, &mut steps)
        })
        .collect();
    let event = Event::StockShipped(StockShipped {
        order_id,
        lines: reservation.lines.clone(),
        levels,
    });
    finish(
        scope,
        cause,
        order_id,
        reservation,
        Status::Shipped,
        event,
        &mut steps,
    );
    Ok(steps)
}

/// Moves a held reservation to `status`, with its reply.
fn finish(
    scope: &mut Scope,
    cause: &Envelope,
    order_id: Uuid,
    reservation: Reservation,
    status: Status,
    event: Event,
    steps: &mut Vec<Step>,
) {
    let version = reservation.version + 1;
    steps.push(
        Step::new(
            "UPDATE reservations SET status = $2, version = $3, updated_at = now() \
             WHERE order_id = $1 AND status = 'reserved' AND version = $4",
            vec![
                p(order_id),
                p(status.as_str()),
                p(version),
                p(reservation.version),
            ],
        )
        .expect(1, "move the reservation on"),
    );
    steps.push(consumer::outbox::append(&reply(cause, event, version)));
    scope.reservations.insert(
        order_id,
        Reservation {
            status,
            version,
            ..reservation
        },
    );
}

/// Changes a locked SKU's units on hand and reserved by the deltas, as one
/// guarded UPDATE; returns the level after it.
fn change(
    scope: &mut Scope,
    sku: &str,
    on_hand: i64,
    reserved: i64,
    steps: &mut Vec<Step>,
) -> StockLevel {
    let level = scope.stock.entry(sku.to_owned()).or_insert(StockLevel {
        sku: sku.to_owned(),
        on_hand: 0,
        reserved: 0,
        version: 0,
    });
    let before = level.version;
    level.on_hand += on_hand;
    level.reserved += reserved;
    level.version += 1;
    steps.push(
        Step::new(
            "UPDATE stock SET on_hand = $2, reserved = $3, version = $4, updated_at = now() \
             WHERE sku = $1 AND version = $5",
            vec![
                p(sku.to_owned()),
                p(level.on_hand),
                p(level.reserved),
                p(level.version),
                p(before),
            ],
        )
        .expect(1, "change the SKU's stock (locked by this batch)"),
    );
    level.clone()
}

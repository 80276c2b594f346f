//! The stock-reservation saga's invariants, computed from the write and
//! inventory databases in SQL written for this check (no code shared with
//! the inventory service or the order reactor), then joined here.
//!
//! The stock model: `on_hand` units are in the warehouse, `reserved` of them
//! held for confirmed orders, `available = on_hand - reserved`.
//! - Stock is never negative and never more reserved than on hand.
//! - For every SKU, `on_hand = available + reserved` equals its last `set`
//!   plus the restocks since minus the units shipped since (the movement
//!   ledger), and `reserved` equals the units of the reservations still held.
//! - Every order placed has exactly one stock reply (`StockReserved` or
//!   `StockRejected`) and one reservation row, and ends confirmed or
//!   rejected: its status agrees with its reservation (rejected ↔ rejected;
//!   confirmed or paid ↔ held; shipped or delivered ↔ shipped; cancelled ↔
//!   released, or rejected when the reply was a rejection).
//! - A cancelled order's reservation was released at most once, and exactly
//!   once when it had been held (one `StockReleased`).
//! - Every event of each outbox is in each consuming inbox exactly once: the
//!   inventory's inbox holds the order topic's events, the reactor's (in the
//!   write database) the reservation topic's; no dead letters, no parked
//!   events in either.
//! - `stock_view` (read database) equals the inventory's `stock`.

use std::collections::{BTreeMap, BTreeSet};

use outbox_events::{EventType, OrderStatus, ORDER_AGGREGATE, RESERVATION_AGGREGATE};

use super::{count, lines, OracleReport, SHOWN};
use crate::{Result, Stack, INVENTORY_DB, READ_DB, WRITE_DB};

fn set(stack: &Stack, db: &str, sql: &str) -> Result<BTreeSet<String>> {
    Ok(lines(&stack.psql(db, sql)?)
        .into_iter()
        .map(str::to_owned)
        .collect())
}

fn map(stack: &Stack, db: &str, sql: &str) -> Result<BTreeMap<String, String>> {
    Ok(lines(&stack.psql(db, sql)?)
        .into_iter()
        .filter_map(|l| l.split_once('|'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// Adds every violated invariant (at most [`SHOWN`] examples each) to `report`.
pub fn check(stack: &Stack, report: &mut OracleReport) -> Result<()> {
    let mut violations = Vec::new();
    let mut note = |what: String| {
        if violations.len() < 4 * SHOWN {
            violations.push(what);
        }
    };

    // Stock never negative, never over-reserved.
    let bad = count(
        stack,
        INVENTORY_DB,
        "SELECT count(*) FROM stock WHERE on_hand < 0 OR reserved < 0 OR reserved > on_hand",
    )?;
    if bad > 0 {
        note(format!("{bad} SKUs with negative or over-reserved stock"));
    }
    // The ledger explains the units on hand.
    for row in lines(&stack.psql(
        INVENTORY_DB,
        "WITH last_set AS (SELECT DISTINCT ON (sku) sku, id, quantity FROM stock_movements \
                           WHERE kind = 'set' ORDER BY sku, id DESC), \
              ledger AS (SELECT l.sku, l.quantity + coalesce(sum(CASE m.kind WHEN 'restock' THEN m.quantity \
                           ELSE -m.quantity END) FILTER (WHERE m.id > l.id AND m.kind <> 'set'), 0) AS units \
                         FROM last_set l LEFT JOIN stock_movements m ON m.sku = l.sku GROUP BY l.sku, l.quantity) \
         SELECT s.sku, s.on_hand, coalesce(g.units, 0) FROM stock s LEFT JOIN ledger g USING (sku) \
         WHERE s.on_hand <> coalesce(g.units, 0) ORDER BY 1 LIMIT 20",
    )?) {
        note(format!("on hand differs from set + restocks - shipped (sku|on_hand|ledger): {row}"));
    }
    // Reserved units are exactly those of the reservations held.
    for row in lines(&stack.psql(
        INVENTORY_DB,
        "SELECT s.sku, s.reserved, coalesce(h.units, 0) FROM stock s LEFT JOIN ( \
           SELECT l->>'sku' AS sku, sum((l->>'quantity')::bigint) AS units \
           FROM reservations r, jsonb_array_elements(r.lines) l WHERE r.status = 'reserved' GROUP BY 1) h \
         ON h.sku = s.sku WHERE s.reserved <> coalesce(h.units, 0) ORDER BY 1 LIMIT 20",
    )?) {
        note(format!("reserved differs from the reservations held (sku|reserved|held): {row}"));
    }

    // One reply per order placed, and status against reservation.
    let orders = map(
        stack,
        WRITE_DB,
        "SELECT order_id, status || '|' || (cancel_reason IS NOT NULL) FROM orders",
    )?;
    let replies = map(
        stack,
        INVENTORY_DB,
        &format!(
            "SELECT aggregate_id, count(*) FILTER (WHERE event_type IN ('{}', '{}')) || '|' || \
               count(*) FILTER (WHERE event_type = '{}') \
             FROM outbox WHERE aggregate_type = '{RESERVATION_AGGREGATE}' GROUP BY 1",
            EventType::StockReserved,
            EventType::StockRejected,
            EventType::StockReleased
        ),
    )?;
    let reservations = map(
        stack,
        INVENTORY_DB,
        "SELECT order_id, status FROM reservations",
    )?;
    let mut shown = 0;
    for (order, state) in &orders {
        let (status, cancelled) = state.split_once('|').unwrap_or((state, "false"));
        let status = OrderStatus::parse(status);
        let reservation = reservations.get(order).map(String::as_str);
        let (replied, released) = replies
            .get(order)
            .and_then(|r| r.split_once('|'))
            .unwrap_or(("0", "0"));
        use OrderStatus::*;
        let agrees = match (status, reservation) {
            (Some(Confirmed | Paid), Some("reserved")) => true,
            (Some(Rejected), Some("rejected")) => true,
            (Some(Shipped | Delivered), Some("shipped")) => true,
            (Some(Refunded), Some("shipped")) => cancelled == "false",
            (Some(Cancelled | Refunded), Some("released" | "rejected")) => cancelled == "true",
            _ => false,
        };
        let once = replied == "1"
            && (released == "1") == (reservation == Some("released"))
            && released != "2";
        if !(agrees && once) && shown < SHOWN {
            shown += 1;
            note(format!(
                "order {order}: status {} (cancelled: {cancelled}), reservation {}, stock replies {replied}, releases {released}",
                status.map_or("?", OrderStatus::as_str),
                reservation.unwrap_or("none")
            ));
        }
    }
    let extra: Vec<&String> = reservations
        .keys()
        .filter(|o| !orders.contains_key(*o))
        .collect();
    if !extra.is_empty() {
        note(format!(
            "{} reservations for orders the write side does not have, e.g. {}",
            extra.len(),
            extra[0]
        ));
    }

    // Each consuming inbox holds exactly its topic's events.
    let pairs = [
        (
            "the inventory's inbox",
            INVENTORY_DB,
            WRITE_DB,
            ORDER_AGGREGATE,
        ),
        (
            "the order reactor's inbox",
            WRITE_DB,
            INVENTORY_DB,
            RESERVATION_AGGREGATE,
        ),
    ];
    for (name, inbox_db, outbox_db, aggregate) in pairs {
        let published = set(
            stack,
            outbox_db,
            &format!("SELECT id FROM outbox WHERE aggregate_type = '{aggregate}'"),
        )?;
        let consumed = set(stack, inbox_db, "SELECT event_id FROM inbox")?;
        let missing = published.difference(&consumed).count();
        let unknown = consumed.difference(&published).count();
        if missing + unknown > 0 {
            note(format!(
                "{name}: {missing} events of outbox.event.{aggregate} missing, {unknown} not from it"
            ));
        }
        let stuck = count(
            stack,
            inbox_db,
            "SELECT (SELECT count(*) FROM dead_letters) + (SELECT count(*) FROM parked_events)",
        )?;
        if stuck > 0 {
            note(format!("{name}: {stuck} dead letters and parked events"));
        }
    }

    // The stock read model.
    let stock = set(
        stack,
        INVENTORY_DB,
        "SELECT sku || '|' || on_hand || '|' || reserved FROM stock",
    )?;
    let view = set(
        stack,
        READ_DB,
        "SELECT sku || '|' || on_hand || '|' || reserved FROM stock_view",
    )?;
    report.stock_rows = view.len();
    let differ: Vec<&String> = stock.symmetric_difference(&view).collect();
    if !differ.is_empty() {
        note(format!(
            "stock_view differs from the inventory's stock in {} rows, e.g. {}",
            differ.len(),
            differ[0]
        ));
    }
    report.saga_violations = violations;
    Ok(())
}

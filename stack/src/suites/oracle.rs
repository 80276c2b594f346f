//! The reliability suite's oracle: what the read side must contain, computed
//! from the write side alone.
//!
//! The write database is the truth. Each read model is recomputed from the
//! state tables (`orders`, `order_lines`, `customers`) and the event times in
//! the outbox, in plain SQL written for this check (it shares no code with the
//! projector's apply path), then compared with the projector's tables row by
//! row. Around that, the delivery properties:
//! - every committed outbox event is in the inbox, once (the inbox's key makes
//!   "more than once" impossible to store, so the check is set equality);
//! - no event that the write side never committed is anywhere: not in the
//!   inbox, parked, dead-lettered, nor on the broker's topics (a rolled-back
//!   transaction leaves no outbox row, so its events can only be "unknown");
//! - per aggregate the applied versions are exactly 1..n, n being the write
//!   side's version, and were applied in that order (a version's batch never
//!   commits before its predecessor's: `inbox.applied_at` never decreases);
//! - no dead letters, no parked events;
//! - the stock-reservation saga's invariants, from the write and inventory
//!   databases ([`saga`]).
//!
//! # Layout
//! - [`models`]: per read model, the expected rows (write DB) and the actual
//!   rows (read DB), both as `|`-separated text keyed by the first columns.
//! - [`check`]: runs every check; an [`OracleReport`] says exactly what differs.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use outbox_events::{EventType, OrderStatus, ORDER_AGGREGATE};

use crate::{Result, Stack, StackError, INVENTORY_DB, READ_DB, WRITE_DB};

#[path = "oracle_saga.rs"]
pub mod saga;

/// Every column of `order_view` but its processing timestamp (`updated_at`),
/// what tests compare (a test checks the list against the table).
pub const ORDER_VIEW_COLUMNS: &str = "order_id, customer_id, customer_name, customer_email, status, currency, \
     total_cents, lines, line_count, shipping_address, placed_at, paid_at, payment_reference, shipped_at, carrier, \
     tracking_number, delivered_at, cancelled_at, cancel_reason, refunded_at, refunded_cents, refund_reason, last_version, \
     confirmed_at, rejected_at, reject_reason";
/// Every column of `customer_summary` but `updated_at`.
pub const CUSTOMER_SUMMARY_COLUMNS: &str =
    "customer_id, name, email, city, country, customer_version, \
     orders_placed, open_orders, lifetime_value, last_order_at";
/// Every column of `product_sales_daily`.
pub const PRODUCT_SALES_COLUMNS: &str = "day, sku, currency, units, revenue_cents";

/// The four read models as text, every column of [`ORDER_VIEW_COLUMNS`],
/// [`CUSTOMER_SUMMARY_COLUMNS`] and [`PRODUCT_SALES_COLUMNS`] and `stock_view`'s
/// levels with their counter (not its processing time), rows in key order: the
/// one dump every test compares read sides with.
pub fn read_model_dump_sql() -> String {
    format!(
        "SELECT (SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t.order_id), '') FROM (SELECT {ORDER_VIEW_COLUMNS} FROM order_view) t) \
         || E'\\n--\\n' || (SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t.customer_id), '') FROM (SELECT {CUSTOMER_SUMMARY_COLUMNS} FROM customer_summary) t) \
         || E'\\n--\\n' || (SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t.day, t.sku, t.currency), '') FROM (SELECT {PRODUCT_SALES_COLUMNS} FROM product_sales_daily) t) \
         || E'\\n--\\n' || (SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t.sku), '') FROM (SELECT sku, on_hand, reserved, version FROM stock_view) t)"
    )
}

/// Differences listed per check at most; the counts are always complete.
const SHOWN: usize = 20;

/// One read model: how to compute it from the write side and how to read it.
struct Model {
    name: &'static str,
    /// Leading columns that identify a row.
    key_columns: usize,
    expected: String,
    actual: &'static str,
}

/// Time of an order's event of type `kind`, from the outbox (the event's own time).
fn order_event_at(kind: EventType) -> String {
    format!(
        "(SELECT x.occurred_at FROM outbox x WHERE x.aggregate_type = '{ORDER_AGGREGATE}' \
         AND x.aggregate_id = o.order_id::text AND x.event_type = '{kind}')"
    )
}

/// `'a', 'b'`: statuses as an SQL list.
fn sql_list(statuses: impl IntoIterator<Item = OrderStatus>) -> String {
    statuses
        .into_iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every read model the oracle checks, its SQL built from the contract's
/// vocabularies (event types, aggregate types, order statuses).
fn models() -> [Model; 3] {
    let open = sql_list(OrderStatus::ALL.into_iter().filter(|s| s.is_open()));
    let no_sale = sql_list(OrderStatus::ALL.into_iter().filter(|s| !s.is_sale()));
    let placed = EventType::OrderPlaced;
    [
        Model {
            name: "order_view",
            key_columns: 1,
            expected: format!(
                "SELECT o.order_id, o.customer_id, o.status, o.currency, o.total_cents, \
                   (SELECT jsonb_agg(jsonb_build_object('sku', l.sku, 'quantity', l.quantity, \
                      'unit_price_cents', l.unit_price_cents) ORDER BY l.line_no) \
                    FROM order_lines l WHERE l.order_id = o.order_id), \
                   (SELECT count(*) FROM order_lines l WHERE l.order_id = o.order_id), \
                   o.payment_reference, o.carrier, o.tracking_number, o.cancel_reason, \
                   o.refund_reason, o.refunded_cents, o.shipping_address, c.name, c.email, o.version, \
                   {}, {}, {}, {}, {}, {}, {}, {}, o.reject_reason \
                 FROM orders o LEFT JOIN customers c ON c.customer_id = o.customer_id ORDER BY 1",
                order_event_at(EventType::OrderPlaced),
                order_event_at(EventType::OrderConfirmed),
                order_event_at(EventType::OrderRejected),
                order_event_at(EventType::OrderPaid),
                order_event_at(EventType::OrderShipped),
                order_event_at(EventType::OrderDelivered),
                order_event_at(EventType::OrderCancelled),
                order_event_at(EventType::OrderRefunded),
            ),
            actual: "SELECT order_id, customer_id, status, currency, total_cents, lines, line_count, \
                       payment_reference, carrier, tracking_number, cancel_reason, refund_reason, \
                       refunded_cents, shipping_address, customer_name, customer_email, last_version, \
                       placed_at, confirmed_at, rejected_at, paid_at, shipped_at, delivered_at, cancelled_at, \
                       refunded_at, reject_reason \
                     FROM order_view ORDER BY 1",
        },
        Model {
            name: "customer_summary",
            key_columns: 1,
            expected: format!(
                "SELECT c.customer_id, c.name, c.email, c.city, c.country, c.version, \
                   (SELECT count(*) FROM orders o WHERE o.customer_id = c.customer_id), \
                   (SELECT count(*) FROM orders o WHERE o.customer_id = c.customer_id \
                      AND o.status IN ({open})), \
                   coalesce((SELECT jsonb_object_agg(v.currency, v.cents) FROM ( \
                      SELECT o.currency, sum(o.total_cents) - coalesce(sum(o.refunded_cents), 0) AS cents \
                      FROM orders o WHERE o.customer_id = c.customer_id AND o.payment_reference IS NOT NULL \
                      GROUP BY o.currency) v), '{{}}'::jsonb), \
                   (SELECT max(x.occurred_at) FROM orders o JOIN outbox x \
                      ON x.aggregate_type = '{ORDER_AGGREGATE}' AND x.aggregate_id = o.order_id::text \
                      AND x.event_type = '{placed}' WHERE o.customer_id = c.customer_id) \
                 FROM customers c ORDER BY 1"
            ),
            actual: "SELECT customer_id, name, email, city, country, customer_version, orders_placed, \
                       open_orders, lifetime_value, last_order_at FROM customer_summary ORDER BY 1",
        },
        Model {
            name: "product_sales_daily",
            key_columns: 3,
            expected: format!(
                "SELECT (x.occurred_at AT TIME ZONE 'UTC')::date, l.sku, o.currency, \
                   sum(l.quantity), sum(l.quantity::bigint * l.unit_price_cents) \
                 FROM orders o JOIN order_lines l ON l.order_id = o.order_id \
                 JOIN outbox x ON x.aggregate_type = '{ORDER_AGGREGATE}' AND x.aggregate_id = o.order_id::text \
                   AND x.event_type = '{placed}' \
                 WHERE o.status NOT IN ({no_sale}) \
                 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
            ),
            // Rows taken back to zero stay in the table; they carry no sale.
            actual: "SELECT day, sku, currency, units, revenue_cents FROM product_sales_daily \
                     WHERE units <> 0 OR revenue_cents <> 0 ORDER BY 1, 2, 3",
        },
    ]
}

/// One row that differs between the oracle and a read model.
#[derive(Debug, Clone, Serialize)]
pub struct RowDiff {
    pub model: String,
    pub key: String,
    /// The row the write side implies (`None`: there must be no such row).
    pub expected: Option<String>,
    /// The row the read model holds (`None`: missing).
    pub actual: Option<String>,
}

/// Everything the oracle checked, and exactly what differs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OracleReport {
    pub events_committed: usize,
    pub events_applied: usize,
    /// Rows compared per read model.
    pub rows: BTreeMap<String, usize>,
    /// Number of differing rows per read model, and the first of them.
    pub row_diffs: BTreeMap<String, usize>,
    pub row_diff_examples: Vec<RowDiff>,
    /// Committed, never applied (event ids, first [`SHOWN`]).
    pub missing: Vec<String>,
    pub missing_count: usize,
    /// Applied, parked or dead-lettered but never committed.
    pub unknown_in_read_db: Vec<String>,
    /// On the outbox topics but never committed.
    pub unknown_on_broker: Vec<String>,
    /// Records on the topics beyond the first copy of each event (the relay's
    /// at-least-once republishing; the inbox absorbs them).
    pub broker_duplicates: usize,
    /// Records read back from the outbox topics.
    pub broker_records: usize,
    /// Committed events (still in the outbox) not found on the topics.
    pub missing_on_broker: usize,
    /// Aggregates whose applied versions are not exactly 1..n of the write side.
    pub version_gaps: Vec<String>,
    /// Versions applied in an earlier transaction than their predecessor.
    pub inversions: usize,
    pub dead_letters: usize,
    pub parked: usize,
    /// The stock-reservation saga's invariants that do not hold (see [`saga`]).
    pub saga_violations: Vec<String>,
    /// Rows `stock_view` holds, compared with the inventory's `stock`.
    pub stock_rows: usize,
}

impl OracleReport {
    pub fn passed(&self) -> bool {
        self.row_diffs.values().all(|n| *n == 0)
            && self.missing_count == 0
            && self.unknown_in_read_db.is_empty()
            && self.unknown_on_broker.is_empty()
            && self.version_gaps.is_empty()
            && self.inversions == 0
            && self.dead_letters == 0
            && self.parked == 0
            && self.missing_on_broker == 0
            && self.saga_violations.is_empty()
    }

    /// What failed, one line per check; empty when passed.
    pub fn failures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (model, n) in self.row_diffs.iter().filter(|(_, n)| **n > 0) {
            lines.push(format!("{model}: {n} rows differ from the write side"));
        }
        if self.missing_on_broker > 0 {
            lines.push(format!(
                "{} committed events are not on the topics ({} records read there)",
                self.missing_on_broker, self.broker_records
            ));
        }
        for d in &self.row_diff_examples {
            lines.push(format!(
                "  {} {}: expected {} / got {}",
                d.model,
                d.key,
                d.expected.as_deref().unwrap_or("(no row)"),
                d.actual.as_deref().unwrap_or("(no row)")
            ));
        }
        if self.missing_count > 0 {
            lines.push(format!(
                "{} committed events never applied, e.g. {}",
                self.missing_count,
                self.missing.join(", ")
            ));
        }
        if !self.unknown_in_read_db.is_empty() {
            lines.push(format!(
                "events in the read database the write side never committed: {}",
                self.unknown_in_read_db.join(", ")
            ));
        }
        if !self.unknown_on_broker.is_empty() {
            lines.push(format!(
                "events on the topics the write side never committed: {}",
                self.unknown_on_broker.join(", ")
            ));
        }
        for gap in &self.version_gaps {
            lines.push(format!("versions: {gap}"));
        }
        if self.inversions > 0 {
            lines.push(format!(
                "{} versions applied before their predecessor",
                self.inversions
            ));
        }
        for v in &self.saga_violations {
            lines.push(format!("saga: {v}"));
        }
        if self.dead_letters > 0 || self.parked > 0 {
            lines.push(format!(
                "{} dead letters, {} parked events (`projector dead-letters list`)",
                self.dead_letters, self.parked
            ));
        }
        lines
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

fn key_of(row: &str, columns: usize) -> String {
    row.split('|').take(columns).collect::<Vec<_>>().join("|")
}

/// Compares the expected and actual rows of one model (both sorted by key).
fn compare(model: &Model, expected: &str, actual: &str, report: &mut OracleReport) {
    let expected: BTreeMap<String, &str> = lines(expected)
        .into_iter()
        .map(|r| (key_of(r, model.key_columns), r))
        .collect();
    let actual: BTreeMap<String, &str> = lines(actual)
        .into_iter()
        .map(|r| (key_of(r, model.key_columns), r))
        .collect();
    let keys: std::collections::BTreeSet<&String> = expected.keys().chain(actual.keys()).collect();
    let mut differing = 0;
    for key in keys {
        let (e, a) = (expected.get(key), actual.get(key));
        if e == a {
            continue;
        }
        differing += 1;
        if report.row_diff_examples.len() < SHOWN {
            report.row_diff_examples.push(RowDiff {
                model: model.name.into(),
                key: key.clone(),
                expected: e.map(|s| s.to_string()),
                actual: a.map(|s| s.to_string()),
            });
        }
    }
    report.rows.insert(model.name.into(), expected.len());
    report.row_diffs.insert(model.name.into(), differing);
}

fn count(stack: &Stack, db: &str, sql: &str) -> Result<usize> {
    let text = stack.psql(db, sql)?;
    // An answer that is not a count is an error, never a zero that passes.
    text.trim().parse().map_err(|_| StackError::Command {
        command: sql.to_owned(),
        detail: format!("expected a count, got {text:?}"),
    })
}

/// Runs every check against the stack as it is now.
pub fn check(stack: &Stack) -> Result<OracleReport> {
    let mut report = OracleReport::default();
    for model in &models() {
        let expected = stack.psql(WRITE_DB, &model.expected)?;
        let actual = stack.psql(READ_DB, model.actual)?;
        compare(model, &expected, &actual, &mut report);
    }

    // Both outboxes: the order service's and the inventory's.
    let mut committed: HashSet<String> = lines(&stack.psql(WRITE_DB, "SELECT id FROM outbox")?)
        .into_iter()
        .map(str::to_owned)
        .collect();
    committed.extend(
        lines(&stack.psql(INVENTORY_DB, "SELECT id FROM outbox")?)
            .into_iter()
            .map(str::to_owned),
    );
    let applied: Vec<String> = lines(&stack.psql(READ_DB, "SELECT event_id FROM inbox")?)
        .into_iter()
        .map(str::to_owned)
        .collect();
    report.events_committed = committed.len();
    report.events_applied = applied.len();
    let applied_set: HashSet<&String> = applied.iter().collect();
    let mut missing: Vec<&String> = committed
        .iter()
        .filter(|id| !applied_set.contains(id))
        .collect();
    missing.sort();
    report.missing_count = missing.len();
    report.missing = missing.into_iter().take(SHOWN).cloned().collect();

    let read_side = stack.psql(
        READ_DB,
        "SELECT event_id FROM inbox UNION ALL SELECT event_id FROM parked_events \
         UNION ALL SELECT event_id FROM dead_letters WHERE event_id IS NOT NULL",
    )?;
    report.unknown_in_read_db = lines(&read_side)
        .into_iter()
        .filter(|id| !committed.contains(*id))
        .take(SHOWN)
        .map(str::to_owned)
        .collect();
    let on_broker = stack.broker_event_ids()?;
    let distinct: HashSet<&String> = on_broker.iter().collect();
    report.broker_duplicates = on_broker.len() - distinct.len();
    report.broker_records = on_broker.len();
    // Every committed event still in the outbox was published: a broker check
    // that read nothing (or too little) fails here instead of passing quietly.
    report.missing_on_broker = committed
        .iter()
        .filter(|id| !distinct.contains(*id))
        .count();
    report.unknown_on_broker = distinct
        .into_iter()
        .filter(|id| !committed.contains(*id))
        .take(SHOWN)
        .cloned()
        .collect();

    // Versions: the write side's count and maximum per aggregate against the inbox's.
    let versions_sql =
        "SELECT aggregate_type, aggregate_id, count(*), max(aggregate_version) FROM outbox GROUP BY 1, 2";
    let written = format!(
        "{}\n{}",
        stack.psql(WRITE_DB, versions_sql)?,
        stack.psql(INVENTORY_DB, versions_sql)?
    );
    let read = stack.psql(
        READ_DB,
        "SELECT i.aggregate_type, i.aggregate_id, count(*), count(DISTINCT i.aggregate_version), \
           min(i.aggregate_version), max(i.aggregate_version), max(v.version) \
         FROM inbox i LEFT JOIN aggregate_versions v \
           ON v.aggregate_type = i.aggregate_type AND v.aggregate_id = i.aggregate_id \
         GROUP BY 1, 2",
    )?;
    let read: BTreeMap<String, String> = lines(&read)
        .into_iter()
        .map(|r| {
            (
                key_of(r, 2),
                r.split('|').skip(2).collect::<Vec<_>>().join("|"),
            )
        })
        .collect();
    for row in lines(&written) {
        let key = key_of(row, 2);
        let fields: Vec<&str> = row.split('|').collect();
        let n = fields.get(3).copied().unwrap_or("?");
        // count, distinct, min, max (inbox), version (aggregate_versions)
        let want = format!("{n}|{n}|1|{n}|{n}");
        match read.get(&key) {
            Some(got) if *got == want => {}
            got => {
                if report.version_gaps.len() < SHOWN {
                    report.version_gaps.push(format!(
                        "{key}: write side has versions 1..{n}; applied (count|distinct|min|max|recorded) {}",
                        got.map_or("nothing", String::as_str)
                    ));
                }
            }
        }
    }
    report.inversions = count(
        stack,
        READ_DB,
        "SELECT count(*) FROM (SELECT applied_at < lag(applied_at) OVER \
           (PARTITION BY aggregate_type, aggregate_id ORDER BY aggregate_version) AS inverted \
         FROM inbox) t WHERE inverted",
    )?;
    report.dead_letters = count(stack, READ_DB, "SELECT count(*) FROM dead_letters")?;
    report.parked = count(stack, READ_DB, "SELECT count(*) FROM parked_events")?;
    saga::check(stack, &mut report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_compared_by_key_and_every_difference_is_named() {
        let model = Model {
            name: "m",
            key_columns: 1,
            expected: String::new(),
            actual: "",
        };
        let mut report = OracleReport::default();
        compare(&model, "a|1\nb|2\nc|3\n", "a|1\nb|5\nd|4\n", &mut report);
        assert_eq!(report.row_diffs["m"], 3);
        let keys: Vec<&str> = report
            .row_diff_examples
            .iter()
            .map(|d| d.key.as_str())
            .collect();
        assert_eq!(keys, ["b", "c", "d"]);
        assert_eq!(report.row_diff_examples[1].actual, None);
        assert_eq!(report.row_diff_examples[2].expected, None);
        assert!(!report.passed());
    }
}

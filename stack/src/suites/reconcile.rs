//! `stack reconcile`: the write side against the read side, event by event.
//!
//! The write databases are the truth: the order service's and the
//! inventory's, each with its outbox. Read from them every outbox event committed
//! more than `settle` ago and each aggregate's latest version; read from the
//! read database what the projector applied (inbox), holds back (parked
//! events) or gave up on (dead letters). Then report:
//! - **missing**: committed, settled, and neither applied, parked nor
//!   dead-lettered: lost between the outbox and the projector (e.g. a
//!   replication slot that was dropped and re-created);
//! - **unknown**: applied but never committed by the write side;
//! - **behind**: aggregates whose applied version differs from the write side's.
//!
//! `--republish` deletes and re-inserts the missing outbox rows, unchanged, in
//! one transaction: Debezium publishes them again with the same event ids, so
//! the inbox still gives them exactly one effect.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use outbox_events::{
    CUSTOMER_AGGREGATE, INVENTORY_AGGREGATES, ORDER_AGGREGATE, RESERVATION_AGGREGATE,
    STOCK_AGGREGATE,
};

use crate::{Result, Stack, INVENTORY_DB, READ_DB, WRITE_DB};

/// What differs between the two sides.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub committed: usize,
    pub applied: usize,
    /// (event id, aggregate type, aggregate id, version) committed but never arrived.
    pub missing: Vec<(String, String, String, i64)>,
    /// Event ids applied that the write side never committed.
    pub unknown: Vec<String>,
    /// (aggregate type, aggregate id, write version, read version).
    pub behind: Vec<(String, String, i64, i64)>,
    /// The connector's replication slot when the check ran (none: no slot).
    pub slot: Option<crate::postgres::SlotState>,
    /// The relay when the check ran: `Ok` when the connector and every task
    /// run, else why not (a task's state and trace, or Connect unreachable).
    #[serde(skip)]
    pub relay: Option<std::result::Result<String, String>>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unknown.is_empty() && self.behind.is_empty()
    }
}

fn rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').collect())
}

/// The databases whose outboxes feed the read side, and each one's latest
/// aggregate versions (its own state rows, not the outbox, which retention
/// prunes), given the settle interval.
fn sources(settle_seconds: u64) -> [(&'static str, String); 2] {
    let settled = format!("updated_at < now() - interval '{settle_seconds} seconds'");
    [
        (
            WRITE_DB,
            format!(
                "SELECT '{ORDER_AGGREGATE}', order_id::text, version FROM orders WHERE {settled} \
                 UNION ALL SELECT '{CUSTOMER_AGGREGATE}', customer_id, version FROM customers WHERE {settled}"
            ),
        ),
        (
            INVENTORY_DB,
            format!(
                "SELECT '{RESERVATION_AGGREGATE}', order_id::text, version FROM reservations WHERE {settled} \
                 UNION ALL SELECT '{STOCK_AGGREGATE}', sku, events FROM stock WHERE {settled} AND events > 0"
            ),
        ),
    ]
}

/// The database whose outbox holds events of `aggregate_type`.
fn source_of(aggregate_type: &str) -> &'static str {
    if INVENTORY_AGGREGATES.contains(&aggregate_type) {
        INVENTORY_DB
    } else {
        WRITE_DB
    }
}

/// Compares the sides; events younger than `settle_seconds` are still in flight.
/// Both outboxes (the order service's and the inventory's) against what the
/// projector applied.
pub fn run(stack: &Stack, settle_seconds: u64) -> Result<Report> {
    let mut outbox = String::new();
    let mut latest = String::new();
    let mut all_ids: HashSet<String> = HashSet::new();
    // Per outbox, the time of its oldest row: events older than that were
    // pruned there (retention), so an applied event from before it cannot be
    // judged "unknown".
    let mut horizons: Vec<(&str, String)> = Vec::new();
    for (db, versions) in sources(settle_seconds) {
        outbox += &stack.psql(
            db,
            &format!(
                "SELECT id, aggregate_type, aggregate_id, aggregate_version FROM outbox \
                 WHERE occurred_at < now() - interval '{settle_seconds} seconds'"
            ),
        )?;
        outbox.push('\n');
        latest += &stack.psql(db, &versions)?;
        latest.push('\n');
        all_ids.extend(
            stack
                .psql(db, "SELECT id FROM outbox")?
                .lines()
                .map(str::to_owned),
        );
        let h = stack.psql(db, "SELECT coalesce(min(occurred_at), now()) FROM outbox")?;
        horizons.push((db, h.trim().to_owned()));
    }
    let horizon_of = |db: &str| {
        horizons
            .iter()
            .find(|(d, _)| *d == db)
            .map(|(_, h)| h.clone())
            .unwrap_or_default()
    };
    let inventory_types = INVENTORY_AGGREGATES
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let seen = stack.psql(
        READ_DB,
        &format!(
            "SELECT event_id, CASE WHEN occurred_at >= CASE WHEN aggregate_type IN ({inventory_types}) \
               THEN '{}'::timestamptz ELSE '{}'::timestamptz END \
               THEN 'applied' ELSE 'applied-before-horizon' END FROM inbox \
             UNION ALL SELECT event_id, 'parked' FROM parked_events \
             UNION ALL SELECT event_id, 'dead' FROM dead_letters WHERE event_id IS NOT NULL",
            horizon_of(INVENTORY_DB),
            horizon_of(WRITE_DB)
        ),
    )?;
    let versions: HashMap<(String, String), i64> = rows(&stack.psql(
        READ_DB,
        "SELECT aggregate_type, aggregate_id, version FROM aggregate_versions",
    )?)
    .filter(|r| r.len() == 3)
    .map(|r| {
        (
            (r[0].to_owned(), r[1].to_owned()),
            r[2].parse().unwrap_or(0),
        )
    })
    .collect();

    let mut report = Report::default();
    let mut arrived = HashSet::new();
    for r in rows(&seen).filter(|r| r.len() == 2) {
        if r[1].starts_with("applied") {
            report.applied += 1;
            if r[1] == "applied" && !all_ids.contains(r[0]) {
                report.unknown.push(r[0].to_owned());
            }
        }
        arrived.insert(r[0].to_owned());
    }
    for r in rows(&outbox).filter(|r| r.len() == 4) {
        report.committed += 1;
        if !arrived.contains(r[0]) {
            report.missing.push((
                r[0].to_owned(),
                r[1].to_owned(),
                r[2].to_owned(),
                r[3].parse().unwrap_or(0),
            ));
        }
    }
    for r in rows(&latest).filter(|r| r.len() == 3) {
        let write: i64 = r[2].parse().unwrap_or(0);
        let read = versions
            .get(&(r[0].to_owned(), r[1].to_owned()))
            .copied()
            .unwrap_or(0);
        if read != write {
            report
                .behind
                .push((r[0].to_owned(), r[1].to_owned(), write, read));
        }
    }
    report
        .missing
        .sort_by(|a, b| (&a.1, &a.2, a.3).cmp(&(&b.1, &b.2, b.3)));
    report.behind.sort();
    report.unknown.sort();
    report.slot = crate::postgres::slot(stack)?;
    report.relay = Some(crate::status::health(stack, crate::Component::Connect));
    Ok(report)
}

/// The report as Prometheus text (node_exporter's textfile collector format),
/// so a cron job's result is a metric with alerts on it.
pub fn metrics_text(report: &Report, now_unix: u64) -> String {
    let gauge = |name: &str, help: &str, value: String| {
        format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n")
    };
    [
        gauge(
            "outbox_reconcile_missing_events",
            "Committed events older than the settle time that no projection applied, parked or dead-lettered.",
            report.missing.len().to_string(),
        ),
        gauge(
            "outbox_reconcile_unknown_events",
            "Applied events the write side never committed.",
            report.unknown.len().to_string(),
        ),
        gauge(
            "outbox_reconcile_aggregates_behind",
            "Aggregates whose applied version differs from the write model's.",
            report.behind.len().to_string(),
        ),
        gauge(
            "outbox_reconcile_last_run_timestamp_seconds",
            "When the last reconciliation finished.",
            now_unix.to_string(),
        ),
        gauge(
            "outbox_slot_lost",
            "1 when the connector's replication slot is missing or invalidated (WAL it needed was removed).",
            u8::from(report.slot.as_ref().is_none_or(|s| s.lost())).to_string(),
        ),
        report
            .slot
            .as_ref()
            .map(|slot| {
                [
                    gauge(
                        "outbox_slot_active",
                        "1 while the connector is attached to its replication slot.",
                        u8::from(slot.active).to_string(),
                    ),
                    gauge(
                        "outbox_slot_lag_bytes",
                        "WAL the slot retains: the current WAL position minus the connector's confirmed one.",
                        slot.lag_bytes.to_string(),
                    ),
                ]
                .concat()
            })
            .unwrap_or_default(),
        // Absent when the check did not look (a report built without a stack).
        report
            .relay
            .as_ref()
            .map(|relay| {
                gauge(
                    "outbox_relay_running",
                    "1 when Connect answered with the connector and every task RUNNING.",
                    u8::from(relay.is_ok()).to_string(),
                )
            })
            .unwrap_or_default(),
        // Absent without a max_slot_wal_keep_size (or without a slot): no headroom to watch.
        report
            .slot
            .as_ref()
            .and_then(|s| s.safe_wal_bytes)
            .map(|bytes| {
                gauge(
                    "outbox_slot_safe_wal_bytes",
                    "WAL that may still be written before max_slot_wal_keep_size invalidates the slot.",
                    bytes.to_string(),
                )
            })
            .unwrap_or_default(),
    ]
    .concat()
}

/// Re-publishes the missing events: the same rows deleted and inserted again
/// in one transaction, so Debezium sends them again (same event ids).
pub fn republish(stack: &Stack, missing: &[(String, String, String, i64)]) -> Result<usize> {
    if missing.is_empty() {
        return Ok(0);
    }
    for db in [WRITE_DB, INVENTORY_DB] {
        let ids: Vec<String> = missing
            .iter()
            .filter(|m| source_of(&m.1) == db)
            .map(|m| format!("'{}'", m.0))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let ids = ids.join(",");
        stack.psql(
            db,
            &format!(
                "BEGIN; \
                 CREATE TEMP TABLE republish ON COMMIT DROP AS SELECT * FROM outbox WHERE id IN ({ids}); \
                 DELETE FROM outbox WHERE id IN ({ids}); \
                 INSERT INTO outbox SELECT * FROM republish ORDER BY aggregate_type, aggregate_id, aggregate_version; \
                 COMMIT;"
            ),
        )?;
    }
    Ok(missing.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_file_has_one_gauge_per_kind_of_difference() {
        let report = Report {
            missing: vec![("e".into(), "order".into(), "o".into(), 2)],
            behind: vec![("order".into(), "o".into(), 2, 1)],
            slot: Some(crate::postgres::SlotState {
                active: true,
                lag_bytes: 0,
                wal_status: "reserved".into(),
                safe_wal_bytes: Some(4 << 30),
            }),
            relay: Some(Err("connector RUNNING, tasks [FAILED]".into())),
            ..Report::default()
        };
        let text = metrics_text(&report, 1_700_000_000);
        assert!(text.contains("\noutbox_slot_active 1\n"));
        assert!(text.contains("\noutbox_slot_lag_bytes 0\n"));
        assert!(text.contains("\noutbox_relay_running 0\n"));
        assert!(text.contains("\noutbox_slot_lost 0\n"));
        assert!(text.contains("\noutbox_slot_safe_wal_bytes 4294967296\n"));
        assert!(text.contains("\noutbox_reconcile_missing_events 1\n"));
        assert!(text.contains("\noutbox_reconcile_unknown_events 0\n"));
        assert!(text.contains("\noutbox_reconcile_aggregates_behind 1\n"));
        assert!(text.contains("\noutbox_reconcile_last_run_timestamp_seconds 1700000000\n"));
        assert_eq!(text.matches("# TYPE ").count(), 9);
    }
}

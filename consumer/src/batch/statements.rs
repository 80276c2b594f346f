//! The statements of the core's four tables (`inbox`, `aggregate_versions`,
//! `parked_events`, `dead_letters`) for what the policy decided, and their
//! pipelined execution with row-count checks.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use outbox_events::header;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::policy::{Aggregate, AggregateKey, Candidate, Decided};
use super::{Failure, Outcome};
use crate::handler::{p, Handler, Step};
use crate::operator::DeadLetterStatus;
use crate::record::{RawHeader, Record};

/// Every statement of a decided batch, in the order they must run: the
/// handler's locks and steps, the inbox, released parked events, the versions
/// reached, the new gaps of parked events, and the newly parked events
/// (counted in `outcome`).
pub(super) fn for_decided<H: Handler>(
    handler: &H,
    decided: Decided,
    outcome: &mut Outcome,
) -> Vec<Step> {
    let Decided {
        aggregates,
        applied,
        mut applied_steps,
    } = decided;
    let mut all = Vec::new();
    // The handler's locks first (taken before any of its statements).
    let envelopes: Vec<&outbox_events::Envelope> = applied.iter().map(|c| &c.envelope).collect();
    all.extend(handler.locks(&envelopes));
    all.append(&mut applied_steps);
    if !applied.is_empty() {
        all.push(inbox_insert(&applied));
        let parked_done: Vec<Uuid> = applied
            .iter()
            .filter(|c| c.parked)
            .map(|c| c.envelope.event_id)
            .collect();
        if !parked_done.is_empty() {
            let n = parked_done.len() as u64;
            all.push(
                Step::new(
                    "DELETE FROM parked_events WHERE event_id = ANY($1)",
                    vec![p(parked_done)],
                )
                .expect(n, "delete released events from parked_events"),
            );
        }
    }
    version_updates(&aggregates, &mut all);
    // Parked events of an aggregate that moved on wait for its new next
    // version, not the one they first waited for (one statement per batch).
    let moved: Vec<(&AggregateKey, i64)> = aggregates
        .iter()
        .filter(|(_, a)| a.applied > a.start)
        .map(|(k, a)| (k, a.applied + 1))
        .collect();
    if !moved.is_empty() {
        all.push(Step::new(
            "UPDATE parked_events p SET waiting_for = u.next \
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(aggregate_type, aggregate_id, next) \
             WHERE p.aggregate_type = u.aggregate_type AND p.aggregate_id = u.aggregate_id \
               AND p.waiting_for <> u.next",
            vec![
                p(moved.iter().map(|(k, _)| k.0.clone()).collect::<Vec<_>>()),
                p(moved.iter().map(|(k, _)| k.1.clone()).collect::<Vec<_>>()),
                p(moved.iter().map(|(_, n)| *n).collect::<Vec<_>>()),
            ],
        ));
    }
    for (_, agg) in aggregates {
        for (_, candidate) in agg.waiting {
            if !candidate.parked {
                park(&mut all, &candidate, agg.applied);
                outcome.parked += 1;
            }
        }
    }
    all
}

fn inbox_insert(applied: &[Candidate]) -> Step {
    let n = applied.len() as u64;
    let column = |f: &dyn Fn(&Candidate) -> String| applied.iter().map(f).collect::<Vec<String>>();
    Step::new(
        "INSERT INTO inbox (event_id, event_type, aggregate_type, aggregate_id, aggregate_version, topic, kafka_partition, kafka_offset, occurred_at) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::int[], $8::bigint[], $9::timestamptz[]) \
         ON CONFLICT (event_id) DO NOTHING",
        vec![
            p(applied.iter().map(|c| c.envelope.event_id).collect::<Vec<_>>()),
            p(column(&|c| c.envelope.event.event_type().to_owned())),
            p(column(&|c| c.envelope.aggregate_type.clone())),
            p(column(&|c| c.envelope.aggregate_id.clone())),
            p(applied.iter().map(|c| c.envelope.aggregate_version).collect::<Vec<_>>()),
            p(column(&|c| c.record.topic.clone())),
            p(applied.iter().map(|c| c.record.partition).collect::<Vec<_>>()),
            p(applied.iter().map(|c| c.record.offset).collect::<Vec<_>>()),
            p(applied.iter().map(|c| c.envelope.occurred_at).collect::<Vec<_>>()),
        ],
    )
    .expect(n, "claim the events in the inbox (another instance applied some)")
}

/// Moves each aggregate from the version the batch read to the one it reached,
/// guarded by the former: a concurrent instance's move makes the count fail.
fn version_updates(aggregates: &HashMap<AggregateKey, Aggregate>, out: &mut Vec<Step>) {
    let moved = aggregates.iter().filter(|(_, a)| a.applied != a.start);
    let (existing, new): (Vec<_>, Vec<_>) = moved.partition(|(_, a)| a.start > 0);
    if !existing.is_empty() {
        let n = existing.len() as u64;
        out.push(
            Step::new(
                "UPDATE aggregate_versions a SET version = u.v \
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(t, i, v, s) \
                 WHERE a.aggregate_type = u.t AND a.aggregate_id = u.i AND a.version = u.s",
                vec![
                    p(existing
                        .iter()
                        .map(|(k, _)| k.0.clone())
                        .collect::<Vec<_>>()),
                    p(existing
                        .iter()
                        .map(|(k, _)| k.1.clone())
                        .collect::<Vec<_>>()),
                    p(existing.iter().map(|(_, a)| a.applied).collect::<Vec<_>>()),
                    p(existing.iter().map(|(_, a)| a.start).collect::<Vec<_>>()),
                ],
            )
            .expect(
                n,
                "advance aggregate_versions (another instance moved them)",
            ),
        );
    }
    if !new.is_empty() {
        let n = new.len() as u64;
        out.push(
            Step::new(
                "INSERT INTO aggregate_versions (aggregate_type, aggregate_id, version) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
                vec![
                    p(new.iter().map(|(k, _)| k.0.clone()).collect::<Vec<_>>()),
                    p(new.iter().map(|(k, _)| k.1.clone()).collect::<Vec<_>>()),
                    p(new.iter().map(|(_, a)| a.applied).collect::<Vec<_>>()),
                ],
            )
            .expect(n, "insert into aggregate_versions (another instance did)"),
        );
    }
}

fn park(out: &mut Vec<Step>, c: &Candidate, applied: i64) {
    let (names, values) = split_headers(&c.record.headers);
    tracing::info!(
        event_id = %c.envelope.event_id, aggregate_type = %c.envelope.aggregate_type, aggregate_id = %c.envelope.aggregate_id,
        version = c.envelope.aggregate_version, applied, "event parked behind a version gap"
    );
    out.push(Step::new(
        "INSERT INTO parked_events (event_id, aggregate_type, aggregate_id, aggregate_version, event_type, topic, kafka_partition, \
         kafka_offset, record_key, header_names, header_values, record_value, waiting_for) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (event_id) DO NOTHING",
        vec![
            p(c.envelope.event_id),
            p(c.envelope.aggregate_type.clone()),
            p(c.envelope.aggregate_id.clone()),
            p(c.envelope.aggregate_version),
            p(c.envelope.event.event_type().to_owned()),
            p(c.record.topic.clone()),
            p(c.record.partition),
            p(c.record.offset),
            p(c.record.key.clone()),
            p(names),
            p(values),
            p(c.record.payload.clone()),
            p(applied + 1),
        ],
    ));
}

fn split_headers(headers: &[RawHeader]) -> (Vec<Vec<u8>>, Vec<Option<Vec<u8>>>) {
    headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone()))
        .unzip()
}

/// Text that PostgreSQL can store: valid UTF-8 without NUL characters.
fn storable(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.contains('\0'))
        .map(str::to_owned)
}

/// Stores `record` exactly, with what can be read off it and the reason.
pub(super) fn dead_letter(out: &mut Vec<Step>, record: &Record, reason: &str) {
    let (names, values) = split_headers(&record.headers);
    let text = |name: &str| record.header(name).and_then(|v| storable(v.as_bytes()));
    let aggregate_id = record
        .key
        .as_deref()
        .and_then(storable)
        .map(|k| k.trim_matches('"').to_owned());
    out.push(Step::new(
        "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, key_bytes, header_names, header_values, value_bytes, \
         event_id, event_type, aggregate_type, aggregate_id, aggregate_version, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (topic, kafka_partition, kafka_offset) DO UPDATE SET \
           reason = EXCLUDED.reason, attempts = dead_letters.attempts + 1, failed_at = now() \
         WHERE dead_letters.status = $14",
        vec![
            p(record.topic.clone()),
            p(record.partition),
            p(record.offset),
            p(record.key.clone()),
            p(names),
            p(values),
            p(record.payload.clone()),
            p(text(header::EVENT_ID).and_then(|i| Uuid::parse_str(&i).ok())),
            p(text(header::EVENT_TYPE)),
            p(storable(record.aggregate_type().as_bytes())),
            p(aggregate_id),
            p(text(header::AGGREGATE_VERSION).and_then(|v| v.parse::<i64>().ok())),
            p(reason.replace('\0', "\\0")),
            p(DeadLetterStatus::Open.as_str()),
        ],
    ));
}

/// Runs `steps` pipelined ([`service::pipeline`]), then checks the counts.
pub(super) async fn execute(tx: &Transaction<'_>, steps: &[Step]) -> Result<(), Failure> {
    if steps.is_empty() {
        return Ok(());
    }
    let mut sqls: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
    sqls.sort_unstable();
    sqls.dedup();
    // From the connection's cache; the misses are prepared pipelined.
    let prepared =
        futures::future::try_join_all(sqls.iter().map(|sql| tx.prepare_cached(sql))).await?;
    let statements: HashMap<&str, tokio_postgres::Statement> =
        sqls.into_iter().zip(prepared).collect();
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = steps
        .iter()
        .map(|s| service::pipeline::param_refs(&s.params))
        .collect();
    let batch: Vec<(&tokio_postgres::Statement, &[&(dyn ToSql + Sync)])> = steps
        .iter()
        .zip(&params)
        .map(|(step, params)| (&statements[step.sql.as_str()], params.as_slice()))
        .collect();
    let results = service::pipeline::execute_in_order(tx, &batch).await;
    let mut first_error = None;
    for (step, result) in steps.iter().zip(results) {
        match result {
            Ok(rows) => {
                if let Some(expected) = step.expect_rows {
                    if rows != expected && first_error.is_none() {
                        first_error = Some(Failure::Mismatch(format!(
                            "{}: {rows} rows, expected {expected}",
                            step.what
                        )));
                    }
                }
            }
            // Later statements fail only because the first aborted the transaction.
            Err(e) if first_error.is_none() => first_error = Some(Failure::Db(e)),
            Err(_) => {}
        }
    }
    first_error.map_or(Ok(()), Err)
}

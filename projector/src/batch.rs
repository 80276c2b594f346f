//! One step of the projector: apply a batch of records in one transaction.
//!
//! # Design
//! Four reads, pipelined, tell the batch everything it needs: which event ids
//! the inbox already holds, the last version applied per aggregate
//! (`aggregate_versions`), which of its events are parked already, and, only
//! for the aggregates whose next version it brings, the first
//! [`PARKED_WINDOW`] events parked behind that gap (a batch that cannot close
//! a gap reads none of what waits behind it). Then, in memory
//! and in record order, every event is classified by one policy for every
//! aggregate type:
//! - version <= applied: a redelivery or stale copy, skipped (a duplicate);
//! - version = applied + 1: applied, and then any parked successors, in order;
//! - version > applied + 1: parked (kept byte for byte in `parked_events`) until
//!   the missing version arrives; later events of that aggregate park behind it.
//!
//! The read models turn each applied event into statements ([`crate::read_model`]);
//! with the inbox rows, the version updates, parked and dead-lettered records,
//! they are sent pipelined: a batch of a thousand events costs a few round
//! trips. Every row count that matters is checked afterwards.
//!
//! # Failure isolation
//! The fast path runs inside a savepoint. If the database refuses something
//! for data reasons (class 22/23/54: a value out of range, a NUL character) or
//! a count check fails, the savepoint is rolled back and the batch runs again
//! record by record, each in its own savepoint: the record at fault goes to
//! `dead_letters` with the reason, the rest applies. Undecodable records are
//! dead-lettered up front. Only infrastructure failures (and bugs such as a
//! missing table) leave this module, as [`BatchError`]: the caller retries the
//! same batch, which is safe because nothing was committed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use outbox_events::{header, Envelope};
use service::{DbError, ErrorClass};
use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;
use uuid::Uuid;

use crate::position::Checkpoint;
use crate::read_model::{self, p, Plan, Step};
use crate::record::{Decoder, RawHeader, Record};

/// What a committed batch did. The counts add up to the records given plus
/// the parked events that were released.
///
/// Two outcomes are equal when their counts are: the event times are detail.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Events now reflected in the read models (released parked events included).
    pub applied: usize,
    /// Redeliveries and stale copies (version already applied), skipped.
    pub duplicates: usize,
    /// Events that arrived after a gap in their aggregate's versions, now waiting.
    pub parked: usize,
    /// Records that could not be decoded or applied, now in `dead_letters`.
    pub dead_lettered: usize,
    /// Records below the partition's stored position: applied before (by this
    /// or another instance), skipped unread (see [`Checkpoint::fenced`]).
    pub stale: usize,
    /// When each applied event occurred (its `occurred_at`), for the
    /// commit-to-read-model latency: applied events only, never a duplicate,
    /// a parked event before its release or a dead letter.
    pub occurred: Vec<chrono::DateTime<chrono::Utc>>,
}

impl PartialEq for Outcome {
    fn eq(&self, o: &Self) -> bool {
        (
            self.applied,
            self.duplicates,
            self.parked,
            self.dead_lettered,
            self.stale,
        ) == (o.applied, o.duplicates, o.parked, o.dead_lettered, o.stale)
    }
}

impl Eq for Outcome {}

impl std::ops::AddAssign for Outcome {
    fn add_assign(&mut self, o: Self) {
        self.applied += o.applied;
        self.duplicates += o.duplicates;
        self.parked += o.parked;
        self.dead_lettered += o.dead_lettered;
        self.stale += o.stale;
        self.occurred.extend(o.occurred);
    }
}

/// The batch could not be applied for a reason outside the records: nothing
/// was committed; retry the same batch later.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BatchError(#[from] pub DbError);

impl From<tokio_postgres::Error> for BatchError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self(DbError(e))
    }
}

impl BatchError {
    pub fn class(&self) -> ErrorClass {
        self.0.class()
    }
}

/// Why one attempt did not go through.
enum Failure {
    Db(tokio_postgres::Error),
    /// A row count check failed: the read side disagrees with the event.
    Mismatch(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Db(e) => write!(f, "read database refused it: {}", service::show_db_error(e)),
            Failure::Mismatch(m) => f.write_str(m),
        }
    }
}

impl Failure {
    /// Whether the records (not the database) are at fault.
    fn is_data(&self) -> bool {
        match self {
            Failure::Db(e) => service::classify(e) == ErrorClass::Data,
            Failure::Mismatch(_) => true,
        }
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(e)
    }
}

/// Applies `records` in one read-database transaction, together with the
/// positions they advance and the run's tallies ([`crate::position`]).
pub async fn apply_batch(
    client: &mut tokio_postgres::Client,
    decoder: &Decoder,
    records: &[Record],
    checkpoint: &Checkpoint,
) -> Result<Outcome, BatchError> {
    let mut tx = client.transaction().await?;
    // Both first, pipelined: the swap lock waits only while a rebuild swaps
    // tables in; the fence locks the batch's position rows and reads them.
    // The lock goes as a simple query, which the server runs whole before it
    // reads the next message: an extended-protocol statement would be parsed
    // first, and the fence's Parse (which already takes a table lock) could
    // overtake the advisory lock's Execute — then a batch holding
    // `consumer_positions` waits for the rebuild's swap, which waits for that
    // table: a deadlock (seen in the rebuild test).
    let swap = async {
        if checkpoint.yields_to_swap {
            tx.batch_execute(&format!(
                "SELECT pg_advisory_xact_lock_shared({})",
                crate::position::SWAP_LOCK
            ))
            .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let fence = async {
        if checkpoint.fenced {
            crate::position::fence(&tx, checkpoint, records).await
        } else {
            Ok(Default::default())
        }
    };
    let ((), stored) = futures::try_join!(swap, fence)?;
    let fresh: Vec<Record> = records
        .iter()
        .filter(|r| {
            stored
                .get(&(r.topic.clone(), r.partition))
                .is_none_or(|next| r.offset >= *next)
        })
        .cloned()
        .collect();
    let mut outcome = apply_in(&mut tx, decoder, &fresh).await?;
    outcome.stale = records.len() - fresh.len();
    crate::position::record(&tx, checkpoint, records, &outcome).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Applies `records` inside the caller's transaction (see the module docs).
pub async fn apply_in(
    tx: &mut Transaction<'_>,
    decoder: &Decoder,
    records: &[Record],
) -> Result<Outcome, BatchError> {
    // Twice: a count check can fail because another instance committed the
    // same events meanwhile (a rebalance); the second run sees its work.
    for _ in 0..2 {
        let sp = tx.savepoint("batch").await?;
        match run(&sp, decoder, records, true).await {
            Ok((mut outcome, more)) => {
                sp.commit().await?;
                for (aggregate_type, aggregate_id) in more {
                    outcome += release_parked(tx, decoder, &aggregate_type, &aggregate_id).await?;
                }
                return Ok(outcome);
            }
            Err(Failure::Db(e)) if service::classify(&e) != ErrorClass::Data => {
                return Err(e.into())
            }
            Err(Failure::Mismatch(reason)) => {
                tracing::debug!(%reason, "batch check failed; running it again");
                sp.rollback().await?;
            }
            Err(failure) => {
                tracing::info!(reason = %failure, records = records.len(), "batch refused; applying record by record");
                sp.rollback().await?;
                break;
            }
        }
    }
    let mut total = Outcome::default();
    for record in records {
        let outcome = apply_one(tx, decoder, record).await?;
        let applied = outcome.applied;
        total += outcome;
        if applied > 0 {
            if let Ok(envelope) = decoder.decode(record) {
                total += release_parked(
                    tx,
                    decoder,
                    &envelope.aggregate_type,
                    &envelope.aggregate_id,
                )
                .await?;
            }
        }
    }
    Ok(total)
}

/// Applies one record in its own savepoint; a record at fault is dead-lettered.
async fn apply_one(
    tx: &mut Transaction<'_>,
    decoder: &Decoder,
    record: &Record,
) -> Result<Outcome, BatchError> {
    let mut last = None;
    for _ in 0..2 {
        let sp = tx.savepoint("record").await?;
        match run(&sp, decoder, std::slice::from_ref(record), false).await {
            Ok((outcome, _)) => {
                sp.commit().await?;
                return Ok(outcome);
            }
            Err(failure) if !failure.is_data() => {
                let Failure::Db(e) = failure else {
                    unreachable!("mismatches are data failures")
                };
                return Err(e.into());
            }
            Err(failure) => {
                sp.rollback().await?;
                let retry = matches!(failure, Failure::Mismatch(_));
                last = Some(failure);
                if !retry {
                    break;
                }
            }
        }
    }
    let reason = last.map(|f| f.to_string()).unwrap_or_default();
    tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, %reason, "record dead-lettered");
    let mut steps = Vec::new();
    dead_letter(&mut steps, record, &reason);
    if let Some(id) = record
        .header(header::EVENT_ID)
        .and_then(|i| Uuid::parse_str(i).ok())
    {
        steps.push(Step::new(
            "DELETE FROM parked_events WHERE event_id = $1",
            vec![p(id)],
        ));
    }
    execute(tx, &steps).await.map_err(|f| match f {
        Failure::Db(e) => BatchError::from(e),
        Failure::Mismatch(m) => unreachable!("dead-lettering checks no counts: {m}"),
    })?;
    Ok(Outcome {
        dead_lettered: 1,
        ..Outcome::default()
    })
}

/// Applies the parked events of one aggregate that are now next in line, one
/// by one; one that fails is dead-lettered and the rest stay parked behind it.
pub async fn release_parked(
    tx: &mut Transaction<'_>,
    decoder: &Decoder,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Outcome, BatchError> {
    let mut total = Outcome::default();
    loop {
        let Some(row) = tx
            .query_opt(
                &format!(
                    "SELECT {PARKED_COLUMNS} FROM parked_events p WHERE p.aggregate_type = $1 AND p.aggregate_id = $2 \
                     AND p.aggregate_version = coalesce((SELECT version FROM aggregate_versions a \
                       WHERE a.aggregate_type = $1 AND a.aggregate_id = $2), 0) + 1 \
                     ORDER BY p.parked_at LIMIT 1"
                ),
                &[&aggregate_type, &aggregate_id],
            )
            .await?
        else {
            return Ok(total);
        };
        let outcome = apply_one(tx, decoder, &parked_record(&row)).await?;
        let applied = outcome.applied;
        total += outcome;
        if applied == 0 {
            return Ok(total);
        }
    }
}

/// The columns [`parked_record`] reads.
pub const PARKED_COLUMNS: &str =
    "p.event_id, p.topic, p.kafka_partition, p.kafka_offset, p.record_key, p.header_names, p.header_values, p.record_value";

/// Rebuilds the record of a `parked_events` row selected with [`PARKED_COLUMNS`].
pub fn parked_record(row: &tokio_postgres::Row) -> Record {
    stored_record(row, 1)
}

/// Rebuilds a record stored as (topic, partition, offset, key, header names,
/// header values, value) starting at column `first`.
pub fn stored_record(row: &tokio_postgres::Row, first: usize) -> Record {
    let names: Vec<Vec<u8>> = row.get(first + 4);
    let values: Vec<Option<Vec<u8>>> = row.get(first + 5);
    Record {
        topic: row.get(first),
        partition: row.get(first + 1),
        offset: row.get(first + 2),
        key: row.get(first + 3),
        headers: names
            .into_iter()
            .zip(values)
            .map(|(name, value)| RawHeader { name, value })
            .collect(),
        payload: row.get(first + 6),
    }
}

/// A decoded event on its way through [`run`].
struct Candidate {
    record: Record,
    envelope: Envelope,
    /// It has a row in `parked_events` to delete once applied.
    parked: bool,
}

type AggregateKey = (String, String);

/// Per aggregate: the version before the batch, the version reached, waiting events.
struct Aggregate {
    start: i64,
    applied: i64,
    waiting: BTreeMap<i64, Candidate>,
}

/// One attempt at `records` (see the module docs); `release` lets parked
/// events of the database apply when their turn comes. Also returns the
/// aggregates whose parked events filled the window read (more may wait:
/// see [`PARKED_WINDOW`]).
async fn run(
    tx: &Transaction<'_>,
    decoder: &Decoder,
    records: &[Record],
    release: bool,
) -> Result<(Outcome, Vec<AggregateKey>), Failure> {
    let mut outcome = Outcome::default();
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    let mut fresh = Vec::new();
    for record in records {
        match decoder.decode(record) {
            Ok(envelope) if seen.insert(envelope.event_id) => fresh.push((record, envelope)),
            Ok(_) => outcome.duplicates += 1,
            Err(error) => {
                tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, %error, "undecodable record dead-lettered");
                dead_letter(&mut steps, record, &error.to_string());
                outcome.dead_lettered += 1;
            }
        }
    }

    let window = if release { PARKED_WINDOW } else { 0 };
    let Lookup {
        in_inbox,
        versions,
        parked_ids,
        releasable,
    } = lookup(tx, &fresh, window).await?;

    let mut db_waiting: HashMap<AggregateKey, BTreeMap<i64, Candidate>> = HashMap::new();
    let mut read_per_aggregate: HashMap<AggregateKey, i64> = HashMap::new();
    for row in &releasable {
        let record = parked_record(row);
        match decoder.decode(&record) {
            Ok(envelope) => {
                *read_per_aggregate
                    .entry((
                        envelope.aggregate_type.clone(),
                        envelope.aggregate_id.clone(),
                    ))
                    .or_default() += 1;
                db_waiting
                    .entry((
                        envelope.aggregate_type.clone(),
                        envelope.aggregate_id.clone(),
                    ))
                    .or_default()
                    .insert(
                        envelope.aggregate_version,
                        Candidate {
                            record,
                            envelope,
                            parked: true,
                        },
                    );
            }
            Err(error) => {
                dead_letter(&mut steps, &record, &error.to_string());
                steps.push(Step::new(
                    "DELETE FROM parked_events WHERE event_id = $1",
                    vec![p(row.get::<_, Uuid>(0))],
                ));
                outcome.dead_lettered += 1;
            }
        }
    }

    let mut aggregates: HashMap<AggregateKey, Aggregate> = HashMap::new();
    let mut applied: Vec<Candidate> = Vec::new();
    let mut applied_steps: Vec<Step> = Vec::new();
    for (record, envelope) in fresh {
        let key = (
            envelope.aggregate_type.clone(),
            envelope.aggregate_id.clone(),
        );
        let agg = aggregates.entry(key.clone()).or_insert_with(|| {
            let start = versions.get(&key).copied().unwrap_or(0);
            Aggregate {
                start,
                applied: start,
                waiting: if release {
                    db_waiting.remove(&key).unwrap_or_default()
                } else {
                    BTreeMap::new()
                },
            }
        });
        let version = envelope.aggregate_version;
        let id = envelope.event_id;
        let is_parked = parked_ids.contains(&id);
        if in_inbox.contains(&id) || version <= agg.applied {
            outcome.duplicates += 1;
        } else if version == agg.applied + 1 {
            agg.waiting.remove(&version);
            let candidate = Candidate {
                record: record.clone(),
                envelope,
                parked: is_parked,
            };
            if apply(
                candidate,
                agg,
                &mut applied,
                &mut applied_steps,
                &mut steps,
                &mut outcome,
            ) {
                while let Some(next) = agg.waiting.remove(&(agg.applied + 1)) {
                    if !apply(
                        next,
                        agg,
                        &mut applied,
                        &mut applied_steps,
                        &mut steps,
                        &mut outcome,
                    ) {
                        break;
                    }
                }
            }
        } else if is_parked
            || agg
                .waiting
                .get(&version)
                .is_some_and(|c| c.envelope.event_id == id)
        {
            outcome.duplicates += 1; // already waiting
        } else {
            agg.waiting.insert(
                version,
                Candidate {
                    record: record.clone(),
                    envelope,
                    parked: false,
                },
            );
        }
    }

    let mut all = Vec::new();
    let customers: Vec<String> = {
        let mut c: Vec<String> = applied
            .iter()
            .filter_map(|c| Plan::customer_locks(&c.envelope).map(str::to_owned))
            .collect();
        c.sort();
        c.dedup();
        c
    };
    if !customers.is_empty() {
        // Taken first and in one order, so two instances never deadlock on them.
        all.push(Step::new(
            "SELECT count(pg_advisory_xact_lock(h)) FROM \
             (SELECT DISTINCT hashtextextended(c, 0) AS h FROM unnest($1::text[]) AS c ORDER BY 1) s",
            vec![p(customers)],
        ));
    }
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
    all.append(&mut steps);
    execute(tx, &all).await?;
    let more = read_per_aggregate
        .into_iter()
        .filter(|(_, n)| window > 0 && *n >= window)
        .map(|(key, _)| key)
        .collect();
    Ok((outcome, more))
}

/// Plans `candidate` and, if the read models accept it, queues its steps and
/// advances the aggregate. A rejected event is dead-lettered and its aggregate
/// stays where it was, so its successors park behind it.
fn apply(
    candidate: Candidate,
    agg: &mut Aggregate,
    applied: &mut Vec<Candidate>,
    applied_steps: &mut Vec<Step>,
    steps: &mut Vec<Step>,
    outcome: &mut Outcome,
) -> bool {
    match read_model::plan(&candidate.envelope) {
        Ok(plan) => {
            applied_steps.extend(plan.steps);
            agg.applied = candidate.envelope.aggregate_version;
            outcome.applied += 1;
            outcome.occurred.push(candidate.envelope.occurred_at);
            applied.push(candidate);
            true
        }
        Err(reason) => {
            tracing::warn!(event_id = %candidate.envelope.event_id, event_type = candidate.envelope.event.event_type(), %reason, "event dead-lettered");
            dead_letter(steps, &candidate.record, &reason);
            if candidate.parked {
                steps.push(Step::new(
                    "DELETE FROM parked_events WHERE event_id = $1",
                    vec![p(candidate.envelope.event_id)],
                ));
            }
            outcome.dead_lettered += 1;
            false
        }
    }
}

/// At most this many parked events of one aggregate are read into a batch:
/// a long gap on a busy aggregate must not make every batch read (and hold
/// in memory) all that waits behind it. When a batch releases a full window,
/// [`release_parked`] takes the rest one at a time.
pub const PARKED_WINDOW: i64 = 100;

/// What a batch reads before it decides.
#[derive(Default)]
struct Lookup {
    /// Events of the batch already in the inbox.
    in_inbox: HashSet<Uuid>,
    /// The version applied so far, per aggregate (absent: none).
    versions: HashMap<AggregateKey, i64>,
    /// Events of the batch already parked (redeliveries of parked events).
    parked_ids: HashSet<Uuid>,
    /// The first [`PARKED_WINDOW`] parked events of each aggregate whose next
    /// version the batch brings: the only ones it can release. None for an
    /// aggregate still waiting for its gap, however many are parked.
    releasable: Vec<tokio_postgres::Row>,
}

/// The reads of a batch, pipelined; `window` bounds the releasable parked
/// events read per aggregate (0: none).
async fn lookup(
    tx: &Transaction<'_>,
    fresh: &[(&Record, Envelope)],
    window: i64,
) -> Result<Lookup, Failure> {
    if fresh.is_empty() {
        return Ok(Lookup::default());
    }
    let ids: Vec<Uuid> = fresh.iter().map(|(_, e)| e.event_id).collect();
    let types: Vec<&str> = fresh
        .iter()
        .map(|(_, e)| e.aggregate_type.as_str())
        .collect();
    let agg_ids: Vec<&str> = fresh.iter().map(|(_, e)| e.aggregate_id.as_str()).collect();
    let batch_versions: Vec<i64> = fresh.iter().map(|(_, e)| e.aggregate_version).collect();
    let releasable_sql = format!(
        "WITH next AS (SELECT DISTINCT b.t, b.i \
           FROM unnest($1::text[], $2::text[], $3::bigint[]) AS b(t, i, v) \
           LEFT JOIN aggregate_versions a ON a.aggregate_type = b.t AND a.aggregate_id = b.i \
           WHERE b.v = coalesce(a.version, 0) + 1) \
         SELECT {PARKED_COLUMNS} FROM next CROSS JOIN LATERAL \
           (SELECT * FROM parked_events q WHERE q.aggregate_type = next.t AND q.aggregate_id = next.i \
            ORDER BY q.aggregate_version LIMIT $4) p \
         ORDER BY p.aggregate_version"
    );
    let by_id: [&(dyn ToSql + Sync); 1] = [&ids];
    let by_aggregate: [&(dyn ToSql + Sync); 2] = [&types, &agg_ids];
    let by_version: [&(dyn ToSql + Sync); 4] = [&types, &agg_ids, &batch_versions, &window];
    let (inbox, versions, parked, releasable) = tokio::try_join!(
        tx.query("SELECT event_id FROM inbox WHERE event_id = ANY($1)", &by_id),
        tx.query(
            "SELECT aggregate_type, aggregate_id, version FROM aggregate_versions \
             WHERE (aggregate_type, aggregate_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            &by_aggregate,
        ),
        tx.query("SELECT event_id FROM parked_events WHERE event_id = ANY($1)", &by_id),
        tx.query(&releasable_sql, &by_version),
    )?;
    Ok(Lookup {
        in_inbox: inbox.iter().map(|r| r.get(0)).collect(),
        versions: versions
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect(),
        parked_ids: parked.iter().map(|r| r.get(0)).collect(),
        releasable,
    })
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
fn dead_letter(out: &mut Vec<Step>, record: &Record, reason: &str) {
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
         WHERE dead_letters.status = 'open'",
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
        ],
    ));
}

/// Runs `steps` pipelined ([`service::pipeline`]), then checks the counts.
async fn execute(tx: &Transaction<'_>, steps: &[Step]) -> Result<(), Failure> {
    if steps.is_empty() {
        return Ok(());
    }
    let mut sqls: Vec<&str> = steps.iter().map(|s| s.sql.as_str()).collect();
    sqls.sort_unstable();
    sqls.dedup();
    let prepared = futures::future::try_join_all(sqls.iter().map(|sql| tx.prepare(sql))).await?;
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

//! One step of a consumer: apply a batch of records in one transaction.
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
//! The service's [`Handler`] turns each applied event into statements (after
//! reading what it decides from in [`Handler::prepare`]); with the inbox rows, the version updates, parked and dead-lettered records,
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
//!
//! # Layout
//! - this module: the transaction around a batch ([`apply_batch`]: swap lock,
//!   position fence, positions), the fast path and its savepoint fallback
//!   ([`apply_in`], record by record), and the release of parked events
//!   ([`release_parked`]).
//! - `lookup`: the four pipelined reads ([`PARKED_WINDOW`]).
//! - `policy`: the per-aggregate version policy, in memory (apply, skip,
//!   park, release), the same for every aggregate type.
//! - `statements`: the statements of the core's four tables (`inbox`,
//!   `aggregate_versions`, `parked_events`, `dead_letters`) and their
//!   pipelined execution with row-count checks. Handlers bring their own
//!   statements and locks ([`crate::handler`]).
//! - `stored`: a record rebuilt from its stored bytes (parked events, dead
//!   letters).

use std::collections::{HashMap, HashSet};
use std::fmt;

use deadpool_postgres::Transaction;
use outbox_events::header;
use service::{DbError, ErrorClass};
use uuid::Uuid;

use crate::handler::{p, Handler, Step};
use crate::position::Checkpoint;
use crate::record::{Decoder, Record};

mod lookup;
mod policy;
mod statements;
mod stored;

pub use lookup::PARKED_WINDOW;
use policy::AggregateKey;
pub use stored::{parked_record, stored_record, PARKED_COLUMNS};

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
pub async fn apply_batch<H: Handler>(
    client: &mut crate::worker::Db,
    handler: &H,
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
    let mut outcome = apply_in(&mut tx, handler, decoder, &fresh).await?;
    outcome.stale = records.len() - fresh.len();
    crate::position::record(&tx, checkpoint, records, &outcome).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Applies `records` inside the caller's transaction (see the module docs).
pub async fn apply_in<H: Handler>(
    tx: &mut Transaction<'_>,
    handler: &H,
    decoder: &Decoder,
    records: &[Record],
) -> Result<Outcome, BatchError> {
    // Twice: a count check can fail because another instance committed the
    // same events meanwhile (a rebalance); the second run sees its work.
    for _ in 0..2 {
        let sp = tx.savepoint("batch").await?;
        match run(&sp, handler, decoder, records, true).await {
            Ok((mut outcome, more)) => {
                sp.commit().await?;
                for (aggregate_type, aggregate_id) in more {
                    outcome += release_parked(tx, handler, decoder, &aggregate_type, &aggregate_id)
                        .await?;
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
        let outcome = apply_one(tx, handler, decoder, record).await?;
        let applied = outcome.applied;
        total += outcome;
        if applied > 0 {
            if let Ok(envelope) = decoder.decode(record) {
                total += release_parked(
                    tx,
                    handler,
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
async fn apply_one<H: Handler>(
    tx: &mut Transaction<'_>,
    handler: &H,
    decoder: &Decoder,
    record: &Record,
) -> Result<Outcome, BatchError> {
    let mut last = None;
    for _ in 0..2 {
        let sp = tx.savepoint("record").await?;
        match run(&sp, handler, decoder, std::slice::from_ref(record), false).await {
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
    statements::dead_letter(&mut steps, record, &reason);
    if let Some(id) = record
        .header(header::EVENT_ID)
        .and_then(|i| Uuid::parse_str(i).ok())
    {
        steps.push(Step::new(
            "DELETE FROM parked_events WHERE event_id = $1",
            vec![p(id)],
        ));
    }
    statements::execute(tx, &steps).await.map_err(|f| match f {
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
pub async fn release_parked<H: Handler>(
    tx: &mut Transaction<'_>,
    handler: &H,
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
        let outcome = apply_one(tx, handler, decoder, &parked_record(&row)).await?;
        let applied = outcome.applied;
        total += outcome;
        if applied == 0 {
            return Ok(total);
        }
    }
}

/// One attempt at `records` (see the module docs); `release` lets parked
/// events of the database apply when their turn comes. Also returns the
/// aggregates whose parked events filled the window read (more may wait:
/// see [`PARKED_WINDOW`]).
async fn run<H: Handler>(
    tx: &Transaction<'_>,
    handler: &H,
    decoder: &Decoder,
    records: &[Record],
    release: bool,
) -> Result<(Outcome, Vec<AggregateKey>), Failure> {
    let mut outcome = Outcome::default();
    // Dead letters and the deletes that go with them, sent last.
    let mut steps = Vec::new();
    let mut seen = HashSet::new();
    let mut fresh = Vec::new();
    for record in records {
        match decoder.decode(record) {
            Ok(envelope) if seen.insert(envelope.event_id) => fresh.push((record, envelope)),
            Ok(_) => outcome.duplicates += 1,
            Err(error) => {
                tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, %error, "undecodable record dead-lettered");
                statements::dead_letter(&mut steps, record, &error.to_string());
                outcome.dead_lettered += 1;
            }
        }
    }
    let window = if release { PARKED_WINDOW } else { 0 };
    let lookup = lookup::lookup(tx, &fresh, window).await?;
    let releasable = policy::releasable(decoder, &lookup.releasable, &mut steps, &mut outcome);
    let more = releasable
        .read
        .iter()
        .filter(|(_, n)| window > 0 && **n >= window)
        .map(|(key, _)| key.clone())
        .collect();
    // What the handler decides from, read once every event it may apply is
    // known: the batch's and the parked ones it may release.
    let candidates: Vec<&outbox_events::Envelope> = fresh
        .iter()
        .map(|(_, e)| e)
        .chain(
            releasable
                .waiting
                .values()
                .flat_map(|w| w.values().map(|c| &c.envelope)),
        )
        .collect();
    let mut scope = handler.prepare(tx, &candidates).await?;
    let decided = policy::decide(
        handler,
        &mut scope,
        fresh,
        &lookup,
        if release {
            releasable.waiting
        } else {
            HashMap::new()
        },
        &mut steps,
        &mut outcome,
    );
    let mut all = statements::for_decided(handler, decided, &mut outcome);
    all.append(&mut steps);
    statements::execute(tx, &all).await?;
    Ok((outcome, more))
}

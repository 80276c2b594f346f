//! The version policy, in memory: per aggregate, each event of a batch is
//! applied (the next version), skipped (a version already applied, or an
//! event already waiting) or parked (after a gap), and parked events are
//! released in order when their gap closes. The same for every aggregate
//! type; the statements follow from what it decides (`statements`).

use std::collections::{BTreeMap, HashMap};

use outbox_events::Envelope;
use uuid::Uuid;

use super::lookup::Lookup;
use super::stored::parked_record;
use super::{statements, Outcome};
use crate::handler::{p, Handler, Step};
use crate::record::{Decoder, Record};

/// A decoded event on its way through a batch.
pub(super) struct Candidate {
    pub record: Record,
    pub envelope: Envelope,
    /// It has a row in `parked_events` to delete once applied.
    pub parked: bool,
}

pub(super) type AggregateKey = (String, String);

/// Per aggregate: the version before the batch, the version reached, waiting events.
pub(super) struct Aggregate {
    pub start: i64,
    pub applied: i64,
    pub waiting: BTreeMap<i64, Candidate>,
}

/// The parked events a batch read ([`Lookup::releasable`]), decoded, per
/// aggregate; undecodable ones are dead-lettered (into `steps`).
pub(super) struct Releasable {
    pub waiting: HashMap<AggregateKey, BTreeMap<i64, Candidate>>,
    /// How many were read per aggregate (a full window means more may wait).
    pub read: HashMap<AggregateKey, i64>,
}

pub(super) fn releasable(
    decoder: &Decoder,
    rows: &[tokio_postgres::Row],
    steps: &mut Vec<Step>,
    outcome: &mut Outcome,
) -> Releasable {
    let mut db_waiting: HashMap<AggregateKey, BTreeMap<i64, Candidate>> = HashMap::new();
    let mut read_per_aggregate: HashMap<AggregateKey, i64> = HashMap::new();
    for row in rows {
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
                statements::dead_letter(steps, &record, &error.to_string());
                steps.push(Step::new(
                    "DELETE FROM parked_events WHERE event_id = $1",
                    vec![p(row.get::<_, Uuid>(0))],
                ));
                outcome.dead_lettered += 1;
            }
        }
    }

    Releasable {
        waiting: db_waiting,
        read: read_per_aggregate,
    }
}

/// What the policy decided for a batch: where each aggregate stands, the
/// events applied (in order) and the handler's steps for them; what waits
/// is in each aggregate's `waiting`.
pub(super) struct Decided {
    pub aggregates: HashMap<AggregateKey, Aggregate>,
    pub applied: Vec<Candidate>,
    pub applied_steps: Vec<Step>,
}

/// Classifies the batch's `fresh` events in record order, given what the
/// database holds (`lookup`) and the parked events it may release
/// (`db_waiting`); rejections are dead-lettered into `steps`.
pub(super) fn decide<H: Handler>(
    handler: &H,
    scope: &mut H::Scope,
    fresh: Vec<(&Record, Envelope)>,
    lookup: &Lookup,
    mut db_waiting: HashMap<AggregateKey, BTreeMap<i64, Candidate>>,
    steps: &mut Vec<Step>,
    outcome: &mut Outcome,
) -> Decided {
    let Lookup {
        in_inbox,
        versions,
        parked_ids,
        ..
    } = lookup;
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
                waiting: db_waiting.remove(&key).unwrap_or_default(),
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
                handler,
                scope,
                candidate,
                agg,
                &mut applied,
                &mut applied_steps,
                steps,
                outcome,
            ) {
                while let Some(next) = agg.waiting.remove(&(agg.applied + 1)) {
                    if !apply(
                        handler,
                        scope,
                        next,
                        agg,
                        &mut applied,
                        &mut applied_steps,
                        steps,
                        outcome,
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

    Decided {
        aggregates,
        applied,
        applied_steps,
    }
}

/// Plans `candidate` and, if the handler accepts it, queues its steps and
/// advances the aggregate. A rejected event is dead-lettered and its aggregate
/// stays where it was, so its successors park behind it.
#[allow(clippy::too_many_arguments)]
fn apply<H: Handler>(
    handler: &H,
    scope: &mut H::Scope,
    candidate: Candidate,
    agg: &mut Aggregate,
    applied: &mut Vec<Candidate>,
    applied_steps: &mut Vec<Step>,
    steps: &mut Vec<Step>,
    outcome: &mut Outcome,
) -> bool {
    match handler.plan(scope, &candidate.envelope) {
        Ok(plan) => {
            applied_steps.extend(plan);
            agg.applied = candidate.envelope.aggregate_version;
            outcome.applied += 1;
            outcome.occurred.push(candidate.envelope.occurred_at);
            applied.push(candidate);
            true
        }
        Err(reason) => {
            tracing::warn!(event_id = %candidate.envelope.event_id, event_type = candidate.envelope.event.event_type(), %reason, "event dead-lettered");
            statements::dead_letter(steps, &candidate.record, &reason);
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

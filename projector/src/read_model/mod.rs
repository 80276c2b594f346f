//! Read models. Each owns its tables and turns one event into the statements
//! that change them ([`Step`]s); [`ReadModels`] is the projector's handler for
//! the consumer core (crate `consumer`), which runs the statements of a whole
//! batch pipelined in one transaction and knows nothing about orders or
//! customers.
//!
//! Planning is pure: a model sees only the event, never the database, so a
//! batch of a thousand events costs a handful of round trips, not thousands.
//! What a model needs from earlier events (an order's customer, the lines a
//! cancellation takes back) it reads inside its own SQL.
//!
//! Ordering is the core's job: it applies version `n` of an aggregate only after
//! `n - 1` (see [`consumer::batch`]). Events of different aggregates interleave
//! freely, so every model converges whatever the interleaving: customer details
//! and order facts are stored independently and joined on write, under a
//! per-customer lock the core takes first in each batch ([`locks`]).

pub mod customer_summary;
pub mod order_view;
pub mod product_sales;
pub mod stock_view;

use consumer::Handler;
use deadpool_postgres::Transaction;
use outbox_events::{Envelope, Event};

pub use consumer::{p, Param, Step};

/// Every statement one event needs, in order.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    /// Customers whose rows this event joins or updates across aggregates;
    /// the core locks them so two projector instances cannot each miss the
    /// other's uncommitted change (an order placed while its customer registers).
    pub fn customer_locks(envelope: &Envelope) -> Option<&str> {
        match &envelope.event {
            Event::CustomerRegistered(e) => Some(&e.customer_id),
            Event::CustomerContactChanged(e) => Some(&e.customer_id),
            Event::OrderPlaced(e) => Some(&e.customer_id),
            _ => None,
        }
    }
}

/// The locks the read models need for `applied` (the events a batch
/// applies), as one statement to run before any of their steps: an advisory
/// lock per customer whose rows those events join across aggregates
/// ([`Plan::customer_locks`]), taken in one order so that two instances
/// never deadlock on them. `None` when no event needs one.
pub fn locks<'a>(applied: impl Iterator<Item = &'a Envelope>) -> Option<Step> {
    let mut customers: Vec<String> = applied
        .filter_map(|e| Plan::customer_locks(e).map(str::to_owned))
        .collect();
    customers.sort();
    customers.dedup();
    (!customers.is_empty()).then(|| {
        Step::new(
            "SELECT count(pg_advisory_xact_lock(h)) FROM \
             (SELECT DISTINCT hashtextextended(c, 0) AS h FROM unnest($1::text[]) AS c ORDER BY 1) s",
            vec![p(customers)],
        )
    })
}

/// Plans one new event for every read model. `Err` is a rejection: the event
/// cannot be applied as it is, whatever the database holds.
pub fn plan(envelope: &Envelope) -> Result<Plan, String> {
    let mut plan = Plan::default();
    order_view::plan(envelope, &mut plan.steps)?;
    customer_summary::plan(envelope, &mut plan.steps)?;
    product_sales::plan(envelope, &mut plan.steps)?;
    stock_view::plan(envelope, &mut plan.steps)?;
    Ok(plan)
}

/// The projector's [`Handler`]: every read model, planned per event. It
/// decides from the event alone (nothing to read first); its only lock is the
/// per-customer one ([`locks`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadModels;

impl Handler for ReadModels {
    type Scope = ();

    fn name(&self) -> &'static str {
        "projector"
    }

    async fn prepare(
        &self,
        _tx: &Transaction<'_>,
        _events: &[&Envelope],
    ) -> Result<(), tokio_postgres::Error> {
        Ok(())
    }

    fn plan(&self, _scope: &mut (), envelope: &Envelope) -> Result<Vec<Step>, String> {
        plan(envelope).map(|plan| plan.steps)
    }

    fn locks(&self, applied: &[&Envelope]) -> Option<Step> {
        locks(applied.iter().copied())
    }
}

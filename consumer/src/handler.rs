//! What a service supplies to the core: its [`Handler`].
//!
//! The core decides *whether* an event takes effect (inbox, version policy,
//! parking, dead letters) and *when* (one transaction per batch, positions
//! stored with the data); the handler decides *what* the effect is: it decodes
//! nothing and commits nothing, it turns each event the core applies into
//! [`Step`]s, which the core runs pipelined in the batch's transaction after
//! the handler's locks and before the inbox rows that mark the events done.
//!
//! # Contract
//! - **At-least-once in, exactly one effect out.** The handler sees an event
//!   only when the core applies it: never a redelivery, never an event whose
//!   aggregate's previous version has not been applied (per aggregate, in
//!   version order; different aggregates interleave freely).
//! - **All or nothing per batch.** The steps of a batch commit together with
//!   its inbox rows and positions, or not at all; a retried batch is planned
//!   again from a fresh [`Handler::prepare`]. A handler may therefore write
//!   anything in its database, including its own outbox rows: they are
//!   appended exactly once per applied event.
//! - **Rejections are the event's fault.** `plan` returning `Err(reason)`
//!   dead-letters that event (its successors park behind it); a step the
//!   database refuses for data reasons, or a row count that differs from
//!   [`Step::expect`], isolates the event the same way. Infrastructure
//!   failures retry the batch.
//! - **Deciding from state.** A handler that decides from what its database
//!   holds (stock left, a reservation's state) reads it in `prepare`, once per
//!   attempt, locking the rows it will change; `plan` then decides in memory,
//!   in order, updating its scope so that later events of the batch see the
//!   earlier decisions. A handler that needs nothing returns `()` at no cost.

use std::future::Future;

use deadpool_postgres::Transaction;
use outbox_events::Envelope;
use tokio_postgres::types::ToSql;

pub use service::pipeline::Param;

/// One statement of an event's effect, and the row count it must report.
#[derive(Debug)]
pub struct Step {
    pub sql: String,
    pub params: Vec<Param>,
    /// `Some(n)`: anything else means the event does not fit the database
    /// (e.g. an order row that is not where its version says it is).
    pub expect_rows: Option<u64>,
    /// What the step does, for the reason of a rejection.
    pub what: &'static str,
}

impl Step {
    pub fn new(sql: impl Into<String>, params: Vec<Param>) -> Self {
        Self {
            sql: sql.into(),
            params,
            expect_rows: None,
            what: "",
        }
    }

    /// The step must change exactly `rows` rows.
    pub fn expect(mut self, rows: u64, what: &'static str) -> Self {
        self.expect_rows = Some(rows);
        self.what = what;
        self
    }
}

/// Boxes a parameter.
pub fn p<T: ToSql + Sync + Send + 'static>(value: T) -> Param {
    Box::new(value)
}

/// A service's part of consuming events (see the module docs for the contract).
pub trait Handler: Send + Sync {
    /// What planning one attempt at a batch reads from the database.
    type Scope: Send;

    /// The service's name: its metrics are `<name>_…`, its spans
    /// `<name>.apply`, its logs say it.
    fn name(&self) -> &'static str;

    /// Reads and locks what deciding needs, inside the batch's transaction,
    /// before any event is planned. `events` holds every event the attempt
    /// may apply (a superset: some turn out to be duplicates or park).
    fn prepare(
        &self,
        tx: &Transaction<'_>,
        events: &[&Envelope],
    ) -> impl Future<Output = Result<Self::Scope, tokio_postgres::Error>> + Send;

    /// The effect of one event the core applies. `Err` is a rejection: the
    /// event cannot take effect as it is, whatever the database holds.
    fn plan(&self, scope: &mut Self::Scope, envelope: &Envelope) -> Result<Vec<Step>, String>;

    /// One statement run before every step of the batch (e.g. advisory locks
    /// in a fixed order, so that two instances never deadlock), given the
    /// events applied; `None` when nothing needs one.
    fn locks(&self, applied: &[&Envelope]) -> Option<Step> {
        let _ = applied;
        None
    }
}

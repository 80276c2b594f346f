//! Read models. Each owns its tables and exposes one `apply` that changes them
//! for one event inside the caller's transaction; the projector core knows
//! nothing about orders.

pub mod order_view;

use outbox_events::Envelope;
use tokio_postgres::Transaction;

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The event does not fit the projection (out of order, unknown aggregate):
    /// retrying cannot help, so the record goes to the dead letters.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// Applies one new event to every read model it concerns.
pub async fn apply(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), ApplyError> {
    order_view::apply(tx, envelope).await
}

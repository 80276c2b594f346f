//! Read models. Each owns its tables and exposes one `apply` that changes them
//! for one event inside the caller's transaction (and ignores events it does
//! not need); the projector core knows nothing about orders or customers.
//!
//! Events of one aggregate arrive in order; events of different aggregates do
//! not. Every model is written to converge whatever the interleaving: customer
//! details and order facts are stored independently and joined on write.

pub mod customer_summary;
pub mod order_view;
pub mod product_sales;

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

/// Applies one new event to every read model.
pub async fn apply(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), ApplyError> {
    order_view::apply(tx, envelope).await?;
    customer_summary::apply(tx, envelope).await?;
    product_sales::apply(tx, envelope).await?;
    Ok(())
}

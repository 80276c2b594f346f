//! The aggregates' rules as pure functions: no I/O, tested without a database.
//!
//! `decide(state, command) -> Result<Vec<Event>, Rejection>`: given what the
//! write model holds now, either the events the command causes or why not.

pub mod customer;
pub mod order;

use uuid::Uuid;

pub use customer::{CustomerCommand, CustomerState};
pub use order::{OrderCommand, OrderState, OrderStatus};

/// A validated request to change one aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Customer(CustomerCommand),
    Order(OrderCommand),
}

/// Why a well-formed command is refused in the current state. Retrying the
/// same command cannot help; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("order {0} does not exist")]
    UnknownOrder(Uuid),
    #[error("order {0} already exists")]
    OrderExists(Uuid),
    #[error("customer {0} does not exist (register them first: writer customer register)")]
    UnknownCustomer(String),
    #[error("customer {0} already exists")]
    CustomerExists(String),
    #[error("an order needs at least one line")]
    NoLines,
    #[error("cannot {verb} order {order_id}: it is {status}")]
    InvalidTransition {
        order_id: Uuid,
        verb: &'static str,
        status: OrderStatus,
    },
    #[error("cannot refund order {0}: it was never paid")]
    NotPaid(Uuid),
    // Amounts stay cents here; only the message formats them.
    #[error(
        "{what} of {} does not match the order total of {} {currency}",
        crate::input::format_money(*amount_cents),
        crate::input::format_money(*total_cents)
    )]
    AmountMismatch {
        what: &'static str,
        amount_cents: i64,
        total_cents: i64,
        currency: String,
    },
    #[error("nothing to change: customer {0} already has these details")]
    Unchanged(String),
    #[error("idempotency key {0:?} was already used for a different command; use a new key for a new command")]
    IdempotencyKeyReused(String),
}

//! The order aggregate's rules as pure functions: no I/O, tested without a database.
//!
//! Life cycle: `placed -> paid -> shipped`, and `placed | paid -> cancelled`.

use std::fmt;

use outbox_events::{Event, OrderCancelled, OrderLine, OrderPaid, OrderPlaced, OrderShipped};
use uuid::Uuid;

use crate::input::format_money;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    Placed,
    Paid,
    Shipped,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::Paid => "paid",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Placed, Self::Paid, Self::Shipped, Self::Cancelled]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the rules need to know about an existing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub currency: String,
    pub total_cents: i64,
    /// Aggregate version: the number of events the order has produced.
    pub version: i64,
}

/// A validated request to change an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Place {
        order_id: Uuid,
        customer_id: String,
        currency: String,
        lines: Vec<OrderLine>,
    },
    Pay {
        order_id: Uuid,
        payment_reference: String,
        amount_cents: i64,
    },
    Ship {
        order_id: Uuid,
        carrier: String,
        tracking_number: String,
    },
    Cancel {
        order_id: Uuid,
        reason: String,
    },
}

impl Command {
    pub fn order_id(&self) -> Uuid {
        match self {
            Command::Place { order_id, .. }
            | Command::Pay { order_id, .. }
            | Command::Ship { order_id, .. }
            | Command::Cancel { order_id, .. } => *order_id,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Command::Place { .. } => "place",
            Command::Pay { .. } => "pay",
            Command::Ship { .. } => "ship",
            Command::Cancel { .. } => "cancel",
        }
    }
}

/// Why a well-formed command is refused in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("order {0} does not exist")]
    UnknownOrder(Uuid),
    #[error("order {0} already exists")]
    AlreadyExists(Uuid),
    #[error("an order needs at least one line")]
    NoLines,
    #[error("cannot {verb} order {order_id}: it is {status}")]
    InvalidTransition {
        order_id: Uuid,
        verb: &'static str,
        status: OrderStatus,
    },
    #[error("payment of {paid} does not match the order total of {total} {currency}")]
    AmountMismatch {
        paid: String,
        total: String,
        currency: String,
    },
}

/// Decides which events a command produces, given the order's current state
/// (`None` when the order does not exist yet).
pub fn decide(state: Option<&OrderState>, command: &Command) -> Result<Vec<Event>, Rejection> {
    match (state, command) {
        (
            None,
            Command::Place {
                order_id,
                customer_id,
                currency,
                lines,
            },
        ) => {
            if lines.is_empty() {
                return Err(Rejection::NoLines);
            }
            let total_cents = lines
                .iter()
                .map(|l| i64::from(l.quantity) * l.unit_price_cents)
                .sum();
            Ok(vec![Event::OrderPlaced(OrderPlaced {
                order_id: *order_id,
                customer_id: customer_id.clone(),
                currency: currency.clone(),
                lines: lines.clone(),
                total_cents,
            })])
        }
        (Some(state), Command::Place { .. }) => Err(Rejection::AlreadyExists(state.order_id)),
        (None, other) => Err(Rejection::UnknownOrder(other.order_id())),
        (Some(state), command) => decide_existing(state, command),
    }
}

fn decide_existing(state: &OrderState, command: &Command) -> Result<Vec<Event>, Rejection> {
    let refuse = || Rejection::InvalidTransition {
        order_id: state.order_id,
        verb: command.verb(),
        status: state.status,
    };
    let event = match command {
        Command::Place { .. } => return Err(Rejection::AlreadyExists(state.order_id)),
        Command::Pay {
            payment_reference,
            amount_cents,
            ..
        } => {
            if state.status != OrderStatus::Placed {
                return Err(refuse());
            }
            if *amount_cents != state.total_cents {
                return Err(Rejection::AmountMismatch {
                    paid: format_money(*amount_cents),
                    total: format_money(state.total_cents),
                    currency: state.currency.clone(),
                });
            }
            Event::OrderPaid(OrderPaid {
                order_id: state.order_id,
                payment_reference: payment_reference.clone(),
                amount_cents: *amount_cents,
                currency: state.currency.clone(),
            })
        }
        Command::Ship {
            carrier,
            tracking_number,
            ..
        } => {
            if state.status != OrderStatus::Paid {
                return Err(refuse());
            }
            Event::OrderShipped(OrderShipped {
                order_id: state.order_id,
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
            })
        }
        Command::Cancel { reason, .. } => {
            if !matches!(state.status, OrderStatus::Placed | OrderStatus::Paid) {
                return Err(refuse());
            }
            Event::OrderCancelled(OrderCancelled {
                order_id: state.order_id,
                reason: reason.clone(),
            })
        }
    };
    Ok(vec![event])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: OrderStatus) -> OrderState {
        OrderState {
            order_id: Uuid::nil(),
            status,
            currency: "EUR".into(),
            total_cents: 1000,
            version: 1,
        }
    }

    fn pay(amount_cents: i64) -> Command {
        Command::Pay {
            order_id: Uuid::nil(),
            payment_reference: "p-1".into(),
            amount_cents,
        }
    }

    fn ship() -> Command {
        Command::Ship {
            order_id: Uuid::nil(),
            carrier: "DHL".into(),
            tracking_number: "T1".into(),
        }
    }

    fn cancel() -> Command {
        Command::Cancel {
            order_id: Uuid::nil(),
            reason: "r".into(),
        }
    }

    #[test]
    fn placing_sums_the_lines() {
        let command = Command::Place {
            order_id: Uuid::nil(),
            customer_id: "c".into(),
            currency: "EUR".into(),
            lines: vec![
                OrderLine {
                    sku: "a".into(),
                    quantity: 2,
                    unit_price_cents: 250,
                },
                OrderLine {
                    sku: "b".into(),
                    quantity: 1,
                    unit_price_cents: 500,
                },
            ],
        };
        let events = decide(None, &command).unwrap();
        assert!(matches!(&events[..], [Event::OrderPlaced(p)] if p.total_cents == 1000));
    }

    #[test]
    fn transitions_follow_the_life_cycle() {
        use OrderStatus::*;
        assert!(decide(Some(&state(Placed)), &pay(1000)).is_ok());
        assert!(matches!(
            decide(Some(&state(Placed)), &pay(999)),
            Err(Rejection::AmountMismatch { .. })
        ));
        assert!(decide(Some(&state(Paid)), &pay(1000)).is_err());
        assert!(decide(Some(&state(Placed)), &ship()).is_err());
        assert!(decide(Some(&state(Paid)), &ship()).is_ok());
        assert!(decide(Some(&state(Placed)), &cancel()).is_ok());
        assert!(decide(Some(&state(Paid)), &cancel()).is_ok());
        assert!(decide(Some(&state(Shipped)), &cancel()).is_err());
        assert!(decide(Some(&state(Cancelled)), &ship()).is_err());
        assert_eq!(
            decide(None, &ship()),
            Err(Rejection::UnknownOrder(Uuid::nil()))
        );
    }
}

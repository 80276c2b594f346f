//! The order aggregate.
//!
//! Life cycle: `placed -> confirmed | rejected` (the stock-reservation saga:
//! the order reactor confirms or rejects on the inventory's reply), then
//! `confirmed -> paid -> shipped -> delivered`; `placed | confirmed | paid ->
//! cancelled`; a paid-then-cancelled or a delivered (returned) order can be
//! `refunded`, in full. Only a confirmed order can be paid: its goods are
//! held for it. Cancelling a confirmed or paid order makes the inventory
//! release what it held (compensation).
//!
//! | command  | allowed in                  | event            |
//! |----------|-----------------------------|------------------|
//! | place    | (no order yet)              | `OrderPlaced`    |
//! | confirm  | placed (reactor)            | `OrderConfirmed` |
//! | reject   | placed (reactor)            | `OrderRejected`  |
//! | pay      | confirmed                   | `OrderPaid`      |
//! | ship     | paid                        | `OrderShipped`   |
//! | deliver  | shipped                     | `OrderDelivered` |
//! | cancel   | placed, confirmed, paid     | `OrderCancelled` |
//! | refund   | cancelled (if paid), delivered | `OrderRefunded` |

pub use outbox_events::OrderStatus;
use outbox_events::{
    Event, OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderPaid, OrderPlaced,
    OrderRefunded, OrderRejected, OrderShipped, Shortage,
};
use uuid::Uuid;

use super::{CustomerState, Rejection};

/// What the rules need to know about an existing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderState {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub currency: String,
    pub total_cents: i64,
    /// Whether a payment was taken (and not refunded yet).
    pub paid: bool,
    /// Aggregate version: the number of events the order has produced.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
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
    Deliver {
        order_id: Uuid,
    },
    Cancel {
        order_id: Uuid,
        reason: String,
    },
    Refund {
        order_id: Uuid,
        amount_cents: i64,
        reason: String,
    },
    /// The order reactor's, on the inventory's `StockReserved`.
    Confirm {
        order_id: Uuid,
    },
    /// The order reactor's, on `StockRejected`: what could not be served.
    Reject {
        order_id: Uuid,
        reason: String,
        shortages: Vec<Shortage>,
    },
}

impl OrderCommand {
    pub fn order_id(&self) -> Uuid {
        match self {
            OrderCommand::Place { order_id, .. }
            | OrderCommand::Pay { order_id, .. }
            | OrderCommand::Ship { order_id, .. }
            | OrderCommand::Deliver { order_id }
            | OrderCommand::Cancel { order_id, .. }
            | OrderCommand::Refund { order_id, .. }
            | OrderCommand::Confirm { order_id }
            | OrderCommand::Reject { order_id, .. } => *order_id,
        }
    }

    pub fn verb(&self) -> &'static str {
        match self {
            OrderCommand::Place { .. } => "place",
            OrderCommand::Pay { .. } => "pay",
            OrderCommand::Ship { .. } => "ship",
            OrderCommand::Deliver { .. } => "deliver",
            OrderCommand::Cancel { .. } => "cancel",
            OrderCommand::Refund { .. } => "refund",
            OrderCommand::Confirm { .. } => "confirm",
            OrderCommand::Reject { .. } => "reject",
        }
    }
}

/// Decides which events an order command produces. `customer` is the
/// ordering customer's state, needed only to place an order.
pub fn decide(
    state: Option<&OrderState>,
    customer: Option<&CustomerState>,
    command: &OrderCommand,
) -> Result<Vec<Event>, Rejection> {
    let Some(state) = state else {
        let OrderCommand::Place {
            order_id,
            customer_id,
            currency,
            lines,
        } = command
        else {
            return Err(Rejection::UnknownOrder(command.order_id()));
        };
        let customer = customer.ok_or_else(|| Rejection::UnknownCustomer(customer_id.clone()))?;
        if lines.is_empty() {
            return Err(Rejection::NoLines);
        }
        let total_cents = lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_cents)
            .sum();
        return Ok(vec![Event::OrderPlaced(OrderPlaced {
            order_id: *order_id,
            customer_id: customer_id.clone(),
            currency: currency.clone(),
            lines: lines.clone(),
            total_cents,
            shipping_address: Some(customer.address.clone()),
        })]);
    };

    use OrderStatus::*;
    let order_id = state.order_id;
    let refuse = || Rejection::InvalidTransition {
        order_id,
        verb: command.verb(),
        status: state.status,
    };
    let must_match = |what: &'static str, amount: i64| {
        if amount == state.total_cents {
            Ok(())
        } else {
            Err(Rejection::AmountMismatch {
                what,
                amount_cents: amount,
                total_cents: state.total_cents,
                currency: state.currency.clone(),
            })
        }
    };
    let event = match command {
        OrderCommand::Place { .. } => return Err(Rejection::OrderExists(order_id)),
        OrderCommand::Pay {
            payment_reference,
            amount_cents,
            ..
        } => {
            if state.status != Confirmed {
                return Err(refuse());
            }
            must_match("payment", *amount_cents)?;
            Event::OrderPaid(OrderPaid {
                order_id,
                payment_reference: payment_reference.clone(),
                amount_cents: *amount_cents,
                currency: state.currency.clone(),
            })
        }
        OrderCommand::Ship {
            carrier,
            tracking_number,
            ..
        } => {
            if state.status != Paid {
                return Err(refuse());
            }
            Event::OrderShipped(OrderShipped {
                order_id,
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
            })
        }
        OrderCommand::Deliver { .. } => {
            if state.status != Shipped {
                return Err(refuse());
            }
            Event::OrderDelivered(OrderDelivered { order_id })
        }
        OrderCommand::Cancel { reason, .. } => {
            if !matches!(state.status, Placed | Confirmed | Paid) {
                return Err(refuse());
            }
            Event::OrderCancelled(OrderCancelled {
                order_id,
                reason: reason.clone(),
            })
        }
        OrderCommand::Refund {
            amount_cents,
            reason,
            ..
        } => {
            if !matches!(state.status, Cancelled | Delivered) {
                return Err(refuse());
            }
            if !state.paid {
                return Err(Rejection::NotPaid(order_id));
            }
            must_match("refund", *amount_cents)?;
            Event::OrderRefunded(OrderRefunded {
                order_id,
                amount_cents: *amount_cents,
                currency: state.currency.clone(),
                reason: reason.clone(),
            })
        }
        OrderCommand::Confirm { .. } => {
            if state.status != Placed {
                return Err(refuse());
            }
            Event::OrderConfirmed(OrderConfirmed { order_id })
        }
        OrderCommand::Reject {
            reason, shortages, ..
        } => {
            if state.status != Placed {
                return Err(refuse());
            }
            Event::OrderRejected(OrderRejected {
                order_id,
                reason: reason.clone(),
                shortages: shortages.clone(),
            })
        }
    };
    Ok(vec![event])
}

#[cfg(test)]
mod tests {
    use outbox_events::Address;

    use super::*;

    fn state(status: OrderStatus, paid: bool) -> OrderState {
        OrderState {
            order_id: Uuid::nil(),
            status,
            currency: "EUR".into(),
            total_cents: 1000,
            paid,
            version: 1,
        }
    }

    fn customer() -> CustomerState {
        CustomerState {
            customer_id: "c".into(),
            name: "C".into(),
            email: "c@example.com".into(),
            address: Address {
                street: "s".into(),
                city: "Paris".into(),
                postal_code: "75001".into(),
                country: "FR".into(),
            },
            version: 1,
        }
    }

    const ID: Uuid = Uuid::nil();

    fn pay(amount_cents: i64) -> OrderCommand {
        OrderCommand::Pay {
            order_id: ID,
            payment_reference: "p".into(),
            amount_cents,
        }
    }
    fn ship() -> OrderCommand {
        OrderCommand::Ship {
            order_id: ID,
            carrier: "DHL".into(),
            tracking_number: "T".into(),
        }
    }
    fn cancel() -> OrderCommand {
        OrderCommand::Cancel {
            order_id: ID,
            reason: "r".into(),
        }
    }
    fn refund(amount_cents: i64) -> OrderCommand {
        OrderCommand::Refund {
            order_id: ID,
            amount_cents,
            reason: "r".into(),
        }
    }
    fn deliver() -> OrderCommand {
        OrderCommand::Deliver { order_id: ID }
    }
    fn confirm() -> OrderCommand {
        OrderCommand::Confirm { order_id: ID }
    }
    fn shortages() -> Vec<Shortage> {
        vec![Shortage {
            sku: "a".into(),
            requested: 2,
            available: 1,
        }]
    }
    fn reject() -> OrderCommand {
        OrderCommand::Reject {
            order_id: ID,
            reason: "r".into(),
            shortages: shortages(),
        }
    }

    #[test]
    fn placing_needs_a_customer_and_stamps_their_address() {
        let place = OrderCommand::Place {
            order_id: ID,
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
        assert_eq!(
            decide(None, None, &place),
            Err(Rejection::UnknownCustomer("c".into()))
        );
        let events = decide(None, Some(&customer()), &place).unwrap();
        assert!(matches!(&events[..], [Event::OrderPlaced(p)]
            if p.total_cents == 1000 && p.shipping_address.as_ref().is_some_and(|a| a.city == "Paris")));
    }

    /// Every command in every state: the one event it emits, or the exact
    /// rejection (variant and fields), never merely "ok" or "not ok".
    #[test]
    fn every_command_in_every_state_emits_its_event_or_names_its_rejection() {
        use OrderStatus::*;
        let paid_event = Event::OrderPaid(OrderPaid {
            order_id: ID,
            payment_reference: "p".into(),
            amount_cents: 1000,
            currency: "EUR".into(),
        });
        let shipped = Event::OrderShipped(OrderShipped {
            order_id: ID,
            carrier: "DHL".into(),
            tracking_number: "T".into(),
        });
        let delivered = Event::OrderDelivered(OrderDelivered { order_id: ID });
        let cancelled = Event::OrderCancelled(OrderCancelled {
            order_id: ID,
            reason: "r".into(),
        });
        let refunded = Event::OrderRefunded(OrderRefunded {
            order_id: ID,
            amount_cents: 1000,
            currency: "EUR".into(),
            reason: "r".into(),
        });
        let confirmed = Event::OrderConfirmed(OrderConfirmed { order_id: ID });
        let rejected = Event::OrderRejected(OrderRejected {
            order_id: ID,
            reason: "r".into(),
            shortages: shortages(),
        });
        // The state's `paid` flag as the order's history leaves it.
        let statuses = [
            (Placed, false),
            (Confirmed, false),
            (Rejected, false),
            (Paid, true),
            (Shipped, true),
            (Delivered, true),
            (Cancelled, true),
            (Refunded, false),
        ];
        let allowed = |status: OrderStatus, verb: &str| -> Option<Event> {
            match (status, verb) {
                (Placed, "confirm") => Some(confirmed.clone()),
                (Placed, "reject") => Some(rejected.clone()),
                (Confirmed, "pay") => Some(paid_event.clone()),
                (Placed | Confirmed | Paid, "cancel") => Some(cancelled.clone()),
                (Paid, "ship") => Some(shipped.clone()),
                (Shipped, "deliver") => Some(delivered.clone()),
                (Delivered | Cancelled, "refund") => Some(refunded.clone()),
                _ => None,
            }
        };
        let mut checked = 0;
        for (status, paid) in statuses {
            for command in [
                confirm(),
                reject(),
                pay(1000),
                ship(),
                deliver(),
                cancel(),
                refund(1000),
            ] {
                let verb = command.verb();
                let expected = match allowed(status, verb) {
                    Some(event) => Ok(vec![event]),
                    None => Err(Rejection::InvalidTransition {
                        order_id: ID,
                        verb,
                        status,
                    }),
                };
                assert_eq!(
                    decide(Some(&state(status, paid)), None, &command),
                    expected,
                    "{verb} when {status}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 8 * 7);

        // The rejections that are not about the state.
        let mismatch = |what: &'static str, amount: i64| Rejection::AmountMismatch {
            what,
            amount_cents: amount,
            total_cents: 1000,
            currency: "EUR".into(),
        };
        assert_eq!(
            decide(Some(&state(Confirmed, false)), None, &pay(999)),
            Err(mismatch("payment", 999))
        );
        assert_eq!(
            decide(Some(&state(Delivered, true)), None, &refund(10)),
            Err(mismatch("refund", 10))
        );
        assert_eq!(
            decide(Some(&state(Cancelled, false)), None, &refund(1000)),
            Err(Rejection::NotPaid(ID)),
            "cancelled before payment: nothing to refund"
        );
        assert_eq!(
            decide(None, None, &ship()),
            Err(Rejection::UnknownOrder(ID))
        );
        let place = OrderCommand::Place {
            order_id: ID,
            customer_id: "c".into(),
            currency: "EUR".into(),
            lines: vec![],
        };
        assert_eq!(
            decide(None, Some(&customer()), &place),
            Err(Rejection::NoLines)
        );
        assert_eq!(
            decide(Some(&state(Placed, false)), Some(&customer()), &place),
            Err(Rejection::OrderExists(ID))
        );
    }
}

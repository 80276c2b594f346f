//! Upcasters: old schema versions to the current one, so consumers handle
//! only current payloads and old events project exactly like new ones.

use crate::event::{OrderPlaced, OrderPlacedV1};

/// `OrderPlaced` v1 -> v2: v1 carried no shipping address.
pub fn order_placed_v1(v1: OrderPlacedV1) -> OrderPlaced {
    OrderPlaced {
        order_id: v1.order_id,
        customer_id: v1.customer_id,
        currency: v1.currency,
        lines: v1.lines,
        total_cents: v1.total_cents,
        shipping_address: None,
    }
}

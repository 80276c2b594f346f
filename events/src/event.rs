use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ContractError, ORDER_AGGREGATE};

/// One line of an order. Money is in minor units (cents) to stay exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

/// A customer placed an order; the order is open and awaits payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub total_cents: i64,
}

/// The order was paid in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPaid {
    pub order_id: Uuid,
    pub payment_reference: String,
    pub amount_cents: i64,
    pub currency: String,
}

/// A paid order was handed to a carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderShipped {
    pub order_id: Uuid,
    pub carrier: String,
    pub tracking_number: String,
}

/// The order was cancelled before it shipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub reason: String,
}

/// Every event type of the system, each with its current payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    OrderPlaced(OrderPlaced),
    OrderPaid(OrderPaid),
    OrderShipped(OrderShipped),
    OrderCancelled(OrderCancelled),
}

impl Event {
    /// The event type name, as stored in the outbox and sent in the `event_type` header.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::OrderPlaced(_) => "OrderPlaced",
            Event::OrderPaid(_) => "OrderPaid",
            Event::OrderShipped(_) => "OrderShipped",
            Event::OrderCancelled(_) => "OrderCancelled",
        }
    }

    /// Current schema version of this event type's payload.
    pub fn schema_version(&self) -> i32 {
        1
    }

    /// Aggregate type the event belongs to (selects the topic).
    pub fn aggregate_type(&self) -> &'static str {
        ORDER_AGGREGATE
    }

    /// Aggregate id the event belongs to (the Kafka key: orders stay in order per id).
    pub fn aggregate_id(&self) -> String {
        let id = match self {
            Event::OrderPlaced(e) => e.order_id,
            Event::OrderPaid(e) => e.order_id,
            Event::OrderShipped(e) => e.order_id,
            Event::OrderCancelled(e) => e.order_id,
        };
        id.to_string()
    }

    /// The JSON payload stored in the outbox's `payload` column.
    pub fn to_payload(&self) -> serde_json::Value {
        let value = match self {
            Event::OrderPlaced(e) => serde_json::to_value(e),
            Event::OrderPaid(e) => serde_json::to_value(e),
            Event::OrderShipped(e) => serde_json::to_value(e),
            Event::OrderCancelled(e) => serde_json::to_value(e),
        };
        // Plain structs of strings and integers always serialize.
        value.expect("event payloads are always serializable")
    }

    /// Decodes a payload of the given type and schema version.
    pub fn from_payload(
        event_type: &str,
        schema_version: i32,
        payload: &[u8],
    ) -> Result<Self, ContractError> {
        fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, ContractError> {
            serde_json::from_slice(payload).map_err(|e| ContractError::Payload(e.to_string()))
        }
        let event = match (event_type, schema_version) {
            ("OrderPlaced", 1) => Event::OrderPlaced(parse(payload)?),
            ("OrderPaid", 1) => Event::OrderPaid(parse(payload)?),
            ("OrderShipped", 1) => Event::OrderShipped(parse(payload)?),
            ("OrderCancelled", 1) => Event::OrderCancelled(parse(payload)?),
            ("OrderPlaced" | "OrderPaid" | "OrderShipped" | "OrderCancelled", v) => {
                return Err(ContractError::UnknownVersion {
                    event_type: event_type.to_owned(),
                    version: v,
                })
            }
            _ => return Err(ContractError::UnknownEventType(event_type.to_owned())),
        };
        Ok(event)
    }
}

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{ContractError, CUSTOMER_AGGREGATE, ORDER_AGGREGATE};

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Address {
    /// Street and number.
    pub street: String,
    /// City or town.
    pub city: String,
    /// Postal code as written in the country (letters, digits, spaces, dashes).
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 country code, upper case (e.g. `DE`).
    #[schemars(regex(pattern = r"^[A-Z]{2}$"))]
    pub country: String,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLine {
    /// Stock keeping unit: `[A-Za-z0-9._:-]`, at most 64 characters.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub sku: String,
    /// Units ordered, 1..=10000.
    #[schemars(range(min = 1, max = 10000))]
    pub quantity: i32,
    /// Price of one unit in minor units of the order's currency (cents).
    #[schemars(range(min = 0, max = 100_000_000))]
    pub unit_price_cents: i64,
}

/// A customer registered; orders may now be placed for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerRegistered {
    /// Customer id chosen at registration (e.g. `c-42`); the aggregate id.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub customer_id: String,
    /// Full name as shown on orders.
    pub name: String,
    /// Contact e-mail address.
    pub email: String,
    /// Default shipping address.
    pub address: Address,
}

/// A customer's name or e-mail changed; orders that show them follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerContactChanged {
    /// The customer id; the aggregate id of customer events.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub customer_id: String,
    /// The new full name.
    pub name: String,
    /// The new e-mail address.
    pub email: String,
}

/// A customer's default shipping address changed (orders already placed keep theirs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CustomerAddressChanged {
    /// The customer id; the aggregate id of customer events.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub customer_id: String,
    /// The new default shipping address.
    pub address: Address,
}

/// An order was placed and awaits payment (schema v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlaced {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
    /// The registered customer who placed the order.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub customer_id: String,
    /// ISO 4217 currency code of every amount of the order.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// At least one line, at most 100.
    #[schemars(length(min = 1, max = 100))]
    pub lines: Vec<OrderLine>,
    /// Sum of quantity x unit price over the lines, in cents.
    #[schemars(range(min = 0, max = 1_000_000_000_000_000i64))]
    pub total_cents: i64,
    /// Where the order ships to: the customer's address when the order was
    /// placed. Added in v2; absent in v1 events (upcast to `null`).
    #[serde(default)]
    pub shipping_address: Option<Address>,
}

/// `OrderPlaced` as schema v1 published it: no shipping address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPlacedV1 {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
    /// The customer id; the aggregate id of customer events.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub customer_id: String,
    /// ISO 4217 currency code.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// At least one line, at most 100.
    #[schemars(length(min = 1, max = 100))]
    pub lines: Vec<OrderLine>,
    /// Sum of quantity x unit price over the lines, in cents.
    #[schemars(range(min = 0, max = 1_000_000_000_000_000i64))]
    pub total_cents: i64,
}

/// The order was paid in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderPaid {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
    /// The payment provider's reference.
    pub payment_reference: String,
    /// Amount paid in cents; always equals the order total.
    #[schemars(range(min = 0, max = 1_000_000_000_000_000i64))]
    pub amount_cents: i64,
    /// ISO 4217 currency code.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
}

/// A paid order was handed to a carrier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderShipped {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
    /// Carrier name (e.g. `DHL`).
    pub carrier: String,
    /// The carrier's tracking number.
    pub tracking_number: String,
}

/// A shipped order reached the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderDelivered {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
}

/// The order was cancelled before it shipped; a paid order awaits its refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCancelled {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
    /// Why the order was cancelled (free text).
    pub reason: String,
}

/// The payment of a cancelled or delivered (returned) order was given back in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderRefunded {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
    /// Amount refunded in cents; always equals the amount paid.
    #[schemars(range(min = 0, max = 1_000_000_000_000_000i64))]
    pub amount_cents: i64,
    /// ISO 4217 currency code.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Why the money went back (free text).
    pub reason: String,
}

/// Most units of one order line.
pub const MAX_QUANTITY: i32 = 10_000;
/// Largest amount an event may carry, in cents (10^15): above the largest order
/// the writer accepts (100 lines x 10,000 units x 10^8 cents),
/// far below where one sum in `bigint` could overflow.
pub const MAX_AMOUNT_CENTS: i64 = 1_000_000_000_000_000;

/// The one list of event types: each variant of [`Event`] (with its payload
/// struct of the same name), its [`EventType`] and its aggregate type are
/// generated from it, and so are the exhaustive matches that name, route and
/// decode events. Schema versions, upcasters and what the catalog says live
/// in [`crate::catalog`], keyed by [`EventType`] (a test requires one entry
/// per type).
macro_rules! events {
    ($($name:ident => $aggregate:expr),* $(,)?) => {
        /// Every event type of the system, each with its current payload.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Event {
            $($name($name),)*
        }

        /// The name of an event type without its payload: the `event_type`
        /// column and header, the catalog's and the registry's key.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType {
            $($name,)*
        }

        impl EventType {
            /// Every event type, in the catalog's order.
            pub const ALL: &'static [EventType] = &[$(EventType::$name,)*];

            /// The name stored in the outbox and sent in the `event_type` header.
            pub fn name(self) -> &'static str {
                match self {
                    $(EventType::$name => stringify!($name),)*
                }
            }

            /// The aggregate type its events belong to (selects the topic).
            pub fn aggregate_type(self) -> &'static str {
                match self {
                    $(EventType::$name => $aggregate,)*
                }
            }

            /// Whether an event of this type starts its aggregate (version 1).
            pub fn creates_aggregate(self) -> bool {
                matches!(self, EventType::CustomerRegistered | EventType::OrderPlaced)
            }

            /// The type named `name`, if there is one.
            pub fn parse(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|t| t.name() == name)
            }

            /// Decodes a payload of this type's current schema version.
            pub(crate) fn decode_current(self, payload: &[u8]) -> Result<Event, ContractError> {
                Ok(match self {
                    $(EventType::$name => Event::$name(parse_payload(payload)?),)*
                })
            }
        }

        impl Event {
            /// This event's type.
            pub fn kind(&self) -> EventType {
                match self {
                    $(Event::$name(_) => EventType::$name,)*
                }
            }

            /// The JSON payload stored in the outbox's `payload` column.
            pub fn to_payload(&self) -> serde_json::Value {
                // Plain structs of strings, integers and options always serialize.
                match self {
                    $(Event::$name(p) => serde_json::to_value(p),)*
                }
                .expect("event payloads are always serializable")
            }
        }
    };
}

events! {
    CustomerRegistered => CUSTOMER_AGGREGATE,
    CustomerContactChanged => CUSTOMER_AGGREGATE,
    CustomerAddressChanged => CUSTOMER_AGGREGATE,
    OrderPlaced => ORDER_AGGREGATE,
    OrderPaid => ORDER_AGGREGATE,
    OrderShipped => ORDER_AGGREGATE,
    OrderDelivered => ORDER_AGGREGATE,
    OrderCancelled => ORDER_AGGREGATE,
    OrderRefunded => ORDER_AGGREGATE,
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A payload's JSON as `T`; unknown fields are ignored.
pub(crate) fn parse_payload<T: serde::de::DeserializeOwned>(
    payload: &[u8],
) -> Result<T, ContractError> {
    serde_json::from_slice(payload).map_err(|e| ContractError::Payload(e.to_string()))
}

impl Event {
    /// The event type name, as stored in the outbox and sent in the `event_type` header.
    pub fn event_type(&self) -> &'static str {
        self.kind().name()
    }

    /// Current schema version of this event type's payload (what producers write).
    pub fn schema_version(&self) -> i32 {
        crate::catalog::spec_of(self.kind()).current_version()
    }

    /// Aggregate type the event belongs to (selects the topic).
    pub fn aggregate_type(&self) -> &'static str {
        self.kind().aggregate_type()
    }

    /// Aggregate id (the Kafka key: events of one aggregate stay in order).
    pub fn aggregate_id(&self) -> String {
        match self {
            Event::CustomerRegistered(e) => e.customer_id.clone(),
            Event::CustomerContactChanged(e) => e.customer_id.clone(),
            Event::CustomerAddressChanged(e) => e.customer_id.clone(),
            Event::OrderPlaced(e) => e.order_id.to_string(),
            Event::OrderPaid(e) => e.order_id.to_string(),
            Event::OrderShipped(e) => e.order_id.to_string(),
            Event::OrderDelivered(e) => e.order_id.to_string(),
            Event::OrderCancelled(e) => e.order_id.to_string(),
            Event::OrderRefunded(e) => e.order_id.to_string(),
        }
    }

    /// Checks what the types cannot say: the constraints the JSON Schemas and
    /// the catalog state (lines, quantities, amounts, codes; text without NUL
    /// characters, which no PostgreSQL `text` or `jsonb` can store, without
    /// bidirectional or invisible characters and at most
    /// [`crate::text::MAX_TEXT_CHARS`] long: [`crate::text`]). The writer produces only
    /// valid events; a consumer uses this to refuse a malformed record up front.
    pub fn validate(&self) -> Result<(), String> {
        let payload = self.to_payload();
        // Every text field, as decoded (so an escaped \u202e counts too).
        crate::text::check_json(&payload)?;
        self.validate_with(&payload.to_string())
    }

    /// [`Event::validate`] given the payload's JSON text (saves serializing it again).
    pub fn validate_with(&self, payload_json: &str) -> Result<(), String> {
        if payload_json.contains("\\u0000") {
            return Err("a text field contains a NUL character".into());
        }
        let amount = |name: &str, cents: i64| {
            if (0..=MAX_AMOUNT_CENTS).contains(&cents) {
                Ok(())
            } else {
                Err(format!("{name} {cents} is outside 0..={MAX_AMOUNT_CENTS}"))
            }
        };
        let currency = |c: &str| {
            if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(format!("currency {c:?} is not an ISO 4217 code"))
            }
        };
        let address = |a: &Address| {
            if a.country.len() == 2 && a.country.bytes().all(|b| b.is_ascii_uppercase()) {
                Ok(())
            } else {
                Err(format!(
                    "country {:?} is not an ISO 3166-1 alpha-2 code",
                    a.country
                ))
            }
        };
        match self {
            Event::CustomerRegistered(e) => address(&e.address),
            Event::CustomerAddressChanged(e) => address(&e.address),
            Event::CustomerContactChanged(_) => Ok(()),
            Event::OrderPlaced(e) => {
                currency(&e.currency)?;
                if let Some(a) = &e.shipping_address {
                    address(a)?;
                }
                if e.lines.is_empty() {
                    return Err("an order needs at least one line".into());
                }
                let mut total: i64 = 0;
                for line in &e.lines {
                    if !(1..=MAX_QUANTITY).contains(&line.quantity) {
                        return Err(format!(
                            "quantity {} is outside 1..={MAX_QUANTITY}",
                            line.quantity
                        ));
                    }
                    amount("unit price", line.unit_price_cents)?;
                    total = i64::from(line.quantity)
                        .checked_mul(line.unit_price_cents)
                        .and_then(|line_total| total.checked_add(line_total))
                        .ok_or("the total overflows")?;
                }
                amount("total", e.total_cents)?;
                if total != e.total_cents {
                    return Err(format!(
                        "total {} is not the sum of the lines ({total})",
                        e.total_cents
                    ));
                }
                Ok(())
            }
            Event::OrderPaid(e) => {
                currency(&e.currency)?;
                amount("amount", e.amount_cents)
            }
            Event::OrderRefunded(e) => {
                currency(&e.currency)?;
                amount("amount", e.amount_cents)
            }
            Event::OrderShipped(_) | Event::OrderDelivered(_) | Event::OrderCancelled(_) => Ok(()),
        }
    }

    /// Decodes a payload of the given type and schema version, upcasting old
    /// versions to the current one (the catalog's upcasters). Unknown fields
    /// are ignored.
    pub fn from_payload(
        event_type: &str,
        schema_version: i32,
        payload: &[u8],
    ) -> Result<Self, ContractError> {
        let kind = EventType::parse(event_type)
            .ok_or_else(|| ContractError::UnknownEventType(event_type.to_owned()))?;
        let spec = crate::catalog::spec_of(kind);
        if schema_version == spec.current_version() {
            return kind.decode_current(payload);
        }
        match spec.versions.iter().find(|v| v.version == schema_version) {
            Some(crate::catalog::VersionSpec {
                upcast: Some(upcast),
                ..
            }) => upcast(payload),
            _ => Err(ContractError::UnknownVersion {
                event_type: event_type.to_owned(),
                version: schema_version,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(quantity: i32, unit_price_cents: i64, total_cents: i64) -> Event {
        Event::OrderPlaced(OrderPlaced {
            order_id: Uuid::nil(),
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            lines: vec![OrderLine {
                sku: "A".into(),
                quantity,
                unit_price_cents,
            }],
            total_cents,
            shipping_address: None,
        })
    }

    #[test]
    fn validation_refuses_what_the_contract_forbids_without_overflowing() {
        assert_eq!(placed(2, 500, 1000).validate(), Ok(()));
        // Each value within its own range, the product beyond i64: refused, no panic.
        let huge = placed(MAX_QUANTITY, MAX_AMOUNT_CENTS, MAX_AMOUNT_CENTS).validate();
        assert_eq!(huge, Err("the total overflows".to_owned()));
        assert!(placed(0, 500, 0)
            .validate()
            .unwrap_err()
            .contains("quantity 0"));
        assert!(placed(1, -1, -1)
            .validate()
            .unwrap_err()
            .contains("unit price -1"));
        assert!(placed(1, 500, 499)
            .validate()
            .unwrap_err()
            .contains("not the sum"));
        let mut nul = placed(1, 500, 500);
        if let Event::OrderPlaced(p) = &mut nul {
            p.customer_id = "c-\0".into();
        }
        assert!(nul.validate().unwrap_err().contains("NUL"));
    }
}

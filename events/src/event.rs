use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    ContractError, CUSTOMER_AGGREGATE, ORDER_AGGREGATE, RESERVATION_AGGREGATE, STOCK_AGGREGATE,
};

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

/// The inventory reserved stock for every line of a placed order (its
/// `StockReserved`, through the order reactor): the order may now be paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderConfirmed {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
}

/// The inventory could not reserve stock for a placed order (its
/// `StockRejected`, through the order reactor): the order ends here, unpaid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderRejected {
    /// The order id; the aggregate id.
    pub order_id: Uuid,
    /// Why the order was rejected (free text).
    pub reason: String,
    /// The SKUs the order asked for more units of than were available: at
    /// least one, each SKU once.
    #[schemars(length(min = 1))]
    pub shortages: Vec<Shortage>,
}

/// Units of one SKU an order line asks for: an order line as the inventory
/// sees it (no price).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OrderLineQuantity {
    /// Stock keeping unit: `[A-Za-z0-9._:-]`, at most 64 characters.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub sku: String,
    /// Units ordered, 1..=10000.
    #[schemars(range(min = 1, max = 10000))]
    pub quantity: i32,
}

/// A SKU's stock level right after the change an event records. Units
/// available to new orders: `on_hand - reserved`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockLevel {
    /// Stock keeping unit: `[A-Za-z0-9._:-]`, at most 64 characters.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub sku: String,
    /// Units in the warehouse, the reserved ones included; never negative.
    #[schemars(range(min = 0))]
    pub on_hand: i64,
    /// Units of `on_hand` reserved for orders that have neither shipped nor
    /// been cancelled; never negative, never more than `on_hand`.
    #[schemars(range(min = 0))]
    pub reserved: i64,
    /// The SKU's change counter: 1 for its first change, then one more per
    /// change, whichever event records it (stock or reservation events). A
    /// read model keeps the level with the highest version, whatever order
    /// the events of different aggregates arrive in.
    #[schemars(range(min = 1))]
    pub version: i64,
}

/// One SKU an order asked for more units of than were available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Shortage {
    /// Stock keeping unit: `[A-Za-z0-9._:-]`, at most 64 characters.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub sku: String,
    /// Units the order asked for, over all its lines of this SKU; at least 1.
    #[schemars(range(min = 1))]
    pub requested: i64,
    /// Units that were available (`on_hand - reserved`); fewer than `requested`.
    #[schemars(range(min = 0))]
    pub available: i64,
}

/// Stock was reserved for every line of a placed order, all or nothing; the
/// reservation's first event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReserved {
    /// The order id; as text, the aggregate id of reservation events.
    pub order_id: Uuid,
    /// The order's lines, reserved: at least one, at most 100.
    #[schemars(length(min = 1, max = 100))]
    pub lines: Vec<OrderLineQuantity>,
    /// Each SKU of the lines once, at its level right after the reservation.
    #[schemars(length(min = 1, max = 100))]
    pub levels: Vec<StockLevel>,
}

/// Stock could not be reserved for a placed order: some SKU had too few
/// units available, so nothing was reserved. The reservation's first and
/// only event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockRejected {
    /// The order id; as text, the aggregate id of reservation events.
    pub order_id: Uuid,
    /// Every SKU that was short: at least one, each SKU once.
    #[schemars(length(min = 1))]
    pub shortages: Vec<Shortage>,
}

/// The stock reserved for an order was released because the order was
/// cancelled (the saga's compensation): its units are available again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockReleased {
    /// The order id; as text, the aggregate id of reservation events.
    pub order_id: Uuid,
    /// The lines whose units were released: the reserved lines.
    #[schemars(length(min = 1, max = 100))]
    pub lines: Vec<OrderLineQuantity>,
    /// Each SKU of the lines once, at its level right after the release.
    #[schemars(length(min = 1, max = 100))]
    pub levels: Vec<StockLevel>,
    /// Why the order was cancelled (free text, from `OrderCancelled`).
    pub reason: String,
}

/// The units reserved for an order left the warehouse with it: on hand and
/// reserved both drop by the lines' units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockShipped {
    /// The order id; as text, the aggregate id of reservation events.
    pub order_id: Uuid,
    /// The lines that shipped: the reserved lines.
    #[schemars(length(min = 1, max = 100))]
    pub lines: Vec<OrderLineQuantity>,
    /// Each SKU of the lines once, at its level right after the shipment.
    #[schemars(length(min = 1, max = 100))]
    pub levels: Vec<StockLevel>,
}

/// A person set a SKU's units on hand (e.g. after counting them); a SKU's
/// first `StockSet` starts its stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockSet {
    /// Stock keeping unit; the aggregate id of stock events.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub sku: String,
    /// The units on hand from now on; never negative, never fewer than the
    /// units reserved. Equals `level.on_hand`.
    #[schemars(range(min = 0))]
    pub quantity: i64,
    /// The SKU's level right after the change.
    pub level: StockLevel,
}

/// Units of a SKU arrived in the warehouse and were added to its units on hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockRestocked {
    /// Stock keeping unit; the aggregate id of stock events.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"))]
    pub sku: String,
    /// Units added to on hand; at least 1.
    #[schemars(range(min = 1))]
    pub quantity: i64,
    /// The SKU's level right after the change.
    pub level: StockLevel,
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

            /// Whether an event of this type always starts its aggregate: it
            /// carries version 1, and every other type's events 2 or later. A
            /// reservation starts with `StockReserved` or `StockRejected`. A
            /// SKU's stock starts with its first `StockSet`, but `StockSet` is
            /// no creator: later ones carry the previous version + 1.
            pub fn creates_aggregate(self) -> bool {
                matches!(
                    self,
                    EventType::CustomerRegistered
                        | EventType::OrderPlaced
                        | EventType::StockReserved
                        | EventType::StockRejected
                )
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
    OrderConfirmed => ORDER_AGGREGATE,
    OrderRejected => ORDER_AGGREGATE,
    StockSet => STOCK_AGGREGATE,
    StockRestocked => STOCK_AGGREGATE,
    StockReserved => RESERVATION_AGGREGATE,
    StockRejected => RESERVATION_AGGREGATE,
    StockReleased => RESERVATION_AGGREGATE,
    StockShipped => RESERVATION_AGGREGATE,
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
            Event::OrderConfirmed(e) => e.order_id.to_string(),
            Event::OrderRejected(e) => e.order_id.to_string(),
            Event::StockSet(e) => e.sku.clone(),
            Event::StockRestocked(e) => e.sku.clone(),
            Event::StockReserved(e) => e.order_id.to_string(),
            Event::StockRejected(e) => e.order_id.to_string(),
            Event::StockReleased(e) => e.order_id.to_string(),
            Event::StockShipped(e) => e.order_id.to_string(),
        }
    }

    /// Checks what the types cannot say: the constraints the JSON Schemas and
    /// the catalog state (lines, quantities, amounts, codes; the inventory's
    /// SKUs, stock levels with `0 <= reserved <= on_hand` and a version from
    /// 1, one level per SKU of the lines, shortages; text without NUL
    /// characters, which no PostgreSQL `text` or `jsonb` can store, without
    /// bidirectional or invisible characters and at most
    /// [`crate::text::MAX_TEXT_CHARS`] long: [`crate::text`]). The producers
    /// (writer, inventory) produce only valid events; a consumer uses this to
    /// refuse a malformed record up front.
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
            Event::OrderConfirmed(_) => Ok(()),
            Event::OrderRejected(e) => check_shortages(&e.shortages),
            Event::StockSet(e) => {
                check_sku(&e.sku)?;
                check_stock_level(&e.level)?;
                if e.level.sku != e.sku {
                    return Err(format!(
                        "level of {:?} in an event of {:?}",
                        e.level.sku, e.sku
                    ));
                }
                if e.quantity != e.level.on_hand {
                    return Err(format!(
                        "set to {} units, but {} are on hand",
                        e.quantity, e.level.on_hand
                    ));
                }
                Ok(())
            }
            Event::StockRestocked(e) => {
                check_sku(&e.sku)?;
                check_stock_level(&e.level)?;
                if e.level.sku != e.sku {
                    return Err(format!(
                        "level of {:?} in an event of {:?}",
                        e.level.sku, e.sku
                    ));
                }
                if e.quantity < 1 {
                    return Err(format!("restocked quantity {} is not positive", e.quantity));
                }
                if e.quantity > e.level.on_hand {
                    return Err(format!(
                        "{} units restocked, but only {} are on hand",
                        e.quantity, e.level.on_hand
                    ));
                }
                Ok(())
            }
            Event::StockReserved(e) => check_lines_and_levels(&e.lines, &e.levels),
            Event::StockRejected(e) => check_shortages(&e.shortages),
            Event::StockReleased(e) => check_lines_and_levels(&e.lines, &e.levels),
            Event::StockShipped(e) => check_lines_and_levels(&e.lines, &e.levels),
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

/// A SKU as the schemas define it: `[A-Za-z0-9][A-Za-z0-9._:-]{0,63}`.
fn check_sku(sku: &str) -> Result<(), String> {
    let bytes = sku.as_bytes();
    let valid = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b));
    if valid {
        Ok(())
    } else {
        Err(format!("SKU {sku:?} is not 1 to 64 of [A-Za-z0-9._:-]"))
    }
}

/// A level the inventory can be at: no negative units, no more reserved than
/// on hand, a version from 1.
fn check_stock_level(level: &StockLevel) -> Result<(), String> {
    check_sku(&level.sku)?;
    let StockLevel {
        sku,
        on_hand,
        reserved,
        version,
    } = level;
    if *on_hand < 0 || *reserved < 0 {
        return Err(format!(
            "{sku}: {on_hand} on hand, {reserved} reserved (never negative)"
        ));
    }
    if reserved > on_hand {
        return Err(format!(
            "{sku}: {reserved} reserved of {on_hand} on hand (more than there is)"
        ));
    }
    if *version < 1 {
        return Err(format!(
            "{sku}: level version {version} is not 1, 2, 3, ..."
        ));
    }
    Ok(())
}

/// The lines of a reservation (at least one, each SKU valid, each quantity in
/// 1..=[`MAX_QUANTITY`]) and the levels after it: every SKU of the lines
/// exactly once, no other SKU, each a possible level.
fn check_lines_and_levels(
    lines: &[OrderLineQuantity],
    levels: &[StockLevel],
) -> Result<(), String> {
    if lines.is_empty() {
        return Err("a reservation needs at least one line".into());
    }
    for line in lines {
        check_sku(&line.sku)?;
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(format!(
                "{}: quantity {} is outside 1..={MAX_QUANTITY}",
                line.sku, line.quantity
            ));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for level in levels {
        check_stock_level(level)?;
        if !seen.insert(level.sku.as_str()) {
            return Err(format!("{}: more than one level", level.sku));
        }
        if !lines.iter().any(|l| l.sku == level.sku) {
            return Err(format!("{}: a level, but no line", level.sku));
        }
    }
    match lines.iter().find(|l| !seen.contains(l.sku.as_str())) {
        Some(line) => Err(format!("{}: a line, but no level", line.sku)),
        None => Ok(()),
    }
}

/// Shortages: at least one, each SKU once and valid, each asking for at
/// least one unit and more than were available.
fn check_shortages(shortages: &[Shortage]) -> Result<(), String> {
    if shortages.is_empty() {
        return Err("a rejection names at least one shortage".into());
    }
    let mut seen = std::collections::BTreeSet::new();
    for s in shortages {
        check_sku(&s.sku)?;
        if !seen.insert(s.sku.as_str()) {
            return Err(format!("{}: more than one shortage", s.sku));
        }
        if s.requested < 1 {
            return Err(format!(
                "{}: requested {} is not positive",
                s.sku, s.requested
            ));
        }
        if !(0..s.requested).contains(&s.available) {
            return Err(format!(
                "{}: {} available is no shortage of {} requested",
                s.sku, s.available, s.requested
            ));
        }
    }
    Ok(())
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

    fn level(sku: &str, on_hand: i64, reserved: i64, version: i64) -> StockLevel {
        StockLevel {
            sku: sku.into(),
            on_hand,
            reserved,
            version,
        }
    }

    fn reserved(lines: &[(&str, i32)], levels: Vec<StockLevel>) -> Event {
        Event::StockReserved(StockReserved {
            order_id: Uuid::nil(),
            lines: lines
                .iter()
                .map(|&(sku, quantity)| OrderLineQuantity {
                    sku: sku.into(),
                    quantity,
                })
                .collect(),
            levels,
        })
    }

    fn refused(event: Event, why: &str) {
        let error = event.validate().unwrap_err();
        assert!(error.contains(why), "{error:?} does not say {why:?}");
    }

    #[test]
    fn validation_refuses_impossible_stock_levels_and_reservations() {
        let ok = reserved(
            &[("A", 2), ("B", 1), ("A", 1)],
            vec![level("A", 5, 3, 2), level("B", 1, 1, 7)],
        );
        assert_eq!(ok.validate(), Ok(()));
        refused(reserved(&[], vec![]), "at least one line");
        refused(
            reserved(&[("A", 0)], vec![level("A", 5, 0, 1)]),
            "quantity 0",
        );
        let too_many = MAX_QUANTITY + 1;
        refused(
            reserved(&[("A", too_many)], vec![level("A", 1, 0, 1)]),
            "outside",
        );
        refused(
            reserved(&[("A", 1)], vec![level("A", 1, 2, 1)]),
            "more than there is",
        );
        refused(
            reserved(&[("A", 1)], vec![level("A", -1, 0, 1)]),
            "never negative",
        );
        refused(
            reserved(&[("A", 1)], vec![level("A", 1, 1, 0)]),
            "version 0",
        );
        refused(reserved(&[("A", 1)], vec![]), "A: a line, but no level");
        refused(
            reserved(&[("A", 1)], vec![level("A", 1, 1, 1), level("B", 1, 0, 1)]),
            "B: a level, but no line",
        );
        refused(
            reserved(&[("A", 1)], vec![level("A", 1, 1, 1), level("A", 1, 1, 2)]),
            "more than one level",
        );
        refused(
            reserved(&[("-A", 1)], vec![level("-A", 1, 1, 1)]),
            "SKU \"-A\"",
        );

        let set = |quantity: i64, level: StockLevel| {
            Event::StockSet(StockSet {
                sku: "A".into(),
                quantity,
                level,
            })
        };
        assert_eq!(set(4, level("A", 4, 3, 9)).validate(), Ok(()));
        assert_eq!(set(0, level("A", 0, 0, 1)).validate(), Ok(()));
        refused(
            set(4, level("A", 5, 0, 2)),
            "set to 4 units, but 5 are on hand",
        );
        refused(set(4, level("B", 4, 0, 2)), "level of \"B\"");
        let restocked = |quantity: i64, on_hand: i64| {
            Event::StockRestocked(StockRestocked {
                sku: "A".into(),
                quantity,
                level: level("A", on_hand, 0, 3),
            })
        };
        assert_eq!(restocked(10, 12).validate(), Ok(()));
        refused(restocked(0, 12), "not positive");
        refused(restocked(13, 12), "only 12 are on hand");

        let rejected = |shortages: Vec<(&str, i64, i64)>| {
            Event::StockRejected(StockRejected {
                order_id: Uuid::nil(),
                shortages: shortages
                    .into_iter()
                    .map(|(sku, requested, available)| Shortage {
                        sku: sku.into(),
                        requested,
                        available,
                    })
                    .collect(),
            })
        };
        assert_eq!(rejected(vec![("A", 3, 2), ("B", 1, 0)]).validate(), Ok(()));
        refused(rejected(vec![]), "at least one shortage");
        refused(rejected(vec![("A", 3, 3)]), "no shortage");
        refused(rejected(vec![("A", 3, -1)]), "no shortage");
        refused(rejected(vec![("A", 0, 0)]), "not positive");
        refused(
            rejected(vec![("A", 3, 2), ("A", 1, 0)]),
            "more than one shortage",
        );
    }

    /// The aggregate id of reservation events is the order id, of stock events the SKU.
    #[test]
    fn inventory_events_are_keyed_by_order_or_sku() {
        let order_id = Uuid::from_u128(42);
        let confirmed = Event::OrderConfirmed(OrderConfirmed { order_id });
        assert_eq!(confirmed.aggregate_type(), crate::ORDER_AGGREGATE);
        let released = Event::StockReleased(StockReleased {
            order_id,
            lines: vec![],
            levels: vec![],
            reason: "r".into(),
        });
        assert_eq!(released.aggregate_type(), crate::RESERVATION_AGGREGATE);
        assert_eq!(released.aggregate_id(), order_id.to_string());
        let set = Event::StockSet(StockSet {
            sku: "PEN-BLUE".into(),
            quantity: 1,
            level: level("PEN-BLUE", 1, 0, 1),
        });
        assert_eq!(set.aggregate_type(), crate::STOCK_AGGREGATE);
        assert_eq!(set.aggregate_id(), "PEN-BLUE");
        let creators: Vec<EventType> = EventType::ALL
            .iter()
            .copied()
            .filter(|k| k.creates_aggregate())
            .collect();
        assert_eq!(
            creators,
            [
                EventType::CustomerRegistered,
                EventType::OrderPlaced,
                EventType::StockReserved,
                EventType::StockRejected
            ]
        );
    }
}

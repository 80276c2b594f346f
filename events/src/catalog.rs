//! The catalog: everything a consumer needs to know about each event, kept
//! next to the types so the documents cannot drift from the code.
//!
//! [`specs`] lists every event type with its producer, consumers and version
//! history; [`schemas`] derives a JSON Schema per event type and version from
//! the Rust types; [`render_markdown`] writes `docs/event_catalog.md`.
//! `writer catalog` writes both to `docs/`, and a test fails when the
//! checked-in files differ from what the code generates.

use serde_json::Value;
use uuid::Uuid;

use crate::event::*;
use crate::{
    header, topic_for, ContractError, Event, EventType, CUSTOMER_AGGREGATE, ORDER_AGGREGATE,
    RESERVATION_AGGREGATE, STOCK_AGGREGATE, TOPIC_PREFIX,
};

/// One schema version of an event type.
#[derive(Debug, Clone, Copy)]
pub struct VersionSpec {
    pub version: i32,
    /// What changed in this version and how older consumers are affected.
    pub change: &'static str,
    schema: fn() -> schemars::Schema,
    /// Decodes a payload of this (older) version into the current event;
    /// `None` for the current version, and for an old one no consumer reads.
    pub upcast: Option<Upcaster>,
}

/// An old version's payload to the current event ([`crate::upcast`]).
pub type Upcaster = fn(&[u8]) -> Result<Event, ContractError>;

/// What the catalog says about one event type.
#[derive(Debug, Clone, Copy)]
pub struct EventSpec {
    pub kind: EventType,
    pub description: &'static str,
    /// The command that produces it: the writer's or the inventory's.
    pub producer: &'static str,
    /// Who consumes it: the read models the projector changes when it
    /// applies the event, and the services that react to it (`inventory`,
    /// the order reactor `writer react`).
    pub consumers: &'static [&'static str],
    /// Oldest first; the last is what producers write now.
    pub versions: &'static [VersionSpec],
    example: fn() -> Event,
}

impl EventSpec {
    pub fn event_type(&self) -> &'static str {
        self.kind.name()
    }

    pub fn aggregate_type(&self) -> &'static str {
        self.kind.aggregate_type()
    }

    pub fn current_version(&self) -> i32 {
        self.versions.last().map_or(1, |v| v.version)
    }

    pub fn example(&self) -> Event {
        (self.example)()
    }
}

fn schema<T: schemars::JsonSchema>() -> schemars::Schema {
    schemars::schema_for!(T)
}

const fn v1<T: schemars::JsonSchema>() -> &'static [VersionSpec] {
    &[VersionSpec {
        version: 1,
        change: "First version.",
        schema: schema::<T>,
        upcast: None,
    }]
}

const ORDER_VIEW: &str = "order_view";
const CUSTOMER_SUMMARY: &str = "customer_summary";
const PRODUCT_SALES: &str = "product_sales_daily";
const STOCK_VIEW: &str = "stock_view";
/// The inventory service: reserves stock for placed orders, releases it for
/// cancelled ones and ships it with shipped ones.
const INVENTORY: &str = "inventory";
/// The order service's order reactor: confirms or rejects placed orders on
/// the inventory's reply.
const ORDER_REACTOR: &str = "writer react";
/// The consumers that are services of their own; every other consumer is a
/// read model of the projector.
const SERVICES: [&str; 2] = [INVENTORY, ORDER_REACTOR];

fn example_address() -> Address {
    Address {
        street: "12 Analytical Row".into(),
        city: "London".into(),
        postal_code: "N1 9GU".into(),
        country: "GB".into(),
    }
}

const EXAMPLE_ORDER: Uuid = Uuid::from_u128(0x7c9e_6679_7425_40de_944b_e07f_c1f9_0ae7);

/// The lines of the example order (`OrderPlaced`'s), as the inventory sees them.
fn example_lines() -> Vec<OrderLineQuantity> {
    vec![
        OrderLineQuantity {
            sku: "BOOK-DDIA".into(),
            quantity: 1,
        },
        OrderLineQuantity {
            sku: "PEN-BLUE".into(),
            quantity: 3,
        },
    ]
}

fn example_level(sku: &str, on_hand: i64, reserved: i64, version: i64) -> StockLevel {
    StockLevel {
        sku: sku.into(),
        on_hand,
        reserved,
        version,
    }
}

fn example_shortages() -> Vec<Shortage> {
    vec![Shortage {
        sku: "BOOK-DDIA".into(),
        requested: 1,
        available: 0,
    }]
}

static SPECS: &[EventSpec] = &[
    EventSpec {
        kind: EventType::CustomerRegistered,
        description: "A customer registered. Orders can be placed for them from now on; the read side learns their name and e-mail.",
        producer: "writer customer register",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY],
        versions: v1::<CustomerRegistered>(),
        example: || {
            Event::CustomerRegistered(CustomerRegistered {
                customer_id: "c-ada".into(),
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into(),
                address: example_address(),
            })
        },
    },
    EventSpec {
        kind: EventType::CustomerContactChanged,
        description: "A customer's name or e-mail changed. Every order in order_view that shows the customer is updated.",
        producer: "writer customer change-contact",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY],
        versions: v1::<CustomerContactChanged>(),
        example: || {
            Event::CustomerContactChanged(CustomerContactChanged {
                customer_id: "c-ada".into(),
                name: "Ada King".into(),
                email: "ada.king@example.com".into(),
            })
        },
    },
    EventSpec {
        kind: EventType::CustomerAddressChanged,
        description: "A customer's default shipping address changed. Orders placed earlier keep the address they were placed with.",
        producer: "writer customer change-address",
        consumers: &[CUSTOMER_SUMMARY],
        versions: v1::<CustomerAddressChanged>(),
        example: || {
            Event::CustomerAddressChanged(CustomerAddressChanged {
                customer_id: "c-ada".into(),
                address: example_address(),
            })
        },
    },
    EventSpec {
        kind: EventType::OrderPlaced,
        description: "A registered customer placed an order; it awaits the inventory's reservation (`OrderConfirmed` or `OrderRejected`), then payment. Counts as a sale of each line's units on the day it was placed.",
        producer: "writer order place",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY, PRODUCT_SALES, INVENTORY],
        versions: &[
            VersionSpec {
                version: 1,
                change: "First version.",
                schema: schema::<OrderPlacedV1>,
                upcast: Some(|payload| {
                    Ok(Event::OrderPlaced(crate::upcast::order_placed_v1(
                        crate::event::parse_payload(payload)?,
                    )))
                }),
            },
            VersionSpec {
                version: 2,
                change: "Added optional `shipping_address` (the customer's address at placement). Consumer-first: a consumer must know v2 before producers write it, because a consumer that knows only v1 does not guess at a v2 record (the projector dead-letters an unknown version and parks the order's later events until it is replayed). Old records stay readable: the projector upcasts v1 events to v2 with `shipping_address` absent.",
                schema: schema::<OrderPlaced>,
                upcast: None,
            },
        ],
        example: || {
            Event::OrderPlaced(OrderPlaced {
                order_id: EXAMPLE_ORDER,
                customer_id: "c-ada".into(),
                currency: "EUR".into(),
                lines: vec![
                    OrderLine { sku: "BOOK-DDIA".into(), quantity: 1, unit_price_cents: 4250 },
                    OrderLine { sku: "PEN-BLUE".into(), quantity: 3, unit_price_cents: 120 },
                ],
                total_cents: 4610,
                shipping_address: Some(example_address()),
            })
        },
    },
    EventSpec {
        kind: EventType::OrderPaid,
        description: "The order was paid in full (the amount equals the total). Adds to the customer's lifetime value.",
        producer: "writer order pay",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY],
        versions: v1::<OrderPaid>(),
        example: || {
            Event::OrderPaid(OrderPaid {
                order_id: EXAMPLE_ORDER,
                payment_reference: "pay-2026-0001".into(),
                amount_cents: 4610,
                currency: "EUR".into(),
            })
        },
    },
    EventSpec {
        kind: EventType::OrderShipped,
        description: "A paid order was handed to a carrier.",
        producer: "writer order ship",
        consumers: &[ORDER_VIEW, INVENTORY],
        versions: v1::<OrderShipped>(),
        example: || {
            Event::OrderShipped(OrderShipped {
                order_id: EXAMPLE_ORDER,
                carrier: "DHL".into(),
                tracking_number: "JD0146000033".into(),
            })
        },
    },
    EventSpec {
        kind: EventType::OrderDelivered,
        description: "A shipped order reached the customer; it is no longer open.",
        producer: "writer order deliver",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY],
        versions: v1::<OrderDelivered>(),
        example: || Event::OrderDelivered(OrderDelivered { order_id: EXAMPLE_ORDER }),
    },
    EventSpec {
        kind: EventType::OrderCancelled,
        description: "The order was cancelled before it shipped. Its units and revenue are taken out of product sales; stock reserved for it is released (`StockReleased`); a paid order now awaits a refund.",
        producer: "writer order cancel",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY, PRODUCT_SALES, INVENTORY],
        versions: v1::<OrderCancelled>(),
        example: || {
            Event::OrderCancelled(OrderCancelled {
                order_id: EXAMPLE_ORDER,
                reason: "customer changed their mind".into(),
            })
        },
    },
    EventSpec {
        kind: EventType::OrderRefunded,
        description: "The payment of a cancelled order, or of a delivered order that was returned, went back in full. Lowers the customer's lifetime value; a returned order's units and revenue leave product sales.",
        producer: "writer order refund",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY, PRODUCT_SALES],
        versions: v1::<OrderRefunded>(),
        example: || {
            Event::OrderRefunded(OrderRefunded {
                order_id: EXAMPLE_ORDER,
                amount_cents: 4610,
                currency: "EUR".into(),
                reason: "returned: damaged in transit".into(),
            })
        },
    },
    EventSpec {
        kind: EventType::OrderConfirmed,
        description: "The inventory reserved stock for every line of a placed order (its `StockReserved`, relayed by the order reactor); the order may now be paid.",
        producer: "writer react (order reactor, on StockReserved)",
        consumers: &[ORDER_VIEW],
        versions: v1::<OrderConfirmed>(),
        example: || Event::OrderConfirmed(OrderConfirmed { order_id: EXAMPLE_ORDER }),
    },
    EventSpec {
        kind: EventType::OrderRejected,
        description: "The inventory could not reserve stock for a placed order (its `StockRejected`, relayed by the order reactor): the order ends here, unpaid, no longer open and not a sale. `shortages` names the SKUs that were short.",
        producer: "writer react (on StockRejected)",
        consumers: &[ORDER_VIEW, CUSTOMER_SUMMARY, PRODUCT_SALES],
        versions: v1::<OrderRejected>(),
        example: || {
            Event::OrderRejected(OrderRejected {
                order_id: EXAMPLE_ORDER,
                reason: "not enough stock".into(),
                shortages: example_shortages(),
            })
        },
    },
    EventSpec {
        kind: EventType::StockSet,
        description: "A person set a SKU's units on hand (e.g. after counting them). The SKU's first `StockSet` starts its stock. Reserved units stay reserved: the inventory refuses a quantity below them.",
        producer: "inventory stock set",
        consumers: &[STOCK_VIEW],
        versions: v1::<StockSet>(),
        example: || {
            Event::StockSet(StockSet {
                sku: "PEN-BLUE".into(),
                quantity: 200,
                level: example_level("PEN-BLUE", 200, 0, 1),
            })
        },
    },
    EventSpec {
        kind: EventType::StockRestocked,
        description: "Units of a SKU arrived in the warehouse and were added to its units on hand.",
        producer: "inventory stock add",
        consumers: &[STOCK_VIEW],
        versions: v1::<StockRestocked>(),
        example: || {
            Event::StockRestocked(StockRestocked {
                sku: "BOOK-DDIA".into(),
                quantity: 10,
                level: example_level("BOOK-DDIA", 12, 0, 4),
            })
        },
    },
    EventSpec {
        kind: EventType::StockReserved,
        description: "The inventory reserved stock for every line of a placed order, all or nothing. The reserved units are no longer available to other orders; the order reactor confirms the order (`OrderConfirmed`).",
        producer: "inventory run (on OrderPlaced / OrderCancelled / OrderShipped)",
        consumers: &[STOCK_VIEW, ORDER_REACTOR],
        versions: v1::<StockReserved>(),
        example: || {
            Event::StockReserved(StockReserved {
                order_id: EXAMPLE_ORDER,
                lines: example_lines(),
                levels: vec![
                    example_level("BOOK-DDIA", 12, 1, 5),
                    example_level("PEN-BLUE", 200, 3, 2),
                ],
            })
        },
    },
    EventSpec {
        kind: EventType::StockRejected,
        description: "The inventory could not reserve stock for a placed order: at least one SKU had fewer units available than the order asked for. Nothing was reserved; the order reactor rejects the order (`OrderRejected`).",
        producer: "inventory run (on OrderPlaced / OrderCancelled / OrderShipped)",
        consumers: &[ORDER_REACTOR],
        versions: v1::<StockRejected>(),
        example: || {
            Event::StockRejected(StockRejected {
                order_id: EXAMPLE_ORDER,
                shortages: example_shortages(),
            })
        },
    },
    EventSpec {
        kind: EventType::StockReleased,
        description: "An order whose stock was reserved was cancelled before it shipped: the inventory released its reserved units, which are available again (the saga's compensation).",
        producer: "inventory run (on OrderPlaced / OrderCancelled / OrderShipped)",
        consumers: &[STOCK_VIEW],
        versions: v1::<StockReleased>(),
        example: || {
            Event::StockReleased(StockReleased {
                order_id: EXAMPLE_ORDER,
                lines: example_lines(),
                levels: vec![
                    example_level("BOOK-DDIA", 12, 0, 6),
                    example_level("PEN-BLUE", 200, 0, 3),
                ],
                reason: "customer changed their mind".into(),
            })
        },
    },
    EventSpec {
        kind: EventType::StockShipped,
        description: "An order whose stock was reserved shipped: its reserved units left the warehouse with it (units on hand and reserved both drop by the lines' units).",
        producer: "inventory run (on OrderPlaced / OrderCancelled / OrderShipped)",
        consumers: &[STOCK_VIEW],
        versions: v1::<StockShipped>(),
        example: || {
            Event::StockShipped(StockShipped {
                order_id: EXAMPLE_ORDER,
                lines: example_lines(),
                levels: vec![
                    example_level("BOOK-DDIA", 11, 0, 6),
                    example_level("PEN-BLUE", 197, 0, 3),
                ],
            })
        },
    },
];

/// Every event type, in catalog order.
pub fn specs() -> &'static [EventSpec] {
    SPECS
}

/// The catalog entry of the type named `event_type`, if there is one.
pub fn spec(event_type: &str) -> Option<&'static EventSpec> {
    EventType::parse(event_type).map(spec_of)
}

/// The catalog entry of `kind` (every type has one: a test walks them all).
pub fn spec_of(kind: EventType) -> &'static EventSpec {
    SPECS.iter().find(|s| s.kind == kind).expect(
        "every event type has a catalog entry (test: every_event_type_has_exactly_one_spec)",
    )
}

/// `(file name, JSON text)` of every event type and version, e.g.
/// `("OrderPlaced.v2.json", "{...}")`.
pub fn schemas() -> Vec<(String, String)> {
    SPECS
        .iter()
        .flat_map(|spec| {
            spec.versions.iter().map(move |v| {
                let text = serde_json::to_string_pretty(&(v.schema)()).unwrap_or_default() + "\n";
                (format!("{}.v{}.json", spec.event_type(), v.version), text)
            })
        })
        .collect()
}

/// A JSON Schema type as one short phrase (`string (uuid)`, `Address | null`).
fn type_of(property: &Value) -> String {
    if let Some(reference) = property.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_owned();
    }
    if let Some(any) = property.get("anyOf").and_then(Value::as_array) {
        return any.iter().map(type_of).collect::<Vec<_>>().join(" \\| ");
    }
    let base = match property.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" \\| "),
        _ => "any".into(),
    };
    let base = match property.get("items") {
        Some(items) if base == "array" => format!("array of {}", type_of(items)),
        _ => base,
    };
    match property.get("format").and_then(Value::as_str) {
        Some(format) => format!("{base} ({format})"),
        None => base,
    }
}

fn field_rows(schema: &Value, out: &mut String) {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let description = property
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .replace('\n', " ");
            out.push_str(&format!(
                "| `{name}` | {} | {} | {description} |\n",
                type_of(property),
                if required.contains(&name.as_str()) {
                    "yes"
                } else {
                    "no"
                },
            ));
        }
    }
}

fn fields_table(schema: &Value) -> String {
    let mut out = String::from("| field | type | required | meaning |\n|---|---|---|---|\n");
    field_rows(schema, &mut out);
    if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
        for (name, def) in defs {
            out.push_str(&format!(
                "\n`{name}`:\n\n| field | type | required | meaning |\n|---|---|---|---|\n"
            ));
            field_rows(def, &mut out);
        }
    }
    out
}

/// Which aggregate version an event type carries.
fn aggregate_version(kind: EventType) -> &'static str {
    match kind {
        // A SKU's stock starts with its first `StockSet`, which is no creator
        // ([`EventType::creates_aggregate`]): later ones follow the SKU's last event.
        EventType::StockSet => {
            "1 for the SKU's first change (it creates the aggregate), else the aggregate's previous version + 1"
        }
        kind if kind.creates_aggregate() => "always 1 (it creates the aggregate)",
        _ => "2 or later: the aggregate's previous version + 1",
    }
}

/// What an aggregate type's id is (the record key), and what the ordering
/// guarantee is per.
fn aggregate_words(aggregate_type: &str) -> (&'static str, &'static str) {
    match aggregate_type {
        ORDER_AGGREGATE => ("the order id", "order"),
        CUSTOMER_AGGREGATE => ("the customer id", "customer"),
        RESERVATION_AGGREGATE => ("the order id", "reservation"),
        STOCK_AGGREGATE => ("the SKU", "SKU's stock"),
        _ => ("the aggregate id", "aggregate"),
    }
}

/// `` projector -> `order_view`; `inventory` ``: the read models, then the services.
fn consumers_phrase(consumers: &[&str]) -> String {
    let code = |c: &&str| format!("`{c}`");
    let (services, models): (Vec<&str>, Vec<&str>) =
        consumers.iter().partition(|c| SERVICES.contains(c));
    let mut parts = Vec::new();
    if !models.is_empty() {
        let models: Vec<String> = models.iter().map(code).collect();
        parts.push(format!("projector -> {}", models.join(", ")));
    }
    parts.extend(services.iter().map(code));
    parts.join("; ")
}

/// One complete record as the Event Router publishes it.
fn record_example() -> String {
    let event = Event::OrderPaid(OrderPaid {
        order_id: EXAMPLE_ORDER,
        payment_reference: "psp-4711".into(),
        amount_cents: 4248,
        currency: "EUR".into(),
    });
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:15:00.123456Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let mut envelope = crate::Envelope::new(event, 2, at);
    envelope.event_id = Uuid::from_u128(0x0192_4f3e_8a1b_7c2d_9e0f_1a2b_3c4d_5e6f);
    envelope.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let headers: String = envelope
        .to_headers()
        .iter()
        .map(|(k, v)| match *k {
            // As Debezium renders a timestamptz column: microseconds, `Z`.
            header::OCCURRED_AT => format!(
                "| `{k}` | `{}` |\n",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            ),
            _ => format!("| `{k}` | `{v}` |\n"),
        })
        .collect();
    format!(
        "## A record on the wire\n\nAn `OrderPaid` on topic `{}`:\n\n- **Key**: `{}` (the aggregate id, a plain string)\n- **Headers** (every one, as UTF-8 strings; `aggregate_type` is not a header, it is the topic):\n\n| header | value |\n|---|---|\n{headers}\n- **Value**:\n\n```json\n{}\n```\n\n- **Kafka timestamp**: when Debezium produced the record (the producer's create time), not when the event happened; use the `occurred_at` header for that.\n\n",
        topic_for(ORDER_AGGREGATE),
        envelope.aggregate_id,
        serde_json::to_string_pretty(&envelope.event.to_payload()).unwrap_or_default()
    )
}

/// What a consumer team can rely on, and must do.
const CONSUMER_RULES: &str = "## Rules for consumers\n\n\
- **Null and absent are the same.** The Event Router's JSON expansion drops fields whose value is `null`, so an optional field (e.g. `shipping_address`) may be absent rather than `null`. Treat both as \"not set\".\n\
- **Only `OrderPlaced` names the customer.** Later order events (`OrderPaid`, `OrderShipped`, ...) carry the `order_id` only; a consumer that needs the customer keeps the order → customer mapping from `OrderPlaced` (the projector does, in `customer_summary_orders`).\n\
- **Deduplicate by event id, apply by aggregate version.** Delivery is at-least-once for every consumer; exactly-once effects are the consumer's job (the projector's inbox and version policy are one way).\n\
- **Unknown schema versions are not guessed at.** A new version is consumer-first: consumers learn it (an upcaster) before producers write it; a record of an unknown version is dead-lettered and replayed later.\n\
- **Stock levels: keep the highest `version` per SKU.** A SKU's level travels in stock events and in reservation events, different aggregates that arrive in any interleaving; a level's `version` counts the SKU's changes, so a consumer keeps the level with the highest one and ignores older ones.\n\
- **Consumer groups.** The projector consumes as group `projector`, the inventory service as `inventory` (the order topic), the order reactor as `reactor` (the reservation topic), in both stacks. A new consumer uses a group of its own and starts from the earliest offset: the topics keep every event (`retention.ms=-1`).\n\
- **Owner.** The order service team owns this contract (`events/` and `writer/`); changes go through the catalog and a new schema version.\n\
- **Personal data.** `CustomerRegistered`, `CustomerContactChanged` and `CustomerAddressChanged` carry names, e-mail and postal addresses; `OrderPlaced` carries a shipping address. The topics keep them for good and the projector's `dead_letters` and `parked_events` keep whole records, so erasure requests need a plan (e.g. encrypting personal fields per customer and deleting the key); the inbox stores no payload.\n\n";

/// How the order service and the inventory service reserve stock for an order.
const SAGA: &str = "## The stock-reservation saga\n\n\
The order service and the inventory service each own their database and outbox and react to each other's events:\n\n\
1. `OrderPlaced` (order): the inventory reserves every line's units, all or nothing: `StockReserved`, or `StockRejected` when a SKU is short (reservation, keyed by the order id).\n\
2. The order service's order reactor answers on the order: `OrderConfirmed` on `StockReserved` (the order may now be paid), `OrderRejected` on `StockRejected` (the order ends).\n\
3. `OrderCancelled` of an order whose stock is reserved: the inventory releases it, `StockReleased` (the compensation). `OrderShipped`: the reserved units leave the warehouse, `StockShipped`.\n\n\
Stock levels change with `StockSet` and `StockRestocked` (stock, keyed by the SKU) as well as with the reservation events; every one carries the SKU's level right after it.\n\n";

/// `docs/event_catalog.md`, generated.
pub fn render_markdown() -> String {
    let mut md = String::new();
    md.push_str("# Event catalog\n\n");
    md.push_str("<!-- Generated by `cargo run -p writer -- catalog` from the `outbox-events` crate. Do not edit: a test fails when this file differs from the code. -->\n\n");
    md.push_str("Every event the system publishes. Each service writes its events to its own `outbox` table in the same transaction as the state change they describe: the order service (`writer`) its orders and customers, the inventory service (`inventory`) its reservations and stock. Debezium's outbox Event Router publishes them; the projector consumes them into the read models, and each service consumes the other's (the saga below).\n\n");
    md.push_str("## Guarantees that hold for every event\n\n");
    md.push_str(&format!("- **Topic**: `{TOPIC_PREFIX}<aggregate type>`, 3 partitions. **Key**: the aggregate id, so all events of one aggregate land in one partition.\n"));
    md.push_str("- **Ordering**: per aggregate, in aggregate-version order (1, 2, 3, ... without gaps; the projector applies version n only after n - 1 and parks what arrives after a gap). No order across aggregates: a customer's events and the orders that reference them may arrive in any interleaving, and every read model converges whatever it is.\n");
    md.push_str("- **Delivery**: at-least-once from the outbox to Kafka (Debezium may republish after a crash). Effects are exactly-once: the projector records each event id in its `inbox` table in the same transaction as the read-model change and skips ids it has seen.\n");
    md.push_str("- **Value**: the payload as plain JSON (`value.converter.schemas.enable=false`). Consumers ignore unknown fields (an added optional field needs no new version); an unknown schema version is not guessed at (see the rules below).\n");
    md.push_str(&format!(
        "- **Headers** (strings): `{}` (event id, UUID), `{}`, `{}`, `{}`, `{}` (RFC 3339), `{}` (W3C trace context, may be empty).\n",
        header::EVENT_ID,
        header::EVENT_TYPE,
        header::SCHEMA_VERSION,
        header::AGGREGATE_VERSION,
        header::OCCURRED_AT,
        header::TRACEPARENT
    ));
    md.push_str("- **Schemas**: JSON Schema per event type and version in [`schemas/`](schemas/), generated from the Rust types, with the constraints the producer enforces (patterns, ranges, minimum items). The projector checks the same constraints and dead-letters a record that breaks them.\n\n");
    md.push_str(&record_example());
    md.push_str(CONSUMER_RULES);
    md.push_str(SAGA);
    md.push_str("## Overview\n\n| event | current version | topic | producer | consumers |\n|---|---|---|---|---|\n");
    for spec in SPECS {
        md.push_str(&format!(
            "| [{0}](#{1}) | v{2} | `{3}` | `{4}` | {5} |\n",
            spec.event_type(),
            spec.event_type().to_lowercase(),
            spec.current_version(),
            topic_for(spec.aggregate_type()),
            spec.producer,
            spec.consumers
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for spec in SPECS {
        let current = spec
            .versions
            .last()
            .map(|v| (v.schema)())
            .unwrap_or_default();
        let current = serde_json::to_value(current).unwrap_or_default();
        let example =
            serde_json::to_string_pretty(&spec.example().to_payload()).unwrap_or_default();
        md.push_str(&format!(
            "\n## {}\n\n{}\n\n",
            spec.event_type(),
            spec.description
        ));
        let (key, ordered_per) = aggregate_words(spec.aggregate_type());
        md.push_str(&format!(
            "- **Topic**: `{}`\n- **Key**: {} (`aggregate_id`)\n- **Aggregate version**: {}\n- **Current schema version**: {} ([schema](schemas/{}.v{}.json))\n- **Producer**: `{}` (one transaction: state change + outbox row)\n- **Consumers**: {}\n- **Delivery**: at-least-once; each consumer applies it once per event id (the projector: its inbox)\n- **Ordering**: after every earlier event of the same {}\n\n",
            topic_for(spec.aggregate_type()),
            key,
            aggregate_version(spec.kind),
            spec.current_version(),
            spec.event_type(),
            spec.current_version(),
            spec.producer,
            consumers_phrase(spec.consumers),
            ordered_per,
        ));
        md.push_str("### Payload\n\n");
        md.push_str(&fields_table(&current));
        md.push_str(&format!(
            "\n### Example\n\n```json\n{example}\n```\n\n### Version history\n\n"
        ));
        for v in spec.versions {
            md.push_str(&format!(
                "- **v{}** ([schema](schemas/{}.v{}.json)): {}\n",
                v.version,
                spec.event_type(),
                v.version,
                v.change
            ));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry is whole: every event type (the one list in `event.rs`)
    /// has exactly one catalog entry, in the same order, whose example is of
    /// that type and round-trips through its current version; every older
    /// version either upcasts into the current type or is refused by name.
    #[test]
    fn every_event_type_has_exactly_one_spec() {
        let kinds: Vec<EventType> = SPECS.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds,
            EventType::ALL,
            "one entry per type, in the list's order"
        );
        for &kind in EventType::ALL {
            let spec = spec_of(kind);
            assert_eq!(EventType::parse(kind.name()), Some(kind));
            let event = spec.example();
            assert_eq!(event.kind(), kind);
            assert_eq!(event.validate(), Ok(()), "{kind}'s example");
            assert_eq!(event.aggregate_type(), kind.aggregate_type());
            assert_eq!(event.schema_version(), spec.current_version());
            let bytes = event.to_payload().to_string();
            let back =
                Event::from_payload(kind.name(), spec.current_version(), bytes.as_bytes()).unwrap();
            assert_eq!(back, event);
            let versions: Vec<i32> = spec.versions.iter().map(|v| v.version).collect();
            assert_eq!(versions, (1..=spec.current_version()).collect::<Vec<_>>());
            assert!(spec.versions.last().unwrap().upcast.is_none());
            let unknown = Event::from_payload(kind.name(), spec.current_version() + 1, b"{}");
            assert!(matches!(unknown, Err(ContractError::UnknownVersion { .. })));
        }
    }

    /// Every consumer is a read model of the projector or a service, and
    /// every read model and service consumes something.
    #[test]
    fn every_consumer_is_a_read_model_or_a_service() {
        let read_models = [ORDER_VIEW, CUSTOMER_SUMMARY, PRODUCT_SALES, STOCK_VIEW];
        let known: Vec<&str> = read_models.iter().chain(&SERVICES).copied().collect();
        for spec in SPECS {
            for consumer in spec.consumers {
                assert!(
                    known.contains(consumer),
                    "{}: {consumer}",
                    spec.event_type()
                );
            }
        }
        for consumer in known {
            assert!(
                SPECS.iter().any(|s| s.consumers.contains(&consumer)),
                "{consumer}"
            );
        }
        assert_eq!(
            consumers_phrase(spec_of(EventType::OrderPlaced).consumers),
            "projector -> `order_view`, `customer_summary`, `product_sales_daily`; `inventory`"
        );
        assert_eq!(
            consumers_phrase(spec_of(EventType::StockRejected).consumers),
            "`writer react`"
        );
    }

    #[test]
    fn checked_in_docs_match_the_code() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
        let fix = "run `cargo run -p writer -- catalog` and commit docs/";
        let catalog = std::fs::read_to_string(docs.join("event_catalog.md")).unwrap_or_default();
        assert!(
            catalog == render_markdown(),
            "docs/event_catalog.md is stale: {fix}"
        );
        let mut expected: Vec<String> = Vec::new();
        for (name, text) in schemas() {
            let on_disk =
                std::fs::read_to_string(docs.join("schemas").join(&name)).unwrap_or_default();
            assert!(on_disk == text, "docs/schemas/{name} is stale: {fix}");
            expected.push(name);
        }
        let mut present: Vec<String> = std::fs::read_dir(docs.join("schemas"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        present.sort();
        expected.sort();
        assert_eq!(
            present, expected,
            "docs/schemas has files the code does not generate: {fix}"
        );
    }
}

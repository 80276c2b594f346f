//! The event contract between the writer (producer) and the projector (consumer).
//!
//! Both sides depend on this crate, so an event's name, its schema version and
//! its payload shape are defined exactly once. The crate does no I/O.
//!
//! # Layout
//! - [`Envelope`]: the metadata every event carries. On the wire the metadata
//!   travels as Kafka headers set by Debezium's Event Router (names in
//!   [`header`]), the payload as the record value (plain JSON), the aggregate id
//!   as the record key.
//! - [`Event`] and [`EventType`]: every event type with its payload struct,
//!   generated from one list (`event.rs`); versions, upcasters and docs per type
//!   in the [`catalog`] registry, which decoding and the `schema_version` header use.
//! - [`Envelope::from_record`]: decodes a record's parts back into a typed
//!   envelope, with a [`ContractError`] that says what was wrong.
//! - [`OrderStatus`]: an order's statuses, their names in SQL and the event
//!   that leads to each (writer, projector and oracle share it).
//! - [`text`]: what a text field may hold (no NUL, bidirectional controls or
//!   invisible characters; a length bound), for producer and consumers alike.
//! - [`upcast`]: old schema versions to current ones (`OrderPlaced` v1 -> v2).
//! - [`catalog`]: producer, consumers and version history of every event, the
//!   JSON Schemas derived from the types, and `docs/event_catalog.md`.
//!
//! Consumers ignore unknown payload fields (no `deny_unknown_fields`), so a
//! producer may add optional fields without breaking older consumers.

pub mod catalog;
mod envelope;
mod event;
mod status;
pub mod text;
pub mod upcast;

pub use envelope::{header, ContractError, Envelope, MAX_RECORD_BYTES};
pub use event::{
    Address, CustomerAddressChanged, CustomerContactChanged, CustomerRegistered, Event, EventType,
    OrderCancelled, OrderDelivered, OrderLine, OrderPaid, OrderPlaced, OrderPlacedV1,
    OrderRefunded, OrderShipped, MAX_AMOUNT_CENTS, MAX_QUANTITY,
};
pub use status::OrderStatus;

/// Aggregate type of orders; Debezium routes it to the topic `outbox.event.order`.
pub const ORDER_AGGREGATE: &str = "order";
/// Aggregate type of customers; topic `outbox.event.customer`.
pub const CUSTOMER_AGGREGATE: &str = "customer";
/// Every aggregate type: the outbox's `aggregate_type` check constraint
/// (sql/write) allows exactly these, so no row can route to a topic that does
/// not exist and stall the relay.
pub const AGGREGATES: [&str; 2] = [ORDER_AGGREGATE, CUSTOMER_AGGREGATE];

/// What every outbox topic's name starts with: Debezium's Event Router routes
/// an event to `outbox.event.<aggregate type>` (`route.topic.replacement` in
/// `debezium/outbox-connector.json`; a test in `stack/tests/versions.rs` holds
/// that file, `debezium/topics.txt` and compose to this).
pub const TOPIC_PREFIX: &str = "outbox.event.";

/// Kafka topic that carries the events of an aggregate type.
pub fn topic_for(aggregate_type: &str) -> String {
    format!("{TOPIC_PREFIX}{aggregate_type}")
}

/// Every outbox topic, one per aggregate type.
pub fn outbox_topics() -> Vec<String> {
    AGGREGATES.iter().map(|a| topic_for(a)).collect()
}

/// The aggregate type a topic carries: what follows the last
/// [`TOPIC_PREFIX`] in its name (tests prefix their own topics:
/// `t42.outbox.event.order` carries orders); `None` for other topics.
pub fn aggregate_of_topic(topic: &str) -> Option<&str> {
    topic
        .rfind(TOPIC_PREFIX)
        .map(|at| &topic[at + TOPIC_PREFIX.len()..])
        .filter(|rest| !rest.is_empty())
}

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
//! - [`Event`]: every event type with its payload struct and schema version.
//! - [`Envelope::from_record`]: decodes a record's parts back into a typed
//!   envelope, with a [`ContractError`] that says what was wrong.
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
pub mod text;
pub mod upcast;

pub use envelope::{header, ContractError, Envelope, MAX_RECORD_BYTES};
pub use event::{
    Address, CustomerAddressChanged, CustomerContactChanged, CustomerRegistered, Event,
    OrderCancelled, OrderDelivered, OrderLine, OrderPaid, OrderPlaced, OrderPlacedV1,
    OrderRefunded, OrderShipped, MAX_AMOUNT_CENTS, MAX_QUANTITY,
};

/// Aggregate type of orders; Debezium routes it to the topic `outbox.event.order`.
pub const ORDER_AGGREGATE: &str = "order";
/// Aggregate type of customers; topic `outbox.event.customer`.
pub const CUSTOMER_AGGREGATE: &str = "customer";
/// Every aggregate type: the outbox's `aggregate_type` check constraint
/// (sql/write) allows exactly these, so no row can route to a topic that does
/// not exist and stall the relay.
pub const AGGREGATES: [&str; 2] = [ORDER_AGGREGATE, CUSTOMER_AGGREGATE];

/// Kafka topic that carries the events of an aggregate type.
///
/// Mirrors `route.topic.replacement` in `debezium/outbox-connector.json`.
pub fn topic_for(aggregate_type: &str) -> String {
    format!("outbox.event.{aggregate_type}")
}

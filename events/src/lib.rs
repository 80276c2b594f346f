//! The event contract between the services that produce events and those that
//! consume them: the order service (the `writer`, whose order reactor also
//! consumes the inventory's replies), the inventory service (which consumes
//! order events and produces reservation and stock events) and the projector
//! (which consumes events into the read models).
//!
//! Every side depends on this crate, so an event's name, its schema version
//! and its payload shape are defined exactly once. The crate does no I/O.
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
//! - Aggregate types and topics: the order service's ([`AGGREGATES`],
//!   [`outbox_topics`]: orders and customers), the inventory service's
//!   ([`INVENTORY_AGGREGATES`], [`inventory_topics`]: stock reservations and
//!   stock levels), and both ([`ALL_AGGREGATES`], [`all_topics`]). Each
//!   service writes only its own aggregate types to its own outbox.
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
    OrderCancelled, OrderConfirmed, OrderDelivered, OrderLine, OrderLineQuantity, OrderPaid,
    OrderPlaced, OrderPlacedV1, OrderRefunded, OrderRejected, OrderShipped, Shortage, StockLevel,
    StockRejected, StockReleased, StockReserved, StockRestocked, StockSet, StockShipped,
    MAX_AMOUNT_CENTS, MAX_QUANTITY,
};
pub use status::OrderStatus;

/// Aggregate type of orders; Debezium routes it to the topic `outbox.event.order`.
pub const ORDER_AGGREGATE: &str = "order";
/// Aggregate type of customers; topic `outbox.event.customer`.
pub const CUSTOMER_AGGREGATE: &str = "customer";
/// Aggregate type of an order's stock reservation (the inventory service's):
/// its id is the order id as text; topic `outbox.event.reservation`.
pub const RESERVATION_AGGREGATE: &str = "reservation";
/// Aggregate type of a SKU's stock (the inventory service's): its id is the
/// SKU; topic `outbox.event.stock`.
pub const STOCK_AGGREGATE: &str = "stock";

/// The order service's aggregate types: the write outbox's `aggregate_type`
/// check constraint (sql/write) allows exactly these, so no row can route to
/// a topic that does not exist and stall the relay.
pub const AGGREGATES: [&str; 2] = [ORDER_AGGREGATE, CUSTOMER_AGGREGATE];
/// The inventory service's aggregate types: exactly what its own outbox may
/// hold (the same reasoning as [`AGGREGATES`]).
pub const INVENTORY_AGGREGATES: [&str; 2] = [RESERVATION_AGGREGATE, STOCK_AGGREGATE];
/// Every aggregate type of the system: the order service's, then the
/// inventory service's.
pub const ALL_AGGREGATES: [&str; 4] = [
    ORDER_AGGREGATE,
    CUSTOMER_AGGREGATE,
    RESERVATION_AGGREGATE,
    STOCK_AGGREGATE,
];

/// What every outbox topic's name starts with: Debezium's Event Router routes
/// an event to `outbox.event.<aggregate type>` (`route.topic.replacement` in
/// `debezium/outbox-connector.json`; a test in `stack/tests/versions.rs` holds
/// that file, `debezium/topics.txt` and compose to this).
pub const TOPIC_PREFIX: &str = "outbox.event.";

/// Kafka topic that carries the events of an aggregate type.
pub fn topic_for(aggregate_type: &str) -> String {
    format!("{TOPIC_PREFIX}{aggregate_type}")
}

/// The order service's outbox topics, one per aggregate type of [`AGGREGATES`].
pub fn outbox_topics() -> Vec<String> {
    AGGREGATES.iter().map(|a| topic_for(a)).collect()
}

/// The inventory service's outbox topics, one per aggregate type of
/// [`INVENTORY_AGGREGATES`].
pub fn inventory_topics() -> Vec<String> {
    INVENTORY_AGGREGATES.iter().map(|a| topic_for(a)).collect()
}

/// Every outbox topic of the system, one per aggregate type of [`ALL_AGGREGATES`].
pub fn all_topics() -> Vec<String> {
    ALL_AGGREGATES.iter().map(|a| topic_for(a)).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event type belongs to an aggregate type of exactly one service,
    /// and every aggregate type has events; `ALL_AGGREGATES` is both services'.
    #[test]
    fn every_aggregate_type_belongs_to_one_service() {
        let both: Vec<&str> = AGGREGATES
            .iter()
            .chain(&INVENTORY_AGGREGATES)
            .copied()
            .collect();
        assert_eq!(both, ALL_AGGREGATES);
        assert!(AGGREGATES.iter().all(|a| !INVENTORY_AGGREGATES.contains(a)));
        for &kind in EventType::ALL {
            assert!(ALL_AGGREGATES.contains(&kind.aggregate_type()), "{kind}");
        }
        for aggregate in ALL_AGGREGATES {
            assert!(
                EventType::ALL
                    .iter()
                    .any(|k| k.aggregate_type() == aggregate),
                "{aggregate} has no events"
            );
        }
        let mut topics = outbox_topics();
        topics.extend(inventory_topics());
        assert_eq!(topics, all_topics());
        for topic in all_topics() {
            assert!(ALL_AGGREGATES.contains(&aggregate_of_topic(&topic).unwrap_or("")));
        }
    }
}

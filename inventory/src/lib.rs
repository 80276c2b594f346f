//! The inventory service: the other side of the stock-reservation saga.
//!
//! It owns stock per SKU and one reservation per order, in its own database
//! (`sql/inventory/`), and reacts to the order service's events with the
//! consumer core (crate `consumer`): its own consumer group, its own inbox,
//! and in **one transaction per batch** the inbox rows, the stock and
//! reservation changes and its replies in its own outbox, which a second
//! Debezium connector relays (topics `outbox.event.reservation` and
//! `outbox.event.stock`).
//!
//! | order event      | reservation         | stock (per SKU of the order)      | reply           |
//! |------------------|---------------------|-----------------------------------|-----------------|
//! | `OrderPlaced`    | `reserved`          | reserved += units (all lines fit) | `StockReserved` |
//! | `OrderPlaced`    | `rejected`          | unchanged (some line does not fit)| `StockRejected` |
//! | `OrderCancelled` | `reserved → released` | reserved -= units (compensation)| `StockReleased` |
//! | `OrderShipped`   | `reserved → shipped`  | on_hand and reserved -= units   | `StockShipped`  |
//!
//! A cancellation of an order whose stock was rejected (or already released)
//! changes nothing; a shipment without a reservation is dead-lettered (the
//! order service ships only confirmed orders). People set and add stock with
//! [`stock`] (`inventory stock set|add|show`), each a transaction with its
//! event (`StockSet`, `StockRestocked`).
//!
//! The stock model: `on_hand` units are in the warehouse, `reserved` of them
//! are held for confirmed orders, `available = on_hand - reserved`; neither
//! is ever negative. Every change of `on_hand` is in `stock_movements`, so for
//! every SKU `available + reserved = the last set + restocks since - shipped
//! since`.
//!
//! # Layout
//! - [`reservations`]: the [`consumer::Handler`]: reads and locks the stock
//!   rows and reservations a batch needs, decides per event in order, writes.
//! - [`stock`]: the people's commands on stock.
//! - `main.rs`: the `inventory` binary (migrate, run, stock).

pub mod reservations;
pub mod stock;

/// The service's name: its metrics (`inventory_*`), its environment
/// (`INVENTORY__*`) and its consumer group.
pub const SERVICE: &str = "inventory";

/// The inventory database's migrations: the consumer core's tables, then the
/// service's own (`sql/inventory/`).
fn runner() -> refinery::Runner {
    refinery::Runner::new(&[
        refinery::Migration::unapplied("V1__consumer_core", consumer::CORE_MIGRATION)
            .expect("a valid migration name"),
        refinery::Migration::unapplied(
            "V2__stock_and_reservations",
            include_str!("../../sql/inventory/V2__stock_and_reservations.sql"),
        )
        .expect("a valid migration name"),
        refinery::Migration::unapplied(
            "V3__roles_and_relay",
            include_str!("../../sql/inventory/V3__roles_and_relay.sql"),
        )
        .expect("a valid migration name"),
    ])
}

/// Applies the inventory database's migrations; idempotent.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<usize, refinery::Error> {
    let report = runner().run_async(client).await?;
    Ok(report.applied_migrations().len())
}

/// Migrations of this build the database has not applied yet.
pub async fn pending_migrations(
    client: &mut tokio_postgres::Client,
) -> Result<Vec<String>, refinery::Error> {
    service::pending_migrations(&runner(), client).await
}

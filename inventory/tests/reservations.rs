//! The inventory's handler on a real PostgreSQL, driven through the consumer
//! core exactly as `inventory run` drives it (`apply_batch`): one batch of
//! order events reserves, rejects, releases and ships, in order, with the
//! replies in the outbox; a redelivery changes nothing.

use std::sync::OnceLock;

use chrono::Utc;
use consumer::batch::apply_batch;
use consumer::position::Checkpoint;
use consumer::record::{Decoder, Record};
use inventory::reservations::Reservations;
use outbox_events::{Envelope, Event, OrderCancelled, OrderLine, OrderPlaced, OrderShipped};
use stack::{Component, Stack};
use uuid::Uuid;

fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let stack = Stack::for_tests("inventory").expect("test stack");
        stack
            .start(Component::Postgres, &|_| {})
            .expect("postgres starts");
        stack
    })
}

/// A fresh, migrated inventory database.
async fn database() -> consumer::worker::Db {
    let stack = stack();
    let dbname = format!("i_{}", Uuid::new_v4().simple());
    stack
        .admin_sql(
            "postgres",
            &format!("CREATE DATABASE {dbname} OWNER orders_owner"),
        )
        .expect("create database");
    let db = stack.db(&dbname);
    let settings: consumer::settings::Settings = serde_json::from_value(serde_json::json!({
        "database": { "host": db.host, "port": db.port, "user": db.user, "password": db.password, "dbname": db.dbname },
        "kafka": { "bootstrap_servers": "unused:9092", "topics": [] },
    }))
    .expect("settings");
    let mut client = consumer::worker::connect(inventory::SERVICE, &settings)
        .await
        .expect("connect");
    inventory::migrate(&mut client).await.expect("migrate");
    client
}

fn placed(order_id: Uuid, lines: &[(&str, i32)]) -> Envelope {
    let lines: Vec<OrderLine> = lines
        .iter()
        .map(|(sku, quantity)| OrderLine {
            sku: (*sku).into(),
            quantity: *quantity,
            unit_price_cents: 100,
        })
        .collect();
    Envelope::new(
        Event::OrderPlaced(OrderPlaced {
            order_id,
            customer_id: "c-1".into(),
            currency: "EUR".into(),
            total_cents: lines.iter().map(|l| i64::from(l.quantity) * 100).sum(),
            lines,
            shipping_address: None,
        }),
        1,
        Utc::now(),
    )
}

fn records(envelopes: &[Envelope], first_offset: i64) -> Vec<Record> {
    envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            Record::from_envelope(e, "outbox.event.order".into(), 0, first_offset + i as i64)
        })
        .collect()
}

async fn level(client: &consumer::worker::Db, sku: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT on_hand, reserved FROM stock WHERE sku = $1",
            &[&sku],
        )
        .await
        .expect("stock row");
    (row.get(0), row.get(1))
}

async fn status(client: &consumer::worker::Db, order: Uuid) -> String {
    client
        .query_one(
            "SELECT status FROM reservations WHERE order_id = $1",
            &[&order],
        )
        .await
        .expect("reservation")
        .get(0)
}

#[tokio::test]
async fn one_batch_reserves_rejects_releases_and_ships_in_order_and_a_redelivery_changes_nothing() {
    let mut client = database().await;
    inventory::stock::set(&mut client, "A-1", 5)
        .await
        .expect("set A-1");
    inventory::stock::set(&mut client, "B-2", 1)
        .await
        .expect("set B-2");

    let (o1, o2, o3, o4) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let batch = vec![
        placed(o1, &[("A-1", 2)]),
        // 3 of A-1 left, and B-2 has 1: rejected for B-2 only.
        placed(o2, &[("A-1", 1), ("B-2", 2)]),
        // Two lines of one SKU count together: 3 of the 3 left.
        placed(o3, &[("A-1", 1), ("A-1", 2)]),
        // Nothing left of A-1 now.
        placed(o4, &[("A-1", 1)]),
        Envelope::new(
            Event::OrderCancelled(OrderCancelled {
                order_id: o1,
                reason: "changed mind".into(),
            }),
            2,
            Utc::now(),
        ),
        Envelope::new(
            Event::OrderShipped(OrderShipped {
                order_id: o3,
                carrier: "DHL".into(),
                tracking_number: "T1".into(),
            }),
            2,
            Utc::now(),
        ),
    ];
    let checkpoint = Checkpoint::new("inventory-test").unfenced();
    let outcome = apply_batch(
        &mut client,
        &Reservations,
        &Decoder::default(),
        &records(&batch, 0),
        &checkpoint,
    )
    .await
    .expect("batch");
    assert_eq!(
        (outcome.applied, outcome.dead_lettered, outcome.parked),
        (6, 0, 0)
    );

    assert_eq!(status(&client, o1).await, "released");
    assert_eq!(status(&client, o2).await, "rejected");
    assert_eq!(status(&client, o3).await, "shipped");
    assert_eq!(status(&client, o4).await, "rejected");
    // 5 set, 3 shipped, o1's 2 released: 2 on hand, none reserved.
    assert_eq!(level(&client, "A-1").await, (2, 0));
    assert_eq!(level(&client, "B-2").await, (1, 0));

    let events: Vec<(String, String, i64)> = client
        .query(
            "SELECT event_type, aggregate_id, aggregate_version FROM outbox ORDER BY occurred_at, event_type",
            &[],
        )
        .await
        .expect("outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let of = |order: Uuid| -> Vec<(String, i64)> {
        events
            .iter()
            .filter(|(_, id, _)| *id == order.to_string())
            .map(|(t, _, v)| (t.clone(), *v))
            .collect()
    };
    assert_eq!(
        of(o1),
        [
            ("StockReserved".to_owned(), 1),
            ("StockReleased".to_owned(), 2)
        ]
    );
    assert_eq!(of(o2), [("StockRejected".to_owned(), 1)]);
    assert_eq!(
        of(o3),
        [
            ("StockReserved".to_owned(), 1),
            ("StockShipped".to_owned(), 2)
        ]
    );
    assert_eq!(of(o4), [("StockRejected".to_owned(), 1)]);
    assert_eq!(events.iter().filter(|(t, _, _)| t == "StockSet").count(), 2);

    // Every reply is a valid event of the contract, as consumers will decode it.
    let payloads = client
        .query("SELECT event_type, payload::text FROM outbox", &[])
        .await
        .expect("payloads");
    for row in payloads {
        let (kind, payload): (String, String) = (row.get(0), row.get(1));
        let event = Event::from_payload(&kind, 1, payload.as_bytes()).expect("decodes");
        event
            .validate()
            .unwrap_or_else(|e| panic!("{kind} is invalid: {e}: {payload}"));
    }

    // The same records again (a redelivery): the inbox turns every one away.
    let again = apply_batch(
        &mut client,
        &Reservations,
        &Decoder::default(),
        &records(&batch, 0),
        &checkpoint,
    )
    .await
    .expect("redelivery");
    assert_eq!((again.applied, again.duplicates), (0, 6));
    let count: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        count,
        2 + 6,
        "two stock sets and one reply per order event that acts"
    );
    assert_eq!(level(&client, "A-1").await, (2, 0));

    // The ledger explains the stock: the last set + restocks - shipped = on hand.
    let ledger: i64 = client
        .query_one(
            "SELECT (SELECT quantity FROM stock_movements WHERE sku = 'A-1' AND kind = 'set' ORDER BY id DESC LIMIT 1) \
                  - coalesce((SELECT sum(quantity) FROM stock_movements WHERE sku = 'A-1' AND kind = 'ship'), 0)::bigint",
            &[],
        )
        .await
        .expect("ledger")
        .get(0);
    assert_eq!(ledger, 2);
}

#[tokio::test]
async fn stock_commands_refuse_bad_input_and_change_nothing() {
    let mut client = database().await;
    use inventory::stock::{add, set, StockError};
    assert!(matches!(
        set(&mut client, "", 1).await,
        Err(StockError::InvalidSku(_))
    ));
    assert!(matches!(
        set(&mut client, "A 1", 1).await,
        Err(StockError::InvalidSku(_))
    ));
    assert!(matches!(
        set(&mut client, "A-1", -1).await,
        Err(StockError::InvalidQuantity { .. })
    ));
    assert!(matches!(
        add(&mut client, "A-1", 3).await,
        Err(StockError::UnknownSku(_))
    ));
    set(&mut client, "A-1", 2).await.expect("set");
    assert!(matches!(
        add(&mut client, "A-1", 0).await,
        Err(StockError::InvalidQuantity { .. })
    ));
    let after = add(&mut client, "A-1", 3).await.expect("add");
    assert_eq!((after.on_hand, after.reserved, after.version), (5, 0, 2));

    // Reserve 4, then setting below the reserved units is refused.
    let order = Uuid::new_v4();
    apply_batch(
        &mut client,
        &Reservations,
        &Decoder::default(),
        &records(&[placed(order, &[("A-1", 4)])], 0),
        &Checkpoint::new("inventory-test"),
    )
    .await
    .expect("batch");
    let err = set(&mut client, "A-1", 3)
        .await
        .expect_err("below reserved");
    assert!(
        matches!(err, StockError::BelowReserved { reserved: 4, .. }),
        "{err}"
    );
    assert_eq!(level(&client, "A-1").await, (5, 4));
    let outbox: Vec<(String, i64)> = client
        .query(
            "SELECT event_type, aggregate_version FROM outbox WHERE aggregate_type = 'stock' ORDER BY aggregate_version",
            &[],
        )
        .await
        .expect("outbox")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        outbox,
        [("StockSet".to_owned(), 1), ("StockRestocked".to_owned(), 2)]
    );
}

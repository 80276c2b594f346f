//! Projector catch-up benchmark: how fast `apply_batch` applies a backlog.
//!
//! Builds a realistic history (customers register and change contact details;
//! orders are placed with three lines, paid, shipped, delivered, some
//! cancelled and refunded), then applies it to a fresh read database in
//! batches of 1, 100 and 1000 records, and prints events/s for each. Kafka is
//! left out on purpose: this measures the read-database side, which is where
//! the projector spends its time. Run with a release build:
//!
//! ```sh
//! cargo run --release -p stack --example catch_up -- 20000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use chrono::Utc;
use outbox_events::{
    Address, CustomerContactChanged, CustomerRegistered, Envelope, Event, OrderCancelled,
    OrderDelivered, OrderLine, OrderPaid, OrderPlaced, OrderRefunded, OrderShipped,
};
use projector::batch::apply_batch;
use projector::record::{Decoder, Record};
use uuid::Uuid;

fn history(orders: usize) -> Vec<Envelope> {
    let customers = (orders / 10).max(1);
    let now = Utc::now();
    let mut out = Vec::new();
    for c in 0..customers {
        let id = format!("c-{c}");
        let address = Address {
            street: "1 Way".into(),
            city: "Oslo".into(),
            postal_code: "0150".into(),
            country: "NO".into(),
        };
        out.push(Envelope::new(
            Event::CustomerRegistered(CustomerRegistered {
                customer_id: id.clone(),
                name: format!("N{c}"),
                email: "a@b.c".into(),
                address,
            }),
            1,
            now,
        ));
        out.push(Envelope::new(
            Event::CustomerContactChanged(CustomerContactChanged {
                customer_id: id,
                name: format!("M{c}"),
                email: "d@e.f".into(),
            }),
            2,
            now,
        ));
    }
    for o in 0..orders {
        let order_id = Uuid::new_v4();
        let lines: Vec<OrderLine> = (0..3)
            .map(|l| OrderLine {
                sku: format!("SKU-{}", (o + l) % 50),
                quantity: 1 + l as i32,
                unit_price_cents: 250,
            })
            .collect();
        let total = lines
            .iter()
            .map(|l| i64::from(l.quantity) * l.unit_price_cents)
            .sum();
        let mut events = vec![
            Event::OrderPlaced(OrderPlaced {
                order_id,
                customer_id: format!("c-{}", o % customers),
                currency: "EUR".into(),
                lines,
                total_cents: total,
                shipping_address: None,
            }),
            Event::OrderPaid(OrderPaid {
                order_id,
                payment_reference: format!("p-{o}"),
                amount_cents: total,
                currency: "EUR".into(),
            }),
        ];
        if o % 5 == 0 {
            events.push(Event::OrderCancelled(OrderCancelled {
                order_id,
                reason: "changed mind".into(),
            }));
            events.push(Event::OrderRefunded(OrderRefunded {
                order_id,
                amount_cents: total,
                currency: "EUR".into(),
                reason: "cancelled".into(),
            }));
        } else {
            events.push(Event::OrderShipped(OrderShipped {
                order_id,
                carrier: "DHL".into(),
                tracking_number: format!("T{o}"),
            }));
            events.push(Event::OrderDelivered(OrderDelivered { order_id }));
        }
        for (v, e) in events.into_iter().enumerate() {
            out.push(Envelope::new(e, v as i64 + 1, now));
        }
    }
    out
}

fn record(e: &Envelope, offset: i64) -> Record {
    Record::from_envelope(e, outbox_events::topic_for(&e.aggregate_type), 0, offset)
}

#[tokio::main]
async fn main() {
    let orders: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |a| a.parse().expect("number of orders"));
    let stack = stack::Stack::for_tests("bench").expect("stack");
    stack
        .start(stack::Component::Postgres, &|_| {})
        .expect("postgres");
    let events = history(orders);
    let records: Vec<Record> = events
        .iter()
        .enumerate()
        .map(|(i, e)| record(e, i as i64))
        .collect();
    println!("history: {} events ({orders} orders)", records.len());
    println!("| batch size | events | seconds | events/s |");
    println!("|---:|---:|---:|---:|");
    for batch in [1usize, 100, 1000] {
        // Batch size 1 is slow by nature: a tenth of the history shows its rate.
        let slice = if batch == 1 {
            &records[..records.len() / 10]
        } else {
            &records[..]
        };
        let dbname = format!("bench_{}", Uuid::new_v4().simple());
        stack
            .admin_sql(
                "postgres",
                &format!("CREATE DATABASE {dbname} OWNER orders_owner"),
            )
            .expect("create db");
        let db = stack.db(&dbname);
        let (mut client, connection) =
            tokio_postgres::connect(&db.conn_string(), tokio_postgres::NoTls)
                .await
                .unwrap();
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        projector::migrate(&mut client).await.unwrap();
        let mut client = projector::worker::Db::new(client, task);
        let decoder = Decoder::default();
        let checkpoint = projector::position::Checkpoint::new("catch-up");
        let start = Instant::now();
        let mut applied = 0;
        for chunk in slice.chunks(batch) {
            applied += apply_batch(
                &mut client,
                &projector::ReadModels,
                &decoder,
                chunk,
                &checkpoint,
            )
            .await
            .unwrap()
            .applied;
        }
        let seconds = start.elapsed().as_secs_f64();
        assert_eq!(applied, slice.len(), "every event applied");
        println!(
            "| {batch} | {} | {seconds:.2} | {:.0} |",
            slice.len(),
            slice.len() as f64 / seconds
        );
    }
}

//! The three read models, and their convergence whatever the interleaving of
//! customer and order events (each aggregate's own events stay in order).

use chrono::{Duration, TimeZone, Utc};
use outbox_events::*;
use uuid::Uuid;

use crate::helpers::TestEnv;

fn address(city: &str) -> Address {
    Address {
        street: "1 Main".into(),
        city: city.into(),
        postal_code: "1000".into(),
        country: "DE".into(),
    }
}

/// A customer's events and a few orders' events, each aggregate in version order.
fn history() -> (Vec<Vec<Envelope>>, Vec<Vec<Envelope>>) {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
    let at = |minutes: i64| t0 + Duration::minutes(minutes);
    let customer = |id: &str, events: Vec<Event>| -> Vec<Envelope> {
        let _ = id;
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| Envelope::new(e, i as i64 + 1, at(i as i64)))
            .collect()
    };
    let customers = vec![
        customer(
            "c-ada",
            vec![
                Event::CustomerRegistered(CustomerRegistered {
                    customer_id: "c-ada".into(),
                    name: "Ada Lovelace".into(),
                    email: "ada@example.com".into(),
                    address: address("London"),
                }),
                Event::CustomerContactChanged(CustomerContactChanged {
                    customer_id: "c-ada".into(),
                    name: "Ada King".into(),
                    email: "ada.king@example.com".into(),
                }),
                Event::CustomerAddressChanged(CustomerAddressChanged {
                    customer_id: "c-ada".into(),
                    address: address("Ockham"),
                }),
            ],
        ),
        customer(
            "c-bob",
            vec![Event::CustomerRegistered(CustomerRegistered {
                customer_id: "c-bob".into(),
                name: "Bob".into(),
                email: "bob@example.com".into(),
                address: address("Paris"),
            })],
        ),
    ];
    let order =
        |customer: &str, lines: Vec<(&str, i32, i64)>, then: &[&str], day: i64| -> Vec<Envelope> {
            let id = Uuid::new_v4();
            let lines: Vec<OrderLine> = lines
                .into_iter()
                .map(|(s, q, p)| OrderLine {
                    sku: s.into(),
                    quantity: q,
                    unit_price_cents: p,
                })
                .collect();
            let total: i64 = lines
                .iter()
                .map(|l| i64::from(l.quantity) * l.unit_price_cents)
                .sum();
            let mut events = vec![Event::OrderPlaced(OrderPlaced {
                order_id: id,
                customer_id: customer.into(),
                currency: "EUR".into(),
                lines,
                total_cents: total,
                shipping_address: Some(address("Anywhere")),
            })];
            for step in then {
                events.push(match *step {
                    "pay" => Event::OrderPaid(OrderPaid {
                        order_id: id,
                        payment_reference: "p".into(),
                        amount_cents: total,
                        currency: "EUR".into(),
                    }),
                    "ship" => Event::OrderShipped(OrderShipped {
                        order_id: id,
                        carrier: "DHL".into(),
                        tracking_number: "T".into(),
                    }),
                    "deliver" => Event::OrderDelivered(OrderDelivered { order_id: id }),
                    "cancel" => Event::OrderCancelled(OrderCancelled {
                        order_id: id,
                        reason: "r".into(),
                    }),
                    "refund" => Event::OrderRefunded(OrderRefunded {
                        order_id: id,
                        amount_cents: total,
                        currency: "EUR".into(),
                        reason: "r".into(),
                    }),
                    other => panic!("unknown step {other}"),
                });
            }
            events
                .into_iter()
                .enumerate()
                .map(|(i, e)| Envelope::new(e, i as i64 + 1, at(day * 24 * 60 + 10 + i as i64)))
                .collect()
        };
    let orders = vec![
        order(
            "c-ada",
            vec![("BOOK", 2, 1000), ("PEN", 1, 150)],
            &["pay", "ship", "deliver"],
            0,
        ),
        order(
            "c-ada",
            vec![("BOOK", 1, 1000)],
            &["pay", "cancel", "refund"],
            0,
        ),
        order(
            "c-ada",
            vec![("PEN", 4, 150)],
            &["pay", "ship", "deliver", "refund"],
            1,
        ),
        order("c-bob", vec![("MUG", 1, 900)], &["pay"], 1),
        order("c-bob", vec![("BOOK", 3, 1000)], &[], 1),
    ];
    (customers, orders)
}

/// Interleaves streams, keeping each stream's own order.
fn round_robin(streams: &[Vec<Envelope>]) -> Vec<Envelope> {
    let mut out = Vec::new();
    let longest = streams.iter().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for s in streams {
            if let Some(e) = s.get(i) {
                out.push(e.clone());
            }
        }
    }
    out
}

async fn project(env: &mut TestEnv, events: &[Envelope], batch: usize) -> String {
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| env.record(e, i as i64))
        .collect();
    for chunk in records.chunks(batch) {
        let outcome = env.apply(chunk).await.unwrap();
        assert_eq!(outcome.dead_lettered, 0, "nothing may be rejected");
    }
    env.read_models().await
}

#[tokio::test]
async fn read_models_converge_whatever_the_interleaving() {
    let (customers, orders) = history();
    let customers_first: Vec<Envelope> = customers
        .iter()
        .chain(orders.iter())
        .flatten()
        .cloned()
        .collect();
    let customers_last: Vec<Envelope> = orders
        .iter()
        .chain(customers.iter())
        .flatten()
        .cloned()
        .collect();
    let mut all = customers.clone();
    all.extend(orders.clone());
    let mixed = round_robin(&all);

    let mut a = TestEnv::new().await;
    let first = project(&mut a, &customers_first, 1).await;
    let mut b = TestEnv::new().await;
    let last = project(&mut b, &customers_last, 7).await;
    let mut c = TestEnv::new().await;
    let interleaved = project(&mut c, &mixed, 3).await;
    assert_eq!(
        first, last,
        "customer events after their orders must converge"
    );
    assert_eq!(first, interleaved, "interleaved delivery must converge");

    // And the converged state is the right one.
    let summary = |id: &str| {
        let client = &a.client;
        let id = id.to_owned();
        async move {
            let r = client
                .query_one(
                    "SELECT name, email, city, orders_placed, open_orders, lifetime_value FROM customer_summary WHERE customer_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            (
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, i32>(3),
                r.get::<_, i32>(4),
                r.get::<_, serde_json::Value>(5),
            )
        }
    };
    // Ada: 3 orders, all closed; paid 21.50 + 10.00 + 6.00, refunded 10.00 + 6.00.
    assert_eq!(
        summary("c-ada").await,
        (
            "Ada King".into(),
            "ada.king@example.com".into(),
            "Ockham".into(),
            3,
            0,
            serde_json::json!({"EUR": 2150})
        )
    );
    // Bob: 2 orders, both open (one paid 9.00, one placed).
    assert_eq!(
        summary("c-bob").await,
        (
            "Bob".into(),
            "bob@example.com".into(),
            "Paris".into(),
            2,
            2,
            serde_json::json!({"EUR": 900})
        )
    );

    // Every order of Ada shows her current name and e-mail.
    let names: Vec<(String, String)> = a
        .client
        .query("SELECT DISTINCT customer_name, customer_email FROM order_view WHERE customer_id = 'c-ada'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        names,
        vec![("Ada King".to_owned(), "ada.king@example.com".to_owned())]
    );

    // Sales: cancelled and refunded orders are taken back.
    let sales: Vec<(String, String, i64, i64)> = a
        .client
        .query("SELECT day::text, sku, units, revenue_cents FROM product_sales_daily ORDER BY day, sku", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        sales,
        vec![
            ("2026-11-20".into(), "BOOK".into(), 2, 2000),
            ("2026-11-20".into(), "PEN".into(), 1, 150),
            ("2026-11-21".into(), "BOOK".into(), 3, 3000),
            ("2026-11-21".into(), "MUG".into(), 1, 900),
            ("2026-11-21".into(), "PEN".into(), 0, 0),
        ]
    );
}

//! Schema evolution on a real topic: v1 payloads are upcast, unknown fields ignored.

use chrono::Utc;
use outbox_events::{header, Envelope, Event, OrderLine, OrderPlaced, OrderPlacedV1};
use projector::batch::Outcome;
use uuid::Uuid;

use crate::helpers::{receive, TestEnv};

/// `OrderPlaced` (current version) of a 21.00 EUR order, placed at `at`.
fn placed(order_id: Uuid, at: chrono::DateTime<Utc>) -> Envelope {
    let event = Event::OrderPlaced(OrderPlaced {
        order_id,
        customer_id: "c-1".into(),
        currency: "EUR".into(),
        lines: lines(),
        total_cents: 2100,
        shipping_address: None,
    });
    Envelope::new(event, 1, at)
}

fn lines() -> Vec<OrderLine> {
    vec![OrderLine {
        sku: "BOOK".into(),
        quantity: 3,
        unit_price_cents: 700,
    }]
}

#[tokio::test]
async fn a_v1_order_placed_on_the_topic_projects_like_its_v2_form() {
    let mut env = TestEnv::new().await;
    let at = Utc::now();
    let (old, new) = (Uuid::new_v4(), Uuid::new_v4());

    // A real v1 payload, exactly as the v1 writer produced it (no shipping_address).
    let v1 = OrderPlacedV1 {
        order_id: old,
        customer_id: "c-1".into(),
        currency: "EUR".into(),
        lines: lines(),
        total_cents: 2100,
    };
    let v1_payload = serde_json::to_vec(&v1).unwrap();
    assert!(!String::from_utf8_lossy(&v1_payload).contains("shipping_address"));
    let v1_envelope = placed(old, at);
    let mut v1_headers = v1_envelope.to_headers();
    for (name, value) in &mut v1_headers {
        if *name == header::SCHEMA_VERSION {
            *value = "1".into();
        }
    }
    env.publish_raw(&old.to_string(), &v1_headers, &v1_payload)
        .await;

    // The same facts as v2, plus a field this consumer does not know.
    let v2 = placed(new, at);
    let mut v2_payload = v2.event.to_payload();
    v2_payload["gift_wrap"] = serde_json::json!({"paper": "red"});
    env.publish_raw(
        &new.to_string(),
        &v2.to_headers(),
        v2_payload.to_string().as_bytes(),
    )
    .await;

    let consumer = env.consumer();
    let records = receive(&consumer, 2).await;
    assert!(records
        .iter()
        .any(|r| r.header(header::SCHEMA_VERSION) == Some("1")));
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(
        outcome,
        Outcome {
            applied: 2,
            duplicates: 0,
            parked: 0,
            dead_lettered: 0,
            stale: 0,
            ..Default::default()
        }
    );

    let row = |id: Uuid| {
        let client = &env.client;
        async move {
            // Every column but the order's own id (the shared dump's list).
            let columns: Vec<&str> = stack::oracle::ORDER_VIEW_COLUMNS
                .split(',')
                .map(str::trim)
                .filter(|c| *c != "order_id")
                .collect();
            let r = client
                .query_one(
                    &format!(
                        "SELECT t::text FROM (SELECT {} FROM order_view WHERE order_id = $1) t",
                        columns.join(", ")
                    ),
                    &[&id],
                )
                .await
                .unwrap();
            r.get::<_, String>(0)
        }
    };
    assert_eq!(
        row(old).await,
        row(new).await,
        "v1 and v2 must project identically"
    );
}

/// The dump every test compares read sides with covers every column of each
/// read model but the processing timestamp: a column added later is compared
/// too, or this fails.
#[tokio::test]
async fn the_shared_read_model_dump_has_every_column() {
    let env = TestEnv::new().await;
    for (table, listed) in [
        ("order_view", stack::oracle::ORDER_VIEW_COLUMNS),
        ("customer_summary", stack::oracle::CUSTOMER_SUMMARY_COLUMNS),
        ("product_sales_daily", stack::oracle::PRODUCT_SALES_COLUMNS),
    ] {
        let mut listed: Vec<String> = listed.split(',').map(|c| c.trim().to_owned()).collect();
        let mut actual: Vec<String> = env
            .client
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1 AND column_name <> 'updated_at'",
                &[&table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        listed.sort();
        actual.sort();
        assert_eq!(listed, actual, "{table}");
    }
}

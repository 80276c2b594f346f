//! The order reactor (`writer react`'s handler) on a real write database,
//! through the consumer core: the inventory's replies confirm or reject a
//! placed order through the order rules, with the event in the outbox; a
//! reply for an order cancelled meanwhile changes nothing.

use outbox_events::{Event, Shortage, StockRejected};

use crate::helpers::TestDb;

async fn status_and_reason(db: &TestDb, id: &str) -> (String, Option<String>, i64) {
    let row = db
        .client
        .query_one(
            "SELECT status, reject_reason, version FROM orders WHERE order_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn events_of(db: &TestDb, id: &str) -> Vec<(String, i64)> {
    db.client
        .query(
            "SELECT event_type, aggregate_version FROM outbox WHERE aggregate_id = $1 ORDER BY aggregate_version",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_reservation_confirms_and_a_shortage_rejects_with_its_reason() {
    let db = TestDb::new().await;
    let confirmed = db.place_confirmed(&["A:2:5.00"]).await;
    assert_eq!(
        status_and_reason(&db, &confirmed).await,
        ("confirmed".into(), None, 2)
    );
    assert_eq!(
        events_of(&db, &confirmed).await,
        [
            ("OrderPlaced".to_owned(), 1),
            ("OrderConfirmed".to_owned(), 2)
        ]
    );

    let rejected = db.place(&["B:3:1.00"]);
    let outcome = db
        .reply(Event::StockRejected(StockRejected {
            order_id: rejected.parse().unwrap(),
            shortages: vec![Shortage {
                sku: "B".into(),
                requested: 3,
                available: 1,
            }],
        }))
        .await;
    assert_eq!((outcome.applied, outcome.dead_lettered), (1, 0));
    assert_eq!(
        status_and_reason(&db, &rejected).await,
        (
            "rejected".into(),
            Some("not enough stock: B (3 requested, 1 available)".into()),
            2
        )
    );
    let payload: serde_json::Value = db
        .client
        .query_one(
            "SELECT payload FROM outbox WHERE aggregate_id = $1 AND event_type = 'OrderRejected'",
            &[&rejected],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["shortages"][0]["sku"], "B");
    // A rejected order is over: it cannot be paid or cancelled.
    for args in [
        vec![
            "order",
            "pay",
            &rejected,
            "--reference",
            "p",
            "--amount",
            "3.00",
        ],
        vec!["order", "cancel", &rejected, "--reason", "r"],
    ] {
        let out = db.writer(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("it is rejected"));
    }
}

#[tokio::test]
async fn a_reply_for_an_order_cancelled_meanwhile_changes_nothing_but_is_recorded_once() {
    let db = TestDb::new().await;
    let id = db.place(&["A:1:5.00"]);
    db.writer_ok(&["order", "cancel", &id, "--reason", "changed mind"]);
    let before = db.snapshot().await;
    // The reservation the inventory made before it saw the cancellation.
    db.confirm_expecting(&id, 1).await;
    assert_eq!(db.snapshot().await, before, "no order change, no event");
    let inbox: i64 = db
        .client
        .query_one("SELECT count(*) FROM inbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        inbox, 1,
        "the reply is in the inbox: a redelivery is skipped"
    );
    // Unpaid and placed orders pay only once confirmed.
    let placed = db.place(&["A:1:5.00"]);
    let out = db.writer(&[
        "order",
        "pay",
        &placed,
        "--reference",
        "p",
        "--amount",
        "5.00",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it is placed"));
}

use uuid::Uuid;
use writer::domain::{Command, OrderCommand};
use writer::store::{self, StoreError};

use crate::helpers::TestDb;

#[tokio::test]
async fn a_placed_order_commits_state_and_outbox_together() {
    let db = TestDb::new().await;
    let out = db.writer_ok(&[
        "order",
        "place",
        "--customer",
        "c-1",
        "--currency",
        "eur",
        "--line",
        "BOOK-1:2:19.99",
        "--line",
        "PEN:1:2.50",
    ]);
    let order_id: Uuid = out["order_id"].as_str().unwrap().parse().unwrap();
    let event_id: Uuid = out["events"][0]["event_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let order = db
        .client
        .query_one("SELECT customer_id, status, currency, total_cents, version FROM orders WHERE order_id = $1", &[&order_id])
        .await
        .unwrap();
    assert_eq!(order.get::<_, String>(0), "c-1");
    assert_eq!(order.get::<_, String>(1), "placed");
    assert_eq!(order.get::<_, String>(2), "EUR");
    assert_eq!(order.get::<_, i64>(3), 4248);
    assert_eq!(order.get::<_, i64>(4), 1);
    assert_eq!(db.count("order_lines").await, 2);

    let outbox = db
        .client
        .query_one(
            "SELECT id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, payload, occurred_at IS NOT NULL \
             FROM outbox WHERE aggregate_type = 'order'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(outbox.get::<_, Uuid>(0), event_id);
    assert_eq!(outbox.get::<_, String>(1), "order");
    assert_eq!(outbox.get::<_, String>(2), order_id.to_string());
    assert_eq!(outbox.get::<_, String>(3), "OrderPlaced");
    assert_eq!(
        outbox.get::<_, i32>(4),
        2,
        "OrderPlaced is written as schema v2"
    );
    assert_eq!(outbox.get::<_, i64>(5), 1);
    let payload: serde_json::Value = outbox.get(6);
    assert_eq!(payload["total_cents"], 4248);
    assert_eq!(payload["lines"][0]["sku"], "BOOK-1");
    assert_eq!(
        payload["shipping_address"]["city"], "Berlin",
        "the customer's address is stamped"
    );
    assert!(outbox.get::<_, bool>(7));
}

#[tokio::test]
async fn concurrent_commands_on_one_order_serialise_without_gaps() {
    let db = TestDb::new().await;
    let id: Uuid = db.place(&["A:1:10.00"]).parse().unwrap();
    // Eight clients race to cancel and pay the same order: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let conn = db.params.conn_string();
        tasks.push(tokio::spawn(async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .unwrap();
            let connection = tokio::spawn(async move {
                let _ = connection.await;
            });
            let mut client = deadpool_postgres::ClientWrapper::new(client, connection);
            let command = if i % 2 == 0 {
                Command::Order(OrderCommand::Cancel {
                    order_id: id,
                    reason: format!("racer {i}"),
                })
            } else {
                Command::Order(OrderCommand::Pay {
                    order_id: id,
                    payment_reference: format!("p-{i}"),
                    amount_cents: 1000,
                })
            };
            store::execute(&mut client, &command, None, None).await
        }));
    }
    let mut committed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => committed += 1,
            Err(StoreError::Rejected(_)) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // Paying then cancelling is allowed, so one or two commands can commit.
    let versions: Vec<i64> = db
        .client
        .query(
            "SELECT aggregate_version FROM outbox WHERE aggregate_type = 'order' ORDER BY aggregate_version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=(committed + 1)).collect::<Vec<i64>>());
    assert!(
        (1..=2).contains(&committed),
        "{committed} commands committed"
    );
}

#[tokio::test]
async fn a_command_that_fails_in_the_database_leaves_neither_state_nor_outbox() {
    let db = TestDb::new().await;
    let id = db.place_confirmed(&["A:1:10.00"]).await;
    // Make the outbox refuse the next insert, after the state update already ran.
    db.client
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'outbox unavailable'; END $$;
             CREATE TRIGGER refuse_outbox BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let before = db.snapshot().await;
    let out = db.writer(&[
        "order",
        "pay",
        &id,
        "--reference",
        "p-1",
        "--amount",
        "10.00",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a database failure is infrastructure (exit 1), not a refusal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("outbox unavailable"));
    assert_eq!(
        db.snapshot().await,
        before,
        "state changed although the outbox insert failed"
    );
    let status: String = db
        .client
        .query_one(
            "SELECT status FROM orders WHERE order_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "confirmed");
}

#[tokio::test]
async fn free_text_with_quotes_and_sql_is_stored_literally() {
    let db = TestDb::new().await;
    let id = db.place(&["A:1:10.00"]);
    let reason = r#"it's "late"; DROP TABLE orders; --"#;
    db.writer_ok(&["order", "cancel", &id, "--reason", reason]);
    let stored: String = db
        .client
        .query_one(
            "SELECT cancel_reason FROM orders WHERE order_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, reason);
    let payload: serde_json::Value = db
        .client
        .query_one(
            "SELECT payload FROM outbox WHERE event_type = 'OrderCancelled'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["reason"], reason);
}

#[tokio::test]
async fn human_output_names_the_order_and_its_events() {
    let db = TestDb::new().await;
    let out = db.writer(&[
        "order",
        "place",
        "--customer",
        "c-1",
        "--currency",
        "EUR",
        "--line",
        "A:1:1.00",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("order "), "{text}");
    assert!(
        text.contains("committed OrderPlaced (schema v2, aggregate version 1)"),
        "{text}"
    );
}

#[tokio::test]
async fn aggregate_versions_are_gapless_through_the_full_life_cycle() {
    let db = TestDb::new().await;
    let id = db.place_confirmed(&["A:2:5.00"]).await;
    db.writer_ok(&[
        "order",
        "pay",
        &id,
        "--reference",
        "p-1",
        "--amount",
        "10.00",
    ]);
    db.writer_ok(&["order", "ship", &id, "--carrier", "UPS", "--tracking", "1Z"]);
    db.writer_ok(&["order", "deliver", &id]);
    db.writer_ok(&[
        "order", "refund", &id, "--amount", "10.00", "--reason", "returned",
    ]);
    let types: Vec<String> = db
        .client
        .query(
            "SELECT event_type FROM outbox WHERE aggregate_id = $1 ORDER BY aggregate_version",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        types,
        [
            "OrderPlaced",
            "OrderConfirmed",
            "OrderPaid",
            "OrderShipped",
            "OrderDelivered",
            "OrderRefunded"
        ]
    );
    let row = db
        .client
        .query_one(
            "SELECT status, version, refunded_cents FROM orders WHERE order_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, Option<i64>>(2)
        ),
        ("refunded".into(), 6, Some(1000))
    );
}

#[tokio::test]
async fn customer_changes_are_versioned_events_of_their_own_aggregate() {
    let db = TestDb::new().await;
    db.writer_ok(&[
        "customer",
        "change-contact",
        "c-1",
        "--email",
        "new@example.com",
    ]);
    db.writer_ok(&[
        "customer",
        "change-address",
        "c-1",
        "--street",
        "2 Side St",
        "--city",
        "Hamburg",
        "--postal-code",
        "20095",
        "--country",
        "de",
    ]);
    let rows = db
        .client
        .query(
            "SELECT event_type, aggregate_version, payload FROM outbox WHERE aggregate_type = 'customer' AND aggregate_id = 'c-1' ORDER BY aggregate_version",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        seen,
        vec![
            ("CustomerRegistered".into(), 1),
            ("CustomerContactChanged".into(), 2),
            ("CustomerAddressChanged".into(), 3)
        ]
    );
    let contact: serde_json::Value = rows[1].get(2);
    assert_eq!(
        (contact["name"].as_str(), contact["email"].as_str()),
        (Some("Test Customer"), Some("new@example.com"))
    );
    // New orders ship to the new address.
    let id = db.place(&["A:1:1.00"]);
    let payload: serde_json::Value = db
        .client
        .query_one("SELECT payload FROM outbox WHERE aggregate_id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(payload["shipping_address"]["city"], "Hamburg");
    assert_eq!(payload["shipping_address"]["country"], "DE");
}

/// A row another transaction holds does not freeze a command: it gives up
/// after `database.lock_timeout_ms`, says why, exits 1 and writes nothing.
#[tokio::test]
async fn a_locked_order_fails_the_command_within_its_lock_timeout() {
    let db = TestDb::new().await;
    let id = db.place_confirmed(&["A:1:10.00"]).await;
    // Another session holds the order's row, as a slow or stuck command would.
    let (mut other, connection) =
        tokio_postgres::connect(&db.params.conn_string(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let holder = other.transaction().await.unwrap();
    holder
        .execute(
            "SELECT 1 FROM orders WHERE order_id = $1::text::uuid FOR UPDATE",
            &[&id],
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let out = db.writer_with_env(
        &[
            "order",
            "pay",
            &id,
            "--reference",
            "p-1",
            "--amount",
            "10.00",
        ],
        &[("WRITER__DATABASE__LOCK_TIMEOUT_MS", "500")],
    );
    let waited = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("55P03"), "the cause is named: {stderr}");
    assert!(
        stderr.contains("held a row this command must lock"),
        "and what to do: {stderr}"
    );
    assert!(
        waited < std::time::Duration::from_secs(10),
        "gave up after {waited:?}, not within its 500 ms lock timeout (plus start-up)"
    );
    holder.rollback().await.unwrap();
    let status: String = db
        .client
        .query_one(
            "SELECT status FROM orders WHERE order_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "confirmed", "nothing was written");
}

/// With the write database unreachable a command is an infrastructure
/// failure, not a refusal: exit 1, the cause, and what to check.
#[tokio::test]
async fn the_write_database_down_is_exit_1_with_a_hint() {
    let db = TestDb::new().await;
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = db.writer_with_env(
        &["order", "show", "3f1c2a4e-0000-4000-8000-000000000000"],
        &[
            ("WRITER__DATABASE__PORT", port.as_str()),
            ("WRITER__DATABASE__CONNECT_TIMEOUT_SECS", "2"),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")),
        "names where: {stderr}"
    );
    assert!(
        stderr.contains("hint: is the write database up and migrated?"),
        "says what to check: {stderr}"
    );
}

//! Duplicates are rejections; retries with an idempotency key are idempotent.
use std::process::Output;

use crate::helpers::{assert_refused, TestDb};

/// Runs the same writer arguments in `n` processes at once.
fn race(db: &TestDb, n: usize, args: &[Vec<String>]) -> Vec<Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let args: Vec<&str> = args[i % args.len()].iter().map(String::as_str).collect();
                s.spawn(move || db.writer(&args))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Exactly one success; every other attempt is a rejection (exit 2) saying "already exists".
fn one_commit_rest_refused(outs: &[Output]) {
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one commit: {outs:?}");
    for out in outs.iter().filter(|o| !o.status.success()) {
        assert_eq!(
            out.status.code(),
            Some(2),
            "a duplicate is a rejection: {out:?}"
        );
        assert_refused(out, "already exists");
    }
}

#[tokio::test]
async fn concurrent_places_of_one_order_id_commit_once_and_refuse_the_rest() {
    let db = TestDb::new().await;
    let id = uuid::Uuid::new_v4().to_string();
    let place = |sku: &str| {
        strings(&[
            "order",
            "place",
            "--order-id",
            &id,
            "--customer",
            "c-1",
            "--currency",
            "EUR",
            "--line",
            sku,
        ])
    };
    let outs = race(&db, 6, &[place("A:1:1.00"), place("B:2:3.00")]);
    one_commit_rest_refused(&outs);
    assert_eq!(db.count("orders").await, 1);
    assert_eq!(db.count("outbox WHERE aggregate_type = 'order'").await, 1);
}

#[tokio::test]
async fn concurrent_registrations_of_one_customer_commit_once_and_refuse_the_rest() {
    let db = TestDb::new().await;
    let register = |name: &str| {
        strings(&[
            "customer",
            "register",
            "c-race",
            "--name",
            name,
            "--email",
            "r@example.com",
            "--street",
            "1 Way",
            "--city",
            "Oslo",
            "--postal-code",
            "0150",
            "--country",
            "NO",
        ])
    };
    let outs = race(&db, 6, &[register("Ann"), register("Bob")]);
    one_commit_rest_refused(&outs);
    assert_eq!(db.count("customers WHERE customer_id = 'c-race'").await, 1);
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_result_and_writes_nothing() {
    let db = TestDb::new().await;
    let place = [
        "--idempotency-key",
        "cart-77",
        "order",
        "place",
        "--customer",
        "c-1",
        "--currency",
        "EUR",
        "--line",
        "A:2:5.00",
    ];
    let first = db.writer_ok(&place);
    let after_first = db.snapshot().await;
    // Retried after a timeout, and concurrently by an impatient client.
    let retries = race(&db, 3, &[strings(&[&["--json"], &place[..]].concat())]);
    for out in &retries {
        assert!(out.status.success(), "{out:?}");
        let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(again["order_id"], first["order_id"]);
        assert_eq!(
            again["events"][0]["event_id"],
            first["events"][0]["event_id"]
        );
        assert_eq!(again["replayed"], true);
    }
    assert_eq!(first["replayed"], false);
    assert_eq!(db.snapshot().await, after_first, "a retry writes nothing");

    // Same key, another command: refused, nothing written.
    let other = db.writer(&[
        "--idempotency-key",
        "cart-77",
        "order",
        "place",
        "--customer",
        "c-1",
        "--currency",
        "EUR",
        "--line",
        "B:1:5.00",
    ]);
    assert_eq!(other.status.code(), Some(2));
    assert_refused(&other, "already used for a different command");
    assert_eq!(db.snapshot().await, after_first);

    // A payment retried with its key: one OrderPaid.
    let order_id = first["order_id"].as_str().unwrap();
    let pay = [
        "--idempotency-key",
        "pay-1-attempt",
        "order",
        "pay",
        order_id,
        "--reference",
        "psp-1",
        "--amount",
        "10.00",
    ];
    db.writer_ok(&pay);
    let retry = db.writer(&pay);
    assert!(retry.status.success(), "{retry:?}");
    assert_eq!(db.count("outbox WHERE event_type = 'OrderPaid'").await, 1);
}

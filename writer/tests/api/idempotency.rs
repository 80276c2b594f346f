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
    db.confirm(order_id).await;
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

/// `order place` of one line for customer `c-1` with idempotency key `key`, JSON output.
fn keyed_place<'a>(key: &'a str, line: &'a str) -> [&'a str; 11] {
    [
        "--json",
        "--idempotency-key",
        key,
        "order",
        "place",
        "--customer",
        "c-1",
        "--currency",
        "EUR",
        "--line",
        line,
    ]
}

/// Settings that let a command wait for the test's lock instead of giving up
/// after the default 5 s.
const PATIENT: [(&str, &str); 1] = [("WRITER__DATABASE__LOCK_TIMEOUT_MS", "60000")];

/// Six *first* attempts with one key, held at the key's table until all six
/// wait there, then let go together: one commits, the other five get its
/// result back (the same order and event ids, `replayed`), and the database
/// holds one order, one event and one key.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_attempts_with_one_key_commit_once_and_return_that_result() {
    let db = TestDb::new().await;
    let place = keyed_place("first-race", "A:1:2.50");
    // Nobody may claim a key while this transaction holds the table in SHARE mode.
    let mut holder = db.session().await;
    let gate = holder.transaction().await.unwrap();
    gate.batch_execute("LOCK TABLE idempotency_keys IN SHARE MODE")
        .await
        .unwrap();
    let attempts: Vec<_> = (0..6)
        .map(|_| {
            db.writer_command(&place, &PATIENT)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("writer starts")
        })
        .collect();
    db.await_lock_waiters(6).await;
    gate.rollback().await.unwrap();
    let outs: Vec<Output> = tokio::task::spawn_blocking(move || {
        attempts
            .into_iter()
            .map(|a| a.wait_with_output().unwrap())
            .collect()
    })
    .await
    .unwrap();
    let results: Vec<serde_json::Value> = outs
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{o:?}");
            serde_json::from_slice(&o.stdout).unwrap()
        })
        .collect();
    let first: Vec<_> = results.iter().filter(|r| r["replayed"] == false).collect();
    assert_eq!(first.len(), 1, "exactly one attempt commits: {results:?}");
    for r in &results {
        assert_eq!(r["order_id"], first[0]["order_id"]);
        assert_eq!(
            r["events"][0]["event_id"],
            first[0]["events"][0]["event_id"]
        );
    }
    assert_eq!(db.count("orders").await, 1);
    assert_eq!(db.count("outbox WHERE aggregate_type = 'order'").await, 1);
    assert_eq!(db.count("idempotency_keys").await, 1);
}

/// A first attempt SIGKILLed mid-command (its key claimed, its transaction
/// waiting for a row lock) commits nothing; the retry with the same key runs
/// the command for real (not `replayed`), once.
#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_the_first_attempt_was_killed_mid_command_commits_once() {
    let db = TestDb::new().await;
    let place = keyed_place("killed-once", "K:3:1.00");
    let before = db.snapshot().await;
    // The customer's row locked: the command claims its key, then waits to share-lock it.
    let mut holder = db.session().await;
    let gate = holder.transaction().await.unwrap();
    gate.batch_execute("SELECT 1 FROM customers WHERE customer_id = 'c-1' FOR UPDATE")
        .await
        .unwrap();
    let mut first = db
        .writer_command(&place, &PATIENT)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("writer starts");
    db.await_lock_waiters(1).await;
    first.kill().unwrap();
    first.wait().unwrap();
    gate.rollback().await.unwrap();
    // Its server session, let go, finds its client gone and rolls back, releasing the key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while db
        .count(
            "pg_stat_activity WHERE datname = current_database() AND application_name = 'writer'",
        )
        .await
        > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the killed attempt's session lives on"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        db.snapshot().await,
        before,
        "the killed attempt wrote nothing"
    );
    assert_eq!(
        db.count("idempotency_keys").await,
        0,
        "its claim was rolled back"
    );

    let retry = db
        .writer_command(&place, &PATIENT)
        .output()
        .expect("writer runs");
    assert!(retry.status.success(), "{retry:?}");
    let result: serde_json::Value = serde_json::from_slice(&retry.stdout).unwrap();
    assert_eq!(
        result["replayed"], false,
        "the first attempt never committed"
    );
    let again = db.writer_command(&place, &PATIENT).output().unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["replayed"], true);
    assert_eq!(again["order_id"], result["order_id"]);
    assert_eq!(db.count("orders").await, 1);
    assert_eq!(db.count("outbox WHERE aggregate_type = 'order'").await, 1);
    assert_eq!(db.count("idempotency_keys").await, 1);
}

//! `writer outbox prune`: by age, never past the relay's heartbeat, safe under load.

use crate::helpers::TestDb;

async fn backdate_all(db: &TestDb, days: i32) {
    db.client
        .execute(
            "UPDATE outbox SET occurred_at = now() - make_interval(days => $1)",
            &[&days],
        )
        .await
        .unwrap();
}

async fn heartbeat(db: &TestDb, days_ago: i32) {
    db.client
        .execute(
            "INSERT INTO debezium_heartbeat (id, beat_at) VALUES (1, now() - make_interval(days => $1)) \
             ON CONFLICT (id) DO UPDATE SET beat_at = EXCLUDED.beat_at",
            &[&days_ago],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn prune_deletes_old_rows_only_and_never_past_the_relay() {
    let db = TestDb::new().await;
    db.place(&["A:1:1.00"]);
    db.place(&["B:1:1.00"]);
    backdate_all(&db, 10).await; // registration + 2 placements, 10 days old
    let fresh = db.place(&["C:1:1.00"]);
    assert_eq!(db.count("outbox").await, 4);

    // The relay never beat: nothing is known to be read, nothing goes.
    let out = db.writer_ok(&["outbox", "prune", "--older-than", "7d"]);
    assert_eq!(out["deleted"], 0);
    assert_eq!(db.count("outbox").await, 4);

    // The relay was last seen 20 days ago: rows of 10 days may be unread.
    heartbeat(&db, 20).await;
    let out = db.writer_ok(&["outbox", "prune", "--older-than", "7d"]);
    assert_eq!(
        (out["deleted"].as_u64(), out["limited_by_relay"].as_bool()),
        (Some(0), Some(true))
    );

    // The relay is current: the three old rows go (in batches of 2), the fresh one stays.
    heartbeat(&db, 0).await;
    let out = db.writer_ok(&["outbox", "prune", "--older-than", "7d", "--batch", "2"]);
    assert_eq!(
        (out["deleted"].as_u64(), out["batches"].as_u64()),
        (Some(3), Some(2))
    );
    let left: Vec<String> = db
        .client
        .query("SELECT aggregate_id FROM outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, [fresh]);
    // The write model is untouched.
    assert_eq!(db.count("orders").await, 3);

    // Idempotency keys go with the outbox's window; they hold a digest only.
    db.writer_ok(&[
        "--idempotency-key",
        "k-old",
        "customer",
        "register",
        "c-key",
        "--name",
        "Grace Hopper",
        "--email",
        "grace@example.com",
        "--street",
        "1 Main St",
        "--city",
        "Arlington",
        "--postal-code",
        "22201",
        "--country",
        "US",
    ]);
    let stored: String = db
        .client
        .query_one(
            "SELECT request_sha256 FROM idempotency_keys WHERE idempotency_key = 'k-old'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        stored.len() == 64 && stored.bytes().all(|b| b.is_ascii_hexdigit()),
        "a digest, not the command: {stored}"
    );
    db.client
        .execute(
            "UPDATE idempotency_keys SET committed_at = now() - interval '10 days'",
            &[],
        )
        .await
        .unwrap();
    let out = db.writer_ok(&["outbox", "prune", "--older-than", "7d"]);
    assert_eq!(out["keys_deleted"], 1);
    assert_eq!(db.count("idempotency_keys").await, 0);
}

#[tokio::test]
async fn prune_runs_while_commands_commit() {
    let db = TestDb::new().await;
    for i in 0..20 {
        db.place(&[&format!("OLD-{i}:1:1.00")]);
    }
    backdate_all(&db, 30).await;
    heartbeat(&db, 0).await;
    let before = db.count("outbox").await;
    // Commands keep committing while the prune deletes in batches of one.
    let writer = {
        let params = db.params.clone();
        std::thread::spawn(move || {
            (0..10)
                .map(|i| {
                    std::process::Command::new(env!("CARGO_BIN_EXE_writer"))
                        .env("WRITER__DATABASE__HOST", &params.host)
                        .env("WRITER__DATABASE__PORT", params.port.to_string())
                        .env("WRITER__DATABASE__USER", &params.user)
                        .env("WRITER__DATABASE__PASSWORD", &params.password)
                        .env("WRITER__DATABASE__DBNAME", &params.dbname)
                        .env_remove("WRITER_CONFIG")
                        .args(["order", "place", "--customer", "c-1", "--currency", "EUR"])
                        .args(["--line", &format!("NEW-{i}:1:1.00")])
                        .stdout(std::process::Stdio::null())
                        .status()
                        .unwrap()
                        .success()
                })
                .filter(|ok| *ok)
                .count()
        })
    };
    let out = db.writer_ok(&["outbox", "prune", "--older-than", "7d", "--batch", "1"]);
    let placed = writer.join().unwrap() as i64;
    assert_eq!(placed, 10, "every concurrent command committed");
    assert_eq!(out["deleted"].as_i64(), Some(before));
    assert_eq!(
        db.count("outbox").await,
        placed,
        "only the new events remain"
    );
}

//! A transaction's statements commit together or not at all, also when one of
//! them fails on the client before it reaches the server.

use service::pipeline::{execute_in_order, execute_in_order_and_commit};
use tokio_postgres::types::ToSql;

use crate::helpers::TestDb;

/// A fresh database with an int4 table to pipeline inserts into.
async fn probe_db() -> TestDb {
    let db = TestDb::new().await;
    db.client
        .batch_execute("CREATE TABLE pipeline_probe (n int4 NOT NULL)")
        .await
        .unwrap();
    db
}

async fn count(db: &TestDb) -> i64 {
    db.client
        .query_one("SELECT count(*) FROM pipeline_probe", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_parameter_that_fails_to_encode_commits_nothing() {
    let mut db = probe_db().await;
    let tx = db.client.transaction().await.unwrap();
    let insert = tx
        .prepare("INSERT INTO pipeline_probe (n) VALUES ($1)")
        .await
        .unwrap();
    let good: i32 = 1;
    // An i64 for an int4 parameter: tokio-postgres refuses to encode it, so
    // this statement never reaches the server.
    let bad: i64 = 2;
    let statements: [(&tokio_postgres::Statement, &[&(dyn ToSql + Sync)]); 3] =
        [(&insert, &[&good]), (&insert, &[&bad]), (&insert, &[&good])];
    let result = execute_in_order_and_commit(&tx, &statements).await;
    std::mem::forget(tx);
    let error = result.expect_err("the unsendable statement is reported");
    assert!(
        error.code().is_none(),
        "the error comes from the client, not the server: {error:?}"
    );
    assert_eq!(
        count(&db).await,
        0,
        "neither the statement before nor the one after the failed one was committed"
    );

    // The same statements, all sendable, commit together.
    let tx = db.client.transaction().await.unwrap();
    let statements: [(&tokio_postgres::Statement, &[&(dyn ToSql + Sync)]); 2] =
        [(&insert, &[&good]), (&insert, &[&good])];
    let rows = execute_in_order_and_commit(&tx, &statements).await.unwrap();
    std::mem::forget(tx);
    assert_eq!(rows, vec![1, 1]);
    assert_eq!(count(&db).await, 2);
}

#[tokio::test]
async fn execute_in_order_reports_an_unsendable_statement_and_the_transaction_rolls_back() {
    let mut db = probe_db().await;
    {
        let tx = db.client.transaction().await.unwrap();
        let insert = tx
            .prepare("INSERT INTO pipeline_probe (n) VALUES ($1)")
            .await
            .unwrap();
        let good: i32 = 1;
        let bad: i64 = 2;
        let statements: [(&tokio_postgres::Statement, &[&(dyn ToSql + Sync)]); 2] =
            [(&insert, &[&good]), (&insert, &[&bad])];
        let results = execute_in_order(&tx, &statements).await;
        assert!(results[0].is_ok(), "the sendable statement ran");
        assert!(
            results[1].as_ref().is_err_and(|e| e.code().is_none()),
            "the unsendable one is reported as a client-side error: {:?}",
            results[1]
        );
        // The projector's batch returns that error and drops its transaction.
    }
    assert_eq!(
        count(&db).await,
        0,
        "dropping the transaction rolled it back"
    );
}

/// An outbox row of an aggregate type no topic exists for is refused by the
/// database, and the constraint allows exactly the contract's aggregate types.
#[tokio::test]
async fn the_outbox_accepts_only_known_aggregate_types() {
    let db = TestDb::new().await;
    let error = db
        .client
        .execute(
            "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, schema_version, \
             aggregate_version, occurred_at, payload) \
             VALUES (gen_random_uuid(), 'ordr', 'x', 'OrderPlaced', 2, 1, now(), '{}')",
            &[],
        )
        .await
        .expect_err("an unknown aggregate type is refused");
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
        "{error:?}"
    );
    let definition: String = db
        .client
        .query_one(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'outbox_aggregate_type_known'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut allowed: Vec<&str> = definition.split('\'').skip(1).step_by(2).collect();
    allowed.sort_unstable();
    let mut known = outbox_events::AGGREGATES.to_vec();
    known.sort_unstable();
    assert_eq!(allowed, known, "{definition}");
}

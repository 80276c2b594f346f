//! Every kind of bad input: non-zero exit, one clear line, database unchanged.

use crate::helpers::{assert_refused, TestDb};

/// Runs `args` against a database holding one placed order (`{id}` in args is
/// replaced by its id) and checks the refusal left the database unchanged.
async fn refused(args: &[&str], expected: &str) {
    let db = TestDb::new().await;
    let id = db.place(&["A:2:5.00"]);
    let args: Vec<String> = args.iter().map(|a| a.replace("{id}", &id)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let before = db.snapshot().await;
    let out = db.writer(&args);
    assert_refused(&out, expected);
    assert_eq!(
        db.snapshot().await,
        before,
        "database changed by refused command {args:?}"
    );
}

#[tokio::test]
async fn unknown_order() {
    refused(
        &[
            "order",
            "pay",
            "3f1c2a4e-0000-4000-8000-000000000000",
            "--reference",
            "p",
            "--amount",
            "1",
        ],
        "does not exist",
    )
    .await;
}

#[tokio::test]
async fn invalid_transition_ship_before_pay() {
    refused(
        &[
            "order",
            "ship",
            "{id}",
            "--carrier",
            "DHL",
            "--tracking",
            "T1",
        ],
        "cannot ship order",
    )
    .await;
}

#[tokio::test]
async fn invalid_transition_cancel_after_ship() {
    let db = TestDb::new().await;
    let id = db.place(&["A:1:1.00"]);
    db.writer_ok(&["order", "pay", &id, "--reference", "p", "--amount", "1.00"]);
    db.writer_ok(&["order", "ship", &id, "--carrier", "DHL", "--tracking", "T1"]);
    let before = db.snapshot().await;
    assert_refused(
        &db.writer(&["order", "cancel", &id, "--reason", "too late"]),
        "it is shipped",
    );
    assert_eq!(db.snapshot().await, before);
}

#[tokio::test]
async fn zero_quantity() {
    refused(
        &[
            "order",
            "place",
            "--customer",
            "c",
            "--currency",
            "EUR",
            "--line",
            "A:0:1.00",
        ],
        "quantity",
    )
    .await;
}

#[tokio::test]
async fn negative_quantity() {
    refused(
        &[
            "order",
            "place",
            "--customer",
            "c",
            "--currency",
            "EUR",
            "--line",
            "A:-3:1.00",
        ],
        "quantity",
    )
    .await;
}

#[tokio::test]
async fn amount_mismatch() {
    refused(
        &[
            "order",
            "pay",
            "{id}",
            "--reference",
            "p",
            "--amount",
            "9.99",
        ],
        "does not match the order total of 10.00 EUR",
    )
    .await;
}

#[tokio::test]
async fn malformed_line() {
    refused(
        &[
            "order",
            "place",
            "--customer",
            "c",
            "--currency",
            "EUR",
            "--line",
            "A-2-1.00",
        ],
        "SKU:QTY:UNIT_PRICE",
    )
    .await;
}

#[tokio::test]
async fn malformed_price() {
    refused(
        &[
            "order",
            "place",
            "--customer",
            "c",
            "--currency",
            "EUR",
            "--line",
            "A:1:1,5",
        ],
        "unit price",
    )
    .await;
}

#[tokio::test]
async fn quotes_and_sql_in_an_identifier() {
    refused(
        &[
            "order",
            "place",
            "--customer",
            "x'); DROP TABLE orders;--",
            "--currency",
            "EUR",
            "--line",
            "A:1:1",
        ],
        "invalid customer",
    )
    .await;
}

#[tokio::test]
async fn oversized_identifier() {
    let long = "c".repeat(65);
    refused(
        &[
            "order",
            "place",
            "--customer",
            &long,
            "--currency",
            "EUR",
            "--line",
            "A:1:1",
        ],
        "longer than 64",
    )
    .await;
}

#[tokio::test]
async fn oversized_text() {
    let long = "x".repeat(501);
    refused(
        &["order", "cancel", "{id}", "--reason", &long],
        "longer than 500",
    )
    .await;
}

#[tokio::test]
async fn not_a_uuid() {
    refused(
        &[
            "order",
            "pay",
            "order-1",
            "--reference",
            "p",
            "--amount",
            "1",
        ],
        "invalid value 'order-1'",
    )
    .await;
}

#[tokio::test]
async fn bad_currency() {
    refused(
        &[
            "order",
            "place",
            "--customer",
            "c",
            "--currency",
            "EURO",
            "--line",
            "A:1:1",
        ],
        "currency",
    )
    .await;
}

#[tokio::test]
async fn order_for_an_unregistered_customer() {
    refused(
        &[
            "order",
            "place",
            "--customer",
            "c-nobody",
            "--currency",
            "EUR",
            "--line",
            "A:1:1",
        ],
        "customer c-nobody does not exist",
    )
    .await;
}

#[tokio::test]
async fn registering_a_customer_twice() {
    refused(
        &[
            "customer",
            "register",
            "c-1",
            "--name",
            "X",
            "--email",
            "x@example.com",
            "--street",
            "s",
            "--city",
            "c",
            "--postal-code",
            "1",
            "--country",
            "DE",
        ],
        "customer c-1 already exists",
    )
    .await;
}

#[tokio::test]
async fn malformed_email() {
    refused(
        &[
            "customer",
            "change-contact",
            "c-1",
            "--email",
            "not-an-address",
        ],
        "invalid email",
    )
    .await;
}

#[tokio::test]
async fn refund_of_an_unpaid_order() {
    let db = TestDb::new().await;
    let id = db.place(&["A:1:1.00"]);
    db.writer_ok(&["order", "cancel", &id, "--reason", "r"]);
    let before = db.snapshot().await;
    assert_refused(
        &db.writer(&["order", "refund", &id, "--amount", "1.00", "--reason", "r"]),
        "never paid",
    );
    assert_eq!(db.snapshot().await, before);
}

#[tokio::test]
async fn deliver_before_ship() {
    refused(&["order", "deliver", "{id}"], "cannot deliver order").await;
}

/// A reason that would display reversed (U+202E, "Trojan Source") or a name
/// with a zero-width space (looks like another customer's) is refused.
#[tokio::test]
async fn bidirectional_override_in_a_reason() {
    refused(
        &[
            "order",
            "cancel",
            "{id}",
            "--reason",
            "late \u{202E}gnipmuD",
        ],
        "U+202E",
    )
    .await;
}

#[tokio::test]
async fn invisible_character_in_a_name() {
    refused(
        &[
            "customer",
            "register",
            "c-2",
            "--name",
            "Ada\u{200B}",
            "--email",
            "ada@example.com",
            "--street",
            "1 Main St",
            "--city",
            "Berlin",
            "--postal-code",
            "10115",
            "--country",
            "DE",
        ],
        "U+200B",
    )
    .await;
}

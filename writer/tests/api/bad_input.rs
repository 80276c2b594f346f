//! Every kind of bad input: exit 2, one clear line, database unchanged.

use crate::helpers::{assert_refused, TestDb};

/// Runs `args` against a database holding one confirmed order (`{id}` in args is
/// replaced by its id) and checks the refusal left the database unchanged.
async fn refused(args: &[&str], expected: &str) {
    let db = TestDb::new().await;
    let id = db.place_confirmed(&["A:2:5.00"]).await;
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

/// (case, arguments, what the one line on stderr must say): each refused
/// with exit 2 and nothing written. `{id}` is an order placed and confirmed before.
const REFUSED: &[(&str, &[&str], &str)] = &[
    (
        "unknown order",
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
    ),
    (
        "invalid transition ship before pay",
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
    ),
    (
        "zero quantity",
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
    ),
    (
        "negative quantity",
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
    ),
    (
        "amount mismatch",
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
    ),
    (
        "malformed line",
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
    ),
    (
        "malformed price",
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
    ),
    (
        "quotes and sql in an identifier",
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
    ),
    (
        "not a uuid",
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
    ),
    (
        "bad currency",
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
    ),
    (
        "order for an unregistered customer",
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
    ),
    (
        "registering a customer twice",
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
    ),
    (
        "malformed email",
        &[
            "customer",
            "change-contact",
            "c-1",
            "--email",
            "not-an-address",
        ],
        "invalid email",
    ),
    // A reason that would display reversed (U+202E, "Trojan Source") or a
    // name with a zero-width space (looks like another customer's).
    (
        "bidirectional override in a reason",
        &[
            "order",
            "cancel",
            "{id}",
            "--reason",
            "late \u{202E}gnipmuD",
        ],
        "U+202E",
    ),
    (
        "invisible character in a name",
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
    ),
    (
        "deliver before ship",
        &["order", "deliver", "{id}"],
        "cannot deliver order",
    ),
];

/// Every case of [`REFUSED`] against one database holding one confirmed
/// order: exit 2, one clear line naming the problem, the database unchanged.
#[tokio::test]
async fn every_kind_of_bad_input_is_refused_with_one_line_and_changes_nothing() {
    let db = TestDb::new().await;
    let id = db.place_confirmed(&["A:2:5.00"]).await;
    let before = db.snapshot().await;
    for (case, args, expected) in REFUSED {
        let args: Vec<String> = args.iter().map(|a| a.replace("{id}", &id)).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = db.writer(&args);
        assert_refused_as(case, &out, expected);
        assert_eq!(
            db.snapshot().await,
            before,
            "{case}: database changed by refused command {args:?}"
        );
    }
}

/// [`assert_refused`], naming the case when it fails.
fn assert_refused_as(case: &str, out: &std::process::Output, expected: &str) {
    if std::panic::catch_unwind(|| assert_refused(out, expected)).is_err() {
        panic!("case {case:?}: not refused as expected (see above)");
    }
}

#[tokio::test]
async fn invalid_transition_cancel_after_ship() {
    let db = TestDb::new().await;
    let id = db.place_confirmed(&["A:1:1.00"]).await;
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

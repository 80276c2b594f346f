//! `writer load` on a real write database with neither the inventory nor the
//! order reactor: every order stays placed, so every payment the load tries is
//! refused as waiting for the saga's reply.

use crate::helpers::TestDb;

/// A refused payment of an unconfirmed order takes no slot of `--rate`: the
/// client sends another command at once, so the commands that commit keep the
/// offered pace (at most one per slot, and most slots end with one).
#[tokio::test]
async fn a_payment_waiting_for_the_inventory_takes_no_slot_of_the_offered_rate() {
    let db = TestDb::new().await;
    let (rate, seconds) = (20.0, 3.0);
    let before = db.count("outbox").await;
    let report = db.writer_ok(&[
        "load",
        "--clients",
        "1",
        "--rate",
        "20",
        "--duration",
        "3s",
        "--seed",
        "11",
    ]);
    let committed = report["committed"].as_u64().unwrap() as f64;
    let unconfirmed = report["unconfirmed"].as_u64().unwrap();
    // The interval's first tick is at once: one slot more than rate × seconds.
    let slots = rate * seconds + 1.0;
    assert!(
        unconfirmed >= 10,
        "payments of placed orders were tried and refused: {report}"
    );
    assert!(
        committed <= slots,
        "at most one commit per slot of the offered rate: {report}"
    );
    assert!(
        committed >= 0.8 * slots,
        "refused payments took slots of the offered rate: {report}"
    );
    // Every committed command's event is in the outbox; the refused wrote nothing.
    assert_eq!(
        (db.count("outbox").await - before) as f64,
        report["events"].as_f64().unwrap()
    );
}

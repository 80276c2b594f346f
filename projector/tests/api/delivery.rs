use std::time::Duration;

use chrono::Utc;
use outbox_events::Envelope;
use projector::batch::Outcome;
use projector::record::Decoder;
use uuid::Uuid;

use crate::helpers::{paid, placed, receive, TestEnv};

#[tokio::test]
async fn the_same_event_delivered_twice_changes_the_read_model_once() {
    let mut env = TestEnv::new().await;
    let order = Uuid::new_v4();
    let (placed, paid) = (placed(order), paid(order));
    env.publish(&placed).await;
    env.publish(&paid).await;
    env.publish(&paid).await; // redelivery: same event id

    let consumer = env.consumer();
    let records = receive(&consumer, 3).await;
    // Apply the first two, then the duplicate in a batch of its own.
    let first = env.apply(&records[..2]).await.unwrap();
    assert_eq!(
        first,
        Outcome {
            applied: 2,
            duplicates: 0,
            parked: 0,
            dead_lettered: 0,
            stale: 0,
            ..Default::default()
        }
    );
    let after_first = env.snapshot().await;
    let second = env.apply(&records[2..]).await.unwrap();
    assert_eq!(
        second,
        Outcome {
            applied: 0,
            duplicates: 1,
            parked: 0,
            dead_lettered: 0,
            stale: 0,
            ..Default::default()
        }
    );
    // Replaying everything again changes nothing either.
    let third = env.apply(&records).await.unwrap();
    assert_eq!(
        third,
        Outcome {
            applied: 0,
            duplicates: 3,
            parked: 0,
            dead_lettered: 0,
            stale: 0,
            ..Default::default()
        }
    );

    assert_eq!(env.snapshot().await, after_first);
    assert_eq!(env.order_view(order).await, Some(("paid".into(), 2)));
}

#[tokio::test]
async fn a_projector_that_never_committed_kafka_offsets_resumes_at_its_stored_position() {
    let mut env = TestEnv::new().await;
    let orders: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for order in &orders {
        env.publish(&placed(*order)).await;
        env.publish(&paid(*order)).await;
    }

    // First incarnation: applies and commits the read-DB transaction, then
    // dies before storing (let alone committing) any Kafka offset.
    let consumer = env.consumer();
    let records = receive(&consumer, 8).await;
    env.apply(&records).await.unwrap();
    drop(consumer);

    // Second incarnation, same group: Kafka knows no offset, yet it starts at
    // the position stored with the data: the first records it gets are new ones.
    let late = Uuid::new_v4();
    env.publish(&placed(late)).await;
    env.publish(&paid(late)).await;
    let consumer = env.consumer();
    let next = receive(&consumer, 2).await;
    let keys: Vec<String> = next
        .iter()
        .map(|r| String::from_utf8(r.key.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(
        keys,
        [late.to_string(), late.to_string()],
        "only the new order's events"
    );
    let outcome = env.apply(&next).await.unwrap();
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
    for order in orders.iter().chain([&late]) {
        assert_eq!(env.order_view(*order).await, Some(("paid".into(), 2)));
    }
}

#[tokio::test]
async fn an_undecodable_record_is_dead_lettered_and_the_batch_goes_on() {
    let mut env = TestEnv::new().await;
    let order = Uuid::new_v4();
    let good = placed(order);
    let mut headers = good.to_headers();
    headers.retain(|(name, _)| *name != "id");
    env.publish_raw(&order.to_string(), &headers, b"{\"order_id\":1}")
        .await;
    env.publish_raw(&order.to_string(), &good.to_headers(), b"not json")
        .await;
    env.publish(&good).await;
    // Out of order: version 3 while the view is at version 1.
    let mut gap = paid(order);
    gap.aggregate_version = 3;
    env.publish(&gap).await;

    let consumer = env.consumer();
    let records = receive(&consumer, 4).await;
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(
        outcome,
        Outcome {
            applied: 1,
            duplicates: 0,
            parked: 1,
            dead_lettered: 2,
            stale: 0,
            ..Default::default()
        }
    );
    // The latency metric takes the applied event only: not the dead letters
    // (whatever time they carry) nor the parked one.
    assert_eq!(outcome.occurred.len(), 1, "{:?}", outcome.occurred);
    assert!(
        (outcome.occurred[0] - good.occurred_at)
            .num_milliseconds()
            .abs()
            < 1
    );
    let reasons: Vec<String> = env
        .client
        .query(
            "SELECT reason FROM dead_letters ORDER BY kafka_partition, kafka_offset",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("missing header `id`")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("payload does not match")),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    // The gap is parked, not thrown away.
    let parked: i64 = env
        .client
        .query_one(
            "SELECT count(*) FROM parked_events WHERE aggregate_version = 3",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parked, 1);
    assert_eq!(env.order_view(order).await, Some(("placed".into(), 1)));
}

#[tokio::test]
async fn the_service_loop_applies_events_and_stops_cleanly_on_shutdown() {
    let mut env = TestEnv::new().await;
    env.batch_settings(50);
    let orders: Vec<Uuid> = (0..20).map(|_| Uuid::new_v4()).collect();
    for order in &orders {
        env.publish(&placed(*order)).await;
        env.publish(&paid(*order)).await;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = env.settings.clone();
    let service = tokio::spawn(projector::worker::run(
        settings,
        projector::ReadModels,
        Decoder::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = env
            .client
            .query_one("SELECT count(*) FROM order_view WHERE status = 'paid'", &[])
            .await
            .unwrap()
            .get(0);
        if done == 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of 20 orders projected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), service)
        .await
        .expect("stops within 30s")
        .unwrap()
        .expect("clean stop");
    // Offsets were committed on shutdown, and positions stored with the data:
    // for every partition that holds records, the group's committed offset
    // and the stored position are both its end offset.
    use rdkafka::consumer::Consumer;
    let (kafka, committed) = env.committed_offsets();
    let mut checked = 0;
    for element in committed.elements() {
        let (_, end) = kafka
            .fetch_watermarks(
                element.topic(),
                element.partition(),
                Duration::from_secs(10),
            )
            .unwrap();
        if end == 0 {
            continue;
        }
        let place = format!("{}/{}", element.topic(), element.partition());
        assert_eq!(
            element.offset(),
            rdkafka::Offset::Offset(end),
            "committed offset of {place}"
        );
        let stored: i64 = env
            .client
            .query_one(
                "SELECT next_offset FROM consumer_positions \
                 WHERE group_id = $1 AND topic = $2 AND kafka_partition = $3",
                &[
                    &env.settings.kafka.group_id,
                    &element.topic(),
                    &element.partition(),
                ],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, end, "stored position of {place}");
        checked += 1;
    }
    assert!(checked > 0, "no partition held a record");
    let inbox: i64 = env
        .client
        .query_one("SELECT count(*) FROM inbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(inbox, 40);
}

/// A parked event says what it waits for, and says it again when the gap
/// moves: version 4 parked at version 1 waits for 2; once 2 applies, for 3.
#[tokio::test]
async fn a_parked_event_waits_for_the_aggregate_s_next_version_as_it_moves() {
    let mut env = TestEnv::new().await;
    let order = Uuid::new_v4();
    let mut v4 = paid(order);
    v4.aggregate_version = 4;
    env.publish(&placed(order)).await;
    env.publish(&v4).await;
    let consumer = env.consumer();
    let records = receive(&consumer, 2).await;
    env.apply(&records).await.unwrap();
    assert_eq!(waiting_for(&env, order).await, 2);

    let mut v2 = paid(order);
    v2.aggregate_version = 2;
    env.publish(&v2).await;
    let records = receive(&consumer, 1).await;
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(outcome.applied, 1);
    assert_eq!(
        waiting_for(&env, order).await,
        3,
        "the gap moved to version 3"
    );
}

async fn waiting_for(env: &TestEnv, order: Uuid) -> i64 {
    env.client
        .query_one(
            "SELECT waiting_for FROM parked_events WHERE aggregate_id = $1",
            &[&order.to_string()],
        )
        .await
        .unwrap()
        .get(0)
}

/// A record larger than the contract allows is dead-lettered unread, with the
/// reason; the aggregate's next event parks behind it.
#[tokio::test]
async fn an_oversized_record_is_dead_lettered_with_its_size() {
    let mut env = TestEnv::new().await;
    let order = Uuid::new_v4();
    let good = placed(order);
    let huge = vec![b' '; outbox_events::MAX_RECORD_BYTES + 1];
    env.publish_raw(&order.to_string(), &good.to_headers(), &huge)
        .await;
    let consumer = env.consumer();
    let records = receive(&consumer, 1).await;
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(outcome.dead_lettered, 1, "{outcome:?}");
    let reason: String = env
        .client
        .query_one("SELECT reason FROM dead_letters", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        reason.contains(&format!(
            "larger than the contract's {}",
            outbox_events::MAX_RECORD_BYTES
        )),
        "{reason}"
    );
}

/// A long gap on a busy aggregate costs its batches nothing: a batch that
/// does not bring the missing version reads none of the events parked
/// behind it (before the bound, every batch read all 300 with their bytes).
/// When the gap closes, all of them apply, in order, although they are more
/// than one window of parked events.
#[tokio::test]
async fn events_parked_behind_a_gap_are_read_only_when_the_gap_closes() {
    use outbox_events::{Address, CustomerContactChanged, CustomerRegistered, Event};
    let mut env = TestEnv::new().await;
    let customer = format!("c-gap-{}", Uuid::new_v4().simple());
    let registered = Envelope::new(
        Event::CustomerRegistered(CustomerRegistered {
            customer_id: customer.clone(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
            address: Address {
                street: "1 Main St".into(),
                city: "Berlin".into(),
                postal_code: "10115".into(),
                country: "DE".into(),
            },
        }),
        1,
        Utc::now(),
    );
    let changed = |version: i64| {
        Envelope::new(
            Event::CustomerContactChanged(CustomerContactChanged {
                customer_id: customer.clone(),
                name: format!("Ada {version}"),
                email: "ada@example.com".into(),
            }),
            version,
            Utc::now(),
        )
    };
    let behind = projector::batch::PARKED_WINDOW * 3;
    let mut offset = 0;
    let mut records = |envelopes: &mut dyn Iterator<Item = Envelope>| {
        envelopes
            .map(|e| {
                offset += 1;
                env.record(&e, offset)
            })
            .collect::<Vec<_>>()
    };
    let first = records(&mut std::iter::once(registered));
    let parked = records(&mut (3..3 + behind).map(changed));
    let later = records(&mut std::iter::once(changed(3 + behind)));
    let gap = records(&mut std::iter::once(changed(2)));
    env.apply(&first).await.unwrap();
    let outcome = env.apply(&parked).await.unwrap();
    assert_eq!(outcome.parked as i64, behind);

    let read_before = parked_rows_read(&env).await;
    let outcome = env.apply(&later).await.unwrap();
    assert_eq!(outcome.parked, 1, "{outcome:?}");
    assert_eq!(
        parked_rows_read(&env).await - read_before,
        0,
        "a batch that cannot close the gap reads no parked event"
    );

    let outcome = env.apply(&gap).await.unwrap();
    assert_eq!(outcome.applied as i64, 1 + behind + 1, "{outcome:?}");
    let (name, version): (String, i64) = {
        let row = env
            .client
            .query_one(
                "SELECT s.name, v.version FROM customer_summary s \
                 JOIN aggregate_versions v ON v.aggregate_type = 'customer' AND v.aggregate_id = s.customer_id \
                 WHERE s.customer_id = $1",
                &[&customer],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(version, 3 + behind, "every parked event applied");
    assert_eq!(name, format!("Ada {}", 3 + behind), "in version order");
    let left: i64 = env
        .client
        .query_one("SELECT count(*) FROM parked_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

/// Rows of `parked_events` read so far by any plan (sequential and index
/// scans), from the statistics this connection has flushed.
async fn parked_rows_read(env: &TestEnv) -> i64 {
    // Flushed when the next statement's transaction ends; the snapshot of
    // statistics this session cached is dropped before the read.
    env.client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
    env.client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await
        .unwrap();
    env.client
        .query_one(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) \
             FROM pg_stat_user_tables WHERE relname = 'parked_events'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

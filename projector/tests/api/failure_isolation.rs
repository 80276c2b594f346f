//! No record can stop the read side: bad records are dead-lettered byte for
//! byte, gaps park, dead letters replay and discard.
use std::time::Duration;

use chrono::Utc;
use outbox_events::{
    header, Address, CustomerAddressChanged, CustomerContactChanged, CustomerRegistered, Envelope,
    Event, OrderDelivered, OrderShipped,
};
use projector::batch::{apply_batch, Outcome};
use projector::operator::{self, Replayed};
use projector::record::Decoder;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::helpers::{await_count, paid, placed, receive, ProjectorProcess, TestEnv};

fn shipped(order_id: Uuid) -> Envelope {
    let e = OrderShipped {
        order_id,
        carrier: "DHL".into(),
        tracking_number: "T-1".into(),
    };
    Envelope::new(Event::OrderShipped(e), 3, Utc::now())
}

fn delivered(order_id: Uuid) -> Envelope {
    Envelope::new(
        Event::OrderDelivered(OrderDelivered { order_id }),
        4,
        Utc::now(),
    )
}

/// One bad record: what was sent, so the dead letter can be compared byte for byte.
struct Sent {
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    value: Option<Vec<u8>>,
    kind: &'static str,
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// A real event as the Event Router publishes it, to break one way: its key,
/// headers and payload (the order's `OrderPlaced`).
struct Base {
    good: Envelope,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Base {
    fn new() -> Self {
        let order = Uuid::new_v4();
        let good = placed(order);
        let headers = good
            .to_headers()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Some(v.into_bytes())))
            .collect();
        Self {
            good,
            key: Some(order.to_string().into_bytes()),
            headers,
        }
    }

    /// The record with the good payload (what was broken is elsewhere).
    fn sent_good(self) -> Sent {
        let value = Some(self.good.event.to_payload().to_string().into_bytes());
        self.sent(value)
    }

    /// Header `name` set to `value`.
    fn with_header(mut self, name: &str, value: &[u8]) -> Self {
        for (k, v) in &mut self.headers {
            if k == name {
                *v = Some(value.to_vec());
            }
        }
        self
    }

    /// The record with its headers and `value` (its kind is named by [`bad_record`]).
    fn sent(self, value: Option<Vec<u8>>) -> Sent {
        Sent {
            key: self.key,
            headers: self.headers,
            value,
            kind: "",
        }
    }

    /// The record with the good headers and the payload changed by `change`.
    fn sent_with_payload(self, change: impl FnOnce(&mut serde_json::Value)) -> Sent {
        let mut p = self.good.event.to_payload();
        change(&mut p);
        self.sent(Some(p.to_string().into_bytes()))
    }
}

/// Makes one bad record out of a good one.
type Breaker = fn(&mut StdRng, Base) -> Sent;

/// Every kind of bad record: its name and how to make one (random bytes, or a
/// real event broken one way).
const BAD_RECORDS: &[(&str, Breaker)] = &[
    ("random bytes", |rng, _| {
        let names = [
            header::EVENT_ID,
            header::EVENT_TYPE,
            "x-junk",
            "aggregate_version",
            "ümlaut",
        ];
        let headers = (0..rng.random_range(0..5))
            .map(|_| {
                let name = names[rng.random_range(0..names.len())].to_owned();
                let value = rng.random_bool(0.8).then(|| random_bytes(rng, 40));
                (name, value)
            })
            .collect();
        Sent {
            key: rng.random_bool(0.8).then(|| random_bytes(rng, 40)),
            headers,
            value: rng.random_bool(0.9).then(|| random_bytes(rng, 300)),
            kind: "",
        }
    }),
    ("header not UTF-8", |_, b| {
        b.with_header(header::EVENT_TYPE, b"Order\xff\xfePlaced")
            .sent_good()
    }),
    ("duplicated header", |_, mut b| {
        b.headers.push((
            header::EVENT_ID.into(),
            Some(Uuid::new_v4().to_string().into_bytes()),
        ));
        b.sent_good()
    }),
    ("missing header", |rng, mut b| {
        b.headers.remove(rng.random_range(0..5));
        b.sent_good()
    }),
    ("unknown event type", |_, b| {
        b.with_header(header::EVENT_TYPE, b"OrderTeleported")
            .sent_good()
    }),
    ("unknown schema version", |_, b| {
        b.with_header(header::SCHEMA_VERSION, b"99").sent_good()
    }),
    ("wrong shape", |_, b| {
        b.sent(Some(b"[1, 2, {\"order_id\": null}]".to_vec()))
    }),
    ("NUL in text", |_, b| {
        b.sent_with_payload(|p| p["customer_id"] = serde_json::json!("c-\u{0}-nul"))
    }),
    ("absurd numbers", |rng, b| {
        let overflow = rng.random_bool(0.5);
        b.sent_with_payload(|p| {
            if overflow {
                p["lines"][0]["quantity"] = serde_json::json!(1u64 << 40);
                p["total_cents"] = serde_json::json!(9_000_000_000_000_000_000u64);
            } else {
                // Each within its range; their product overflows i64.
                p["lines"][0]["quantity"] = serde_json::json!(outbox_events::MAX_QUANTITY);
                p["lines"][0]["unit_price_cents"] =
                    serde_json::json!(outbox_events::MAX_AMOUNT_CENTS);
            }
        })
    }),
    ("very large value the database refuses", |rng, b| {
        // 300 kB, valid in every way the contract checks, but a SKU that no
        // index row can hold: the read database itself refuses it.
        let sku: String = (0..300_000)
            .map(|_| char::from(rng.random_range(b'a'..=b'z')))
            .collect();
        b.sent_with_payload(|p| p["lines"][0]["sku"] = serde_json::json!(sku))
    }),
    ("key not UTF-8", |_, mut b| {
        b.key = Some(b"\xc3\x28not-utf8".to_vec());
        b.sent_good()
    }),
    ("negative version", |_, b| {
        b.with_header(header::AGGREGATE_VERSION, b"-7").sent_good()
    }),
    ("no value", |_, b| b.sent(None)),
];

/// A malformed record of the `kind`-th kind of [`BAD_RECORDS`] (modulo their number).
fn bad_record(rng: &mut StdRng, kind: usize) -> Sent {
    let (name, make) = BAD_RECORDS[kind % BAD_RECORDS.len()];
    Sent {
        kind: name,
        ..make(rng, Base::new())
    }
}

#[tokio::test]
async fn no_record_stops_the_projector_and_every_bad_record_is_kept_byte_for_byte() {
    let env = TestEnv::new().await;
    let seed = rand::rng().random();
    let mut rng = StdRng::seed_from_u64(seed);
    let orders: Vec<Uuid> = (0..15).map(|_| Uuid::new_v4()).collect();
    let mut bad = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        env.publish(&placed(*order)).await;
        for k in 0..3 {
            let sent = bad_record(&mut rng, i * 3 + k);
            let headers: Vec<(&str, Option<&[u8]>)> = sent
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            let at = env
                .publish_bytes(
                    &env.topic,
                    sent.key.as_deref(),
                    &headers,
                    sent.value.as_deref(),
                )
                .await;
            bad.push((at, sent));
        }
        env.publish(&paid(*order)).await;
    }
    let customer = Envelope::new(
        Event::CustomerRegistered(CustomerRegistered {
            customer_id: "c-1".into(),
            name: "Ann".into(),
            email: "ann@example.com".into(),
            address: Address {
                street: "1 Way".into(),
                city: "Oslo".into(),
                postal_code: "0150".into(),
                country: "NO".into(),
            },
        }),
        1,
        Utc::now(),
    );
    env.publish(&customer).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let service = tokio::spawn(projector::worker::run(
        env.settings.clone(),
        projector::ReadModels,
        Decoder::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let row = env
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM order_view WHERE status = 'paid' AND last_version = 2), \
                        (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM customer_summary WHERE name = 'Ann')",
                &[],
            )
            .await
            .unwrap();
        let (paid_orders, dead, customers): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if paid_orders == orders.len() as i64 && dead == bad.len() as i64 && customers == 1 {
            break;
        }
        assert!(
            !service.is_finished(),
            "the projector stopped: {:?}",
            service.await
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "seed {seed}: {paid_orders}/{} orders paid, {dead}/{} dead letters",
            orders.len(),
            bad.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for ((partition, offset), sent) in &bad {
        let row = env
            .client
            .query_one(
                "SELECT key_bytes, header_names, header_values, value_bytes, reason, status FROM dead_letters \
                 WHERE topic = $1 AND kafka_partition = $2 AND kafka_offset = $3",
                &[&env.topic, partition, offset],
            )
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: {} record at {partition}/{offset} not dead-lettered: {e}", sent.kind));
        let names: Vec<Vec<u8>> = row.get(1);
        let values: Vec<Option<Vec<u8>>> = row.get(2);
        let headers: Vec<(String, Option<Vec<u8>>)> = names
            .into_iter()
            .map(|n| String::from_utf8(n).unwrap())
            .zip(values)
            .collect();
        assert_eq!(
            row.get::<_, Option<Vec<u8>>>(0),
            sent.key,
            "{} key",
            sent.kind
        );
        assert_eq!(headers, sent.headers, "{} headers", sent.kind);
        assert_eq!(
            row.get::<_, Option<Vec<u8>>>(3),
            sent.value,
            "{} value",
            sent.kind
        );
        let reason: String = row.get(4);
        assert!(
            !reason.is_empty() && row.get::<_, String>(5) == "open",
            "{}: {reason}",
            sent.kind
        );
    }
    let _ = stop.send(());
    service.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_gap_parks_the_aggregate_until_the_missing_version_arrives() {
    let mut env = TestEnv::new().await;
    let order = Uuid::new_v4();
    let other = Uuid::new_v4();
    let events = [placed(order), paid(order), shipped(order), delivered(order)];
    let customer = "c-gap";
    let address = |city: &str| Address {
        street: "1 Way".into(),
        city: city.into(),
        postal_code: "1".into(),
        country: "DE".into(),
    };
    let c_events: Vec<Envelope> = vec![
        Event::CustomerRegistered(CustomerRegistered {
            customer_id: customer.into(),
            name: "V1".into(),
            email: "v1@x.org".into(),
            address: address("Bonn"),
        }),
        Event::CustomerContactChanged(CustomerContactChanged {
            customer_id: customer.into(),
            name: "V2".into(),
            email: "v2@x.org".into(),
        }),
        Event::CustomerAddressChanged(CustomerAddressChanged {
            customer_id: customer.into(),
            address: address("Köln"),
        }),
        Event::CustomerContactChanged(CustomerContactChanged {
            customer_id: customer.into(),
            name: "V4".into(),
            email: "v4@x.org".into(),
        }),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, e)| Envelope::new(e, i as i64 + 1, Utc::now()))
    .collect();

    for i in [0, 2, 3] {
        env.publish(&events[i]).await;
        env.publish(&c_events[i]).await;
    }
    env.publish(&placed(other)).await; // another aggregate keeps flowing
    let consumer = env.consumer();
    let records = receive(&consumer, 7).await;
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(
        outcome,
        Outcome {
            applied: 3,
            duplicates: 0,
            parked: 4,
            dead_lettered: 0,
            stale: 0,
            ..Default::default()
        }
    );
    assert_eq!(env.order_view(order).await, Some(("placed".into(), 1)));
    assert_eq!(env.order_view(other).await, Some(("placed".into(), 1)));
    assert_eq!(customer_row(&env).await, ("V1".into(), "Bonn".into(), 1));
    let backlog = operator::backlog(&*env.client).await.unwrap();
    assert_eq!((backlog.parked_events, backlog.parked_aggregates), (4, 2));

    // Redelivering a parked event changes nothing.
    let again = env.apply(&records[1..2]).await.unwrap();
    assert_eq!(again.applied + again.parked, 0, "{again:?}");

    env.publish(&events[1]).await;
    env.publish(&c_events[1]).await;
    let records = receive(&consumer, 2).await;
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(
        outcome,
        Outcome {
            applied: 6,
            duplicates: 0,
            parked: 0,
            dead_lettered: 0,
            stale: 0,
            ..Default::default()
        }
    );
    assert_eq!(env.order_view(order).await, Some(("delivered".into(), 4)));
    assert_eq!(customer_row(&env).await, ("V4".into(), "Köln".into(), 4));
    assert_eq!(
        operator::backlog(&*env.client).await.unwrap(),
        operator::Backlog::default()
    );
    // The same policy for both: stale copies are skipped and counted.
    let stale = env.apply(&records).await.unwrap();
    assert_eq!(stale.duplicates, 2);
}

async fn customer_row(env: &TestEnv) -> (String, String, i64) {
    let r = env
        .client
        .query_one(
            "SELECT name, city, customer_version FROM customer_summary WHERE customer_id = 'c-gap'",
            &[],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

/// `OrderPaid` as a producer that ran ahead might publish it: schema v9, other field names.
fn paid_v9(order_id: Uuid) -> (Envelope, Vec<u8>) {
    let e = paid(order_id);
    let body =
        serde_json::json!({"order": order_id, "psp_ref": "p-1", "cents": 1000, "ccy": "EUR"});
    (e, body.to_string().into_bytes())
}

fn upcast_paid_v9(payload: &[u8]) -> Result<Event, outbox_events::ContractError> {
    let v: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| outbox_events::ContractError::Payload(e.to_string()))?;
    Ok(Event::OrderPaid(outbox_events::OrderPaid {
        order_id: v["order"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_default(),
        payment_reference: v["psp_ref"].as_str().unwrap_or_default().into(),
        amount_cents: v["cents"].as_i64().unwrap_or_default(),
        currency: v["ccy"].as_str().unwrap_or_default().into(),
    }))
}

async fn publish_v9(env: &TestEnv, e: &Envelope, body: &[u8]) {
    let mut headers = e.to_headers();
    for (k, v) in headers.iter_mut() {
        if *k == header::SCHEMA_VERSION {
            *v = "9".into();
        }
    }
    let headers: Vec<(&str, Option<&[u8]>)> = headers
        .iter()
        .map(|(k, v)| (*k, Some(v.as_bytes())))
        .collect();
    env.publish_bytes(
        &env.topic,
        Some(e.aggregate_id.as_bytes()),
        &headers,
        Some(body),
    )
    .await;
}

#[tokio::test]
async fn a_dead_letter_replayed_after_an_upcaster_lands_applies_and_releases_what_waited() {
    let mut env = TestEnv::new().await;
    let order = Uuid::new_v4();
    let (placed, (paid9, body), shipped) = (placed(order), paid_v9(order), shipped(order));
    env.publish(&placed).await;
    publish_v9(&env, &paid9, &body).await;
    env.publish(&shipped).await;
    let records = receive(&env.consumer(), 3).await;
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(
        outcome,
        Outcome {
            applied: 1,
            duplicates: 0,
            parked: 1,
            dead_lettered: 1,
            stale: 0,
            ..Default::default()
        }
    );

    let letters = operator::list(&*env.client, false, operator::Page::default())
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert!(
        letter.reason.contains("unknown schema version 9"),
        "{}",
        letter.reason
    );
    assert_eq!(
        (letter.parked_behind, letter.aggregate_version),
        (1, Some(2))
    );
    assert_eq!(letter.event_type.as_deref(), Some("OrderPaid"));

    // Today's code still cannot read it: the dead letter stays open.
    let result = operator::replay(
        &mut env.client,
        &projector::ReadModels,
        &Decoder::default(),
        letter.id,
    )
    .await
    .unwrap();
    assert!(
        matches!(result, Replayed::StillFailing { .. }),
        "{result:?}"
    );
    assert_eq!(env.order_view(order).await, Some(("placed".into(), 1)));

    // The build that knows v9 replays it: applied, then the parked shipment.
    let decoder = Decoder::default().with_upcaster("OrderPaid", 9, upcast_paid_v9);
    let result = operator::replay(&mut env.client, &projector::ReadModels, &decoder, letter.id)
        .await
        .unwrap();
    assert_eq!(result, Replayed::Applied { released: 1 });
    assert_eq!(env.order_view(order).await, Some(("shipped".into(), 3)));
    assert!(
        operator::list(&*env.client, false, operator::Page::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        operator::list(&*env.client, true, operator::Page::default())
            .await
            .unwrap()[0]
            .status,
        "replayed"
    );

    // The read models equal those of the same history published in v2 form.
    let mut reference = TestEnv::new().await;
    let history: Vec<_> = [&placed, &paid9, &shipped]
        .iter()
        .enumerate()
        .map(|(i, e)| reference.record(e, i as i64))
        .collect();
    apply_batch(
        &mut reference.client,
        &projector::ReadModels,
        &Decoder::default(),
        &history,
        &projector::position::Checkpoint::new("test"),
    )
    .await
    .unwrap();
    assert_eq!(env.read_models().await, reference.read_models().await);
}

#[tokio::test]
async fn discarding_is_explicit_and_skipping_a_version_releases_in_order() {
    let mut env = TestEnv::new().await;
    let (kept, skipped) = (Uuid::new_v4(), Uuid::new_v4());
    for order in [kept, skipped] {
        let (p9, body) = paid_v9(order);
        env.publish(&placed(order)).await;
        publish_v9(&env, &p9, &body).await;
        env.publish(&shipped(order)).await;
    }
    let records = receive(&env.consumer(), 6).await;
    let outcome = env.apply(&records).await.unwrap();
    assert_eq!(
        outcome,
        Outcome {
            applied: 2,
            duplicates: 0,
            parked: 2,
            dead_lettered: 2,
            stale: 0,
            ..Default::default()
        }
    );
    let letters = operator::list(&*env.client, false, operator::Page::default())
        .await
        .unwrap();
    // One page at a time: the first, then the one after it, then nothing.
    let page = |after: i64| operator::list(&*env.client, false, operator::Page { after, limit: 1 });
    let first = page(0).await.unwrap();
    let second = page(first[0].id).await.unwrap();
    assert_eq!([first[0].id, second[0].id], [letters[0].id, letters[1].id]);
    assert!(page(second[0].id).await.unwrap().is_empty());
    let id_of = |order: Uuid| {
        letters
            .iter()
            .find(|d| d.aggregate_id == Some(order.to_string()))
            .unwrap()
            .id
    };

    let plain = operator::discard(
        &mut env.client,
        &projector::ReadModels,
        &Decoder::default(),
        id_of(kept),
        "test: not needed",
        false,
    )
    .await
    .unwrap();
    assert_eq!(
        (plain.released, plain.still_parked),
        (0, 1),
        "a plain discard releases nothing"
    );
    assert_eq!(env.order_view(kept).await, Some(("placed".into(), 1)));

    let skip = operator::discard(
        &mut env.client,
        &projector::ReadModels,
        &Decoder::default(),
        id_of(skipped),
        "test: payment voided",
        true,
    )
    .await
    .unwrap();
    assert_eq!((skip.released, skip.still_parked), (1, 0));
    assert_eq!(env.order_view(skipped).await, Some(("shipped".into(), 3)));

    let all = operator::list(&*env.client, true, operator::Page::default())
        .await
        .unwrap();
    assert!(all.iter().all(|d| d.status == "discarded"));
    assert!(all
        .iter()
        .any(|d| d.resolution.as_deref()
            == Some("discarded (version skipped): test: payment voided")));
    let again = operator::replay(
        &mut env.client,
        &projector::ReadModels,
        &Decoder::default(),
        id_of(kept),
    )
    .await;
    assert!(
        matches!(again, Err(operator::OperatorError::NotOpen { .. })),
        "{again:?}"
    );
}

/// Two instances in one group, customers registering while their orders are
/// placed: every order shows the name written for its customer, whichever
/// instance applied which side first (both paths lock the customer), and both
/// instances took part (each has applied events in `consumer_runs`).
#[tokio::test]
async fn two_instances_keep_every_cross_aggregate_join_right() {
    let env = TestEnv::new().await;
    let mut stops = Vec::new();
    let mut services = Vec::new();
    for _ in 0..2 {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        services.push(tokio::spawn(projector::worker::run(
            env.settings.clone(),
            projector::ReadModels,
            Decoder::default(),
            async {
                let _ = stopped.await;
            },
        )));
    }
    let pair = |i: usize| {
        let customer = format!("c-duo-{i}");
        let registered = Envelope::new(
            Event::CustomerRegistered(CustomerRegistered {
                customer_id: customer.clone(),
                name: format!("Name {i}"),
                email: "duo@example.com".into(),
                address: Address {
                    street: "1 Way".into(),
                    city: "Oslo".into(),
                    postal_code: "0150".into(),
                    country: "NO".into(),
                },
            }),
            1,
            Utc::now(),
        );
        let order_id = Uuid::new_v4();
        let mut order = placed(order_id);
        if let Event::OrderPlaced(p) = &mut order.event {
            p.customer_id = customer;
        }
        (order_id, order, registered)
    };
    let runs_applying = || async {
        env.client
            .query_one(
                "SELECT count(*) FROM consumer_runs WHERE events_applied > 0",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    // At least 40 pairs, and on until both instances have applied some: the
    // second may join after the first took every partition.
    let mut written: Vec<(Uuid, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while written.len() < 40 || runs_applying().await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {} pairs only {} instance(s) applied events",
            written.len(),
            runs_applying().await
        );
        let i = written.len();
        let (order_id, order, registered) = pair(i);
        env.publish(&order).await;
        env.publish(&registered).await;
        written.push((order_id, format!("Name {i}")));
        if written.len() >= 40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let total = written.len() as i64;
    loop {
        let applied: i64 = env
            .client
            .query_one("SELECT count(*) FROM inbox", &[])
            .await
            .unwrap()
            .get(0);
        if applied == 2 * total {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{applied} of {} events applied",
            2 * total
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The name written for each order's customer, compared order by order.
    let shown: std::collections::HashMap<Uuid, Option<String>> = env
        .client
        .query(
            "SELECT order_id, customer_name FROM order_view WHERE customer_id LIKE 'c-duo-%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(shown.len(), written.len(), "one row per order");
    let wrong: Vec<String> = written
        .iter()
        .filter(|(id, name)| shown.get(id).cloned().flatten().as_deref() != Some(name.as_str()))
        .map(|(id, name)| format!("{id}: {:?}, written {name:?}", shown.get(id)))
        .collect();
    assert!(
        wrong.is_empty(),
        "orders without their customer's name: {wrong:?}"
    );
    assert_eq!(runs_applying().await, 2, "both instances applied events");
    for stop in stops {
        let _ = stop.send(());
    }
    for service in services {
        service.await.unwrap().unwrap();
    }
}

/// The interleaving two instances can produce, forced: instance A has applied
/// an order but not committed; instance B applies its customer's registration.
/// B must wait for A (the customer lock), or A's order would never get the name.
#[tokio::test]
async fn a_customer_applied_while_its_order_is_uncommitted_still_reaches_the_order() {
    let mut env = TestEnv::new().await;
    let customer = CustomerRegistered {
        customer_id: "c-race".into(),
        name: "Racing Rita".into(),
        email: "rita@example.com".into(),
        address: Address {
            street: "1 Way".into(),
            city: "Oslo".into(),
            postal_code: "0150".into(),
            country: "NO".into(),
        },
    };
    let registered = Envelope::new(Event::CustomerRegistered(customer), 1, Utc::now());
    let order_id = Uuid::new_v4();
    let mut order = placed(order_id);
    if let Event::OrderPlaced(p) = &mut order.event {
        p.customer_id = "c-race".into();
    }
    let order_record = env.record(&order, 0);
    let customer_record = env.record(&registered, 0);

    let mut tx = env.client.transaction().await.unwrap();
    projector::batch::apply_in(
        &mut tx,
        &projector::ReadModels,
        &Decoder::default(),
        std::slice::from_ref(&order_record),
    )
    .await
    .unwrap();
    let mut other = projector::worker::connect(projector::SERVICE, &env.settings)
        .await
        .unwrap();
    let b = tokio::spawn(async move {
        apply_batch(
            &mut other,
            &projector::ReadModels,
            &Decoder::default(),
            &[customer_record],
            &projector::position::Checkpoint::new("test"),
        )
        .await
        .unwrap()
    });
    // B is seen waiting on the customer's advisory lock, not merely slow: the
    // test cannot pass without the lock.
    let observer = projector::worker::connect(projector::SERVICE, &env.settings)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            break;
        }
        assert!(
            !b.is_finished() && std::time::Instant::now() < deadline,
            "B must wait for A's customer lock (finished: {})",
            b.is_finished()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!b.is_finished(), "B must wait for A's customer lock");
    tx.commit().await.unwrap();
    assert_eq!(b.await.unwrap().applied, 1);
    let name: Option<String> = env
        .client
        .query_one(
            "SELECT customer_name FROM order_view WHERE order_id = $1",
            &[&order_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(name.as_deref(), Some("Racing Rita"));
}

/// A schema the code does not expect (the order read model's table gone) is
/// not a bad record: the projector logs it at ERROR, retries the batch, stays
/// up, and applies, parks and dead-letters nothing meanwhile; once the table
/// is back it catches up with every event.
#[tokio::test(flavor = "multi_thread")]
async fn a_schema_drift_is_logged_and_retried_never_dead_lettered_and_caught_up_once_repaired() {
    let env = TestEnv::new().await;
    env.client
        .batch_execute("ALTER TABLE order_view RENAME TO order_view_away")
        .await
        .unwrap();
    let orders: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for order in &orders {
        env.publish(&placed(*order)).await;
        env.publish(&paid(*order)).await;
    }
    let log_path = std::env::temp_dir().join(format!("{}.log", env.settings.kafka.group_id));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut process = ProjectorProcess::spawn_logging(&env, "warn", log);
    let count = |sql: &'static str| {
        let client = &env.client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // Two ERROR lines: the batch failed, and failed again when retried.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let errors = text
            .lines()
            .filter(|l| {
                l.contains("ERROR") && l.contains("batch failed for a reason outside the records")
            })
            .count();
        if errors >= 2 {
            assert!(
                text.contains("order_view"),
                "the error names the table:\n{text}"
            );
            break;
        }
        assert!(process.is_running(), "the projector exited:\n{text}");
        assert!(
            std::time::Instant::now() < deadline,
            "no retried ERROR within 60 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(process.is_running(), "the projector stays up");
    assert_eq!(count("SELECT count(*) FROM inbox").await, 0);
    assert_eq!(count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(count("SELECT count(*) FROM parked_events").await, 0);

    env.client
        .batch_execute("ALTER TABLE order_view_away RENAME TO order_view")
        .await
        .unwrap();
    await_count(
        &env.client,
        "SELECT count(*) FROM inbox",
        10,
        Duration::from_secs(60),
    )
    .await;
    for order in &orders {
        assert_eq!(env.order_view(*order).await, Some(("paid".into(), 2)));
    }
    assert_eq!(count("SELECT count(*) FROM dead_letters").await, 0);
    process.stop();
    let _ = std::fs::remove_file(&log_path);
}

/// Static membership: two running instances under one name cannot both
/// consume. The broker fences the older when the newer joins; the older
/// stops with a non-zero exit and says why (librdkafka's fatal error, which
/// no retry cures), and the newer applies what follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_under_the_same_name_fences_the_first_which_exits_and_says_why() {
    let (env, name, log_path, mut first) = named_instance_applying("first").await;

    let mut second = ProjectorProcess::spawn_named(&env, &name, std::process::Stdio::null());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = first.exit_status() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first instance still runs 60 s after a second joined under its name:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !status.success(),
        "the fenced instance exits non-zero: {status}\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("the Kafka consumer failed for good")
            && l.contains("group_instance_id")),
        "its log says why, at ERROR:\n{log}"
    );

    let after = Uuid::new_v4();
    env.publish(&placed(after)).await;
    await_count(
        &env.client,
        "SELECT count(*) FROM inbox",
        2,
        Duration::from_secs(60),
    )
    .await;
    assert!(second.is_running(), "the newer instance goes on");
    assert_eq!(env.order_view(after).await, Some(("placed".into(), 1)));
    second.stop();
    let _ = std::fs::remove_file(&log_path);
}

/// A static member fenced by its name while no other instance keeps it (in the
/// chaos suite: a group coordinator that failed over; here: a second instance
/// that joins and is killed) joins again with a new consumer and goes on
/// applying, instead of stopping the service.
#[tokio::test]
async fn a_fenced_instance_joins_again_and_goes_on_once_the_other_is_gone() {
    let (env, name, log_path, mut first) = named_instance_applying("rejoin").await;

    let second = ProjectorProcess::spawn_named(&env, &name, std::process::Stdio::null());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let rejoined = "joining again with a new consumer";
    while !std::fs::read_to_string(&log_path)
        .unwrap()
        .contains(rejoined)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first instance was not fenced within 60 s of a second joining under its name:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        assert!(
            first.is_running(),
            "the first instance exited at its first fence"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.kill();

    let after = Uuid::new_v4();
    env.publish(&placed(after)).await;
    await_count(
        &env.client,
        "SELECT count(*) FROM inbox",
        2,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(env.order_view(after).await, Some(("placed".into(), 1)));
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(first.is_running(), "the first instance stopped:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains(rejoined)),
        "the fence is logged at WARN:\n{log}"
    );
    assert!(
        !log.contains("failed for good"),
        "the fenced instance gave up although it was alone:\n{log}"
    );
    first.stop();
    let _ = std::fs::remove_file(&log_path);
}

/// A projector instance named `<group>-1`, its log in a file of its own
/// (`<group>-<log>.log` in the temp dir), once it has applied a first event.
async fn named_instance_applying(
    log: &str,
) -> (TestEnv, String, std::path::PathBuf, ProjectorProcess) {
    let env = TestEnv::new().await;
    let name = format!("{}-1", env.settings.kafka.group_id);
    let log_path = std::env::temp_dir().join(format!("{}-{log}.log", env.settings.kafka.group_id));
    let first =
        ProjectorProcess::spawn_named(&env, &name, std::fs::File::create(&log_path).unwrap());
    env.publish(&placed(Uuid::new_v4())).await;
    await_count(
        &env.client,
        "SELECT count(*) FROM inbox",
        1,
        Duration::from_secs(60),
    )
    .await;
    (env, name, log_path, first)
}

//! One trace from command to read model: the writer's command span and the
//! projector's apply span share the trace id, and the writer's span is the
//! apply span's parent, through the `traceparent` stored in the outbox.
//!
//! A test across both sides, so it lives here with the end-to-end suites
//! rather than in either side's tests (the read side must not depend on the
//! write side's code).
#![allow(clippy::unwrap_used)] // test helpers fail loudly by design

use std::sync::OnceLock;

use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use outbox_events::Address;
use stack::{Component, Stack};
use tracing_subscriber::layer::SubscriberExt;
use writer::domain::{Command, CustomerCommand};

/// PostgreSQL, once for this test binary.
fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let stack = Stack::for_tests("tracing").expect("test stack");
        stack
            .start(Component::Postgres, &|_| {})
            .expect("postgres starts");
        stack
    })
}

/// A database of its own, owned by the owner role; its connection settings.
fn database(prefix: &str) -> tokio_postgres::Config {
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    stack()
        .admin_sql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER orders_owner"),
        )
        .unwrap();
    let params = stack().db(&name);
    let mut config = tokio_postgres::Config::new();
    config
        .host(&params.host)
        .port(params.port)
        .user(&params.user)
        .password(&params.password)
        .dbname(&params.dbname);
    config
}

/// A write database of its own, migrated by the writer's own code.
async fn write_pool() -> deadpool_postgres::Pool {
    let pool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(
        database("w"),
        tokio_postgres::NoTls,
    ))
    .max_size(1)
    .build()
    .unwrap();
    writer::migrate(&mut pool.get().await.unwrap())
        .await
        .unwrap();
    pool
}

/// A read database of its own, migrated by the projector's own code.
async fn read_client() -> projector::worker::Db {
    let (mut client, connection) = database("r").connect(tokio_postgres::NoTls).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    projector::migrate(&mut client).await.unwrap();
    projector::worker::Db::new(client, task)
}

#[tokio::test(flavor = "current_thread")]
async fn the_writers_command_span_is_the_parent_of_the_projectors_apply_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        tracing_subscriber::registry().with(service::telemetry::layer(&provider, "test"));
    let _guard = tracing::subscriber::set_default(subscriber);

    // The writer: one command, the real write path.
    let pool = write_pool().await;
    let command = Command::Customer(CustomerCommand::Register {
        customer_id: "c-traced".into(),
        name: "Tracy".into(),
        email: "tracy@example.com".into(),
        address: Address {
            street: "1 Span St".into(),
            city: "Oslo".into(),
            postal_code: "0150".into(),
            country: "NO".into(),
        },
    });
    let mut client = pool.get().await.unwrap();
    let committed = writer::store::execute(&mut client, &command, None, None)
        .await
        .unwrap();
    let envelope = committed.events[0].clone();
    let stored: String = client
        .query_one(
            "SELECT traceparent FROM outbox WHERE id = $1",
            &[&envelope.event_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        Some(stored.clone()),
        envelope.traceparent,
        "stored in the outbox row"
    );
    assert_eq!(stored.len(), 55, "a W3C traceparent: {stored}");

    // The projector: the record as the Event Router publishes it (the outbox
    // column as a header), applied with the service loop's spans.
    let mut read = read_client().await;
    let record = projector::record::Record::from_envelope(
        &envelope,
        outbox_events::topic_for(&envelope.aggregate_type),
        0,
        0,
    );
    assert_eq!(record.header("traceparent"), Some(stored.as_str()));
    let spans = projector::trace::event_spans(projector::SERVICE, std::slice::from_ref(&record));
    let checkpoint = projector::position::Checkpoint::new("tracing").unfenced();
    projector::batch::apply_batch(
        &mut read,
        &projector::ReadModels,
        &projector::record::Decoder::default(),
        &[record],
        &checkpoint,
    )
    .await
    .unwrap();
    drop(spans);
    provider.force_flush().unwrap();

    let finished = exporter.get_finished_spans().unwrap();
    let command_span = finished
        .iter()
        .find(|s| s.name == "writer.command")
        .expect("the writer's span");
    let apply_span = finished
        .iter()
        .find(|s| s.name == "projector.apply")
        .expect("the projector's span");
    for s in [command_span, apply_span] {
        eprintln!(
            "span {:<16} trace {} span {} parent {} attributes {:?}",
            s.name,
            s.span_context.trace_id(),
            s.span_context.span_id(),
            s.parent_span_id,
            s.attributes
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect::<Vec<_>>()
        );
    }
    assert_ne!(command_span.span_context.trace_id(), TraceId::INVALID);
    assert_eq!(
        apply_span.span_context.trace_id(),
        command_span.span_context.trace_id(),
        "one trace"
    );
    assert_eq!(
        apply_span.parent_span_id,
        command_span.span_context.span_id(),
        "the apply span's parent is the command span"
    );
    assert_ne!(apply_span.parent_span_id, SpanId::INVALID);
    assert!(stored.contains(&command_span.span_context.trace_id().to_string()));
}

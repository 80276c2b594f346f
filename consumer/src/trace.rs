//! One trace from command to read model: each applied record gets a span
//! (`<service>.apply`, e.g. `projector.apply`) whose parent is the producer's command span, named by the
//! record's `traceparent` header (the outbox column, which the Event Router
//! copies into a header). The span covers the batch's transaction, and its
//! `relay_delay_ms` attribute is the time from the event (`occurred_at`) to
//! its arrival here: the relay's share of the end-to-end latency.

use chrono::{DateTime, Utc};

use crate::record::Record;

/// The spans of a batch's records, started now; drop them after the commit.
pub fn event_spans(service: &str, batch: &[Record]) -> Vec<tracing::Span> {
    let now = Utc::now();
    batch
        .iter()
        .map(|record| {
            let relay_delay_ms = record
                .header("occurred_at")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| (now - t.with_timezone(&Utc)).num_milliseconds());
            let span = tracing::info_span!(
                "consumer.apply",
                // The exported span's name: `projector.apply`, `inventory.apply`, ...
                otel.name = format!("{service}.apply"),
                otel.kind = "consumer",
                event_id = record.header("id").unwrap_or(""),
                event_type = record.header("event_type").unwrap_or(""),
                aggregate_version = record.header("aggregate_version").unwrap_or(""),
                messaging.destination = %record.topic,
                messaging.kafka.partition = record.partition,
                messaging.kafka.offset = record.offset,
                relay_delay_ms,
            );
            if let Some(parent) = record.header("traceparent") {
                service::telemetry::set_parent(&span, parent);
            }
            span
        })
        .collect()
}

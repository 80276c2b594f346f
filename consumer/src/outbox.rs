//! A handler that publishes: its events go to its own transactional outbox,
//! in the batch's transaction, so an event is published if and only if the
//! change it describes committed (and, with the inbox, exactly once per event
//! consumed). Debezium relays the outbox like the order service's: the table
//! has the same shape in every database (`sql/write/V1`, `sql/inventory/V2`).

use outbox_events::Envelope;

use crate::handler::{p, Step};

/// The statement that appends `envelope` to the outbox of the handler's database.
pub fn append(envelope: &Envelope) -> Step {
    let event = &envelope.event;
    Step::new(
        "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, occurred_at, traceparent, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            p(envelope.event_id),
            p(envelope.aggregate_type.clone()),
            p(envelope.aggregate_id.clone()),
            p(event.event_type()),
            p(event.schema_version()),
            p(envelope.aggregate_version),
            p(envelope.occurred_at),
            p(envelope.traceparent.clone().unwrap_or_default()),
            p(event.to_payload()),
        ],
    )
    .expect(1, "append the event to the outbox")
}

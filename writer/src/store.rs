//! One command, one transaction: the only code that writes state or the outbox.

use chrono::{DateTime, Utc};
use outbox_events::{Envelope, Event};
use tokio_postgres::{GenericClient, Transaction};
use uuid::Uuid;

use crate::domain::{decide, Command, OrderState, OrderStatus, Rejection};

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rules refused the command; nothing changed. Retrying will not help.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A payload failed its own contract check; a bug, never retried.
    #[error("event {event_type} failed its contract check: {reason}")]
    Contract {
        event_type: &'static str,
        reason: String,
    },
    /// The database failed; [`StoreError::is_retryable`] says whether to try again.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Database(e) if service::is_retryable(e))
    }
}

/// What a committed command produced.
#[derive(Debug, Clone)]
pub struct Committed {
    pub order_id: Uuid,
    pub events: Vec<Envelope>,
}

/// Runs `command` in one transaction; on any error the transaction is dropped
/// and rolls back, so the database is unchanged.
pub async fn execute(
    client: &mut tokio_postgres::Client,
    command: &Command,
    traceparent: Option<&str>,
) -> Result<Committed, StoreError> {
    let tx = client.transaction().await?;
    let now = Utc::now();
    let order_id = command.order_id();
    // Row lock: concurrent commands on one order serialise here, so versions stay gapless.
    let state = load_for_update(&tx, order_id).await?;
    let events = decide(state.as_ref(), command)?;
    let base_version = state.as_ref().map_or(0, |s| s.version);

    let mut envelopes = Vec::with_capacity(events.len());
    for (i, event) in events.into_iter().enumerate() {
        let mut envelope = Envelope::new(event, base_version + i as i64 + 1, now);
        envelope.traceparent = traceparent.map(str::to_owned);
        apply_to_state(&tx, &envelope, now).await?;
        append_to_outbox(&tx, &envelope).await?;
        envelopes.push(envelope);
    }
    tx.commit().await?;
    Ok(Committed {
        order_id,
        events: envelopes,
    })
}

/// Reads an order's state, locking its row until the transaction ends.
async fn load_for_update(
    tx: &Transaction<'_>,
    order_id: Uuid,
) -> Result<Option<OrderState>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT status, currency, total_cents, version FROM orders WHERE order_id = $1 FOR UPDATE",
            &[&order_id],
        )
        .await?;
    Ok(row.map(|row| OrderState {
        order_id,
        status: OrderStatus::parse(row.get(0)).unwrap_or(OrderStatus::Placed),
        currency: row.get::<_, String>(1).trim().to_owned(),
        total_cents: row.get(2),
        version: row.get(3),
    }))
}

async fn apply_to_state(
    tx: &Transaction<'_>,
    envelope: &Envelope,
    now: DateTime<Utc>,
) -> Result<(), tokio_postgres::Error> {
    let version = envelope.aggregate_version;
    match &envelope.event {
        Event::OrderPlaced(e) => {
            tx.execute(
                "INSERT INTO orders (order_id, customer_id, status, currency, total_cents, version, created_at, updated_at) \
                 VALUES ($1, $2, 'placed', $3, $4, $5, $6, $6)",
                &[&e.order_id, &e.customer_id, &e.currency, &e.total_cents, &version, &now],
            )
            .await?;
            for (i, line) in e.lines.iter().enumerate() {
                let line_no = i as i32 + 1;
                tx.execute(
                    "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, $5)",
                    &[&e.order_id, &line_no, &line.sku, &line.quantity, &line.unit_price_cents],
                )
                .await?;
            }
        }
        Event::OrderPaid(e) => {
            tx.execute(
                "UPDATE orders SET status = 'paid', payment_reference = $2, version = $3, updated_at = $4 WHERE order_id = $1",
                &[&e.order_id, &e.payment_reference, &version, &now],
            )
            .await?;
        }
        Event::OrderShipped(e) => {
            tx.execute(
                "UPDATE orders SET status = 'shipped', carrier = $2, tracking_number = $3, version = $4, updated_at = $5 WHERE order_id = $1",
                &[&e.order_id, &e.carrier, &e.tracking_number, &version, &now],
            )
            .await?;
        }
        Event::OrderCancelled(e) => {
            tx.execute(
                "UPDATE orders SET status = 'cancelled', cancel_reason = $2, version = $3, updated_at = $4 WHERE order_id = $1",
                &[&e.order_id, &e.reason, &version, &now],
            )
            .await?;
        }
    }
    Ok(())
}

/// Appends one event to the outbox after checking that its payload decodes
/// back into the same event, so nothing malformed ever reaches the WAL.
async fn append_to_outbox(tx: &Transaction<'_>, envelope: &Envelope) -> Result<(), StoreError> {
    let event = &envelope.event;
    let payload = event.to_payload();
    let bytes = payload.to_string();
    let decoded = Event::from_payload(event.event_type(), event.schema_version(), bytes.as_bytes())
        .map_err(|e| StoreError::Contract {
            event_type: event.event_type(),
            reason: e.to_string(),
        })?;
    if &decoded != event {
        return Err(StoreError::Contract {
            event_type: event.event_type(),
            reason: "payload does not round-trip".into(),
        });
    }
    tx.execute(
        "INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, occurred_at, traceparent, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &envelope.event_id,
            &envelope.aggregate_type,
            &envelope.aggregate_id,
            &event.event_type(),
            &event.schema_version(),
            &envelope.aggregate_version,
            &envelope.occurred_at,
            &envelope.traceparent.clone().unwrap_or_default(),
            &payload,
        ],
    )
    .await?;
    Ok(())
}

/// An order as the write model stores it (for `writer order show`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct OrderRecord {
    pub order_id: Uuid,
    pub customer_id: String,
    pub status: String,
    pub currency: String,
    pub total_cents: i64,
    pub version: i64,
    pub lines: Vec<outbox_events::OrderLine>,
}

pub async fn find_order(
    client: &impl GenericClient,
    order_id: Uuid,
) -> Result<Option<OrderRecord>, StoreError> {
    let Some(row) = client
        .query_opt(
            "SELECT customer_id, status, currency, total_cents, version FROM orders WHERE order_id = $1",
            &[&order_id],
        )
        .await?
    else {
        return Ok(None);
    };
    let lines = client
        .query(
            "SELECT sku, quantity, unit_price_cents FROM order_lines WHERE order_id = $1 ORDER BY line_no",
            &[&order_id],
        )
        .await?
        .into_iter()
        .map(|l| outbox_events::OrderLine {
            sku: l.get(0),
            quantity: l.get(1),
            unit_price_cents: l.get(2),
        })
        .collect();
    Ok(Some(OrderRecord {
        order_id,
        customer_id: row.get(0),
        status: row.get(1),
        currency: row.get::<_, String>(2).trim().to_owned(),
        total_cents: row.get(3),
        version: row.get(4),
        lines,
    }))
}

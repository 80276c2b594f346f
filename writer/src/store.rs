//! One command, one transaction: the only code that writes state or the outbox.
//!
//! Every command: lock the aggregate's row (`FOR UPDATE`), decide with the
//! pure rules, write the state rows, append the events to the outbox with the
//! next aggregate versions, commit. Any error drops the transaction, which
//! rolls back: state and outbox change together or not at all.
//!
//! Round trips are the cost of a command, so statements are prepared once per
//! connection (deadpool's statement cache) and the writes, which depend on no
//! result, are sent pipelined in one go ([`service::pipeline`]).

use chrono::{DateTime, Utc};
use outbox_events::{Address, Envelope, Event};
use service::pipeline::Param;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::{
    customer, order, Command, CustomerState, OrderCommand, OrderState, OrderStatus, Rejection,
};

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The rules refused the command; nothing changed. Retrying will not help.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A payload failed its own contract check: a bug, never retried.
    #[error("event {event_type} failed its contract check: {reason}")]
    Contract {
        event_type: &'static str,
        reason: String,
    },
    /// The database failed; [`StoreError::is_retryable`] says whether to try again.
    /// What failed is the source: print the chain ([`service::chain`], `{:#}`).
    #[error("write database")]
    Database(#[from] service::DbError),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Database(service::DbError(e))
    }
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Database(e) if e.class() == service::ErrorClass::Infrastructure)
    }

    /// A concurrent command created the same customer or order first: the
    /// loser's insert hits the primary key. That is a rejection like any other.
    fn into_rejection(self, command: &Command) -> Self {
        let StoreError::Database(e) = &self else {
            return self;
        };
        let Some(db) = e.0.as_db_error() else {
            return self;
        };
        if *db.code() != tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
            return self;
        }
        match (db.constraint(), command) {
            (Some("customers_pkey"), Command::Customer(c)) => {
                Rejection::CustomerExists(c.customer_id().to_owned()).into()
            }
            (Some("orders_pkey"), Command::Order(c)) => Rejection::OrderExists(c.order_id()).into(),
            _ => self,
        }
    }
}

/// What a committed command produced.
#[derive(Debug, Clone)]
pub struct Committed {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub events: Vec<Envelope>,
    /// An earlier attempt with the same idempotency key committed these
    /// events; this one wrote nothing.
    pub replayed: bool,
}

/// Runs `command` in one transaction. With an `idempotency_key`, the command
/// commits at most once: a retry with the same key and the same command gets
/// the first result back (`replayed`), with another command it is refused.
///
/// Each command runs in its own span (`writer.command`), a child of `parent`
/// (a W3C `traceparent`, e.g. from the caller's environment) when given; the
/// span's own `traceparent` goes into every outbox row the command writes, so
/// the projector continues the same trace.
pub async fn execute(
    client: &mut deadpool_postgres::ClientWrapper,
    command: &Command,
    parent: Option<&str>,
    idempotency_key: Option<&str>,
) -> Result<Committed, StoreError> {
    let (aggregate_type, verb, aggregate_id) = match command {
        Command::Customer(c) => ("customer", c.verb(), c.customer_id().to_owned()),
        Command::Order(o) => ("order", o.verb(), o.order_id().to_string()),
    };
    let span = tracing::info_span!(
        "writer.command",
        otel.kind = "producer",
        aggregate_type,
        command = verb,
        aggregate_id = %aggregate_id,
    );
    if let Some(parent) = parent {
        service::telemetry::set_parent(&span, parent);
    }
    let traceparent = service::telemetry::traceparent(&span);
    execute_once(client, command, traceparent.as_deref(), idempotency_key)
        .instrument(span)
        .await
        .map_err(|e| e.into_rejection(command))
}

async fn execute_once(
    client: &mut deadpool_postgres::ClientWrapper,
    command: &Command,
    traceparent: Option<&str>,
    idempotency_key: Option<&str>,
) -> Result<Committed, StoreError> {
    let statements = client.statement_cache.clone();
    let tx = Tx {
        tx: (**client).transaction().await?,
        statements,
    };
    // A digest of the validated command, not its text: the key table would
    // otherwise keep names, e-mails and addresses for as long as keys live.
    let request = command_digest(command);
    if let Some(key) = idempotency_key {
        // Claims the key first: a concurrent attempt with the same key waits
        // here until this one commits or rolls back.
        let claimed = tx
            .execute(
                "INSERT INTO idempotency_keys (idempotency_key, request_sha256, aggregate_type, aggregate_id, event_ids) \
                 VALUES ($1, $2, '', '', '{}') ON CONFLICT DO NOTHING",
                &[&key, &request],
            )
            .await?;
        if claimed == 0 {
            return earlier_result(&tx, key, &request).await;
        }
    }
    let now = Utc::now();
    let (aggregate_type, aggregate_id, base_version, events) = match command {
        Command::Customer(c) => {
            let state = load_customer(&tx, c.customer_id(), Lock::ForUpdate).await?;
            let events = customer::decide(state.as_ref(), c)?;
            let version = state.map_or(0, |s| s.version);
            (
                outbox_events::CUSTOMER_AGGREGATE,
                c.customer_id().to_owned(),
                version,
                events,
            )
        }
        Command::Order(c) => {
            let (state, customer) = match c {
                // Both reads in one round trip. The customer's row is share-locked:
                // a concurrent address change waits.
                OrderCommand::Place { customer_id, .. } => tokio::try_join!(
                    load_order(&tx, c.order_id()),
                    load_customer(&tx, customer_id, Lock::ForShare)
                )?,
                _ => (load_order(&tx, c.order_id()).await?, None),
            };
            let events = order::decide(state.as_ref(), customer.as_ref(), c)?;
            let version = state.map_or(0, |s| s.version);
            (
                outbox_events::ORDER_AGGREGATE,
                c.order_id().to_string(),
                version,
                events,
            )
        }
    };

    let mut envelopes = Vec::with_capacity(events.len());
    let mut writes = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        let mut envelope = Envelope::new(event, base_version + i as i64 + 1, now);
        envelope.traceparent = traceparent.map(str::to_owned);
        apply_to_state(&mut writes, &envelope, now);
        append_to_outbox(&mut writes, &envelope)?;
        envelopes.push(envelope);
    }
    if let Some(key) = idempotency_key {
        let ids: Vec<Uuid> = envelopes.iter().map(|e| e.event_id).collect();
        write(
            &mut writes,
            "UPDATE idempotency_keys SET aggregate_type = $2, aggregate_id = $3, event_ids = $4 WHERE idempotency_key = $1",
            vec![b(key.to_owned()), b(aggregate_type), b(aggregate_id.clone()), b(ids)],
        );
    }
    write_all_and_commit(tx, &writes).await?;
    Ok(Committed {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id,
        events: envelopes,
        replayed: false,
    })
}

/// SHA-256 (hex) of the validated command: equal for the same command,
/// revealing nothing of it.
fn command_digest(command: &Command) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(format!("{command:?}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The result an earlier attempt with `key` committed, if it was the same command.
async fn earlier_result(tx: &Tx<'_>, key: &str, request: &str) -> Result<Committed, StoreError> {
    let row = tx
        .query_one(
            "SELECT request_sha256, aggregate_type, aggregate_id, event_ids FROM idempotency_keys WHERE idempotency_key = $1",
            &[&key],
        )
        .await?;
    let earlier: String = row.get(0);
    if earlier != request {
        return Err(Rejection::IdempotencyKeyReused(key.to_owned()).into());
    }
    let ids: Vec<Uuid> = row.get(3);
    let rows = tx
        .query(
            "SELECT id, aggregate_type, aggregate_id, event_type, schema_version, aggregate_version, occurred_at, traceparent, payload \
             FROM outbox WHERE id = ANY($1) ORDER BY aggregate_version",
            &[&ids],
        )
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        let event_type: String = r.get(3);
        let payload: serde_json::Value = r.get(8);
        let event = Event::from_payload(&event_type, r.get(4), payload.to_string().as_bytes())
            .map_err(|e| StoreError::Contract {
                event_type: "-",
                reason: e.to_string(),
            })?;
        let traceparent: String = r.get(7);
        events.push(Envelope {
            event_id: r.get(0),
            aggregate_type: r.get(1),
            aggregate_id: r.get(2),
            aggregate_version: r.get(5),
            occurred_at: r.get(6),
            traceparent: (!traceparent.is_empty()).then_some(traceparent),
            event,
        });
    }
    Ok(Committed {
        aggregate_type: row.get(1),
        aggregate_id: row.get(2),
        events,
        replayed: true,
    })
}

enum Lock {
    ForUpdate,
    ForShare,
}

async fn load_customer(
    tx: &Tx<'_>,
    customer_id: &str,
    lock: Lock,
) -> Result<Option<CustomerState>, StoreError> {
    let sql = match lock {
        Lock::ForUpdate => "SELECT name, email, street, city, postal_code, country, version FROM customers WHERE customer_id = $1 FOR UPDATE",
        Lock::ForShare => "SELECT name, email, street, city, postal_code, country, version FROM customers WHERE customer_id = $1 FOR SHARE",
    };
    let row = tx
        .query_opt(&tx.prepare(sql).await?, &[&customer_id])
        .await?;
    Ok(row.map(|row| CustomerState {
        customer_id: customer_id.to_owned(),
        name: row.get(0),
        email: row.get(1),
        address: Address {
            street: row.get(2),
            city: row.get(3),
            postal_code: row.get(4),
            country: row.get::<_, String>(5).trim().to_owned(),
        },
        version: row.get(6),
    }))
}

/// What [`order_state`] reads of an order, in its order.
pub(crate) const ORDER_STATE: &str =
    "status, currency, total_cents, payment_reference IS NOT NULL AND refunded_cents IS NULL, version";

async fn load_order(tx: &Tx<'_>, order_id: Uuid) -> Result<Option<OrderState>, StoreError> {
    let sql = format!("SELECT {ORDER_STATE} FROM orders WHERE order_id = $1 FOR UPDATE");
    let row = tx.query_opt(&tx.prepare(&sql).await?, &[&order_id]).await?;
    row.map(|row| order_state(order_id, &row, 0)).transpose()
}

/// An order's state from the [`ORDER_STATE`] columns of `row`, from `at`.
pub(crate) fn order_state(
    order_id: Uuid,
    row: &tokio_postgres::Row,
    at: usize,
) -> Result<OrderState, StoreError> {
    let status: &str = row.get(at);
    Ok(OrderState {
        order_id,
        // The CHECK constraint admits only known statuses.
        status: OrderStatus::parse(status).ok_or_else(|| StoreError::Contract {
            event_type: "-",
            reason: format!("unknown order status {status:?} in the database"),
        })?,
        currency: row.get::<_, String>(at + 1).trim().to_owned(),
        total_cents: row.get(at + 2),
        paid: row.get(at + 3),
        version: row.get(at + 4),
    })
}

/// A command's transaction (rolled back on drop, like any tokio-postgres
/// transaction) with the connection's statement cache: each statement is
/// prepared once per connection, not once per command.
struct Tx<'a> {
    tx: tokio_postgres::Transaction<'a>,
    statements: std::sync::Arc<deadpool_postgres::StatementCache>,
}

impl<'a> std::ops::Deref for Tx<'a> {
    type Target = tokio_postgres::Transaction<'a>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl Tx<'_> {
    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        self.statements.prepare(self.tx.client(), sql).await
    }
}

/// One statement of a command's writes (the consumer core's [`consumer::Step`]:
/// the order reactor runs the same writes inside its batches).
type Write = consumer::Step;

fn write(writes: &mut Vec<Write>, sql: impl Into<String>, params: Vec<Param>) {
    writes.push(Write::new(sql, params));
}

/// Every write `envelope` causes on the write side: its state rows, then its
/// outbox row (checked against the contract first). The order reactor
/// ([`crate::react`]) applies its events with these, in its batch's transaction.
pub(crate) fn event_writes(
    envelope: &Envelope,
    now: DateTime<Utc>,
) -> Result<Vec<Write>, StoreError> {
    let mut writes = Vec::new();
    apply_to_state(&mut writes, envelope, now);
    append_to_outbox(&mut writes, envelope)?;
    Ok(writes)
}

fn b<T: ToSql + Sync + Send + 'static>(value: T) -> Param {
    Box::new(value)
}

/// Prepares (once per connection) and sends `writes` and the COMMIT pipelined,
/// in order: the end of a command in one round trip.
async fn write_all_and_commit(tx: Tx<'_>, writes: &[Write]) -> Result<(), StoreError> {
    let mut statements = Vec::with_capacity(writes.len());
    for w in writes {
        statements.push(tx.prepare(&w.sql).await?);
    }
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = writes
        .iter()
        .map(|w| service::pipeline::param_refs(&w.params))
        .collect();
    let batch: Vec<(&tokio_postgres::Statement, &[&(dyn ToSql + Sync)])> = statements
        .iter()
        .zip(&params)
        .map(|(s, p)| (s, p.as_slice()))
        .collect();
    let result = service::pipeline::execute_in_order_and_commit(&tx.tx, &batch).await;
    // The COMMIT ended the transaction (committed, or rolled back after an
    // error): its guard must not send a ROLLBACK of its own on drop. It holds
    // only a borrow of the client, so forgetting it leaks nothing.
    drop(batch);
    std::mem::forget(tx.tx);
    result?;
    Ok(())
}

/// The state rows `envelope` changes.
fn apply_to_state(writes: &mut Vec<Write>, envelope: &Envelope, now: DateTime<Utc>) {
    let v = envelope.aggregate_version;
    // The status an order event leads to: the contract's one mapping.
    let status = OrderStatus::after(envelope.event.kind()).map(OrderStatus::as_str);
    let address_json = |a: &Address| serde_json::to_value(a).unwrap_or_default();
    match &envelope.event {
        Event::CustomerRegistered(e) => {
            let a = e.address.clone();
            write(
                writes,
                "INSERT INTO customers (customer_id, name, email, street, city, postal_code, country, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                vec![b(e.customer_id.clone()), b(e.name.clone()), b(e.email.clone()), b(a.street), b(a.city), b(a.postal_code), b(a.country), b(v), b(now)],
            );
        }
        Event::CustomerContactChanged(e) => write(
            writes,
            "UPDATE customers SET name = $2, email = $3, version = $4, updated_at = $5 WHERE customer_id = $1",
            vec![b(e.customer_id.clone()), b(e.name.clone()), b(e.email.clone()), b(v), b(now)],
        ),
        Event::CustomerAddressChanged(e) => {
            let a = e.address.clone();
            write(
                writes,
                "UPDATE customers SET street = $2, city = $3, postal_code = $4, country = $5, version = $6, updated_at = $7 WHERE customer_id = $1",
                vec![b(e.customer_id.clone()), b(a.street), b(a.city), b(a.postal_code), b(a.country), b(v), b(now)],
            );
        }
        Event::OrderPlaced(e) => {
            let shipping = e.shipping_address.as_ref().map(address_json);
            write(
                writes,
                "INSERT INTO orders (order_id, customer_id, status, currency, total_cents, shipping_address, version, created_at, updated_at) \
                 VALUES ($1, $2, $8, $3, $4, $5, $6, $7, $7)",
                vec![b(e.order_id), b(e.customer_id.clone()), b(e.currency.clone()), b(e.total_cents), b(shipping), b(v), b(now), b(status)],
            );
            for (i, line) in e.lines.iter().enumerate() {
                write(
                    writes,
                    "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price_cents) VALUES ($1, $2, $3, $4, $5)",
                    vec![b(e.order_id), b(i as i32 + 1), b(line.sku.clone()), b(line.quantity), b(line.unit_price_cents)],
                );
            }
        }
        Event::OrderPaid(e) => write(
            writes,
            "UPDATE orders SET status = $5, payment_reference = $4, version = $2, updated_at = $3 WHERE order_id = $1",
            vec![b(e.order_id), b(v), b(now), b(e.payment_reference.clone()), b(status)],
        ),
        Event::OrderShipped(e) => write(
            writes,
            "UPDATE orders SET status = $6, carrier = $2, tracking_number = $3, version = $4, updated_at = $5 WHERE order_id = $1",
            vec![b(e.order_id), b(e.carrier.clone()), b(e.tracking_number.clone()), b(v), b(now), b(status)],
        ),
        Event::OrderDelivered(e) => write(
            writes,
            "UPDATE orders SET status = $4, version = $2, updated_at = $3 WHERE order_id = $1",
            vec![b(e.order_id), b(v), b(now), b(status)],
        ),
        Event::OrderCancelled(e) => write(
            writes,
            "UPDATE orders SET status = $5, cancel_reason = $4, version = $2, updated_at = $3 WHERE order_id = $1",
            vec![b(e.order_id), b(v), b(now), b(e.reason.clone()), b(status)],
        ),
        Event::OrderRefunded(e) => write(
            writes,
            "UPDATE orders SET status = $6, refunded_cents = $2, refund_reason = $3, version = $4, updated_at = $5 WHERE order_id = $1",
            vec![b(e.order_id), b(e.amount_cents), b(e.reason.clone()), b(v), b(now), b(status)],
        ),
        // The order reactor's, on the inventory's reply.
        Event::OrderConfirmed(e) => write(
            writes,
            "UPDATE orders SET status = $4, version = $2, updated_at = $3 WHERE order_id = $1",
            vec![b(e.order_id), b(v), b(now), b(status)],
        ),
        Event::OrderRejected(e) => write(
            writes,
            "UPDATE orders SET status = $5, reject_reason = $4, version = $2, updated_at = $3 WHERE order_id = $1",
            vec![b(e.order_id), b(v), b(now), b(e.reason.clone()), b(status)],
        ),
        // The inventory service's events: its own state, not the order service's.
        Event::StockSet(_)
        | Event::StockRestocked(_)
        | Event::StockReserved(_)
        | Event::StockRejected(_)
        | Event::StockReleased(_)
        | Event::StockShipped(_) => {}
    }
}

/// Appends one event to the outbox after checking that its payload decodes
/// back into the same event, so nothing malformed ever reaches the WAL.
fn append_to_outbox(writes: &mut Vec<Write>, envelope: &Envelope) -> Result<(), StoreError> {
    let event = &envelope.event;
    let payload = event.to_payload();
    let bytes = payload.to_string();
    let contract = |reason: String| StoreError::Contract {
        event_type: event.event_type(),
        reason,
    };
    let decoded = Event::from_payload(event.event_type(), event.schema_version(), bytes.as_bytes())
        .map_err(|e| contract(e.to_string()))?;
    if &decoded != event {
        return Err(contract("payload does not round-trip".into()));
    }
    event.validate_with(&bytes).map_err(contract)?;
    writes.push(consumer::outbox::append(envelope));
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

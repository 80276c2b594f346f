//! The `writer` command line: parse, validate, run one command, report.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use uuid::Uuid;

use crate::domain::{Command, CustomerCommand, OrderCommand};
use crate::input::{self, format_money, InvalidInput};
use crate::store::{self, Committed};

/// Runs commands on customers and orders. Each command commits its state
/// change and its events (to the outbox, published by Debezium) in one
/// transaction, or changes nothing and says why.
#[derive(Debug, Parser)]
#[command(name = "writer", version)]
pub struct Cli {
    /// Settings file (TOML); `WRITER__DATABASE__*` variables override it.
    /// The local stack writes one to `.stack/config/writer.toml`.
    #[arg(long, global = true, env = "WRITER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Makes the command safe to retry: the first attempt with this key
    /// commits; a retry with the same key and the same command prints the
    /// first result and writes nothing; with another command it is refused.
    /// For `order place` without `--order-id`, the order id is derived from the key.
    #[arg(long, global = true, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    #[command(subcommand)]
    pub command: TopCommand,
}

#[derive(Debug, Subcommand)]
pub enum OutboxArgs {
    /// Delete outbox rows older than the window, oldest first, in batches;
    /// never rows the relay may not have read (see docs/operations.md).
    Prune {
        /// Retention window, e.g. 7d, 36h. Rows stay at least this long (a
        /// lost replication slot re-publishes what is still in the table).
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
        /// Rows per delete transaction.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
        batch: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Customer commands: register, change-contact, change-address.
    #[command(subcommand)]
    Customer(CustomerArgs),
    /// Order commands: place, pay, ship, deliver, cancel, refund, show
    /// (confirm and reject are the order reactor's: `writer react`).
    #[command(subcommand)]
    Order(OrderArgs),
    /// Apply the write database's migrations (sql/write/).
    Migrate {
        /// Keep trying to connect for up to this many seconds (a database
        /// that is still starting, as in docker compose).
        #[arg(long, default_value_t = 0)]
        wait_for_db: u64,
    },
    /// Drive the write path with many concurrent clients: the same command
    /// code and transaction as the other subcommands, through a pool.
    #[command(after_help = "Example: writer load --clients 4 --rate 1000 --duration 60s")]
    Load(LoadArgs),
    /// Outbox maintenance: prune published rows past the retention window.
    #[command(subcommand)]
    Outbox(OutboxArgs),
    /// Run the order reactor: consume the inventory's replies and confirm or
    /// reject placed orders (the stock-reservation saga). `--config` names
    /// the reactor's settings file (database, kafka; `REACTOR__*` variables
    /// override it), not the writer's. With `dead-letters …`: the replies it
    /// could not apply (list, show, replay, discard).
    React {
        #[command(subcommand)]
        command: Option<ReactCommand>,
    },
    /// Write docs/event_catalog.md and docs/schemas/ from the event contract.
    Catalog {
        /// Directory to write into.
        #[arg(long, default_value = "docs")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReactCommand {
    /// Replies the reactor could not apply: list, show, replay, discard.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(consumer::cli::DeadLetterCommand),
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Concurrent clients (each with its own connection from the pool).
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Commands per second offered in total; omit to go flat out. A payment
    /// refused because the order still waits for the inventory's reply takes
    /// no slot: the client sends another command at once (up to ten times).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to run, e.g. 60s, 2m, 500ms.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Which commands to send.
    #[arg(long, value_enum, default_value_t = crate::load::Mix::Full)]
    pub mix: crate::load::Mix,
    /// Seed of the command choices (a run is reproducible).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Stop after this many committed commands (at the latest after --duration).
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct AddressArgs {
    #[arg(long)]
    pub street: String,
    #[arg(long)]
    pub city: String,
    #[arg(long)]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2 code, e.g. DE.
    #[arg(long)]
    pub country: String,
}

#[derive(Debug, Subcommand)]
pub enum CustomerArgs {
    /// Register a customer under an id of your choice.
    #[command(
        after_help = "Example: writer customer register c-ada --name 'Ada Lovelace' --email ada@example.com --street '12 Analytical Row' --city London --postal-code 'N1 9GU' --country GB"
    )]
    Register {
        /// Customer id, e.g. c-42.
        customer_id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[command(flatten)]
        address: AddressArgs,
    },
    /// Change a customer's name and/or e-mail.
    ChangeContact {
        customer_id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
    },
    /// Change a customer's default shipping address.
    ChangeAddress {
        customer_id: String,
        #[command(flatten)]
        address: AddressArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrderArgs {
    /// Place a new order for a registered customer; prints its id.
    #[command(
        after_help = "Example: writer order place --customer c-ada --currency EUR --line BOOK-1:2:19.99 --line PEN:1:2.50"
    )]
    Place(PlaceArgs),
    /// Pay an order in full (the amount must equal the order total).
    Pay {
        order_id: Uuid,
        /// Payment reference from the payment provider.
        #[arg(long)]
        reference: String,
        /// Amount paid, e.g. 42.48.
        #[arg(long)]
        amount: String,
    },
    /// Ship a paid order.
    Ship {
        order_id: Uuid,
        #[arg(long)]
        carrier: String,
        #[arg(long)]
        tracking: String,
    },
    /// Record that a shipped order was delivered.
    Deliver { order_id: Uuid },
    /// Cancel an order that has not shipped.
    Cancel {
        order_id: Uuid,
        #[arg(long)]
        reason: String,
    },
    /// Refund a paid order that was cancelled, or delivered and returned (in full).
    Refund {
        order_id: Uuid,
        /// Amount refunded; must equal the order total.
        #[arg(long)]
        amount: String,
        #[arg(long)]
        reason: String,
    },
    /// Show an order as the write model stores it.
    Show { order_id: Uuid },
}

#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// Customer id of a registered customer, e.g. c-42.
    #[arg(long)]
    pub customer: String,
    /// ISO 4217 currency code, e.g. EUR.
    #[arg(long)]
    pub currency: String,
    /// A line as SKU:QTY:UNIT_PRICE, e.g. BOOK-1:2:19.99; repeat for more lines.
    #[arg(long = "line", required = true)]
    pub lines: Vec<String>,
    /// Use this order id instead of a new random one (makes retries idempotent).
    #[arg(long)]
    pub order_id: Option<Uuid>,
}

fn address(a: &AddressArgs) -> Result<outbox_events::Address, InvalidInput> {
    input::address(&a.street, &a.city, &a.postal_code, &a.country)
}

/// Turns parsed customer arguments into a validated command.
pub fn customer_command(args: &CustomerArgs) -> Result<Command, InvalidInput> {
    let id = |raw: &str| input::identifier("customer id", raw);
    let command = match args {
        CustomerArgs::Register {
            customer_id,
            name,
            email,
            address: a,
        } => CustomerCommand::Register {
            customer_id: id(customer_id)?,
            name: input::text("name", name)?,
            email: input::email(email)?,
            address: address(a)?,
        },
        CustomerArgs::ChangeContact {
            customer_id,
            name,
            email,
        } => {
            if name.is_none() && email.is_none() {
                return Err(InvalidInput {
                    field: "contact",
                    reason: "give --name and/or --email".into(),
                });
            }
            CustomerCommand::ChangeContact {
                customer_id: id(customer_id)?,
                name: name
                    .as_deref()
                    .map(|n| input::text("name", n))
                    .transpose()?,
                email: email.as_deref().map(input::email).transpose()?,
            }
        }
        CustomerArgs::ChangeAddress {
            customer_id,
            address: a,
        } => CustomerCommand::ChangeAddress {
            customer_id: id(customer_id)?,
            address: address(a)?,
        },
    };
    Ok(Command::Customer(command))
}

/// Turns parsed order arguments into a validated command (`None` for `show`).
/// The order id of a new order: the one given, else derived from the
/// idempotency key (so a retry names the same order), else a random one.
fn new_order_id(given: Option<Uuid>, idempotency_key: Option<&str>) -> Uuid {
    given.unwrap_or_else(|| match idempotency_key {
        Some(key) => Uuid::new_v5(&IDEMPOTENT_ORDER_IDS, key.as_bytes()),
        None => Uuid::new_v4(),
    })
}

/// Namespace of order ids derived from idempotency keys.
const IDEMPOTENT_ORDER_IDS: Uuid = Uuid::from_u128(0x6f72_6465_722d_6964_656d_706f_7465_6e74);

pub fn order_command(
    args: &OrderArgs,
    idempotency_key: Option<&str>,
) -> Result<Option<Command>, InvalidInput> {
    let command = match args {
        OrderArgs::Place(args) => {
            if args.lines.len() > input::MAX_LINES {
                return Err(InvalidInput {
                    field: "line",
                    reason: format!("at most {} lines per order", input::MAX_LINES),
                });
            }
            OrderCommand::Place {
                order_id: new_order_id(args.order_id, idempotency_key),
                customer_id: input::identifier("customer", &args.customer)?,
                currency: input::currency(&args.currency)?,
                lines: args
                    .lines
                    .iter()
                    .map(|l| input::order_line(l))
                    .collect::<Result<_, _>>()?,
            }
        }
        OrderArgs::Pay {
            order_id,
            reference,
            amount,
        } => OrderCommand::Pay {
            order_id: *order_id,
            payment_reference: input::identifier("reference", reference)?,
            amount_cents: input::money("amount", amount)?,
        },
        OrderArgs::Ship {
            order_id,
            carrier,
            tracking,
        } => OrderCommand::Ship {
            order_id: *order_id,
            carrier: input::identifier("carrier", carrier)?,
            tracking_number: input::identifier("tracking", tracking)?,
        },
        OrderArgs::Deliver { order_id } => OrderCommand::Deliver {
            order_id: *order_id,
        },
        OrderArgs::Cancel { order_id, reason } => OrderCommand::Cancel {
            order_id: *order_id,
            reason: input::text("reason", reason)?,
        },
        OrderArgs::Refund {
            order_id,
            amount,
            reason,
        } => OrderCommand::Refund {
            order_id: *order_id,
            amount_cents: input::money("amount", amount)?,
            reason: input::text("reason", reason)?,
        },
        OrderArgs::Show { .. } => return Ok(None),
    };
    Ok(Some(Command::Order(command)))
}

/// Renders a committed command for people or for `--json`.
pub fn render_committed(committed: &Committed, json: bool) -> String {
    if json {
        let events: Vec<_> = committed
            .events
            .iter()
            .map(|e| {
                json!({
                    "event_id": e.event_id,
                    "event_type": e.event.event_type(),
                    "schema_version": e.event.schema_version(),
                    "aggregate_type": e.aggregate_type,
                    "aggregate_id": e.aggregate_id,
                    "aggregate_version": e.aggregate_version,
                    "occurred_at": e.occurred_at,
                    "payload": e.event.to_payload(),
                })
            })
            .collect();
        let id_field = format!("{}_id", committed.aggregate_type);
        return json!({ id_field: committed.aggregate_id, "events": events, "replayed": committed.replayed })
            .to_string();
    }
    let mut out = format!("{} {}\n", committed.aggregate_type, committed.aggregate_id);
    if committed.replayed {
        out.push_str("  already committed by an earlier attempt with this idempotency key; nothing written\n");
    }
    for e in &committed.events {
        out.push_str(&format!(
            "  committed {} (schema v{}, aggregate version {}) event id {}\n",
            e.event.event_type(),
            e.event.schema_version(),
            e.aggregate_version,
            e.event_id
        ));
    }
    out.pop();
    out
}

/// Renders the result of `writer outbox prune`.
pub fn render_prune(report: &crate::retention::PruneReport, json: bool) -> String {
    if json {
        return serde_json::to_string(report)
            .unwrap_or_else(|e| format!("{{\"error\":\"serializing the report: {e}\"}}"));
    }
    match report.cutoff {
        None => "outbox prune: nothing deleted: the relay has never written its heartbeat, \
                 so no row is known to be read (is Connect running? `stack status`)"
            .to_owned(),
        Some(cutoff) => format!(
            "outbox prune: {} rows older than {cutoff} deleted in {} batches, and {} idempotency keys{}",
            report.deleted,
            report.batches,
            report.keys_deleted,
            if report.limited_by_relay {
                " (cutoff held back by the relay's last heartbeat: it has been behind or down)"
            } else {
                ""
            }
        ),
    }
}

/// Renders an order for `writer order show`.
pub fn render_order(order: &store::OrderRecord, json: bool) -> String {
    if json {
        return serde_json::to_string(order).unwrap_or_default();
    }
    let lines: Vec<String> = order
        .lines
        .iter()
        .map(|l| {
            format!(
                "{} x{} @ {}",
                l.sku,
                l.quantity,
                format_money(l.unit_price_cents)
            )
        })
        .collect();
    format!(
        "order {} customer {} status {} total {} {} version {}\n  lines: {}",
        order.order_id,
        order.customer_id,
        order.status,
        format_money(order.total_cents),
        order.currency,
        order.version,
        lines.join(", ")
    )
}

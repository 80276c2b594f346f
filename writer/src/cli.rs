//! The `writer` command line: parse, validate, run one command, report.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use uuid::Uuid;

use crate::domain::Command;
use crate::input::{self, format_money, InvalidInput};
use crate::store::{self, Committed};

/// Runs commands on orders. Each command commits its state change and its
/// events (to the outbox, published by Debezium) in one transaction, or
/// changes nothing and says why.
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
    #[command(subcommand)]
    pub command: TopCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// Order commands: place, pay, ship, cancel, show.
    #[command(subcommand)]
    Order(OrderCommand),
    /// Apply the write database's migrations (sql/write/).
    Migrate,
}

#[derive(Debug, Subcommand)]
pub enum OrderCommand {
    /// Place a new order; prints its id.
    #[command(
        after_help = "Example: writer order place --customer c-42 --currency EUR --line BOOK-1:2:19.99 --line PEN:1:2.50"
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
    /// Cancel an order that has not shipped.
    Cancel {
        order_id: Uuid,
        #[arg(long)]
        reason: String,
    },
    /// Show an order as the write model stores it.
    Show { order_id: Uuid },
}

#[derive(Debug, Args)]
pub struct PlaceArgs {
    /// Customer id, e.g. c-42.
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

/// Turns parsed arguments into a validated domain command.
pub fn to_command(order: &OrderCommand) -> Result<Option<Command>, InvalidInput> {
    let command = match order {
        OrderCommand::Place(args) => {
            if args.lines.len() > input::MAX_LINES {
                return Err(InvalidInput {
                    field: "line",
                    reason: format!("at most {} lines per order", input::MAX_LINES),
                });
            }
            Command::Place {
                order_id: args.order_id.unwrap_or_else(Uuid::new_v4),
                customer_id: input::identifier("customer", &args.customer)?,
                currency: input::currency(&args.currency)?,
                lines: args
                    .lines
                    .iter()
                    .map(|l| input::order_line(l))
                    .collect::<Result<_, _>>()?,
            }
        }
        OrderCommand::Pay {
            order_id,
            reference,
            amount,
        } => Command::Pay {
            order_id: *order_id,
            payment_reference: input::identifier("reference", reference)?,
            amount_cents: input::money("amount", amount)?,
        },
        OrderCommand::Ship {
            order_id,
            carrier,
            tracking,
        } => Command::Ship {
            order_id: *order_id,
            carrier: input::identifier("carrier", carrier)?,
            tracking_number: input::identifier("tracking", tracking)?,
        },
        OrderCommand::Cancel { order_id, reason } => Command::Cancel {
            order_id: *order_id,
            reason: input::text("reason", reason)?,
        },
        OrderCommand::Show { .. } => return Ok(None),
    };
    Ok(Some(command))
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
        return json!({ "order_id": committed.order_id, "events": events }).to_string();
    }
    let mut out = format!("order {}\n", committed.order_id);
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

//! The stock-reservation saga's two consumers on the local stack: the
//! inventory service ([`Component::Inventory`], `inventory run` in its own
//! database) and the order reactor ([`Component::Reactor`], `writer react` in
//! the write database), each one process with its settings file and metrics
//! endpoint, as compose runs them.

use crate::{bins, Component, Result, Stack};

const LOG_FILTER: &str = "info,rdkafka=warn";

/// Starts the component's process (not waiting for it).
pub fn start(stack: &Stack, component: Component) -> Result<()> {
    let mut command = match component {
        Component::Inventory => bins::inventory_command(stack)?,
        _ => {
            let mut command = bins::writer_binary(stack)?;
            command
                .arg("--config")
                .arg(stack.reactor_config())
                .arg("react");
            command
        }
    };
    if component == Component::Inventory {
        command.arg("run");
    }
    // Static membership, as the projector: a killed and restarted process
    // takes its partitions back at once (compose names them the same).
    let (prefix, instance) = match component {
        Component::Inventory => ("INVENTORY", "inventory-1"),
        _ => ("REACTOR", "reactor-1"),
    };
    command
        .env(format!("{prefix}__KAFKA__GROUP_INSTANCE_ID"), instance)
        .env("RUST_LOG", LOG_FILTER);
    stack.spawn_unit(component.name(), command)
}

/// The component's Prometheus endpoint.
pub fn metrics_url(stack: &Stack, component: Component) -> String {
    let port = match component {
        Component::Inventory => stack.state.inventory_metrics_port,
        _ => stack.state.reactor_metrics_port,
    };
    format!("http://127.0.0.1:{port}/metrics")
}

/// How many SKUs the load generator orders from (`writer load`:
/// `SKU-0` … `SKU-199`; a test holds the two to each other).
pub const LOAD_SKUS: u32 = 200;

/// The load generator's SKU number `n`.
pub fn load_sku(n: u32) -> String {
    format!("SKU-{n}")
}

/// Sets `units` on hand for each of the load's SKUs (`inventory stock set`,
/// one process, a transaction and a `StockSet` per SKU).
pub fn seed_stock(stack: &Stack, units: u32) -> Result<()> {
    let skus: Vec<String> = (0..LOAD_SKUS).map(load_sku).collect();
    let quantity = units.to_string();
    let mut args: Vec<&str> = vec!["stock", "set"];
    args.extend(skus.iter().map(String::as_str));
    args.extend(["--quantity", &quantity]);
    bins::inventory(stack, &args)?;
    Ok(())
}

/// What both outboxes hold and what each consumer has recorded in its inbox
/// (every record of its topics, whatever its effect): how far the pipeline,
/// saga included, has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// The order service's outbox: every event, and those of orders (the
    /// inventory's topic).
    pub write_events: u64,
    pub order_events: u64,
    /// The inventory's outbox: every event, and those of reservations (the
    /// order reactor's topic).
    pub inventory_events: u64,
    pub reservation_events: u64,
    /// The inboxes of the inventory, the order reactor (write database) and
    /// the projector (read database).
    pub inventory_inbox: u64,
    pub reactor_inbox: u64,
    pub read_inbox: u64,
    /// No outbox changed while the inboxes were read.
    pub stable: bool,
}

impl Progress {
    /// Events committed in both outboxes.
    pub fn committed(&self) -> u64 {
        self.write_events + self.inventory_events
    }

    /// The saga is done: no outbox changed while the inboxes were read and
    /// the inventory and the order reactor had recorded every event of their
    /// topics, so no reply follows without a new command (a reply committed
    /// between the reads would have changed an outbox).
    pub fn saga_settled(&self) -> bool {
        self.stable
            && self.inventory_inbox >= self.order_events
            && self.reactor_inbox >= self.reservation_events
    }

    /// The saga is done and the projector has applied every event of both
    /// outboxes.
    pub fn settled(&self) -> bool {
        self.saga_settled() && self.read_inbox >= self.committed()
    }

    /// Reads the counts: the outboxes, then the inboxes, then the outboxes
    /// again (see [`Progress::saga_settled`]).
    pub fn read(stack: &Stack) -> Result<Self> {
        let count = |db: &str, sql: &str| -> Result<u64> {
            Ok(stack.psql(db, sql)?.trim().parse().unwrap_or(0))
        };
        let outboxes = |p: &mut Progress| -> Result<()> {
            let order = outbox_events::ORDER_AGGREGATE;
            let reservation = outbox_events::RESERVATION_AGGREGATE;
            let (write, inventory) = (
                stack.psql(
                    crate::WRITE_DB,
                    &format!("SELECT count(*), count(*) FILTER (WHERE aggregate_type = '{order}') FROM outbox"),
                )?,
                stack.psql(
                    crate::INVENTORY_DB,
                    &format!("SELECT count(*), count(*) FILTER (WHERE aggregate_type = '{reservation}') FROM outbox"),
                )?,
            );
            let pair = |row: &str| -> (u64, u64) {
                let mut it = row.trim().split('|').map(|n| n.parse().unwrap_or(0));
                (it.next().unwrap_or(0), it.next().unwrap_or(0))
            };
            (p.write_events, p.order_events) = pair(&write);
            (p.inventory_events, p.reservation_events) = pair(&inventory);
            Ok(())
        };
        let mut progress = Progress::default();
        outboxes(&mut progress)?;
        progress.inventory_inbox = count(crate::INVENTORY_DB, "SELECT count(*) FROM inbox")?;
        progress.reactor_inbox = count(crate::WRITE_DB, "SELECT count(*) FROM inbox")?;
        progress.read_inbox = count(crate::READ_DB, "SELECT count(*) FROM inbox")?;
        let mut again = progress;
        outboxes(&mut again)?;
        progress.stable = again == progress;
        Ok(progress)
    }
}

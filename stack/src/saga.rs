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

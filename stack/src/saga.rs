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
    command.env("RUST_LOG", LOG_FILTER);
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

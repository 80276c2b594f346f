//! The projector service on the local stack: the main instance
//! ([`Component::Projector`]) and replicas in the same consumer group
//! (`projector-N`, each with its own metrics port), as the chaos suite and
//! the two-instance tests run them.

use std::fs;
use std::time::Duration;

use crate::{bins, io_err, process, Component, Result, Stack, StackError};

/// Highest projector replica number `down` stops (replicas are numbered from 2).
pub const MAX_REPLICA: u32 = 4;

const LOG_FILTER: &str = "info,rdkafka=warn";

/// Starts the main instance (not waiting for it).
pub fn start(stack: &Stack) -> Result<()> {
    let mut command = bins::projector_command(stack)?;
    command
        .env("PROJECTOR__KAFKA__GROUP_INSTANCE_ID", instance_id(1))
        .env("RUST_LOG", LOG_FILTER);
    stack.spawn_unit(Component::Projector.name(), command)
}

fn replica_unit(n: u32) -> String {
    format!("projector-{n}")
}

/// Instance `n`'s name in the consumer group (static membership: a killed
/// instance restarted under its name takes its partitions back at once).
fn instance_id(n: u32) -> String {
    format!("projector-{n}")
}

/// Starts replica `n` (2, 3, …): another instance in the same consumer
/// group, with its own pid file, log and metrics port. Waits until its
/// metrics endpoint answers; returns that endpoint's URL.
pub fn start_replica(stack: &Stack, n: u32) -> Result<String> {
    let unit = replica_unit(n);
    let port = crate::ports::claim(&stack.state_dir, 1, false)?[0];
    let mut command = bins::projector_command(stack)?;
    command
        .env("PROJECTOR__METRICS_ADDR", format!("127.0.0.1:{port}"))
        .env("PROJECTOR__KAFKA__GROUP_INSTANCE_ID", instance_id(n))
        .env("RUST_LOG", LOG_FILTER);
    stack.spawn_unit(&unit, command)?;
    fs::write(
        stack.unit_pid_file(&unit).with_extension("port"),
        port.to_string(),
    )
    .map_err(io_err("writing port file"))?;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let ready = process::wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
        ureq::get(&url).call().is_ok() || stack.unit_pid(&unit).is_none()
    });
    if !ready || stack.unit_pid(&unit).is_none() {
        return Err(StackError::NotReady {
            component: Component::Projector,
            seconds: 60,
            detail: format!(
                "replica {n} did not serve {url}; see {}",
                stack.unit_log(&unit).display()
            ),
        });
    }
    Ok(url)
}

/// Waits until the instance serving `metrics_url` consumes partitions
/// (its per-partition lag gauges appear with its first assignment): the
/// group has settled after it joined.
pub fn await_assignment(metrics_url: &str, limit: Duration) -> Result<()> {
    let assigned = || {
        ureq::get(metrics_url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|text| text.contains("projector_partition_lag{"))
    };
    if process::wait_until(limit, Duration::from_millis(250), assigned) {
        Ok(())
    } else {
        Err(StackError::NotReady {
            component: Component::Projector,
            seconds: limit.as_secs(),
            detail: format!("{metrics_url} reports no assigned partition"),
        })
    }
}

/// The pid of replica `n`, if it runs.
pub fn replica_pid(stack: &Stack, n: u32) -> Option<i32> {
    stack.unit_pid(&replica_unit(n))
}

/// SIGKILLs replica `n` (if it runs).
pub fn kill_replica(stack: &Stack, n: u32) {
    if let Some(pid) = replica_pid(stack, n) {
        process::kill_group(pid);
    }
}

/// Stops replica `n` cleanly (if it runs).
pub fn stop_replica(stack: &Stack, n: u32) {
    if let Some(pid) = replica_pid(stack, n) {
        process::stop(
            pid,
            nix::sys::signal::Signal::SIGTERM,
            Duration::from_secs(20),
        );
    }
}

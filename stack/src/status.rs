//! Liveness (is the process there?) and health (does it do its job?) per component.

use std::time::Duration;

use serde::Serialize;

use crate::{kafka, postgres, Component, Stack, CONNECTOR_NAME};

#[derive(Debug, Clone, Serialize)]
pub struct ComponentStatus {
    pub component: String,
    pub pid: Option<i32>,
    pub healthy: bool,
    pub detail: String,
}

/// The status of every component.
pub fn report(stack: &Stack) -> Vec<ComponentStatus> {
    Component::ALL
        .into_iter()
        .map(|component| {
            let pid = stack.pid(component);
            let (healthy, detail) = match (pid, health(stack, component)) {
                (None, _) => (false, "down".to_owned()),
                (Some(_), Ok(detail)) => (true, detail),
                (Some(_), Err(detail)) => (false, detail),
            };
            ComponentStatus {
                component: component.to_string(),
                pid,
                healthy,
                detail,
            }
        })
        .collect()
}

/// `Ok` once the component serves (what a start waits for). Unlike
/// [`health`], a projector with open dead letters is ready: it runs and
/// applies everything else; its dead letters wait for a person, not for a restart.
pub fn readiness(stack: &Stack, component: Component) -> Result<String, String> {
    let metrics = match component {
        Component::Projector => stack.metrics_url(),
        Component::Inventory | Component::Reactor => crate::saga::metrics_url(stack, component),
        other => return health(stack, other),
    };
    agent()
        .get(&metrics)
        .call()
        .map_err(|e| format!("metrics endpoint: {e}"))?;
    Ok("serving".into())
}

/// `Ok(detail)` when the component does its job, `Err(why not)` otherwise.
pub fn health(stack: &Stack, component: Component) -> Result<String, String> {
    match component {
        Component::Postgres => postgres::health(stack),
        Component::Broker => kafka::health(stack),
        Component::Connect => connectors_health(stack),
        // Each consumer's metrics carry its name (the component's).
        Component::Projector => consumer_health(component.name(), &stack.metrics_url()),
        Component::Inventory | Component::Reactor => consumer_health(
            component.name(),
            &crate::saga::metrics_url(stack, component),
        ),
    }
}

/// Longest an order may wait for the inventory's reply before `stack
/// status` calls the reactor unhealthy (as the `OrdersAwaitingStock` alert).
pub const AWAITING_STOCK_LIMIT_S: i64 = 60;

/// Orders still `placed` (no stock reply applied yet) and how long the
/// oldest has waited, in whole seconds: read from the write database.
pub fn awaiting_stock(stack: &Stack) -> Result<(i64, i64), String> {
    let out = crate::postgres::admin_sql(
        stack,
        crate::WRITE_DB,
        &format!(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::bigint \
             FROM orders WHERE status = '{}'",
            outbox_events::OrderStatus::Placed
        ),
    )
    .map_err(|e| format!("write database: {e}"))?;
    let mut fields = out.trim().split('|').map(|f| f.trim().parse::<i64>());
    match (fields.next(), fields.next()) {
        (Some(Ok(n)), Some(Ok(oldest))) => Ok((n, oldest)),
        _ => Err(format!("unexpected answer about waiting orders: {out:?}")),
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into()
}

/// Every connector ([`crate::connect::CONNECTORS`]) and all its tasks RUNNING.
fn connectors_health(stack: &Stack) -> Result<String, String> {
    let mut all = Vec::new();
    let mut healthy = true;
    for (name, _) in crate::connect::CONNECTORS {
        match connector_health(stack, name) {
            Ok(summary) => all.push(format!("{name}: {summary}")),
            Err(why) => {
                healthy = false;
                all.push(format!("{name}: {why}"));
            }
        }
    }
    let summary = all.join("; ");
    if healthy {
        Ok(summary)
    } else {
        Err(summary)
    }
}

/// The connector `name` and all its tasks RUNNING, per Connect's REST API.
fn connector_health(stack: &Stack, name: &str) -> Result<String, String> {
    let url = format!("{}/connectors/{name}/status", stack.connect_url());
    let mut response = agent()
        .get(&url)
        .header("Authorization", crate::connect::authorization(stack))
        .call()
        .map_err(|e| format!("REST API: {e}"))?;
    let status: serde_json::Value = response.body_mut().read_json().map_err(|e| e.to_string())?;
    let connector = status["connector"]["state"]
        .as_str()
        .unwrap_or("UNKNOWN")
        .to_owned();
    let tasks: Vec<(String, String)> = status["tasks"]
        .as_array()
        .map(|tasks| {
            tasks
                .iter()
                .map(|t| {
                    let state = t["state"].as_str().unwrap_or("UNKNOWN").to_owned();
                    let trace = t["trace"]
                        .as_str()
                        .unwrap_or("")
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_owned();
                    (state, trace)
                })
                .collect()
        })
        .unwrap_or_default();
    let summary = format!(
        "connector {connector}, tasks [{}]",
        tasks
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if connector == "RUNNING" && !tasks.is_empty() && tasks.iter().all(|(s, _)| s == "RUNNING") {
        Ok(summary)
    } else {
        let trace = tasks
            .iter()
            .find(|(_, t)| !t.is_empty())
            .map(|(_, t)| t.clone())
            .unwrap_or_default();
        Err(format!("{summary} {trace}"))
    }
}

/// Reads a consumer's Prometheus metrics (`<service>_*`, the consumer core's
/// names): alive, lag and counts.
fn consumer_health(service: &str, metrics_url: &str) -> Result<String, String> {
    let text = agent()
        .get(metrics_url)
        .call()
        .map_err(|e| format!("metrics endpoint: {e}"))?
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    let metric = |suffix: &str| {
        let name = format!("{service}_{suffix}");
        let name = name.as_str();
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let quantile = |q: &str| {
        let name = format!("{service}_event_latency_seconds{{quantile=\"{q}\"}}");
        text.lines()
            .find(|l| l.starts_with(&name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite())
            .map_or("-".to_owned(), |v| format!("{:.0} ms", v * 1000.0))
    };
    // Per partition: `projector_partition_lag{partition="0",topic="outbox.event.order"} 3`.
    let lag_prefix = format!("{service}_partition_lag{{");
    let mut partitions: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&lag_prefix))
        .filter_map(|l| {
            let label = |name: &str| {
                let start = l.find(&format!("{name}=\""))? + name.len() + 2;
                let end = l[start..].find('"')? + start;
                Some(l[start..end].to_owned())
            };
            let topic = label("topic")?;
            let topic = outbox_events::aggregate_of_topic(&topic)
                .unwrap_or(&topic)
                .to_owned();
            Some(format!(
                "{topic}/{} {}",
                label("partition")?,
                l.rsplit(' ').next()?
            ))
        })
        .collect();
    partitions.sort();
    let summary = format!(
        "alive, lag {} records ({}), latency p50 {} p99 {}, {} events applied, {} duplicates skipped; \
         {} open dead letters, {} parked events ({} aggregates)",
        metric("consumer_lag"),
        if partitions.is_empty() { "no partition assigned".to_owned() } else { partitions.join(", ") },
        quantile("0.5"),
        quantile("0.99"),
        metric("events_applied_total"),
        metric("events_duplicate_total"),
        metric("dead_letters_open"),
        metric("parked_events"),
        metric("parked_aggregates"),
    );
    if metric("dead_letters_open") > 0.0 || metric("parked_events") > 0.0 {
        // Alive but not whole: some aggregates wait for an operator.
        return Err(format!(
            "{summary}; see `{} dead-letters list` (docs/operations.md)",
            // The reactor is the writer binary's `react`.
            if service == "reactor" {
                "writer react"
            } else {
                service
            }
        ));
    }
    Ok(summary)
}

/// The Connect worker (1-based) that runs the connector's task, per the REST API.
pub fn connector_task_worker(stack: &Stack) -> Option<u8> {
    let url = format!("{}/connectors/{CONNECTOR_NAME}/status", stack.connect_url());
    let status: serde_json::Value = agent()
        .get(&url)
        .header("Authorization", crate::connect::authorization(stack))
        .call()
        .ok()?
        .body_mut()
        .read_json()
        .ok()?;
    let worker = status["tasks"][0]["worker_id"].as_str()?.to_owned();
    crate::connect::workers(stack).find(|n| {
        worker.ends_with(&format!(
            ":{}",
            stack.state.connect_ports[usize::from(*n - 1)]
        ))
    })
}

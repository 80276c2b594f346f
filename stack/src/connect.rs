//! Kafka Connect in distributed mode with the Debezium PostgreSQL connector
//! (stack/jvm/debezium/pom.xml on `plugin.path`): one worker by default, more
//! on request (`stack up --connect-workers 2`), all in one group whose
//! configs, source offsets and statuses live in Kafka topics.
//!
//! The worker file is `debezium/connect-distributed.properties` (the one
//! compose runs too) plus [`WorkerSettings`], the lines that differ per
//! deployment. The connector is registered over REST (`PUT
//! /connectors/NAME/config`) from `debezium/outbox-connector.json`, the file
//! compose registers; its `${env:OUTBOX_PG_*}` placeholders are filled from
//! the worker's environment, so no secret reaches the REST API or a file.
//!
//! Beside the workers runs `debezium/task-watchdog.sh`: Connect never
//! restarts a FAILED task by itself.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::properties::to_properties;
use crate::state::{write_private, KafkaUser, CONNECT_REST_USER};
use crate::{io_err, process, tools, Component, Result, Stack, StackError, WRITE_DB};

/// Name of the connector in `debezium/outbox-connector.json`: the order
/// service's relay.
pub const CONNECTOR_NAME: &str = "outbox-connector";

/// Name of the connector in `debezium/inventory-connector.json`: the
/// inventory's relay (its own database, slot, publication and topics).
pub const INVENTORY_CONNECTOR: &str = "inventory-connector";

/// Every connector and its file, registered by both stacks.
pub const CONNECTORS: [(&str, &str); 2] = [
    (CONNECTOR_NAME, "debezium/outbox-connector.json"),
    (INVENTORY_CONNECTOR, "debezium/inventory-connector.json"),
];
/// The connector task watchdog's unit name (pid and log file).
pub const WATCHDOG: &str = "connect-watchdog";
const HEAP: &str = "-Xmx512m";

/// What the local stack appends to `debezium/connect-distributed.properties`.
#[derive(Debug, Serialize)]
pub struct WorkerSettings {
    #[serde(rename = "bootstrap.servers")]
    pub bootstrap_servers: String,
    /// The REST API, on loopback only.
    #[serde(rename = "listeners")]
    pub listeners: String,
    #[serde(rename = "rest.advertised.host.name")]
    pub advertised_host: &'static str,
    #[serde(rename = "rest.advertised.port")]
    pub advertised_port: u16,
    #[serde(rename = "plugin.path")]
    pub plugin_path: String,
    #[serde(rename = "config.storage.replication.factor")]
    pub config_replication_factor: u8,
    #[serde(rename = "offset.storage.replication.factor")]
    pub offset_replication_factor: u8,
    #[serde(rename = "status.storage.replication.factor")]
    pub status_replication_factor: u8,
}

/// Unit name (pid and log file) of worker `n` (1-based).
pub fn unit(n: u8) -> String {
    if n == 1 {
        "connect".to_owned()
    } else {
        format!("connect-{n}")
    }
}

/// Worker numbers (1-based).
pub fn workers(stack: &Stack) -> impl Iterator<Item = u8> {
    1..=stack.state.shape.connect_workers
}

fn worker_dir(stack: &Stack, n: u8) -> PathBuf {
    stack.state_dir.join("connect").join(format!("worker-{n}"))
}

/// Starts every worker that is not running, the task watchdog, and (once
/// the REST API answers) registers the connector.
pub fn start(stack: &Stack) -> Result<()> {
    for n in workers(stack) {
        if stack.unit_pid(&unit(n)).is_none() {
            start_worker(stack, n)?;
        }
    }
    start_task_watchdog(stack)?;
    // One connector after the other, each until Connect took it: a PUT
    // answered late (a worker busy validating the previous connector, a
    // rebalance) is retried, not the ones that went through.
    for (name, file) in CONNECTORS {
        let registered =
            process::wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
                register_one(stack, name, file).is_ok()
            });
        if !registered {
            // Once more, for the error message.
            register_one(stack, name, file)?;
        }
    }
    Ok(())
}

/// Starts worker `n` (not waiting for it).
pub fn start_worker(stack: &Stack, n: u8) -> Result<()> {
    let dir = worker_dir(stack, n);
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let shared = fs::read_to_string(stack.repo.join("debezium/connect-distributed.properties"))
        .map_err(io_err("reading debezium/connect-distributed.properties"))?;
    let port = stack.state.connect_ports[usize::from(n - 1)];
    let rf = stack.state.shape.replication_factor();
    let own = WorkerSettings {
        bootstrap_servers: stack.bootstrap_servers(),
        listeners: format!("http://127.0.0.1:{port}"),
        advertised_host: "127.0.0.1",
        advertised_port: port,
        plugin_path: tools::connect_plugin_path()?.display().to_string(),
        config_replication_factor: rf,
        offset_replication_factor: rf,
        status_replication_factor: rf,
    };
    let config = dir.join("worker.properties");
    write_private(
        &config,
        &format!(
            "{shared}\n# The local stack's own lines (stack/src/connect.rs)\n{}{}",
            to_properties(&own)?,
            worker_login(&stack.state.kafka.connect_password)
        ),
    )?;
    // The REST API's users (basic authentication), read by the extension's
    // login module through the JVM's JAAS configuration.
    let users = dir.join("rest-users.properties");
    write_private(
        &users,
        &format!(
            "{CONNECT_REST_USER}: {}\n",
            stack.state.kafka.connect_rest_password
        ),
    )?;
    let jaas = dir.join("rest-jaas.conf");
    write_private(
        &jaas,
        &format!(
            "KafkaConnect {{\n  org.apache.kafka.connect.rest.basic.auth.extension.PropertyFileLoginModule required\n  file=\"{}\";\n}};\n",
            users.display()
        ),
    )?;
    let mut command = tools::java_command(&stack.repo, HEAP)?;
    command
        .current_dir(&dir)
        .arg(format!(
            "-Djava.security.auth.login.config={}",
            jaas.display()
        ))
        .arg("-cp")
        .arg(tools::kafka_classpath()?)
        .arg("org.apache.kafka.connect.cli.ConnectDistributed")
        .arg(&config)
        // Coordinates the connector JSON reads through ${env:...}.
        .env("OUTBOX_PG_HOST", "127.0.0.1")
        .env("OUTBOX_PG_PORT", stack.state.postgres_port.to_string())
        .env("OUTBOX_PG_DBNAME", WRITE_DB)
        .env("OUTBOX_PG_INVENTORY_DBNAME", crate::INVENTORY_DB)
        .env("OUTBOX_PG_PASSWORD", &stack.state.debezium_password);
    stack.spawn_unit(&unit(n), command)
}

/// The worker's own Kafka login, for each of its clients: the worker's (group
/// membership, internal topics), the tasks' producers and consumers, and the
/// admin client (topic checks, fencing zombie task producers).
/// Compose's entrypoint appends the same keys (stack/tests/versions.rs).
pub fn worker_login(password: &str) -> String {
    let login = crate::kafka::java_login(KafkaUser::Connect.name(), password);
    ["", "producer.", "consumer.", "admin."]
        .iter()
        .flat_map(|prefix| login.lines().map(move |line| format!("{prefix}{line}\n")))
        .collect()
}

/// The `Authorization` header of a request to Connect's REST API.
pub fn authorization(stack: &Stack) -> String {
    use base64::Engine;
    let credentials = format!(
        "{CONNECT_REST_USER}:{}",
        stack.state.kafka.connect_rest_password
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    )
}

/// SIGKILLs worker `n` (a worker crash; the group moves its task).
pub fn kill_worker(stack: &Stack, n: u8) -> Result<()> {
    let pid = stack
        .unit_pid(&unit(n))
        .ok_or(StackError::NotRunning(Component::Connect))?;
    process::kill_group(pid);
    Ok(())
}

/// REST base URL of the first live worker (any worker forwards to the leader).
pub fn url(stack: &Stack) -> String {
    let n = workers(stack)
        .find(|n| stack.unit_pid(&unit(*n)).is_some())
        .unwrap_or(1);
    worker_url(stack, n)
}

pub fn worker_url(stack: &Stack, n: u8) -> String {
    format!(
        "http://127.0.0.1:{}",
        stack.state.connect_ports[usize::from(n - 1)]
    )
}

/// `PUT /connectors/NAME/config` with the `config` object of `file` (one of
/// [`CONNECTORS`]): creates or updates the connector.
fn register_one(stack: &Stack, name: &str, file: &str) -> Result<()> {
    let path = stack.repo.join(file);
    let text = fs::read_to_string(&path).map_err(io_err(format!("reading {file}")))?;
    let file: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| StackError::Config(format!("{}: {e}", path.display())))?;
    let url = format!("{}/connectors/{name}/config", url(stack));
    // Creating a connector validates it against the database first: slower
    // than a status read on a loaded machine.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    agent
        .put(&url)
        .header("Authorization", authorization(stack))
        .send_json(&file["config"])
        .map_err(|e| StackError::Command {
            command: format!("PUT {url}"),
            detail: e.to_string(),
        })?;
    Ok(())
}

/// `debezium/task-watchdog.sh` (if not running yet), given every worker.
fn start_task_watchdog(stack: &Stack) -> Result<()> {
    if stack.unit_pid(WATCHDOG).is_some() {
        return Ok(());
    }
    let mut command = std::process::Command::new("sh");
    command
        .arg(stack.repo.join("debezium/task-watchdog.sh"))
        .env(
            "CONNECT_URL",
            workers(stack)
                .map(|n| worker_url(stack, n))
                .collect::<Vec<_>>()
                .join(" "),
        )
        .env("CONNECTOR", CONNECTORS.map(|(name, _)| name).join(" "))
        .env("CONNECT_USER", CONNECT_REST_USER)
        .env("CONNECT_PASSWORD", &stack.state.kafka.connect_rest_password);
    stack.spawn_unit(WATCHDOG, command)
}

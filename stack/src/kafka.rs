//! Apache Kafka in KRaft mode, from the jars `dev/install` resolved
//! (stack/jvm/kafka/pom.xml): one combined broker+controller node by
//! default, or three on loopback (`stack up --brokers 3`).
//!
//! Each node is a process of its own (`broker-N` pid and log), so a single
//! broker can be killed and restarted; [`Component::Broker`] stands for the
//! whole cluster. Its settings are [`NodeSettings`], written as
//! `kafka/node-N/server.properties`; the storage is formatted once with the
//! stack's cluster id. Topics come from `debezium/topics.txt`, created through
//! the admin API with the cluster's replication factor. Reading the outbox
//! topics back (the oracle's duplicate count, the benchmark's relay rate) is a
//! `read_committed` consumer: what every consumer of the pipeline sees.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::properties::to_properties;
use crate::state::{write_private, KafkaUser};
use crate::{io_err, process, tools, Component, Result, Stack, StackError};

/// Heap of each Kafka node: the stack's volumes are small, the machine is shared.
const HEAP: &str = "-Xmx512m";

/// `server.properties` of one node (field names are Kafka's keys).
#[derive(Debug, Serialize)]
pub struct NodeSettings {
    #[serde(rename = "process.roles")]
    pub process_roles: &'static str,
    #[serde(rename = "node.id")]
    pub node_id: u8,
    #[serde(rename = "listeners")]
    pub listeners: String,
    #[serde(rename = "advertised.listeners")]
    pub advertised_listeners: String,
    #[serde(rename = "listener.security.protocol.map")]
    pub protocol_map: &'static str,
    #[serde(rename = "controller.listener.names")]
    pub controller_listener_names: &'static str,
    #[serde(rename = "inter.broker.listener.name")]
    pub inter_broker_listener_name: &'static str,
    /// Static quorum: every node is a voter.
    #[serde(rename = "controller.quorum.voters")]
    pub quorum_voters: String,
    #[serde(rename = "log.dirs")]
    pub log_dirs: String,
    #[serde(rename = "num.partitions")]
    pub num_partitions: u32,
    #[serde(rename = "default.replication.factor")]
    pub default_replication_factor: u8,
    #[serde(rename = "min.insync.replicas")]
    pub min_insync_replicas: u8,
    #[serde(rename = "offsets.topic.replication.factor")]
    pub offsets_replication_factor: u8,
    #[serde(rename = "transaction.state.log.replication.factor")]
    pub transaction_log_replication_factor: u8,
    #[serde(rename = "transaction.state.log.min.isr")]
    pub transaction_log_min_isr: u8,
    /// Partitions of the group and transaction coordinators' topics (50
    /// each by default): a stack serves a handful of groups and transactional
    /// producers, and after a crash every partition must be led again before
    /// the cluster serves; 3 of each restart in a fraction of the time.
    #[serde(rename = "offsets.topic.num.partitions")]
    pub offsets_partitions: u32,
    #[serde(rename = "transaction.state.log.num.partitions")]
    pub transaction_log_partitions: u32,
    #[serde(rename = "share.coordinator.state.topic.replication.factor")]
    pub share_state_replication_factor: u8,
    #[serde(rename = "share.coordinator.state.topic.min.isr")]
    pub share_state_min_isr: u8,
    /// Topics are created explicitly (debezium/topics.txt), never by a typo.
    #[serde(rename = "auto.create.topics.enable")]
    pub auto_create_topics: bool,
    /// A replica that missed writes never becomes leader: no silent loss.
    #[serde(rename = "unclean.leader.election.enable")]
    pub unclean_leader_election: bool,
    /// The first member of a group gets its partitions at once.
    #[serde(rename = "group.initial.rebalance.delay.ms")]
    pub initial_rebalance_delay_ms: u32,
    /// KIP-848 groups (the projector's with `kafka.group_protocol =
    /// "consumer"`; the classic protocol's session is the client's): a dead
    /// member's partitions move after this long without a heartbeat. The broker's minimum (45 s by default)
    /// is lowered so a killed projector is replaced within seconds.
    #[serde(rename = "group.consumer.min.session.timeout.ms")]
    pub consumer_min_session_timeout_ms: u32,
    #[serde(rename = "group.consumer.session.timeout.ms")]
    pub consumer_session_timeout_ms: u32,
    #[serde(rename = "group.consumer.min.heartbeat.interval.ms")]
    pub consumer_min_heartbeat_ms: u32,
    #[serde(rename = "group.consumer.heartbeat.interval.ms")]
    pub consumer_heartbeat_ms: u32,
    /// Two network and I/O threads: the machine has two cores.
    #[serde(rename = "num.network.threads")]
    pub network_threads: u8,
    #[serde(rename = "num.io.threads")]
    pub io_threads: u8,
    /// Clients and brokers log in with SCRAM-SHA-512 (users made at format
    /// time, `StorageTool format --add-scram`).
    #[serde(rename = "sasl.enabled.mechanisms")]
    pub sasl_mechanisms: &'static str,
    #[serde(rename = "sasl.mechanism.inter.broker.protocol")]
    pub inter_broker_mechanism: &'static str,
    /// The broker's own login to the other brokers.
    #[serde(rename = "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config")]
    pub broker_jaas: String,
    /// The controller listener: SASL/PLAIN with one static user, its
    /// password in this (0600) file.
    #[serde(rename = "sasl.mechanism.controller.protocol")]
    pub controller_mechanism: &'static str,
    #[serde(rename = "listener.name.controller.sasl.enabled.mechanisms")]
    pub controller_mechanisms: &'static str,
    #[serde(rename = "listener.name.controller.plain.sasl.jaas.config")]
    pub controller_jaas: String,
    /// Every request is checked against the ACLs ([`ACL_FILE`]); a user
    /// without one may do nothing.
    #[serde(rename = "authorizer.class.name")]
    pub authorizer: &'static str,
    #[serde(rename = "super.users")]
    pub super_users: String,
    #[serde(rename = "allow.everyone.if.no.acl.found")]
    pub allow_if_no_acl: bool,
}

/// The SASL mechanism of every client and of the brokers among themselves.
pub const SASL_MECHANISM: &str = "SCRAM-SHA-512";
/// The user of the controller listener (SASL/PLAIN).
pub const CONTROLLER_USER: &str = "controller";

/// A `sasl.jaas.config` value for `user` with SCRAM.
pub fn scram_jaas(user: &str, password: &str) -> String {
    format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required \
         username=\"{user}\" password=\"{password}\";"
    )
}

impl NodeSettings {
    /// Settings of node `id` (1-based) of `stack`'s cluster.
    pub fn for_node(stack: &Stack, id: u8) -> Self {
        let shape = stack.state.shape;
        let ports = stack.state.kafka_nodes[usize::from(id - 1)];
        let rf = shape.replication_factor();
        let min_isr = shape.min_insync_replicas();
        let secrets = &stack.state.kafka;
        let controller = &secrets.controller_password;
        Self {
            process_roles: "broker,controller",
            node_id: id,
            listeners: format!(
                "SASL_PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
                ports.broker, ports.controller
            ),
            advertised_listeners: format!("SASL_PLAINTEXT://127.0.0.1:{}", ports.broker),
            protocol_map: "CONTROLLER:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            controller_listener_names: "CONTROLLER",
            inter_broker_listener_name: "SASL_PLAINTEXT",
            quorum_voters: stack
                .state
                .kafka_nodes
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{}@127.0.0.1:{}", i + 1, p.controller))
                .collect::<Vec<_>>()
                .join(","),
            log_dirs: node_dir(stack, id).join("data").display().to_string(),
            num_partitions: PARTITIONS,
            default_replication_factor: rf,
            min_insync_replicas: min_isr,
            offsets_replication_factor: rf,
            transaction_log_replication_factor: rf,
            transaction_log_min_isr: min_isr,
            offsets_partitions: PARTITIONS,
            transaction_log_partitions: PARTITIONS,
            share_state_replication_factor: rf,
            share_state_min_isr: min_isr,
            auto_create_topics: false,
            unclean_leader_election: false,
            initial_rebalance_delay_ms: 0,
            consumer_min_session_timeout_ms: 6000,
            consumer_session_timeout_ms: 6000,
            consumer_min_heartbeat_ms: 500,
            consumer_heartbeat_ms: 1000,
            network_threads: 2,
            io_threads: 2,
            sasl_mechanisms: SASL_MECHANISM,
            inter_broker_mechanism: SASL_MECHANISM,
            broker_jaas: scram_jaas(KafkaUser::Broker.name(), &secrets.broker_password),
            controller_mechanism: "PLAIN",
            controller_mechanisms: "PLAIN",
            controller_jaas: format!(
                "org.apache.kafka.common.security.plain.PlainLoginModule required \
                 username=\"{CONTROLLER_USER}\" password=\"{controller}\" \
                 user_{CONTROLLER_USER}=\"{controller}\";"
            ),
            authorizer: "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            super_users: format!(
                "User:{};User:{};User:{CONTROLLER_USER}",
                KafkaUser::Broker.name(),
                KafkaUser::Admin.name()
            ),
            allow_if_no_acl: false,
        }
    }
}

/// Partitions of every topic of `debezium/topics.txt`.
pub const PARTITIONS: u32 = 3;

fn node_dir(stack: &Stack, id: u8) -> PathBuf {
    stack.state_dir.join("kafka").join(format!("node-{id}"))
}

/// Unit name (pid and log file) of node `id`.
pub fn unit(id: u8) -> String {
    format!("broker-{id}")
}

/// Node ids of the cluster (1-based).
pub fn nodes(stack: &Stack) -> impl Iterator<Item = u8> {
    1..=stack.state.shape.brokers
}

/// Starts every node that is not running (formatting its storage the first
/// time), waits until the cluster answers with all nodes, then creates the
/// topics that are missing.
pub fn start(stack: &Stack, progress: &dyn Fn(&str)) -> Result<()> {
    for id in nodes(stack) {
        if stack.unit_pid(&unit(id)).is_none() {
            start_node(stack, id)?;
        }
    }
    await_cluster(stack, Duration::from_secs(90))?;
    create_topics(stack, progress)?;
    apply_acls(stack, progress)
}

/// The ACLs of `debezium/kafka-acls.txt`, the file compose applies too: per
/// line, the user and the arguments of one `AclCommand --add`.
pub fn acl_specs(stack: &Stack) -> Result<Vec<(KafkaUser, Vec<String>)>> {
    let path = stack.repo.join(ACL_FILE);
    let text = fs::read_to_string(&path).map_err(io_err(format!("reading {ACL_FILE}")))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default();
            let user = KafkaUser::ALL
                .into_iter()
                .find(|u| u.name() == name)
                .ok_or_else(|| {
                    StackError::Config(format!(
                        "{ACL_FILE}: unknown Kafka user {name:?} in {line:?}"
                    ))
                })?;
            Ok((user, words.map(str::to_owned).collect()))
        })
        .collect()
}

/// Who may do what beyond the super users (one source for both stacks).
pub const ACL_FILE: &str = "debezium/kafka-acls.txt";

/// Adds the ACLs of [`ACL_FILE`] once per cluster and file content (a marker
/// remembers it): each `AclCommand` run is a JVM start, and ACLs live in the
/// cluster's metadata. Prefixed patterns: `outbox.event.` is every outbox topic.
pub fn apply_acls(stack: &Stack, progress: &dyn Fn(&str)) -> Result<()> {
    let marker = stack.state_dir.join("kafka/acls.applied");
    let specs = acl_specs(stack)?;
    let wanted = format!("{specs:?}");
    if fs::read_to_string(&marker).is_ok_and(|done| done == wanted) {
        return Ok(());
    }
    for (user, spec) in &specs {
        let mut args: Vec<&str> = vec!["--add", "--force", "--resource-pattern-type", "prefixed"];
        let principal = format!("User:{}", user.name());
        args.extend(["--allow-principal", &principal]);
        args.extend(spec.iter().map(String::as_str));
        acl_command(stack, &args)?;
        progress(&format!(
            "ACLs for User:{}: {}",
            user.name(),
            spec.join(" ")
        ));
    }
    fs::write(&marker, wanted).map_err(io_err("writing the ACL marker"))
}

/// Runs Kafka's `AclCommand` with `args` (after the bootstrap servers) as
/// the admin user: one JVM start, a few seconds.
pub fn acl_command(stack: &Stack, args: &[&str]) -> Result<String> {
    let login = stack.state_dir.join("kafka/admin-client.properties");
    write_private(&login, &client_properties(stack, KafkaUser::Admin))?;
    let bootstrap = stack.bootstrap_servers();
    let login = login.display().to_string();
    let mut all = vec![
        "--bootstrap-server",
        bootstrap.as_str(),
        "--command-config",
        login.as_str(),
    ];
    all.extend_from_slice(args);
    tools::run_java(
        tools::kafka_classpath()?,
        "org.apache.kafka.tools.AclCommand",
        &all,
    )
}

/// A Java client's login settings for `user` (`--command-config` of Kafka's
/// tools, and Connect's worker file).
pub fn client_properties(stack: &Stack, user: KafkaUser) -> String {
    java_login(user.name(), stack.state.kafka.password(user))
}

/// A Java client's SASL/SCRAM login as `.properties` lines.
pub fn java_login(user: &str, password: &str) -> String {
    let mut properties = BTreeMap::new();
    properties.insert("security.protocol", "SASL_PLAINTEXT".to_owned());
    properties.insert("sasl.mechanism", SASL_MECHANISM.to_owned());
    properties.insert("sasl.jaas.config", scram_jaas(user, password));
    to_properties(&properties).expect("string properties serialize")
}

/// Starts node `id` (not waiting for it).
pub fn start_node(stack: &Stack, id: u8) -> Result<()> {
    if stack.state.kafka.is_none() {
        return Err(StackError::BadInput(format!(
            "the stack in {} has a Kafka cluster made before the brokers required a login; \
             `stack down --purge` (this deletes its data) and `up` again",
            stack.state_dir.display()
        )));
    }
    let dir = node_dir(stack, id);
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let config = dir.join("server.properties");
    write_private(&config, &to_properties(&NodeSettings::for_node(stack, id))?)?;
    if !dir.join("data/meta.properties").exists() {
        // Every node formats with the same SCRAM users: the first metadata
        // record batch of the cluster holds them, so clients log in from the
        // first start on. Their passwords go in a private argument file, never
        // on a command line (`ps` shows those to every local user).
        let mut args = vec![
            "format".to_owned(),
            "--ignore-formatted".to_owned(),
            // With `=`: a generated id may start with `-`.
            format!("--cluster-id={}", stack.state.cluster_id),
            "--config".to_owned(),
            config.display().to_string(),
        ];
        for user in KafkaUser::ALL {
            args.push("--add-scram".to_owned());
            args.push(format!(
                "{SASL_MECHANISM}=[name={},password={}]",
                user.name(),
                stack.state.kafka.password(user)
            ));
        }
        tools::run_java_private(
            tools::kafka_classpath()?,
            "kafka.tools.StorageTool",
            &args,
            &dir.join("format.args"),
        )?;
    }
    let mut command = tools::java_command(&stack.repo, HEAP)?;
    command
        .current_dir(&dir)
        .arg("-cp")
        .arg(tools::kafka_classpath()?)
        .arg("kafka.Kafka")
        .arg(&config);
    stack.spawn_unit(&unit(id), command)
}

/// SIGKILLs node `id` (a broker crash).
pub fn kill_node(stack: &Stack, id: u8) -> Result<()> {
    let pid = stack
        .unit_pid(&unit(id))
        .ok_or(StackError::NotRunning(Component::Broker))?;
    process::kill_group(pid);
    Ok(())
}

/// Waits until every node is registered and answers metadata requests.
pub fn await_cluster(stack: &Stack, deadline: Duration) -> Result<()> {
    let mut last = String::from("not asked yet");
    let ready = process::wait_until(deadline, Duration::from_millis(500), || {
        match health(stack) {
            Ok(_) => true,
            Err(e) => {
                last = e;
                false
            }
        }
    });
    if ready {
        return Ok(());
    }
    Err(StackError::NotReady {
        component: Component::Broker,
        seconds: deadline.as_secs(),
        detail: format!(
            "{last}; last log lines:\n{}",
            stack.tail_unit_log(&unit(1), 15)
        ),
    })
}

/// `Ok` when every node runs and the cluster's metadata lists all of them.
pub fn health(stack: &Stack) -> std::result::Result<String, String> {
    let down: Vec<String> = nodes(stack)
        .filter(|id| stack.unit_pid(&unit(*id)).is_none())
        .map(unit)
        .collect();
    if !down.is_empty() {
        return Err(format!("{} down", down.join(", ")));
    }
    // Each node itself, not only the cluster's view: right after a node was
    // killed the metadata still lists it (until its session expires).
    for (i, node) in stack.state.kafka_nodes.iter().enumerate() {
        api_versions(node.broker).map_err(|e| format!("{}: {e}", unit(i as u8 + 1)))?;
    }
    let consumer: BaseConsumer = client_config(stack)
        .create()
        .map_err(|e| format!("client: {e}"))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(3))
        .map_err(|e| format!("metadata: {e}"))?;
    let brokers = metadata.brokers().len();
    let want = usize::from(stack.state.shape.brokers);
    if brokers < want {
        return Err(format!("{brokers} of {want} brokers registered"));
    }
    let offline = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .filter(|p| p.leader() < 0)
        .count();
    if offline > 0 {
        return Err(format!("{offline} partitions without a leader"));
    }
    Ok(format!(
        "{brokers} broker{} (KRaft), {} topics",
        if brokers == 1 { "" } else { "s" },
        metadata.topics().len()
    ))
}

/// Sends a Kafka `ApiVersions` (v0) request and expects error code 0.
fn api_versions(port: u16) -> Result<String, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    let client_id = b"stack";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // api key: ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // api version 0
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut request = (body.len() as i32).to_be_bytes().to_vec();
    request.extend_from_slice(&body);
    stream.write_all(&request).map_err(|e| e.to_string())?;
    let mut header = [0u8; 10];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("no ApiVersions answer: {e}"))?;
    let correlation = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let error_code = i16::from_be_bytes([header[8], header[9]]);
    if correlation == 7 && error_code == 0 {
        Ok(format!("answering Kafka requests on 127.0.0.1:{port}"))
    } else {
        Err(format!(
            "ApiVersions answered correlation {correlation}, error {error_code}"
        ))
    }
}

/// librdkafka settings to reach this cluster.
pub fn client_config(stack: &Stack) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", stack.bootstrap_servers())
        .set("socket.timeout.ms", "5000")
        .set("log_level", "3");
    login(&mut config, stack, KafkaUser::Admin);
    config
}

/// Sets `user`'s SASL/SCRAM login on a librdkafka client.
pub fn login(config: &mut ClientConfig, stack: &Stack, user: KafkaUser) {
    config
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", SASL_MECHANISM)
        .set("sasl.username", user.name())
        .set("sasl.password", stack.state.kafka.password(user));
}

fn admin(stack: &Stack) -> Result<AdminClient<DefaultClientContext>> {
    client_config(stack)
        .create()
        .map_err(|e| StackError::Kafka(format!("admin client: {e}")))
}

/// Creates the topics of `debezium/topics.txt` that are missing, with their
/// configs, the stack's partitions ([`crate::Shape::partitions`]) and the
/// cluster's replication factor.
pub fn create_topics(stack: &Stack, progress: &dyn Fn(&str)) -> Result<()> {
    // Only what is missing: a restart of a degraded cluster (a node still
    // down) must not depend on an admin request it cannot serve.
    let existing = existing_topics(stack)?;
    for (topic, configs) in crate::read_topic_specs(&stack.repo)? {
        if existing.contains(&topic) {
            continue;
        }
        let configs: Vec<(String, String)> = configs
            .iter()
            .filter_map(|c| c.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let partitions = stack.state.shape.partitions;
        if create_topic(stack, &topic, partitions, &configs)? {
            progress(&format!(
                "topic {topic} ({partitions} partitions, replication factor {})",
                stack.state.shape.replication_factor()
            ));
        }
    }
    Ok(())
}

/// Names of the cluster's topics.
pub fn existing_topics(stack: &Stack) -> Result<Vec<String>> {
    let consumer: BaseConsumer = client_config(stack)
        .create()
        .map_err(|e| StackError::Kafka(format!("client: {e}")))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| StackError::Kafka(format!("metadata: {e}")))?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect())
}

/// Creates `topic` unless it exists; `true` if it was created.
pub fn create_topic(
    stack: &Stack,
    topic: &str,
    partitions: u32,
    configs: &[(String, String)],
) -> Result<bool> {
    let admin = admin(stack)?;
    let rf = i32::from(stack.state.shape.replication_factor());
    let mut new = NewTopic::new(topic, partitions as i32, TopicReplication::Fixed(rf));
    for (key, value) in configs {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| StackError::Kafka(format!("creating topic {topic}: {e}")))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) | None => Ok(false),
        Some(Err((name, code))) => Err(StackError::Kafka(format!("creating topic {name}: {code}"))),
    }
}

/// The node leading the partition with the most records among `topics`
/// (the one a broker kill hurts most), if any partition has a leader and
/// known offsets.
pub fn busiest_leader(stack: &Stack, topics: &[String]) -> Result<Option<u8>> {
    let consumer: BaseConsumer = client_config(stack)
        .create()
        .map_err(|e| StackError::Kafka(format!("client: {e}")))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| StackError::Kafka(format!("metadata: {e}")))?;
    let mut best: Option<(i64, i32)> = None;
    for topic in metadata
        .topics()
        .iter()
        .filter(|t| topics.iter().any(|n| n == t.name()))
    {
        for partition in topic.partitions() {
            if partition.leader() < 0 {
                continue;
            }
            // Right after a restart a leader may not know its high watermark
            // yet: such a partition is not counted rather than failing the fault.
            let Ok((low, high)) =
                consumer.fetch_watermarks(topic.name(), partition.id(), Duration::from_secs(5))
            else {
                continue;
            };
            if best.is_none_or(|(n, _)| high - low > n) {
                best = Some((high - low, partition.leader()));
            }
        }
    }
    Ok(best.and_then(|(_, leader)| u8::try_from(leader).ok()))
}

/// A `read_committed` reader of every record on some topics, from the
/// beginning: what a consumer of the pipeline sees.
pub struct TopicReader {
    consumer: BaseConsumer,
    partitions: Vec<(String, i32)>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader")
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// One record as read back: topic, partition, offset and its headers.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub headers: BTreeMap<String, String>,
    /// The record's timestamp (ms since the epoch): when the relay's
    /// producer created it (CreateTime), if it carries one.
    pub timestamp_ms: Option<i64>,
}

impl TopicReader {
    pub fn open(stack: &Stack, topics: &[String]) -> Result<Self> {
        Self::open_at(stack, topics, Offset::Beginning, "500")
    }

    /// A reader of what is committed from now on: [`Self::watch`]. A fetch
    /// waiting on the broker returns as soon as a transaction's commit makes
    /// records visible, so its longest wait (100 ms, librdkafka's default
    /// 500) only bounds how often an idle reader asks: it adds no latency,
    /// and little work for the broker whose CPU the benchmark measures.
    pub fn open_at_end(stack: &Stack, topics: &[String]) -> Result<Self> {
        Self::open_at(stack, topics, Offset::End, "100")
    }

    fn open_at(
        stack: &Stack,
        topics: &[String],
        start: Offset,
        fetch_wait_ms: &str,
    ) -> Result<Self> {
        let consumer: BaseConsumer = client_config(stack)
            .set("group.id", format!("stack-reader-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", fetch_wait_ms)
            .create()
            .map_err(|e| StackError::Kafka(format!("consumer: {e}")))?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| StackError::Kafka(format!("metadata: {e}")))?;
        let mut partitions = Vec::new();
        let mut tpl = TopicPartitionList::new();
        for topic in metadata
            .topics()
            .iter()
            .filter(|t| topics.iter().any(|n| n == t.name()))
        {
            for p in topic.partitions() {
                partitions.push((topic.name().to_owned(), p.id()));
                tpl.add_partition_offset(topic.name(), p.id(), start)
                    .map_err(|e| StackError::Kafka(e.to_string()))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| StackError::Kafka(format!("assign: {e}")))?;
        Ok(Self {
            consumer,
            partitions,
        })
    }

    /// Records until every partition's position reached its end (the last
    /// stable offset), or `deadline` passes (an error: a stuck transaction).
    pub fn read_to_end(&mut self, deadline: Duration) -> Result<Vec<ReadRecord>> {
        let mut ends = BTreeMap::new();
        for (topic, partition) in &self.partitions {
            let (_, high) = self
                .consumer
                .fetch_watermarks(topic, *partition, Duration::from_secs(10))
                .map_err(|e| {
                    StackError::Kafka(format!("watermarks of {topic}/{partition}: {e}"))
                })?;
            ends.insert((topic.clone(), *partition), high);
        }
        let mut out = Vec::new();
        let end = Instant::now() + deadline;
        loop {
            if self.reached(&ends)? {
                return Ok(out);
            }
            if Instant::now() > end {
                return Err(StackError::Kafka(format!(
                    "topics not read to their end within {}s (an open transaction?)",
                    deadline.as_secs()
                )));
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    let headers = message
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_owned(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(ReadRecord {
                        topic: message.topic().to_owned(),
                        partition: message.partition(),
                        offset: message.offset(),
                        headers,
                        timestamp_ms: message.timestamp().to_millis(),
                    });
                }
                Some(Err(e)) => return Err(StackError::Kafka(format!("reading: {e}"))),
                None => {}
            }
        }
    }

    /// Until `stop` is set: each record's event id (header `id`) and the
    /// wall-clock time this reader received it, i.e. when the relay's
    /// transaction made it visible to a `read_committed` consumer.
    pub fn watch(
        &mut self,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<(String, std::time::SystemTime)>> {
        let mut seen = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(message)) => {
                    let at = std::time::SystemTime::now();
                    let id = message.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == outbox_events::header::EVENT_ID)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    });
                    if let Some(id) = id {
                        seen.push((id, at));
                    }
                }
                Some(Err(e)) => return Err(StackError::Kafka(format!("reading: {e}"))),
                None => {}
            }
        }
        Ok(seen)
    }

    fn reached(&self, ends: &BTreeMap<(String, i32), i64>) -> Result<bool> {
        let position = self
            .consumer
            .position()
            .map_err(|e| StackError::Kafka(format!("position: {e}")))?;
        Ok(ends.iter().all(|((topic, partition), end)| {
            *end == 0
                || matches!(
                    position.find_partition(topic, *partition).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= *end
                )
        }))
    }
}

/// The outbox topics of `debezium/topics.txt` (not the heartbeat topic).
pub fn outbox_topics(stack: &Stack) -> Result<Vec<String>> {
    Ok(stack
        .topics()?
        .into_iter()
        .filter(|t| !t.starts_with("__"))
        .collect())
}

//! A consumer's settings: `--config FILE` (TOML) overridden by `<SERVICE>__*`
//! variables (`PROJECTOR__KAFKA__GROUP_ID`, `INVENTORY__DATABASE__HOST`, ...).
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use service::{DatabaseSettings, SettingsError};

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// The service's database: its own tables and the core's (inbox, positions, dead letters).
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub batch: BatchSettings,
    /// Where `/metrics` (Prometheus) is served; also the liveness probe.
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Topics to consume, e.g. `["outbox.event.order"]`.
    pub topics: Vec<String>,
    /// The consumer group protocol: `classic` (the default: eager
    /// round-robin rebalances, and static membership with
    /// [`Self::group_instance_id`], which gives a killed and restarted
    /// instance its partitions back at once) or `consumer` (KIP-848: the
    /// broker assigns, a member's session is the broker's
    /// `group.consumer.session.timeout.ms`; a restarted instance waits for
    /// its old session to expire, with or without an instance id).
    #[serde(default)]
    pub group_protocol: GroupProtocol,
    /// Static membership (KIP-345), classic protocol only: this instance's
    /// stable name in the group, one per instance (e.g. `projector-1`). A
    /// killed instance that restarts under the same name takes its
    /// partitions back at once, without a rebalance, instead of waiting for
    /// its old session to expire; the price is that an instance that stops
    /// for good keeps its partitions until `session_timeout_ms` (it does not
    /// leave the group). Two running instances with one name: the older is
    /// fenced and stops (a fatal error).
    #[serde(default)]
    pub group_instance_id: Option<String>,
    /// Session timeout of the classic protocol only.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_ms: u32,
    /// Longest the broker may hold a fetch that has no new records: an idle
    /// projector's floor on latency.
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u32,
    /// librdkafka's `max.poll.interval.ms`, which is also the member's
    /// rebalance timeout (under either protocol): a member that does not complete a
    /// reassignment within it is fenced and its partitions go to another.
    /// The chaos suite saw a member stuck after a coordinator failover hold
    /// its partitions unread for the whole interval (then 300 s); a batch
    /// that waits longer for the read database loses its partitions, and
    /// their new owner resumes at the stored positions (nothing lost).
    #[serde(default = "default_max_poll_interval_ms")]
    pub max_poll_interval_ms: u32,
    /// The projector's login to the brokers (SASL/SCRAM). Both stacks
    /// require one; absent, the client connects without authentication.
    #[serde(default)]
    pub sasl: Option<SaslSettings>,
}

/// A SASL login: the projector's own user, allowed by the brokers' ACLs to
/// read the outbox topics and its group's offsets, and nothing else.
#[derive(Debug, Clone, Deserialize)]
pub struct SaslSettings {
    /// librdkafka's `sasl.mechanisms`.
    #[serde(default = "default_sasl_mechanism")]
    pub mechanism: String,
    pub username: String,
    /// Never logged (`Debug` prints `[REDACTED]`).
    pub password: secrecy::SecretString,
}

fn default_sasl_mechanism() -> String {
    "SCRAM-SHA-512".to_owned()
}

fn default_max_poll_interval_ms() -> u32 {
    // Longer than the read-database outages a projector rides out: a static
    // member past it rejoins under a new member id, and its next offset
    // commit under the old one is fenced (fatal: the process exits for its
    // supervisor to restart it). The 30 s used before failed the
    // thirty-second outage test that way.
    120_000
}

/// librdkafka's `group.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    Consumer,
    #[default]
    Classic,
}

impl GroupProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupProtocol::Consumer => "consumer",
            GroupProtocol::Classic => "classic",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct BatchSettings {
    /// Most records applied in one read-database transaction.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// How long to wait for more records before applying a partial batch.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_records: default_max_records(),
            max_wait_ms: default_max_wait_ms(),
        }
    }
}

fn default_metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
fn default_group() -> String {
    // Filled in with the service's name by `Settings::load`.
    String::new()
}
fn default_session_timeout() -> u32 {
    // Apache Kafka's group.min.session.timeout.ms: the lowest a broker accepts by default.
    6000
}
fn default_fetch_wait_max_ms() -> u32 {
    10
}
fn default_max_records() -> usize {
    500
}
fn default_max_wait_ms() -> u64 {
    5
}

impl Settings {
    /// Settings of `service` (its environment prefix is the name in upper
    /// case); its consumer group is its name unless set.
    pub fn load(file: Option<&Path>, service: &str) -> Result<Self, SettingsError> {
        let mut settings: Self =
            service::load_settings(file, &service.to_uppercase(), &["kafka.topics"])?;
        if settings.kafka.group_id.is_empty() {
            settings.kafka.group_id = service.to_owned();
        }
        Ok(settings)
    }
}

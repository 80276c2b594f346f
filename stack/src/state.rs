//! What one stack remembers between commands: its shape (brokers, Connect
//! workers), ports and secrets, chosen on first use and kept in `stack.json`
//! (0600, written atomically, in a 0700 state directory); the database roles
//! and their logins.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{io_err, Result, StackError};

/// Owns both databases and runs the migrations (sql/bootstrap.sql has every role).
pub const OWNER_USER: &str = "orders_owner";

/// The database roles (sql/bootstrap.sql): one per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Writer,
    Projector,
    Reader,
    /// Operators of the dead-letter commands (`projector dead-letters ...`).
    Operator,
    Debezium,
    /// The inventory service, in its own database.
    Inventory,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Owner,
        Role::Writer,
        Role::Projector,
        Role::Reader,
        Role::Operator,
        Role::Debezium,
        Role::Inventory,
    ];

    pub fn user(self) -> &'static str {
        match self {
            Role::Owner => OWNER_USER,
            Role::Writer => "orders_writer",
            Role::Projector => "orders_projector",
            Role::Reader => "orders_reader",
            Role::Operator => "orders_operator",
            Role::Debezium => "debezium",
            Role::Inventory => "orders_inventory",
        }
    }
}

/// The users of the Kafka cluster (SASL/SCRAM-SHA-512), each with its own
/// password and only the ACLs its job needs ([`crate::kafka::ACL_FILE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaUser {
    /// The brokers among themselves (a super user).
    Broker,
    /// The stack's own tools: topics, ACLs, reading topics back (a super user).
    Admin,
    /// Kafka Connect: its internal topics and group, its transactions, and
    /// the only user that may write the outbox topics.
    Connect,
    /// The projector: reads the outbox topics in its group, writes nothing.
    Projector,
    /// The inventory service: reads the order topic in its group.
    Inventory,
    /// The order reactor: reads the reservation topic in its group.
    Reactor,
}

impl KafkaUser {
    pub const ALL: [KafkaUser; 6] = [
        KafkaUser::Broker,
        KafkaUser::Admin,
        KafkaUser::Connect,
        KafkaUser::Projector,
        KafkaUser::Inventory,
        KafkaUser::Reactor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KafkaUser::Broker => "broker",
            KafkaUser::Admin => "admin",
            KafkaUser::Connect => "connect",
            KafkaUser::Projector => "projector",
            KafkaUser::Inventory => "inventory",
            KafkaUser::Reactor => "reactor",
        }
    }
}

/// The user of the Connect REST API (basic authentication).
pub const CONNECT_REST_USER: &str = "admin";

/// The Kafka cluster's and Connect's secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaSecrets {
    /// The KRaft controllers among themselves (SASL/PLAIN on the controller
    /// listener, which cannot use SCRAM: its users live in the metadata the
    /// quorum serves).
    pub controller_password: String,
    pub broker_password: String,
    pub admin_password: String,
    pub connect_password: String,
    pub projector_password: String,
    #[serde(default = "random_secret")]
    pub inventory_password: String,
    #[serde(default = "random_secret")]
    pub reactor_password: String,
    /// Connect's REST API, user [`CONNECT_REST_USER`].
    pub connect_rest_password: String,
}

impl KafkaSecrets {
    /// What a stack made before authentication has (see [`Self::is_none`]).
    fn none() -> Self {
        Self {
            controller_password: String::new(),
            broker_password: String::new(),
            admin_password: String::new(),
            connect_password: String::new(),
            projector_password: String::new(),
            inventory_password: String::new(),
            reactor_password: String::new(),
            connect_rest_password: String::new(),
        }
    }

    pub fn is_none(&self) -> bool {
        self.broker_password.is_empty()
    }

    /// Fresh random secrets.
    pub fn generate() -> Self {
        Self {
            controller_password: random_secret(),
            broker_password: random_secret(),
            admin_password: random_secret(),
            connect_password: random_secret(),
            projector_password: random_secret(),
            inventory_password: random_secret(),
            reactor_password: random_secret(),
            connect_rest_password: random_secret(),
        }
    }

    pub fn password(&self, user: KafkaUser) -> &str {
        match user {
            KafkaUser::Broker => &self.broker_password,
            KafkaUser::Admin => &self.admin_password,
            KafkaUser::Connect => &self.connect_password,
            KafkaUser::Projector => &self.projector_password,
            KafkaUser::Inventory => &self.inventory_password,
            KafkaUser::Reactor => &self.reactor_password,
        }
    }
}

/// The size of a stack, fixed when it is first created (a Kafka cluster's
/// controller quorum cannot change size by restarting with other settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Kafka nodes, each broker and KRaft controller: 1, or 3 (replication
    /// factor 3, `min.insync.replicas=2`).
    pub brokers: u8,
    /// Kafka Connect workers in the one distributed group.
    pub connect_workers: u8,
    /// Partitions of each outbox topic (created once, with the stack). An
    /// aggregate's events share a partition (the key is its id), so this is
    /// the most projector instances that can share the work.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
}

fn default_partitions() -> u32 {
    crate::kafka::PARTITIONS
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            brokers: 1,
            connect_workers: 1,
            partitions: default_partitions(),
        }
    }
}

impl Shape {
    pub fn validate(self) -> Result<Self> {
        if !matches!(self.brokers, 1 | 3) {
            return Err(StackError::BadInput(format!(
                "--brokers {}: a stack runs 1 or 3 Kafka nodes",
                self.brokers
            )));
        }
        if !(1..=64).contains(&self.partitions) {
            return Err(StackError::BadInput(format!(
                "--partitions {}: 1 to 64",
                self.partitions
            )));
        }
        if !(1..=3).contains(&self.connect_workers) {
            return Err(StackError::BadInput(format!(
                "--connect-workers {}: 1 to 3",
                self.connect_workers
            )));
        }
        Ok(self)
    }

    /// Replication factor of every topic (the cluster's size).
    pub fn replication_factor(self) -> u8 {
        self.brokers
    }

    /// `min.insync.replicas`: 2 of 3, so one broker may die without stopping
    /// writes and an acknowledged record is on two brokers.
    pub fn min_insync_replicas(self) -> u8 {
        if self.brokers >= 3 {
            2
        } else {
            1
        }
    }
}

/// Ports of one Kafka node.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct NodePorts {
    /// Clients and replication (PLAINTEXT, loopback).
    pub broker: u16,
    /// The KRaft controller quorum.
    pub controller: u16,
}

/// Ports and secrets of one stack, chosen once and kept in `stack.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackState {
    pub shape: Shape,
    /// The Kafka cluster's id (`StorageTool format -t`).
    pub cluster_id: String,
    pub postgres_port: u16,
    pub kafka_nodes: Vec<NodePorts>,
    /// REST listener of each Connect worker (loopback).
    pub connect_ports: Vec<u16>,
    pub projector_metrics_port: u16,
    /// `/metrics` of the inventory service and of the order reactor (0 in a
    /// stack made before them: the OS picks).
    #[serde(default)]
    pub inventory_metrics_port: u16,
    #[serde(default)]
    pub reactor_metrics_port: u16,
    /// Password of the owner role (migrations; the stack's own checks).
    pub app_password: String,
    pub debezium_password: String,
    pub writer_password: String,
    pub projector_password: String,
    pub reader_password: String,
    /// Added after the first stacks were made: one made before gets it on open.
    #[serde(default = "random_secret")]
    pub operator_password: String,
    #[serde(default = "random_secret")]
    pub inventory_password: String,
    /// The PostgreSQL data directory when it is not `postgres/` in the state
    /// directory. As root, PostgreSQL runs as the `postgres` user, which may
    /// not pass through our 0700 state directory, and no folder of ours is
    /// opened to it: its data lives under that user's home instead.
    #[serde(default)]
    pub postgres_data: Option<PathBuf>,
    /// Kafka's users and Connect's REST login. A stack made before the
    /// brokers required them has none: it gets them on open if its cluster
    /// was never formatted, and is refused otherwise (`Stack::open`).
    #[serde(default = "KafkaSecrets::none")]
    pub kafka: KafkaSecrets,
}

impl StackState {
    /// A new stack of `shape` in the folder `dir`, with ports claimed for it
    /// (crate::ports) and fresh secrets.
    pub fn new(shape: Shape, dir: &Path) -> Result<Self> {
        let shape = shape.validate()?;
        let nodes = usize::from(shape.brokers);
        let workers = usize::from(shape.connect_workers);
        let mut ports = crate::ports::claim(dir, 2 * nodes + workers + 4, true)?.into_iter();
        let mut next = || ports.next().expect("as many ports as asked for");
        let kafka_nodes = (0..nodes)
            .map(|_| NodePorts {
                broker: next(),
                controller: next(),
            })
            .collect();
        let connect_ports = (0..workers).map(|_| next()).collect();
        let postgres_port = next();
        let projector_metrics_port = next();
        let inventory_metrics_port = next();
        let reactor_metrics_port = next();
        Ok(Self {
            shape,
            cluster_id: kafka_cluster_id(),
            postgres_port,
            kafka_nodes,
            connect_ports,
            projector_metrics_port,
            inventory_metrics_port,
            reactor_metrics_port,
            app_password: random_secret(),
            debezium_password: random_secret(),
            writer_password: random_secret(),
            projector_password: random_secret(),
            reader_password: random_secret(),
            operator_password: random_secret(),
            inventory_password: random_secret(),
            postgres_data: postgres_home_data()?,
            kafka: KafkaSecrets::generate(),
        })
    }

    /// Reads `stack.json`.
    pub fn load(file: &Path) -> Result<Self> {
        let text = fs::read_to_string(file).map_err(io_err("reading stack.json"))?;
        serde_json::from_str(&text).map_err(|e| StackError::BadState {
            path: file.display().to_string(),
            detail: e.to_string(),
        })
    }

    /// Writes `stack.json` (0600, atomically).
    pub fn save(&self, file: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| StackError::BadState {
            path: file.display().to_string(),
            detail: e.to_string(),
        })?;
        write_private(file, &text)
    }
}

/// Where a database is and how the services log in to it.
#[derive(Debug, Clone)]
pub struct DbParams {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

impl DbParams {
    /// A libpq connection string (for tokio-postgres).
    pub fn conn_string(&self) -> String {
        format!(
            "host={} port={} user={} password={} dbname={}",
            self.host, self.port, self.user, self.password, self.dbname
        )
    }
}

/// `[database]` of the writer's and the projector's settings files.
#[derive(Debug, Serialize)]
pub struct DatabaseSection {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

impl From<DbParams> for DatabaseSection {
    fn from(db: DbParams) -> Self {
        Self {
            host: db.host,
            port: db.port,
            user: db.user,
            password: db.password,
            dbname: db.dbname,
        }
    }
}

/// The writer's settings file (`config/writer.toml`).
#[derive(Debug, Serialize)]
pub struct WriterFile {
    pub database: DatabaseSection,
}

/// `[kafka]` of the projector's settings file.
#[derive(Debug, Serialize)]
pub struct KafkaSection {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    pub sasl: SaslSection,
}

/// `[kafka.sasl]`: the projector's own Kafka user.
#[derive(Debug, Serialize)]
pub struct SaslSection {
    pub mechanism: &'static str,
    pub username: &'static str,
    pub password: String,
}

/// The projector's settings file (`config/projector.toml`).
#[derive(Debug, Serialize)]
pub struct ProjectorFile {
    pub metrics_addr: String,
    pub database: DatabaseSection,
    pub kafka: KafkaSection,
}

/// A settings value as TOML.
pub fn to_toml(value: &impl Serialize) -> Result<String> {
    toml::to_string(value).map_err(|e| StackError::Config(e.to_string()))
}

/// Creates `dir` (and its parents, with the default mode) and makes `dir`
/// itself 0700 when it creates it: it holds secrets. No other folder's mode
/// is changed (an existing `dir` is the user's choice).
pub fn private_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("restricting {}", dir.display())))
}

/// Writes `text` to `path` readable by its owner only, atomically: a temp
/// file in the same folder created 0600, synced, then renamed over `path`.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let what = || format!("writing {}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(what()))?;
    file.write_all(text.as_bytes()).map_err(io_err(what()))?;
    file.sync_all().map_err(io_err(what()))?;
    fs::rename(&tmp, path).map_err(io_err(what()))
}

/// As root: a new data directory under the `postgres` user's home
/// (`~postgres/outbox-stacks/<id>`); otherwise none (the state directory's).
fn postgres_home_data() -> Result<Option<PathBuf>> {
    Ok(crate::postgres::os_user()?.map(|user| {
        user.dir
            .join("outbox-stacks")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }))
}

/// Removes a stack's directory and, if it has one elsewhere, its PostgreSQL
/// data directory, and releases its ports. Its processes must be stopped first.
pub fn remove_stack_files(dir: &Path) -> Result<()> {
    crate::ports::release_all(dir)?;
    if let Ok(state) = StackState::load(&dir.join("stack.json")) {
        if let Some(data) = state.postgres_data {
            match fs::remove_dir_all(&data) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(format!("removing {}", data.display()))(e))
                }
                _ => {}
            }
        }
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io_err(format!("removing {}", dir.display()))(e))
        }
        _ => Ok(()),
    }
}

pub(crate) fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (the
/// form `kafka-storage random-uuid` prints).
fn kafka_cluster_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

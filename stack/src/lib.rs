//! The local stack without Docker, as a library the tests use and a thin CLI
//! (`stack`) for people.
//!
//! It runs the same parts as `docker-compose.yml`, from the same files: the
//! SQL in `sql/`, the connector in `debezium/outbox-connector.json`, the
//! Connect worker settings in `debezium/connect-distributed.properties`, the
//! topic list in `debezium/topics.txt`, the JVM versions in `stack/jvm/`, and
//! the writer/projector settings schema.
//!
//! # Layout
//! - [`Stack`] (this file): one stack under one state directory (`.stack/`
//!   for people, a fresh directory per test run): start, stop, kill and
//!   readiness of each [`Component`], the units (one process group each, with
//!   a pid file and a log) that make them up.
//! - [`state`]: the stack's shape (Kafka nodes, Connect workers), ports and
//!   secrets (`stack.json`, 0600 in a 0700 directory), database roles.
//! - [`ports`]: listener ports, from below the kernel's ephemeral range and
//!   claimed machine-wide, so that no client socket or other stack takes one
//!   between its choice and its component's first start.
//! - One module per component: [`postgres`] (a private PostgreSQL 15
//!   cluster), [`kafka`] (Apache Kafka, KRaft, 1 or 3 nodes; topics; reading
//!   the topics back), [`connect`] (Kafka Connect distributed + Debezium; the
//!   connector over REST; the task watchdog), [`projector`] (the service and
//!   its replicas), [`saga`] (the inventory service and the order reactor).
//! - [`bins`]: the one place that runs the project's own binaries (`writer`,
//!   `projector` as owner) and external commands quietly.
//! - [`properties`]: Java `.properties` files from settings types.
//! - [`tools`]: where `dev/install` put the JVM parts and how to run them.
//! - [`process`]: spawning detached process groups, signals, the one wait helper.
//! - [`status`]: per-component liveness and health (slot lag, connector and
//!   task state, projector lag, latency, dead letters, parked events).
//! - [`suites`]: what runs on a stack: [`demo`], [`bench`], [`chaos`] with its
//!   [`oracle`], [`reconcile`].

pub mod bins;
pub mod connect;
pub mod kafka;
mod ports;
pub mod postgres;
pub(crate) mod process;
pub mod projector;
pub(crate) mod properties;
pub mod saga;
pub mod state;
pub mod status;
pub mod suites;
pub mod tools;

pub use suites::{bench, chaos, demo, oracle, reconcile, scale};

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use bins::run_quiet;
pub use connect::CONNECTOR_NAME;
pub use process::wait_until;
pub use state::{DbParams, Role, Shape, StackState, OWNER_USER};

/// Errors of the stack. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    // The cause is the source: `{:#}` (the binary's error line) prints it once.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not installed; run ./dev/install")]
    NotInstalled(String),
    #[error("{component} did not become ready within {seconds}s: {detail} (see `stack logs {component}`)")]
    NotReady {
        component: Component,
        seconds: u64,
        detail: String,
    },
    #[error("{0} is not running; run `stack up` (or `stack start {0}`)")]
    NotRunning(Component),
    #[error("command `{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("invalid stack state {path}: {detail}; remove the state directory and run `stack up`")]
    BadState { path: String, detail: String },
    #[error("benchmark step `{step}` failed: {detail}")]
    Bench { step: String, detail: String },
    #[error("{0}")]
    BadInput(String),
    #[error("invalid settings: {0}")]
    Config(String),
    #[error("kafka: {0} (see `stack logs broker`)")]
    Kafka(String),
}

pub type Result<T, E = StackError> = std::result::Result<T, E>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

/// The processes of the stack, in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Postgres,
    Broker,
    Connect,
    /// The inventory service (`inventory run`).
    Inventory,
    /// The order reactor (`writer react`).
    Reactor,
    Projector,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::Postgres,
        Component::Broker,
        Component::Connect,
        Component::Inventory,
        Component::Reactor,
        Component::Projector,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Postgres => "postgres",
            Component::Broker => "broker",
            Component::Connect => "connect",
            Component::Inventory => "inventory",
            Component::Reactor => "reactor",
            Component::Projector => "projector",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub const WRITE_DB: &str = "orders_write";
pub const READ_DB: &str = "orders_read";
pub const INVENTORY_DB: &str = "orders_inventory";

/// One local stack rooted at a state directory.
#[derive(Debug, Clone)]
pub struct Stack {
    pub state_dir: PathBuf,
    /// The repository (for `sql/`, `debezium/`).
    pub repo: PathBuf,
    /// Directory with the `writer` and `projector` binaries.
    pub bin_dir: PathBuf,
    pub state: StackState,
}

impl Stack {
    /// Opens the stack under `state_dir`, or creates a single-broker,
    /// single-worker one there.
    pub fn open(state_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(state_dir, bin_dir, None)
    }

    /// Opens the stack under `state_dir`; creates it with `shape` (default:
    /// one broker, one worker) if it does not exist. An existing stack of
    /// another shape is refused: a KRaft quorum cannot change size in place.
    pub fn open_with(
        state_dir: impl Into<PathBuf>,
        bin_dir: impl Into<PathBuf>,
        shape: Option<Shape>,
    ) -> Result<Self> {
        let state_dir = state_dir.into();
        state::private_dir(&state_dir)?;
        for sub in ["run", "logs", "config", "connect", "kafka"] {
            fs::create_dir_all(state_dir.join(sub))
                .map_err(io_err(format!("creating {}", state_dir.display())))?;
        }
        // Absolute: components run in their own directories.
        let state_dir = fs::canonicalize(&state_dir)
            .map_err(io_err(format!("resolving {}", state_dir.display())))?;
        let file = state_dir.join("stack.json");
        let state = if file.exists() {
            let mut state = StackState::load(&file)?;
            // Made before the brokers required a login: SCRAM users can only
            // be made when a node's storage is formatted, so a cluster that
            // was never formatted gets them now; a formatted one cannot start
            // (kafka::start_node says what to do) but can still be stopped
            // and purged.
            if state.kafka.is_none()
                && !state_dir.join("kafka/node-1/data/meta.properties").exists()
            {
                state.kafka = state::KafkaSecrets::generate();
            }
            // Written back: a secret added since it was made is kept from now on.
            state.save(&file)?;
            if let Some(shape) = shape {
                if shape != state.shape {
                    return Err(StackError::BadInput(format!(
                        "the stack in {} has {} broker(s) and {} Connect worker(s); \
                         to change that, `stack down --purge` (this deletes its data) and `up` again",
                        state_dir.display(),
                        state.shape.brokers,
                        state.shape.connect_workers
                    )));
                }
            }
            state
        } else {
            let state = StackState::new(shape.unwrap_or_default(), &state_dir)?;
            state.save(&file)?;
            state
        };
        let stack = Self {
            state_dir,
            repo: repo_root(),
            bin_dir: bin_dir.into(),
            state,
        };
        stack.write_service_configs()?;
        Ok(stack)
    }

    /// A new, empty stack under `state_dir`: whatever an earlier run left
    /// there is stopped and removed first (benchmarks and chaos runs).
    pub fn open_fresh(
        state_dir: impl Into<PathBuf>,
        bin_dir: impl Into<PathBuf>,
        shape: Shape,
    ) -> Result<Self> {
        let (dir, bin_dir) = (state_dir.into(), bin_dir.into());
        if dir.join("stack.json").exists() {
            Self::open(&dir, &bin_dir)?.down(&|_| {})?;
            state::remove_stack_files(&dir)?;
        }
        Self::open_with(dir, bin_dir, Some(shape))
    }

    /// A throw-away stack for tests under `target/test-stacks/NAME-PID`,
    /// with the workspace's binaries. Stacks of dead test runs are cleaned up.
    pub fn for_tests(name: &str) -> Result<Self> {
        Self::for_tests_with(name, Shape::default())
    }

    /// [`Stack::for_tests`] of another shape (three brokers, two workers).
    pub fn for_tests_with(name: &str, shape: Shape) -> Result<Self> {
        let root = repo_root().join("target/test-stacks");
        process::reap_stale_test_stacks(&root);
        let dir = root.join(format!("{name}-{}", std::process::id()));
        let _ = state::remove_stack_files(&dir);
        Self::open_with(dir, default_bin_dir(), Some(shape))
    }

    /// The log of a component's first unit (broker node 1, Connect worker 1).
    pub fn log_file(&self, component: Component) -> PathBuf {
        self.unit_log(&self.units(component)[0])
    }

    pub fn unit_log(&self, unit: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{unit}.log"))
    }

    pub fn writer_config(&self) -> PathBuf {
        self.state_dir.join("config/writer.toml")
    }

    /// Projector settings with the operator role's login, for
    /// `projector dead-letters ...` (see [`Role::Operator`]).
    pub fn operator_config(&self) -> PathBuf {
        self.state_dir.join("config/operator.toml")
    }

    pub fn projector_config(&self) -> PathBuf {
        self.state_dir.join("config/projector.toml")
    }

    /// The inventory service's settings (its database, the order topic).
    pub fn inventory_config(&self) -> PathBuf {
        self.state_dir.join("config/inventory.toml")
    }

    /// The order reactor's settings (`writer react`: the write database, the
    /// reservation topic).
    pub fn reactor_config(&self) -> PathBuf {
        self.state_dir.join("config/reactor.toml")
    }

    pub fn inventory_db(&self) -> DbParams {
        self.db(INVENTORY_DB)
    }

    pub fn write_db(&self) -> DbParams {
        self.db(WRITE_DB)
    }

    pub fn read_db(&self) -> DbParams {
        self.db(READ_DB)
    }

    /// The owner's login to database `dbname` (migrations, the stack's checks).
    pub fn db(&self, dbname: &str) -> DbParams {
        self.login(Role::Owner, dbname)
    }

    /// `role`'s login to database `dbname` of this stack.
    pub fn login(&self, role: Role, dbname: &str) -> DbParams {
        let password = match role {
            Role::Owner => &self.state.app_password,
            Role::Writer => &self.state.writer_password,
            Role::Projector => &self.state.projector_password,
            Role::Reader => &self.state.reader_password,
            Role::Operator => &self.state.operator_password,
            Role::Debezium => &self.state.debezium_password,
            Role::Inventory => &self.state.inventory_password,
        };
        DbParams {
            host: "127.0.0.1".into(),
            port: self.state.postgres_port,
            user: role.user().into(),
            password: password.clone(),
            dbname: dbname.into(),
        }
    }

    /// Every Kafka node's client listener.
    pub fn bootstrap_servers(&self) -> String {
        self.state
            .kafka_nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.broker))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The REST API of a live Connect worker.
    pub fn connect_url(&self) -> String {
        connect::url(self)
    }

    pub fn metrics_url(&self) -> String {
        format!(
            "http://127.0.0.1:{}/metrics",
            self.state.projector_metrics_port
        )
    }

    /// Topics the connector publishes to (`debezium/topics.txt`).
    pub fn topics(&self) -> Result<Vec<String>> {
        read_topics(&self.repo)
    }

    /// Starts every component that is not running, in order, each awaited.
    /// Returns once the relay streams: on its first start the connector
    /// snapshots the outbox table (`snapshot.mode=when_needed`, no offsets
    /// yet) before it attaches to the slot, and a command committed during
    /// that snapshot is read by both, so it would be published twice.
    pub fn up(&self, progress: &dyn Fn(&str)) -> Result<()> {
        for component in Component::ALL {
            self.start(component, progress)?;
            if component == Component::Postgres {
                self.migrate(progress)?;
            }
            if component == Component::Connect {
                self.await_relay_streaming(progress)?;
            }
        }
        Ok(())
    }

    /// Waits (up to 120 s) until Debezium is attached to the replication slot.
    fn await_relay_streaming(&self, progress: &dyn Fn(&str)) -> Result<()> {
        let active =
            |s: Result<Option<postgres::SlotState>>| s.is_ok_and(|s| s.is_some_and(|s| s.active));
        let streaming = || active(postgres::slot(self)) && active(postgres::inventory_slot(self));
        if streaming() {
            return Ok(());
        }
        progress("waiting for the relay to stream (its first start snapshots the outbox table)");
        let deadline = Duration::from_secs(120);
        if wait_until(deadline, Duration::from_millis(200), streaming) {
            return Ok(());
        }
        Err(StackError::NotReady {
            component: Component::Connect,
            seconds: deadline.as_secs(),
            detail: format!(
                "the connectors are not attached to slots outbox_slot and inventory_slot; last log lines:\n{}",
                self.tail_log(Component::Connect, 15)
            ),
        })
    }

    /// Applies both databases' migrations with the services' own binaries
    /// (the same embedded `sql/write` and `sql/read` files compose uses).
    pub fn migrate(&self, progress: &dyn Fn(&str)) -> Result<()> {
        progress("migrating the write database (writer migrate, as the owner role)");
        bins::writer_as_owner(self, &["migrate"])?;
        progress(
            "creating the replication slot before any write (sql/create_slot.sql, as debezium)",
        );
        // As the role that streams from it (REPLICATION is what a slot takes),
        // not the superuser: compose's slot-init does the same.
        let mut psql = postgres::psql_command(&self.login(Role::Debezium, WRITE_DB));
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(self.repo.join("sql/create_slot.sql"));
        bins::run_quiet(&mut psql)?;
        progress("migrating the inventory database (inventory migrate, as the owner role)");
        bins::inventory_as_owner(self, &["migrate"])?;
        progress("creating the inventory's replication slot (sql/create_slot.sql, as debezium)");
        let mut psql = postgres::psql_command(&self.login(Role::Debezium, INVENTORY_DB));
        psql.args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "slot=inventory_slot",
            "-f",
        ])
        .arg(self.repo.join("sql/create_slot.sql"));
        bins::run_quiet(&mut psql)?;
        progress("migrating the read database (projector migrate, as the owner role)");
        self.migrate_read_db(READ_DB)
    }

    /// The projector binary as the owner role, with this stack's settings:
    /// for schema-changing operator commands (`migrate`, `rebuild`).
    pub fn projector_as_owner(&self) -> std::process::Command {
        bins::projector_as_owner(self)
    }

    /// `projector migrate` on read database `dbname`, as the owner role (the
    /// projector's own role may not change the schema).
    pub fn migrate_read_db(&self, dbname: &str) -> Result<()> {
        run_quiet(
            self.projector_as_owner()
                .arg("migrate")
                .env("PROJECTOR__DATABASE__DBNAME", dbname)
                .env("RUST_LOG", "warn"),
        )?;
        Ok(())
    }

    /// Starts one component (the units of it that are not running) and waits
    /// until it is ready.
    pub fn start(&self, component: Component, progress: &dyn Fn(&str)) -> Result<()> {
        let units = self.units(component);
        if units.iter().all(|u| self.unit_pid(u).is_some()) {
            progress(&format!("{component} already running"));
            return self.await_ready(component);
        }
        progress(&format!("starting {component}"));
        match component {
            Component::Postgres => postgres::start(self, progress),
            Component::Broker => kafka::start(self, progress),
            Component::Connect => connect::start(self),
            Component::Inventory | Component::Reactor => saga::start(self, component),
            Component::Projector => projector::start(self),
        }?;
        self.await_ready(component)?;
        progress(&format!("{component} ready"));
        Ok(())
    }

    /// Stops everything: SIGTERM, then SIGKILL after a grace period.
    pub fn down(&self, progress: &dyn Fn(&str)) -> Result<()> {
        for n in 2..=projector::MAX_REPLICA {
            projector::stop_replica(self, n);
        }
        if let Some(pid) = self.unit_pid(connect::WATCHDOG) {
            process::stop(
                pid,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(5),
            );
        }
        for component in Component::ALL.into_iter().rev() {
            if self.pid(component).is_some() {
                progress(&format!("stopping {component}"));
            }
            self.stop(component)?;
        }
        Ok(())
    }

    /// Stops one component cleanly: all its units are signalled at once
    /// (SIGTERM; SIGINT for PostgreSQL, a fast shutdown), SIGKILL after a
    /// grace period. At once, because a Kafka node shutting down alone waits
    /// for a controller quorum that its stopped peers no longer form.
    pub fn stop(&self, component: Component) -> Result<()> {
        let signal = match component {
            Component::Postgres => nix::sys::signal::Signal::SIGINT,
            _ => nix::sys::signal::Signal::SIGTERM,
        };
        let pids: Vec<i32> = self
            .units(component)
            .iter()
            .filter_map(|u| self.unit_pid(u))
            .collect();
        process::stop_all(&pids, signal, Duration::from_secs(20));
        for unit in self.units(component) {
            let _ = fs::remove_file(self.unit_pid_file(&unit));
        }
        Ok(())
    }

    /// The `id` header of every record on the outbox topics, one entry per
    /// record (an event published twice appears twice), as a `read_committed`
    /// consumer sees them.
    pub fn broker_event_ids(&self) -> Result<Vec<String>> {
        self.broker_header_values("id")
    }

    /// Header `name` of every record on the outbox topics.
    pub fn broker_header_values(&self, name: &str) -> Result<Vec<String>> {
        let mut reader = kafka::TopicReader::open(self, &kafka::outbox_topics(self)?)?;
        Ok(reader
            .read_to_end(Duration::from_secs(120))?
            .into_iter()
            .filter_map(|r| r.headers.get(name).cloned())
            .collect())
    }

    /// SIGKILLs every unit of a component (a crash of all of it).
    pub fn kill(&self, component: Component) -> Result<()> {
        let pids: Vec<i32> = self
            .units(component)
            .iter()
            .filter_map(|u| self.unit_pid(u))
            .collect();
        if pids.is_empty() {
            return Err(StackError::NotRunning(component));
        }
        for pid in pids {
            process::kill_group(pid);
        }
        for unit in self.units(component) {
            let _ = fs::remove_file(self.unit_pid_file(&unit));
        }
        Ok(())
    }

    /// The units (processes) a component is made of.
    pub fn units(&self, component: Component) -> Vec<String> {
        match component {
            Component::Broker => kafka::nodes(self).map(kafka::unit).collect(),
            Component::Connect => connect::workers(self).map(connect::unit).collect(),
            other => vec![other.name().to_owned()],
        }
    }

    /// The pid of a running component's first live unit.
    pub fn pid(&self, component: Component) -> Option<i32> {
        self.units(component).iter().find_map(|u| self.unit_pid(u))
    }

    fn await_ready(&self, component: Component) -> Result<()> {
        let deadline = match component {
            Component::Postgres => Duration::from_secs(60),
            Component::Broker => Duration::from_secs(90),
            Component::Connect => Duration::from_secs(180),
            Component::Inventory | Component::Reactor | Component::Projector => {
                Duration::from_secs(60)
            }
        };
        let mut last = String::from("not checked yet");
        let ready = wait_until(deadline, Duration::from_millis(250), || {
            if self.pid(component).is_none() {
                last = "process exited".into();
                return true; // stop waiting; reported below
            }
            match status::readiness(self, component) {
                Ok(_) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        if ready && self.pid(component).is_some() {
            return Ok(());
        }
        Err(StackError::NotReady {
            component,
            seconds: deadline.as_secs(),
            detail: format!("{last}; last log lines:\n{}", self.tail_log(component, 15)),
        })
    }

    /// The last `lines` lines of a component's (first unit's) log.
    pub fn tail_log(&self, component: Component, lines: usize) -> String {
        self.tail_unit_log(&self.units(component)[0], lines)
    }

    pub fn tail_unit_log(&self, unit: &str, lines: usize) -> String {
        let text = fs::read_to_string(self.unit_log(unit)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Spawns `command` as unit `unit`: its own process group, pid file, log.
    pub(crate) fn spawn_unit(&self, unit: &str, command: std::process::Command) -> Result<()> {
        let pid = process::spawn_detached(command, &self.unit_log(unit))?;
        process::write_pid_file(&self.unit_pid_file(unit), pid)
    }

    /// The pid of unit `unit` if its pid file names a live process.
    /// (Checked to be the process that was started: see [`process::read_pid_file`].)
    pub fn unit_pid(&self, unit: &str) -> Option<i32> {
        process::read_pid_file(&self.unit_pid_file(unit))
    }

    pub(crate) fn unit_pid_file(&self, unit: &str) -> PathBuf {
        self.state_dir.join("run").join(format!("{unit}.pid"))
    }

    /// Settings files of the writer and the projector for this stack (the
    /// same schema as the `WRITER__*` / `PROJECTOR__*` variables compose
    /// sets), serialized from [`state::WriterFile`] and [`state::ProjectorFile`].
    fn write_service_configs(&self) -> Result<()> {
        let writer = state::WriterFile {
            database: self.login(Role::Writer, WRITE_DB).into(),
        };
        let projector = state::ProjectorFile {
            metrics_addr: format!("127.0.0.1:{}", self.state.projector_metrics_port),
            database: self.login(Role::Projector, READ_DB).into(),
            kafka: state::KafkaSection {
                bootstrap_servers: self.bootstrap_servers(),
                group_id: "projector".into(),
                topics: kafka::outbox_topics(self)?,
                sasl: state::SaslSection {
                    mechanism: kafka::SASL_MECHANISM,
                    username: state::KafkaUser::Projector.name(),
                    password: self.state.kafka.projector_password.clone(),
                },
            },
        };
        state::write_private(&self.writer_config(), &state::to_toml(&writer)?)?;
        state::write_private(&self.projector_config(), &state::to_toml(&projector)?)?;
        // The same settings with the operator's login, for the dead-letter
        // commands people run (the projector's own password stays its own).
        let operator = state::ProjectorFile {
            database: self.login(Role::Operator, READ_DB).into(),
            ..projector
        };
        state::write_private(&self.operator_config(), &state::to_toml(&operator)?)?;
        // The saga's two consumers: the inventory service in its database,
        // the order reactor in the write database (as the writer's role: it
        // is the order service).
        let consumer = |port: u16, database: DbParams, user: state::KafkaUser, topic: &str| {
            state::ProjectorFile {
                metrics_addr: format!("127.0.0.1:{port}"),
                database: database.into(),
                kafka: state::KafkaSection {
                    bootstrap_servers: self.bootstrap_servers(),
                    group_id: user.name().into(),
                    topics: vec![outbox_events::topic_for(topic)],
                    sasl: state::SaslSection {
                        mechanism: kafka::SASL_MECHANISM,
                        username: user.name(),
                        password: self.state.kafka.password(user).to_owned(),
                    },
                },
            }
        };
        let inventory = consumer(
            self.state.inventory_metrics_port,
            self.login(Role::Inventory, INVENTORY_DB),
            state::KafkaUser::Inventory,
            outbox_events::ORDER_AGGREGATE,
        );
        state::write_private(&self.inventory_config(), &state::to_toml(&inventory)?)?;
        let reactor = consumer(
            self.state.reactor_metrics_port,
            self.login(Role::Writer, WRITE_DB),
            state::KafkaUser::Reactor,
            outbox_events::RESERVATION_AGGREGATE,
        );
        state::write_private(&self.reactor_config(), &state::to_toml(&reactor)?)?;
        self.write_reader_service()
    }

    /// A libpq service file (`PGSERVICEFILE`) naming the read database as
    /// `orders_read` for the reader role, its password in a pgpass file
    /// beside it: people open psql without a password on screen or in `ps`.
    fn write_reader_service(&self) -> Result<()> {
        let read = self.login(Role::Reader, READ_DB);
        let passfile = self.state_dir.join("pgpass");
        // pgpass fields escape `:` and `\`.
        let escape = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        state::write_private(
            &passfile,
            &format!(
                "{}:{}:{}:{}:{}\n",
                read.host,
                read.port,
                read.dbname,
                read.user,
                escape(&read.password)
            ),
        )?;
        state::write_private(
            &self.pg_service_file(),
            &format!(
                "[{READ_DB}]\nhost={}\nport={}\ndbname={}\nuser={}\npassfile={}\n",
                read.host,
                read.port,
                read.dbname,
                read.user,
                passfile.display()
            ),
        )
    }

    /// The libpq service file with the `orders_read` service (reader role).
    pub fn pg_service_file(&self) -> PathBuf {
        self.state_dir.join("pg_service.conf")
    }

    /// Runs the writer binary against this stack; returns its stdout.
    pub fn writer(&self, args: &[&str]) -> Result<String> {
        bins::writer(self, args)
    }

    /// Runs SQL in `dbname` with psql as the owner role; returns unaligned output.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String> {
        postgres::psql(&self.db(dbname), sql, &["-tA", "-F", "|"])
    }

    /// Runs SQL as the superuser over the unix socket (tests: create databases).
    pub fn admin_sql(&self, dbname: &str, sql: &str) -> Result<String> {
        postgres::admin_sql(self, dbname, sql)
    }

    /// Creates `topic` with `partitions` unless it exists (tests' own topics).
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        kafka::create_topic(self, topic, partitions, &[]).map(|_| ())
    }
}

/// Topics listed in `debezium/topics.txt` (one per line, `#` comments).
pub fn read_topics(repo: &Path) -> Result<Vec<String>> {
    Ok(read_topic_specs(repo)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// Topics of `debezium/topics.txt` with their configs (`retention.ms=-1`, ...).
pub fn read_topic_specs(repo: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let text = fs::read_to_string(repo.join("debezium/topics.txt"))
        .map_err(io_err("reading debezium/topics.txt"))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?.to_owned();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect())
}

pub fn reap_test_stacks() {
    process::reap_stale_test_stacks(&repo_root().join("target/test-stacks"));
}

/// The repository root (this crate lives in `stack/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `target/debug` (or the profile the current binary was built with).
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

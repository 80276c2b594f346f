//! The local stack without Docker, as a library the tests use and a thin CLI
//! (`stack`) for people.
//!
//! It runs the same parts as `docker-compose.yml`, from the same files: the
//! SQL in `sql/`, the connector in `debezium/outbox-connector.json`, the topic
//! list in `debezium/topics.txt`, and the writer/projector settings schema.
//!
//! # Layout
//! - [`Stack`]: one stack under one state directory (`.stack/` for people, a
//!   fresh directory per test run). Its [`StackState`] (ports, generated
//!   passwords) is chosen on first use and kept in `stack.json`, so ports never
//!   collide with services already on the machine.
//! - [`Component`]: PostgreSQL, the broker (Tansu, SQLite storage), Kafka
//!   Connect with Debezium, the projector. Each runs as its own process group
//!   with a pid file and a log file, so it can be killed (SIGKILL) and started
//!   again alone; `start` waits for readiness with a deadline, never a fixed sleep.
//! - [`tools`]: where the installed tools live (`dev/install` puts them in a cache).
//! - [`status`]: per-component liveness and health (slot lag, connector and
//!   task state, projector lag, latency, dead letters, parked events).
//! - [`demo`]: the scripted scenario of `./dev/demo`.
//! - [`bench`]: `stack bench`, the figures of docs/benchmarks.md.
//! - [`reconcile`]: `stack reconcile`, the write side against the read side.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod oracle;
pub mod postgres;
pub(crate) mod process;
pub mod reconcile;
pub mod status;
pub mod tools;

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use process::wait_until;

/// Errors of the stack. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{what}: {source}")]
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
    Projector,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Postgres,
        Component::Broker,
        Component::Connect,
        Component::Projector,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Postgres => "postgres",
            Component::Broker => "broker",
            Component::Connect => "connect",
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

/// The database roles (sql/bootstrap.sql): one per job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Writer,
    Projector,
    Reader,
    Debezium,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Writer,
        Role::Projector,
        Role::Reader,
        Role::Debezium,
    ];

    pub fn user(self) -> &'static str {
        match self {
            Role::Owner => OWNER_USER,
            Role::Writer => "orders_writer",
            Role::Projector => "orders_projector",
            Role::Reader => "orders_reader",
            Role::Debezium => "debezium",
        }
    }
}

/// Ports and secrets of one stack, chosen once and kept in `stack.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackState {
    pub postgres_port: u16,
    pub broker_port: u16,
    pub connect_port: u16,
    pub projector_metrics_port: u16,
    /// Password of the owner role (migrations; the stack's own checks).
    pub app_password: String,
    pub debezium_password: String,
    #[serde(default = "random_secret")]
    pub writer_password: String,
    #[serde(default = "random_secret")]
    pub projector_password: String,
    #[serde(default = "random_secret")]
    pub reader_password: String,
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
    /// A libpq connection string (for tokio-postgres or psql).
    pub fn conn_string(&self) -> String {
        format!(
            "host={} port={} user={} password={} dbname={}",
            self.host, self.port, self.user, self.password, self.dbname
        )
    }
}

/// Name of the connector in `debezium/outbox-connector.json`.
pub const CONNECTOR_NAME: &str = "outbox-connector";
pub const WRITE_DB: &str = "orders_write";
pub const READ_DB: &str = "orders_read";
/// The connector task watchdog's unit name (pid and log file).
const WATCHDOG: &str = "connect-watchdog";
/// Highest projector replica number `down` stops (replicas are numbered from 2).
pub const MAX_PROJECTOR_REPLICA: u32 = 4;
/// Owns both databases and runs the migrations (sql/bootstrap.sql has every role).
pub const OWNER_USER: &str = "orders_owner";

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
    /// Opens (or creates) the stack under `state_dir`.
    pub fn open(state_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Result<Self> {
        let state_dir = state_dir.into();
        for sub in ["run", "logs", "config", "connect"] {
            fs::create_dir_all(state_dir.join(sub))
                .map_err(io_err(format!("creating {}", state_dir.display())))?;
        }
        // Absolute: components run in their own directories (Connect's offset
        // file under a relative --state-dir was never written, so every Connect
        // restart found no offsets; the chaos suite showed it).
        let state_dir = fs::canonicalize(&state_dir)
            .map_err(io_err(format!("resolving {}", state_dir.display())))?;
        let file = state_dir.join("stack.json");
        let state = if file.exists() {
            let text = fs::read_to_string(&file).map_err(io_err("reading stack.json"))?;
            serde_json::from_str(&text).map_err(|e| StackError::BadState {
                path: file.display().to_string(),
                detail: e.to_string(),
            })?
        } else {
            let state = StackState {
                postgres_port: free_port()?,
                broker_port: free_port()?,
                connect_port: free_port()?,
                projector_metrics_port: free_port()?,
                app_password: random_secret(),
                debezium_password: random_secret(),
                writer_password: random_secret(),
                projector_password: random_secret(),
                reader_password: random_secret(),
            };
            let text = serde_json::to_string_pretty(&state).unwrap_or_default();
            fs::write(&file, text).map_err(io_err("writing stack.json"))?;
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
    pub fn open_fresh(state_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Result<Self> {
        let (dir, bin_dir) = (state_dir.into(), bin_dir.into());
        if dir.join("stack.json").exists() {
            Self::open(&dir, &bin_dir)?.down(&|_| {})?;
            fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
        }
        Self::open(dir, bin_dir)
    }

    /// A throw-away stack for tests under `target/test-stacks/NAME-PID`,
    /// with the workspace's binaries. Stacks of dead test runs are cleaned up.
    pub fn for_tests(name: &str) -> Result<Self> {
        let root = repo_root().join("target/test-stacks");
        process::reap_stale_test_stacks(&root);
        let dir = root.join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        Self::open(dir, default_bin_dir())
    }

    pub fn log_file(&self, component: Component) -> PathBuf {
        self.state_dir.join("logs").join(format!("{component}.log"))
    }

    pub fn writer_config(&self) -> PathBuf {
        self.state_dir.join("config/writer.toml")
    }

    pub fn projector_config(&self) -> PathBuf {
        self.state_dir.join("config/projector.toml")
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
            Role::Debezium => &self.state.debezium_password,
        };
        DbParams {
            host: "127.0.0.1".into(),
            port: self.state.postgres_port,
            user: role.user().into(),
            password: password.clone(),
            dbname: dbname.into(),
        }
    }

    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.state.broker_port)
    }

    pub fn connect_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.state.connect_port)
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
    pub fn up(&self, progress: &dyn Fn(&str)) -> Result<()> {
        for component in Component::ALL {
            self.start(component, progress)?;
            if component == Component::Postgres {
                self.migrate(progress)?;
            }
        }
        Ok(())
    }

    /// Applies both databases' migrations with the services' own binaries
    /// (the same embedded `sql/write` and `sql/read` files compose uses).
    pub fn migrate(&self, progress: &dyn Fn(&str)) -> Result<()> {
        progress("migrating the write database (writer migrate, as the owner role)");
        let owner = self.db(WRITE_DB);
        let binary = self.bin_dir.join("writer");
        run_quiet(
            std::process::Command::new(&binary)
                .arg("--config")
                .arg(self.writer_config())
                .arg("migrate")
                .env("WRITER__DATABASE__USER", &owner.user)
                .env("WRITER__DATABASE__PASSWORD", &owner.password),
        )?;
        progress("creating the replication slot before any write (sql/create_slot.sql)");
        postgres::admin_sql_file(self, WRITE_DB, &self.repo.join("sql/create_slot.sql"))?;
        progress("migrating the read database (projector migrate, as the owner role)");
        self.migrate_read_db(READ_DB)
    }

    /// The projector binary as the owner role, with this stack's settings:
    /// for schema-changing operator commands (`migrate`, `rebuild`).
    pub fn projector_as_owner(&self) -> std::process::Command {
        let owner = self.db(READ_DB);
        let mut command = std::process::Command::new(self.bin_dir.join("projector"));
        command
            .arg("--config")
            .arg(self.projector_config())
            .env("PROJECTOR__DATABASE__USER", &owner.user)
            .env("PROJECTOR__DATABASE__PASSWORD", &owner.password);
        command
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

    /// Starts one component (if not running) and waits until it is ready.
    pub fn start(&self, component: Component, progress: &dyn Fn(&str)) -> Result<()> {
        if self.pid(component).is_some() {
            progress(&format!("{component} already running"));
            return self.await_ready(component);
        }
        progress(&format!("starting {component}"));
        match component {
            Component::Postgres => postgres::start(self, progress),
            Component::Broker => self.start_broker(progress),
            Component::Connect => self.start_connect(),
            Component::Projector => self.start_projector(),
        }?;
        self.await_ready(component)?;
        progress(&format!("{component} ready"));
        Ok(())
    }

    /// Stops everything: SIGTERM, then SIGKILL after a grace period.
    pub fn down(&self, progress: &dyn Fn(&str)) -> Result<()> {
        for n in 2..=MAX_PROJECTOR_REPLICA {
            self.stop_projector_replica(n);
        }
        if let Some(pid) = self.unit_pid(WATCHDOG) {
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

    /// Stops one component cleanly (SIGTERM, SIGKILL after a grace period).
    pub fn stop(&self, component: Component) -> Result<()> {
        if let Some(pid) = self.pid(component) {
            // Postgres: SIGINT is a fast shutdown (SIGTERM would wait for clients).
            let signal = match component {
                Component::Postgres => nix::sys::signal::Signal::SIGINT,
                _ => nix::sys::signal::Signal::SIGTERM,
            };
            process::stop(pid, signal, Duration::from_secs(20));
        }
        let _ = fs::remove_file(self.pid_file(component));
        Ok(())
    }

    /// Records on the outbox topics, counted in the broker's own storage
    /// (Tansu's SQLite file): what the relay has published so far.
    pub fn broker_records(&self) -> Result<u64> {
        let db = self.state_dir.join("broker/tansu.db");
        let out = run_quiet(
            std::process::Command::new("sqlite3")
                .args(["-cmd", ".timeout 10000"])
                .arg(&db)
                .arg(
                    "SELECT count(*) FROM record r JOIN topition p ON r.topition = p.id \
                     JOIN topic t ON p.topic = t.id WHERE t.name LIKE 'outbox.event.%'",
                ),
        )?;
        out.trim().parse().map_err(|e| StackError::Command {
            command: "sqlite3 count of broker records".into(),
            detail: format!("unexpected output {out:?}: {e}"),
        })
    }

    /// The `id` header of every record on the outbox topics, one entry per
    /// record (an event published twice appears twice), from the broker's storage.
    pub fn broker_event_ids(&self) -> Result<Vec<String>> {
        self.broker_header_values("id")
    }

    /// Header `name` of every record on the outbox topics, from the broker's storage.
    pub fn broker_header_values(&self, name: &str) -> Result<Vec<String>> {
        let db = self.state_dir.join("broker/tansu.db");
        let out = run_quiet(
            std::process::Command::new("sqlite3")
                .args(["-cmd", ".timeout 10000"])
                .arg(&db)
                .arg(format!(
                    "SELECT CAST(h.v AS TEXT) FROM header h JOIN topition p ON h.topition = p.id \
                     JOIN topic t ON p.topic = t.id \
                     WHERE t.name LIKE 'outbox.event.%' AND CAST(h.k AS TEXT) = '{}'",
                    name.replace('\'', "''")
                )),
        )?;
        Ok(out.lines().map(str::to_owned).collect())
    }

    /// SIGKILLs one component (and its process group): a crash, for reliability tests.
    pub fn kill(&self, component: Component) -> Result<()> {
        let pid = self
            .pid(component)
            .ok_or(StackError::NotRunning(component))?;
        process::kill_group(pid);
        let _ = fs::remove_file(self.pid_file(component));
        Ok(())
    }

    /// The pid of a running component, if its pid file names a live process.
    pub fn pid(&self, component: Component) -> Option<i32> {
        self.unit_pid(component.name())
    }

    fn pid_file(&self, component: Component) -> PathBuf {
        self.unit_pid_file(component.name())
    }

    fn await_ready(&self, component: Component) -> Result<()> {
        let deadline = match component {
            Component::Postgres => Duration::from_secs(60),
            Component::Broker => Duration::from_secs(60),
            Component::Connect => Duration::from_secs(180),
            Component::Projector => Duration::from_secs(60),
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

    /// The last `lines` lines of a component's log.
    pub fn tail_log(&self, component: Component, lines: usize) -> String {
        let text = fs::read_to_string(self.log_file(component)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&self, component: Component, command: std::process::Command) -> Result<()> {
        let pid = process::spawn_detached(command, &self.log_file(component))?;
        fs::write(self.pid_file(component), pid.to_string()).map_err(io_err("writing pid file"))?;
        Ok(())
    }

    /// Settings files of the writer and the projector for this stack. Same
    /// schema as the `WRITER__*` / `PROJECTOR__*` variables compose sets.
    fn write_service_configs(&self) -> Result<()> {
        let db_section = |db: &DbParams| {
            format!(
                "[database]\nhost = \"{}\"\nport = {}\nuser = \"{}\"\npassword = \"{}\"\ndbname = \"{}\"\n",
                db.host, db.port, db.user, db.password, db.dbname
            )
        };
        let writer = db_section(&self.login(Role::Writer, WRITE_DB));
        let topics: Vec<String> = read_topics(&self.repo)?
            .into_iter()
            .filter(|t| !t.starts_with("__"))
            .map(|t| format!("\"{t}\""))
            .collect();
        let projector = format!(
            "metrics_addr = \"127.0.0.1:{}\"\n\n{}\n[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"projector\"\ntopics = [{}]\n",
            self.state.projector_metrics_port,
            db_section(&self.login(Role::Projector, READ_DB)),
            self.bootstrap_servers(),
            topics.join(", ")
        );
        write_private(&self.writer_config(), &writer)?;
        write_private(&self.projector_config(), &projector)
    }

    fn start_broker(&self, progress: &dyn Fn(&str)) -> Result<()> {
        let tansu = tools::broker_binary()?;
        let dir = self.state_dir.join("broker");
        fs::create_dir_all(&dir).map_err(io_err("creating broker dir"))?;
        let url = format!("tcp://127.0.0.1:{}", self.state.broker_port);
        let mut command = std::process::Command::new(&tansu);
        command
            .current_dir(&dir)
            .arg("broker")
            .args(["--storage-engine", "sqlite:///tansu.db"])
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .env(
                "RUST_LOG",
                std::env::var("OUTBOX_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
            );
        self.spawn(Component::Broker, command)?;
        self.await_ready(Component::Broker)?;
        ensure_header_index(&dir.join("tansu.db"))?;
        for (topic, configs) in read_topic_specs(&self.repo)? {
            progress(&format!(
                "topic {topic} (3 partitions {})",
                configs.join(" ")
            ));
            self.create_topic_with(&topic, 3, &configs)?;
        }
        Ok(())
    }

    /// Creates a topic on the broker unless it exists (Tansu refuses to
    /// create an existing topic, silently, so we ask first).
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        self.create_topic_with(topic, partitions, &[])
    }

    /// [`Stack::create_topic`] with topic configs (`retention.ms=-1`, ...).
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: u32,
        configs: &[String],
    ) -> Result<()> {
        if self.existing_topics()?.iter().any(|t| t == topic) {
            return Ok(());
        }
        let url = format!("tcp://127.0.0.1:{}", self.state.broker_port);
        let mut command = std::process::Command::new(tools::broker_binary()?);
        command
            .args([
                "topic",
                "create",
                topic,
                "--partitions",
                &partitions.to_string(),
                "--broker",
                &url,
            ])
            .env("RUST_LOG", "warn");
        for config in configs {
            command.args(["--config", config]);
        }
        run_quiet(&mut command)?;
        Ok(())
    }

    /// Names of the topics the broker has.
    pub fn existing_topics(&self) -> Result<Vec<String>> {
        let url = format!("tcp://127.0.0.1:{}", self.state.broker_port);
        let out = run_quiet(
            std::process::Command::new(tools::broker_binary()?)
                .args(["topic", "list", "--broker", &url])
                .env("RUST_LOG", "warn"),
        )?;
        let topics: Vec<serde_json::Value> =
            serde_json::from_str(out.trim()).map_err(|e| StackError::Command {
                command: "tansu topic list".into(),
                detail: format!("unexpected output ({e}): {out}"),
            })?;
        Ok(topics
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect())
    }

    fn start_connect(&self) -> Result<()> {
        let dir = self.state_dir.join("connect");
        let worker = format!(
            "{}\nbootstrap.servers={}\nlisteners=http://127.0.0.1:{}\noffset.storage.file.filename={}\n",
            fs::read_to_string(self.repo.join("debezium/connect-standalone.properties"))
                .map_err(io_err("reading debezium/connect-standalone.properties"))?,
            self.bootstrap_servers(),
            self.state.connect_port,
            dir.join("offsets.dat").display(),
        );
        write_private(&dir.join("worker.properties"), &worker)?;
        let mut command = std::process::Command::new("java");
        command
            .current_dir(&dir)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.repo.join("debezium/log4j2.properties").display()
            ))
            .arg("-Xmx512m")
            .arg("-cp")
            .arg(tools::connect_classpath()?)
            .arg("org.apache.kafka.connect.cli.ConnectStandalone")
            .arg("worker.properties")
            .arg(self.repo.join("debezium/outbox-connector.json"))
            // Coordinates the connector JSON reads through ${env:...}.
            .env("OUTBOX_PG_HOST", "127.0.0.1")
            .env("OUTBOX_PG_PORT", self.state.postgres_port.to_string())
            .env("OUTBOX_PG_DBNAME", WRITE_DB)
            .env("OUTBOX_PG_PASSWORD", &self.state.debezium_password);
        self.spawn(Component::Connect, command)?;
        self.start_task_watchdog()
    }

    /// `debezium/task-watchdog.sh` beside Connect (if not running yet): it
    /// restarts failed connector tasks, which Kafka Connect never does.
    fn start_task_watchdog(&self) -> Result<()> {
        if self.unit_pid(WATCHDOG).is_some() {
            return Ok(());
        }
        let mut command = std::process::Command::new("sh");
        command
            .arg(self.repo.join("debezium/task-watchdog.sh"))
            .env("CONNECT_URL", self.connect_url())
            .env("CONNECTOR", CONNECTOR_NAME);
        let log = self.state_dir.join("logs").join(format!("{WATCHDOG}.log"));
        let pid = process::spawn_detached(command, &log)?;
        fs::write(self.unit_pid_file(WATCHDOG), pid.to_string()).map_err(io_err("writing pid file"))
    }

    fn unit_pid(&self, unit: &str) -> Option<i32> {
        let text = fs::read_to_string(self.unit_pid_file(unit)).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        process::is_alive(pid).then_some(pid)
    }

    fn start_projector(&self) -> Result<()> {
        let binary = self.bin_dir.join("projector");
        if !binary.exists() {
            return Err(StackError::NotInstalled(format!(
                "{} (build it: cargo build --workspace)",
                binary.display()
            )));
        }
        let mut command = std::process::Command::new(binary);
        command
            .arg("--config")
            .arg(self.projector_config())
            .env("RUST_LOG", "info,rdkafka=warn");
        self.spawn(Component::Projector, command)
    }

    /// Starts projector replica `n` (2, 3, …): another instance in the same
    /// consumer group, with its own pid file, log and metrics port. Waits
    /// until its metrics endpoint answers; returns that endpoint's URL.
    pub fn start_projector_replica(&self, n: u32) -> Result<String> {
        let name = format!("projector-{n}");
        let port = free_port()?;
        let binary = self.bin_dir.join("projector");
        let mut command = std::process::Command::new(binary);
        command
            .arg("--config")
            .arg(self.projector_config())
            .env("PROJECTOR__METRICS_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info,rdkafka=warn");
        let log = self.state_dir.join("logs").join(format!("{name}.log"));
        let pid = process::spawn_detached(command, &log)?;
        fs::write(self.unit_pid_file(&name), pid.to_string())
            .map_err(io_err("writing pid file"))?;
        fs::write(
            self.unit_pid_file(&name).with_extension("port"),
            port.to_string(),
        )
        .map_err(io_err("writing port file"))?;
        let url = format!("http://127.0.0.1:{port}/metrics");
        let ready = wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            ureq::get(&url).call().is_ok() || !process::is_alive(pid)
        });
        if !ready || !process::is_alive(pid) {
            return Err(StackError::NotReady {
                component: Component::Projector,
                seconds: 60,
                detail: format!("replica {n} did not serve {url}; see {}", log.display()),
            });
        }
        Ok(url)
    }

    /// The pid of projector replica `n`, if it runs.
    pub fn projector_replica_pid(&self, n: u32) -> Option<i32> {
        self.unit_pid(&format!("projector-{n}"))
    }

    /// SIGKILLs projector replica `n` (if it runs).
    pub fn kill_projector_replica(&self, n: u32) {
        if let Some(pid) = self.projector_replica_pid(n) {
            process::kill_group(pid);
        }
    }

    /// Stops projector replica `n` cleanly (if it runs).
    pub fn stop_projector_replica(&self, n: u32) {
        if let Some(pid) = self.projector_replica_pid(n) {
            process::stop(
                pid,
                nix::sys::signal::Signal::SIGTERM,
                Duration::from_secs(20),
            );
        }
    }

    fn unit_pid_file(&self, unit: &str) -> PathBuf {
        self.state_dir.join("run").join(format!("{unit}.pid"))
    }

    /// Runs the writer binary against this stack; returns its stdout.
    pub fn writer(&self, args: &[&str]) -> Result<String> {
        let binary = self.bin_dir.join("writer");
        let out = std::process::Command::new(&binary)
            .arg("--config")
            .arg(self.writer_config())
            .args(args)
            .output()
            .map_err(io_err(format!("running {}", binary.display())))?;
        if !out.status.success() {
            return Err(StackError::Command {
                command: format!("writer {}", args.join(" ")),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs SQL in `dbname` with psql as the services' role; returns unaligned output.
    pub fn psql(&self, dbname: &str, sql: &str) -> Result<String> {
        postgres::psql(&self.db(dbname), sql, &["-tA", "-F", "|"])
    }

    /// Runs SQL as the superuser over the unix socket (tests: create databases).
    pub fn admin_sql(&self, dbname: &str, sql: &str) -> Result<String> {
        postgres::admin_sql(self, dbname, sql)
    }
}

/// Tansu's SQLite schema has no index on `header (topition, offset_id)`; without
/// it every fetch scans all record headers (the Event Router adds several per
/// record) and the broker stalls under a backlog. The broker creates its schema
/// on start, so this runs once it answers, before any load; with a busy
/// timeout, and only when the index is missing, so it never races the broker's
/// own start-up writes.
fn ensure_header_index(db: &Path) -> Result<()> {
    const INDEX: &str = "header_topition_offset";
    let sqlite = |sql: &str| {
        run_quiet(
            std::process::Command::new("sqlite3")
                .args(["-cmd", ".timeout 10000"])
                .arg(db)
                .arg(sql),
        )
    };
    let present = sqlite(&format!(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = '{INDEX}'"
    ))?;
    if present.trim() != "1" {
        sqlite(&format!(
            "CREATE INDEX IF NOT EXISTS {INDEX} ON header (topition, offset_id)"
        ))?;
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err("chmod"))
}

pub(crate) fn run_quiet(command: &mut std::process::Command) -> Result<String> {
    let out = command
        .output()
        .map_err(io_err(format!("running {:?}", command.get_program())))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(StackError::Command {
            command: format!("{command:?}"),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
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

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io_err("finding a free port"))
}

fn random_secret() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), 24)
}

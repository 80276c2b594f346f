//! The stack's private PostgreSQL cluster: initdb once, start, bootstrap.
//!
//! Superuser access is only over the cluster's unix socket (trust); TCP
//! logins need a password (scram-sha-256), as the services use in production.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{io_err, run_quiet, Component, DbParams, Result, Stack, StackError};

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The cluster's data directory (also its unix socket's): `postgres/` in the
/// state directory, or, as root, under the `postgres` user's home (see
/// [`crate::state::StackState::postgres_data`]).
pub fn data_dir(stack: &Stack) -> PathBuf {
    stack
        .state
        .postgres_data
        .clone()
        .unwrap_or_else(|| stack.state_dir.join("postgres"))
}

/// The OS user PostgreSQL runs as when we are root (it refuses to run as
/// root); `None` when we are not root (it runs as us).
pub(crate) fn os_user() -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .map(Some)
        .ok_or_else(|| {
            StackError::NotInstalled("the `postgres` OS user (Debian package postgresql-15)".into())
        })
}

/// As root, runs `command` as the `postgres` user.
fn as_postgres_user(command: &mut Command) -> Result<()> {
    if let Some(user) = os_user()? {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    Ok(())
}

pub fn start(stack: &Stack, progress: &dyn Fn(&str)) -> Result<()> {
    let data = data_dir(stack);
    if !data.join("PG_VERSION").exists() {
        progress("initialising the PostgreSQL cluster");
        init(stack, &data)?;
    }
    let mut command = Command::new(format!("{PG_BIN}/postgres"));
    command.arg("-D").arg(&data).current_dir(&data);
    as_postgres_user(&mut command)?;
    stack.spawn_unit(Component::Postgres.name(), command)?;
    stack.await_ready(Component::Postgres)?;
    progress("bootstrapping roles and databases (sql/bootstrap.sql)");
    let mut psql = admin_psql(stack, "postgres");
    let state = &stack.state;
    // Through the environment (bootstrap.sql reads them with \getenv): a
    // process's arguments are visible to every local user, its environment is not.
    for (name, value) in [
        ("OUTBOX_OWNER_PASSWORD", &state.app_password),
        ("OUTBOX_WRITER_PASSWORD", &state.writer_password),
        ("OUTBOX_PROJECTOR_PASSWORD", &state.projector_password),
        ("OUTBOX_READER_PASSWORD", &state.reader_password),
        ("OUTBOX_OPERATOR_PASSWORD", &state.operator_password),
        ("OUTBOX_DEBEZIUM_PASSWORD", &state.debezium_password),
        ("OUTBOX_INVENTORY_PASSWORD", &state.inventory_password),
    ] {
        psql.env(name, value);
    }
    psql.arg("-f").arg(stack.repo.join("sql/bootstrap.sql"));
    run_quiet(&mut psql)?;
    Ok(())
}

/// Who may connect how. initdb's file also allows *physical* replication
/// (`host replication all`) to every role with REPLICATION: with it, a stolen
/// Debezium password could take a base backup of the whole cluster. Here no
/// line names `replication`, so physical replication is refused to everyone;
/// a logical replication connection names its database and matches that
/// database's line, so Debezium streams from `orders_write` and nothing more.
const HBA: &str = "\
# local stack (stack/src/postgres.rs): the superuser over the unix socket only,
# every other role over TCP with a password; no physical replication at all.
local   all   postgres                 trust
host    all   postgres   127.0.0.1/32  reject
host    all   all        127.0.0.1/32  scram-sha-256
";

fn init(stack: &Stack, data: &Path) -> Result<()> {
    // As root the directory is the postgres user's (under its home, so no
    // folder of ours is opened to it), and so is the one that holds it.
    let owner = os_user()?;
    let dirs: &[&Path] = match (&owner, data.parent()) {
        (Some(_), Some(parent)) => &[parent, data],
        _ => &[data],
    };
    for dir in dirs {
        fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("restricting {}", dir.display())))?;
        if let Some(user) = &owner {
            std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(io_err(format!("handing {} to postgres", dir.display())))?;
        }
    }
    let mut initdb = Command::new(format!("{PG_BIN}/initdb"));
    initdb.arg("-D").arg(data).current_dir(data).args([
        "-U",
        "postgres",
        "-E",
        "UTF8",
        "--locale=C",
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
    ]);
    as_postgres_user(&mut initdb)?;
    run_quiet(&mut initdb)?;
    let conf = format!(
        "\n# local stack\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
         wal_level = logical\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
         max_slot_wal_keep_size = {keep}\n\
         shared_buffers = 128MB\nmax_connections = 200\n",
        port = stack.state.postgres_port,
        keep = MAX_SLOT_WAL_KEEP_SIZE,
        dir = data.display()
    );
    let path = data.join("postgresql.conf");
    let mut text = fs::read_to_string(&path).map_err(io_err("reading postgresql.conf"))?;
    text.push_str(&conf);
    fs::write(&path, text).map_err(io_err("writing postgresql.conf"))?;
    fs::write(data.join("pg_hba.conf"), HBA).map_err(io_err("writing pg_hba.conf"))?;
    Ok(())
}

fn admin_psql(stack: &Stack, dbname: &str) -> Command {
    let socket_dir = data_dir(stack);
    let mut psql = Command::new("psql");
    psql.arg("-X")
        // Verbose errors carry the SQLSTATE, detail and hint, not only the message.
        .args(["-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-q"])
        .arg("-h")
        .arg(socket_dir)
        .arg("-p")
        .arg(stack.state.postgres_port.to_string())
        .args(["-U", "postgres", "-d", dbname]);
    psql
}

/// SQL as the superuser over the unix socket; unaligned, tuples only.
pub fn admin_sql(stack: &Stack, dbname: &str, sql: &str) -> Result<String> {
    let mut psql = admin_psql(stack, dbname);
    psql.args(["-tA", "-c", sql]);
    run_quiet(&mut psql)
}

/// A psql command logged in to `db` over TCP (the password through the environment).
pub fn psql_command(db: &DbParams) -> Command {
    let mut psql = Command::new("psql");
    psql.args([
        "-h",
        &db.host,
        "-p",
        &db.port.to_string(),
        "-U",
        &db.user,
        "-d",
        &db.dbname,
    ])
    .env("PGPASSWORD", &db.password);
    psql
}

/// SQL over TCP with the given login.
pub fn psql(db: &DbParams, sql: &str, format_args: &[&str]) -> Result<String> {
    let mut psql = psql_command(db);
    psql.arg("-X")
        .args(["-v", "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose"])
        .args(format_args)
        .args(["-c", sql]);
    run_quiet(&mut psql)
}

/// Ready when the server accepts connections on its TCP port.
pub fn health(stack: &Stack) -> std::result::Result<String, String> {
    let out = Command::new(format!("{PG_BIN}/pg_isready"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &stack.state.postgres_port.to_string(),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() {
        return Err(text);
    }
    let ready = format!(
        "accepting connections on 127.0.0.1:{}",
        stack.state.postgres_port
    );
    // Both relays' slots: the order service's and the inventory's.
    let mut lines = Vec::new();
    let mut healthy = true;
    for (name, state) in [
        ("outbox_slot", slot(stack)),
        ("inventory_slot", inventory_slot(stack)),
    ] {
        match slot_health(name, state) {
            Ok(line) => lines.push(line),
            Err(line) => {
                healthy = false;
                lines.push(line);
            }
        }
    }
    let text = format!("{ready}; {}", lines.join("; "));
    if healthy {
        Ok(text)
    } else {
        Err(text)
    }
}

/// One slot's line of [`health`]; `Err` when it needs a person.
fn slot_health(
    name: &str,
    state: Result<Option<SlotState>>,
) -> std::result::Result<String, String> {
    match state {
        Ok(Some(slot)) if slot.lost() => Err(format!(
            "slot {name} LOST: PostgreSQL removed WAL the relay had not confirmed \
             (max_slot_wal_keep_size); the relay cannot resume from it: runbook \"A lost slot\" in docs/operations.md"
        )),
        // Alert thresholds (docs/operations.md): inactive for minutes, or > 1 GB behind.
        Ok(Some(slot)) if slot.active || slot.lag_bytes < SLOT_LAG_ALERT_BYTES => Ok(format!(
            "slot {name} {}, {} bytes behind{}",
            if slot.active { "active" } else { "inactive" },
            slot.lag_bytes,
            slot.headroom()
        )),
        Ok(Some(slot)) => Err(format!(
            "slot {name} inactive and {} bytes behind{}: WAL is piling up (is Connect running?)",
            slot.lag_bytes,
            slot.headroom()
        )),
        Ok(None) => Ok(format!("no slot {name} yet (created by `stack up`)")),
        Err(e) => Ok(format!("slot {name} unknown ({e})")),
    }
}

/// The most WAL the connector's slot may hold back (`max_slot_wal_keep_size`,
/// as compose sets it too): past it PostgreSQL invalidates the slot rather
/// than fill the disk and stop the writer. With Connect down, the write side
/// keeps working until then (see the runbook "A lost slot").
pub const MAX_SLOT_WAL_KEEP_SIZE: &str = "4GB";

/// Slot lag past which an inactive slot is reported unhealthy.
const SLOT_LAG_ALERT_BYTES: i64 = 1 << 30;

/// The connector's slot as PostgreSQL reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotState {
    /// Debezium is attached.
    pub active: bool,
    /// WAL it retains: `pg_current_wal_lsn()` minus its confirmed flush position.
    pub lag_bytes: i64,
    /// `reserved`, `extended`, `unreserved` (about to be invalidated) or
    /// `lost` (invalidated: WAL it needs was removed).
    pub wal_status: String,
    /// WAL that may still be written before the slot is invalidated
    /// (`max_slot_wal_keep_size` minus what it holds); none without a limit.
    pub safe_wal_bytes: Option<i64>,
}

impl SlotState {
    pub fn lost(&self) -> bool {
        self.wal_status == "lost"
    }

    fn headroom(&self) -> String {
        match self.safe_wal_bytes {
            Some(bytes) => format!(
                ", {} MB of WAL before max_slot_wal_keep_size invalidates it ({})",
                bytes / (1 << 20),
                self.wal_status
            ),
            None => String::new(),
        }
    }
}

/// The connector's slot (`outbox_slot`), if it exists.
pub fn slot(stack: &Stack) -> Result<Option<SlotState>> {
    slot_named(stack, "outbox_slot")
}

/// The inventory relay's slot (`inventory_slot`), as [`slot`].
pub fn inventory_slot(stack: &Stack) -> Result<Option<SlotState>> {
    slot_named(stack, "inventory_slot")
}

fn slot_named(stack: &Stack, name: &str) -> Result<Option<SlotState>> {
    // Slots are the cluster's: any database sees them all.
    let out = admin_sql(
        stack,
        crate::WRITE_DB,
        &format!(
            "SELECT active, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), 0)::bigint, \
                    coalesce(wal_status, ''), coalesce(safe_wal_size::text, '') \
             FROM pg_replication_slots WHERE slot_name = '{name}'"
        ),
    )?;
    let line = out.trim();
    if line.is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split('|').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or("").trim();
    Ok(Some(SlotState {
        active: field(0) == "t",
        lag_bytes: field(1).parse().unwrap_or(0),
        wal_status: field(2).to_owned(),
        safe_wal_bytes: field(3).parse().ok(),
    }))
}

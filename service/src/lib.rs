//! Plumbing the writer and the projector share, so both read settings, reach
//! PostgreSQL and log the same way.
//!
//! # Layout
//! - [`load_settings`]: typed settings from an optional TOML file, overridden by
//!   environment variables (`PREFIX__SECTION__KEY`). The local stack writes the
//!   file; docker compose sets the variables: one schema, two routes.
//! - [`DatabaseSettings`]: where a database lives; the password is a secret and
//!   never shows in `Debug` output or logs.
//! - [`db_error`]: database errors shown with the server's message, code and
//!   detail, and classified as infrastructure (retry), data (the input's fault)
//!   or other (a bug or schema mismatch).
//! - [`pipeline`]: statements sent back to back on one connection, in order.
//! - [`error_chain`]: [`chain`] shows an error with its causes, each once, for
//!   the binaries' last word and for log fields (which show `Display` only).
//!   Every error type here says only its own part; its cause is its `source()`.
//! - [`init_tracing`]: structured logs on stderr, filtered by `RUST_LOG`.

pub mod db_error;
pub mod error_chain;
pub mod pipeline;

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Settings could not be loaded; fix the file or the environment and retry.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {path} does not exist")]
    MissingFile { path: String },
    /// The cause (which key, what was wrong) is the source: print the chain.
    #[error("invalid settings")]
    Invalid(#[from] config::ConfigError),
}

/// Loads settings of type `T` from `file` (if given) and from environment
/// variables `{env_prefix}__SECTION__KEY`, the latter winning. Keys named in
/// `list_keys` (e.g. `kafka.topics`) take comma-separated lists from the environment.
pub fn load_settings<T: serde::de::DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
    list_keys: &[&str],
) -> Result<T, SettingsError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(SettingsError::MissingFile {
                path: path.display().to_string(),
            });
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    let mut environment = config::Environment::with_prefix(env_prefix)
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    if !list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    let settings = builder.add_source(environment).build()?.try_deserialize()?;
    Ok(settings)
}

/// Where one PostgreSQL database lives and how to log in.
#[derive(Debug, Clone, Deserialize)]
pub struct DatabaseSettings {
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub user: String,
    pub password: SecretString,
    pub dbname: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Schema to work in (`search_path`); unset: the default (`public`).
    /// `projector rebuild` builds its shadow copy in schema `rebuild`.
    #[serde(default)]
    pub schema: Option<String>,
    /// The longest a statement waits for a lock (a row another transaction
    /// holds `FOR UPDATE`) before it fails with SQLSTATE 55P03; 0: no limit.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout_ms: u64,
    /// The longest one statement runs; 0: no limit.
    #[serde(default = "default_statement_timeout")]
    pub statement_timeout_ms: u64,
    /// TCP keepalives: a connection whose peer vanished (a half-open
    /// connection after a crash or a network cut) fails after this idle
    /// time plus three unanswered probes 10 s apart, not hours later.
    #[serde(default = "default_keepalive_idle")]
    pub keepalive_idle_secs: u64,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    5432
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_lock_timeout() -> u64 {
    5_000
}
fn default_statement_timeout() -> u64 {
    60_000
}
fn default_keepalive_idle() -> u64 {
    30
}

impl DatabaseSettings {
    /// A tokio-postgres config for these settings; `application` names the
    /// service in `pg_stat_activity` (who holds a lock, who is connected).
    pub fn pg_config(&self, application: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(self.password.expose_secret())
            .dbname(&self.dbname)
            .application_name(application)
            .connect_timeout(std::time::Duration::from_secs(self.connect_timeout_secs))
            .keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(self.keepalive_idle_secs))
            .keepalives_interval(std::time::Duration::from_secs(10))
            .keepalives_retries(3);
        // Bounds on waiting, set per session so no statement can hang a
        // service for as long as the kernel lets a lock or a socket live.
        let mut options = format!(
            "-c lock_timeout={} -c statement_timeout={}",
            self.lock_timeout_ms, self.statement_timeout_ms
        );
        if let Some(schema) = &self.schema {
            options.push_str(&format!(" -c search_path={schema}"));
        }
        config.options(options);
        config
    }

    /// `host:port/dbname`, for messages; carries no secret.
    pub fn describe(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }
}

pub mod telemetry;

pub use db_error::{classify, is_retryable, show as show_db_error, DbError, ErrorClass};
pub use error_chain::{chain, DisplayChain};

/// Logs only, no tracer (tools that start no spans worth keeping).
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Migrations of `runner` that the database has not applied yet, named
/// `V<n>__<name>`. A service checks this instead of migrating: its role may
/// change rows, not the schema (`… migrate` runs as the owner role).
pub async fn pending_migrations(
    runner: &refinery::Runner,
    client: &mut tokio_postgres::Client,
) -> Result<Vec<String>, refinery::Error> {
    let applied = runner
        .get_applied_migrations_async(client)
        .await?
        .into_iter()
        .map(|m| m.version())
        .collect::<std::collections::HashSet<_>>();
    Ok(runner
        .get_migrations()
        .iter()
        .filter(|m| !applied.contains(&m.version()))
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect())
}

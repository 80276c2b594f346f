//! The write database connection of one `writer` command.
//!
//! A command makes one connection, wrapped in deadpool's client type so that it
//! and `writer load` (which draws from a pool) run the same [`crate::store`]
//! code. A command does not wait for the database: one attempt, and a failure
//! is reported at once (exit 1 with a hint). Only `writer migrate
//! --wait-for-db N`, which starts next to a database that may still be starting
//! (docker compose), retries, with [`Backoff`], until the wait is over.

use std::time::{Duration, Instant};

use service::{DatabaseSettings, DbError};

/// The write database could not be reached (within the wait, if any).
#[derive(Debug, thiserror::Error)]
#[error("connecting to the write database at {address}")]
pub struct ConnectError {
    /// Where: `host:port/dbname` ([`DatabaseSettings::describe`]), no secret.
    pub address: String,
    /// The last attempt's failure.
    #[source]
    pub source: DbError,
}

/// Capped exponential backoff between connection attempts: 200 ms, 400 ms,
/// 800 ms, ... doubling up to [`Backoff::MAX`] (5 s), so a database that comes
/// up is found within a few seconds without a tight loop of refused attempts.
/// Waiting stops at a deadline: no sleep runs past it.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first delay.
    pub const FIRST: Duration = Duration::from_millis(200);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(5);

    /// The delay before the next attempt, or `None` (give up) when sleeping it
    /// at `now` would not end before `deadline`.
    pub fn next_before(&mut self, now: Instant, deadline: Instant) -> Option<Duration> {
        let delay = self.next;
        if now + delay >= deadline {
            return None;
        }
        self.next = (delay * 2).min(Self::MAX);
        Some(delay)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

/// Connects to the write database as `application` (its name in
/// `pg_stat_activity`). A failed attempt is retried, after the next
/// [`Backoff`] delay, while that delay ends within `wait` of the start;
/// `on_retry` hears of each failure that is retried. `wait` zero: one attempt.
pub async fn connect(
    settings: &DatabaseSettings,
    application: &str,
    wait: Duration,
    mut on_retry: impl FnMut(&DbError),
) -> Result<deadpool_postgres::ClientWrapper, ConnectError> {
    let deadline = Instant::now() + wait;
    let mut backoff = Backoff::default();
    let config = settings.pg_config(application);
    let (client, connection) = loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok(connected) => break connected,
            Err(e) => {
                let error = DbError(e);
                let Some(delay) = backoff.next_before(Instant::now(), deadline) else {
                    return Err(ConnectError {
                        address: settings.describe(),
                        source: error,
                    });
                };
                on_retry(&error);
                tokio::time::sleep(delay).await;
            }
        }
    };
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %service::show_db_error(&e), "write database connection closed");
        }
    });
    Ok(deadpool_postgres::ClientWrapper::new(client, connection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..7)
            .map(|_| backoff.next_before(now, far).map(|d| d.as_millis() as u64))
            .collect::<Option<_>>()
            .expect("far from the deadline");
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }

    #[test]
    fn no_sleep_runs_past_the_deadline() {
        let now = Instant::now();
        let mut backoff = Backoff::default();
        assert_eq!(backoff.next_before(now, now), None, "no wait: one attempt");
        let deadline = now + Duration::from_millis(500);
        assert_eq!(
            backoff.next_before(now, deadline),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            backoff.next_before(now + Duration::from_millis(200), deadline),
            None,
            "200 ms + 400 ms ends after the deadline"
        );
    }

    #[test]
    fn a_connect_error_says_where_and_tells_its_cause_once() {
        let cause = "port=none"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port");
        let error = ConnectError {
            address: "127.0.0.1:1/orders".into(),
            source: DbError(cause),
        };
        assert_eq!(
            error.to_string(),
            "connecting to the write database at 127.0.0.1:1/orders"
        );
        let text = format!("{:#}", anyhow::Error::new(error));
        assert_eq!(
            text.matches("invalid connection string").count(),
            1,
            "{text}"
        );
    }
}

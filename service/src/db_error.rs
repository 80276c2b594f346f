//! Database errors that say what happened, and what to do about them.
//!
//! `tokio_postgres::Error` displays as a bare `db error`: the server's message,
//! SQLSTATE and detail sit in its source. [`DbError`] shows them all, once, and
//! [`classify`] decides by SQLSTATE class and error kind, never by message text:
//! - [`ErrorClass::Infrastructure`]: the server or the connection is unwell
//!   (connection lost, shutting down, read-only, out of disk or memory,
//!   serialization failure, deadlock). The same statement may succeed later.
//! - [`ErrorClass::Data`]: the values sent were refused (bad encoding, a number
//!   out of range, a constraint). The same input fails again; the input is at fault.
//! - [`ErrorClass::Other`]: bad SQL, a missing table, a value that does not
//!   convert on this side: a bug or a schema that does not match the code.
//!   Needs a person, not the input.

use std::fmt;

use tokio_postgres::error::SqlState;

/// How a database error should be handled; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Infrastructure,
    Data,
    Other,
}

/// Classifies a database error; see the module docs.
pub fn classify(error: &tokio_postgres::Error) -> ErrorClass {
    let Some(code) = error.code() else {
        // No SQLSTATE: the connection failed (closed, or an I/O error: every
        // connect failure, timeouts included, carries one), or a value did not
        // convert on this side. Our statements fix their parameter and column
        // types, so the latter is a bug, never the input's fault.
        let io = error.is_closed()
            || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>());
        return if io {
            ErrorClass::Infrastructure
        } else {
            ErrorClass::Other
        };
    };
    let class = &code.code()[..2];
    if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
    {
        return ErrorClass::Infrastructure;
    }
    match class {
        // 08 connection, 53 insufficient resources (disk full, out of memory,
        // too many connections), 57 operator intervention (shutdown, crash),
        // 58 system error (I/O), XX internal error of the server.
        "08" | "53" | "57" | "58" | "XX" => ErrorClass::Infrastructure,
        // 22 data exception, 23 integrity constraint, 54 program limit exceeded
        // (a value or row too large), 21 cardinality violation.
        "21" | "22" | "23" | "54" => ErrorClass::Data,
        _ => ErrorClass::Other,
    }
}

/// Whether retrying the same statement later may succeed.
pub fn is_retryable(error: &tokio_postgres::Error) -> bool {
    classify(error) == ErrorClass::Infrastructure
}

/// A database error that displays the server's severity, message, SQLSTATE,
/// detail, hint and constraint; or the client-side cause when there is no server message.
///
/// It ends a chain of errors: its message already tells everything the
/// `tokio_postgres::Error` inside holds (which displays as a bare `db error`,
/// its substance in its sources), so it reports no `source()`: a chain printer
/// (anyhow's `{:#}`, [`crate::chain`]) would tell the same failure twice. Code
/// that needs the SQLSTATE or the kind reads the error inside, `.0`.
#[derive(Debug)]
pub struct DbError(pub tokio_postgres::Error);

impl From<tokio_postgres::Error> for DbError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self(error)
    }
}

impl std::error::Error for DbError {}

impl DbError {
    pub fn class(&self) -> ErrorClass {
        classify(&self.0)
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_db_error(&self.0, f)
    }
}

/// Writes `error` as [`DbError`] does; for error types that wrap a `tokio_postgres::Error`.
pub fn fmt_db_error(error: &tokio_postgres::Error, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if let Some(db) = error.as_db_error() {
        write!(
            f,
            "{} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        )?;
        if let Some(detail) = db.detail() {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = db.hint() {
            write!(f, "; hint: {hint}")?;
        }
        if let Some(constraint) = db.constraint() {
            write!(f, "; constraint: {constraint}")?;
        }
        return Ok(());
    }
    write!(f, "{error}")?;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        write!(f, ": {cause}")?;
        source = cause.source();
    }
    Ok(())
}

/// Shows `error` with its server message; shorthand for logs: `error = %service::show(&e)`.
pub fn show(error: &tokio_postgres::Error) -> DbErrorRef<'_> {
    DbErrorRef(error)
}

/// A borrowed [`DbError`] for logging.
#[derive(Debug)]
pub struct DbErrorRef<'a>(&'a tokio_postgres::Error);

impl fmt::Display for DbErrorRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_db_error(self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client-side error: an unparsable connection string.
    fn client_error() -> tokio_postgres::Error {
        "port=none"
            .parse::<tokio_postgres::Config>()
            .expect_err("not a port")
    }

    #[test]
    fn shows_the_cause_inside_and_ends_the_chain() {
        let error = DbError(client_error());
        let text = error.to_string();
        assert!(text.starts_with("invalid connection string: "), "{text}");
        assert!(text.contains("port"), "the cause is told: {text}");
        assert!(
            std::error::Error::source(&error).is_none(),
            "its message already holds its cause"
        );
        assert_eq!(crate::chain(&error).to_string(), text);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("reading the order")]
    struct Reading(#[source] DbError);

    #[test]
    fn a_chain_through_it_tells_the_cause_once() {
        let error = Reading(DbError(client_error()));
        let text = crate::chain(&error).to_string();
        assert_eq!(
            text.matches("invalid connection string").count(),
            1,
            "{text}"
        );
        assert!(text.starts_with("reading the order: invalid connection string: "));
    }
}

//! An error with its causes, on one line, each once.
//!
//! The rule for this workspace's errors (the Materialize style guide's): an
//! error's `Display` says only what went wrong at its own level; the cause is
//! its `source()`, never also part of its message. Printed alone, an error is
//! then one level of the story; printed as a chain (anyhow's `{:#}`, or
//! [`chain`]) it is all of it, every cause once:
//!
//! ```text
//! running the command: write database: ERROR 55P03: canceling statement due to lock timeout
//! ```
//!
//! Where only `Display` is used, a log field (`error = %e`) or a `to_string()`,
//! an error with a source would lose its cause: log [`chain`]`(&e)` instead.
//!
//! Some errors of other crates break the rule and repeat their source in their
//! message (rdkafka's `KafkaError` repeats its error code, refinery's
//! connection error the database error). [`chain`] leaves out a cause whose
//! text the line already holds, so those print once too; for errors that keep
//! the rule it prints exactly what anyhow's `{:#}` prints.

use std::error::Error;
use std::fmt;

/// `error` and its sources, joined by `": "`, each text once; see the module docs.
///
/// Takes any error, an `anyhow::Error` too (`chain(&*e)`, or `chain(e.as_ref())`).
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> DisplayChain<'a> {
    DisplayChain(error)
}

/// An error shown with its causes; made by [`chain`].
#[derive(Debug, Clone, Copy)]
pub struct DisplayChain<'a>(&'a (dyn Error + 'static));

impl fmt::Display for DisplayChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // A cause already told (by an error that repeats its source) is
            // not told again; its own sources still are.
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection refused")]
    struct Io;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the stored positions")]
    struct Positions(#[source] Io);

    /// A foreign error that repeats its source in its message.
    #[derive(Debug, thiserror::Error)]
    #[error("query failed: {0}")]
    struct Repeats(#[source] Io);

    #[test]
    fn each_level_once_joined_by_colons() {
        assert_eq!(
            chain(&Positions(Io)).to_string(),
            "reading the stored positions: connection refused"
        );
    }

    #[test]
    fn an_error_without_source_is_its_message() {
        assert_eq!(chain(&Io).to_string(), "connection refused");
    }

    #[test]
    fn a_cause_the_message_already_holds_is_left_out() {
        assert_eq!(
            chain(&Repeats(Io)).to_string(),
            "query failed: connection refused"
        );
    }

    #[test]
    fn the_settings_error_names_its_cause_once() {
        let error =
            crate::SettingsError::from(config::ConfigError::NotFound("database.user".into()));
        assert_eq!(
            error.to_string(),
            "invalid settings",
            "its own message only"
        );
        assert_eq!(
            chain(&error).to_string(),
            "invalid settings: missing configuration field \"database.user\""
        );
    }
}

//! Writer tests against a real PostgreSQL cluster (one per test run, a fresh
//! database per test), driving the real `writer` binary where the CLI matters.

#![allow(clippy::unwrap_used)] // test helpers fail loudly by design

mod atomicity;
mod bad_input;
mod commands;
mod helpers;
mod idempotency;
mod load;
mod reactor;
mod retention;

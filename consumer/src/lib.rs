//! The consumer core: how every service of this system consumes events.
//!
//! Three services react to events: the projector (read models), the inventory
//! service (reservations, its own outbox) and the order service's reactor
//! (order confirmations, the order outbox). Each supplies a [`Handler`]; this
//! crate does the rest, the same way for all of them:
//!
//! Delivery from Kafka is at-least-once. Each event's id goes into the `inbox`
//! table in the same transaction as the handler's change, so a redelivered
//! event is recognised and skipped: every event has exactly one effect. Kafka
//! offsets are stored only after that transaction commits, and the position
//! of each partition is stored with the data ([`position`]); a crash in
//! between means redelivery, never loss.
//!
//! Every database a consumer writes to holds the core's tables (`inbox`,
//! `aggregate_versions`, `parked_events`, `dead_letters`,
//! `consumer_positions`, `consumer_runs`): [`CORE_MIGRATION`] creates them.
//!
//! # Layout
//! - [`handler`]: the [`Handler`] trait a service implements, its contract,
//!   and [`Step`], one statement of an effect.
//! - [`record`]: an owned copy of a Kafka record and its decoding into an
//!   [`outbox_events::Envelope`].
//! - [`batch`]: [`batch::apply_batch`], one step of the worker: one transaction
//!   for a batch of records (inbox, version policy, parking, the handler's
//!   steps, dead letters), pipelined, then an [`batch::Outcome`].
//! - [`worker`]: the loop around `apply_batch`: poll a batch, apply it with
//!   capped retries, store offsets, stop cleanly on the shutdown signal;
//!   a new consumer when the group fences this instance's name (up to a
//!   streak, see `worker::FENCE_REJOINS`); metrics named after the handler.
//! - [`outbox`]: a handler that publishes appends its events to its outbox.
//! - [`operator`]: the dead-letter life cycle (list, show, replay, discard)
//!   and the backlog of parked events, for the CLIs and the gauges.
//! - [`dead_letter_report`]: what `… dead-letters …` prints, rendered by pure
//!   functions (text or `--json`).
//! - [`cli`]: the `dead-letters` subcommands, shared by every binary.
//! - [`position`]: the consumer positions kept with the data, and the fence.
//! - [`retention`]: `… inbox prune`.
//! - [`trace`]: each applied record's span, continuing the producer's trace.
//! - [`settings`]: typed settings (file + `<SERVICE>__*` environment).

pub mod batch;
pub mod cli;
pub mod dead_letter_report;
pub mod handler;
pub mod operator;
pub mod outbox;
pub mod position;
pub mod record;
pub mod retention;
pub mod settings;
pub mod trace;
pub mod worker;

pub use handler::{p, Handler, Param, Step};

/// The core's tables, for a database that gets them with its service's own
/// first migrations (the inventory and write databases; the read database
/// grew them migration by migration, `sql/read/V1`–`V8`, to the same shape).
pub const CORE_MIGRATION: &str = include_str!("../../sql/consumer/core.sql");

//! Projector tests against a real broker (Apache Kafka, KRaft) and a real PostgreSQL: records
//! are published exactly as Debezium's Event Router publishes them.

#![allow(clippy::unwrap_used)] // test helpers fail loudly by design

mod contract;
mod delivery;
mod failure_isolation;
mod helpers;
mod positions;
mod read_models;

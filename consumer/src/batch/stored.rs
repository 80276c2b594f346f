//! A record rebuilt from the bytes a table keeps of it (`parked_events`,
//! `dead_letters`): exactly what arrived, to apply or replay later.

use crate::record::{RawHeader, Record};

/// The columns [`parked_record`] reads.
pub const PARKED_COLUMNS: &str =
    "p.event_id, p.topic, p.kafka_partition, p.kafka_offset, p.record_key, p.header_names, p.header_values, p.record_value";

/// Rebuilds the record of a `parked_events` row selected with [`PARKED_COLUMNS`].
pub fn parked_record(row: &tokio_postgres::Row) -> Record {
    stored_record(row, 1)
}

/// Rebuilds a record stored as (topic, partition, offset, key, header names,
/// header values, value) starting at column `first`.
pub fn stored_record(row: &tokio_postgres::Row, first: usize) -> Record {
    let names: Vec<Vec<u8>> = row.get(first + 4);
    let values: Vec<Option<Vec<u8>>> = row.get(first + 5);
    Record {
        topic: row.get(first),
        partition: row.get(first + 1),
        offset: row.get(first + 2),
        key: row.get(first + 3),
        headers: names
            .into_iter()
            .zip(values)
            .map(|(name, value)| RawHeader { name, value })
            .collect(),
        payload: row.get(first + 6),
    }
}

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Event;

/// Kafka header names, set by the Event Router from outbox columns
/// (`table.fields.additional.placement` in `debezium/outbox-connector.json`).
pub mod header {
    /// The event id (the outbox row's primary key); the inbox deduplicates on it.
    pub const EVENT_ID: &str = "id";
    pub const EVENT_TYPE: &str = "event_type";
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const AGGREGATE_VERSION: &str = "aggregate_version";
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const TRACEPARENT: &str = "traceparent";
    /// Every header the contract defines.
    pub const ALL: [&str; 6] = [
        EVENT_ID,
        EVENT_TYPE,
        SCHEMA_VERSION,
        AGGREGATE_VERSION,
        OCCURRED_AT,
        TRACEPARENT,
    ];
}

/// Why a record could not be decoded. None of these get better by retrying:
/// the projector dead-letters such a record and moves on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContractError {
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    #[error("header `{name}` is invalid: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("record has no key (the aggregate id)")]
    MissingKey,
    #[error("record has no payload")]
    MissingPayload,
    #[error("unknown event type `{0}`")]
    UnknownEventType(String),
    #[error("unknown schema version {version} of `{event_type}`")]
    UnknownVersion { event_type: String, version: i32 },
    #[error("payload does not match the schema: {0}")]
    Payload(String),
    #[error("key `{key}` does not match the payload's aggregate id `{payload}`")]
    KeyMismatch { key: String, payload: String },
    #[error("header `{0}` appears more than once")]
    DuplicateHeader(String),
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
    #[error("payload breaks the contract: {0}")]
    Invalid(String),
    #[error("record of {bytes} bytes is larger than the contract's {limit} (MAX_RECORD_BYTES)")]
    TooLarge { bytes: usize, limit: usize },
}

/// The largest record (key, headers and payload) an event may make. The
/// writer's bounds (100 lines, 500-character texts) keep every event far
/// below it; a consumer refuses a larger record without decoding it.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// Decodes a payload given its event type and schema version.
pub type PayloadDecoder<'a> = dyn Fn(&str, i32, &[u8]) -> Result<Event, ContractError> + 'a;

/// An event with its metadata, as written to the outbox and read from Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// 1, 2, 3, ... per aggregate, without gaps: consumers use it to check order.
    pub aggregate_version: i64,
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the command that caused the event, if any.
    pub traceparent: Option<String>,
    pub event: Event,
}

impl Envelope {
    /// Wraps a new event of an aggregate at the given version.
    pub fn new(event: Event, aggregate_version: i64, occurred_at: DateTime<Utc>) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            aggregate_type: event.aggregate_type().to_owned(),
            aggregate_id: event.aggregate_id(),
            aggregate_version,
            occurred_at,
            traceparent: None,
            event,
        }
    }

    /// Decodes a Kafka record published by the Event Router.
    ///
    /// `headers` holds the record's headers as UTF-8 strings; `aggregate_type`
    /// comes from the topic the record was read from.
    pub fn from_record(
        aggregate_type: &str,
        key: Option<&[u8]>,
        headers: &HashMap<String, String>,
        payload: Option<&[u8]>,
    ) -> Result<Self, ContractError> {
        Self::from_record_with(aggregate_type, key, headers, payload, &Event::from_payload)
    }

    /// [`Envelope::from_record`] with another payload decoder, e.g. one that
    /// knows more upcasters than this crate does.
    pub fn from_record_with(
        aggregate_type: &str,
        key: Option<&[u8]>,
        headers: &HashMap<String, String>,
        payload: Option<&[u8]>,
        decode: &PayloadDecoder<'_>,
    ) -> Result<Self, ContractError> {
        let get = |name: &'static str| {
            headers
                .get(name)
                .map(String::as_str)
                .ok_or(ContractError::MissingHeader(name))
        };
        let invalid =
            |name: &'static str, reason: String| ContractError::InvalidHeader { name, reason };

        let event_id = Uuid::parse_str(get(header::EVENT_ID)?)
            .map_err(|e| invalid(header::EVENT_ID, e.to_string()))?;
        let event_type = get(header::EVENT_TYPE)?;
        let schema_version: i32 = get(header::SCHEMA_VERSION)?
            .parse()
            .map_err(|e: std::num::ParseIntError| invalid(header::SCHEMA_VERSION, e.to_string()))?;
        let aggregate_version: i64 =
            get(header::AGGREGATE_VERSION)?
                .parse()
                .map_err(|e: std::num::ParseIntError| {
                    invalid(header::AGGREGATE_VERSION, e.to_string())
                })?;
        let occurred_at = DateTime::parse_from_rfc3339(get(header::OCCURRED_AT)?)
            .map_err(|e| invalid(header::OCCURRED_AT, e.to_string()))?
            .with_timezone(&Utc);
        let traceparent = headers
            .get(header::TRACEPARENT)
            .filter(|t| !t.is_empty())
            .cloned();
        let key = key.ok_or(ContractError::MissingKey)?;
        let aggregate_id = std::str::from_utf8(key)
            .map_err(|_| ContractError::NotUtf8("key"))?
            .trim_matches('"')
            .to_owned();
        if aggregate_version < 1 {
            return Err(invalid(
                header::AGGREGATE_VERSION,
                format!("{aggregate_version} is not a version (1, 2, 3, ...)"),
            ));
        }
        let payload = payload.ok_or(ContractError::MissingPayload)?;
        let event = decode(event_type, schema_version, payload)?;
        event.validate().map_err(ContractError::Invalid)?;
        let nul = |s: &str| s.contains('\0');
        if nul(event_type) || nul(&aggregate_id) || traceparent.as_deref().is_some_and(nul) {
            return Err(ContractError::Invalid(
                "a header or the key contains a NUL character".into(),
            ));
        }
        if event.aggregate_id() != aggregate_id {
            return Err(ContractError::KeyMismatch {
                key: aggregate_id,
                payload: event.aggregate_id(),
            });
        }
        Ok(Self {
            event_id,
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id,
            aggregate_version,
            occurred_at,
            traceparent,
            event,
        })
    }

    /// The headers the Event Router puts on this envelope's record. Tests use
    /// it to publish records exactly as Debezium would.
    pub fn to_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (header::EVENT_ID, self.event_id.to_string()),
            (header::EVENT_TYPE, self.event.event_type().to_owned()),
            (
                header::SCHEMA_VERSION,
                self.event.schema_version().to_string(),
            ),
            (
                header::AGGREGATE_VERSION,
                self.aggregate_version.to_string(),
            ),
            (header::OCCURRED_AT, self.occurred_at.to_rfc3339()),
        ];
        headers.push((
            header::TRACEPARENT,
            self.traceparent.clone().unwrap_or_default(),
        ));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OrderCancelled, ORDER_AGGREGATE};

    fn cancelled() -> Envelope {
        Envelope::new(
            Event::OrderCancelled(OrderCancelled {
                order_id: Uuid::new_v4(),
                reason: "changed mind".into(),
            }),
            2,
            Utc::now(),
        )
    }

    fn headers(env: &Envelope) -> HashMap<String, String> {
        env.to_headers()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn a_record_round_trips() {
        let env = cancelled();
        let payload = serde_json::to_vec(&env.event.to_payload()).unwrap();
        let decoded = Envelope::from_record(
            ORDER_AGGREGATE,
            Some(env.aggregate_id.as_bytes()),
            &headers(&env),
            Some(&payload),
        )
        .unwrap();
        assert_eq!(decoded.event, env.event);
        assert_eq!(decoded.event_id, env.event_id);
        assert_eq!(decoded.aggregate_version, 2);
    }

    #[test]
    fn unknown_payload_fields_are_ignored() {
        let env = cancelled();
        let mut payload = env.event.to_payload();
        payload["added_later"] = serde_json::json!({"x": 1});
        let decoded = Envelope::from_record(
            ORDER_AGGREGATE,
            Some(env.aggregate_id.as_bytes()),
            &headers(&env),
            Some(&serde_json::to_vec(&payload).unwrap()),
        )
        .unwrap();
        assert_eq!(decoded.event, env.event);
    }

    #[test]
    fn bad_records_say_what_is_wrong() {
        let env = cancelled();
        let payload = serde_json::to_vec(&env.event.to_payload()).unwrap();
        let key = env.aggregate_id.as_bytes();

        let mut h = headers(&env);
        h.remove(header::EVENT_ID);
        let err =
            Envelope::from_record(ORDER_AGGREGATE, Some(key), &h, Some(&payload)).unwrap_err();
        assert_eq!(err, ContractError::MissingHeader(header::EVENT_ID));

        let mut h = headers(&env);
        h.insert(header::EVENT_TYPE.into(), "OrderTeleported".into());
        let err =
            Envelope::from_record(ORDER_AGGREGATE, Some(key), &h, Some(&payload)).unwrap_err();
        assert_eq!(
            err,
            ContractError::UnknownEventType("OrderTeleported".into())
        );

        let err = Envelope::from_record(
            ORDER_AGGREGATE,
            Some(key),
            &headers(&env),
            Some(b"{not json"),
        )
        .unwrap_err();
        assert!(matches!(err, ContractError::Payload(_)));

        let err = Envelope::from_record(
            ORDER_AGGREGATE,
            Some(b"other"),
            &headers(&env),
            Some(&payload),
        )
        .unwrap_err();
        assert!(matches!(err, ContractError::KeyMismatch { .. }));
    }
}

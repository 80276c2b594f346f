//! A Kafka record detached from the consumer, byte for byte, and its decoding.
//!
//! Nothing here assumes a record is well formed: key, header names and values
//! and the value are kept as raw bytes, headers in order and with duplicates,
//! so a record that cannot be decoded can still be stored exactly as it came.
use std::collections::HashMap;

use outbox_events::{header, ContractError, Envelope, Event};
use rdkafka::message::{BorrowedMessage, Message};

/// One header as it was on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    pub name: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// An owned copy of one consumed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<RawHeader>,
    pub payload: Option<Vec<u8>>,
}

impl Record {
    /// Bytes of its key, header names and values, and payload.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|h| h.name.len() + h.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
            + self.payload.as_ref().map_or(0, Vec::len)
    }

    pub fn from_message(message: &BorrowedMessage<'_>) -> Self {
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            headers: raw_headers(message),
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }

    /// The record Debezium's Event Router publishes for `envelope`: key =
    /// aggregate id, headers from the envelope, value = payload JSON.
    /// Benchmarks and tests use it to feed the projector exactly that.
    pub fn from_envelope(envelope: &Envelope, topic: String, partition: i32, offset: i64) -> Self {
        Self {
            topic,
            partition,
            offset,
            key: Some(envelope.aggregate_id.clone().into_bytes()),
            headers: envelope
                .to_headers()
                .into_iter()
                .map(|(name, value)| RawHeader {
                    name: name.as_bytes().to_vec(),
                    value: Some(value.into_bytes()),
                })
                .collect(),
            payload: Some(envelope.event.to_payload().to_string().into_bytes()),
        }
    }

    /// The aggregate type, from the topic name ([`outbox_events::aggregate_of_topic`]).
    pub fn aggregate_type(&self) -> &str {
        outbox_events::aggregate_of_topic(&self.topic).unwrap_or(&self.topic)
    }

    /// The value of header `name` as text, if present exactly once and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.iter().filter(|h| h.name == name.as_bytes());
        let first = values.next()?;
        if values.next().is_some() {
            return None;
        }
        std::str::from_utf8(first.value.as_deref().unwrap_or_default()).ok()
    }

    /// Decodes the record with the contract's own decoder.
    pub fn decode(&self) -> Result<Envelope, ContractError> {
        Decoder::default().decode(self)
    }
}

/// A payload decoder for one (event type, schema version).
pub type Upcaster = fn(&[u8]) -> Result<Event, ContractError>;

/// Decodes records into envelopes: the contract's decoder plus any upcasters
/// registered here (a schema version this build learns without a new contract
/// crate, e.g. to replay dead letters of a producer that ran ahead).
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    upcasters: HashMap<(String, i32), Upcaster>,
}

impl Decoder {
    /// Adds an upcaster for `event_type` at `schema_version`.
    pub fn with_upcaster(mut self, event_type: &str, schema_version: i32, up: Upcaster) -> Self {
        self.upcasters
            .insert((event_type.to_owned(), schema_version), up);
        self
    }

    /// Decodes `record`, strictly: every header the contract needs must be
    /// present once and be UTF-8, and the key must be UTF-8.
    pub fn decode(&self, record: &Record) -> Result<Envelope, ContractError> {
        // Refused before anything is parsed or copied.
        let bytes = record.size();
        if bytes > outbox_events::MAX_RECORD_BYTES {
            return Err(ContractError::TooLarge {
                bytes,
                limit: outbox_events::MAX_RECORD_BYTES,
            });
        }
        let mut headers = HashMap::new();
        for name in header::ALL {
            let mut matching = record.headers.iter().filter(|h| h.name == name.as_bytes());
            let Some(first) = matching.next() else {
                continue;
            };
            if matching.next().is_some() {
                return Err(ContractError::DuplicateHeader(name.to_owned()));
            }
            let value = std::str::from_utf8(first.value.as_deref().unwrap_or_default())
                .map_err(|_| ContractError::NotUtf8(name))?;
            headers.insert(name.to_owned(), value.to_owned());
        }
        let decode = |event_type: &str, version: i32, payload: &[u8]| match self
            .upcasters
            .get(&(event_type.to_owned(), version))
        {
            Some(up) => up(payload),
            None => Event::from_payload(event_type, version, payload),
        };
        Envelope::from_record_with(
            record.aggregate_type(),
            record.key.as_deref(),
            &headers,
            record.payload.as_deref(),
            &decode,
        )
    }
}

/// The message's headers as raw bytes.
///
/// Why not `rdkafka`'s `Headers::iter`: it converts each header name with
/// `CStr::to_str().unwrap()`, so one record with a non-UTF-8 header name would
/// panic the projector. This reads librdkafka's headers directly instead.
#[allow(unsafe_code)]
fn raw_headers(message: &BorrowedMessage<'_>) -> Vec<RawHeader> {
    use rdkafka::bindings as rd;
    use std::ffi::CStr;

    let mut out = Vec::new();
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is a live message for the lifetime of `message`;
    // librdkafka writes a borrowed pointer (owned by the message) or fails.
    let err = unsafe { rd::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return out;
    }
    for idx in 0.. {
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `headers` belongs to the live message; on success librdkafka
        // sets `name` to a NUL-terminated string and `value`/`size` to a
        // buffer (or NULL), all owned by the message, copied out below.
        let err =
            unsafe { rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: see above; both are valid until the message is dropped.
        let name = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        let value = (!value.is_null())
            .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec());
        out.push(RawHeader { name, value });
    }
    out
}

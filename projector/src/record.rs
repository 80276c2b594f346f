//! A Kafka record detached from the consumer, and its decoding.
use std::collections::HashMap;

use outbox_events::{ContractError, Envelope};
use rdkafka::message::{Headers, Message};

/// An owned copy of one consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
    pub payload: Option<Vec<u8>>,
}

impl Record {
    pub fn from_message(message: &impl Message) -> Self {
        let mut headers = HashMap::new();
        if let Some(hs) = message.headers() {
            for h in hs.iter() {
                let value = h
                    .value
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                headers.insert(h.key.to_owned(), value);
            }
        }
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            headers,
            payload: message.payload().map(<[u8]>::to_vec),
        }
    }

    /// The aggregate type, from the topic name `outbox.event.<type>`.
    pub fn aggregate_type(&self) -> &str {
        self.topic.rsplit('.').next().unwrap_or(&self.topic)
    }

    pub fn decode(&self) -> Result<Envelope, ContractError> {
        Envelope::from_record(
            self.aggregate_type(),
            self.key.as_deref(),
            &self.headers,
            self.payload.as_deref(),
        )
    }
}

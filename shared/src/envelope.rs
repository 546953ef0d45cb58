//! The event envelope: what travels on the bus and sits in an outbox row.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// A typed event: its payload type and routing key.
pub trait Event: Serialize + DeserializeOwned + Send + Sync {
    /// The routing key and the envelope's `type`, e.g. `booking.hold_requested`.
    const TYPE: &'static str;
}

/// An event as it travels: the JSON body of every AMQP message on
/// `duikou.events`. `id` is also the AMQP `message_id`, `type` the routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// UUIDv7, unique per event; inboxes deduplicate on it.
    pub id: Uuid,
    /// The event type, equal to the routing key.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the state change happened.
    pub occurred_at: DateTime<Utc>,
    /// The saga this belongs to: the booking id for booking flows.
    pub correlation_id: Uuid,
    /// The event that caused this one, if any.
    #[serde(default)]
    pub causation_id: Option<Uuid>,
    /// The service that emitted it.
    pub source: String,
    /// The typed event, as JSON.
    pub payload: serde_json::Value,
}

/// Why an envelope could not be turned into the event its type names.
#[derive(Debug, thiserror::Error)]
#[error("payload of `{kind}` does not match its type: {source}")]
pub struct BadPayload {
    /// The envelope's type.
    pub kind: String,
    /// What serde said.
    pub source: serde_json::Error,
}

impl Envelope {
    /// Wraps a new event that starts (or continues) the saga `correlation_id`.
    pub fn new<E: Event>(source: &str, correlation_id: Uuid, event: &E) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            kind: E::TYPE.to_owned(),
            occurred_at: Utc::now(),
            correlation_id,
            causation_id: None,
            source: source.to_owned(),
            // Serialising a plain data struct to a Value cannot fail.
            payload: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        }
    }

    /// An event caused by this one: same correlation, causation = this id.
    pub fn follow<E: Event>(&self, source: &str, event: &E) -> Envelope {
        Envelope {
            causation_id: Some(self.id),
            ..Envelope::new(source, self.correlation_id, event)
        }
    }

    /// An event caused by this one whose type and payload were stored as
    /// JSON (an answer sent again).
    pub fn follow_raw(&self, source: &str, kind: &str, payload: serde_json::Value) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            occurred_at: Utc::now(),
            correlation_id: self.correlation_id,
            causation_id: Some(self.id),
            source: source.to_owned(),
            payload,
        }
    }

    /// True when this envelope carries an `E`.
    pub fn is<E: Event>(&self) -> bool {
        self.kind == E::TYPE
    }

    /// Decodes the payload as `E`.
    pub fn decode<E: Event>(&self) -> Result<E, BadPayload> {
        serde_json::from_value(self.payload.clone()).map_err(|source| BadPayload {
            kind: self.kind.clone(),
            source,
        })
    }

    /// The JSON body sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a wire body; any JSON that is not an envelope is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Envelope, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

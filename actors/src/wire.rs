//! How messages to remote actors look on the wire: bincode 2 behind a version byte, bounded in
//! size, and how the remote worker slot's message ([`RemoteSlotMsg`]) becomes `ractor`'s
//! serialized form and back. `ractor_cluster` carries the bytes; nothing here does I/O.
//!
//! A message that does not decode (another version, a malformed or oversized body) is logged,
//! counted (`weft_wire_refused_total`) and dropped: a cast is lost, a call gets no reply. The
//! remote slot protocol is built so that either heals (see `remote_slot.rs`).

use crate::messages::{RemoteSlotMsg, SlotCall, SlotCast, SlotHello, SlotPoll};
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{BytesConvertable, Message, RpcReplyPort};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte in front of every remote message.
pub const WIRE_VERSION: u8 = 1;
/// The largest remote message, version byte included (a QUIC link frame's limit).
pub const WIRE_BYTES_MAX: usize = 1024 * 1024;

/// A remote message that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("remote message of {length} bytes is over the limit of {max} bytes")]
    Oversized { length: usize, max: usize },
    #[error("remote message is empty (no version byte)")]
    Empty,
    #[error("remote message has version {found}, this side reads version {expected}")]
    Version { found: u8, expected: u8 },
    #[error("remote message does not decode: {0}")]
    Decode(String),
    #[error("remote message has {0} bytes after its end")]
    Trailing(usize),
    #[error("remote message does not encode: {0}")]
    Encode(String),
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<WIRE_BYTES_MAX>()
}

/// The version byte, then `value` in bincode 2; refused over [`WIRE_BYTES_MAX`].
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut bytes = vec![WIRE_VERSION];
    bincode::serde::encode_into_std_write(value, &mut bytes, bincode_config())
        .map_err(|error| WireError::Encode(error.to_string()))?;
    if bytes.len() > WIRE_BYTES_MAX {
        return Err(WireError::Oversized {
            length: bytes.len(),
            max: WIRE_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// The inverse of [`encode`]: the size and the version byte are checked before anything is
/// decoded, and every byte must be used.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > WIRE_BYTES_MAX {
        return Err(WireError::Oversized {
            length: bytes.len(),
            max: WIRE_BYTES_MAX,
        });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version {
            found: version,
            expected: WIRE_VERSION,
        });
    }
    let (value, used) = bincode::serde::decode_from_slice(body, bincode_config())
        .map_err(|error| WireError::Decode(error.to_string()))?;
    if used != body.len() {
        return Err(WireError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// [`decode`], with a refusal logged and counted under `what`.
pub fn decode_or_refuse<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Option<T> {
    match decode(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(%error, what, "remote message refused");
            metrics::counter!("weft_wire_refused_total", "what" => what).increment(1);
            None
        }
    }
}

/// On the calling side: a port for the reply's bytes, which decodes them into `typed`. A reply
/// that does not decode is dropped, so the call fails as if unanswered.
pub fn reply_from_bytes<T>(typed: RpcReplyPort<T>) -> RpcReplyPort<Vec<u8>>
where
    T: DeserializeOwned + Send + 'static,
{
    let (sender, receiver) = ractor::concurrency::oneshot::<Vec<u8>>();
    let timeout = typed.get_timeout();
    tokio::spawn(async move {
        let bytes = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, receiver)
                .await
                .ok()
                .and_then(Result::ok),
            None => receiver.await.ok(),
        };
        if let Some(reply) = bytes.and_then(|bytes| decode_or_refuse::<T>(&bytes, "reply")) {
            let _ = typed.send(reply);
        }
    });
    match timeout {
        Some(timeout) => RpcReplyPort::from((sender, timeout)),
        None => RpcReplyPort::from(sender),
    }
}

/// On the called side: a typed port whose reply goes back as bytes on `bytes`.
pub fn reply_to_bytes<T>(bytes: RpcReplyPort<Vec<u8>>) -> RpcReplyPort<T>
where
    T: Serialize + Send + 'static,
{
    let (sender, receiver) = ractor::concurrency::oneshot::<T>();
    let timeout = bytes.get_timeout();
    tokio::spawn(async move {
        let reply = match timeout {
            Some(timeout) => tokio::time::timeout(timeout, receiver)
                .await
                .ok()
                .and_then(Result::ok),
            None => receiver.await.ok(),
        };
        if let Some(reply) = reply {
            match encode(&reply) {
                Ok(encoded) => {
                    let _ = bytes.send(encoded);
                }
                Err(error) => tracing::warn!(%error, "remote reply not sent"),
            }
        }
    });
    match timeout {
        Some(timeout) => RpcReplyPort::from((sender, timeout)),
        None => RpcReplyPort::from(sender),
    }
}

/// `ractor`'s conversion, for the parts of messages that travel as plain values; the trait
/// cannot fail, so a malformed value panics here. Messages decode through [`decode`].
macro_rules! bytes_convertable {
    ($($type:ty),*) => {$(
        impl BytesConvertable for $type {
            fn into_bytes(self) -> Vec<u8> {
                encode(&self).unwrap_or_else(|error| panic!("{error}"))
            }

            fn from_bytes(bytes: Vec<u8>) -> Self {
                decode(&bytes).unwrap_or_else(|error| panic!("{error}"))
            }
        }
    )*};
}
bytes_convertable!(SlotHello, SlotPoll);

/// The `variant` of the remote slot's calls and casts in `ractor`'s serialized messages.
pub const SLOT_CALL: &str = "weft.slot.call";
pub const SLOT_CAST: &str = "weft.slot.cast";

impl Message for RemoteSlotMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let encoded = |value: Result<Vec<u8>, WireError>| {
            value.map_err(|error| {
                tracing::warn!(%error, "remote slot message not sent");
                metrics::counter!("weft_wire_refused_total", "what" => "outgoing").increment(1);
                BoxedDowncastErr
            })
        };
        match self {
            RemoteSlotMsg::Hello { session, reply } => Ok(SerializedMessage::Call {
                variant: SLOT_CALL.to_string(),
                args: encoded(encode(&SlotCall::Hello { session }))?,
                reply: reply_from_bytes(reply),
                metadata: None,
            }),
            RemoteSlotMsg::Poll {
                session,
                ack,
                reply,
            } => Ok(SerializedMessage::Call {
                variant: SLOT_CALL.to_string(),
                args: encoded(encode(&SlotCall::Poll { session, ack }))?,
                reply: reply_from_bytes(reply),
                metadata: None,
            }),
            RemoteSlotMsg::Cast(cast) => Ok(SerializedMessage::Cast {
                variant: SLOT_CAST.to_string(),
                args: encoded(encode(&cast))?,
                metadata: None,
            }),
            // The slot's own events never leave its process.
            RemoteSlotMsg::Local(_) => Err(BoxedDowncastErr),
        }
    }

    fn deserialize(message: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match message {
            SerializedMessage::Call {
                variant,
                args,
                reply,
                ..
            } if variant == SLOT_CALL => {
                match decode_or_refuse::<SlotCall>(&args, "slot call").ok_or(BoxedDowncastErr)? {
                    SlotCall::Hello { session } => Ok(RemoteSlotMsg::Hello {
                        session,
                        reply: reply_to_bytes(reply),
                    }),
                    SlotCall::Poll { session, ack } => Ok(RemoteSlotMsg::Poll {
                        session,
                        ack,
                        reply: reply_to_bytes(reply),
                    }),
                }
            }
            SerializedMessage::Cast { variant, args, .. } if variant == SLOT_CAST => {
                decode_or_refuse::<SlotCast>(&args, "slot cast")
                    .map(RemoteSlotMsg::Cast)
                    .ok_or(BoxedDowncastErr)
            }
            _ => {
                tracing::warn!("remote slot message refused: not a slot call or cast");
                metrics::counter!("weft_wire_refused_total", "what" => "variant").increment(1);
                Err(BoxedDowncastErr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::ids::{AttemptId, TaskInstanceKey};

    fn kill() -> SlotCast {
        let key = TaskInstanceKey::new("etl", "manual__1", "load", -1);
        SlotCast::Kill {
            session: 3,
            attempt: AttemptId::new(key, 1, 7),
        }
    }

    #[test]
    fn messages_round_trip_behind_the_version_byte() {
        let bytes = encode(&kill()).unwrap();
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode::<SlotCast>(&bytes).unwrap(), kill());
        let hello = SlotHello {
            worker: "w1".to_string(),
            index: 2,
            slots: 4,
            version: "0.1.0".to_string(),
            queues: vec!["gpu".to_string()],
            labels: [("zone".to_string(), "a".to_string())].into(),
            draining: false,
        };
        assert_eq!(
            SlotHello::from_bytes(hello.clone().into_bytes()),
            hello,
            "through ractor's BytesConvertable too"
        );
    }

    #[test]
    fn an_unknown_version_byte_is_refused() {
        let mut bytes = encode(&kill()).unwrap();
        bytes[0] = WIRE_VERSION + 1;
        let error = decode::<SlotCast>(&bytes).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "remote message has version {}, this side reads version {WIRE_VERSION}",
                WIRE_VERSION + 1
            )
        );
        assert_eq!(decode::<SlotCast>(&[]).unwrap_err(), WireError::Empty);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_both_ways() {
        let worker = "x".repeat(WIRE_BYTES_MAX);
        let hello = SlotHello {
            worker,
            index: 0,
            slots: 1,
            version: String::new(),
            queues: Vec::new(),
            labels: Default::default(),
            draining: false,
        };
        assert!(matches!(
            encode(&hello).unwrap_err(),
            WireError::Oversized {
                max: WIRE_BYTES_MAX,
                ..
            }
        ));

        let mut bytes = vec![WIRE_VERSION];
        bytes.resize(WIRE_BYTES_MAX + 1, 0);
        assert_eq!(
            decode::<SlotCast>(&bytes).unwrap_err().to_string(),
            format!(
                "remote message of {} bytes is over the limit of {WIRE_BYTES_MAX} bytes",
                WIRE_BYTES_MAX + 1
            )
        );

        // A length inside the message that claims more than the limit is refused by bincode
        // before it allocates.
        let mut bytes = vec![WIRE_VERSION];
        bytes.push(253); // the worker name's length, a u64 in bincode's varint encoding
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let error = decode::<SlotHello>(&bytes).unwrap_err();
        assert!(
            matches!(&error, WireError::Decode(reason) if reason.contains("LimitExceeded")),
            "{error}"
        );
    }

    #[test]
    fn malformed_and_trailing_bytes_are_refused() {
        let error = decode::<SlotCast>(&[WIRE_VERSION, 9]).unwrap_err();
        assert!(matches!(error, WireError::Decode(_)), "{error}");
        let mut bytes = encode(&kill()).unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<SlotCast>(&bytes).unwrap_err(),
            WireError::Trailing(1)
        );
    }

    #[test]
    fn a_slot_message_becomes_a_serialized_cast_and_back() {
        let message = RemoteSlotMsg::Cast(kill());
        let serialized = message.serialize().unwrap();
        assert!(
            matches!(&serialized, SerializedMessage::Cast { variant, .. } if variant == SLOT_CAST)
        );
        match RemoteSlotMsg::deserialize(serialized) {
            Ok(RemoteSlotMsg::Cast(cast)) => assert_eq!(cast, kill()),
            _ => panic!("not the cast sent"),
        }
        let foreign = SerializedMessage::Cast {
            variant: SLOT_CAST.to_string(),
            args: vec![WIRE_VERSION + 1, 0],
            metadata: None,
        };
        assert!(RemoteSlotMsg::deserialize(foreign).is_err());
    }
}

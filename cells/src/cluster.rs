//! A `ractor_cluster` session carried by a [`Link`]: remote actors between a node and a worker.
//! Behind the `cluster` feature (`cells/Cargo.toml` says why it is off by default).
//!
//! - The worker dials the node (it opens the link, [`crate::link::Connector`]), then opens one
//!   channel of the link for the session. Its first frame is [`CLUSTER_HELLO`]; the node answers
//!   with one frame, the cookie of its `NodeServer`. From then on the channel's two QUIC streams
//!   carry `ractor_cluster`'s own framing (a `u64` length and a protobuf message), handed to
//!   each side's `NodeServer` through its external-transport API
//!   ([`ractor_cluster::ClusterBidiStream`]): the worker's side is the session's client
//!   ([`ractor_cluster::client_connect_external`]), the node's the server.
//! - Who the peer is comes from the link's certificate ([`Link::peer`]). `ractor_cluster`'s
//!   cookie challenge still runs, as it requires; the cookie is drawn at random when the node's
//!   `NodeServer` starts and reaches a worker only over a link, so only a holder of a
//!   certificate from the deployment's CA learns it. The name a side claims in the session
//!   (`NAME@ROLE`, [`session_name`]) must match the certificate of the link it came over: a
//!   session whose name differs is stopped once it authenticates.
//! - Every `NodeServer` also opens the TCP listener `ractor_cluster` always starts; it is
//!   bound to 127.0.0.1 on a port of the system's choosing, and is of no use without the cookie.
//! - Messages to remote actors ([`SlotMsg`]) are bincode 2 behind a version byte
//!   ([`WIRE_VERSION`]), at most [`WIRE_BYTES_MAX`] bytes ([`encode`], [`decode`]). A message
//!   that does not decode is logged and dropped; its call gets no reply.
//! - What `ractor_cluster` does not do: its pings only measure latency and never close a
//!   session; a message in flight when a session ends is lost, and a new session does not
//!   resend it. A dead peer is found by the link: the QUIC idle timeout
//!   ([`crate::link::LinkSettings::idle_timeout`]) closes the connection, the session's stream
//!   fails, and the session ends ([`SessionEvent::Closed`]).

use crate::certs::{Identity, Role};
use crate::link::{Link, LinkError, FRAME_BYTES_MAX};
use quinn::{RecvStream, SendStream};
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorRef, BytesConvertable, Message, RpcReplyPort};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    BoxRead, BoxWrite, ClusterBidiStream, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::sync::mpsc;

/// The version byte in front of every remote message, and the largest one (a link frame).
pub use weft_actors::wire::{decode, encode, WireError, WIRE_BYTES_MAX, WIRE_VERSION};
const _: () = assert!(WIRE_BYTES_MAX == FRAME_BYTES_MAX as usize);
/// The largest `ractor_cluster` frame a session accepts: a remote message and room for the
/// session's own envelope (names, ids).
pub const SESSION_FRAME_BYTES_MAX: u64 = FRAME_BYTES_MAX as u64 + 64 * 1024;
/// The first frame on the channel a worker opens for the session.
pub const CLUSTER_HELLO: &[u8] = b"ractor_cluster/1";
/// Time for the cookie exchange on the session's channel.
const COOKIE_EXCHANGE_MS_MAX: u64 = 10_000;
const COOKIE_BYTES: usize = 32;
const SUBSCRIPTION: &str = "weft-cells";

/// What a node asks a worker's slot: the arguments of a [`SlotMsg`] call on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotRequest {
    Ping { seq: u64 },
}

/// What a slot answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotReply {
    /// The `seq` of the ping, and the name of the worker that answered.
    Pong { seq: u64, worker: String },
}

/// `ractor`'s conversion for message parts; the trait cannot fail, so a malformed message
/// panics here. [`SlotMsg`] decodes through [`decode`] instead, which fails with a
/// [`WireError`].
impl BytesConvertable for SlotRequest {
    fn into_bytes(self) -> Vec<u8> {
        encode(&self).unwrap_or_else(|error| panic!("{error}"))
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        decode(&bytes).unwrap_or_else(|error| panic!("{error}"))
    }
}

impl BytesConvertable for SlotReply {
    fn into_bytes(self) -> Vec<u8> {
        encode(&self).unwrap_or_else(|error| panic!("{error}"))
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        decode(&bytes).unwrap_or_else(|error| panic!("{error}"))
    }
}

/// The message of a worker's slot actor, which a node reaches as a remote actor.
#[derive(Debug)]
pub enum SlotMsg {
    Ping {
        seq: u64,
        reply: RpcReplyPort<SlotReply>,
    },
}

impl SlotMsg {
    fn into_parts(self) -> (SlotRequest, RpcReplyPort<SlotReply>) {
        match self {
            SlotMsg::Ping { seq, reply } => (SlotRequest::Ping { seq }, reply),
        }
    }

    fn from_parts(request: SlotRequest, reply: RpcReplyPort<SlotReply>) -> SlotMsg {
        match request {
            SlotRequest::Ping { seq } => SlotMsg::Ping { seq, reply },
        }
    }
}

/// The `variant` of a slot call in `ractor`'s serialized messages.
pub const SLOT_CALL: &str = "slot";

impl Message for SlotMsg {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        let (request, reply) = self.into_parts();
        let args = encode(&request).map_err(|error| {
            tracing::warn!(%error, "slot message not sent");
            BoxedDowncastErr
        })?;
        Ok(SerializedMessage::Call {
            variant: SLOT_CALL.to_string(),
            args,
            reply: weft_actors::wire::reply_from_bytes(reply),
            metadata: None,
        })
    }

    fn deserialize(bytes: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        match bytes {
            SerializedMessage::Call {
                variant,
                args,
                reply,
                ..
            } if variant == SLOT_CALL => {
                let request = decode(&args).map_err(|error| {
                    tracing::warn!(%error, "slot message dropped");
                    BoxedDowncastErr
                })?;
                Ok(SlotMsg::from_parts(
                    request,
                    weft_actors::wire::reply_to_bytes(reply),
                ))
            }
            _ => {
                tracing::warn!("slot message dropped: not a slot call");
                Err(BoxedDowncastErr)
            }
        }
    }
}

/// The name a side goes by in `ractor_cluster` sessions: `NAME@ROLE` from its certificate.
pub fn session_name(identity: &Identity) -> String {
    format!("{}@{}", identity.name(), identity.role())
}

/// The two QUIC streams of a link channel as one `ractor_cluster` transport. The labels are
/// the identities from the link's certificates; the peer's label is what
/// [`SessionEvent::peer`] reports.
struct LinkStream {
    send: SendStream,
    recv: RecvStream,
    peer: Identity,
    local: Identity,
}

impl ClusterBidiStream for LinkStream {
    fn split(self: Box<Self>) -> (BoxRead, BoxWrite) {
        (Box::new(self.recv), Box::new(self.send))
    }

    fn peer_label(&self) -> Option<String> {
        Some(self.peer.uri())
    }

    fn local_label(&self) -> Option<String> {
        Some(self.local.uri())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot start the cluster node server: {0}")]
    Start(String),
    #[error("the cluster node server is gone: {0}")]
    Server(String),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("cluster session with {peer}: {reason}")]
    Refused { peer: Identity, reason: String },
}

/// What happened to a session, as `ractor_cluster` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEventKind {
    Opened,
    Authenticated,
    Ready,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub kind: SessionEventKind,
    /// The `ractor_cluster` node id of the session on this side (the node part of the ids of
    /// the peer's actors here).
    pub node_id: u64,
    /// The peer as the link's certificate names it.
    pub peer: String,
    /// The name the peer claimed in the session, once it has said it.
    pub name: Option<String>,
}

struct Events(mpsc::UnboundedSender<SessionEvent>);

impl Events {
    fn send(&self, kind: SessionEventKind, session: &NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent {
            kind,
            node_id: session.node_id,
            peer: session.peer_addr.clone(),
            name: session.peer_name.as_ref().map(|name| name.name.clone()),
        });
    }
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        self.send(SessionEventKind::Opened, &session);
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        self.send(SessionEventKind::Closed, &session);
    }

    fn node_session_authenticated(&self, session: NodeServerSessionInformation) {
        // The name claimed in the session must be the one the link's certificate gives.
        let claimed = session.peer_name.as_ref().map(|name| name.name.as_str());
        let expected = Identity::from_uri(&session.peer_addr)
            .ok()
            .map(|identity| session_name(&identity));
        if claimed.is_none() || claimed != expected.as_deref() {
            tracing::warn!(
                peer = %session.peer_addr,
                claimed = ?claimed,
                "cluster session refused: the name differs from the link's certificate"
            );
            session
                .actor
                .stop(Some("the session name differs from the certificate".into()));
            return;
        }
        self.send(SessionEventKind::Authenticated, &session);
    }

    fn node_session_ready(&self, session: NodeServerSessionInformation) {
        self.send(SessionEventKind::Ready, &session);
    }
}

/// A `ractor_cluster` `NodeServer` of this process, named after this side's certificate.
#[derive(Debug)]
pub struct ClusterNode {
    server: ActorRef<NodeServerMessage>,
    task: tokio::task::JoinHandle<()>,
    identity: Identity,
    cookie: String,
    events: mpsc::UnboundedReceiver<SessionEvent>,
}

impl ClusterNode {
    /// A node's `NodeServer`, with a cookie drawn at random; workers learn it over their links
    /// ([`ClusterNode::accept`]).
    pub async fn start_node(identity: &Identity) -> Result<ClusterNode, ClusterError> {
        let mut bytes = [0u8; COOKIE_BYTES];
        #[allow(deprecated)]
        rustls::crypto::ring::default_provider()
            .secure_random
            .fill(&mut bytes)
            .map_err(|error| ClusterError::Start(format!("no random cookie: {error:?}")))?;
        let cookie = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        ClusterNode::start(identity, cookie).await
    }

    async fn start(identity: &Identity, cookie: String) -> Result<ClusterNode, ClusterError> {
        let server = NodeServer::new(
            0,
            cookie.clone(),
            identity.name().to_string(),
            identity.role().to_string(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST))
        .with_max_inbound_frame_size(SESSION_FRAME_BYTES_MAX);
        let (server, task) = Actor::spawn(None, server, ())
            .await
            .map_err(|error| ClusterError::Start(error.to_string()))?;
        let (sender, events) = mpsc::unbounded_channel();
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: SUBSCRIPTION.to_string(),
                subscription: Box::new(Events(sender)),
            })
            .map_err(|error| ClusterError::Server(error.to_string()))?;
        Ok(ClusterNode {
            server,
            task,
            identity: identity.clone(),
            cookie,
            events,
        })
    }

    /// On the node: the session a worker opens over `link` ([`ClusterNode::join`]). Waits for
    /// the worker's channel, answers with the cookie, and hands the channel to the
    /// `NodeServer` as the server side of a session.
    pub async fn accept(&self, link: &Link) -> Result<(), ClusterError> {
        let peer = link.peer().clone();
        if self.identity.role() != Role::Node || peer.role() != Role::Worker {
            return Err(ClusterError::Refused {
                peer,
                reason: format!("{} does not accept sessions from it", self.identity),
            });
        }
        let exchange = async {
            let mut channel = link.accept().await?;
            match channel.recv().await? {
                Some(hello) if hello == CLUSTER_HELLO => {}
                _ => {
                    return Err(ClusterError::Refused {
                        peer: peer.clone(),
                        reason: "the session channel did not start with the cluster hello"
                            .to_string(),
                    })
                }
            }
            channel.send(self.cookie.as_bytes()).await?;
            Ok(channel)
        };
        let channel = self.exchange(&peer, exchange).await?;
        let (send, recv) = channel.into_streams();
        self.server
            .cast(NodeServerMessage::ConnectionOpenedExternal {
                stream: Box::new(LinkStream {
                    send,
                    recv,
                    peer,
                    local: self.identity.clone(),
                }),
                is_server: true,
            })
            .map_err(|error| ClusterError::Server(error.to_string()))
    }

    /// On a worker: opens the session channel on `link` (dialled to a node), learns the
    /// node's cookie, starts this worker's `NodeServer` with it and connects the session as
    /// its client. `identity` is this worker's, from its credentials.
    pub async fn join(link: &Link, identity: &Identity) -> Result<ClusterNode, ClusterError> {
        let peer = link.peer().clone();
        if identity.role() != Role::Worker || peer.role() != Role::Node {
            return Err(ClusterError::Refused {
                peer,
                reason: format!("{identity} joins nodes only"),
            });
        }
        let exchange = async {
            let mut channel = link.open().await?;
            channel.send(CLUSTER_HELLO).await?;
            let cookie = match channel.recv().await? {
                Some(cookie) => String::from_utf8(cookie).map_err(|_| ClusterError::Refused {
                    peer: peer.clone(),
                    reason: "the cookie is not text".to_string(),
                })?,
                None => {
                    return Err(ClusterError::Refused {
                        peer: peer.clone(),
                        reason: "the node closed the session channel".to_string(),
                    })
                }
            };
            Ok((channel, cookie))
        };
        let timeout = Duration::from_millis(COOKIE_EXCHANGE_MS_MAX);
        let (channel, cookie) = tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ClusterError::Refused {
                    peer: peer.clone(),
                    reason: format!("no cookie within {COOKIE_EXCHANGE_MS_MAX} ms"),
                })
            })?;
        let node = ClusterNode::start(identity, cookie).await?;
        let (send, recv) = channel.into_streams();
        ractor_cluster::client_connect_external(
            &node.server,
            Box::new(LinkStream {
                send,
                recv,
                peer,
                local: identity.clone(),
            }),
        )
        .await
        .map_err(|error| ClusterError::Server(error.to_string()))?;
        Ok(node)
    }

    async fn exchange<T>(
        &self,
        peer: &Identity,
        exchange: impl std::future::Future<Output = Result<T, ClusterError>>,
    ) -> Result<T, ClusterError> {
        tokio::time::timeout(Duration::from_millis(COOKIE_EXCHANGE_MS_MAX), exchange)
            .await
            .unwrap_or_else(|_| {
                Err(ClusterError::Refused {
                    peer: peer.clone(),
                    reason: format!("no cluster hello within {COOKIE_EXCHANGE_MS_MAX} ms"),
                })
            })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The `NodeServer` actor.
    pub fn server(&self) -> &ActorRef<NodeServerMessage> {
        &self.server
    }

    /// The session events from now on, for a task of their own (`next_event` then has none).
    pub fn take_events(&mut self) -> mpsc::UnboundedReceiver<SessionEvent> {
        let (_, closed) = mpsc::unbounded_channel();
        std::mem::replace(&mut self.events, closed)
    }

    /// The next session event; `None` once the `NodeServer` is gone.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.events.recv().await
    }

    /// Stops the `NodeServer` and its sessions, and waits for it.
    pub async fn stop(self) {
        self.server.stop(Some("stopped".to_string()));
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_messages_round_trip_behind_the_version_byte() {
        let request = SlotRequest::Ping { seq: 7 };
        let bytes = encode(&request).unwrap();
        assert_eq!(bytes[0], WIRE_VERSION);
        assert_eq!(decode::<SlotRequest>(&bytes).unwrap(), request);
        let reply = SlotReply::Pong {
            seq: 7,
            worker: "w1".to_string(),
        };
        assert_eq!(
            SlotReply::from_bytes(reply.clone().into_bytes()),
            reply,
            "through ractor's BytesConvertable too"
        );
    }

    #[test]
    fn the_session_name_comes_from_the_identity() {
        assert_eq!(session_name(&Identity::worker("w1").unwrap()), "w1@worker");
        assert_eq!(session_name(&Identity::node("n1").unwrap()), "n1@node");
    }
}

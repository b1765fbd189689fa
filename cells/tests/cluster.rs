//! A `ractor_cluster` session over a real QUIC link on 127.0.0.1. The worker runs in a process
//! of its own (this test binary run again with `WORKER_ENV` set, taking the worker's part of
//! the same test), so that its slot actor is remote to the node in every sense: the process
//! groups and actor ids of `ractor` are per process, and two `NodeServer`s in one process would
//! both see the slot as a local actor.

mod common;

use common::Deployment;
use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::RpcReplyPort;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use weft_cells::certs::Identity;
use weft_cells::cluster::{
    ClusterNode, SessionEvent, SessionEventKind, SlotMsg, SlotReply, SLOT_CALL, WIRE_VERSION,
};
use weft_cells::link::{Connector, Credentials, Link, LinkSettings, Listener};

const WAIT: Duration = Duration::from_secs(20);
const WORKER_ENV: &str = "WEFT_CELLS_CLUSTER_TEST_WORKER";
const SLOTS: &str = "weft-test-slots";

/// The tests' node sides take turns: `ractor`'s process groups and actor ids are per process,
/// and two `NodeServer`s in one process number their sessions alike, so two workers' slots
/// would be told apart by nothing.
static NODE_SIDE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.expect("timed out")
}

/// The link settings of both sides: a short idle timeout, so that a dead peer is found soon.
fn settings() -> LinkSettings {
    LinkSettings {
        keep_alive: Duration::from_millis(250),
        idle_timeout: Duration::from_secs(2),
        ..LinkSettings::default()
    }
}

/// The worker's slot: answers a ping with its `seq` and the worker's name.
struct Slot;

impl Actor for Slot {
    type Msg = SlotMsg;
    type State = String;
    type Arguments = String;

    async fn pre_start(
        &self,
        _: ActorRef<SlotMsg>,
        worker: String,
    ) -> Result<String, ActorProcessingErr> {
        Ok(worker)
    }

    async fn handle(
        &self,
        _: ActorRef<SlotMsg>,
        message: SlotMsg,
        worker: &mut String,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SlotMsg::Ping { seq, reply } => {
                let _ = reply.send(SlotReply::Pong {
                    seq,
                    worker: worker.clone(),
                });
            }
        }
        Ok(())
    }
}

/// The worker's part (in the child process): link to the node with `w1`'s certificate, join
/// the node's cluster over the link, serve a slot in the `SLOTS` group until the link closes.
async fn worker(spec: &str) {
    let (addr, dir) = spec.split_once('|').unwrap();
    let addr: SocketAddr = addr.parse().unwrap();
    let identity = Identity::worker("w1").unwrap();
    let credentials = Credentials::load(Path::new(dir), &identity).unwrap();
    let connector =
        Connector::bind("127.0.0.1:0".parse().unwrap(), &credentials, settings()).unwrap();
    let link = within(connector.connect(addr, "127.0.0.1")).await.unwrap();
    let (slot, _) = Actor::spawn(None, Slot, "w1".to_string()).await.unwrap();
    ractor::pg::join(SLOTS.to_string(), vec![slot.get_cell()]);
    let cluster = within(ClusterNode::join(&link, &identity)).await.unwrap();
    let reason = link.closed().await;
    eprintln!("worker: link closed: {reason}");
    cluster.stop().await;
}

/// This test binary again, running `test` as the worker.
fn spawn_worker(test: &str, addr: SocketAddr, deployment: &Deployment) -> tokio::process::Child {
    tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(
            WORKER_ENV,
            format!("{addr}|{}", deployment.path().display()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The node side of a test: a listener, the node's cluster, the worker's link and its session,
/// ready.
struct Node {
    cluster: ClusterNode,
    link: Link,
    session: SessionEvent,
    _listener: Listener,
    _deployment: Deployment,
}

async fn node_with_worker(test: &str) -> (Node, tokio::process::Child) {
    let deployment = Deployment::new();
    let listener = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &deployment.node(),
        settings(),
    )
    .unwrap();
    let mut cluster = ClusterNode::start_node(&Identity::node("n1").unwrap())
        .await
        .unwrap();
    let child = spawn_worker(test, listener.local_addr().unwrap(), &deployment);
    let link = within(async { listener.accept().await.unwrap().handshake().await })
        .await
        .unwrap();
    assert_eq!(link.peer(), &Identity::worker("w1").unwrap());
    within(cluster.accept(&link)).await.unwrap();
    let session = within(async {
        loop {
            let event = cluster.next_event().await.unwrap();
            if event.kind == SessionEventKind::Ready {
                return event;
            }
        }
    })
    .await;
    assert_eq!(
        session.peer, "weft://worker/w1",
        "from the link's certificate"
    );
    assert_eq!(session.name.as_deref(), Some("w1@worker"));
    let node = Node {
        cluster,
        link,
        session,
        _listener: listener,
        _deployment: deployment,
    };
    (node, child)
}

/// The worker's slot, as a remote actor of the node's session, once the group has it.
async fn remote_slot(session: &SessionEvent) -> ActorRef<SlotMsg> {
    let cell: ActorCell = within(async {
        loop {
            let found = ractor::pg::get_members(&SLOTS.to_string())
                .into_iter()
                .find(|member| {
                    !member.get_id().is_local() && member.get_id().node() == session.node_id
                });
            if let Some(cell) = found {
                return cell;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    cell.into()
}

/// A slot call whose arguments carry a wire version the worker does not read.
struct Foreign(RpcReplyPort<Vec<u8>>);

impl ractor::Message for Foreign {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        Ok(SerializedMessage::Call {
            variant: SLOT_CALL.to_string(),
            args: vec![WIRE_VERSION + 1, 0, 7],
            reply: self.0,
            metadata: None,
        })
    }
}

async fn ping(slot: &ActorRef<SlotMsg>, seq: u64, timeout: Duration) -> Option<SlotReply> {
    match slot
        .call(|reply| SlotMsg::Ping { seq, reply }, Some(timeout))
        .await
        .unwrap()
    {
        ractor::rpc::CallResult::Success(reply) => Some(reply),
        _ => None,
    }
}

async fn session_closed(cluster: &mut ClusterNode, node_id: u64) {
    within(async {
        loop {
            let event = cluster.next_event().await.unwrap();
            if event.kind == SessionEventKind::Closed && event.node_id == node_id {
                return;
            }
        }
    })
    .await
}

async fn slot_gone(session: &SessionEvent) {
    within(async {
        while ractor::pg::get_members(&SLOTS.to_string())
            .iter()
            .any(|member| member.get_id().node() == session.node_id)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_node_calls_a_worker_slot_over_the_link_and_the_session_ends_with_the_link() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return worker(&spec).await;
    }
    let _turn = NODE_SIDE.lock().await;
    let (mut node, mut child) = node_with_worker(
        "a_node_calls_a_worker_slot_over_the_link_and_the_session_ends_with_the_link",
    )
    .await;
    let slot = remote_slot(&node.session).await;
    for seq in 1..=3 {
        assert_eq!(
            within(ping(&slot, seq, WAIT)).await,
            Some(SlotReply::Pong {
                seq,
                worker: "w1".to_string()
            })
        );
    }

    // A message the worker cannot decode is dropped there: its call gets no reply, and the
    // session goes on.
    let foreign: ActorRef<Foreign> = slot.get_cell().into();
    let answer = within(foreign.call(Foreign, Some(Duration::from_millis(500)))).await;
    assert!(
        matches!(answer, Ok(ractor::rpc::CallResult::Timeout)),
        "{:?}",
        answer.map(|result| format!("{result:?}"))
    );
    assert_eq!(
        within(ping(&slot, 4, WAIT)).await,
        Some(SlotReply::Pong {
            seq: 4,
            worker: "w1".to_string()
        })
    );

    // The node closes the link: the session's streams fail at once, and the session ends.
    let closing = Instant::now();
    node.link.close("done");
    session_closed(&mut node.cluster, node.session.node_id).await;
    let took = closing.elapsed();
    eprintln!("session closed {took:?} after the link");
    assert!(took < Duration::from_secs(1), "{took:?}");
    slot_gone(&node.session).await;
    let status = within(child.wait()).await.unwrap();
    assert!(status.success(), "the worker exits when its link closes");
    node.cluster.stop().await;
}

#[tokio::test]
async fn a_killed_worker_is_found_by_the_link_idle_timeout_not_by_the_session() {
    if let Ok(spec) = std::env::var(WORKER_ENV) {
        return worker(&spec).await;
    }
    let _turn = NODE_SIDE.lock().await;
    let (mut node, mut child) =
        node_with_worker("a_killed_worker_is_found_by_the_link_idle_timeout_not_by_the_session")
            .await;
    let slot = remote_slot(&node.session).await;
    assert!(within(ping(&slot, 1, WAIT)).await.is_some());

    // The worker dies without a word: nothing closes the QUIC connection, and the session's
    // own pings do not end it. A call in the meantime is lost, not refused.
    child.start_kill().unwrap();
    within(child.wait()).await.unwrap();
    let killed = Instant::now();
    assert_eq!(
        within(ping(&slot, 2, Duration::from_millis(300))).await,
        None,
        "a call to the dead worker gets no answer"
    );
    assert!(
        node.link.connection().close_reason().is_none(),
        "the link is still up {:?} after the kill",
        killed.elapsed()
    );

    // The QUIC idle timeout (2 s here) closes the link, and then the session ends.
    let reason = within(node.link.closed()).await;
    assert!(
        matches!(reason, quinn::ConnectionError::TimedOut),
        "{reason}"
    );
    session_closed(&mut node.cluster, node.session.node_id).await;
    let took = killed.elapsed();
    eprintln!("session closed {took:?} after the worker was killed");
    let idle = settings().idle_timeout;
    assert!(
        took >= idle / 2 && took < idle + Duration::from_secs(3),
        "{took:?}"
    );
    slot_gone(&node.session).await;
    node.cluster.stop().await;
}

#[tokio::test]
async fn a_session_whose_name_differs_from_the_certificate_is_stopped() {
    // Both sides in this process: no process group is involved.
    let _turn = NODE_SIDE.lock().await;
    let deployment = Deployment::new();
    let listener = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &deployment.node(),
        settings(),
    )
    .unwrap();
    let mut cluster = ClusterNode::start_node(&Identity::node("n1").unwrap())
        .await
        .unwrap();
    let identity = Identity::worker("w1").unwrap();
    let credentials = Credentials::load(deployment.path(), &identity).unwrap();
    let connector =
        Connector::bind("127.0.0.1:0".parse().unwrap(), &credentials, settings()).unwrap();
    let (worker_link, node_link) = within(async {
        tokio::join!(
            connector.connect(listener.local_addr().unwrap(), "127.0.0.1"),
            async { listener.accept().await.unwrap().handshake().await }
        )
    })
    .await;
    let (worker_link, node_link) = (worker_link.unwrap(), node_link.unwrap());
    // The worker holds w1's certificate but names itself w2 in the session.
    let claimed = Identity::worker("w2").unwrap();
    let (accepted, joined) = within(async {
        tokio::join!(
            cluster.accept(&node_link),
            ClusterNode::join(&worker_link, &claimed)
        )
    })
    .await;
    accepted.unwrap();
    let worker_cluster = joined.unwrap();
    let events = within(async {
        let mut events = Vec::new();
        loop {
            let event = cluster.next_event().await.unwrap();
            let kind = event.kind.clone();
            events.push(event);
            if kind == SessionEventKind::Closed {
                return events;
            }
        }
    })
    .await;
    assert!(
        events
            .iter()
            .all(|event| event.kind != SessionEventKind::Authenticated),
        "{events:?}"
    );
    let closed = events.last().unwrap();
    assert_eq!(closed.peer, "weft://worker/w1");
    assert_eq!(closed.name.as_deref(), Some("w2@worker"));
    worker_cluster.stop().await;
    cluster.stop().await;
}

//! A link emulator: relays that sit between two processes on one machine and give the link
//! between them latency, loss and partitions.
//!
//! # What it is for
//!
//! Tests, benchmarks and the local multi-region set-up need the links between nodes to behave
//! like links between regions: tens of milliseconds each way, sometimes lossy, sometimes cut.
//! The usual tool for that, `tc qdisc ... netem`, needs a kernel that has the netem queueing
//! discipline and the right to change the qdisc of an interface; the kernel here refuses it.
//! So each link is a user-space relay instead: a process talks to the relay's `listen` address,
//! and the relay forwards to the real `target` address, holding, dropping or releasing traffic
//! as the link's [`LinkSettings`] say. Settings change at once while the link runs.
//!
//! Use it in-process from Rust tests and benchmarks with [`start`], or run the `weft-linkemu`
//! binary, which opens the links given on its command line and serves a small line-based
//! control protocol ([`control`]) to change them from a script.
//!
//! # The model
//!
//! - **Delay** is one-way and applied in both directions: a `delay` of 20 ms gives a round trip
//!   of 40 ms. Each datagram (UDP) or chunk read from a socket (TCP) is stamped when the relay
//!   receives it and released at `received_at + delay`, where `delay` is the link's delay at the
//!   moment of release; since every item of a flow waits for the same delay, order within a flow
//!   is kept. Changing the delay takes effect at once, also for items already waiting.
//! - **Loss** (UDP only; ignored for TCP, which would only retransmit) drops each datagram, in
//!   either direction, with the given probability. The dice are a small xorshift generator
//!   seeded from the link's name, so a run is repeatable as far as arrival order is.
//! - **Blackhole** cuts the link without closing anything:
//!   - UDP: every datagram is dropped in both directions, including those already waiting
//!     for their delay. Flows are kept, so traffic resumes on the same flow when healed.
//!   - TCP: nothing is forwarded in either direction. Bytes read so far are held (at most
//!     [`TCP_BUFFER_BYTES`] per direction and connection; past that the relay stops reading,
//!     so TCP's own backpressure reaches the sender), and newly accepted connections are held
//!     before connecting upstream. When healed, the held bytes and connections go on.
//! - **Reset** ([`Link::reset_all`]) closes every current TCP connection with a reset, like a
//!   cut that kills connections. For UDP it forgets every flow, so the next datagram of a
//!   client comes from a new upstream port, like a NAT that lost its mappings.
//!
//! # UDP flows
//!
//! The relay has one socket bound to `listen`. For each client source address it opens a
//! separate upstream socket on an ephemeral port (same address family as the target) connected
//! to `target`, so the target sees one peer per client, as QUIC needs. Replies are sent back
//! from the `listen` socket to that client. At most [`UDP_MAX_FLOWS`] flows exist at once;
//! a flow idle for [`UDP_IDLE_TIMEOUT`] is forgotten.
//!
//! # Limits
//!
//! - Every buffer is bounded: a datagram that finds its link's queue full
//!   ([`UDP_QUEUE_BYTES`] per link, [`UDP_QUEUE_PACKETS`] per flow and direction) is dropped
//!   and counted as dropped; TCP stops reading instead.
//! - Delay has no jitter and no bandwidth limit; timers have millisecond resolution and a
//!   loaded machine adds its own scheduling delay on top (the delay is a lower bound).
//! - TCP connection set-up does not pay the round trip: the client's `connect` completes at
//!   once against the relay, and only the bytes exchanged afterwards are delayed.
//! - Loss applies to UDP only; TCP under loss would just be slower, which delay models.
//! - The relay rewrites addresses: the target sees the relay's upstream address, not the
//!   client's.
//! - The control protocol of the binary has no authentication: bind it to a loopback address.

pub mod control;
mod gate;
mod rng;
mod tcp;
mod udp;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// At most this many UDP flows (client source addresses) per link at once.
pub const UDP_MAX_FLOWS: usize = 1024;
/// A UDP flow with no datagram in either direction for this long is forgotten.
pub const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of datagrams a UDP link holds waiting for their delay, over all its flows.
pub const UDP_QUEUE_BYTES: usize = 16 * 1024 * 1024;
/// Datagrams a UDP flow holds waiting for their delay, per direction.
pub const UDP_QUEUE_PACKETS: usize = 1024;
/// Bytes a TCP connection holds per direction (waiting for the delay or a healed blackhole).
pub const TCP_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// At most this many TCP connections per link at once; further ones wait in the listen backlog.
pub const TCP_MAX_CONNECTIONS: usize = 1024;
/// The longest delay a link accepts.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The transport a link relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// Datagrams, one upstream socket per client address (QUIC runs over it).
    Udp,
    /// Byte streams, one upstream connection per accepted connection.
    Tcp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        })
    }
}

/// How a link treats its traffic; see the crate documentation for the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkSettings {
    /// One-way delay, applied in each direction.
    pub delay: Duration,
    /// Percentage (0 to 100) of datagrams dropped in each direction; UDP only, ignored for TCP.
    pub loss_percent: f64,
    /// Cut the link: UDP drops everything, TCP holds everything.
    pub blackhole: bool,
}

impl Default for LinkSettings {
    /// No delay, no loss, open.
    fn default() -> Self {
        LinkSettings {
            delay: Duration::ZERO,
            loss_percent: 0.0,
            blackhole: false,
        }
    }
}

impl LinkSettings {
    /// Checks that the loss is a percentage and the delay at most [`MAX_DELAY`].
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=100.0).contains(&self.loss_percent) {
            bail!(
                "loss must be a percentage from 0 to 100, not {}",
                self.loss_percent
            );
        }
        if self.delay > MAX_DELAY {
            bail!(
                "delay {:?} is longer than the longest allowed, {:?}",
                self.delay,
                MAX_DELAY
            );
        }
        Ok(())
    }
}

impl fmt::Display for LinkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "delay={} loss={} blackhole={}",
            control::format_duration(self.delay),
            self.loss_percent,
            if self.blackhole { "on" } else { "off" }
        )
    }
}

/// Traffic counts of one direction of a link, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirStats {
    /// Datagrams (UDP) or chunks (TCP) forwarded.
    pub packets: u64,
    /// Bytes forwarded.
    pub bytes: u64,
    /// Datagrams or chunks dropped: lost, blackholed, over a full queue, or discarded with a
    /// reset or failed connection.
    pub dropped_packets: u64,
    /// Bytes of the dropped datagrams or chunks.
    pub dropped_bytes: u64,
}

/// Traffic counts of a link, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// From the clients (the `listen` side) to the target.
    pub to_target: DirStats,
    /// From the target back to the clients.
    pub to_client: DirStats,
    /// UDP flows or TCP connections open now.
    pub flows: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flows={}", self.flows)?;
        for (name, d) in [("to_target", self.to_target), ("to_client", self.to_client)] {
            write!(
                f,
                " {name}.packets={} {name}.bytes={} {name}.dropped_packets={} {name}.dropped_bytes={}",
                d.packets, d.bytes, d.dropped_packets, d.dropped_bytes
            )?;
        }
        Ok(())
    }
}

/// Live counters of one direction, shared by a link's tasks.
#[derive(Debug, Default)]
pub(crate) struct DirCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped_packets: AtomicU64,
    dropped_bytes: AtomicU64,
}

impl DirCounters {
    pub(crate) fn forwarded(&self, len: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, len: usize) {
        self.dropped_packets.fetch_add(1, Ordering::Relaxed);
        self.dropped_bytes.fetch_add(len as u64, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirStats {
        DirStats {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped_packets: self.dropped_packets.load(Ordering::Relaxed),
            dropped_bytes: self.dropped_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Live counters of a link, shared by its tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) to_target: DirCounters,
    pub(crate) to_client: DirCounters,
    pub(crate) flows: AtomicU64,
}

/// What a link's tasks share with its handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: watch::Sender<LinkSettings>,
    /// Bumped by [`Link::reset_all`]; tasks watching it close their connections or flows.
    pub(crate) resets: watch::Sender<u64>,
    /// Set by [`Link::shutdown`]: the relay closes its flows and returns.
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) counters: Counters,
}

/// A running link. Dropping it (or [`Link::shutdown`]) stops its relay and closes its sockets.
#[derive(Debug)]
pub struct Link {
    name: String,
    proto: Proto,
    local_addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// Starts a link named `name` relaying `proto` traffic from `listen` to `target`.
///
/// `listen` may have port 0; [`Link::local_addr`] tells the port bound. Returns once the relay
/// listens.
pub async fn start(
    name: &str,
    proto: Proto,
    listen: SocketAddr,
    target: SocketAddr,
    settings: LinkSettings,
) -> anyhow::Result<Link> {
    settings
        .validate()
        .with_context(|| format!("link {name}: bad settings"))?;
    let shared = Arc::new(Shared {
        settings: watch::Sender::new(settings),
        resets: watch::Sender::new(0),
        stop: watch::Sender::new(false),
        counters: Counters::default(),
    });
    let seed = rng::seed_from(name);
    let (local_addr, task) = match proto {
        Proto::Udp => udp::spawn(listen, target, shared.clone(), seed).await,
        Proto::Tcp => tcp::spawn(listen, target, shared.clone()).await,
    }
    .with_context(|| format!("link {name}: cannot listen on {proto} {listen}"))?;
    tracing::debug!(link = name, %proto, %local_addr, %target, "link started");
    Ok(Link {
        name: name.to_owned(),
        proto,
        local_addr,
        target,
        shared,
        task: Some(task),
    })
}

impl Link {
    /// The link's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The transport the link relays.
    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The address the relay listens on: clients talk to this one.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address traffic is relayed to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Changes the link's settings; they apply at once to every flow, including traffic
    /// already waiting in the relay.
    pub fn set(&self, settings: LinkSettings) -> anyhow::Result<()> {
        settings
            .validate()
            .with_context(|| format!("link {}: bad settings", self.name))?;
        self.shared.settings.send_replace(settings);
        Ok(())
    }

    /// The link's current settings.
    pub fn settings(&self) -> LinkSettings {
        *self.shared.settings.borrow()
    }

    /// Traffic counts since the link started.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            to_target: c.to_target.snapshot(),
            to_client: c.to_client.snapshot(),
            flows: c.flows.load(Ordering::Relaxed),
        }
    }

    /// Closes every current TCP connection with a reset (for UDP: forgets every flow).
    /// The link itself goes on accepting.
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Stops the link and waits until its flows and sockets are closed.
    pub async fn shutdown(mut self) {
        self.shared.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(link = %self.name, "relay task failed: {e}");
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

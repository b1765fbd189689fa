//! The UDP relay: one socket on `listen`, one upstream socket per client address.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::{interval, Instant, MissedTickBehavior};

use crate::gate::{next_due, Dir, OnBlackhole, Packet};
use crate::rng::XorShift;
use crate::{Shared, UDP_IDLE_TIMEOUT, UDP_MAX_FLOWS, UDP_QUEUE_BYTES, UDP_QUEUE_PACKETS};

/// Room for the largest datagram.
const MAX_DATAGRAM: usize = 65_536;
/// How often idle flows are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Binds `listen` and starts the relay; returns the bound address and the relay's task.
pub(crate) async fn spawn(
    listen: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    seed: u64,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let socket = UdpSocket::bind(listen).await?;
    let local = socket.local_addr()?;
    let relay = Relay {
        socket: Arc::new(socket),
        target,
        shared,
        budget: Arc::new(Semaphore::new(UDP_QUEUE_BYTES)),
        flows: HashMap::new(),
        tasks: JoinSet::new(),
        rng: XorShift::new(seed),
        seed,
        flows_made: 0,
        epoch: Instant::now(),
    };
    Ok((local, tokio::spawn(relay.run())))
}

/// The relay's state, owned by its task.
struct Relay {
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    shared: Arc<Shared>,
    /// Bytes of datagrams waiting for their delay, over all flows and both directions.
    budget: Arc<Semaphore>,
    flows: HashMap<SocketAddr, Flow>,
    /// The flows' tasks; dropping the set stops them all.
    tasks: JoinSet<()>,
    /// Dice for the client-to-target direction (each flow has its own for the way back).
    rng: XorShift,
    seed: u64,
    flows_made: u64,
    /// The origin of the flows' activity clocks.
    epoch: Instant,
}

/// A client address's flow: the queue towards the target, and the task that runs the rest.
struct Flow {
    to_target: mpsc::Sender<Packet>,
    /// Milliseconds from the relay's epoch to the flow's last datagram, either way.
    last_active: Arc<AtomicU64>,
    task: AbortHandle,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a flow's task needs.
struct FlowParts {
    client: SocketAddr,
    upstream: UdpSocket,
    listen: Arc<UdpSocket>,
    to_target: mpsc::Receiver<Packet>,
    shared: Arc<Shared>,
    budget: Arc<Semaphore>,
    rng: XorShift,
    last_active: Arc<AtomicU64>,
    epoch: Instant,
}

impl Relay {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut stop = self.shared.stop.subscribe();
        let mut resets = self.shared.resets.subscribe();
        let mut sweep = interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.on_client_datagram(&buf[..n], from),
                    Err(e) => {
                        tracing::debug!("udp relay on {:?}: receive failed: {e}", self.socket.local_addr());
                        // Do not spin on a socket error that repeats.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = sweep.tick() => self.evict_idle(),
                Some(_) = self.tasks.join_next() => {}
                _ = resets.changed() => self.flows.clear(),
                _ = stop.changed() => break,
            }
            self.shared
                .counters
                .flows
                .store(self.flows.len() as u64, Ordering::Relaxed);
        }
        self.flows.clear();
        self.tasks.shutdown().await;
        self.shared.counters.flows.store(0, Ordering::Relaxed);
    }

    /// Queues a datagram from `from` towards the target, on `from`'s flow.
    fn on_client_datagram(&mut self, data: &[u8], from: SocketAddr) {
        let Some(packet) = admit(
            data,
            &self.shared,
            &self.budget,
            &mut self.rng,
            Dir::ToTarget,
        ) else {
            return;
        };
        let now = self.millis();
        let Some(flow) = self.flow_for(from) else {
            return; // `packet` counts itself as dropped
        };
        flow.last_active.store(now, Ordering::Relaxed);
        // A full queue drops the datagram, which counts itself as dropped.
        let _ = flow.to_target.try_send(packet);
    }

    /// The flow of client `from`, made if new; `None` if there is no room or no socket for it.
    fn flow_for(&mut self, from: SocketAddr) -> Option<&Flow> {
        if !self.flows.contains_key(&from) {
            if self.flows.len() >= UDP_MAX_FLOWS {
                self.evict_idle();
            }
            if self.flows.len() >= UDP_MAX_FLOWS {
                tracing::warn!("udp relay to {}: {UDP_MAX_FLOWS} flows open, dropping a datagram from new client {from}", self.target);
                return None;
            }
            match self.new_flow(from) {
                Ok(flow) => {
                    self.flows.insert(from, flow);
                }
                Err(e) => {
                    tracing::warn!(
                        "udp relay to {}: no upstream socket for client {from}: {e}",
                        self.target
                    );
                    return None;
                }
            }
        }
        self.flows.get(&from)
    }

    /// Opens the upstream socket of client `from` and starts its flow's task.
    fn new_flow(&mut self, from: SocketAddr) -> io::Result<Flow> {
        let upstream = upstream_socket(self.target)?;
        let (to_target, to_target_rx) = mpsc::channel(UDP_QUEUE_PACKETS);
        let last_active = Arc::new(AtomicU64::new(self.millis()));
        self.flows_made += 1;
        let parts = FlowParts {
            client: from,
            upstream,
            listen: self.socket.clone(),
            to_target: to_target_rx,
            shared: self.shared.clone(),
            budget: self.budget.clone(),
            rng: XorShift::for_flow(self.seed, self.flows_made),
            last_active: last_active.clone(),
            epoch: self.epoch,
        };
        let task = self.tasks.spawn(run_flow(parts));
        Ok(Flow {
            to_target,
            last_active,
            task,
        })
    }

    /// Forgets flows without a datagram for [`UDP_IDLE_TIMEOUT`].
    fn evict_idle(&mut self) {
        let now = self.millis();
        let idle = UDP_IDLE_TIMEOUT.as_millis() as u64;
        self.flows
            .retain(|_, flow| now.saturating_sub(flow.last_active.load(Ordering::Relaxed)) < idle);
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// A socket on an ephemeral port of the target's address family, connected to the target.
fn upstream_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(target)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// Applies the link's blackhole and loss to a datagram just received, and takes its room in
/// the queue; `None` (counted as dropped) if it does not go on.
fn admit(
    data: &[u8],
    shared: &Arc<Shared>,
    budget: &Arc<Semaphore>,
    rng: &mut XorShift,
    dir: Dir,
) -> Option<Packet> {
    let settings = *shared.settings.borrow();
    let lost = settings.blackhole || rng.chance(settings.loss_percent);
    let room = u32::try_from(data.len())
        .ok()
        .and_then(|n| budget.clone().try_acquire_many_owned(n).ok());
    match room {
        Some(room) if !lost => Some(Packet::new(data.to_vec(), room, shared.clone(), dir)),
        _ => {
            shared.counters(dir).dropped(data.len());
            None
        }
    }
}

/// Runs a flow: sends queued datagrams to the target when due, and relays the target's
/// replies back to the client through their own queue.
async fn run_flow(parts: FlowParts) {
    let FlowParts {
        client,
        upstream,
        listen,
        mut to_target,
        shared,
        budget,
        mut rng,
        last_active,
        epoch,
    } = parts;
    let (to_client_tx, mut to_client) = mpsc::channel(UDP_QUEUE_PACKETS);

    let mut settings = shared.settings.subscribe();
    let send_up = async {
        while let Some(packet) = next_due(&mut to_target, &mut settings, OnBlackhole::Drop).await {
            match upstream.send(&packet.data).await {
                Ok(_) => packet.delivered(),
                Err(e) => tracing::debug!("udp flow {client}: send to target failed: {e}"),
            }
        }
    };

    let receive_up = async {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            match upstream.recv(&mut buf).await {
                Ok(n) => {
                    last_active.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if let Some(packet) =
                        admit(&buf[..n], &shared, &budget, &mut rng, Dir::ToClient)
                    {
                        // A full queue drops the datagram, which counts itself as dropped.
                        let _ = to_client_tx.try_send(packet);
                    }
                }
                // A connected UDP socket reports an ICMP "port unreachable" from the target as
                // an error on a later call; the flow goes on, as the client's would.
                Err(e) => {
                    tracing::debug!("udp flow {client}: receive from target failed: {e}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    };

    let mut settings_back = shared.settings.subscribe();
    let send_back = async {
        while let Some(packet) =
            next_due(&mut to_client, &mut settings_back, OnBlackhole::Drop).await
        {
            match listen.send_to(&packet.data, client).await {
                Ok(_) => packet.delivered(),
                Err(e) => tracing::debug!("udp flow {client}: send to client failed: {e}"),
            }
        }
    };

    tokio::join!(send_up, receive_up, send_back);
}

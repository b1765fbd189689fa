//! Holding traffic until its link lets it go: the delay and the blackhole, shared by UDP and
//! TCP.

use std::sync::Arc;

use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{sleep_until, Instant};

use crate::{DirCounters, LinkSettings, Shared};

/// A direction of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    /// From a client to the target.
    ToTarget,
    /// From the target back to a client.
    ToClient,
}

impl Shared {
    pub(crate) fn counters(&self, dir: Dir) -> &DirCounters {
        match dir {
            Dir::ToTarget => &self.counters.to_target,
            Dir::ToClient => &self.counters.to_client,
        }
    }
}

/// A datagram or chunk on its way. It holds its share of the queue's byte budget until it is
/// gone, and counts itself as dropped unless it was delivered.
#[derive(Debug)]
pub(crate) struct Packet {
    pub(crate) data: Vec<u8>,
    pub(crate) received_at: Instant,
    _budget: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    dir: Dir,
    delivered: bool,
}

impl Packet {
    pub(crate) fn new(
        data: Vec<u8>,
        budget: OwnedSemaphorePermit,
        shared: Arc<Shared>,
        dir: Dir,
    ) -> Self {
        Packet {
            data,
            received_at: Instant::now(),
            _budget: budget,
            shared,
            dir,
            delivered: false,
        }
    }

    /// Counts the packet as forwarded and lets it go.
    pub(crate) fn delivered(mut self) {
        self.delivered = true;
        self.shared.counters(self.dir).forwarded(self.data.len());
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        if !self.delivered {
            self.shared.counters(self.dir).dropped(self.data.len());
        }
    }
}

/// What a blackholed link does with traffic that is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnBlackhole {
    /// Drop it (UDP).
    Drop,
    /// Hold it until the link heals (TCP).
    Hold,
}

/// The next packet of `queue` once it is due, in order; packets the link drops on the way
/// are dropped (and counted) here. `None` once the queue is closed and empty.
pub(crate) async fn next_due(
    queue: &mut mpsc::Receiver<Packet>,
    settings: &mut watch::Receiver<LinkSettings>,
    on_blackhole: OnBlackhole,
) -> Option<Packet> {
    loop {
        let packet = queue.recv().await?;
        if wait_release(packet.received_at, settings, on_blackhole).await {
            return Some(packet);
        }
    }
}

/// Waits until traffic received at `received_at` may go on: true once the link's current delay
/// has passed and the link is open, false if the link drops it. Follows setting changes while
/// it waits.
async fn wait_release(
    received_at: Instant,
    settings: &mut watch::Receiver<LinkSettings>,
    on_blackhole: OnBlackhole,
) -> bool {
    loop {
        let now = *settings.borrow_and_update();
        if now.blackhole {
            if on_blackhole == OnBlackhole::Drop {
                return false;
            }
        } else {
            // The delay is validated to be at most `MAX_DELAY`, so this cannot overflow; if it
            // did, releasing at once is the harmless answer.
            let due = received_at.checked_add(now.delay).unwrap_or(received_at);
            if Instant::now() >= due {
                return true;
            }
            tokio::select! {
                () = sleep_until(due) => continue,
                changed = settings.changed() => if changed.is_err() { return false },
            }
            continue;
        }
        // Held by the blackhole until the settings change.
        if settings.changed().await.is_err() {
            return false;
        }
    }
}

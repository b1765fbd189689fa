//! Remote worker slots: workers in other processes, reached over a QUIC link, each connection a
//! session (see the header of `sim.rs` for the protocol as modelled).
//!
//! Steady heartbeats are not simulated: while a session is healthy (worker up and not paused,
//! link up, node up) a poll reply that carries no report changes nothing, so only replies that
//! carry reports (and the drain notice) are messages. When a session falls silent, the times
//! the steady exchange would have left behind are drawn: the worker heard its last poll up to
//! a heartbeat (plus latency) before, and the node its last reply one link latency before that.
//! The worker's lease and the node's idle timeout count from those.

use super::*;

/// A slot answers a poll after this long when it holds no unacknowledged report.
pub const HEARTBEAT_MS: u64 = 1_000;
/// A worker stops its attempts once it has heard no poll for this long.
pub const LEASE_MS: u64 = 2_500;
/// The node treats a session as left once it has heard nothing on it for this long (QUIC's
/// idle timeout). Longer than the lease, so an orphan stops before its retry can start.
pub const IDLE_TIMEOUT_MS: u64 = 3_500;
/// The node polls a slot again when the reply to its poll was lost.
pub const REPOLL_MS: u64 = 1_500;
/// Remote workers per seed, and slots per remote worker, at most.
pub const REMOTE_WORKERS_MAX: u64 = 3;
pub const REMOTE_SLOTS_MAX: u64 = 4;
/// Faults (cut, death, pause, drain) per remote worker per seed, at most.
pub const REMOTE_FAULTS_MAX: u64 = 4;
/// The queue some tasks name when a seed has remote workers (the local worker serves every
/// queue, so nothing waits for a remote worker that is gone).
pub const REMOTE_QUEUE: &str = "remote";
/// Link latency bounds, and the detour of a delayed link message (reorders within a session).
const LINK_LATENCY_MS_MAX: u64 = 20;
const LINK_DETOUR_MS_MAX: u64 = 500;
/// When a worker is cut off, dies or pauses, a copy of its last reply with reports may be held
/// up on the path and arrive this late (past the idle timeout: the node has left the session,
/// the worker may have joined again), per mille of such faults.
const LATE_REPLY_PER_MILLE: u32 = 500;
const LATE_REPLY_MS_MAX: u64 = 30_000;
/// A worker whose session ended tries to connect again after up to this long.
const RECONNECT_MS_MAX: u64 = 2_000;
/// How long a cut lasts, at least the lease (a shorter cut would be hidden by QUIC), and at
/// most; how long a pause lasts (shorter and longer than the lease and the idle timeout).
const CUT_MS_MAX: u64 = 120_000;
const PAUSE_MS_MAX: u64 = 20_000;
/// How long a dead or drained worker stays away before it starts again (when it does).
const AWAY_MS_MAX: u64 = 300_000;

/// One remote worker process as the world sees it (not the node's view of it).
#[derive(Debug, Clone)]
pub(super) struct RemoteWorker {
    pub name: String,
    pub slots: u32,
    /// The queues it serves; empty means every queue.
    pub queues: Vec<String>,
    /// The history's slot number of its slot 0.
    pub first_slot: usize,
    pub alive: bool,
    pub paused: bool,
    pub link_up: bool,
    /// Grows at every cut: what was in flight on the link when it broke is lost.
    pub link_gen: u64,
    pub draining: bool,
    pub session: Option<WorkerSession>,
    /// Messages that reached it while it was paused, processed when it resumes.
    pub inbox: Vec<LinkMessage>,
    /// When it last heard a poll, set when its session falls silent.
    pub last_poll: Timestamp,
    /// A reconnect attempt is scheduled.
    pub reconnecting: bool,
    /// When draining: how long until it starts again once it has left, if it does.
    pub drain_restart: Option<u64>,
    /// The last reply it sent that carried reports.
    pub last_reply: Option<LinkMessage>,
}

/// The worker's side of a session.
#[derive(Debug, Clone)]
pub(super) struct WorkerSession {
    pub id: u64,
    /// The node incarnation it joined.
    pub epoch: u64,
    pub slots: Vec<WorkerSlot>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct WorkerSlot {
    /// The highest Assign seq seen.
    pub seen_seq: u64,
    /// The simulated attempt it runs.
    pub running: Option<u64>,
    /// Reports not yet acknowledged by a poll, by report seq.
    pub reports: Vec<(u64, Report)>,
    pub next_report: u64,
    /// A poll is waiting for something to report (or the heartbeat).
    pub holding_poll: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Report {
    Started {
        attempt: AttemptId,
    },
    Finished {
        attempt: AttemptId,
        outcome: AttemptOutcome,
        started_at: Timestamp,
    },
}

impl Report {
    fn attempt(&self) -> &AttemptId {
        match self {
            Report::Started { attempt } | Report::Finished { attempt, .. } => attempt,
        }
    }
}

/// The node's side of a session (in node memory, lost with a crash).
#[derive(Debug, Clone)]
pub(super) struct NodeSession {
    pub id: u64,
    pub slots: Vec<NodeSlot>,
    pub draining: bool,
}

#[derive(Debug, Clone, Default)]
pub(super) struct NodeSlot {
    pub next_seq: u64,
    /// The attempt the dispatcher placed here, with its Assign seq.
    pub running: Option<(AttemptId, u64)>,
    /// The highest report seq processed.
    pub processed: u64,
}

/// Where a simulated attempt runs when it runs on a remote slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RemotePlace {
    pub worker: usize,
    pub slot: u32,
    /// `None`: an orphan whose session is gone (only when the lease is ignored).
    pub session: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum LinkMessage {
    /// Node -> slot.
    Assign {
        epoch: u64,
        session: u64,
        slot: u32,
        seq: u64,
        request: DispatchRequest,
    },
    Kill {
        epoch: u64,
        session: u64,
        slot: u32,
        attempt: AttemptId,
    },
    Poll {
        epoch: u64,
        session: u64,
        slot: u32,
        ack: u64,
    },
    /// Slot -> node: a poll's reply, also the slot's heartbeat.
    Reply {
        session: u64,
        slot: u32,
        reports: Vec<(u64, Report)>,
        running: Option<AttemptId>,
        assigned_seq: u64,
        draining: bool,
    },
    /// Worker -> node: drained, closing the session.
    Bye { session: u64 },
}

impl LinkMessage {
    fn to_node(&self) -> bool {
        matches!(self, LinkMessage::Reply { .. } | LinkMessage::Bye { .. })
    }

    fn describe(&self, worker: &str) -> String {
        match self {
            LinkMessage::Assign { seq, request, .. } => {
                format!("assign {} seq {seq} to {worker}", request.attempt)
            }
            LinkMessage::Kill { attempt, .. } => format!("kill {attempt} on {worker}"),
            LinkMessage::Poll { ack, .. } => format!("poll {worker} ack {ack}"),
            LinkMessage::Reply { reports, .. } => {
                format!("reply of {worker} with {} report(s)", reports.len())
            }
            LinkMessage::Bye { .. } => format!("bye of {worker}"),
        }
    }
}

/// Faults of remote workers and their links, and the timers of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RemoteEvent {
    /// The link breaks for `ms` (at least the lease).
    Cut {
        worker: usize,
        ms: u64,
    },
    Heal {
        worker: usize,
    },
    /// The worker process dies; it starts again after `restart_ms` if some.
    Die {
        worker: usize,
        restart_ms: Option<u64>,
    },
    Start {
        worker: usize,
    },
    /// SIGSTOP for `ms`, then SIGCONT.
    Pause {
        worker: usize,
        ms: u64,
    },
    Resume {
        worker: usize,
    },
    /// The worker drains, leaves once idle, and starts again after `restart_ms` if some.
    Drain {
        worker: usize,
        restart_ms: Option<u64>,
    },
    /// The worker heard no poll for the lease.
    LeaseExpired {
        worker: usize,
        session: u64,
    },
    /// The node heard nothing on the session for the idle timeout.
    IdleTimeout {
        epoch: u64,
        worker: usize,
        session: u64,
    },
    Reconnect {
        worker: usize,
    },
    /// The node polls again: the reply to its last poll was lost.
    Repoll {
        epoch: u64,
        worker: usize,
        session: u64,
        slot: u32,
    },
    /// A slot's heartbeat reply (only simulated to tell the node the worker drains).
    Heartbeat {
        worker: usize,
        session: u64,
        slot: u32,
    },
    Deliver {
        worker: usize,
        link_gen: u64,
        message: LinkMessage,
    },
}

/// Draws the remote workers of a seed; their slots are numbered after the local ones.
pub(super) fn draw_workers(rng: &mut SimRng, local_slots: usize) -> Vec<RemoteWorker> {
    let mut first_slot = local_slots;
    let mut workers = Vec::new();
    for index in 0..rng.below(REMOTE_WORKERS_MAX + 1) {
        let slots = rng.between(1, REMOTE_SLOTS_MAX) as u32;
        let queues: Vec<String> = match rng.below(3) {
            0 => Vec::new(),
            1 => vec![REMOTE_QUEUE.to_string()],
            _ => vec![DEFAULT_QUEUE.to_string(), REMOTE_QUEUE.to_string()],
        };
        workers.push(RemoteWorker {
            // Sorts before the local worker: placement prefers it.
            name: format!("edge-{index}"),
            slots,
            queues,
            first_slot,
            alive: true,
            paused: false,
            link_up: true,
            link_gen: 0,
            draining: false,
            session: None,
            inbox: Vec::new(),
            last_poll: Timestamp::default(),
            reconnecting: false,
            drain_restart: None,
            last_reply: None,
        });
        first_slot += slots as usize;
    }
    workers
}

/// Faults of the remote workers over the fault window: (offset ms, event).
pub(super) fn draw_faults(
    rng: &mut SimRng,
    workers: &[RemoteWorker],
    window_ms: u64,
) -> Vec<(u64, RemoteEvent)> {
    let mut planned = Vec::new();
    for worker in 0..workers.len() {
        for _ in 0..rng.below(REMOTE_FAULTS_MAX + 1) {
            let at = rng.below(window_ms);
            let away = |rng: &mut SimRng, per_mille| {
                rng.chance(per_mille)
                    .then(|| rng.between(1_000, AWAY_MS_MAX))
            };
            let event = match rng.below(4) {
                0 => RemoteEvent::Cut {
                    worker,
                    ms: rng.between(LEASE_MS, CUT_MS_MAX),
                },
                1 => RemoteEvent::Die {
                    worker,
                    restart_ms: away(rng, 700),
                },
                2 => RemoteEvent::Pause {
                    worker,
                    ms: rng.between(100, PAUSE_MS_MAX),
                },
                _ => RemoteEvent::Drain {
                    worker,
                    restart_ms: away(rng, 800),
                },
            };
            planned.push((at, event));
        }
    }
    planned
}

impl Simulation {
    // ---- the world: faults ----

    pub(super) fn remote_event(&mut self, event: RemoteEvent) -> Handled {
        match event {
            RemoteEvent::Cut { worker, ms } => {
                if !self.faults_on || !self.remote[worker].link_up {
                    return Ok(());
                }
                self.remote_fault(worker, format!("link cut for {ms} ms"));
                if self.session_audible(worker) {
                    self.link_lost(worker);
                }
                self.fall_silent(worker, true);
                let w = &mut self.remote[worker];
                w.link_up = false;
                w.link_gen += 1;
                self.schedule(
                    after_ms(self.now, ms),
                    Event::Remote(RemoteEvent::Heal { worker }),
                );
                self.late_reply(worker);
            }
            RemoteEvent::Heal { worker } => {
                self.remote[worker].link_up = true;
                self.remote_fault(worker, "link healed".to_string());
            }
            RemoteEvent::Die { worker, restart_ms } => {
                if !self.faults_on || !self.remote[worker].alive {
                    return Ok(());
                }
                self.remote_fault(worker, format!("worker died, back in {restart_ms:?} ms"));
                if self.session_audible(worker) {
                    self.link_lost(worker);
                }
                self.fall_silent(worker, false);
                self.remote_exit(worker, "remote worker died", restart_ms);
                self.late_reply(worker);
            }
            RemoteEvent::Start { worker } => {
                let w = &mut self.remote[worker];
                if !w.alive {
                    w.alive = true;
                    w.draining = false;
                    self.remote_fault(worker, "worker started".to_string());
                    self.reconnect_after(worker, 0);
                }
            }
            RemoteEvent::Pause { worker, ms } => {
                let w = &self.remote[worker];
                if !self.faults_on || !w.alive || w.paused {
                    return Ok(());
                }
                self.remote_fault(worker, format!("worker paused for {ms} ms"));
                let audible = self.session_audible(worker);
                self.fall_silent(worker, false);
                let expires = w_lease_end(&self.remote[worker]) <= after_ms(self.now, ms);
                if audible && expires {
                    self.link_lost(worker);
                }
                self.remote[worker].paused = true;
                let running = self.remote_attempts(worker);
                for id in running {
                    self.suspend_attempt(id);
                }
                self.schedule(
                    after_ms(self.now, ms),
                    Event::Remote(RemoteEvent::Resume { worker }),
                );
                self.late_reply(worker);
            }
            RemoteEvent::Resume { worker } => return self.resume_worker(worker),
            RemoteEvent::Drain { worker, restart_ms } => {
                let w = &mut self.remote[worker];
                if !self.faults_on || !w.alive || w.draining {
                    return Ok(());
                }
                w.draining = true;
                self.remote_fault(worker, format!("worker drains, back in {restart_ms:?} ms"));
                self.remote[worker].drain_restart = restart_ms;
                if let Some(session) = self.remote[worker].session.as_ref().map(|s| s.id) {
                    let at = after_ms(self.now, self.remote_rng.below(HEARTBEAT_MS));
                    let slot = 0;
                    let event = RemoteEvent::Heartbeat {
                        worker,
                        session,
                        slot,
                    };
                    self.schedule(at, Event::Remote(event));
                }
                self.leave_if_drained(worker);
            }
            RemoteEvent::LeaseExpired { worker, session } => {
                let w = &self.remote[worker];
                let current = w.alive && w.session.as_ref().is_some_and(|s| s.id == session);
                // A paused worker's timers do not run; it checks its lease when it resumes.
                if current && !w.paused && !self.polled(worker) {
                    self.lease_expired(worker);
                }
            }
            RemoteEvent::IdleTimeout {
                epoch,
                worker,
                session,
            } => {
                let held = self
                    .node
                    .as_ref()
                    .and_then(|node| node.remote.get(&worker))
                    .is_some_and(|s| s.id == session);
                if epoch == self.epoch && held && !self.audible(worker, session) {
                    self.remote_left(worker, "worker link lost (idle timeout)");
                }
            }
            RemoteEvent::Reconnect { worker } => {
                self.remote[worker].reconnecting = false;
                self.reconnect(worker);
            }
            RemoteEvent::Repoll {
                epoch,
                worker,
                session,
                slot,
            } => {
                if epoch == self.epoch {
                    self.poll_again(epoch, worker, session, slot);
                }
            }
            RemoteEvent::Heartbeat {
                worker,
                session,
                slot,
            } => {
                let w = &self.remote[worker];
                let holding = w
                    .session
                    .as_ref()
                    .filter(|s| s.id == session)
                    .is_some_and(|s| s.slots[slot as usize].holding_poll);
                if holding && !w.paused && w.alive {
                    self.send_reply(worker, slot);
                }
            }
            RemoteEvent::Deliver {
                worker,
                link_gen,
                message,
            } => {
                let w = &self.remote[worker];
                if w.link_gen != link_gen || !w.link_up {
                    return Ok(());
                }
                if message.to_node() {
                    return self.node_receives(worker, message);
                }
                self.worker_receives(worker, message);
            }
        }
        Ok(())
    }

    /// A copy of the worker's last reply with reports, held up on the path, may arrive long
    /// after its session is gone: the node must refuse its reports.
    fn late_reply(&mut self, worker: usize) {
        let Some(reply) = self.remote[worker].last_reply.clone() else {
            return;
        };
        if !self.remote_rng.chance(LATE_REPLY_PER_MILLE) {
            return;
        }
        let delay = self.remote_rng.between(IDLE_TIMEOUT_MS, LATE_REPLY_MS_MAX);
        let event = RemoteEvent::Deliver {
            worker,
            link_gen: self.remote[worker].link_gen,
            message: reply,
        };
        self.schedule(after_ms(self.now, delay), Event::Remote(event));
    }

    fn remote_fault(&mut self, worker: usize, what: String) {
        let worker = self.remote[worker].name.clone();
        self.record(Record::RemoteFault { worker, what });
    }

    /// The session is healthy: polls reach the worker, replies reach the node.
    fn polled(&self, worker: usize) -> bool {
        let w = &self.remote[worker];
        let epoch_ok = w
            .session
            .as_ref()
            .is_some_and(|s| s.epoch == self.epoch && self.node.is_some());
        w.alive && w.link_up && epoch_ok
    }

    fn session_audible(&self, worker: usize) -> bool {
        let session = self.remote[worker].session.as_ref().map(|s| s.id);
        session.is_some_and(|session| self.audible(worker, session))
    }

    fn audible(&self, worker: usize, session: u64) -> bool {
        let w = &self.remote[worker];
        let current = w.session.as_ref().is_some_and(|s| s.id == session);
        current && !w.paused && self.polled(worker)
    }

    /// The session falls silent now (link cut, worker death or pause, node crash): draws when
    /// the worker heard its last poll and the node its last reply, and arms the node's idle
    /// timeout and, with `lease_timer`, the worker's lease.
    fn fall_silent(&mut self, worker: usize, lease_timer: bool) {
        let Some(session) = self.remote[worker].session.as_ref().map(|s| s.id) else {
            return;
        };
        if !self.audible(worker, session) {
            return;
        }
        let rng = &mut self.remote_rng;
        let since_poll = rng.below(HEARTBEAT_MS + LINK_LATENCY_MS_MAX);
        let poll_latency = rng.between(1, LINK_LATENCY_MS_MAX);
        let last_poll = before_ms(self.now, since_poll);
        self.remote[worker].last_poll = last_poll;
        let node_heard = before_ms(last_poll, poll_latency);
        if self.node.is_some() {
            let event = RemoteEvent::IdleTimeout {
                epoch: self.epoch,
                worker,
                session,
            };
            self.schedule(after_ms(node_heard, IDLE_TIMEOUT_MS), Event::Remote(event));
        }
        if lease_timer {
            let event = RemoteEvent::LeaseExpired { worker, session };
            self.schedule(after_ms(last_poll, LEASE_MS), Event::Remote(event));
        }
    }

    /// The session cannot survive what just happened: the node must release its attempts
    /// within the idle timeout (the `link_loss_releases` checker).
    fn link_lost(&mut self, worker: usize) {
        let held = self
            .node
            .as_ref()
            .and_then(|node| node.remote.get(&worker))
            .map(|s| s.id);
        if let Some(session) = held {
            let name = self.remote[worker].name.clone();
            self.record(Record::LinkLost {
                worker: name,
                session,
            });
        }
    }

    /// The node went down: every session with it falls silent on the worker's side.
    pub(super) fn node_going_down(&mut self) {
        for worker in 0..self.remote.len() {
            self.fall_silent(worker, true);
        }
    }

    fn remote_attempts(&self, worker: usize) -> Vec<u64> {
        self.attempts
            .iter()
            .filter(|(_, a)| a.remote.is_some_and(|place| place.worker == worker))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The process is gone (died, or drained and exited): its attempts with it.
    fn remote_exit(&mut self, worker: usize, how: &str, restart_ms: Option<u64>) {
        for id in self.remote_attempts(worker) {
            self.attempts.remove(&id);
            self.record(Record::AttemptEnded {
                attempt: id,
                how: how.to_string(),
            });
        }
        let w = &mut self.remote[worker];
        w.alive = false;
        w.paused = false;
        w.session = None;
        w.inbox.clear();
        if let Some(ms) = restart_ms {
            self.schedule(
                after_ms(self.now, ms),
                Event::Remote(RemoteEvent::Start { worker }),
            );
        }
    }

    fn resume_worker(&mut self, worker: usize) -> Handled {
        let w = &mut self.remote[worker];
        if !w.alive || !w.paused {
            return Ok(());
        }
        w.paused = false;
        let inbox = std::mem::take(&mut w.inbox);
        let expired = w.session.is_some() && w_lease_end(w) <= self.now;
        self.remote_fault(worker, "worker resumed".to_string());
        for id in self.remote_attempts(worker) {
            if !expired || self.canary == Canary::IgnoreLease {
                self.resume_attempt(id);
            }
        }
        if expired {
            self.lease_expired(worker);
            return Ok(());
        }
        if self.remote[worker].session.is_none() {
            self.reconnect_after(worker, 0);
            return Ok(());
        }
        if !self.polled(worker) {
            // Still cut off (or the node went down meanwhile): the lease runs on.
            let session = self.remote[worker].session.as_ref().map_or(0, |s| s.id);
            let at = after_ms(self.remote[worker].last_poll, LEASE_MS);
            let event = RemoteEvent::LeaseExpired { worker, session };
            self.schedule(at, Event::Remote(event));
        }
        for message in inbox {
            self.worker_receives(worker, message);
        }
        self.leave_if_drained(worker);
        Ok(())
    }

    /// The worker heard no poll for the lease: it stops its attempts (their reports go with
    /// the session), closes the session and connects again.
    fn lease_expired(&mut self, worker: usize) {
        self.remote_fault(worker, "lease expired".to_string());
        for id in self.remote_attempts(worker) {
            if self.canary == Canary::IgnoreLease {
                // The broken worker lets its attempts run on, detached from any session.
                if let Some(attempt) = self.attempts.get_mut(&id) {
                    if let Some(place) = attempt.remote.as_mut() {
                        place.session = None;
                    }
                }
                continue;
            }
            self.attempts.remove(&id);
            self.record(Record::AttemptEnded {
                attempt: id,
                how: "lease expired".to_string(),
            });
        }
        let w = &mut self.remote[worker];
        w.session = None;
        w.inbox.clear();
        let ms = self.remote_rng.between(1, RECONNECT_MS_MAX);
        self.reconnect_after(worker, ms);
    }

    fn reconnect_after(&mut self, worker: usize, ms: u64) {
        if self.remote[worker].reconnecting {
            return;
        }
        self.remote[worker].reconnecting = true;
        let at = after_ms(self.now, ms);
        self.schedule(at, Event::Remote(RemoteEvent::Reconnect { worker }));
    }

    /// The worker connects: a new session. The node treats an old session of the worker that
    /// it still holds as left first.
    fn reconnect(&mut self, worker: usize) {
        let w = &self.remote[worker];
        if !w.alive || w.paused || w.session.is_some() {
            return;
        }
        if !w.link_up || self.node.is_none() {
            let ms = self.remote_rng.between(1, RECONNECT_MS_MAX);
            self.reconnect_after(worker, ms);
            return;
        }
        if self
            .node
            .as_ref()
            .is_some_and(|node| node.remote.contains_key(&worker))
        {
            self.remote_left(worker, "worker joined again under a new session");
        }
        self.next_session += 1;
        let id = self.next_session;
        let w = &mut self.remote[worker];
        let slots = (0..w.slots)
            .map(|_| WorkerSlot {
                holding_poll: true,
                ..WorkerSlot::default()
            })
            .collect();
        w.session = Some(WorkerSession {
            id,
            epoch: self.epoch,
            slots,
        });
        w.inbox.clear();
        w.last_poll = self.now;
        let info = WorkerInfo {
            id: w.name.as_str().into(),
            slots: if w.draining { 0 } else { w.slots },
            queues: w.queues.iter().map(|q| q.as_str().into()).collect(),
            labels: BTreeMap::new(),
        };
        let session = NodeSession {
            id,
            slots: vec![NodeSlot::default(); w.slots as usize],
            draining: w.draining,
        };
        let name = w.name.clone();
        if let Some(node) = self.node.as_mut() {
            node.remote.insert(worker, session);
        }
        self.record(Record::RemoteJoined {
            worker: name,
            session: id,
        });
        self.dispatch(DispatchInput::WorkerJoined(info));
        self.leave_if_drained(worker);
    }

    /// The node treats the worker's session as left: `WorkerLeft`, then each attempt it
    /// placed there is reported lost to its run and released.
    pub(super) fn remote_left(&mut self, worker: usize, why: &str) {
        let Some(session) = self
            .node
            .as_mut()
            .and_then(|node| node.remote.remove(&worker))
        else {
            return;
        };
        let name = self.remote[worker].name.clone();
        self.dispatch(DispatchInput::WorkerLeft { id: name.clone() });
        for (slot, state) in session.slots.iter().enumerate() {
            if let Some((attempt, _)) = &state.running {
                let outcome = AttemptOutcome::Lost {
                    reason: why.to_string(),
                };
                let slot = slot as u32;
                self.release_remote(worker, session.id, slot, attempt.clone(), outcome, None);
            }
        }
        self.record(Record::RemoteLeft {
            worker: name,
            session: session.id,
            why: why.to_string(),
        });
    }

    /// The node is done with an attempt on a remote slot: the run hears `outcome`, the
    /// dispatcher gets the slot back.
    fn release_remote(
        &mut self,
        worker: usize,
        session: u64,
        slot: u32,
        attempt: AttemptId,
        outcome: AttemptOutcome,
        started_at: Option<Timestamp>,
    ) {
        if let Some(state) = self
            .node
            .as_mut()
            .and_then(|node| node.remote.get_mut(&worker))
            .filter(|s| s.id == session)
        {
            state.slots[slot as usize].running = None;
        }
        let name = self.remote[worker].name.clone();
        self.record(Record::RemoteReleased {
            worker: name,
            session,
            key: attempt.key.clone(),
            try_number: attempt.try_number,
            token: attempt.token,
        });
        self.send(
            Message::AttemptFinished {
                attempt: attempt.clone(),
                outcome,
                started_at,
                worker: Some(self.remote[worker].first_slot + slot as usize),
            },
            0,
        );
        self.dispatch(DispatchInput::Release { attempt });
    }

    // ---- the node's side (the dispatcher actor's remote sessions) ----

    /// The dispatcher placed an attempt on a remote slot: Assign it.
    pub(super) fn assign_remote(&mut self, worker: &str, slot: u32, request: DispatchRequest) {
        let Some(index) = self.remote.iter().position(|w| w.name == worker) else {
            return;
        };
        let epoch = self.epoch;
        let Some(session) = self
            .node
            .as_mut()
            .and_then(|node| node.remote.get_mut(&index))
        else {
            return;
        };
        let Some(state) = session.slots.get_mut(slot as usize) else {
            return;
        };
        if state.running.is_some() {
            // The core placed an attempt on a busy slot: the limits checker sees it never run.
            return;
        }
        state.next_seq += 1;
        let seq = state.next_seq;
        state.running = Some((request.attempt.clone(), seq));
        let id = session.id;
        self.record(Record::RemotePlaced {
            worker: worker.to_string(),
            session: id,
            slot,
            key: request.attempt.key.clone(),
            try_number: request.attempt.try_number,
            token: request.attempt.token,
        });
        let assign = LinkMessage::Assign {
            epoch,
            session: id,
            slot,
            seq,
            request,
        };
        self.link_send(index, assign);
    }

    /// Stops an attempt the node placed on a remote slot (a run's `Kill`, the dispatcher's
    /// `Stop`). Returns whether one was found.
    pub(super) fn kill_remote(&mut self, key: &TaskInstanceKey, token: u64) -> bool {
        let epoch = self.epoch;
        let found = self.node.as_ref().and_then(|node| {
            node.remote.iter().find_map(|(worker, session)| {
                session.slots.iter().enumerate().find_map(|(slot, state)| {
                    let (attempt, _) = state.running.as_ref()?;
                    (attempt.key == *key && attempt.token == token)
                        .then(|| (*worker, session.id, slot as u32, attempt.clone()))
                })
            })
        });
        let Some((worker, session, slot, attempt)) = found else {
            return false;
        };
        let kill = LinkMessage::Kill {
            epoch,
            session,
            slot,
            attempt,
        };
        self.link_send(worker, kill);
        true
    }

    /// Whether the node holds this attempt on a remote slot (adoption after a run driver is
    /// rebuilt).
    pub(super) fn holds_remote(&self, attempt: &AttemptId) -> bool {
        self.node.as_ref().is_some_and(|node| {
            node.remote.values().any(|session| {
                session
                    .slots
                    .iter()
                    .any(|s| s.running.as_ref().is_some_and(|(a, _)| a == attempt))
            })
        })
    }

    fn node_receives(&mut self, worker: usize, message: LinkMessage) -> Handled {
        let epoch = self.epoch;
        let Some(node) = self.node.as_mut() else {
            return Ok(());
        };
        let current = node.remote.get(&worker).map(|s| s.id);
        match message {
            LinkMessage::Bye { session } if current == Some(session) => {
                self.remote_left(worker, "worker drained and left");
            }
            LinkMessage::Reply {
                session,
                slot,
                reports,
                running,
                assigned_seq,
                draining,
            } => {
                if current != Some(session) {
                    // A late reply of an old session: its reports are refused.
                    self.history.reports_refused += reports.len() as u64;
                    return Ok(());
                }
                for (seq, report) in reports {
                    let processed = self
                        .node
                        .as_ref()
                        .and_then(|node| node.remote.get(&worker))
                        .filter(|s| s.id == session)
                        .map(|s| s.slots[slot as usize].processed);
                    if processed.is_none_or(|processed| seq <= processed) {
                        continue;
                    }
                    if let Some(state) = self
                        .node
                        .as_mut()
                        .and_then(|node| node.remote.get_mut(&worker))
                    {
                        state.slots[slot as usize].processed = seq;
                    }
                    self.accept_report(worker, session, slot, report);
                }
                // The heartbeat: an attempt the slot has seen assigned and does not run, whose
                // end it did not report, was never run there.
                let placed = self
                    .node
                    .as_ref()
                    .and_then(|node| node.remote.get(&worker))
                    .filter(|s| s.id == session)
                    .and_then(|s| s.slots[slot as usize].running.clone());
                if let Some((attempt, seq)) = placed {
                    if seq <= assigned_seq && running.as_ref() != Some(&attempt) {
                        let outcome = AttemptOutcome::Lost {
                            reason: "the worker never ran it".to_string(),
                        };
                        self.release_remote(worker, session, slot, attempt, outcome, None);
                    }
                }
                let newly_draining = self
                    .node
                    .as_mut()
                    .and_then(|node| node.remote.get_mut(&worker))
                    .filter(|s| s.id == session && draining && !s.draining)
                    .map(|s| s.draining = true)
                    .is_some();
                if newly_draining {
                    let w = &self.remote[worker];
                    let info = WorkerInfo {
                        id: w.name.as_str().into(),
                        slots: 0,
                        queues: w.queues.iter().map(|q| q.as_str().into()).collect(),
                        labels: BTreeMap::new(),
                    };
                    self.dispatch(DispatchInput::WorkerJoined(info));
                }
                self.poll_again(epoch, worker, session, slot);
            }
            _ => {}
        }
        Ok(())
    }

    /// A report of the current session: accepted only if the dispatcher placed that attempt
    /// on that slot in this session.
    fn accept_report(&mut self, worker: usize, session: u64, slot: u32, report: Report) {
        let placed = self
            .node
            .as_ref()
            .and_then(|node| node.remote.get(&worker))
            .filter(|s| s.id == session)
            .and_then(|s| s.slots[slot as usize].running.clone());
        if placed.as_ref().map(|(a, _)| a) != Some(report.attempt()) {
            self.history.reports_refused += 1;
            return;
        }
        let attempt = report.attempt().clone();
        self.record(Record::ReportAccepted {
            worker: self.remote[worker].name.clone(),
            session,
            key: attempt.key.clone(),
            try_number: attempt.try_number,
            token: attempt.token,
        });
        match report {
            Report::Started { attempt } => self.send(Message::AttemptStarted { attempt }, 0),
            Report::Finished {
                attempt,
                outcome,
                started_at,
            } => {
                let started_at = Some(started_at);
                self.release_remote(worker, session, slot, attempt, outcome, started_at);
            }
        }
    }

    // ---- the worker's side (the remote worker process) ----

    fn worker_receives(&mut self, worker: usize, message: LinkMessage) {
        let (epoch, session) = match &message {
            LinkMessage::Assign { epoch, session, .. }
            | LinkMessage::Kill { epoch, session, .. }
            | LinkMessage::Poll { epoch, session, .. } => (*epoch, *session),
            _ => return,
        };
        let w = &mut self.remote[worker];
        let current = w
            .session
            .as_ref()
            .is_some_and(|s| s.id == session && s.epoch == epoch);
        if !w.alive || !current || epoch != self.epoch {
            return;
        }
        if w.paused {
            w.inbox.push(message);
            return;
        }
        match message {
            LinkMessage::Assign {
                slot, seq, request, ..
            } => {
                let Some(state) = self.worker_slot(worker, slot) else {
                    return;
                };
                if seq <= state.seen_seq {
                    return;
                }
                state.seen_seq = seq;
                let busy = state.running.is_some();
                if self.remote[worker].draining || busy {
                    let reason = if busy {
                        "worker slot busy"
                    } else {
                        "worker draining"
                    };
                    let report = Report::Finished {
                        attempt: request.attempt,
                        outcome: AttemptOutcome::Lost {
                            reason: reason.to_string(),
                        },
                        started_at: self.now,
                    };
                    self.slot_report(worker, slot, report);
                    return;
                }
                let place = RemotePlace {
                    worker,
                    slot,
                    session: Some(session),
                };
                let global = self.remote[worker].first_slot + slot as usize;
                let attempt = request.attempt.clone();
                let id = self.start_attempt(global, request, Some(place));
                if let Some(state) = self.worker_slot(worker, slot) {
                    state.running = Some(id);
                }
                self.slot_report(worker, slot, Report::Started { attempt });
            }
            LinkMessage::Kill { slot, attempt, .. } => {
                let running = self.worker_slot(worker, slot).and_then(|s| s.running);
                let Some(id) = running else { return };
                let matches = self
                    .attempts
                    .get(&id)
                    .is_some_and(|a| a.request.attempt == attempt);
                if matches {
                    let attempt = self.attempts.remove(&id).expect("found above");
                    let outcome = AttemptOutcome::Failed {
                        reason: "attempt killed".to_string(),
                        retryable: true,
                    };
                    self.end_attempt(id, attempt, outcome, "killed");
                }
            }
            LinkMessage::Poll { slot, ack, .. } => {
                let Some(state) = self.worker_slot(worker, slot) else {
                    return;
                };
                state.reports.retain(|(seq, _)| *seq > ack);
                if state.reports.is_empty() {
                    state.holding_poll = true;
                    self.leave_if_drained(worker);
                } else {
                    self.send_reply(worker, slot);
                }
            }
            _ => {}
        }
    }

    fn worker_slot(&mut self, worker: usize, slot: u32) -> Option<&mut WorkerSlot> {
        self.remote[worker]
            .session
            .as_mut()?
            .slots
            .get_mut(slot as usize)
    }

    /// An attempt on a remote slot ended: the slot reports it (unless its session is gone).
    pub(super) fn remote_attempt_ended(
        &mut self,
        id: u64,
        place: RemotePlace,
        attempt: AttemptId,
        outcome: AttemptOutcome,
        started_at: Timestamp,
    ) {
        let Some(session) = place.session else {
            return;
        };
        let current = self.remote[place.worker]
            .session
            .as_ref()
            .is_some_and(|s| s.id == session);
        if !current {
            return;
        }
        let Some(state) = self.worker_slot(place.worker, place.slot) else {
            return;
        };
        if state.running == Some(id) {
            state.running = None;
        }
        let report = Report::Finished {
            attempt,
            outcome,
            started_at,
        };
        self.slot_report(place.worker, place.slot, report);
    }

    /// A slot keeps a report until a poll acknowledges it, and answers a held poll at once.
    fn slot_report(&mut self, worker: usize, slot: u32, report: Report) {
        let Some(state) = self.worker_slot(worker, slot) else {
            return;
        };
        state.next_report += 1;
        let seq = state.next_report;
        state.reports.push((seq, report));
        if state.holding_poll {
            self.send_reply(worker, slot);
        }
    }

    fn send_reply(&mut self, worker: usize, slot: u32) {
        let draining = self.remote[worker].draining;
        let Some(session) = self.remote[worker].session.as_ref().map(|s| s.id) else {
            return;
        };
        let Some(state) = self.worker_slot(worker, slot) else {
            return;
        };
        state.holding_poll = false;
        let reports = state.reports.clone();
        let assigned_seq = state.seen_seq;
        let running = state.running;
        let running =
            running.and_then(|id| self.attempts.get(&id).map(|a| a.request.attempt.clone()));
        let reply = LinkMessage::Reply {
            session,
            slot,
            reports,
            running,
            assigned_seq,
            draining,
        };
        self.link_send(worker, reply);
    }

    /// A draining worker whose slots are idle and whose reports are all acknowledged leaves:
    /// it closes its session and exits.
    fn leave_if_drained(&mut self, worker: usize) {
        let w = &self.remote[worker];
        if !w.draining || !w.alive || w.paused {
            return;
        }
        let Some(session) = w.session.as_ref() else {
            return;
        };
        let idle = session
            .slots
            .iter()
            .all(|s| s.running.is_none() && s.reports.is_empty());
        if !idle {
            return;
        }
        let bye = LinkMessage::Bye {
            session: session.id,
        };
        self.link_send(worker, bye);
        self.remote_fault(worker, "drained, leaves".to_string());
        let restart_ms = self.remote[worker].drain_restart.take();
        self.remote_exit(worker, "drained", restart_ms);
    }

    // ---- the link ----

    /// Within a live session the message layer may drop an `Assign`, a `Kill` or a poll reply
    /// (a lost reply is healed by the node's next poll; a lost `Assign` or `Kill` only when
    /// the session ends or at the next restart), and duplicate and reorder any message but
    /// `Bye`; a reply may come very late, after its session is gone. A broken link loses
    /// whatever is in flight on it.
    /// The node polls a slot of `worker`'s session again, acknowledging what it has
    /// processed (nothing when the session is no longer the node's).
    fn poll_again(&mut self, epoch: u64, worker: usize, session: u64, slot: u32) {
        let ack = self
            .node
            .as_ref()
            .and_then(|node| node.remote.get(&worker))
            .filter(|s| s.id == session)
            .map(|s| s.slots[slot as usize].processed);
        if let Some(ack) = ack {
            let poll = LinkMessage::Poll {
                epoch,
                session,
                slot,
                ack,
            };
            self.link_send(worker, poll);
        }
    }

    fn link_send(&mut self, worker: usize, message: LinkMessage) {
        let rng = &mut self.remote_rng;
        let faults = self.faults_on;
        let droppable = matches!(
            message,
            LinkMessage::Kill { .. } | LinkMessage::Reply { .. } | LinkMessage::Assign { .. }
        );
        if faults && droppable && rng.chance(self.rates.drop) {
            let what = message.describe(&self.remote[worker].name);
            self.record(Record::MessageDropped { what });
            match &message {
                LinkMessage::Reply { session, slot, .. } => {
                    let event = RemoteEvent::Repoll {
                        epoch: self.epoch,
                        worker,
                        session: *session,
                        slot: *slot,
                    };
                    self.schedule(after_ms(self.now, REPOLL_MS), Event::Remote(event));
                }
                _ => self.needs_heal = true,
            }
            return;
        }
        let bye = matches!(message, LinkMessage::Bye { .. });
        if matches!(&message, LinkMessage::Reply { reports, .. } if !reports.is_empty()) {
            self.remote[worker].last_reply = Some(message.clone());
        }
        let copies = if faults && !bye && rng.chance(self.rates.duplicate) {
            2
        } else {
            1
        };
        let link_gen = self.remote[worker].link_gen;
        for _ in 0..copies {
            let rng = &mut self.remote_rng;
            let mut delay = rng.between(1, LINK_LATENCY_MS_MAX);
            if faults && rng.chance(self.rates.delay) {
                delay += rng.below(LINK_DETOUR_MS_MAX);
            }
            let event = RemoteEvent::Deliver {
                worker,
                link_gen,
                message: message.clone(),
            };
            self.schedule(after_ms(self.now, delay), Event::Remote(event));
        }
    }
}

/// When the worker's lease runs out, counting from the last poll it heard.
fn w_lease_end(worker: &RemoteWorker) -> Timestamp {
    after_ms(worker.last_poll, LEASE_MS)
}

pub(super) fn before_ms(at: Timestamp, ms: u64) -> Timestamp {
    at - chrono::TimeDelta::milliseconds(ms as i64)
}

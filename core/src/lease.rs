//! Ownership of DAGs by cells: shards, lease rows, and the decisions of a cell's lease keeper.
//!
//! DAGs are spread over a fixed number of shards by a stable hash of the DAG id
//! ([`shard_of`]). Each shard has one lease row in the store: its owner (a cell name, or none),
//! an **epoch** that grows by one on every change of owner, and a **version** that grows on
//! every write of the row (renewals included). Every write of a lease row is a compare-and-set
//! on (epoch, version), so two cells can never both take a shard in one epoch.
//!
//! **Time.** Nothing here trusts another cell's clock. Time is each cell's own monotonic clock in
//! milliseconds ([`Millis`]), and clocks may run at rates that differ by at most
//! [`DRIFT_BOUND_PERCENT`]. The owner counts its lease from the moment it *sent* a renewal that
//! succeeded and stops deciding `ttl - skew` later unless a newer renewal succeeded. A cell that
//! wants the shard counts from the moment it first *read* the current version of the row and
//! may take it once the row has not changed for `ttl + skew`. Because the renewal was applied
//! before that read completed, the owner has stopped deciding before the taker acts whenever
//! `skew >= ttl * drift` ([`LeaseSettings::check`] refuses settings that break this).
//! Writes the owner sent before it stopped and that arrive late are refused by the store: every
//! run write carries the owner's epoch (see `weft_storage::Write::Fence`).
//!
//! **Balance.** Cells write a heartbeat row; a cell is live while its row keeps changing (same
//! rule as leases). Each live cell's share is the number of shards divided by the live cells, the
//! remainder going to the first cells by name. A cell below its share takes shards that have no
//! owner or whose lease ran out, preferring those it ranks highest (rendezvous hashing, so cells
//! prefer different shards); a cell above its share while another live cell is below its own
//! hands shards over (stops deciding, then writes the row without an owner). At most
//! `max_moves` takes or hand-overs are in flight at once, so a joining cell fills up gradually.
//!
//! [`LeaseKeeper::handle`] takes an input and returns effects, like the other state machines;
//! the driver (`weft_cells::cell`, the simulator) performs them and reports the outcomes.

use std::collections::{BTreeMap, BTreeSet};

/// A shard number, `0..shards`.
pub type ShardId = u32;
/// A cell's own monotonic clock, in milliseconds since any fixed origin.
pub type Millis = u64;

/// Shards of a deployment unless configured; fixed for the life of a keyspace.
pub const SHARDS_DEFAULT: u32 = 64;
/// The most shards a deployment may have.
pub const SHARDS_MAX: u32 = 4096;
/// The stated bound on how much two cells' clocks may differ in rate, in percent.
pub const DRIFT_BOUND_PERCENT: u64 = 5;

/// The shard of a DAG: FNV-1a (64-bit) of its id, modulo `shards`. Stable across processes,
/// versions and machines, unlike the hashers of maps.
pub fn shard_of(dag_id: &str, shards: u32) -> ShardId {
    (fnv1a(dag_id.as_bytes()) % u64::from(shards.max(1))) as ShardId
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// How much `cell` wants `shard` (rendezvous hashing): a cell takes the free shards it ranks
/// highest first, so cells taking at once mostly want different shards.
fn rank(cell: &str, shard: ShardId) -> u64 {
    let mut bytes = Vec::with_capacity(cell.len() + 5);
    bytes.extend_from_slice(cell.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&shard.to_le_bytes());
    fnv1a(&bytes)
}

/// A shard's lease row as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseRow {
    pub shard: ShardId,
    /// The cell that owns the shard; `None` after a hand-over, before anyone took it.
    pub owner: Option<String>,
    /// Grows by one on every change of owner; run writes are fenced by it.
    pub epoch: u64,
    /// Grows on every write of the row.
    pub version: u64,
}

/// A cell's heartbeat row: the cell is live while `version` keeps changing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellBeat {
    pub cell: String,
    pub version: u64,
}

/// The timing of leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub shards: u32,
    /// How long a renewal keeps a lease.
    pub ttl_ms: Millis,
    /// How often the owner renews (and cells write their heartbeat).
    pub renew_ms: Millis,
    /// The margin for clock drift: the owner stops `skew` before, a taker waits `skew` after.
    pub skew_ms: Millis,
    /// Takes and hand-overs in flight at once.
    pub max_moves: usize,
}

impl Default for LeaseSettings {
    fn default() -> LeaseSettings {
        LeaseSettings {
            shards: SHARDS_DEFAULT,
            ttl_ms: 4_000,
            renew_ms: 1_000,
            skew_ms: 500,
            max_moves: 8,
        }
    }
}

impl LeaseSettings {
    /// Refuse settings under which a deposed owner could still decide after a taker acts, or
    /// under which an owner could not renew in time.
    pub fn check(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(format!(
                "shards must be 1 to {SHARDS_MAX}, not {}",
                self.shards
            ));
        }
        if self.renew_ms == 0 || self.renew_ms * 2 > self.ttl_ms {
            return Err(format!(
                "the lease renewal interval ({} ms) must be at most half the lease ({} ms), so \
                 one lost renewal does not lose the lease",
                self.renew_ms, self.ttl_ms
            ));
        }
        if self.skew_ms * 100 < self.ttl_ms * DRIFT_BOUND_PERCENT || self.skew_ms >= self.ttl_ms {
            return Err(format!(
                "the clock skew margin ({} ms) must be at least {DRIFT_BOUND_PERCENT} % of the \
                 lease ({} ms) and less than the lease",
                self.skew_ms, self.ttl_ms
            ));
        }
        if self.max_moves == 0 {
            return Err("at least one shard move must be allowed at a time".to_string());
        }
        Ok(())
    }

    /// How long a row must stay unchanged, by the reader's clock, before its lease is over.
    pub fn expiry_ms(&self) -> Millis {
        self.ttl_ms + self.skew_ms
    }

    /// How long after sending a renewal that succeeded the owner may go on deciding.
    pub fn validity_ms(&self) -> Millis {
        self.ttl_ms - self.skew_ms
    }
}

/// What a lease write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOp {
    Take,
    Renew,
    Release,
}

/// The result of a lease write, as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The row is now the one written.
    Applied,
    /// The guard did not hold; the row as the store holds it (`None`: no row yet).
    Refused(Option<LeaseRow>),
    /// Not known (timeout, lost connection): the next observation decides.
    Unknown,
}

/// An input to the keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseInput {
    /// Time passed: renewals and takes that are due, and leases that ran out.
    Tick { now: Millis },
    /// A read of every lease row and heartbeat row, completed at `now`. Shards without a row
    /// have never been owned.
    Observed {
        now: Millis,
        leases: Vec<LeaseRow>,
        cells: Vec<CellBeat>,
    },
    /// A lease write sent at `sent` finished.
    Written {
        now: Millis,
        op: LeaseOp,
        /// The row that was written.
        row: LeaseRow,
        sent: Millis,
        outcome: CasOutcome,
    },
    /// Hand every shard over and take no more (the cell is leaving).
    Leave { now: Millis },
}

/// What the driver does for the keeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEffect {
    /// Write `row` if the shard's row is at `expect` (epoch and version), or absent when
    /// `expect` is `None`. Report the result as [`LeaseInput::Written`] with the send time.
    Write {
        op: LeaseOp,
        expect: Option<(u64, u64)>,
        row: LeaseRow,
    },
    /// Start deciding for `shard` under `epoch`: fence its runs with the epoch, then adopt them.
    Gained { shard: ShardId, epoch: u64 },
    /// Stop deciding for `shard` now; its lease is over or being handed over.
    Lost { shard: ShardId, epoch: u64 },
    /// Write this cell's heartbeat row with this version (unconditionally).
    Beat { version: u64 },
    /// Delete this cell's heartbeat row: it is leaving, and the others should share its shards
    /// out without waiting for its heartbeat to go stale.
    Retire,
}

/// A lease row's (epoch, version): what a compare-and-set compares.
pub type Stamp = (u64, u64);

/// What this cell holds of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    pub version: u64,
    /// Deciding stops at this time unless a renewal succeeds.
    pub valid_until: Millis,
    /// A renewal is in flight.
    renewing: bool,
    /// Renew at or after this time.
    next_renew: Millis,
}

/// A row as last seen, and since when (by this cell's clock) it has not changed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen<T> {
    row: T,
    since: Millis,
}

/// A cell's view of the shards and the decisions it makes about them.
#[derive(Debug, Clone)]
pub struct LeaseKeeper {
    me: String,
    settings: LeaseSettings,
    leases: BTreeMap<ShardId, Seen<LeaseRow>>,
    cells: BTreeMap<String, Seen<u64>>,
    held: BTreeMap<ShardId, Held>,
    /// Lease writes in flight that move a shard: takes and hand-overs.
    moving: BTreeMap<ShardId, LeaseOp>,
    beat: u64,
    next_beat: Millis,
    leaving: bool,
    /// The keeper has read the rows at least once: it takes nothing before.
    observed: bool,
    /// Shards with work in progress here: not handed over to balance cells (only when
    /// leaving), since a move stops the attempts running on this cell's own slots.
    busy: BTreeSet<ShardId>,
}

impl LeaseKeeper {
    /// A keeper for cell `me`. `beat_base` is where its heartbeat versions start (a restarted
    /// cell must not repeat its last run's versions: pass something that grows, like wall
    /// milliseconds).
    pub fn new(me: &str, settings: LeaseSettings, beat_base: u64) -> LeaseKeeper {
        LeaseKeeper {
            me: me.to_string(),
            settings,
            leases: BTreeMap::new(),
            cells: BTreeMap::new(),
            held: BTreeMap::new(),
            moving: BTreeMap::new(),
            beat: beat_base,
            next_beat: 0,
            leaving: false,
            observed: false,
            busy: BTreeSet::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.me
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// The shards this cell decides for now, with their epochs.
    pub fn held(&self) -> impl Iterator<Item = (ShardId, &Held)> {
        self.held.iter().map(|(shard, held)| (*shard, held))
    }

    /// The epoch under which this cell decides for `shard`, if it does.
    pub fn epoch_of(&self, shard: ShardId) -> Option<u64> {
        self.held.get(&shard).map(|held| held.epoch)
    }

    /// The cells this cell believes live at `now` (itself included), by name.
    pub fn live_cells(&self, now: Millis) -> Vec<String> {
        let mut live: BTreeSet<String> = self
            .cells
            .iter()
            .filter(|(_, seen)| now.saturating_sub(seen.since) < self.settings.expiry_ms())
            .map(|(cell, _)| cell.clone())
            .collect();
        if !self.leaving {
            live.insert(self.me.clone());
        } else {
            live.remove(&self.me);
        }
        live.into_iter().collect()
    }

    /// How many shards `cell` should hold when `live` are the live cells.
    pub fn share(&self, cell: &str, live: &[String]) -> usize {
        let Some(position) = live.iter().position(|name| name == cell) else {
            return 0;
        };
        let shards = self.settings.shards as usize;
        shards / live.len() + usize::from(position < shards % live.len())
    }

    /// Say which shards have work in progress on this cell (see `busy`).
    pub fn set_busy(&mut self, shards: BTreeSet<ShardId>) {
        self.busy = shards;
    }

    pub fn handle(&mut self, input: LeaseInput) -> Vec<LeaseEffect> {
        let mut effects = Vec::new();
        let now = match input {
            LeaseInput::Tick { now } => now,
            LeaseInput::Observed { now, leases, cells } => {
                self.observe(now, leases, cells, &mut effects);
                now
            }
            LeaseInput::Written {
                now,
                op,
                row,
                sent,
                outcome,
            } => {
                self.written(now, op, row, sent, outcome, &mut effects);
                now
            }
            LeaseInput::Leave { now } => {
                if !self.leaving {
                    self.leaving = true;
                    effects.push(LeaseEffect::Retire);
                }
                now
            }
        };
        self.expire(now, &mut effects);
        self.beat(now, &mut effects);
        self.renew(now, &mut effects);
        if self.observed {
            self.balance(now, &mut effects);
        }
        effects
    }

    fn observe(
        &mut self,
        now: Millis,
        leases: Vec<LeaseRow>,
        cells: Vec<CellBeat>,
        effects: &mut Vec<LeaseEffect>,
    ) {
        self.observed = true;
        for row in leases {
            if row.shard >= self.settings.shards {
                continue;
            }
            self.see(now, row, effects);
        }
        // A cell without a heartbeat row has left.
        let present: BTreeSet<&str> = cells.iter().map(|beat| beat.cell.as_str()).collect();
        self.cells.retain(|cell, _| present.contains(cell.as_str()));
        for beat in cells {
            match self.cells.get_mut(&beat.cell) {
                Some(seen) if seen.row == beat.version => {}
                Some(seen) => {
                    seen.row = beat.version;
                    seen.since = now;
                }
                None => {
                    self.cells.insert(
                        beat.cell,
                        Seen {
                            row: beat.version,
                            since: now,
                        },
                    );
                }
            }
        }
    }

    /// Record a row read at `now`; if it shows that another cell owns a shard this cell holds,
    /// stop deciding for it at once. A row older than the one this cell holds (a read that
    /// crossed this cell's take or renewal: sent before it applied, answered after) says
    /// nothing about the lease now and deposes nobody.
    fn see(&mut self, now: Millis, row: LeaseRow, effects: &mut Vec<LeaseEffect>) {
        let shard = row.shard;
        if let Some(held) = self.held.get_mut(&shard) {
            if (row.epoch, row.version) > (held.epoch, held.version) {
                let mine =
                    row.owner.as_deref() == Some(self.me.as_str()) && row.epoch == held.epoch;
                if mine {
                    // A renewal whose outcome was unknown did apply: keep its version, not its
                    // time (its send time is unknown here).
                    held.version = row.version;
                } else {
                    let epoch = held.epoch;
                    self.held.remove(&shard);
                    effects.push(LeaseEffect::Lost { shard, epoch });
                }
            }
        }
        match self.leases.get_mut(&shard) {
            // An older read than what is known (reads and writes cross): ignore it.
            Some(seen) if (seen.row.epoch, seen.row.version) > (row.epoch, row.version) => {}
            Some(seen) if seen.row == row => {}
            Some(seen) => {
                seen.row = row;
                seen.since = now;
            }
            None => {
                self.leases.insert(shard, Seen { row, since: now });
            }
        }
    }

    fn written(
        &mut self,
        now: Millis,
        op: LeaseOp,
        row: LeaseRow,
        sent: Millis,
        outcome: CasOutcome,
        effects: &mut Vec<LeaseEffect>,
    ) {
        let shard = row.shard;
        match op {
            LeaseOp::Take | LeaseOp::Release => {
                self.moving.remove(&shard);
            }
            LeaseOp::Renew => {
                if let Some(held) = self.held.get_mut(&shard) {
                    held.renewing = false;
                }
            }
        }
        match outcome {
            CasOutcome::Applied => {
                self.see(now, row.clone(), effects);
                match op {
                    LeaseOp::Take if !self.leaving => {
                        let valid_until = sent + self.settings.validity_ms();
                        if valid_until > now {
                            self.held.insert(
                                shard,
                                Held {
                                    epoch: row.epoch,
                                    version: row.version,
                                    valid_until,
                                    renewing: false,
                                    next_renew: sent + self.settings.renew_ms,
                                },
                            );
                            effects.push(LeaseEffect::Gained {
                                shard,
                                epoch: row.epoch,
                            });
                        }
                    }
                    LeaseOp::Renew => {
                        if let Some(held) = self.held.get_mut(&shard) {
                            if held.epoch == row.epoch && held.version <= row.version {
                                held.version = row.version;
                                held.valid_until =
                                    held.valid_until.max(sent + self.settings.validity_ms());
                                held.next_renew = sent + self.settings.renew_ms;
                            }
                        }
                    }
                    LeaseOp::Take | LeaseOp::Release => {}
                }
                // The row names this cell, which does not decide under it: a take applied
                // after the cell began leaving or answered after the lease it gave was over,
                // or a renewal answered after the lease ran out. Hand it back at once rather
                // than leave the shard without a decider until the row expires.
                let mine = row.owner.as_deref() == Some(self.me.as_str());
                if mine && !self.held.contains_key(&shard) && !self.moving.contains_key(&shard) {
                    self.release(shard, (row.epoch, row.version), effects);
                }
            }
            CasOutcome::Refused(current) => {
                match &current {
                    Some(current) => self.see(now, current.clone(), effects),
                    None => {
                        self.leases.remove(&shard);
                    }
                }
                // A hand-over refused because a renewal of this cell applied after it was
                // decided (in flight, or of unknown outcome): hand over the row as it is now.
                // The epoch is the one this cell handed over, so the newer version is its own.
                if let Some(current) = current.filter(|current| {
                    op == LeaseOp::Release
                        && current.owner.as_deref() == Some(self.me.as_str())
                        && current.epoch == row.epoch
                        && !self.held.contains_key(&shard)
                        && !self.moving.contains_key(&shard)
                }) {
                    self.release(shard, (current.epoch, current.version), effects);
                }
                // A refused renewal of a row the read above still shows as ours can only be a
                // version this cell has not seen; keep deciding until the lease runs out and
                // let the next observation say.
            }
            CasOutcome::Unknown => {}
        }
    }

    /// Stop deciding for shards whose lease ran out by this cell's clock.
    fn expire(&mut self, now: Millis, effects: &mut Vec<LeaseEffect>) {
        let over: Vec<ShardId> = self
            .held
            .iter()
            .filter(|(_, held)| held.valid_until <= now)
            .map(|(shard, _)| *shard)
            .collect();
        for shard in over {
            if let Some(held) = self.held.remove(&shard) {
                effects.push(LeaseEffect::Lost {
                    shard,
                    epoch: held.epoch,
                });
            }
        }
    }

    fn beat(&mut self, now: Millis, effects: &mut Vec<LeaseEffect>) {
        if now >= self.next_beat && !self.leaving {
            self.beat += 1;
            self.next_beat = now + self.settings.renew_ms;
            effects.push(LeaseEffect::Beat { version: self.beat });
        }
    }

    fn renew(&mut self, now: Millis, effects: &mut Vec<LeaseEffect>) {
        let me = self.me.clone();
        for (shard, held) in self.held.iter_mut() {
            if held.renewing || now < held.next_renew {
                continue;
            }
            held.renewing = true;
            effects.push(LeaseEffect::Write {
                op: LeaseOp::Renew,
                expect: Some((held.epoch, held.version)),
                row: LeaseRow {
                    shard: *shard,
                    owner: Some(me.clone()),
                    epoch: held.epoch,
                    version: held.version + 1,
                },
            });
        }
    }

    /// Whether the lease of a row seen as `seen` is over at `now`: nobody owns it, or it has
    /// not changed for longer than a lease.
    fn free(&self, seen: &Seen<LeaseRow>, now: Millis) -> bool {
        seen.row.owner.is_none() || now.saturating_sub(seen.since) >= self.settings.expiry_ms()
    }

    fn balance(&mut self, now: Millis, effects: &mut Vec<LeaseEffect>) {
        let live = self.live_cells(now);
        let share = self.share(&self.me, &live);
        let holding = self.held.len() + self.taking();
        if self.leaving || holding > share {
            self.hand_over(now, &live, share, effects);
            return;
        }
        let wanted = share - holding;
        if wanted == 0 {
            return;
        }
        // (rank, shard, the row's (epoch, version) to compare with; none for a missing row)
        let mut candidates: Vec<(u64, ShardId, Option<Stamp>)> = (0..self.settings.shards)
            .filter(|shard| !self.held.contains_key(shard) && !self.moving.contains_key(shard))
            .filter_map(|shard| match self.leases.get(&shard) {
                None => Some((rank(&self.me, shard), shard, None)),
                Some(seen) if self.free(seen, now) => Some((
                    rank(&self.me, shard),
                    shard,
                    Some((seen.row.epoch, seen.row.version)),
                )),
                Some(_) => None,
            })
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let room = self.settings.max_moves.saturating_sub(self.moving.len());
        for (_, shard, expect) in candidates.into_iter().take(wanted.min(room)) {
            self.moving.insert(shard, LeaseOp::Take);
            let (epoch, version) = expect.unwrap_or((0, 0));
            effects.push(LeaseEffect::Write {
                op: LeaseOp::Take,
                expect,
                row: LeaseRow {
                    shard,
                    owner: Some(self.me.clone()),
                    epoch: epoch + 1,
                    version: version + 1,
                },
            });
        }
    }

    fn taking(&self) -> usize {
        self.moving
            .values()
            .filter(|op| **op == LeaseOp::Take)
            .count()
    }

    /// Hand shards over: all of them when leaving, else those above this cell's share while
    /// another live cell is below its own (per this cell's view).
    fn hand_over(
        &mut self,
        now: Millis,
        live: &[String],
        share: usize,
        effects: &mut Vec<LeaseEffect>,
    ) {
        let excess = if self.leaving {
            self.held.len()
        } else {
            let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
            for seen in self.leases.values() {
                if let Some(owner) = seen.row.owner.as_deref() {
                    if !self.free(seen, now) {
                        *owned.entry(owner).or_default() += 1;
                    }
                }
            }
            let someone_short = live.iter().any(|cell| {
                cell != &self.me
                    && owned.get(cell.as_str()).copied().unwrap_or(0) < self.share(cell, live)
            });
            if !someone_short {
                return;
            }
            self.held.len().saturating_sub(share)
        };
        let room = self.settings.max_moves.saturating_sub(self.moving.len());
        // Hand over the shards this cell ranks lowest.
        let mut mine: Vec<(u64, ShardId)> = self
            .held
            .keys()
            .filter(|shard| !self.moving.contains_key(shard))
            .filter(|shard| self.leaving || !self.busy.contains(shard))
            .map(|shard| (rank(&self.me, *shard), *shard))
            .collect();
        mine.sort();
        for (_, shard) in mine.into_iter().take(excess.min(room)) {
            let Some(held) = self.held.remove(&shard) else {
                continue;
            };
            effects.push(LeaseEffect::Lost {
                shard,
                epoch: held.epoch,
            });
            self.release(shard, (held.epoch, held.version), effects);
        }
    }

    /// Write `shard`'s row without an owner if it is still at `stamp`. The cell does not
    /// decide for the shard (it stopped, or never began).
    fn release(&mut self, shard: ShardId, stamp: Stamp, effects: &mut Vec<LeaseEffect>) {
        let (epoch, version) = stamp;
        self.moving.insert(shard, LeaseOp::Release);
        effects.push(LeaseEffect::Write {
            op: LeaseOp::Release,
            expect: Some(stamp),
            row: LeaseRow {
                shard,
                owner: None,
                epoch,
                version: version + 1,
            },
        });
    }
}

#[cfg(test)]
mod tests;

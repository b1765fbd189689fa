//! Which shards this engine decides for, under which epoch: set by a cell's lease keeper
//! (`weft_cells::cell`), read by the scheduler and by every run write.
//!
//! An engine without an `Ownership` (standalone) owns every DAG and fences nothing. With one,
//! every batch that touches a run carries `Write::Fence` with the epoch of the run's shard, so
//! the store refuses the batch once another cell has taken the shard; a batch for a run whose
//! shard this cell does not hold is refused here, before the store.

use std::collections::BTreeMap;
use std::sync::RwLock;
use weft_core::ids::RunKey;
use weft_core::lease::{shard_of, ShardId};
use weft_storage::Write;

#[derive(Debug)]
pub struct Ownership {
    shards: u32,
    held: RwLock<BTreeMap<ShardId, u64>>,
    /// Active run actors per shard: a shard with work is not handed over to balance cells
    /// (its attempts on this cell's slots would be lost with it).
    active: std::sync::Mutex<BTreeMap<ShardId, usize>>,
    /// Every shard's owner and epoch as this cell last read the lease rows (its lease keeper
    /// sets it): where a command for another cell's DAG goes, and which cell a run page names.
    directory: RwLock<BTreeMap<ShardId, (String, u64)>>,
    /// This cell's name.
    cell: String,
    /// Every cell's name and the address it advertises, as its lease keeper last read the
    /// heartbeat rows: whom its peer links dial.
    addresses: RwLock<Vec<(String, String)>>,
    /// The other cells this one has a link with, as its peer links last measured them.
    peers: RwLock<Vec<PeerStatus>>,
}

/// Another cell as seen over this cell's link with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    pub name: String,
    /// Where the link reaches it.
    pub address: String,
    /// The link's smoothed round-trip time (QUIC's estimate), in milliseconds.
    pub rtt_ms: f64,
    /// Remote workers connected to it, as it last said.
    pub workers: u32,
    /// Packets the link lost so far, and its congestion window (bytes), as QUIC counts them.
    pub lost_packets: u64,
    pub congestion_window: u64,
}

impl Ownership {
    pub fn new(shards: u32) -> Ownership {
        Ownership::for_cell(shards, "")
    }

    /// The ownership of the cell named `cell`.
    pub fn for_cell(shards: u32, cell: &str) -> Ownership {
        Ownership {
            shards,
            held: RwLock::new(BTreeMap::new()),
            active: std::sync::Mutex::new(BTreeMap::new()),
            directory: RwLock::new(BTreeMap::new()),
            cell: cell.to_string(),
            addresses: RwLock::new(Vec::new()),
            peers: RwLock::new(Vec::new()),
        }
    }

    /// Every cell's name and advertised address, as the heartbeat rows last read said.
    pub fn cell_addresses(&self) -> Vec<(String, String)> {
        self.addresses
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set_cell_addresses(&self, addresses: Vec<(String, String)>) {
        *self
            .addresses
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = addresses;
    }

    /// The cells this one has links with (set by its peer links).
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.peers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    pub fn set_peers(&self, peers: Vec<PeerStatus>) {
        *self
            .peers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = peers;
    }

    /// This cell's name.
    pub fn cell(&self) -> &str {
        &self.cell
    }

    /// Replace the directory of owners with the lease rows just read: `(shard, owner, epoch)`,
    /// an empty owner for a shard nobody holds.
    pub fn set_directory(&self, rows: impl IntoIterator<Item = (ShardId, String, u64)>) {
        let directory = rows
            .into_iter()
            .filter(|(_, owner, _)| !owner.is_empty())
            .map(|(shard, owner, epoch)| (shard, (owner, epoch)))
            .collect();
        *self
            .directory
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = directory;
    }

    /// The cell that owns `shard` and its epoch: this cell for a shard it holds, otherwise as
    /// the lease rows said when last read (it may have moved since).
    pub fn owner_of(&self, shard: ShardId) -> Option<(String, u64)> {
        if let Some(epoch) = self.epoch_of(shard) {
            return Some((self.cell.clone(), epoch));
        }
        self.directory
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&shard)
            .cloned()
    }

    /// [`Ownership::owner_of`] the shard of `dag_id`.
    pub fn owner_of_dag(&self, dag_id: &str) -> Option<(String, u64)> {
        self.owner_of(self.shard_of(dag_id))
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    pub fn shard_of(&self, dag_id: &str) -> ShardId {
        shard_of(dag_id, self.shards)
    }

    /// The epoch this cell decides for `dag_id` under, if it holds its shard.
    pub fn epoch_of_dag(&self, dag_id: &str) -> Option<u64> {
        self.epoch_of(self.shard_of(dag_id))
    }

    pub fn epoch_of(&self, shard: ShardId) -> Option<u64> {
        self.read().get(&shard).copied()
    }

    /// The shards held, with their epochs.
    pub fn held(&self) -> BTreeMap<ShardId, u64> {
        self.read().clone()
    }

    /// The shards with active runs here.
    pub fn busy(&self) -> std::collections::BTreeSet<ShardId> {
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .copied()
            .collect()
    }

    pub(crate) fn run_started(&self, dag_id: &str) {
        let shard = self.shard_of(dag_id);
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *active.entry(shard).or_default() += 1;
    }

    pub(crate) fn run_stopped(&self, dag_id: &str) {
        let shard = self.shard_of(dag_id);
        let mut active = self
            .active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = active.get_mut(&shard) {
            *count -= 1;
            if *count == 0 {
                active.remove(&shard);
            }
        }
    }

    pub(crate) fn gain(&self, shard: ShardId, epoch: u64) {
        self.write().insert(shard, epoch);
    }

    /// Forget `shard` if it is still held under `epoch` (a later gain keeps its own).
    pub(crate) fn lose(&self, shard: ShardId, epoch: u64) -> bool {
        let mut held = self.write();
        if held.get(&shard) == Some(&epoch) {
            held.remove(&shard);
            return true;
        }
        false
    }

    /// `batch` with a fence for every run it touches, or the refusal of a run whose shard this
    /// cell does not hold.
    pub fn fence(&self, mut batch: Vec<Write>) -> weft_storage::Result<Vec<Write>> {
        let mut runs: Vec<RunKey> = Vec::new();
        for write in &batch {
            if let Some(run) = run_of(write) {
                if !runs.contains(&run) {
                    runs.push(run);
                }
            }
        }
        for run in runs {
            let Some(epoch) = self.epoch_of_dag(&run.dag_id) else {
                return Err(weft_storage::Error::Fenced {
                    run: format!(
                        "{run} (its shard {} is not held by this cell)",
                        self.shard_of(&run.dag_id)
                    ),
                    epoch: 0,
                    current: 0,
                });
            };
            // A batch that fences a run itself (an adoption) keeps its own epoch.
            let fenced = batch
                .iter()
                .any(|write| matches!(write, Write::Fence { run: fenced, .. } if *fenced == run));
            if fenced {
                continue;
            }
            // The fence goes first, so that a deposed owner's batch is refused for its epoch
            // rather than for a guard the new owner moved; after the run's creation when the
            // batch creates it.
            let created = batch
                .iter()
                .position(|write| matches!(write, Write::CreateRun(created) if created.key == run));
            let at = created.map_or(0, |position| position + 1);
            batch.insert(at, Write::Fence { run, epoch });
        }
        Ok(batch)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ShardId, u64>> {
        self.held
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<ShardId, u64>> {
        self.held
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The run a write belongs to, if any.
fn run_of(write: &Write) -> Option<RunKey> {
    let of_task = |key: &weft_core::ids::TaskInstanceKey| RunKey {
        dag_id: key.dag_id.clone(),
        run_id: key.run_id.clone(),
    };
    match write {
        Write::CreateRun(run) => Some(run.key.clone()),
        Write::UpdateRun { key, .. } => Some(key.clone()),
        Write::Fence { run, .. } => Some(run.clone()),
        Write::PutTaskInstance { record, .. } => Some(of_task(&record.key)),
        Write::PutAttempt(attempt) => Some(of_task(&attempt.attempt.key)),
        Write::PutXcom(xcom) => Some(of_task(&xcom.key)),
        Write::DeleteXcoms { key } => Some(of_task(key)),
        Write::PutLog(log) => Some(of_task(&log.key)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dag_id: &str) -> RunKey {
        RunKey {
            dag_id: dag_id.into(),
            run_id: "r".into(),
        }
    }

    #[test]
    fn the_owner_of_a_shard_is_this_cell_while_it_holds_it_else_the_last_read_row() {
        let ownership = Ownership::for_cell(4, "a");
        assert_eq!(ownership.owner_of(1), None, "nothing read yet");
        ownership.set_directory([(1, "b".to_string(), 3), (2, String::new(), 0)]);
        assert_eq!(ownership.owner_of(1), Some(("b".to_string(), 3)));
        assert_eq!(
            ownership.owner_of(2),
            None,
            "a shard nobody holds has no owner"
        );
        ownership.gain(1, 4);
        assert_eq!(ownership.owner_of(1), Some(("a".to_string(), 4)));
        assert!(ownership.lose(1, 4));
        assert_eq!(ownership.owner_of(1), Some(("b".to_string(), 3)));
    }

    #[test]
    fn batches_are_fenced_by_the_epoch_of_each_run_shard() {
        let ownership = Ownership::new(4);
        let a = run("a");
        let shard = ownership.shard_of("a");
        let update = Write::UpdateRun {
            key: a.clone(),
            expected: weft_core::state::DagRunState::Queued,
            state: weft_core::state::DagRunState::Running,
            started_at: None,
            ended_at: None,
        };
        // Not held: refused before the store.
        let refused = ownership.fence(vec![update.clone()]).unwrap_err();
        assert!(
            matches!(refused, weft_storage::Error::Fenced { .. }),
            "{refused}"
        );
        ownership.gain(shard, 7);
        let fenced = ownership
            .fence(vec![update.clone(), update.clone()])
            .unwrap();
        assert_eq!(fenced.len(), 3, "one fence per run");
        assert!(matches!(&fenced[0], Write::Fence { run, epoch: 7 } if *run == a));
        // Writes that touch no run are not fenced.
        let plain = vec![Write::ClearImportError {
            fileloc: "x".into(),
        }];
        assert_eq!(ownership.fence(plain).unwrap().len(), 1);
        // A lost shard is only forgotten for the epoch it was lost under.
        assert!(!ownership.lose(shard, 6));
        assert_eq!(ownership.epoch_of(shard), Some(7));
        assert!(ownership.lose(shard, 7));
        assert!(ownership.fence(vec![update]).is_err());
    }
}

use super::*;

/// The lease rows of a store, written by compare-and-set as every backend does.
#[derive(Default)]
struct Rows(BTreeMap<ShardId, LeaseRow>);

impl Rows {
    fn apply(&mut self, expect: Option<(u64, u64)>, row: &LeaseRow) -> CasOutcome {
        let current = self.0.get(&row.shard);
        if current.map(|row| (row.epoch, row.version)) == expect {
            self.0.insert(row.shard, row.clone());
            CasOutcome::Applied
        } else {
            CasOutcome::Refused(current.cloned())
        }
    }

    fn observed(&self, now: Millis, cells: &[(&str, u64)]) -> LeaseInput {
        LeaseInput::Observed {
            now,
            leases: self.0.values().cloned().collect(),
            cells: cells
                .iter()
                .map(|(cell, version)| CellBeat {
                    cell: cell.to_string(),
                    version: *version,
                })
                .collect(),
        }
    }
}

/// Perform a keeper's lease writes at once against `rows`, feeding the outcomes back; returns
/// every effect that was not a write.
fn settle(
    keeper: &mut LeaseKeeper,
    rows: &mut Rows,
    now: Millis,
    input: LeaseInput,
) -> Vec<LeaseEffect> {
    let mut pending = keeper.handle(input);
    let mut rest = Vec::new();
    while let Some(effect) = pending.pop() {
        match effect {
            LeaseEffect::Write { op, expect, row } => {
                let outcome = rows.apply(expect, &row);
                pending.extend(keeper.handle(LeaseInput::Written {
                    now,
                    op,
                    row,
                    sent: now,
                    outcome,
                }));
            }
            other => rest.push(other),
        }
    }
    rest
}

fn gained(effects: &[LeaseEffect]) -> Vec<ShardId> {
    let mut shards: Vec<ShardId> = effects
        .iter()
        .filter_map(|effect| match effect {
            LeaseEffect::Gained { shard, .. } => Some(*shard),
            _ => None,
        })
        .collect();
    shards.sort();
    shards
}

fn lost(effects: &[LeaseEffect]) -> Vec<ShardId> {
    let mut shards: Vec<ShardId> = effects
        .iter()
        .filter_map(|effect| match effect {
            LeaseEffect::Lost { shard, .. } => Some(*shard),
            _ => None,
        })
        .collect();
    shards.sort();
    shards
}

fn settings(shards: u32) -> LeaseSettings {
    LeaseSettings {
        shards,
        ..LeaseSettings::default()
    }
}

#[test]
fn shards_are_stable_and_spread() {
    // Fixed values: a change here would move every deployment's DAGs to other shards.
    assert_eq!(shard_of("example_dag", 64), shard_of("example_dag", 64));
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    let mut counts = [0u32; 16];
    for i in 0..16_000 {
        counts[shard_of(&format!("dag_{i}"), 16) as usize] += 1;
    }
    assert!(
        counts.iter().all(|count| (800..1200).contains(count)),
        "{counts:?}"
    );
    assert_eq!(shard_of("anything", 1), 0);
}

#[test]
fn settings_that_could_let_two_owners_decide_are_refused() {
    assert!(LeaseSettings::default().check().is_ok());
    let too_little_skew = LeaseSettings {
        skew_ms: 100,
        ..LeaseSettings::default()
    };
    assert!(too_little_skew.check().unwrap_err().contains("skew"));
    let renew_too_slow = LeaseSettings {
        renew_ms: 3_000,
        ..LeaseSettings::default()
    };
    assert!(renew_too_slow.check().unwrap_err().contains("renewal"));
    assert!(settings(0).check().is_err());
    assert!(settings(SHARDS_MAX + 1).check().is_err());
}

#[test]
fn a_lone_cell_takes_every_shard_a_bounded_number_at_a_time() {
    let mut rows = Rows::default();
    let mut keeper = LeaseKeeper::new("a", settings(20), 0);
    // Nothing is taken before the rows were read once.
    let first = keeper.handle(LeaseInput::Tick { now: 0 });
    assert!(first
        .iter()
        .all(|effect| matches!(effect, LeaseEffect::Beat { .. })));
    let writes = keeper.handle(rows.observed(0, &[]));
    let takes = writes
        .iter()
        .filter(|effect| {
            matches!(
                effect,
                LeaseEffect::Write {
                    op: LeaseOp::Take,
                    ..
                }
            )
        })
        .count();
    assert_eq!(takes, LeaseSettings::default().max_moves);
    // Performed one after another, the takes go on until the cell holds its share: all.
    let mut keeper = LeaseKeeper::new("a", settings(20), 0);
    let effects = settle(&mut keeper, &mut rows, 0, rows_observed_empty());
    assert_eq!(gained(&effects), (0..20).collect::<Vec<_>>());
    assert!(rows
        .0
        .values()
        .all(|row| row.owner.as_deref() == Some("a") && row.epoch == 1));
}

fn rows_observed_empty() -> LeaseInput {
    LeaseInput::Observed {
        now: 0,
        leases: Vec::new(),
        cells: Vec::new(),
    }
}

#[test]
fn an_owner_that_cannot_renew_stops_before_anyone_may_take_over() {
    let s = settings(4);
    let mut rows = Rows::default();
    let mut a = LeaseKeeper::new("a", s.clone(), 0);
    settle(&mut a, &mut rows, 0, rows_observed_empty());
    assert_eq!(a.held().count(), 4);

    // b reads the rows at 100 and keeps reading; a's renewals never reach the store.
    let mut b = LeaseKeeper::new("b", s.clone(), 0);
    let mut b_took_at = None;
    let mut a_stopped_at = None;
    for now in (100..20_000).step_by(100) {
        let effects = a.handle(LeaseInput::Tick { now });
        for effect in &effects {
            // a cannot reach the store: its renewals (and, once its leases ran out, its
            // attempts to take the shards again) have unknown outcomes.
            if let LeaseEffect::Write { op, row, .. } = effect {
                assert!(
                    *op == LeaseOp::Renew || a_stopped_at.is_some() || !lost(&effects).is_empty()
                );
                a.handle(LeaseInput::Written {
                    now,
                    op: *op,
                    row: row.clone(),
                    sent: now,
                    outcome: CasOutcome::Unknown,
                });
            }
        }
        if a_stopped_at.is_none() && lost(&effects).len() == 4 {
            a_stopped_at = Some(now);
        }
        let gained_now = {
            let input = rows.observed(now, &[("a", 1)]);
            settle(&mut b, &mut rows, now, input)
        };
        if b_took_at.is_none() && !gained(&gained_now).is_empty() {
            b_took_at = Some(now);
        }
    }
    let a_stopped_at = a_stopped_at.expect("a stops deciding");
    let b_took_at = b_took_at.expect("b takes over");
    assert_eq!(
        a_stopped_at,
        s.validity_ms(),
        "a stops when its last renewal's lease is over"
    );
    assert!(
        b_took_at >= 100 + s.expiry_ms(),
        "b waits a whole lease from its first read"
    );
    assert!(b_took_at > a_stopped_at);
    assert!(rows
        .0
        .values()
        .all(|row| row.owner.as_deref() == Some("b") && row.epoch == 2));
}

#[test]
fn renewals_keep_a_lease_and_a_row_showing_another_owner_deposes_at_once() {
    let mut rows = Rows::default();
    let mut a = LeaseKeeper::new("a", settings(2), 0);
    settle(&mut a, &mut rows, 0, rows_observed_empty());
    for now in (500..30_000).step_by(500) {
        let effects = settle(&mut a, &mut rows, now, LeaseInput::Tick { now });
        assert!(lost(&effects).is_empty(), "lost a renewed lease at {now}");
    }
    assert!(rows.0.values().all(|row| row.version > 20));
    // Another cell took shard 1 (a was thought dead): the next read deposes a for it.
    let row = rows.0.get_mut(&1).unwrap();
    row.owner = Some("b".into());
    row.epoch += 1;
    let effects = a.handle(rows.observed(30_000, &[]));
    assert_eq!(lost(&effects), vec![1]);
    assert_eq!(a.epoch_of(1), None);
    assert_eq!(a.epoch_of(0), Some(1));
}

#[test]
fn a_joining_cell_gets_its_share_through_hand_overs() {
    let s = settings(10);
    let mut rows = Rows::default();
    let mut a = LeaseKeeper::new("a", s.clone(), 0);
    let mut b = LeaseKeeper::new("b", s, 0);
    settle(&mut a, &mut rows, 0, rows_observed_empty());
    assert_eq!(a.held().count(), 10);
    let mut a_beat = 0;
    let mut b_beat = 0;
    for now in (200..10_000).step_by(200) {
        a_beat += 1;
        b_beat += 1;
        let cells = [("a", a_beat), ("b", b_beat)];
        {
            let input = rows.observed(now, &cells);
            settle(&mut a, &mut rows, now, input)
        };
        {
            let input = rows.observed(now, &cells);
            settle(&mut b, &mut rows, now, input)
        };
    }
    assert_eq!(a.held().count(), 5);
    assert_eq!(b.held().count(), 5);
    let owners: BTreeSet<ShardId> = a.held().chain(b.held()).map(|(shard, _)| shard).collect();
    assert_eq!(owners.len(), 10, "every shard has exactly one owner");
    // A shard moved by a hand-over has a new epoch.
    assert!(b.held().all(|(_, held)| held.epoch == 2));

    // b leaves: it hands everything back and a takes it without waiting out a lease.
    let effects = settle(&mut b, &mut rows, 10_000, LeaseInput::Leave { now: 10_000 });
    assert_eq!(lost(&effects).len(), 5);
    let effects = {
        let input = rows.observed(10_200, &[("a", 99)]);
        settle(&mut a, &mut rows, 10_200, input)
    };
    assert_eq!(gained(&effects).len(), 5);
    assert!(effects
        .iter()
        .all(|e| !matches!(e, LeaseEffect::Lost { .. })));
}

#[test]
fn two_cells_racing_for_a_free_shard_cannot_both_win() {
    let mut rows = Rows::default();
    let mut a = LeaseKeeper::new("a", settings(1), 0);
    let mut b = LeaseKeeper::new("b", settings(1), 0);
    let wa = a.handle(rows_observed_empty());
    let wb = b.handle(rows_observed_empty());
    let mut winners = 0;
    for (keeper, writes) in [(&mut a, wa), (&mut b, wb)] {
        for effect in writes {
            if let LeaseEffect::Write { op, expect, row } = effect {
                let outcome = rows.apply(expect, &row);
                let effects = keeper.handle(LeaseInput::Written {
                    now: 1,
                    op,
                    row,
                    sent: 0,
                    outcome,
                });
                winners += gained(&effects).len();
            }
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(a.held().count() + b.held().count(), 1);
}

#[test]
fn busy_shards_are_not_handed_over_to_balance_but_are_when_leaving() {
    let mut rows = Rows::default();
    let mut a = LeaseKeeper::new("a", settings(4), 0);
    settle(&mut a, &mut rows, 0, rows_observed_empty());
    a.set_busy([0, 1, 2].into_iter().collect());
    let cells = [("a", 1), ("b", 1)];
    let input = rows.observed(100, &cells);
    let effects = settle(&mut a, &mut rows, 100, input);
    // b is below its share of 2, but only one shard of a is idle.
    assert_eq!(lost(&effects), vec![3]);
    assert_eq!(a.held().count(), 3);
    let effects = settle(&mut a, &mut rows, 200, LeaseInput::Leave { now: 200 });
    assert_eq!(lost(&effects), vec![0, 1, 2]);
}

/// A read sent before this cell's take applied and answered after it shows the row as it was
/// (free, or another cell's expired lease): it must not depose the new owner. A newer row
/// showing another owner still does.
#[test]
fn a_read_older_than_the_take_does_not_depose_the_new_owner() {
    let mut rows = Rows::default();
    rows.0.insert(
        0,
        LeaseRow {
            shard: 0,
            owner: None,
            epoch: 1,
            version: 2,
        },
    );
    let mut a = LeaseKeeper::new("a", settings(1), 0);
    let before_take = rows.observed(0, &[]);
    let effects = settle(&mut a, &mut rows, 0, before_take);
    assert_eq!(gained(&effects), vec![0]);
    assert_eq!(a.epoch_of(0), Some(2));
    // A read that crossed the take (sent before it applied) is answered now.
    let crossed = LeaseInput::Observed {
        now: 40,
        leases: vec![LeaseRow {
            shard: 0,
            owner: None,
            epoch: 1,
            version: 2,
        }],
        cells: Vec::new(),
    };
    let effects = a.handle(crossed);
    assert_eq!(lost(&effects), Vec::<ShardId>::new());
    assert_eq!(a.epoch_of(0), Some(2));
    // Another cell took it since (a was thought dead): the next read deposes a.
    let row = rows.0.get_mut(&0).unwrap();
    row.owner = Some("b".into());
    row.epoch += 1;
    row.version += 1;
    let effects = a.handle(rows.observed(100, &[]));
    assert_eq!(lost(&effects), vec![0]);
    assert_eq!(a.epoch_of(0), None);
}

fn releases(effects: &[LeaseEffect]) -> Vec<(ShardId, Option<Stamp>)> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            LeaseEffect::Write {
                op: LeaseOp::Release,
                expect,
                row,
            } => Some((row.shard, *expect)),
            _ => None,
        })
        .collect()
}

/// The take a keeper sends first for its one shard, and the same take applied to `rows`.
fn first_take(keeper: &mut LeaseKeeper, rows: &mut Rows) -> (LeaseRow, CasOutcome) {
    let effects = keeper.handle(rows_observed_empty());
    let (expect, row) = effects
        .into_iter()
        .find_map(|effect| match effect {
            LeaseEffect::Write {
                op: LeaseOp::Take,
                expect,
                row,
            } => Some((expect, row)),
            _ => None,
        })
        .expect("a take");
    let outcome = rows.apply(expect, &row);
    (row, outcome)
}

/// A lease write of a cell that applied when the cell will not decide under it hands the row
/// back at once, instead of leaving the shard owned by a cell that does not decide for it
/// until the row expires: a take answered after the cell began leaving, a take answered after
/// the lease it gave was over, a renewal answered after the lease ran out.
#[test]
fn a_row_the_cell_will_not_decide_under_is_handed_back() {
    let s = settings(1);
    // A take answered after the cell began leaving.
    let mut rows = Rows::default();
    let mut a = LeaseKeeper::new("a", s.clone(), 0);
    let (row, outcome) = first_take(&mut a, &mut rows);
    let effects = a.handle(LeaseInput::Leave { now: 10 });
    assert!(effects.contains(&LeaseEffect::Retire));
    let effects = a.handle(LeaseInput::Written {
        now: 20,
        op: LeaseOp::Take,
        row,
        sent: 0,
        outcome,
    });
    assert_eq!(gained(&effects), Vec::<ShardId>::new());
    assert_eq!(releases(&effects), vec![(0, Some((1, 1)))]);

    // A take answered after the lease it gave was over.
    let mut rows = Rows::default();
    let mut b = LeaseKeeper::new("b", s.clone(), 0);
    let (row, outcome) = first_take(&mut b, &mut rows);
    let effects = b.handle(LeaseInput::Written {
        now: s.validity_ms() + 1,
        op: LeaseOp::Take,
        row,
        sent: 0,
        outcome,
    });
    assert_eq!(gained(&effects), Vec::<ShardId>::new());
    assert_eq!(releases(&effects), vec![(0, Some((1, 1)))]);

    // A renewal answered after the lease ran out.
    let mut rows = Rows::default();
    let mut c = LeaseKeeper::new("c", s.clone(), 0);
    settle(&mut c, &mut rows, 0, rows_observed_empty());
    let renewal = c
        .handle(LeaseInput::Tick { now: s.renew_ms })
        .into_iter()
        .find_map(|effect| match effect {
            LeaseEffect::Write {
                op: LeaseOp::Renew,
                expect,
                row,
            } => Some((expect, row)),
            _ => None,
        })
        .expect("a renewal");
    let effects = c.handle(LeaseInput::Tick {
        now: s.validity_ms(),
    });
    assert_eq!(lost(&effects), vec![0]);
    let outcome = rows.apply(renewal.0, &renewal.1);
    let effects = c.handle(LeaseInput::Written {
        now: s.validity_ms() + 100,
        op: LeaseOp::Renew,
        row: renewal.1,
        sent: s.renew_ms,
        outcome,
    });
    assert_eq!(releases(&effects), vec![(0, Some((1, 2)))]);
}

/// A hand-over decided while a renewal was in flight expects the version before the renewal;
/// when the renewal applies first the store refuses it, and the keeper hands over the row as
/// it is now instead of leaving it owned until it expires.
#[test]
fn a_hand_over_refused_by_the_cells_own_renewal_is_written_again() {
    let s = settings(1);
    let mut rows = Rows::default();
    let mut a = LeaseKeeper::new("a", s.clone(), 0);
    settle(&mut a, &mut rows, 0, rows_observed_empty());
    let renewal = a
        .handle(LeaseInput::Tick { now: s.renew_ms })
        .into_iter()
        .find_map(|effect| match effect {
            LeaseEffect::Write {
                op: LeaseOp::Renew,
                expect,
                row,
            } => Some((expect, row)),
            _ => None,
        })
        .expect("a renewal");
    // The renewal reaches the store; its answer is still on its way when the cell leaves.
    assert_eq!(rows.apply(renewal.0, &renewal.1), CasOutcome::Applied);
    let effects = a.handle(LeaseInput::Leave {
        now: s.renew_ms + 10,
    });
    assert_eq!(lost(&effects), vec![0]);
    let (expect, row) = effects
        .into_iter()
        .find_map(|effect| match effect {
            LeaseEffect::Write {
                op: LeaseOp::Release,
                expect,
                row,
            } => Some((expect, row)),
            _ => None,
        })
        .expect("a hand-over");
    assert_eq!(expect, Some((1, 1)));
    let outcome = rows.apply(expect, &row);
    assert!(matches!(outcome, CasOutcome::Refused(Some(_))));
    let now = s.renew_ms + 20;
    let effects = settle(
        &mut a,
        &mut rows,
        now,
        LeaseInput::Written {
            now,
            op: LeaseOp::Release,
            row,
            sent: s.renew_ms + 10,
            outcome,
        },
    );
    assert!(gained(&effects).is_empty());
    assert_eq!(
        rows.0[&0],
        LeaseRow {
            shard: 0,
            owner: None,
            epoch: 1,
            version: 3,
        }
    );
}

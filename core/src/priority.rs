//! Priority weights: absolute, downstream and upstream weight rules.
//!
//! Airflow's `priority_weight_total`: `downstream` adds the own weights of every descendant
//! (each counted once, however many paths lead to it), `upstream` adds those of every ancestor,
//! `absolute` is the task's own weight. Relatives contribute their *own* weight, not their
//! effective one, exactly as Airflow sums `t.priority_weight` over `get_flat_relatives`.

use crate::state::WeightRule;

/// The inputs of the weight computation, indexed by task index.
#[derive(Debug, Clone, Copy)]
pub struct WeightInput<'a> {
    pub own_weights: &'a [i64],
    pub rules: &'a [WeightRule],
    pub upstream: &'a [Vec<usize>],
    pub downstream: &'a [Vec<usize>],
    /// Task indices in a topological order (upstream first).
    pub topological: &'a [usize],
}

/// The effective weight of every task. Sums saturate instead of overflowing.
pub fn effective_weights(input: WeightInput<'_>) -> Vec<i64> {
    let count = input.own_weights.len();
    assert_eq!(input.rules.len(), count, "one weight rule per task");
    assert_eq!(
        input.topological.len(),
        count,
        "topological order covers every task"
    );
    let mut weights = input.own_weights.to_vec();
    if input.rules.contains(&WeightRule::Downstream) {
        // Descendants of a task are known once its downstream tasks are done: reverse order.
        let order: Vec<usize> = input.topological.iter().rev().copied().collect();
        add_relatives(
            &mut weights,
            &input,
            WeightRule::Downstream,
            input.downstream,
            &order,
        );
    }
    if input.rules.contains(&WeightRule::Upstream) {
        add_relatives(
            &mut weights,
            &input,
            WeightRule::Upstream,
            input.upstream,
            input.topological,
        );
    }
    weights
}

/// For every task with `rule`, adds the own weights of all tasks reachable through `edges`.
/// `order` visits a task after every task reachable from it, so reachable sets are built as
/// unions of bit sets: O(edges × tasks / 64) time, one bit set per task of memory while it runs.
fn add_relatives(
    weights: &mut [i64],
    input: &WeightInput<'_>,
    rule: WeightRule,
    edges: &[Vec<usize>],
    order: &[usize],
) {
    let count = input.own_weights.len();
    let mut reachable: Vec<BitSet> = vec![BitSet::empty(0); count];
    for &task in order {
        let mut set = BitSet::empty(count);
        for &next in &edges[task] {
            set.insert(next);
            set.union_with(&reachable[next]);
        }
        if input.rules[task] == rule {
            let sum = set.iter().fold(0i64, |sum, relative| {
                sum.saturating_add(input.own_weights[relative])
            });
            weights[task] = weights[task].saturating_add(sum);
        }
        reachable[task] = set;
    }
}

/// A fixed-size set of task indices.
#[derive(Debug, Clone)]
pub(crate) struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    pub(crate) fn empty(bits: usize) -> BitSet {
        BitSet {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    pub(crate) fn insert(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    pub(crate) fn union_with(&mut self, other: &BitSet) {
        for (word, other_word) in self.words.iter_mut().zip(&other.words) {
            *word |= other_word;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(index * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a -> b, a -> c, b -> d, c -> d (a diamond): d is counted once for `a`.
    #[test]
    fn diamond_counts_each_relative_once() {
        let upstream = vec![vec![], vec![0], vec![0], vec![1, 2]];
        let downstream = vec![vec![1, 2], vec![3], vec![3], vec![]];
        let own = [1, 10, 100, 1000];
        let weights = |rule| {
            effective_weights(WeightInput {
                own_weights: &own,
                rules: &[rule; 4],
                upstream: &upstream,
                downstream: &downstream,
                topological: &[0, 1, 2, 3],
            })
        };
        assert_eq!(
            weights(WeightRule::Downstream),
            vec![1111, 1010, 1100, 1000]
        );
        assert_eq!(weights(WeightRule::Upstream), vec![1, 11, 101, 1111]);
        assert_eq!(weights(WeightRule::Absolute), vec![1, 10, 100, 1000]);
    }

    #[test]
    fn sums_saturate() {
        let weights = effective_weights(WeightInput {
            own_weights: &[i64::MAX, i64::MAX],
            rules: &[WeightRule::Downstream, WeightRule::Downstream],
            upstream: &[vec![], vec![0]],
            downstream: &[vec![1], vec![]],
            topological: &[0, 1],
        });
        assert_eq!(weights, vec![i64::MAX, i64::MAX]);
    }
}

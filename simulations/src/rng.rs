//! The simulator's only source of randomness: a SplitMix64 generator seeded by the seed under
//! test, so that a seed fixes every choice and a failure replays exactly.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to pick faults; written
/// here so that no dependency update can change a seed's trace.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng {
            state: seed ^ 0x005E_ED0F_3EF7_u64,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound` > 0); the modulo bias is irrelevant at these sizes.
    pub fn below(&mut self, bound: u64) -> u64 {
        debug_assert!(bound > 0, "below needs a positive bound");
        self.next_u64() % bound.max(1)
    }

    /// Uniform in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A generator for one independent part of the simulation, so that adding draws in one
    /// part does not shift every other part's choices.
    pub fn fork(&mut self) -> SimRng {
        SimRng::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut a = SimRng::new(7);
        let mut b = SimRng::new(7);
        for _ in 0..1000 {
            let value = a.between(3, 9);
            assert_eq!(value, b.between(3, 9));
            assert!((3..=9).contains(&value));
        }
        assert_ne!(SimRng::new(1).next_u64(), SimRng::new(2).next_u64());
    }
}

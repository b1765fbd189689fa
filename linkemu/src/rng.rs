//! The dice for loss: a small seeded xorshift generator (not for anything secret).

/// An xorshift64 generator.
#[derive(Debug, Clone)]
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator started from `seed` (any value; zero, which xorshift cannot leave, is moved).
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// A generator for the `n`th flow of a link seeded with `seed`, distinct from the others.
    pub(crate) fn for_flow(seed: u64, n: u64) -> Self {
        Self::new(mix(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// True with a probability of `percent` / 100.
    pub(crate) fn chance(&mut self, percent: f64) -> bool {
        if percent <= 0.0 {
            return false;
        }
        if percent >= 100.0 {
            return true;
        }
        // 53 random bits give a uniform float in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit * 100.0 < percent
    }
}

/// A seed from a link's name (FNV-1a), so that each link has its own repeatable dice.
pub(crate) fn seed_from(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The splitmix64 finaliser: spreads close inputs over the whole range.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_is_near_its_percentage() {
        let mut rng = XorShift::new(seed_from("a"));
        let hits = (0..100_000).filter(|_| rng.chance(25.0)).count();
        assert!((23_000..27_000).contains(&hits), "{hits}");
    }

    #[test]
    fn edges_are_exact() {
        let mut rng = XorShift::new(0);
        assert!((0..1000).all(|_| !rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(100.0)));
    }

    #[test]
    fn seeds_differ_by_name_and_flow() {
        assert_ne!(seed_from("a"), seed_from("b"));
        let (mut a, mut b) = (XorShift::for_flow(1, 0), XorShift::for_flow(1, 1));
        assert_ne!(a.next_u64(), b.next_u64());
    }
}

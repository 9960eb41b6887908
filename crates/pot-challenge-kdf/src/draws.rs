//! The deterministic random stream a prompt is generated from: one PRF draw per choice.

use crate::prf::prf_integers;

/// Draw `k` (k = 0, 1, ...) from a seed is
/// `prf_integers(seed, b"pot/draw/v1" || u32be(k), 1, 0, n)[0]`: every choice is independent of
/// how many bytes earlier choices consumed, which keeps the algorithm easy to re-implement.
pub struct Draws<'a> {
    seed: &'a [u8],
    counter: u32,
}

impl<'a> Draws<'a> {
    pub fn new(seed: &'a [u8]) -> Self {
        Self { seed, counter: 0 }
    }

    /// Uniform in `0..n`. `n` must be at least 1.
    pub fn below(&mut self, n: usize) -> usize {
        let mut info = b"pot/draw/v1".to_vec();
        info.extend_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        prf_integers(self.seed, &info, 1, 0, n as u64)[0] as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below((hi - lo + 1) as usize) as u64
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// `k` distinct indices of `0..n` in drawn order (a partial Fisher-Yates shuffle).
    pub fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..n).collect();
        (0..k.min(n))
            .map(|i| {
                let j = i + self.below(n - i);
                pool.swap(i, j);
                pool[i]
            })
            .collect()
    }
}

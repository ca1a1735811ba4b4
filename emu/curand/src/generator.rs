//! One generator's state and the mapping from its sequence to numbers.

use crate::philox::block;

/// What is drawn.
#[derive(Clone, Copy, Debug)]
pub enum Distribution {
    /// Raw 32-bit words.
    Bits32,
    /// f32 in (0, 1]: one 32-bit word each.
    Uniform32,
    /// f64 in (0, 1]: 53 bits of two words each.
    Uniform64,
    /// Box-Muller on a pair of 64-bit uniforms; elements `2q` and `2q + 1`
    /// of the sequence are the pair's two values.
    Normal { mean: f64, stddev: f64 },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Generator {
    seed: u64,
    offset: u64,
    /// The sequence index the next number is drawn at.
    position: u64,
    /// `CUstream` as an integer (0: the legacy default stream).
    pub stream: usize,
}

const TWO_POW_32: f64 = 4_294_967_296.0;
const TWO_POW_53: f64 = 9_007_199_254_740_992.0;

impl Generator {
    pub fn set_seed(&mut self, seed: u64) {
        self.seed = seed;
        self.position = self.offset;
    }

    pub fn set_offset(&mut self, offset: u64) {
        self.offset = offset;
        self.position = offset;
    }

    pub fn advance(&mut self, n: usize) {
        self.position = self.position.wrapping_add(n as u64);
    }

    /// The next `n` numbers, without advancing.
    pub fn peek(&self, distribution: Distribution, n: usize) -> Vec<f64> {
        (0..n as u64).map(|i| self.at(distribution, self.position.wrapping_add(i))).collect()
    }

    fn word(&self, index: u64) -> u32 {
        block(self.seed, index / 4)[(index % 4) as usize]
    }

    /// (0, 1] from the 64 bits of block `pair`'s words `2 * half`, `2 * half + 1`.
    fn uniform_64(&self, block_index: u64, half: usize) -> f64 {
        let words = block(self.seed, block_index);
        let bits = (u64::from(words[2 * half]) << 32 | u64::from(words[2 * half + 1])) >> 11;
        (bits as f64 + 1.0) / TWO_POW_53
    }

    fn at(&self, distribution: Distribution, index: u64) -> f64 {
        match distribution {
            Distribution::Bits32 => f64::from(self.word(index)),
            Distribution::Uniform32 => (f64::from(self.word(index)) + 1.0) / TWO_POW_32,
            Distribution::Uniform64 => self.uniform_64(index / 2, (index % 2) as usize),
            Distribution::Normal { mean, stddev } => {
                let (u1, u2) = (self.uniform_64(index / 2, 0), self.uniform_64(index / 2, 1));
                let radius = (-2.0 * u1.ln()).sqrt();
                let angle = 2.0 * std::f64::consts::PI * u2;
                let z = if index % 2 == 0 { radius * angle.cos() } else { radius * angle.sin() };
                mean + stddev * z
            }
        }
    }
}

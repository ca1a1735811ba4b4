//! Problem shapes, in docs/contract.md's names: X `[M, K]`, W0 `[N, K]`, A `[r, K]`, B `[N, r]`.

/// One linear layer's LoRA problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoraShape {
    /// Tokens (rows of X and Y).
    pub m: usize,
    /// Input features (columns of X, W0, A).
    pub k: usize,
    /// Output features (rows of W0 and B).
    pub n: usize,
    /// Adapter rank.
    pub r: usize,
}

impl LoraShape {
    /// X `[m, k]`.
    pub fn x(&self) -> [usize; 2] {
        [self.m, self.k]
    }
    /// W0 `[n, k]`.
    pub fn w0(&self) -> [usize; 2] {
        [self.n, self.k]
    }
    /// A `[r, k]`.
    pub fn a(&self) -> [usize; 2] {
        [self.r, self.k]
    }
    /// B `[n, r]`.
    pub fn b(&self) -> [usize; 2] {
        [self.n, self.r]
    }
    /// P `[m, r]`.
    pub fn p(&self) -> [usize; 2] {
        [self.m, self.r]
    }
    /// Y `[m, n]`.
    pub fn y(&self) -> [usize; 2] {
        [self.m, self.n]
    }
}

/// `L` stacked adapters: A_all `[L, r_max, K]`, B_all `[N, ...]` as `[L, N, r_max]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MultiAdapterShape {
    /// Tokens (rows of X and Y).
    pub m: usize,
    /// Input features.
    pub k: usize,
    /// Output features.
    pub n: usize,
    /// The number of adapters L.
    pub num_adapters: usize,
    /// The slot width: the largest rank.
    pub r_max: usize,
}

//! The initialisation schemes of docs/contract.md (docs/theory.md says why they matter).

/// How A `[r, K]` and B `[N, r]` start. Both-zero is deliberately absent: no
/// gradient ever reaches A or B from it (docs/theory.md, question 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InitScheme {
    /// PEFT's default ("Init\[A\]"): A ~ Kaiming-uniform with a = √5, i.e.
    /// `U(−1/√K, 1/√K)`; B = 0.
    PeftDefault,
    /// A ~ `N(0, (1/r)²)`; B = 0.
    Gaussian,
    /// Hayou et al. 2024 "Init\[B\]": A = 0; B ~ `U(−1/√r, 1/√r)`.
    Reversed,
}

/// The distribution one matrix is drawn from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Every element 0.
    Zero,
    /// Uniform on `(-bound, bound)`.
    Uniform {
        /// The half-width of the interval.
        bound: f64,
    },
    /// Normal with mean 0 and standard deviation `std`.
    Normal {
        /// The standard deviation.
        std: f64,
    },
}

impl InitScheme {
    /// The distributions of `(A, B)` for an adapter of rank `rank` on `k_in` inputs.
    pub fn distributions(self, rank: usize, k_in: usize) -> (Distribution, Distribution) {
        match self {
            InitScheme::PeftDefault => {
                (Distribution::Uniform { bound: 1.0 / (k_in as f64).sqrt() }, Distribution::Zero)
            }
            InitScheme::Gaussian => (Distribution::Normal { std: 1.0 / rank as f64 }, Distribution::Zero),
            InitScheme::Reversed => (Distribution::Zero, Distribution::Uniform { bound: 1.0 / (rank as f64).sqrt() }),
        }
    }
}

//! CTA sampling: which CTAs of a large grid to execute, and how their counts
//! stand for the whole grid.
//!
//! The grid is split into strata by position: for each dimension longer than
//! one, a CTA is either on the last index of that dimension (a tail tile,
//! often partial) or not. That gives at most 8 strata: the interior, the last
//! column, the last row, the corner, and so on. Each non-empty stratum gets
//! at least one sampled CTA, the rest of the budget goes to strata in
//! proportion to their size, and inside a stratum the sampled CTAs are evenly
//! spaced from its first to its last member (so the grid's first and last
//! CTAs are always run). A stratum's counts are scaled by its size over its
//! sample size; the launch's counts are the sum over strata. On a grid whose
//! CTAs in one stratum do identical work (tiled GEMMs and elementwise kernels
//! do), the extrapolation is exact.
//!
//! Unique global bytes cannot be scaled that way (CTAs share inputs: every
//! CTA of a GEMM row reads the same A panel). Per allocation, the sample's
//! unique bytes are scaled by total / sampled CTAs and capped at the span the
//! sample touched in that allocation (first to last byte touched): CTAs that
//! read disjoint slices scale linearly, CTAs that share an input saturate at
//! that input's extent, which the first and last CTAs of the grid bound.

/// Strata per launch: one bit per grid dimension (on its last index or not).
pub(crate) const STRATA: usize = 8;

/// The CTAs to run and the strata they stand for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// (CTA id, stratum) of each CTA to run, in grid order within a stratum.
    pub ctas: Vec<([u32; 3], usize)>,
    /// CTAs of the grid in each stratum.
    pub stratum_size: [u64; STRATA],
    /// CTAs run in each stratum.
    pub stratum_sampled: [u64; STRATA],
}

impl Plan {
    pub(crate) fn sampled(&self) -> u64 {
        self.stratum_sampled.iter().sum()
    }

    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.stratum_size.iter().sum()
    }
}

/// Per dimension: the number of indices in the "not last" and "last" parts.
fn parts(g: u32) -> [(u32, u32); 2] {
    // (first index, count) of each part; a dimension of one has no last part.
    if g > 1 {
        [(0, g - 1), (g - 1, 1)]
    } else {
        [(0, 1), (0, 0)]
    }
}

/// The sample plan for `grid` with a budget of `limit` CTAs, or `None` when
/// the whole grid is run (no limit, or at most `limit` CTAs).
pub(crate) fn plan(grid: [u32; 3], limit: Option<u64>) -> Option<Plan> {
    let limit = limit?;
    let total: u64 = grid.iter().map(|&g| g as u64).product();
    if total <= limit.max(1) {
        return None;
    }
    let dims = grid.map(parts);
    let mut size = [0u64; STRATA];
    for (s, n) in size.iter_mut().enumerate() {
        *n = (0..3).map(|d| dims[d][(s >> d) & 1].1 as u64).product();
    }
    let nonempty = size.iter().filter(|&&n| n > 0).count() as u64;
    // At least one per non-empty stratum, the rest by size (largest remainders last).
    let spare = limit.saturating_sub(nonempty);
    let mut budget = [0u64; STRATA];
    for s in 0..STRATA {
        if size[s] > 0 {
            budget[s] = (1 + (spare as u128 * size[s] as u128 / total as u128) as u64).min(size[s]);
        }
    }
    let mut left = limit.saturating_sub(budget.iter().sum());
    while left > 0 {
        // Give leftovers to the stratum with the most CTAs per sampled CTA.
        let Some(s) = (0..STRATA)
            .filter(|&s| budget[s] < size[s])
            .max_by(|&a, &b| (size[a] * budget[b]).cmp(&(size[b] * budget[a])).then(b.cmp(&a)))
        else {
            break;
        };
        budget[s] += 1;
        left -= 1;
    }
    let mut ctas = Vec::new();
    for s in 0..STRATA {
        let (n, k) = (size[s], budget[s]);
        if n == 0 {
            continue;
        }
        let part = |d: usize| dims[d][(s >> d) & 1];
        let (px, py, pz) = (part(0), part(1), part(2));
        let mut last = None;
        for i in 0..k {
            // Evenly spaced from the stratum's first member (j = 0) to its last (j = n - 1).
            let j =
                if k == 1 { 0 } else { ((i as u128 * (n - 1) as u128 + (k - 1) as u128 / 2) / (k - 1) as u128) as u64 };
            if last == Some(j) {
                continue;
            }
            last = Some(j);
            let x = px.0 + (j % px.1 as u64) as u32;
            let y = py.0 + ((j / px.1 as u64) % py.1 as u64) as u32;
            let z = pz.0 + (j / (px.1 as u64 * py.1 as u64)) as u32;
            ctas.push(([x, y, z], s));
        }
    }
    let mut sampled = [0u64; STRATA];
    for &(_, s) in &ctas {
        sampled[s] += 1;
    }
    Some(Plan { ctas, stratum_size: size, stratum_sampled: sampled })
}

/// The sample plan for `grid` in clusters of `dims` CTAs: whole clusters
/// are sampled, as `plan` samples CTAs over the grid of clusters (a tail
/// cluster holds the grid's tail CTAs), with a budget of `limit` CTAs (at
/// least one cluster). `Plan::ctas` then holds each sampled cluster's first
/// CTA, and the strata count CTAs, so counts scale and `sampled` reads as
/// for CTAs. `None` when the whole grid runs.
pub(crate) fn plan_clusters(grid: [u32; 3], dims: [u32; 3], limit: Option<u64>) -> Option<Plan> {
    let size: u64 = dims.iter().map(|&d| d as u64).product();
    let clusters = [0, 1, 2].map(|d| grid[d] / dims[d]);
    let mut p = plan(clusters, limit.map(|l| (l / size).max(1)))?;
    for (id, _) in &mut p.ctas {
        *id = [0, 1, 2].map(|d| id[d] * dims[d]);
    }
    for n in p.stratum_size.iter_mut().chain(p.stratum_sampled.iter_mut()) {
        *n *= size;
    }
    Some(p)
}

/// `v * num / den`, rounded to nearest.
pub(crate) fn scale(v: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return v;
    }
    ((v as u128 * num as u128 + den as u128 / 2) / den as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_grids_run_whole() {
        assert_eq!(plan([4, 2, 1], Some(8)), None);
        assert_eq!(plan([4, 2, 1], None), None);
    }

    #[test]
    fn first_last_and_every_tail_stratum_are_sampled() {
        let p = plan([32, 32, 1], Some(8)).expect("sampled");
        let ids: Vec<[u32; 3]> = p.ctas.iter().map(|c| c.0).collect();
        assert!(ids.contains(&[0, 0, 0]), "{ids:?}");
        assert!(ids.contains(&[31, 31, 0]), "{ids:?}");
        // The last column and the last row each have a representative.
        assert!(ids.iter().any(|id| id[0] == 31 && id[1] < 31), "{ids:?}");
        assert!(ids.iter().any(|id| id[1] == 31 && id[0] < 31), "{ids:?}");
        assert_eq!(p.sampled(), 8);
        assert_eq!(p.total(), 1024);
        assert_eq!(p.stratum_size.iter().filter(|&&n| n > 0).count(), 4);
        for (s, &n) in p.stratum_size.iter().enumerate() {
            assert!(p.stratum_sampled[s] <= n);
            assert_eq!(p.stratum_sampled[s] > 0, n > 0);
        }
    }

    #[test]
    fn one_dimensional_grids_spread_the_sample() {
        let p = plan([1000, 1, 1], Some(5)).expect("sampled");
        let xs: Vec<u32> = p.ctas.iter().map(|c| c.0[0]).collect();
        // Interior 0..999 gets 4 evenly spaced CTAs, the tail CTA 999 its own.
        assert_eq!(xs, vec![0, 333, 665, 998, 999]);
    }

    #[test]
    fn clusters_are_sampled_whole() {
        // 32 row blocks of 4 column tiles, clusters of 4 along x, 8 CTAs allowed: 2 clusters.
        let p = plan_clusters([4, 32, 1], [4, 1, 1], Some(8)).expect("sampled");
        let ids: Vec<[u32; 3]> = p.ctas.iter().map(|c| c.0).collect();
        assert_eq!(ids, vec![[0, 0, 0], [0, 31, 0]]);
        assert_eq!(p.sampled(), 8);
        assert_eq!(p.total(), 128);
        // A budget below one cluster still runs one whole cluster per stratum.
        let p = plan_clusters([4, 32, 1], [2, 1, 1], Some(1)).expect("sampled");
        assert!(p.ctas.iter().all(|c| c.0[0] % 2 == 0), "{:?}", p.ctas);
        assert_eq!(p.sampled() % 2, 0);
        assert_eq!(plan_clusters([4, 2, 1], [4, 1, 1], Some(8)), None);
    }

    #[test]
    fn scaling_rounds_to_nearest() {
        assert_eq!(scale(10, 3, 4), 8);
        assert_eq!(scale(7, 1, 2), 4);
        assert_eq!(scale(5, 9, 0), 5);
    }
}

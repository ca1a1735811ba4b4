//! The executable form of sm_90's asynchronous-proxy instructions: mbarrier
//! objects, bulk (TMA) copies and their groups, proxy fences, `elect.sync`
//! and the cluster instructions (`exec::cluster`). Operand order is
//! given per variant (`Inst::s`); `Inst::d` is the result where there is one.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AsyncOp {
    /// `mbarrier.init [addr], count`.
    MbarInit,
    /// `mbarrier.inval [addr]`.
    MbarInval,
    /// `mbarrier.arrive{_drop}{.expect_tx}{.noComplete} state, [addr]{, tx}{, count}`:
    /// `s = [addr, tx (when expect_tx), count (optional)]`.
    MbarArrive { drop: bool, expect_tx: bool, no_complete: bool },
    /// `mbarrier.expect_tx [addr], tx` (`complete: false`) or `complete_tx`.
    MbarTx { complete: bool },
    /// `mbarrier.{test,try}_wait{.parity} p, [addr], state_or_parity{, hint}`.
    MbarWait { parity: bool, blocking: bool },
    /// `mbarrier.pending_count count, state`.
    MbarPendingCount,
    /// `cp.async.bulk.tensor.Nd` shared ← global: `s = [dst, map, coords (Vec), mbar]`.
    TensorLoad { dims: u8 },
    /// `cp.async.bulk.tensor.Nd` global ← shared: `s = [map, coords (Vec), src]`.
    TensorStore { dims: u8 },
    /// `cp.async.bulk` into shared memory with `complete_tx`: `s = [dst, src, size, mbar]`
    /// (`from_shared`: the source is shared memory too).
    BulkLoad { from_shared: bool },
    /// `cp.async.bulk.global.shared::cta.bulk_group`: `s = [dst, src, size]`.
    BulkStore,
    /// `cp.async.bulk.commit_group`.
    BulkCommit,
    /// `cp.async.bulk.wait_group{.read} keep`.
    BulkWait { keep: u32 },
    /// `fence.proxy.async`: orders this thread's generic shared writes before async-proxy reads.
    FenceProxyAsync,
    /// `elect.sync d|p, membermask`.
    Elect,
    /// `barrier.cluster.arrive` (`wait: false`) or `.wait`.
    ClusterBarrier { wait: bool },
    /// `mapa d, addr, rank`: `s = [addr, rank]`.
    Mapa,
    /// `getctarank d, addr`.
    GetCtaRank,
}

/// Cluster special registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClusterSreg {
    ClusterId(u8),
    NClusterId(u8),
    CtaId(u8),
    NCtaId(u8),
    CtaRank,
    NCtaRank,
    IsExplicit,
}

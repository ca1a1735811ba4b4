//! Thread-block clusters (sm_90): the CTAs of one cluster run together,
//! interleaved on one host thread, so that `barrier.cluster` can hold each of
//! them until all have arrived and `ld/st.shared::cluster` can reach another
//! CTA's shared memory (distributed shared memory).
//!
//! Addresses. A `.shared::cluster` address of CTA rank `r` is the CTA's own
//! shared offset plus `(r + 1) << RANK_SHIFT` (shared memory is far below
//! 16 MiB, so the offset never reaches those bits); a plain shared offset is
//! also a `.shared::cluster` address of the executing CTA, as in the ISA.
//! `mapa` makes such addresses, in the shared form (a `.shared` operand) or
//! in the generic one (inside the shared window), and `getctarank` reads
//! the rank back. `.shared::cta` accesses never leave the own CTA: an address
//! with rank bits is outside its shared memory there (memcheck).
//!
//! Running. While CTA `i` runs a round (each warp one time slice), the other
//! CTAs' shared bytes are lent to it (`ClusterState::peers`; moving a `Vec`
//! is a pointer swap), so a remote access is an ordinary slice access with
//! its memcheck, initcheck and the cluster racecheck below.
//!
//! `barrier.cluster.arrive` counts the thread in the current phase;
//! `barrier.cluster.wait` blocks it until the phase it arrived in completes,
//! which happens when every thread of the cluster has arrived or exited (the
//! ISA: "all non-exited threads"). Arriving twice without a wait, or waiting
//! without an arrival, is a synccheck finding; a wait that can never
//! complete is a deadlock finding. The phase's completion also acts as a
//! CTA-wide barrier in each CTA (racecheck, mbarrier visibility).
//!
//! Racecheck across CTAs (`ClusterShadow`, with racecheck on, clusters of
//! more than one CTA and a kernel that has `mapa`): per byte of each CTA's
//! shared memory the last write and the last reads of two CTAs, each with
//! the number of cluster arrivals its thread had made. An earlier access by
//! thread T is ordered before a later one by thread U of another CTA exactly
//! when T arrived after it and U waited for that phase before its own:
//! T's arrivals at its access < U's completed waits. Accesses of one CTA
//! among themselves are left to that CTA's own racecheck (for its own
//! shared memory; two threads of one CTA racing on another CTA's shared
//! memory are not checked).

use super::cta::{lane_bit, Cta, Lanes};
use super::{LaunchCtx, Stats, Stop};
use crate::findings::FindingKind;
use crate::ptx::ir::{AsyncOp, ClusterSreg, Inst, Op, Space, SHARED_WINDOW, WINDOW_SIZE};

/// Bit position of the CTA rank (+1) in a `.shared::cluster` address.
pub(crate) const RANK_SHIFT: u32 = 24;
const OFFSET_MASK: u64 = (1 << RANK_SHIFT) - 1;
/// Most CTAs a cluster may have (the portable cluster size).
pub(crate) const MAX_CLUSTER_SIZE: u32 = 8;

/// Another CTA's shared memory, lent to the running CTA.
#[derive(Default)]
pub(super) struct Peer {
    pub(super) data: Vec<u8>,
    pub(super) init: Vec<bool>,
    /// The CTA has finished: its shared memory is gone.
    pub(super) exited: bool,
}

/// One access as the cluster racecheck remembers it.
#[derive(Clone, Copy, Default)]
struct Rec {
    /// The accessing thread's cluster arrivals at the access.
    arrivals: u32,
    pc: u32,
    tid: u16,
    /// CTA rank + 1; 0 for no access.
    rank: u8,
}

#[derive(Clone, Copy, Default)]
struct ByteRecs {
    write: Rec,
    /// The latest read, and the latest of another CTA than that one's.
    read: [Rec; 2],
}

/// The cluster racecheck's history, per CTA rank and shared byte.
#[derive(Default)]
pub(super) struct ClusterShadow {
    bytes: Vec<Vec<ByteRecs>>,
}

impl ClusterShadow {
    fn reset(&mut self, ranks: usize, size: usize) {
        self.bytes.resize_with(ranks, Vec::new);
        for b in &mut self.bytes {
            b.clear();
            b.resize(size, ByteRecs::default());
        }
    }
}

/// Per CTA: where it sits in its cluster, the cluster barrier's state for
/// its threads, and (while it runs) the other CTAs' shared memory.
#[derive(Default)]
pub(crate) struct ClusterState {
    pub(super) rank: u32,
    pub(super) size: u32,
    pub(super) dims: [u32; 3],
    pub(super) peers: Vec<Peer>,
    /// Per thread: `barrier.cluster.arrive`s and completed waits so far.
    pub(super) arrivals: Vec<u32>,
    pub(super) waits: Vec<u32>,
    /// Per warp: lanes blocked in `barrier.cluster.wait`.
    pub(super) blocked: Vec<u32>,
    /// Phases of the cluster barrier completed.
    pub(super) phase: u32,
    /// Some thread arrived in the current phase.
    pub(super) arrived: bool,
    pub(super) shadow: Option<Box<ClusterShadow>>,
}

impl ClusterState {
    fn configure(&mut self, rank: u32, dims: [u32; 3]) {
        self.rank = rank;
        self.dims = dims;
        self.size = dims.iter().product();
    }

    pub(super) fn reset(&mut self, nwarps: usize, nthreads: usize) {
        if self.size == 0 {
            self.configure(0, [1, 1, 1]);
        }
        self.arrivals.clear();
        self.arrivals.resize(nthreads, 0);
        self.waits.clear();
        self.waits.resize(nthreads, 0);
        self.blocked.clear();
        self.blocked.resize(nwarps, 0);
        self.phase = 0;
        self.arrived = false;
        self.peers.resize_with(self.size as usize, Peer::default);
    }

    pub(super) fn any_blocked(&self) -> bool {
        self.blocked.iter().any(|&b| b != 0)
    }
}

/// The rank and shared offset a `.shared::cluster` address names, or `None`
/// for a plain shared offset (the executing CTA's own).
pub(super) fn split_cluster_address(off: u64) -> Option<(u64, u64)> {
    let rank = off >> RANK_SHIFT;
    (rank != 0).then(|| (rank - 1, off & OFFSET_MASK))
}

impl Cta<'_> {
    pub(super) fn cluster_sreg(&self, s: ClusterSreg) -> u64 {
        let cfg = self.l.config;
        let dims = self.cl.dims;
        let in_cluster = |d: usize| self.ctaid[d] % dims[d];
        match s {
            ClusterSreg::ClusterId(d) => (self.ctaid[d as usize] / dims[d as usize]) as u64,
            ClusterSreg::NClusterId(d) => (cfg.grid[d as usize] / dims[d as usize]) as u64,
            ClusterSreg::CtaId(d) => in_cluster(d as usize) as u64,
            ClusterSreg::NCtaId(d) => dims[d as usize] as u64,
            ClusterSreg::CtaRank => self.cl.rank as u64,
            ClusterSreg::NCtaRank => self.cl.size as u64,
            ClusterSreg::IsExplicit => self.l.explicit_cluster as u64,
        }
    }

    /// `mapa d, a, rank`: the address of `a`'s shared offset in CTA `rank`,
    /// in `a`'s form (a shared offset or a generic address).
    pub(super) fn mapa(&mut self, w: usize, pc: u32, exec: u32, inst: &Inst) -> Result<(), Stop> {
        for l in Lanes(exec) {
            let (a, rank) = (self.val(w, &inst.s[0], l), self.val(w, &inst.s[1], l));
            let tid = self.tid_of(w, l);
            let generic = a >= WINDOW_SIZE;
            let off = self.shared_offset(pc, tid, a, "mapa")?;
            let off = split_cluster_address(off).map_or(off, |(_, o)| o);
            if rank >= self.cl.size as u64 {
                return Err(self.report(
                    FindingKind::OutOfBounds,
                    pc,
                    tid,
                    a,
                    format!("mapa to CTA rank {rank} of a cluster of {} CTAs", self.cl.size),
                ));
            }
            // The own CTA's bytes keep their plain offset (a shared::cluster
            // address of the executing CTA too).
            let mapped = if rank == self.cl.rank as u64 { off } else { off | (rank + 1) << RANK_SHIFT };
            let d = if generic { SHARED_WINDOW + mapped } else { mapped };
            self.set(w, &inst.d, l, d, inst.ty);
        }
        Ok(())
    }

    /// `getctarank d, a`: the CTA rank a shared::cluster address names.
    pub(super) fn getctarank(&mut self, w: usize, pc: u32, exec: u32, inst: &Inst) -> Result<(), Stop> {
        for l in Lanes(exec) {
            let a = self.val(w, &inst.s[0], l);
            let tid = self.tid_of(w, l);
            let off = self.shared_offset(pc, tid, a, "getctarank")?;
            let rank = split_cluster_address(off).map_or(self.cl.rank as u64, |(r, _)| r);
            self.set(w, &inst.d, l, rank, crate::types::ScalarType::U32);
        }
        Ok(())
    }

    /// `barrier.cluster.arrive` (`wait` false) or `.wait` for the lanes
    /// `exec`; returns the lanes that blocked (waiting for the phase).
    pub(super) fn cluster_barrier(&mut self, w: usize, pc: u32, exec: u32, wait: bool) -> Result<u32, Stop> {
        let mut blocked = 0;
        for l in Lanes(exec) {
            let tid = self.tid_of(w, l);
            let t = tid as usize;
            let (arrivals, waits) = (self.cl.arrivals[t], self.cl.waits[t]);
            if !wait {
                if arrivals != waits && self.l.opts.synccheck {
                    return Err(self.report(
                        FindingKind::DivergentSync,
                        pc,
                        tid,
                        0,
                        "barrier.cluster.arrive again before the barrier.cluster.wait of the previous arrival".into(),
                    ));
                }
                self.cl.arrivals[t] += 1;
                self.cl.arrived = true;
            } else if arrivals == waits {
                if self.l.opts.synccheck {
                    return Err(self.report(
                        FindingKind::DivergentSync,
                        pc,
                        tid,
                        0,
                        "barrier.cluster.wait without a barrier.cluster.arrive before it".into(),
                    ));
                }
            } else if self.cl.phase >= arrivals {
                self.cl.waits[t] = arrivals;
            } else {
                blocked |= lane_bit(l);
            }
        }
        if blocked != 0 {
            self.cl.blocked[w] |= blocked;
            self.warps[w].run &= !blocked;
        }
        Ok(blocked)
    }

    /// Threads of this CTA that neither arrived in the current phase nor exited.
    fn cluster_missing(&self) -> u32 {
        let phase = self.cl.phase;
        (0..self.nthreads as usize)
            .filter(|&t| self.cl.arrivals[t] <= phase && self.warps[t / 32].exited & lane_bit(t % 32) == 0)
            .count() as u32
    }

    /// Opens the current phase's completion in this CTA: the blocked lanes
    /// go on past their wait, and the phase orders this CTA's accesses like
    /// a CTA-wide barrier.
    fn cluster_phase_completed(&mut self) {
        self.cl.phase += 1;
        self.cl.arrived = false;
        let phase = self.cl.phase;
        for w in 0..self.warps.len() {
            let lanes = std::mem::take(&mut self.cl.blocked[w]);
            for l in Lanes(lanes) {
                let t = w * 32 + l;
                debug_assert!(self.cl.arrivals[t] <= phase);
                self.cl.waits[t] = self.cl.arrivals[t];
                self.warps[w].pc[l] += 1;
            }
            self.warps[w].run |= lanes;
        }
        if self.l.opts.racecheck {
            self.race.barrier();
        }
        let all: Vec<usize> = (0..self.warps.len()).collect();
        self.asy.barrier_released(&all);
    }

    /// The stall finding of lanes blocked at `barrier.cluster.wait`, if any.
    pub(super) fn cluster_stall(&self) -> Option<Stop> {
        let w = self.cl.blocked.iter().position(|&b| b != 0)?;
        let l = self.cl.blocked[w].trailing_zeros() as usize;
        let detail = format!(
            "deadlock: barrier.cluster.wait in phase {} can never complete: {} threads of CTA rank {} of the cluster have neither arrived nor exited, and no thread can make progress",
            self.cl.phase,
            self.cluster_missing(),
            self.cl.rank,
        );
        Some(self.report(FindingKind::Deadlock, self.warps[w].pc[l], self.tid_of(w, l), 0, detail))
    }

    /// A shared access whose (shared-relative) address may name another CTA:
    /// `Some((rank, offset))` for another CTA's bytes; the own CTA's bytes
    /// come back as `None` with `addr` made a plain offset.
    pub(super) fn remote_target(&self, addr: &mut u64) -> Option<(u32, u64)> {
        let (rank, off) = split_cluster_address(*addr)?;
        if rank == self.cl.rank as u64 {
            *addr = off;
            return None;
        }
        Some((rank.min(u32::MAX as u64) as u32, off))
    }

    /// Memcheck of a remote access: the rank exists, its CTA has not exited,
    /// the bytes are inside its shared memory.
    fn remote_check(&self, pc: u32, tid: u32, rank: u32, off: u64, len: u64) -> Result<bool, Stop> {
        let problem = if rank >= self.cl.size {
            format!("CTA rank {rank} is outside the cluster of {} CTAs", self.cl.size)
        } else if self.cl.peers[rank as usize].exited {
            format!("CTA rank {rank} of the cluster has exited (its shared memory is gone)")
        } else {
            let limit = self.cl.peers[rank as usize].data.len() as u64;
            if off.checked_add(len).is_some_and(|e| e <= limit) {
                return Ok(true);
            }
            format!("offset {off:#x} is outside the {limit} bytes of shared memory of CTA rank {rank}")
        };
        if !self.l.opts.memcheck {
            return Ok(false);
        }
        Err(self.report(
            FindingKind::OutOfBounds,
            pc,
            tid,
            off | ((rank as u64 + 1) << RANK_SHIFT),
            format!("{len}-byte shared::cluster access: {problem}"),
        ))
    }

    /// Reads `len` ≤ 8 bytes of CTA `rank`'s shared memory at `off`.
    pub(super) fn remote_read(&mut self, pc: u32, tid: u32, rank: u32, off: u64, len: u32) -> Result<u64, Stop> {
        if !self.remote_check(pc, tid, rank, off, len as u64)? {
            return Ok(0);
        }
        self.cluster_race(pc, tid, rank, off, len as u64, false);
        self.stats.cluster_shared_bytes += len as u64;
        let peer = &self.cl.peers[rank as usize];
        let o = off as usize;
        let mut v = super::memops::le(&peer.data[o..o + len as usize]);
        let written = &peer.init[o..o + len as usize];
        if self.l.opts.initcheck && !written.iter().all(|b| *b) {
            if self.l.opts.shared_initcheck {
                return Err(self.report(
                    FindingKind::Uninitialized,
                    pc,
                    tid,
                    off,
                    format!(
                        "{len}-byte shared::cluster read at offset {off:#x} of CTA rank {rank} of bytes never written"
                    ),
                ));
            }
            for (i, _) in written.iter().enumerate().filter(|(_, w)| !**w) {
                v |= 0xff << (8 * i);
            }
        }
        Ok(v)
    }

    /// Writes the low `len` ≤ 8 bytes of `v` to CTA `rank`'s shared memory at `off`.
    pub(super) fn remote_write(
        &mut self,
        pc: u32,
        tid: u32,
        rank: u32,
        off: u64,
        len: u32,
        v: u64,
    ) -> Result<(), Stop> {
        if !self.remote_check(pc, tid, rank, off, len as u64)? {
            return Ok(());
        }
        self.cluster_race(pc, tid, rank, off, len as u64, true);
        self.stats.cluster_shared_bytes += len as u64;
        let peer = &mut self.cl.peers[rank as usize];
        let (o, n) = (off as usize, len as usize);
        peer.data[o..o + n].copy_from_slice(&v.to_le_bytes()[..n]);
        peer.init[o..o + n].fill(true);
        Ok(())
    }

    /// Cluster racecheck of an access by `tid` to bytes `[off, off+len)` of
    /// CTA `owner` (this CTA's own accesses too, so that a later remote
    /// access can meet them).
    pub(super) fn cluster_race(&mut self, pc: u32, tid: u32, owner: u32, off: u64, len: u64, write: bool) {
        let Some(shadow) = self.cl.shadow.as_mut() else { return };
        let t = tid as usize;
        let me = Rec { arrivals: self.cl.arrivals[t], pc, tid: tid as u16, rank: self.cl.rank as u8 + 1 };
        let waits = self.cl.waits[t];
        let unordered = |r: &Rec| r.rank != 0 && r.rank != me.rank && r.arrivals >= waits;
        let mut found: Option<(Rec, bool, u64)> = None;
        let bytes = &mut shadow.bytes[owner as usize][off as usize..(off + len) as usize];
        for (i, b) in bytes.iter_mut().enumerate() {
            if found.is_none() {
                if unordered(&b.write) {
                    found = Some((b.write, true, i as u64));
                } else if write {
                    if let Some(r) = b.read.iter().find(|r| unordered(r)) {
                        found = Some((*r, false, i as u64));
                    }
                }
            }
            if write {
                *b = ByteRecs { write: me, read: [Rec::default(); 2] };
            } else if b.read[0].rank == me.rank || b.read[0].rank == 0 {
                b.read[0] = me;
            } else {
                b.read = [me, b.read[0]];
            }
        }
        if let Some((other, other_wrote, i)) = found {
            let (b, other_rank) = (off + i, other.rank - 1);
            let other_tid = other.tid as u32;
            let detail = format!(
                "shared {} of byte {b:#x} of CTA rank {owner} by CTA rank {} races with a {} at PTX line {} (`{}`) by thread {:?} of CTA rank {other_rank}, not ordered by a cluster barrier",
                if write { "write" } else { "read" },
                self.cl.rank,
                if other_wrote { "write" } else { "read" },
                self.line_of(other.pc),
                self.l.module.line_text(self.line_of(other.pc)).trim(),
                self.thread_xyz(other_tid),
            );
            self.report_race(pc, other.pc, tid, b, detail);
        }
    }
}

/// Completes the cluster barrier's phase when every thread of the cluster
/// has arrived in it or exited (and one arrived); true when it did.
pub(super) fn complete_cluster_barrier(ctas: &mut [Cta]) -> bool {
    if !ctas.iter().any(|c| c.cl.arrived) || ctas.iter().any(|c| c.cluster_missing() > 0) {
        return false;
    }
    for c in ctas.iter_mut() {
        c.cluster_phase_completed();
    }
    true
}

/// What one round of a CTA's warps came to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Round {
    Done,
    Progressed,
    Stuck,
}

/// Runs the CTAs of one cluster of more than one CTA together.
pub(crate) struct ClusterRunner<'l> {
    ctas: Vec<Cta<'l>>,
    shadow: Option<Box<ClusterShadow>>,
}

impl<'l> ClusterRunner<'l> {
    pub(crate) fn new(l: &'l LaunchCtx<'l>) -> Self {
        let n = l.cluster.iter().product::<u32>() as usize;
        let uses_dsmem = l.kernel.insts.iter().any(|i| matches!(i.op, Op::Async(AsyncOp::Mapa)));
        let shadow = (l.opts.racecheck && uses_dsmem).then(Box::<ClusterShadow>::default);
        ClusterRunner { ctas: (0..n).map(|_| Cta::new(l)).collect(), shadow }
    }

    /// Moves every CTA's counts into `into`.
    pub(crate) fn take_stats(&mut self, into: &mut Stats) {
        for c in &mut self.ctas {
            let n = c.stats.inst_warp.len();
            into.add(&std::mem::replace(&mut c.stats, Stats::new(n)));
        }
    }

    /// Lends the other CTAs' shared memory (and the racecheck history) to CTA `i`, or takes it back.
    fn swap_peers(&mut self, i: usize, done: &[bool]) {
        for j in 0..self.ctas.len() {
            if j == i {
                continue;
            }
            let (a, b) = if i < j {
                let (lo, hi) = self.ctas.split_at_mut(j);
                (&mut lo[i], &mut hi[0])
            } else {
                let (lo, hi) = self.ctas.split_at_mut(i);
                (&mut hi[0], &mut lo[j])
            };
            let peer = &mut a.cl.peers[j];
            std::mem::swap(&mut peer.data, &mut b.shared);
            std::mem::swap(&mut peer.init, &mut b.shared_init);
            peer.exited = done[j];
        }
        std::mem::swap(&mut self.shadow, &mut self.ctas[i].cl.shadow);
    }

    /// Runs the cluster whose first CTA is `origin` to completion or to its first finding.
    pub(crate) fn run(&mut self, origin: [u32; 3]) -> Result<(), Stop> {
        let dims = self.ctas[0].l.cluster;
        let n = self.ctas.len();
        for (rank, cta) in self.ctas.iter_mut().enumerate() {
            let r = rank as u32;
            let pos = [r % dims[0], (r / dims[0]) % dims[1], r / (dims[0] * dims[1])];
            cta.cl.configure(r, dims);
            cta.begin([origin[0] + pos[0], origin[1] + pos[1], origin[2] + pos[2]]);
        }
        if let Some(s) = self.shadow.as_mut() {
            s.reset(n, self.ctas[0].shared_size());
        }
        let mut done = vec![false; n];
        loop {
            let mut progressed = false;
            for i in 0..n {
                if done[i] {
                    continue;
                }
                self.swap_peers(i, &done);
                let round = self.ctas[i].round();
                self.swap_peers(i, &done);
                match round? {
                    Round::Done => done[i] = true,
                    Round::Progressed => progressed = true,
                    Round::Stuck => {}
                }
            }
            if done.iter().all(|d| *d) {
                return Ok(());
            }
            if complete_cluster_barrier(&mut self.ctas) || progressed {
                continue;
            }
            let mut timed_out = false;
            for i in (0..n).filter(|&i| !done[i]) {
                timed_out |= self.ctas[i].mbar_timeout()?;
            }
            if timed_out {
                continue;
            }
            let stuck = (0..n).find(|&i| !done[i]).unwrap_or(0);
            return Err(self.ctas[stuck].stall());
        }
    }
}

/// Whether a generic or `.shared::cluster` access may name another CTA.
pub(super) fn may_be_remote(space: Space, cluster: bool) -> bool {
    space == Space::Generic || (cluster && space == Space::Shared)
}

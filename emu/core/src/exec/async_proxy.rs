//! sm_90's asynchronous proxy in one CTA: mbarrier objects (phases, pending
//! arrivals, transaction counts), `try_wait` that blocks a lane until its
//! phase completes, `elect.sync`, the cluster instructions of a cluster of
//! one CTA, and the bookkeeping of which shared bytes a bulk copy wrote and
//! which thread has seen them land (`tma` does the copies).
//!
//! Bulk copies complete when they are issued (their bytes are in shared
//! memory at once, the barrier's transaction count drops at once); what
//! matters for a correct program is when a reader may rely on them, so each
//! byte a copy writes remembers the mbarrier phase that publishes it, and a
//! read of that byte by a thread that has not seen the phase complete (a
//! `try_wait`/`test_wait` that returned true, or a CTA barrier after another
//! thread saw it) is a finding: "TMA bytes not yet landed".
//!
//! `try_wait` blocks the lane while anything else in the CTA can progress;
//! when nothing can, the waiting lanes time out once (the ISA's suspend time
//! limit) and see false; if nothing changed any mbarrier since the previous
//! time-out, no phase can ever complete and it is a deadlock.

use super::cta::{generic_space, lane_bit, Cta, Lanes};
use super::Stop;
use crate::findings::FindingKind;
use crate::ptx::ir::{AsyncOp, Inst, Space, WINDOW_SIZE};
use crate::types::ScalarType;

/// The largest arrival count and transaction count magnitude (2^20 - 1).
const MAX_COUNT: i64 = (1 << 20) - 1;

pub(super) struct Mbar {
    pub(super) off: u32,
    pub(super) valid: bool,
    /// Arrivals each phase expects (less those dropped by `arrive_drop`).
    expected: u32,
    /// Arrivals still due in the current phase.
    pending: u32,
    /// Transaction bytes still due in the current phase.
    tx: i64,
    /// Phases completed so far (the current phase's number; its parity is bit 0).
    pub(super) seq: u64,
    /// Per thread: how many phases the thread has seen complete.
    pub(super) observed: Vec<u64>,
}

/// Per-CTA state of the asynchronous proxy.
#[derive(Default)]
pub(crate) struct AsyncState {
    pub(super) mbars: Vec<Mbar>,
    /// Per warp: lanes blocked in `try_wait`.
    pub(super) blocked: Vec<u32>,
    /// Per lane (`warp * 32 + lane`): the mbarrier a blocked lane waits on.
    waiting_on: Vec<u32>,
    /// Per warp: lanes whose next `try_wait` returns false (timed out).
    timed_out: Vec<u32>,
    /// Bumped by every change of an mbarrier (deadlock detection).
    version: u64,
    /// `version` when waiting lanes last timed out.
    timeout_version: Option<u64>,
    /// Per shared byte: 0, or 1 + the index in `writes` of the bulk copy that wrote it last.
    pub(super) landed: Vec<u32>,
    /// Bulk copies into shared memory: (mbarrier index, the phase that
    /// publishes them, the copy's instruction); `u64::MAX` for the phase of a
    /// copy whose barrier was initialised again (its bytes are public).
    pub(super) writes: Vec<(u32, u64, u32)>,
    /// Per shared byte, when the kernel has bulk stores: (1 + the thread that
    /// wrote it through the generic proxy, that thread's fence count then).
    pub(super) generic: Vec<(u32, u32)>,
    /// Per thread: `fence.proxy.async` executed so far.
    pub(super) fences: Vec<u32>,
    /// Per thread: bulk-copy groups committed.
    pub(super) bulk_groups: Vec<u32>,
}

impl AsyncState {
    pub(super) fn reset(&mut self, nwarps: usize, nthreads: usize, track_generic: bool, shared: usize) {
        self.mbars.clear();
        self.blocked.clear();
        self.blocked.resize(nwarps, 0);
        self.waiting_on.clear();
        self.waiting_on.resize(nwarps * 32, 0);
        self.timed_out.clear();
        self.timed_out.resize(nwarps, 0);
        self.version = 0;
        self.timeout_version = None;
        self.landed.clear();
        self.writes.clear();
        self.generic.clear();
        if track_generic {
            self.generic.resize(shared, (0, 0));
        }
        self.fences.clear();
        self.fences.resize(nthreads, 0);
        self.bulk_groups.clear();
        self.bulk_groups.resize(nthreads, 0);
    }

    pub(super) fn any_blocked(&self) -> bool {
        self.blocked.iter().any(|&b| b != 0)
    }

    /// A generic-proxy write of shared `[off, off+len)` by `tid`: it replaces
    /// any bulk copy's bytes there and, for bulk stores, needs a proxy fence.
    #[inline]
    pub(super) fn note_generic_write(&mut self, tid: u32, off: usize, len: usize) {
        if !self.landed.is_empty() {
            self.landed[off..off + len].fill(0);
        }
        if !self.generic.is_empty() {
            let f = self.fences[tid as usize];
            self.generic[off..off + len].fill((tid + 1, f));
        }
    }

    /// A CTA barrier orders what each thread of the warps it released saw
    /// before it for all of them after it.
    pub(crate) fn barrier_released(&mut self, warps: &[usize]) {
        for m in &mut self.mbars {
            let n = m.observed.len();
            let threads = move |w: &usize| w * 32..(w * 32 + 32).min(n);
            let max = warps.iter().flat_map(threads).map(|t| m.observed[t]).max().unwrap_or(0);
            for t in warps.iter().flat_map(threads) {
                m.observed[t] = max;
            }
        }
    }
}

impl Cta<'_> {
    /// A shared-memory operand as a shared offset: a `.shared` address is
    /// one already; a generic one must point into the shared window.
    pub(super) fn shared_offset(&self, pc: u32, tid: u32, raw: u64, what: &str) -> Result<u64, Stop> {
        if raw < WINDOW_SIZE {
            return Ok(raw);
        }
        if generic_space(raw) == Space::Shared {
            return Ok(raw - Space::Shared.window());
        }
        Err(self.report(
            FindingKind::OutOfBounds,
            pc,
            tid,
            raw,
            format!("{what} operand {raw:#x} is not a shared-memory address"),
        ))
    }

    fn mbar_index(&self, off: u32) -> Option<usize> {
        self.asy.mbars.iter().position(|m| m.off == off)
    }

    /// The shared offset of an mbarrier operand (a shared or a generic address).
    fn mbar_addr(&mut self, pc: u32, tid: u32, raw: u64) -> Result<u32, Stop> {
        let off = self.shared_offset(pc, tid, raw, "mbarrier")?;
        if self.l.opts.memcheck && off % 8 != 0 {
            return Err(self.report(
                FindingKind::Misaligned,
                pc,
                tid,
                off,
                "mbarrier object not aligned to 8 bytes".into(),
            ));
        }
        if off.checked_add(8).map_or(true, |e| e > self.shared.len() as u64) {
            return Err(self.report(
                FindingKind::OutOfBounds,
                pc,
                tid,
                off,
                format!("mbarrier object at {off:#x} outside the {} bytes of shared memory", self.shared.len()),
            ));
        }
        Ok(off as u32)
    }

    /// The valid mbarrier at `off`, or a finding naming `what`.
    pub(super) fn valid_mbar(&self, pc: u32, tid: u32, off: u32, what: &str) -> Result<usize, Stop> {
        match self.mbar_index(off) {
            Some(i) if self.asy.mbars[i].valid => Ok(i),
            found => Err(self.report(
                FindingKind::DivergentSync,
                pc,
                tid,
                off as u64,
                format!(
                    "mbarrier misuse: {what} on the mbarrier at shared offset {off:#x}, which is {}",
                    if found.is_some() { "invalidated" } else { "not initialised" }
                ),
            )),
        }
    }

    /// Completes the phase of mbarrier `i` when its arrivals and transactions are all in.
    fn mbar_maybe_complete(&mut self, i: usize) {
        let m = &mut self.asy.mbars[i];
        if m.pending == 0 && m.tx == 0 {
            m.seq += 1;
            m.pending = m.expected;
            let off = m.off;
            // Lanes blocked on this barrier try again.
            for (w, warp) in self.warps.iter_mut().enumerate() {
                for l in Lanes(self.asy.blocked[w]) {
                    if self.asy.waiting_on[w * 32 + l] == off {
                        warp.run |= lane_bit(l);
                        self.asy.blocked[w] &= !lane_bit(l);
                    }
                }
            }
        }
    }

    /// Adds `bytes` to (expect) or takes them from (complete) mbarrier `i`'s
    /// transaction count, from a thread or a bulk copy.
    pub(super) fn mbar_tx(&mut self, pc: u32, tid: u32, i: usize, bytes: i64, complete: bool) -> Result<(), Stop> {
        self.asy.version += 1;
        let m = &mut self.asy.mbars[i];
        m.tx += if complete { -bytes } else { bytes };
        let (tx, pending, off) = (m.tx, m.pending, m.off);
        if tx.abs() > MAX_COUNT {
            return Err(self.report(
                FindingKind::DivergentSync,
                pc,
                tid,
                off as u64,
                format!("mbarrier misuse: transaction count {tx} outside ±(2^20-1)"),
            ));
        }
        if tx < 0 && pending == 0 {
            return Err(self.report(
                FindingKind::DivergentSync,
                pc,
                tid,
                off as u64,
                format!(
                    "mbarrier misuse: {} more transaction bytes completed than the phase expects (transaction count {tx} with every arrival in)",
                    -tx
                ),
            ));
        }
        self.mbar_maybe_complete(i);
        Ok(())
    }

    /// Executes an asynchronous-proxy instruction for `group` (`exec` the
    /// lanes whose guard holds); advances the lanes that finish it.
    pub(super) fn async_op(
        &mut self,
        w: usize,
        pc: u32,
        group: u32,
        exec: u32,
        inst: &Inst,
        op: AsyncOp,
    ) -> Result<(), Stop> {
        let mut done = group;
        match op {
            AsyncOp::MbarInit
            | AsyncOp::MbarInval
            | AsyncOp::MbarArrive { .. }
            | AsyncOp::MbarTx { .. }
            | AsyncOp::MbarWait { .. } => {
                for l in Lanes(exec) {
                    if !self.mbar_lane(w, pc, l, inst, op)? {
                        done &= !lane_bit(l);
                    }
                }
            }
            AsyncOp::MbarPendingCount => {
                for l in Lanes(exec) {
                    let state = self.val(w, &inst.s[0], l);
                    self.set(w, &inst.d, l, state & 0xffff_ffff, ScalarType::U32);
                }
            }
            AsyncOp::Elect => {
                let mut member = u32::MAX;
                if let Some(l) = Lanes(exec).next() {
                    member = self.val(w, &inst.s[0], l) as u32;
                }
                let leader = Lanes(exec & member).next();
                for l in Lanes(exec) {
                    let lane = leader.unwrap_or(0) as u64;
                    self.set(w, &inst.d, l, lane, ScalarType::U32);
                    self.set(w, &inst.d2, l, (Some(l) == leader) as u64, ScalarType::Pred);
                }
            }
            AsyncOp::Mapa => self.mapa(w, pc, exec, inst)?,
            AsyncOp::GetCtaRank => self.getctarank(w, pc, exec, inst)?,
            AsyncOp::ClusterBarrier { wait } => done &= !self.cluster_barrier(w, pc, exec, wait)?,
            AsyncOp::FenceProxyAsync => {
                for l in Lanes(exec) {
                    let tid = self.tid_of(w, l) as usize;
                    self.asy.fences[tid] += 1;
                }
            }
            AsyncOp::BulkCommit => {
                for l in Lanes(exec) {
                    let tid = self.tid_of(w, l) as usize;
                    self.asy.bulk_groups[tid] += 1;
                }
            }
            // Bulk copies complete as they are issued: nothing to wait for.
            AsyncOp::BulkWait { .. } => {}
            AsyncOp::TensorLoad { .. }
            | AsyncOp::TensorStore { .. }
            | AsyncOp::BulkLoad { .. }
            | AsyncOp::BulkStore => {
                for l in Lanes(exec) {
                    self.bulk_copy(w, pc, l, inst, op)?;
                }
            }
        }
        self.advance(w, done);
        Ok(())
    }

    /// One lane's mbarrier operation; false when the lane blocks (`try_wait`).
    fn mbar_lane(&mut self, w: usize, pc: u32, l: usize, inst: &Inst, op: AsyncOp) -> Result<bool, Stop> {
        let tid = self.tid_of(w, l);
        let raw = self.val(w, &inst.s[0], l);
        let off = self.mbar_addr(pc, tid, raw)?;
        let nthreads = self.nthreads as usize;
        match op {
            AsyncOp::MbarInit => {
                let count = self.val(w, &inst.s[1], l) as i64;
                if !(1..=MAX_COUNT).contains(&count) {
                    return Err(self.report(
                        FindingKind::DivergentSync,
                        pc,
                        tid,
                        off as u64,
                        format!("mbarrier misuse: init with count {count} outside 1..=2^20-1"),
                    ));
                }
                if let Some(i) = self.mbar_index(off) {
                    let m = &self.asy.mbars[i];
                    let waiting =
                        (0..self.warps.len()).any(|w| self.asy.blocked[w] != 0 && self.asy.blocked_on(w, off));
                    if m.valid && (m.pending != m.expected || m.tx != 0 || waiting) {
                        return Err(self.report(
                            FindingKind::DivergentSync,
                            pc,
                            tid,
                            off as u64,
                            format!(
                                "mbarrier misuse: re-initialised while in use ({} of {} arrivals and {} transaction bytes pending in phase {})",
                                m.pending, m.expected, m.tx, m.seq
                            ),
                        ));
                    }
                }
                let fresh = Mbar {
                    off,
                    valid: true,
                    expected: count as u32,
                    pending: count as u32,
                    tx: 0,
                    seq: 0,
                    observed: vec![0; nthreads],
                };
                self.asy.version += 1;
                match self.mbar_index(off) {
                    Some(i) => {
                        // Bulk copies published by the old object stay public.
                        for wr in self.asy.writes.iter_mut().filter(|wr| wr.0 == i as u32) {
                            wr.1 = u64::MAX;
                        }
                        self.asy.mbars[i] = fresh;
                    }
                    None => self.asy.mbars.push(fresh),
                }
                // The object's 8 bytes hold its state (not data a program reads).
                let o = off as usize;
                self.shared[o..o + 8].fill(0);
                self.shared_init[o..o + 8].fill(true);
            }
            AsyncOp::MbarInval => {
                let i = self.valid_mbar(pc, tid, off, "inval")?;
                self.asy.version += 1;
                self.asy.mbars[i].valid = false;
            }
            AsyncOp::MbarArrive { drop, expect_tx, no_complete } => {
                let i = self.valid_mbar(pc, tid, off, "arrive")?;
                let mut next = 1;
                if expect_tx {
                    let tx = self.val(w, &inst.s[1], l) as u32 as i64;
                    self.mbar_tx(pc, tid, i, tx, false)?;
                    next = 2;
                }
                let count = inst.s.get(next).map_or(1, |o| self.val(w, o, l) as u32);
                let m = &mut self.asy.mbars[i];
                if count == 0 || count > m.pending {
                    let detail = format!(
                        "mbarrier misuse: arrival of {count} with only {} of {} arrivals pending in phase {} (more arrivals than the phase expects)",
                        m.pending, m.expected, m.seq
                    );
                    return Err(self.report(FindingKind::DivergentSync, pc, tid, off as u64, detail));
                }
                if no_complete && count == m.pending && m.tx == 0 {
                    let detail = "mbarrier misuse: arrive.noComplete completes the phase".to_string();
                    return Err(self.report(FindingKind::DivergentSync, pc, tid, off as u64, detail));
                }
                m.pending -= count;
                if drop {
                    m.expected = m.expected.saturating_sub(count);
                }
                let state = (m.seq & 0xffff_ffff) << 32 | m.pending as u64;
                self.asy.version += 1;
                self.set(w, &inst.d, l, state, ScalarType::B64);
                self.mbar_maybe_complete(i);
            }
            AsyncOp::MbarTx { complete } => {
                let i = self.valid_mbar(pc, tid, off, if complete { "complete_tx" } else { "expect_tx" })?;
                let tx = self.val(w, &inst.s[1], l) as u32 as i64;
                self.mbar_tx(pc, tid, i, tx, complete)?;
            }
            AsyncOp::MbarWait { parity, blocking } => {
                let i = self.valid_mbar(pc, tid, off, "wait")?;
                let arg = self.val(w, &inst.s[1], l);
                let m = &mut self.asy.mbars[i];
                let complete = if parity {
                    m.seq & 1 != arg & 1
                } else {
                    let d = (m.seq as u32).wrapping_sub((arg >> 32) as u32);
                    d != 0 && d < 1 << 31
                };
                let timed_out = self.asy.timed_out[w] & lane_bit(l) != 0;
                self.asy.timed_out[w] &= !lane_bit(l);
                if complete {
                    let seen = &mut m.observed[tid as usize];
                    *seen = (*seen).max(m.seq);
                } else if blocking && !timed_out {
                    self.asy.block(w, l, off);
                    self.warps[w].run &= !lane_bit(l);
                    return Ok(false);
                }
                self.set(w, &inst.d, l, complete as u64, ScalarType::Pred);
            }
            _ => unreachable!("not an mbarrier operation"),
        }
        Ok(true)
    }

    /// Nothing else can run: lanes blocked in `try_wait` time out (true), or,
    /// when nothing changed an mbarrier since they last did, it is a deadlock.
    pub(super) fn mbar_timeout(&mut self) -> Result<bool, Stop> {
        if !self.asy.any_blocked() {
            return Ok(false);
        }
        if self.asy.timeout_version == Some(self.asy.version) {
            let (w, l) = self.asy.first_blocked();
            let off = self.asy.waiting_on[w * 32 + l];
            let tid = self.tid_of(w, l);
            let pc = self.warps[w].pc[l];
            let detail = match self.mbar_index(off) {
                Some(i) => {
                    let m = &self.asy.mbars[i];
                    format!(
                        "deadlock: try_wait on the mbarrier at shared offset {off:#x} can never complete: phase {} (parity {}) has {} of {} arrivals and {} transaction bytes pending, and no thread can arrive",
                        m.seq,
                        m.seq & 1,
                        m.pending,
                        m.expected,
                        m.tx
                    )
                }
                None => format!("deadlock: try_wait on the mbarrier at shared offset {off:#x}"),
            };
            return Err(self.report(FindingKind::Deadlock, pc, tid, off as u64, detail));
        }
        self.asy.timeout_version = Some(self.asy.version);
        for w in 0..self.warps.len() {
            let b = std::mem::take(&mut self.asy.blocked[w]);
            self.asy.timed_out[w] |= b;
            self.warps[w].run |= b;
        }
        Ok(true)
    }
}

impl AsyncState {
    fn block(&mut self, w: usize, l: usize, off: u32) {
        self.blocked[w] |= lane_bit(l);
        self.waiting_on[w * 32 + l] = off;
    }

    /// Whether any lane of warp `w` blocked on the mbarrier at `off`.
    fn blocked_on(&self, w: usize, off: u32) -> bool {
        Lanes(self.blocked[w]).any(|l| self.waiting_on[w * 32 + l] == off)
    }

    fn first_blocked(&self) -> (usize, usize) {
        let w = self.blocked.iter().position(|&b| b != 0).unwrap_or(0);
        (w, self.blocked[w].trailing_zeros() as usize)
    }
}

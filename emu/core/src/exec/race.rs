//! Racecheck's shadow of one CTA's shared memory, with no bounded history:
//! per byte, the last write and every read since it that no later access has
//! ordered, each stamped with its thread, instruction, warp-synchronisation
//! epoch (accesses of one warp separated by `bar.warp.sync` or a collective
//! are ordered) and its warp's clock for named barriers (a barrier that only
//! some warps use orders those warps' accesses, through vector clocks).
//! A CTA-wide barrier orders everything, so it empties every byte's history
//! at once (lazily, by epoch).
//!
//! Reads of a byte by lanes of one warp at one instruction in one
//! synchronisation state share one 20-byte entry (a lane mask); a thread's
//! newer read replaces its older.
//!
//! Memory: 32 bytes per byte of shared memory (a cell per byte: half a cache
//! line, so a warp's accesses touch few lines), plus a read list for each
//! byte ever read (24 bytes, kept for reuse) of 20 bytes per read entry kept
//! (at most one per thread per byte, typically one per warp), plus 4 bytes
//! per pair of warps for the clocks. Epochs count on across the CTAs a
//! shadow serves, so starting a CTA touches no cell.

/// One access: who, where in the program, and when in the orders above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Access {
    pub(crate) tid: u32,
    pub(crate) pc: u32,
    wsync: u32,
    clock: u32,
}

/// Reads of one byte by lanes of one warp at one instruction, in one
/// synchronisation state (so one entry serves a broadcast read by a warp).
#[derive(Clone, Copy, Debug)]
struct Reads {
    warp: u32,
    lanes: u32,
    pc: u32,
    wsync: u32,
    clock: u32,
}

impl Reads {
    /// One of its threads other than `not_tid`, as an access.
    fn other_than(&self, not_tid: u32) -> Access {
        let mut lanes = self.lanes;
        if not_tid / 32 == self.warp {
            lanes &= !(1u32 << (not_tid % 32));
        }
        let lane = if lanes == 0 { self.lanes.trailing_zeros() } else { lanes.trailing_zeros() };
        Access { tid: self.warp * 32 + lane, pc: self.pc, wsync: self.wsync, clock: self.clock }
    }
}

/// `Access::tid` of a cell with no write, `Cell::pending_tid` of one with no pending copy.
const NONE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Cell {
    /// CTA barrier epoch `write` and the reads belong to; older = empty.
    epoch: u32,
    /// 1 + the index of the byte's read list in `RaceShadow::lists`; 0: none yet.
    reads: u32,
    /// The last write (`tid == NONE`: none).
    write: Access,
    /// The `cp.async` (thread, instruction) to this byte that has not landed
    /// yet (`NONE`: none); kept across epochs.
    pending_tid: u32,
    pending_pc: u32,
}

impl Cell {
    const EMPTY: Cell = Cell {
        epoch: 0,
        reads: 0,
        write: Access { tid: NONE, pc: 0, wsync: 0, clock: 0 },
        pending_tid: NONE,
        pending_pc: 0,
    };

    fn write(&self) -> Option<Access> {
        (self.write.tid != NONE).then_some(self.write)
    }

    fn pending(&self) -> Option<(u32, u32)> {
        (self.pending_tid != NONE).then_some((self.pending_tid, self.pending_pc))
    }
}

/// What racecheck found about one access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Another thread's access, not ordered with this one.
    With { other: Access, other_wrote: bool },
    /// A read of bytes an unfinished `cp.async` of thread `other` at `pc` will write.
    AsyncPending { other: u32, pc: u32 },
}

/// The happens-before relation between two accesses of one CTA.
struct Order<'a> {
    clocks: &'a [u32],
    nwarps: usize,
}

impl Order<'_> {
    /// Whether `earlier` is ordered before `now`: the same thread; the same
    /// warp with a warp synchronisation between; or a barrier between that
    /// both warps took part in.
    #[inline]
    fn before(&self, earlier: &Access, now: &Access) -> bool {
        if earlier.tid == now.tid {
            return true;
        }
        let (we, wn) = ((earlier.tid / 32) as usize, (now.tid / 32) as usize);
        if we == wn && now.wsync > earlier.wsync {
            return true;
        }
        self.clocks.get(wn * self.nwarps + we).is_some_and(|&c| c > earlier.clock)
    }

    /// Whether every read of `reads` other than `now`'s thread's is ordered before `now`.
    #[inline]
    fn reads_before(&self, reads: &Reads, now: &Access) -> bool {
        let (we, wn) = (reads.warp as usize, (now.tid / 32) as usize);
        if we == wn && (reads.lanes & !(1u32 << (now.tid % 32)) == 0 || now.wsync > reads.wsync) {
            return true;
        }
        self.clocks.get(wn * self.nwarps + we).is_some_and(|&c| c > reads.clock)
    }
}

pub(crate) struct RaceShadow {
    cells: Vec<Cell>,
    /// Read lists, one per byte read at least once (`Cell::reads`).
    lists: Vec<Vec<Reads>>,
    /// Cells with a pending copy (a CTA normally ends with none).
    pending: usize,
    epoch: u32,
    nwarps: usize,
    /// `clocks[w * nwarps + v]`: the newest clock of warp `v` that warp `w`
    /// is ordered after (its own clock at `v == w`).
    clocks: Vec<u32>,
}

impl RaceShadow {
    pub(crate) fn new() -> Self {
        RaceShadow { cells: Vec::new(), lists: Vec::new(), pending: 0, epoch: 1, nwarps: 0, clocks: Vec::new() }
    }

    /// Forgets all history (a new CTA with `size` bytes of shared memory and
    /// `nwarps` warps): a new epoch, which empties every cell as it is next
    /// touched; keeps the read lists' storage for reuse.
    pub(crate) fn reset(&mut self, size: usize, nwarps: usize) {
        if self.pending > 0 || self.epoch >= u32::MAX - (1 << 20) {
            // Copies a stopped CTA left pending, or epochs running out: clear for real.
            self.cells.iter_mut().for_each(|c| *c = Cell::EMPTY);
            self.lists.iter_mut().for_each(Vec::clear);
            self.pending = 0;
            self.epoch = 0;
        }
        self.cells.resize(size, Cell::EMPTY);
        self.epoch += 1;
        self.nwarps = nwarps;
        self.clocks.clear();
        self.clocks.resize(nwarps * nwarps, 0);
    }

    /// A CTA-wide barrier: every earlier access is ordered before every later one.
    pub(crate) fn barrier(&mut self) {
        self.epoch += 1;
    }

    /// A barrier completed by the warps in `warps` only: their earlier accesses
    /// are ordered before their later ones.
    pub(crate) fn partial_barrier(&mut self, warps: &[usize]) {
        let n = self.nwarps;
        let mut joined = vec![0u32; n];
        for &w in warps {
            for (j, c) in joined.iter_mut().zip(&self.clocks[w * n..w * n + n]) {
                *j = (*j).max(*c);
            }
        }
        for &w in warps {
            joined[w] = self.clocks[w * n + w] + 1;
        }
        for &w in warps {
            self.clocks[w * n..w * n + n].copy_from_slice(&joined);
        }
    }

    /// The stamp of an access by `tid` at `pc` now, its warp's sync epoch being `wsync`.
    pub(crate) fn stamp(&self, tid: u32, pc: u32, wsync: u32) -> Access {
        let w = (tid / 32) as usize;
        let clock = self.clocks.get(w * self.nwarps + w).copied().unwrap_or(0);
        Access { tid, pc, wsync, clock }
    }

    /// Records `now` (a read, or a write when `write`) of byte `off` and
    /// passes each earlier access it is not ordered with to `found`.
    ///
    /// `same_value`: the write stores the value the byte already holds (the
    /// last write's). It then races with no earlier write: whichever order
    /// the two take, the byte ends up the same, which compute-sanitizer's
    /// racecheck classes as an INFO hazard ("identical data", no impact on
    /// execution) and leaves out of its report at its default print level.
    /// Its hazards with reads are checked as for any write, and it is
    /// recorded as the byte's last write.
    pub(crate) fn access(
        &mut self,
        off: usize,
        now: Access,
        write: bool,
        same_value: bool,
        found: &mut impl FnMut(Conflict),
    ) {
        let epoch = self.epoch;
        let order = Order { clocks: &self.clocks, nwarps: self.nwarps };
        let Some(cell) = self.cells.get_mut(off) else { return };
        if cell.epoch != epoch {
            cell.epoch = epoch;
            cell.write = Cell::EMPTY.write;
            if cell.reads != 0 {
                self.lists[cell.reads as usize - 1].clear();
            }
        }
        if let Some((other, pc)) = cell.pending() {
            found(Conflict::AsyncPending { other, pc });
            return;
        }
        if let Some(w) = cell.write() {
            let identical = write && same_value;
            if !(identical || order.before(&w, &now)) {
                found(Conflict::With { other: w, other_wrote: true });
            }
        }
        if write {
            if cell.reads != 0 {
                let reads = &mut self.lists[cell.reads as usize - 1];
                if !reads.is_empty() {
                    for r in reads.iter() {
                        if !order.reads_before(r, &now) {
                            found(Conflict::With { other: r.other_than(now.tid), other_wrote: false });
                        }
                    }
                    // Reads this write is ordered after can no longer race with a
                    // later access without this write racing with it too; the
                    // others stay.
                    reads.retain(|r| !order.reads_before(r, &now));
                }
            }
            cell.write = now;
        } else {
            // A thread's newer read replaces its older one.
            record_reads(Self::reads_of(cell, &mut self.lists), now, 1u32 << (now.tid % 32));
        }
    }

    /// The read list of `cell`, created on its first read.
    #[inline]
    fn reads_of<'a>(cell: &mut Cell, lists: &'a mut Vec<Vec<Reads>>) -> &'a mut Vec<Reads> {
        if cell.reads == 0 {
            lists.push(Vec::new());
            cell.reads = lists.len() as u32;
        }
        &mut lists[cell.reads as usize - 1]
    }

    /// Records reads of byte `off` by the lanes `lanes` (non-empty) of one
    /// warp at one instruction, `now` stamped with the lowest of them: the
    /// same as a read by each lane in turn (lanes of one instruction do not
    /// race with each other when reading), in one visit of the cell. Each
    /// earlier access some lane is not ordered with goes to `found`, with
    /// such a lane's thread.
    pub(crate) fn read_lanes(&mut self, off: usize, now: Access, lanes: u32, found: &mut impl FnMut(Conflict, u32)) {
        let epoch = self.epoch;
        let order = Order { clocks: &self.clocks, nwarps: self.nwarps };
        let Some(cell) = self.cells.get_mut(off) else { return };
        if cell.epoch != epoch {
            cell.epoch = epoch;
            cell.write = Cell::EMPTY.write;
            if cell.reads != 0 {
                self.lists[cell.reads as usize - 1].clear();
            }
        }
        let warp = now.tid / 32;
        if let Some((other, pc)) = cell.pending() {
            found(Conflict::AsyncPending { other, pc }, now.tid);
            return;
        }
        if let Some(w) = cell.write() {
            // Ordered for the writer's own lane; for the others as for any thread.
            let others = if w.tid / 32 == warp { lanes & !(1u32 << (w.tid % 32)) } else { lanes };
            if others != 0 {
                let reader = Access { tid: warp * 32 + others.trailing_zeros(), ..now };
                if !order.before(&w, &reader) {
                    found(Conflict::With { other: w, other_wrote: true }, reader.tid);
                }
            }
        }
        record_reads(Self::reads_of(cell, &mut self.lists), now, lanes);
    }

    /// Marks bytes as the destination of an unfinished `cp.async` of `tid` at `pc`.
    pub(crate) fn set_pending(&mut self, off: usize, tid: u32, pc: u32) {
        if let Some(c) = self.cells.get_mut(off) {
            if c.pending_tid == NONE {
                self.pending += 1;
            }
            c.pending_tid = tid;
            c.pending_pc = pc;
        }
    }

    pub(crate) fn clear_pending(&mut self, off: usize) {
        if let Some(c) = self.cells.get_mut(off) {
            if c.pending_tid != NONE {
                self.pending -= 1;
            }
            c.pending_tid = NONE;
        }
    }
}

/// The shadow's bytes per byte of shared memory (docs/emulator.md).
/// Records reads of one byte by the lanes `lanes` (non-empty) of `now`'s
/// warp at `now`'s instruction: each lane's newer read replaces its older
/// one, and the lanes join this warp's entry at the same stamp (one entry per
/// warp, instruction and state however many lanes read).
fn record_reads(reads: &mut Vec<Reads>, now: Access, lanes: u32) {
    let warp = now.tid / 32;
    let same_stamp = |r: &Reads| r.warp == warp && r.pc == now.pc && r.wsync == now.wsync && r.clock == now.clock;
    // Fast path: the byte's only reads are this warp's at this instruction in
    // this state (a broadcast read, lane by lane).
    if let [r] = &mut reads[..] {
        if same_stamp(r) {
            r.lanes |= lanes;
            return;
        }
    }
    // One pass to find this warp's entry at this stamp and whether a lane has
    // an older read to drop (rare: within an epoch a thread mostly reads a
    // byte once); other warps' entries are skipped at the first comparison.
    let mut hit = None;
    let mut older = false;
    for (i, r) in reads.iter().enumerate() {
        if r.warp != warp {
            continue;
        }
        if same_stamp(r) {
            hit = Some(i);
        } else if r.lanes & lanes != 0 {
            older = true;
        }
    }
    if older {
        // The lanes' newer reads replace their older ones.
        reads.retain_mut(|r| {
            if r.warp != warp || same_stamp(r) {
                return true;
            }
            r.lanes &= !lanes;
            r.lanes != 0
        });
        hit = reads.iter().position(same_stamp);
    }
    match hit {
        Some(i) => reads[i].lanes |= lanes,
        None => reads.push(Reads { warp, lanes, pc: now.pc, wsync: now.wsync, clock: now.clock }),
    }
}

#[cfg(test)]
const CELL_BYTES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    fn conflicts(s: &mut RaceShadow, off: usize, tid: u32, pc: u32, wsync: u32, write: bool) -> Vec<Conflict> {
        let now = s.stamp(tid, pc, wsync);
        let mut out = Vec::new();
        s.access(off, now, write, false, &mut |c| out.push(c));
        out
    }

    #[test]
    fn conflicts_need_two_threads_one_writing_and_no_sync() {
        let mut s = RaceShadow::new();
        s.reset(16, 4);
        assert!(conflicts(&mut s, 0, 1, 10, 0, true).is_empty());
        assert!(conflicts(&mut s, 0, 1, 11, 0, false).is_empty(), "same thread");
        let c = conflicts(&mut s, 0, 40, 12, 0, false);
        assert!(matches!(c[..], [Conflict::With { other: Access { tid: 1, pc: 10, .. }, other_wrote: true }]));
        s.barrier();
        assert!(conflicts(&mut s, 0, 40, 12, 0, false).is_empty());
        assert!(conflicts(&mut s, 0, 41, 12, 0, false).is_empty(), "two readers");
        assert!(conflicts(&mut s, 0, 70, 13, 0, false).is_empty(), "three readers");
        // A write races with every unordered read, however many: once per
        // warp and instruction (threads 40 and 41 read at one instruction).
        let c = conflicts(&mut s, 0, 2, 14, 0, true);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(std::mem::size_of::<Cell>(), CELL_BYTES);
        // Same warp: ordered by a warp sync in between.
        assert!(conflicts(&mut s, 4, 3, 1, 5, true).is_empty());
        assert!(conflicts(&mut s, 4, 4, 2, 6, false).is_empty());
        assert!(conflicts(&mut s, 5, 3, 1, 5, true).is_empty());
        assert_eq!(conflicts(&mut s, 5, 4, 2, 5, false).len(), 1);
        s.set_pending(8, 7, 9);
        assert_eq!(conflicts(&mut s, 8, 7, 3, 0, false), vec![Conflict::AsyncPending { other: 7, pc: 9 }]);
        s.clear_pending(8);
        assert!(conflicts(&mut s, 8, 7, 3, 0, true).is_empty());
    }

    #[test]
    fn a_write_of_the_value_the_byte_holds_races_with_no_write() {
        let mut s = RaceShadow::new();
        s.reset(4, 4);
        let write = |s: &mut RaceShadow, tid: u32, pc: u32, same_value: bool| {
            let now = s.stamp(tid, pc, 0);
            let mut out = Vec::new();
            s.access(0, now, true, same_value, &mut |c| out.push(c));
            out
        };
        assert!(write(&mut s, 0, 1, false).is_empty());
        assert!(write(&mut s, 40, 2, true).is_empty(), "identical data: no write-after-write");
        let c = write(&mut s, 70, 3, false);
        assert!(matches!(c[..], [Conflict::With { other: Access { tid: 40, pc: 2, .. }, other_wrote: true }]), "{c:?}");
        // A read unordered with the writes still races, and so does an
        // identical write with that read (write after read).
        assert_eq!(conflicts(&mut s, 0, 100, 4, 0, false).len(), 1);
        let c = write(&mut s, 1, 5, true);
        assert!(
            matches!(c[..], [Conflict::With { other: Access { tid: 100, pc: 4, .. }, other_wrote: false }]),
            "{c:?}"
        );
    }

    #[test]
    fn a_warp_read_is_the_reads_of_its_lanes() {
        let mut s = RaceShadow::new();
        s.reset(8, 2);
        // Thread 3 writes byte 0; lanes 0-7 of its warp then read it at one
        // instruction: only lanes other than 3 race, reported with lane 0.
        assert!(conflicts(&mut s, 0, 3, 1, 0, true).is_empty());
        let mut seen = Vec::new();
        let now = s.stamp(0, 2, 0);
        s.read_lanes(0, now, 0xff, &mut |c, tid| seen.push((c, tid)));
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(matches!(seen[0], (Conflict::With { other: Access { tid: 3, .. }, other_wrote: true }, 0)));
        // Only the writer itself reading: ordered.
        seen.clear();
        let now = s.stamp(3, 4, 0);
        s.read_lanes(0, now, 1 << 3, &mut |c, tid| seen.push((c, tid)));
        assert!(seen.is_empty(), "{seen:?}");
        // A later write by warp 1 races with those reads, once per warp and instruction.
        let c = conflicts(&mut s, 0, 40, 5, 0, true);
        assert_eq!(c.len(), 3, "the write, the reads at pc 2 and at pc 4: {c:?}");
        // After a barrier, a warp's reads are one entry; a write by one of
        // its lanes races with the others only.
        s.barrier();
        let now = s.stamp(32, 6, 0);
        s.read_lanes(1, now, 0b11, &mut |c, tid| seen.push((c, tid)));
        assert!(seen.is_empty());
        assert_eq!(conflicts(&mut s, 1, 33, 7, 0, true).len(), 1, "lane 0 read unordered");
        assert!(conflicts(&mut s, 2, 33, 7, 0, true).is_empty(), "byte 2 untouched");
    }

    #[test]
    fn a_barrier_of_some_warps_orders_only_them() {
        let mut s = RaceShadow::new();
        s.reset(16, 3);
        assert!(conflicts(&mut s, 0, 0, 1, 0, true).is_empty());
        s.partial_barrier(&[0, 1]);
        assert!(conflicts(&mut s, 0, 32, 2, 0, false).is_empty(), "warp 1 met warp 0");
        assert_eq!(conflicts(&mut s, 0, 64, 3, 0, false).len(), 1, "warp 2 did not");
        // Warp 1 writes after its read; warp 0 reads again without a new barrier.
        assert!(conflicts(&mut s, 1, 33, 4, 0, true).is_empty());
        assert_eq!(conflicts(&mut s, 1, 1, 5, 0, false).len(), 1);
        s.partial_barrier(&[0, 1]);
        assert!(conflicts(&mut s, 1, 1, 5, 0, false).is_empty());
    }
}

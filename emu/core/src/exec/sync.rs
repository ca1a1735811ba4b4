//! Warp collectives and CTA barriers: their rendezvous rules, their
//! semantics, and synccheck (divergent barriers, collectives whose lanes
//! never arrive, deadlock).

use super::cta::{generic_space, lane_bit, Barrier, Cta, Lanes};
use super::memops::shared_wavefronts;
use super::Stop;
use crate::findings::FindingKind;
use crate::ptx::ir::*;
use crate::tensor::{self, Fragment};
use crate::types::ScalarType;

impl<'l> Cta<'l> {
    /// The member mask operand of a collective.
    fn member_operand(inst: &Inst) -> Option<&Opd> {
        match inst.op {
            Op::WarpSync => inst.s.first(),
            Op::Shfl(_) => inst.s.get(3),
            Op::Vote(_) | Op::Match { .. } | Op::Redux(_) => inst.s.get(1),
            _ => None,
        }
    }

    pub(super) fn collective(&mut self, w: usize, pc: u32, group: u32, exec: u32, inst: &Inst) -> Result<(), Stop> {
        let exists = self.warps[w].exists;
        let required = match Self::member_operand(inst) {
            // `.aligned` tensor-core forms: the whole warp.
            None => exists,
            Some(o) => {
                if self.l.opts.synccheck {
                    self.check_member_masks(w, pc, exec, o)?;
                }
                Lanes(exec).fold(0u32, |m, l| m | self.val(w, o, l) as u32) & exists
            }
        };
        if exec != 0 && required & !group != 0 {
            let exited = required & self.warps[w].exited;
            if exited != 0 && self.l.opts.synccheck {
                let tid = self.tid_of(w, Lanes(exec).next().unwrap_or(0));
                return Err(self.report(
                    FindingKind::DivergentSync,
                    pc,
                    tid,
                    0,
                    format!("warp collective needs lanes {required:#010x} but lanes {exited:#010x} have exited"),
                ));
            }
            // Wait here for the rest of the member mask; this attempt does not count.
            self.stats.inst_warp[pc as usize] -= 1;
            self.stats.thread_instructions -= group.count_ones() as u64;
            let warp = &mut self.warps[w];
            warp.wait |= group;
            warp.run &= !group;
            return Ok(());
        }
        {
            let warp = &mut self.warps[w];
            warp.wait &= !group;
            warp.run |= group;
        }
        if exec != 0 {
            self.collective_body(w, pc, exec, inst)?;
            self.warps[w].wsync += 1;
        }
        self.advance(w, group);
        Ok(())
    }

    /// The ISA's rules for `.sync` collectives: every executing lane names
    /// itself in its member mask, and every member it names that executes
    /// with it names the same mask (disjoint groups may share one instruction).
    fn check_member_masks(&self, w: usize, pc: u32, exec: u32, o: &Opd) -> Result<(), Stop> {
        let mut masks = [0u32; 32];
        for l in Lanes(exec) {
            masks[l] = self.val(w, o, l) as u32;
        }
        for l in Lanes(exec) {
            let mask = masks[l];
            let detail = if mask & lane_bit(l) == 0 {
                format!("lane {l} executes a warp collective whose member mask {mask:#010x} does not include it")
            } else if let Some(m) = Lanes(mask & exec).find(|&m| masks[m] != mask) {
                format!(
                    "lane {l} (member mask {mask:#010x}) and lane {m} (member mask {:#010x}) execute one warp collective with different member masks",
                    masks[m]
                )
            } else {
                continue;
            };
            return Err(self.report(FindingKind::DivergentSync, pc, self.tid_of(w, l), 0, detail));
        }
        Ok(())
    }

    fn collective_body(&mut self, w: usize, pc: u32, exec: u32, inst: &Inst) -> Result<(), Stop> {
        let ty = inst.ty;
        let mut out = [0u64; 32];
        let mut out2 = [0u64; 32];
        match &inst.op {
            Op::WarpSync => {}
            Op::Shfl(mode) => {
                for l in Lanes(exec) {
                    let b = (self.val(w, &inst.s[1], l) & 31) as i32;
                    let c = self.val(w, &inst.s[2], l) as u32;
                    let cval = (c & 31) as i32;
                    let seg = ((c >> 8) & 31) as i32;
                    let lane = l as i32;
                    let max_lane = (lane & seg) | (cval & !seg);
                    let min_lane = lane & seg;
                    let (j, ok) = match mode {
                        ShflMode::Up => (lane - b, lane - b >= max_lane),
                        ShflMode::Down => (lane + b, lane + b <= max_lane),
                        ShflMode::Bfly => (lane ^ b, (lane ^ b) <= max_lane),
                        ShflMode::Idx => {
                            let j = min_lane | (b & !seg);
                            (j, j <= max_lane)
                        }
                    };
                    let src = if ok && (0..32).contains(&j) { j as usize } else { l };
                    out[l] = self.val(w, &inst.s[0], src);
                    out2[l] = ok as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ty);
                self.write_all(w, &inst.d2, exec, &out2, ScalarType::Pred);
            }
            Op::Vote(mode) => {
                let mut ballot = 0u32;
                for l in Lanes(exec) {
                    if self.val(w, &inst.s[0], l) != 0 {
                        ballot |= lane_bit(l);
                    }
                }
                let r = match mode {
                    VoteMode::All => (ballot == exec) as u64,
                    VoteMode::Any => (ballot != 0) as u64,
                    VoteMode::Uni => (ballot == exec || ballot == 0) as u64,
                    VoteMode::Ballot => ballot as u64,
                };
                out = [r; 32];
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Match { all } => {
                let vals: Vec<(usize, u64)> = Lanes(exec).map(|l| (l, self.val(w, &inst.s[0], l))).collect();
                let same_all = vals.iter().all(|(_, v)| *v == vals[0].1);
                for &(l, v) in &vals {
                    out[l] = if *all {
                        if same_all {
                            exec as u64
                        } else {
                            0
                        }
                    } else {
                        vals.iter().filter(|(_, x)| *x == v).fold(0, |m, (k, _)| m | 1u64 << k)
                    };
                    out2[l] = same_all as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ScalarType::B32);
                self.write_all(w, &inst.d2, exec, &out2, ScalarType::Pred);
            }
            Op::Redux(op) => {
                let mut acc: Option<u64> = None;
                let mut carry = 0;
                for l in Lanes(exec) {
                    let v = self.val(w, &inst.s[0], l);
                    acc = Some(match acc {
                        None => v,
                        Some(a) => super::arith::int_op(*op, ty, a, v, 0, &mut carry),
                    });
                }
                out = [acc.unwrap_or(0); 32];
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Mma { desc, regs, .. } => {
                let [na, nb, nc, nd] = regs.map(|r| r as usize);
                let gather = |cta: &Self, o: &Opd, n: usize| -> Fragment {
                    let mut f: Fragment = [[0; 4]; 32];
                    for (l, lane) in f.iter_mut().enumerate() {
                        for (i, r) in lane.iter_mut().enumerate().take(n) {
                            *r = cta.val(w, Self::elem(o, i), l) as u32;
                        }
                    }
                    f
                };
                let a = gather(self, &inst.s[0], na);
                let b = gather(self, &inst.s[1], nb);
                let c = gather(self, &inst.s[2], nc);
                let d = tensor::mma_sync(desc, &a, &b, &c);
                for l in Lanes(self.warps[w].exists) {
                    for (i, v) in d[l].iter().enumerate().take(nd) {
                        let dst = Self::elem(&inst.d, i).clone();
                        self.set(w, &dst, l, *v as u64, ScalarType::B32);
                    }
                }
            }
            Op::Wmma(op) => self.wmma(w, pc, inst, *op)?,
            Op::Ldmatrix { num, trans, generic } => {
                let rows_n = 8 * *num as usize;
                let mut rows = vec![[0u8; 16]; rows_n];
                let mut conflicts = 0;
                for q in 0..*num as usize {
                    self.scratch.clear();
                    for j in 0..8 {
                        let r = q * 8 + j;
                        let tid = self.tid_of(w, r);
                        let addr = self.matrix_row_address(pc, tid, *generic, self.val(w, &inst.s[0], r))?;
                        // Row r of the phase is the 16 bytes at lane r's address and
                        // nothing else: racecheck sees each byte, initcheck the row.
                        for (k, byte) in rows[r].iter_mut().enumerate() {
                            *byte =
                                self.read_checked(pc, tid, Space::Shared, addr.wrapping_add(k as u64), 1, false, true)?
                                    as u8;
                        }
                        self.ldmatrix_row_initcheck(pc, tid, addr, q, j, &mut rows[r])?;
                        self.scratch.push((addr & 0xffff_ffff) | 16 << 32 | (j as u64) << 40);
                    }
                    conflicts += self.count_matrix_phase();
                }
                self.stats.ldmatrix_bank_conflicts += conflicts;
                let frag = tensor::ldmatrix_distribute(*num as u32, *trans, &rows);
                for l in Lanes(self.warps[w].exists) {
                    for (i, v) in frag[l].iter().enumerate().take(*num as usize) {
                        let dst = Self::elem(&inst.d, i).clone();
                        self.set(w, &dst, l, *v as u64, ScalarType::B32);
                    }
                }
            }
            Op::Stmatrix { num, trans, generic } => {
                let mut frag: Fragment = [[0; 4]; 32];
                for (l, lane) in frag.iter_mut().enumerate() {
                    for (i, r) in lane.iter_mut().enumerate().take(*num as usize) {
                        *r = self.val(w, Self::elem(&inst.s[1], i), l) as u32;
                    }
                }
                let rows = tensor::stmatrix_gather(*num as u32, *trans, &frag);
                let mut conflicts = 0;
                for q in 0..*num as usize {
                    self.scratch.clear();
                    for j in 0..8 {
                        let r = q * 8 + j;
                        let tid = self.tid_of(w, r);
                        let addr = self.matrix_row_address(pc, tid, *generic, self.val(w, &inst.s[0], r))?;
                        for (k, byte) in rows.get(r).copied().unwrap_or([0; 16]).iter().enumerate() {
                            self.write(pc, tid, Space::Shared, addr.wrapping_add(k as u64), 1, *byte as u64)?;
                        }
                        self.scratch.push((addr & 0xffff_ffff) | 16 << 32 | (j as u64) << 40);
                    }
                    conflicts += self.count_matrix_phase();
                }
                self.stats.ldmatrix_bank_conflicts += conflicts;
            }
            _ => {}
        }
        Ok(())
    }

    /// initcheck of one ldmatrix row: the 16 bytes that lane `8 * q + j`'s
    /// address names are row `j` of matrix `q` (`.x1` and `.x2` read only the
    /// rows of lanes 0-7 and 0-15; the other lanes' addresses name nothing
    /// and are not looked at).
    ///
    /// By default a row with bytes never written is not a finding: tiled
    /// GEMMs (CUTLASS's multistage mainloop, ours at ragged edges) skip the
    /// copies of rows past the problem's edge and discard the products those
    /// rows feed. Instead the unwritten bytes read as 0xff, a NaN in f16, bf16
    /// and f32, so any product of them that does reach an output is NaN there
    /// and fails a comparison with a reference, the precise test of "used".
    /// `PTX_EMU_INITCHECK_LDMATRIX=1` makes every such row a finding.
    #[allow(clippy::too_many_arguments)]
    fn ldmatrix_row_initcheck(
        &self,
        pc: u32,
        tid: u32,
        addr: u64,
        q: usize,
        j: usize,
        row: &mut [u8; 16],
    ) -> Result<(), Stop> {
        if !self.l.opts.initcheck {
            return Ok(());
        }
        let o = addr as usize;
        let Some(written) = self.shared_init.get(o..o + 16) else { return Ok(()) };
        let Some(first) = written.iter().position(|b| !*b) else { return Ok(()) };
        if !self.l.opts.ldmatrix_initcheck {
            for (byte, _) in row.iter_mut().zip(written).filter(|(_, w)| !**w) {
                *byte = 0xff;
            }
            return Ok(());
        }
        let unwritten = written.iter().filter(|b| !**b).count();
        Err(self.report(
            FindingKind::Uninitialized,
            pc,
            tid,
            addr,
            format!(
                "ldmatrix row {j} of matrix {q} (the address of lane {}) at shared offset {addr:#x}: \
                 {unwritten} of its 16 bytes never written, the first at {:#x}",
                8 * q + j,
                addr + first as u64
            ),
        ))
    }

    /// A row's shared-memory address: a generic one converted (outside the
    /// shared window it is an out-of-bounds finding: there is no shared
    /// memory there), then checked for alignment.
    fn matrix_row_address(&self, pc: u32, tid: u32, generic: bool, addr: u64) -> Result<u64, Stop> {
        let addr = if generic {
            if generic_space(addr) != Space::Shared {
                return Err(self.report(
                    FindingKind::OutOfBounds,
                    pc,
                    tid,
                    addr,
                    "ldmatrix/stmatrix generic row address outside shared memory".into(),
                ));
            }
            addr - Space::Shared.window()
        } else {
            addr
        };
        if self.l.opts.memcheck && addr % 16 != 0 {
            return Err(self.report(
                FindingKind::Misaligned,
                pc,
                tid,
                addr,
                "ldmatrix/stmatrix row address not 16-byte aligned".into(),
            ));
        }
        Ok(addr)
    }

    /// One 8-row phase of ldmatrix/stmatrix (rows gathered in `scratch`):
    /// counts it as one shared request and returns its extra wavefronts.
    fn count_matrix_phase(&mut self) -> u64 {
        // 8 rows of 16 bytes are served as one phase of 32 four-byte words:
        // count them as one 32-lane request of 4-byte accesses.
        let mut words = [0u64; 32];
        for (r, a) in self.scratch.iter().take(8).enumerate() {
            let addr = a & 0xffff_ffff;
            for k in 0..4 {
                words[r * 4 + k] = ((addr + 4 * k as u64) & 0xffff_ffff) | 4 << 32 | ((r * 4 + k) as u64) << 40;
            }
        }
        let (waves, _) = shared_wavefronts(&words[..self.scratch.len().min(8) * 4]);
        self.stats.shared_requests += 1;
        self.stats.shared_wavefronts += waves;
        waves - 1
    }

    pub(super) fn barrier(
        &mut self,
        w: usize,
        pc: u32,
        group: u32,
        exec: u32,
        inst: &Inst,
        kind: BarKind,
    ) -> Result<(), Stop> {
        self.advance(w, group & !exec);
        let Some(first) = Lanes(exec).next() else { return Ok(()) };
        let id = (self.val(w, &inst.s[0], first) & 15) as usize;
        let (count, pred) = match kind {
            BarKind::Red(_) if inst.s.len() == 3 => (Some(&inst.s[1]), Some(&inst.s[2])),
            BarKind::Red(_) => (None, inst.s.get(1)),
            _ => (inst.s.get(1), None),
        };
        let expected = count.map(|o| self.val(w, o, first) as u32);
        let n = exec.count_ones();
        let tid = self.tid_of(w, first);
        if self.l.opts.synccheck {
            self.check_barrier_count(w, pc, id, exec, count, expected)?;
        }
        let mut popc = 0;
        let mut any = false;
        let mut all = true;
        if let Some(p) = pred {
            for l in Lanes(exec) {
                let v = self.val(w, p, l) != 0;
                popc += v as u32;
                any |= v;
                all &= v;
            }
        }
        let b = &mut self.bars[id];
        if b.arrived == 0 {
            b.first_pc = pc;
            b.first_thread = tid;
            b.popc = 0;
            b.any = false;
            b.all = true;
            b.other = None;
        } else if b.first_pc != pc && b.other.is_none() && kind != BarKind::Arrive {
            b.other = Some((pc, tid));
        }
        b.arrived += n;
        b.expected = expected.or(b.expected);
        b.popc += popc;
        b.any |= any;
        b.all &= all;
        if kind == BarKind::Arrive {
            self.advance(w, exec);
            return Ok(());
        }
        let warp = &mut self.warps[w];
        warp.bar |= exec;
        warp.run &= !exec;
        for l in Lanes(exec) {
            warp.bar_id[l] = id as u8;
        }
        Ok(())
    }

    /// The ISA's rules for a barrier's thread count: a multiple of the warp
    /// size (a count above the CTA's threads is never reached: a deadlock), the same in every lane and in
    /// every warp that arrives at the barrier before it completes.
    fn check_barrier_count(
        &self,
        w: usize,
        pc: u32,
        id: usize,
        exec: u32,
        count: Option<&Opd>,
        expected: Option<u32>,
    ) -> Result<(), Stop> {
        let Some(c) = expected else {
            if let (Some(prev), true) = (self.bars[id].expected, self.bars[id].arrived > 0) {
                let tid = self.tid_of(w, Lanes(exec).next().unwrap_or(0));
                return Err(self.report(
                    FindingKind::DivergentSync,
                    pc,
                    tid,
                    0,
                    format!("barrier {id} is awaited here for the whole CTA but elsewhere for {prev} threads"),
                ));
            }
            return Ok(());
        };
        let tid = self.tid_of(w, Lanes(exec).next().unwrap_or(0));
        let bad = |detail: String| Err(self.report(FindingKind::DivergentSync, pc, tid, 0, detail));
        if c == 0 || c % 32 != 0 {
            return bad(format!("barrier {id}: thread count {c} is not a positive multiple of the warp size"));
        }
        if let Some(o) = count {
            if let Some(l) = Lanes(exec).find(|&l| self.val(w, o, l) as u32 != c) {
                return bad(format!(
                    "barrier {id}: lanes of one warp give different thread counts ({c} and {})",
                    self.val(w, o, l) as u32
                ));
            }
        }
        let b = &self.bars[id];
        if b.arrived > 0 && b.expected != Some(c) {
            let prev = b.expected.map_or_else(|| "the whole CTA".to_string(), |p| format!("{p} threads"));
            return bad(format!("barrier {id}: awaited here for {c} threads but elsewhere for {prev}"));
        }
        Ok(())
    }

    /// A CTA-wide barrier completes with threads of a warp exited while other
    /// lanes of that warp wait at it: those threads skipped the barrier
    /// (compute-sanitizer's "divergent thread(s) in block"). Warps whose
    /// threads all exited are legal, as on hardware.
    fn check_partial_exit(&self, b: &Barrier, id: usize) -> Result<(), Stop> {
        for (w, warp) in self.warps.iter().enumerate() {
            let waiting =
                Lanes(warp.bar).fold(0u32, |m, l| if warp.bar_id[l] as usize == id { m | lane_bit(l) } else { m });
            if warp.exited != 0 && waiting != 0 {
                let tid = self.tid_of(w, Lanes(waiting).next().unwrap_or(0));
                return Err(self.report(
                    FindingKind::DivergentSync,
                    b.first_pc,
                    tid,
                    0,
                    format!(
                        "barrier {id} completes while lanes {:#010x} of warp {w} wait at it and lanes {:#010x} of that warp exited without reaching it",
                        waiting, warp.exited
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Releases every barrier whose threads have all arrived (exited threads
    /// count as arrived). Returns whether any was released.
    pub(super) fn release_barriers(&mut self) -> Result<bool, Stop> {
        let exited: u32 = self.warps.iter().map(|w| w.exited.count_ones()).sum();
        let mut released = false;
        for id in 0..self.bars.len() {
            let b = self.bars[id];
            if b.arrived == 0 {
                continue;
            }
            let complete = match b.expected {
                None => b.arrived + exited >= self.nthreads,
                Some(c) => b.arrived >= c,
            };
            if !complete {
                continue;
            }
            // A CTA-wide barrier must be one instruction; the ISA lets the warps of
            // a counted (named) barrier meet at different ones (producer/consumer).
            if let (Some((pc2, t2)), true) = (b.other, self.l.opts.synccheck && b.expected.is_none()) {
                let line2 = self.k.insts.get(pc2 as usize).map_or(0, |i| i.line);
                return Err(self.report(
                    FindingKind::DivergentSync,
                    b.first_pc,
                    b.first_thread,
                    0,
                    format!(
                        "barrier {id} is reached at different instructions: here and at PTX line {line2} by thread {:?}",
                        self.thread_xyz(t2)
                    ),
                ));
            }
            if b.expected.is_none() && exited > 0 && self.l.opts.synccheck {
                self.check_partial_exit(&b, id)?;
            }
            let k = self.k;
            let mut released_warps = Vec::new();
            for w in 0..self.warps.len() {
                let mut lanes = 0u32;
                for l in Lanes(self.warps[w].bar) {
                    if self.warps[w].bar_id[l] as usize == id {
                        lanes |= lane_bit(l);
                    }
                }
                if lanes != 0 {
                    released_warps.push(w);
                }
                for l in Lanes(lanes) {
                    let pc = self.warps[w].pc[l];
                    if let Some(inst) = k.insts.get(pc as usize) {
                        if let Op::Bar { kind: BarKind::Red(r) } = inst.op {
                            let v = match r {
                                BarRed::Popc => b.popc as u64,
                                BarRed::And => b.all as u64,
                                BarRed::Or => b.any as u64,
                            };
                            self.set(w, &inst.d.clone(), l, v, inst.ty);
                        }
                    }
                }
                let warp = &mut self.warps[w];
                warp.bar &= !lanes;
                warp.run |= lanes;
                for l in Lanes(lanes) {
                    warp.pc[l] += 1;
                }
            }
            if self.l.opts.racecheck {
                if b.expected.map_or(true, |c| c >= self.nthreads) {
                    self.race.barrier();
                } else {
                    self.race.partial_barrier(&released_warps);
                }
            }
            self.asy.barrier_released(&released_warps);
            self.bars[id] = Default::default();
            released = true;
        }
        Ok(released)
    }

    /// Nothing can run and not everything has finished: report why.
    pub(super) fn stall(&mut self) -> Stop {
        for w in 0..self.warps.len() {
            let warp = &self.warps[w];
            if let Some(l) = Lanes(warp.wait).next() {
                let (pc, tid) = (warp.pc[l], self.tid_of(w, l));
                if let Some(detail) = self.wgmma_stall_detail(w, pc) {
                    return self.report(FindingKind::DivergentSync, pc, tid, 0, detail);
                }
                return self.report(
                    FindingKind::DivergentSync,
                    pc,
                    tid,
                    0,
                    format!(
                        "warp collective waits for lanes of its member mask that never arrive (lanes {:#010x} wait here, {:#010x} at a barrier, {:#010x} exited)",
                        warp.wait, warp.bar, warp.exited
                    ),
                );
            }
        }
        // Threads held at the cluster barrier name those that never arrive.
        if let Some(stop) = self.cluster_stall() {
            return stop;
        }
        for (id, b) in self.bars.iter().enumerate() {
            if b.arrived > 0 {
                let want = b.expected.map_or_else(|| "all live".to_string(), |c| c.to_string());
                return self.report(
                    FindingKind::Deadlock,
                    b.first_pc,
                    b.first_thread,
                    0,
                    format!(
                        "barrier {id}: {} threads arrived, {want} expected, and no thread can make progress",
                        b.arrived
                    ),
                );
            }
        }
        self.report(FindingKind::Deadlock, 0, 0, 0, "no thread can make progress".into())
    }
}

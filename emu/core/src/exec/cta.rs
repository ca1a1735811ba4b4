//! One CTA: its warps, shared memory, barriers and pending async copies, and
//! the scheduler that runs them. Each warp executes SIMT over the group of
//! lanes at its lowest program counter (independent thread scheduling with
//! hardware-like reconvergence); warp collectives wait until every lane of
//! their member mask is there.

use super::arith::{self, bits_of, mask, sext};
use super::cluster::Round;
use super::race::RaceShadow;
use super::{LaunchCtx, Stats, Stop};
use crate::findings::FindingKind;
use crate::numerics;
use crate::ptx::ir::*;
use crate::types::ScalarType;

/// Warp instructions a warp runs before the scheduler moves on (so a warp
/// spinning on another warp's progress cannot starve it).
const SLICE: u32 = 512;
const NUM_BARRIERS: usize = 16;
/// Every this many steps a diverged warp runs its highest-PC group instead of
/// its lowest, so a lane spinning on another lane of its warp cannot starve
/// it (hardware's independent thread scheduling guarantees that progress).
const FAIRNESS_PERIOD: u32 = 64;

/// Lanes of a mask, lowest first.
pub(crate) struct Lanes(pub u32);

impl Iterator for Lanes {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let l = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(l as usize)
    }
}

pub(crate) struct Warp {
    /// `regs[reg * 32 + lane]`, raw bits zero-extended to 64.
    pub(super) regs: Vec<u64>,
    pub(super) pc: [u32; 32],
    /// Lanes that exist (a partial last warp has fewer than 32).
    pub(super) exists: u32,
    pub(super) run: u32,
    /// Lanes waiting at a warp collective for the rest of its member mask.
    pub(super) wait: u32,
    /// Lanes waiting at a CTA barrier (`bar_id` says which).
    pub(super) bar: u32,
    pub(super) bar_id: [u8; 32],
    pub(super) exited: u32,
    /// Warp synchronisation epoch (racecheck), bumped by collectives.
    pub(super) wsync: u32,
    /// Scheduling steps taken (see `FAIRNESS_PERIOD`).
    pub(super) steps: u32,
}

#[derive(Clone, Copy, Default)]
pub(super) struct Barrier {
    pub(super) arrived: u32,
    pub(super) expected: Option<u32>,
    pub(super) first_pc: u32,
    pub(super) first_thread: u32,
    /// Another PC at which threads wait on the same barrier (divergence).
    pub(super) other: Option<(u32, u32)>,
    pub(super) popc: u32,
    pub(super) any: bool,
    pub(super) all: bool,
}

pub(super) struct PendingCopy {
    pub(super) tid: u32,
    pub(super) group: u32,
    pub(super) dst: u32,
    pub(super) len: u8,
    pub(super) data: [u8; 16],
    pub(super) pc: u32,
}

pub(crate) struct Cta<'l> {
    pub(super) l: &'l LaunchCtx<'l>,
    pub(super) k: &'l Kernel,
    pub(super) ctaid: [u32; 3],
    pub(super) block: [u32; 3],
    pub(super) nthreads: u32,
    pub(super) warps: Vec<Warp>,
    pub(super) shared: Vec<u8>,
    pub(super) shared_init: Vec<bool>,
    pub(super) race: RaceShadow,
    pub(super) local: Vec<u8>,
    pub(super) bars: [Barrier; NUM_BARRIERS],
    pub(super) pending: Vec<Vec<PendingCopy>>,
    /// Per thread: the `cp.async` group that is open (commits so far).
    pub(super) groups: Vec<u32>,
    /// Index into the launch's allocation snapshot of the last global hit.
    pub(super) cache: usize,
    pub(super) clock: u64,
    pub(crate) stats: Stats,
    /// Scratch for request accounting (sector ids, shared addresses).
    pub(super) scratch: Vec<u64>,
    pub(super) sectors: Vec<u64>,
    /// Warpgroup MMA state (`wgmma`).
    pub(super) wg: super::wgmma::WgState,
    has_wgmma: bool,
    /// mbarriers, bulk copies and proxy fences (`async_proxy`, `tma`).
    pub(super) asy: super::async_proxy::AsyncState,
    /// Whether the kernel has bulk stores (shared writes then track proxy fences).
    bulk_stores: bool,
    /// Its place in its cluster and the cluster barrier (`cluster`).
    pub(super) cl: super::cluster::ClusterState,
}

pub(super) fn lane_bit(l: usize) -> u32 {
    1u32 << l
}

impl<'l> Cta<'l> {
    pub(crate) fn new(l: &'l LaunchCtx<'l>) -> Self {
        let k = l.kernel;
        Cta {
            l,
            k,
            ctaid: [0; 3],
            block: l.config.block,
            nthreads: l.config.block.iter().product(),
            warps: Vec::new(),
            shared: Vec::new(),
            shared_init: Vec::new(),
            race: RaceShadow::new(),
            local: Vec::new(),
            bars: [Barrier::default(); NUM_BARRIERS],
            pending: Vec::new(),
            groups: Vec::new(),
            cache: 0,
            clock: 0,
            stats: Stats::new(k.insts.len()),
            scratch: Vec::with_capacity(256),
            sectors: Vec::with_capacity(256),
            wg: Default::default(),
            has_wgmma: k.insts.iter().any(|i| matches!(i.op, Op::Wgmma(_))),
            asy: Default::default(),
            bulk_stores: k
                .insts
                .iter()
                .any(|i| matches!(i.op, Op::Async(AsyncOp::TensorStore { .. } | AsyncOp::BulkStore))),
            cl: Default::default(),
        }
    }

    pub(super) fn shared_size(&self) -> usize {
        self.k.dynamic_shared_offset as usize + self.l.config.dynamic_shared_bytes as usize
    }

    /// Runs CTA `ctaid` (a cluster of one) to completion or to its first finding.
    pub(crate) fn run(&mut self, ctaid: [u32; 3]) -> Result<(), Stop> {
        self.begin(ctaid);
        loop {
            match self.round()? {
                Round::Done => return Ok(()),
                Round::Progressed => {}
                Round::Stuck => {
                    if super::cluster::complete_cluster_barrier(std::slice::from_mut(self)) || self.mbar_timeout()? {
                        continue;
                    }
                    return Err(self.stall());
                }
            }
        }
    }

    /// Sets up CTA `ctaid` to run: threads at the start, shared memory unwritten.
    pub(crate) fn begin(&mut self, ctaid: [u32; 3]) {
        self.ctaid = ctaid;
        let nwarps = self.nthreads.div_ceil(32) as usize;
        let nregs = self.k.nregs as usize;
        self.warps.truncate(nwarps);
        while self.warps.len() < nwarps {
            self.warps.push(Warp {
                regs: Vec::new(),
                pc: [0; 32],
                exists: 0,
                run: 0,
                wait: 0,
                bar: 0,
                bar_id: [0; 32],
                exited: 0,
                wsync: 0,
                steps: 0,
            });
        }
        for (i, w) in self.warps.iter_mut().enumerate() {
            let n = (self.nthreads - 32 * i as u32).min(32);
            w.exists = if n == 32 { u32::MAX } else { (1u32 << n) - 1 };
            w.run = w.exists;
            w.wait = 0;
            w.bar = 0;
            w.exited = 0;
            w.wsync = 0;
            w.steps = 0;
            w.pc = [0; 32];
            // A register file the previous CTA of this launch used keeps its
            // values except where some thread may read before writing.
            match &self.k.clear_regs {
                Some(clear) if w.regs.len() == nregs * 32 => {
                    for &r in clear {
                        w.regs[r as usize * 32..r as usize * 32 + 32].fill(0);
                    }
                }
                _ => {
                    w.regs.clear();
                    w.regs.resize(nregs * 32, 0);
                }
            }
        }
        let size = self.shared_size();
        self.shared.clear();
        self.shared.resize(size, 0);
        self.shared_init.clear();
        self.shared_init.resize(size, false);
        if self.l.opts.racecheck {
            self.race.reset(size, self.nthreads.div_ceil(32) as usize);
        }
        self.local.clear();
        self.local.resize(self.k.info.local_bytes as usize * self.nthreads as usize, 0);
        self.bars = [Barrier::default(); NUM_BARRIERS];
        self.pending.truncate(self.nthreads as usize);
        self.pending.iter_mut().for_each(|q| q.clear());
        self.pending.resize_with(self.nthreads as usize, Vec::new);
        self.groups.clear();
        self.groups.resize(self.nthreads as usize, 0);
        self.wg.reset(self.has_wgmma, nwarps, nregs, size);
        self.asy.reset(nwarps, self.nthreads as usize, self.bulk_stores, size);
        self.cl.reset(nwarps, self.nthreads as usize);
    }

    /// Runs each warp that can run for one time slice, then releases the
    /// CTA barriers that completed.
    pub(crate) fn round(&mut self) -> Result<Round, Stop> {
        let mut progressed = false;
        for w in 0..self.warps.len() {
            if self.warps[w].run != 0 {
                progressed = true;
                self.run_warp(w)?;
            }
        }
        if self.l.stopped() {
            return Err(Stop);
        }
        if self.release_barriers()? {
            return Ok(Round::Progressed);
        }
        if self.warps.iter().all(|w| w.run | w.wait | w.bar == 0) && !self.asy.any_blocked() && !self.cl.any_blocked() {
            return Ok(Round::Done);
        }
        Ok(if progressed { Round::Progressed } else { Round::Stuck })
    }

    fn run_warp(&mut self, w: usize) -> Result<(), Stop> {
        for _ in 0..SLICE {
            let warp = &mut self.warps[w];
            if warp.run == 0 {
                return Ok(());
            }
            warp.steps = warp.steps.wrapping_add(1);
            let warp = &self.warps[w];
            // Over all 32 lanes without branches (the compiler vectorises
            // these loops): the lowest PC of a running lane (the highest
            // every `FAIRNESS_PERIOD` steps), then the lanes there.
            let run = warp.run;
            let pc = if warp.steps % FAIRNESS_PERIOD == 0 {
                (0..32).map(|l| if run >> l & 1 != 0 { warp.pc[l] } else { 0 }).fold(0, u32::max)
            } else {
                (0..32).map(|l| if run >> l & 1 != 0 { warp.pc[l] } else { u32::MAX }).fold(u32::MAX, u32::min)
            };
            let at_pc = (0..32).fold(0u32, |m, l| m | u32::from(warp.pc[l] == pc) << l);
            let group = at_pc & (run | warp.wait);
            self.step(w, pc, group)?;
        }
        Ok(())
    }

    pub(super) fn tid_of(&self, w: usize, lane: usize) -> u32 {
        (w * 32 + lane) as u32
    }

    pub(super) fn thread_xyz(&self, tid: u32) -> [u32; 3] {
        let [bx, by, _] = self.block;
        [tid % bx, (tid / bx) % by, tid / (bx * by)]
    }

    /// Records a finding and returns the stop signal.
    /// The PTX line of instruction `pc`.
    pub(super) fn line_of(&self, pc: u32) -> u32 {
        self.k.insts.get(pc as usize).map_or(0, |i| i.line)
    }

    /// A racecheck finding, reported once per launch for the pair of
    /// instructions `(other_pc, pc)`; execution goes on.
    pub(super) fn report_race(&self, pc: u32, other_pc: u32, tid: u32, addr: u64, detail: String) {
        let line = self.line_of(pc);
        let pair = (self.line_of(other_pc), line);
        self.l.report_once(pair, FindingKind::Race, line, self.ctaid, self.thread_xyz(tid), addr, detail);
    }

    pub(super) fn report(&self, kind: FindingKind, pc: u32, tid: u32, addr: u64, detail: String) -> Stop {
        let line = self.k.insts.get(pc as usize).map_or(0, |i| i.line);
        self.l.report(kind, line, self.ctaid, self.thread_xyz(tid), addr, detail);
        Stop
    }

    #[inline]
    pub(super) fn reg(&self, w: usize, r: u32, lane: usize) -> u64 {
        self.warps[w].regs[r as usize * 32 + lane]
    }

    #[inline]
    fn sreg(&self, w: usize, s: Sreg, lane: usize) -> u64 {
        let tid = self.tid_of(w, lane);
        let xyz = self.thread_xyz(tid);
        let cfg = self.l.config;
        match s {
            Sreg::Tid(d) => xyz[d as usize] as u64,
            Sreg::Ntid(d) => cfg.block[d as usize] as u64,
            Sreg::Ctaid(d) => self.ctaid[d as usize] as u64,
            Sreg::Nctaid(d) => cfg.grid[d as usize] as u64,
            Sreg::LaneId => lane as u64,
            Sreg::WarpId => w as u64,
            Sreg::NWarpId => 64,
            Sreg::SmId => 0,
            Sreg::NSmId => 1,
            Sreg::GridId => 1,
            Sreg::LaneMaskEq => 1 << lane,
            Sreg::LaneMaskLt => (1u64 << lane) - 1,
            Sreg::LaneMaskLe => (1u64 << (lane + 1)) - 1,
            Sreg::LaneMaskGt => (!((1u64 << (lane + 1)) - 1)) & 0xffff_ffff,
            Sreg::LaneMaskGe => (!((1u64 << lane) - 1)) & 0xffff_ffff,
            Sreg::Clock => self.clock & 0xffff_ffff,
            Sreg::Clock64 => self.clock,
            Sreg::GlobalTimer => self.clock * 1000,
            Sreg::DynSmemSize => cfg.dynamic_shared_bytes as u64,
            Sreg::TotalSmemSize => self.shared_size() as u64,
            Sreg::Cluster(c) => self.cluster_sreg(c),
        }
    }

    #[inline]
    pub(super) fn val(&self, w: usize, o: &Opd, lane: usize) -> u64 {
        match o {
            Opd::Reg(r) => self.reg(w, *r, lane),
            Opd::Imm(v) => *v,
            Opd::NotPred(r) => (self.reg(w, *r, lane) == 0) as u64,
            Opd::Sreg(s) => self.sreg(w, *s, lane),
            Opd::Addr { base, off } => base.map_or(0, |r| self.reg(w, r, lane)).wrapping_add(*off as u64),
            Opd::Vec(_) | Opd::Sink => 0,
        }
    }

    /// Register `r` of every lane of warp `w`.
    #[inline]
    fn reg_row(&self, w: usize, r: u32) -> [u64; 32] {
        let base = r as usize * 32;
        let mut row = [0u64; 32];
        row.copy_from_slice(&self.warps[w].regs[base..base + 32]);
        row
    }

    /// The value of operand `o` in each lane of `exec` (other lanes hold
    /// anything), with the operand decoded once for the warp instead of once
    /// per lane: the same values as `val` lane by lane.
    #[inline]
    pub(super) fn vals(&self, w: usize, o: &Opd, exec: u32) -> [u64; 32] {
        match o {
            Opd::Reg(r) => self.reg_row(w, *r),
            Opd::Imm(v) => [*v; 32],
            Opd::NotPred(r) => self.reg_row(w, *r).map(|v| (v == 0) as u64),
            Opd::Addr { base: Some(r), off } => self.reg_row(w, *r).map(|v| v.wrapping_add(*off as u64)),
            Opd::Addr { base: None, off } => [*off as u64; 32],
            Opd::Vec(_) | Opd::Sink => [0; 32],
            Opd::Sreg(_) => {
                let mut out = [0u64; 32];
                for l in Lanes(exec) {
                    out[l] = self.val(w, o, l);
                }
                out
            }
        }
    }

    /// `vals` of an optional operand (0 where the instruction has none).
    #[inline]
    pub(super) fn vals_or_zero(&self, w: usize, o: Option<&Opd>, exec: u32) -> [u64; 32] {
        o.map_or([0; 32], |o| self.vals(w, o, exec))
    }

    /// Element `i` of a vector operand (or the operand itself).
    #[inline]
    pub(super) fn elem(o: &Opd, i: usize) -> &Opd {
        match o {
            Opd::Vec(v) => v.get(i).unwrap_or(&Opd::Sink),
            _ => o,
        }
    }

    #[inline]
    pub(super) fn set(&mut self, w: usize, d: &Opd, lane: usize, v: u64, ty: ScalarType) {
        if let Opd::Reg(r) = d {
            // Predicates keep bit 0 (so `not.pred` is a logical not).
            let v = if ty == ScalarType::Pred { v & 1 } else { v & mask(bits_of(ty)) };
            self.warps[w].regs[*r as usize * 32 + lane] = v;
        }
    }

    /// `set` for each lane of `exec`, the destination decoded once.
    #[inline]
    pub(super) fn write_all(&mut self, w: usize, d: &Opd, exec: u32, out: &[u64; 32], ty: ScalarType) {
        if let Opd::Reg(r) = d {
            let m = if ty == ScalarType::Pred { 1 } else { mask(bits_of(ty)) };
            let base = *r as usize * 32;
            let row = &mut self.warps[w].regs[base..base + 32];
            if exec == u32::MAX {
                for (slot, v) in row.iter_mut().zip(out) {
                    *slot = v & m;
                }
            } else {
                for l in Lanes(exec) {
                    row[l] = out[l] & m;
                }
            }
        }
    }

    #[inline]
    pub(super) fn advance(&mut self, w: usize, lanes: u32) {
        let warp = &mut self.warps[w];
        for l in Lanes(lanes) {
            warp.pc[l] += 1;
        }
    }

    pub(super) fn exit_lanes(&mut self, w: usize, lanes: u32) -> Result<(), Stop> {
        for l in Lanes(lanes) {
            let tid = self.tid_of(w, l);
            self.land_copies(tid, u32::MAX)?;
        }
        let warp = &mut self.warps[w];
        warp.run &= !lanes;
        warp.wait &= !lanes;
        warp.exited |= lanes;
        Ok(())
    }

    /// Executes the instruction at `pc` for `group`.
    fn step(&mut self, w: usize, pc: u32, group: u32) -> Result<(), Stop> {
        let k = self.k;
        let Some(inst) = k.insts.get(pc as usize) else {
            // Falling off the end of the kernel is a return.
            return self.exit_lanes(w, group);
        };
        self.clock += 1;
        self.stats.inst_warp[pc as usize] += 1;
        self.stats.thread_instructions += group.count_ones() as u64;
        let exec = match inst.guard {
            None => group,
            Some((r, neg)) => {
                let row = self.reg_row(w, r);
                let mut m = 0;
                for l in Lanes(group) {
                    if (row[l] != 0) != neg {
                        m |= lane_bit(l);
                    }
                }
                m
            }
        };
        if self.wg.enabled() {
            if let Some(op) = super::wgmma::is_wgmma(&inst.op) {
                return self.wgmma(w, pc, group, exec, op);
            }
            self.wgmma_note_access(w, pc, exec, inst)?;
        }
        if inst.is_collective() {
            return self.collective(w, pc, group, exec, inst);
        }
        let ty = inst.ty;
        let mut out = [0u64; 32];
        match &inst.op {
            Op::Mov => {
                let n = match (&inst.d, &inst.s[0]) {
                    (_, Opd::Vec(v)) | (Opd::Vec(v), _) => v.len(),
                    _ => 1,
                };
                let ew = bits_of(ty) / n as u32;
                if let Opd::Vec(dv) = &inst.d {
                    for l in Lanes(exec) {
                        let v = self.val(w, &inst.s[0], l);
                        for (i, d) in dv.iter().enumerate() {
                            let part = (v >> (ew as usize * i)) & mask(ew);
                            if let Opd::Reg(r) = d {
                                self.warps[w].regs[*r as usize * 32 + l] = part;
                            }
                        }
                    }
                } else {
                    match &inst.s[0] {
                        Opd::Vec(sv) => {
                            for l in Lanes(exec) {
                                out[l] = sv
                                    .iter()
                                    .enumerate()
                                    .fold(0, |acc, (i, o)| acc | (self.val(w, o, l) & mask(ew)) << (ew as usize * i));
                            }
                        }
                        o => out = self.vals(w, o, exec),
                    }
                    self.write_all(w, &inst.d, exec, &out, ty);
                }
            }
            Op::Int(op) => {
                let carry_reg = self.k.carry_reg;
                let a = self.vals(w, &inst.s[0], exec);
                let b = self.vals_or_zero(w, inst.s.get(1), exec);
                let c = self.vals_or_zero(w, inst.s.get(2), exec);
                let lanes = || Lanes(exec);
                // The common operations, whose result (masked to the type's
                // width by `write_all`) is `int_op`'s, one match per warp.
                match op {
                    IntOp::Add => lanes().for_each(|l| out[l] = a[l].wrapping_add(b[l])),
                    IntOp::Sub => lanes().for_each(|l| out[l] = a[l].wrapping_sub(b[l])),
                    IntOp::MulLo => lanes().for_each(|l| out[l] = a[l].wrapping_mul(b[l])),
                    IntOp::MadLo => lanes().for_each(|l| out[l] = a[l].wrapping_mul(b[l]).wrapping_add(c[l])),
                    IntOp::And => lanes().for_each(|l| out[l] = a[l] & b[l]),
                    IntOp::Or => lanes().for_each(|l| out[l] = a[l] | b[l]),
                    IntOp::Xor => lanes().for_each(|l| out[l] = a[l] ^ b[l]),
                    _ => {
                        // The fourth operand of bfi (len) and lop3 (lut) travels in `extra`.
                        let extras = match op {
                            IntOp::Bfi | IntOp::Lop3 => self.vals(w, &inst.s[3], exec),
                            _ => self.reg_row(w, carry_reg),
                        };
                        for l in Lanes(exec) {
                            let mut extra = extras[l];
                            out[l] = arith::int_op(*op, ty, a[l], b[l], c[l], &mut extra);
                            if let IntOp::AddCarry { carry_out: true, .. }
                            | IntOp::SubCarry { carry_out: true, .. }
                            | IntOp::MadCarry { carry_out: true, .. } = op
                            {
                                self.warps[w].regs[carry_reg as usize * 32 + l] = extra;
                            }
                        }
                    }
                }
                let dty = match op {
                    IntOp::MulWide | IntOp::MadWide => wide_type(ty),
                    _ => ty,
                };
                self.write_all(w, &inst.d, exec, &out, dty);
            }
            Op::Float { op, rnd, ftz, sat } => {
                let a = self.vals(w, &inst.s[0], exec);
                let b = self.vals_or_zero(w, inst.s.get(1), exec);
                let c = self.vals_or_zero(w, inst.s.get(2), exec);
                for l in Lanes(exec) {
                    out[l] = if ty == ScalarType::F64 {
                        arith::f64_op(*op, *rnd, a[l], b[l], c[l])
                    } else {
                        arith::f32_op(*op, *rnd, *ftz, *sat, a[l], b[l], c[l])
                    };
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Half { op, rnd, ftz, sat } => {
                let a = self.vals(w, &inst.s[0], exec);
                let b = self.vals_or_zero(w, inst.s.get(1), exec);
                let c = self.vals_or_zero(w, inst.s.get(2), exec);
                for l in Lanes(exec) {
                    out[l] = numerics::half_op(*op, ty, *rnd, *ftz, *sat, a[l] as u32, b[l] as u32, c[l] as u32) as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Special { op, ftz } => {
                let a = self.vals(w, &inst.s[0], exec);
                for l in Lanes(exec) {
                    let a = f32::from_bits(a[l] as u32);
                    out[l] = numerics::special_f32(*op, *ftz, a).to_bits() as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Testp(kind) => {
                let a = self.vals(w, &inst.s[0], exec);
                for l in Lanes(exec) {
                    out[l] = arith::testp(*kind, ty, a[l]) as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ScalarType::Pred);
            }
            Op::Setp { cmp, comb } => {
                let mut out2 = [0u64; 32];
                let half = arith::packed_half(ty);
                let (av, bv) = (self.vals(w, &inst.s[0], exec), self.vals(w, &inst.s[1], exec));
                let cv = self.vals_or_zero(w, inst.s.get(2), exec);
                for l in Lanes(exec) {
                    let (a, b, c) = (av[l], bv[l], cv[l] != 0);
                    if let Some(h) = half {
                        // Packed: `p` takes the lower halves' result, `q` the upper's.
                        out[l] = arith::combine(*comb, arith::compare(*cmp, h, a & 0xffff, b & 0xffff), c) as u64;
                        out2[l] = arith::combine(*comb, arith::compare(*cmp, h, a >> 16 & 0xffff, b >> 16 & 0xffff), c)
                            as u64;
                    } else {
                        let r = arith::compare(*cmp, ty, a, b);
                        out[l] = arith::combine(*comb, r, c) as u64;
                        out2[l] = arith::combine(*comb, !r, c) as u64;
                    }
                }
                self.write_all(w, &inst.d, exec, &out, ScalarType::Pred);
                self.write_all(w, &inst.d2, exec, &out2, ScalarType::Pred);
            }
            Op::Set { cmp, comb, dty } => {
                let half = arith::packed_half(ty);
                for l in Lanes(exec) {
                    let (a, b) = (self.val(w, &inst.s[0], l), self.val(w, &inst.s[1], l));
                    let c = inst.s.get(2).is_some_and(|o| self.val(w, o, l) != 0);
                    out[l] = match half {
                        // Packed: each 16-bit half of the result from its own comparison.
                        Some(h) => (0..2).fold(0, |acc, i| {
                            let (x, y) = (a >> (16 * i) & 0xffff, b >> (16 * i) & 0xffff);
                            let t = arith::combine(*comb, arith::compare(*cmp, h, x, y), c);
                            acc | (arith::set_result(*dty, t) & 0xffff) << (16 * i)
                        }),
                        None => arith::set_result(*dty, arith::combine(*comb, arith::compare(*cmp, ty, a, b), c)),
                    };
                }
                self.write_all(w, &inst.d, exec, &out, *dty);
            }
            Op::Selp => {
                let (a, b) = (self.vals(w, &inst.s[0], exec), self.vals(w, &inst.s[1], exec));
                let c = self.vals(w, &inst.s[2], exec);
                for l in Lanes(exec) {
                    out[l] = if c[l] != 0 { a[l] } else { b[l] };
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Slct { cty } => {
                for l in Lanes(exec) {
                    let c = self.val(w, &inst.s[2], l);
                    let ge = if *cty == ScalarType::F32 { f32::from_bits(c as u32) >= 0.0 } else { sext(c, 32) >= 0 };
                    out[l] = self.val(w, &inst.s[if ge { 0 } else { 1 }], l);
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Cvt { src, rnd, ftz, sat, relu } => {
                let int = crate::ptx::lower::is_int_cvt(ty, *src);
                let av = self.vals(w, &inst.s[0], exec);
                for l in Lanes(exec) {
                    let a = av[l];
                    out[l] = if int {
                        arith::cvt_int(ty, *src, *sat, a)
                    } else {
                        arith::cvt_fast(ty, *src, *rnd, *ftz, *sat, *relu, a)
                            .unwrap_or_else(|| numerics::cvt(ty, *src, *rnd, *ftz, *sat, *relu, a))
                    };
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::CvtPack { rnd, relu } => {
                for l in Lanes(exec) {
                    let a = f32::from_bits(self.val(w, &inst.s[0], l) as u32);
                    let b = f32::from_bits(self.val(w, &inst.s[1], l) as u32);
                    out[l] = numerics::cvt_pack_f32x2(ty, *rnd, *relu, a, b) as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Cvta { to_generic, space } => {
                let win = space.window();
                for l in Lanes(exec) {
                    let a = self.val(w, &inst.s[0], l);
                    out[l] = if *to_generic {
                        a.wrapping_add(win)
                    } else if win != 0 && a >= win && a < win + WINDOW_SIZE {
                        a - win
                    } else if win != 0 {
                        // Not an address of that space: a later access faults.
                        a | 0x8000_0000_0000_0000
                    } else {
                        a
                    };
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::Isspacep(space) => {
                for l in Lanes(exec) {
                    let a = self.val(w, &inst.s[0], l);
                    out[l] = (generic_space(a) == *space
                        || (*space == Space::Const && generic_space(a) == Space::Global))
                        as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ScalarType::Pred);
            }
            Op::Ld { space, vec, cluster } => self.load(w, pc, exec, inst, *space, *vec, *cluster)?,
            Op::St { space, vec, cluster } => self.store(w, pc, exec, inst, *space, *vec, *cluster)?,
            Op::Atom { space, op, ret } => self.atomic(w, pc, exec, inst, *space, *op, *ret)?,
            Op::Bra { target } => {
                let warp = &mut self.warps[w];
                for l in Lanes(group) {
                    warp.pc[l] = if exec & lane_bit(l) != 0 { *target } else { pc + 1 };
                }
                return Ok(());
            }
            Op::BrxIdx { targets } => {
                let mut next = [pc + 1; 32];
                for l in Lanes(exec) {
                    let index = self.val(w, &inst.s[0], l) as u32;
                    match targets.get(index as usize) {
                        Some(t) => next[l] = *t,
                        // The ISA leaves an out-of-range index undefined: stop loudly.
                        None => {
                            let detail = format!("brx.idx index {index} outside its {} targets", targets.len());
                            return Err(self.report(FindingKind::Trap, pc, self.tid_of(w, l), 0, detail));
                        }
                    }
                }
                let warp = &mut self.warps[w];
                for l in Lanes(group) {
                    warp.pc[l] = next[l];
                }
                return Ok(());
            }
            Op::Copy => {
                if let (Opd::Vec(dv), Opd::Vec(sv)) = (&inst.d, &inst.s[0]) {
                    for l in Lanes(exec) {
                        let vals: Vec<u64> = sv.iter().map(|o| self.val(w, o, l)).collect();
                        for (d, v) in dv.iter().zip(vals) {
                            self.set(w, d, l, v, ScalarType::B64);
                        }
                    }
                }
            }
            Op::AssertFail => {
                if let Some(l) = Lanes(exec).next() {
                    return Err(self.assert_fail(w, pc, exec, l, inst));
                }
            }
            Op::Printf => {
                for l in Lanes(exec) {
                    self.printf(w, pc, l, inst)?;
                }
            }
            Op::Exit => {
                self.advance(w, group & !exec);
                return self.exit_lanes(w, exec);
            }
            Op::Trap => {
                if let Some(l) = Lanes(exec).next() {
                    return Err(self.report(FindingKind::Trap, pc, self.tid_of(w, l), 0, "trap executed".into()));
                }
            }
            Op::Bar { kind } => {
                self.stats.barriers += 1;
                return self.barrier(w, pc, group, exec, inst, *kind);
            }
            Op::Activemask => {
                for l in Lanes(exec) {
                    out[l] = group as u64;
                }
                self.write_all(w, &inst.d, exec, &out, ty);
            }
            Op::CpAsync { bytes } => self.cp_async(w, pc, exec, inst, *bytes)?,
            Op::CpAsyncCommit => {
                for l in Lanes(exec) {
                    let tid = self.tid_of(w, l) as usize;
                    self.groups[tid] += 1;
                }
            }
            Op::CpAsyncWait { keep } => {
                for l in Lanes(exec) {
                    let tid = self.tid_of(w, l);
                    let open = self.groups[tid as usize];
                    let limit = if *keep == WAIT_ALL { u32::MAX } else { open.saturating_sub(*keep) };
                    self.land_copies(tid, limit)?;
                }
            }
            Op::Nop => {}
            Op::Async(op) => return self.async_op(w, pc, group, exec, inst, *op),
            Op::WarpSync
            | Op::Shfl(_)
            | Op::Vote(_)
            | Op::Match { .. }
            | Op::Redux(_)
            | Op::Mma { .. }
            | Op::Wmma(_)
            | Op::Ldmatrix { .. }
            | Op::Stmatrix { .. }
            | Op::Wgmma(_) => {
                unreachable!("collectives are dispatched above")
            }
        }
        self.advance(w, group);
        Ok(())
    }
}

/// Longest string `__assertfail` reads from a device pointer (a guard against
/// a pointer to bytes with no terminating NUL).
const MAX_ASSERT_STRING: u64 = 4096;

impl Cta<'_> {
    /// A device-side `assert` failed in the lanes `exec` (`first` among them):
    /// prints, for each lane, the line the CUDA runtime prints —
    /// `file:line: function: block: [x,y,z], thread: [x,y,z] Assertion `cond` failed.` —
    /// and stops the launch with an `Assert` finding (CUDA_ERROR_ASSERT).
    fn assert_fail(&mut self, w: usize, pc: u32, exec: u32, first: usize, inst: &Inst) -> Stop {
        let mut first_message = String::new();
        for l in Lanes(exec) {
            let tid = self.tid_of(w, l);
            let mut args = [0u64; 4];
            for (i, arg) in args.iter_mut().enumerate() {
                let len = if i == 2 { 4 } else { 8 };
                let addr = self.val(w, &inst.s[i], l);
                match self.read(pc, tid, Space::Local, addr, len) {
                    Ok(v) => *arg = v,
                    Err(stop) => return stop,
                }
            }
            let [message, file, line, function] = args;
            let [bx, by, bz] = self.ctaid;
            let [tx, ty, tz] = self.thread_xyz(tid);
            let text = format!(
                "{}:{line}: {}: block: [{bx},{by},{bz}], thread: [{tx},{ty},{tz}] Assertion `{}` failed.",
                self.c_string(file),
                self.c_string(function),
                self.c_string(message),
            );
            eprintln!("{text}");
            if l == first {
                first_message = text;
            }
        }
        self.report(FindingKind::Assert, pc, self.tid_of(w, first), 0, first_message)
    }

    /// Device `printf` in lane `l`: formats the string with the argument
    /// buffer (each argument at its own size's alignment, as nvcc packs
    /// them: 4-byte ints, 8-byte longs, doubles and pointers) and prints it
    /// on stdout; returns the number of bytes printed to the return variable.
    fn printf(&mut self, w: usize, pc: u32, l: usize, inst: &Inst) -> Result<(), Stop> {
        let tid = self.tid_of(w, l);
        let format_ptr = self.read(pc, tid, Space::Local, self.val(w, &inst.s[0], l), 8)?;
        let args_ptr = self.read(pc, tid, Space::Local, self.val(w, &inst.s[1], l), 8)?;
        let format = self.c_string(format_ptr);
        let mut offset = 0u64;
        let mut next_arg = |cta: &mut Self, size: u64| -> Result<u64, Stop> {
            offset = offset.next_multiple_of(size);
            let addr = args_ptr + offset;
            offset += size;
            match generic_space(addr) {
                Space::Local => cta.read(pc, tid, Space::Local, addr - Space::Local.window(), size as u32),
                _ => {
                    let mut bytes = [0u8; 8];
                    let _ = cta.l.mem.read(addr, &mut bytes[..size as usize]);
                    Ok(u64::from_le_bytes(bytes))
                }
            }
        };
        let mut text = String::new();
        let mut chars = format.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let mut spec = String::from("%");
            while let Some(&c) = chars.peek() {
                chars.next();
                spec.push(c);
                if c.is_ascii_alphabetic() && !matches!(c, 'l' | 'h' | 'z' | 'j' | 't') || c == '%' {
                    break;
                }
            }
            if spec.len() < 2 {
                text += &spec;
                continue;
            }
            let conversion = spec.chars().last().unwrap_or('%');
            let long = spec.contains('l') || spec.contains('z') || spec.contains('j');
            let size = if long { 8 } else { 4 };
            // Flags, width and precision: `%-08.3f`.
            let body: String = spec[1..spec.len() - 1].chars().filter(|c| !"lhzjt".contains(*c)).collect();
            let flags: String = body.chars().take_while(|c| "-+ 0#".contains(*c)).collect();
            let (width, precision) = match body[flags.len()..].split_once('.') {
                Some((w, p)) => (w.parse::<usize>().unwrap_or(0), Some(p.parse::<usize>().unwrap_or(0))),
                None => (body[flags.len()..].parse::<usize>().unwrap_or(0), None),
            };
            let field = match conversion {
                '%' => "%".to_string(),
                'd' | 'i' => {
                    let v = next_arg(self, size)?;
                    let v = if long { v as i64 } else { i64::from(v as u32 as i32) };
                    if flags.contains('+') && v >= 0 {
                        format!("+{v}")
                    } else {
                        v.to_string()
                    }
                }
                'u' => next_arg(self, size)?.to_string(),
                'x' => format!("{:x}", next_arg(self, size)?),
                'X' => format!("{:X}", next_arg(self, size)?),
                'c' => char::from(next_arg(self, 4)? as u8).to_string(),
                'p' => format!("{:#x}", next_arg(self, 8)?),
                's' => {
                    let p = next_arg(self, 8)?;
                    let text = self.c_string(p);
                    precision.map_or(text.clone(), |n| text.chars().take(n).collect())
                }
                'f' | 'F' | 'e' | 'E' | 'g' | 'G' => {
                    let v = f64::from_bits(next_arg(self, 8)?);
                    let digits = precision.unwrap_or(6);
                    match conversion {
                        'e' | 'E' => format!("{v:.digits$e}"),
                        'g' | 'G' => format!("{v}"),
                        _ => format!("{v:.digits$}"),
                    }
                }
                _ => spec.clone(),
            };
            let pad = width.saturating_sub(field.chars().count());
            if flags.contains('-') {
                text += &field;
                text += &" ".repeat(pad);
            } else if flags.contains('0') && conversion != 's' && conversion != 'c' {
                let (sign, digits) = field.split_at(usize::from(field.starts_with(['-', '+'])));
                text += sign;
                text += &"0".repeat(pad);
                text += digits;
            } else {
                text += &" ".repeat(pad);
                text += &field;
            }
        }
        print!("{text}");
        if !matches!(inst.d, Opd::Sink) {
            let ret = self.val(w, &inst.d, l);
            self.write(pc, tid, Space::Local, ret, 4, text.len() as u64)?;
        }
        Ok(())
    }

    /// The NUL-terminated string at a generic address in global memory
    /// (`<unreadable>` when it is not there).
    fn c_string(&self, addr: u64) -> String {
        let mut bytes = Vec::new();
        let mut byte = [0u8];
        while (bytes.len() as u64) < MAX_ASSERT_STRING {
            if generic_space(addr) != Space::Global || self.l.mem.read(addr + bytes.len() as u64, &mut byte).is_err() {
                return "<unreadable>".into();
            }
            if byte[0] == 0 {
                break;
            }
            bytes.push(byte[0]);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn wide_type(ty: ScalarType) -> ScalarType {
    match ty {
        ScalarType::S16 => ScalarType::S32,
        ScalarType::U16 => ScalarType::U32,
        ScalarType::S32 => ScalarType::S64,
        _ => ScalarType::U64,
    }
}

/// Which space a generic address points into.
pub(crate) fn generic_space(a: u64) -> Space {
    for s in [Space::Shared, Space::Local, Space::Param] {
        let win = s.window();
        if a >= win && a < win + WINDOW_SIZE {
            return s;
        }
    }
    Space::Global
}

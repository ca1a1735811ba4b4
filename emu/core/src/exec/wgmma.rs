//! Warpgroup MMA (`wgmma.*`, sm_90a): the rendezvous of a warpgroup's four
//! warps, the asynchronous groups, and the checks of the ISA's rules.
//!
//! - A warpgroup is warps 4g..4g+3 of the CTA. Every `wgmma` instruction is
//!   `.sync.aligned`: a warp waits (whole, converged) until the other three
//!   are at the same instruction, then the instruction runs once for the
//!   warpgroup and all four go on. For racecheck the meeting orders the four
//!   warps' accesses like a named barrier among them.
//! - `wgmma.mma_async` reads its shared-memory operands at issue, through the
//!   same path as `ld.shared` (memcheck, racecheck; initcheck as `ldmatrix`:
//!   unwritten bytes read as 0xff unless `ldmatrix_initcheck`), and computes
//!   D; D reaches the accumulator registers only at the `wgmma.wait_group`
//!   that covers its commit group. A later `mma_async` of the same
//!   warpgroup accumulating into registers still in flight takes the
//!   in-flight value (the ISA's ordering of same-accumulator chains).
//! - Findings: a register that is the accumulator or register A of an
//!   in-flight `mma_async`, read or written by any other instruction before
//!   the wait (`WgmmaRegisterInFlight`); a shared byte an in-flight
//!   `mma_async` reads written before the wait (`WgmmaOperandOverwritten`);
//!   an `mma_async` with no `wgmma.fence` before it in the warpgroup, or whose
//!   accumulator or A registers another instruction accessed since the last
//!   `wgmma.fence` (`WgmmaMissingFence`).

use std::collections::{HashMap, VecDeque};

use super::cta::{Cta, Lanes};
use super::Stop;
use crate::findings::FindingKind;
use crate::ptx::ir::{Inst, Op, Opd, Space};
use crate::tensor::{
    wgmma_accumulator_coord, wgmma_input_to_f64, wgmma_multiply, wgmma_register_a_coord, SmemDescriptor, WgmmaDesc,
    WgmmaOp,
};

/// Per CTA: the state of every warpgroup.
#[derive(Default)]
pub(crate) struct WgState {
    /// The kernel has `wgmma` instructions (else nothing here is kept up).
    enabled: bool,
    groups: Vec<WarpGroup>,
    /// Per shared byte: how many in-flight `mma_async` operand reads cover it.
    smem_reads: Vec<u16>,
    /// Per warp: a bit per register accessed by a non-wgmma instruction
    /// since the warp's last `wgmma.fence`.
    touched: Vec<Vec<u64>>,
    /// Per warp: whether it executed a `wgmma.fence` yet.
    fenced: Vec<bool>,
    /// Scratch for the registers of one instruction (no allocation per instruction).
    regs: Vec<u32>,
}

#[derive(Default)]
struct WarpGroup {
    /// Issued and not yet committed.
    open: Vec<InFlight>,
    /// Committed groups, oldest first.
    committed: VecDeque<Vec<InFlight>>,
    /// A bit per register that is the accumulator or A of an op in flight.
    busy: Vec<u64>,
}

struct InFlight {
    pc: u32,
    acc: Vec<u32>,
    a_regs: Vec<u32>,
    /// `values[warp_in_group * acc.len() + i][lane]`: D's bits for `acc[i]`.
    values: Vec<[u32; 32]>,
    /// Shared byte addresses of the 16-bit elements it read.
    smem: Vec<u32>,
}

fn bit(set: &[u64], r: u32) -> bool {
    set.get(r as usize / 64).is_some_and(|w| w >> (r % 64) & 1 != 0)
}

fn set_bit(set: &mut [u64], r: u32) {
    if let Some(w) = set.get_mut(r as usize / 64) {
        *w |= 1 << (r % 64);
    }
}

/// Every register an operand names (as a value, a vector element or an address base).
fn operand_regs(o: &Opd, out: &mut Vec<u32>) {
    match o {
        Opd::Reg(r) | Opd::NotPred(r) | Opd::Addr { base: Some(r), .. } => out.push(*r),
        Opd::Vec(v) => v.iter().for_each(|x| operand_regs(x, out)),
        _ => {}
    }
}

impl WgState {
    /// A new CTA of `nwarps` warps, `nregs` registers per thread and `shared` bytes.
    pub(crate) fn reset(&mut self, enabled: bool, nwarps: usize, nregs: usize, shared: usize) {
        self.enabled = enabled;
        if !enabled {
            return;
        }
        let words = nregs.div_ceil(64);
        self.groups.clear();
        self.groups.resize_with(nwarps.div_ceil(4), || WarpGroup { busy: vec![0; words], ..Default::default() });
        self.smem_reads.clear();
        self.smem_reads.resize(shared, 0);
        self.touched.clear();
        self.touched.resize(nwarps, vec![0; words]);
        self.fenced.clear();
        self.fenced.resize(nwarps, false);
    }

    #[inline]
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }
}

impl WarpGroup {
    fn ops(&self) -> impl Iterator<Item = &InFlight> {
        self.committed.iter().flatten().chain(self.open.iter())
    }

    fn recompute_busy(&mut self) {
        let mut busy = std::mem::take(&mut self.busy);
        busy.fill(0);
        for op in self.ops() {
            for r in op.acc.iter().chain(&op.a_regs) {
                set_bit(&mut busy, *r);
            }
        }
        self.busy = busy;
    }
}

impl Cta<'_> {
    /// Before a non-wgmma instruction of warp `w` runs (in kernels with
    /// wgmma): its registers must not be in flight, and they count as
    /// accessed for the fence rule.
    pub(super) fn wgmma_note_access(&mut self, w: usize, pc: u32, exec: u32, inst: &Inst) -> Result<(), Stop> {
        if exec == 0 {
            return Ok(());
        }
        let mut regs = std::mem::take(&mut self.wg.regs);
        regs.clear();
        operand_regs(&inst.d, &mut regs);
        operand_regs(&inst.d2, &mut regs);
        inst.s.iter().for_each(|o| operand_regs(o, &mut regs));
        if let Some((r, _)) = inst.guard {
            regs.push(r);
        }
        let g = w / 4;
        if let Some(group) = self.wg.groups.get(g) {
            if let Some(&r) = regs.iter().find(|&&r| bit(&group.busy, r)) {
                let op = group.ops().find(|op| op.acc.contains(&r) || op.a_regs.contains(&r));
                let (role, line) = op.map_or(("operand", 0), |op| {
                    (if op.acc.contains(&r) { "accumulator" } else { "register A" }, self.line_of(op.pc))
                });
                let tid = self.tid_of(w, Lanes(exec).next().unwrap_or(0));
                let detail = format!(
                    "this instruction accesses a register that is the {role} of the wgmma.mma_async at PTX line {line} \
                     (`{}`), still in flight: no wgmma.wait_group covering its group came between",
                    self.l.module.line_text(line).trim()
                );
                return Err(self.report(FindingKind::WgmmaRegisterInFlight, pc, tid, 0, detail));
            }
        }
        if let Some(t) = self.wg.touched.get_mut(w) {
            for &r in &regs {
                set_bit(t, r);
            }
        }
        self.wg.regs = regs;
        Ok(())
    }

    /// Checks a write of `len` shared bytes at `off` against the operands of
    /// in-flight `mma_async`s.
    pub(super) fn wgmma_guard_shared_write(&self, pc: u32, tid: u32, off: u64, len: u64) -> Result<(), Stop> {
        if !self.wg.enabled {
            return Ok(());
        }
        let Some(b) = (off..off + len).find(|&b| self.wg.smem_reads.get(b as usize).is_some_and(|&n| n > 0)) else {
            return Ok(());
        };
        let reader = self
            .wg
            .groups
            .iter()
            .flat_map(|g| g.ops())
            .find(|op| op.smem.iter().any(|&a| u64::from(a) == b || u64::from(a) + 1 == b));
        let line = reader.map_or(0, |op| self.line_of(op.pc));
        let detail = format!(
            "shared byte {b:#x} is an operand of the wgmma.mma_async at PTX line {line} (`{}`), still in flight: \
             written before the wgmma.wait_group covering it",
            self.l.module.line_text(line).trim()
        );
        Err(self.report(FindingKind::WgmmaOperandOverwritten, pc, tid, off, detail))
    }

    /// A `wgmma` instruction reached by `group` of warp `w`.
    pub(super) fn wgmma(&mut self, w: usize, pc: u32, group: u32, exec: u32, op: WgmmaOp) -> Result<(), Stop> {
        let exists = self.warps[w].exists;
        let first = self.tid_of(w, Lanes(group).next().unwrap_or(0));
        let divergent = |cta: &Self, detail: String| Err(cta.report(FindingKind::DivergentSync, pc, first, 0, detail));
        if group != exists {
            if self.warps[w].exited & exists != 0 {
                return divergent(self, "wgmma is .aligned: lanes of this warp have exited".into());
            }
            return self.wgmma_wait_here(w, pc, group);
        }
        if exec == 0 {
            // Guarded off in the whole warp: nothing to meet for.
            self.advance(w, group);
            return Ok(());
        }
        if exec != group {
            return divergent(self, format!("wgmma is .aligned: its guard is true for lanes {exec:#010x} only"));
        }
        let g = w / 4;
        let warps = 4 * g..4 * g + 4;
        if warps.end > self.warps.len() || self.warps[warps.clone()].iter().any(|v| v.exists != u32::MAX) {
            return divergent(
                self,
                format!("wgmma needs all 128 threads of warpgroup {g}; the CTA has {} threads", self.nthreads),
            );
        }
        let mut ready = true;
        for v in warps.clone().filter(|&v| v != w) {
            let warp = &self.warps[v];
            if warp.exited != 0 {
                return divergent(self, format!("wgmma is .aligned: warp {v} of warpgroup {g} has exited"));
            }
            ready &= warp.wait == warp.exists && Lanes(warp.exists).all(|l| warp.pc[l] == pc);
        }
        if !ready {
            return self.wgmma_wait_here(w, pc, group);
        }
        match op {
            WgmmaOp::Fence => {
                for v in warps.clone() {
                    self.wg.touched[v].fill(0);
                    self.wg.fenced[v] = true;
                }
            }
            WgmmaOp::Commit => {
                let wg = &mut self.wg.groups[g];
                let open = std::mem::take(&mut wg.open);
                wg.committed.push_back(open);
            }
            WgmmaOp::Wait(keep) => {
                while self.wg.groups[g].committed.len() > keep as usize {
                    let done = self.wg.groups[g].committed.pop_front().unwrap_or_default();
                    for op in done {
                        self.wgmma_retire(g, op);
                    }
                }
                self.wg.groups[g].recompute_busy();
            }
            WgmmaOp::Mma(desc) => {
                let k = self.k;
                self.wgmma_issue(g, pc, &k.insts[pc as usize], &desc)?
            }
        }
        // The four warps go on together; the three that waited count now.
        for v in warps.clone() {
            if v != w {
                self.stats.inst_warp[pc as usize] += 1;
                self.stats.thread_instructions += 32;
            }
            let warp = &mut self.warps[v];
            warp.wait = 0;
            warp.run = warp.exists;
            warp.pc = [pc + 1; 32];
            warp.wsync += 1;
        }
        if self.l.opts.racecheck {
            self.race.partial_barrier(&warps.collect::<Vec<_>>());
        }
        Ok(())
    }

    /// Why warp `w`, waiting at `pc`, can never go on, when it waits at a
    /// wgmma for the rest of its warpgroup.
    pub(super) fn wgmma_stall_detail(&self, w: usize, pc: u32) -> Option<String> {
        self.k.insts.get(pc as usize).and_then(|i| is_wgmma(&i.op))?;
        let g = w / 4;
        let elsewhere: Vec<String> = (4 * g..(4 * g + 4).min(self.warps.len()))
            .filter(|&v| v != w)
            .filter_map(|v| {
                let warp = &self.warps[v];
                let l = Lanes(warp.exists & !warp.exited).next()?;
                (warp.pc[l] != pc).then(|| format!("warp {v} at PTX line {}", self.line_of(warp.pc[l])))
            })
            .collect();
        Some(format!(
            "wgmma is .aligned over warpgroup {g}: warp {w} waits here for the others, which never arrive ({})",
            if elsewhere.is_empty() { "they exited".to_string() } else { elsewhere.join(", ") }
        ))
    }

    /// Warp `w`'s `group` waits at `pc` for the rest of its warpgroup; this attempt does not count.
    fn wgmma_wait_here(&mut self, w: usize, pc: u32, group: u32) -> Result<(), Stop> {
        self.stats.inst_warp[pc as usize] -= 1;
        self.stats.thread_instructions -= group.count_ones() as u64;
        let warp = &mut self.warps[w];
        warp.wait |= group;
        warp.run &= !group;
        Ok(())
    }

    /// D of a finished op reaches the registers of the warpgroup's four warps.
    fn wgmma_retire(&mut self, g: usize, op: InFlight) {
        let n = op.acc.len();
        for v in 0..4 {
            let regs = &mut self.warps[4 * g + v].regs;
            for (i, &r) in op.acc.iter().enumerate() {
                for (lane, &bits) in op.values[v * n + i].iter().enumerate() {
                    regs[r as usize * 32 + lane] = u64::from(bits);
                }
            }
        }
        for &a in &op.smem {
            for b in [a, a + 1] {
                if let Some(c) = self.wg.smem_reads.get_mut(b as usize) {
                    *c = c.saturating_sub(1);
                }
            }
        }
    }

    /// A 16-bit operand element from shared memory, through `ld.shared`'s
    /// checks (initcheck as for `ldmatrix` rows, see `exec`'s notes).
    fn wgmma_shared_element(&mut self, pc: u32, tid: u32, addr: u32) -> Result<u32, Stop> {
        let mut v = self.read_checked(pc, tid, Space::Shared, u64::from(addr), 2, false, true)? as u32;
        if self.l.opts.initcheck {
            let o = addr as usize;
            if let Some(written) = self.shared_init.get(o..o + 2) {
                if !(written[0] && written[1]) {
                    if self.l.opts.ldmatrix_initcheck {
                        return Err(self.report(
                            FindingKind::Uninitialized,
                            pc,
                            tid,
                            u64::from(addr),
                            format!("wgmma operand element at shared offset {addr:#x}: bytes never written"),
                        ));
                    }
                    for (i, w) in written.iter().enumerate() {
                        if !w {
                            v |= 0xff << (8 * i);
                        }
                    }
                }
            }
        }
        Ok(v)
    }

    fn wgmma_issue(&mut self, g: usize, pc: u32, inst: &Inst, desc: &WgmmaDesc) -> Result<(), Stop> {
        let w0 = 4 * g;
        let tid0 = self.tid_of(w0, 0);
        let mut acc = Vec::new();
        operand_regs(&inst.d, &mut acc);
        let mut a_regs = Vec::new();
        if desc.a_in_regs {
            operand_regs(&inst.s[0], &mut a_regs);
        }
        for v in w0..w0 + 4 {
            let detail = if !self.wg.fenced[v] {
                "no wgmma.fence before the warpgroup's first wgmma.mma_async".to_string()
            } else if let Some(r) = acc.iter().chain(&a_regs).find(|&&r| bit(&self.wg.touched[v], r)) {
                let role = if acc.contains(r) { "accumulator" } else { "register A" };
                format!("a register of its {role} was accessed by another instruction since the last wgmma.fence")
            } else {
                continue;
            };
            return Err(self.report(FindingKind::WgmmaMissingFence, pc, self.tid_of(v, 0), 0, detail));
        }
        let ty = desc.ab_ty;
        let n = desc.n as usize;
        let sign = |neg: bool| if neg { -1.0 } else { 1.0 };
        let mut smem = Vec::new();
        let mut a = [[0f64; 16]; 64];
        if desc.a_in_regs {
            for v in 0..4 {
                for lane in 0..32 {
                    for j in 0..8 {
                        let (row, k) = wgmma_register_a_coord(v, lane, j);
                        let reg = self.val(w0 + v, Self::elem(&inst.s[0], j / 2), lane) as u32;
                        a[row][k] = wgmma_input_to_f64(ty, reg >> (16 * (j % 2)));
                    }
                }
            }
        } else {
            let d = SmemDescriptor::decode(self.val(w0, &inst.s[0], 0));
            for (row, line) in a.iter_mut().enumerate() {
                for (k, x) in line.iter_mut().enumerate() {
                    let addr = d.element_address(row as u32, k as u32, desc.trans_a);
                    *x = wgmma_input_to_f64(ty, self.wgmma_shared_element(pc, tid0, addr)?);
                    smem.push(addr);
                }
            }
        }
        if desc.negate_a {
            a.iter_mut().flatten().for_each(|x| *x = -*x);
        }
        let bd = SmemDescriptor::decode(self.val(w0, &inst.s[1], 0));
        let mut b: [Vec<f64>; 16] = std::array::from_fn(|_| vec![0.0; n]);
        for (k, line) in b.iter_mut().enumerate() {
            for (col, x) in line.iter_mut().enumerate() {
                let addr = bd.element_address(col as u32, k as u32, desc.trans_b);
                *x = sign(desc.negate_b) * wgmma_input_to_f64(ty, self.wgmma_shared_element(pc, tid0, addr)?);
                smem.push(addr);
            }
        }
        let scale_d = self.val(w0, &inst.s[2], 0) != 0;
        let c = if scale_d {
            // The newest in-flight value of each accumulator register, else the register.
            let wg = &self.wg.groups[g];
            let mut latest: HashMap<u32, (&InFlight, usize)> = HashMap::new();
            for op in wg.ops() {
                for (i, r) in op.acc.iter().enumerate() {
                    latest.insert(*r, (op, i));
                }
            }
            let mut c = vec![vec![0u32; n]; 64];
            for v in 0..4 {
                for lane in 0..32 {
                    for (i, r) in acc.iter().enumerate() {
                        let (row, col) = wgmma_accumulator_coord(v, lane, i);
                        c[row][col] = match latest.get(r) {
                            Some((op, j)) => op.values[v * op.acc.len() + j][lane],
                            None => self.reg(w0 + v, *r, lane) as u32,
                        };
                    }
                }
            }
            Some(c)
        } else {
            None
        };
        let d = wgmma_multiply(ty, n, &a, &b, c.as_deref());
        let mut values = vec![[0u32; 32]; 4 * acc.len()];
        for (slot, lanes) in values.iter_mut().enumerate() {
            let (v, i) = (slot / acc.len(), slot % acc.len());
            for (lane, x) in lanes.iter_mut().enumerate() {
                let (row, col) = wgmma_accumulator_coord(v, lane, i);
                *x = d[row][col];
            }
        }
        for &addr in &smem {
            for b in [addr, addr + 1] {
                if let Some(c) = self.wg.smem_reads.get_mut(b as usize) {
                    *c = c.saturating_add(1);
                }
            }
        }
        let wg = &mut self.wg.groups[g];
        for r in acc.iter().chain(&a_regs) {
            set_bit(&mut wg.busy, *r);
        }
        wg.open.push(InFlight { pc, acc, a_regs, values, smem });
        Ok(())
    }
}

/// Whether `op` is a wgmma instruction (dispatched before other instructions).
pub(super) fn is_wgmma(op: &Op) -> Option<WgmmaOp> {
    match op {
        Op::Wgmma(w) => Some(*w),
        _ => None,
    }
}

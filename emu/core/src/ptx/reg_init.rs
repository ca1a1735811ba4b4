//! Which registers a CTA must clear before it starts.
//!
//! A register nothing has written reads as 0. Each host thread reuses one
//! register file for the CTAs it runs, and nvcc's PTX declares thousands of
//! registers (one per value), so clearing the whole file costs megabytes of
//! stores per CTA. Most registers are written by every thread before it reads
//! them; only the others need clearing to keep that meaning exactly:
//!
//! - a register some thread may read before writing it: found by a forward
//!   "written on every path" analysis over the control-flow graph, per thread
//!   (a thread executes an instruction in full for itself, whatever its warp
//!   does), in which a write counts only where it is certain — an unguarded
//!   instruction of the kinds listed in `writes_destination`, which write
//!   their destination in every lane that executes them — and every other
//!   register an instruction names counts as read;
//! - every register a warp collective names (it may read other lanes'
//!   registers, which those lanes never wrote), and the carry flag.
//!
//! Kernels with warpgroup MMAs (which write registers asynchronously) clear
//! the whole file.

use super::ir::{Inst, Op, Opd};

/// The registers to clear before each CTA, or `None` for all of them.
pub(crate) fn registers_to_clear(insts: &[Inst], nregs: u32, carry_reg: u32) -> Option<Vec<u32>> {
    if insts.iter().any(|i| matches!(i.op, Op::Wgmma(_))) {
        return None;
    }
    let n = insts.len();
    let words = (nregs as usize).div_ceil(64);
    // Basic blocks: leaders at 0, at branch targets and after control transfers.
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    for (pc, inst) in insts.iter().enumerate() {
        match &inst.op {
            Op::Bra { target } => {
                leader[(*target as usize).min(n)] = true;
                leader[pc + 1] = true;
            }
            Op::BrxIdx { targets } => {
                for t in targets {
                    leader[(*t as usize).min(n)] = true;
                }
                leader[pc + 1] = true;
            }
            Op::Exit => leader[pc + 1] = true,
            _ => {}
        }
    }
    let starts: Vec<usize> = (0..n).filter(|&pc| leader[pc]).collect();
    let mut block_of = vec![usize::MAX; n + 1];
    for (b, &s) in starts.iter().enumerate() {
        let end = starts.get(b + 1).copied().unwrap_or(n);
        block_of[s..end].fill(b);
    }
    let nb = starts.len();
    let end_of = |b: usize| starts.get(b + 1).copied().unwrap_or(n);
    // Successors of each block (falling off the end of the kernel exits).
    let succs: Vec<Vec<usize>> = (0..nb)
        .map(|b| {
            let last = end_of(b) - 1;
            let inst = &insts[last];
            let mut s = Vec::new();
            let unconditional = inst.guard.is_none();
            match &inst.op {
                Op::Bra { target } => {
                    s.push(*target as usize);
                    if !unconditional {
                        s.push(last + 1);
                    }
                }
                Op::BrxIdx { targets } => {
                    s.extend(targets.iter().map(|&t| t as usize));
                    s.push(last + 1);
                }
                Op::Exit if unconditional => {}
                _ => s.push(last + 1),
            }
            s.into_iter().filter(|&pc| pc < n).map(|pc| block_of[pc]).collect()
        })
        .collect();
    let mut preds: Vec<Vec<usize>> = vec![Vec::new(); nb];
    for (b, s) in succs.iter().enumerate() {
        for &t in s {
            preds[t].push(b);
        }
    }
    // Written-on-every-path sets at block entries; unvisited blocks start
    // at "everything" (the analysis's top), the entry block at nothing.
    let mut entry_sets = vec![vec![u64::MAX; words]; nb];
    let mut exit_sets = vec![vec![u64::MAX; words]; nb];
    let mut queued = vec![true; nb];
    let mut work: std::collections::VecDeque<usize> = (0..nb).collect();
    while let Some(b) = work.pop_front() {
        queued[b] = false;
        let mut set = if b == 0 { vec![0u64; words] } else { vec![u64::MAX; words] };
        for &p in &preds[b] {
            for (s, e) in set.iter_mut().zip(&exit_sets[p]) {
                *s &= e;
            }
        }
        entry_sets[b] = set.clone();
        for inst in &insts[starts[b]..end_of(b)] {
            for_each_written(inst, |r| set[r as usize / 64] |= 1 << (r % 64));
        }
        if set != exit_sets[b] {
            exit_sets[b] = set;
            for &t in &succs[b] {
                if !queued[t] {
                    queued[t] = true;
                    work.push_back(t);
                }
            }
        }
    }
    let mut clear = vec![false; nregs as usize];
    if let Some(c) = clear.get_mut(carry_reg as usize) {
        *c = true;
    }
    for b in 0..nb {
        let mut set = entry_sets[b].clone();
        for inst in &insts[starts[b]..end_of(b)] {
            let collective = inst.is_collective() || matches!(inst.op, Op::Wgmma(_));
            for_each_read(inst, |r| {
                let written = set.get(r as usize / 64).is_some_and(|w| w >> (r % 64) & 1 == 1);
                if collective || !written {
                    if let Some(c) = clear.get_mut(r as usize) {
                        *c = true;
                    }
                }
            });
            for_each_written(inst, |r| set[r as usize / 64] |= 1 << (r % 64));
        }
    }
    Some((0..nregs).filter(|&r| clear[r as usize]).collect())
}

/// Whether the instruction writes its destinations (`d`, `d2`) in every lane
/// that executes it (the executor's arms for these end in such writes).
fn writes_destination(op: &Op) -> bool {
    matches!(
        op,
        Op::Mov
            | Op::Ld { .. }
            | Op::Cvta { .. }
            | Op::Isspacep(_)
            | Op::Int(_)
            | Op::Setp { .. }
            | Op::Set { .. }
            | Op::Selp
            | Op::Slct { .. }
            | Op::Float { .. }
            | Op::Half { .. }
            | Op::Special { .. }
            | Op::Testp(_)
            | Op::Cvt { .. }
            | Op::CvtPack { .. }
            | Op::Activemask
    )
}

fn regs_of(o: &Opd, f: &mut impl FnMut(u32)) {
    match o {
        Opd::Reg(r) | Opd::NotPred(r) | Opd::Addr { base: Some(r), .. } => f(*r),
        Opd::Vec(v) => v.iter().for_each(|o| regs_of(o, f)),
        Opd::Addr { base: None, .. } | Opd::Imm(_) | Opd::Sreg(_) | Opd::Sink => {}
    }
}

/// The registers an instruction certainly writes for each thread that executes it.
fn for_each_written(inst: &Inst, mut f: impl FnMut(u32)) {
    if inst.guard.is_some() || !writes_destination(&inst.op) {
        return;
    }
    for d in [&inst.d, &inst.d2] {
        match d {
            Opd::Reg(r) => f(*r),
            Opd::Vec(v) => v.iter().for_each(|o| {
                if let Opd::Reg(r) = o {
                    f(*r)
                }
            }),
            _ => {}
        }
    }
}

/// Every register an instruction may read (all it names but the certain writes).
fn for_each_read(inst: &Inst, mut f: impl FnMut(u32)) {
    if let Some((r, _)) = inst.guard {
        f(r);
    }
    inst.s.iter().for_each(|o| regs_of(o, &mut f));
    if inst.guard.is_some() || !writes_destination(&inst.op) {
        regs_of(&inst.d, &mut f);
        regs_of(&inst.d2, &mut f);
    } else {
        // Addresses inside a destination vector are reads too (none today).
        for d in [&inst.d, &inst.d2] {
            if let Opd::Vec(v) = d {
                v.iter().filter(|o| !matches!(o, Opd::Reg(_))).for_each(|o| regs_of(o, &mut f));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::launch::{launch, CheckOptions, LaunchConfig};
    use crate::memory::GlobalMemory;
    use crate::module::Module;

    /// `%pN` is register N, `%rN` 3 + N, `%rdN` 12 + N (declaration order).
    const PTX: &str = ".version 9.0\n.target sm_80\n.address_size 64\n\
        .visible .entry k(.param .u64 p)\n{\n.reg .pred %p<3>;\n.reg .b32 %r<9>;\n.reg .b64 %rd<9>;\n\
        ld.param.u64 %rd1, [p];\n\
        mov.u32 %r1, %tid.x;\n\
        setp.eq.s32 %p1, %r1, 0;\n\
        @%p1 bra $SKIP;\n\
        mov.u32 %r2, 7;\n\
        $SKIP:\n\
        add.s32 %r3, %r2, %r1;\n\
        @%p1 mov.u32 %r4, 1;\n\
        add.s32 %r5, %r4, %r3;\n\
        $LOOP:\n\
        add.s32 %r6, %r6, 1;\n\
        setp.lt.s32 %p2, %r6, 4;\n\
        @%p2 bra $LOOP;\n\
        add.s32 %r5, %r5, %r6;\n\
        mov.u32 %r8, 3;\n\
        shfl.sync.idx.b32 %r7, %r8, 0, 31, -1;\n\
        add.s32 %r5, %r5, %r7;\n\
        mov.u32 %r2, %ctaid.x;\n\
        mad.lo.s32 %r2, %r2, 32, %r1;\n\
        mul.wide.u32 %rd2, %r2, 4;\n\
        add.s64 %rd3, %rd1, %rd2;\n\
        st.global.u32 [%rd3], %r5;\n\
        ret;\n}\n";

    #[test]
    fn only_registers_read_before_every_write_or_by_collectives_are_cleared() {
        let mem = GlobalMemory::new(1 << 20);
        let m = Module::load(PTX, &mem).unwrap();
        let k = &m.kernels[0];
        let r = |n: u32| 3 + n;
        let carry = k.carry_reg;
        // %r2 is unwritten on the path that skips its `mov`; %r4's write is
        // guarded; %r6 is read before its first write; %r7 and %r8 are named
        // by a collective (and %r7 is its destination, not a certain write).
        assert_eq!(k.clear_regs, Some(vec![r(2), r(4), r(6), r(7), r(8), carry]));
    }

    /// Many CTAs on one host thread (each reusing the previous one's register
    /// file) compute what the first does: registers read before any write
    /// still read 0.
    #[test]
    fn a_reused_register_file_reads_as_a_fresh_one() {
        let mem = GlobalMemory::new(1 << 20);
        let m = Module::load(PTX, &mem).unwrap();
        let ctas = 8;
        let out = mem.alloc(ctas * 32 * 4).unwrap();
        let config = LaunchConfig { grid: [ctas as u32, 1, 1], block: [32, 1, 1], dynamic_shared_bytes: 0 };
        let opts = CheckOptions { threads: 1, ..CheckOptions::default() };
        let report = launch(&m, "k", &config, &out.to_le_bytes(), &mem, &opts).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        let mut bytes = vec![0u8; ctas as usize * 32 * 4];
        mem.read(out, &mut bytes).unwrap();
        let got: Vec<i32> = bytes.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
        // Lane 0: %r2 = 0 (skipped), %r3 = 0, %r4 = 1, %r5 = 1; others: %r2 = 7,
        // %r3 = 7 + t, %r4 = 0, %r5 = 7 + t. Then + %r6 (4) + %r7 (3).
        let want: Vec<i32> =
            (0..ctas).flat_map(|_| (0..32).map(|t| if t == 0 { 1 + 4 + 3 } else { 7 + t + 4 + 3 })).collect();
        assert_eq!(got, want);
    }
}

//! `wmma.load`, `wmma.store` and `wmma.mma` (warp collectives, `.aligned`):
//! each lane reads or writes the matrix elements its fragment slots hold
//! (`tensor::wmma` says which), through the checked accesses of `ld`/`st`
//! (memcheck, racecheck, initcheck per element); the product is whole-matrix.
//! Their memory traffic is not counted in sectors or wavefronts.

use super::cta::{Cta, Lanes};
use super::Stop;
use crate::ptx::ir::{Inst, Opd, WmmaInst};
use crate::tensor::{self, WmmaFragment, WmmaMatrix, WmmaShape, WMMA_MAX_REGS};
use crate::types::ScalarType;

impl Cta<'_> {
    pub(super) fn wmma(&mut self, w: usize, pc: u32, inst: &Inst, op: WmmaInst) -> Result<(), Stop> {
        match op {
            WmmaInst::Load { which, shape, row, space, ty, regs } => {
                for l in Lanes(self.warps[w].exists) {
                    let tid = self.tid_of(w, l);
                    let mut lane_regs = [0u32; WMMA_MAX_REGS];
                    for slot in 0..tensor::wmma_slots(ty, regs as usize) {
                        let (sp, addr) = self.wmma_address(w, l, inst, shape, which, row, space, ty, regs, slot);
                        let size = elem_bytes(ty);
                        self.misaligned_at(pc, tid, sp, addr, size)?;
                        let bits = self.read_checked(pc, tid, sp, addr, size, true, true)? as u32;
                        tensor::wmma_set(&mut lane_regs, ty, slot, bits);
                    }
                    for (i, v) in lane_regs.iter().enumerate().take(regs as usize) {
                        let dst = Self::elem(&inst.d, i).clone();
                        self.set(w, &dst, l, u64::from(*v), ScalarType::B32);
                    }
                }
            }
            WmmaInst::Store { shape, row, space, ty, regs } => {
                let frag = self.wmma_gather(w, &inst.s[2], regs as usize);
                for l in Lanes(self.warps[w].exists) {
                    let tid = self.tid_of(w, l);
                    for slot in 0..tensor::wmma_slots(ty, regs as usize) {
                        let which = WmmaMatrix::C;
                        let (sp, addr) = self.wmma_address(w, l, inst, shape, which, row, space, ty, regs, slot);
                        let size = elem_bytes(ty);
                        self.misaligned_at(pc, tid, sp, addr, size)?;
                        let bits = tensor::wmma_get(&frag[l], ty, slot);
                        self.write(pc, tid, sp, addr, size, u64::from(bits))?;
                    }
                }
            }
            WmmaInst::Mma { shape, ab, c_ty, d_ty } => {
                let regs = |which, ty| tensor::wmma_fragment_regs(shape, which, ty).unwrap_or(0);
                let a = self.wmma_gather(w, &inst.s[0], regs(WmmaMatrix::A, ab));
                let b = self.wmma_gather(w, &inst.s[1], regs(WmmaMatrix::B, ab));
                let c = self.wmma_gather(w, &inst.s[2], regs(WmmaMatrix::C, c_ty));
                // The decoder accepted only supported combinations.
                let d = tensor::wmma_mma(shape, ab, c_ty, d_ty, &a, &b, &c).unwrap_or([[0; WMMA_MAX_REGS]; 32]);
                let nd = regs(WmmaMatrix::C, d_ty);
                for l in Lanes(self.warps[w].exists) {
                    for (i, v) in d[l].iter().enumerate().take(nd) {
                        let dst = Self::elem(&inst.d, i).clone();
                        self.set(w, &dst, l, u64::from(*v), ScalarType::B32);
                    }
                }
            }
        }
        Ok(())
    }

    /// Each lane's first `n` registers of the fragment operand `o`.
    fn wmma_gather(&self, w: usize, o: &Opd, n: usize) -> WmmaFragment {
        let mut f = [[0u32; WMMA_MAX_REGS]; 32];
        for (l, lane) in f.iter_mut().enumerate() {
            for (i, r) in lane.iter_mut().enumerate().take(n) {
                *r = self.val(w, Self::elem(o, i), l) as u32;
            }
        }
        f
    }

    /// Where lane `l`'s fragment slot `slot` lives: the lane's base address
    /// plus the element's offset, `row * stride + col` (row-major) or
    /// `col * stride + row`, `stride` in elements (when absent, the matrix's
    /// width in that layout).
    #[allow(clippy::too_many_arguments)]
    fn wmma_address(
        &self,
        w: usize,
        l: usize,
        inst: &Inst,
        shape: WmmaShape,
        which: WmmaMatrix,
        row_major: bool,
        space: crate::ptx::ir::Space,
        ty: ScalarType,
        regs: u8,
        slot: usize,
    ) -> (crate::ptx::ir::Space, u64) {
        let (rows, cols) = shape.dims(which);
        let stride = match inst.s[1] {
            Opd::Sink => u64::from(if row_major { cols } else { rows }),
            ref o => self.val(w, o, l) & 0xffff_ffff,
        };
        let (r, c) = tensor::wmma_element(shape, which, ty, regs as usize, l, slot);
        let (r, c) = (u64::from(r), u64::from(c));
        let offset = if row_major { r * stride + c } else { c * stride + r };
        let base = self.val(w, &inst.s[0], l);
        super::memops::resolve(space, base.wrapping_add(offset * u64::from(elem_bytes(ty))))
    }
}

fn elem_bytes(ty: ScalarType) -> u32 {
    if ty == ScalarType::F32 {
        4
    } else {
        2
    }
}

//! Lowering of `wgmma.fence`, `wgmma.commit_group`, `wgmma.wait_group` and
//! `wgmma.mma_async` (m64nNk16, f32 accumulators, f16/bf16 inputs, A from a
//! shared-memory descriptor or from registers).

use super::{Decoded, Mods, OpdCx};
use crate::ptx::ir::{Class, Op, Opd, Space};
use crate::ptx::parser::Operand;
use crate::tensor::{wgmma_valid_n, WgmmaDesc, WgmmaOp};
use crate::types::ScalarType as T;

pub(super) fn decode(m: &mut Mods, all: &[&Operand], ctx: &super::Ctx) -> Result<Decoded, String> {
    if !(m.has("sync") && m.has("aligned")) {
        return Err("wgmma needs .sync.aligned".into());
    }
    let plain = |op: WgmmaOp| Ok((Op::Wgmma(op), T::B32, Opd::Sink, Opd::Sink, vec![], Class::Sync));
    if m.has("fence") {
        return if all.is_empty() { plain(WgmmaOp::Fence) } else { Err("wgmma.fence takes no operands".into()) };
    }
    if m.has("commit_group") {
        return if all.is_empty() {
            plain(WgmmaOp::Commit)
        } else {
            Err("wgmma.commit_group takes no operands".into())
        };
    }
    if m.has("wait_group") {
        return match all {
            [Operand::Int(n)] => plain(WgmmaOp::Wait(*n as u32)),
            _ => Err("wgmma.wait_group needs one immediate".into()),
        };
    }
    if !m.has("mma_async") {
        return Err("only fence, commit_group, wait_group and mma_async are supported".into());
    }
    let shape = m.parts.first().copied().ok_or("missing shape")?;
    let n: u32 = shape
        .strip_prefix("m64n")
        .and_then(|r| r.strip_suffix("k16"))
        .and_then(|n| n.parse().ok())
        .filter(|n| wgmma_valid_n(*n))
        .ok_or_else(|| format!("shape `{shape}`: only m64nNk16 with N = 8, 16, ..., 256 is supported"))?;
    m.parts.remove(0);
    let ab_ty = match m.types().as_slice() {
        [T::F32, a, b] if a == b && matches!(a, T::F16 | T::Bf16) => *a,
        _ => return Err("only .f32 accumulators with .f16.f16 or .bf16.bf16 inputs are supported".into()),
    };
    let c = OpdCx { ctx, space: Space::Generic, ty: T::B32 };
    let d = c.dst(all.first().ok_or("missing operands")?)?;
    let a_in_regs = matches!(all.get(1), Some(Operand::Vec(_)));
    // d, a, b-desc, scale-d, imm-scale-a, imm-scale-b, [imm-trans-a,] imm-trans-b
    let want = if a_in_regs { 7 } else { 8 };
    if all.len() != want {
        return Err(format!("expected {want} operands, found {}", all.len()));
    }
    let imm = |i: usize, allowed: &[i64]| -> Result<i64, String> {
        match all[i] {
            Operand::Int(v) if allowed.contains(&(*v as i64)) => Ok(*v as i64),
            _ => Err(format!("operand {} must be an immediate in {allowed:?}", i + 1)),
        }
    };
    let negate_a = imm(4, &[1, -1])? == -1;
    let negate_b = imm(5, &[1, -1])? == -1;
    let (trans_a, trans_b) =
        if a_in_regs { (false, imm(6, &[0, 1])? == 1) } else { (imm(6, &[0, 1])? == 1, imm(7, &[0, 1])? == 1) };
    let desc = WgmmaDesc { n, ab_ty, a_in_regs, negate_a, negate_b, trans_a, trans_b };
    let count = |o: &Opd| if let Opd::Vec(v) = o { v.len() } else { 1 };
    if count(&d) != desc.d_regs() {
        return Err(format!("m64n{n}k16 with .f32 accumulators needs {} destination registers", desc.d_regs()));
    }
    let a = OpdCx { ctx, space: Space::Generic, ty: if a_in_regs { T::B32 } else { T::B64 } }.src(all[1])?;
    if a_in_regs && count(&a) != 4 {
        return Err("a register A needs 4 registers".into());
    }
    let b = OpdCx { ctx, space: Space::Generic, ty: T::B64 }.src(all[2])?;
    let scale_d = OpdCx { ctx, space: Space::Generic, ty: T::Pred }.src(all[3])?;
    Ok((Op::Wgmma(WgmmaOp::Mma(desc)), T::F32, d, Opd::Sink, vec![a, b, scale_d], Class::Tensor))
}

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

#[cfg(test)]
mod tests {
    use crate::memory::GlobalMemory;
    use crate::module::Module;

    fn load(body: &str) -> Result<Module, crate::module::LoadError> {
        let head = ".version 8.0\n.target sm_90a\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n\
                    .reg .pred %p<3>;\n.reg .b32 %r<9>;\n.reg .f32 %f<140>;\n.reg .b64 %rd<9>;\n";
        Module::load(&format!("{head}{body}\nret;\n}}\n"), &GlobalMemory::new(1 << 20))
    }

    fn d(n: usize) -> String {
        (0..n).map(|i| format!("%f{i}")).collect::<Vec<_>>().join(", ")
    }

    #[test]
    fn the_forms_load() {
        let ok = [
            "wgmma.fence.sync.aligned;".to_string(),
            "wgmma.commit_group.sync.aligned;".to_string(),
            "wgmma.wait_group.sync.aligned 1;".to_string(),
            format!("wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {{{}}}, %rd1, %rd2, %p1, 1, 1, 0, 0;", d(4)),
            format!("wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16 {{{}}}, %rd1, %rd2, 1, -1, 1, 1, 1;", d(128)),
            format!(
                "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{{}}}, {{%r1, %r2, %r3, %r4}}, %rd2, %p1, 1, -1, 1;",
                d(32)
            ),
        ];
        for body in ok {
            if let Err(e) = load(&body) {
                panic!("{body}: {e}");
            }
        }
    }

    #[test]
    fn unsupported_forms_are_load_errors() {
        let bad = [
            (
                format!(
                    "wgmma.mma_async.sync.aligned.m64n12k16.f32.bf16.bf16 {{{}}}, %rd1, %rd2, %p1, 1, 1, 0, 0;",
                    d(6)
                ),
                "m64n12k16",
            ),
            (
                format!("wgmma.mma_async.sync.aligned.m64n8k16.f16.f16.f16 {{{}}}, %rd1, %rd2, %p1, 1, 1, 0, 0;", d(2)),
                ".f32 accumulators",
            ),
            (
                format!(
                    "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {{{}}}, %rd1, %rd2, %p1, 1, 1, 0, 0;",
                    d(3)
                ),
                "4 destination",
            ),
            (
                format!(
                    "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {{{}}}, %rd1, %rd2, %p1, 2, 1, 0, 0;",
                    d(4)
                ),
                "operand 5",
            ),
            (
                format!("wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {{{}}}, %rd1, %rd2, %p1, 1, 1, 0;", d(4)),
                "expected 8",
            ),
            ("wgmma.wait_group.sync.aligned %r1;".to_string(), "immediate"),
            ("wgmma.fence.aligned;".to_string(), ".sync.aligned"),
        ];
        for (body, needle) in bad {
            match load(&body) {
                Ok(_) => panic!("{body}: loaded"),
                Err(e) => assert!(e.to_string().contains(needle), "{body}: {e}"),
            }
        }
    }
}

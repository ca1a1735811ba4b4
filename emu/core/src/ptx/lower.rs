//! Syntax tree → executable kernels (`ir`). Every opcode and modifier is
//! decoded here once; anything not understood is a `LoadError` naming the
//! instruction and its line, so nothing unknown ever runs as a no-op.

use std::collections::HashMap;

use super::ir::*;
use super::parser::{Func, Instr, Operand, Stmt, VarDecl, VarSpace};
use crate::numerics::{self, FloatOp, Rounding, SpecialOp};
use crate::ptx::info::{KernelInfo, LoadError, ParamInfo};
use crate::tensor::{self, wmma_fragment_regs, MmaDesc, WmmaMatrix, WmmaShape};
use crate::types::ScalarType;

mod wgmma;

/// Where a named variable lives: its space and its address in that space.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sym {
    pub space: Space,
    pub addr: u64,
}

/// Module-scope facts every kernel's lowering needs.
pub(crate) struct ModuleScope<'a> {
    /// `.global`/`.const` variables at their device addresses.
    pub globals: &'a HashMap<String, Sym>,
    /// Module-scope `.shared`/`.local` declarations, laid out per kernel.
    pub vars: &'a [VarDecl],
    /// Every function, for inlining calls.
    pub funcs: &'a [Func],
}

/// Far above what nvcc declares; bounds the per-warp register file.
const MAX_REGISTERS: u64 = 1 << 16;
/// The hardware's per-thread local memory limit.
const MAX_LOCAL_BYTES: u64 = 512 * 1024;

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a.max(1)) * a.max(1)
}

fn err(line: u32, m: impl Into<String>) -> LoadError {
    LoadError { line, message: m.into() }
}

struct Ctx<'a> {
    scopes: Vec<HashMap<String, u32>>,
    nregs: u32,
    syms: HashMap<String, Sym>,
    globals: &'a HashMap<String, Sym>,
}

impl Ctx<'_> {
    fn reg(&self, name: &str) -> Option<u32> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }
    fn sym(&self, name: &str) -> Option<Sym> {
        self.syms.get(name).or_else(|| self.globals.get(name)).copied()
    }
    /// Declares `name` in the innermost scope (shadowing outer ones); a
    /// `.b128` register takes two consecutive 64-bit slots (low half first).
    fn new_reg(&mut self, name: String, ty: ScalarType) {
        let idx = self.nregs;
        self.nregs += if ty == ScalarType::B128 { 2 } else { 1 };
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name, idx);
        }
    }
}

/// Lowers the entry `f` of module `m`.
pub(crate) fn lower_kernel(f: &Func, m: &ModuleScope) -> Result<Kernel, LoadError> {
    let body = f.body.as_ref().ok_or_else(|| err(f.line, format!("entry `{}` has no body", f.name)))?;
    let mut ctx = Ctx { scopes: vec![HashMap::new()], nregs: 0, syms: HashMap::new(), globals: m.globals };

    // Parameters, packed in order at their alignment.
    let mut params = Vec::new();
    let mut off = 0u64;
    for p in &f.params {
        let align = p.align.max(1) as u64;
        off = align_up(off, align);
        let size = p.size_bytes();
        ctx.syms.insert(p.name.clone(), Sym { space: Space::Param, addr: off });
        params.push(ParamInfo { name: p.name.clone(), offset: off as u32, size: size as u32, align: align as u32 });
        off += size;
    }
    let param_bytes = off as u32;

    // Shared and local layout: module-scope variables first, then the kernel's.
    let mut shared_end = 0u64;
    let mut local_end = 0u64;
    let mut extern_shared: Vec<(String, u32)> = Vec::new();
    let mut place = |v: &VarDecl, syms: &mut HashMap<String, Sym>| -> Result<(), LoadError> {
        match v.space {
            VarSpace::Shared if v.is_extern || v.count.is_none() => extern_shared.push((v.name.clone(), v.align)),
            VarSpace::Shared => {
                if !v.init.is_empty() {
                    return Err(err(v.line, format!("shared variable `{}` cannot have an initialiser", v.name)));
                }
                shared_end = align_up(shared_end, v.align as u64);
                syms.insert(v.name.clone(), Sym { space: Space::Shared, addr: shared_end });
                shared_end += v.size_bytes();
            }
            VarSpace::Local => {
                local_end = align_up(local_end, v.align as u64);
                syms.insert(v.name.clone(), Sym { space: Space::Local, addr: local_end });
                local_end += v.size_bytes();
            }
            VarSpace::Global | VarSpace::Const => {
                return Err(err(
                    v.line,
                    format!("function-scope `{}` in the global/const space is not supported", v.name),
                ))
            }
            // Call arguments: laid out while emitting (see `Emitter`).
            VarSpace::Param => {}
        }
        Ok(())
    };
    for v in m.vars.iter().filter(|v| matches!(v.space, VarSpace::Shared | VarSpace::Local)) {
        place(v, &mut ctx.syms)?;
    }
    for s in body {
        if let Stmt::Var(v) = s {
            place(v, &mut ctx.syms)?;
        }
    }
    let dyn_align = extern_shared.iter().map(|(_, a)| *a as u64).max().unwrap_or(16).max(16);
    let dynamic_shared_offset = align_up(shared_end, dyn_align);
    for (name, _) in &extern_shared {
        ctx.syms.insert(name.clone(), Sym { space: Space::Shared, addr: dynamic_shared_offset });
    }

    let mut em = Emitter {
        insts: Vec::new(),
        carry_reg: None,
        labels: HashMap::new(),
        fixups: Vec::new(),
        target_lists: HashMap::new(),
        brx_fixups: Vec::new(),
        local_end,
        instances: 0,
        funcs: m.funcs,
        calls: Vec::new(),
    };
    em.emit_body(body, &mut ctx, 0, None)?;
    em.resolve_labels()?;
    let Emitter { insts, carry_reg, local_end, .. } = em;
    if local_end > MAX_LOCAL_BYTES {
        return Err(err(
            f.line,
            format!("`{}` needs {local_end} bytes of local memory per thread (at most {MAX_LOCAL_BYTES})", f.name),
        ));
    }
    if shared_end > u32::MAX as u64 / 2 {
        return Err(err(f.line, format!("`{}` declares {shared_end} bytes of shared memory", f.name)));
    }
    let carry_reg = carry_reg.unwrap_or(ctx.nregs);
    let nregs = ctx.nregs + 1;
    let info = KernelInfo {
        name: f.name.clone(),
        params,
        param_bytes,
        static_shared_bytes: shared_end as u32,
        local_bytes: local_end as u32,
        max_threads_per_block: f.maxntid,
        cluster_dims: f.cluster_dims,
        num_regs: ctx.nregs.min(255),
    };
    let clear_regs = super::reg_init::registers_to_clear(&insts, nregs, carry_reg);
    Ok(Kernel { info, insts, nregs, carry_reg, clear_regs, dynamic_shared_offset: dynamic_shared_offset as u32 })
}

/// Call-argument `.param` variables and inlined callees' locals live in
/// local memory, laid out as they are met.
fn place_local(v: &VarDecl, ctx: &mut Ctx, local_end: &mut u64) {
    *local_end = align_up(*local_end, v.align.max(1) as u64);
    ctx.syms.insert(v.name.clone(), Sym { space: Space::Local, addr: *local_end });
    *local_end += v.size_bytes();
}

/// Emits a kernel body, inlining `.func` calls: each call site gets the
/// callee's body with fresh registers and labels, its parameters bound to the
/// caller's argument variables, and `ret` turned into a branch past the body.
struct Emitter<'a> {
    insts: Vec<Inst>,
    carry_reg: Option<u32>,
    /// (scope, label) → instruction index. A body instance's outermost
    /// scope has the instance's number; each `{ }` block inside gets a fresh
    /// one (labels are local to their block, as in inline-asm loops).
    labels: HashMap<(u32, String), u32>,
    /// Branches to patch: (instruction, scopes open there outermost first, label, line).
    fixups: Vec<(usize, Vec<u32>, String, u32)>,
    /// `.branchtargets` lists: (scope, name) → labels.
    target_lists: HashMap<(u32, String), (u32, Vec<String>)>,
    /// `brx.idx` to patch: (instruction, scopes open there, list name, line).
    brx_fixups: Vec<(usize, Vec<u32>, String, u32)>,
    local_end: u64,
    instances: u32,
    funcs: &'a [Func],
    /// Callees being inlined (recursion is refused).
    calls: Vec<String>,
}

/// The label a callee's `ret` branches to (cannot clash with PTX names).
const RET_LABEL: &str = "<ret>";
/// The CUDA runtime's device-side assertion handler (`assert` in device code).
const ASSERT_FAIL: &str = "__assertfail";
/// The CUDA runtime's device-side `printf`.
const VPRINTF: &str = "vprintf";
/// Inlining depth beyond which a call chain is refused.
const MAX_CALL_DEPTH: usize = 16;

impl Emitter<'_> {
    fn emit_body(
        &mut self,
        body: &[Stmt],
        ctx: &mut Ctx,
        instance: u32,
        in_callee: Option<u32>,
    ) -> Result<(), LoadError> {
        let mut scopes = vec![instance];
        for s in body {
            let scope = *scopes.last().unwrap_or(&instance);
            match s {
                Stmt::ScopeOpen => {
                    ctx.scopes.push(HashMap::new());
                    self.instances += 1;
                    scopes.push(self.instances);
                }
                Stmt::ScopeClose => {
                    ctx.scopes.pop();
                    if scopes.len() > 1 {
                        scopes.pop();
                    }
                }
                Stmt::Reg { ty, names } => {
                    for (name, count) in names {
                        if ctx.nregs as u64 + 2 * count.unwrap_or(1) as u64 > MAX_REGISTERS {
                            return Err(err(0, format!("more than {MAX_REGISTERS} registers declared")));
                        }
                        match count {
                            Some(c) => (0..*c).for_each(|i| ctx.new_reg(format!("{name}{i}"), *ty)),
                            None => ctx.new_reg(name.clone(), *ty),
                        }
                    }
                }
                Stmt::Label(line, l) => {
                    if self.labels.insert((scope, l.clone()), self.insts.len() as u32).is_some() {
                        return Err(err(*line, format!("label `{l}` defined twice")));
                    }
                }
                Stmt::BranchTargets { line, name, labels } => {
                    if self.target_lists.insert((scope, name.clone()), (*line, labels.clone())).is_some() {
                        return Err(err(*line, format!("branch target list `{name}` defined twice")));
                    }
                }
                Stmt::Var(v) => match v.space {
                    VarSpace::Param => place_local(v, ctx, &mut self.local_end),
                    // A callee's own locals (the caller's were laid out up front).
                    VarSpace::Local if in_callee.is_some() => place_local(v, ctx, &mut self.local_end),
                    VarSpace::Shared if in_callee.is_some() => {
                        return Err(err(
                            v.line,
                            format!("shared variable `{}` inside a called function is not supported", v.name),
                        ))
                    }
                    _ => {}
                },
                Stmt::Instr(i) if i.opcode == "call" || i.opcode.starts_with("call.") => self.inline_call(i, ctx)?,
                Stmt::Instr(i) => {
                    let mut inst = lower_instr(i, ctx, &mut self.carry_reg).map_err(|m| {
                        if m.line == 0 {
                            err(i.line, m.message)
                        } else {
                            m
                        }
                    })?;
                    let base = i.opcode.split('.').next().unwrap_or("");
                    if base == "bra" {
                        if let Some(Operand::Name(l)) = i.operands.first() {
                            self.fixups.push((self.insts.len(), scopes.clone(), l.clone(), i.line));
                        }
                    } else if base == "brx" {
                        if let Some(Operand::Name(l)) = i.operands.get(1) {
                            self.brx_fixups.push((self.insts.len(), scopes.clone(), l.clone(), i.line));
                        }
                    } else if base == "ret" {
                        if let Some(ret_instance) = in_callee {
                            // Return from an inlined callee: continue after its body.
                            inst.op = Op::Bra { target: 0 };
                            self.fixups.push((self.insts.len(), vec![ret_instance], RET_LABEL.to_string(), i.line));
                        }
                    }
                    self.insts.push(inst);
                }
            }
        }
        Ok(())
    }

    /// `call{.uni} (ret), f, (a, b);` or `call{.uni} f, (a, b);`
    fn inline_call(&mut self, i: &Instr, ctx: &mut Ctx) -> Result<(), LoadError> {
        let fail = |m: String| err(i.line, format!("unsupported instruction `{}`: {m}", i.opcode));
        if i.guard.is_some() {
            return Err(fail("predicated calls are not supported".into()));
        }
        let names = |o: &Operand| -> Result<Vec<String>, LoadError> {
            match o {
                Operand::List(v) => v
                    .iter()
                    .map(|x| match x {
                        Operand::Name(n) => Ok(n.clone()),
                        _ => Err(fail("call arguments must be .param variables".into())),
                    })
                    .collect(),
                _ => Err(fail("malformed call".into())),
            }
        };
        let (rets, callee, args) = match i.operands.as_slice() {
            [r @ Operand::List(_), Operand::Name(f), a @ Operand::List(_)] => (names(r)?, f.clone(), names(a)?),
            [Operand::Name(f), a @ Operand::List(_)] => (Vec::new(), f.clone(), names(a)?),
            [r @ Operand::List(_), Operand::Name(f)] => (names(r)?, f.clone(), Vec::new()),
            [Operand::Name(f)] => (Vec::new(), f.clone(), Vec::new()),
            _ => return Err(fail("indirect or malformed call".into())),
        };
        if callee == ASSERT_FAIL && rets.is_empty() {
            return self.assert_fail(i, ctx, &args);
        }
        if callee == VPRINTF {
            return self.printf(i, ctx, &rets, &args);
        }
        let func = self
            .funcs
            .iter()
            .find(|f| f.name == callee && f.body.is_some() && !f.is_entry)
            .ok_or_else(|| fail(format!("`{callee}` is not a function defined in this module")))?;
        if self.calls.contains(&callee) || self.calls.len() >= MAX_CALL_DEPTH {
            return Err(fail(format!("recursive or too deeply nested call of `{callee}`")));
        }
        if func.params.len() != args.len() || func.rets.len() != rets.len() {
            return Err(fail(format!("`{callee}` called with the wrong number of arguments")));
        }
        // Bind the callee's parameter names to the caller's argument variables.
        let saved_syms = ctx.syms.clone();
        for (p, a) in func.params.iter().zip(&args).chain(func.rets.iter().zip(&rets)) {
            let sym = ctx.sym(a).ok_or_else(|| fail(format!("unknown argument `{a}`")))?;
            ctx.syms.insert(p.name.clone(), sym);
        }
        self.instances += 1;
        let instance = self.instances;
        self.calls.push(callee);
        ctx.scopes.push(HashMap::new());
        let body = func.body.as_deref().unwrap_or(&[]);
        let r = self.emit_body(body, ctx, instance, Some(instance));
        ctx.scopes.pop();
        self.calls.pop();
        ctx.syms = saved_syms;
        r?;
        self.labels.insert((instance, RET_LABEL.to_string()), self.insts.len() as u32);
        Ok(())
    }

    /// `call __assertfail, (message, file, line, function, char_size)`, the
    /// device-side `assert` of the CUDA runtime: one instruction that reads
    /// its arguments from the caller's `.param` variables (local memory).
    fn assert_fail(&mut self, i: &Instr, ctx: &Ctx, args: &[String]) -> Result<(), LoadError> {
        let fail = |m: String| err(i.line, format!("unsupported instruction `{}`: {m}", i.opcode));
        if args.len() != 5 {
            return Err(fail(format!("`{ASSERT_FAIL}` takes 5 arguments, found {}", args.len())));
        }
        let s = args
            .iter()
            .map(|a| match ctx.sym(a) {
                Some(Sym { space: Space::Local, addr }) => Ok(Opd::Addr { base: None, off: addr as i64 }),
                _ => Err(fail(format!("argument `{a}` is not a .param variable of the caller"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.insts.push(Inst {
            op: Op::AssertFail,
            ty: ScalarType::B64,
            guard: None,
            d: Opd::Sink,
            d2: Opd::Sink,
            s,
            class: Class::Control,
            line: i.line,
        });
        Ok(())
    }

    /// `call (ret), vprintf, (format, args)`, device-side `printf`: one
    /// instruction reading the format and argument-buffer pointers from the
    /// caller's `.param` variables and writing the result to the return one.
    fn printf(&mut self, i: &Instr, ctx: &Ctx, rets: &[String], args: &[String]) -> Result<(), LoadError> {
        let fail = |m: String| err(i.line, format!("unsupported instruction `{}`: {m}", i.opcode));
        if args.len() != 2 || rets.len() > 1 {
            return Err(fail(format!("`{VPRINTF}` takes 2 arguments and returns one value")));
        }
        let local = |a: &String| match ctx.sym(a) {
            Some(Sym { space: Space::Local, addr }) => Ok(Opd::Addr { base: None, off: addr as i64 }),
            _ => Err(fail(format!("argument `{a}` is not a .param variable of the caller"))),
        };
        let s = args.iter().map(local).collect::<Result<Vec<_>, _>>()?;
        let d = rets.first().map(local).transpose()?.unwrap_or(Opd::Sink);
        self.insts.push(Inst {
            op: Op::Printf,
            ty: ScalarType::B64,
            guard: None,
            d,
            d2: Opd::Sink,
            s,
            class: Class::Control,
            line: i.line,
        });
        Ok(())
    }

    fn resolve_labels(&mut self) -> Result<(), LoadError> {
        // A name resolves in the innermost open scope that declares it.
        fn find<'m, T>(map: &'m HashMap<(u32, String), T>, scopes: &[u32], name: &str) -> Option<&'m T> {
            scopes.iter().rev().find_map(|s| map.get(&(*s, name.to_string())))
        }
        for (at, scopes, list, line) in &self.brx_fixups {
            let unknown = |what: &str, name: &str| {
                err(*line, format!("unsupported instruction `brx.idx`: unknown {what} `{name}`"))
            };
            let (_, labels) =
                find(&self.target_lists, scopes, list).ok_or_else(|| unknown("branch target list", list))?;
            let targets = labels
                .iter()
                .map(|l| find(&self.labels, scopes, l).copied().ok_or_else(|| unknown("label", l)))
                .collect::<Result<Vec<_>, _>>()?;
            self.insts[*at].op = Op::BrxIdx { targets };
        }
        for (at, scopes, label, line) in &self.fixups {
            let target = *find(&self.labels, scopes, label)
                .ok_or_else(|| err(*line, format!("unsupported instruction `bra`: unknown label `{label}`")))?;
            self.insts[*at].op = Op::Bra { target };
        }
        Ok(())
    }
}

#[path = "lower_async.rs"]
mod lower_async;

/// The remaining dot-separated modifiers of an opcode, consumed as decoded.
struct Mods<'a> {
    parts: Vec<&'a str>,
}

impl<'a> Mods<'a> {
    fn has(&mut self, m: &str) -> bool {
        if let Some(p) = self.parts.iter().position(|x| *x == m) {
            self.parts.remove(p);
            true
        } else {
            false
        }
    }
    fn one_of(&mut self, list: &[&'static str]) -> Option<&'static str> {
        list.iter().copied().find(|m| self.has(m))
    }
    fn types(&mut self) -> Vec<ScalarType> {
        let mut out = Vec::new();
        self.parts.retain(|p| match ScalarType::from_suffix(p) {
            Some(t) => {
                out.push(t);
                false
            }
            None => true,
        });
        out
    }
    /// Memory-ordering, scope and cache-policy qualifiers: they do not change
    /// what a single-copy emulator computes.
    fn drop_hints(&mut self) {
        self.parts.retain(|p| {
            !(matches!(
                *p,
                "ca" | "cg"
                    | "cs"
                    | "lu"
                    | "cv"
                    | "wb"
                    | "wt"
                    | "nc"
                    | "weak"
                    | "volatile"
                    | "relaxed"
                    | "acquire"
                    | "release"
                    | "acq_rel"
                    | "sc"
                    | "cta"
                    | "gpu"
                    | "sys"
                    | "cluster"
                    | "mmio"
            ) || p.starts_with("L1::")
                || p.starts_with("L2::"))
        });
    }
    fn rounding(&mut self) -> Option<Rounding> {
        let r = self.one_of(&["rn", "rna", "rz", "rm", "rp", "rni", "rzi", "rmi", "rpi"])?;
        Rounding::from_suffix(r)
    }
    fn space(&mut self) -> Space {
        match self.one_of(&[
            "global",
            "shared",
            "shared::cta",
            "shared::cluster",
            "local",
            "param",
            "const",
            "param::entry",
        ]) {
            Some("global") => Space::Global,
            Some("shared") | Some("shared::cta") | Some("shared::cluster") => Space::Shared,
            Some("local") => Space::Local,
            Some("param") | Some("param::entry") => Space::Param,
            Some("const") => Space::Const,
            _ => Space::Generic,
        }
    }
    fn vec(&mut self) -> u8 {
        match self.one_of(&["v2", "v4", "v8"]) {
            Some("v2") => 2,
            Some("v4") => 4,
            Some("v8") => 8,
            _ => 1,
        }
    }
    fn finish(&self) -> Result<(), String> {
        match self.parts.first() {
            None => Ok(()),
            Some(p) => Err(format!("modifier `.{p}` is not supported")),
        }
    }
}

fn one_type(types: &[ScalarType]) -> Result<ScalarType, String> {
    match types {
        [t] => Ok(*t),
        [] => Err("missing type".into()),
        _ => Err("too many types".into()),
    }
}

fn sreg(name: &str) -> Option<Sreg> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, d)) = name.split_once('.') {
        let d = dim(d)?;
        return Some(match base {
            "%tid" => Sreg::Tid(d),
            "%ntid" => Sreg::Ntid(d),
            "%ctaid" => Sreg::Ctaid(d),
            "%nctaid" => Sreg::Nctaid(d),
            "%clusterid" => Sreg::Cluster(ClusterSreg::ClusterId(d)),
            "%nclusterid" => Sreg::Cluster(ClusterSreg::NClusterId(d)),
            "%cluster_ctaid" => Sreg::Cluster(ClusterSreg::CtaId(d)),
            "%cluster_nctaid" => Sreg::Cluster(ClusterSreg::NCtaId(d)),
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Sreg::LaneId,
        "%warpid" => Sreg::WarpId,
        "%nwarpid" => Sreg::NWarpId,
        "%smid" => Sreg::SmId,
        "%nsmid" => Sreg::NSmId,
        "%gridid" => Sreg::GridId,
        "%lanemask_eq" => Sreg::LaneMaskEq,
        "%lanemask_lt" => Sreg::LaneMaskLt,
        "%lanemask_le" => Sreg::LaneMaskLe,
        "%lanemask_gt" => Sreg::LaneMaskGt,
        "%lanemask_ge" => Sreg::LaneMaskGe,
        "%clock" => Sreg::Clock,
        "%clock64" => Sreg::Clock64,
        "%globaltimer" | "%globaltimer_lo" => Sreg::GlobalTimer,
        "%dynamic_smem_size" => Sreg::DynSmemSize,
        "%total_smem_size" => Sreg::TotalSmemSize,
        "%cluster_ctarank" => Sreg::Cluster(ClusterSreg::CtaRank),
        "%cluster_nctarank" => Sreg::Cluster(ClusterSreg::NCtaRank),
        "%is_explicit_cluster" => Sreg::Cluster(ClusterSreg::IsExplicit),
        _ => return None,
    })
}

/// Operand conversion for one instruction: knows its state space (for
/// symbols in addresses) and its type (for float literals).
struct OpdCx<'c, 'a> {
    ctx: &'c Ctx<'a>,
    space: Space,
    ty: ScalarType,
}

impl OpdCx<'_, '_> {
    fn reg(&self, n: &str) -> Result<u32, String> {
        self.ctx.reg(n).ok_or_else(|| format!("undeclared register `{n}`"))
    }
    fn sym_addr(&self, s: Sym) -> u64 {
        if self.space == Space::Generic {
            s.addr + s.space.window()
        } else {
            s.addr
        }
    }
    fn src(&self, o: &Operand) -> Result<Opd, String> {
        Ok(match o {
            Operand::Name(n) => {
                if let Some(r) = self.ctx.reg(n) {
                    Opd::Reg(r)
                } else if let Some(s) = sreg(n) {
                    Opd::Sreg(s)
                } else if n == "WARP_SZ" {
                    // The ISA's predefined constant: the warp size.
                    Opd::Imm(32)
                } else if let Some(s) = self.ctx.sym(n) {
                    // `mov %r, var`: the address of `var` in its own space.
                    Opd::Imm(s.addr)
                } else {
                    return Err(format!("unknown name `{n}`"));
                }
            }
            Operand::Not(n) => Opd::NotPred(self.reg(n)?),
            Operand::Int(v) => Opd::Imm(*v),
            Operand::F32(b) => {
                Opd::Imm(if self.ty == ScalarType::F64 { (f32::from_bits(*b) as f64).to_bits() } else { *b as u64 })
            }
            Operand::F64(b) => {
                Opd::Imm(if self.ty == ScalarType::F64 { *b } else { (f64::from_bits(*b) as f32).to_bits() as u64 })
            }
            Operand::Addr { base, off } => match base {
                None => Opd::Addr { base: None, off: *off },
                Some(n) => {
                    if let Some(r) = self.ctx.reg(n) {
                        Opd::Addr { base: Some(r), off: *off }
                    } else if let Some(s) = self.ctx.sym(n) {
                        Opd::Addr { base: None, off: self.sym_addr(s) as i64 + off }
                    } else {
                        return Err(format!("unknown name `{n}` in an address"));
                    }
                }
            },
            Operand::Vec(v) => Opd::Vec(v.iter().map(|x| self.src(x)).collect::<Result<Vec<_>, _>>()?.into()),
            Operand::Sink => Opd::Sink,
            Operand::Pair(..) => return Err("`a|b` is only allowed as a destination".into()),
            Operand::List(_) => return Err("a parenthesised list is only allowed in `call`".into()),
        })
    }
    fn dst(&self, o: &Operand) -> Result<Opd, String> {
        match o {
            Operand::Name(n) => Ok(Opd::Reg(self.reg(n)?)),
            Operand::Sink => Ok(Opd::Sink),
            Operand::Vec(v) => Ok(Opd::Vec(v.iter().map(|x| self.dst(x)).collect::<Result<Vec<_>, _>>()?.into())),
            _ => Err(format!("{o:?} cannot be a destination")),
        }
    }
    /// A destination that may carry a second predicate (`%r|%p`).
    fn dst_pair(&self, o: &Operand) -> Result<(Opd, Opd), String> {
        match o {
            Operand::Pair(a, b) => {
                // `_|%p`: only the predicate is wanted (elect.sync).
                let a = if a == "_" { Opd::Sink } else { Opd::Reg(self.reg(a)?) };
                Ok((a, Opd::Reg(self.reg(b)?)))
            }
            _ => Ok((self.dst(o)?, Opd::Sink)),
        }
    }
}

fn class_of_type(ty: ScalarType) -> Class {
    use ScalarType::*;
    match ty {
        F32 | Tf32 => Class::Fp32,
        F64 => Class::Fp64,
        F16 | F16x2 | Bf16 | Bf16x2 => Class::Fp16,
        _ => Class::Int,
    }
}

fn space_class(s: Space) -> Class {
    match s {
        Space::Global | Space::Const | Space::Generic => Class::MemGlobal,
        Space::Shared => Class::MemShared,
        Space::Local => Class::MemLocal,
        Space::Param => Class::MemParam,
    }
}

fn cmp_of(s: &str) -> Option<Cmp> {
    Some(match s {
        "eq" => Cmp::Eq,
        "ne" => Cmp::Ne,
        "lt" => Cmp::Lt,
        "le" => Cmp::Le,
        "gt" => Cmp::Gt,
        "ge" => Cmp::Ge,
        "lo" => Cmp::Lo,
        "ls" => Cmp::Ls,
        "hi" => Cmp::Hi,
        "hs" => Cmp::Hs,
        "equ" => Cmp::Equ,
        "neu" => Cmp::Neu,
        "ltu" => Cmp::Ltu,
        "leu" => Cmp::Leu,
        "gtu" => Cmp::Gtu,
        "geu" => Cmp::Geu,
        "num" => Cmp::Num,
        "nan" => Cmp::Nan,
        _ => return None,
    })
}

fn bool_op(m: &mut Mods) -> Option<BoolOp> {
    match m.one_of(&["and", "or", "xor"]) {
        Some("and") => Some(BoolOp::And),
        Some("or") => Some(BoolOp::Or),
        Some("xor") => Some(BoolOp::Xor),
        _ => None,
    }
}

fn is_half(t: ScalarType) -> bool {
    matches!(t, ScalarType::F16 | ScalarType::F16x2 | ScalarType::Bf16 | ScalarType::Bf16x2)
}

fn is_int_type(t: ScalarType) -> bool {
    !t.is_float() && t != ScalarType::Pred
}

fn lower_instr(i: &Instr, ctx: &mut Ctx, carry_reg: &mut Option<u32>) -> Result<Inst, LoadError> {
    let full = i.opcode.as_str();
    let unsupported = |why: String| err(i.line, format!("unsupported instruction `{full}`: {why}"));
    let mut parts = full.split('.');
    let base = parts.next().unwrap_or("");
    let mut m = Mods { parts: parts.collect() };
    let guard = match &i.guard {
        Some((p, neg)) => Some((ctx.reg(p).ok_or_else(|| err(i.line, format!("undeclared predicate `{p}`")))?, *neg)),
        None => None,
    };
    if matches!(base, "add" | "sub" | "addc" | "subc" | "mad" | "madc")
        && (m.parts.contains(&"cc") || base.ends_with('c'))
        && carry_reg.is_none()
    {
        *carry_reg = Some(ctx.nregs);
        ctx.nregs += 1;
    }
    let mut ops = i.operands.iter();
    let decoded = decode(base, &mut m, &mut ops, ctx, i.line).map_err(unsupported)?;
    m.finish().map_err(|e| err(i.line, format!("unsupported instruction `{full}`: {e}")))?;
    let (op, ty, d, mut d2, s, class) = decoded;
    if matches!(op, Op::Int(IntOp::AddCarry { .. } | IntOp::SubCarry { .. } | IntOp::MadCarry { .. })) {
        // The carry flag lives in one hidden register per kernel.
        d2 = Opd::Reg(carry_reg.unwrap_or(0));
    }
    Ok(Inst { op, ty, guard, d, d2, s, class, line: i.line })
}

type Decoded = (Op, ScalarType, Opd, Opd, Vec<Opd>, Class);

fn decode<'o>(
    base: &str,
    m: &mut Mods,
    ops: &mut std::slice::Iter<'o, Operand>,
    ctx: &Ctx,
    _line: u32,
) -> Result<Decoded, String> {
    use ScalarType as T;
    let all: Vec<&Operand> = ops.collect();
    let n = all.len();
    let want = |k: usize| -> Result<(), String> {
        if n == k {
            Ok(())
        } else {
            Err(format!("expected {k} operands, found {n}"))
        }
    };
    let cx = |space: Space, ty: ScalarType| OpdCx { ctx, space, ty };
    let srcs = |c: &OpdCx, from: usize| -> Result<Vec<Opd>, String> { all[from..].iter().map(|o| c.src(o)).collect() };
    if lower_async::handles(base, m) {
        return lower_async::decode(base, m, &all, ctx);
    }

    Ok(match base {
        "mov" => {
            let ty = one_type(&m.types())?;
            want(2)?;
            let c = cx(Space::Generic, ty);
            if ty == T::B128 {
                // Two 64-bit halves: `%q` ↔ `{lo, hi}` or `%q` ↔ `%q`.
                let d = halves_of_128(c.dst(all[0])?, 1)?;
                let s = halves_of_128(c.src(all[1])?, 1)?;
                return Ok((Op::Copy, T::B64, d, Opd::Sink, vec![s], Class::Other));
            }
            (Op::Mov, ty, c.dst(all[0])?, Opd::Sink, vec![c.src(all[1])?], Class::Other)
        }
        "createpolicy" => {
            m.parts.clear();
            let c = cx(Space::Generic, T::B64);
            (Op::Mov, T::B64, c.dst(all[0])?, Opd::Sink, vec![Opd::Imm(0)], Class::Other)
        }
        "ld" | "ldu" | "st" => {
            let full_hint = m.parts.contains(&"L2::cache_hint");
            m.drop_hints();
            // `.shared::cluster` addresses may name another CTA's shared memory.
            let cluster = m.parts.contains(&"shared::cluster");
            let space = m.space();
            let vec = m.vec();
            m.has("unified");
            let mut ty = one_type(&m.types())?;
            let mut vec = vec;
            // A `.b128` access moves the two 64-bit halves of each register.
            let wide = ty == T::B128;
            if wide {
                if vec > 2 {
                    return Err(".b128 accesses are at most .v2".into());
                }
                ty = T::B64;
                vec *= 2;
            }
            // A trailing `.L2::cache_hint` policy operand changes nothing here.
            if !(n == 2 || (n == 3 && full_hint)) {
                return Err(format!("expected 2 operands, found {n}"));
            }
            // Call arguments are `.param` variables the caller declared; they
            // live in local memory (kernel parameters stay in the param space).
            let addr_opd = if base == "st" { all[0] } else { all[1] };
            let space = match (space, addr_opd) {
                (Space::Param, Operand::Addr { base: Some(b), .. })
                    if ctx.reg(b).is_none() && ctx.sym(b).is_some_and(|s| s.space == Space::Local) =>
                {
                    Space::Local
                }
                _ => space,
            };
            let c = cx(space, ty);
            let class = space_class(space);
            let data = |o: Opd| {
                if wide {
                    halves_of_128(o, vec as usize / 2)
                } else {
                    Ok(o)
                }
            };
            if base == "st" {
                (
                    Op::St { space, vec, cluster },
                    ty,
                    Opd::Sink,
                    Opd::Sink,
                    vec![c.src(all[0])?, data(c.src(all[1])?)?],
                    class,
                )
            } else {
                (Op::Ld { space, vec, cluster }, ty, data(c.dst(all[0])?)?, Opd::Sink, vec![c.src(all[1])?], class)
            }
        }
        "cvta" => {
            let to = m.has("to");
            let space = m.space();
            let ty = one_type(&m.types())?;
            want(2)?;
            if space == Space::Generic {
                return Err("cvta needs a state space".into());
            }
            let c = cx(Space::Generic, ty);
            (Op::Cvta { to_generic: !to, space }, ty, c.dst(all[0])?, Opd::Sink, vec![c.src(all[1])?], Class::Int)
        }
        "isspacep" => {
            let space = m.space();
            want(2)?;
            let c = cx(Space::Generic, T::B64);
            (Op::Isspacep(space), T::Pred, c.dst(all[0])?, Opd::Sink, vec![c.src(all[1])?], Class::Int)
        }
        "add" | "sub" | "mul" | "mad" | "fma" | "div" | "min" | "max" | "abs" | "neg" | "rem" | "addc" | "subc"
        | "madc" | "mul24" | "mad24" | "sad" => {
            let ty = one_type(&m.types())?;
            if is_half(ty) {
                decode_half(base, m, ty, &all, ctx)?
            } else if ty.is_float() {
                decode_float(base, m, ty, &all, ctx)?
            } else {
                decode_int_arith(base, m, ty, &all, ctx)?
            }
        }
        "and" | "or" | "xor" | "not" | "cnot" | "shl" | "shr" | "popc" | "clz" | "brev" | "bfind" | "bfe" | "bfi"
        | "prmt" | "lop3" | "shf" | "fns" | "dp4a" => decode_bits(base, m, &all, ctx)?,
        "setp" | "set" => {
            let cmp_s = m.parts.first().copied().ok_or("missing comparison")?;
            let cmp = cmp_of(cmp_s).ok_or_else(|| format!("unknown comparison `{cmp_s}`"))?;
            m.parts.remove(0);
            let comb = bool_op(m);
            m.has("ftz");
            let types = m.types();
            let (ty, dty) = if base == "set" {
                if types.len() != 2 {
                    return Err("set needs a destination and a source type".into());
                }
                (types[1], types[0])
            } else {
                (one_type(&types)?, T::Pred)
            };
            let packed = matches!(ty, T::F16x2 | T::Bf16x2);
            if base == "set" && (is_half(dty) || packed) {
                // Half-precision `set`: an .f16/.bf16 result is 1.0 or 0.0 in its
                // format; a packed source compares each half on its own.
                let ok = match (dty, ty) {
                    (T::F16 | T::Bf16, _) => !packed,
                    (T::F16x2, T::F16x2) | (T::Bf16x2, T::Bf16x2) => true,
                    (T::U32 | T::S32, _) => packed,
                    _ => false,
                };
                if !ok {
                    return Err(format!("set to .{dty:?} from .{ty:?} is not a PTX form"));
                }
            }
            let c = cx(Space::Generic, ty);
            let (d, d2) = c.dst_pair(all.first().ok_or("missing destination")?)?;
            let s = srcs(&c, 1)?;
            if s.len() != 2 + comb.is_some() as usize {
                return Err("wrong number of operands".into());
            }
            let op = if base == "set" { Op::Set { cmp, comb, dty } } else { Op::Setp { cmp, comb } };
            (op, ty, d, d2, s, class_of_type(ty))
        }
        "selp" => {
            let ty = one_type(&m.types())?;
            want(4)?;
            let c = cx(Space::Generic, ty);
            (Op::Selp, ty, c.dst(all[0])?, Opd::Sink, srcs(&c, 1)?, class_of_type(ty))
        }
        "slct" => {
            m.has("ftz");
            let types = m.types();
            if types.len() != 2 {
                return Err("slct needs two types".into());
            }
            want(4)?;
            let c = cx(Space::Generic, types[0]);
            let mut s = vec![c.src(all[1])?, c.src(all[2])?];
            s.push(cx(Space::Generic, types[1]).src(all[3])?);
            (Op::Slct { cty: types[1] }, types[0], c.dst(all[0])?, Opd::Sink, s, class_of_type(types[0]))
        }
        "sqrt" | "rcp" | "rsqrt" | "ex2" | "lg2" | "sin" | "cos" | "tanh" | "copysign" => {
            let ty = one_type(&m.types())?;
            let approx = m.has("approx");
            let ftz = m.has("ftz");
            let rnd = m.rounding();
            let c = cx(Space::Generic, ty);
            let class = class_of_type(ty);
            let special = match base {
                "ex2" => Some(SpecialOp::Ex2),
                "lg2" => Some(SpecialOp::Lg2),
                "sin" => Some(SpecialOp::Sin),
                "cos" => Some(SpecialOp::Cos),
                "tanh" => Some(SpecialOp::Tanh),
                "rsqrt" if ty == T::F32 => Some(SpecialOp::Rsqrt),
                "rcp" if approx && ty == T::F32 => Some(SpecialOp::Rcp),
                "sqrt" if approx && ty == T::F32 => Some(SpecialOp::Sqrt),
                _ => None,
            };
            if base == "copysign" {
                want(3)?;
                if !matches!(ty, T::F32 | T::F64) {
                    return Err("copysign needs .f32 or .f64".into());
                }
                return Ok((
                    Op::Float { op: FArith::Copysign, rnd: None, ftz: false, sat: false },
                    ty,
                    c.dst(all[0])?,
                    Opd::Sink,
                    srcs(&c, 1)?,
                    class,
                ));
            }
            want(2)?;
            if let Some(op) = special {
                if ty != T::F32 {
                    return Err(format!("{base} is supported for .f32 only"));
                }
                (Op::Special { op, ftz }, ty, c.dst(all[0])?, Opd::Sink, srcs(&c, 1)?, Class::Special)
            } else {
                if !matches!(ty, T::F32 | T::F64) {
                    return Err(format!("{base} needs .f32 or .f64"));
                }
                if rnd.is_some_and(|r| r != Rounding::Rn) {
                    return Err("only .rn rounding is supported for sqrt/rcp".into());
                }
                let op = match base {
                    "sqrt" => FArith::Sqrt,
                    "rcp" => FArith::Rcp,
                    _ => FArith::Rsqrt,
                };
                (Op::Float { op, rnd: None, ftz, sat: false }, ty, c.dst(all[0])?, Opd::Sink, srcs(&c, 1)?, class)
            }
        }
        "testp" => {
            let k = match m.one_of(&["finite", "infinite", "number", "notanumber", "normal", "subnormal"]) {
                Some("finite") => TestKind::Finite,
                Some("infinite") => TestKind::Infinite,
                Some("number") => TestKind::Number,
                Some("notanumber") => TestKind::NotANumber,
                Some("normal") => TestKind::Normal,
                Some("subnormal") => TestKind::Subnormal,
                _ => return Err("missing test".into()),
            };
            let ty = one_type(&m.types())?;
            want(2)?;
            let c = cx(Space::Generic, ty);
            (Op::Testp(k), ty, c.dst(all[0])?, Opd::Sink, srcs(&c, 1)?, class_of_type(ty))
        }
        "cvt" => decode_cvt(m, &all, ctx)?,
        "brx" => {
            if !m.has("idx") {
                return Err("brx needs .idx".into());
            }
            m.has("uni");
            want(2)?;
            if !matches!(all[1], Operand::Name(_)) {
                return Err("the target list must be a .branchtargets name".into());
            }
            let c = cx(Space::Generic, T::U32);
            // The targets are filled in once every label is known (`Emitter`).
            (Op::BrxIdx { targets: Vec::new() }, T::U32, Opd::Sink, Opd::Sink, vec![c.src(all[0])?], Class::Control)
        }
        "bra" => {
            m.has("uni");
            want(1)?;
            // The target is patched once every label is known (`Emitter`).
            if !matches!(all[0], Operand::Name(_)) {
                return Err("branch target must be a label".into());
            }
            (Op::Bra { target: 0 }, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Control)
        }
        "ret" | "exit" => {
            m.has("uni");
            (Op::Exit, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Control)
        }
        "trap" | "brkpt" => (Op::Trap, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Control),
        "call" => {
            return Err(
                "calls of .func are not supported (nvcc usually inlines them; mark the callee __forceinline__)".into()
            )
        }
        "bar" | "barrier" => {
            m.has("cta");
            m.has("aligned");
            if m.has("warp") {
                m.has("sync");
                want(1)?;
                let c = cx(Space::Generic, T::B32);
                return Ok((Op::WarpSync, T::B32, Opd::Sink, Opd::Sink, srcs(&c, 0)?, Class::Sync));
            }
            let kind = if m.has("sync") {
                BarKind::Sync
            } else if m.has("arrive") {
                BarKind::Arrive
            } else if m.has("red") {
                let r = match m.one_of(&["popc", "and", "or"]) {
                    Some("popc") => BarRed::Popc,
                    Some("and") => BarRed::And,
                    Some("or") => BarRed::Or,
                    _ => return Err("bar.red needs .popc, .and or .or".into()),
                };
                m.has("u32");
                m.has("pred");
                BarKind::Red(r)
            } else {
                return Err("unknown barrier form".into());
            };
            let c = cx(Space::Generic, T::B32);
            let (d, s) = if let BarKind::Red(_) = kind {
                (c.dst(all.first().ok_or("missing destination")?)?, srcs(&c, 1)?)
            } else {
                (Opd::Sink, srcs(&c, 0)?)
            };
            let allowed = if matches!(kind, BarKind::Red(_)) { 2..=3 } else { 1..=2 };
            if !allowed.contains(&s.len()) {
                return Err("wrong number of barrier operands".into());
            }
            let ty = if matches!(kind, BarKind::Red(BarRed::Popc)) { T::U32 } else { T::Pred };
            (Op::Bar { kind }, ty, d, Opd::Sink, s, Class::Sync)
        }
        "membar" | "fence" => {
            m.parts.clear();
            (Op::Nop, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Sync)
        }
        "prefetch" | "prefetchu" | "discard" | "applypriority" | "nanosleep" | "pmevent" => {
            m.parts.clear();
            (Op::Nop, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Other)
        }
        "shfl" => {
            if !m.has("sync") {
                return Err("shfl without .sync is not supported".into());
            }
            let mode = match m.one_of(&["up", "down", "bfly", "idx"]) {
                Some("up") => ShflMode::Up,
                Some("down") => ShflMode::Down,
                Some("bfly") => ShflMode::Bfly,
                Some("idx") => ShflMode::Idx,
                _ => return Err("missing shuffle mode".into()),
            };
            let ty = one_type(&m.types())?;
            want(5)?;
            let c = cx(Space::Generic, ty);
            let (d, d2) = c.dst_pair(all[0])?;
            (Op::Shfl(mode), ty, d, d2, srcs(&c, 1)?, Class::Collective)
        }
        "vote" => {
            if !m.has("sync") {
                return Err("vote without .sync is not supported".into());
            }
            let mode = match m.one_of(&["all", "any", "uni", "ballot"]) {
                Some("all") => VoteMode::All,
                Some("any") => VoteMode::Any,
                Some("uni") => VoteMode::Uni,
                _ => VoteMode::Ballot,
            };
            let ty = one_type(&m.types())?;
            want(3)?;
            let c = cx(Space::Generic, ty);
            (Op::Vote(mode), ty, c.dst(all[0])?, Opd::Sink, srcs(&c, 1)?, Class::Collective)
        }
        "match" => {
            let all_mode = m.has("all");
            m.has("any");
            if !m.has("sync") {
                return Err("match needs .sync".into());
            }
            let ty = one_type(&m.types())?;
            want(3)?;
            let c = cx(Space::Generic, ty);
            let (d, d2) = c.dst_pair(all[0])?;
            (Op::Match { all: all_mode }, ty, d, d2, srcs(&c, 1)?, Class::Collective)
        }
        "redux" => {
            if !m.has("sync") {
                return Err("redux needs .sync".into());
            }
            let op = match m.one_of(&["add", "min", "max", "and", "or", "xor"]) {
                Some("add") => IntOp::Add,
                Some("min") => IntOp::Min,
                Some("max") => IntOp::Max,
                Some("and") => IntOp::And,
                Some("or") => IntOp::Or,
                Some("xor") => IntOp::Xor,
                _ => return Err("missing reduction".into()),
            };
            let ty = one_type(&m.types())?;
            if !matches!(ty, T::U32 | T::S32 | T::B32) {
                return Err("redux.sync supports 32-bit integers only".into());
            }
            want(3)?;
            let c = cx(Space::Generic, ty);
            (Op::Redux(op), ty, c.dst(all[0])?, Opd::Sink, srcs(&c, 1)?, Class::Collective)
        }
        "activemask" => {
            m.types();
            want(1)?;
            let c = cx(Space::Generic, T::B32);
            (Op::Activemask, T::B32, c.dst(all[0])?, Opd::Sink, vec![], Class::Collective)
        }
        "atom" | "red" => {
            m.drop_hints();
            let space = m.space();
            m.has("noftz");
            let op = match m.one_of(&["add", "min", "max", "inc", "dec", "and", "or", "xor", "exch", "cas"]) {
                Some("add") => AtomOp::Add,
                Some("min") => AtomOp::Min,
                Some("max") => AtomOp::Max,
                Some("inc") => AtomOp::Inc,
                Some("dec") => AtomOp::Dec,
                Some("and") => AtomOp::And,
                Some("or") => AtomOp::Or,
                Some("xor") => AtomOp::Xor,
                Some("exch") => AtomOp::Exch,
                Some("cas") => AtomOp::Cas,
                _ => return Err("missing atomic operation".into()),
            };
            let ty = one_type(&m.types())?;
            if matches!(ty, T::B128 | T::Pred) || (is_half(ty) && op != AtomOp::Add) {
                return Err(format!("atomic {op:?} on .{ty:?} is not supported"));
            }
            if matches!(space, Space::Local | Space::Param | Space::Const) {
                return Err("atomics on this state space are not supported".into());
            }
            let c = cx(space, ty);
            let ret = base == "atom";
            let (d, s) = if ret {
                (c.dst(all.first().ok_or("missing destination")?)?, srcs(&c, 1)?)
            } else {
                (Opd::Sink, srcs(&c, 0)?)
            };
            if s.len() != 2 + (op == AtomOp::Cas) as usize {
                return Err("wrong number of operands".into());
            }
            (Op::Atom { space, op, ret }, ty, d, Opd::Sink, s, space_class(space))
        }
        "mma" => decode_mma(m, &all, ctx)?,
        "wmma" => decode_wmma(m, &all, ctx)?,
        "wgmma" => wgmma::decode(m, &all, ctx)?,
        "ldmatrix" | "stmatrix" => {
            if !(m.has("sync") && m.has("aligned") && m.has("m8n8")) {
                return Err("only .sync.aligned.m8n8 forms are supported".into());
            }
            let num = match m.one_of(&["x1", "x2", "x4"]) {
                Some("x1") => 1,
                Some("x2") => 2,
                Some("x4") => 4,
                _ => return Err("missing .x1/.x2/.x4".into()),
            };
            let trans = m.has("trans");
            // Without `.shared` the addresses are generic ones, which must
            // point into shared memory (checked per row when it runs).
            let generic = match m.space() {
                Space::Shared => false,
                Space::Generic => true,
                _ => return Err("ldmatrix/stmatrix address shared memory (.shared or generic)".into()),
            };
            if one_type(&m.types())? != T::B16 {
                return Err("only .b16 is supported".into());
            }
            want(2)?;
            let c = cx(Space::Shared, T::B32);
            if base == "ldmatrix" {
                (
                    Op::Ldmatrix { num, trans, generic },
                    T::B32,
                    c.dst(all[0])?,
                    Opd::Sink,
                    vec![c.src(all[1])?],
                    Class::MemShared,
                )
            } else {
                (Op::Stmatrix { num, trans, generic }, T::B32, Opd::Sink, Opd::Sink, srcs(&c, 0)?, Class::MemShared)
            }
        }
        "cp" => {
            if !m.has("async") {
                return Err("only cp.async is supported".into());
            }
            if m.has("commit_group") {
                return Ok((Op::CpAsyncCommit, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Sync));
            }
            if m.has("wait_all") {
                return Ok((Op::CpAsyncWait { keep: WAIT_ALL }, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Sync));
            }
            if m.has("wait_group") {
                want(1)?;
                let keep = match all[0] {
                    Operand::Int(v) => *v as u32,
                    _ => return Err("wait_group needs an immediate".into()),
                };
                return Ok((Op::CpAsyncWait { keep }, T::B32, Opd::Sink, Opd::Sink, vec![], Class::Sync));
            }
            m.one_of(&["ca", "cg"]).ok_or("cp.async needs .ca or .cg")?;
            let dst_shared = m.has("shared") || m.has("shared::cta");
            if !(dst_shared && m.has("global")) {
                return Err("cp.async needs .shared.global".into());
            }
            let policy = m.parts.contains(&"L2::cache_hint") as usize;
            m.parts.retain(|p| !p.starts_with("L2::"));
            // [dst], [src], cp-size{, src-size}{, cache-policy}
            let n = n - policy.min(n);
            if !(3..=4).contains(&n) {
                return Err("wrong number of operands".into());
            }
            let bytes = match all[2] {
                Operand::Int(v) if matches!(*v, 4 | 8 | 16) => *v as u8,
                _ => return Err("copy size must be 4, 8 or 16".into()),
            };
            let dst = cx(Space::Shared, T::B32).src(all[0])?;
            let src = cx(Space::Global, T::B64).src(all[1])?;
            let mut s = vec![dst, src];
            // An optional src-size (an integer operand); a trailing cache policy is ignored.
            if n >= 4 {
                s.push(cx(Space::Generic, T::U32).src(all[3])?);
            }
            (Op::CpAsync { bytes }, T::B32, Opd::Sink, Opd::Sink, s, Class::MemShared)
        }
        _ => return Err("unknown opcode".into()),
    })
}

/// The 64-bit halves of `n` `.b128` values, low half first: a `.b128`
/// register (two consecutive slots), a vector of `n` of them, or (for one
/// value) a `{lo, hi}` pair of 64-bit operands.
fn halves_of_128(o: Opd, n: usize) -> Result<Opd, String> {
    let pair = |o: &Opd| match o {
        Opd::Reg(r) => Ok([Opd::Reg(*r), Opd::Reg(r + 1)]),
        Opd::Sink => Ok([Opd::Sink, Opd::Sink]),
        _ => Err("a .b128 operand must be a .b128 register or a {lo, hi} pair".to_string()),
    };
    match o {
        Opd::Vec(v) if n == 1 && v.len() == 2 && !matches!(v[0], Opd::Vec(_)) => Ok(Opd::Vec(v)),
        Opd::Vec(v) if v.len() == n => {
            let mut out = Vec::with_capacity(2 * n);
            for x in v.iter() {
                out.extend(pair(x)?);
            }
            Ok(Opd::Vec(out.into()))
        }
        o if n == 1 => Ok(Opd::Vec(pair(&o)?.to_vec().into())),
        _ => Err(format!("expected {n} .b128 operands")),
    }
}

fn decode_int_arith(base: &str, m: &mut Mods, ty: ScalarType, all: &[&Operand], ctx: &Ctx) -> Result<Decoded, String> {
    if !is_int_type(ty) {
        return Err(format!(".{ty:?} is not an integer type"));
    }
    let cc = m.has("cc");
    let sat = m.has("sat");
    let mode = m.one_of(&["lo", "hi", "wide"]);
    let op = match (base, mode) {
        ("add", _) if cc => IntOp::AddCarry { carry_in: false, carry_out: true },
        ("addc", _) => IntOp::AddCarry { carry_in: true, carry_out: cc },
        ("sub", _) if cc => IntOp::SubCarry { carry_in: false, carry_out: true },
        ("subc", _) => IntOp::SubCarry { carry_in: true, carry_out: cc },
        ("add", _) if sat => IntOp::AddSat,
        ("sub", _) if sat => IntOp::SubSat,
        ("add", _) => IntOp::Add,
        ("sub", _) => IntOp::Sub,
        ("mul", Some("hi")) => IntOp::MulHi,
        ("mul", Some("wide")) => IntOp::MulWide,
        ("mul", _) => IntOp::MulLo,
        ("mul24", Some("lo")) => IntOp::Mul24Lo,
        ("mad", Some(half @ ("lo" | "hi"))) if cc => {
            IntOp::MadCarry { hi: half == "hi", carry_in: false, carry_out: true }
        }
        ("madc", Some(half @ ("lo" | "hi"))) => IntOp::MadCarry { hi: half == "hi", carry_in: true, carry_out: cc },
        ("mad", Some("hi")) if !cc => IntOp::MadHi,
        ("mad", Some("wide")) if !cc => IntOp::MadWide,
        ("mad", Some("lo")) if !cc => IntOp::MadLo,
        ("mad24", Some("lo")) => IntOp::Mad24Lo,
        ("div", _) => IntOp::Div,
        ("rem", _) => IntOp::Rem,
        ("min", _) => IntOp::Min,
        ("max", _) => IntOp::Max,
        ("abs", _) => IntOp::Abs,
        ("neg", _) => IntOp::Neg,
        ("sad", _) => IntOp::Sad,
        _ => return Err("unsupported integer form".into()),
    };
    if sat && !matches!(op, IntOp::AddSat | IntOp::SubSat) {
        return Err(".sat is supported on add/sub only".into());
    }
    let arity = match op {
        IntOp::Abs | IntOp::Neg => 1,
        IntOp::MadLo | IntOp::MadHi | IntOp::MadWide | IntOp::Mad24Lo | IntOp::Sad | IntOp::MadCarry { .. } => 3,
        _ => 2,
    };
    if all.len() != arity + 1 {
        return Err(format!("expected {} operands", arity + 1));
    }
    let c = OpdCx { ctx, space: Space::Generic, ty };
    let s = all[1..].iter().map(|o| c.src(o)).collect::<Result<Vec<_>, _>>()?;
    let (d, d2) = if matches!(op, IntOp::AddCarry { .. } | IntOp::SubCarry { .. } | IntOp::MadCarry { .. }) {
        (c.dst(all[0])?, Opd::Reg(0))
    } else {
        (c.dst(all[0])?, Opd::Sink)
    };
    Ok((Op::Int(op), ty, d, d2, s, Class::Int))
}

fn decode_float(base: &str, m: &mut Mods, ty: ScalarType, all: &[&Operand], ctx: &Ctx) -> Result<Decoded, String> {
    if !matches!(ty, ScalarType::F32 | ScalarType::F64) {
        return Err(format!(".{ty:?} arithmetic is not supported"));
    }
    let rnd = m.rounding();
    let ftz = m.has("ftz");
    let sat = m.has("sat");
    let approx = m.has("approx");
    let full = m.has("full");
    let nan = m.has("NaN");
    let op = match base {
        "add" => FArith::Add,
        "sub" => FArith::Sub,
        "mul" => FArith::Mul,
        "fma" | "mad" => FArith::Fma,
        "div" if approx || full => FArith::DivApprox,
        "div" => FArith::Div,
        "abs" => FArith::Abs,
        "neg" => FArith::Neg,
        "min" => FArith::Min { nan },
        "max" => FArith::Max { nan },
        _ => return Err("unsupported float form".into()),
    };
    if let Some(r) = rnd {
        if !matches!(r, Rounding::Rn | Rounding::Rz | Rounding::Rm | Rounding::Rp) {
            return Err("integer rounding on float arithmetic".into());
        }
        if r != Rounding::Rn && !matches!(op, FArith::Add | FArith::Sub | FArith::Mul | FArith::Fma | FArith::Div) {
            return Err("directed rounding is supported on add/sub/mul/fma/div only".into());
        }
    }
    let arity = match op {
        FArith::Abs | FArith::Neg => 1,
        FArith::Fma => 3,
        _ => 2,
    };
    if all.len() != arity + 1 {
        return Err(format!("expected {} operands", arity + 1));
    }
    let c = OpdCx { ctx, space: Space::Generic, ty };
    let s = all[1..].iter().map(|o| c.src(o)).collect::<Result<Vec<_>, _>>()?;
    Ok((Op::Float { op, rnd, ftz, sat }, ty, c.dst(all[0])?, Opd::Sink, s, class_of_type(ty)))
}

fn decode_half(base: &str, m: &mut Mods, ty: ScalarType, all: &[&Operand], ctx: &Ctx) -> Result<Decoded, String> {
    let rnd = m.rounding();
    let ftz = m.has("ftz");
    let sat = m.has("sat");
    let nan = m.has("NaN");
    m.has("noftz");
    let op = match base {
        "add" => FloatOp::Add,
        "sub" => FloatOp::Sub,
        "mul" => FloatOp::Mul,
        "fma" => FloatOp::Fma,
        "min" if nan => FloatOp::MinNaN,
        "max" if nan => FloatOp::MaxNaN,
        "min" => FloatOp::Min,
        "max" => FloatOp::Max,
        "neg" => FloatOp::Neg,
        "abs" => FloatOp::Abs,
        _ => return Err(format!("{base} on .{ty:?} is not supported")),
    };
    let arity = match op {
        FloatOp::Neg | FloatOp::Abs => 1,
        FloatOp::Fma => 3,
        _ => 2,
    };
    if all.len() != arity + 1 {
        return Err(format!("expected {} operands", arity + 1));
    }
    let c = OpdCx { ctx, space: Space::Generic, ty };
    let s = all[1..].iter().map(|o| c.src(o)).collect::<Result<Vec<_>, _>>()?;
    Ok((Op::Half { op, rnd, ftz, sat }, ty, c.dst(all[0])?, Opd::Sink, s, Class::Fp16))
}

fn decode_bits(base: &str, m: &mut Mods, all: &[&Operand], ctx: &Ctx) -> Result<Decoded, String> {
    let op = match base {
        "and" => IntOp::And,
        "or" => IntOp::Or,
        "xor" => IntOp::Xor,
        "not" => IntOp::Not,
        "cnot" => IntOp::CNot,
        "shl" => IntOp::Shl,
        "shr" => IntOp::Shr,
        "popc" => IntOp::Popc,
        "clz" => IntOp::Clz,
        "brev" => IntOp::Brev,
        "bfind" => IntOp::Bfind { shiftamt: m.has("shiftamt") },
        "fns" => IntOp::Fns,
        "bfe" => IntOp::Bfe,
        "bfi" => IntOp::Bfi,
        "lop3" => IntOp::Lop3,
        "prmt" => IntOp::Prmt(match m.one_of(&["f4e", "b4e", "rc8", "ecl", "ecr", "rc16"]) {
            Some("f4e") => PrmtMode::F4e,
            Some("b4e") => PrmtMode::B4e,
            Some("rc8") => PrmtMode::Rc8,
            Some("ecl") => PrmtMode::Ecl,
            Some("ecr") => PrmtMode::Ecr,
            Some("rc16") => PrmtMode::Rc16,
            _ => PrmtMode::Generic,
        }),
        "shf" => {
            let left = match m.one_of(&["l", "r"]) {
                Some("l") => true,
                Some("r") => false,
                _ => return Err("shf needs .l or .r".into()),
            };
            let wrap = match m.one_of(&["wrap", "clamp"]) {
                Some("wrap") => true,
                Some("clamp") => false,
                _ => return Err("shf needs .wrap or .clamp".into()),
            };
            IntOp::Shf { left, wrap }
        }
        "dp4a" => {
            let types = m.types();
            if types.len() != 2 {
                return Err("dp4a needs two types".into());
            }
            let c = OpdCx { ctx, space: Space::Generic, ty: ScalarType::B32 };
            let s = all[1..].iter().map(|o| c.src(o)).collect::<Result<Vec<_>, _>>()?;
            if s.len() != 3 {
                return Err("expected 4 operands".into());
            }
            let op = IntOp::Dp4a { a_signed: types[0].is_signed_int(), b_signed: types[1].is_signed_int() };
            let ty =
                if types[0].is_signed_int() || types[1].is_signed_int() { ScalarType::S32 } else { ScalarType::U32 };
            return Ok((Op::Int(op), ty, c.dst(all[0])?, Opd::Sink, s, Class::Int));
        }
        _ => return Err("unknown opcode".into()),
    };
    let ty = one_type(&m.types())?;
    if ty.is_float() {
        return Err(format!("{base} on a float type"));
    }
    let arity = match op {
        IntOp::Not | IntOp::CNot | IntOp::Popc | IntOp::Clz | IntOp::Brev | IntOp::Bfind { .. } => 1,
        IntOp::Bfe | IntOp::Prmt(_) | IntOp::Shf { .. } | IntOp::Fns => 3,
        IntOp::Bfi | IntOp::Lop3 => 4,
        _ => 2,
    };
    if all.len() != arity + 1 {
        return Err(format!("expected {} operands", arity + 1));
    }
    let c = OpdCx { ctx, space: Space::Generic, ty };
    let s = all[1..].iter().map(|o| c.src(o)).collect::<Result<Vec<_>, _>>()?;
    Ok((Op::Int(op), ty, c.dst(all[0])?, Opd::Sink, s, Class::Int))
}

/// Conversions between integer types need no float semantics; they are
/// validated and executed here without the numerics layer.
pub(crate) fn is_int_cvt(dst: ScalarType, src: ScalarType) -> bool {
    is_int_type(dst) && is_int_type(src)
}

fn decode_cvt(m: &mut Mods, all: &[&Operand], ctx: &Ctx) -> Result<Decoded, String> {
    let rnd = m.rounding();
    let ftz = m.has("ftz");
    let sat = m.has("sat") | m.has("satfinite");
    let relu = m.has("relu");
    let types = m.types();
    if types.len() != 2 {
        return Err("cvt needs a destination and a source type".into());
    }
    let (dst, src) = (types[0], types[1]);
    let c = OpdCx { ctx, space: Space::Generic, ty: src };
    if matches!(dst, ScalarType::F16x2 | ScalarType::Bf16x2) && src == ScalarType::F32 {
        if all.len() != 3 {
            return Err("expected 3 operands".into());
        }
        let rnd = rnd.unwrap_or(Rounding::Rn);
        let s = vec![c.src(all[1])?, c.src(all[2])?];
        return Ok((Op::CvtPack { rnd, relu }, dst, c.dst(all[0])?, Opd::Sink, s, Class::Conversion));
    }
    if all.len() != 2 {
        return Err("expected 2 operands".into());
    }
    if is_int_cvt(dst, src) {
        if rnd.is_some() || relu || ftz {
            return Err("rounding/relu/ftz on an integer conversion".into());
        }
    } else if crate::numerics::cvt_is_plain(dst, src, rnd, ftz, sat, relu) {
        // Executed as a plain Rust cast; known valid.
    } else {
        numerics::cvt_is_valid(dst, src, rnd, sat, relu)?;
    }
    Ok((Op::Cvt { src, rnd, ftz, sat, relu }, dst, c.dst(all[0])?, Opd::Sink, vec![c.src(all[1])?], Class::Conversion))
}

fn decode_mma(m: &mut Mods, all: &[&Operand], ctx: &Ctx) -> Result<Decoded, String> {
    if !(m.has("sync") && m.has("aligned")) {
        return Err("mma needs .sync.aligned".into());
    }
    if m.has("satfinite") {
        return Err("mma .satfinite (saturating integer accumulation) is not supported".into());
    }
    let shape = m.parts.first().copied().ok_or("missing shape")?;
    let dims: Vec<u32> = shape
        .strip_prefix('m')
        .and_then(|r| {
            let (mm, r) = r.split_once('n')?;
            let (nn, kk) = r.split_once('k')?;
            Some(vec![mm.parse().ok()?, nn.parse().ok()?, kk.parse().ok()?])
        })
        .ok_or_else(|| format!("bad shape `{shape}`"))?;
    m.parts.remove(0);
    let a_row = m.has("row");
    let b_col = m.has("col");
    let types = m.types();
    let [d_ty, a_ty, b_ty, c_ty] = match types.as_slice() {
        [d, a, b, c] => [*d, *a, *b, *c],
        [d, c] => [*d, ScalarType::F16, ScalarType::F16, *c],
        _ => return Err("mma needs .dtype.atype.btype.ctype".into()),
    };
    let desc = MmaDesc { m: dims[0], n: dims[1], k: dims[2], a_row, b_col, d_ty, a_ty, b_ty, c_ty };
    let (na, nb, nc, nd) = tensor::mma_fragment_regs(&desc)?;
    if all.len() != 4 {
        return Err("expected 4 operands".into());
    }
    let c = OpdCx { ctx, space: Space::Generic, ty: ScalarType::B32 };
    let count = |o: &Opd| if let Opd::Vec(v) = o { v.len() } else { 1 };
    let d = c.dst(all[0])?;
    let s = vec![c.src(all[1])?, c.src(all[2])?, c.src(all[3])?];
    if count(&d) != nd || count(&s[0]) != na || count(&s[1]) != nb || count(&s[2]) != nc {
        return Err(format!("fragment register counts must be D {nd}, A {na}, B {nb}, C {nc}"));
    }
    let name = format!(
        "mma.m{}n{}k{}.{}.{}.{}.{}",
        desc.m,
        desc.n,
        desc.k,
        type_name(d_ty),
        type_name(a_ty),
        type_name(b_ty),
        type_name(c_ty)
    );
    let regs = [na as u8, nb as u8, nc as u8, nd as u8];
    Ok((Op::Mma { desc, regs, name }, d_ty, d, Opd::Sink, s, Class::Tensor))
}

/// `wmma.load.{a,b,c}.sync.aligned.{layout}.{shape}{.space}.{type} r, [p]{, stride}`,
/// `wmma.store.d.sync.aligned.{layout}.{shape}{.space}.{type} [p], r{, stride}`,
/// `wmma.mma.sync.aligned.{alayout}.{blayout}.{shape}.{dtype}{.atype.btype}.{ctype} d, a, b, c`.
fn decode_wmma(m: &mut Mods, all: &[&Operand], ctx: &Ctx) -> Result<Decoded, String> {
    if !(m.has("sync") && m.has("aligned")) {
        return Err("wmma needs .sync.aligned".into());
    }
    let kind = m.one_of(&["load", "store", "mma"]).ok_or("only wmma.load, wmma.store and wmma.mma are supported")?;
    let which = match kind {
        "mma" => None,
        _ => Some(match m.one_of(&["a", "b", "c", "d"]) {
            Some("a") => WmmaMatrix::A,
            Some("b") => WmmaMatrix::B,
            Some("c" | "d") => WmmaMatrix::C,
            _ => return Err("wmma.load/store needs .a, .b, .c or .d".into()),
        }),
    };
    let shape = m
        .one_of(&["m16n16k16", "m8n32k16", "m32n8k16"])
        .and_then(WmmaShape::parse)
        .ok_or("wmma: supported shapes are m16n16k16, m8n32k16 and m32n8k16")?;
    let count = |o: &Opd| if let Opd::Vec(v) = o { v.len() } else { 1 };
    let c = OpdCx { ctx, space: Space::Generic, ty: ScalarType::B32 };
    if kind == "mma" {
        let (a_row, b_col) = (m.one_of(&["row", "col"]), m.one_of(&["row", "col"]));
        if a_row.is_none() || b_col.is_none() {
            return Err("wmma.mma needs the layouts of A and B".into());
        }
        let (d_ty, ab, c_ty) = match m.types().as_slice() {
            [d, a, b, c] if a == b => (*d, *a, *c),
            [d, c] => (*d, ScalarType::F16, *c),
            _ => return Err("wmma.mma needs .dtype.ctype (f16 inputs) or .dtype.atype.btype.ctype".into()),
        };
        if all.len() != 4 {
            return Err("expected 4 operands".into());
        }
        let regs = |which, ty| wmma_fragment_regs(shape, which, ty);
        let want = [
            regs(WmmaMatrix::C, d_ty)?,
            regs(WmmaMatrix::A, ab)?,
            regs(WmmaMatrix::B, ab)?,
            regs(WmmaMatrix::C, c_ty)?,
        ];
        if ab == ScalarType::Bf16 && (c_ty, d_ty) != (ScalarType::F32, ScalarType::F32) {
            return Err("wmma.mma with .bf16 inputs accumulates in .f32".into());
        }
        let d = c.dst(all[0])?;
        let s = vec![c.src(all[1])?, c.src(all[2])?, c.src(all[3])?];
        let got = [count(&d), count(&s[0]), count(&s[1]), count(&s[2])];
        if got != want {
            return Err(format!("wmma.mma fragment register counts must be D, A, B, C = {want:?}"));
        }
        return Ok((Op::Wmma(WmmaInst::Mma { shape, ab, c_ty, d_ty }), d_ty, d, Opd::Sink, s, Class::Tensor));
    }
    let which = which.unwrap_or(WmmaMatrix::C);
    let row = match m.one_of(&["row", "col"]) {
        Some(l) => l == "row",
        None => return Err("wmma.load/store needs .row or .col".into()),
    };
    let space = m.space();
    if !matches!(space, Space::Generic | Space::Shared | Space::Global) {
        return Err("wmma.load/store address generic, .shared or .global memory".into());
    }
    let ty = one_type(&m.types())?;
    let regs = wmma_fragment_regs(shape, which, ty)?;
    if kind == "store" && which != WmmaMatrix::C {
        return Err("wmma.store stores .d".into());
    }
    if !(2..=3).contains(&all.len()) {
        return Err("expected a fragment, an address and an optional stride".into());
    }
    let a = OpdCx { ctx, space, ty: ScalarType::B64 };
    let stride = match all.get(2) {
        Some(o) => c.src(o)?,
        None => Opd::Sink,
    };
    let (frag_at, addr_at) = if kind == "load" { (0, 1) } else { (1, 0) };
    let frag = if kind == "load" { c.dst(all[frag_at])? } else { c.src(all[frag_at])? };
    if count(&frag) != regs {
        return Err(format!("a {which:?} fragment of .{ty:?} for {shape:?} has {regs} registers"));
    }
    let addr = a.src(all[addr_at])?;
    let regs = regs as u8;
    Ok(if kind == "load" {
        let op = WmmaInst::Load { which, shape, row, space, ty, regs };
        (Op::Wmma(op), ty, frag, Opd::Sink, vec![addr, stride], space_class(space))
    } else {
        let op = WmmaInst::Store { shape, row, space, ty, regs };
        (Op::Wmma(op), ty, Opd::Sink, Opd::Sink, vec![addr, stride, frag], space_class(space))
    })
}

fn type_name(t: ScalarType) -> String {
    format!("{t:?}").to_ascii_lowercase()
}

/// Module-scope `.global`/`.const` initialisers as bytes (zero where absent,
/// as the ISA specifies).
pub(crate) fn initial_bytes(v: &VarDecl) -> Result<Vec<u8>, LoadError> {
    let size = v.size_bytes() as usize;
    let mut out = vec![0u8; size];
    let elem = v.ty.size_bytes() as usize;
    for (k, o) in v.init.iter().enumerate() {
        let bits = match o {
            Operand::Int(b) => *b,
            Operand::F32(b) if v.ty == ScalarType::F64 => (f32::from_bits(*b) as f64).to_bits(),
            Operand::F32(b) => *b as u64,
            Operand::F64(b) if v.ty == ScalarType::F32 => (f64::from_bits(*b) as f32).to_bits() as u64,
            Operand::F64(b) => *b,
            _ => return Err(err(v.line, format!("initialiser {o:?} of `{}` is not supported", v.name))),
        };
        let at = k * elem;
        if at + elem > size {
            return Err(err(v.line, format!("too many initialisers for `{}`", v.name)));
        }
        out[at..at + elem].copy_from_slice(&bits.to_le_bytes()[..elem]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::memory::GlobalMemory;
    use crate::module::Module;
    use crate::ptx::ir::{Op, Opd, Space};

    const HEAD: &str = ".version 9.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 p)\n{\n.reg .pred %p<3>;\n.reg .b32 %r<9>;\n.reg .b64 %rd<9>;\n";

    fn load_body(body: &str) -> Result<Module, crate::module::LoadError> {
        let mem = GlobalMemory::new(1 << 20);
        Module::load(&format!("{HEAD}{body}\nret;\n}}\n"), &mem)
    }

    #[test]
    fn every_unknown_form_is_a_load_error_with_its_line() {
        for (body, needle) in [
            ("ld.global.weird.f32 %r1, [%rd1];", "ld.global.weird.f32"),
            ("frobnicate.b32 %r1, %r2;", "frobnicate.b32"),
            ("add.s32 %r1, %r2, %r99;", "%r99"),
            ("bra $L_nowhere;", "$L_nowhere"),
            ("call.uni f, (%r1);", "call.uni"),
            ("mad.cc.wide.u32 %rd1, %r2, %r3, %rd4;", "mad.cc.wide.u32"),
            ("shfl.down.b32 %r1, %r2, 1, 31;", "shfl.down.b32"),
            ("mbarrier.arrive.shared.b32 %r1, [%r2];", "mbarrier.arrive.shared.b32"),
            ("cp.async.bulk.tensor.2d.shared::cluster.global.im2col.mbarrier::complete_tx::bytes [%r1], [%rd1, {%r2, %r3}], [%r4];", "im2col"),
            ("brx.idx %r1, $nowhere;", "$nowhere"),
            ("ld.global.v4.b128 {%rd1, %rd2, %rd3, %rd4}, [%rd5];", "ld.global.v4.b128"),
            ("set.gt.f16x2.f32 %r1, %r2, %r3;", "set.gt.f16x2.f32"),
            ("mov.b128 %rd1, 5;", "mov.b128"),
        ] {
            let e = load_body(body).err().unwrap_or_else(|| panic!("`{body}` must not load"));
            assert_eq!(e.line, 9, "{e}");
            assert!(e.message.contains(needle), "`{body}`: {e}");
        }
    }

    /// Inline-asm shapes: nested scopes redeclaring a name, `.reg` with its
    /// type glued on, a `.branchtargets` list, `.b128` registers (two slots).
    #[test]
    fn scopes_branch_targets_and_b128_registers() {
        let m = load_body(
            "{ .reg.b32 t; mov.b32 t, 1; { .reg .b32 t; mov.b32 t, 2; } add.u32 %r1, t, 0; }\n\
             ts: .branchtargets $A, $B;\nbrx.idx.uni %r1, ts;\n$A:\nbra.uni $B;\n$B:\n\
             { .reg .b128 q<2>; mov.b128 q0, {%rd1, %rd2}; mov.b128 q1, q0; st.global.b128 [%rd3], q1; }",
        )
        .unwrap();
        let k = &m.kernels[0];
        let movs: Vec<&Opd> = k.insts.iter().filter(|i| i.op == Op::Mov).map(|i| &i.d).collect();
        assert_ne!(movs[0], movs[1], "the inner `t` is a register of its own");
        assert_eq!(k.insts[2].s[0], *movs[0], "after the inner scope, `t` is the outer one again");
        let brx = k.insts.iter().find(|i| matches!(i.op, Op::BrxIdx { .. })).unwrap();
        assert_eq!(brx.op, Op::BrxIdx { targets: vec![4, 5] });
        let st = k.insts.iter().find(|i| matches!(i.op, Op::St { .. })).unwrap();
        assert_eq!(st.op, Op::St { space: Space::Global, vec: 2, cluster: false });
        let copies: Vec<&Opd> = k.insts.iter().filter(|i| i.op == Op::Copy).map(|i| &i.d).collect();
        assert_eq!(st.s[1], *copies[1], "st.b128 stores both halves of q1");
        match (copies[0], copies[1]) {
            (Opd::Vec(q0), Opd::Vec(q1)) => {
                assert_eq!((q0.len(), q1.len()), (2, 2));
                let (Opd::Reg(lo), Opd::Reg(hi)) = (&q1[0], &q1[1]) else { panic!("{q1:?}") };
                assert_eq!(hi - lo, 1, "a .b128 register is two consecutive slots");
                assert_eq!(q0[1], Opd::Reg(lo - 1), "q0 lies just below q1");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Labels are local to their `{ }` block: inline asm with a wait loop
    /// (`LAB_WAIT: ... @P1 bra DONE; bra LAB_WAIT; DONE:`, as in CUTLASS's
    /// mbarrier wait) inlined twice into one function declares each label
    /// twice, each branch going to its own block's; a block sees its
    /// enclosing blocks' labels, not the reverse.
    #[test]
    fn labels_are_scoped_to_their_block() {
        let wait = "{ LOOP: add.s32 %r1, %r1, 1; setp.lt.s32 %p1, %r1, 4; @%p1 bra LOOP; bra OUT; }";
        let m = load_body(&format!("{wait}\n{wait}\nOUT:\nmov.u32 %r2, 0;")).unwrap();
        let k = &m.kernels[0];
        let targets: Vec<u32> = k
            .insts
            .iter()
            .filter_map(|i| match i.op {
                Op::Bra { target } => Some(target),
                _ => None,
            })
            .collect();
        assert_eq!(targets, vec![0, 8, 4, 8], "each loop branches to its own LOOP, both leave to the outer OUT");
        let Err(err) = load_body("{ INNER: mov.u32 %r2, 0; }\nbra INNER;") else {
            panic!("outer branch to an inner label")
        };
        assert!(err.message.contains("INNER"), "{err}");
        let Err(err) = load_body("{ L: mov.u32 %r2, 0; L: mov.u32 %r2, 1; }") else {
            panic!("label twice in one block")
        };
        assert!(err.message.contains("defined twice"), "{err}");
    }

    #[test]
    fn kernel_info_layout() {
        let mem = GlobalMemory::new(1 << 20);
        let ptx = ".version 9.0\n.target sm_80\n.address_size 64\n.shared .align 8 .b8 g_sh[24];\n\
            .visible .entry k(.param .u32 a, .param .align 8 .b8 s[20], .param .u16 c) .maxntid 256, 1, 1\n{\n\
            .local .align 4 .b8 depot[12];\n.shared .align 16 .b8 tile[100];\n.reg .b32 %r<4>;\nret;\n}\n";
        let m = Module::load(ptx, &mem).unwrap();
        let k = m.kernel("k").unwrap();
        let offs: Vec<(u32, u32)> = k.params.iter().map(|p| (p.offset, p.size)).collect();
        assert_eq!(offs, vec![(0, 4), (8, 20), (28, 2)]);
        assert_eq!(k.param_bytes, 30);
        assert_eq!(k.static_shared_bytes, 32 + 100);
        assert_eq!(k.local_bytes, 12);
        assert_eq!(k.max_threads_per_block, Some(256));
        assert_eq!(m.kernels().len(), 1);
        assert!(m.kernel("nope").is_none());
    }

    /// Every prefix of a module, and the module with each line dropped,
    /// loads or fails with an error — never a panic.
    #[test]
    fn malformed_text_never_panics() {
        let full = format!(
            "{HEAD}.shared .align 4 .b8 sm[64];\nmov.u32 %r1, %tid.x;\nsetp.lt.u32 %p1, %r1, 4;\n@%p1 bra $L_x;\n\
             ld.param.u64 %rd1, [p];\nshl.b32 %r2, %r1, 2;\nmov.u32 %r3, sm;\nadd.s32 %r4, %r3, %r2;\n\
             st.shared.u32 [%r4+4], %r1;\nbar.sync 0;\nshfl.sync.bfly.b32 %r5|%p2, %r1, 1, 31, -1;\n\
             $L_x:\nret;\n}}\n"
        );
        let mem = GlobalMemory::new(1 << 20);
        for end in 0..full.len() {
            let _ = Module::load(&full[..end], &mem);
        }
        let lines: Vec<&str> = full.lines().collect();
        for skip in 0..lines.len() {
            let text: Vec<&str> = lines.iter().enumerate().filter(|(i, _)| *i != skip).map(|(_, l)| *l).collect();
            let _ = Module::load(&text.join("\n"), &mem);
        }
        assert!(Module::load(&full, &mem).is_ok());
        for bad in [
            "bar.sync;",
            ".reg .b32 %big<99999999>;",
            ".local .b8 huge[99999999999];",
            ".shared .b8 a[4294967296][4294967296];",
        ] {
            assert!(load_body(bad).is_err(), "`{bad}`");
        }
    }

    #[test]
    fn cache_hint_operand_is_accepted() {
        assert!(load_body("ld.global.L2::cache_hint.u32 %r1, [%rd1], %rd2;").is_ok());
        assert!(load_body("ld.global.u32 %r1, [%rd1], %rd2;").is_err());
        let m = load_body("cp.async.cg.shared.global.L2::cache_hint [%r1], [%rd1], 16, %rd2;").unwrap();
        assert_eq!(m.kernels[0].insts[0].s.len(), 2, "the policy is not a src-size");
        let m = load_body("cp.async.cg.shared.global.L2::cache_hint [%r1], [%rd1], 16, %r2, %rd2;").unwrap();
        assert_eq!(m.kernels[0].insts[0].s.len(), 3);
    }
}

//! The executable form of a kernel: a flat instruction list with registers
//! resolved to dense indices, symbols to addresses, labels to instruction
//! indices and every modifier decoded — nothing is looked up by name at run time.

use crate::numerics::{FloatOp, Rounding, SpecialOp};
use crate::ptx::info::KernelInfo;
use crate::tensor::{MmaDesc, WgmmaOp, WmmaMatrix, WmmaShape};
use crate::types::ScalarType;

pub(crate) use super::async_ir::{AsyncOp, ClusterSreg};

/// Where shared, local and param memory appear in the generic address space.
/// Global allocations live far above (see `memory`), so a generic address
/// tells its space by its window.
pub(crate) const PARAM_WINDOW: u64 = 0x0000_4000_0000_0000;
pub(crate) const SHARED_WINDOW: u64 = 0x0000_5000_0000_0000;
pub(crate) const LOCAL_WINDOW: u64 = 0x0000_6000_0000_0000;
pub(crate) const WINDOW_SIZE: u64 = 1 << 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    Global,
    Shared,
    Local,
    Param,
    Const,
    Generic,
}

impl Space {
    pub(crate) fn window(self) -> u64 {
        match self {
            Space::Shared => SHARED_WINDOW,
            Space::Local => LOCAL_WINDOW,
            Space::Param => PARAM_WINDOW,
            _ => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sreg {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
    NWarpId,
    SmId,
    NSmId,
    GridId,
    LaneMaskEq,
    LaneMaskLt,
    LaneMaskLe,
    LaneMaskGt,
    LaneMaskGe,
    Clock,
    Clock64,
    GlobalTimer,
    DynSmemSize,
    TotalSmemSize,
    Cluster(ClusterSreg),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Opd {
    Reg(u32),
    /// `!%p` as a source.
    NotPred(u32),
    Imm(u64),
    Sreg(Sreg),
    /// `[base + off]`; without base an absolute (space-relative) address.
    Addr {
        base: Option<u32>,
        off: i64,
    },
    Vec(Box<[Opd]>),
    Sink,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IntOp {
    Add,
    AddSat,
    Sub,
    SubSat,
    /// `add.cc`/`addc{.cc}`/`sub.cc`/`subc{.cc}`: carry in, carry out.
    AddCarry {
        carry_in: bool,
        carry_out: bool,
    },
    SubCarry {
        carry_in: bool,
        carry_out: bool,
    },
    /// `mad{.lo,.hi}.cc`/`madc{.lo,.hi}{.cc}`: the low or high half of the
    /// product plus the addend, with carry in and out.
    MadCarry {
        hi: bool,
        carry_in: bool,
        carry_out: bool,
    },
    MulLo,
    MulHi,
    MulWide,
    Mul24Lo,
    MadLo,
    MadHi,
    MadWide,
    Mad24Lo,
    Div,
    Rem,
    Min,
    Max,
    Abs,
    Neg,
    Sad,
    And,
    Or,
    Xor,
    Not,
    CNot,
    Shl,
    Shr,
    Popc,
    Clz,
    Brev,
    Bfind {
        shiftamt: bool,
    },
    Fns,
    Bfe,
    Bfi,
    Prmt(PrmtMode),
    Lop3,
    Shf {
        left: bool,
        wrap: bool,
    },
    Dp4a {
        a_signed: bool,
        b_signed: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrmtMode {
    Generic,
    F4e,
    B4e,
    Rc8,
    Ecl,
    Ecr,
    Rc16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BoolOp {
    And,
    Or,
    Xor,
}

/// f32/f64 arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FArith {
    Add,
    Sub,
    Mul,
    Fma,
    Div,
    DivApprox,
    Abs,
    Neg,
    Min { nan: bool },
    Max { nan: bool },
    Sqrt,
    Rcp,
    Rsqrt,
    Copysign,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TestKind {
    Finite,
    Infinite,
    Number,
    NotANumber,
    Normal,
    Subnormal,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShflMode {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteMode {
    All,
    Any,
    Uni,
    Ballot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BarKind {
    /// `bar.sync`/`barrier.sync`: wait.
    Sync,
    /// `bar.arrive`: count, do not wait.
    Arrive,
    /// `bar.red.{popc,and,or}`: wait and reduce a predicate over the CTA.
    Red(BarRed),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BarRed {
    Popc,
    And,
    Or,
}

/// Counter classes (`Counters::warp_instructions_by_class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Int,
    Fp32,
    Fp16,
    Fp64,
    Conversion,
    Control,
    MemGlobal,
    MemShared,
    MemLocal,
    MemParam,
    Tensor,
    Sync,
    Collective,
    Special,
    Other,
}

pub(crate) const CLASS_COUNT: usize = 15;

impl Class {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Int => "int",
            Class::Fp32 => "fp32",
            Class::Fp16 => "fp16",
            Class::Fp64 => "fp64",
            Class::Conversion => "conversion",
            Class::Control => "control",
            Class::MemGlobal => "memory_global",
            Class::MemShared => "memory_shared",
            Class::MemLocal => "memory_local",
            Class::MemParam => "memory_param",
            Class::Tensor => "tensor",
            Class::Sync => "sync",
            Class::Collective => "collective",
            Class::Special => "special",
            Class::Other => "other",
        }
    }
    pub(crate) const ALL: [Class; CLASS_COUNT] = [
        Class::Int,
        Class::Fp32,
        Class::Fp16,
        Class::Fp64,
        Class::Conversion,
        Class::Control,
        Class::MemGlobal,
        Class::MemShared,
        Class::MemLocal,
        Class::MemParam,
        Class::Tensor,
        Class::Sync,
        Class::Collective,
        Class::Special,
        Class::Other,
    ];
}

/// A decoded `wmma` instruction. `regs`: the fragment's registers per lane;
/// `row`: the memory layout is row-major (`.row`), else column-major.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum WmmaInst {
    Load { which: WmmaMatrix, shape: WmmaShape, row: bool, space: Space, ty: ScalarType, regs: u8 },
    Store { shape: WmmaShape, row: bool, space: Space, ty: ScalarType, regs: u8 },
    Mma { shape: WmmaShape, ab: ScalarType, c_ty: ScalarType, d_ty: ScalarType },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
    Mov,
    /// `cluster`: a `.shared::cluster` access (its address may name another
    /// CTA of the cluster, see `exec::cluster`).
    Ld {
        space: Space,
        vec: u8,
        cluster: bool,
    },
    St {
        space: Space,
        vec: u8,
        cluster: bool,
    },
    /// `cvta.to.space` (to_generic false) or `cvta.space`.
    Cvta {
        to_generic: bool,
        space: Space,
    },
    Isspacep(Space),
    Int(IntOp),
    Setp {
        cmp: Cmp,
        comb: Option<BoolOp>,
    },
    /// `set.cmp{.bool}.dtype.stype`; `ty` is the source type.
    Set {
        cmp: Cmp,
        comb: Option<BoolOp>,
        dty: ScalarType,
    },
    Selp,
    /// `slct.dtype.ctype`: `ty` the data type, `cty` the comparand's.
    Slct {
        cty: ScalarType,
    },
    Float {
        op: FArith,
        rnd: Option<Rounding>,
        ftz: bool,
        sat: bool,
    },
    Half {
        op: FloatOp,
        rnd: Option<Rounding>,
        ftz: bool,
        sat: bool,
    },
    Special {
        op: SpecialOp,
        ftz: bool,
    },
    Testp(TestKind),
    /// `ty` is the destination type.
    Cvt {
        src: ScalarType,
        rnd: Option<Rounding>,
        ftz: bool,
        sat: bool,
        relu: bool,
    },
    CvtPack {
        rnd: Rounding,
        relu: bool,
    },
    Bra {
        target: u32,
    },
    /// `brx.idx index, tlist`: jump to `targets[index]` (resolved like `Bra`).
    BrxIdx {
        targets: Vec<u32>,
    },
    /// Element-wise copy of 64-bit register slots: `d` and `s[0]` are vectors
    /// of equal length (how `mov.b128` moves its two halves).
    Copy,
    /// `call __assertfail, (message, file, line, function, char_size)`: the
    /// five operands address the caller's argument variables in local memory.
    AssertFail,
    /// `call (ret), vprintf, (format, args)`: device `printf`; `d` and the two
    /// operands address the caller's variables in local memory.
    Printf,
    Exit,
    Trap,
    Bar {
        kind: BarKind,
    },
    WarpSync,
    Shfl(ShflMode),
    Vote(VoteMode),
    Match {
        all: bool,
    },
    Redux(IntOp),
    Activemask,
    Atom {
        space: Space,
        op: AtomOp,
        ret: bool,
    },
    Mma {
        desc: MmaDesc,
        regs: [u8; 4],
        name: String,
    },
    /// `generic`: the addresses are generic (no `.shared`), and must fall
    /// in the shared window.
    Ldmatrix {
        num: u8,
        trans: bool,
        generic: bool,
    },
    Stmatrix {
        num: u8,
        trans: bool,
        generic: bool,
    },
    CpAsync {
        bytes: u8,
    },
    CpAsyncCommit,
    /// `cp.async.wait_group keep`; [`WAIT_ALL`] for `cp.async.wait_all`
    /// (which also covers copies not yet committed to a group).
    CpAsyncWait {
        keep: u32,
    },
    /// sm_90 mbarrier, bulk-copy, proxy-fence and cluster instructions (`exec::async_proxy`).
    Async(AsyncOp),
    /// Ordering, cache and scheduling hints with no effect here.
    Nop,
    /// `wmma.load`, `wmma.mma`, `wmma.store`: warp collectives (`tensor::wmma`).
    Wmma(WmmaInst),
    /// `wgmma.*`: warpgroup collectives (`exec::wgmma`).
    Wgmma(WgmmaOp),
}

pub(crate) const WAIT_ALL: u32 = u32::MAX;

#[derive(Clone, Debug)]
pub(crate) struct Inst {
    pub op: Op,
    pub ty: ScalarType,
    pub guard: Option<(u32, bool)>,
    pub d: Opd,
    /// A second destination (`%r|%p` of `shfl`, `setp`'s second predicate).
    pub d2: Opd,
    pub s: Vec<Opd>,
    pub class: Class,
    pub line: u32,
}

impl Inst {
    /// A warp collective: executes only once every lane of its member mask is there.
    pub(crate) fn is_collective(&self) -> bool {
        matches!(
            self.op,
            Op::WarpSync
                | Op::Shfl(_)
                | Op::Vote(_)
                | Op::Match { .. }
                | Op::Redux(_)
                | Op::Mma { .. }
                | Op::Wmma(_)
                | Op::Ldmatrix { .. }
                | Op::Stmatrix { .. }
        )
    }
}

/// A lowered kernel entry.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub info: KernelInfo,
    pub insts: Vec<Inst>,
    pub nregs: u32,
    /// Register holding the carry flag of `add.cc`/`addc` (one per kernel).
    pub carry_reg: u32,
    /// The registers a CTA clears before it starts (`None`: all of them);
    /// the others every thread writes before reading (`reg_init`).
    pub clear_regs: Option<Vec<u32>>,
    /// Where dynamic (`extern .shared`) memory starts; static shared is below.
    pub dynamic_shared_offset: u32,
}

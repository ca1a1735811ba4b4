//! What the front end reports about a module: why it failed to load, and
//! each kernel's interface (re-exported as `crate::module`'s API).

/// Why a module failed to load: names the line and what was wrong with it,
/// e.g. `line 42: unsupported instruction `tex.2d.v4.f32.f32``.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// 1-based line in the PTX text (0 if not tied to a line).
    pub line: u32,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LoadError {}

/// One `.param` of a kernel entry, laid out in the packed parameter buffer that
/// `launch` takes (each parameter at `offset`, aligned to `align`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub align: u32,
}

/// What the driver needs to know about a kernel (`cuFuncGetAttribute`, param sizes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    pub name: String,
    pub params: Vec<ParamInfo>,
    /// Size of the packed parameter buffer.
    pub param_bytes: u32,
    /// Static `.shared` bytes the kernel uses (module-scope and function-scope).
    pub static_shared_bytes: u32,
    /// Per-thread `.local` bytes.
    pub local_bytes: u32,
    /// From `.maxntid` / `.reqntid` if present.
    pub max_threads_per_block: Option<u32>,
    /// From `.reqnctapercluster` if present: the CTAs of each cluster per
    /// dimension, which every launch of the kernel uses.
    pub cluster_dims: Option<[u32; 3]>,
    /// Registers declared (an estimate of the hardware count; for attributes only).
    pub num_regs: u32,
}

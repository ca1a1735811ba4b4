//! What the four checks report.

/// Which check found it, and what kind of fault it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// memcheck: global/shared/local access outside any live allocation or range.
    OutOfBounds,
    /// memcheck: an access not aligned to its size.
    Misaligned,
    /// racecheck: two threads touched the same shared bytes between barriers, one writing.
    Race,
    /// initcheck: read of global or shared bytes nothing wrote.
    Uninitialized,
    /// synccheck: barrier reached at different instructions, or a collective not
    /// reached by every lane of its member mask.
    DivergentSync,
    /// synccheck: no thread can make progress.
    Deadlock,
    /// A trap (`trap`, `brkpt`) or an unrecoverable execution fault.
    Trap,
    /// A device-side `assert` failed (`__assertfail`); the detail is the line
    /// the CUDA runtime prints for it.
    Assert,
    /// wgmma: the accumulator or register A of a `wgmma.mma_async` read or
    /// written by another instruction before a `wgmma.wait_group` covering it.
    WgmmaRegisterInFlight,
    /// wgmma: shared bytes a `wgmma.mma_async` reads written before a
    /// `wgmma.wait_group` covering it.
    WgmmaOperandOverwritten,
    /// wgmma: a `wgmma.mma_async` without a `wgmma.fence` before it (the
    /// warpgroup's first, or registers it uses accessed since the last fence).
    WgmmaMissingFence,
}

impl FindingKind {
    /// The driver result code the finding surfaces as (docs/emulator.md).
    pub fn cuda_error_code(self) -> u32 {
        match self {
            FindingKind::OutOfBounds => 700, // CUDA_ERROR_ILLEGAL_ADDRESS
            FindingKind::Misaligned => 716,  // CUDA_ERROR_MISALIGNED_ADDRESS
            FindingKind::Trap => 715,        // CUDA_ERROR_ILLEGAL_INSTRUCTION
            FindingKind::Assert => 710,      // CUDA_ERROR_ASSERT
            _ => 719,                        // CUDA_ERROR_LAUNCH_FAILED
        }
    }
}

/// One report: names the kernel, the PTX line, the CTA and thread, the address
/// and the allocation it was nearest to.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub kernel: String,
    /// 1-based line in the PTX text.
    pub ptx_line: u32,
    /// The instruction as written in the PTX.
    pub instruction: String,
    pub cta: [u32; 3],
    pub thread: [u32; 3],
    /// The faulting address (0 where none applies, e.g. a deadlock).
    pub address: u64,
    /// Free text: the state space, access size, nearest allocation `(base, size)`,
    /// the other thread of a race, the barrier of a divergence.
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} in kernel `{}` at PTX line {} (`{}`), CTA ({},{},{}) thread ({},{},{}), address {:#x}: {}",
            self.kind,
            self.kernel,
            self.ptx_line,
            self.instruction,
            self.cta[0],
            self.cta[1],
            self.cta[2],
            self.thread[0],
            self.thread[1],
            self.thread[2],
            self.address,
            self.detail
        )
    }
}

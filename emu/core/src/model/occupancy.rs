//! CTAs resident per SM from a kernel's registers, shared memory and block
//! size, against one GPU's per-SM limits (the CUDA occupancy calculation).

use super::gpus::Gpu;
use super::KernelResources;

/// What limits the CTAs resident on one SM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limiter {
    Registers,
    Shared,
    Threads,
    Blocks,
}

impl Limiter {
    pub fn name(self) -> &'static str {
        match self {
            Limiter::Registers => "registers",
            Limiter::Shared => "shared",
            Limiter::Threads => "threads",
            Limiter::Blocks => "blocks",
        }
    }
}

/// CTAs of `res` resident on one SM of `gpu` (0 when one does not fit), and
/// the limit that decides it (the first of threads, blocks, registers,
/// shared memory to reach the minimum).
pub fn ctas_per_sm(gpu: &Gpu, res: &KernelResources) -> (u32, Limiter) {
    let warps = res.threads_per_cta.div_ceil(32).max(1);
    let by_threads = gpu.max_threads_per_sm / (warps * 32);
    let by_blocks = gpu.max_ctas_per_sm;
    let unit = gpu.register_allocation_unit;
    let per_warp = (res.registers.max(1) * 32).div_ceil(unit) * unit;
    let by_registers = gpu.registers_per_sm / (per_warp * warps);
    let shared = res.static_shared + res.dynamic_shared;
    let by_shared = if shared > gpu.max_shared_bytes_per_cta {
        0
    } else {
        gpu.shared_bytes_per_sm / (shared + gpu.reserved_shared_bytes_per_cta)
    };
    [
        (by_threads, Limiter::Threads),
        (by_blocks, Limiter::Blocks),
        (by_registers, Limiter::Registers),
        (by_shared, Limiter::Shared),
    ]
    .into_iter()
    .min_by_key(|&(n, _)| n)
    .unwrap_or((0, Limiter::Blocks))
}

#[cfg(test)]
mod tests {
    use super::super::gpus::{A100, H100};
    use super::*;

    fn res(registers: u32, threads: u32, shared: u32) -> KernelResources {
        KernelResources {
            registers,
            registers_source: "estimate".into(),
            static_shared: 0,
            dynamic_shared: shared,
            threads_per_cta: threads,
        }
    }

    #[test]
    fn each_limit_can_decide() {
        // 128 threads, 232 registers: 232*32 = 7424 per warp, x4 warps = 29696: 2 CTAs.
        assert_eq!(ctas_per_sm(&A100, &res(232, 128, 48 * 1024)), (2, Limiter::Registers));
        // 48 KB + 1 KB reserved: 164/49 = 3 on A100, 228/49 = 4 on H100.
        assert_eq!(ctas_per_sm(&A100, &res(32, 128, 48 * 1024)), (3, Limiter::Shared));
        assert_eq!(ctas_per_sm(&H100, &res(32, 128, 48 * 1024)), (4, Limiter::Shared));
        assert_eq!(ctas_per_sm(&A100, &res(32, 1024, 0)), (2, Limiter::Threads));
        assert_eq!(ctas_per_sm(&A100, &res(16, 32, 0)), (32, Limiter::Blocks));
        assert_eq!(ctas_per_sm(&A100, &res(32, 128, 200 * 1024)).0, 0);
    }
}

//! The GPUs the model knows: per-SM limits and peak rates. Every number is
//! in docs/perf-model.md's table with its source; the rule that uses them is
//! in `rule`. Nothing here is fitted to a kernel.

/// One GPU's resources, as the model uses them.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpu {
    /// The name `PTX_EMU_MODEL` uses ("a100", "h100", "h200").
    pub name: &'static str,
    /// The ptxas architecture its registers are taken from ("sm_80", "sm_90").
    pub arch: &'static str,
    pub sms: u32,
    /// The clock every per-clock rate is taken at (the datasheet's boost clock).
    pub clock_ghz: f64,
    /// Warp instructions issued per clock per SM (one per scheduler).
    pub issue_per_clock_per_sm: f64,
    /// Dense tensor-core multiply-adds per clock per SM through `mma.sync`,
    /// by operand type: 16-bit floats (f16, bf16), tf32, 8-bit integers, f64.
    pub mma_fma_per_clock_per_sm_16bit: f64,
    pub mma_fma_per_clock_per_sm_tf32: f64,
    pub mma_fma_per_clock_per_sm_int8: f64,
    pub mma_fma_per_clock_per_sm_f64: f64,
    /// Dense multiply-adds per clock per SM through `wgmma.mma_async` with
    /// 16-bit inputs (f16, bf16); 0 where the GPU has no wgmma (sm_80).
    pub wgmma_fma_per_clock_per_sm_16bit: f64,
    /// Shared-memory wavefronts per clock per SM (32 banks of 4 bytes).
    pub shared_wavefronts_per_clock_per_sm: f64,
    /// L2 bytes per clock, whole device.
    pub l2_bytes_per_clock: f64,
    pub l2_bytes: u64,
    /// DRAM bytes per second.
    pub dram_bytes_per_s: f64,
    /// Fixed cost of one launch (start, CTA dispatch, drain), microseconds.
    pub launch_overhead_us: f64,
    /// Cycles between two dependent instructions of one warp (ALU latency).
    pub dependent_issue_cycles: f64,
    /// Cycles of a global load that misses in L1 (round trip to L2/DRAM).
    pub memory_latency_cycles: f64,
    // Occupancy limits per SM.
    pub max_threads_per_sm: u32,
    pub max_ctas_per_sm: u32,
    pub registers_per_sm: u32,
    /// Registers are allocated per warp in units of this many.
    pub register_allocation_unit: u32,
    pub shared_bytes_per_sm: u32,
    pub max_shared_bytes_per_cta: u32,
    /// Shared memory the system reserves per resident CTA.
    pub reserved_shared_bytes_per_cta: u32,
}

/// A100 SXM4 80 GB.
pub const A100: Gpu = Gpu {
    name: "a100",
    arch: "sm_80",
    sms: 108,
    clock_ghz: 1.41,
    issue_per_clock_per_sm: 4.0,
    // 312 TFLOP/s dense f16/bf16 = 108 SMs x 1.41 GHz x 1024 FMA x 2.
    mma_fma_per_clock_per_sm_16bit: 1024.0,
    mma_fma_per_clock_per_sm_tf32: 512.0,
    mma_fma_per_clock_per_sm_int8: 2048.0,
    mma_fma_per_clock_per_sm_f64: 64.0,
    wgmma_fma_per_clock_per_sm_16bit: 0.0,
    shared_wavefronts_per_clock_per_sm: 1.0,
    l2_bytes_per_clock: 5120.0,
    l2_bytes: 40 * 1024 * 1024,
    dram_bytes_per_s: 2039e9,
    launch_overhead_us: 2.0,
    dependent_issue_cycles: 4.0,
    memory_latency_cycles: 500.0,
    max_threads_per_sm: 2048,
    max_ctas_per_sm: 32,
    registers_per_sm: 65536,
    register_allocation_unit: 256,
    shared_bytes_per_sm: 164 * 1024,
    max_shared_bytes_per_cta: 163 * 1024,
    reserved_shared_bytes_per_cta: 1024,
};

/// H100 SXM5 80 GB, running `mma.sync` code (not wgmma).
pub const H100: Gpu = Gpu {
    name: "h100",
    arch: "sm_90",
    sms: 132,
    // 989.4 TFLOP/s dense bf16 (wgmma) = 132 SMs x 1.83 GHz x 2048 FMA x 2.
    clock_ghz: 1.83,
    issue_per_clock_per_sm: 4.0,
    // mma.sync measured at about half of the wgmma rate (494 vs 989 TFLOP/s
    // dense on an H800, arXiv 2501.12084): 1024 FMA per clock per SM, as A100.
    mma_fma_per_clock_per_sm_16bit: 1024.0,
    mma_fma_per_clock_per_sm_tf32: 512.0,
    mma_fma_per_clock_per_sm_int8: 2048.0,
    // 67 TFLOP/s f64 tensor = 132 x 1.83 GHz x 128 FMA x 2 (datasheet; DMMA is mma.sync).
    mma_fma_per_clock_per_sm_f64: 128.0,
    // The datasheet's 989.4 TFLOP/s dense bf16/f16 (f32 accumulate) is the
    // wgmma rate: 989.4e12 / (2 x 132 SMs x 1.83e9) = 2048 FMA per clock per
    // SM, twice A100's per-SM rate (the NVIDIA H100 Tensor Core GPU
    // Architecture whitepaper: twice the A100 SM's dense MMA rate on the same
    // data types, clock for clock).
    wgmma_fma_per_clock_per_sm_16bit: 2048.0,
    shared_wavefronts_per_clock_per_sm: 1.0,
    l2_bytes_per_clock: 5120.0,
    l2_bytes: 50 * 1024 * 1024,
    dram_bytes_per_s: 3350e9,
    launch_overhead_us: 2.0,
    dependent_issue_cycles: 4.0,
    memory_latency_cycles: 500.0,
    max_threads_per_sm: 2048,
    max_ctas_per_sm: 32,
    registers_per_sm: 65536,
    register_allocation_unit: 256,
    shared_bytes_per_sm: 228 * 1024,
    max_shared_bytes_per_cta: 227 * 1024,
    reserved_shared_bytes_per_cta: 1024,
};

/// H200 SXM 141 GB: an H100 with faster, larger HBM3e.
pub const H200: Gpu = Gpu { name: "h200", dram_bytes_per_s: 4800e9, ..H100 };

/// Every GPU of the table.
pub const ALL: [&Gpu; 3] = [&A100, &H100, &H200];

/// The GPU `PTX_EMU_MODEL` calls `name` (case-insensitive).
pub fn by_name(name: &str) -> Option<&'static Gpu> {
    ALL.into_iter().find(|g| g.name.eq_ignore_ascii_case(name.trim()))
}

impl Gpu {
    /// Dense mma.sync peak in TFLOP/s for 16-bit operands.
    pub fn peak_16bit_tflops(&self) -> f64 {
        2.0 * self.mma_fma_per_clock_per_sm_16bit * self.sms as f64 * self.clock_ghz * 1e-3
    }

    /// Dense wgmma peak in TFLOP/s for 16-bit operands (0 without wgmma).
    pub fn wgmma_peak_16bit_tflops(&self) -> f64 {
        2.0 * self.wgmma_fma_per_clock_per_sm_16bit * self.sms as f64 * self.clock_ghz * 1e-3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_match_the_datasheets() {
        assert!((A100.peak_16bit_tflops() - 312.0).abs() < 1.0, "{}", A100.peak_16bit_tflops());
        // mma.sync on Hopper: half the wgmma datasheet rate (989.4 / 2).
        assert!((H100.peak_16bit_tflops() - 494.7).abs() < 1.0, "{}", H100.peak_16bit_tflops());
        assert!((H100.wgmma_peak_16bit_tflops() - 989.4).abs() < 1.0, "{}", H100.wgmma_peak_16bit_tflops());
        assert_eq!(A100.wgmma_peak_16bit_tflops(), 0.0);
        assert_eq!(by_name("H200").map(|g| g.dram_bytes_per_s), Some(4800e9));
        assert_eq!(by_name("v100"), None);
    }
}

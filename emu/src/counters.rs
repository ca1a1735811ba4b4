//! Per-launch counters (EMULATOR.md "What it counts"). Deterministic: the same
//! launch gives the same counts whatever the number of host threads.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    pub kernel: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Sum over threads of instructions executed (predicated-off ones included, as nvprof's inst_executed_thread does not; see `by_class`).
    pub thread_instructions: u64,
    /// Warp-level instructions issued (one per group of lanes executing an instruction together).
    pub warp_instructions: u64,
    /// Warp instructions by class: "int", "fp32", "fp16", "fp64", "conversion", "control",
    /// "memory_global", "memory_shared", "memory_local", "memory_param", "tensor", "sync", "collective", "special", "other".
    pub warp_instructions_by_class: BTreeMap<String, u64>,
    /// Warp-level tensor-core instructions by shape/type, e.g. "mma.m16n8k16.f32.bf16.bf16.f32".
    pub tensor_instructions: BTreeMap<String, u64>,
    /// Warp-level global memory requests.
    pub global_load_requests: u64,
    pub global_store_requests: u64,
    /// Distinct 32-byte sectors touched, summed over requests (coalescing: an
    /// ideal 4-byte-per-lane warp load is 4 sectors per request).
    pub global_load_sectors: u64,
    pub global_store_sectors: u64,
    /// Distinct global bytes read / written over the whole launch (DRAM floor proxy).
    pub global_bytes_read: u64,
    pub global_bytes_written: u64,
    /// Warp-level shared-memory requests (ld/st/atom/ldmatrix/stmatrix/cp.async destination).
    pub shared_requests: u64,
    /// Shared-memory wavefronts (1 per conflict-free request).
    pub shared_wavefronts: u64,
    /// Wavefronts beyond the ideal, from bank conflicts (ordinary accesses).
    pub shared_bank_conflicts: u64,
    /// Of which from ldmatrix/stmatrix.
    pub ldmatrix_bank_conflicts: u64,
    /// CTA barriers executed (warp-level: one per warp per barrier instruction).
    pub barriers: u64,
}

impl Counters {
    /// One JSON object on one line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        todo!()
    }
}

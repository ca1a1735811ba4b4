//! Occupancy queries, answered from sm_80's per-SM limits (threads, blocks,
//! registers, shared memory) and the kernel's declared resources. The
//! register count is the executor's estimate, so results approximate what
//! a real device's compiler and scheduler would give.

use crate::device::{shared_bytes_per_block_optin, shared_bytes_per_sm, RESERVED_SHARED_BYTES_PER_BLOCK};
use crate::guard::{ffi_guard, write_out};
use crate::module::{function_kernel, CUfunction};
use crate::result::{CUresult, DriverResult, CUDA_ERROR_INVALID_VALUE};
use crate::state::driver;
use ptx_emu::module::KernelInfo;
use std::ffi::{c_int, c_uint};

const THREADS_PER_SM: u64 = 2048;
const BLOCKS_PER_SM: u64 = 32;
const REGISTERS_PER_SM: u64 = 65536;
const WARP_SIZE: u64 = 32;
/// Registers are allocated per warp in units of 256.
const REGISTER_ALLOCATION_UNIT: u64 = 256;

/// How many blocks of `block_threads` threads with `dynamic_shared` bytes
/// of dynamic shared memory fit on one SM at once.
pub fn max_active_blocks(kernel: &KernelInfo, block_threads: u32, dynamic_shared: u64) -> DriverResult<u32> {
    if block_threads == 0 || block_threads > kernel.max_threads_per_block.unwrap_or(1024).min(1024) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let warps = u64::from(block_threads).div_ceil(WARP_SIZE);
    let by_threads = THREADS_PER_SM / (warps * WARP_SIZE);
    let registers_per_warp =
        (u64::from(kernel.num_regs.max(1)) * WARP_SIZE).div_ceil(REGISTER_ALLOCATION_UNIT) * REGISTER_ALLOCATION_UNIT;
    let by_registers = REGISTERS_PER_SM / (registers_per_warp * warps);
    let shared = u64::from(kernel.static_shared_bytes) + dynamic_shared;
    if shared > u64::from(shared_bytes_per_block_optin()) {
        return Ok(0);
    }
    let by_shared = u64::from(shared_bytes_per_sm()) / (shared + u64::from(RESERVED_SHARED_BYTES_PER_BLOCK));
    let blocks = BLOCKS_PER_SM.min(by_threads).min(by_registers).min(by_shared);
    Ok(blocks as u32)
}

/// The dynamic shared memory each of `blocks` blocks can have when that many
/// share one SM.
pub fn available_dynamic_shared(kernel: &KernelInfo, blocks: u32, block_threads: u32) -> DriverResult<u64> {
    if blocks == 0 || max_active_blocks(kernel, block_threads, 0)? < blocks {
        return Ok(0);
    }
    let per_block = u64::from(shared_bytes_per_sm()) / u64::from(blocks);
    let usable = per_block
        .saturating_sub(u64::from(RESERVED_SHARED_BYTES_PER_BLOCK))
        .min(u64::from(shared_bytes_per_block_optin()));
    Ok(usable.saturating_sub(u64::from(kernel.static_shared_bytes)))
}

fn positive(value: c_int) -> DriverResult<u32> {
    u32::try_from(value).ok().filter(|v| *v > 0).ok_or(CUDA_ERROR_INVALID_VALUE)
}

/// # Safety
/// `blocks` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    blocks: *mut c_int,
    function: CUfunction,
    block_size: c_int,
    dynamic_shared: usize,
) -> CUresult {
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, function, block_size, dynamic_shared, 0)
}

/// The flags (caching overrides) do not change the answer.
///
/// # Safety
/// `blocks` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    blocks: *mut c_int,
    function: CUfunction,
    block_size: c_int,
    dynamic_shared: usize,
    _flags: c_uint,
) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let (_, kernel) = function_kernel(&state, function)?;
        let count = max_active_blocks(kernel, positive(block_size)?, dynamic_shared as u64)?;
        write_out(blocks, count as c_int)
    })
}

/// # Safety
/// `dynamic_shared` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    dynamic_shared: *mut usize,
    function: CUfunction,
    blocks: c_int,
    block_size: c_int,
) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let (_, kernel) = function_kernel(&state, function)?;
        let bytes = available_dynamic_shared(kernel, positive(blocks)?, positive(block_size)?)?;
        write_out(dynamic_shared, bytes as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(num_regs: u32, static_shared_bytes: u32) -> KernelInfo {
        KernelInfo {
            name: "k".into(),
            params: Vec::new(),
            param_bytes: 0,
            static_shared_bytes,
            local_bytes: 0,
            max_threads_per_block: None,
            cluster_dims: None,
            num_regs,
        }
    }

    #[test]
    fn limited_by_threads_registers_and_shared_memory() {
        // 256 threads, 32 registers: 8 blocks by threads, 8 by registers.
        assert_eq!(max_active_blocks(&kernel(32, 0), 256, 0), Ok(8));
        // 64 registers per thread: 65536 / (64*32*8 warps) = 4 blocks.
        assert_eq!(max_active_blocks(&kernel(64, 0), 256, 0), Ok(4));
        // 48 KB dynamic + 1 KB reserved: 164 KB / 49 KB = 3 blocks.
        assert_eq!(max_active_blocks(&kernel(32, 0), 256, 48 * 1024), Ok(3));
        // Tiny blocks: the 32-blocks-per-SM cap.
        assert_eq!(max_active_blocks(&kernel(16, 0), 32, 0), Ok(32));
        // Over the opt-in limit: nothing fits.
        assert_eq!(max_active_blocks(&kernel(32, 0), 256, 200 * 1024), Ok(0));
        assert_eq!(max_active_blocks(&kernel(32, 0), 2048, 0), Err(CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn available_dynamic_shared_splits_the_sm() {
        // One block alone: capped at the 163 KB opt-in, minus static.
        assert_eq!(available_dynamic_shared(&kernel(32, 1024), 1, 128), Ok(163 * 1024 - 1024));
        // Two blocks: 82 KB each, minus the 1 KB reserved.
        assert_eq!(available_dynamic_shared(&kernel(32, 0), 2, 128), Ok(81 * 1024));
        // More blocks than fit by threads.
        assert_eq!(available_dynamic_shared(&kernel(32, 0), 9, 256), Ok(0));
    }
}

//! `cuLaunchKernel`: checks the launch the way a device does, runs it on the
//! executor to completion, reports findings and keeps the counters.

use crate::device::MAX_THREADS_PER_BLOCK;
use crate::guard::ffi_guard;
use crate::module::{function_kernel, CUfunction};
use crate::occupancy::max_active_blocks;
use crate::params::pack;
use crate::result::{
    CUresult, DriverResult, CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE, CUDA_ERROR_INVALID_VALUE,
    CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, CUDA_ERROR_NOT_FOUND,
};
use crate::state::{driver, handle_of};
use crate::stream::CUstream;
use ptx_emu::counters::Counters;
use ptx_emu::findings::Finding;
use ptx_emu::launch::{launch_with_cluster, CheckOptions, LaunchConfig, LaunchError};
use ptx_emu::module::KernelInfo;
use std::ffi::{c_uint, c_void};

/// The driver code for a launch that could not start.
pub fn launch_error_code(error: &LaunchError) -> CUresult {
    match error {
        LaunchError::KernelNotFound(_) => CUDA_ERROR_NOT_FOUND,
        LaunchError::InvalidConfig(_) | LaunchError::BadParams(_) => CUDA_ERROR_INVALID_VALUE,
        LaunchError::OutOfResources(_) => CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES,
    }
}

/// sm_80's launch limits: block dimensions up to (1024, 1024, 64) and 1024
/// threads (or the kernel's `.maxntid`), grid dimensions up to
/// (2^31-1, 65535, 65535); none may be zero.
const MAX_BLOCK_DIMS: [u32; 3] = [1024, 1024, 64];
const MAX_GRID_DIMS: [u32; 3] = [i32::MAX as u32, 65535, 65535];

/// Refuses, with `CUDA_ERROR_INVALID_VALUE`, the dimensions a device would.
pub fn check_dimensions(kernel: &KernelInfo, grid: [u32; 3], block: [u32; 3]) -> DriverResult {
    let within = |dims: [u32; 3], limits: [u32; 3]| dims.iter().zip(limits).all(|(d, limit)| (1..=limit).contains(d));
    let threads = block.iter().map(|d| u64::from(*d)).product::<u64>();
    let max_threads = kernel.max_threads_per_block.unwrap_or(MAX_THREADS_PER_BLOCK).min(MAX_THREADS_PER_BLOCK);
    if within(grid, MAX_GRID_DIMS) && within(block, MAX_BLOCK_DIMS) && threads <= u64::from(max_threads) {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_VALUE)
    }
}

/// The code a launch with these findings returns: the first finding's
/// (execution stops at the first fault, like the device), or success.
pub fn findings_result(findings: &[Finding]) -> DriverResult {
    match findings.first() {
        Some(finding) => Err(finding.kind.cuda_error_code()),
        None => Ok(()),
    }
}

/// How many of a thread's launches [`RECENT_COUNTERS`] keeps: enough for
/// every launch of one library call (a backward pass makes up to eight).
pub(crate) const RECENT_LAUNCHES: usize = 32;

thread_local! {
    /// Counters of the calling host thread's most recent launches, oldest
    /// first. Per thread, like CUDA's last-error state, so threads launching
    /// at the same time (tests run in parallel) each read their own.
    pub(crate) static RECENT_COUNTERS: std::cell::RefCell<std::collections::VecDeque<Counters>> =
        const { std::cell::RefCell::new(std::collections::VecDeque::new()) };
}

/// A launch as `cuLaunchKernel` describes it.
pub(crate) struct LaunchRequest {
    pub(crate) function: CUfunction,
    pub(crate) grid: [u32; 3],
    pub(crate) block: [u32; 3],
    pub(crate) dynamic_shared_bytes: u32,
    pub(crate) stream: CUstream,
    pub(crate) kernel_params: *const *mut c_void,
    pub(crate) extra: *const *mut c_void,
    /// `cuLaunchCooperativeKernel`: every block must be resident at once.
    pub(crate) cooperative: bool,
    /// `cuLaunchKernelEx`'s cluster dimension attribute, if given.
    pub(crate) cluster: Option<[u32; 3]>,
}

pub(crate) fn launch_kernel(request: LaunchRequest) -> DriverResult {
    let LaunchRequest {
        function,
        grid,
        block,
        dynamic_shared_bytes,
        stream,
        kernel_params,
        extra,
        cooperative,
        cluster,
    } = request;
    let mut state = driver().lock()?;
    let context = state.current_healthy()?;
    state.check_stream(handle_of(stream))?;
    let (record, kernel) = function_kernel(&state, function)?;
    check_dimensions(kernel, grid, block)?;
    // Above the kernel's limit (48 KB minus static by default, raised only
    // through cuFuncSetAttribute) a device refuses the launch.
    if dynamic_shared_bytes > record.max_dynamic_shared_bytes {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if cooperative {
        let threads = block.iter().map(|d| u64::from(*d)).product::<u64>();
        let threads = u32::try_from(threads).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        let resident = u64::from(max_active_blocks(kernel, threads, u64::from(dynamic_shared_bytes))?)
            * u64::from(crate::device::multiprocessors());
        if grid.iter().map(|d| u64::from(*d)).product::<u64>() > resident {
            return Err(CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
        }
    }
    // SAFETY: the caller passes cuLaunchKernel's documented arrays.
    let params = unsafe { pack(kernel, kernel_params, extra) }?;
    let config = LaunchConfig { grid, block, dynamic_shared_bytes };
    let module = &state.modules[&record.module].module;
    let outcome = launch_with_cluster(
        module,
        &kernel.name,
        &config,
        cluster,
        &params,
        driver().memory(),
        &CheckOptions::from_env(),
    );
    let report = outcome.map_err(|error| {
        eprintln!("ptx-emu: {error}");
        launch_error_code(&error)
    })?;
    for finding in &report.findings {
        eprintln!("ptx-emu: {finding}");
    }
    // (`launch` itself appends the counters to PTX_EMU_COUNTERS_FILE.)
    RECENT_COUNTERS.with(|recent| {
        let mut recent = recent.borrow_mut();
        if recent.len() == RECENT_LAUNCHES {
            recent.pop_front();
        }
        recent.push_back(report.counters);
    });
    let result = findings_result(&report.findings);
    if let Err(code) = result {
        state.set_sticky_error(context, code);
    }
    result
}

/// Runs to completion before returning; a fault found by the checks is
/// returned from here and, sticky, from every later call in the context.
///
/// # Safety
/// `kernel_params` and `extra` as cuda.h documents for `cuLaunchKernel`.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    function: CUfunction,
    grid_dim_x: c_uint,
    grid_dim_y: c_uint,
    grid_dim_z: c_uint,
    block_dim_x: c_uint,
    block_dim_y: c_uint,
    block_dim_z: c_uint,
    shared_mem_bytes: c_uint,
    stream: CUstream,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ffi_guard(|| {
        launch_kernel(LaunchRequest {
            function,
            grid: [grid_dim_x, grid_dim_y, grid_dim_z],
            block: [block_dim_x, block_dim_y, block_dim_z],
            dynamic_shared_bytes: shared_mem_bytes,
            stream,
            kernel_params,
            extra,
            cooperative: false,
            cluster: None,
        })
    })
}

/// As `cuLaunchKernel`, refusing grids larger than the device could hold
/// resident at once (`CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE`), as grid-wide
/// synchronisation requires.
///
/// # Safety
/// `kernel_params` as cuda.h documents for `cuLaunchKernel`.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    function: CUfunction,
    grid_dim_x: c_uint,
    grid_dim_y: c_uint,
    grid_dim_z: c_uint,
    block_dim_x: c_uint,
    block_dim_y: c_uint,
    block_dim_z: c_uint,
    shared_mem_bytes: c_uint,
    stream: CUstream,
    kernel_params: *mut *mut c_void,
) -> CUresult {
    ffi_guard(|| {
        launch_kernel(LaunchRequest {
            function,
            grid: [grid_dim_x, grid_dim_y, grid_dim_z],
            block: [block_dim_x, block_dim_y, block_dim_z],
            dynamic_shared_bytes: shared_mem_bytes,
            stream,
            kernel_params,
            extra: std::ptr::null(),
            cooperative: true,
            cluster: None,
        })
    })
}

/// `CUhostFn`: a host function enqueued on a stream.
pub type CUhostFn = Option<unsafe extern "C" fn(user_data: *mut c_void)>;

/// Everything enqueued before has completed (execution is eager), so the
/// function runs now, before this returns, outside the driver's lock (it
/// may not call the driver API, but a misbehaving one must not deadlock it).
///
/// # Safety
/// `function` must be safe to call with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchHostFunc(stream: CUstream, function: CUhostFn, user_data: *mut c_void) -> CUresult {
    ffi_guard(|| {
        {
            let state = driver().lock()?;
            state.current_healthy()?;
            state.check_stream(handle_of(stream))?;
        }
        let function = function.ok_or(CUDA_ERROR_INVALID_VALUE)?;
        function(user_data);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptx_emu::findings::FindingKind;

    fn finding(kind: FindingKind) -> Finding {
        Finding {
            kind,
            kernel: "k".into(),
            ptx_line: 12,
            instruction: "st.global.f32 [%rd4], %f1;".into(),
            cta: [0, 0, 0],
            thread: [1, 0, 0],
            address: 0x1000,
            detail: String::new(),
        }
    }

    #[test]
    fn first_finding_decides_the_result() {
        assert_eq!(findings_result(&[]), Ok(()));
        assert_eq!(findings_result(&[finding(FindingKind::OutOfBounds)]), Err(700));
        assert_eq!(findings_result(&[finding(FindingKind::Misaligned), finding(FindingKind::Race)]), Err(716));
        assert_eq!(findings_result(&[finding(FindingKind::Race)]), Err(719));
    }

    fn kernel(max_threads_per_block: Option<u32>) -> KernelInfo {
        KernelInfo {
            name: "k".into(),
            params: Vec::new(),
            param_bytes: 0,
            static_shared_bytes: 0,
            local_bytes: 0,
            max_threads_per_block,
            cluster_dims: None,
            num_regs: 16,
        }
    }

    #[test]
    fn dimensions_within_sm80_limits() {
        let any = kernel(None);
        assert_eq!(check_dimensions(&any, [1, 1, 1], [1, 1, 1]), Ok(()));
        assert_eq!(check_dimensions(&any, [i32::MAX as u32, 65535, 65535], [1024, 1, 1]), Ok(()));
        assert_eq!(check_dimensions(&any, [1, 1, 1], [32, 32, 1]), Ok(()));
        for (grid, block) in [
            ([0, 1, 1], [32, 1, 1]),
            ([1, 1, 1], [32, 0, 1]),
            ([1, 65536, 1], [32, 1, 1]),
            ([1, 1, 1], [1, 1, 65]),
            ([1, 1, 1], [64, 32, 1]),
        ] {
            assert_eq!(check_dimensions(&any, grid, block), Err(CUDA_ERROR_INVALID_VALUE), "{grid:?} {block:?}");
        }
        // A kernel declaring .maxntid 128 refuses larger blocks.
        assert_eq!(check_dimensions(&kernel(Some(128)), [1, 1, 1], [256, 1, 1]), Err(CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn launch_errors_map_to_driver_codes() {
        assert_eq!(launch_error_code(&LaunchError::KernelNotFound("k".into())), CUDA_ERROR_NOT_FOUND);
        assert_eq!(launch_error_code(&LaunchError::InvalidConfig("block 0".into())), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(launch_error_code(&LaunchError::BadParams("short".into())), CUDA_ERROR_INVALID_VALUE);
        assert_eq!(launch_error_code(&LaunchError::OutOfResources("smem".into())), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    }
}

//! `cuLaunchKernelEx`: a launch described by a `CUlaunchConfig` with launch
//! attributes (how the CUDA runtime's `cudaLaunchKernelEx` and CUTLASS's
//! cluster launcher reach the driver). The cluster dimension attribute runs
//! the launch in clusters of that many CTAs (`ptx_emu::launch::launch_with_cluster`).

use crate::guard::ffi_guard;
use crate::launch::{launch_kernel, LaunchRequest};
use crate::module::CUfunction;
use crate::result::*;
use crate::stream::CUstream;
use std::ffi::c_void;

/// `CUlaunchAttribute`: an id, padding, and a 64-byte value union.
#[repr(C)]
pub struct CUlaunchAttribute {
    pub id: u32,
    pub pad: [u8; 4],
    pub value: [u64; 8],
}

/// `CUlaunchConfig`.
#[repr(C)]
pub struct CUlaunchConfig {
    pub grid_dim: [u32; 3],
    pub block_dim: [u32; 3],
    pub shared_mem_bytes: u32,
    pub stream: CUstream,
    pub attrs: *mut CUlaunchAttribute,
    pub num_attrs: u32,
}

const ATTRIBUTE_IGNORE: u32 = 0;
const ATTRIBUTE_ACCESS_POLICY_WINDOW: u32 = 1;
const ATTRIBUTE_COOPERATIVE: u32 = 2;
const ATTRIBUTE_CLUSTER_DIMENSION: u32 = 4;
const ATTRIBUTE_CLUSTER_SCHEDULING_POLICY: u32 = 5;
const ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: u32 = 6;
const ATTRIBUTE_PRIORITY: u32 = 8;
const ATTRIBUTE_MEM_SYNC_DOMAIN_MAP: u32 = 9;
const ATTRIBUTE_MEM_SYNC_DOMAIN: u32 = 10;
const ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: u32 = 14;
/// Most CTAs per cluster (the portable size; the non-portable attribute is not emulated).
const MAX_CLUSTER_SIZE: u32 = 8;
/// `CUDA_ERROR_INVALID_CLUSTER_SIZE`.
const CUDA_ERROR_INVALID_CLUSTER_SIZE: CUresult = 912;

/// Whether the launch is cooperative, and its cluster dimensions, after
/// checking every attribute.
fn read_attributes(config: &CUlaunchConfig, attrs: &[CUlaunchAttribute]) -> DriverResult<(bool, Option<[u32; 3]>)> {
    let mut cooperative = false;
    let mut cluster = None;
    for a in attrs {
        match a.id {
            ATTRIBUTE_COOPERATIVE => cooperative = a.value[0] as u32 != 0,
            ATTRIBUTE_CLUSTER_DIMENSION => {
                let dims = [a.value[0] as u32, (a.value[0] >> 32) as u32, a.value[1] as u32];
                let size = dims.iter().map(|&d| u64::from(d)).product::<u64>();
                if dims.contains(&0)
                    || config.grid_dim.iter().zip(dims).any(|(g, c)| g % c != 0)
                    || size > u64::from(MAX_CLUSTER_SIZE)
                {
                    return Err(CUDA_ERROR_INVALID_CLUSTER_SIZE);
                }
                cluster = Some(dims);
            }
            // Hints that order or place work, with nothing to change here.
            ATTRIBUTE_IGNORE
            | ATTRIBUTE_ACCESS_POLICY_WINDOW
            | ATTRIBUTE_CLUSTER_SCHEDULING_POLICY
            | ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
            | ATTRIBUTE_PRIORITY
            | ATTRIBUTE_MEM_SYNC_DOMAIN_MAP
            | ATTRIBUTE_MEM_SYNC_DOMAIN
            | ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT => {}
            other => {
                eprintln!("ptx-emu: cuLaunchKernelEx: launch attribute {other} is not supported");
                return Err(CUDA_ERROR_NOT_SUPPORTED);
            }
        }
    }
    Ok((cooperative, cluster))
}

/// # Safety
/// `config` must point to a `CUlaunchConfig` whose `attrs` hold `num_attrs`
/// entries; `kernel_params` and `extra` as for `cuLaunchKernel`.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernelEx(
    config: *const CUlaunchConfig,
    function: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ffi_guard(|| {
        // SAFETY: null is refused; otherwise the caller guarantees a valid config.
        let Some(config) = (unsafe { config.as_ref() }) else {
            return Err(CUDA_ERROR_INVALID_VALUE);
        };
        let attrs = match config.num_attrs {
            0 => &[][..],
            _ if config.attrs.is_null() => return Err(CUDA_ERROR_INVALID_VALUE),
            // SAFETY: the caller guarantees `num_attrs` entries.
            n => unsafe { std::slice::from_raw_parts(config.attrs, n as usize) },
        };
        let (cooperative, cluster) = read_attributes(config, attrs)?;
        launch_kernel(LaunchRequest {
            function,
            grid: config.grid_dim,
            block: config.block_dim,
            dynamic_shared_bytes: config.shared_mem_bytes,
            stream: config.stream,
            kernel_params,
            extra,
            cooperative,
            cluster,
        })
    })
}

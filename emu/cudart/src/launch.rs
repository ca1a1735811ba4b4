//! The entry points nvcc's generated host code calls — fat-binary, kernel and
//! variable registration at start-up, `__cudaPushCallConfiguration` /
//! `__cudaPopCallConfiguration` / `__cudaGetKernel` / `__cudaLaunchKernel`
//! for each `<<<>>>` — and the runtime API that names kernels by their host
//! stub (`cudaLaunchKernel`, `cudaFuncSetAttribute`, `cudaFuncGetAttributes`,
//! occupancy).

use crate::driver::{self, CuStream};
use crate::null_stream::{null_stream_entry_points, NullStream};
use crate::registry;
use crate::state::{self, entry, CudaError, Dim3, LaunchConfig, CUDA_ERROR_INVALID_VALUE};
use crate::state::{
    CUDA_ERROR_INVALID_CONFIGURATION, CUDA_ERROR_INVALID_DEVICE_FUNCTION, CUDA_ERROR_MISSING_CONFIGURATION,
};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// The handle nvcc's code keeps for a fat binary: a pointer to a slot
/// holding the registry index (leaked: registrations live until exit).
///
/// # Safety
/// `fat_cubin` is nvcc's `__fatbinwrap` structure (read when a kernel of it is
/// first launched).
#[no_mangle]
pub unsafe extern "C" fn __cudaRegisterFatBinary(fat_cubin: *mut c_void) -> *mut *mut c_void {
    let index = registry::register_fatbin(fat_cubin);
    Box::leak(Box::new(index as *mut c_void))
}

/// # Safety
/// Any handle may be passed.
#[no_mangle]
pub unsafe extern "C" fn __cudaRegisterFatBinaryEnd(_handle: *mut *mut c_void) {}

/// Called by the managed-memory set-up nvcc emits in every object (a no-op
/// here: modules load on first use); answers "initialized".
///
/// # Safety
/// Any handle may be passed.
#[no_mangle]
pub unsafe extern "C" fn __cudaInitModule(_handle: *mut *mut c_void) -> c_char {
    1
}

/// # Safety
/// `handle` is null or one `__cudaRegisterFatBinary` returned.
#[no_mangle]
pub unsafe extern "C" fn __cudaUnregisterFatBinary(handle: *mut *mut c_void) {
    if !handle.is_null() {
        registry::unregister_fatbin(*handle as usize);
    }
}

/// # Safety
/// `handle` is one `__cudaRegisterFatBinary` returned; `device_name` a C
/// string (the kernel's mangled name).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn __cudaRegisterFunction(
    handle: *mut *mut c_void,
    host_stub: *const c_char,
    _device_function: *mut c_char,
    device_name: *const c_char,
    _thread_limit: c_int,
    _tid: *mut c_void,
    _bid: *mut c_void,
    _block_dim: *mut c_void,
    _grid_dim: *mut c_void,
    _warp_size: *mut c_int,
) {
    if handle.is_null() || device_name.is_null() {
        return;
    }
    registry::register_kernel(*handle as usize, host_stub as usize, CStr::from_ptr(device_name).to_owned());
}

/// Device variables need nothing at registration: the module's PTX declares
/// and initializes them when it is loaded. (`cudaMemcpyToSymbol` and the
/// other symbol calls are not emulated.)
///
/// # Safety
/// Any arguments may be passed.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn __cudaRegisterVar(
    _handle: *mut *mut c_void,
    _host_var: *mut c_char,
    _device_address: *mut c_char,
    _device_name: *const c_char,
    _ext: c_int,
    _size: usize,
    _constant: c_int,
    _global: c_int,
) {
}

/// # Safety
/// Any arguments may be passed.
#[no_mangle]
pub unsafe extern "C" fn __cudaPushCallConfiguration(
    grid: Dim3,
    block: Dim3,
    shared_bytes: usize,
    stream: CuStream,
) -> c_uint {
    state::push_config(LaunchConfig { grid, block, shared_bytes, stream });
    0
}

/// # Safety
/// The pointers are valid for one write each (`stream` of a `cudaStream_t`).
#[no_mangle]
pub unsafe extern "C" fn __cudaPopCallConfiguration(
    grid: *mut Dim3,
    block: *mut Dim3,
    shared_bytes: *mut usize,
    stream: *mut c_void,
) -> CudaError {
    entry(|| {
        let config = state::pop_config().ok_or(CUDA_ERROR_MISSING_CONFIGURATION)?;
        if grid.is_null() || block.is_null() || shared_bytes.is_null() || stream.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        grid.write(config.grid);
        block.write(config.block);
        shared_bytes.write(config.shared_bytes);
        stream.cast::<CuStream>().write(config.stream);
        Ok(())
    })
}

/// The kernel handle of a host stub is the stub's address.
///
/// # Safety
/// `kernel` is valid for one write.
#[no_mangle]
pub unsafe extern "C" fn __cudaGetKernel(kernel: *mut *mut c_void, host_stub: *const c_void) -> CudaError {
    entry(|| {
        if kernel.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if !registry::is_registered(host_stub as usize) {
            return Err(CUDA_ERROR_INVALID_DEVICE_FUNCTION);
        }
        kernel.write(host_stub.cast_mut());
        Ok(())
    })
}

/// The one launch path of every launch entry point.
///
/// # Safety
/// `args` holds one pointer per kernel parameter.
unsafe fn launch(
    host_stub: *const c_void,
    grid: Dim3,
    block: Dim3,
    args: *mut *mut c_void,
    shared_bytes: usize,
    stream: CuStream,
    null_stream: NullStream,
) -> Result<(), CudaError> {
    let stream = null_stream.resolve(stream);
    let function = registry::function(host_stub as usize)?;
    let shared_bytes = c_uint::try_from(shared_bytes).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
    let launched = driver::check(driver::cuLaunchKernel(
        function,
        grid.x,
        grid.y,
        grid.z,
        block.x,
        block.y,
        block.z,
        shared_bytes,
        stream,
        args,
        std::ptr::null_mut(),
    ));
    // The driver refuses bad dimensions with CUDA_ERROR_INVALID_VALUE; the
    // runtime calls that cudaErrorInvalidConfiguration.
    launched
        .map_err(|code| if code == driver::CUDA_ERROR_INVALID_VALUE { CUDA_ERROR_INVALID_CONFIGURATION } else { code })
}

// The launch entry points: each takes the kernel (its host stub, which is
// also what `__cudaGetKernel` writes), the launch's dimensions, one pointer
// per kernel parameter, the dynamic shared memory and the stream.
null_stream_entry_points! {
    launch(
        kernel: *const c_void,
        grid: Dim3,
        block: Dim3,
        args: *mut *mut c_void,
        shared_bytes: usize,
        stream: CuStream,
    ) => {
        /// A `<<<>>>` launch, as nvcc's host code makes it.
        ///
        /// # Safety
        /// `kernel` is a kernel's host stub (what `__cudaGetKernel` wrote);
        /// `args` holds one pointer per kernel parameter.
        __cudaLaunchKernel / __cudaLaunchKernel_ptsz;
        /// The runtime API's launch of a kernel named by its host stub.
        ///
        /// # Safety
        /// As [`__cudaLaunchKernel`].
        cudaLaunchKernel / cudaLaunchKernel_ptsz;
    }
}

/// The runtime's function attributes are the driver's, same numbers.
///
/// # Safety
/// `function` is a kernel's host stub.
#[no_mangle]
pub unsafe extern "C" fn cudaFuncSetAttribute(function: *const c_void, attribute: c_int, value: c_int) -> CudaError {
    entry(|| driver::check(driver::cuFuncSetAttribute(registry::function(function as usize)?, attribute, value)))
}

/// `struct cudaFuncAttributes` (CUDA 13).
#[repr(C)]
pub struct FuncAttributes {
    shared_size_bytes: usize,
    const_size_bytes: usize,
    local_size_bytes: usize,
    max_threads_per_block: c_int,
    num_regs: c_int,
    ptx_version: c_int,
    binary_version: c_int,
    cache_mode_ca: c_int,
    max_dynamic_shared_size_bytes: c_int,
    preferred_shmem_carveout: c_int,
    cluster_dim_must_be_set: c_int,
    required_cluster_width: c_int,
    required_cluster_height: c_int,
    required_cluster_depth: c_int,
    cluster_scheduling_policy_preference: c_int,
    non_portable_cluster_size_allowed: c_int,
    reserved: [c_int; 16],
}

/// # Safety
/// `attributes` is valid for one write; `function` is a kernel's host stub.
#[no_mangle]
pub unsafe extern "C" fn cudaFuncGetAttributes(attributes: *mut FuncAttributes, function: *const c_void) -> CudaError {
    entry(|| {
        if attributes.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let function = registry::function(function as usize)?;
        let get = |attribute: c_int| {
            let mut value = 0;
            driver::check(driver::cuFuncGetAttribute(&mut value, attribute, function)).map(|()| value)
        };
        let bytes = |attribute: c_int| get(attribute).map(|v| usize::try_from(v).unwrap_or(0));
        attributes.write(FuncAttributes {
            // CU_FUNC_ATTRIBUTE_*: the same order as the structure's fields.
            max_threads_per_block: get(0)?,
            shared_size_bytes: bytes(1)?,
            const_size_bytes: bytes(2)?,
            local_size_bytes: bytes(3)?,
            num_regs: get(4)?,
            ptx_version: get(5)?,
            binary_version: get(6)?,
            cache_mode_ca: get(7)?,
            max_dynamic_shared_size_bytes: get(8)?,
            preferred_shmem_carveout: get(9)?,
            cluster_dim_must_be_set: 0,
            required_cluster_width: 0,
            required_cluster_height: 0,
            required_cluster_depth: 0,
            cluster_scheduling_policy_preference: 0,
            non_portable_cluster_size_allowed: 0,
            reserved: [0; 16],
        });
        Ok(())
    })
}

/// # Safety
/// `blocks` is valid for one write; `function` is a kernel's host stub.
#[no_mangle]
pub unsafe extern "C" fn cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    blocks: *mut c_int,
    function: *const c_void,
    block_size: c_int,
    dynamic_shared: usize,
    flags: c_uint,
) -> CudaError {
    entry(|| {
        let function = registry::function(function as usize)?;
        driver::check(driver::cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
            blocks,
            function,
            block_size,
            dynamic_shared,
            flags,
        ))
    })
}

/// # Safety
/// As [`cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags`].
#[no_mangle]
pub unsafe extern "C" fn cudaOccupancyMaxActiveBlocksPerMultiprocessor(
    blocks: *mut c_int,
    function: *const c_void,
    block_size: c_int,
    dynamic_shared: usize,
) -> CudaError {
    cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks, function, block_size, dynamic_shared, 0)
}

//! Modules (PTX loaded through the executor), their kernels as `CUfunction`
//! handles, module-scope variables, and function attributes.

use crate::device::{
    compute_capability, ptx_target, shared_bytes_per_block_optin, target_loads, MAX_THREADS_PER_BLOCK,
    SHARED_BYTES_PER_BLOCK_DEFAULT,
};
use crate::guard::{ffi_guard, write_out};
use crate::image::{ptx_text, ptx_text_of_image, ptx_version};
use crate::memory::CUdeviceptr;
use crate::result::{
    CUresult, DriverResult, CUDA_ERROR_FILE_NOT_FOUND, CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_INVALID_HANDLE,
    CUDA_ERROR_INVALID_PTX, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_FOUND, CUDA_ERROR_NOT_SUPPORTED,
};
use crate::state::{driver, handle_of, pointer_of, DeviceState, FunctionRecord, ModuleRecord};
use ptx_emu::module::{KernelInfo, Module};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// `CUmodule`: an opaque handle.
pub type CUmodule = *mut c_void;
/// `CUfunction`: an opaque handle.
pub type CUfunction = *mut c_void;

/// `CUfunction_attribute` values of cuda.h.
mod attribute {
    use std::ffi::c_int;
    pub const MAX_THREADS_PER_BLOCK: c_int = 0;
    pub const SHARED_SIZE_BYTES: c_int = 1;
    pub const CONST_SIZE_BYTES: c_int = 2;
    pub const LOCAL_SIZE_BYTES: c_int = 3;
    pub const NUM_REGS: c_int = 4;
    pub const PTX_VERSION: c_int = 5;
    pub const BINARY_VERSION: c_int = 6;
    pub const CACHE_MODE_CA: c_int = 7;
    pub const MAX_DYNAMIC_SHARED_SIZE_BYTES: c_int = 8;
    pub const PREFERRED_SHARED_MEMORY_CARVEOUT: c_int = 9;
    /// Cluster attributes (10..=15): sm_90 features, absent on sm_80.
    pub const FIRST_CLUSTER: c_int = 10;
    pub const LAST_CLUSTER: c_int = 15;
}

/// The dynamic shared memory a kernel may use before `cuFuncSetAttribute`
/// raises its limit: what is left of the 48 KB default after its static shared memory.
pub fn default_max_dynamic_shared(kernel: &KernelInfo) -> u32 {
    SHARED_BYTES_PER_BLOCK_DEFAULT.saturating_sub(kernel.static_shared_bytes)
}

/// Validates a request to raise a kernel's dynamic shared memory limit:
/// static plus dynamic may not exceed the opt-in limit of the capability
/// presented (163 KB on sm_80, 227 KB on sm_90).
pub fn checked_max_dynamic_shared(kernel: &KernelInfo, value: c_int) -> DriverResult<u32> {
    let value = u32::try_from(value).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
    if u64::from(value) + u64::from(kernel.static_shared_bytes) > u64::from(shared_bytes_per_block_optin()) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    Ok(value)
}

/// The kernel a function handle names, with its record.
pub(crate) fn function_kernel(
    state: &DeviceState,
    function: CUfunction,
) -> DriverResult<(&FunctionRecord, &KernelInfo)> {
    let record = state.functions.get(&handle_of(function)).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    let module = state.modules.get(&record.module).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    let kernel = module.module.kernel(&record.kernel).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    Ok((record, kernel))
}

/// Loads PTX text into the current context.
fn load_module(module: *mut CUmodule, text: &str) -> DriverResult {
    let mut state = driver().lock()?;
    let context = state.current_healthy()?;
    if module.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // The JIT refuses a target newer than the device (or another device's
    // architecture-specific `sm_XYa`) before compiling anything.
    if let Err(why) = target_loads(ptx_target(text).unwrap_or(""), compute_capability()) {
        eprintln!("ptx-emu: {why}");
        return Err(CUDA_ERROR_INVALID_PTX);
    }
    let loaded = Module::load(text, driver().memory()).map_err(|error| {
        eprintln!("ptx-emu: {error}");
        CUDA_ERROR_INVALID_PTX
    })?;
    let handle = state.new_handle();
    let record = ModuleRecord { context, module: loaded, ptx_version: ptx_version(text), functions: HashMap::new() };
    state.modules.insert(handle, record);
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { write_out(module, pointer_of(handle)) }
}

/// # Safety
/// `image` must be null or a NUL-terminated PTX string (or a binary image,
/// which is refused); `module` null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut CUmodule, image: *const c_void) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        if image.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        load_module(module, ptx_text_of_image(image.cast())?)
    })
}

/// JIT options are accepted and ignored: there is no JIT, and no log to fill.
///
/// # Safety
/// As `cuModuleLoadData`.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut CUmodule,
    image: *const c_void,
    _num_options: c_uint,
    _options: *mut c_int,
    _option_values: *mut *mut c_void,
) -> CUresult {
    cuModuleLoadData(module, image)
}

/// # Safety
/// `path` must be null or a NUL-terminated file name; `module` null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoad(module: *mut CUmodule, path: *const c_char) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        if path.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let path = CStr::from_ptr(path).to_str().map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        let bytes = std::fs::read(path).map_err(|_| CUDA_ERROR_FILE_NOT_FOUND)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(&bytes);
        load_module(module, ptx_text(bytes)?)
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: CUmodule) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        let memory = driver().memory();
        state.unload_module(handle_of(module), memory).ok_or(CUDA_ERROR_INVALID_HANDLE)
    })
}

/// The same name gives the same handle each time, as on hardware.
///
/// # Safety
/// `name` must be null or NUL-terminated; `function` null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    function: *mut CUfunction,
    module: CUmodule,
    name: *const c_char,
) -> CUresult {
    ffi_guard(|| {
        // The module names its context: no current context is needed, as on
        // hardware (cudarc's `load_function` does not bind one, and candle
        // looks kernels up from whichever thread uses a tensor).
        let mut state = driver().lock()?;
        if function.is_null() || name.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let name = CStr::from_ptr(name).to_str().map_err(|_| CUDA_ERROR_NOT_FOUND)?;
        let module_handle = handle_of(module);
        let record = state.modules.get(&module_handle).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if !state.contexts.contains_key(&record.context) {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        if let Some(existing) = record.functions.get(name) {
            return write_out(function, pointer_of(*existing));
        }
        let kernel = record.module.kernel(name).ok_or(CUDA_ERROR_NOT_FOUND)?;
        let function_record = FunctionRecord {
            module: module_handle,
            kernel: name.to_owned(),
            max_dynamic_shared_bytes: default_max_dynamic_shared(kernel),
            preferred_carveout: -1,
        };
        let handle = state.new_handle();
        state.functions.insert(handle, function_record);
        if let Some(record) = state.modules.get_mut(&module_handle) {
            record.functions.insert(name.to_owned(), handle);
        }
        write_out(function, pointer_of(handle))
    })
}

/// # Safety
/// `name` must be null or NUL-terminated; `address`/`bytes` null (not wanted) or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    address: *mut CUdeviceptr,
    bytes: *mut usize,
    module: CUmodule,
    name: *const c_char,
) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        state.current()?;
        if name.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let name = CStr::from_ptr(name).to_str().map_err(|_| CUDA_ERROR_NOT_FOUND)?;
        let record = state.modules.get(&handle_of(module)).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let (base, size) = record.module.global(name).ok_or(CUDA_ERROR_NOT_FOUND)?;
        if !address.is_null() {
            address.write(base);
        }
        if !bytes.is_null() {
            bytes.write(size as usize);
        }
        Ok(())
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(function: CUfunction, attrib: c_int, value: c_int) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        let (_, kernel) = function_kernel(&state, function)?;
        let new_limit = match attrib {
            attribute::MAX_DYNAMIC_SHARED_SIZE_BYTES => Some(checked_max_dynamic_shared(kernel, value)?),
            attribute::PREFERRED_SHARED_MEMORY_CARVEOUT if (-1..=100).contains(&value) => None,
            attribute::FIRST_CLUSTER..=attribute::LAST_CLUSTER => return Err(CUDA_ERROR_NOT_SUPPORTED),
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        let record = state.functions.get_mut(&handle_of(function)).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        match new_limit {
            Some(limit) => record.max_dynamic_shared_bytes = limit,
            None => record.preferred_carveout = value,
        }
        Ok(())
    })
}

/// # Safety
/// `value` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(value: *mut c_int, attrib: c_int, function: CUfunction) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let (record, kernel) = function_kernel(&state, function)?;
        let to_int = |bytes: u32| c_int::try_from(bytes).unwrap_or(c_int::MAX);
        let answer = match attrib {
            attribute::MAX_THREADS_PER_BLOCK => {
                to_int(kernel.max_threads_per_block.unwrap_or(MAX_THREADS_PER_BLOCK).min(MAX_THREADS_PER_BLOCK))
            }
            attribute::SHARED_SIZE_BYTES => to_int(kernel.static_shared_bytes),
            // Module-scope `.const` is not attributed per kernel by the executor.
            attribute::CONST_SIZE_BYTES => 0,
            attribute::LOCAL_SIZE_BYTES => to_int(kernel.local_bytes),
            attribute::NUM_REGS => to_int(kernel.num_regs),
            attribute::PTX_VERSION => state.modules.get(&record.module).map_or(0, |module| module.ptx_version),
            // The SASS version the device's JIT would have made.
            attribute::BINARY_VERSION => compute_capability().number() as c_int,
            attribute::CACHE_MODE_CA => 0,
            attribute::MAX_DYNAMIC_SHARED_SIZE_BYTES => to_int(record.max_dynamic_shared_bytes),
            attribute::PREFERRED_SHARED_MEMORY_CARVEOUT => record.preferred_carveout,
            attribute::FIRST_CLUSTER..=attribute::LAST_CLUSTER => 0,
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        write_out(value, answer)
    })
}

/// Cache preferences do not change anything on the emulator; validated only.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetCacheConfig(function: CUfunction, config: c_int) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        function_kernel(&state, function)?;
        // CU_FUNC_CACHE_PREFER_NONE / _SHARED / _L1 / _EQUAL.
        if (0..=3).contains(&config) {
            Ok(())
        } else {
            Err(CUDA_ERROR_INVALID_VALUE)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel_with_static_shared(static_shared_bytes: u32) -> KernelInfo {
        KernelInfo {
            name: "k".into(),
            params: Vec::new(),
            param_bytes: 0,
            static_shared_bytes,
            local_bytes: 0,
            max_threads_per_block: None,
            cluster_dims: None,
            num_regs: 32,
        }
    }

    #[test]
    fn default_dynamic_limit_is_48k_minus_static() {
        assert_eq!(default_max_dynamic_shared(&kernel_with_static_shared(0)), 49152);
        assert_eq!(default_max_dynamic_shared(&kernel_with_static_shared(4096)), 45056);
        assert_eq!(default_max_dynamic_shared(&kernel_with_static_shared(60000)), 0);
    }

    #[test]
    fn raised_dynamic_limit_is_capped_at_sm80_opt_in() {
        let kernel = kernel_with_static_shared(1024);
        assert_eq!(checked_max_dynamic_shared(&kernel, 100 * 1024), Ok(100 * 1024));
        assert_eq!(checked_max_dynamic_shared(&kernel, 162 * 1024), Ok(162 * 1024));
        assert_eq!(checked_max_dynamic_shared(&kernel, 162 * 1024 + 1), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(checked_max_dynamic_shared(&kernel, -1), Err(CUDA_ERROR_INVALID_VALUE));
    }
}

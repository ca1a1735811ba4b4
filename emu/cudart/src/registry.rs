//! What nvcc's host code registers at start-up — each object's fat binary and,
//! per kernel, the host stub's address and the kernel's mangled name — and
//! how a stub address becomes a driver function: on first use in a context,
//! the fat binary's PTX is loaded as a module (lazily, as NVIDIA's runtime
//! loads modules since CUDA 12) and the kernel looked up by its name.

use crate::driver::{self, CuContext, CuFunction, CuModule};
use crate::fatbin;
use crate::state::{
    self, CudaError, CUDA_ERROR_INVALID_DEVICE_FUNCTION, CUDA_ERROR_INVALID_PTX, CUDA_ERROR_NO_KERNEL_IMAGE_FOR_DEVICE,
};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// One registered fat binary.
struct FatBinary {
    /// The `__fatbinwrap` structure nvcc's code passed (static data of the
    /// program, alive for the whole process).
    wrapper: usize,
    /// Its module in each context it was loaded into.
    modules: HashMap<usize, usize>,
    /// Why its PTX could not be used, once that is known (reported once).
    failure: Option<CudaError>,
}

/// One registered kernel: its fat binary and mangled name, and the driver
/// function in each context it was looked up in.
struct Kernel {
    fatbin: usize,
    name: CString,
    functions: HashMap<usize, usize>,
}

#[derive(Default)]
struct Registry {
    fatbins: Vec<Option<FatBinary>>,
    /// By host stub address (what `<<<>>>`, `cudaLaunchKernel` and the
    /// `cudaFunc*` calls name a kernel by).
    kernels: HashMap<usize, Kernel>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a fat binary; returns its index (the handle nvcc's code keeps).
pub fn register_fatbin(wrapper: *const c_void) -> usize {
    let mut registry = registry();
    registry.fatbins.push(Some(FatBinary { wrapper: wrapper as usize, modules: HashMap::new(), failure: None }));
    registry.fatbins.len() - 1
}

/// Forgets a fat binary at exit. Its modules stay loaded: the driver may
/// already be shutting down, and the process is ending.
pub fn unregister_fatbin(index: usize) {
    if let Some(slot) = registry().fatbins.get_mut(index) {
        *slot = None;
    }
}

pub fn register_kernel(fatbin: usize, host_stub: usize, name: CString) {
    registry().kernels.insert(host_stub, Kernel { fatbin, name, functions: HashMap::new() });
}

pub fn is_registered(host_stub: usize) -> bool {
    registry().kernels.contains_key(&host_stub)
}

/// The fat binary's bytes: the header gives the length.
///
/// # Safety
/// `wrapper` must be what nvcc's code passed to `__cudaRegisterFatBinary`.
unsafe fn fatbin_bytes<'a>(wrapper: usize) -> Result<&'a [u8], fatbin::FatbinError> {
    let malformed = |what: &str| fatbin::FatbinError::Malformed(what.to_string());
    let wrapper = wrapper as *const u8;
    if wrapper.is_null() || wrapper.cast::<u32>().read_unaligned() != fatbin::WRAPPER_MAGIC {
        return Err(malformed("bad wrapper magic (relocatable device code, -rdc, is not supported)"));
    }
    let data = wrapper.add(8).cast::<*const u8>().read_unaligned();
    if data.is_null() {
        return Err(malformed("no fat binary behind the wrapper"));
    }
    let header: [u8; 16] = std::slice::from_raw_parts(data, 16).try_into().expect("16 bytes");
    let len = fatbin::fatbin_len(&header)?;
    Ok(std::slice::from_raw_parts(data, len))
}

/// The device's compute capability as nvcc spells it (80 for 8.0).
fn device_arch() -> Result<u32, CudaError> {
    let device = state::device(state::selected_device())?;
    let attribute = |which| {
        let mut value = 0;
        // SAFETY: `value` is valid for one write.
        driver::check(unsafe { driver::cuDeviceGetAttribute(&mut value, which, device) }).map(|()| value)
    };
    // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR.
    Ok((attribute(75)? * 10 + attribute(76)?) as u32)
}

impl Registry {
    /// The fat binary's module in `context`, loaded on first use.
    fn module(&mut self, index: usize, context: CuContext, kernel: &str) -> Result<CuModule, CudaError> {
        let fatbin = self.fatbins.get_mut(index).and_then(Option::as_mut).ok_or(CUDA_ERROR_INVALID_DEVICE_FUNCTION)?;
        if let Some(failure) = fatbin.failure {
            return Err(failure);
        }
        if let Some(&module) = fatbin.modules.get(&(context as usize)) {
            return Ok(module as CuModule);
        }
        let arch = device_arch()?;
        // SAFETY: the wrapper nvcc's code registered.
        let ptx = unsafe { fatbin_bytes(fatbin.wrapper) }.and_then(|bytes| fatbin::ptx_for(bytes, arch));
        let ptx = match ptx {
            Ok(text) => CString::new(text).map_err(|_| CUDA_ERROR_INVALID_PTX)?,
            Err(why) => {
                // Code that launches with <<<>>> rarely checks the result:
                // say on stderr why its kernels never run.
                eprintln!("ptx-emu: libcudart: cannot run kernel {kernel}: its fat binary: {why}");
                let code = match why {
                    fatbin::FatbinError::NoPtx { .. } | fatbin::FatbinError::NoPtxForDevice { .. } => {
                        CUDA_ERROR_NO_KERNEL_IMAGE_FOR_DEVICE
                    }
                    _ => CUDA_ERROR_INVALID_PTX,
                };
                fatbin.failure = Some(code);
                return Err(code);
            }
        };
        let mut module: CuModule = std::ptr::null_mut();
        // SAFETY: `ptx` is a NUL-terminated PTX text.
        driver::check(unsafe { driver::cuModuleLoadData(&mut module, ptx.as_ptr().cast()) })?;
        fatbin.modules.insert(context as usize, module as usize);
        Ok(module)
    }
}

/// The driver function of the kernel whose host stub is `host_stub`, in the
/// thread's context.
pub fn function(host_stub: usize) -> Result<CuFunction, CudaError> {
    let context = state::context()?;
    let mut registry = registry();
    let kernel = registry.kernels.get(&host_stub).ok_or(CUDA_ERROR_INVALID_DEVICE_FUNCTION)?;
    if let Some(&function) = kernel.functions.get(&(context as usize)) {
        return Ok(function as CuFunction);
    }
    let (fatbin, name) = (kernel.fatbin, kernel.name.clone());
    let module = registry.module(fatbin, context, &name.to_string_lossy())?;
    let mut function: CuFunction = std::ptr::null_mut();
    // SAFETY: a loaded module and a NUL-terminated name.
    let found = unsafe { driver::cuModuleGetFunction(&mut function, module, name.as_ptr()) };
    driver::check(found).map_err(|_| CUDA_ERROR_INVALID_DEVICE_FUNCTION)?;
    if let Some(kernel) = registry.kernels.get_mut(&host_stub) {
        kernel.functions.insert(context as usize, function as usize);
    }
    Ok(function)
}

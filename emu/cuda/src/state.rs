//! The driver's global state: one emulated device, its global memory, and the
//! handle tables behind every opaque `CU*` handle.
//!
//! Handles given to callers are small non-zero integers disguised as pointers;
//! they are never dereferenced, only looked up here, so a stale or forged
//! handle is an error code rather than a crash. Values 0x1 and 0x2 are never
//! handed out because they mean `CU_STREAM_LEGACY` / `CU_STREAM_PER_THREAD`.

use crate::context::current_context;
use crate::device::global_memory_bytes;
use crate::leaks::{self, AllocationSite};
use crate::result::{DriverResult, CUDA_ERROR_INVALID_CONTEXT, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_NOT_INITIALIZED};
use ptx_emu::memory::GlobalMemory;
use ptx_emu::module::Module;
use std::alloc::Layout;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// An opaque handle's value (`CUcontext`, `CUmodule`, ... cast to an integer).
pub(crate) type Handle = u64;

/// The primary context's handle: the same value on every retain, as on hardware.
pub(crate) const PRIMARY_CONTEXT: Handle = 0x100;

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`; with NULL, the streams that
/// exist without being created.
const BUILTIN_STREAMS: [Handle; 3] = [0x0, 0x1, 0x2];

pub(crate) struct ContextRecord {
    pub flags: u32,
    /// `cuCtxSetLimit` values; limits never set read their defaults.
    pub limits: HashMap<u32, usize>,
    /// The error of the launch that faulted in this context, if any. Sticky:
    /// from then on every call that touches the context returns it, as a
    /// real device does after a kernel fault, until the context is destroyed
    /// (or the primary context released by everyone, or reset).
    pub sticky_error: Option<u32>,
}

impl ContextRecord {
    pub fn new(flags: u32) -> Self {
        ContextRecord { flags, limits: HashMap::new(), sticky_error: None }
    }
}

pub(crate) struct ModuleRecord {
    pub context: Handle,
    pub module: Module,
    /// `.version` of the PTX as major*10+minor (`cuFuncGetAttribute` PTX_VERSION).
    pub ptx_version: i32,
    /// Kernel name → function handle, so that repeated lookups return the same handle.
    pub functions: HashMap<String, Handle>,
}

pub(crate) struct FunctionRecord {
    pub module: Handle,
    pub kernel: String,
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`: the launch limit on
    /// dynamic shared memory; raised above the 48 KB default only on request.
    pub max_dynamic_shared_bytes: u32,
    /// `CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT` (-1: no preference).
    pub preferred_carveout: i32,
}

pub(crate) struct StreamRecord {
    pub context: Handle,
}

pub(crate) struct EventRecord {
    pub context: Handle,
    pub flags: u32,
    /// Host time of the last `cuEventRecord` (execution is eager, so the work
    /// before it has completed by then).
    pub recorded_at: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct DeviceState {
    next_handle: Handle,
    pub primary_refcount: u32,
    pub primary_flags: u32,
    pub contexts: HashMap<Handle, ContextRecord>,
    /// Device allocation base → the context that owns it.
    pub allocations: HashMap<u64, Handle>,
    /// Device allocation base → the call that made it (the leak check).
    pub allocation_sites: HashMap<u64, AllocationSite>,
    /// Device allocations made so far (numbers them in the leak report).
    pub allocations_made: u64,
    pub modules: HashMap<Handle, ModuleRecord>,
    pub functions: HashMap<Handle, FunctionRecord>,
    pub streams: HashMap<Handle, StreamRecord>,
    pub events: HashMap<Handle, EventRecord>,
    /// Page-locked host allocations (`cuMemAllocHost`): address → layout to free with.
    pub host_allocations: HashMap<usize, Layout>,
}

impl DeviceState {
    /// A fresh handle value, distinct from every other one handed out.
    pub fn new_handle(&mut self) -> Handle {
        if self.next_handle == 0 {
            self.next_handle = 0x1000;
        }
        let handle = self.next_handle;
        self.next_handle += 0x10;
        handle
    }

    /// The calling thread's current context, if it is live.
    pub fn current(&self) -> DriverResult<Handle> {
        let handle = current_context().ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
        if self.contexts.contains_key(&handle) {
            Ok(handle)
        } else {
            Err(CUDA_ERROR_INVALID_CONTEXT)
        }
    }

    /// The current context, refusing work in one that a kernel fault has
    /// left unusable (its sticky error is returned).
    pub fn current_healthy(&self) -> DriverResult<Handle> {
        let handle = self.current()?;
        self.check_healthy(handle)?;
        Ok(handle)
    }

    /// `Err(sticky error)` if `context` has faulted.
    pub fn check_healthy(&self, context: Handle) -> DriverResult {
        match self.contexts.get(&context).and_then(|record| record.sticky_error) {
            Some(code) => Err(code),
            None => Ok(()),
        }
    }

    /// Records a kernel fault in `context`, making it sticky.
    pub fn set_sticky_error(&mut self, context: Handle, code: u32) {
        if let Some(record) = self.contexts.get_mut(&context) {
            record.sticky_error.get_or_insert(code);
        }
    }

    /// A stream handle is valid if built in or created and not destroyed.
    pub fn check_stream(&self, stream: Handle) -> DriverResult {
        if BUILTIN_STREAMS.contains(&stream) || self.streams.contains_key(&stream) {
            Ok(())
        } else {
            Err(CUDA_ERROR_INVALID_HANDLE)
        }
    }

    /// Destroys `context` and everything created in it: allocations,
    /// modules, functions, streams, events. `memory` is `None` only when
    /// global memory was never created, in which case nothing can own any.
    pub fn tear_down_context(&mut self, context: Handle, memory: Option<&GlobalMemory>) {
        self.contexts.remove(&context);
        self.streams.retain(|_, stream| stream.context != context);
        self.events.retain(|_, event| event.context != context);
        let Some(memory) = memory else { return };
        let owned: Vec<u64> =
            self.allocations.iter().filter(|(_, owner)| **owner == context).map(|(addr, _)| *addr).collect();
        if leaks::enabled() {
            let leaked = owned.iter().filter_map(|addr| Some((*addr, self.allocation_sites.get(addr)?))).collect();
            eprint!("{}", leaks::report(context, leaked));
        }
        for addr in owned {
            self.allocations.remove(&addr);
            self.allocation_sites.remove(&addr);
            // The allocation table and the memory agree, so this cannot fail;
            // nothing can be reported from a teardown anyway.
            let _ = memory.free(addr);
        }
        let modules: Vec<Handle> =
            self.modules.iter().filter(|(_, module)| module.context == context).map(|(h, _)| *h).collect();
        for handle in modules {
            self.unload_module(handle, memory);
        }
    }

    /// Removes a module, its functions, and frees its module-scope variables.
    pub fn unload_module(&mut self, handle: Handle, memory: &GlobalMemory) -> Option<()> {
        let record = self.modules.remove(&handle)?;
        self.functions.retain(|_, function| function.module != handle);
        record.module.unload(memory);
        Some(())
    }
}

/// The one emulated device of the process.
pub(crate) struct Driver {
    initialized: AtomicBool,
    state: Mutex<DeviceState>,
    memory: OnceLock<GlobalMemory>,
}

pub(crate) fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| Driver {
        initialized: AtomicBool::new(false),
        state: Mutex::new(DeviceState::default()),
        memory: OnceLock::new(),
    })
}

impl Driver {
    pub fn initialize(&self) {
        self.initialized.store(true, Ordering::Release);
    }

    /// `CUDA_ERROR_NOT_INITIALIZED` until `cuInit` has succeeded.
    pub fn require_init(&self) -> DriverResult {
        if self.initialized.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(CUDA_ERROR_NOT_INITIALIZED)
        }
    }

    /// The state, after checking `cuInit` was called. Held for the whole
    /// call, launches included: execution is eager, and a launch already
    /// uses every core, so serialising driver calls costs nothing.
    pub fn lock(&self) -> DriverResult<MutexGuard<'_, DeviceState>> {
        self.require_init()?;
        // A panic inside a call (caught by the guard) poisons the mutex; the
        // tables stay consistent enough to go on, as a driver must.
        Ok(self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Global memory, created on first use.
    pub fn memory(&self) -> &GlobalMemory {
        self.memory.get_or_init(|| GlobalMemory::new(global_memory_bytes()))
    }

    /// Global memory if it exists yet (teardown need not create it).
    pub fn memory_if_created(&self) -> Option<&GlobalMemory> {
        self.memory.get()
    }
}

/// Converts a handle given by the caller to its table key.
pub(crate) fn handle_of<T>(pointer: *mut T) -> Handle {
    pointer as usize as Handle
}

/// Converts a table key to the opaque pointer handed to the caller.
pub(crate) fn pointer_of<T>(handle: Handle) -> *mut T {
    handle as usize as *mut T
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_distinct_and_never_builtin_streams() {
        let mut state = DeviceState::default();
        let a = state.new_handle();
        let b = state.new_handle();
        assert_ne!(a, b);
        for handle in [a, b] {
            assert!(!BUILTIN_STREAMS.contains(&handle));
            assert_ne!(handle, PRIMARY_CONTEXT);
        }
    }

    #[test]
    fn sticky_error_keeps_the_first_fault() {
        let mut state = DeviceState::default();
        state.contexts.insert(7, ContextRecord::new(0));
        assert_eq!(state.check_healthy(7), Ok(()));
        state.set_sticky_error(7, 700);
        state.set_sticky_error(7, 719);
        assert_eq!(state.check_healthy(7), Err(700));
    }

    #[test]
    fn streams_builtin_created_and_unknown() {
        let mut state = DeviceState::default();
        assert_eq!(state.check_stream(0), Ok(()));
        assert_eq!(state.check_stream(2), Ok(()));
        let created = state.new_handle();
        assert_eq!(state.check_stream(created), Err(CUDA_ERROR_INVALID_HANDLE));
        state.streams.insert(created, StreamRecord { context: PRIMARY_CONTEXT });
        assert_eq!(state.check_stream(created), Ok(()));
    }

    #[test]
    fn tear_down_drops_streams_and_events_of_that_context_only() {
        let mut state = DeviceState::default();
        for ctx in [1, 2] {
            state.contexts.insert(ctx, ContextRecord::new(0));
        }
        state.streams.insert(0x1000, StreamRecord { context: 1 });
        state.streams.insert(0x1010, StreamRecord { context: 2 });
        state.events.insert(0x1020, EventRecord { context: 1, flags: 0, recorded_at: None });
        state.tear_down_context(1, None);
        assert!(!state.contexts.contains_key(&1));
        assert!(state.contexts.contains_key(&2));
        assert_eq!(state.streams.keys().copied().collect::<Vec<_>>(), vec![0x1010]);
        assert!(state.events.is_empty());
    }
}

//! Loads the crate's PTX into a CUDA context once and hands out kernel functions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;

use crate::error::{LoraError, Result};

/// One `cuda/<family>.cu` file's PTX.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelFamily {
    pub name: &'static str,
    pub ptx: &'static str,
}

pub(crate) const MERGE: KernelFamily = KernelFamily { name: "merge", ptx: crate::ptx::MERGE };
pub(crate) const FORWARD: KernelFamily = KernelFamily { name: "forward", ptx: crate::ptx::FORWARD };
pub(crate) const DECODE: KernelFamily = KernelFamily { name: "decode", ptx: crate::ptx::DECODE };
pub(crate) const BACKWARD: KernelFamily = KernelFamily { name: "backward", ptx: crate::ptx::BACKWARD };
pub(crate) const INIT: KernelFamily = KernelFamily { name: "init", ptx: crate::ptx::INIT };
pub(crate) const OPTIM: KernelFamily = KernelFamily { name: "optim", ptx: crate::ptx::OPTIM };
/// The Hopper fused forward (`cuda/forward_sm90a.cu`, sm_90a PTX): loaded
/// only on compute capability 9.0 devices, where nothing else would run it.
pub(crate) const FORWARD_SM90A: KernelFamily = KernelFamily { name: "forward_sm90a", ptx: crate::ptx::FORWARD_SM90A };
/// The decode forward in one launch, its K splits in clusters
/// (`cuda/decode_sm90a.cu`, sm_90a PTX), loaded likewise only on compute
/// capability 9.0.
pub(crate) const DECODE_SM90A: KernelFamily = KernelFamily { name: "decode_sm90a", ptx: crate::ptx::DECODE_SM90A };
/// The Hopper dX of the backward (`cuda/backward_dx_sm90a.cu`, sm_90a PTX),
/// loaded likewise only on compute capability 9.0.
pub(crate) const BACKWARD_DX_SM90A: KernelFamily =
    KernelFamily { name: "backward_dx_sm90a", ptx: crate::ptx::BACKWARD_DX_SM90A };

/// The entry point to every kernel: owns the modules loaded into one CUDA
/// context, loading each kernel family's PTX on first use.
///
/// Create one per context and keep it; loading PTX makes the driver
/// JIT-compile it, which is slow.
pub struct LoraKernels {
    ctx: Arc<CudaContext>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
}

impl LoraKernels {
    /// Kernels for `ctx`; nothing is loaded until the first call that needs a kernel family.
    pub fn new(ctx: &Arc<CudaContext>) -> Self {
        LoraKernels { ctx: Arc::clone(ctx), modules: Mutex::new(HashMap::new()) }
    }

    /// The context the kernels are loaded into.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// `family`'s kernel `name`, loading the family's PTX on first use.
    pub(crate) fn function(&self, family: KernelFamily, name: &str) -> Result<CudaFunction> {
        let module = {
            // A poisoned lock only means another thread panicked mid-insert;
            // the map itself is still valid.
            let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            match modules.get(family.name) {
                Some(module) => Arc::clone(module),
                None => {
                    let module = self.ctx.load_module(Ptx::from_src(family.ptx))?;
                    modules.insert(family.name, Arc::clone(&module));
                    module
                }
            }
        };
        Ok(module.load_function(name)?)
    }

    /// Checks that `stream` belongs to this context.
    pub(crate) fn check_stream(&self, stream: &Arc<CudaStream>) -> Result<()> {
        check_same_context("stream", stream, &self.ctx)
    }
}

/// `Ok` when `buffer_stream` (a buffer's or a stream's) lives in `ctx`.
/// Compares the driver's context handles, not the `Arc`s: two `CudaContext`
/// values retaining the same primary context are the same context.
pub(crate) fn check_same_context(
    what: &'static str,
    buffer_stream: &Arc<CudaStream>,
    ctx: &Arc<CudaContext>,
) -> Result<()> {
    if buffer_stream.context().cu_ctx() == ctx.cu_ctx() {
        Ok(())
    } else {
        Err(LoraError::ContextMismatch { what })
    }
}

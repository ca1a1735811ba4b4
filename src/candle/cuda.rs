//! [`LoraLinear`]'s fused path on CUDA tensors: a candle custom op over
//! (X, A, B) whose forward is the crate's fused kernel and whose backward is
//! the crate's backward kernels, both on candle's stream over candle's buffers.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaStream, CudaView};
use candle_core::cuda_backend::{CudaDType, CudaStorage};
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};

use super::{LoraAdapters, LoraLinear};
use crate::half::{bf16, f16};
use crate::{
    Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, Direction, Dropout, FiniteCheck,
    ForwardOutput, GradMode, Linear, LoraDType, LoraKernels, MergeIntoLayer, RowAdapters,
};

/// The fused forward of `layer` on X `[m, k]` (contiguous, on a CUDA device),
/// with `dropout` on the adapter input (validated, active) if any.
pub(super) fn forward(layer: &LoraLinear, x: &Tensor, dropout: Option<Dropout>) -> Result<Tensor> {
    let (a, b) = match &layer.adapters {
        LoraAdapters::Single { a, b, .. } | LoraAdapters::Stack { a, b, .. } => (a, b),
    };
    x.apply_op3_arc(a, b, Arc::new(Box::new(FusedLora { layer: layer.clone(), dropout })))
}

/// The op: its arguments are X, A and B (the tensors autograd differentiates);
/// W0, the bias and the row indices are read from the layer (frozen). The
/// dropout is the one the forward drew: the backward regenerates its mask.
struct FusedLora {
    layer: LoraLinear,
    dropout: Option<Dropout>,
}

/// `weight ± scale·b·a` (W `[n, k]`, A `[r, k]`, B `[n, r]`) by the crate's
/// merge kernel into a new tensor, refused if any element is not finite.
pub(super) fn merge(weight: &Tensor, a: &Tensor, b: &Tensor, scale: f32, direction: Direction) -> Result<Tensor> {
    match weight.dtype() {
        DType::BF16 => merge_t::<bf16>(weight, a, b, scale, direction),
        DType::F16 => merge_t::<f16>(weight, a, b, scale, direction),
        DType::F32 => merge_t::<f32>(weight, a, b, scale, direction),
        dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused-lora merge")),
    }
}

fn merge_t<T: LoraDType + CudaDType>(
    weight: &Tensor,
    a: &Tensor,
    b: &Tensor,
    scale: f32,
    direction: Direction,
) -> Result<Tensor> {
    let (n, k) = weight.dims2()?;
    let rank = a.dim(0)?;
    let (weight, a, b) = (weight.contiguous()?, a.contiguous()?, b.contiguous()?);
    let (ws, wl) = cuda_storage(&weight)?;
    let (a_s, al) = cuda_storage(&a)?;
    let (bs, bl) = cuda_storage(&b)?;
    let storage = as_cuda(&ws);
    let stream = storage.device().cuda_stream();
    let kernels = kernels_for(&stream);
    let mut out = stream.alloc_zeros::<T>(n * k).map_err(wrap)?;
    {
        let adapter =
            Adapter { a: view::<T>(as_cuda(&a_s), al, "a")?, b: view::<T>(as_cuda(&bs), bl, "b")?, rank, scale };
        let weight = view::<T>(storage, wl, "weight")?;
        let mut layers = [MergeIntoLayer { weight, out: out.as_view_mut(), n, k, adapter }];
        kernels.merge_into(&stream, &mut layers, direction, FiniteCheck::RefuseNonFinite).map_err(wrap)?;
    }
    Ok(tensor_of(out, storage, &[n, k]))
}

fn wrap(e: impl std::fmt::Display + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// One [`LoraKernels`] per CUDA context, kept for the life of the process:
/// loading the PTX is the expensive part, and candle's devices are long-lived.
fn kernels_for(stream: &Arc<CudaStream>) -> Arc<LoraKernels> {
    static KERNELS: Mutex<Vec<Arc<LoraKernels>>> = Mutex::new(Vec::new());
    let ctx = stream.context();
    let mut all = KERNELS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(kernels) = all.iter().find(|k| k.context().cu_ctx() == ctx.cu_ctx()) {
        return Arc::clone(kernels);
    }
    let kernels = Arc::new(LoraKernels::new(ctx));
    all.push(Arc::clone(&kernels));
    kernels
}

/// The elements of a contiguous CUDA storage, in place.
fn view<'a, T: CudaDType>(storage: &'a CudaStorage, layout: &Layout, what: &str) -> Result<CudaView<'a, T>> {
    let (start, end) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("LoraLinear: {what} must be contiguous")))?;
    Ok(storage.as_cuda_slice::<T>()?.slice(start..end))
}

/// `tensor`'s CUDA storage (read-locked) and layout.
fn cuda_storage(tensor: &Tensor) -> Result<(candle_core::StorageRef<'_>, &Layout)> {
    let (storage, layout) = tensor.storage_and_layout();
    match &*storage {
        Storage::Cuda(_) => Ok((storage, layout)),
        _ => Err(candle_core::Error::Msg("LoraLinear: every tensor must be on the CUDA device".into())),
    }
}

fn as_cuda(storage: &Storage) -> &CudaStorage {
    match storage {
        Storage::Cuda(s) => s,
        _ => unreachable!("checked by cuda_storage"),
    }
}

/// A fresh tensor (no autograd history) over `slice`.
fn tensor_of<T: CudaDType>(
    slice: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
    storage: &CudaStorage,
    dims: &[usize],
) -> Tensor {
    let storage = CudaStorage::wrap_cuda_slice(slice, storage.device().clone());
    Tensor::from_storage(Storage::Cuda(storage), dims, BackpropOp::none(), false)
}

impl FusedLora {
    fn fwd<T: LoraDType + CudaDType>(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        a_s: &CudaStorage,
        al: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, _) = self.layer.weight.dims2()?;
        let stream = xs.device().cuda_stream();
        let kernels = kernels_for(&stream);
        let (w_storage, w_layout) = cuda_storage(&self.layer.weight)?;
        let bias = self.layer.bias.as_ref().map(cuda_storage).transpose()?;
        let linear = Linear {
            weight: view::<T>(as_cuda(&w_storage), w_layout, "weight")?,
            bias: bias.as_ref().map(|(s, l)| view::<T>(as_cuda(s), l, "bias")).transpose()?,
            n,
            k,
        };
        let (x, a, b) = (view::<T>(xs, xl, "x")?, view::<T>(a_s, al, "a")?, view::<T>(bs, bl, "b")?);
        let mut y = stream.alloc_zeros::<T>(m * n).map_err(wrap)?;
        {
            let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
            match &self.layer.adapters {
                LoraAdapters::Single { scale, .. } => {
                    let adapter = Adapter { a, b, rank: al.shape().dims()[0], scale: *scale };
                    let dropout = self.dropout.as_ref();
                    kernels.forward(&stream, &x, &linear, &adapter, dropout, &mut out).map_err(wrap)?;
                }
                LoraAdapters::Stack { ranks, scales, rows, .. } => {
                    let (rows_storage, rows_layout) = cuda_storage(rows)?;
                    let stack = AdapterStack { a, b, r_max: al.shape().dims()[1], ranks, scales };
                    let mut status = AdapterStatus::new(&stream).map_err(wrap)?;
                    let mut rows = RowAdapters {
                        index: view::<i32>(as_cuda(&rows_storage), rows_layout, "rows")?,
                        status: &mut status,
                    };
                    let dropout = self.dropout.as_ref();
                    kernels.forward_multi(&stream, &x, &linear, &stack, &mut rows, dropout, &mut out).map_err(wrap)?;
                }
            }
        }
        Ok((CudaStorage::wrap_cuda_slice(y, xs.device().clone()), Shape::from((m, n))))
    }

    /// dX `[m, k]`, dA and dB (A's and B's shapes) from dY `[m, n]`.
    fn bwd_t<T: LoraDType + CudaDType>(&self, x: &Tensor, a: &Tensor, b: &Tensor, dy: &Tensor) -> Result<[Tensor; 3]> {
        let (m, k) = x.dims2()?;
        let (n, _) = self.layer.weight.dims2()?;
        let guards = [x, a, b, dy, &self.layer.weight].map(cuda_storage);
        let [x, a, b, dy, w] = guards;
        let (xs, xl) = x?;
        let (a_s, al) = a?;
        let (bs, bl) = b?;
        let (dys, dyl) = dy?;
        let (ws, wl) = w?;
        let storage = as_cuda(&xs);
        let stream = storage.device().cuda_stream();
        let kernels = kernels_for(&stream);
        let linear = Linear { weight: view::<T>(as_cuda(&ws), wl, "weight")?, bias: None, n, k };
        let (av, bv) = (view::<T>(as_cuda(&a_s), al, "a")?, view::<T>(as_cuda(&bs), bl, "b")?);
        let inputs = BackwardInputs {
            dy: view::<T>(as_cuda(&dys), dyl, "dy")?,
            x: view::<T>(storage, xl, "x")?,
            p: None,
            dropout: self.dropout,
        };
        // Zeroed: a stack's padding gets a zero gradient whether or not the kernels write it.
        let mut dx = stream.alloc_zeros::<T>(m * k).map_err(wrap)?;
        let mut da = stream.alloc_zeros::<T>(al.shape().elem_count()).map_err(wrap)?;
        let mut db = stream.alloc_zeros::<T>(bl.shape().elem_count()).map_err(wrap)?;
        {
            let mut out = BackwardOutput {
                da: da.as_view_mut(),
                db: db.as_view_mut(),
                dx: dx.as_view_mut(),
                g: None,
                mode: GradMode::Overwrite,
            };
            match &self.layer.adapters {
                LoraAdapters::Single { scale, .. } => {
                    let adapter = Adapter { a: av, b: bv, rank: al.shape().dims()[0], scale: *scale };
                    kernels.backward(&stream, &inputs, &linear, &adapter, &mut out).map_err(wrap)?;
                }
                LoraAdapters::Stack { ranks, scales, rows, .. } => {
                    let (rows_storage, rows_layout) = cuda_storage(rows)?;
                    let stack = AdapterStack { a: av, b: bv, r_max: al.shape().dims()[1], ranks, scales };
                    let mut status = AdapterStatus::new(&stream).map_err(wrap)?;
                    let mut rows = RowAdapters {
                        index: view::<i32>(as_cuda(&rows_storage), rows_layout, "rows")?,
                        status: &mut status,
                    };
                    kernels.backward_multi(&stream, &inputs, &linear, &stack, &mut rows, &mut out).map_err(wrap)?;
                }
            }
        }
        Ok([
            tensor_of(dx, storage, &[m, k]),
            tensor_of(da, storage, al.shape().dims()),
            tensor_of(db, storage, bl.shape().dims()),
        ])
    }
}

impl CustomOp3 for FusedLora {
    fn name(&self) -> &'static str {
        "fused-lora"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        // LoraLinear runs this op on CUDA tensors only; the CPU takes candle's ops.
        Err(candle_core::Error::Msg("fused-lora's op runs on CUDA tensors only".into()))
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        a_s: &CudaStorage,
        al: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match xs.dtype() {
            DType::BF16 => self.fwd::<bf16>(xs, xl, a_s, al, bs, bl),
            DType::F16 => self.fwd::<f16>(xs, xl, a_s, al, bs, bl),
            DType::F32 => self.fwd::<f32>(xs, xl, a_s, al, bs, bl),
            dtype => Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused-lora")),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = grad_res.contiguous()?;
        let [dx, da, db] = match x.dtype() {
            DType::BF16 => self.bwd_t::<bf16>(x, a, b, &dy)?,
            DType::F16 => self.bwd_t::<f16>(x, a, b, &dy)?,
            DType::F32 => self.bwd_t::<f32>(x, a, b, &dy)?,
            dtype => return Err(candle_core::Error::UnsupportedDTypeForOp(dtype, "fused-lora backward")),
        };
        Ok((Some(dx), Some(da), Some(db)))
    }
}

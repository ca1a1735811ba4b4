//! The crate's own passes, run once each so the emulator counts and models
//! every launch they make.
//!
//! The operands are zeros: the kernels' instruction streams and memory
//! traffic do not depend on the values (no data-dependent branch in the
//! GEMMs), and zero-filled device memory costs nothing to produce.

use std::error::Error;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use fused_lora::{
    Adapter, AdapterStack, AdapterStatus, BackwardInputs, BackwardOutput, ForwardOutput, GradMode, Linear, LoraKernels,
    RowAdapters,
};
use half::bf16;

/// One adapted projection of docs/performance.md's table, as the report runs it.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub projection: &'static str,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub r: usize,
}

impl Case {
    /// How the tables name the case: `projection M=m r=r`.
    pub fn label(&self) -> String {
        format!("{} M={} r={}", self.projection, self.m, self.r)
    }

    /// The CSV cells that name the case: projection, m, k, n, r.
    pub fn csv_cells(&self) -> Vec<String> {
        vec![
            self.projection.to_string(),
            self.m.to_string(),
            self.k.to_string(),
            self.n.to_string(),
            self.r.to_string(),
        ]
    }

    /// Multiply-adds of the forward (base GEMM, shrink, expand), 2 FLOPs each.
    pub fn forward_flops(&self) -> f64 {
        let (m, k, n, r) = (self.m as f64, self.k as f64, self.n as f64, self.r as f64);
        2.0 * m * n * k + 2.0 * m * r * k + 2.0 * m * n * r
    }

    /// The fewest bytes the forward moves: X, W0, A, B read once, Y and P
    /// written once (bf16).
    pub fn forward_bytes(&self) -> f64 {
        let (m, k, n, r) = (self.m as f64, self.k as f64, self.n as f64, self.r as f64);
        2.0 * (m * k + n * k + r * k + n * r + m * n + m * r)
    }

    /// W0's bytes (bf16): what decode must read at least once.
    pub fn w0_bytes(&self) -> f64 {
        2.0 * self.n as f64 * self.k as f64
    }

    /// Multiply-adds of the backward (dY·W0, G = dY·B, dB, dA, s·G·A).
    pub fn backward_flops(&self) -> f64 {
        let (m, k, n, r) = (self.m as f64, self.k as f64, self.n as f64, self.r as f64);
        2.0 * m * n * k + 4.0 * m * n * r + 4.0 * m * r * k
    }

    /// The fewest bytes the backward moves: dY, X, W0, A, B, P read once,
    /// dA, dB, dX written once (bf16).
    pub fn backward_bytes(&self) -> f64 {
        let (m, k, n, r) = (self.m as f64, self.k as f64, self.n as f64, self.r as f64);
        2.0 * (m * n + m * k + n * k + r * k + n * r + m * r + r * k + n * r + m * k)
    }
}

fn zeros(stream: &Arc<CudaStream>, len: usize) -> Result<CudaSlice<bf16>, Box<dyn Error>> {
    Ok(stream.alloc_zeros::<bf16>(len)?)
}

/// The fused forward with P kept for the backward: every launch it makes.
pub fn forward(kernels: &LoraKernels, stream: &Arc<CudaStream>, c: &Case) -> Result<(), Box<dyn Error>> {
    let x = zeros(stream, c.m * c.k)?;
    let w = zeros(stream, c.n * c.k)?;
    let a = zeros(stream, c.r * c.k)?;
    let b = zeros(stream, c.n * c.r)?;
    let mut y = zeros(stream, c.m * c.n)?;
    let mut p = zeros(stream, c.m * c.r)?;
    let linear = Linear { weight: w.as_view(), bias: None, n: c.n, k: c.k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: c.r, scale: 2.0 };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    kernels.forward(stream, &x.as_view(), &linear, &adapter, None, &mut out)?;
    stream.synchronize()?;
    Ok(())
}

/// The backward with the forward's P kept: G, dA, dB and dX, every launch.
pub fn backward(kernels: &LoraKernels, stream: &Arc<CudaStream>, c: &Case) -> Result<(), Box<dyn Error>> {
    let dy = zeros(stream, c.m * c.n)?;
    let x = zeros(stream, c.m * c.k)?;
    let w = zeros(stream, c.n * c.k)?;
    let a = zeros(stream, c.r * c.k)?;
    let b = zeros(stream, c.n * c.r)?;
    let p = zeros(stream, c.m * c.r)?;
    let mut da = zeros(stream, c.r * c.k)?;
    let mut db = zeros(stream, c.n * c.r)?;
    let mut dx = zeros(stream, c.m * c.k)?;
    let linear = Linear { weight: w.as_view(), bias: None, n: c.n, k: c.k };
    let adapter = Adapter { a: a.as_view(), b: b.as_view(), rank: c.r, scale: 2.0 };
    let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: Some(p.as_view()), dropout: None };
    let mut out = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.as_view_mut(),
        g: None,
        mode: GradMode::Overwrite,
    };
    kernels.backward(stream, &inputs, &linear, &adapter, &mut out)?;
    stream.synchronize()?;
    Ok(())
}

/// The multi-adapter forward over `adapters` adapters of rank `c.r` (1: the
/// same entry point, every row adapter 0), rows scattered over them
/// (`shapes::scattered_rows`), P kept: every launch it makes.
pub fn forward_multi(
    kernels: &LoraKernels,
    stream: &Arc<CudaStream>,
    c: &Case,
    adapters: usize,
) -> Result<(), Box<dyn Error>> {
    let x = zeros(stream, c.m * c.k)?;
    let w = zeros(stream, c.n * c.k)?;
    let a = zeros(stream, adapters * c.r * c.k)?;
    let b = zeros(stream, adapters * c.n * c.r)?;
    let mut y = zeros(stream, c.m * c.n)?;
    let mut p = zeros(stream, c.m * c.r)?;
    let index = stream.clone_htod(&crate::shapes::scattered_rows(c.m, adapters))?;
    let (ranks, scales) = (vec![c.r; adapters], vec![2.0; adapters]);
    let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max: c.r, ranks: &ranks, scales: &scales };
    let mut status = AdapterStatus::new(stream)?;
    let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
    let linear = Linear { weight: w.as_view(), bias: None, n: c.n, k: c.k };
    let mut out = ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) };
    kernels.forward_multi(stream, &x.as_view(), &linear, &stack, &mut rows, None, &mut out)?;
    stream.synchronize()?;
    Ok(())
}

/// The multi-adapter backward over `adapters` adapters of rank `c.r`, rows
/// scattered over them, P kept: every launch it makes.
pub fn backward_multi(
    kernels: &LoraKernels,
    stream: &Arc<CudaStream>,
    c: &Case,
    adapters: usize,
) -> Result<(), Box<dyn Error>> {
    let dy = zeros(stream, c.m * c.n)?;
    let x = zeros(stream, c.m * c.k)?;
    let w = zeros(stream, c.n * c.k)?;
    let a = zeros(stream, adapters * c.r * c.k)?;
    let b = zeros(stream, adapters * c.n * c.r)?;
    let p = zeros(stream, c.m * c.r)?;
    let mut da = zeros(stream, adapters * c.r * c.k)?;
    let mut db = zeros(stream, adapters * c.n * c.r)?;
    let mut dx = zeros(stream, c.m * c.k)?;
    let index = stream.clone_htod(&crate::shapes::scattered_rows(c.m, adapters))?;
    let (ranks, scales) = (vec![c.r; adapters], vec![2.0; adapters]);
    let stack = AdapterStack { a: a.as_view(), b: b.as_view(), r_max: c.r, ranks: &ranks, scales: &scales };
    let mut status = AdapterStatus::new(stream)?;
    let mut rows = RowAdapters { index: index.as_view(), status: &mut status };
    let linear = Linear { weight: w.as_view(), bias: None, n: c.n, k: c.k };
    let inputs = BackwardInputs { dy: dy.as_view(), x: x.as_view(), p: Some(p.as_view()), dropout: None };
    let mut out = BackwardOutput {
        da: da.as_view_mut(),
        db: db.as_view_mut(),
        dx: dx.as_view_mut(),
        g: None,
        mode: GradMode::Overwrite,
    };
    kernels.backward_multi(stream, &inputs, &linear, &stack, &mut rows, &mut out)?;
    stream.synchronize()?;
    Ok(())
}

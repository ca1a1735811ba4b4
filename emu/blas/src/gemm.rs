//! One GEMM, `D = epilogue(alpha * op(A) * op(B) + beta * C)`, column-major
//! as cuBLAS, computed on the CPU over the emulated device memory. cuBLAS
//! calls it with `D = C` and no epilogue; cuBLASLt with its descriptors'.

use crate::types::{Accumulate, Elem, GemmTypes};
use half::{bf16, f16};
use ptx_emu_private::{read, write, Access, CuResult, DevicePtr, Region};
use std::ffi::CStr;

/// A matrix operand in device memory: address and leading dimension.
#[derive(Clone, Copy, Debug)]
pub struct Matrix {
    pub address: DevicePtr,
    pub ld: usize,
}

/// The shape and types of one GEMM (validated by the caller).
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub transa: bool,
    pub transb: bool,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub types: GemmTypes,
}

/// Reads a matrix of `rows x cols` elements stored column-major with
/// leading dimension `ld`, converting to f64 (exact for every type here).
fn load(
    call: &CStr,
    operand: &CStr,
    elem: Elem,
    matrix: Matrix,
    rows: usize,
    cols: usize,
) -> Result<Vec<f64>, CuResult> {
    let access = Access { call, operand };
    let region = Region { address: matrix.address, run_len: rows, pitch: matrix.ld, runs: cols };
    Ok(match elem {
        Elem::F16 => read::<u16>(access, region)?.into_iter().map(|x| f16::from_bits(x).to_f64()).collect(),
        Elem::Bf16 => read::<u16>(access, region)?.into_iter().map(|x| bf16::from_bits(x).to_f64()).collect(),
        Elem::F32 => read::<f32>(access, region)?.into_iter().map(f64::from).collect(),
        Elem::F64 => read::<f64>(access, region)?,
    })
}

/// Writes `values` (`rows x cols`, packed column-major) into the matrix,
/// each rounded once to `elem`.
fn store(
    call: &CStr,
    operand: &CStr,
    elem: Elem,
    matrix: Matrix,
    rows: usize,
    cols: usize,
    values: &[f64],
) -> Result<(), CuResult> {
    let access = Access { call, operand };
    let region = Region { address: matrix.address, run_len: rows, pitch: matrix.ld, runs: cols };
    match elem {
        Elem::F16 => write(access, region, &values.iter().map(|&x| f16::from_f64(x).to_bits()).collect::<Vec<_>>()),
        Elem::Bf16 => write(access, region, &values.iter().map(|&x| bf16::from_f64(x).to_bits()).collect::<Vec<_>>()),
        Elem::F32 => write(access, region, &values.iter().map(|&x| x as f32).collect::<Vec<_>>()),
        Elem::F64 => write(access, region, values),
    }
}

/// What is applied to `alpha * acc + beta * C` before the one rounding.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue {
    /// A vector of `m` elements added to every column.
    pub bias: Option<Bias>,
    pub activation: Activation,
}

#[derive(Clone, Copy, Debug)]
pub struct Bias {
    pub address: DevicePtr,
    pub elem: Elem,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    #[default]
    Identity,
    Relu,
    /// GELU in its tanh form, as cuBLASLt's epilogue computes it.
    Gelu,
}

impl Activation {
    fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Gelu => {
                let inner = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
        }
    }
}

/// The four matrices of one GEMM: `D` may be `C` (cuBLAS) or another one
/// of C's type and shape.
#[derive(Clone, Copy, Debug)]
pub struct Operands {
    pub a: Matrix,
    pub b: Matrix,
    pub c: Matrix,
    pub d: Matrix,
}

/// `D = epilogue(alpha * op(A) * op(B) + beta * C)` for one set of
/// matrices. `A` and `B` are not read when `alpha` or `k` is zero, `C` not
/// when `beta` is zero (so NaN there does not propagate), as cuBLAS
/// specifies; only the `m x n` region of `D` is written.
pub fn gemm(
    call: &CStr,
    shape: Shape,
    alpha: f64,
    beta: f64,
    operands: Operands,
    epilogue: Epilogue,
) -> Result<(), CuResult> {
    let Shape { transa, transb, m, n, k, types } = shape;
    let Operands { a, b, c, d } = operands;
    let products = alpha != 0.0 && k > 0;
    // op(A) as m x k row-major, op(B) as k x n column-major: each dot
    // product below walks two contiguous slices.
    let (op_a, op_b) = if products {
        let stored_a = if transa { (k, m) } else { (m, k) };
        let raw_a = load(call, c"A", types.a, a, stored_a.0, stored_a.1)?;
        let stored_b = if transb { (n, k) } else { (k, n) };
        let raw_b = load(call, c"B", types.b, b, stored_b.0, stored_b.1)?;
        let op_a = if transa { raw_a } else { transpose(&raw_a, m, k) };
        let op_b = if transb { transpose(&raw_b, n, k) } else { raw_b };
        (op_a, op_b)
    } else {
        (Vec::new(), Vec::new())
    };
    let old_c = if beta != 0.0 { load(call, c"C", types.c, c, m, n)? } else { Vec::new() };
    let bias = match epilogue.bias {
        Some(bias) => load(call, c"bias", bias.elem, Matrix { address: bias.address, ld: m }, m, 1)?,
        None => Vec::new(),
    };
    let mut out = vec![0.0f64; m * n];
    let columns = |first: usize, chunk: &mut [f64]| {
        for (dj, column) in chunk.chunks_mut(m).enumerate() {
            let j = first + dj;
            for (i, value) in column.iter_mut().enumerate() {
                let acc = if products { dot(types.accumulate, &op_a[i * k..][..k], &op_b[j * k..][..k]) } else { 0.0 };
                let prior = if beta != 0.0 { old_c[j * m + i] } else { 0.0 };
                let mut result = combine(types.accumulate, alpha, acc, beta, prior);
                if !bias.is_empty() {
                    result = round_to_accumulate(types.accumulate, result + bias[i]);
                }
                *value = round_to_accumulate(types.accumulate, epilogue.activation.apply(result));
            }
        }
    };
    parallel_columns(&mut out, m, n, m * n * k.max(1), columns);
    // cuBLAS's output is its C; cuBLASLt's may be a D of its own.
    let output = if d.address == c.address { c"C" } else { c"D" };
    store(call, output, types.c, d, m, n, &out)
}

/// A value computed in f64 as the accumulation type holds it.
fn round_to_accumulate(accumulate: Accumulate, x: f64) -> f64 {
    match accumulate {
        Accumulate::F32 => f64::from(x as f32),
        Accumulate::F64 => x,
    }
}

/// `rows x cols` column-major → row-major (or the reverse).
fn transpose(values: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; values.len()];
    for c in 0..cols {
        for r in 0..rows {
            out[r * cols + c] = values[c * rows + r];
        }
    }
    out
}

/// The sum of products in the accumulation type, in order.
fn dot(accumulate: Accumulate, a: &[f64], b: &[f64]) -> f64 {
    match accumulate {
        Accumulate::F32 => f64::from(a.iter().zip(b).fold(0.0f32, |acc, (&x, &y)| acc + x as f32 * y as f32)),
        Accumulate::F64 => a.iter().zip(b).fold(0.0f64, |acc, (&x, &y)| acc + x * y),
    }
}

/// `alpha * acc + beta * prior` in the accumulation type (the caller rounds
/// the result once to C's type).
fn combine(accumulate: Accumulate, alpha: f64, acc: f64, beta: f64, prior: f64) -> f64 {
    match accumulate {
        Accumulate::F32 => f64::from(alpha as f32 * acc as f32 + beta as f32 * prior as f32),
        Accumulate::F64 => alpha * acc + beta * prior,
    }
}

/// Runs `work(first_column, columns)` over `out` (`m x n` column-major),
/// split by columns over the host's cores when the GEMM is large enough to
/// be worth the threads.
fn parallel_columns(out: &mut [f64], m: usize, n: usize, work_items: usize, work: impl Fn(usize, &mut [f64]) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(n);
    if threads <= 1 || work_items < 1 << 20 || m == 0 {
        work(0, out);
        return;
    }
    let per_thread = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for (index, chunk) in out.chunks_mut(per_thread * m).enumerate() {
            let work = &work;
            scope.spawn(move || work(index * per_thread, chunk));
        }
    });
}

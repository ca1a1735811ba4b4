//! `cublasLtMatmul`'s problem: checked against the descriptor and the four
//! layouts (as the heuristic checks it too), then run batch by batch on the
//! shared GEMM.

use crate::descriptors::{Layout, MatmulDesc};
use ptx_emu_blas::gemm::{gemm, Activation, Bias, Epilogue, Matrix, Operands, Shape};
use ptx_emu_blas::status::{CUBLAS_STATUS_INVALID_VALUE, CUBLAS_STATUS_NOT_SUPPORTED};
use ptx_emu_blas::types::{require, transposed, Elem, GemmTypes};
use ptx_emu_private::{read, Access, CuResult, DevicePtr, Region};

/// A problem cuBLASLt would accept, in the emulation's terms.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub shape: Shape,
    pub count: usize,
    /// Leading dimensions and batch strides (elements) of A, B, C, D.
    pub lds: [usize; 4],
    pub strides: [usize; 4],
    pub activation: Activation,
    /// The bias's type and batch stride, when the epilogue adds one.
    pub bias: Option<(DevicePtr, Elem, usize)>,
    pub scales_on_device: bool,
}

/// The epilogues candle and cudarc use: `(adds a bias, activation)`.
fn epilogue(value: u32) -> Result<(bool, Activation), u32> {
    match value {
        1 => Ok((false, Activation::Identity)),
        2 => Ok((false, Activation::Relu)),
        4 => Ok((true, Activation::Identity)),
        6 => Ok((true, Activation::Relu)),
        32 => Ok((false, Activation::Gelu)),
        36 => Ok((true, Activation::Gelu)),
        _ => Err(CUBLAS_STATUS_NOT_SUPPORTED),
    }
}

fn dimension(value: u64) -> Result<usize, u32> {
    usize::try_from(value).map_err(|_| CUBLAS_STATUS_INVALID_VALUE)
}

/// Checks the problem: shapes that agree, leading dimensions that hold their
/// rows, one batch count, supported types, order, epilogue and pointer mode.
pub fn plan(desc: &MatmulDesc, layouts: [Layout; 4]) -> Result<Plan, u32> {
    let [a, b, c, d] = layouts;
    let (transa, transb) = (transposed(desc.transa)?, transposed(desc.transb)?);
    if desc.transc != 0 || layouts.iter().any(|layout| layout.order != 0) {
        return Err(CUBLAS_STATUS_NOT_SUPPORTED);
    }
    let (m, n) = (dimension(d.rows)?, dimension(d.cols)?);
    require(c.rows == d.rows && c.cols == d.cols)?;
    let (a_rows, a_cols) = (dimension(a.rows)?, dimension(a.cols)?);
    let (k, a_m) = if transa { (a_rows, a_cols) } else { (a_cols, a_rows) };
    let (b_rows, b_cols) = (dimension(b.rows)?, dimension(b.cols)?);
    let (b_k, b_n) = if transb { (b_cols, b_rows) } else { (b_rows, b_cols) };
    require(a_m == m && b_k == k && b_n == n)?;
    for layout in &layouts {
        require(layout.ld >= 1 && layout.ld as u64 >= layout.rows)?;
        require(layout.batch_count >= 1 && layout.batch_stride >= 0)?;
        require(layout.batch_count == d.batch_count)?;
    }
    let types = GemmTypes::gemm_ex(a.data_type, b.data_type, c.data_type, desc.compute_type)?;
    if d.data_type != c.data_type || Elem::from_data_type(desc.scale_type)? != types.scale {
        return Err(CUBLAS_STATUS_NOT_SUPPORTED);
    }
    let scales_on_device = match desc.pointer_mode {
        0 => false,
        1 => true,
        _ => return Err(CUBLAS_STATUS_NOT_SUPPORTED),
    };
    let (adds_bias, activation) = epilogue(desc.epilogue)?;
    let bias = if adds_bias {
        require(desc.bias_pointer != 0 && desc.bias_batch_stride >= 0)?;
        let elem = if desc.bias_data_type < 0 { types.c } else { Elem::from_data_type(desc.bias_data_type)? };
        Some((desc.bias_pointer, elem, desc.bias_batch_stride as usize))
    } else {
        None
    };
    let ld = |layout: &Layout| layout.ld as usize;
    let stride = |layout: &Layout| layout.batch_stride as usize;
    Ok(Plan {
        shape: Shape { transa, transb, m, n, k, types },
        count: d.batch_count as usize,
        lds: [ld(&a), ld(&b), ld(&c), ld(&d)],
        strides: [stride(&a), stride(&b), stride(&c), stride(&d)],
        activation,
        bias,
        scales_on_device,
    })
}

/// A scale of the plan's scale type in device memory (device pointer mode).
pub fn device_scale(
    call: &std::ffi::CStr,
    operand: &std::ffi::CStr,
    elem: Elem,
    address: DevicePtr,
) -> Result<f64, CuResult> {
    let access = Access { call, operand };
    let region = Region::contiguous(address, 1);
    Ok(match elem {
        Elem::F16 => half::f16::from_bits(read::<u16>(access, region)?[0]).to_f64(),
        Elem::Bf16 => half::bf16::from_bits(read::<u16>(access, region)?[0]).to_f64(),
        Elem::F32 => f64::from(read::<f32>(access, region)?[0]),
        Elem::F64 => read::<f64>(access, region)?[0],
    })
}

/// Runs every batch: `addresses` are A, B, C, D's first matrices.
pub fn run(plan: &Plan, alpha: f64, beta: f64, addresses: [DevicePtr; 4]) -> Result<(), CuResult> {
    let types = plan.shape.types;
    let elems = [types.a, types.b, types.c, types.c];
    for index in 0..plan.count {
        let matrix = |which: usize| Matrix {
            address: addresses[which].wrapping_add((plan.strides[which] * index * elems[which].bytes()) as u64),
            ld: plan.lds[which],
        };
        let operands = Operands { a: matrix(0), b: matrix(1), c: matrix(2), d: matrix(3) };
        let bias = plan.bias.map(|(address, elem, stride)| Bias {
            address: address.wrapping_add((stride * index * elem.bytes()) as u64),
            elem,
        });
        let epilogue = Epilogue { bias, activation: plan.activation };
        gemm(c"cublasLtMatmul", plan.shape, alpha, beta, operands, epilogue)?;
    }
    Ok(())
}

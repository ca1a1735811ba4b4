//! The exported functions, with the C ABI of `cublas_api.h`. Each one
//! validates its arguments in the order cuBLAS documents (an unknown handle
//! first: `NOT_INITIALIZED`; then `INVALID_VALUE`; then unsupported types:
//! `NOT_SUPPORTED`), and never lets a panic cross the C ABI.

use crate::handle::{self, Settings};
use half::{bf16, f16};
use ptx_emu_blas::gemm::{gemm, Epilogue, Matrix, Operands, Shape};
use ptx_emu_blas::status::*;
use ptx_emu_blas::types::{require, transposed, Elem, GemmTypes};
use ptx_emu_private::{check, on_stream, read, Access, CuResult, DevicePtr, Region};
use std::ffi::{c_char, c_int, c_longlong, c_void, CStr};

pub type cublasHandle_t = *mut c_void;
pub type CUstream = *mut c_void;

/// Runs `body`, turning a panic into `CUBLAS_STATUS_INTERNAL_ERROR`.
fn guard(body: impl FnOnce() -> Status) -> cublasStatus_t {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(status) => status_code(status),
        Err(_) => CUBLAS_STATUS_INTERNAL_ERROR,
    }
}

fn key(handle: cublasHandle_t) -> usize {
    handle as usize
}

/// # Safety
/// `out` must be null or valid for one write.
unsafe fn write_out<T>(out: *mut T, value: T) -> Status {
    require(!out.is_null())?;
    out.write(value);
    Ok(())
}

// ------------------------------------------------------------- the handle

/// # Safety
/// `handle` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasCreate_v2(handle: *mut cublasHandle_t) -> cublasStatus_t {
    guard(|| {
        require(!handle.is_null())?;
        write_out(handle, handle::create() as cublasHandle_t)
    })
}

/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasDestroy_v2(handle: cublasHandle_t) -> cublasStatus_t {
    guard(|| handle::destroy(key(handle)))
}

/// # Safety
/// Any values may be passed; the stream is checked when work runs on it.
#[no_mangle]
pub unsafe extern "C" fn cublasSetStream_v2(handle: cublasHandle_t, stream: CUstream) -> cublasStatus_t {
    guard(|| handle::update(key(handle), |s| s.stream = stream as usize))
}

/// # Safety
/// `stream` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasGetStream_v2(handle: cublasHandle_t, stream: *mut CUstream) -> cublasStatus_t {
    guard(|| write_out(stream, handle::settings(key(handle))?.stream as CUstream))
}

/// The workspace must be 256-byte aligned, as cuBLAS requires; the CPU
/// computation does not use it.
///
/// # Safety
/// Any values may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasSetWorkspace_v2(
    handle: cublasHandle_t,
    workspace: *mut c_void,
    bytes: usize,
) -> cublasStatus_t {
    guard(|| {
        handle::settings(key(handle))?;
        require(bytes == 0 || (!workspace.is_null() && workspace as usize % 256 == 0))?;
        handle::update(key(handle), |s| s.workspace = (workspace as u64, bytes))
    })
}

/// # Safety
/// Any values may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasSetPointerMode_v2(handle: cublasHandle_t, mode: c_int) -> cublasStatus_t {
    guard(|| {
        handle::settings(key(handle))?;
        require(matches!(mode, 0 | 1))?;
        handle::update(key(handle), |s| s.pointer_mode = mode)
    })
}

/// # Safety
/// `mode` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasGetPointerMode_v2(handle: cublasHandle_t, mode: *mut c_int) -> cublasStatus_t {
    guard(|| write_out(mode, handle::settings(key(handle))?.pointer_mode))
}

/// Kept and reported back; the CPU computation is the same in every mode.
///
/// # Safety
/// Any values may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasSetMathMode(handle: cublasHandle_t, mode: c_int) -> cublasStatus_t {
    guard(|| {
        handle::settings(key(handle))?;
        // CUBLAS_DEFAULT_MATH .. CUBLAS_TF32_TENSOR_OP_MATH, optionally with
        // CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION (16).
        require(matches!(mode & !16, 0..=3))?;
        handle::update(key(handle), |s| s.math_mode = mode)
    })
}

/// # Safety
/// `mode` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasGetMathMode(handle: cublasHandle_t, mode: *mut c_int) -> cublasStatus_t {
    guard(|| write_out(mode, handle::settings(key(handle))?.math_mode))
}

/// cuBLAS 13.0.0.
const VERSION: c_int = 130_000;

/// # Safety
/// `version` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasGetVersion_v2(handle: cublasHandle_t, version: *mut c_int) -> cublasStatus_t {
    guard(|| {
        handle::settings(key(handle))?;
        write_out(version, VERSION)
    })
}

/// # Safety
/// `value` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasGetProperty(property: c_int, value: *mut c_int) -> cublasStatus_t {
    // MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL.
    guard(|| match property {
        0 => write_out(value, VERSION / 10_000),
        1 => write_out(value, VERSION / 100 % 100),
        2 => write_out(value, VERSION % 100),
        _ => Err(CUBLAS_STATUS_INVALID_VALUE),
    })
}

#[no_mangle]
pub extern "C" fn cublasGetStatusName(status: cublasStatus_t) -> *const c_char {
    name(status).as_ptr()
}

#[no_mangle]
pub extern "C" fn cublasGetStatusString(status: cublasStatus_t) -> *const c_char {
    description(status).as_ptr()
}

// ------------------------------------------------------------------ GEMM

/// How the matrices of a call are found, batch by batch.
enum Batch {
    /// `count` triples, each `stride` elements after the previous.
    Strided { count: usize, strides: [usize; 3] },
    /// Device arrays of `count` device pointers each.
    Pointers { count: usize, arrays: [DevicePtr; 3] },
}

/// Everything a GEMM entry point passes, before validation.
struct GemmCall {
    name: &'static CStr,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: (DevicePtr, c_int),
    b: (DevicePtr, c_int),
    beta: *const c_void,
    c: (DevicePtr, c_int),
    batch: Batch,
}

/// A scale (`alpha`, `beta`) of type `elem` on the host.
///
/// # Safety
/// `pointer` must be valid for one read of the type.
unsafe fn host_scale(elem: Elem, pointer: *const c_void) -> f64 {
    match elem {
        Elem::F16 => f16::from_bits(pointer.cast::<u16>().read_unaligned()).to_f64(),
        Elem::Bf16 => bf16::from_bits(pointer.cast::<u16>().read_unaligned()).to_f64(),
        Elem::F32 => f64::from(pointer.cast::<f32>().read_unaligned()),
        Elem::F64 => pointer.cast::<f64>().read_unaligned(),
    }
}

/// A scale of type `elem` in device memory (device pointer mode), read
/// with the checks when the work runs.
fn device_scale(call: &CStr, operand: &CStr, elem: Elem, address: DevicePtr) -> Result<f64, CuResult> {
    let access = Access { call, operand };
    let region = Region::contiguous(address, 1);
    Ok(match elem {
        Elem::F16 => f16::from_bits(read::<u16>(access, region)?[0]).to_f64(),
        Elem::Bf16 => bf16::from_bits(read::<u16>(access, region)?[0]).to_f64(),
        Elem::F32 => f64::from(read::<f32>(access, region)?[0]),
        Elem::F64 => read::<f64>(access, region)?[0],
    })
}

/// Validates and runs a GEMM call on the handle's stream.
///
/// # Safety
/// `alpha` and `beta` point to a scale on the host or (device pointer mode)
/// hold device addresses.
unsafe fn run(handle: cublasHandle_t, call: GemmCall, types: Result<GemmTypes, u32>) -> Status {
    let Settings { stream, pointer_mode, workspace, .. } = handle::settings(key(handle))?;
    let (transa, transb) = (transposed(call.transa)?, transposed(call.transb)?);
    require(call.m >= 0 && call.n >= 0 && call.k >= 0)?;
    let (m, n, k) = (call.m as usize, call.n as usize, call.k as usize);
    let rows_a = if transa { k } else { m };
    let rows_b = if transb { n } else { k };
    require(call.a.1 >= 1 && call.a.1 as usize >= rows_a)?;
    require(call.b.1 >= 1 && call.b.1 as usize >= rows_b)?;
    require(call.c.1 >= 1 && call.c.1 as usize >= m)?;
    let count = match call.batch {
        Batch::Strided { count, .. } | Batch::Pointers { count, .. } => count,
    };
    require(!call.alpha.is_null() && !call.beta.is_null())?;
    let types = types?;
    if m == 0 || n == 0 || count == 0 {
        return Ok(());
    }
    let shape = Shape { transa, transb, m, n, k, types };
    let on_device = pointer_mode == 1;
    let (alpha_pointer, beta_pointer) = (call.alpha, call.beta);
    // Host scales are read now, as the call returns before the work does on
    // hardware; device scales when the work runs.
    let host_scales =
        (!on_device).then(|| (host_scale(types.scale, alpha_pointer), host_scale(types.scale, beta_pointer)));
    let scale_addresses = (alpha_pointer as DevicePtr, beta_pointer as DevicePtr);
    let matrix = |(address, ld): (DevicePtr, c_int)| Matrix { address, ld: ld as usize };
    let (a, b, c) = (matrix(call.a), matrix(call.b), matrix(call.c));
    let name = call.name;
    let batch = call.batch;
    on_stream(stream, || {
        // cuBLAS may use the workspace as scratch in any call: it must still be live.
        check(Access { call: name, operand: c"workspace" }, workspace.0, workspace.1)?;
        let (alpha, beta) = match host_scales {
            Some(scales) => scales,
            None => (
                device_scale(name, c"alpha", types.scale, scale_addresses.0)?,
                device_scale(name, c"beta", types.scale, scale_addresses.1)?,
            ),
        };
        match batch {
            Batch::Strided { count, strides } => {
                let offset = |matrix: Matrix, elem: Elem, stride: usize, index: usize| Matrix {
                    address: matrix.address.wrapping_add((stride * index * elem.bytes()) as u64),
                    ..matrix
                };
                for index in 0..count {
                    let a = offset(a, types.a, strides[0], index);
                    let b = offset(b, types.b, strides[1], index);
                    let c = offset(c, types.c, strides[2], index);
                    gemm(name, shape, alpha, beta, Operands { a, b, c, d: c }, Epilogue::default())?;
                }
            }
            Batch::Pointers { count, arrays } => {
                let pointers = |array: DevicePtr, operand: &CStr| {
                    read::<u64>(Access { call: name, operand }, Region::contiguous(array, count))
                };
                let (pa, pb, pc) =
                    (pointers(arrays[0], c"Aarray")?, pointers(arrays[1], c"Barray")?, pointers(arrays[2], c"Carray")?);
                for index in 0..count {
                    let at = |matrix: Matrix, address: u64| Matrix { address, ..matrix };
                    let c = at(c, pc[index]);
                    let operands = Operands { a: at(a, pa[index]), b: at(b, pb[index]), c, d: c };
                    gemm(name, shape, alpha, beta, operands, Epilogue::default())?;
                }
            }
        }
        Ok(())
    })
    .map_err(from_driver)
}

fn single() -> Batch {
    Batch::Strided { count: 1, strides: [0; 3] }
}

/// A batch count and strides as cuBLAS takes them (signed).
fn strided(count: c_int, sa: c_longlong, sb: c_longlong, sc: c_longlong) -> Result<Batch, u32> {
    require(count >= 0 && sa >= 0 && sb >= 0 && sc >= 0)?;
    Ok(Batch::Strided { count: count as usize, strides: [sa as usize, sb as usize, sc as usize] })
}

macro_rules! typed_gemm {
    ($name:ident, $elem:expr, $t:ty) => {
        /// # Safety
        /// As cuBLAS documents: device matrices, host or device scales.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            handle: cublasHandle_t,
            transa: c_int,
            transb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: *const $t,
            a: *const $t,
            lda: c_int,
            b: *const $t,
            ldb: c_int,
            beta: *const $t,
            c: *mut $t,
            ldc: c_int,
        ) -> cublasStatus_t {
            guard(|| {
                let call = GemmCall {
                    name: CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()).unwrap_or(c"gemm"),
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    alpha: alpha.cast(),
                    a: (a as DevicePtr, lda),
                    b: (b as DevicePtr, ldb),
                    beta: beta.cast(),
                    c: (c as DevicePtr, ldc),
                    batch: single(),
                };
                run(handle, call, Ok(GemmTypes::uniform($elem)))
            })
        }
    };
}

macro_rules! typed_gemm_strided_batched {
    ($name:ident, $elem:expr, $t:ty) => {
        /// # Safety
        /// As cuBLAS documents: device matrices, host or device scales.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            handle: cublasHandle_t,
            transa: c_int,
            transb: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: *const $t,
            a: *const $t,
            lda: c_int,
            stride_a: c_longlong,
            b: *const $t,
            ldb: c_int,
            stride_b: c_longlong,
            beta: *const $t,
            c: *mut $t,
            ldc: c_int,
            stride_c: c_longlong,
            batch_count: c_int,
        ) -> cublasStatus_t {
            guard(|| {
                let call = GemmCall {
                    name: CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()).unwrap_or(c"gemm"),
                    transa,
                    transb,
                    m,
                    n,
                    k,
                    alpha: alpha.cast(),
                    a: (a as DevicePtr, lda),
                    b: (b as DevicePtr, ldb),
                    beta: beta.cast(),
                    c: (c as DevicePtr, ldc),
                    batch: strided(batch_count, stride_a, stride_b, stride_c)?,
                };
                run(handle, call, Ok(GemmTypes::uniform($elem)))
            })
        }
    };
}

typed_gemm!(cublasSgemm_v2, Elem::F32, f32);
typed_gemm!(cublasDgemm_v2, Elem::F64, f64);
typed_gemm!(cublasHgemm, Elem::F16, u16);
typed_gemm_strided_batched!(cublasSgemmStridedBatched, Elem::F32, f32);
typed_gemm_strided_batched!(cublasDgemmStridedBatched, Elem::F64, f64);
typed_gemm_strided_batched!(cublasHgemmStridedBatched, Elem::F16, u16);

/// `algo` is accepted whatever it is (every algorithm computes the same here).
///
/// # Safety
/// As cuBLAS documents: device matrices, host or device scales.
#[no_mangle]
pub unsafe extern "C" fn cublasGemmEx(
    handle: cublasHandle_t,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_int,
    lda: c_int,
    b: *const c_void,
    b_type: c_int,
    ldb: c_int,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_int,
    ldc: c_int,
    compute_type: c_int,
    _algo: c_int,
) -> cublasStatus_t {
    guard(|| {
        let call = GemmCall {
            name: c"cublasGemmEx",
            transa,
            transb,
            m,
            n,
            k,
            alpha,
            a: (a as DevicePtr, lda),
            b: (b as DevicePtr, ldb),
            beta,
            c: (c as DevicePtr, ldc),
            batch: single(),
        };
        run(handle, call, GemmTypes::gemm_ex(a_type, b_type, c_type, compute_type))
    })
}

/// # Safety
/// As cuBLAS documents: device matrices, host or device scales.
#[no_mangle]
pub unsafe extern "C" fn cublasGemmStridedBatchedEx(
    handle: cublasHandle_t,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a: *const c_void,
    a_type: c_int,
    lda: c_int,
    stride_a: c_longlong,
    b: *const c_void,
    b_type: c_int,
    ldb: c_int,
    stride_b: c_longlong,
    beta: *const c_void,
    c: *mut c_void,
    c_type: c_int,
    ldc: c_int,
    stride_c: c_longlong,
    batch_count: c_int,
    compute_type: c_int,
    _algo: c_int,
) -> cublasStatus_t {
    guard(|| {
        let call = GemmCall {
            name: c"cublasGemmStridedBatchedEx",
            transa,
            transb,
            m,
            n,
            k,
            alpha,
            a: (a as DevicePtr, lda),
            b: (b as DevicePtr, ldb),
            beta,
            c: (c as DevicePtr, ldc),
            batch: strided(batch_count, stride_a, stride_b, stride_c)?,
        };
        run(handle, call, GemmTypes::gemm_ex(a_type, b_type, c_type, compute_type))
    })
}

/// `Aarray`, `Barray`, `Carray`: device arrays of `batch_count` device
/// pointers (read, checked, when the work runs).
///
/// # Safety
/// As cuBLAS documents: device arrays of device matrices, host or device scales.
#[no_mangle]
pub unsafe extern "C" fn cublasGemmBatchedEx(
    handle: cublasHandle_t,
    transa: c_int,
    transb: c_int,
    m: c_int,
    n: c_int,
    k: c_int,
    alpha: *const c_void,
    a_array: *const *const c_void,
    a_type: c_int,
    lda: c_int,
    b_array: *const *const c_void,
    b_type: c_int,
    ldb: c_int,
    beta: *const c_void,
    c_array: *const *mut c_void,
    c_type: c_int,
    ldc: c_int,
    batch_count: c_int,
    compute_type: c_int,
    _algo: c_int,
) -> cublasStatus_t {
    guard(|| {
        require(batch_count >= 0)?;
        let arrays = [a_array as DevicePtr, b_array as DevicePtr, c_array as DevicePtr];
        let call = GemmCall {
            name: c"cublasGemmBatchedEx",
            transa,
            transb,
            m,
            n,
            k,
            alpha,
            a: (0, lda),
            b: (0, ldb),
            beta,
            c: (0, ldc),
            batch: Batch::Pointers { count: batch_count as usize, arrays },
        };
        run(handle, call, GemmTypes::gemm_ex(a_type, b_type, c_type, compute_type))
    })
}

#![allow(non_snake_case)] // the library is named as NVIDIA names it: libcublasLt.so
//! cuBLASLt on the emulated device: `libcublasLt.so` (SONAME
//! `libcublasLt.so.13`) with the C ABI of `cublasLt.h` for the matmul path
//! cudarc's `cublaslt` module uses: handles, matmul descriptors (compute and
//! scale type, pointer mode, transposes, epilogue, bias pointer, bias batch
//! stride and type), matrix layouts (type, rows, columns, leading
//! dimension, column order, batch count and stride), preferences, the
//! heuristic (one algorithm, no workspace needed) and `cublasLtMatmul` with
//! the epilogues candle uses (bias, ReLU, GELU and their combinations).
//!
//! The arithmetic is libcublas's (the shared `ptx-emu-blas` GEMM): f32
//! accumulation for f16/bf16/f32 data, f64 for f64, then
//! `alpha * acc + beta * C`, the bias (one value per row, broadcast over the
//! columns), the activation (GELU in its tanh form), each step in the
//! accumulation type, and one rounding to D's type. Every operand goes
//! through the emulator's memcheck, as in libcublas.

#![allow(non_camel_case_types)]

mod descriptors;
mod matmul;

use descriptors::{Layout, MatmulDesc, Object, Preference};
use ptx_emu_blas::status::*;
use ptx_emu_blas::types::{require, Elem};
use ptx_emu_private::{check, on_stream, Access, DevicePtr};
use std::ffi::{c_char, c_int, c_void};

pub type cublasLtHandle_t = *mut c_void;
pub type cublasLtMatmulDesc_t = *mut c_void;
pub type cublasLtMatrixLayout_t = *mut c_void;
pub type cublasLtMatmulPreference_t = *mut c_void;

/// `cublasLtMatmulAlgo_t`: opaque to callers; the emulation has one algorithm.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct cublasLtMatmulAlgo_t {
    pub data: [u64; 8],
}

/// `cublasLtMatmulHeuristicResult_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct cublasLtMatmulHeuristicResult_t {
    pub algo: cublasLtMatmulAlgo_t,
    pub workspace_size: usize,
    pub state: cublasStatus_t,
    pub waves_count: f32,
    pub reserved: [c_int; 4],
}

/// Marks the one algorithm (`"ptx-emu"` in its first word).
const ALGORITHM: u64 = u64::from_le_bytes(*b"ptx-emu\0");

fn guard(body: impl FnOnce() -> Status) -> cublasStatus_t {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(status) => status_code(status),
        Err(_) => CUBLAS_STATUS_INTERNAL_ERROR,
    }
}

/// # Safety
/// `out` must be null or valid for one write.
unsafe fn write_out<T>(out: *mut T, value: T) -> Status {
    require(!out.is_null())?;
    out.write(value);
    Ok(())
}

/// # Safety
/// `buffer` must be null or valid for `size` bytes of reads.
unsafe fn bytes<'a>(buffer: *const c_void, size: usize) -> Result<&'a [u8], u32> {
    require(!buffer.is_null())?;
    Ok(std::slice::from_raw_parts(buffer.cast(), size))
}

/// Copies an attribute's value out as cuBLASLt's getters do: the size
/// written is always reported; the value only into a buffer big enough.
///
/// # Safety
/// `buffer` null or valid for `size` bytes; `written` null or valid.
unsafe fn get_attribute(value: Vec<u8>, buffer: *mut c_void, size: usize, written: *mut usize) -> Status {
    if size == 0 {
        return write_out(written, value.len());
    }
    require(!buffer.is_null() && size >= value.len())?;
    std::ptr::copy_nonoverlapping(value.as_ptr(), buffer.cast(), value.len());
    if !written.is_null() {
        written.write(value.len());
    }
    Ok(())
}

// ---------------------------------------------------------------- handles

/// # Safety
/// `handle` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasLtCreate(handle: *mut cublasLtHandle_t) -> cublasStatus_t {
    guard(|| {
        require(!handle.is_null())?;
        write_out(handle, descriptors::create(Object::Handle) as cublasLtHandle_t)
    })
}

/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasLtDestroy(handle: cublasLtHandle_t) -> cublasStatus_t {
    guard(|| descriptors::destroy(handle as usize, |o| matches!(o, Object::Handle), CUBLAS_STATUS_NOT_INITIALIZED))
}

/// cuBLASLt 13.0.0.
#[no_mangle]
pub extern "C" fn cublasLtGetVersion() -> usize {
    130_000
}

#[no_mangle]
pub extern "C" fn cublasLtGetStatusName(status: cublasStatus_t) -> *const c_char {
    name(status).as_ptr()
}

#[no_mangle]
pub extern "C" fn cublasLtGetStatusString(status: cublasStatus_t) -> *const c_char {
    description(status).as_ptr()
}

/// Logging: accepted, nothing is logged.
#[no_mangle]
pub extern "C" fn cublasLtLoggerSetLevel(level: c_int) -> cublasStatus_t {
    if (0..=5).contains(&level) {
        CUBLAS_STATUS_SUCCESS
    } else {
        CUBLAS_STATUS_INVALID_VALUE
    }
}

/// Logging: accepted, nothing is logged.
#[no_mangle]
pub extern "C" fn cublasLtLoggerOpenFile(_path: *const c_char) -> cublasStatus_t {
    CUBLAS_STATUS_SUCCESS
}

// -------------------------------------------------------- matmul descriptors

/// # Safety
/// `desc` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescCreate(
    desc: *mut cublasLtMatmulDesc_t,
    compute_type: c_int,
    scale_type: c_int,
) -> cublasStatus_t {
    guard(|| {
        require(!desc.is_null())?;
        let created = descriptors::create(Object::Desc(MatmulDesc::new(compute_type, scale_type)));
        write_out(desc, created as cublasLtMatmulDesc_t)
    })
}

/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescDestroy(desc: cublasLtMatmulDesc_t) -> cublasStatus_t {
    guard(|| descriptors::destroy(desc as usize, |o| matches!(o, Object::Desc(_)), CUBLAS_STATUS_INVALID_VALUE))
}

/// # Safety
/// `buffer` must be valid for `size` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescSetAttribute(
    desc: cublasLtMatmulDesc_t,
    attribute: u32,
    buffer: *const c_void,
    size: usize,
) -> cublasStatus_t {
    guard(|| {
        let value = bytes(buffer, size)?;
        descriptors::with_desc(desc as usize, |d| d.set(attribute, value))
    })
}

/// # Safety
/// `buffer` valid for `size` bytes of writes (or `size` 0); `written` null or valid.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulDescGetAttribute(
    desc: cublasLtMatmulDesc_t,
    attribute: u32,
    buffer: *mut c_void,
    size: usize,
    written: *mut usize,
) -> cublasStatus_t {
    guard(|| {
        let value = descriptors::with_desc(desc as usize, |d| d.get(attribute))?;
        get_attribute(value, buffer, size, written)
    })
}

// ----------------------------------------------------------- matrix layouts

/// # Safety
/// `layout` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutCreate(
    layout: *mut cublasLtMatrixLayout_t,
    data_type: c_int,
    rows: u64,
    cols: u64,
    ld: i64,
) -> cublasStatus_t {
    guard(|| {
        require(!layout.is_null())?;
        let created = descriptors::create(Object::Layout(Layout::new(data_type, rows, cols, ld)));
        write_out(layout, created as cublasLtMatrixLayout_t)
    })
}

/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutDestroy(layout: cublasLtMatrixLayout_t) -> cublasStatus_t {
    guard(|| descriptors::destroy(layout as usize, |o| matches!(o, Object::Layout(_)), CUBLAS_STATUS_INVALID_VALUE))
}

/// # Safety
/// `buffer` must be valid for `size` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutSetAttribute(
    layout: cublasLtMatrixLayout_t,
    attribute: u32,
    buffer: *const c_void,
    size: usize,
) -> cublasStatus_t {
    guard(|| {
        let value = bytes(buffer, size)?;
        descriptors::with_layout(layout as usize, |l| l.set(attribute, value))
    })
}

/// # Safety
/// `buffer` valid for `size` bytes of writes (or `size` 0); `written` null or valid.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatrixLayoutGetAttribute(
    layout: cublasLtMatrixLayout_t,
    attribute: u32,
    buffer: *mut c_void,
    size: usize,
    written: *mut usize,
) -> cublasStatus_t {
    guard(|| {
        let value = descriptors::with_layout(layout as usize, |l| l.get(attribute))?;
        get_attribute(value, buffer, size, written)
    })
}

// -------------------------------------------------------------- preferences

/// # Safety
/// `preference` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulPreferenceCreate(preference: *mut cublasLtMatmulPreference_t) -> cublasStatus_t {
    guard(|| {
        require(!preference.is_null())?;
        let created = descriptors::create(Object::Preference(Preference::default()));
        write_out(preference, created as cublasLtMatmulPreference_t)
    })
}

/// # Safety
/// Any value may be passed.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulPreferenceDestroy(preference: cublasLtMatmulPreference_t) -> cublasStatus_t {
    guard(|| {
        descriptors::destroy(preference as usize, |o| matches!(o, Object::Preference(_)), CUBLAS_STATUS_INVALID_VALUE)
    })
}

/// # Safety
/// `buffer` must be valid for `size` bytes of reads.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulPreferenceSetAttribute(
    preference: cublasLtMatmulPreference_t,
    attribute: u32,
    buffer: *const c_void,
    size: usize,
) -> cublasStatus_t {
    guard(|| {
        require(size == Preference::size_of(attribute)?)?;
        let value = bytes(buffer, size)?.to_vec();
        descriptors::with_preference(preference as usize, |p| {
            p.values.insert(attribute, value);
            Ok(())
        })
    })
}

// ----------------------------------------------------------------- matmul

/// The descriptor and the layouts of A, B, C, D, checked as a problem.
fn planned(desc: cublasLtMatmulDesc_t, layouts: [cublasLtMatrixLayout_t; 4]) -> Result<matmul::Plan, u32> {
    let desc = descriptors::with_desc(desc as usize, |d| Ok(*d))?;
    let mut found = [Layout::new(0, 0, 0, 1); 4];
    for (slot, layout) in found.iter_mut().zip(layouts) {
        *slot = descriptors::with_layout(layout as usize, |l| Ok(*l))?;
    }
    matmul::plan(&desc, found)
}

/// One algorithm for every problem the emulation supports, needing no
/// workspace; `NOT_SUPPORTED` (and a count of 0) for the others.
///
/// # Safety
/// `results` valid for `requested` writes; `returned` valid for one.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmulAlgoGetHeuristic(
    handle: cublasLtHandle_t,
    desc: cublasLtMatmulDesc_t,
    a: cublasLtMatrixLayout_t,
    b: cublasLtMatrixLayout_t,
    c: cublasLtMatrixLayout_t,
    d: cublasLtMatrixLayout_t,
    preference: cublasLtMatmulPreference_t,
    requested: c_int,
    results: *mut cublasLtMatmulHeuristicResult_t,
    returned: *mut c_int,
) -> cublasStatus_t {
    guard(|| {
        descriptors::handle(handle as usize)?;
        descriptors::with_preference(preference as usize, |_| Ok(()))?;
        require(requested >= 1 && !results.is_null() && !returned.is_null())?;
        if let Err(status) = planned(desc, [a, b, c, d]) {
            returned.write(0);
            return Err(status);
        }
        let mut algo = cublasLtMatmulAlgo_t { data: [0; 8] };
        algo.data[0] = ALGORITHM;
        results.write(cublasLtMatmulHeuristicResult_t {
            algo,
            workspace_size: 0,
            state: CUBLAS_STATUS_SUCCESS,
            waves_count: 1.0,
            reserved: [0; 4],
        });
        returned.write(1);
        Ok(())
    })
}

/// A scale on the host.
///
/// # Safety
/// `pointer` must be valid for one read of the type.
unsafe fn host_scale(elem: Elem, pointer: *const c_void) -> f64 {
    match elem {
        Elem::F16 => half::f16::from_bits(pointer.cast::<u16>().read_unaligned()).to_f64(),
        Elem::Bf16 => half::bf16::from_bits(pointer.cast::<u16>().read_unaligned()).to_f64(),
        Elem::F32 => f64::from(pointer.cast::<f32>().read_unaligned()),
        Elem::F64 => pointer.cast::<f64>().read_unaligned(),
    }
}

/// `D = epilogue(alpha * op(A) * op(B) + beta * C)` on `stream`. `algo` may
/// be null or the heuristic's; the workspace is not used, but memcheck
/// requires it inside one live allocation (cuBLASLt may use it as scratch).
///
/// # Safety
/// As cuBLASLt documents: device matrices, host (or, in device pointer
/// mode, device) scales.
#[no_mangle]
pub unsafe extern "C" fn cublasLtMatmul(
    handle: cublasLtHandle_t,
    desc: cublasLtMatmulDesc_t,
    alpha: *const c_void,
    a: *const c_void,
    a_layout: cublasLtMatrixLayout_t,
    b: *const c_void,
    b_layout: cublasLtMatrixLayout_t,
    beta: *const c_void,
    c: *const c_void,
    c_layout: cublasLtMatrixLayout_t,
    d: *mut c_void,
    d_layout: cublasLtMatrixLayout_t,
    algo: *const cublasLtMatmulAlgo_t,
    workspace: *mut c_void,
    workspace_bytes: usize,
    stream: *mut c_void,
) -> cublasStatus_t {
    guard(|| {
        descriptors::handle(handle as usize)?;
        let plan = planned(desc, [a_layout, b_layout, c_layout, d_layout])?;
        require(!alpha.is_null() && !beta.is_null())?;
        require(algo.is_null() || (*algo).data[0] == ALGORITHM)?;
        let (m, n) = (plan.shape.m, plan.shape.n);
        if m == 0 || n == 0 {
            return Ok(());
        }
        let scale = plan.shape.types.scale;
        let host_scales = (!plan.scales_on_device).then(|| (host_scale(scale, alpha), host_scale(scale, beta)));
        let addresses = [a as DevicePtr, b as DevicePtr, c as DevicePtr, d as DevicePtr];
        on_stream(stream as usize, || {
            let workspace_access = Access { call: c"cublasLtMatmul", operand: c"workspace" };
            check(workspace_access, workspace as DevicePtr, workspace_bytes)?;
            let (alpha, beta) = match host_scales {
                Some(scales) => scales,
                None => (
                    matmul::device_scale(c"cublasLtMatmul", c"alpha", scale, alpha as DevicePtr)?,
                    matmul::device_scale(c"cublasLtMatmul", c"beta", scale, beta as DevicePtr)?,
                ),
            };
            matmul::run(&plan, alpha, beta, addresses)
        })
        .map_err(from_driver)
    })
}

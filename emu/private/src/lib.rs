//! The emulated libraries' side of the emulator-private ABI that the
//! emulated `libcuda.so` exports (`emu/cuda/src/private.rs`,
//! docs/emulator.md): declarations, and safe wrappers that the libraries'
//! entry points use. Holds no state: the device lives in `libcuda.so`, which
//! every emulated library links against (`build_support.rs`).

use std::ffi::{c_char, c_void, CStr};

/// A driver result code (`CUresult`).
pub type CuResult = u32;
/// A driver stream handle (`CUstream`).
pub type CuStream = *mut c_void;
/// A device address (`CUdeviceptr`).
pub type DevicePtr = u64;

/// `CUDA_ERROR_ILLEGAL_ADDRESS`: what a memcheck finding surfaces as.
pub const CUDA_ERROR_ILLEGAL_ADDRESS: CuResult = 700;
/// `CUDA_ERROR_UNKNOWN`: an operation that panicked.
pub const CUDA_ERROR_UNKNOWN: CuResult = 999;

type HostOp = unsafe extern "C" fn(user: *mut c_void) -> CuResult;

extern "C" {
    fn ptxEmuStreamHostOp(stream: CuStream, op: Option<HostOp>, user: *mut c_void) -> CuResult;
    fn ptxEmuReadDevice2D(
        call: *const c_char,
        operand: *const c_char,
        address: DevicePtr,
        run_bytes: usize,
        pitch: usize,
        runs: usize,
        out: *mut c_void,
    ) -> CuResult;
    fn ptxEmuWriteDevice2D(
        call: *const c_char,
        operand: *const c_char,
        address: DevicePtr,
        run_bytes: usize,
        pitch: usize,
        runs: usize,
        data: *const c_void,
    ) -> CuResult;
    fn ptxEmuCheckDevice(call: *const c_char, operand: *const c_char, address: DevicePtr, bytes: usize) -> CuResult;
}

/// The exported names, for the link-time stub (`build_support.rs`) and a
/// test that `libcuda.so` exports each.
pub const EXPORTS: [&str; 4] = ["ptxEmuStreamHostOp", "ptxEmuReadDevice2D", "ptxEmuWriteDevice2D", "ptxEmuCheckDevice"];

fn result(code: CuResult) -> Result<(), CuResult> {
    if code == 0 {
        Ok(())
    } else {
        Err(code)
    }
}

/// Runs `op` as an operation ordered on `stream` (a `CUstream` handle as an
/// integer; never dereferenced here): after the driver's checks
/// of the stream and its context, which refuse it with their error code. A
/// panic in `op` is caught (it must not unwind through `libcuda.so`) and
/// becomes `CUDA_ERROR_UNKNOWN`.
pub fn on_stream<F: FnOnce() -> Result<(), CuResult>>(stream: usize, op: F) -> Result<(), CuResult> {
    unsafe extern "C" fn trampoline<F: FnOnce() -> Result<(), CuResult>>(user: *mut c_void) -> CuResult {
        // SAFETY: `user` is the `Option<F>` below, alive for the call.
        let slot = unsafe { &mut *user.cast::<Option<F>>() };
        let Some(op) = slot.take() else { return CUDA_ERROR_UNKNOWN };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)) {
            Ok(Ok(())) => 0,
            Ok(Err(code)) => code,
            Err(_) => CUDA_ERROR_UNKNOWN,
        }
    }
    let mut slot = Some(op);
    // SAFETY: the trampoline matches the slot's type; the call is synchronous.
    result(unsafe {
        ptxEmuStreamHostOp(stream as CuStream, Some(trampoline::<F>), (&mut slot as *mut Option<F>).cast())
    })
}

/// Plain data that can be copied to and from device bytes.
pub trait Element: Copy + Default + 'static {}
impl Element for u8 {}
impl Element for u16 {}
impl Element for u32 {}
impl Element for u64 {}
impl Element for i32 {}
impl Element for f32 {}
impl Element for f64 {}

/// Names an access in the emulator's reports: the library call and operand.
#[derive(Clone, Copy)]
pub struct Access<'a> {
    pub call: &'a CStr,
    pub operand: &'a CStr,
}

/// A strided device region of `T`: `runs` runs of `run_len` elements, the
/// runs `pitch` elements apart (a column-major matrix: `runs` columns of
/// `run_len` rows, leading dimension `pitch`).
#[derive(Clone, Copy, Debug)]
pub struct Region {
    pub address: DevicePtr,
    pub run_len: usize,
    pub pitch: usize,
    pub runs: usize,
}

impl Region {
    /// `len` contiguous elements at `address`.
    pub fn contiguous(address: DevicePtr, len: usize) -> Self {
        Region { address, run_len: len, pitch: len, runs: 1 }
    }

    fn bytes<T>(&self) -> Result<(usize, usize), CuResult> {
        let size = std::mem::size_of::<T>();
        let run_bytes = self.run_len.checked_mul(size).ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
        let pitch = self.pitch.checked_mul(size).ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
        self.runs.checked_mul(run_bytes).ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
        Ok((run_bytes, pitch))
    }
}

/// The region's elements, packed run after run, checked by memcheck and
/// initcheck.
pub fn read<T: Element>(access: Access, region: Region) -> Result<Vec<T>, CuResult> {
    let (run_bytes, pitch) = region.bytes::<T>()?;
    let mut out = vec![T::default(); region.run_len * region.runs];
    // SAFETY: `out` holds `runs * run_bytes` bytes; the names are C strings.
    result(unsafe {
        ptxEmuReadDevice2D(
            access.call.as_ptr(),
            access.operand.as_ptr(),
            region.address,
            run_bytes,
            pitch,
            region.runs,
            out.as_mut_ptr().cast(),
        )
    })?;
    Ok(out)
}

/// Writes `data` (packed run after run) into the region, checked by memcheck.
pub fn write<T: Element>(access: Access, region: Region, data: &[T]) -> Result<(), CuResult> {
    let (run_bytes, pitch) = region.bytes::<T>()?;
    if data.len() != region.run_len * region.runs {
        return Err(CUDA_ERROR_UNKNOWN);
    }
    // SAFETY: `data` holds `runs * run_bytes` bytes; the names are C strings.
    result(unsafe {
        ptxEmuWriteDevice2D(
            access.call.as_ptr(),
            access.operand.as_ptr(),
            region.address,
            run_bytes,
            pitch,
            region.runs,
            data.as_ptr().cast(),
        )
    })
}

/// memcheck of `bytes` device bytes at `address` that a library may use
/// without reading or writing them here (a workspace): all inside one live
/// allocation, else a finding (700) naming the call and operand.
pub fn check(access: Access, address: DevicePtr, bytes: usize) -> Result<(), CuResult> {
    // SAFETY: the names are C strings.
    result(unsafe { ptxEmuCheckDevice(access.call.as_ptr(), access.operand.as_ptr(), address, bytes) })
}

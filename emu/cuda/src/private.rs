//! Emulator-private exports through which the emulated libraries
//! (`libcublas.so`, `libcublasLt.so`, `libcurand.so`) reach the one emulated
//! device. They link against this library (`NEEDED libcuda.so.1`) instead
//! of carrying their own copy of the executor, so they see the same device
//! memory, streams, checks and sticky errors as the driver API
//! (docs/emulator.md, "The emulated libraries").
//!
//! - `ptxEmuStreamHostOp(stream, op, user)`: runs `op(user)` as an operation
//!   ordered on `stream` of its context. Execution is eager, so it runs now,
//!   on the calling thread, after the same checks as any stream-ordered
//!   driver call (initialised, a live and healthy context, a valid stream);
//!   its result is `op`'s.
//! - `ptxEmuReadDevice2D` / `ptxEmuWriteDevice2D`: copy `runs` runs of
//!   `run_bytes` bytes, `pitch` bytes apart (a column-major matrix's columns),
//!   between device memory and a packed host buffer. A range that leaves its
//!   allocation is a memcheck finding (700, as the out-of-bounds access would
//!   be on hardware), a read of bytes nothing wrote an initcheck finding
//!   (719, unless `PTX_EMU_INITCHECK=0`); either is printed as
//!   `ptx-emu: ...`, naming the library call and the operand, and made sticky
//!   in the context, as a faulting kernel's would be.
//! - `ptxEmuCheckDevice`: the memcheck alone, for device memory a library
//!   call is given but does not touch here (cuBLAS's and cuBLASLt's
//!   workspaces, which the real libraries may use as scratch).

use crate::guard::ffi_guard;
use crate::memory::CUdeviceptr;
use crate::result::{
    CUresult, DriverResult, CUDA_ERROR_ILLEGAL_ADDRESS, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_LAUNCH_FAILED,
};
use crate::state::{driver, handle_of, Handle};
use crate::stream::CUstream;
use ptx_emu::CheckOptions;
use std::cell::Cell;
use std::ffi::{c_char, c_void, CStr};

/// A host operation: returns a `CUresult`.
pub type HostOp = unsafe extern "C" fn(user: *mut c_void) -> CUresult;

thread_local! {
    /// The context of the host operation running on this thread, if any:
    /// findings of its device accesses are made sticky there.
    static OP_CONTEXT: Cell<Option<Handle>> = const { Cell::new(None) };
}

fn run_host_op(stream: CUstream, op: Option<HostOp>, user: *mut c_void) -> DriverResult {
    let op = op.ok_or(CUDA_ERROR_INVALID_VALUE)?;
    let context = {
        let state = driver().lock()?;
        let stream = handle_of(stream);
        state.check_stream(stream)?;
        // A created stream belongs to its context; the built-in ones to the
        // caller's current context.
        let context = match state.streams.get(&stream) {
            Some(record) => record.context,
            None => state.current()?,
        };
        state.check_healthy(context)?;
        context
    };
    // The lock is released: the operation's own device accesses take it.
    let outer = OP_CONTEXT.with(|cell| cell.replace(Some(context)));
    // SAFETY: the caller passes an operation and the data it expects.
    let result = unsafe { op(user) };
    OP_CONTEXT.with(|cell| cell.set(outer));
    if result == 0 {
        Ok(())
    } else {
        Err(result)
    }
}

/// # Safety
/// `op` must be callable with `user`.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuStreamHostOp(stream: CUstream, op: Option<HostOp>, user: *mut c_void) -> CUresult {
    ffi_guard(|| run_host_op(stream, op, user))
}

/// One strided device range: `runs` runs of `run_bytes`, `pitch` bytes apart.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Range2D {
    address: u64,
    run_bytes: u64,
    pitch: u64,
    runs: u64,
}

impl Range2D {
    /// The bytes from the first run's start to the last run's end, or `None`
    /// when that overflows the address space.
    fn extent(&self) -> Option<u64> {
        self.pitch.checked_mul(self.runs - 1)?.checked_add(self.run_bytes)
    }
    fn run_address(&self, run: u64) -> u64 {
        self.address + run * self.pitch
    }
}

/// Who is accessing: the library call and the operand, for the report.
struct Accessor {
    call: String,
    operand: String,
}

impl Accessor {
    /// # Safety
    /// Each pointer must be null or a NUL-terminated string.
    unsafe fn new(call: *const c_char, operand: *const c_char) -> Self {
        let text = |p: *const c_char| {
            if p.is_null() {
                "?".to_string()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Accessor { call: text(call), operand: text(operand) }
    }

    /// Prints the finding and makes its code sticky in the context.
    fn finding(&self, kind: &str, code: CUresult, address: u64, detail: String) -> DriverResult {
        eprintln!(
            "ptx-emu: {kind} in library call `{}`, operand `{}`, address {address:#x}: {detail}",
            self.call, self.operand
        );
        let mut state = driver().lock()?;
        let context = OP_CONTEXT.with(Cell::get).map_or_else(|| state.current(), Ok)?;
        state.set_sticky_error(context, code);
        Err(code)
    }
}

/// The memcheck of a library's access: the whole range inside one live
/// allocation.
fn check_bounds(accessor: &Accessor, range: Range2D) -> DriverResult {
    let memory = driver().memory();
    let extent = range.extent();
    let inside = extent.is_some_and(|len| {
        memory
            .allocation_containing(range.address)
            .is_some_and(|(base, size)| range.address.checked_add(len).is_some_and(|end| end <= base + size))
    });
    if inside {
        return Ok(());
    }
    let nearest = memory.describe_outside(range.address, extent.unwrap_or(u64::MAX));
    let detail = format!(
        "{} runs of {} bytes, {} bytes apart (extent {}) are not inside one live allocation; {nearest}",
        range.runs,
        range.run_bytes,
        range.pitch,
        extent.map_or_else(|| "overflowing".to_string(), |len| format!("{len} bytes"))
    );
    accessor.finding("OutOfBounds", CUDA_ERROR_ILLEGAL_ADDRESS, range.address, detail)
}

/// Validates the arguments shared by both directions; `None`: nothing to copy.
fn range(
    address: CUdeviceptr,
    run_bytes: usize,
    pitch: usize,
    runs: usize,
    host: bool,
) -> DriverResult<Option<Range2D>> {
    if runs == 0 || run_bytes == 0 {
        return Ok(None);
    }
    if !host || (runs > 1 && pitch < run_bytes) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    Ok(Some(Range2D { address, run_bytes: run_bytes as u64, pitch: pitch as u64, runs: runs as u64 }))
}

unsafe fn read_2d(accessor: &Accessor, range: Option<Range2D>, out: *mut u8) -> DriverResult {
    let Some(range) = range else { return Ok(()) };
    driver().require_init()?;
    check_bounds(accessor, range)?;
    let memory = driver().memory();
    let initcheck = CheckOptions::from_env().initcheck;
    let bytes = range.run_bytes as usize;
    for run in 0..range.runs {
        let address = range.run_address(run);
        if initcheck {
            let first = memory.first_uninitialized(address, range.run_bytes).map_err(|_| CUDA_ERROR_ILLEGAL_ADDRESS)?;
            if let Some(unwritten) = first {
                let detail = format!("read of {} bytes at run {run} includes bytes nothing wrote", range.run_bytes);
                return accessor.finding("Uninitialized", CUDA_ERROR_LAUNCH_FAILED, unwritten, detail);
            }
        }
        let chunk = std::slice::from_raw_parts_mut(out.add(run as usize * bytes), bytes);
        memory.read(address, chunk).map_err(|_| CUDA_ERROR_ILLEGAL_ADDRESS)?;
    }
    Ok(())
}

unsafe fn write_2d(accessor: &Accessor, range: Option<Range2D>, data: *const u8) -> DriverResult {
    let Some(range) = range else { return Ok(()) };
    driver().require_init()?;
    check_bounds(accessor, range)?;
    let memory = driver().memory();
    let bytes = range.run_bytes as usize;
    for run in 0..range.runs {
        let chunk = std::slice::from_raw_parts(data.add(run as usize * bytes), bytes);
        memory.write(range.run_address(run), chunk).map_err(|_| CUDA_ERROR_ILLEGAL_ADDRESS)?;
    }
    Ok(())
}

/// Reads `runs` runs of `run_bytes` bytes starting `pitch` bytes apart at
/// `address` into `out`, packed (`runs * run_bytes` bytes), with memcheck
/// and initcheck; `call` and `operand` name the access in a report.
///
/// # Safety
/// `out` must be valid for `runs * run_bytes` bytes of writes; `call` and
/// `operand` null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuReadDevice2D(
    call: *const c_char,
    operand: *const c_char,
    address: CUdeviceptr,
    run_bytes: usize,
    pitch: usize,
    runs: usize,
    out: *mut c_void,
) -> CUresult {
    ffi_guard(|| {
        let range = range(address, run_bytes, pitch, runs, !out.is_null())?;
        read_2d(&Accessor::new(call, operand), range, out.cast())
    })
}

/// Writes `runs` packed runs of `run_bytes` bytes from `data` to device
/// memory, `pitch` bytes apart from `address`, with memcheck; the bytes
/// become initialised.
///
/// # Safety
/// `data` must be valid for `runs * run_bytes` bytes of reads; `call` and
/// `operand` null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuWriteDevice2D(
    call: *const c_char,
    operand: *const c_char,
    address: CUdeviceptr,
    run_bytes: usize,
    pitch: usize,
    runs: usize,
    data: *const c_void,
) -> CUresult {
    ffi_guard(|| {
        let range = range(address, run_bytes, pitch, runs, !data.is_null())?;
        write_2d(&Accessor::new(call, operand), range, data.cast())
    })
}

/// memcheck of `bytes` bytes at `address` that a library call holds
/// without copying them (a workspace): all inside one live allocation, else
/// a finding as for a copy. Zero bytes check nothing.
///
/// # Safety
/// `call` and `operand` null or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuCheckDevice(
    call: *const c_char,
    operand: *const c_char,
    address: CUdeviceptr,
    bytes: usize,
) -> CUresult {
    ffi_guard(|| {
        if bytes == 0 {
            return Ok(());
        }
        driver().require_init()?;
        let range = Range2D { address, run_bytes: bytes as u64, pitch: bytes as u64, runs: 1 };
        check_bounds(&Accessor::new(call, operand), range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extent_spans_first_run_to_last_run_end() {
        let range = Range2D { address: 0x1000, run_bytes: 12, pitch: 40, runs: 3 };
        assert_eq!(range.extent(), Some(92));
        assert_eq!(range.run_address(2), 0x1050);
        let overflowing = Range2D { address: 0, run_bytes: 1, pitch: u64::MAX, runs: 3 };
        assert_eq!(overflowing.extent(), None);
    }

    #[test]
    fn arguments_are_validated() {
        assert_eq!(range(0x1000, 0, 0, 5, true), Ok(None));
        assert_eq!(range(0x1000, 8, 4, 2, true).err(), Some(CUDA_ERROR_INVALID_VALUE), "runs overlap");
        assert_eq!(range(0x1000, 8, 8, 2, false).err(), Some(CUDA_ERROR_INVALID_VALUE), "no host buffer");
        assert!(range(0x1000, 8, 4, 1, true).unwrap().is_some(), "one run needs no pitch");
    }
}

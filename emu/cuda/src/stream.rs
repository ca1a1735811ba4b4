//! Streams and events. Execution is eager, so a stream is only a handle to
//! validate, every query finds the work complete, and waiting is immediate.
//! An event records the host time at which it was recorded: elapsed times
//! are emulator time, not GPU time.

use crate::context::CUcontext;
use crate::guard::{ffi_guard, write_out};
use crate::result::{CUresult, DriverResult, CUDA_ERROR_INVALID_HANDLE, CUDA_ERROR_INVALID_VALUE};
use crate::state::{driver, handle_of, pointer_of, EventRecord, StreamRecord};
use std::ffi::{c_int, c_uint, c_void};
use std::time::Instant;

/// `CUstream`: an opaque handle (NULL, `CU_STREAM_LEGACY` and
/// `CU_STREAM_PER_THREAD` are built in).
pub type CUstream = *mut c_void;
/// `CUevent`: an opaque handle.
pub type CUevent = *mut c_void;

/// `CU_STREAM_NON_BLOCKING`: the only stream flag.
const STREAM_FLAGS_MASK: c_uint = 0x1;
/// `CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS`.
const EVENT_FLAGS_MASK: c_uint = 0x7;
const EVENT_DISABLE_TIMING: c_uint = 0x2;

fn create_stream(stream: *mut CUstream, flags: c_uint) -> DriverResult {
    let mut state = driver().lock()?;
    let context = state.current()?;
    if stream.is_null() || flags & !STREAM_FLAGS_MASK != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let handle = state.new_handle();
    state.streams.insert(handle, StreamRecord { context });
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { write_out(stream, pointer_of(handle)) }
}

/// # Safety
/// `stream` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(stream: *mut CUstream, flags: c_uint) -> CUresult {
    ffi_guard(|| create_stream(stream, flags))
}

/// The priority is accepted and ignored (streams never run concurrently).
///
/// # Safety
/// `stream` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    stream: *mut CUstream,
    flags: c_uint,
    _priority: c_int,
) -> CUresult {
    ffi_guard(|| create_stream(stream, flags))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(stream: CUstream) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        state.streams.remove(&handle_of(stream)).map(|_| ()).ok_or(CUDA_ERROR_INVALID_HANDLE)
    })
}

/// The context a stream belongs to; the built-in streams belong to the
/// current context.
///
/// # Safety
/// `context` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCtx(stream: CUstream, context: *mut CUcontext) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let owner = match state.streams.get(&handle_of(stream)) {
            Some(record) => record.context,
            None => {
                state.check_stream(handle_of(stream))?;
                state.current()?
            }
        };
        write_out(context, pointer_of(owner))
    })
}

/// Nothing is pending; returns the context's sticky fault, if any.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(stream: CUstream) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let context = state.current()?;
        state.check_stream(handle_of(stream))?;
        state.check_healthy(context)
    })
}

/// Always complete (`CUDA_SUCCESS`), or the sticky fault.
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(stream: CUstream) -> CUresult {
    cuStreamSynchronize(stream)
}

/// The event's work is already done, so there is nothing to wait for. An
/// event never recorded is valid too (cudarc waits on such events).
///
/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(stream: CUstream, event: CUevent, flags: c_uint) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let context = state.current()?;
        state.check_stream(handle_of(stream))?;
        if !state.events.contains_key(&handle_of(event)) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        // CU_EVENT_WAIT_DEFAULT (0) and CU_EVENT_WAIT_EXTERNAL (1).
        if flags > 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        state.check_healthy(context)
    })
}

/// # Safety
/// `event` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(event: *mut CUevent, flags: c_uint) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        let context = state.current()?;
        if event.is_null() || flags & !EVENT_FLAGS_MASK != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let handle = state.new_handle();
        state.events.insert(handle, EventRecord { context, flags, recorded_at: None });
        write_out(event, pointer_of(handle))
    })
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(event: CUevent, stream: CUstream) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        state.current_healthy()?;
        state.check_stream(handle_of(stream))?;
        let record = state.events.get_mut(&handle_of(event)).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        record.recorded_at = Some(Instant::now());
        Ok(())
    })
}

fn event_status(event: CUevent) -> DriverResult {
    let state = driver().lock()?;
    let record = state.events.get(&handle_of(event)).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
    state.check_healthy(record.context)
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(event: CUevent) -> CUresult {
    ffi_guard(|| event_status(event))
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(event: CUevent) -> CUresult {
    ffi_guard(|| event_status(event))
}

/// Milliseconds between two event records, in host time. Both events must
/// have been recorded and created without `CU_EVENT_DISABLE_TIMING`, else
/// `CUDA_ERROR_INVALID_HANDLE` as on hardware.
pub(crate) fn elapsed_ms(start: &EventRecord, end: &EventRecord) -> DriverResult<f32> {
    if (start.flags | end.flags) & EVENT_DISABLE_TIMING != 0 {
        return Err(CUDA_ERROR_INVALID_HANDLE);
    }
    let (Some(start), Some(end)) = (start.recorded_at, end.recorded_at) else {
        return Err(CUDA_ERROR_INVALID_HANDLE);
    };
    let seconds =
        if end >= start { end.duration_since(start).as_secs_f64() } else { -start.duration_since(end).as_secs_f64() };
    Ok((seconds * 1e3) as f32)
}

/// # Safety
/// `milliseconds` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(milliseconds: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        let start = state.events.get(&handle_of(start)).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let end = state.events.get(&handle_of(end)).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if milliseconds.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        write_out(milliseconds, elapsed_ms(start, end)?)
    })
}

/// The CUDA 12 name of `cuEventElapsedTime_v2`; same semantics here.
///
/// # Safety
/// `milliseconds` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(milliseconds: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    cuEventElapsedTime_v2(milliseconds, start, end)
}

/// # Safety
/// Callable from any thread.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(event: CUevent) -> CUresult {
    ffi_guard(|| {
        let mut state = driver().lock()?;
        state.events.remove(&handle_of(event)).map(|_| ()).ok_or(CUDA_ERROR_INVALID_HANDLE)
    })
}

/// `CU_STREAM_CAPTURE_STATUS_NONE`: the emulator records no graphs, so no
/// stream is ever capturing (candle asks before some of its copies).
///
/// # Safety
/// `status` must be null or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(stream: CUstream, status: *mut c_int) -> CUresult {
    ffi_guard(|| {
        let state = driver().lock()?;
        state.current()?;
        state.check_stream(handle_of(stream))?;
        write_out(status, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn event(flags: c_uint, recorded_at: Option<Instant>) -> EventRecord {
        EventRecord { context: 1, flags, recorded_at }
    }

    #[test]
    fn elapsed_is_milliseconds_between_records() {
        let start = Instant::now();
        let end = start + Duration::from_micros(2500);
        let ms = elapsed_ms(&event(0, Some(start)), &event(0, Some(end))).unwrap();
        assert!((ms - 2.5).abs() < 1e-3, "{ms}");
        let backwards = elapsed_ms(&event(0, Some(end)), &event(0, Some(start))).unwrap();
        assert!((backwards + 2.5).abs() < 1e-3, "{backwards}");
    }

    #[test]
    fn elapsed_needs_recorded_timing_events() {
        let now = Some(Instant::now());
        assert_eq!(elapsed_ms(&event(0, None), &event(0, now)), Err(CUDA_ERROR_INVALID_HANDLE));
        assert_eq!(elapsed_ms(&event(EVENT_DISABLE_TIMING, now), &event(0, now)), Err(CUDA_ERROR_INVALID_HANDLE));
    }
}

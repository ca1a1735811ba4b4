//! Exports that only the emulator has, found through `dlsym` by tests that
//! must tell it from a real driver or read what a launch did.

use std::ffi::{c_char, c_int};

/// Returns 1: this `libcuda.so` is the emulator.
#[no_mangle]
pub extern "C" fn ptxEmuIsEmulator() -> c_int {
    1
}

/// Copies the last launch's counters, as one JSON line, into `buffer`.
///
/// Works like `snprintf`: writes at most `len - 1` bytes and a NUL (nothing
/// when `buffer` is null or `len` is 0) and returns the JSON's full length,
/// so a caller can size its buffer with a first call. The launch is the
/// calling thread's most recent one. Returns 0 when it has made no
/// launch yet (or on an internal failure).
///
/// # Safety
/// `buffer` must be null or valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuGetLastLaunchCountersJson(buffer: *mut c_char, len: usize) -> usize {
    let json = std::panic::catch_unwind(|| {
        super::launch::LAST_COUNTERS.with(|last| last.borrow().as_ref().map(|counters| counters.to_json_line()))
    });
    let Ok(Some(json)) = json else { return 0 };
    if !buffer.is_null() && len > 0 {
        let copied = json.len().min(len - 1);
        std::ptr::copy_nonoverlapping(json.as_ptr(), buffer.cast::<u8>(), copied);
        *buffer.add(copied) = 0;
    }
    json.len()
}

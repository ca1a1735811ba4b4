//! Exports that only the emulator has, found through `dlsym` by tests that
//! must tell it from a real driver or read what a launch did.

use std::ffi::{c_char, c_int};

/// Returns 1: this `libcuda.so` is the emulator.
#[no_mangle]
pub extern "C" fn ptxEmuIsEmulator() -> c_int {
    1
}

/// Copies the last launch's counters, as one JSON line, into `buffer`:
/// [`ptxEmuGetRecentLaunchCountersJson`] with `back` = 0.
///
/// # Safety
/// `buffer` must be null or valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuGetLastLaunchCountersJson(buffer: *mut c_char, len: usize) -> usize {
    ptxEmuGetRecentLaunchCountersJson(0, buffer, len)
}

/// Copies the counters of the calling thread's launch `back` launches before
/// its most recent one (0: the most recent), as one JSON line, into `buffer`.
/// The last 32 launches of each thread are kept, so a test can read every
/// launch one library call made.
///
/// Works like `snprintf`: writes at most `len - 1` bytes and a NUL (nothing
/// when `buffer` is null or `len` is 0) and returns the JSON's full length,
/// so a caller can size its buffer with a first call. Returns 0 when the
/// thread has made no such launch (or on an internal failure).
///
/// # Safety
/// `buffer` must be null or valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuGetRecentLaunchCountersJson(back: usize, buffer: *mut c_char, len: usize) -> usize {
    let json = std::panic::catch_unwind(|| {
        super::launch::RECENT_COUNTERS.with(|recent| {
            let recent = recent.borrow();
            let index = recent.len().checked_sub(1 + back)?;
            recent.get(index).map(|counters| counters.to_json_line())
        })
    });
    let Ok(Some(json)) = json else { return 0 };
    if !buffer.is_null() && len > 0 {
        let copied = json.len().min(len - 1);
        std::ptr::copy_nonoverlapping(json.as_ptr(), buffer.cast::<u8>(), copied);
        *buffer.add(copied) = 0;
    }
    json.len()
}

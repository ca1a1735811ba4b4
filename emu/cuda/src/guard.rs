//! The wrapper every exported function runs its body in.

use crate::result::{is_standard, CUresult, DriverResult, CUDA_ERROR_UNKNOWN, CUDA_SUCCESS};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body`, turning its result into a `CUresult`.
///
/// A panic must never unwind across the C ABI (that is undefined behaviour),
/// so it is caught here and reported as `CUDA_ERROR_UNKNOWN`; the panic hook
/// has already printed its message to stderr. A code `cuda.h` does not define
/// is also reported as `CUDA_ERROR_UNKNOWN`, because Rust callers model
/// `CUresult` as an enum and must never see a value outside it.
pub(crate) fn ffi_guard(body: impl FnOnce() -> DriverResult) -> CUresult {
    // AssertUnwindSafe: after a panic the global state is only reached through
    // a mutex whose poisoning is ignored; the worst outcome is a handle table
    // missing the entry the panicking call was about to add.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) if is_standard(code) => code,
        Ok(Err(_)) | Err(_) => CUDA_ERROR_UNKNOWN,
    }
}

/// Writes `value` through an out-pointer, refusing a null one.
///
/// # Safety
/// `out` must be null or valid for one write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) -> DriverResult {
    if out.is_null() {
        return Err(crate::result::CUDA_ERROR_INVALID_VALUE);
    }
    out.write(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_FOUND};

    #[test]
    fn ok_and_errors_pass_through() {
        assert_eq!(ffi_guard(|| Ok(())), CUDA_SUCCESS);
        assert_eq!(ffi_guard(|| Err(CUDA_ERROR_NOT_FOUND)), 500);
    }

    #[test]
    fn panic_becomes_unknown() {
        assert_eq!(ffi_guard(|| panic!("deliberate panic inside an export")), CUDA_ERROR_UNKNOWN);
    }

    #[test]
    fn non_standard_code_becomes_unknown() {
        // 42 is not in cuda.h's CUresult enum.
        assert_eq!(ffi_guard(|| Err(42)), CUDA_ERROR_UNKNOWN);
    }

    #[test]
    fn null_out_pointer_is_invalid_value() {
        let result = unsafe { write_out::<u32>(std::ptr::null_mut(), 7) };
        assert_eq!(result, Err(CUDA_ERROR_INVALID_VALUE));
        let mut slot = 0u32;
        unsafe { write_out(&mut slot, 7) }.unwrap();
        assert_eq!(slot, 7);
    }
}

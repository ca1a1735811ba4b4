//! Building the packed parameter buffer a launch takes from the two forms
//! `cuLaunchKernel` accepts: one pointer per parameter (`kernelParams`), or a
//! ready buffer described by the `extra` array.

use crate::result::{DriverResult, CUDA_ERROR_INVALID_VALUE};
use ptx_emu::module::KernelInfo;
use std::ffi::c_void;

/// `CU_LAUNCH_PARAM_END`, `CU_LAUNCH_PARAM_BUFFER_POINTER`, `CU_LAUNCH_PARAM_BUFFER_SIZE`.
const LAUNCH_PARAM_END: usize = 0x0;
const LAUNCH_PARAM_BUFFER_POINTER: usize = 0x1;
const LAUNCH_PARAM_BUFFER_SIZE: usize = 0x2;

/// Copies each parameter's `size` bytes from `pointers[i]` to its `offset`.
///
/// # Safety
/// Each `pointers[i]` must be valid for `kernel.params[i].size` bytes of reads.
pub unsafe fn pack_from_pointers(kernel: &KernelInfo, pointers: &[*const c_void]) -> DriverResult<Vec<u8>> {
    if pointers.len() != kernel.params.len() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let mut buffer = vec![0u8; kernel.param_bytes as usize];
    for (param, &pointer) in kernel.params.iter().zip(pointers) {
        if param.size == 0 {
            continue;
        }
        if pointer.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let start = param.offset as usize;
        let slot = buffer.get_mut(start..start + param.size as usize).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        slot.copy_from_slice(std::slice::from_raw_parts(pointer.cast::<u8>(), slot.len()));
    }
    Ok(buffer)
}

/// Reads an `extra` array (key/value pairs up to `CU_LAUNCH_PARAM_END`) and
/// copies the buffer it describes; its size must be the kernel's `param_bytes`.
///
/// # Safety
/// `extra` must be a well-formed, END-terminated array; the buffer pointer
/// valid for the size given.
pub unsafe fn pack_from_extra(kernel: &KernelInfo, extra: *const *mut c_void) -> DriverResult<Vec<u8>> {
    let mut buffer: Option<*const u8> = None;
    let mut size: Option<usize> = None;
    let mut cursor = extra;
    loop {
        match *cursor as usize {
            LAUNCH_PARAM_END => break,
            LAUNCH_PARAM_BUFFER_POINTER => buffer = Some((*cursor.add(1)).cast::<u8>().cast_const()),
            LAUNCH_PARAM_BUFFER_SIZE => {
                let size_pointer = (*cursor.add(1)).cast::<usize>();
                if size_pointer.is_null() {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                size = Some(*size_pointer);
            }
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        cursor = cursor.add(2);
    }
    let (Some(buffer), Some(size)) = (buffer, size) else {
        return Err(CUDA_ERROR_INVALID_VALUE);
    };
    if size != kernel.param_bytes as usize || (size > 0 && buffer.is_null()) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if size == 0 {
        return Ok(Vec::new());
    }
    Ok(std::slice::from_raw_parts(buffer, size).to_vec())
}

/// The packed buffer from whichever of the two forms the caller used
/// (exactly one of them, unless the kernel takes no parameters).
///
/// # Safety
/// `kernel_params` null or an array of `kernel.params.len()` valid pointers;
/// `extra` null or as for [`pack_from_extra`].
pub unsafe fn pack(
    kernel: &KernelInfo,
    kernel_params: *const *mut c_void,
    extra: *const *mut c_void,
) -> DriverResult<Vec<u8>> {
    match (kernel_params.is_null(), extra.is_null()) {
        (false, false) => Err(CUDA_ERROR_INVALID_VALUE),
        (false, true) => {
            let pointers = std::slice::from_raw_parts(kernel_params.cast::<*const c_void>(), kernel.params.len());
            pack_from_pointers(kernel, pointers)
        }
        (true, false) => pack_from_extra(kernel, extra),
        (true, true) if kernel.params.is_empty() => Ok(vec![0u8; kernel.param_bytes as usize]),
        (true, true) => Err(CUDA_ERROR_INVALID_VALUE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ptx_emu::module::ParamInfo;

    /// `(const float* x, int n, double scale)`: 8 + 4 (+4 padding) + 8 bytes.
    fn kernel() -> KernelInfo {
        let param = |name: &str, offset, size| ParamInfo { name: name.into(), offset, size, align: size };
        KernelInfo {
            name: "scale".into(),
            params: vec![param("x", 0, 8), param("n", 8, 4), param("scale", 16, 8)],
            param_bytes: 24,
            static_shared_bytes: 0,
            local_bytes: 0,
            max_threads_per_block: None,
            cluster_dims: None,
            num_regs: 16,
        }
    }

    fn expected_buffer(x: u64, n: i32, scale: f64) -> Vec<u8> {
        let mut buffer = vec![0u8; 24];
        buffer[0..8].copy_from_slice(&x.to_le_bytes());
        buffer[8..12].copy_from_slice(&n.to_le_bytes());
        buffer[16..24].copy_from_slice(&scale.to_le_bytes());
        buffer
    }

    #[test]
    fn packs_pointer_params_at_their_offsets() {
        let (mut x, mut n, mut scale) = (0xdead_beef_0000_1000u64, -7i32, 2.5f64);
        let mut pointers: [*mut c_void; 3] =
            [(&mut x as *mut u64).cast(), (&mut n as *mut i32).cast(), (&mut scale as *mut f64).cast()];
        let packed = unsafe { pack(&kernel(), pointers.as_mut_ptr(), std::ptr::null()) }.unwrap();
        assert_eq!(packed, expected_buffer(x, n, scale));
    }

    #[test]
    fn packs_extra_buffer() {
        let mut buffer = expected_buffer(0x2000, 3, -1.0);
        let mut size = buffer.len();
        let extra: [*mut c_void; 5] = [
            LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
            buffer.as_mut_ptr().cast(),
            LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
            (&mut size as *mut usize).cast(),
            LAUNCH_PARAM_END as *mut c_void,
        ];
        let packed = unsafe { pack(&kernel(), std::ptr::null(), extra.as_ptr()) }.unwrap();
        assert_eq!(packed, buffer);
    }

    #[test]
    fn extra_with_wrong_size_is_refused() {
        let mut buffer = vec![0u8; 16];
        let mut size = buffer.len();
        let extra: [*mut c_void; 5] = [
            LAUNCH_PARAM_BUFFER_POINTER as *mut c_void,
            buffer.as_mut_ptr().cast(),
            LAUNCH_PARAM_BUFFER_SIZE as *mut c_void,
            (&mut size as *mut usize).cast(),
            LAUNCH_PARAM_END as *mut c_void,
        ];
        assert_eq!(unsafe { pack(&kernel(), std::ptr::null(), extra.as_ptr()) }, Err(CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn missing_or_double_params_are_refused() {
        let mut x = 0u64;
        let mut pointers: [*mut c_void; 3] = [(&mut x as *mut u64).cast(), std::ptr::null_mut(), std::ptr::null_mut()];
        // A null parameter pointer.
        assert_eq!(unsafe { pack(&kernel(), pointers.as_mut_ptr(), std::ptr::null()) }, Err(CUDA_ERROR_INVALID_VALUE));
        // Neither form, for a kernel that takes parameters.
        assert_eq!(unsafe { pack(&kernel(), std::ptr::null(), std::ptr::null()) }, Err(CUDA_ERROR_INVALID_VALUE));
        // Both forms at once.
        let end: [*mut c_void; 1] = [std::ptr::null_mut()];
        assert_eq!(unsafe { pack(&kernel(), pointers.as_mut_ptr(), end.as_ptr()) }, Err(CUDA_ERROR_INVALID_VALUE));
    }

    #[test]
    fn kernel_without_params_needs_none() {
        let no_params = KernelInfo { params: Vec::new(), param_bytes: 0, ..kernel() };
        assert_eq!(unsafe { pack(&no_params, std::ptr::null(), std::ptr::null()) }, Ok(Vec::new()));
    }
}

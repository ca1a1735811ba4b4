//! Tensor maps (`CUtensorMap`, the descriptors of `cp.async.bulk.tensor`):
//! `cuTensorMapEncodeTiled` validates its arguments by the rules `cuda.h`
//! states and writes the emulator's own 128-byte encoding
//! (`ptx_emu::tensor_map`), which the executor decodes; im2col maps are not
//! supported; `cuTensorMapReplaceAddress` swaps the global base.

use crate::guard::ffi_guard;
use crate::result::*;
use crate::state::driver;
use ptx_emu::tensor_map::{TensorMap, MAX_RANK, TENSOR_MAP_BYTES};

/// `CUtensorMap`: 128 opaque bytes, 64-byte aligned.
#[repr(C, align(64))]
pub struct CUtensorMap {
    pub opaque: [u64; 16],
}

/// The `n` elements at `p` (empty for a null pointer with `n` = 0).
///
/// # Safety
/// `p` must be null or valid for `n` reads.
unsafe fn slice<'a, T>(p: *const T, n: usize) -> Result<&'a [T], CUresult> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-null; the caller guarantees `n` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// # Safety
/// `tensor_map` must be valid for a 128-byte write; the arrays must hold
/// `tensor_rank` elements (`global_strides` one fewer).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuTensorMapEncodeTiled(
    tensor_map: *mut CUtensorMap,
    tensor_data_type: u32,
    tensor_rank: u32,
    global_address: *mut std::ffi::c_void,
    global_dim: *const u64,
    global_strides: *const u64,
    box_dim: *const u32,
    element_strides: *const u32,
    interleave: u32,
    swizzle: u32,
    l2_promotion: u32,
    oob_fill: u32,
) -> CUresult {
    ffi_guard(|| {
        {
            let state = driver().lock()?;
            state.current()?;
        }
        if tensor_map.is_null() || tensor_map as usize % 64 != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let rank = tensor_rank as usize;
        if !(1..=MAX_RANK).contains(&rank) {
            eprintln!("ptx-emu: cuTensorMapEncodeTiled: rank {tensor_rank} outside 1..=5");
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the caller guarantees arrays of the rank's length.
        let (dims, strides, boxes, estrides) = unsafe {
            (
                slice(global_dim, rank)?,
                slice(global_strides, rank - 1)?,
                slice(box_dim, rank)?,
                slice(element_strides, rank)?,
            )
        };
        let map = TensorMap::tiled(
            tensor_data_type,
            tensor_rank,
            global_address as u64,
            dims,
            strides,
            boxes,
            estrides,
            interleave,
            swizzle,
            l2_promotion,
            oob_fill,
        )
        .map_err(|e| {
            eprintln!("ptx-emu: cuTensorMapEncodeTiled: {e}");
            CUDA_ERROR_INVALID_VALUE
        })?;
        let bytes = map.encode();
        // SAFETY: non-null and aligned; the caller guarantees 128 writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), tensor_map.cast::<u8>(), TENSOR_MAP_BYTES) };
        Ok(())
    })
}

/// # Safety
/// Any arguments: the call only reports that im2col maps are not supported.
#[no_mangle]
pub unsafe extern "C" fn cuTensorMapEncodeIm2col(
    _tensor_map: *mut CUtensorMap,
    _tensor_data_type: u32,
    _tensor_rank: u32,
    _global_address: *mut std::ffi::c_void,
    _global_dim: *const u64,
    _global_strides: *const u64,
    _pixel_box_lower_corner: *const i32,
    _pixel_box_upper_corner: *const i32,
    _channels_per_pixel: u32,
    _pixels_per_column: u32,
    _element_strides: *const u32,
    _interleave: u32,
    _swizzle: u32,
    _l2_promotion: u32,
    _oob_fill: u32,
) -> CUresult {
    ffi_guard(|| {
        eprintln!("ptx-emu: cuTensorMapEncodeIm2col: im2col tensor maps are not supported");
        Err(CUDA_ERROR_NOT_SUPPORTED)
    })
}

/// # Safety
/// `tensor_map` must be valid for 128 bytes of reads and writes.
#[no_mangle]
pub unsafe extern "C" fn cuTensorMapReplaceAddress(
    tensor_map: *mut CUtensorMap,
    global_address: *mut std::ffi::c_void,
) -> CUresult {
    ffi_guard(|| {
        if tensor_map.is_null() || tensor_map as usize % 64 != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: non-null and aligned; the caller guarantees 128 bytes.
        let bytes = unsafe { std::slice::from_raw_parts_mut(tensor_map.cast::<u8>(), TENSOR_MAP_BYTES) };
        TensorMap::replace_address(bytes, global_address as u64).map_err(|e| {
            eprintln!("ptx-emu: cuTensorMapReplaceAddress: {e}");
            CUDA_ERROR_INVALID_VALUE
        })
    })
}

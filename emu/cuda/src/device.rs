//! The emulated device: an sm_80-class GPU (A100-like limits), and the
//! `cuDevice*` exports that describe it.
//!
//! `PTX_EMU_COMPUTE_CAPABILITY=90` (or `9.0`, `sm_90`) makes it present
//! itself as compute capability 9.0 (attributes 75/76, its name, which PTX
//! `.target` its modules accept: see [`target_loads`], and sm_90's shared
//! memory: 227 KB per block on opt-in, 228 KB per SM), so that code choosing
//! kernels by the device's capability takes its Hopper path; the other
//! limits stay those below. Unset, or `80`, it is 8.0.
//!
//! Shared memory limits are sm_80's: 48 KB per block by default, 163 KB per
//! block on opt-in, 164 KB per SM (sm_90 would allow 227 KB; kernels that
//! need that much would not run on the oldest architecture the crate targets,
//! so the emulator refuses them too).

use crate::guard::{ffi_guard, write_out};
use crate::result::{CUresult, DriverResult, CUDA_ERROR_INVALID_DEVICE, CUDA_ERROR_INVALID_VALUE};
use crate::state::driver;
use std::ffi::{c_char, c_int};

/// `CUdevice`: a device ordinal.
pub type CUdevice = c_int;

/// The driver version reported (CUDA 13.0, the bindings the crate is built for).
pub const DRIVER_VERSION: c_int = 13000;
pub const DEVICE_NAME: &str = "ptx-emu emulated sm_80 device";
/// The name when the device presents itself as compute capability 9.0.
pub const DEVICE_NAME_SM90: &str = "ptx-emu emulated sm_90 device";
/// Fixed, so that tests comparing UUIDs across calls are deterministic.
pub const DEVICE_UUID: [u8; 16] = *b"ptx-emu-sm80-dev";

pub const SHARED_BYTES_PER_BLOCK_DEFAULT: u32 = 48 * 1024;
pub const SHARED_BYTES_PER_BLOCK_OPTIN: u32 = 163 * 1024;
pub const SHARED_BYTES_PER_SM: u32 = 164 * 1024;
pub const RESERVED_SHARED_BYTES_PER_BLOCK: u32 = 1024;
/// sm_90's shared memory: 227 KB per block on opt-in, 228 KB per SM.
pub const SHARED_BYTES_PER_BLOCK_OPTIN_SM90: u32 = 227 * 1024;
pub const SHARED_BYTES_PER_SM_SM90: u32 = 228 * 1024;

/// The opt-in shared memory limit per block of the capability presented.
pub fn shared_bytes_per_block_optin() -> u32 {
    if compute_capability() == ComputeCapability::SM90 {
        SHARED_BYTES_PER_BLOCK_OPTIN_SM90
    } else {
        SHARED_BYTES_PER_BLOCK_OPTIN
    }
}

/// The shared memory per multiprocessor of the capability presented.
pub fn shared_bytes_per_sm() -> u32 {
    if compute_capability() == ComputeCapability::SM90 {
        SHARED_BYTES_PER_SM_SM90
    } else {
        SHARED_BYTES_PER_SM
    }
}
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
/// Default global memory: 40 GiB, an A100-40GB (address space only; host
/// memory is used as allocations are made).
const DEFAULT_GLOBAL_MEMORY_BYTES: u64 = 40 << 30;

/// Multiprocessors of the emulated device when `PTX_EMU_MULTIPROCESSORS`
/// is not set: an A100's 108.
const DEFAULT_MULTIPROCESSORS: u32 = 108;

/// The emulated device's multiprocessor count (attribute
/// MULTIPROCESSOR_COUNT, and the cooperative-launch residency limit):
/// `PTX_EMU_MULTIPROCESSORS` if set to a positive integer, else 108. Read at
/// every query, so a program (the performance report) can size its launches
/// for another GPU's count, as the library would on that GPU.
pub fn multiprocessors() -> u32 {
    std::env::var("PTX_EMU_MULTIPROCESSORS")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .filter(|count| *count > 0 && *count <= i32::MAX as u32)
        .unwrap_or(DEFAULT_MULTIPROCESSORS)
}

/// A compute capability, `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComputeCapability {
    pub major: u32,
    pub minor: u32,
}

impl ComputeCapability {
    pub const SM80: ComputeCapability = ComputeCapability { major: 8, minor: 0 };
    pub const SM90: ComputeCapability = ComputeCapability { major: 9, minor: 0 };

    /// `major * 10 + minor`, as `.target sm_XY` spells it.
    pub fn number(self) -> u32 {
        self.major * 10 + self.minor
    }
}

/// The capabilities the emulator can present itself as.
const PRESENTABLE: [ComputeCapability; 2] = [ComputeCapability::SM80, ComputeCapability::SM90];

/// Parses `80`, `8.0`, `sm_90`, `90`: `None` for anything else, or for a
/// capability the emulator does not present.
pub fn parse_compute_capability(text: &str) -> Option<ComputeCapability> {
    let text = text.trim();
    let text = text.strip_prefix("sm_").unwrap_or(text);
    let (major, minor) = match text.split_once('.') {
        Some((major, minor)) => (major.parse().ok()?, minor.parse().ok()?),
        None if text.len() >= 2 && text.chars().all(|c| c.is_ascii_digit()) => {
            let (major, minor) = text.split_at(text.len() - 1);
            (major.parse().ok()?, minor.parse().ok()?)
        }
        None => return None,
    };
    let wanted = ComputeCapability { major, minor };
    PRESENTABLE.contains(&wanted).then_some(wanted)
}

/// The capability the device presents: `PTX_EMU_COMPUTE_CAPABILITY` if set
/// to one [`parse_compute_capability`] accepts, else 8.0 (a value it does not
/// accept is reported once on stderr). Read at every query, as
/// `PTX_EMU_MULTIPROCESSORS` is, so that a program can present both.
pub fn compute_capability() -> ComputeCapability {
    static WARNED: std::sync::Once = std::sync::Once::new();
    match std::env::var("PTX_EMU_COMPUTE_CAPABILITY") {
        Ok(text) => parse_compute_capability(&text).unwrap_or_else(|| {
            WARNED.call_once(|| {
                eprintln!("ptx-emu: PTX_EMU_COMPUTE_CAPABILITY={text:?} is not 80 or 90; presenting 8.0");
            });
            ComputeCapability::SM80
        }),
        Err(_) => ComputeCapability::SM80,
    }
}

/// The device's name for its capability.
pub fn device_name(cc: ComputeCapability) -> &'static str {
    if cc == ComputeCapability::SM90 {
        DEVICE_NAME_SM90
    } else {
        DEVICE_NAME
    }
}

/// Whether PTX whose `.target` is `target` (`sm_80`, `sm_90a`, `sm_90f`, ...)
/// loads on a device of capability `cc`, as the driver's JIT decides:
/// a plain target loads on its capability and every later one; an
/// architecture-specific target (`a`) only on exactly its capability; a
/// family-specific one (`f`) on its capability and later minors of the same
/// major. `Err` names why not (the driver fails such a load with
/// `CUDA_ERROR_INVALID_PTX`, the JIT's "SM version specified by .target is
/// higher than default SM version assumed").
pub fn target_loads(target: &str, cc: ComputeCapability) -> Result<(), String> {
    let arch = target.split(',').next().unwrap_or("").trim();
    let Some(spec) = arch.strip_prefix("sm_") else {
        return Err(format!(".target {target:?} names no sm_XY architecture"));
    };
    let digits: String = spec.chars().take_while(char::is_ascii_digit).collect();
    let suffix = &spec[digits.len()..];
    let Ok(number) = digits.parse::<u32>() else {
        return Err(format!(".target {target:?} names no sm_XY architecture"));
    };
    let device = cc.number();
    let loads = match suffix {
        "" => number <= device,
        "a" => number == device,
        "f" => number <= device && number / 10 == cc.major,
        _ => false,
    };
    if loads {
        Ok(())
    } else {
        Err(format!(
            "the module's .target {arch} does not run on this compute capability {}.{} device \
             (PTX_EMU_COMPUTE_CAPABILITY selects 8.0 or 9.0)",
            cc.major, cc.minor
        ))
    }
}

/// The `.target` directive's value of a PTX module (`sm_90a`, possibly
/// followed by `, debug` or the like), if it has one.
pub fn ptx_target(text: &str) -> Option<&str> {
    text.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(".target")?;
        rest.starts_with(char::is_whitespace).then(|| rest.trim())
    })
}

/// Global memory capacity: `PTX_EMU_GLOBAL_MEMORY_BYTES` if set to a
/// positive integer, else 40 GiB.
pub fn global_memory_bytes() -> u64 {
    std::env::var("PTX_EMU_GLOBAL_MEMORY_BYTES")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|bytes| *bytes > 0)
        .unwrap_or(DEFAULT_GLOBAL_MEMORY_BYTES)
}

/// Highest `CUdevice_attribute` value that CUDA 13.0's `cuda.h` defines.
const LAST_DEFINED_ATTRIBUTE: c_int = 147;

/// The value of a device attribute (`CUdevice_attribute` numbering of cuda.h).
/// Attributes cuda.h defines but that describe hardware features the
/// emulator lacks (textures, surfaces, managed memory, IPC, ...) read as 0;
/// numbers cuda.h does not define are `CUDA_ERROR_INVALID_VALUE`.
// The `1..=LAST_DEFINED_ATTRIBUTE` arm deliberately overlaps the modelled
// ones: it is the "defined, reads 0" fallback.
#[allow(clippy::match_overlapping_arm)]
pub fn attribute_value(attribute: c_int) -> DriverResult<c_int> {
    let value = match attribute {
        1 => MAX_THREADS_PER_BLOCK as c_int,             // MAX_THREADS_PER_BLOCK
        2 | 3 => 1024,                                   // MAX_BLOCK_DIM_X / _Y
        4 => 64,                                         // MAX_BLOCK_DIM_Z
        5 => i32::MAX,                                   // MAX_GRID_DIM_X
        6 | 7 => 65535,                                  // MAX_GRID_DIM_Y / _Z
        8 => SHARED_BYTES_PER_BLOCK_DEFAULT as c_int,    // MAX_SHARED_MEMORY_PER_BLOCK
        9 => 64 * 1024,                                  // TOTAL_CONSTANT_MEMORY
        10 => 32,                                        // WARP_SIZE
        11 => i32::MAX,                                  // MAX_PITCH
        12 => 65536,                                     // MAX_REGISTERS_PER_BLOCK
        13 => 1_410_000,                                 // CLOCK_RATE (kHz)
        14 => 512,                                       // TEXTURE_ALIGNMENT
        15 => 1,                                         // GPU_OVERLAP
        16 => multiprocessors() as c_int,                // MULTIPROCESSOR_COUNT
        31 => 1,                                         // CONCURRENT_KERNELS
        36 => 1_215_000,                                 // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                                      // GLOBAL_MEMORY_BUS_WIDTH
        38 => 40 * 1024 * 1024,                          // L2_CACHE_SIZE
        39 => 2048,                                      // MAX_THREADS_PER_MULTIPROCESSOR
        40 => 2,                                         // ASYNC_ENGINE_COUNT
        41 => 1,                                         // UNIFIED_ADDRESSING
        75 => compute_capability().major as c_int,       // COMPUTE_CAPABILITY_MAJOR
        76 => compute_capability().minor as c_int,       // COMPUTE_CAPABILITY_MINOR
        78 => 1,                                         // STREAM_PRIORITIES_SUPPORTED
        79 | 80 => 1,                                    // GLOBAL_ / LOCAL_L1_CACHE_SUPPORTED
        81 => shared_bytes_per_sm() as c_int,            // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
        82 => 65536,                                     // MAX_REGISTERS_PER_MULTIPROCESSOR
        87 => 2,                                         // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
        90 => 1,                                         // COMPUTE_PREEMPTION_SUPPORTED
        97 => shared_bytes_per_block_optin() as c_int,   // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
        106 => 32,                                       // MAX_BLOCKS_PER_MULTIPROCESSOR
        111 => RESERVED_SHARED_BYTES_PER_BLOCK as c_int, // RESERVED_SHARED_MEMORY_PER_BLOCK
        // MEMORY_POOLS_SUPPORTED = 1, as an A100 reports: cudarc then takes
        // the stream-ordered path (cuMemAllocAsync/cuMemFreeAsync) it takes on
        // hardware, including its zero-byte allocations for empty tensors.
        115 => 1,
        1..=LAST_DEFINED_ATTRIBUTE => 0,
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    };
    Ok(value)
}

fn check_device(device: CUdevice) -> DriverResult {
    if device == 0 {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_DEVICE)
    }
}

/// Copies `name` into a caller buffer of `len` bytes, truncating and always
/// NUL-terminating, as `cuDeviceGetName` does.
pub fn copy_c_string(name: &str, out: &mut [u8]) {
    let Some(room) = out.len().checked_sub(1) else { return };
    let copied = name.len().min(room);
    out[..copied].copy_from_slice(&name.as_bytes()[..copied]);
    out[copied] = 0;
}

/// # Safety
/// Pointer arguments must be null or valid for the writes cuda.h documents.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(driver_version: *mut c_int) -> CUresult {
    ffi_guard(|| write_out(driver_version, DRIVER_VERSION))
}

/// # Safety
/// Pointer arguments must be null or valid for the writes cuda.h documents.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        check_device(ordinal)?;
        write_out(device, ordinal)
    })
}

/// # Safety
/// Pointer arguments must be null or valid for the writes cuda.h documents.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        write_out(count, 1)
    })
}

/// # Safety
/// `name` must be null or valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, device: CUdevice) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        check_device(device)?;
        if name.is_null() || len <= 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let out = std::slice::from_raw_parts_mut(name.cast::<u8>(), len as usize);
        copy_c_string(device_name(compute_capability()), out);
        Ok(())
    })
}

/// # Safety
/// Pointer arguments must be null or valid for the writes cuda.h documents.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(value: *mut c_int, attribute: c_int, device: CUdevice) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        check_device(device)?;
        write_out(value, attribute_value(attribute)?)
    })
}

/// # Safety
/// Pointer arguments must be null or valid for the writes cuda.h documents.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, device: CUdevice) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        check_device(device)?;
        write_out(bytes, global_memory_bytes() as usize)
    })
}

/// # Safety
/// `uuid` must be null or valid for 16 bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], device: CUdevice) -> CUresult {
    ffi_guard(|| {
        driver().require_init()?;
        check_device(device)?;
        write_out(uuid, DEVICE_UUID)
    })
}

/// Same as `cuDeviceGetUuid` (the `_v2` form differs only for MIG instances).
///
/// # Safety
/// `uuid` must be null or valid for 16 bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], device: CUdevice) -> CUresult {
    cuDeviceGetUuid(uuid, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sm80_attributes() {
        assert_eq!(attribute_value(75), Ok(8));
        assert_eq!(attribute_value(76), Ok(0));
        assert_eq!(attribute_value(16), Ok(108));
        assert_eq!(attribute_value(10), Ok(32));
        assert_eq!(attribute_value(8), Ok(49152));
        assert_eq!(attribute_value(97), Ok(166912));
        assert_eq!(attribute_value(115), Ok(1));
    }

    #[test]
    fn compute_capability_spellings() {
        let sm90 = Some(ComputeCapability::SM90);
        for text in ["90", "9.0", "sm_90", " 90 "] {
            assert_eq!(parse_compute_capability(text), sm90, "{text:?}");
        }
        assert_eq!(parse_compute_capability("8.0"), Some(ComputeCapability::SM80));
        for text in ["", "9", "86", "100", "sm_90a", "nine", "9.x"] {
            assert_eq!(parse_compute_capability(text), None, "{text:?}");
        }
        assert_eq!(device_name(ComputeCapability::SM90), DEVICE_NAME_SM90);
        assert_eq!(device_name(ComputeCapability::SM80), DEVICE_NAME);
    }

    #[test]
    fn which_targets_load_where() {
        let (sm80, sm90) = (ComputeCapability::SM80, ComputeCapability::SM90);
        assert_eq!(target_loads("sm_80", sm80), Ok(()));
        assert_eq!(target_loads("sm_80", sm90), Ok(()), "plain PTX runs on later devices");
        assert_eq!(target_loads("sm_75, debug", sm80), Ok(()));
        assert!(target_loads("sm_90a", sm80).is_err(), "newer than the device");
        assert!(target_loads("sm_90", sm80).is_err());
        assert_eq!(target_loads("sm_90a", sm90), Ok(()));
        assert!(target_loads("sm_80a", sm90).is_err(), "architecture-specific: that capability only");
        assert!(target_loads("sm_100a", sm90).is_err());
        assert!(target_loads("compute_90", sm90).is_err());
        assert_eq!(ptx_target("// c\n.version 8.0\n.target sm_90a\n.address_size 64\n"), Some("sm_90a"));
        assert_eq!(ptx_target(".targets x\n"), None);
    }

    #[test]
    fn defined_but_unmodelled_attribute_reads_zero() {
        // 21: MAXIMUM_TEXTURE1D_WIDTH, 147: the last one cuda.h 13.0 defines.
        assert_eq!(attribute_value(21), Ok(0));
        assert_eq!(attribute_value(147), Ok(0));
    }

    #[test]
    fn undefined_attribute_is_invalid_value() {
        for attribute in [0, -1, 148, 10_000] {
            assert_eq!(attribute_value(attribute), Err(CUDA_ERROR_INVALID_VALUE), "attribute {attribute}");
        }
    }

    #[test]
    fn device_name_truncates_with_nul() {
        let mut small = [0xffu8; 5];
        copy_c_string("abcdefgh", &mut small);
        assert_eq!(&small, b"abcd\0");
        let mut big = [0xffu8; 12];
        copy_c_string("abc", &mut big);
        assert_eq!(&big[..4], b"abc\0");
        let mut empty: [u8; 0] = [];
        copy_c_string("abc", &mut empty);
    }
}

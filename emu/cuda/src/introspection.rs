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
        crate::launch::RECENT_COUNTERS.with(|recent| {
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

/// The model's ceilings for every GPU it knows, as one JSON object keyed by
/// the names `PTX_EMU_MODEL` takes: SMs, clock, the dense 16-bit `mma.sync`
/// rate in FLOP/s, DRAM bytes per second and L2 bytes. A report's roofline
/// floor uses the same numbers as the model, from one table
/// (`ptx_emu::model::gpus`).
///
/// Works like `snprintf` (see [`ptxEmuGetRecentLaunchCountersJson`]).
///
/// # Safety
/// `buffer` must be null or valid for `len` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn ptxEmuModelCeilingsJson(buffer: *mut c_char, len: usize) -> usize {
    let entries: Vec<String> = ptx_emu::model::gpus::ALL
        .iter()
        .map(|g| {
            format!(
                "\"{}\":{{\"sms\":{},\"clock_ghz\":{},\"bf16_mma_sync_flops_per_s\":{},\"dram_bytes_per_s\":{},\"l2_bytes\":{},\"arch\":\"{}\"}}",
                g.name,
                g.sms,
                g.clock_ghz,
                g.peak_16bit_tflops() * 1e12,
                g.dram_bytes_per_s,
                g.l2_bytes,
                g.arch
            )
        })
        .collect();
    let json = format!("{{{}}}", entries.join(","));
    if !buffer.is_null() && len > 0 {
        let copied = json.len().min(len - 1);
        std::ptr::copy_nonoverlapping(json.as_ptr(), buffer.cast::<u8>(), copied);
        *buffer.add(copied) = 0;
    }
    json.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_name_every_gpu_with_its_rates() {
        // SAFETY: a null buffer asks only for the length; then a buffer of that length plus the NUL.
        let json = unsafe {
            let needed = ptxEmuModelCeilingsJson(std::ptr::null_mut(), 0);
            let mut buffer = vec![0u8; needed + 1];
            let written = ptxEmuModelCeilingsJson(buffer.as_mut_ptr().cast(), buffer.len());
            assert_eq!(written, needed);
            String::from_utf8(buffer[..written].to_vec()).expect("utf-8")
        };
        for gpu in ptx_emu::model::gpus::ALL {
            let rate = gpu.peak_16bit_tflops() * 1e12;
            assert!(json.contains(&format!("\"{}\":{{\"sms\":{}", gpu.name, gpu.sms)), "{json}");
            assert!(json.contains(&format!("\"bf16_mma_sync_flops_per_s\":{rate}")), "{json}");
            assert!(json.contains(&format!("\"dram_bytes_per_s\":{}", gpu.dram_bytes_per_s)), "{json}");
            assert!(json.contains(&format!("\"arch\":\"{}\"", gpu.arch)), "{json}");
        }
    }
}

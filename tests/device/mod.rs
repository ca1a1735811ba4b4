//! How kernel tests get a device.
//!
//! The README's test command (`scripts/run.sh test`) puts a driver on the
//! library path — the machine's, or the emulator's `libcuda.so` — and sets
//! `FUSED_LORA_REQUIRE_DEVICE=1`: there, a test that finds no device fails.
//! Run any other way (plain `cargo test` on a machine without CUDA), kernel
//! tests skip, and say so on stderr.

#![allow(dead_code)]

use std::sync::{Arc, OnceLock};

use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream};
use fused_lora::LoraKernels;

/// A context, its default stream and the crate's kernels loaded into it.
pub struct Device {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub kernels: LoraKernels,
}

fn required() -> bool {
    std::env::var("FUSED_LORA_REQUIRE_DEVICE").is_ok_and(|v| v == "1")
}

fn open() -> Result<Arc<CudaContext>, String> {
    // SAFETY: only tries to dlopen the driver library; loads nothing else.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("no libcuda.so on the library path (run through `scripts/run.sh test` to use the emulator)".into());
    }
    // cudarc panics on a missing symbol; a library without cuInit is not a driver.
    // SAFETY: looks a symbol up in the library cudarc loaded.
    if unsafe { cudarc::driver::sys::culib().get::<unsafe extern "C" fn(u32) -> i32>(b"cuInit\0") }.is_err() {
        return Err("the libcuda.so found exports no cuInit: not a CUDA driver".into());
    }
    let ctx = CudaContext::new(0).map_err(|e| format!("cuInit/cuDevicePrimaryCtxRetain failed: {e}"))?;
    let forced = std::env::var("FUSED_LORA_EMULATOR").is_ok_and(|v| v == "1");
    if is_emulator() && !forced && std::path::Path::new("/proc/driver/nvidia/version").exists() {
        eprintln!(
            "WARNING: kernel tests run on the emulator although this machine has an NVIDIA driver: \
             cargo put target/release/libcuda.so first on the library path; run `scripts/run.sh test` to test on the GPU"
        );
    }
    Ok(ctx)
}

/// Why kernel tests must not run in this environment: the emulator's CTA
/// sampling (`PTX_EMU_SAMPLE_CTAS`) runs only some CTAs of each launch, so
/// outputs are incomplete and every result check would be meaningless.
pub fn sampling_refusal() -> Option<String> {
    std::env::var("PTX_EMU_SAMPLE_CTAS").ok().filter(|v| !v.trim().is_empty()).map(|v| {
        format!(
            "PTX_EMU_SAMPLE_CTAS={v} is set: the emulator would run only a sample of each launch's CTAs \
             and leave outputs incomplete; kernel tests refuse to run sampled (unset it; sampling is for counting only)"
        )
    })
}

/// The device, or `None` after a loud skip message when none exists and the
/// test command does not require one.
///
/// # Panics
/// When `FUSED_LORA_REQUIRE_DEVICE=1` and no device can be opened, and always
/// when CTA sampling is on ([`sampling_refusal`]).
#[track_caller]
pub fn device() -> Option<Device> {
    if let Some(why) = sampling_refusal() {
        panic!("{why}");
    }
    static CONTEXT: OnceLock<Result<Arc<CudaContext>, String>> = OnceLock::new();
    match CONTEXT.get_or_init(open) {
        Ok(ctx) => Some(Device { ctx: Arc::clone(ctx), stream: ctx.default_stream(), kernels: LoraKernels::new(ctx) }),
        Err(why) if required() => panic!("no CUDA device, and FUSED_LORA_REQUIRE_DEVICE=1: {why}"),
        Err(why) => {
            eprintln!("SKIPPED {}: no CUDA device: {why}", std::panic::Location::caller());
            None
        }
    }
}

/// Whether the driver in use is the emulator (it exports `ptxEmuIsEmulator`).
pub fn is_emulator() -> bool {
    // SAFETY: looks a symbol up in the already-loaded driver library.
    unsafe { cudarc::driver::sys::culib().get::<unsafe extern "C" fn() -> i32>(b"ptxEmuIsEmulator\0").is_ok() }
}

/// The counters of the calling thread's most recent launch, when the driver is
/// the emulator (`None` on a GPU: the counts exist only there). Each field is
/// described in `ptx_emu::Counters`.
pub fn last_launch_counters() -> Option<serde_json::Value> {
    recent_launch_counter(0)
}

/// The counters of the calling thread's last `count` launches, oldest first
/// (`None` on a GPU, or when the thread made fewer launches); the emulator
/// keeps 32.
pub fn recent_launch_counters(count: usize) -> Option<Vec<serde_json::Value>> {
    (0..count).rev().map(recent_launch_counter).collect()
}

/// The counters of the launch `back` launches before the calling thread's last.
fn recent_launch_counter(back: usize) -> Option<serde_json::Value> {
    type CountersJson = unsafe extern "C" fn(usize, *mut std::ffi::c_char, usize) -> usize;
    // SAFETY: looks a symbol up in the already-loaded driver library; the
    // export's contract is snprintf's (it writes at most `len` bytes).
    unsafe {
        let export = cudarc::driver::sys::culib().get::<CountersJson>(b"ptxEmuGetRecentLaunchCountersJson\0").ok()?;
        let needed = export(back, std::ptr::null_mut(), 0);
        if needed == 0 {
            return None;
        }
        let mut buffer = vec![0u8; needed + 1];
        let written = export(back, buffer.as_mut_ptr().cast(), buffer.len());
        buffer.truncate(written);
        serde_json::from_slice(&buffer).ok()
    }
}

/// A named counter of [`last_launch_counters`] as an integer.
#[track_caller]
pub fn counter(counters: &serde_json::Value, name: &str) -> u64 {
    counters[name].as_u64().unwrap_or_else(|| panic!("counter `{name}` missing in {counters}"))
}

/// The sum of a counter object's values (per-shape counts such as
/// `tensor_instructions`) in a launch's counters.
#[track_caller]
pub fn object_sum(counters: &serde_json::Value, key: &str) -> u64 {
    let object = counters[key].as_object().unwrap_or_else(|| panic!("no object {key} in {counters}"));
    object.values().map(|v| v.as_u64().expect("a count")).sum()
}

/// Per mma.sync of a reduction loop's steady state: warp instructions,
/// global load sectors, shared wavefronts.
pub struct PerMma {
    pub warp: f64,
    pub sectors: f64,
    pub wavefronts: f64,
}

impl PerMma {
    /// The steady state as the difference of two launches that differ only
    /// in their reduction length (everything per tile is the same, the extra
    /// steps all in the middle of the pipeline); also the extra mma count,
    /// for the caller to check against its tiles.
    pub fn between(short: &serde_json::Value, long: &serde_json::Value) -> (PerMma, u64) {
        let extra = |name| counter(long, name) - counter(short, name);
        let mma = object_sum(long, "tensor_instructions") - object_sum(short, "tensor_instructions");
        let per = PerMma {
            warp: extra("warp_instructions") as f64 / mma as f64,
            sectors: extra("global_load_sectors") as f64 / mma as f64,
            wavefronts: extra("shared_wavefronts") as f64 / mma as f64,
        };
        (per, mma)
    }

    /// What a bigger tile saves against a 64x64 one (`small`): at most
    /// `sectors` times its load sectors and `wavefronts` times its shared
    /// wavefronts per mma. Each staged element of a 128x128 tile feeds twice
    /// the mma (0.5, and with the copies' share 0.55); of a 128x64 tile each
    /// left element twice, each right one as many (0.75, 0.75 to 0.8).
    #[track_caller]
    pub fn assert_tile_saves(small: &PerMma, tile: &PerMma, sectors: f64, wavefronts: f64) {
        assert!(
            tile.sectors <= sectors * small.sectors + 1e-9,
            "load sectors per mma {:.3} vs {:.3}",
            tile.sectors,
            small.sectors
        );
        assert!(
            tile.wavefronts <= wavefronts * small.wavefronts + 1e-9,
            "shared wavefronts per mma {:.3} vs {:.3}",
            tile.wavefronts,
            small.wavefronts
        );
    }
}

/// The device presenting compute capability `cc` ("90" or "80" on the
/// emulator); `None` (with a message) on a GPU of another capability.
pub fn device_as(cc: &str) -> Option<Device> {
    std::env::set_var("PTX_EMU_COMPUTE_CAPABILITY", cc);
    std::env::set_var(fused_lora::HOPPER_ENV, "1");
    let dev = device()?;
    let major = dev.ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).expect("major");
    let minor = dev.ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).expect("minor");
    let want = (cc[..1].parse::<i32>().unwrap(), cc[1..].parse::<i32>().unwrap());
    if (major, minor) != want {
        eprintln!("SKIPPED: the device is compute capability {major}.{minor}, not {}.{}", want.0, want.1);
        return None;
    }
    Some(dev)
}

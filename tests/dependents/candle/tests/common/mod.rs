//! What the test files share: deterministic inputs and the CUDA device.

use candle_core::Device;

/// Deterministic values in [-1, 1) (splitmix64), so every run sees the same inputs.
pub fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// candle's CUDA device; a test that finds none fails.
pub fn cuda() -> Device {
    Device::new_cuda(0).expect("candle's CUDA device (the emulator's libcuda, libcublas, libcurand)")
}

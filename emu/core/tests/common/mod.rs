//! Shared support of the kernel-level tests: find nvcc, compile a test kernel
//! to PTX (cached by content hash under `target/`), load it into a fresh
//! emulated device, move typed buffers in and out, pack kernel parameters by
//! the kernel's own parameter layout, and compare results.
//!
//! Each test binary uses a different subset of these functions.
#![allow(dead_code)]

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use half::{bf16, f16};
use ptx_emu::{launch, CheckOptions, Counters, GlobalMemory, KernelInfo, LaunchConfig, LaunchReport, Module};

// ---------------------------------------------------------------- toolchain

#[path = "../toolchain/mod.rs"]
mod toolchain;
use toolchain::toolchain_site_packages;
#[allow(unused_imports)] // each test binary uses its own subset
pub use toolchain::{cuda_root, libcuda_dir, nvcc, repo_root};

/// `emu/tests/kernels/<name>`.
pub fn kernel_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("kernels").join(name)
}

/// Where compiled test kernels are cached.
fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target"));
    let dir = target.join("ptx-emu-test-kernels");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// CUTLASS's include folder: `$FUSED_LORA_CUTLASS_INCLUDE`, or the one the
/// repo-local toolchain installs.
pub fn cutlass_include() -> PathBuf {
    if let Some(dir) = std::env::var_os("FUSED_LORA_CUTLASS_INCLUDE") {
        return PathBuf::from(dir);
    }
    toolchain_site_packages()
        .into_iter()
        .map(|site| site.join("cutlass_library/source/include"))
        .find(|dir| dir.join("cutlass/cutlass.h").is_file())
        .unwrap_or_else(|| panic!("CUTLASS headers not found: run scripts/setup.sh"))
}

/// FNV-1a, 64-bit: a hash stable across Rust releases for the cache keys.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for part in parts {
        for &byte in part.iter().chain(&[0xffu8]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Cache key of a compile: the source, every header beside it (they may be
/// included), the compiler path and the flags.
fn compile_key(source: &Path, flags: &[String]) -> u64 {
    let mut inputs: Vec<Vec<u8>> =
        vec![std::fs::read(source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()))];
    let mut headers: Vec<PathBuf> = std::fs::read_dir(source.parent().expect("source has a folder"))
        .expect("kernel folder readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|x| x.to_str()), Some("h" | "cuh")))
        .collect();
    headers.sort();
    for header in headers {
        inputs.push(header.to_string_lossy().into_owned().into_bytes());
        inputs.push(std::fs::read(&header).expect("header readable"));
    }
    inputs.push(nvcc().to_string_lossy().into_owned().into_bytes());
    inputs.extend(flags.iter().map(|f| f.clone().into_bytes()));
    let parts: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    fnv1a(&parts)
}

/// Runs nvcc on `source` with `flags`, writing `-o <cache>/<stem>-<hash>.<ext>`
/// unless that file already exists. The output is written under a temporary
/// name and renamed, so parallel tests compiling the same kernel never see a
/// partial file.
fn compile_cached(source_name: &str, flags: &[String], extension: &str) -> PathBuf {
    compile_cached_at(&kernel_source(source_name), flags, extension)
}

/// [`compile_cached`] for a source anywhere (headers beside it count in the key).
fn compile_cached_at(source: &Path, flags: &[String], extension: &str) -> PathBuf {
    let source_name = source.display();
    let stem = source.file_stem().expect("file name").to_string_lossy().into_owned();
    let key = compile_key(source, flags);
    let output = cache_dir().join(format!("{stem}-{key:016x}.{extension}"));
    if output.is_file() {
        return output;
    }
    // Unique per process and per call: tests of one binary compile in parallel.
    static COMPILES: AtomicU64 = AtomicU64::new(0);
    let attempt = COMPILES.fetch_add(1, Ordering::Relaxed);
    let partial = output.with_extension(format!("{extension}.{}-{attempt}.partial", std::process::id()));
    let result = Command::new(nvcc())
        .args(flags)
        .arg(source)
        .arg("-o")
        .arg(&partial)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc().display()));
    assert!(
        result.status.success(),
        "nvcc failed on {source_name} ({flags:?}):\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&partial, &output).expect("rename compiled output into the cache");
    output
}

/// `emu/tests/kernels/<source_name>` compiled to PTX for `arch`
/// (`compute_80`, `sm_90`, ...), with any `extra_flags`.
pub fn compile_ptx_with(source_name: &str, arch: &str, extra_flags: &[String]) -> String {
    let mut flags = vec!["-ptx".to_string(), format!("-arch={arch}")];
    flags.extend_from_slice(extra_flags);
    let path = compile_cached(source_name, &flags, "ptx");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `source` (any path) compiled by nvcc with exactly `flags` plus `-o`, the
/// PTX text cached under `target/` like the test kernels.
pub fn compile_ptx_at(source: &Path, flags: &[String]) -> String {
    let path = compile_cached_at(source, flags, "ptx");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `emu/tests/kernels/<source_name>` compiled to PTX for `compute_80`.
pub fn compile_ptx(source_name: &str) -> String {
    compile_ptx_with(source_name, "compute_80", &[])
}

/// A host program built from `emu/tests/kernels/<source_name>` with nvcc for `sm_80`.
pub fn build_host_tool(source_name: &str, extra_flags: &[String]) -> PathBuf {
    let mut flags = vec!["-arch=sm_80".to_string()];
    flags.extend_from_slice(extra_flags);
    compile_cached(source_name, &flags, "bin")
}

/// [`build_host_tool`] for the GPU architecture `sm_<gpu>` (`90a`, ...), the
/// one its headers are configured for: one device pass for exactly that
/// target (`-arch=sm_90a` alone would add a second, for compute_90 PTX).
pub fn build_host_tool_for(source_name: &str, gpu: &str, extra_flags: &[String]) -> PathBuf {
    let mut flags = vec![format!("-gencode=arch=compute_{gpu},code=sm_{gpu}")];
    flags.extend_from_slice(extra_flags);
    compile_cached(source_name, &flags, "bin")
}

// ---------------------------------------------------------------- elements

/// A plain value stored little-endian in device memory.
pub trait Elem: Copy + Debug {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
    /// The bit pattern, for bit-exact comparisons (NaN == NaN when equal bits).
    fn bits(self) -> u64;
}

macro_rules! elem_via_le_bytes {
    ($($t:ty => $bits:expr),* $(,)?) => {$(
        impl Elem for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("element-sized slice"))
            }
            fn bits(self) -> u64 {
                #[allow(clippy::redundant_closure_call)]
                ($bits)(self)
            }
        }
    )*};
}

elem_via_le_bytes! {
    u8 => |v: u8| u64::from(v),
    u16 => |v: u16| u64::from(v),
    u32 => |v: u32| u64::from(v),
    i32 => |v: i32| u64::from(v as u32),
    u64 => |v: u64| v,
    f32 => |v: f32| u64::from(v.to_bits()),
    f64 => |v: f64| v.to_bits(),
    f16 => |v: f16| u64::from(v.to_bits()),
    bf16 => |v: bf16| u64::from(v.to_bits()),
}

pub fn to_bytes<T: Elem>(data: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() * T::SIZE);
    for &v in data {
        v.put(&mut out);
    }
    out
}

pub fn from_bytes<T: Elem>(bytes: &[u8]) -> Vec<T> {
    assert_eq!(bytes.len() % T::SIZE, 0, "byte count not a multiple of the element size");
    bytes.chunks_exact(T::SIZE).map(T::get).collect()
}

// ---------------------------------------------------------------- device

/// Device memory for one test: far more than any test needs.
const DEVICE_BYTES: u64 = 1 << 30;

/// A fresh emulated device with one module loaded.
pub struct Device {
    pub mem: GlobalMemory,
    pub module: Module,
    pub ptx: String,
}

impl Device {
    /// Loads `ptx`; a load error fails the test with the emulator's message.
    pub fn from_ptx(ptx: String) -> Self {
        let mem = GlobalMemory::new(DEVICE_BYTES);
        let module = Module::load(&ptx, &mem).unwrap_or_else(|e| panic!("module load failed: {e}"));
        Device { mem, module, ptx }
    }

    /// `emu/tests/kernels/<source_name>` compiled for compute_80 and loaded.
    pub fn load(source_name: &str) -> Self {
        Self::from_ptx(compile_ptx(source_name))
    }

    pub fn alloc_unwritten(&self, bytes: u64) -> u64 {
        self.mem.alloc(bytes).unwrap_or_else(|e| panic!("alloc of {bytes} bytes: {e}"))
    }

    pub fn upload<T: Elem>(&self, data: &[T]) -> u64 {
        let bytes = to_bytes(data);
        let addr = self.alloc_unwritten(bytes.len().max(1) as u64);
        self.mem.write(addr, &bytes).unwrap_or_else(|e| panic!("write: {e}"));
        addr
    }

    /// `count` elements of `T` filled with 0xFF bytes (NaN for floats), so
    /// that an element the kernel fails to write cannot pass a comparison.
    pub fn alloc_poisoned<T: Elem>(&self, count: usize) -> u64 {
        self.upload(&vec![0xffu8; count * T::SIZE])
    }

    pub fn alloc_zeroed<T: Elem>(&self, count: usize) -> u64 {
        self.upload(&vec![0u8; count * T::SIZE])
    }

    pub fn download<T: Elem>(&self, addr: u64, count: usize) -> Vec<T> {
        let mut bytes = vec![0u8; count * T::SIZE];
        self.mem.read(addr, &mut bytes).unwrap_or_else(|e| panic!("read: {e}"));
        from_bytes(&bytes)
    }

    pub fn kernel_info(&self, kernel: &str) -> KernelInfo {
        self.module.kernel(kernel).unwrap_or_else(|| panic!("kernel `{kernel}` not in the module")).clone()
    }

    /// A parameter builder laid out per `kernel`'s `.param` list.
    pub fn params(&self, kernel: &str) -> Params {
        Params::new(self.kernel_info(kernel))
    }

    /// Launches with `opts`; a refused launch fails the test.
    pub fn launch_with(&self, kernel: &str, config: LaunchConfig, params: &[u8], opts: &CheckOptions) -> LaunchReport {
        launch(&self.module, kernel, &config, params, &self.mem, opts)
            .unwrap_or_else(|e| panic!("launch of `{kernel}` refused: {e}"))
    }

    /// Launches with every check on and asserts that none found anything.
    #[track_caller]
    pub fn launch_clean(&self, kernel: &str, config: LaunchConfig, params: &[u8]) -> Counters {
        let report = self.launch_with(kernel, config, params, &CheckOptions::default());
        assert_no_findings(&report);
        report.counters
    }
}

#[track_caller]
pub fn assert_no_findings(report: &LaunchReport) {
    if !report.findings.is_empty() {
        let listed: Vec<String> = report.findings.iter().map(|f| format!("  {f}")).collect();
        panic!("expected no finding, got {}:\n{}", report.findings.len(), listed.join("\n"));
    }
}

/// 1-D launch.
pub fn grid_1d(blocks: u32, threads: u32) -> LaunchConfig {
    LaunchConfig { grid: [blocks, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: 0 }
}

/// Blocks needed to cover `n` with `threads` per block.
pub fn blocks_for(n: usize, threads: u32) -> u32 {
    n.div_ceil(threads as usize) as u32
}

/// Packs kernel arguments into the launch's parameter buffer, each at the
/// offset the kernel's `.param` list gives, checking count and sizes.
pub struct Params {
    info: KernelInfo,
    buffer: Vec<u8>,
    next: usize,
}

impl Params {
    pub fn new(info: KernelInfo) -> Self {
        let buffer = vec![0u8; info.param_bytes as usize];
        Params { info, buffer, next: 0 }
    }

    /// The next parameter's raw bytes (a by-value struct, or any scalar).
    #[track_caller]
    pub fn bytes(mut self, value: &[u8]) -> Self {
        let Some(param) = self.info.params.get(self.next) else {
            panic!("kernel `{}` takes only {} parameters", self.info.name, self.info.params.len());
        };
        assert_eq!(
            param.size as usize,
            value.len(),
            "parameter {} (`{}`) of `{}` is {} bytes, given {}",
            self.next,
            param.name,
            self.info.name,
            param.size,
            value.len()
        );
        let offset = param.offset as usize;
        self.buffer[offset..offset + value.len()].copy_from_slice(value);
        self.next += 1;
        self
    }

    #[track_caller]
    pub fn ptr(self, addr: u64) -> Self {
        self.bytes(&addr.to_le_bytes())
    }

    #[track_caller]
    pub fn u32(self, v: u32) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    #[track_caller]
    pub fn u64(self, v: u64) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    #[track_caller]
    pub fn i32(self, v: i32) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    #[track_caller]
    pub fn f32(self, v: f32) -> Self {
        self.bytes(&v.to_le_bytes())
    }

    /// The packed buffer; every parameter must have been given.
    #[track_caller]
    pub fn finish(self) -> Vec<u8> {
        assert_eq!(
            self.next,
            self.info.params.len(),
            "`{}` takes {} parameters, {} given",
            self.info.name,
            self.info.params.len(),
            self.next
        );
        self.buffer
    }
}

// ---------------------------------------------------------------- inputs

/// SplitMix64: a small seeded generator, so inputs are fixed per seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    pub fn uniform_vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub fn u32_vec(&mut self, n: usize) -> Vec<u32> {
        (0..n).map(|_| self.next_u32()).collect()
    }
}

// ---------------------------------------------------------------- comparisons

/// `|got - want| <= atol + rtol * |want|` element-wise, NaN only where NaN is
/// wanted; on failure names the first bad index and how many are bad.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad = |g: f32, w: f64| {
        let g = f64::from(g);
        if w.is_nan() || g.is_nan() {
            return !(w.is_nan() && g.is_nan());
        }
        if w.is_infinite() || g.is_infinite() {
            return g != w;
        }
        (g - w).abs() > atol + rtol * w.abs()
    };
    report_first_bad(
        what,
        got.len(),
        |i| bad(got[i], want[i]),
        |i| format!("got {:e}, want {:e} (rtol {rtol:e}, atol {atol:e})", got[i], want[i]),
    );
}

/// Bit-for-bit equality (so NaNs compare by payload), naming the first mismatch.
#[track_caller]
pub fn assert_bit_exact<T: Elem>(what: &str, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    report_first_bad(
        what,
        got.len(),
        |i| got[i].bits() != want[i].bits(),
        |i| format!("got {:?} ({:#x}), want {:?} ({:#x})", got[i], got[i].bits(), want[i], want[i].bits()),
    );
}

/// The spacing of f32 values at `|x|` (x rounded to f32 first).
pub fn f32_ulp(x: f64) -> f64 {
    let v = (x as f32).abs();
    if v == f32::INFINITY {
        return f64::INFINITY;
    }
    f64::from(f32::from_bits(v.to_bits() + 1) - v)
}

/// Each `got[i]` within `max_ulps(i)` f32 ulps of the exact `want[i]`.
#[track_caller]
pub fn assert_within_ulps(what: &str, got: &[f32], want: &[f64], max_ulps: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let ulps = |i: usize| (f64::from(got[i]) - want[i]).abs() / f32_ulp(want[i]);
    report_first_bad(
        what,
        got.len(),
        |i| ulps(i).is_nan() || ulps(i) > max_ulps(i),
        |i| format!("got {:e}, want {:e}: {:.2} ulps, {} allowed", got[i], want[i], ulps(i), max_ulps(i)),
    );
}

#[track_caller]
fn report_first_bad(what: &str, len: usize, is_bad: impl Fn(usize) -> bool, describe: impl Fn(usize) -> String) {
    let bad: Vec<usize> = (0..len).filter(|&i| is_bad(i)).collect();
    if let Some(&first) = bad.first() {
        panic!("{what}: {} of {len} elements wrong; first at index {first}: {}", bad.len(), describe(first));
    }
}

// ---------------------------------------------------------------- references

/// Row-major `C = A B` in f64, and `Σ_k |A_ik B_kj|` for the error bound.
pub fn gemm_f64(m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut c = vec![0.0; m * n];
    let mut magnitude = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let x = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += x * b[p * n + j];
                magnitude[i * n + j] += (x * b[p * n + j]).abs();
            }
        }
    }
    (c, magnitude)
}

/// A GEMM with exactly representable inputs and f32 accumulation over `k`
/// terms, in any order, is within `k * 2^-24 * Σ|a b|` of the exact result
/// (the standard summation bound; doubled for slack on the order of terms).
#[track_caller]
pub fn assert_gemm_close(what: &str, got: &[f32], exact: &[f64], magnitude: &[f64], k: usize) {
    assert_eq!(got.len(), exact.len(), "{what}: length");
    let bound = |i: usize| 2.0 * k as f64 * f64::powi(2.0, -24) * magnitude[i] + 1e-30;
    report_first_bad(
        what,
        got.len(),
        |i| {
            let g = f64::from(got[i]);
            g.is_nan() || (g - exact[i]).abs() > bound(i)
        },
        |i| format!("got {:e}, want {:e}, allowed error {:e}", got[i], exact[i], bound(i)),
    );
}

//! Shared by the `core_*` tests: finds nvcc, compiles CUDA to PTX at test
//! time, and wraps the emulator's public API for short tests.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use ptx_emu::{launch, CheckOptions, GlobalMemory, LaunchConfig, LaunchReport, Module};

#[path = "../toolchain/mod.rs"]
mod toolchain;
pub use toolchain::nvcc;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Compiles CUDA source to PTX for compute_80.
pub fn compile(src: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "ptx-emu-core-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cu = dir.join("k.cu");
    let ptx = dir.join("k.ptx");
    std::fs::write(&cu, src).unwrap();
    let out = Command::new(nvcc())
        .args(["-ptx", "-arch=compute_80", "-o"])
        .arg(&ptx)
        .arg(&cu)
        .output()
        .expect("running nvcc");
    assert!(out.status.success(), "nvcc failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&ptx).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    text
}

/// A device with a loaded module.
pub struct Dev {
    pub mem: GlobalMemory,
    pub module: Module,
}

impl Dev {
    pub fn new(ptx: &str) -> Dev {
        let mem = GlobalMemory::new(1 << 30);
        let module = Module::load(ptx, &mem).unwrap_or_else(|e| panic!("load failed: {e}"));
        Dev { mem, module }
    }

    pub fn upload_f32(&self, v: &[f32]) -> u64 {
        let a = self.mem.alloc((v.len() * 4).max(1) as u64).unwrap();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.mem.write(a, &bytes).unwrap();
        a
    }

    pub fn zeros(&self, bytes: usize) -> u64 {
        let a = self.mem.alloc(bytes as u64).unwrap();
        self.mem.memset(a, 0, 1, bytes as u64).unwrap();
        a
    }

    pub fn download_f32(&self, a: u64, n: usize) -> Vec<f32> {
        let mut b = vec![0u8; n * 4];
        self.mem.read(a, &mut b).unwrap();
        b.chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }

    /// Launches with parameters packed per the kernel's layout.
    pub fn run(
        &self,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        dyn_smem: u32,
        args: &[Arg],
        opts: CheckOptions,
    ) -> LaunchReport {
        let info = self.module.kernel(kernel).unwrap_or_else(|| panic!("no kernel {kernel}"));
        assert_eq!(info.params.len(), args.len(), "argument count of {kernel}");
        let mut buf = vec![0u8; info.param_bytes as usize];
        for (p, a) in info.params.iter().zip(args) {
            let bytes = a.bytes();
            assert_eq!(bytes.len(), p.size as usize, "size of {}", p.name);
            buf[p.offset as usize..p.offset as usize + bytes.len()].copy_from_slice(&bytes);
        }
        let cfg = LaunchConfig { grid, block, dynamic_shared_bytes: dyn_smem };
        launch(&self.module, kernel, &cfg, &buf, &self.mem, &opts).unwrap()
    }
}

pub enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
}

impl Arg {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Arg::Ptr(p) => p.to_le_bytes().to_vec(),
            Arg::I32(v) => v.to_le_bytes().to_vec(),
            Arg::F32(v) => v.to_le_bytes().to_vec(),
        }
    }
}

/// Deterministic pseudo-random floats in [-1, 1).
pub fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[track_caller]
pub fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol * (1.0 + w.abs()), "index {i}: got {g}, want {w}");
    }
}

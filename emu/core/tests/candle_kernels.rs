//! candle-kernels 0.11.1 — the PTX modules of candle's CUDA backend — compiled
//! by our nvcc with the flags of candle's build (sm_80), loaded on the
//! emulator (every instruction validated), and representative kernels of each
//! family run with every check on against CPU references: affine, binary
//! (f32 and the bf16 max that is `max.NaN.bf16`), cast, unary, the reductions
//! (sum, max/argmax, softmax, rmsnorm, layernorm), rope, index_select (and its
//! device-side assert), fill, where, conv1d, argsort and q8_0 dequantisation.
//!
//! The sources come from cargo's registry (`cargo fetch` of a scratch crate
//! under `target/` brings them when missing); the PTX is cached under
//! `target/` by content hash, so only the first run compiles (in parallel).

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use common::{assert_bit_exact, assert_close, blocks_for, compile_ptx_at, grid_1d, repo_root, Device, Rng};
use half::{bf16, f16};
use ptx_emu::{CheckOptions, FindingKind, LaunchConfig};

const VERSION: &str = "0.11.1";

/// candle-kernels' PTX modules (its `ALL_IDS`): every `.cu` of its `src/`
/// except those its build compiles into a static library instead.
const MODULES: [&str; 11] =
    ["affine", "binary", "cast", "conv", "fill", "indexing", "quantized", "reduce", "sort", "ternary", "unary"];

/// The nvcc flags of candle-kernels' build (`cudaforge`'s `build_ptx` with
/// the crate's own arguments), for a compute capability 8.0 device.
fn candle_flags() -> Vec<String> {
    [
        "--ptx",
        "-gencode=arch=compute_80,code=sm_80",
        "--default-stream",
        "per-thread",
        "--expt-relaxed-constexpr",
        "-std=c++17",
        "-O3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `candle-kernels-<VERSION>/src` in cargo's registry.
fn find_in_registry() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(format!("candle-kernels-{VERSION}/src")))
        .filter(|p| p.join("reduce.cu").is_file())
        .collect();
    found.sort();
    found.pop()
}

/// The candle-kernels sources: `$CANDLE_KERNELS_SRC`, or cargo's registry,
/// fetched there by cargo itself (a scratch crate under `target/` that depends
/// on the exact version) when absent.
fn candle_sources() -> PathBuf {
    if let Some(dir) = std::env::var_os("CANDLE_KERNELS_SRC") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = find_in_registry() {
        return dir;
    }
    let scratch = repo_root().join("target/candle-kernels-fetch");
    std::fs::create_dir_all(scratch.join("src")).expect("create the scratch crate");
    std::fs::write(
        scratch.join("Cargo.toml"),
        format!(
            "[package]\nname = \"candle-kernels-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\ncandle-kernels = \"={VERSION}\"\n\n[workspace]\n"
        ),
    )
    .expect("write the scratch manifest");
    std::fs::write(scratch.join("src/lib.rs"), "").expect("write the scratch crate");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .arg("fetch")
        .arg("--manifest-path")
        .arg(scratch.join("Cargo.toml"))
        .status()
        .expect("run cargo fetch");
    assert!(status.success(), "cargo fetch of candle-kernels {VERSION} failed");
    find_in_registry().unwrap_or_else(|| panic!("candle-kernels {VERSION} not in cargo's registry after fetching"))
}

/// Every module's PTX, compiled once per test binary, a few modules at a time.
fn modules() -> &'static HashMap<&'static str, String> {
    static PTX: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        let src = candle_sources();
        let flags = candle_flags();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
        let compiled = std::sync::Mutex::new(HashMap::new());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(name) = MODULES.get(i) else { break };
                    let ptx = compile_ptx_at(&src.join(format!("{name}.cu")), &flags);
                    compiled.lock().unwrap().insert(*name, ptx);
                });
            }
        });
        compiled.into_inner().unwrap()
    })
}

fn device(module: &str) -> Device {
    Device::from_ptx(modules()[module].clone())
}

/// `[dims..., strides...]` of a contiguous row-major shape (candle's layout info).
fn contiguous_info(dims: &[usize]) -> Vec<u64> {
    let mut strides = vec![1u64; dims.len()];
    for d in (0..dims.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * dims[d + 1] as u64;
    }
    dims.iter().map(|&d| d as u64).chain(strides).collect()
}

/// One block per `threads` elements, as candle's `LaunchConfig::for_num_elems`.
fn for_num_elems(n: usize) -> LaunchConfig {
    grid_1d(blocks_for(n, 1024), 1024)
}

fn config(grid: [u32; 3], block: [u32; 3], dynamic_shared_bytes: u32) -> LaunchConfig {
    LaunchConfig { grid, block, dynamic_shared_bytes }
}

// ---------------------------------------------------------------- loading

#[test]
fn every_module_loads() {
    let src = candle_sources();
    // Every .cu of the crate is either a PTX module here or one of the
    // sources candle's build compiles into a static library instead.
    let mut cu: Vec<String> = std::fs::read_dir(&src)
        .expect("candle-kernels src readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".cu").map(str::to_string))
        .filter(|n| !(n.starts_with("moe_") || n.starts_with("mmq_") || n == "mmvq_gguf"))
        .collect();
    cu.sort();
    assert_eq!(cu, MODULES.to_vec(), "candle-kernels' PTX modules");
    for (name, kernels) in [
        ("affine", &["affine_f32", "affine_bf16"][..]),
        ("binary", &["badd_f32", "bmaximum_bf16", "badd_bf16"]),
        ("cast", &["cast_bf16_f32", "cast_f32_bf16"]),
        ("conv", &["conv1d_f32", "conv2d_f32", "im2col_f32"]),
        ("fill", &["fill_f32", "copy2d_f32"]),
        ("indexing", &["is_u32_f32", "gather_u32_f32", "ia_u32_f32"]),
        ("quantized", &["dequantize_block_q8_0_f32", "quantize_q8_1", "mul_mat_vec_q8_0_q8_1_cuda1"]),
        ("reduce", &["fast_sum_f32", "softmax_f32", "rmsnorm_f32", "layernorm_f32", "rope_f32"]),
        ("sort", &["asort_asc_f32", "asort_desc_bf16"]),
        ("ternary", &["where_u8_f32"]),
        ("unary", &["ugelu_f32", "uexp_f32", "usilu_bf16"]),
    ] {
        let dev = device(name);
        let loaded = dev.module.kernels().len();
        assert!(loaded >= kernels.len(), "{name}: {loaded} kernels");
        for k in kernels {
            assert!(dev.module.kernel(k).is_some(), "{name}: kernel `{k}` missing");
        }
    }
}

// ---------------------------------------------------------------- element-wise

#[test]
fn affine_f32() {
    let dev = device("affine");
    let n = 3000;
    let x = Rng::new(1).uniform_vec(n, -4.0, 4.0);
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f32>(n));
    let (mul, add) = (1.5f32, -0.25f32);
    let p = dev.params("affine_f32").u64(n as u64).u64(1).ptr(0).ptr(dx).ptr(dout).f32(mul).f32(add).finish();
    dev.launch_clean("affine_f32", for_num_elems(n), &p);
    let want: Vec<f64> = x.iter().map(|v| f64::from(*v) * 1.5 - 0.25).collect();
    assert_close("affine", &dev.download::<f32>(dout, n), &want, 1e-6, 1e-6);
}

#[test]
fn binary_add_f32_broadcast_and_bf16_maximum() {
    let dev = device("binary");
    // (rows, cols) + a row vector broadcast over rows (rhs stride 0 on dim 0).
    let (rows, cols) = (37, 29);
    let n = rows * cols;
    let mut rng = Rng::new(2);
    let (lhs, rhs) = (rng.uniform_vec(n, -3.0, 3.0), rng.uniform_vec(cols, -3.0, 3.0));
    let info: Vec<u64> = [rows as u64, cols as u64, cols as u64, 1, 0, 1].to_vec();
    let (di, dl, dr, dout) = (dev.upload(&info), dev.upload(&lhs), dev.upload(&rhs), dev.alloc_poisoned::<f32>(n));
    let p = dev.params("badd_f32").u64(n as u64).u64(2).ptr(di).ptr(dl).ptr(dr).ptr(dout).finish();
    dev.launch_clean("badd_f32", for_num_elems(n), &p);
    let want: Vec<f32> = (0..n).map(|i| lhs[i] + rhs[i % cols]).collect();
    assert_bit_exact("badd_f32", &dev.download::<f32>(dout, n), &want);

    // bf16 maximum (candle's maxg, `max.NaN.bf16`): NaN wins, contiguous.
    let n = 1001;
    let bits = |rng: &mut Rng| -> Vec<bf16> {
        (0..n)
            .map(|_| match rng.next_u32() % 8 {
                0 => bf16::NAN,
                1 => bf16::from_bits(0x8000),
                _ => bf16::from_f32(rng.uniform(-10.0, 10.0)),
            })
            .collect()
    };
    let (a, b) = (bits(&mut rng), bits(&mut rng));
    let (da, db, dout) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<bf16>(n));
    let p = dev.params("bmaximum_bf16").u64(n as u64).u64(1).ptr(0).ptr(da).ptr(db).ptr(dout).finish();
    dev.launch_clean("bmaximum_bf16", for_num_elems(n), &p);
    let want: Vec<bf16> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| {
            if x.is_nan() || y.is_nan() {
                bf16::from_bits(0x7FFF)
            } else if x == y {
                // ±0: +0 is the larger.
                if x.is_sign_negative() {
                    *y
                } else {
                    *x
                }
            } else if x > y {
                *x
            } else {
                *y
            }
        })
        .collect();
    assert_bit_exact("bmaximum_bf16", &dev.download::<bf16>(dout, n), &want);

    // bf16 add through its vectorised (__hadd2) path.
    let n = 2048 + 6;
    let a: Vec<bf16> = (0..n).map(|_| bf16::from_f32(rng.uniform(-8.0, 8.0))).collect();
    let b: Vec<bf16> = (0..n).map(|_| bf16::from_f32(rng.uniform(-8.0, 8.0))).collect();
    let (da, db, dout) = (dev.upload(&a), dev.upload(&b), dev.alloc_poisoned::<bf16>(n));
    let p = dev.params("badd_bf16").u64(n as u64).u64(1).ptr(0).ptr(da).ptr(db).ptr(dout).finish();
    dev.launch_clean("badd_bf16", for_num_elems(n), &p);
    let want: Vec<bf16> = a.iter().zip(&b).map(|(x, y)| bf16::from_f32(x.to_f32() + y.to_f32())).collect();
    assert_bit_exact("badd_bf16", &dev.download::<bf16>(dout, n), &want);
}

#[test]
fn cast_bf16_f32_both_ways() {
    let dev = device("cast");
    let n = 1500;
    let mut rng = Rng::new(3);
    let x: Vec<bf16> = (0..n).map(|_| bf16::from_bits((rng.next_u32() >> 16) as u16)).collect();
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f32>(n));
    let p = dev.params("cast_bf16_f32").u64(n as u64).u64(1).ptr(0).ptr(dx).ptr(dout).finish();
    dev.launch_clean("cast_bf16_f32", for_num_elems(n), &p);
    let got = dev.download::<f32>(dout, n);
    for (i, (g, v)) in got.iter().zip(&x).enumerate() {
        let w = v.to_f32();
        assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "[{i}] {v}: got {g}, want {w}");
    }
    let y = rng.uniform_vec(n, -1e4, 1e4);
    let (dy, dout) = (dev.upload(&y), dev.alloc_poisoned::<bf16>(n));
    let p = dev.params("cast_f32_bf16").u64(n as u64).u64(1).ptr(0).ptr(dy).ptr(dout).finish();
    dev.launch_clean("cast_f32_bf16", for_num_elems(n), &p);
    let want: Vec<bf16> = y.iter().map(|v| bf16::from_f32(*v)).collect();
    assert_bit_exact("cast_f32_bf16", &dev.download::<bf16>(dout, n), &want);
}

#[test]
fn unary_gelu_and_exp_f32() {
    let dev = device("unary");
    let n = 2000;
    let x = Rng::new(4).uniform_vec(n, -6.0, 6.0);
    let dx = dev.upload(&x);
    for (kernel, f) in [
        (
            "ugelu_f32",
            (|v: f64| 0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh()))
                as fn(f64) -> f64,
        ),
        ("uexp_f32", f64::exp),
    ] {
        let dout = dev.alloc_poisoned::<f32>(n);
        let p = dev.params(kernel).u64(n as u64).u64(1).ptr(0).ptr(dx).ptr(dout).finish();
        dev.launch_clean(kernel, for_num_elems(n), &p);
        let want: Vec<f64> = x.iter().map(|v| f(f64::from(*v))).collect();
        assert_close(kernel, &dev.download::<f32>(dout, n), &want, 1e-5, 1e-6);
    }
}

// ---------------------------------------------------------------- reductions

#[test]
fn fast_sum_max_argmax_f32_over_rows() {
    let dev = device("reduce");
    let (rows, cols) = (7, 300);
    let n = rows * cols;
    let x = Rng::new(5).uniform_vec(n, -2.0, 2.0);
    let info = contiguous_info(&[rows, cols]);
    let (dx, di) = (dev.upload(&x), dev.upload(&info));
    // candle: one block per output, block = min(1024, el_to_sum).next_power_of_two().
    let cfg = grid_1d(rows as u32, (cols as u32).min(1024).next_power_of_two());
    let launch = |kernel: &str, dout: u64| {
        let p = dev.params(kernel).u64(n as u64).u64(cols as u64).u64(2).ptr(di).ptr(dx).ptr(dout).finish();
        dev.launch_clean(kernel, cfg, &p);
    };
    let row = |r: usize| &x[r * cols..(r + 1) * cols];
    let dsum = dev.alloc_poisoned::<f32>(rows);
    launch("fast_sum_f32", dsum);
    let want: Vec<f64> = (0..rows).map(|r| row(r).iter().map(|v| f64::from(*v)).sum()).collect();
    assert_close("fast_sum_f32", &dev.download::<f32>(dsum, rows), &want, 1e-5, 1e-5);
    let dmax = dev.alloc_poisoned::<f32>(rows);
    launch("fast_max_f32", dmax);
    let want: Vec<f32> = (0..rows).map(|r| row(r).iter().copied().fold(f32::MIN, f32::max)).collect();
    assert_bit_exact("fast_max_f32", &dev.download::<f32>(dmax, rows), &want);
    let darg = dev.alloc_poisoned::<u32>(rows);
    launch("fast_argmax_f32", darg);
    let want: Vec<u32> =
        (0..rows).map(|r| (0..cols).max_by(|&a, &b| row(r)[a].total_cmp(&row(r)[b])).unwrap() as u32).collect();
    assert_bit_exact("fast_argmax_f32", &dev.download::<u32>(darg, rows), &want);
}

#[test]
fn softmax_f32_rows() {
    let dev = device("reduce");
    let (rows, cols) = (5, 173);
    let x = Rng::new(6).uniform_vec(rows * cols, -8.0, 8.0);
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<f32>(rows * cols));
    let p = dev.params("softmax_f32").ptr(dx).ptr(dout).i32(cols as i32).finish();
    // candle-nn: grid (rows, 1, 1), block (1, 32, 1).
    dev.launch_clean("softmax_f32", config([rows as u32, 1, 1], [1, 32, 1], 0), &p);
    let mut want = Vec::new();
    for r in 0..rows {
        let row: Vec<f64> = x[r * cols..(r + 1) * cols].iter().map(|v| f64::from(*v)).collect();
        let m = row.iter().copied().fold(f64::MIN, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        want.extend(row.iter().map(|v| (v - m).exp() / s));
    }
    assert_close("softmax_f32", &dev.download::<f32>(dout, rows * cols), &want, 1e-5, 1e-7);
}

/// rmsnorm and layernorm as candle-nn launches them: one block per row, 32
/// threads below 1024 columns, 1024 above (the cross-warp shared-memory path).
#[test]
fn rmsnorm_and_layernorm_f32() {
    let dev = device("reduce");
    let mut rng = Rng::new(7);
    for (rows, cols) in [(6, 300), (3, 1500)] {
        let n = rows * cols;
        let block = if cols < 1024 { 32 } else { 1024 };
        let x = rng.uniform_vec(n, -3.0, 3.0);
        let alpha = rng.uniform_vec(cols, 0.5, 1.5);
        let beta = rng.uniform_vec(cols, -0.5, 0.5);
        let (dx, da, db) = (dev.upload(&x), dev.upload(&alpha), dev.upload(&beta));
        let eps = 1e-5f32;
        let cfg = grid_1d(rows as u32, block);

        let dout = dev.alloc_poisoned::<f32>(n);
        let p =
            dev.params("rmsnorm_f32").ptr(dx).ptr(dout).ptr(da).i32(cols as i32).i32(block as i32).f32(eps).finish();
        dev.launch_clean("rmsnorm_f32", cfg, &p);
        let mut want = Vec::new();
        for r in 0..rows {
            let row: Vec<f64> = x[r * cols..(r + 1) * cols].iter().map(|v| f64::from(*v)).collect();
            let ms = row.iter().map(|v| v * v).sum::<f64>() / cols as f64;
            let scale = 1.0 / (ms + f64::from(eps)).sqrt();
            want.extend(row.iter().zip(&alpha).map(|(v, a)| v * scale * f64::from(*a)));
        }
        assert_close(&format!("rmsnorm {rows}x{cols}"), &dev.download::<f32>(dout, n), &want, 1e-5, 1e-6);

        let dout = dev.alloc_poisoned::<f32>(n);
        let p = dev
            .params("layernorm_f32")
            .ptr(dx)
            .ptr(dout)
            .ptr(da)
            .ptr(db)
            .i32(cols as i32)
            .i32(block as i32)
            .f32(eps)
            .finish();
        dev.launch_clean("layernorm_f32", cfg, &p);
        let mut want = Vec::new();
        for r in 0..rows {
            let row: Vec<f64> = x[r * cols..(r + 1) * cols].iter().map(|v| f64::from(*v)).collect();
            let mean = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (var + f64::from(eps)).sqrt();
            want.extend((0..cols).map(|c| (row[c] - mean) * inv * f64::from(alpha[c]) + f64::from(beta[c])));
        }
        // The kernel forms the variance as E[x²] − E[x]² in f32: a few 1e-6 of cancellation.
        assert_close(&format!("layernorm {rows}x{cols}"), &dev.download::<f32>(dout, n), &want, 1e-4, 1e-4);
    }
}

#[test]
fn rope_f32_and_interleaved() {
    let dev = device("reduce");
    let (bh, t, d) = (6usize, 5usize, 16usize);
    let n = bh * t * d;
    let mut rng = Rng::new(8);
    let x = rng.uniform_vec(n, -2.0, 2.0);
    let angles: Vec<f32> = (0..t * d / 2).map(|i| (i as f32) * 0.37).collect();
    let (cos, sin): (Vec<f32>, Vec<f32>) = angles.iter().map(|a| (a.cos(), a.sin())).unzip();
    let (dx, dc, ds) = (dev.upload(&x), dev.upload(&cos), dev.upload(&sin));

    let dout = dev.alloc_poisoned::<f32>(n);
    let p = dev
        .params("rope_f32")
        .ptr(dx)
        .ptr(dc)
        .ptr(ds)
        .ptr(dout)
        .u32(bh as u32)
        .u32((t * d) as u32)
        .u32(d as u32)
        .u32(0)
        .finish();
    dev.launch_clean("rope_f32", for_num_elems(n / 2), &p);
    let mut want = vec![0f64; n];
    for i_bh in 0..bh {
        for i_t in 0..t {
            for i_d in 0..d / 2 {
                let i1 = i_bh * t * d + i_t * d + i_d;
                let i2 = i1 + d / 2;
                let cs = i_t * d / 2 + i_d;
                let (c, s) = (f64::from(cos[cs]), f64::from(sin[cs]));
                let (a, b) = (f64::from(x[i1]), f64::from(x[i2]));
                want[i1] = a * c - b * s;
                want[i2] = a * s + b * c;
            }
        }
    }
    assert_close("rope_f32", &dev.download::<f32>(dout, n), &want, 1e-6, 1e-6);

    let dout = dev.alloc_poisoned::<f32>(n);
    let p =
        dev.params("rope_i_f32").ptr(dx).ptr(dc).ptr(ds).ptr(dout).u32(bh as u32).u32((t * d) as u32).u32(0).finish();
    dev.launch_clean("rope_i_f32", for_num_elems(n / 2), &p);
    let want: Vec<f64> = (0..n)
        .map(|i| {
            let pair = i / 2;
            let cs = pair % (t * d / 2);
            let (c, s) = (f64::from(cos[cs]), f64::from(sin[cs]));
            let (a, b) = (f64::from(x[2 * pair]), f64::from(x[2 * pair + 1]));
            if i % 2 == 0 {
                a * c - b * s
            } else {
                a * s + b * c
            }
        })
        .collect();
    assert_close("rope_i_f32", &dev.download::<f32>(dout, n), &want, 1e-6, 1e-6);
}

// ---------------------------------------------------------------- indexing, fill, where

/// index_select over dim 1 of a (left, src_dim, right) tensor; an id past the
/// dimension trips candle's device-side assert (CUDA_ERROR_ASSERT).
#[test]
fn index_select_and_its_assert() {
    let dev = device("indexing");
    let (left, src_dim, right, n_ids) = (3usize, 11usize, 5usize, 7usize);
    let mut rng = Rng::new(9);
    let inp = rng.uniform_vec(left * src_dim * right, -1.0, 1.0);
    let mut ids: Vec<u32> = (0..n_ids).map(|_| rng.next_u32() % src_dim as u32).collect();
    ids[2] = u32::MAX; // candle's "no index": writes 0
    let numel = left * n_ids * right;
    let info = contiguous_info(&[left, src_dim, right]);
    let (di, dids, dinp) = (dev.upload(&info), dev.upload(&ids), dev.upload(&inp));
    let run = |dids: u64| {
        let dout = dev.alloc_poisoned::<f32>(numel);
        let p = dev
            .params("is_u32_f32")
            .u64(numel as u64)
            .u64(3)
            .ptr(di)
            .ptr(dids)
            .ptr(dinp)
            .ptr(dout)
            .u64(left as u64)
            .u64(src_dim as u64)
            .u64(n_ids as u64)
            .u64(right as u64)
            .finish();
        (dout, p)
    };
    let (dout, p) = run(dids);
    dev.launch_clean("is_u32_f32", for_num_elems(numel), &p);
    let want: Vec<f32> = (0..numel)
        .map(|i| {
            let (l, k, r) = (i / (n_ids * right), i / right % n_ids, i % right);
            if ids[k] == u32::MAX {
                0.0
            } else {
                inp[l * src_dim * right + ids[k] as usize * right + r]
            }
        })
        .collect();
    assert_bit_exact("index_select", &dev.download::<f32>(dout, numel), &want);

    let mut bad = ids.clone();
    bad[4] = src_dim as u32;
    let (_, p) = run(dev.upload(&bad));
    let report = dev.launch_with("is_u32_f32", for_num_elems(numel), &p, &CheckOptions::default());
    let finding = report.findings.first().expect("the out-of-range id trips the assert");
    assert_eq!(finding.kind, FindingKind::Assert, "{finding}");
    assert_eq!(finding.kind.cuda_error_code(), 710);
    assert!(finding.detail.contains("indexing.cu:"), "{}", finding.detail);
    assert!(finding.detail.contains(": block: [0,0,0], thread: ["), "{}", finding.detail);
    assert!(finding.detail.ends_with("Assertion `ids[id_i] < src_dim_size` failed."), "{}", finding.detail);
}

#[test]
fn fill_and_where_f32() {
    let dev = device("fill");
    let n = 2500;
    let dbuf = dev.alloc_poisoned::<f32>(n);
    let p = dev.params("fill_f32").ptr(dbuf).f32(-3.25).u64(n as u64).finish();
    dev.launch_clean("fill_f32", for_num_elems(n), &p);
    assert_bit_exact("fill_f32", &dev.download::<f32>(dbuf, n), &vec![-3.25f32; n]);

    let dev = device("ternary");
    let mut rng = Rng::new(10);
    let cond: Vec<u8> = (0..n).map(|_| (rng.next_u32() % 2) as u8).collect();
    let (t, f) = (rng.uniform_vec(n, -1.0, 1.0), rng.uniform_vec(n, 2.0, 3.0));
    let info = contiguous_info(&[n]).into_iter().chain([1, 1]).collect::<Vec<u64>>();
    let (di, dc, dt, df, dout) =
        (dev.upload(&info), dev.upload(&cond), dev.upload(&t), dev.upload(&f), dev.alloc_poisoned::<f32>(n));
    let p = dev.params("where_u8_f32").u64(n as u64).u64(1).ptr(di).ptr(dc).ptr(dt).ptr(df).ptr(dout).finish();
    dev.launch_clean("where_u8_f32", for_num_elems(n), &p);
    let want: Vec<f32> = (0..n).map(|i| if cond[i] != 0 { t[i] } else { f[i] }).collect();
    assert_bit_exact("where_u8_f32", &dev.download::<f32>(dout, n), &want);
}

// ---------------------------------------------------------------- conv, sort, quantized

#[test]
fn conv1d_f32_with_padding_and_stride() {
    let dev = device("conv");
    let (b, c_in, l_in, c_out, k) = (2usize, 3usize, 20usize, 4usize, 5usize);
    let (stride, padding, dilation) = (2usize, 1usize, 1usize);
    let l_out = (l_in + 2 * padding - dilation * (k - 1) - 1) / stride + 1;
    let mut rng = Rng::new(11);
    let src = rng.uniform_vec(b * c_in * l_in, -1.0, 1.0);
    let kernel = rng.uniform_vec(c_out * c_in * k, -1.0, 1.0);
    let info: Vec<u64> =
        contiguous_info(&[b, c_in, l_in]).into_iter().chain(contiguous_info(&[c_out, c_in, k])).collect();
    let numel = b * c_out * l_out;
    let (di, ds, dk, dout) =
        (dev.upload(&info), dev.upload(&src), dev.upload(&kernel), dev.alloc_poisoned::<f32>(numel));
    let p = dev
        .params("conv1d_f32")
        .u64(src.len() as u64)
        .u64(l_out as u64)
        .u64(stride as u64)
        .u64(padding as u64)
        .u64(dilation as u64)
        .ptr(di)
        .ptr(ds)
        .ptr(dk)
        .ptr(dout)
        .finish();
    dev.launch_clean("conv1d_f32", for_num_elems(numel), &p);
    let mut want = vec![0f64; numel];
    for bi in 0..b {
        for co in 0..c_out {
            for lo in 0..l_out {
                let mut acc = 0f64;
                for off in 0..k {
                    let l = (stride * lo + off) * dilation;
                    if l < padding || l >= padding + l_in {
                        continue;
                    }
                    for ci in 0..c_in {
                        acc += f64::from(src[(bi * c_in + ci) * l_in + l - padding])
                            * f64::from(kernel[(co * c_in + ci) * k + off]);
                    }
                }
                want[(bi * c_out + co) * l_out + lo] = acc;
            }
        }
    }
    assert_close("conv1d_f32", &dev.download::<f32>(dout, numel), &want, 1e-5, 1e-5);
}

#[test]
fn argsort_f32_ascending() {
    let dev = device("sort");
    let (rows, cols) = (4usize, 100usize);
    let pad = cols.next_power_of_two();
    let x = Rng::new(12).uniform_vec(rows * cols, -50.0, 50.0);
    let (dx, dout) = (dev.upload(&x), dev.alloc_poisoned::<u32>(rows * cols));
    let p = dev.params("asort_asc_f32").ptr(dx).ptr(dout).i32(cols as i32).i32(pad as i32).finish();
    // candle: one block per row, ncols_pad threads, ncols_pad ints of shared memory.
    dev.launch_clean("asort_asc_f32", config([rows as u32, 1, 1], [pad as u32, 1, 1], (pad * 4) as u32), &p);
    let mut want = Vec::new();
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let mut idx: Vec<u32> = (0..cols as u32).collect();
        idx.sort_by(|&a, &b| row[a as usize].total_cmp(&row[b as usize]));
        want.extend(idx);
    }
    assert_bit_exact("asort_asc_f32", &dev.download::<u32>(dout, rows * cols), &want);
}

#[test]
fn dequantize_q8_0_f32() {
    let dev = device("quantized");
    let nb32 = 21usize; // not a multiple of the 8 blocks one CTA handles
    let mut rng = Rng::new(13);
    let mut blocks = Vec::new();
    let mut want = Vec::new();
    for _ in 0..nb32 {
        let d = f16::from_f32(rng.uniform(0.001, 0.1));
        let qs: Vec<i8> = (0..32).map(|_| rng.next_u32() as i8).collect();
        blocks.extend(d.to_le_bytes());
        blocks.extend(qs.iter().map(|q| *q as u8));
        want.extend(qs.iter().map(|q| d.to_f32() * f32::from(*q)));
    }
    // One CTA dequantises 256 values; the output covers whole CTAs.
    let out_len = nb32.div_ceil(8) * 256;
    let (dq, dout) = (dev.upload(&blocks), dev.alloc_poisoned::<f32>(out_len));
    let p = dev.params("dequantize_block_q8_0_f32").ptr(dq).ptr(dout).i32(nb32 as i32).finish();
    dev.launch_clean("dequantize_block_q8_0_f32", grid_1d(nb32.div_ceil(8) as u32, 32), &p);
    assert_bit_exact("dequantize q8_0", &dev.download::<f32>(dout, nb32 * 32), &want);
}

/// candle's quantized matmul-vector path: `quantize_q8_1` (warp max/sum
/// shuffles, f16 scales) and `mul_mat_vec_q8_0_q8_1_cuda1` (dp4a dot
/// products, a 4-warp shared-memory reduction), launched as candle does.
#[test]
fn quantized_q8_0_matvec_through_q8_1() {
    let dev = device("quantized");
    let (nrows, ncols) = (5usize, 256usize);
    let padded = ncols.next_multiple_of(512); // candle's MATRIX_ROW_PADDING
    let mut rng = Rng::new(14);
    // Weights: q8_0 blocks (f16 scale + 32 int8), row-major.
    let mut wx = Vec::new();
    let mut w = vec![(0f32, [0i8; 32]); nrows * ncols / 32];
    for blk in w.iter_mut() {
        let d = f16::from_f32(rng.uniform(0.001, 0.05));
        let mut qs = [0i8; 32];
        qs.iter_mut().for_each(|q| *q = rng.next_u32() as i8);
        wx.extend(d.to_le_bytes());
        wx.extend(qs.iter().map(|q| *q as u8));
        *blk = (d.to_f32(), qs);
    }
    let y = rng.uniform_vec(ncols, -2.0, 2.0);

    let (dy, dyq) = (dev.upload(&y), dev.alloc_poisoned::<u8>(padded / 32 * 36));
    let p = dev.params("quantize_q8_1").ptr(dy).ptr(dyq).i32(ncols as i32).i32(padded as i32).finish();
    dev.launch_clean("quantize_q8_1", config([(padded / 256) as u32, 1, 1], [256, 1, 1], 0), &p);
    // q8_1 of y: per 32 values d = max|y| / 127 (as f16), q = round(y / d).
    let yq = dev.download::<u8>(dyq, padded / 32 * 36);
    let mut want_q = Vec::new();
    for b in 0..padded / 32 {
        let vals: Vec<f32> = (0..32).map(|i| y.get(32 * b + i).copied().unwrap_or(0.0)).collect();
        let amax = vals.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let qs: Vec<i8> = vals.iter().map(|v| if amax == 0.0 { 0 } else { (v / d).round() as i8 }).collect();
        let block = &yq[36 * b..36 * b + 36];
        assert_eq!(&block[0..2], &f16::from_f32(d).to_le_bytes(), "q8_1 block {b}: scale");
        let got_sum = f16::from_le_bytes([block[2], block[3]]).to_f32();
        let want_sum: f32 = vals.iter().sum();
        assert!(
            (got_sum - want_sum).abs() <= 2e-3 * want_sum.abs().max(1.0),
            "q8_1 block {b}: sum {got_sum} vs {want_sum}"
        );
        assert_eq!(block[4..].iter().map(|q| *q as i8).collect::<Vec<_>>(), qs, "q8_1 block {b}: quants");
        want_q.push((f16::from_f32(d).to_f32(), qs));
    }

    let (dwx, dout) = (dev.upload(&wx), dev.alloc_poisoned::<f32>(nrows));
    let p = dev
        .params("mul_mat_vec_q8_0_q8_1_cuda1")
        .ptr(dwx)
        .ptr(dyq)
        .ptr(dout)
        .i32(ncols as i32)
        .i32(nrows as i32)
        .i32(padded as i32)
        .i32(nrows as i32)
        .finish();
    dev.launch_clean("mul_mat_vec_q8_0_q8_1_cuda1", config([nrows as u32, 1, 1], [32, 4, 1], 0), &p);
    let blocks_per_row = ncols / 32;
    let want: Vec<f64> = (0..nrows)
        .map(|r| {
            (0..blocks_per_row)
                .map(|b| {
                    let (dx, qx) = &w[r * blocks_per_row + b];
                    let (dy, qy) = &want_q[b];
                    let dot: i32 = qx.iter().zip(qy).map(|(a, c)| i32::from(*a) * i32::from(*c)).sum();
                    f64::from(*dx) * f64::from(*dy) * f64::from(dot)
                })
                .sum()
        })
        .collect();
    assert_close("q8_0 x q8_1 matvec", &dev.download::<f32>(dout, nrows), &want, 1e-5, 1e-5);
}

/// bf16 unary kernels: `hexp` (cuda_bf16.h's inline asm) and silu in bf16
/// arithmetic. Each bf16 rounding is at most 2^-9 relative and silu rounds
/// three times (exp, 1 + e, the quotient), so 2^-7 bounds the error.
#[test]
fn unary_exp_and_silu_bf16() {
    let dev = device("unary");
    let n = 1200;
    let mut rng = Rng::new(15);
    let x: Vec<bf16> = (0..n).map(|_| bf16::from_f32(rng.uniform(-8.0, 8.0))).collect();
    let dx = dev.upload(&x);
    for (kernel, f) in [("uexp_bf16", f64::exp as fn(f64) -> f64), ("usilu_bf16", |v: f64| v / (1.0 + (-v).exp()))] {
        let dout = dev.alloc_poisoned::<bf16>(n);
        let p = dev.params(kernel).u64(n as u64).u64(1).ptr(0).ptr(dx).ptr(dout).finish();
        dev.launch_clean(kernel, for_num_elems(n), &p);
        let got: Vec<f32> = dev.download::<bf16>(dout, n).iter().map(|v| v.to_f32()).collect();
        let want: Vec<f64> = x.iter().map(|v| f(f64::from(v.to_f32()))).collect();
        assert_close(kernel, &got, &want, 2f64.powi(-7), 1e-6);
    }
}

/// The bf16 normalisations candle-nn's layers run: f32 accumulation and one
/// rounding to bf16 at the end (at most 2^-9 relative), so 2^-8 bounds them.
#[test]
fn rmsnorm_and_layernorm_bf16() {
    let dev = device("reduce");
    let (rows, cols) = (4usize, 640usize);
    let n = rows * cols;
    let mut rng = Rng::new(16);
    let mut bf =
        |k: usize, lo: f32, hi: f32| -> Vec<bf16> { (0..k).map(|_| bf16::from_f32(rng.uniform(lo, hi))).collect() };
    let (x, alpha, beta) = (bf(n, -3.0, 3.0), bf(cols, 0.5, 1.5), bf(cols, -0.5, 0.5));
    let f = |v: &bf16| f64::from(v.to_f32());
    let (dx, da, db) = (dev.upload(&x), dev.upload(&alpha), dev.upload(&beta));
    let eps = 1e-5f32;
    let cfg = grid_1d(rows as u32, 32);
    let rows_of = |r: usize| x[r * cols..(r + 1) * cols].iter().map(f).collect::<Vec<f64>>();

    let dout = dev.alloc_poisoned::<bf16>(n);
    let p = dev.params("rmsnorm_bf16").ptr(dx).ptr(dout).ptr(da).i32(cols as i32).i32(32).f32(eps).finish();
    dev.launch_clean("rmsnorm_bf16", cfg, &p);
    let want: Vec<f64> = (0..rows)
        .flat_map(|r| {
            let row = rows_of(r);
            let scale = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / cols as f64 + f64::from(eps)).sqrt();
            row.iter().zip(&alpha).map(|(v, a)| v * scale * f(a)).collect::<Vec<_>>()
        })
        .collect();
    let got: Vec<f32> = dev.download::<bf16>(dout, n).iter().map(|v| v.to_f32()).collect();
    assert_close("rmsnorm_bf16", &got, &want, 2f64.powi(-8), 1e-6);

    let dout = dev.alloc_poisoned::<bf16>(n);
    let p = dev.params("layernorm_bf16").ptr(dx).ptr(dout).ptr(da).ptr(db).i32(cols as i32).i32(32).f32(eps).finish();
    dev.launch_clean("layernorm_bf16", cfg, &p);
    let want: Vec<f64> = (0..rows)
        .flat_map(|r| {
            let row = rows_of(r);
            let mean = row.iter().sum::<f64>() / cols as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (var + f64::from(eps)).sqrt();
            (0..cols).map(|c| (row[c] - mean) * inv * f(&alpha[c]) + f(&beta[c])).collect::<Vec<_>>()
        })
        .collect();
    let got: Vec<f32> = dev.download::<bf16>(dout, n).iter().map(|v| v.to_f32()).collect();
    // The f32 E[x²] − E[x]² variance adds ~1e-4 absolute on values of order 1.
    assert_close("layernorm_bf16", &got, &want, 2f64.powi(-8), 1e-4);
}

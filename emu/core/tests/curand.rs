//! The emulated `libcurand.so` through cudarc's safe `curand` API (what
//! candle's `rand_uniform` / `rand_normal` use), with `dynamic-loading`:
//! determinism per seed and offset, continuation across calls, the range of
//! uniform numbers ((0, 1]), the moments of normal ones, outputs that leave
//! the rest of their buffer alone, and cuRAND's status for an odd-length
//! normal request. As in `cublas.rs`, the checks run in a child process
//! whose `LD_LIBRARY_PATH` names the emulated libraries' folder.

mod driver_toolchain;

use cudarc::curand::result::CurandError;
use cudarc::curand::CudaRng;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use driver_toolchain::libcuda_dir;
use std::process::Command;
use std::sync::Arc;

#[test]
fn curand_on_the_emulated_device() {
    let output = Command::new(std::env::current_exe().expect("test executable"))
        .args(["--ignored", "--exact", "child_curand", "--nocapture", "--test-threads=1"])
        .env("LD_LIBRARY_PATH", libcuda_dir())
        .output()
        .expect("re-run the test executable");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.contains("1 passed"), "the child did not run:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("ptx-emu: "), "a check reported something:\n{stderr}");
}

fn uniform_f32(rng: &CudaRng, stream: &Arc<CudaStream>, n: usize) -> Vec<f32> {
    let mut out = stream.alloc_zeros::<f32>(n).expect("alloc");
    rng.fill_with_uniform(&mut out).expect("uniform");
    stream.clone_dtoh(&out).expect("download")
}

fn mean_and_variance(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count() as f64;
    let mean = values.clone().sum::<f64>() / n;
    (mean, values.map(|x| (x - mean) * (x - mean)).sum::<f64>() / n)
}

#[test]
#[ignore = "run in a child process by curand_on_the_emulated_device"]
fn child_curand() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let n = 20_000;

    // Uniform f32: (0, 1], uniform moments, determinism per seed.
    let rng = CudaRng::new(42, stream.clone()).expect("generator");
    let first = uniform_f32(&rng, &stream, n);
    assert!(first.iter().all(|&x| x > 0.0 && x <= 1.0), "uniform outside (0, 1]");
    let (mean, variance) = mean_and_variance(first.iter().map(|&x| f64::from(x)));
    assert!((mean - 0.5).abs() < 0.01, "uniform mean {mean}");
    assert!((variance - 1.0 / 12.0).abs() < 0.003, "uniform variance {variance}");
    let again = CudaRng::new(42, stream.clone()).expect("generator");
    assert_eq!(uniform_f32(&again, &stream, n), first, "same seed, same numbers");
    let other = CudaRng::new(43, stream.clone()).expect("generator");
    let different = uniform_f32(&other, &stream, n);
    assert!(different.iter().zip(&first).filter(|(a, b)| a == b).count() < 10, "another seed, other numbers");

    // A call continues where the previous one stopped.
    let halves = CudaRng::new(42, stream.clone()).expect("generator");
    let mut joined = uniform_f32(&halves, &stream, 1000);
    joined.extend(uniform_f32(&halves, &stream, 1000));
    assert_eq!(joined, first[..2000], "two calls continue one sequence");

    // The offset skips into the sequence; setting the seed restarts at it.
    let mut skipped = CudaRng::new(42, stream.clone()).expect("generator");
    skipped.set_offset(37).expect("offset");
    assert_eq!(uniform_f32(&skipped, &stream, 500), first[37..537]);
    skipped.set_seed(42).expect("seed");
    assert_eq!(uniform_f32(&skipped, &stream, 500), first[37..537], "a seed restarts at the offset");

    // Uniform f64.
    let mut doubles = stream.alloc_zeros::<f64>(n).expect("alloc");
    rng.fill_with_uniform(&mut doubles).expect("uniform f64");
    let doubles = stream.clone_dtoh(&doubles).expect("download");
    assert!(doubles.iter().all(|&x| x > 0.0 && x <= 1.0), "uniform f64 outside (0, 1]");
    let (mean, _) = mean_and_variance(doubles.iter().copied());
    assert!((mean - 0.5).abs() < 0.01, "uniform f64 mean {mean}");

    // Normal f32 and f64: mean and standard deviation as asked; the rest
    // of the buffer (NaN) untouched.
    let mut normal: CudaSlice<f32> = stream.clone_htod(&vec![f32::NAN; n + 6]).expect("alloc");
    rng.fill_with_normal(&mut normal.slice_mut(0..n), 1.0f32, 2.0f32).expect("normal");
    let normal = stream.clone_dtoh(&normal).expect("download");
    assert!(normal[n..].iter().all(|x| x.is_nan()), "written past the requested length");
    assert!(normal[..n].iter().all(|x| x.is_finite()), "a normal value is not finite");
    let (mean, variance) = mean_and_variance(normal[..n].iter().map(|&x| f64::from(x)));
    assert!((mean - 1.0).abs() < 0.05, "normal mean {mean}");
    assert!((variance.sqrt() - 2.0).abs() < 0.05, "normal stddev {}", variance.sqrt());
    let mut normal64 = stream.alloc_zeros::<f64>(n).expect("alloc");
    rng.fill_with_normal(&mut normal64, -3.0f64, 0.5f64).expect("normal f64");
    let normal64 = stream.clone_dtoh(&normal64).expect("download");
    let (mean, variance) = mean_and_variance(normal64.iter().copied());
    assert!((mean + 3.0).abs() < 0.0125, "normal f64 mean {mean}");
    assert!((variance.sqrt() - 0.5).abs() < 0.0125, "normal f64 stddev {}", variance.sqrt());
    // The fourth moment tells a normal from other symmetric shapes.
    let kurtosis = normal64.iter().map(|x| ((x + 3.0) / 0.5).powi(4)).sum::<f64>() / n as f64;
    assert!((kurtosis - 3.0).abs() < 0.2, "normal kurtosis {kurtosis}");

    // Normal numbers come in pairs: an odd length is refused, as by cuRAND.
    let mut odd = stream.alloc_zeros::<f32>(7).expect("alloc");
    let refused = rng.fill_with_normal(&mut odd, 0.0f32, 1.0f32).expect_err("odd length");
    let CurandError(status) = refused;
    assert_eq!(status as u32, 105, "CURAND_STATUS_LENGTH_NOT_MULTIPLE");
    stream.synchronize().expect("no fault");
}

//! The emulated `libcublas.so` and `libcublasLt.so` through cudarc's
//! `cublas` and `cublaslt` modules (safe API
//! where it has one, its `result` wrappers and raw bindings elsewhere), with
//! `dynamic-loading`: each GEMM entry point against a CPU reference on
//! ragged shapes, every transpose, leading dimensions above the rows,
//! batches with gaps between matrices, alpha/beta on the host and on the
//! device; outputs poisoned with NaN, the padding rows of C left untouched;
//! bad arguments answered with cuBLAS's status codes; an operand whose
//! leading dimension or batch stride runs past its allocation reported by
//! memcheck and sticky in the context, a read of bytes nothing wrote by
//! initcheck (the padding rows of a leading dimension never read).
//! cuBLASLt's matmul also with its epilogues (bias, ReLU, GELU) and a bias
//! per batch.
//!
//! cudarc opens the libraries through `LD_LIBRARY_PATH`, read at process
//! start, so each test re-runs this executable on an `#[ignore]`d child test
//! with `LD_LIBRARY_PATH` naming the emulated libraries' folder.

mod driver_toolchain;

use cudarc::cublas::result::CublasError;
use cudarc::cublas::sys::{self, cublasOperation_t as Op, cudaDataType_t as DataType};
use cudarc::cublas::{result, CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::cublaslt::result::CublasError as LtError;
use cudarc::cublaslt::{Activation, CudaBlasLT, Matmul, MatmulConfig};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DriverError};
use driver_toolchain::libcuda_dir;
use half::{bf16, f16};
use std::process::{Command, Output};
use std::sync::Arc;

/// Runs the `#[ignore]`d test `child` in a fresh process on the emulated libraries.
fn run_child(child: &str) -> Output {
    Command::new(std::env::current_exe().expect("test executable"))
        .args(["--ignored", "--exact", child, "--nocapture", "--test-threads=1"])
        .env("LD_LIBRARY_PATH", libcuda_dir())
        .output()
        .expect("re-run the test executable")
}

fn assert_child_passed(child: &str) -> String {
    let output = run_child(child);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{child} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", output.status);
    assert!(stdout.contains("1 passed"), "{child} did not run:\n{stdout}\n{stderr}");
    stderr
}

// ------------------------------------------------------------ host model

/// A fixed-seed generator of values on a 1/8 grid in [-2, 2]: exact in
/// every type here, so the reference's sums are exact too.
struct Rng(u64);

impl Rng {
    fn value(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % 33) as f64 / 8.0 - 2.0
    }
}

/// A column-major matrix of `rows x cols` with leading dimension `ld`; the
/// rows past `rows` are NaN.
#[derive(Clone)]
struct Matrix {
    rows: usize,
    cols: usize,
    ld: usize,
    data: Vec<f64>,
}

impl Matrix {
    fn random(rows: usize, cols: usize, ld: usize, rng: &mut Rng) -> Matrix {
        let data = (0..ld * cols).map(|i| if i % ld < rows { rng.value() } else { f64::NAN }).collect();
        Matrix { rows, cols, ld, data }
    }
    fn nan(rows: usize, cols: usize, ld: usize) -> Matrix {
        Matrix { rows, cols, ld, data: vec![f64::NAN; ld * cols] }
    }
    fn at(&self, r: usize, c: usize) -> f64 {
        self.data[c * self.ld + r]
    }
}

/// `alpha * op(A) * op(B) + beta * C` in f64 (C not read when beta is 0).
#[allow(clippy::too_many_arguments)]
fn reference(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    a: &Matrix,
    b: &Matrix,
    beta: f64,
    c: &Matrix,
) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for j in 0..n {
        for i in 0..m {
            let dot: f64 = (0..k)
                .map(|p| {
                    let x = if ta { a.at(p, i) } else { a.at(i, p) };
                    let y = if tb { b.at(j, p) } else { b.at(p, j) };
                    x * y
                })
                .sum();
            out[j * m + i] = alpha * dot + if beta == 0.0 { 0.0 } else { beta * c.at(i, j) };
        }
    }
    out
}

/// The element types under test, with how close one rounding gets.
trait Element: DeviceRepr + Copy + std::fmt::Debug {
    const HALF_ULP: f64;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    const HALF_ULP: f64 = 1.0 / (1u64 << 24) as f64;
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
}
impl Element for f64 {
    const HALF_ULP: f64 = 1.2e-16;
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}
impl Element for f16 {
    const HALF_ULP: f64 = 1.0 / 2048.0;
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
}
impl Element for bf16 {
    const HALF_ULP: f64 = 1.0 / 256.0;
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
}

fn upload<T: Element>(stream: &Arc<CudaStream>, values: &[f64]) -> CudaSlice<T> {
    stream.clone_htod(&values.iter().map(|&x| T::from_f64(x)).collect::<Vec<_>>()).expect("upload")
}

/// Checks C (`ld x n` downloaded) against `want` (`m x n`): inside, within
/// one rounding of the output type plus f32 accumulation error (the inputs
/// make the sums exact, so only the final rounding is left); the padding
/// rows bit-for-bit as they were (NaN).
fn check_c<T: Element>(what: &str, got: &[T], before: &Matrix, want: &[f64]) {
    let (m, ld) = (before.rows, before.ld);
    for j in 0..before.cols {
        for i in 0..ld {
            let value = got[j * ld + i].to_f64();
            if i < m {
                let expected = want[j * m + i];
                let tolerance = T::HALF_ULP * expected.abs() + 1e-12;
                assert!((value - expected).abs() <= tolerance, "{what}: C[{i},{j}] = {value}, want {expected}");
            } else {
                assert!(value.is_nan(), "{what}: padding C[{i},{j}] was written ({value})");
            }
        }
    }
}

fn op(transposed: bool) -> Op {
    if transposed {
        Op::CUBLAS_OP_T
    } else {
        Op::CUBLAS_OP_N
    }
}

/// One GEMM problem: shapes, transposes, padded operands, scales.
struct Problem {
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    a: Matrix,
    b: Matrix,
    c: Matrix,
    alpha: f64,
    beta: f64,
}

impl Problem {
    fn new(ta: bool, tb: bool, (m, n, k): (usize, usize, usize), (alpha, beta): (f64, f64), seed: u64) -> Problem {
        let mut rng = Rng(seed);
        let (ar, ac) = if ta { (k, m) } else { (m, k) };
        let (br, bc) = if tb { (n, k) } else { (k, n) };
        let a = Matrix::random(ar, ac, ar + 3, &mut rng);
        let b = Matrix::random(br, bc, br + 5, &mut rng);
        // beta = 0: C is NaN everywhere and must be overwritten inside.
        let c = if beta == 0.0 { Matrix::nan(m, n, m + 2) } else { Matrix::random(m, n, m + 2, &mut rng) };
        Problem { ta, tb, m, n, k, a, b, c, alpha, beta }
    }

    fn want(&self) -> Vec<f64> {
        reference(self.ta, self.tb, self.m, self.n, self.k, self.alpha, &self.a, &self.b, self.beta, &self.c)
    }

    fn config<T: Element>(&self) -> GemmConfig<T> {
        GemmConfig {
            transa: op(self.ta),
            transb: op(self.tb),
            m: self.m as i32,
            n: self.n as i32,
            k: self.k as i32,
            alpha: T::from_f64(self.alpha),
            lda: self.a.ld as i32,
            ldb: self.b.ld as i32,
            beta: T::from_f64(self.beta),
            ldc: self.c.ld as i32,
        }
    }

    fn label(&self, what: &str) -> String {
        format!(
            "{what} ta={} tb={} {}x{}x{} alpha={} beta={}",
            self.ta, self.tb, self.m, self.n, self.k, self.alpha, self.beta
        )
    }
}

/// Every transpose pair, with beta 0 (C poisoned) and beta != 0, on a ragged shape.
fn problems(seed: u64) -> Vec<Problem> {
    let mut all = Vec::new();
    for (index, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
        for scales in [(1.5, -0.5), (1.0, 0.0)] {
            all.push(Problem::new(ta, tb, (13, 7, 9), scales, seed + index as u64));
        }
    }
    all
}

/// Through cudarc's safe `Gemm` trait (Sgemm, Dgemm, and GemmEx for f16
/// and bf16 with f32 compute).
fn safe_gemm<T: Element>(blas: &CudaBlas, stream: &Arc<CudaStream>, what: &str)
where
    CudaBlas: Gemm<T>,
{
    for problem in problems(11) {
        let a = upload::<T>(stream, &problem.a.data);
        let b = upload::<T>(stream, &problem.b.data);
        let mut c = upload::<T>(stream, &problem.c.data);
        unsafe { blas.gemm(problem.config::<T>(), &a, &b, &mut c) }.expect("gemm");
        let got = stream.clone_dtoh(&c).expect("download");
        check_c(&problem.label(what), &got, &problem.c, &problem.want());
    }
}

#[test]
#[ignore = "run in a child process by gemms_match_the_reference"]
fn child_gemms() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).expect("cublasCreate");
    safe_gemm::<f32>(&blas, &stream, "Sgemm");
    safe_gemm::<f64>(&blas, &stream, "Dgemm");
    safe_gemm::<f16>(&blas, &stream, "GemmEx f16");
    safe_gemm::<bf16>(&blas, &stream, "GemmEx bf16");
    hgemm(&blas, &stream);
    gemm_ex_f16_into_f32(&blas, &stream);
    strided_batched(&blas, &stream);
    pointer_array_batched(&blas, &stream);
    device_pointer_mode(&blas, &stream);
    stream.synchronize().expect("no fault");
}

#[test]
fn gemms_match_the_reference() {
    let stderr = assert_child_passed("child_gemms");
    assert!(!stderr.contains("ptx-emu: "), "a check reported something:\n{stderr}");
}

/// `cublasHgemm` (f16 scales, f16 everything).
fn hgemm(blas: &CudaBlas, stream: &Arc<CudaStream>) {
    for problem in problems(21) {
        let a = upload::<f16>(stream, &problem.a.data);
        let b = upload::<f16>(stream, &problem.b.data);
        let mut c = upload::<f16>(stream, &problem.c.data);
        let (alpha, beta) = (f16::from_f64(problem.alpha), f16::from_f64(problem.beta));
        let cfg = problem.config::<f16>();
        unsafe {
            let (pa, _ra) = a.device_ptr(stream);
            let (pb, _rb) = b.device_ptr(stream);
            let (pc, _rc) = c.device_ptr_mut(stream);
            result::hgemm(
                *blas.handle(),
                cfg.transa,
                cfg.transb,
                cfg.m,
                cfg.n,
                cfg.k,
                &alpha,
                pa as _,
                cfg.lda,
                pb as _,
                cfg.ldb,
                &beta,
                pc as _,
                cfg.ldc,
            )
        }
        .expect("cublasHgemm");
        check_c(&problem.label("Hgemm"), &stream.clone_dtoh(&c).expect("download"), &problem.c, &problem.want());
    }
}

/// `cublasGemmEx` with f16 inputs and an f32 output.
fn gemm_ex_f16_into_f32(blas: &CudaBlas, stream: &Arc<CudaStream>) {
    for problem in problems(31) {
        let a = upload::<f16>(stream, &problem.a.data);
        let b = upload::<f16>(stream, &problem.b.data);
        let mut c = upload::<f32>(stream, &problem.c.data);
        let (alpha, beta) = (problem.alpha as f32, problem.beta as f32);
        let cfg = problem.config::<f32>();
        unsafe {
            let (pa, _ra) = a.device_ptr(stream);
            let (pb, _rb) = b.device_ptr(stream);
            let (pc, _rc) = c.device_ptr_mut(stream);
            result::gemm_ex(
                *blas.handle(),
                cfg.transa,
                cfg.transb,
                cfg.m,
                cfg.n,
                cfg.k,
                (&alpha as *const f32).cast(),
                pa as _,
                DataType::CUDA_R_16F,
                cfg.lda,
                pb as _,
                DataType::CUDA_R_16F,
                cfg.ldb,
                (&beta as *const f32).cast(),
                pc as _,
                DataType::CUDA_R_32F,
                cfg.ldc,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .expect("cublasGemmEx f16 -> f32");
        check_c(
            &problem.label("GemmEx f16->f32"),
            &stream.clone_dtoh(&c).expect("download"),
            &problem.c,
            &problem.want(),
        );
    }
}

/// Three problems laid out `stride` elements apart (with a gap), each checked.
struct Batched {
    problems: Vec<Problem>,
    strides: [usize; 3],
}

impl Batched {
    fn new(ta: bool, tb: bool, scales: (f64, f64), seed: u64) -> Batched {
        let problems: Vec<Problem> = (0..3).map(|i| Problem::new(ta, tb, (11, 6, 5), scales, seed + i)).collect();
        let first = &problems[0];
        let strides = [first.a.data.len() + 7, first.b.data.len() + 3, first.c.data.len() + 4];
        Batched { problems, strides }
    }

    /// The operand `which` (0: A, 1: B, 2: C) of every problem, at its
    /// stride, the gaps NaN.
    fn packed(&self, which: usize) -> Vec<f64> {
        let mut out = vec![f64::NAN; self.strides[which] * self.problems.len()];
        for (index, problem) in self.problems.iter().enumerate() {
            let data = [&problem.a.data, &problem.b.data, &problem.c.data][which];
            out[index * self.strides[which]..][..data.len()].copy_from_slice(data);
        }
        out
    }

    fn check<T: Element>(&self, what: &str, got: &[T]) {
        for (index, problem) in self.problems.iter().enumerate() {
            let start = index * self.strides[2];
            check_c(
                &problem.label(&format!("{what} batch {index}")),
                &got[start..][..problem.c.data.len()],
                &problem.c,
                &problem.want(),
            );
            let gap = &got[start + problem.c.data.len()..start + self.strides[2]];
            assert!(gap.iter().all(|x| x.to_f64().is_nan()), "{what}: the gap after batch {index} was written");
        }
    }
}

/// `cublasSgemmStridedBatched` (cudarc's safe f32 API) and
/// `cublasGemmStridedBatchedEx` (its bf16 API), every transpose pair.
fn strided_batched(blas: &CudaBlas, stream: &Arc<CudaStream>) {
    fn one<T: Element>(blas: &CudaBlas, stream: &Arc<CudaStream>, batched: &Batched, what: &str)
    where
        CudaBlas: Gemm<T>,
    {
        let a = upload::<T>(stream, &batched.packed(0));
        let b = upload::<T>(stream, &batched.packed(1));
        let mut c = upload::<T>(stream, &batched.packed(2));
        let cfg = StridedBatchedConfig {
            gemm: batched.problems[0].config::<T>(),
            batch_size: batched.problems.len() as i32,
            stride_a: batched.strides[0] as i64,
            stride_b: batched.strides[1] as i64,
            stride_c: batched.strides[2] as i64,
        };
        unsafe { blas.gemm_strided_batched(cfg, &a, &b, &mut c) }.expect("strided batched gemm");
        batched.check(what, &stream.clone_dtoh(&c).expect("download"));
    }
    for (index, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
        let scales = if index % 2 == 0 { (0.75, 2.0) } else { (1.0, 0.0) };
        let batched = Batched::new(ta, tb, scales, 40 + index as u64 * 3);
        one::<f32>(blas, stream, &batched, "SgemmStridedBatched");
        one::<bf16>(blas, stream, &batched, "GemmStridedBatchedEx bf16");
        one::<f64>(blas, stream, &batched, "DgemmStridedBatched");
    }
}

/// `cublasGemmBatchedEx`: device arrays of device pointers.
fn pointer_array_batched(blas: &CudaBlas, stream: &Arc<CudaStream>) {
    let batched = Batched::new(true, false, (1.25, -1.0), 60);
    let a = upload::<f32>(stream, &batched.packed(0));
    let b = upload::<f32>(stream, &batched.packed(1));
    let mut c = upload::<f32>(stream, &batched.packed(2));
    let first = &batched.problems[0];
    let cfg = first.config::<f32>();
    let (alpha, beta) = (first.alpha as f32, first.beta as f32);
    unsafe {
        let (pa, _ra) = a.device_ptr(stream);
        let (pb, _rb) = b.device_ptr(stream);
        let (pc, _rc) = c.device_ptr_mut(stream);
        let array = |base: u64, stride: usize| -> CudaSlice<u64> {
            let pointers: Vec<u64> = (0..3).map(|i| base + (i * stride * 4) as u64).collect();
            stream.clone_htod(&pointers).expect("upload pointers")
        };
        let (aa, ba, ca) =
            (array(pa, batched.strides[0]), array(pb, batched.strides[1]), array(pc, batched.strides[2]));
        let (paa, _r1) = aa.device_ptr(stream);
        let (pba, _r2) = ba.device_ptr(stream);
        let (pca, _r3) = ca.device_ptr(stream);
        sys::cublasGemmBatchedEx(
            *blas.handle(),
            cfg.transa,
            cfg.transb,
            cfg.m,
            cfg.n,
            cfg.k,
            (&alpha as *const f32).cast(),
            paa as _,
            DataType::CUDA_R_32F,
            cfg.lda,
            pba as _,
            DataType::CUDA_R_32F,
            cfg.ldb,
            (&beta as *const f32).cast(),
            pca as _,
            DataType::CUDA_R_32F,
            cfg.ldc,
            3,
            sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .result()
    }
    .expect("cublasGemmBatchedEx");
    batched.check("GemmBatchedEx", &stream.clone_dtoh(&c).expect("download"));
}

/// `CUBLAS_POINTER_MODE_DEVICE`: alpha and beta read from device memory.
fn device_pointer_mode(blas: &CudaBlas, stream: &Arc<CudaStream>) {
    blas.set_pointer_mode(sys::cublasPointerMode_t::CUBLAS_POINTER_MODE_DEVICE).expect("pointer mode");
    for problem in problems(71) {
        let a = upload::<f32>(stream, &problem.a.data);
        let b = upload::<f32>(stream, &problem.b.data);
        let mut c = upload::<f32>(stream, &problem.c.data);
        let scales = stream.clone_htod(&[problem.alpha as f32, problem.beta as f32]).expect("scales");
        let cfg = problem.config::<f32>();
        unsafe {
            let (pa, _ra) = a.device_ptr(stream);
            let (pb, _rb) = b.device_ptr(stream);
            let (pc, _rc) = c.device_ptr_mut(stream);
            let (ps, _rs) = scales.device_ptr(stream);
            result::sgemm(
                *blas.handle(),
                cfg.transa,
                cfg.transb,
                cfg.m,
                cfg.n,
                cfg.k,
                ps as _,
                pa as _,
                cfg.lda,
                pb as _,
                cfg.ldb,
                (ps + 4) as _,
                pc as _,
                cfg.ldc,
            )
        }
        .expect("cublasSgemm, device scales");
        check_c(
            &problem.label("Sgemm device scales"),
            &stream.clone_dtoh(&c).expect("download"),
            &problem.c,
            &problem.want(),
        );
    }
    assert_eq!(blas.get_pointer_mode().expect("get"), sys::cublasPointerMode_t::CUBLAS_POINTER_MODE_DEVICE);
    blas.set_pointer_mode(sys::cublasPointerMode_t::CUBLAS_POINTER_MODE_HOST).expect("pointer mode");
}

// ------------------------------------------------------- bad arguments

fn status(result: Result<(), CublasError>) -> u32 {
    match result {
        Ok(()) => 0,
        Err(CublasError(code)) => code as u32,
    }
}

#[test]
#[ignore = "run in a child process by bad_arguments_get_cublas_status_codes"]
fn child_bad_arguments() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).expect("cublasCreate");
    let a = stream.clone_htod(&[1.0f32; 64]).expect("a");
    let mut c = stream.clone_htod(&[f32::NAN; 64]).expect("c");
    let (one, zero) = (1.0f32, 0.0f32);
    let sgemm = |ta: Op, m: i32, n: i32, k: i32, lda: i32, ldb: i32, ldc: i32, c: &mut CudaSlice<f32>| unsafe {
        let (pa, _ra) = a.device_ptr(&stream);
        let (pc, _rc) = c.device_ptr_mut(&stream);
        status(result::sgemm(
            *blas.handle(),
            ta,
            Op::CUBLAS_OP_N,
            m,
            n,
            k,
            &one,
            pa as _,
            lda,
            pa as _,
            ldb,
            &zero,
            pc as _,
            ldc,
        ))
    };
    const INVALID_VALUE: u32 = 7;
    assert_eq!(sgemm(Op::CUBLAS_OP_N, 4, 4, 4, 4, 4, 4, &mut c), 0);
    assert_eq!(sgemm(Op::CUBLAS_OP_N, -1, 4, 4, 4, 4, 4, &mut c), INVALID_VALUE, "m < 0");
    assert_eq!(sgemm(Op::CUBLAS_OP_N, 4, 4, -2, 4, 4, 4, &mut c), INVALID_VALUE, "k < 0");
    assert_eq!(sgemm(Op::CUBLAS_OP_N, 4, 4, 4, 3, 4, 4, &mut c), INVALID_VALUE, "lda < m");
    assert_eq!(sgemm(Op::CUBLAS_OP_T, 2, 4, 4, 3, 4, 4, &mut c), INVALID_VALUE, "lda < k when A is transposed");
    assert_eq!(sgemm(Op::CUBLAS_OP_N, 4, 4, 4, 4, 3, 4, &mut c), INVALID_VALUE, "ldb < k");
    assert_eq!(sgemm(Op::CUBLAS_OP_N, 4, 4, 4, 4, 4, 3, &mut c), INVALID_VALUE, "ldc < m");
    assert_eq!(sgemm(Op::CUBLAS_OP_CONJG, 4, 4, 4, 4, 4, 4, &mut c), INVALID_VALUE, "not an operation for gemm");
    // A quick return: nothing read or written.
    let before = stream.clone_dtoh(&c).expect("c");
    assert_eq!(sgemm(Op::CUBLAS_OP_N, 0, 4, 4, 4, 4, 4, &mut c), 0, "m = 0");
    assert_eq!(
        stream.clone_dtoh(&c).expect("c")[..].iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        before.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );

    let gemm_ex = |a_type: DataType, c_type: DataType, compute: sys::cublasComputeType_t, c: &mut CudaSlice<f32>| unsafe {
        let (pa, _ra) = a.device_ptr(&stream);
        let (pc, _rc) = c.device_ptr_mut(&stream);
        status(result::gemm_ex(
            *blas.handle(),
            Op::CUBLAS_OP_N,
            Op::CUBLAS_OP_N,
            4,
            4,
            4,
            (&one as *const f32).cast(),
            pa as _,
            a_type,
            4,
            pa as _,
            a_type,
            4,
            (&zero as *const f32).cast(),
            pc as _,
            c_type,
            4,
            compute,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        ))
    };
    const NOT_SUPPORTED: u32 = 15;
    use sys::cublasComputeType_t::*;
    assert_eq!(gemm_ex(DataType::CUDA_R_32F, DataType::CUDA_R_32F, CUBLAS_COMPUTE_32F_FAST_TF32, &mut c), 0);
    assert_eq!(
        gemm_ex(DataType::CUDA_R_32F, DataType::CUDA_R_16F, CUBLAS_COMPUTE_32F, &mut c),
        NOT_SUPPORTED,
        "f32 into f16"
    );
    assert_eq!(
        gemm_ex(DataType::CUDA_R_32F, DataType::CUDA_R_32F, CUBLAS_COMPUTE_16F, &mut c),
        NOT_SUPPORTED,
        "f32 with 16F compute"
    );
    assert_eq!(
        gemm_ex(DataType::CUDA_R_8I, DataType::CUDA_R_32I, CUBLAS_COMPUTE_32I, &mut c),
        NOT_SUPPORTED,
        "integers"
    );

    unsafe {
        let (pa, _ra) = a.device_ptr(&stream);
        let (pc, _rc) = c.device_ptr_mut(&stream);
        let batched = |count: i32, stride: i64| {
            status(result::sgemm_strided_batched(
                *blas.handle(),
                Op::CUBLAS_OP_N,
                Op::CUBLAS_OP_N,
                2,
                2,
                2,
                &one,
                pa as _,
                2,
                stride,
                pa as _,
                2,
                4,
                &zero,
                pc as _,
                2,
                4,
                count,
            ))
        };
        assert_eq!(batched(-1, 4), INVALID_VALUE, "batch count < 0");
        assert_eq!(batched(2, -4), INVALID_VALUE, "negative stride");
        assert_eq!(batched(0, 4), 0, "no batch: a quick return");
        assert_eq!(
            status(
                sys::cublasSetPointerMode_v2(*blas.handle(), sys::cublasPointerMode_t::CUBLAS_POINTER_MODE_HOST)
                    .result()
            ),
            0
        );
        let mut version = 0;
        assert_eq!(status(sys::cublasGetVersion_v2(*blas.handle(), &mut version).result()), 0);
        assert_eq!(version / 10_000, 13);
        // A destroyed handle is refused, not followed.
        let mut handle = std::ptr::null_mut();
        assert_eq!(status(sys::cublasCreate_v2(&mut handle).result()), 0);
        assert_eq!(status(sys::cublasDestroy_v2(handle).result()), 0);
        const NOT_INITIALIZED: u32 = 1;
        assert_eq!(status(sys::cublasSetStream_v2(handle, std::ptr::null_mut()).result()), NOT_INITIALIZED);
        assert_eq!(status(sys::cublasDestroy_v2(handle).result()), NOT_INITIALIZED);
        assert_eq!(
            status(sys::cublasSetWorkspace_v2(*blas.handle(), 8usize as *mut std::ffi::c_void, 1024).result()),
            INVALID_VALUE,
            "misaligned workspace"
        );
    }
    stream.synchronize().expect("no fault");
}

#[test]
fn bad_arguments_get_cublas_status_codes() {
    let stderr = assert_child_passed("child_bad_arguments");
    assert!(!stderr.contains("ptx-emu: "), "a check reported something:\n{stderr}");
}

// ------------------------------------------------------------- memcheck

/// Expects `call` to fail with `EXECUTION_FAILED`, and the context to be left
/// with the illegal-address error, as a faulting cuBLAS kernel leaves it.
fn expect_fault(stream: &Arc<CudaStream>, code: u32) {
    assert_eq!(code, 13, "CUBLAS_STATUS_EXECUTION_FAILED");
    let error: DriverError = stream.synchronize().expect_err("the fault is sticky");
    assert_eq!(error.0 as u32, 700, "CUDA_ERROR_ILLEGAL_ADDRESS");
}

#[test]
#[ignore = "run in a child process by a_leading_dimension_past_the_allocation_is_a_finding"]
fn child_leading_dimension_past_allocation() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).expect("cublasCreate");
    // A is 4 x 4 in an allocation of 16 floats, but lda = 5: its last
    // column ends 3 floats past the allocation.
    let a = stream.clone_htod(&[1.0f32; 16]).expect("a");
    let b = stream.clone_htod(&[1.0f32; 16]).expect("b");
    let mut c = stream.alloc_zeros::<f32>(16).expect("c");
    let cfg = GemmConfig {
        transa: Op::CUBLAS_OP_N,
        transb: Op::CUBLAS_OP_N,
        m: 4,
        n: 4,
        k: 4,
        alpha: 1.0f32,
        lda: 5,
        ldb: 4,
        beta: 0.0,
        ldc: 4,
    };
    expect_fault(&stream, status(unsafe { blas.gemm(cfg, &a, &b, &mut c) }));
    println!("leading dimension fault seen");
}

#[test]
fn a_leading_dimension_past_the_allocation_is_a_finding() {
    let stderr = assert_child_passed("child_leading_dimension_past_allocation");
    assert!(
        stderr.lines().any(|l| l.starts_with("ptx-emu: OutOfBounds in library call `cublasSgemm_v2`, operand `A`")),
        "no finding naming the call and operand:\n{stderr}"
    );
}

#[test]
#[ignore = "run in a child process by a_batch_stride_past_the_allocation_is_a_finding"]
fn child_batch_stride_past_allocation() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).expect("cublasCreate");
    // Two 4 x 4 batches of C, 20 floats apart, in 32 floats: the second
    // ends 4 floats past the allocation.
    let a = stream.clone_htod(&[1.0f32; 32]).expect("a");
    let b = stream.clone_htod(&[1.0f32; 32]).expect("b");
    let mut c = stream.alloc_zeros::<f32>(32).expect("c");
    let gemm = GemmConfig {
        transa: Op::CUBLAS_OP_N,
        transb: Op::CUBLAS_OP_N,
        m: 4,
        n: 4,
        k: 4,
        alpha: 1.0f32,
        lda: 4,
        ldb: 4,
        beta: 0.0,
        ldc: 4,
    };
    let cfg = StridedBatchedConfig { gemm, batch_size: 2, stride_a: 16, stride_b: 16, stride_c: 20 };
    expect_fault(&stream, status(unsafe { blas.gemm_strided_batched(cfg, &a, &b, &mut c) }));
}

#[test]
fn a_batch_stride_past_the_allocation_is_a_finding() {
    let stderr = assert_child_passed("child_batch_stride_past_allocation");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("ptx-emu: OutOfBounds in library call `cublasSgemmStridedBatched`, operand `C`")),
        "no finding naming the call and operand:\n{stderr}"
    );
}

#[test]
#[ignore = "run in a child process by a_workspace_past_its_allocation_is_a_finding"]
fn child_workspace_past_allocation() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).expect("cublasCreate");
    let a = stream.clone_htod(&[1.0f32; 16]).expect("a");
    let mut c = stream.alloc_zeros::<f32>(16).expect("c");
    let cfg = GemmConfig {
        transa: Op::CUBLAS_OP_N,
        transb: Op::CUBLAS_OP_N,
        m: 4,
        n: 4,
        k: 4,
        alpha: 1.0f32,
        lda: 4,
        ldb: 4,
        beta: 0.0,
        ldc: 4,
    };
    // A 1024-byte workspace given as 2048 bytes: cuBLAS may use all of it.
    let workspace = stream.alloc_zeros::<u8>(1024).expect("workspace");
    let (pointer, _sync) = workspace.device_ptr(&stream);
    let set = unsafe { sys::cublasSetWorkspace_v2(*blas.handle(), pointer as *mut std::ffi::c_void, 2048) };
    assert_eq!(status(set.result()), 0);
    expect_fault(&stream, status(unsafe { blas.gemm(cfg, &a, &a, &mut c) }));
}

#[test]
fn a_workspace_past_its_allocation_is_a_finding() {
    let stderr = assert_child_passed("child_workspace_past_allocation");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("ptx-emu: OutOfBounds in library call `cublasSgemm_v2`, operand `workspace`")
                && l.contains("0 bytes inside a 1024-byte allocation")
                && l.contains("running past its end")),
        "no finding naming the call, the workspace and its allocation:\n{stderr}"
    );
}

/// The libraries link against the emulated driver rather than carrying a
/// copy of it: `NEEDED libcuda.so.1`, the SONAMEs `-l` records, and the
/// private exports they call defined by libcuda.so.
#[test]
fn the_libraries_link_against_the_one_driver() {
    let dir = libcuda_dir();
    let readelf = |library: &str| {
        let output = Command::new("readelf").arg("-d").arg(dir.join(library)).output().expect("run readelf");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for (library, soname) in [
        ("libcublas.so", "libcublas.so.13"),
        ("libcublasLt.so", "libcublasLt.so.13"),
        ("libcurand.so", "libcurand.so.10"),
        ("libcudart.so", "libcudart.so.13"),
    ] {
        let dynamic = readelf(library);
        assert!(dynamic.contains("Shared library: [libcuda.so.1]"), "{library} does not need libcuda.so.1:\n{dynamic}");
        assert!(dynamic.contains(&format!("Library soname: [{soname}]")), "{library}:\n{dynamic}");
        assert_eq!(std::fs::read_link(dir.join(soname)).expect("versioned link"), std::path::Path::new(library));
    }
    let exports =
        Command::new("nm").args(["-D", "--defined-only"]).arg(dir.join("libcuda.so")).output().expect("run nm");
    let exports = String::from_utf8_lossy(&exports.stdout);
    for name in ["ptxEmuStreamHostOp", "ptxEmuReadDevice2D", "ptxEmuWriteDevice2D"] {
        assert!(exports.lines().any(|l| l.ends_with(&format!(" T {name}"))), "libcuda.so does not export {name}");
    }
    let blas =
        Command::new("nm").args(["-D", "--defined-only"]).arg(dir.join("libcublas.so")).output().expect("run nm");
    assert!(!String::from_utf8_lossy(&blas.stdout).contains(" T cuInit"), "libcublas.so carries its own driver");
}

// ------------------------------------------------------------- cuBLASLt

fn lt_status(result: Result<(), LtError>) -> u32 {
    match result {
        Ok(()) => 0,
        Err(LtError(code)) => code as u32,
    }
}

/// `reference` followed by cuBLASLt's epilogue: the bias (per row) and the
/// activation (GELU in its tanh form).
fn with_epilogue(want: &[f64], m: usize, bias: Option<&[f64]>, activation: Option<&Activation>) -> Vec<f64> {
    want.iter()
        .enumerate()
        .map(|(index, &x)| {
            let x = x + bias.map_or(0.0, |bias| bias[index % m]);
            match activation {
                None => x,
                Some(Activation::Relu) => x.max(0.0),
                Some(Activation::Gelu) => {
                    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044_715 * x * x * x)).tanh())
                }
            }
        })
        .collect()
}

/// Checks D like `check_c`, allowing for the epilogue's extra f32
/// roundings before the final one.
fn check_d<T: Element>(what: &str, got: &[T], before: &Matrix, want: &[f64]) {
    let (m, ld) = (before.rows, before.ld);
    for j in 0..before.cols {
        for i in 0..ld {
            let value = got[j * ld + i].to_f64();
            if i < m {
                let expected = want[j * m + i];
                let tolerance = 2.0 * T::HALF_ULP * expected.abs() + 1e-5;
                assert!((value - expected).abs() <= tolerance, "{what}: D[{i},{j}] = {value}, want {expected}");
            } else {
                assert!(value.is_nan(), "{what}: padding D[{i},{j}] was written ({value})");
            }
        }
    }
}

/// Through cudarc's safe `Matmul` (cuBLASLt's descriptors, layouts with
/// batch count and stride, preference, heuristic, matmul), every transpose
/// pair and every epilogue candle uses, three batches with gaps between
/// them and a bias per batch.
fn lt_matmul<T: Element>(lt: &CudaBlasLT, stream: &Arc<CudaStream>, what: &str)
where
    CudaBlasLT: Matmul<T>,
{
    let activations = [None, Some(Activation::Relu), Some(Activation::Gelu)];
    let mut seed = 80;
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        for activation in &activations {
            for with_bias in [false, true] {
                seed += 7;
                let scales = if seed % 2 == 0 { (1.5, -0.5) } else { (1.0, 0.0) };
                let batched = Batched::new(ta, tb, scales, seed);
                let first = &batched.problems[0];
                let m = first.m;
                let bias_stride = m + 3;
                let mut rng = Rng(seed);
                let bias: Vec<f64> = (0..bias_stride * batched.problems.len()).map(|_| rng.value()).collect();
                let a = upload::<T>(stream, &batched.packed(0));
                let b = upload::<T>(stream, &batched.packed(1));
                let mut c = upload::<T>(stream, &batched.packed(2));
                let bias_device = upload::<T>(stream, &bias);
                let cfg = MatmulConfig {
                    transa: ta,
                    transb: tb,
                    transc: false,
                    m: m as u64,
                    n: first.n as u64,
                    k: first.k as u64,
                    alpha: first.alpha as f32,
                    lda: first.a.ld as i64,
                    ldb: first.b.ld as i64,
                    beta: first.beta as f32,
                    ldc: first.c.ld as i64,
                    stride_a: Some(batched.strides[0] as i64),
                    stride_b: Some(batched.strides[1] as i64),
                    stride_c: Some(batched.strides[2] as i64),
                    stride_bias: Some(bias_stride as i64),
                    batch_size: Some(batched.problems.len() as i32),
                };
                let bias_arg = with_bias.then_some(&bias_device);
                unsafe { lt.matmul(cfg, &a, &b, &mut c, bias_arg, activation.as_ref()) }.expect("cublasLtMatmul");
                let got = stream.clone_dtoh(&c).expect("download");
                for (index, problem) in batched.problems.iter().enumerate() {
                    let label = format!("{} {activation:?} bias={with_bias} batch {index}", problem.label(what));
                    let bias = with_bias.then(|| &bias[index * bias_stride..][..m]);
                    let want = with_epilogue(&problem.want(), m, bias, activation.as_ref());
                    let start = index * batched.strides[2];
                    check_d(&label, &got[start..][..problem.c.data.len()], &problem.c, &want);
                }
            }
        }
    }
}

#[test]
#[ignore = "run in a child process by lt_matmuls_match_the_reference"]
fn child_lt_matmuls() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let lt = CudaBlasLT::new(stream.clone()).expect("cublasLtCreate");
    lt_matmul::<f32>(&lt, &stream, "Lt f32");
    lt_matmul::<bf16>(&lt, &stream, "Lt bf16");
    lt_matmul::<f16>(&lt, &stream, "Lt f16");
    // A layout whose leading dimension is below its rows is refused by
    // the heuristic, as by cuBLASLt.
    let a = upload::<f32>(&stream, &[1.0; 16]);
    let mut c = upload::<f32>(&stream, &[0.0; 16]);
    let cfg = MatmulConfig {
        transa: false,
        transb: false,
        transc: false,
        m: 4,
        n: 4,
        k: 4,
        alpha: 1.0,
        lda: 3,
        ldb: 4,
        beta: 0.0,
        ldc: 4,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    };
    let refused = unsafe { lt.matmul(cfg, &a, &a, &mut c, None, None) }.expect_err("lda < m");
    assert_eq!(lt_status(Err(refused)), 7, "CUBLAS_STATUS_INVALID_VALUE");
    stream.synchronize().expect("no fault");
}

#[test]
fn lt_matmuls_match_the_reference() {
    let stderr = assert_child_passed("child_lt_matmuls");
    assert!(!stderr.contains("ptx-emu: "), "a check reported something:\n{stderr}");
}

#[test]
#[ignore = "run in a child process by an_lt_batch_stride_past_the_allocation_is_a_finding"]
fn child_lt_batch_stride_past_allocation() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let lt = CudaBlasLT::new(stream.clone()).expect("cublasLtCreate");
    // Two 4 x 4 batches of D, 20 floats apart, in 32 floats.
    let a = upload::<f32>(&stream, &[1.0; 32]);
    let mut c = upload::<f32>(&stream, &[0.0; 32]);
    let cfg = MatmulConfig {
        transa: false,
        transb: false,
        transc: false,
        m: 4,
        n: 4,
        k: 4,
        alpha: 1.0,
        lda: 4,
        ldb: 4,
        beta: 0.0,
        ldc: 4,
        stride_a: Some(16),
        stride_b: Some(16),
        stride_c: Some(20),
        stride_bias: None,
        batch_size: Some(2),
    };
    expect_fault(&stream, lt_status(unsafe { lt.matmul(cfg, &a, &a, &mut c, None, None) }));
}

#[test]
fn an_lt_batch_stride_past_the_allocation_is_a_finding() {
    let stderr = assert_child_passed("child_lt_batch_stride_past_allocation");
    assert!(
        stderr.lines().any(|l| l.starts_with("ptx-emu: OutOfBounds in library call `cublasLtMatmul`, operand `C`")),
        "no finding naming the call and operand:\n{stderr}"
    );
}

// ------------------------------------------------------------- initcheck

/// A 4 x 4 A with leading dimension 6 in memory nothing wrote, then its
/// columns (not the two padding rows of each) written.
fn columns_written_padding_not(stream: &Arc<CudaStream>) -> CudaSlice<f32> {
    let mut a = unsafe { stream.alloc::<f32>(6 * 4) }.expect("uninitialised A");
    for column in 0..4 {
        stream.memcpy_htod(&[1.0f32, 2.0, 3.0, 4.0], &mut a.slice_mut(column * 6..column * 6 + 4)).expect("column");
    }
    a
}

#[test]
#[ignore = "run in a child process by initcheck_reads_what_the_gemm_reads"]
fn child_initcheck() {
    let ctx = CudaContext::new(0).expect("context");
    let stream = ctx.default_stream();
    let blas = CudaBlas::new(stream.clone()).expect("cublasCreate");
    let b = stream.clone_htod(&[0.5f32; 16]).expect("b");
    let mut c = stream.alloc_zeros::<f32>(16).expect("c");
    // The padding rows are never read: no finding.
    let a = columns_written_padding_not(&stream);
    let cfg = GemmConfig {
        transa: Op::CUBLAS_OP_N,
        transb: Op::CUBLAS_OP_N,
        m: 4,
        n: 4,
        k: 4,
        alpha: 1.0f32,
        lda: 6,
        ldb: 4,
        beta: 0.0,
        ldc: 4,
    };
    unsafe { blas.gemm(cfg, &a, &b, &mut c) }.expect("padding is not read");
    assert_eq!(stream.clone_dtoh(&c).expect("c")[..4], [2.0, 4.0, 6.0, 8.0], "row i of A is i + 1, B is 0.5");
    // With lda = 5 the GEMM reads bytes nothing wrote: an initcheck finding.
    let cfg = GemmConfig { lda: 5, ..cfg };
    assert_eq!(status(unsafe { blas.gemm(cfg, &a, &b, &mut c) }), 13, "CUBLAS_STATUS_EXECUTION_FAILED");
    let error: DriverError = stream.synchronize().expect_err("the fault is sticky");
    assert_eq!(error.0 as u32, 719, "CUDA_ERROR_LAUNCH_FAILED");
}

#[test]
fn initcheck_reads_what_the_gemm_reads() {
    let stderr = assert_child_passed("child_initcheck");
    let findings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("ptx-emu: ")).collect();
    assert_eq!(findings.len(), 1, "one finding expected:\n{stderr}");
    assert!(
        findings[0].starts_with("ptx-emu: Uninitialized in library call `cublasSgemm_v2`, operand `A`"),
        "{stderr}"
    );
}

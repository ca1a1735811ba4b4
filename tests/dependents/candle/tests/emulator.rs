//! candle's CUDA backend run on the device the test process finds (the
//! emulator under `scripts/run.sh test`): cuBLAS matmuls, candle-kernels'
//! elementwise, reduction and softmax kernels, candle-nn's fused layer kernels
//! (softmax, RMSNorm, LayerNorm, rotary embeddings), cuRAND's generators,
//! candle's quantized (GGUF) matmul through candle-kernels' statically
//! compiled kernels and the CUDA runtime, each compared with the same ops on
//! candle's CPU device; and fused-lora's forward run on candle's own stream
//! over candle tensors' memory.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Storage, Tensor, D};
use fused_lora::half::bf16;
use fused_lora::reference::tolerance::check_close;
use fused_lora::{Adapter, ForwardOutput, Linear, LoraKernels};

mod common;
use common::{cuda, values};

/// The same data on the CPU and on the CUDA device.
fn pair(seed: u64, shape: &[usize], gpu: &Device) -> (Tensor, Tensor) {
    let data = values(seed, shape.iter().product());
    let cpu = Tensor::from_vec(data, shape, &Device::Cpu).unwrap();
    let dev = cpu.to_device(gpu).unwrap();
    (cpu, dev)
}

fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1().unwrap()
}

/// Asserts `got` (from the device) equals `want` (from the CPU) within
/// `rel` of the largest magnitude; any NaN fails.
#[track_caller]
fn assert_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (got, want) = (flat_f32(got), flat_f32(want));
    let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= rel * scale, "{what}[{i}]: device {g}, cpu {w} (scale {scale})");
    }
}

#[test]
fn matmul_goes_through_cublas_and_matches_the_cpu() {
    let gpu = cuda();
    // Odd sizes, a batch, a transposed operand (cuBLAS's transpose flags).
    let (a_cpu, a_gpu) = pair(1, &[3, 7, 13], &gpu);
    let (b_cpu, b_gpu) = pair(2, &[3, 13, 5], &gpu);
    let want = a_cpu.matmul(&b_cpu).unwrap();
    assert_close("f32 batched matmul", &a_gpu.matmul(&b_gpu).unwrap(), &want, 1e-5);

    let (c_cpu, c_gpu) = pair(3, &[3, 5, 13], &gpu);
    let want_t = a_cpu.matmul(&c_cpu.transpose(1, 2).unwrap()).unwrap();
    let got_t = a_gpu.matmul(&c_gpu.transpose(1, 2).unwrap()).unwrap();
    assert_close("f32 matmul with a transposed rhs", &got_t, &want_t, 1e-5);

    // bf16 (GemmEx, f32 accumulation): both sides round the result once.
    let a16 = (a_cpu.to_dtype(DType::BF16).unwrap(), a_gpu.to_dtype(DType::BF16).unwrap());
    let b16 = (b_cpu.to_dtype(DType::BF16).unwrap(), b_gpu.to_dtype(DType::BF16).unwrap());
    let want16 = a16.0.matmul(&b16.0).unwrap();
    assert_close("bf16 batched matmul", &a16.1.matmul(&b16.1).unwrap(), &want16, 1e-2);
}

/// Softmax over the last dimension from candle-core's own ops.
fn softmax(t: &Tensor) -> Tensor {
    let max = t.max_keepdim(D::Minus1).unwrap();
    let e = t.broadcast_sub(&max).unwrap().exp().unwrap();
    e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
}

#[test]
fn candle_kernels_match_the_cpu() {
    let gpu = cuda();
    let (x_cpu, x_gpu) = pair(4, &[6, 37], &gpu);
    let (y_cpu, y_gpu) = pair(5, &[6, 37], &gpu);
    type Op = fn(&Tensor, &Tensor) -> Tensor;
    let ops: [(&str, Op); 10] = [
        ("add·mul", |x, y| ((x + y).unwrap() * y).unwrap()),
        ("affine", |x, _| x.affine(1.5, -0.25).unwrap()),
        ("exp, tanh", |x, _| x.exp().unwrap().tanh().unwrap()),
        ("sqr, sqrt", |x, _| x.sqr().unwrap().sqrt().unwrap()),
        ("sum over rows", |x, _| x.sum_keepdim(1).unwrap()),
        ("max over columns", |x, _| x.max_keepdim(0).unwrap()),
        ("softmax", |x, _| softmax(x)),
        ("transpose, contiguous", |x, _| x.t().unwrap().contiguous().unwrap()),
        ("cast to bf16 and back", |x, _| x.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap()),
        ("where, gt", |x, y| x.gt(y).unwrap().where_cond(x, y).unwrap()),
    ];
    for (what, op) in ops {
        assert_close(what, &op(&x_gpu, &y_gpu), &op(&x_cpu, &y_cpu), 1e-5);
    }
    let rows = Tensor::new(&[4u32, 0, 4, 2], &Device::Cpu).unwrap();
    let want = x_cpu.index_select(&rows, 0).unwrap();
    let got = x_gpu.index_select(&rows.to_device(&gpu).unwrap(), 0).unwrap();
    assert_close("index_select", &got, &want, 0.0);
    let sm = flat_f32(&softmax(&x_gpu).sum(1).unwrap());
    assert!(sm.iter().all(|s| (s - 1.0).abs() < 1e-5), "softmax rows sum to one: {sm:?}");
}

/// The fused kernels candle-nn's layers call (candle-kernels' reduce module):
/// softmax over the last dimension, RMSNorm, LayerNorm, the three rotary
/// embeddings and sigmoid, in f32 and bf16, each against candle-nn's CPU
/// implementation of the same op and against its composed ("slow") form.
#[test]
fn candle_nn_layer_kernels_match_the_cpu() {
    use candle_nn::{ops, rotary_emb};
    let gpu = cuda();
    // Rows of 37 (not a multiple of the 32-lane warp the kernels reduce over).
    let (x_cpu, x_gpu) = pair(20, &[6, 37], &gpu);
    let (alpha_cpu, alpha_gpu) = pair(21, &[37], &gpu);
    let (beta_cpu, beta_gpu) = pair(22, &[37], &gpu);
    // Rotary inputs: (batch, heads, time, dim) and (batch, time, heads, dim), cos/sin (time, dim / 2).
    let (q_cpu, q_gpu) = pair(23, &[2, 3, 5, 16], &gpu);
    let (qt_cpu, qt_gpu) = pair(24, &[2, 5, 3, 16], &gpu);
    let (cos_cpu, cos_gpu) = pair(25, &[5, 8], &gpu);
    let (sin_cpu, sin_gpu) = pair(26, &[5, 8], &gpu);

    for (dtype, rel) in [(DType::F32, 1e-5), (DType::BF16, 1e-2)] {
        let on = |t: &Tensor| t.to_dtype(dtype).unwrap();
        let (x, xg) = (on(&x_cpu), on(&x_gpu));
        let (alpha, alpha_g) = (on(&alpha_cpu), on(&alpha_gpu));
        let (beta, beta_g) = (on(&beta_cpu), on(&beta_gpu));
        let (q, qg, qt, qtg) = (on(&q_cpu), on(&q_gpu), on(&qt_cpu), on(&qt_gpu));
        let (cos, cos_g, sin, sin_g) = (on(&cos_cpu), on(&cos_gpu), on(&sin_cpu), on(&sin_gpu));
        let what = |op: &str| format!("{op} ({dtype:?})");

        let got = ops::softmax_last_dim(&xg).unwrap();
        assert_close(&what("softmax_last_dim"), &got, &ops::softmax_last_dim(&x).unwrap(), rel);
        assert_close(&what("softmax_last_dim vs softmax"), &got, &ops::softmax(&x, D::Minus1).unwrap(), rel);

        let got = ops::rms_norm(&xg, &alpha_g, 1e-5).unwrap();
        assert_close(&what("rms_norm"), &got, &ops::rms_norm(&x, &alpha, 1e-5).unwrap(), rel);
        assert_close(&what("rms_norm vs rms_norm_slow"), &got, &ops::rms_norm_slow(&x, &alpha, 1e-5).unwrap(), rel);

        let got = ops::layer_norm(&xg, &alpha_g, &beta_g, 1e-5).unwrap();
        assert_close(&what("layer_norm"), &got, &ops::layer_norm(&x, &alpha, &beta, 1e-5).unwrap(), rel);
        let slow = ops::layer_norm_slow(&x, &alpha, &beta, 1e-5).unwrap();
        assert_close(&what("layer_norm vs layer_norm_slow"), &got, &slow, rel);

        let got = rotary_emb::rope(&qg, &cos_g, &sin_g).unwrap();
        assert_close(&what("rope"), &got, &rotary_emb::rope(&q, &cos, &sin).unwrap(), rel);
        assert_close(&what("rope vs rope_slow"), &got, &rotary_emb::rope_slow(&q, &cos, &sin).unwrap(), rel);
        let got = rotary_emb::rope_i(&qg, &cos_g, &sin_g).unwrap();
        assert_close(&what("rope_i"), &got, &rotary_emb::rope_i(&q, &cos, &sin).unwrap(), rel);
        assert_close(&what("rope_i vs rope_i_slow"), &got, &rotary_emb::rope_i_slow(&q, &cos, &sin).unwrap(), rel);
        let got = rotary_emb::rope_thd(&qtg, &cos_g, &sin_g).unwrap();
        assert_close(&what("rope_thd"), &got, &rotary_emb::rope_thd(&qt, &cos, &sin).unwrap(), rel);

        assert_close(&what("sigmoid"), &ops::sigmoid(&xg).unwrap(), &ops::sigmoid(&x).unwrap(), rel);
    }
}

#[test]
fn curand_draws_follow_their_distributions_and_the_seed() {
    let gpu = cuda();
    gpu.set_seed(42).unwrap();
    let u = flat_f32(&Tensor::rand(2f32, 5f32, 8192, &gpu).unwrap());
    assert!(u.iter().all(|v| (2.0..5.0).contains(v)), "uniform draws in [2, 5)");
    let mean = u.iter().sum::<f32>() / u.len() as f32;
    assert!((mean - 3.5).abs() < 0.05, "uniform mean {mean}");

    let n = flat_f32(&Tensor::randn(1f32, 2f32, 8192, &gpu).unwrap());
    let mean = n.iter().sum::<f32>() / n.len() as f32;
    let var = n.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n.len() as f32;
    assert!((mean - 1.0).abs() < 0.1 && (var.sqrt() - 2.0).abs() < 0.1, "normal mean {mean}, std {}", var.sqrt());

    gpu.set_seed(42).unwrap();
    let again = flat_f32(&Tensor::rand(2f32, 5f32, 8192, &gpu).unwrap());
    assert_eq!(u, again, "the same seed gives the same draws");
}

/// The f64 value of every element of a bf16 tensor.
/// A bound on |computed - exact| for one output of a quantized matmul whose
/// activations are quantized to 8 bits per block of 32 (q8_1 on CUDA, q8_0 on
/// the CPU) against the weights `w` (dequantized): each activation moves by
/// at most half its block's step `amax / 127`, plus the f16 rounding of the
/// block's scale (`amax * 2^-10` covers it), each times `|w|`; and f32
/// accumulation.
fn q8_activation_bound(x: &[f32], w: &[f32]) -> f32 {
    let blocks = x.chunks(32).zip(w.chunks(32));
    let quantization: f32 = blocks
        .map(|(xb, wb)| {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            wb.iter().map(|v| v.abs()).sum::<f32>() * (amax / 254.0 + amax / 1024.0)
        })
        .sum();
    let magnitude: f32 = x.iter().zip(w).map(|(a, b)| (a * b).abs()).sum();
    quantization + 1e-5 * magnitude + 1e-6
}

/// candle's `QMatMul` on CUDA runs candle-kernels' GGUF kernels that are
/// compiled into a static library and launched with `<<<>>>` through the CUDA
/// runtime (the emulated libcudart): MMVQ for up to 8 rows of activations,
/// MMQ beyond. Checked against the weights dequantized on the CPU (within
/// the activations' quantization error) and against candle's CPU `QMatMul`.
#[test]
fn quantized_matmul_runs_the_static_gguf_kernels_and_matches_the_cpu() {
    let gpu = cuda();
    let (n, k) = (128, 256);
    let w_cpu = Tensor::from_vec(values(30, n * k), (n, k), &Device::Cpu).unwrap();
    for dtype in [GgmlDType::Q4_0, GgmlDType::Q8_0] {
        let q_cpu = QTensor::quantize(&w_cpu, dtype).unwrap();
        let w_deq: Vec<f32> = q_cpu.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let q_gpu = QTensor::quantize(&w_cpu.to_device(&gpu).unwrap(), dtype).unwrap();
        assert!(matches!(q_gpu.device(), Device::Cuda(_)), "{dtype:?}: the weights live on the device");
        let (mm_cpu, mm_gpu) = (QMatMul::from_qtensor(q_cpu).unwrap(), QMatMul::from_qtensor(q_gpu).unwrap());
        // 1 and 5 rows: MMVQ; 16 rows: MMQ.
        for rows in [1, 5, 16] {
            let x: Vec<f32> = values(31 + rows as u64, rows * k);
            let x_cpu = Tensor::from_vec(x.clone(), (rows, k), &Device::Cpu).unwrap();
            let got = flat_f32(&mm_gpu.forward(&x_cpu.to_device(&gpu).unwrap()).unwrap());
            let cpu = flat_f32(&mm_cpu.forward(&x_cpu).unwrap());
            assert_eq!(got.len(), rows * n, "{dtype:?}, {rows} rows: output shape");
            for (index, (g, c)) in got.iter().zip(&cpu).enumerate() {
                let (r, j) = (index / n, index % n);
                let (xr, wj) = (&x[r * k..(r + 1) * k], &w_deq[j * k..(j + 1) * k]);
                let exact: f32 = xr.iter().zip(wj).map(|(a, b)| a * b).sum();
                let bound = q8_activation_bound(xr, wj);
                let what = format!("{dtype:?}, {rows} rows, output [{r}, {j}]");
                assert!((g - exact).abs() <= bound, "{what}: device {g}, exact {exact}, bound {bound}");
                assert!((g - c).abs() <= 2.0 * bound, "{what}: device {g}, cpu {c}, bound {bound}");
            }
        }
    }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    flat_f32(t).into_iter().map(f64::from).collect()
}

#[test]
fn fused_lora_forward_runs_on_candle_stream_over_candle_tensors() {
    let gpu = cuda();
    let (m, k, n, r, scale) = (37usize, 64usize, 48usize, 8usize, 0.5f32);
    let bf = |seed, shape: &[usize]| {
        let (cpu, dev) = pair(seed, shape, &gpu);
        (cpu.to_dtype(DType::BF16).unwrap(), dev.to_dtype(DType::BF16).unwrap())
    };
    let (x_cpu, x) = bf(10, &[m, k]);
    let (w0_cpu, w0) = bf(11, &[n, k]);
    let (a_cpu, a) = bf(12, &[r, k]);
    let (b_cpu, b) = bf(13, &[n, r]);

    let Device::Cuda(device) = &gpu else { unreachable!() };
    let stream = device.cuda_stream();
    let kernels = LoraKernels::new(stream.context());
    // Y poisoned with NaN: an element the kernel does not write fails below.
    let mut y = stream.clone_htod(&vec![bf16::NAN; m * n]).unwrap();
    {
        // Read guards on candle's own buffers: the kernel reads them in place (no copies).
        let guards = [&x, &w0, &a, &b].map(|t| {
            let (storage, layout) = t.storage_and_layout();
            assert!(layout.is_contiguous() && layout.start_offset() == 0);
            storage
        });
        let views = guards.each_ref().map(|storage| match &**storage {
            Storage::Cuda(s) => s.as_cuda_slice::<bf16>().unwrap().as_view(),
            _ => unreachable!("a CUDA tensor"),
        });
        let [xs, ws, as_, bs] = views;
        let linear = Linear { weight: ws, bias: None, n, k };
        let adapter = Adapter { a: as_, b: bs, rank: r, scale };
        let mut out = ForwardOutput { y: y.as_view_mut(), p: None };
        kernels.forward(&stream, &xs, &linear, &adapter, None, &mut out).unwrap();
    }
    let y = Tensor::from_storage(
        Storage::Cuda(candle_core::cuda_backend::CudaStorage::wrap_cuda_slice(y, device.clone())),
        (m, n),
        candle_core::op::BackpropOp::none(),
        false,
    );
    let got = f64s(&y);

    // Exact: f64 from the bf16 inputs, P rounded to bf16 where the kernel rounds it.
    let (xv, wv, av, bv) = (f64s(&x_cpu), f64s(&w0_cpu), f64s(&a_cpu), f64s(&b_cpu));
    let dot = |u: &[f64], v: &[f64]| u.iter().zip(v).map(|(p, q)| p * q).sum::<f64>();
    let p: Vec<f64> = (0..m * r)
        .map(|i| f64::from(bf16::from_f64(dot(&xv[i / r * k..][..k], &av[i % r * k..][..k])).to_f32()))
        .collect();
    let exact: Vec<f64> = (0..m * n)
        .map(|i| {
            let (row, col) = (i / n, i % n);
            dot(&xv[row * k..][..k], &wv[col * k..][..k])
                + f64::from(scale) * dot(&p[row * r..][..r], &bv[col * r..][..r])
        })
        .collect();
    // Naive: candle's unfused computation in bf16 on the CPU.
    let naive = (x_cpu.matmul(&w0_cpu.t().unwrap()).unwrap()
        + (x_cpu.matmul(&a_cpu.t().unwrap()).unwrap().matmul(&b_cpu.t().unwrap()).unwrap() * f64::from(scale))
            .unwrap())
    .unwrap();
    check_close(&got, &exact, &f64s(&naive), 2f64.powi(-8), 1e-6, Some(n))
        .expect("fused forward within the bf16 bound");
}

//! `fused_lora::candle::LoraLinear` on candle's CUDA device (the emulator
//! under `scripts/run.sh test`): its fused forward and its backward through
//! candle's autograd, with and without dropout, against candle's own unfused
//! computation `x·W0ᵀ + bias + s·(X̃·Aᵀ)·Bᵀ` on the CPU, within
//! docs/contract.md's bound; merge and unmerge; layers built from PEFT-format
//! directories the tests write (rank/alpha patterns, rsLoRA, fan_in_fan_out,
//! each stored dtype) with the scales PEFT's rules give; adapters saved back in
//! PEFT's format.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::VarBuilder;
use fused_lora::candle::{save_peft, LoraAdapters, LoraLinear};
use fused_lora::half::{bf16, f16};
use fused_lora::peft::PeftAdapter;
use fused_lora::reference::tolerance::check_close;
use fused_lora::Dropout;
use safetensors::{serialize, tensor::TensorView, Dtype};

mod common;
use common::{cuda, values};

fn tensor(seed: u64, shape: &[usize], dtype: DType, device: &Device) -> Tensor {
    let t = Tensor::from_vec(values(seed, shape.iter().product()), shape, &Device::Cpu).unwrap();
    t.to_dtype(dtype).unwrap().to_device(device).unwrap()
}

fn f64s(t: &Tensor) -> Vec<f64> {
    let t = t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_device(&Device::Cpu).unwrap();
    t.to_vec1::<f32>().unwrap().into_iter().map(f64::from).collect()
}

/// The inputs of one layer, as host-side f32 tensors (the same values for every device and dtype).
struct Problem {
    x: Tensor,
    w0: Tensor,
    bias: Tensor,
    a: Tensor,
    b: Tensor,
    /// dY: the gradient the loss `Σ y·dY` gives the output.
    dy: Tensor,
    /// For a stack: ranks, scales, row indices; None: one adapter of scale `scale`.
    stack: Option<(Vec<usize>, Vec<f32>, Vec<i32>)>,
    scale: f32,
}

/// A layer over `p` on `device` in `dtype`, with A, B and X as candle `Var`s
/// and `dropout` on the adapter input; returns the output and the gradients
/// of X, A and B from candle's autograd.
fn run(p: &Problem, dtype: DType, device: &Device, fused: bool, dropout: Option<&Dropout>) -> [Tensor; 4] {
    let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
    let (x, a, b) = (
        Var::from_tensor(&on(&p.x)).unwrap(),
        Var::from_tensor(&on(&p.a)).unwrap(),
        Var::from_tensor(&on(&p.b)).unwrap(),
    );
    let adapters = match &p.stack {
        None => LoraAdapters::Single { a: a.as_tensor().clone(), b: b.as_tensor().clone(), scale: p.scale },
        Some((ranks, scales, rows)) => LoraAdapters::Stack {
            a: a.as_tensor().clone(),
            b: b.as_tensor().clone(),
            ranks: ranks.clone(),
            scales: scales.clone(),
            rows: Tensor::new(rows.as_slice(), device).unwrap(),
        },
    };
    let layer = LoraLinear::new(on(&p.w0), Some(on(&p.bias)), adapters).unwrap();
    let y = if fused {
        layer.forward_masked(x.as_tensor(), dropout).unwrap()
    } else {
        layer.forward_unfused_masked(x.as_tensor(), dropout).unwrap()
    };
    let loss = (y.to_dtype(DType::F32).unwrap() * on(&p.dy).to_dtype(DType::F32).unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grad = |v: &Var| grads.get(v.as_tensor()).expect("a gradient").clone();
    [y, grad(&x), grad(&a), grad(&b)]
}

/// Fused on the device vs candle's unfused computation: with T = f32 on the
/// CPU as the exact side and T = `dtype` on the CPU as the naive side, the
/// fused result's error is within the contract's bound.
fn check(p: &Problem, dtype: DType, unit_roundoff: f64) {
    check_masked(p, dtype, unit_roundoff, None);
}

/// [`check`] with the same dropout mask on every side: the fused kernels'
/// (drawn on the device) and the one the unfused computation builds on the host.
fn check_masked(p: &Problem, dtype: DType, unit_roundoff: f64, dropout: Option<&Dropout>) {
    let gpu = cuda();
    let got = run(p, dtype, &gpu, true, dropout);
    let exact = run(p, DType::F32, &Device::Cpu, false, dropout);
    let naive = run(p, dtype, &Device::Cpu, false, dropout);
    for (i, what) in ["y", "dX", "dA", "dB"].iter().enumerate() {
        assert_eq!(got[i].dims(), exact[i].dims(), "{what}: shape");
        check_close(&f64s(&got[i]), &f64s(&exact[i]), &f64s(&naive[i]), unit_roundoff, 1e-5, None)
            .unwrap_or_else(|e| panic!("{what} ({dtype:?}): {e:?}"));
    }
}

fn problem(m: usize, k: usize, n: usize, r: usize, stack: Option<(Vec<usize>, Vec<f32>, Vec<i32>)>) -> Problem {
    let cpu = Device::Cpu;
    let (a_dims, b_dims) = match &stack {
        None => (vec![r, k], vec![n, r]),
        Some((ranks, _, _)) => (vec![ranks.len(), r, k], vec![ranks.len(), n, r]),
    };
    let mut a = tensor(4, &a_dims, DType::F32, &cpu);
    let mut b = tensor(5, &b_dims, DType::F32, &cpu);
    if let Some((ranks, _, _)) = &stack {
        // The padding of each slot holds NaN: the kernels must never read it.
        let (mut av, mut bv) =
            (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        for (l, &rank) in ranks.iter().enumerate() {
            for j in rank..r {
                av[(l * r + j) * k..][..k].fill(f32::NAN);
                (0..n).for_each(|row| bv[(l * n + row) * r + j] = f32::NAN);
            }
        }
        a = Tensor::from_vec(av, a_dims.as_slice(), &cpu).unwrap();
        b = Tensor::from_vec(bv, b_dims.as_slice(), &cpu).unwrap();
    }
    Problem {
        x: tensor(1, &[2, m / 2, k], DType::F32, &cpu),
        w0: tensor(2, &[n, k], DType::F32, &cpu),
        bias: tensor(3, &[n], DType::F32, &cpu),
        a,
        b,
        dy: tensor(6, &[2, m / 2, n], DType::F32, &cpu),
        stack,
        scale: 0.75,
    }
}

#[test]
fn one_adapter_forward_and_gradients_match_candle_unfused() {
    let p = problem(38, 64, 48, 8, None);
    check(&p, DType::BF16, 2f64.powi(-8));
    check(&p, DType::F32, 2f64.powi(-24));
}

#[test]
fn adapter_stack_with_base_only_rows_matches_candle_unfused() {
    let rows = (0..38).map(|i| [0, 2, -1, 1, 2][i % 5]).collect();
    let p = problem(38, 64, 48, 8, Some((vec![8, 3, 5], vec![0.5, 2.0, -1.0], rows)));
    check(&p, DType::BF16, 2f64.powi(-8));
}

#[test]
fn bad_layers_are_errors_not_panics() {
    let gpu = cuda();
    let t = |seed, shape: &[usize]| tensor(seed, shape, DType::BF16, &gpu);
    let single = |a: Tensor, b: Tensor, scale: f32| LoraAdapters::Single { a, b, scale };
    // An empty weight (built on the CPU: a CUDA allocation of 0 bytes is itself refused).
    let cpu = |seed, shape: &[usize]| tensor(seed, shape, DType::BF16, &Device::Cpu);
    assert!(LoraLinear::new(cpu(2, &[48, 0]), None, single(cpu(4, &[8, 0]), cpu(5, &[48, 8]), 1.0)).is_err(), "k = 0");
    assert!(LoraLinear::new(t(2, &[48, 64]), None, single(t(4, &[8, 63]), t(5, &[48, 8]), 1.0)).is_err(), "A's k");
    assert!(LoraLinear::new(t(2, &[48, 64]), None, single(t(4, &[8, 64]), t(5, &[47, 8]), 1.0)).is_err(), "B's n");
    assert!(LoraLinear::new(t(2, &[48, 64]), None, single(t(4, &[8, 64]), t(5, &[48, 8]), f32::NAN)).is_err(), "scale");
    assert!(LoraLinear::new(t(2, &[48, 64]), Some(t(3, &[47])), single(t(4, &[8, 64]), t(5, &[48, 8]), 1.0)).is_err());
    let stack = |ranks: Vec<usize>, rows: &[i32]| LoraAdapters::Stack {
        a: t(4, &[2, 8, 64]),
        b: t(5, &[2, 48, 8]),
        scales: vec![1.0; ranks.len()],
        ranks,
        rows: Tensor::new(rows, &gpu).unwrap(),
    };
    assert!(LoraLinear::new(t(2, &[48, 64]), None, stack(vec![8, 4], &[0, 1, -1])).is_ok());
    assert!(LoraLinear::new(t(2, &[48, 64]), None, stack(vec![8, 9], &[0])).is_err(), "rank above r_max");
    assert!(LoraLinear::new(t(2, &[48, 64]), None, stack(vec![8, 4], &[0, 2])).is_err(), "row index 2 of 2 adapters");
    assert!(LoraLinear::new(t(2, &[48, 64]), None, stack(vec![8, 4], &[-2])).is_err(), "row index -2");
    let mut layer = LoraLinear::new(t(2, &[48, 64]), None, stack(vec![8, 4], &[0])).unwrap();
    assert!(layer.set_rows(Tensor::new(&[1i32, 5], &gpu).unwrap()).is_err());
    assert!(layer.set_rows(Tensor::new(&[1i32, -1], &gpu).unwrap()).is_ok());
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1().unwrap()
}

/// The largest `|got − want|` over the largest `|want|`.
fn relative_distance(got: &Tensor, want: &Tensor) -> f32 {
    let (got, want) = (host(got), host(want));
    assert_eq!(got.len(), want.len(), "lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "an all-zero reference proves nothing");
    got.iter().zip(&want).fold(0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

#[track_caller]
fn assert_rel_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let distance = relative_distance(got, want);
    assert!(distance <= rel, "{what}: relative distance {distance} > {rel}");
}

/// A layer over `p`'s W0, bias, A and B (one adapter) on `device` in `dtype`.
fn layer_on(p: &Problem, dtype: DType, device: &Device) -> LoraLinear {
    let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(device).unwrap();
    let adapters = LoraAdapters::Single { a: on(&p.a), b: on(&p.b), scale: p.scale };
    LoraLinear::new(on(&p.w0), Some(on(&p.bias)), adapters).unwrap()
}

#[test]
fn dropout_forward_and_gradients_match_candle_unfused_with_the_same_mask() {
    let d = Dropout::new(0.25, 0x5eed_1234_abcd, 3).unwrap();
    let p = problem(38, 64, 48, 8, None);
    check_masked(&p, DType::BF16, 2f64.powi(-8), Some(&d));
    check_masked(&p, DType::F32, 2f64.powi(-24), Some(&d));
    let rows = (0..38).map(|i| [1, -1, 0, 2][i % 4]).collect();
    let stack = problem(38, 64, 48, 8, Some((vec![8, 3, 5], vec![0.5, 2.0, -1.0], rows)));
    check_masked(&stack, DType::BF16, 2f64.powi(-8), Some(&d));

    // The mask matters: the output and every gradient of the adapter path
    // move far beyond the bounds above when it is left out.
    let masked = run(&p, DType::F32, &Device::Cpu, false, Some(&d));
    let plain = run(&p, DType::F32, &Device::Cpu, false, None);
    for (i, what) in ["y", "dX", "dA", "dB"].iter().enumerate() {
        let distance = relative_distance(&masked[i], &plain[i]);
        assert!(distance > 0.02, "{what}: dropout changed it by only {distance}");
    }
}

#[test]
fn training_mode_draws_a_fresh_mask_per_forward_and_eval_mode_none() {
    let p = problem(38, 64, 48, 8, None);
    for device in [cuda(), Device::Cpu] {
        let mut layer = layer_on(&p, DType::BF16, &device);
        let x = p.x.to_dtype(DType::BF16).unwrap().to_device(&device).unwrap();
        layer.set_dropout(0.5, 77).unwrap();
        let plain = host(&layer.forward_masked(&x, None).unwrap());
        assert!(!layer.is_training() && layer.next_dropout().is_none(), "eval mode by default");
        assert_eq!(host(&layer.forward(&x).unwrap()), plain, "eval mode: no dropout");
        layer.set_training(true);
        let mut outputs = Vec::new();
        for offset in 0..2 {
            let d = Dropout { p: 0.5, seed: 77, offset };
            assert_eq!(layer.next_dropout(), Some(d), "forward {offset}'s mask");
            let y = host(&layer.forward(&x).unwrap());
            assert_eq!(y, host(&layer.forward_masked(&x, Some(&d)).unwrap()), "forward {offset} ({device:?})");
            assert_ne!(y, plain, "forward {offset} dropped nothing");
            outputs.push(y);
        }
        assert_ne!(outputs[0], outputs[1], "two training forwards drew the same mask");
        layer.set_training(false);
        assert_eq!(host(&layer.forward(&x).unwrap()), plain, "eval mode again");
        assert!(layer.set_dropout(1.0, 0).is_err() && layer.set_dropout(f32::NAN, 0).is_err());
        layer.set_dropout(0.0, 0).unwrap();
        layer.set_training(true);
        assert!(layer.next_dropout().is_none(), "p = 0 draws no mask");
    }
}

#[test]
fn merged_forward_equals_the_fused_forward_and_unmerge_restores_w0() {
    let p = problem(38, 64, 48, 8, None);
    let gpu = cuda();
    for (dtype, u) in [(DType::BF16, 2f64.powi(-8)), (DType::F32, 2f64.powi(-24))] {
        // The exact side: f32 on the CPU, unfused and unmerged; the naive side:
        // the layer merged by candle's ops on the CPU in `dtype`.
        let exact_y = f64s(&layer_on(&p, DType::F32, &Device::Cpu).forward_unfused(&p.x).unwrap());
        let mut naive = layer_on(&p, dtype, &Device::Cpu);
        naive.merge().unwrap();
        let naive_y = f64s(&naive.forward(&p.x.to_dtype(dtype).unwrap()).unwrap());
        let naive_w = f64s(naive.weight());
        // W0 + s·B·A in f64 from `dtype`'s values.
        let [w0, a, b] = [&p.w0, &p.a, &p.b].map(|t| f64s(&t.to_dtype(dtype).unwrap()));
        let (n, k, r) = (48, 64, 8);
        let exact_w: Vec<f64> = (0..n * k)
            .map(|i| w0[i] + f64::from(p.scale) * (0..r).map(|j| b[i / k * r + j] * a[j * k + i % k]).sum::<f64>())
            .collect();
        for device in [&gpu, &Device::Cpu] {
            let what = format!("{dtype:?} on {device:?}");
            let mut layer = layer_on(&p, dtype, device);
            let x = p.x.to_dtype(dtype).unwrap().to_device(device).unwrap();
            let fused = f64s(&layer.forward(&x).unwrap());
            check_close(&fused, &exact_y, &naive_y, u, 1e-5, Some(48))
                .unwrap_or_else(|e| panic!("fused, {what}: {e:?}"));
            let original = f64s(layer.weight());
            layer.merge().unwrap();
            assert!(layer.is_merged() && layer.merge().is_err(), "merged once, not twice");
            let merged_w = f64s(layer.weight());
            check_close(&merged_w, &exact_w, &naive_w, u, 1e-6, Some(k))
                .unwrap_or_else(|e| panic!("merged weight, {what}: {e:?}"));
            let merged = f64s(&layer.forward(&x).unwrap());
            check_close(&merged, &exact_y, &naive_y, u, 1e-5, Some(48))
                .unwrap_or_else(|e| panic!("merged forward, {what}: {e:?}"));
            assert_ne!(merged, fused, "the merged forward is the plain linear layer, not the fused kernel");
            layer.unmerge().unwrap();
            assert!(!layer.is_merged() && layer.unmerge().is_err(), "unmerged once, not twice");
            // Two roundings: of the merged weight, then of the unmerged one.
            let restored = f64s(layer.weight());
            for i in 0..n * k {
                let bound = u * (merged_w[i].abs() + restored[i].abs());
                let error = (restored[i] - original[i]).abs();
                assert!(error <= bound, "unmerged W[{i}], {what}: {} vs {} (bound {bound})", restored[i], original[i]);
            }
            let after = f64s(&layer.forward(&x).unwrap());
            check_close(&after, &exact_y, &naive_y, u, 1e-5, Some(48))
                .unwrap_or_else(|e| panic!("forward after unmerge, {what}: {e:?}"));
        }
    }
    // A merge whose result overflows is refused and changes nothing.
    for device in [&gpu, &Device::Cpu] {
        let on = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_device(device).unwrap();
        let huge = LoraAdapters::Single { a: on(&p.a), b: on(&p.b), scale: 3e38 };
        let mut layer = LoraLinear::new(on(&p.w0), None, huge).unwrap();
        assert!(layer.merge().is_err(), "an overflowing merge on {device:?}");
        assert!(!layer.is_merged());
        assert_eq!(host(layer.weight()), host(&on(&p.w0)), "W0 untouched on {device:?}");
    }
    // A stack has no one weight to merge into.
    let rows = vec![0, 1, -1];
    let stack = problem(38, 64, 48, 8, Some((vec![8, 4], vec![1.0, 1.0], rows.clone())));
    let on = |t: &Tensor| t.to_dtype(DType::BF16).unwrap().to_device(&gpu).unwrap();
    let adapters = LoraAdapters::Stack {
        a: on(&stack.a),
        b: on(&stack.b),
        ranks: vec![8, 4],
        scales: vec![1.0, 1.0],
        rows: Tensor::new(rows.as_slice(), &gpu).unwrap(),
    };
    assert!(LoraLinear::new(on(&stack.w0), None, adapters).unwrap().merge().is_err(), "a stack merged");
}

/// A PEFT-format directory the tests write: `config` as adapter_config.json;
/// per module (name, A `[r, k]`, B `[n, r]`) in adapter_model.safetensors,
/// stored as `dtype`. Returns the directory and, per module, A and B as
/// their stored values read back as f32.
fn write_peft(
    name: &str,
    config: &str,
    modules: &[(String, Tensor, Tensor)],
    dtype: Dtype,
) -> (PathBuf, Vec<[Tensor; 2]>) {
    // A fresh folder per call: tests running at once write the same cases.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fused-lora-peft-{}-{call}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    let stored = |t: &Tensor| -> (Vec<u8>, Tensor) {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let (bytes, back): (Vec<u8>, Vec<f32>) = match dtype {
            Dtype::F32 => (v.iter().flat_map(|x| x.to_le_bytes()).collect(), v.clone()),
            Dtype::F16 => (
                v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
                v.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
            ),
            Dtype::BF16 => (
                v.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
                v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
            ),
            other => panic!("{other:?}"),
        };
        (bytes, Tensor::from_vec(back, t.dims(), &Device::Cpu).unwrap())
    };
    let mut files = Vec::new();
    let mut values = Vec::new();
    for (module, a, b) in modules {
        let ((a_bytes, a_back), (b_bytes, b_back)) = (stored(a), stored(b));
        files.push((format!("base_model.model.{module}.lora_A.weight"), a.dims().to_vec(), a_bytes));
        files.push((format!("base_model.model.{module}.lora_B.weight"), b.dims().to_vec(), b_bytes));
        values.push([a_back, b_back]);
    }
    let views: Vec<(String, TensorView<'_>)> = files
        .iter()
        .map(|(name, shape, bytes)| (name.clone(), TensorView::new(dtype, shape.clone(), bytes).unwrap()))
        .collect();
    std::fs::write(dir.join("adapter_model.safetensors"), serialize(views, None).unwrap()).unwrap();
    (dir, values)
}

/// One module of a PEFT case: its name, [n, k], the rank and α PEFT's rules
/// give it (worked out by hand from the case's config), and whether the base
/// layer has a bias.
struct Expect {
    module: &'static str,
    n: usize,
    k: usize,
    rank: usize,
    alpha: f64,
    bias: bool,
}

struct PeftCase {
    name: &'static str,
    config: &'static str,
    stored: Dtype,
    rslora: bool,
    fan_in_fan_out: bool,
    modules: Vec<Expect>,
}

fn peft_cases() -> Vec<PeftCase> {
    let e = |module, n, k, rank, alpha, bias| Expect { module, n, k, rank, alpha, bias };
    vec![
        // The first key (in the file's order) that matches at a dot boundary wins.
        PeftCase {
            name: "patterns",
            config: r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "bias": "none",
                "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM",
                "rank_pattern": {"q_proj": 4, "layers.1.self_attn.v_proj": 2, "v_proj": 6},
                "alpha_pattern": {"layers.1.self_attn.q_proj": 2, "q_proj": 32}}"#,
            stored: Dtype::F32,
            rslora: false,
            fan_in_fan_out: false,
            modules: vec![
                e("model.layers.0.self_attn.q_proj", 32, 32, 4, 32.0, true),
                e("model.layers.0.self_attn.v_proj", 32, 32, 6, 16.0, false),
                e("model.layers.1.self_attn.q_proj", 32, 32, 4, 2.0, false),
                e("model.layers.1.self_attn.v_proj", 32, 32, 2, 16.0, false),
            ],
        },
        PeftCase {
            name: "rslora",
            config: r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_rslora": true, "lora_dropout": 0.0,
                "target_modules": ["up_proj", "down_proj"], "rank_pattern": {"down_proj": 16}}"#,
            stored: Dtype::BF16,
            rslora: true,
            fan_in_fan_out: false,
            modules: vec![
                e("model.layers.0.mlp.up_proj", 48, 32, 4, 8.0, false),
                e("model.layers.0.mlp.down_proj", 32, 48, 16, 8.0, false),
            ],
        },
        // GPT-2's Conv1D: base weights stored [in, out]; target_modules as a regex.
        PeftCase {
            name: "fan-in-fan-out",
            config: r#"{"peft_type": "LORA", "r": 8, "lora_alpha": 8, "fan_in_fan_out": true,
                "target_modules": ".*\\.(c_attn|c_fc)", "alpha_pattern": {"c_fc": 4}}"#,
            stored: Dtype::F16,
            rslora: false,
            fan_in_fan_out: true,
            modules: vec![
                e("transformer.h.0.attn.c_attn", 96, 32, 8, 8.0, true),
                e("transformer.h.0.mlp.c_fc", 64, 32, 8, 4.0, true),
            ],
        },
    ]
}

/// A case written to disk: the adapter directory, the base model's tensors
/// (as a `VarBuilder` would hold them), and per module W0 `[n, k]`, the
/// bias, and A, B as stored.
struct Written {
    dir: PathBuf,
    base: HashMap<String, Tensor>,
    modules: Vec<(Tensor, Option<Tensor>, [Tensor; 2])>,
}

fn write_case(case: &PeftCase, seed: u64) -> Written {
    let cpu = Device::Cpu;
    let mut base = HashMap::new();
    let mut adapters = Vec::new();
    let mut weights = Vec::new();
    for (i, m) in case.modules.iter().enumerate() {
        let s = seed + 10 * i as u64;
        let w0 = (tensor(s, &[m.n, m.k], DType::F32, &cpu) * 0.2).unwrap();
        let stored_w = if case.fan_in_fan_out { w0.t().unwrap().contiguous().unwrap() } else { w0.clone() };
        base.insert(format!("{}.weight", m.module), stored_w);
        let bias = m.bias.then(|| tensor(s + 1, &[m.n], DType::F32, &cpu));
        if let Some(bias) = &bias {
            base.insert(format!("{}.bias", m.module), bias.clone());
        }
        let a = (tensor(s + 2, &[m.rank, m.k], DType::F32, &cpu) * 0.3).unwrap();
        let b = (tensor(s + 3, &[m.n, m.rank], DType::F32, &cpu) * 0.3).unwrap();
        adapters.push((m.module.to_string(), a, b));
        weights.push((w0, bias));
    }
    let (dir, stored) = write_peft(case.name, case.config, &adapters, case.stored);
    let modules = weights.into_iter().zip(stored).map(|((w0, bias), ab)| (w0, bias, ab)).collect();
    Written { dir, base, modules }
}

fn single_of(layer: &LoraLinear) -> (Tensor, Tensor, f32) {
    match layer.adapters() {
        LoraAdapters::Single { a, b, scale } => (a.clone(), b.clone(), *scale),
        LoraAdapters::Stack { .. } => panic!("from_peft built a stack"),
    }
}

#[test]
fn layers_from_peft_directories_follow_peft_rules() {
    let gpu = cuda();
    for (c, case) in peft_cases().iter().enumerate() {
        let written = write_case(case, 100 * c as u64);
        let adapter = PeftAdapter::<f32>::load(&written.dir).unwrap();
        for (dtype, rel) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
            let vb = VarBuilder::from_tensors(written.base.clone(), dtype, &gpu);
            for (m, (w0, bias, [a, b])) in case.modules.iter().zip(&written.modules) {
                let what = format!("{} {} ({dtype:?})", case.name, m.module);
                let layer = LoraLinear::from_peft(&vb, &adapter, m.module).unwrap();
                // PEFT's LoraLayer.update_layer: α/√r with rsLoRA, else α/r.
                let r = m.rank as f64;
                let want = if case.rslora { m.alpha / r.sqrt() } else { m.alpha / r } as f32;
                let (got_a, got_b, scale) = single_of(&layer);
                assert_eq!(scale, want, "{what}: scale");
                assert_eq!(got_a.dims(), &[m.rank, m.k], "{what}: A's shape");
                assert_eq!(got_b.dims(), &[m.n, m.rank], "{what}: B's shape");
                assert_eq!(got_a.dtype(), dtype, "{what}: A's dtype");
                // The stored values, rounded once more to the model's dtype.
                let as_model = |t: &Tensor| host(&t.to_dtype(dtype).unwrap());
                assert_eq!(host(&got_a), as_model(a), "{what}: A");
                assert_eq!(host(&got_b), as_model(b), "{what}: B");
                assert_eq!(host(layer.weight()), as_model(w0), "{what}: W0 [out, in]");
                assert_eq!(layer.bias().map(host), bias.as_ref().map(as_model), "{what}: bias");
                assert_eq!(layer.trainable_vars().len(), 2, "{what}: A and B are Vars");
                let mut dropout = layer.clone();
                dropout.set_training(true);
                let p = dropout.next_dropout().map(|d| d.p).unwrap_or(0.0);
                let config_p: f64 = if case.name == "patterns" { 0.1 } else { 0.0 };
                assert_eq!(p, config_p as f32, "{what}: lora_dropout");

                // The forward against x·W0ᵀ + bias + s·(x·Aᵀ)·Bᵀ from the stored values, on the CPU in f32.
                let x = tensor(7, &[6, m.k], DType::F32, &Device::Cpu);
                let mut want_y = x.matmul(&w0.t().unwrap()).unwrap();
                if let Some(bias) = bias {
                    want_y = want_y.broadcast_add(bias).unwrap();
                }
                let lora = x.matmul(&a.t().unwrap()).unwrap().matmul(&b.t().unwrap()).unwrap();
                let want_y = (want_y + (lora * f64::from(want)).unwrap()).unwrap();
                let got_y = layer.forward(&x.to_dtype(dtype).unwrap().to_device(&gpu).unwrap()).unwrap();
                assert_rel_close(&what, &got_y, &want_y, rel);
            }
            assert!(LoraLinear::from_peft(&vb, &adapter, "model.layers.9.self_attn.q_proj").is_err(), "no adapter");
        }
        // A base model whose weight has another shape than the adapter's.
        let mut wrong = written.base.clone();
        let key = format!("{}.weight", case.modules[0].module);
        let (n, k) = (case.modules[0].n, case.modules[0].k);
        wrong.insert(key, Tensor::zeros((n + 1, k + 1), DType::F32, &Device::Cpu).unwrap());
        let vb = VarBuilder::from_tensors(wrong, DType::F32, &gpu);
        assert!(LoraLinear::from_peft(&vb, &adapter, case.modules[0].module).is_err(), "{}: W0's shape", case.name);
        std::fs::remove_dir_all(&written.dir).unwrap();
    }
}

#[test]
fn adapters_saved_in_peft_format_load_back_as_they_were() {
    let gpu = cuda();
    let cases = peft_cases();
    for (case, dtype) in [(&cases[0], DType::F32), (&cases[1], DType::BF16)] {
        let written = write_case(case, 500);
        let adapter = PeftAdapter::<f32>::load(&written.dir).unwrap();
        let vb = VarBuilder::from_tensors(written.base.clone(), dtype, &gpu);
        let layers: Vec<LoraLinear> =
            case.modules.iter().map(|m| LoraLinear::from_peft(&vb, &adapter, m.module).unwrap()).collect();
        // Changed as an optimizer would change them, through their Vars.
        for var in layers.iter().flat_map(LoraLinear::trainable_vars) {
            var.set(&((var.as_tensor() * 1.5).unwrap() + 0.01).unwrap()).unwrap();
        }
        let named: Vec<(&str, &LoraLinear)> = case.modules.iter().map(|m| m.module).zip(&layers).collect();
        let out = std::env::temp_dir().join(format!("fused-lora-saved-{}-{}", std::process::id(), case.name));
        save_peft(&out, &adapter.config, &named).unwrap();

        // PEFT's files: the config as it was, the tensors under PEFT's names in the layers' dtype.
        let config = std::fs::read_to_string(out.join("adapter_config.json")).unwrap();
        assert_eq!(config, case.config, "{}: adapter_config.json", case.name);
        let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names = file.names();
        names.sort();
        let mut want: Vec<String> = case
            .modules
            .iter()
            .flat_map(|m| ["A", "B"].map(|h| format!("base_model.model.{}.lora_{h}.weight", m.module)))
            .collect();
        want.sort();
        assert_eq!(names, want, "{}: tensor names", case.name);
        let stored = if dtype == DType::F32 { Dtype::F32 } else { Dtype::BF16 };
        assert!(want.iter().all(|n| file.tensor(n).unwrap().dtype() == stored), "{}: stored as {stored:?}", case.name);

        // Loaded back: the same ranks, scales and values, and the same layers.
        let reloaded = PeftAdapter::<f32>::load(&out).unwrap();
        for (m, layer) in case.modules.iter().zip(&layers) {
            let (a, b, scale) = single_of(layer);
            let module = reloaded.module(m.module).unwrap();
            assert_eq!((module.rank, module.scale), (m.rank, scale), "{}: rank and scale", m.module);
            assert_eq!(module.a, host(&a), "{}: A", m.module);
            assert_eq!(module.b, host(&b), "{}: B", m.module);
            let again = LoraLinear::from_peft(&vb, &reloaded, m.module).unwrap();
            let x = tensor(8, &[6, m.k], dtype, &gpu);
            assert_eq!(host(&again.forward(&x).unwrap()), host(&layer.forward(&x).unwrap()), "{}: forward", m.module);
        }

        // What PEFT could not load is refused.
        assert!(save_peft(&out, &adapter.config, &[]).is_err(), "no layers");
        assert!(
            save_peft(&out, &adapter.config, &[("model.layers.0.mlp.gate_proj", &layers[0])]).is_err(),
            "untargeted"
        );
        assert!(save_peft(&out, &adapter.config, &[named[0], named[0]]).is_err(), "a module twice");
        // layers[1] has another rank (or scale) than the config gives module 0.
        assert!(save_peft(&out, &adapter.config, &[(named[0].0, named[1].1)]).is_err(), "rank or scale");
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_dir_all(&written.dir).unwrap();
    }
}

#[test]
fn a_stack_from_peft_directories_equals_each_adapter_alone() {
    let gpu = cuda();
    let case = &peft_cases()[0];
    let first = write_case(case, 700);
    // A second adapter on the q projections only (rank 2): on v_proj its slot is empty.
    let config = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 3, "target_modules": ["q_proj"]}"#;
    let q_only: Vec<(String, Tensor, Tensor)> = case
        .modules
        .iter()
        .filter(|m| m.module.ends_with("q_proj"))
        .map(|m| {
            let a = tensor(800, &[2, m.k], DType::F32, &Device::Cpu);
            (m.module.to_string(), a, tensor(801, &[m.n, 2], DType::F32, &Device::Cpu))
        })
        .collect();
    let (second_dir, _) = write_peft("q-only", config, &q_only, Dtype::F32);
    let adapters = [PeftAdapter::<f32>::load(&first.dir).unwrap(), PeftAdapter::<f32>::load(&second_dir).unwrap()];
    let both = [&adapters[0], &adapters[1]];
    let vb = VarBuilder::from_tensors(first.base.clone(), DType::F32, &gpu);
    let choice = [0i32, 1, -1, 1, 0, -1];
    let rows = Tensor::new(&choice, &gpu).unwrap();
    for m in &case.modules {
        let stack = LoraLinear::from_peft_stack(&vb, &both, m.module, rows.clone()).unwrap();
        let x = tensor(9, &[choice.len(), m.k], DType::F32, &gpu);
        let y = stack.forward(&x).unwrap();
        let one = LoraLinear::from_peft(&vb, &adapters[0], m.module).unwrap();
        let mut base_only = x.matmul(&one.weight().t().unwrap()).unwrap();
        if let Some(bias) = one.bias() {
            base_only = base_only.broadcast_add(bias).unwrap();
        }
        for (row, &c) in choice.iter().enumerate() {
            let alone = match usize::try_from(c) {
                Ok(slot) if adapters[slot].module(m.module).is_some() => {
                    LoraLinear::from_peft(&vb, &adapters[slot], m.module).unwrap().forward(&x).unwrap()
                }
                // No adapter for the row, or its adapter lacks the module: the base layer alone.
                _ => base_only.clone(),
            };
            let what = format!("{} row {row} (slot {c})", m.module);
            assert_rel_close(&what, &y.narrow(0, row, 1).unwrap(), &alone.narrow(0, row, 1).unwrap(), 1e-5);
        }
    }
    assert!(LoraLinear::from_peft_stack(&vb, &[], case.modules[0].module, rows.clone()).is_err(), "no adapters");
    let missing = LoraLinear::from_peft_stack(&vb, &both, "model.layers.0.mlp.up_proj", rows.clone());
    assert!(missing.is_err(), "a module no adapter has");
    let bad_rows = Tensor::new(&[0i32, 2], &gpu).unwrap();
    assert!(LoraLinear::from_peft_stack(&vb, &both, case.modules[0].module, bad_rows).is_err(), "row index 2 of 2");
    std::fs::remove_dir_all(&first.dir).unwrap();
    std::fs::remove_dir_all(&second_dir).unwrap();
}

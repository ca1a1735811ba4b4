//! `fused_lora::candle::LoraLinear` on candle's CUDA device (the emulator
//! under `scripts/run.sh test`): its fused forward and its backward through
//! candle's autograd, against candle's own unfused computation
//! `x·W0ᵀ + bias + s·(x·Aᵀ)·Bᵀ` on the CPU, within docs/contract.md's bound.

use candle_core::{DType, Device, Module, Tensor, Var};
use fused_lora::candle::{LoraAdapters, LoraLinear};
use fused_lora::reference::tolerance::check_close;

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

/// A layer over `p` on `device` in `dtype`, with A, B and X as candle `Var`s;
/// returns the output and the gradients of X, A and B from candle's autograd.
fn run(p: &Problem, dtype: DType, device: &Device, fused: bool) -> [Tensor; 4] {
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
    let y = if fused { layer.forward(x.as_tensor()).unwrap() } else { layer.forward_unfused(x.as_tensor()).unwrap() };
    let loss = (y.to_dtype(DType::F32).unwrap() * on(&p.dy).to_dtype(DType::F32).unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grad = |v: &Var| grads.get(v.as_tensor()).expect("a gradient").clone();
    [y, grad(&x), grad(&a), grad(&b)]
}

/// Fused on the device vs candle's unfused computation: with T = f32 on the
/// CPU as the exact side and T = `dtype` on the CPU as the naive side, the
/// fused result's error is within the contract's bound.
fn check(p: &Problem, dtype: DType, unit_roundoff: f64) {
    let gpu = cuda();
    let got = run(p, dtype, &gpu, true);
    let exact = run(p, DType::F32, &Device::Cpu, false);
    let naive = run(p, dtype, &Device::Cpu, false);
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

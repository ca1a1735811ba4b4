//! The optimizers follow PyTorch's update rules, checked against the formulas
//! written out by hand for a few steps.

use fused_lora::reference::{AdamW, Sgd};

#[test]
fn sgd_takes_a_plain_gradient_step() {
    let mut w = [1.0f32, -2.0];
    let mut opt = Sgd::new(0.5);
    opt.step(&mut w, &[0.25, -1.0]).unwrap();
    assert_eq!(w, [0.875, -1.5]);
}

#[test]
fn sgd_momentum_starts_the_buffer_at_the_gradient() {
    // PyTorch: b₁ = g₁, b_t = μ·b_{t−1} + g_t, w ← w − lr·b.
    let (lr, mu) = (0.1, 0.9);
    let mut w = [1.0f64];
    let mut opt = Sgd::with_momentum(lr, mu);
    let grads = [2.0, -1.0, 0.5];
    let mut expected_w = 1.0;
    let mut buffer = 0.0;
    for (t, &g) in grads.iter().enumerate() {
        opt.step(&mut w, &[g]).unwrap();
        buffer = if t == 0 { g } else { mu * buffer + g };
        expected_w -= lr * buffer;
        assert_eq!(w[0], expected_w, "step {t}");
    }
}

#[test]
fn sgd_nesterov_dampening_and_weight_decay() {
    let mut opt = Sgd::with_momentum(1.0, 0.5);
    opt.dampening = 0.25;
    opt.weight_decay = 0.1;
    opt.nesterov = true;
    let mut w = [2.0f64];
    // Step 1: g = 1 + 0.1·2 = 1.2; b = g = 1.2; nesterov g = 1.2 + 0.5·1.2 = 1.8; w = 0.2.
    opt.step(&mut w, &[1.0]).unwrap();
    assert!((w[0] - 0.2).abs() < 1e-15, "{}", w[0]);
    // Step 2: g = 1 + 0.02 = 1.02; b = 0.5·1.2 + 0.75·1.02 = 1.365; g = 1.02 + 0.6825 = 1.7025.
    opt.step(&mut w, &[1.0]).unwrap();
    assert!((w[0] - (0.2 - 1.7025)).abs() < 1e-15, "{}", w[0]);
}

#[test]
fn adamw_matches_the_pytorch_formulas() {
    let (lr, b1, b2, eps, wd) = (0.01, 0.9, 0.999, 1e-8, 0.1);
    let mut opt = AdamW::new(lr, b1, b2, eps, wd).unwrap();
    let mut w = [0.5f64, -1.0];
    let grads = [[0.3, -0.2], [0.1, 0.4], [-0.5, 0.05]];
    let (mut m, mut v, mut expected) = ([0.0f64; 2], [0.0f64; 2], w);
    for (t, g) in grads.iter().enumerate() {
        opt.step(&mut w, g).unwrap();
        let t = (t + 1) as i32;
        for i in 0..2 {
            expected[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g[i];
            v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            let m_hat = m[i] / (1.0 - b1.powi(t));
            let v_hat = v[i] / (1.0 - b2.powi(t));
            expected[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        for i in 0..2 {
            assert!((w[i] - expected[i]).abs() < 1e-15, "step {t} element {i}: {} vs {}", w[i], expected[i]);
        }
    }
    // The first Adam step moves each weight by about lr against the gradient's sign.
    let mut fresh = AdamW::new(lr, b1, b2, eps, 0.0).unwrap();
    let mut w = [0.0f64, 0.0];
    fresh.step(&mut w, &[3.0, -0.001]).unwrap();
    assert!((w[0] + lr).abs() < 1e-9 && (w[1] - lr).abs() < 1e-6, "{w:?}");
}

#[test]
fn f32_master_weights_round_once_per_step() {
    let mut w32 = [0.1f32];
    let mut w64 = [0.1f32 as f64];
    let (mut a, mut b) = (Sgd::new(1e-3), Sgd::new(1e-3));
    a.step(&mut w32, &[0.3]).unwrap();
    b.step(&mut w64, &[0.3]).unwrap();
    assert_eq!(w32[0], w64[0] as f32);
}

#[test]
fn mismatched_lengths_and_bad_hyper_parameters_are_errors() {
    let mut w = [0.0f32; 3];
    assert!(Sgd::new(0.1).step(&mut w, &[1.0, 2.0]).is_err());
    let mut momentum = Sgd::with_momentum(0.1, 0.9);
    momentum.step(&mut w, &[1.0; 3]).unwrap();
    assert!(momentum.step(&mut [0.0f32; 2], &[1.0; 2]).is_err(), "the momentum buffer fixes the length");
    assert!(AdamW::new(0.1, 1.0, 0.999, 1e-8, 0.0).is_err());
    assert!(AdamW::new(0.1, 0.9, -0.1, 1e-8, 0.0).is_err());
    assert!(AdamW::new(0.1, 0.9, 0.999, f64::NAN, 0.0).is_err());
    let mut adam = AdamW::with_defaults(0.1);
    adam.step(&mut w, &[1.0; 3]).unwrap();
    assert!(adam.step(&mut [0.0f32; 4], &[1.0; 4]).is_err());
}

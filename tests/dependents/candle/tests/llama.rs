//! A small Llama-style decoder (2 layers: embedding, RMSNorm, rotary
//! attention, SwiGLU MLP) built from candle-nn's ops, whose q/k/v/o
//! projections are `fused_lora::candle::LoraLinear`s with adapters read from
//! PEFT-format directories the test writes. On candle's CUDA device (the
//! emulator under `scripts/run.sh test`):
//! - logits and every adapter's gradients equal candle's own unfused
//!   computation on the CPU (f32: the network is compared, not one kernel,
//!   so the bound is relative, 1e-4 for logits and 1e-3 for gradients);
//! - 20 AdamW steps lower the loss;
//! - a mixed batch of 3 adapters (stacked by `LoraLinear::from_peft_stack`)
//!   and base-only rows equals each adapter alone.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use fused_lora::candle::{LoraAdapters, LoraLinear};
use fused_lora::peft::PeftAdapter;
use safetensors::{serialize, tensor::TensorView, Dtype};

mod common;
use common::{cuda, values};

const VOCAB: usize = 32;
const HIDDEN: usize = 64;
const HEADS: usize = 2;
const HEAD_DIM: usize = HIDDEN / HEADS;
const FFN: usize = 128;
const LAYERS: usize = 2;
const SEQ: usize = 8;
const PROJECTIONS: [&str; 4] = ["q_proj", "k_proj", "v_proj", "o_proj"];

/// A `[rows, cols]` weight scaled by 1/√cols, so activations stay O(1).
fn weight(seed: u64, rows: usize, cols: usize, device: &Device) -> Tensor {
    let scale = 1.0 / (cols as f32).sqrt();
    let v = values(seed, rows * cols).into_iter().map(|x| x * scale).collect();
    Tensor::from_vec(v, (rows, cols), device).unwrap()
}

fn module_name(layer: usize, projection: &str) -> String {
    format!("model.layers.{layer}.self_attn.{projection}")
}

/// Writes a PEFT LoRA directory (f32 tensors) for every q/k/v/o projection:
/// rank `r`, `lora_alpha` = `alpha`; returns its path.
fn write_adapter(name: &str, seed: u64, r: usize, alpha: f64) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fused-lora-llama-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = format!(
        "{{\"peft_type\": \"LORA\", \"r\": {r}, \"lora_alpha\": {alpha}, \"lora_dropout\": 0.0, \"bias\": \"none\", \
         \"fan_in_fan_out\": false, \"use_rslora\": false, \"use_dora\": false, \
         \"target_modules\": [\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\"], \"task_type\": \"CAUSAL_LM\"}}"
    );
    std::fs::write(dir.join("adapter_config.json"), config).unwrap();
    let mut tensors = Vec::new();
    for layer in 0..LAYERS {
        for (p, projection) in PROJECTIONS.iter().enumerate() {
            let s = seed + 100 * layer as u64 + 10 * p as u64;
            let a: Vec<u8> = values(s, r * HIDDEN).iter().flat_map(|v| (v * 0.5).to_le_bytes()).collect();
            let b: Vec<u8> = values(s + 1, HIDDEN * r).iter().flat_map(|v| (v * 0.2).to_le_bytes()).collect();
            let base = format!("base_model.model.{}", module_name(layer, projection));
            tensors.push((format!("{base}.lora_A.weight"), vec![r, HIDDEN], a));
            tensors.push((format!("{base}.lora_B.weight"), vec![HIDDEN, r], b));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap()))
        .collect();
    std::fs::write(dir.join("adapter_model.safetensors"), serialize(views, None).unwrap()).unwrap();
    dir
}

/// The frozen base model's weights.
struct Base {
    embed: Tensor,
    layers: Vec<[Tensor; 9]>, // attn_norm, mlp_norm, q, k, v, o, gate, up, down
    norm: Tensor,
    head: Tensor,
}

fn base(device: &Device) -> Base {
    let ones = |seed| {
        let v = values(seed, HIDDEN).into_iter().map(|x| 1.0 + 0.1 * x).collect();
        Tensor::from_vec(v, HIDDEN, device).unwrap()
    };
    let layers = (0..LAYERS as u64)
        .map(|l| {
            let s = 1000 + 20 * l;
            [
                ones(s),
                ones(s + 1),
                weight(s + 2, HIDDEN, HIDDEN, device),
                weight(s + 3, HIDDEN, HIDDEN, device),
                weight(s + 4, HIDDEN, HIDDEN, device),
                weight(s + 5, HIDDEN, HIDDEN, device),
                weight(s + 6, FFN, HIDDEN, device),
                weight(s + 7, FFN, HIDDEN, device),
                weight(s + 8, HIDDEN, FFN, device),
            ]
        })
        .collect();
    Base { embed: weight(1, VOCAB, HIDDEN, device), layers, norm: ones(2), head: weight(3, VOCAB, HIDDEN, device) }
}

/// Per layer, the q/k/v/o LoraLinears, and the adapter Vars (A, B) they train.
struct Model {
    base: Base,
    projections: Vec<[LoraLinear; 4]>,
    vars: Vec<Var>,
}

/// One adapter from `dir` for every projection, on `device`.
fn single(dir: &std::path::Path, device: &Device) -> Model {
    let adapter = PeftAdapter::<f32>::load(dir).unwrap();
    let base = base(device);
    let mut vars = Vec::new();
    let projections = (0..LAYERS)
        .map(|l| {
            std::array::from_fn(|p| {
                let module = adapter.module(&module_name(l, PROJECTIONS[p])).expect("the module is in the adapter");
                let a = Var::from_vec(module.a.clone(), (module.rank, HIDDEN), device).unwrap();
                let b = Var::from_vec(module.b.clone(), (HIDDEN, module.rank), device).unwrap();
                let adapters =
                    LoraAdapters::Single { a: a.as_tensor().clone(), b: b.as_tensor().clone(), scale: module.scale };
                vars.extend([a, b]);
                LoraLinear::new(base.layers[l][2 + p].clone(), None, adapters).unwrap()
            })
        })
        .collect();
    Model { base, projections, vars }
}

/// Several adapters stacked per projection by `LoraLinear::from_peft_stack`
/// over a `VarBuilder` of the base model, rows choosing by `rows` (−1: base only).
fn stacked(dirs: &[std::path::PathBuf], rows: &[i32], device: &Device) -> Model {
    let adapters: Vec<PeftAdapter<f32>> = dirs.iter().map(|d| PeftAdapter::load(d).unwrap()).collect();
    let adapters: Vec<&PeftAdapter<f32>> = adapters.iter().collect();
    let base = base(device);
    let weights: HashMap<String, Tensor> = (0..LAYERS)
        .flat_map(|l| (0..4).map(move |p| (l, p)))
        .map(|(l, p)| (format!("{}.weight", module_name(l, PROJECTIONS[p])), base.layers[l][2 + p].clone()))
        .collect();
    let vb = VarBuilder::from_tensors(weights, DType::F32, device);
    let rows = Tensor::new(rows, device).unwrap();
    let projections = (0..LAYERS)
        .map(|l| {
            std::array::from_fn(|p| {
                LoraLinear::from_peft_stack(&vb, &adapters, &module_name(l, PROJECTIONS[p]), rows.clone()).unwrap()
            })
        })
        .collect();
    Model { base, projections, vars: Vec::new() }
}

impl Model {
    /// Logits `[batch·SEQ, VOCAB]` for `tokens` `[batch, SEQ]`; `fused`: the
    /// LoraLinears' Module forward, else their unfused candle computation.
    /// `differentiable`: candle-nn's RMSNorm, softmax and rotary embedding
    /// written with candle's differentiable ops (its fused kernels for these
    /// have no backward), else those fused kernels.
    fn logits(&self, tokens: &Tensor, fused: bool, differentiable: bool) -> Tensor {
        let device = tokens.device();
        let batch = tokens.dim(0).unwrap();
        let project = |layer: &LoraLinear, x: &Tensor| {
            if fused {
                layer.forward(x).unwrap()
            } else {
                layer.forward_unfused(x).unwrap()
            }
        };
        let (cos, sin) = rope_tables(device);
        let rms_norm = |x: &Tensor, alpha: &Tensor| {
            if differentiable {
                candle_nn::ops::rms_norm_slow(x, alpha, 1e-5).unwrap()
            } else {
                candle_nn::ops::rms_norm(x, alpha, 1e-5).unwrap()
            }
        };
        let rope = |x: &Tensor| {
            if differentiable {
                candle_nn::rotary_emb::rope_slow(x, &cos, &sin).unwrap()
            } else {
                candle_nn::rotary_emb::rope(x, &cos, &sin).unwrap()
            }
        };
        let softmax = |x: &Tensor| {
            if differentiable {
                candle_nn::ops::softmax(x, candle_core::D::Minus1).unwrap()
            } else {
                candle_nn::ops::softmax_last_dim(x).unwrap()
            }
        };
        let mask: Vec<f32> = (0..SEQ * SEQ).map(|i| if i % SEQ > i / SEQ { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (SEQ, SEQ), device).unwrap();
        let heads = |t: Tensor| {
            t.reshape((batch, SEQ, HEADS, HEAD_DIM)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
        };
        let mut x = self
            .base
            .embed
            .index_select(&tokens.flatten_all().unwrap(), 0)
            .unwrap()
            .reshape((batch, SEQ, HIDDEN))
            .unwrap();
        for (w, proj) in self.base.layers.iter().zip(&self.projections) {
            let h = rms_norm(&x, &w[0]);
            let q = rope(&heads(project(&proj[0], &h)));
            let k = rope(&heads(project(&proj[1], &h)));
            let v = heads(project(&proj[2], &h));
            let scores = (q.matmul(&k.t().unwrap()).unwrap() / (HEAD_DIM as f64).sqrt()).unwrap();
            let att = softmax(&scores.broadcast_add(&mask).unwrap());
            let att = att.matmul(&v).unwrap().transpose(1, 2).unwrap().reshape((batch, SEQ, HIDDEN)).unwrap();
            x = (x + project(&proj[3], &att)).unwrap();
            let h = rms_norm(&x, &w[1]);
            let gate = h.broadcast_matmul(&w[6].t().unwrap()).unwrap().silu().unwrap();
            let up = h.broadcast_matmul(&w[7].t().unwrap()).unwrap();
            x = (x + (gate * up).unwrap().broadcast_matmul(&w[8].t().unwrap()).unwrap()).unwrap();
        }
        let x = rms_norm(&x, &self.base.norm);
        x.broadcast_matmul(&self.base.head.t().unwrap()).unwrap().reshape((batch * SEQ, VOCAB)).unwrap()
    }
}

/// Rotary tables `[SEQ, HEAD_DIM/2]`, θ = 10000.
fn rope_tables(device: &Device) -> (Tensor, Tensor) {
    let angles: Vec<f32> = (0..SEQ * HEAD_DIM / 2)
        .map(|i| {
            let (pos, j) = (i / (HEAD_DIM / 2), i % (HEAD_DIM / 2));
            pos as f32 / 10000f32.powf(2.0 * j as f32 / HEAD_DIM as f32)
        })
        .collect();
    let t = Tensor::from_vec(angles, (SEQ, HEAD_DIM / 2), device).unwrap();
    (t.cos().unwrap(), t.sin().unwrap())
}

fn tokens(seed: u64, batch: usize, device: &Device) -> (Tensor, Tensor) {
    let ids: Vec<u32> =
        values(seed, batch * (SEQ + 1)).iter().map(|v| ((v + 1.0) * 16.0) as u32 % VOCAB as u32).collect();
    let all = Tensor::from_vec(ids, (batch, SEQ + 1), device).unwrap();
    (all.narrow(1, 0, SEQ).unwrap(), all.narrow(1, 1, SEQ).unwrap().flatten_all().unwrap())
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_device(&Device::Cpu).unwrap().to_vec1().unwrap()
}

#[track_caller]
fn assert_rel_close(what: &str, got: &Tensor, want: &Tensor, rel: f32) {
    let (got, want) = (host(got), host(want));
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: an all-zero reference proves nothing");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= rel * scale, "{what}[{i}]: {g} vs {w} (scale {scale})");
    }
}

#[test]
fn logits_and_gradients_equal_candle_unfused() {
    let dir = write_adapter("one", 7, 8, 16.0);
    let gpu = cuda();
    let (fused, unfused) = (single(&dir, &gpu), single(&dir, &Device::Cpu));
    let (x_gpu, y_gpu) = tokens(11, 2, &gpu);
    let (x_cpu, y_cpu) = tokens(11, 2, &Device::Cpu);
    // candle-nn's fused RMSNorm, softmax and rope kernels on both devices.
    assert_rel_close("logits", &fused.logits(&x_gpu, true, false), &unfused.logits(&x_cpu, false, false), 1e-4);

    let logits = fused.logits(&x_gpu, true, true);
    let want = unfused.logits(&x_cpu, false, true);
    assert_rel_close("logits (differentiable ops)", &logits, &want, 1e-4);
    let grads = candle_nn::loss::cross_entropy(&logits, &y_gpu).unwrap().backward().unwrap();
    let want_grads = candle_nn::loss::cross_entropy(&want, &y_cpu).unwrap().backward().unwrap();
    for (i, (v, w)) in fused.vars.iter().zip(&unfused.vars).enumerate() {
        let what = format!("grad of {} of layer {} {}", ["A", "B"][i % 2], i / 8, PROJECTIONS[i / 2 % 4]);
        assert_rel_close(&what, grads.get(v.as_tensor()).unwrap(), want_grads.get(w.as_tensor()).unwrap(), 1e-3);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn twenty_adamw_steps_lower_the_loss() {
    let dir = write_adapter("train", 8, 8, 16.0);
    let gpu = cuda();
    let model = single(&dir, &gpu);
    let (x, y) = tokens(12, 2, &gpu);
    let params = ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() };
    let mut opt = AdamW::new(model.vars.clone(), params).unwrap();
    let loss = |m: &Model| candle_nn::loss::cross_entropy(&m.logits(&x, true, true), &y).unwrap();
    let first = loss(&model).to_scalar::<f32>().unwrap();
    for _ in 0..20 {
        opt.backward_step(&loss(&model)).unwrap();
    }
    let last = loss(&model).to_scalar::<f32>().unwrap();
    assert!(last.is_finite() && last < 0.9 * first, "loss {first} -> {last} after 20 AdamW steps");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_mixed_batch_of_three_adapters_equals_each_adapter_alone() {
    let dirs = [write_adapter("m0", 21, 8, 16.0), write_adapter("m1", 22, 4, 4.0), write_adapter("m2", 23, 6, 24.0)];
    let gpu = cuda();
    // Four sequences: adapters 2, −1 (base only), 0, 1; every token row carries its sequence's index.
    let choice = [2i32, -1, 0, 1];
    let rows: Vec<i32> = choice.iter().flat_map(|&c| [c; SEQ]).collect();
    let (x, _) = tokens(13, choice.len(), &gpu);
    let mixed = stacked(&dirs, &rows, &gpu).logits(&x, true, false);
    for (s, &c) in choice.iter().enumerate() {
        let alone = match usize::try_from(c) {
            Ok(adapter) => single(&dirs[adapter], &gpu),
            // Base only: the first adapter with scale 0 adds nothing.
            Err(_) => {
                let mut m = single(&dirs[0], &gpu);
                for layer in &mut m.projections {
                    for p in layer.iter_mut() {
                        let LoraAdapters::Single { a, b, .. } = p.adapters().clone() else { unreachable!() };
                        *p = LoraLinear::new(p.weight().clone(), None, LoraAdapters::Single { a, b, scale: 0.0 })
                            .unwrap();
                    }
                }
                m
            }
        };
        let want = alone.logits(&x.narrow(0, s, 1).unwrap(), true, false);
        assert_rel_close(&format!("sequence {s} (adapter {c})"), &mixed.narrow(0, s * SEQ, SEQ).unwrap(), &want, 1e-5);
    }
    dirs.iter().for_each(|d| std::fs::remove_dir_all(d).unwrap());
}

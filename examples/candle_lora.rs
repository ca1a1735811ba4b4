//! Fine-tune a PEFT LoRA adapter with candle: load a base model's weights and
//! a PEFT adapter directory, run the fused forward, train the adapter a few
//! steps with candle-nn's AdamW, and save it back in PEFT's format (so PEFT's
//! `PeftModel.from_pretrained` loads it).
//!
//! ```text
//! cargo run --release --features candle --example candle_lora                 # CPU, demo files
//! cargo run --release --no-default-features --features candle-cuda \
//!     --example candle_lora -- BASE.safetensors ADAPTER_DIR OUT_DIR            # CUDA, your files
//! ```
//!
//! Without arguments it writes a tiny base model (one MLP block: up_proj, SiLU,
//! down_proj) and a PEFT adapter for it into a
//! temporary folder first (and removes it at the end). With `candle-cuda` and a CUDA device the
//! `LoraLinear`s run the crate's fused kernels (forward and backward); on the
//! CPU they run the same math with candle's ops.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder};
use fused_lora::candle::{save_peft, LoraLinear};
use fused_lora::peft::PeftAdapter;

const HIDDEN: usize = 64;
const FFN: usize = 128;
const MODULES: [&str; 2] = ["model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let demo = args.is_empty();
    let (base_file, adapter_dir, out_dir) = match args.as_slice() {
        [base, adapter, out] => (PathBuf::from(base), PathBuf::from(adapter), PathBuf::from(out)),
        [] => demo_files()?,
        _ => return Err("usage: candle_lora [BASE.safetensors ADAPTER_DIR OUT_DIR]".into()),
    };
    let device = Device::cuda_if_available(0)?;
    println!("device: {device:?}");

    // The frozen base weights and the adapter: one LoraLinear per targeted module.
    let base = candle_core::safetensors::load(&base_file, &device)?;
    let vb = VarBuilder::from_tensors(base, DType::F32, &device);
    let adapter = PeftAdapter::<f32>::load(&adapter_dir)?;
    let mut layers = MODULES.iter().map(|m| LoraLinear::from_peft(&vb, &adapter, m)).collect::<Result<Vec<_>, _>>()?;

    // The fused forward (inference: eval mode, no dropout).
    let x = pseudo_random(1, (32, HIDDEN), &device)?;
    let target = pseudo_random(2, (32, HIDDEN), &device)?;
    let mlp = |layers: &[LoraLinear], x: &Tensor| layers[1].forward(&layers[0].forward(x)?.silu()?);
    println!("output norm: {}", mlp(&layers, &x)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);

    // Training: A and B are Vars, W0 stays frozen; dropout (the config's
    // lora_dropout) on in training mode.
    layers.iter_mut().for_each(|layer| layer.set_training(true));
    let vars = layers.iter().flat_map(LoraLinear::trainable_vars).collect();
    let mut optimizer = AdamW::new(vars, ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() })?;
    let mut losses = Vec::new();
    for _ in 0..5 {
        let loss = (mlp(&layers, &x)? - &target)?.sqr()?.mean_all()?;
        losses.push(loss.to_scalar::<f32>()?);
        optimizer.backward_step(&loss)?;
    }
    layers.iter_mut().for_each(|layer| layer.set_training(false));
    println!("loss: {} -> {}", losses[0], losses[losses.len() - 1]);

    // Saved in PEFT's format: the same adapter_config.json, the trained A and B.
    let named: Vec<(&str, &LoraLinear)> = MODULES.iter().copied().zip(&layers).collect();
    save_peft(&out_dir, &adapter.config, &named)?;
    let saved = PeftAdapter::<f32>::load(&out_dir)?;
    println!("saved {} modules to {}", saved.modules.len(), out_dir.display());
    if demo {
        // The demo's folder holds the base model, the adapter and the trained adapter.
        std::fs::remove_dir_all(base_file.parent().ok_or("the demo folder")?)?;
    }
    Ok(())
}

/// Deterministic values in [-1, 1] (no seeding needed on any device).
fn pseudo_random(seed: u32, shape: (usize, usize), device: &Device) -> candle_core::Result<Tensor> {
    let n = (shape.0 * shape.1) as u32;
    (Tensor::arange(seed * n, (seed + 1) * n, device)?.to_dtype(DType::F32)? * 0.61)?.sin()?.reshape(shape)
}

/// A tiny base model and a PEFT adapter for it, as PEFT would save one.
fn demo_files() -> Result<(PathBuf, PathBuf, PathBuf), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("fused-lora-candle-example-{}", std::process::id()));
    let (adapter_dir, out_dir) = (dir.join("adapter"), dir.join("trained"));
    std::fs::create_dir_all(&adapter_dir)?;
    let cpu = Device::Cpu;
    let scaled = |seed, rows, cols, scale: f64| pseudo_random(seed, (rows, cols), &cpu)? * scale;
    let base: HashMap<String, Tensor> = HashMap::from([
        (format!("{}.weight", MODULES[0]), scaled(3, FFN, HIDDEN, 0.125)?),
        (format!("{}.weight", MODULES[1]), scaled(4, HIDDEN, FFN, 0.09)?),
    ]);
    candle_core::safetensors::save(&base, dir.join("model.safetensors"))?;
    std::fs::write(
        adapter_dir.join("adapter_config.json"),
        r#"{"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "lora_dropout": 0.05,
            "bias": "none", "target_modules": ["up_proj", "down_proj"], "rank_pattern": {"down_proj": 4}}"#,
    )?;
    let lora: HashMap<String, Tensor> = HashMap::from([
        (format!("base_model.model.{}.lora_A.weight", MODULES[0]), scaled(5, 8, HIDDEN, 0.1)?),
        (format!("base_model.model.{}.lora_B.weight", MODULES[0]), scaled(6, FFN, 8, 0.01)?),
        (format!("base_model.model.{}.lora_A.weight", MODULES[1]), scaled(7, 4, FFN, 0.1)?),
        (format!("base_model.model.{}.lora_B.weight", MODULES[1]), scaled(8, HIDDEN, 4, 0.01)?),
    ]);
    candle_core::safetensors::save(&lora, adapter_dir.join("adapter_model.safetensors"))?;
    Ok((dir.join("model.safetensors"), adapter_dir, out_dir))
}

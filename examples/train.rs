//! The main example: fine-tunes LoRA adapters on a synthetic task with this
//! crate's kernels (init, fused forward, backward, optimizer steps) — on the GPU
//! if there is one, on the emulator if not — and answers docs/theory.md's three
//! questions with measurements:
//!
//! 1. Init[A] (A random, B = 0; PEFT's default) against Init[B] (A = 0, B
//!    random) over a sweep of learning rates;
//! 2. the scale α/r against α/√r (rsLoRA) over ranks;
//! 3. both A and B zero: the run that never moves;
//!
//! and the α·k / learning-rate / initialisation substitution (SGD: lr/k; Adam:
//! lr/√k), which must reproduce the loss curve.
//!
//! The task: a frozen random base W0 and a hidden rank-4 update U·V; the adapter
//! learns `Y = X·(W0 + U·V)ᵀ` under an MSE loss. bf16 working copies (tensor-core
//! forward), f32 master weights.
//!
//! Writes `target/lora-theory/losses.csv` and `target/lora-theory/losses.svg`
//! and prints a summary table. Run with `scripts/run.sh example`.

use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use fused_lora::reference::synthetic::SyntheticTask;
use fused_lora::{
    AdamWConfig, AdamWState, Adapter, AdapterConfig, BackwardInputs, BackwardOutput, ForwardOutput, GradMode,
    InitScheme, Linear, LoraKernels, Scaling, SgdConfig, SgdState,
};
use half::bf16;

const M: usize = 64;
const K: usize = 64;
const N: usize = 64;
const HIDDEN_RANK: usize = 4;
const STEPS: usize = 60;
const ALPHA: f32 = 16.0;
/// A loss above this (or not finite) counts as diverged; the run stops there.
const DIVERGED: f32 = 1.0e4;

/// The frozen problem on the device, and its targets.
struct Task {
    x: CudaSlice<bf16>,
    w0: CudaSlice<bf16>,
    host: SyntheticTask,
}

fn bf16s(values: &[f32]) -> Vec<bf16> {
    values.iter().map(|&v| bf16::from_f32(v)).collect()
}

fn task(stream: &Arc<CudaStream>) -> Result<Task, Box<dyn Error>> {
    // Stored in bf16; the targets are computed from the stored values.
    let host = SyntheticTask::new(M, K, N, HIDDEN_RANK, 2026, 1.0 / (K as f32).sqrt(), |v| bf16::from_f32(v).to_f32());
    Ok(Task { x: stream.clone_htod(&bf16s(&host.x))?, w0: stream.clone_htod(&bf16s(&host.w0))?, host })
}

/// How a run starts.
#[derive(Clone, Copy)]
enum Init {
    Scheme(InitScheme),
    BothZero,
}

#[derive(Clone, Copy)]
enum Optimizer {
    Sgd { lr: f64 },
    Adam { lr: f64, eps: f64 },
}

/// One training run of one experiment.
struct Run {
    experiment: &'static str,
    label: String,
    init: Init,
    rank: usize,
    scale: f32,
    /// The initial A and B are multiplied by this (the substitution's 1/√k).
    init_factor: f32,
    optimizer: Optimizer,
}

/// The adapter's tensors during training.
struct Trainee {
    a: CudaSlice<bf16>,
    b: CudaSlice<bf16>,
    master_a: CudaSlice<f32>,
    master_b: CudaSlice<f32>,
}

fn start(kernels: &LoraKernels, stream: &Arc<CudaStream>, run: &Run) -> Result<Trainee, Box<dyn Error>> {
    let (r, mut a, mut b) =
        (run.rank, stream.alloc_zeros::<f32>(run.rank * K)?, stream.alloc_zeros::<f32>(N * run.rank)?);
    if let Init::Scheme(scheme) = run.init {
        kernels.init_adapter(stream, scheme, r, K, N, 11, 0, &mut a, &mut b)?;
    }
    let scaled = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| x * run.init_factor).collect() };
    let (a, b) = (scaled(stream.clone_dtoh(&a)?), scaled(stream.clone_dtoh(&b)?));
    Ok(Trainee {
        a: stream.clone_htod(&bf16s(&a))?,
        b: stream.clone_htod(&bf16s(&b))?,
        master_a: stream.clone_htod(&a)?,
        master_b: stream.clone_htod(&b)?,
    })
}

/// Trains one run; the losses before each step (shorter if it diverged).
fn train(kernels: &LoraKernels, stream: &Arc<CudaStream>, task: &Task, run: &Run) -> Result<Vec<f32>, Box<dyn Error>> {
    let r = run.rank;
    let mut t = start(kernels, stream, run)?;
    let (mut sgd_a, mut sgd_b) = (SgdState::new(stream, r * K)?, SgdState::new(stream, N * r)?);
    let (mut adam_a, mut adam_b) = (AdamWState::new(stream, r * K)?, AdamWState::new(stream, N * r)?);
    let linear = Linear { weight: task.w0.as_view(), bias: None, n: N, k: K };
    let (mut y, mut p) = (stream.alloc_zeros::<bf16>(M * N)?, stream.alloc_zeros::<bf16>(M * r)?);
    let (mut da, mut db, mut dx) =
        (stream.alloc_zeros::<bf16>(r * K)?, stream.alloc_zeros::<bf16>(N * r)?, stream.alloc_zeros::<bf16>(M * K)?);
    let mut losses = Vec::with_capacity(STEPS);
    for _ in 0..STEPS {
        let adapter = Adapter { a: t.a.as_view(), b: t.b.as_view(), rank: r, scale: run.scale };
        kernels.forward(
            stream,
            &task.x.as_view(),
            &linear,
            &adapter,
            None,
            &mut ForwardOutput { y: y.as_view_mut(), p: Some(p.as_view_mut()) },
        )?;
        let out: Vec<f32> = stream.clone_dtoh(&y)?.iter().map(|v: &bf16| v.to_f32()).collect();
        let (loss, dy) = task.host.mse(&out);
        losses.push(loss);
        if !loss.is_finite() || loss > DIVERGED {
            break;
        }
        let dy = stream.clone_htod(&bf16s(&dy))?;
        let mut grads = BackwardOutput {
            da: da.as_view_mut(),
            db: db.as_view_mut(),
            dx: dx.as_view_mut(),
            g: None,
            mode: GradMode::Overwrite,
        };
        let inputs = BackwardInputs { dy: dy.as_view(), x: task.x.as_view(), p: Some(p.as_view()), dropout: None };
        kernels.backward(stream, &inputs, &linear, &adapter, &mut grads)?;
        match run.optimizer {
            Optimizer::Sgd { lr } => {
                let config = SgdConfig::new(lr);
                kernels.sgd_step(stream, &config, &mut t.master_a, &mut t.a, &da, &mut sgd_a)?;
                kernels.sgd_step(stream, &config, &mut t.master_b, &mut t.b, &db, &mut sgd_b)?;
            }
            Optimizer::Adam { lr, eps } => {
                let config = AdamWConfig { lr, beta1: 0.9, beta2: 0.999, eps, weight_decay: 0.0 };
                kernels.adamw_step(stream, &config, &mut t.master_a, &mut t.a, &da, &mut adam_a)?;
                kernels.adamw_step(stream, &config, &mut t.master_b, &mut t.b, &db, &mut adam_b)?;
            }
        }
    }
    Ok(losses)
}

fn scale_of(rank: usize, scaling: Scaling) -> Result<f32, Box<dyn Error>> {
    Ok(AdapterConfig::new(rank, ALPHA, scaling)?.scale())
}

fn runs() -> Result<Vec<Run>, Box<dyn Error>> {
    let mut runs = Vec::new();
    let r = 8;
    for lr in [0.0625, 0.25, 1.0, 4.0, 16.0] {
        for (name, scheme) in [("Init[A]", InitScheme::PeftDefault), ("Init[B]", InitScheme::Reversed)] {
            runs.push(Run {
                experiment: "1 init vs learning rate (SGD, r=8, alpha/r)",
                label: format!("{name} lr={lr}"),
                init: Init::Scheme(scheme),
                rank: r,
                scale: scale_of(r, Scaling::AlphaOverRank)?,
                init_factor: 1.0,
                optimizer: Optimizer::Sgd { lr },
            });
        }
    }
    for rank in [2, 8, 32] {
        for (name, scaling) in [("alpha/r", Scaling::AlphaOverRank), ("alpha/sqrt(r)", Scaling::AlphaOverSqrtRank)] {
            runs.push(Run {
                experiment: "2 scale vs rank (SGD lr=0.25, Init[A])",
                label: format!("{name} r={rank}"),
                init: Init::Scheme(InitScheme::PeftDefault),
                rank,
                scale: scale_of(rank, scaling)?,
                init_factor: 1.0,
                optimizer: Optimizer::Sgd { lr: 0.25 },
            });
        }
    }
    runs.push(Run {
        experiment: "3 both zero (SGD lr=1)",
        label: "A=0, B=0".into(),
        init: Init::BothZero,
        rank: r,
        scale: scale_of(r, Scaling::AlphaOverRank)?,
        init_factor: 1.0,
        optimizer: Optimizer::Sgd { lr: 1.0 },
    });
    // The substitution with k = 4: alpha*4, init/2, SGD lr/4, Adam lr/2 (eps*2).
    let s = scale_of(r, Scaling::AlphaOverRank)?;
    for (name, optimizer, substituted) in [
        ("SGD", Optimizer::Sgd { lr: 0.25 }, Optimizer::Sgd { lr: 0.0625 }),
        ("Adam", Optimizer::Adam { lr: 0.01, eps: 1e-8 }, Optimizer::Adam { lr: 0.005, eps: 2e-8 }),
    ] {
        let experiment = "4 alpha*k / lr / init substitution (k=4)";
        let base = Run {
            experiment,
            label: format!("{name}: alpha"),
            init: Init::Scheme(InitScheme::PeftDefault),
            rank: r,
            scale: s,
            init_factor: 1.0,
            optimizer,
        };
        let sub = Run {
            label: format!("{name}: 4*alpha, init/2, lr substituted"),
            scale: 4.0 * s,
            init_factor: 0.5,
            optimizer: substituted,
            ..base
        };
        runs.push(base);
        runs.push(sub);
    }
    Ok(runs)
}

fn progress(done: usize, total: usize, label: &str) {
    let width = 30;
    let filled = width * done / total;
    eprint!("\r[{}{}] {done}/{total} runs {label:<44}", "=".repeat(filled), " ".repeat(width - filled));
    let _ = std::io::stderr().flush();
}

fn write_csv(path: &Path, runs: &[Run], losses: &[Vec<f32>]) -> Result<(), Box<dyn Error>> {
    let mut csv = String::from("experiment,run,step,loss\n");
    for (run, curve) in runs.iter().zip(losses) {
        for (step, loss) in curve.iter().enumerate() {
            writeln!(csv, "\"{}\",\"{}\",{step},{loss}", run.experiment, run.label)?;
        }
    }
    Ok(std::fs::write(path, csv)?)
}

/// One panel per experiment, log10(loss) against the step.
fn write_svg(path: &Path, runs: &[Run], losses: &[Vec<f32>]) -> Result<(), Box<dyn Error>> {
    let colours =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
    let (panel_w, panel_h, pad, plot_h) = (520.0, 380.0, 50.0, 260.0);
    let mut experiments: Vec<&str> = runs.iter().map(|r| r.experiment).collect();
    experiments.dedup();
    let finite: Vec<f32> =
        losses.iter().flatten().copied().filter(|l| l.is_finite() && *l > 0.0 && *l <= DIVERGED).collect();
    let lo = finite.iter().fold(f32::MAX, |m, &l| m.min(l)).log10().floor();
    let hi = finite.iter().fold(f32::MIN, |m, &l| m.max(l)).log10().ceil().max(lo + 1.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * panel_w,
        panel_h * experiments.len().div_ceil(2) as f64
    );
    for (e, experiment) in experiments.iter().enumerate() {
        let (ox, oy) = ((e % 2) as f64 * panel_w, (e / 2) as f64 * panel_h);
        let (x0, y0, w, h) = (ox + pad, oy + 30.0, panel_w - 2.0 * pad, plot_h);
        writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\">{experiment}</text>",
            ox + pad,
            oy + 20.0
        )?;
        writeln!(svg, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#444\"/>")?;
        for decade in lo as i32..=hi as i32 {
            let y = y0 + h * (hi as f64 - decade as f64) / (hi - lo) as f64;
            writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">1e{decade}</text>", x0 - 4.0, y + 4.0)?;
            writeln!(svg, "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>", x0 + w)?;
        }
        writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step (0–{})</text>",
            x0 + w / 2.0,
            y0 + h + 16.0,
            STEPS - 1
        )?;
        for (i, (run, curve)) in runs.iter().zip(losses).filter(|(r, _)| r.experiment == *experiment).enumerate() {
            let colour = colours[i % colours.len()];
            let points: Vec<String> = curve
                .iter()
                .enumerate()
                .filter(|(_, l)| l.is_finite() && **l > 0.0)
                .map(|(s, l)| {
                    let y = (l.min(DIVERGED).log10() as f64).clamp(lo as f64, hi as f64);
                    format!(
                        "{:.1},{:.1}",
                        x0 + w * s as f64 / (STEPS - 1) as f64,
                        y0 + h * (hi as f64 - y) / (hi - lo) as f64
                    )
                })
                .collect();
            let dash = if run.label.contains("substituted") { " stroke-dasharray=\"6 4\"" } else { "" };
            writeln!(
                svg,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash}/>",
                points.join(" ")
            )?;
            // Legend below the axis label, two columns.
            let ly = y0 + h + 34.0 + 13.0 * (i / 2) as f64;
            let lx = x0 + (i % 2) as f64 * (w / 2.0);
            writeln!(svg, "<text x=\"{lx}\" y=\"{ly}\" fill=\"{colour}\">{}</text>", run.label)?;
        }
    }
    svg.push_str("</svg>\n");
    Ok(std::fs::write(path, svg)?)
}

fn summary(runs: &[Run], losses: &[Vec<f32>]) {
    println!("\n{:<44} {:<40} {:>12} {:>12}", "experiment", "run", "loss step 0", "final loss");
    for (run, curve) in runs.iter().zip(losses) {
        let last = curve.last().copied().unwrap_or(f32::NAN);
        let end = if curve.len() < STEPS { format!("diverged@{}", curve.len() - 1) } else { format!("{last:.4e}") };
        println!("{:<44} {:<40} {:>12.4e} {:>12}", run.experiment, run.label, curve[0], end);
    }
    let sub: Vec<&Vec<f32>> =
        runs.iter().zip(losses).filter(|(r, _)| r.experiment.starts_with('4')).map(|(_, l)| l).collect();
    for (name, pair) in ["SGD", "Adam"].iter().zip(sub.chunks(2)) {
        let identical =
            pair[0].len() == pair[1].len() && pair[0].iter().zip(pair[1]).all(|(a, b)| a.to_bits() == b.to_bits());
        println!(
            "substitution under {name}: loss curves {}",
            if identical { "bit-identical at every step" } else { "DIFFER" }
        );
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let ctx = CudaContext::new(0).map_err(|e| {
        format!(
            "no CUDA device ({e}); run through `scripts/run.sh example`, which uses the emulator when there is no GPU"
        )
    })?;
    let stream = ctx.default_stream();
    let kernels = LoraKernels::new(&ctx);
    println!(
        "device: {}; task: M={M} K={K} N={N}, hidden rank {HIDDEN_RANK}, {STEPS} steps, bf16 weights",
        ctx.name()?
    );
    let task = task(&stream)?;
    let runs = runs()?;
    let mut losses = Vec::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        progress(i, runs.len(), &run.label);
        losses.push(train(&kernels, &stream, &task, run)?);
    }
    progress(runs.len(), runs.len(), "done");
    eprintln!();

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("lora-theory");
    std::fs::create_dir_all(&dir)?;
    write_csv(&dir.join("losses.csv"), &runs, &losses)?;
    write_svg(&dir.join("losses.svg"), &runs, &losses)?;
    summary(&runs, &losses);
    println!("\nwrote {} and {}", dir.join("losses.csv").display(), dir.join("losses.svg").display());
    Ok(())
}

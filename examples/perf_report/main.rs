//! The performance report: modeled GPU time of the crate's forward and
//! backward next to NVIDIA's CUTLASS GEMM of the same shape and the roofline
//! floor, for docs/performance.md's Llama-3-8B projections (bf16, M = 16 and 4096,
//! r = 16 and 64) and the whole problems 1024³ and 2048 x 1024 x 1024, with
//! issue 12's targets met or not per case and GPU (`targets.rs`).
//!
//! Runs on the emulator only (`scripts/run.sh report`): every launch is
//! executed on a sample of its CTAs (`PTX_EMU_SAMPLE_CTAS`, 8 unless set;
//! the decode forward, M <= 16, runs whole grids: its unique bytes decide it),
//! counted, extrapolated to the whole grid and modeled on A100 and H100
//! (`PTX_EMU_MODEL`; docs/perf-model.md says how). The forward and backward
//! run once per multiprocessor count and compute capability among the
//! modeled GPUs, on an emulated device of that many SMs
//! (`PTX_EMU_MULTIPROCESSORS`: 108 for the A100, 132 for the H100)
//! presenting that capability (8.0 for the A100, 9.0 for the H100) with the
//! Hopper path off (`FUSED_LORA_HOPPER=0`: these rows are the mma.sync
//! path's; the Hopper path has its own table), so each GPU's rows count the
//! launches the library would make on it (tile, K splits, sm_90-only
//! kernels such as the fused-P tile in clusters). The times are a model,
//! never a measurement, and are labelled so everywhere they appear.
//!
//! Writes `target/perf-report/report.csv` (one row per case and GPU),
//! `launches.csv` (every launch: grid, CTAs run, warp instructions per mma,
//! modeled time, bound, registers, CTAs per SM), `launches.jsonl` (the
//! emulator's raw lines), `report.md` (the table as markdown) and
//! `report.svg` (grouped bars per case), and prints the table.
//!
//! Options: `--quick` (one small shape, for the test suite's dry run),
//! `--out DIR`, `--only A,B` (only the cases whose name, e.g. `k/v
//! 4096->1024 M=4096 r=64`, contains one of the comma-separated strings, and
//! no scattered batches unless one names `scattered`: for iterating), and `--measured CRITERION_DIR`, which instead joins a
//! finished report's CSV with criterion's measurements of the same cases
//! (`scripts/gpu-report.sh`) into a markdown table.

mod cases;
mod cutlass;
mod cutlass_kernel;
mod cutlass_sm90;
mod hopper;
mod launches;
mod measured;
mod output;
/// The benches' shapes and case names: the report joins their measurements by these.
#[path = "../../benches/support/shapes.rs"]
mod shapes;
mod table;
mod targets;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cudarc::driver::CudaContext;
use fused_lora::LoraKernels;

use cases::Case;
use launches::{sum_on, Launch, LaunchLog};
use output::Row;

/// `--quick`: one small shape, enough to run every step of the report.
const QUICK: &[(&str, usize, usize)] = &[("quick 512->384", 512, 384)];
const QUICK_TOKENS: &[usize] = &[16, 256];
const QUICK_RANKS: &[usize] = &[16];
const GPUS: &str = "a100,h100";
const DEFAULT_SAMPLES: &str = "8";
/// A CTA budget no report grid reaches: every CTA runs.
const WHOLE_GRID: &str = "1000000000";

/// Sets an environment variable until dropped, then puts the old value back
/// (the emulator reads its settings at every launch).
struct EnvOverride {
    name: &'static str,
    old: Option<std::ffi::OsString>,
}

impl EnvOverride {
    fn set(name: &'static str, value: &str) -> Self {
        let old = std::env::var_os(name);
        std::env::set_var(name, value);
        EnvOverride { name, old }
    }
}

impl Drop for EnvOverride {
    fn drop(&mut self) {
        match &self.old {
            Some(v) => std::env::set_var(self.name, v),
            None => std::env::remove_var(self.name),
        }
    }
}

struct Options {
    quick: bool,
    /// Only the Hopper rows (`hopper.rs`).
    hopper_only: bool,
    out: PathBuf,
    measured: Option<PathBuf>,
    /// `--only`: substrings of the case names to keep (all when empty).
    only: Vec<String>,
}

impl Options {
    fn keeps(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        quick: false,
        hopper_only: false,
        out: PathBuf::from("target/perf-report"),
        measured: None,
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--hopper-only" => o.hopper_only = true,
            "--out" => o.out = args.next().ok_or("--out needs a directory")?.into(),
            "--measured" => o.measured = Some(args.next().ok_or("--measured needs criterion's directory")?.into()),
            "--only" => {
                let list = args.next().ok_or("--only needs comma-separated parts of case names")?;
                o.only = list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
            }
            other => {
                return Err(format!(
                    "unknown option {other} (known: --quick, --hopper-only, --out DIR, --only A,B, --measured DIR)"
                )
                .into())
            }
        }
    }
    Ok(o)
}

/// The emulator's settings for the report, unless the caller chose others.
/// Set before the first driver call: the emulator reads them when it launches.
fn configure_emulator(log: &Path) {
    let set_default = |name: &str, value: &str| {
        if std::env::var_os(name).is_none() {
            std::env::set_var(name, value);
        }
    };
    set_default("PTX_EMU_MODEL", GPUS);
    set_default("PTX_EMU_SAMPLE_CTAS", DEFAULT_SAMPLES);
    // A sampled launch leaves most of its outputs unwritten, so a launch that
    // reads another's scratch (a split-K reduction over partials that are
    // not cleared first) reads bytes never written: the report counts, the
    // kernel tests (never sampled, every check on) judge what is read.
    set_default("PTX_EMU_INITCHECK", "0");
    std::env::set_var("PTX_EMU_COUNTERS_FILE", log);
}

fn is_emulator() -> bool {
    // SAFETY: only tries to dlopen the driver and look one symbol up.
    unsafe {
        cudarc::driver::sys::is_culib_present()
            && cudarc::driver::sys::culib().get::<unsafe extern "C" fn() -> i32>(b"ptxEmuIsEmulator\0").is_ok()
    }
}

/// The roofline of one GPU as the model's table gives it.
struct Ceiling {
    gpu: String,
    /// Its multiprocessors: the forward and backward run on an emulated
    /// device of this many (`PTX_EMU_MULTIPROCESSORS`), so their launches
    /// are sized (tile, splits) as the library sizes them on that GPU.
    sms: u32,
    /// The compute capability its rows present (`PTX_EMU_COMPUTE_CAPABILITY`):
    /// "90" for an sm_90 GPU, "80" otherwise. On an H100 the crate's
    /// mma.sync path is what a 9.0 device runs with the Hopper path off
    /// (kernels that need sm_90, such as thread-block clusters, included);
    /// the Hopper path has its own table (`hopper_rows`).
    compute_capability: &'static str,
    flops_per_s: f64,
    bytes_per_s: f64,
}

impl Ceiling {
    fn floor_us(&self, flops: f64, bytes: f64) -> f64 {
        (flops / self.flops_per_s).max(bytes / self.bytes_per_s) * 1e6
    }

    /// Reading `bytes` once at DRAM bandwidth.
    fn read_us(&self, bytes: f64) -> f64 {
        bytes / self.bytes_per_s * 1e6
    }
}

/// The modeled GPUs' bf16 tensor rate and DRAM bandwidth, from the emulator.
fn ceilings() -> Result<Vec<Ceiling>, Box<dyn Error>> {
    type Export = unsafe extern "C" fn(*mut std::ffi::c_char, usize) -> usize;
    // SAFETY: looks an export up in the loaded emulator; its contract is
    // snprintf's (writes at most `len` bytes, returns the length needed).
    let json = unsafe {
        let export = cudarc::driver::sys::culib()
            .get::<Export>(b"ptxEmuModelCeilingsJson\0")
            .map_err(|e| format!("the emulator exports no model ceilings: {e}"))?;
        let needed = export(std::ptr::null_mut(), 0);
        let mut buffer = vec![0u8; needed + 1];
        let written = export(buffer.as_mut_ptr().cast(), buffer.len());
        buffer.truncate(written);
        serde_json::from_slice::<serde_json::Value>(&buffer)?
    };
    let wanted = std::env::var("PTX_EMU_MODEL").unwrap_or_default();
    let mut out = Vec::new();
    for gpu in wanted.split(',').map(str::trim).filter(|g| !g.is_empty()) {
        let c = &json[gpu];
        let number = |key: &str| c[key].as_f64().ok_or_else(|| format!("no `{key}` for {gpu} in {json}"));
        out.push(Ceiling {
            gpu: gpu.to_string(),
            sms: number("sms")? as u32,
            compute_capability: if c["arch"].as_str() == Some("sm_90") { "90" } else { "80" },
            flops_per_s: number("bf16_mma_sync_flops_per_s")?,
            bytes_per_s: number("dram_bytes_per_s")?,
        });
    }
    Ok(out)
}

fn cases(quick: bool) -> Vec<Case> {
    let (projections, tokens, ranks, squares) = if quick {
        (QUICK, QUICK_TOKENS, QUICK_RANKS, &[][..])
    } else {
        (shapes::PROJECTIONS, shapes::REPORT_TOKENS, shapes::RANKS, shapes::SQUARE_SHAPES)
    };
    let mut all = Vec::new();
    for &(projection, k, n) in projections {
        for &m in tokens {
            for &r in ranks {
                all.push(Case { projection, m, k, n, r });
            }
        }
    }
    for &(projection, m, k, n) in squares {
        for &r in ranks {
            all.push(Case { projection, m, k, n, r });
        }
    }
    all
}

/// Runs `what`, then returns the launches it made, saying how long the
/// emulator took.
fn counted(
    log: &mut LaunchLog,
    step: &mut usize,
    steps: usize,
    label: &str,
    what: impl FnOnce() -> Result<(), Box<dyn Error>>,
) -> Result<Vec<Launch>, Box<dyn Error>> {
    *step += 1;
    eprint!("[{:>2}/{steps}] {label} … ", *step);
    let start = Instant::now();
    what()?;
    let launches = log.take()?;
    let sampled: u64 = launches.iter().map(|l| l.sampled_ctas).sum();
    let total: u64 = launches.iter().map(|l| l.total_ctas).sum();
    eprintln!("{} launches, {sampled} of {total} CTAs run, {:.1} s", launches.len(), start.elapsed().as_secs_f64());
    if launches.is_empty() {
        return Err(format!("{label}: no launch recorded in {}", log.path().display()).into());
    }
    Ok(launches)
}

/// [`counted`] with the crate's Hopper path on or off (`FUSED_LORA_HOPPER`).
fn counted_on_path(
    log: &mut LaunchLog,
    step: &mut usize,
    steps: usize,
    label: &str,
    hopper_path: bool,
    what: impl FnOnce() -> Result<(), Box<dyn Error>>,
) -> Result<Vec<Launch>, Box<dyn Error>> {
    let _path = EnvOverride::set(fused_lora::HOPPER_ENV, if hopper_path { "1" } else { "0" });
    counted(log, step, steps, label, what)
}

fn main() -> Result<(), Box<dyn Error>> {
    let opts = options()?;
    std::fs::create_dir_all(&opts.out)?;
    if let Some(criterion) = &opts.measured {
        return measured::write_markdown(&opts.out, criterion);
    }
    let log_path = opts.out.join("launches.jsonl");
    configure_emulator(&log_path);
    if !is_emulator() {
        return Err("the report models launches on the emulator: run `scripts/run.sh report` \
                    (FUSED_LORA_EMULATOR=1 picks the emulator on a machine with a GPU)"
            .into());
    }
    let ctx = CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let kernels = LoraKernels::new(&ctx);
    if opts.hopper_only {
        let mut log = LaunchLog::create(&log_path)?;
        return hopper_rows(&ctx, &kernels, &mut log, &opts.out);
    }
    let ceilings = ceilings()?;
    let gpus: Vec<String> = ceilings.iter().map(|c| c.gpu.clone()).collect();
    eprintln!("perf report: compiling NVIDIA CUTLASS's Sm80 GEMM (once) …");
    let cutlass = cutlass::Cutlass::build(&ctx, &opts.out.join("cutlass"))?;
    let mut log = LaunchLog::create(&log_path)?;

    let cases: Vec<Case> = cases(opts.quick).into_iter().filter(|c| opts.keeps(&c.label())).collect();
    let gemm_shapes: std::collections::BTreeSet<(usize, usize, usize)> =
        cases.iter().flat_map(|c| [(c.m, c.n, c.k), (c.m, c.k, c.n)]).collect();
    // Many adapters at the cost of one: the scattered batches (the first
    // projection, r = 16; their launches go to launches.csv, their sums to stderr).
    let scattered: Vec<Case> = if opts.quick || !opts.keeps("scattered") {
        Vec::new()
    } else {
        let (projection, k, n) = shapes::PROJECTIONS[0];
        let r = shapes::SCATTERED_RANK;
        shapes::SCATTERED_TOKENS.iter().map(|&m| Case { projection, m, k, n, r }).collect()
    };
    let steps = gemm_shapes.len() + 2 * cases.len() + 4 * scattered.len();
    let mut step = 0;
    let started = Instant::now();
    let mut cutlass_launches = std::collections::BTreeMap::new();
    let mut every_launch: Vec<(String, Launch)> = Vec::new();
    for &shape in &gemm_shapes {
        let (m, n, k) = shape;
        let label = format!("CUTLASS GEMM M={m} N={n} K={k}");
        let launches = counted(&mut log, &mut step, steps, &label, || cutlass.gemm(&stream, shape))?;
        every_launch.extend(launches.iter().map(|l| (label.clone(), l.clone())));
        cutlass_launches.insert(shape, launches);
    }
    // The GPUs by multiprocessor count: the library sizes its launches
    // (tile, K splits) by the device's count, so each count runs the
    // forward and backward on an emulated device of that many SMs, modeled
    // on the GPUs that have it.
    let mut by_sms: std::collections::BTreeMap<(u32, &str), Vec<String>> = std::collections::BTreeMap::new();
    for ceiling in &ceilings {
        by_sms.entry((ceiling.sms, ceiling.compute_capability)).or_default().push(ceiling.gpu.clone());
    }
    let steps = steps + 2 * cases.len() * (by_sms.len() - 1);
    let mut rows = Vec::new();
    for case in &cases {
        let name = case.label();
        let mut runs: std::collections::BTreeMap<String, (Vec<Launch>, Vec<Launch>)> =
            std::collections::BTreeMap::new();
        for ((sms, compute_capability), on) in &by_sms {
            let _model = EnvOverride::set("PTX_EMU_MODEL", &on.join(","));
            let _sms = EnvOverride::set("PTX_EMU_MULTIPROCESSORS", &sms.to_string());
            let _cc = EnvOverride::set("PTX_EMU_COMPUTE_CAPABILITY", compute_capability);
            let _path = EnvOverride::set(fused_lora::HOPPER_ENV, "0");
            let tag = if by_sms.len() > 1 { format!(" ({sms} SMs)") } else { String::new() };
            let forward = counted(&mut log, &mut step, steps, &format!("forward  {name}{tag}"), || {
                // Decode is judged on the bytes it reads, and sampling extrapolates
                // unique bytes as if every CTA read alike (the decode grid's
                // adapter tiles do not): its small grids run whole.
                let _whole =
                    (case.m <= targets::DECODE_TOKENS).then(|| EnvOverride::set("PTX_EMU_SAMPLE_CTAS", WHOLE_GRID));
                cases::forward(&kernels, &stream, case)
            })?;
            let backward = counted(&mut log, &mut step, steps, &format!("backward {name}{tag}"), || {
                cases::backward(&kernels, &stream, case)
            })?;
            every_launch.extend(forward.iter().map(|l| (format!("forward {name}{tag}"), l.clone())));
            every_launch.extend(backward.iter().map(|l| (format!("backward {name}{tag}"), l.clone())));
            for gpu in on {
                runs.insert(gpu.clone(), (forward.clone(), backward.clone()));
            }
        }
        for ceiling in &ceilings {
            let gpu = &ceiling.gpu;
            let (forward, backward) = &runs[gpu];
            rows.push(Row {
                case: *case,
                gpu: gpu.clone(),
                forward: sum_on(forward, gpu)?,
                backward: sum_on(backward, gpu)?,
                cutlass: sum_on(&cutlass_launches[&(case.m, case.n, case.k)], gpu)?.us,
                cutlass_dx: sum_on(&cutlass_launches[&(case.m, case.k, case.n)], gpu)?.us,
                forward_floor: ceiling.floor_us(case.forward_flops(), case.forward_bytes()),
                backward_floor: ceiling.floor_us(case.backward_flops(), case.backward_bytes()),
                w0_floor: ceiling.read_us(case.w0_bytes()),
            });
        }
    }
    for case in &scattered {
        let adapters = shapes::SCATTERED_ADAPTERS;
        let name = case.label();
        let one = format!("{name}, 1 adapter");
        let many = format!("{name}, {adapters} adapters scattered");
        let runs: [(String, Vec<Launch>); 4] = [
            (
                format!("forward {one}"),
                counted(&mut log, &mut step, steps, &format!("forward  {one}"), || {
                    cases::forward_multi(&kernels, &stream, case, 1)
                })?,
            ),
            (
                format!("forward {many}"),
                counted(&mut log, &mut step, steps, &format!("forward  {many}"), || {
                    cases::forward_multi(&kernels, &stream, case, adapters)
                })?,
            ),
            (
                format!("backward {one}"),
                counted(&mut log, &mut step, steps, &format!("backward {one}"), || {
                    cases::backward_multi(&kernels, &stream, case, 1)
                })?,
            ),
            (
                format!("backward {many}"),
                counted(&mut log, &mut step, steps, &format!("backward {many}"), || {
                    cases::backward_multi(&kernels, &stream, case, adapters)
                })?,
            ),
        ];
        for (label, launches) in &runs {
            for gpu in &gpus {
                eprintln!("modeled {gpu}: {label}: {:.1} us", sum_on(launches, gpu)?.us);
            }
            every_launch.extend(launches.iter().map(|l| (label.clone(), l.clone())));
        }
    }
    rows.sort_by(|a, b| a.gpu.cmp(&b.gpu).then(a.label().cmp(&b.label())));
    let table = output::table(&rows);
    println!("\n{table}");
    output::write_csv(&opts.out.join("report.csv"), &rows)?;
    output::write_svg(&opts.out.join("report.svg"), &rows, &gpus)?;
    output::write_launches_csv(&opts.out.join("launches.csv"), &every_launch, &gpus)?;
    output::write_markdown(&opts.out.join("report.md"), &rows, &gpus)?;
    // The Hopper rows (the H100 presenting compute capability 9.0): not in
    // the quick dry run, whose time the test command pays (they build
    // CUTLASS's Sm90 kernel and its params program).
    if !opts.quick && gpus.iter().any(|g| g == hopper::GPU) {
        hopper_rows(&ctx, &kernels, &mut log, &opts.out)?;
    }
    println!(
        "modeled times (not measured on a GPU); {} s on the emulator; wrote {}, {} and {}",
        started.elapsed().as_secs(),
        opts.out.join("report.csv").display(),
        opts.out.join("report.svg").display(),
        log_path.display()
    );
    Ok(())
}

/// The Hopper rows (`hopper.rs`): on an emulated H100 presenting compute
/// capability 9.0, each case's forward on the Hopper path and on the
/// mma.sync path, and CUTLASS Sm90's base GEMM; prints the table and writes
/// `hopper.md` and `hopper.csv` into `out`.
fn hopper_rows(
    ctx: &std::sync::Arc<CudaContext>,
    kernels: &LoraKernels,
    log: &mut LaunchLog,
    out: &Path,
) -> Result<(), Box<dyn Error>> {
    let _cc = EnvOverride::set("PTX_EMU_COMPUTE_CAPABILITY", "90");
    let _model = EnvOverride::set("PTX_EMU_MODEL", hopper::GPU);
    let _sms = EnvOverride::set("PTX_EMU_MULTIPROCESSORS", &hopper::SMS.to_string());
    let stream = ctx.default_stream();
    // The emulator's libcuda.so: the params program encodes CUTLASS's
    // tensor maps with it.
    let driver_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release");
    eprintln!("perf report: compiling NVIDIA CUTLASS's Sm90 GEMM (once) …");
    let cutlass = cutlass_sm90::CutlassSm90::build(ctx, &out.join("cutlass"), &driver_dir)?;
    let cases = hopper::cases(shapes::PROJECTIONS);
    let steps = 3 * cases.len();
    let mut step = 0;
    let mut rows = Vec::new();
    for case in &cases {
        let name = case.label();
        let hopper_launches =
            counted_on_path(log, &mut step, steps, &format!("forward  {name} (H100, Hopper path)"), true, || {
                cases::forward(kernels, &stream, case)
            })?;
        if !hopper_launches.iter().any(|l| l.kernel.ends_with("_sm90a")) {
            return Err(format!("{name}: the forward on compute capability 9.0 took no sm_90a kernel").into());
        }
        let mma_sync_launches =
            counted_on_path(log, &mut step, steps, &format!("forward  {name} (H100, mma.sync path)"), false, || {
                cases::forward(kernels, &stream, case)
            })?;
        let shape = (case.m, case.n, case.k);
        let cutlass_launches = counted(log, &mut step, steps, &format!("CUTLASS Sm90 GEMM {name}"), || {
            cutlass.gemm(&stream, shape, hopper::SMS)
        })?;
        rows.push(hopper::HopperRow {
            case: *case,
            hopper: sum_on(&hopper_launches, hopper::GPU)?,
            mma_sync: sum_on(&mma_sync_launches, hopper::GPU)?,
            cutlass_sm90_us: sum_on(&cutlass_launches, hopper::GPU)?.us,
        });
    }
    println!("\n{}", hopper::table(&rows));
    hopper::write(out, &rows)?;

    // The backward's dX: the Hopper dX (with dA's launch) against the
    // mma.sync dX (whose launch runs dA's CTAs), and CUTLASS Sm90's GEMM of
    // dX's shape.
    let steps = 3 * cases.len();
    let mut step = 0;
    let mut dx_rows = Vec::new();
    let dx_and_da =
        |all: &[Launch]| -> Vec<Launch> { all.iter().filter(|l| hopper::is_dx_or_da(&l.kernel)).cloned().collect() };
    for case in &cases {
        let name = case.label();
        let hopper_launches =
            counted_on_path(log, &mut step, steps, &format!("backward {name} (H100, Hopper dX)"), true, || {
                cases::backward(kernels, &stream, case)
            })?;
        let hopper_dx: Vec<_> = hopper_launches.iter().filter(|l| l.kernel.ends_with("_sm90a")).cloned().collect();
        if hopper_dx.is_empty() {
            return Err(format!("{name}: the backward on compute capability 9.0 took no sm_90a dX").into());
        }
        let mma_sync_launches =
            counted_on_path(log, &mut step, steps, &format!("backward {name} (H100, mma.sync dX)"), false, || {
                cases::backward(kernels, &stream, case)
            })?;
        // dX [M, K] reduced over N.
        let shape = (case.m, case.k, case.n);
        let cutlass_launches = counted(log, &mut step, steps, &format!("CUTLASS Sm90 GEMM, dX of {name}"), || {
            cutlass.gemm(&stream, shape, hopper::SMS)
        })?;
        dx_rows.push(hopper::DxRow {
            case: *case,
            hopper_dx: sum_on(&hopper_dx, hopper::GPU)?,
            hopper_dx_da: sum_on(&dx_and_da(&hopper_launches), hopper::GPU)?,
            mma_sync_dx_da: sum_on(&dx_and_da(&mma_sync_launches), hopper::GPU)?,
            cutlass_sm90_us: sum_on(&cutlass_launches, hopper::GPU)?.us,
        });
    }
    println!("\n{}", hopper::dx_table(&dx_rows));
    hopper::write_dx(out, &dx_rows)?;
    println!(
        "modeled times (not measured on a GPU); wrote {} and {}",
        out.join("hopper.md").display(),
        out.join("hopper_dx.md").display()
    );
    Ok(())
}

//! A modeled GPU time for one launch, from its exact counts (docs/perf-model.md).
//!
//! Per GPU (`gpus`), the launch's CTAs are placed over the SMs: the busiest
//! SM runs `ceil(CTAs / SMs)` of them, at most `ctas_per_sm` at a time
//! (`occupancy`, from the registers and static shared memory ptxas reports for
//! that GPU's architecture, `ptxas`). Each resource gives a time:
//!
//! - issue: the busiest SM's warp instructions over 4 schedulers;
//! - tensor: its mma instructions, each costing m·n·k multiply-adds at the
//!   GPU's dense mma.sync rate for the operand type (wgmma: a quarter of
//!   m64nNk16 per warp at the GPU's wgmma rate);
//! - shared: its shared-memory wavefronts, one per clock;
//! - l2: all global sectors (32 bytes each) over the device's L2 bandwidth;
//! - dram: unique bytes read and written, plus re-reads when the working set
//!   exceeds L2 (see [`dram_bytes`]), over DRAM bandwidth;
//! - latency: what too few resident warps cannot hide (see [`latency_cycles`]).
//!
//! The modeled time is the launch overhead plus the largest of those; that
//! resource is the bound ("launch" when the overhead exceeds all of them).
//! It is a model, labelled as such wherever it is printed.

pub mod gpus;
pub mod occupancy;
pub mod ptxas;

pub use gpus::Gpu;
pub use occupancy::Limiter;

use crate::counters::Counters;
use std::collections::BTreeMap;

/// What the model needs to know about the kernel itself.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelResources {
    /// Registers per thread.
    pub registers: u32,
    /// "ptxas sm_80", "ptxas sm_90", or "estimate" (the executor's count).
    pub registers_source: String,
    pub static_shared: u32,
    pub dynamic_shared: u32,
    pub threads_per_cta: u32,
}

impl KernelResources {
    /// The resources of `kernel` in the module with PTX text `ptx`, on
    /// `gpu`'s architecture: ptxas's registers and static shared memory when
    /// ptxas assembles it, else the executor's estimates (`fallback`).
    pub fn from_ptxas(
        ptx: &str,
        kernel: &crate::KernelInfo,
        gpu: &Gpu,
        threads_per_cta: u32,
        dynamic_shared: u32,
    ) -> KernelResources {
        match ptxas::entry(ptx, gpu.arch, &kernel.name) {
            Ok(e) => KernelResources {
                registers: e.registers,
                registers_source: format!("ptxas {}", gpu.arch),
                static_shared: e.static_shared_bytes,
                dynamic_shared,
                threads_per_cta,
            },
            Err(why) => {
                warn_once(&format!("ptx-emu model: register counts are estimates ({why})"));
                KernelResources {
                    registers: kernel.num_regs,
                    registers_source: "estimate".into(),
                    static_shared: kernel.static_shared_bytes,
                    dynamic_shared,
                    threads_per_cta,
                }
            }
        }
    }
}

/// The resources the model compares, in the order a tie is reported.
pub const RESOURCES: [&str; 6] = ["tensor", "issue", "shared", "l2", "dram", "latency"];

/// One launch on one GPU, as modeled.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub gpu: &'static str,
    /// Modeled microseconds, launch overhead included.
    pub us: f64,
    /// The binding resource: one of [`RESOURCES`] or "launch".
    pub bound: &'static str,
    /// Microseconds each resource alone would take (the busiest SM's share
    /// for per-SM resources), keyed like [`RESOURCES`].
    pub resource_us: BTreeMap<&'static str, f64>,
    /// Fraction of each throughput resource's device-wide peak used over the
    /// modeled time: "issue", "tensor", "shared", "l2", "dram".
    pub utilization: BTreeMap<&'static str, f64>,
    pub resources: KernelResources,
    pub ctas_per_sm: u32,
    pub limiter: Limiter,
    /// CTAs over (SMs × CTAs per SM).
    pub waves: f64,
    /// DRAM bytes the model charged.
    pub dram_bytes: f64,
}

/// Multiply-adds of one mma by its name ("mma.m16n8k16.f32.bf16.bf16.f32"),
/// and the per-clock-per-SM rate of its operand type on `gpu`.
fn mma_cost(name: &str, gpu: &Gpu) -> (f64, f64) {
    let parts: Vec<&str> = name.split('.').collect();
    let shape = parts.iter().find(|p| p.starts_with('m') && p.contains('n') && p.contains('k'));
    let fma = shape
        .and_then(|s| {
            let m: f64 = s[1..s.find('n')?].parse().ok()?;
            let n: f64 = s[s.find('n')? + 1..s.find('k')?].parse().ok()?;
            let k: f64 = s[s.find('k')? + 1..].parse().ok()?;
            Some(m * n * k)
        })
        .unwrap_or(0.0);
    // The A operand's type follows the D type: mma.mMnNkK.dtype.atype.btype.ctype.
    let atype =
        shape.and_then(|s| parts.iter().position(|p| p == s)).and_then(|i| parts.get(i + 2)).copied().unwrap_or("");
    if name.starts_with("wgmma.") {
        // Counted once per warp of the warpgroup: a quarter of m64nNk16 each.
        // A GPU without wgmma cannot run it; charge it mma.sync's rate there.
        let rate = if gpu.wgmma_fma_per_clock_per_sm_16bit > 0.0 {
            gpu.wgmma_fma_per_clock_per_sm_16bit
        } else {
            gpu.mma_fma_per_clock_per_sm_16bit
        };
        return (fma / 4.0, rate);
    }
    let rate = match atype {
        "tf32" => gpu.mma_fma_per_clock_per_sm_tf32,
        "f64" => gpu.mma_fma_per_clock_per_sm_f64,
        "s8" | "u8" | "s4" | "u4" | "e4m3" | "e5m2" => gpu.mma_fma_per_clock_per_sm_int8,
        _ => gpu.mma_fma_per_clock_per_sm_16bit,
    };
    (fma, rate)
}

/// DRAM bytes: the unique bytes read and written (each moved once), plus,
/// when the footprint (unique read + written) exceeds L2, one more pass over
/// the re-read inputs in the proportion of the footprint that does not fit:
/// `extra = min(rereads, unique_read) × (1 − L2 / footprint)`, where
/// `rereads` = L2 load bytes − unique read bytes. A coarse rule: it ignores
/// the order CTAs run in (a raster that keeps a GEMM's panels hot does better).
pub fn dram_bytes(c: &Counters, gpu: &Gpu) -> f64 {
    let read = c.global_bytes_read as f64;
    let written = c.global_bytes_written as f64;
    let footprint = read + written;
    let l2 = gpu.l2_bytes as f64;
    let rereads = (c.global_load_sectors as f64 * 32.0 - read).max(0.0);
    let extra = if footprint > l2 { rereads.min(read) * (1.0 - l2 / footprint) } else { 0.0 };
    read + written + extra
}

/// Most SM-local pipes (tensor, shared memory, issue) one scheduler keeps
/// busy at once.
const SM_PIPES: f64 = 3.0;

/// The latency bound of the busiest SM, in cycles: what too few resident
/// warps cannot hide. The largest of
/// - dependent issue: a warp issues at most once per `dependent_issue_cycles`,
///   so a scheduler with `w` resident warps issues at most
///   `min(1, w / dependent_issue_cycles)` per clock;
/// - pipe overlap: a warp executes in order and sits in one scheduler's
///   partition, so the tensor pipe, the shared-memory pipe and the issue port
///   of a partition are busy at the same time only with work from different
///   warps: with `w` warps per scheduler, the SM-local times (`sm_pipes`,
///   busiest SM) overlap at most `min(w, 3)`-fold (and with fewer warps than
///   schedulers, the idle partitions' pipes are lost);
/// - memory round trips: each barrier interval of a warp waits for the
///   global loads staged in it, one `memory_latency_cycles` per interval
///   (loads between two barriers overlap; multistage pipelines that keep
///   loads in flight across barriers are charged too much here), for each
///   round of resident CTAs the SM runs.
pub fn latency_cycles(c: &Counters, gpu: &Gpu, ctas_per_sm: u32, warps_per_cta: u32, sm_pipes: [f64; 3]) -> f64 {
    let total = c.total_ctas.max(1) as f64;
    let busiest = (c.total_ctas.max(1)).div_ceil(gpu.sms as u64) as f64;
    let resident = (ctas_per_sm.max(1) as f64).min(busiest);
    let rounds = (busiest / resident).ceil();
    let warps_per_scheduler = resident * warps_per_cta as f64 / gpu.issue_per_clock_per_sm;
    let issue_rate = gpu.issue_per_clock_per_sm * (warps_per_scheduler / gpu.dependent_issue_cycles).min(1.0);
    let issue = busiest * (c.warp_instructions as f64 / total) / issue_rate;
    let overlap = sm_pipes.iter().sum::<f64>() / warps_per_scheduler.min(SM_PIPES);
    let memory = if c.global_load_requests > 0 {
        let warps = total * warps_per_cta as f64;
        let intervals = c.barriers as f64 / warps + 1.0;
        rounds * intervals * gpu.memory_latency_cycles
    } else {
        0.0
    };
    issue.max(overlap).max(memory)
}

/// Models the launch `c` of a kernel with resources `res` on `gpu`.
pub fn model_launch(c: &Counters, gpu: &Gpu, res: &KernelResources) -> Estimate {
    let (ctas_per_sm, limiter) = occupancy::ctas_per_sm(gpu, res);
    let total = c.total_ctas.max(1) as f64;
    let sms = gpu.sms as f64;
    let busiest = (c.total_ctas.max(1)).div_ceil(gpu.sms as u64) as f64;
    let per_cta = |v: f64| v / total;
    let clock_hz = gpu.clock_ghz * 1e9;
    let warps_per_cta = res.threads_per_cta.div_ceil(32).max(1);

    let mut tensor_cycles_total = 0.0;
    for (name, &n) in &c.tensor_instructions {
        let (fma, rate) = mma_cost(name, gpu);
        tensor_cycles_total += n as f64 * fma / rate;
    }
    let issue_total = c.warp_instructions as f64 / gpu.issue_per_clock_per_sm;
    let shared_total = c.shared_wavefronts as f64 / gpu.shared_wavefronts_per_clock_per_sm;
    let l2_cycles = (c.global_load_sectors + c.global_store_sectors) as f64 * 32.0 / gpu.l2_bytes_per_clock;
    let dram = dram_bytes(c, gpu);
    let dram_cycles = dram / gpu.dram_bytes_per_s * clock_hz;

    // Cycles of each resource: per-SM ones on the busiest SM, device ones whole.
    let sm_pipes =
        [busiest * per_cta(tensor_cycles_total), busiest * per_cta(issue_total), busiest * per_cta(shared_total)];
    let latency =
        if ctas_per_sm == 0 { f64::INFINITY } else { latency_cycles(c, gpu, ctas_per_sm, warps_per_cta, sm_pipes) };
    let cycles: [(&'static str, f64); 6] = [
        ("tensor", sm_pipes[0]),
        ("issue", sm_pipes[1]),
        ("shared", sm_pipes[2]),
        ("l2", l2_cycles),
        ("dram", dram_cycles),
        ("latency", latency),
    ];
    let to_us = |cy: f64| cy / clock_hz * 1e6;
    let (mut bound, mut worst) = ("launch", 0.0f64);
    for &(name, cy) in &cycles {
        if cy > worst {
            (bound, worst) = (name, cy);
        }
    }
    let body_us = to_us(worst);
    if body_us < gpu.launch_overhead_us {
        bound = "launch";
    }
    let us = gpu.launch_overhead_us + body_us;
    let util = |device_cycles: f64| if us > 0.0 { to_us(device_cycles) / us } else { 0.0 };
    let utilization = BTreeMap::from([
        ("issue", util(issue_total / sms)),
        ("tensor", util(tensor_cycles_total / sms)),
        ("shared", util(shared_total / sms)),
        ("l2", util(l2_cycles)),
        ("dram", util(dram_cycles)),
    ]);
    Estimate {
        gpu: gpu.name,
        us,
        bound,
        resource_us: cycles.iter().map(|&(n, cy)| (n, to_us(cy))).collect(),
        utilization,
        resources: res.clone(),
        ctas_per_sm,
        limiter,
        waves: total / (sms * ctas_per_sm.max(1) as f64),
        dram_bytes: dram,
    }
}

impl Estimate {
    /// The estimate as a JSON object (the counters line's `model.<gpu>`).
    pub fn to_json(&self) -> String {
        let num = |v: f64| {
            if v.is_finite() {
                format!("{v:.6}")
            } else {
                "null".to_string()
            }
        };
        let util: Vec<String> = ["issue", "tensor", "shared", "l2", "dram"]
            .iter()
            .map(|k| format!("\"{k}\":{}", num(self.utilization.get(k).copied().unwrap_or(0.0))))
            .collect();
        let res_us: Vec<String> = self.resource_us.iter().map(|(k, v)| format!("\"{k}\":{}", num(*v))).collect();
        format!(
            "{{\"us\":{},\"bound\":\"{}\",\"utilization\":{{{}}},\"resource_us\":{{{}}},\"registers\":{},\
             \"registers_source\":\"{}\",\"static_shared\":{},\"dynamic_shared\":{},\"ctas_per_sm\":{},\
             \"limiter\":\"{}\",\"waves\":{},\"dram_bytes\":{}}}",
            num(self.us),
            self.bound,
            util.join(","),
            res_us.join(","),
            self.resources.registers,
            self.resources.registers_source,
            self.resources.static_shared,
            self.resources.dynamic_shared,
            self.ctas_per_sm,
            self.limiter.name(),
            num(self.waves),
            num(self.dram_bytes),
        )
    }
}

fn warn_once(message: &str) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.iter().any(|m| m == message) {
        eprintln!("{message}");
        seen.push(message.to_string());
    }
}

/// The GPUs `PTX_EMU_MODEL` names (comma separated, e.g. "a100,h100");
/// unknown names are reported once on stderr and skipped.
pub fn gpus_from_env() -> Vec<&'static Gpu> {
    let Ok(list) = std::env::var("PTX_EMU_MODEL") else {
        return Vec::new();
    };
    let mut gpus: Vec<&'static Gpu> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match gpus::by_name(name) {
            Some(g) if !gpus.iter().any(|x| x.name == g.name) => gpus.push(g),
            Some(_) => {}
            None => warn_once(&format!(
                "ptx-emu: PTX_EMU_MODEL names unknown GPU {name:?} (known: a100, h100, h200); skipped"
            )),
        }
    }
    gpus
}

/// The counters line's `"model"` object for this launch on `gpus`, or `None`
/// when no GPU is asked for.
pub(crate) fn model_json(
    module: &crate::Module,
    kernel: &crate::KernelInfo,
    config: &crate::LaunchConfig,
    counters: &Counters,
    gpus: &[&'static Gpu],
) -> Option<String> {
    if gpus.is_empty() {
        return None;
    }
    let ptx = module.text();
    let threads = config.block.iter().product();
    let items: Vec<String> = gpus
        .iter()
        .map(|gpu| {
            let res = KernelResources::from_ptxas(&ptx, kernel, gpu, threads, config.dynamic_shared_bytes);
            format!("\"{}\":{}", gpu.name, model_launch(counters, gpu, &res).to_json())
        })
        .collect();
    Some(format!("{{{}}}", items.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mma_names_give_shape_and_rate() {
        let a = &gpus::A100;
        assert_eq!(mma_cost("mma.m16n8k16.f32.bf16.bf16.f32", a), (2048.0, 1024.0));
        assert_eq!(mma_cost("mma.m16n8k8.f32.tf32.tf32.f32", a), (1024.0, 512.0));
        assert_eq!(mma_cost("mma.m8n8k4.f64.f64.f64.f64", a), (256.0, 64.0));
        assert_eq!(mma_cost("mma.m16n8k32.s32.s8.s8.s32", a), (4096.0, 2048.0));
    }

    #[test]
    fn wgmma_is_counted_per_warp_at_the_wgmma_rate() {
        // m64n128k16 = 131072 multiply-adds per warpgroup, a quarter per warp.
        assert_eq!(mma_cost("wgmma.m64n128k16.f32.bf16.bf16", &gpus::H100), (32768.0, 2048.0));
        assert_eq!(mma_cost("mma.m16n8k16.f32.bf16.bf16.f32", &gpus::H100), (2048.0, 1024.0));
        // No wgmma on an A100: charged at its mma.sync rate.
        assert_eq!(mma_cost("wgmma.m64n8k16.f32.f16.f16", &gpus::A100), (2048.0, 1024.0));
    }
}

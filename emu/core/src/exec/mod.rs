//! Kernel execution: a launch spreads its CTAs over host threads; each CTA
//! runs on one thread (`cta`), with memory instructions in `memops`, warp
//! collectives and barriers in `sync`, per-lane arithmetic in `arith` and
//! racecheck's shadow in `race`.
//!
//! Model: each warp runs SIMT over the group of its lanes at the lowest
//! program counter (per-lane PCs, so divergence and reconvergence behave as
//! with independent thread scheduling); a warp runs until all its lanes are
//! blocked or a time slice ends, then the next warp runs. Shared, local and
//! param memory appear in the generic address space in windows far below
//! global allocations (`ptx::ir::*_WINDOW`), so a generic access finds its space.
//!
//! Known limits of the checks:
//! - racecheck orders accesses by CTA-wide barriers, by named barriers
//!   between the warps that met at them (vector clocks) and, within a warp,
//!   by collectives and `bar.warp.sync`; it keeps every unordered access, so
//!   it misses no hazard between them (`race`).
//! - shared-memory initcheck does not report `ldmatrix` rows by default
//!   (tensor-core tiles load rows past a ragged edge that predicated-off
//!   copies never wrote, and discard their products): their unwritten bytes
//!   read as 0xff (NaN) instead, so a product that is used poisons its
//!   output; `CheckOptions::ldmatrix_initcheck` reports them.
//! - a kernel that loops forever runs forever (only a state where no thread
//!   can progress is reported, as a deadlock).

mod arith;
mod async_proxy;
mod cluster;
pub(crate) mod config;
mod cta;
mod memops;
mod race;
mod sample;
mod sync;
mod tma;
mod wgmma;
mod wmma;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::counters::Counters;
use crate::findings::{Finding, FindingKind};
use crate::memory::{Allocation, GlobalMemory};
use crate::module::Module;
use crate::ptx::ir::{BarKind, Class, Kernel, Op, CLASS_COUNT};
use config::{CheckOptions, LaunchConfig, LaunchReport};

pub(crate) use cluster::MAX_CLUSTER_SIZE;

/// Findings kept per launch (execution stops at the first, races aside,
/// which are reported once per pair of instructions and let it go on; CTAs
/// already running on other threads may add a few more).
const MAX_FINDINGS: usize = 64;

/// Unwinds a CTA after a finding (the finding is already recorded).
#[derive(Debug)]
pub(crate) struct Stop;

/// Per-host-thread counts, summed at the end so results do not depend on
/// how CTAs were spread over threads.
#[derive(Clone, Default)]
pub(crate) struct Stats {
    /// Warp-level executions of each instruction (indexed like `Kernel::insts`).
    pub inst_warp: Vec<u64>,
    pub thread_instructions: u64,
    pub global_load_requests: u64,
    pub global_store_requests: u64,
    pub global_load_sectors: u64,
    pub global_store_sectors: u64,
    pub shared_requests: u64,
    pub shared_wavefronts: u64,
    pub shared_bank_conflicts: u64,
    pub ldmatrix_bank_conflicts: u64,
    pub barriers: u64,
    pub bulk_copies: u64,
    pub bulk_bytes: u64,
    pub cluster_shared_requests: u64,
    pub cluster_shared_bytes: u64,
}

impl Stats {
    /// Every count times `num / den`, rounded (a stratum's sample standing
    /// for the whole stratum).
    fn scaled(&self, num: u64, den: u64) -> Stats {
        let f = |v: u64| sample::scale(v, num, den);
        Stats {
            inst_warp: self.inst_warp.iter().map(|&v| f(v)).collect(),
            thread_instructions: f(self.thread_instructions),
            global_load_requests: f(self.global_load_requests),
            global_store_requests: f(self.global_store_requests),
            global_load_sectors: f(self.global_load_sectors),
            global_store_sectors: f(self.global_store_sectors),
            shared_requests: f(self.shared_requests),
            shared_wavefronts: f(self.shared_wavefronts),
            shared_bank_conflicts: f(self.shared_bank_conflicts),
            ldmatrix_bank_conflicts: f(self.ldmatrix_bank_conflicts),
            barriers: f(self.barriers),
            bulk_copies: f(self.bulk_copies),
            bulk_bytes: f(self.bulk_bytes),
            cluster_shared_requests: f(self.cluster_shared_requests),
            cluster_shared_bytes: f(self.cluster_shared_bytes),
        }
    }

    pub(crate) fn new(n: usize) -> Self {
        Stats { inst_warp: vec![0; n], ..Default::default() }
    }

    fn add(&mut self, o: &Stats) {
        for (a, b) in self.inst_warp.iter_mut().zip(&o.inst_warp) {
            *a += b;
        }
        self.thread_instructions += o.thread_instructions;
        self.global_load_requests += o.global_load_requests;
        self.global_store_requests += o.global_store_requests;
        self.global_load_sectors += o.global_load_sectors;
        self.global_store_sectors += o.global_store_sectors;
        self.shared_requests += o.shared_requests;
        self.shared_wavefronts += o.shared_wavefronts;
        self.shared_bank_conflicts += o.shared_bank_conflicts;
        self.ldmatrix_bank_conflicts += o.ldmatrix_bank_conflicts;
        self.barriers += o.barriers;
        self.bulk_copies += o.bulk_copies;
        self.bulk_bytes += o.bulk_bytes;
        self.cluster_shared_requests += o.cluster_shared_requests;
        self.cluster_shared_bytes += o.cluster_shared_bytes;
    }
}

/// Which bytes of one allocation the launch read and wrote (bit per byte,
/// created on first touch).
#[derive(Default)]
struct Touched {
    read: OnceLock<Box<[AtomicU64]>>,
    written: OnceLock<Box<[AtomicU64]>>,
}

fn bitmap(size: u64) -> Box<[AtomicU64]> {
    // Zeroed pages, committed where bits are set (allocations of many GiB).
    crate::memory::zeroed(size.div_ceil(64))
}

fn popcount(b: &OnceLock<Box<[AtomicU64]>>) -> u64 {
    b.get().map_or(0, |v| v.iter().map(|w| w.load(Ordering::Relaxed).count_ones() as u64).sum())
}

/// Bytes from the first to the last byte set (0 when none is).
fn span(b: &OnceLock<Box<[AtomicU64]>>) -> u64 {
    let Some(v) = b.get() else { return 0 };
    let words: Vec<u64> = v.iter().map(|w| w.load(Ordering::Relaxed)).collect();
    let first = words.iter().position(|&w| w != 0);
    let last = words.iter().rposition(|&w| w != 0);
    match (first, last) {
        (Some(f), Some(l)) => {
            let lo = f as u64 * 64 + words[f].trailing_zeros() as u64;
            let hi = l as u64 * 64 + 63 - words[l].leading_zeros() as u64;
            hi - lo + 1
        }
        _ => 0,
    }
}

/// Unique bytes of one direction (read or written) over the launch: exact
/// when every CTA ran; under sampling, per allocation, the sample's bytes
/// scaled by `total / sampled` and capped at the span the sample touched
/// (see `sample`).
fn unique_bytes(touched: &[Touched], write: bool, total: u64, sampled: u64) -> u64 {
    touched
        .iter()
        .map(|t| {
            let b = if write { &t.written } else { &t.read };
            let n = popcount(b);
            if sampled >= total {
                n
            } else {
                sample::scale(n, total, sampled).min(span(b)).max(n)
            }
        })
        .sum()
}

/// Says once per process that launches are sampled.
fn announce_sampling(limit: u64) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        eprintln!(
            "ptx-emu: CTA sampling is on ({limit} CTAs per launch, PTX_EMU_SAMPLE_CTAS or \
             CheckOptions::sample_ctas): launches with more CTAs run only a sample, their outputs are \
             INCOMPLETE, their counters are extrapolated to the whole grid"
        );
    });
}

/// Everything the CTAs of one launch share.
pub(crate) struct LaunchCtx<'a> {
    pub module: &'a Module,
    pub kernel: &'a Kernel,
    pub config: &'a LaunchConfig,
    pub params: &'a [u8],
    /// CTAs per cluster in each dimension (1, 1, 1 without clusters), and
    /// whether the kernel or the launch asked for clusters.
    pub cluster: [u32; 3],
    pub explicit_cluster: bool,
    pub mem: &'a GlobalMemory,
    pub opts: CheckOptions,
    /// Live allocations at launch, by base (kernels cannot allocate).
    pub allocs: Vec<Arc<Allocation>>,
    touched: Vec<Touched>,
    stop: AtomicBool,
    findings: Mutex<Vec<Finding>>,
    /// The pairs of PTX lines racecheck has reported in this launch.
    reported_pairs: Mutex<std::collections::HashSet<(u32, u32)>>,
}

impl LaunchCtx<'_> {
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn report(
        &self,
        kind: FindingKind,
        line: u32,
        cta: [u32; 3],
        thread: [u32; 3],
        address: u64,
        detail: String,
    ) {
        self.stop.store(true, Ordering::Relaxed);
        let mut f = self.findings.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < MAX_FINDINGS {
            f.push(Finding {
                kind,
                kernel: self.kernel.info.name.clone(),
                ptx_line: line,
                instruction: self.module.line_text(line).to_string(),
                cta,
                thread,
                address,
                detail,
            });
        }
    }

    /// Records a finding that does not stop the launch (a race), once for
    /// each `key` (its pair of PTX lines); the launch still fails at its end.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn report_once(
        &self,
        key: (u32, u32),
        kind: FindingKind,
        line: u32,
        cta: [u32; 3],
        thread: [u32; 3],
        address: u64,
        detail: String,
    ) {
        {
            let mut seen = self.reported_pairs.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.insert(key) {
                return;
            }
        }
        let mut f = self.findings.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() < MAX_FINDINGS {
            f.push(Finding {
                kind,
                kernel: self.kernel.info.name.clone(),
                ptx_line: line,
                instruction: self.module.line_text(line).to_string(),
                cta,
                thread,
                address,
                detail,
            });
        }
    }

    /// Marks `[off, off+len)` of allocation `i` as read or written by this launch.
    pub(crate) fn touch(&self, i: usize, off: u64, len: u64, write: bool) {
        let t = &self.touched[i];
        let size = self.allocs[i].size;
        let bits = if write { t.written.get_or_init(|| bitmap(size)) } else { t.read.get_or_init(|| bitmap(size)) };
        let mut b = off;
        while b < off + len {
            let word = &bits[(b / 64) as usize];
            let first = b % 64;
            let n = (64 - first).min(off + len - b);
            let m = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << first };
            if word.load(Ordering::Relaxed) & m != m {
                word.fetch_or(m, Ordering::Relaxed);
            }
            b += n;
        }
    }
}

fn host_threads(opts: &CheckOptions, ctas: u64) -> usize {
    let n = if opts.threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { opts.threads };
    n.clamp(1, ctas.clamp(1, 1024) as usize)
}

/// Runs every CTA of the launch and gathers counters and findings.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    module: &Module,
    kernel: &Kernel,
    config: &LaunchConfig,
    cluster: Option<[u32; 3]>,
    params: &[u8],
    mem: &GlobalMemory,
    opts: &CheckOptions,
) -> LaunchReport {
    let allocs = mem.snapshot();
    let touched = allocs.iter().map(|_| Touched::default()).collect();
    let ctx = LaunchCtx {
        module,
        kernel,
        config,
        params,
        cluster: cluster.unwrap_or([1, 1, 1]),
        explicit_cluster: cluster.is_some(),
        mem,
        opts: *opts,
        allocs,
        touched,
        stop: AtomicBool::new(false),
        findings: Mutex::new(Vec::new()),
        reported_pairs: Mutex::new(Default::default()),
    };
    let [gx, gy, gz] = config.grid.map(|g| g as u64);
    let total = gx * gy * gz;
    // Work is handed out by cluster (a cluster of one is a CTA).
    let dims = ctx.cluster;
    let cluster_size = dims.iter().product::<u32>() as u64;
    let [cx, cy, _] = [0, 1, 2].map(|d| (config.grid[d] / dims[d]) as u64);
    let clusters = total / cluster_size;
    let plan = sample::plan_clusters(config.grid, dims, opts.sample_ctas.map(u64::from));
    if plan.is_some() {
        announce_sampling(opts.sample_ctas.map_or(0, u64::from));
    }
    let runs = plan.as_ref().map_or(clusters, |p| p.ctas.len() as u64);
    let next = AtomicUsize::new(0);
    let n_insts = kernel.insts.len();
    // Per stratum (one when the whole grid runs), summed over host threads.
    let worker = || {
        let mut cta = cta::Cta::new(&ctx);
        let mut group = (cluster_size > 1).then(|| cluster::ClusterRunner::new(&ctx));
        let mut per_stratum: Vec<Stats> = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed) as u64;
            if i >= runs || ctx.stopped() {
                break;
            }
            let (id, stratum) = match &plan {
                Some(p) => p.ctas[i as usize],
                None => {
                    let c = [i % cx, (i / cx) % cy, i / (cx * cy)];
                    ([0, 1, 2].map(|d| c[d] as u32 * dims[d]), 0)
                }
            };
            let failed = match group.as_mut() {
                Some(g) => g.run(id).is_err(),
                None => cta.run(id).is_err(),
            };
            if let Some(g) = group.as_mut() {
                g.take_stats(&mut cta.stats);
            }
            if plan.is_some() {
                if per_stratum.is_empty() {
                    per_stratum = (0..sample::STRATA).map(|_| Stats::new(n_insts)).collect();
                }
                per_stratum[stratum].add(&std::mem::replace(&mut cta.stats, Stats::new(n_insts)));
            }
            if failed {
                break;
            }
        }
        if plan.is_none() {
            per_stratum.push(cta.stats);
        }
        per_stratum
    };
    let threads = host_threads(opts, runs);
    let mut strata: Vec<Stats> = (0..sample::STRATA).map(|_| Stats::new(n_insts)).collect();
    let mut gather = |parts: Vec<Stats>| {
        for (s, st) in parts.iter().enumerate() {
            strata[s].add(st);
        }
    };
    if threads == 1 {
        gather(worker());
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            for h in handles {
                match h.join() {
                    Ok(st) => gather(st),
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
        });
    }
    let mut stats = Stats::new(n_insts);
    match &plan {
        Some(p) => {
            for (s, st) in strata.iter().enumerate() {
                if p.stratum_sampled[s] > 0 {
                    stats.add(&st.scaled(p.stratum_size[s], p.stratum_sampled[s]));
                }
            }
        }
        None => stats.add(&strata[0]),
    }
    let sampled = plan.as_ref().map_or(total, |p| p.sampled());
    let mut findings = ctx.findings.into_inner().unwrap_or_else(|e| e.into_inner());
    findings.sort_by_key(|f| (f.cta[2], f.cta[1], f.cta[0], f.thread[2], f.thread[1], f.thread[0]));
    let mut counters = summarise(kernel, config, &stats, &ctx.touched, total, sampled);
    counters.total_ctas = total;
    counters.sampled_ctas = sampled;
    counters.sampled = sampled < total;
    LaunchReport { counters, findings }
}

fn summarise(
    kernel: &Kernel,
    config: &LaunchConfig,
    st: &Stats,
    touched: &[Touched],
    total: u64,
    sampled: u64,
) -> Counters {
    let mut by_class = [0u64; CLASS_COUNT];
    let mut c = Counters {
        kernel: kernel.info.name.clone(),
        grid: config.grid,
        block: config.block,
        thread_instructions: st.thread_instructions,
        ..Default::default()
    };
    for (inst, &n) in kernel.insts.iter().zip(&st.inst_warp) {
        if n == 0 {
            continue;
        }
        c.warp_instructions += n;
        by_class[inst.class as usize] += n;
        if let Op::Mma { name, .. } = &inst.op {
            *c.tensor_instructions.entry(name.clone()).or_insert(0) += n;
        }
        if let Op::Wmma(crate::ptx::ir::WmmaInst::Mma { shape, ab, c_ty, d_ty }) = &inst.op {
            let name = format!("wmma.m{}n{}k{}.{:?}.{:?}.{:?}", shape.m, shape.n, shape.k, d_ty, ab, c_ty);
            *c.tensor_instructions.entry(name.to_lowercase()).or_insert(0) += n;
        }
        if let Op::Wgmma(crate::tensor::WgmmaOp::Mma(desc)) = &inst.op {
            // Counted per warp, as every warp instruction: four per warpgroup MMA.
            *c.tensor_instructions.entry(desc.counter_name()).or_insert(0) += n;
        }
        if let Op::Bar { kind: BarKind::Sync | BarKind::Red(_) | BarKind::Arrive } = inst.op {
            // counted in `st.barriers` per warp arrival
        }
    }
    for class in Class::ALL {
        let n = by_class[class as usize];
        if n > 0 {
            c.warp_instructions_by_class.insert(class.name().to_string(), n);
        }
    }
    c.global_load_requests = st.global_load_requests;
    c.global_store_requests = st.global_store_requests;
    c.global_load_sectors = st.global_load_sectors;
    c.global_store_sectors = st.global_store_sectors;
    c.global_bytes_read = unique_bytes(touched, false, total, sampled);
    c.global_bytes_written = unique_bytes(touched, true, total, sampled);
    c.shared_requests = st.shared_requests;
    c.shared_wavefronts = st.shared_wavefronts;
    c.shared_bank_conflicts = st.shared_bank_conflicts;
    c.ldmatrix_bank_conflicts = st.ldmatrix_bank_conflicts;
    c.barriers = st.barriers;
    c.bulk_copies = st.bulk_copies;
    c.bulk_bytes = st.bulk_bytes;
    c.cluster_shared_requests = st.cluster_shared_requests;
    c.cluster_shared_bytes = st.cluster_shared_bytes;
    c
}

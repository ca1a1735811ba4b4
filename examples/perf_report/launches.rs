//! The emulator's per-launch counters, as it appends them (one JSON object a
//! line) to the file named by `PTX_EMU_COUNTERS_FILE`, read back case by
//! case: what the modeled GPUs would take for each launch, and why.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};

/// One GPU's modeled time for one launch.
#[derive(Clone, Debug)]
pub struct Modeled {
    pub us: f64,
    /// The resource that binds: issue, tensor, shared, l2, dram, latency or launch.
    pub bound: String,
    pub registers: u64,
    pub ctas_per_sm: u64,
    /// What the model adds per launch beyond its resources (`us` less the
    /// largest of `resource_us`): the launch overhead.
    pub overhead_us: f64,
}

/// One launch as the emulator counted and modeled it.
#[derive(Clone, Debug)]
pub struct Launch {
    pub kernel: String,
    pub grid: [u64; 3],
    pub total_ctas: u64,
    pub sampled_ctas: u64,
    pub warp_instructions: u64,
    pub mma: u64,
    /// By GPU name (`a100`, `h100`, …).
    pub modeled: BTreeMap<String, Modeled>,
}

impl Launch {
    fn parse(line: &str) -> Result<Self, Box<dyn Error>> {
        let json: serde_json::Value = serde_json::from_str(line)?;
        let number = |key: &str| -> Result<u64, Box<dyn Error>> {
            json[key].as_u64().ok_or_else(|| format!("counters line without `{key}`: {line}").into())
        };
        let grid = json["grid"].as_array().ok_or("counters line without a grid")?;
        let dim = |i: usize| grid.get(i).and_then(|v| v.as_u64()).unwrap_or(1);
        let mma = json["tensor_instructions"].as_object().map_or(0, |o| o.values().filter_map(|v| v.as_u64()).sum());
        let mut modeled = BTreeMap::new();
        let model = json["model"]
            .as_object()
            .ok_or("counters line without `model`: the emulator models launches only when PTX_EMU_MODEL names GPUs")?;
        for (gpu, m) in model {
            let field = |key: &str| m[key].as_u64().unwrap_or(0);
            let us = m["us"].as_f64().ok_or_else(|| format!("model of {gpu} without `us`: {line}"))?;
            let body = m["resource_us"]
                .as_object()
                .ok_or_else(|| format!("model of {gpu} without `resource_us`: {line}"))?
                .values()
                .filter_map(|v| v.as_f64())
                .fold(0.0, f64::max);
            modeled.insert(
                gpu.clone(),
                Modeled {
                    us,
                    bound: m["bound"].as_str().unwrap_or("?").to_string(),
                    registers: field("registers"),
                    ctas_per_sm: field("ctas_per_sm"),
                    overhead_us: (us - body).max(0.0),
                },
            );
        }
        Ok(Launch {
            kernel: json["kernel"].as_str().unwrap_or("?").to_string(),
            grid: [dim(0), dim(1), dim(2)],
            total_ctas: number("total_ctas")?,
            sampled_ctas: number("sampled_ctas")?,
            warp_instructions: number("warp_instructions")?,
            mma,
            modeled,
        })
    }
}

/// The counters file, read from where the previous case stopped.
pub struct LaunchLog {
    path: PathBuf,
    seen: usize,
}

impl LaunchLog {
    /// Starts `path` empty.
    pub fn create(path: &Path) -> Result<Self, Box<dyn Error>> {
        std::fs::write(path, "")?;
        Ok(LaunchLog { path: path.to_path_buf(), seen: 0 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The launches recorded since the last call (the caller synchronises
    /// first: the emulator writes a launch's line when it has run).
    pub fn take(&mut self) -> Result<Vec<Launch>, Box<dyn Error>> {
        let text = std::fs::read_to_string(&self.path)?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let new = lines.get(self.seen..).unwrap_or(&[]);
        self.seen = lines.len();
        new.iter().map(|line| Launch::parse(line)).collect()
    }
}

/// What a sequence of launches adds up to on one GPU: the summed time, and
/// the bound of the launch that takes longest (with its kernel), how many
/// launches, and how much of the time is the model's per-launch overhead.
#[derive(Clone, Debug)]
pub struct Summed {
    pub us: f64,
    pub launches: usize,
    pub overhead_us: f64,
    pub bound: String,
    pub slowest: String,
}

pub fn sum_on(launches: &[Launch], gpu: &str) -> Result<Summed, Box<dyn Error>> {
    let (mut us, mut overhead_us) = (0.0, 0.0);
    let mut slowest: Option<(&Launch, &Modeled)> = None;
    for launch in launches {
        let m = launch.modeled.get(gpu).ok_or_else(|| format!("launch of {} not modeled on {gpu}", launch.kernel))?;
        us += m.us;
        overhead_us += m.overhead_us;
        if slowest.map_or(true, |(_, s)| m.us > s.us) {
            slowest = Some((launch, m));
        }
    }
    let (launch, m) = slowest.ok_or("no launch recorded")?;
    Ok(Summed { us, launches: launches.len(), overhead_us, bound: m.bound.clone(), slowest: launch.kernel.clone() })
}

//! Measured next to modeled: criterion's results for the benches' cases (a
//! GPU run of `cargo bench`) joined with a finished report's modeled times,
//! as one markdown table (`scripts/gpu-report.sh`).

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;

use crate::shapes;
use crate::table::{columns, Align::Left, Align::Right, Table};

/// criterion's mean time of every benchmark under `dir`, in µs, by its full
/// id (`group/function`, or `group/function/value`).
fn criterion_means(dir: &Path) -> Result<BTreeMap<String, f64>, Box<dyn Error>> {
    let mut means = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(means);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path)? {
            let entry = entry?.path();
            if entry.is_dir() {
                stack.push(entry);
                continue;
            }
            let in_new = entry.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "new");
            if !in_new || entry.file_name().map_or(true, |n| n != "benchmark.json") {
                continue;
            }
            let bench: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&entry)?)?;
            let estimates: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(entry.with_file_name("estimates.json"))?)?;
            if let (Some(id), Some(ns)) = (bench["full_id"].as_str(), estimates["mean"]["point_estimate"].as_f64()) {
                means.insert(id.to_string(), ns / 1e3);
            }
        }
    }
    Ok(means)
}

/// The report's modeled times: (projection, m, r, gpu) → (forward, backward) µs.
type Modeled = BTreeMap<(String, usize, usize, String), (f64, f64)>;

fn modeled(csv: &Path) -> Result<Modeled, Box<dyn Error>> {
    let text = std::fs::read_to_string(csv).map_err(|e| format!("{}: {e} (run the report first)", csv.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty report CSV")?.split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("report CSV lacks `{name}`"));
    let (projection, m, r, gpu, fwd, bwd) = (
        column("projection")?,
        column("m")?,
        column("r")?,
        column("gpu")?,
        column("forward_us")?,
        column("backward_us")?,
    );
    let mut out = Modeled::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let get = |i: usize| f.get(i).copied().ok_or_else(|| format!("short CSV line: {line}"));
        out.insert(
            (get(projection)?.to_string(), get(m)?.parse()?, get(r)?.parse()?, get(gpu)?.to_string()),
            (get(fwd)?.parse()?, get(bwd)?.parse()?),
        );
    }
    Ok(out)
}

fn cell(v: Option<f64>) -> String {
    v.map_or("—".to_string(), |v| format!("{v:.1}"))
}

/// Writes `out/measured-vs-modeled.md`.
pub fn write_markdown(out: &Path, criterion: &Path) -> Result<(), Box<dyn Error>> {
    let means = criterion_means(criterion)?;
    let modeled = modeled(&out.join("report.csv"))?;
    let gpus: std::collections::BTreeSet<&String> = modeled.keys().map(|k| &k.3).collect();
    let mut md = String::from(
        "# Measured on this GPU vs modeled (bf16)\n\nMeasured: criterion's mean over its samples, on the GPU this \
         ran on. Modeled: the emulator's counts through docs/perf-model.md's model — a model, not a measurement.\n\n",
    );
    let mut table = Table::new(columns(Left, &["case"]).chain(columns(
        Right,
        &["fused fwd", "cuBLAS base GEMM", "cuBLAS + shrink + expand", "fused bwd (P kept)", "5 cuBLAS GEMMs"],
    )));
    for gpu in &gpus {
        table.add_columns([(format!("modeled fwd {gpu}"), Right), (format!("modeled bwd {gpu}"), Right)]);
    }
    let cases: std::collections::BTreeSet<(&String, usize, usize)> = modeled.keys().map(|k| (&k.0, k.1, k.2)).collect();
    for (projection, m, r) in cases {
        let fwd = |f: &str| means.get(&format!("{}/{f}", shapes::forward_group(projection, m, r))).copied();
        let bwd = |f: &str| means.get(&format!("{}/{f}", shapes::backward_group(projection, m, r))).copied();
        let mut cells = vec![
            format!("{projection} M={m} r={r}"),
            cell(fwd(shapes::FUSED)),
            cell(fwd(shapes::CUBLAS_BASE)),
            cell(fwd(shapes::UNFUSED)),
            cell(bwd(shapes::BWD_FUSED_P_KEPT)),
            cell(bwd(shapes::BWD_UNFUSED)),
        ];
        for gpu in &gpus {
            let modeled = modeled.get(&(projection.to_string(), m, r, gpu.to_string()));
            cells.extend([cell(modeled.map(|v| v.0)), cell(modeled.map(|v| v.1))]);
        }
        table.push(cells);
    }
    md.push_str("All times in µs.\n\n");
    md.push_str(&table.markdown());
    let path = out.join("measured-vs-modeled.md");
    std::fs::write(&path, md)?;
    println!("wrote {} ({} measurements found under {})", path.display(), means.len(), criterion.display());
    Ok(())
}

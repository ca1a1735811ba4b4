//! The report's rows, and how they are printed, stored (CSV) and drawn (SVG).

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;

use crate::cases::Case;
use crate::launches::{Launch, Summed};
use crate::table::{columns, fixed, times, Align, Align::Left, Align::Right, Table};
use crate::targets;

/// One case on one modeled GPU.
pub struct Row {
    pub case: Case,
    pub gpu: String,
    pub forward: Summed,
    pub backward: Summed,
    /// CUTLASS's base GEMM of the forward's shape, `[M, K]·[K, N]`.
    pub cutlass: f64,
    /// CUTLASS's GEMM of dX's shape, `[M, N]·[N, K]`.
    pub cutlass_dx: f64,
    pub forward_floor: f64,
    pub backward_floor: f64,
    /// The time to read W0 once at the GPU's DRAM bandwidth (the decode target's floor).
    pub w0_floor: f64,
}

impl Row {
    pub fn label(&self) -> String {
        self.case.label()
    }
}

pub const CSV_HEADER: &str = "projection,m,k,n,r,gpu,forward_us,forward_bound,forward_slowest_kernel,cutlass_us,forward_over_cutlass,forward_floor_us,forward_over_floor,backward_us,backward_bound,backward_slowest_kernel,cutlass_dx_us,backward_over_cutlass_dx,backward_floor_us,backward_over_floor,forward_launches,forward_launch_overhead_us,w0_floor_us,forward_over_w0_floor,forward_target,forward_target_ratio,forward_met,backward_launches,backward_target,backward_target_ratio,backward_met";

pub fn write_csv(path: &Path, rows: &[Row]) -> Result<(), Box<dyn Error>> {
    let mut csv = Table::csv_header(CSV_HEADER);
    for r in rows {
        let (ft, bt) = (targets::forward(r), targets::backward(r));
        let mut cells = r.case.csv_cells();
        cells.push(r.gpu.clone());
        cells.extend(direction_cells(&r.forward, r.cutlass, r.forward_floor));
        cells.extend(direction_cells(&r.backward, r.cutlass_dx, r.backward_floor));
        cells.extend([
            r.forward.launches.to_string(),
            fixed(r.forward.overhead_us, 3),
            fixed(r.w0_floor, 3),
            fixed(r.forward.us / r.w0_floor, 4),
            ft.rule.to_string(),
            fixed(ft.ratio, 4),
            ft.met_word().to_string(),
            r.backward.launches.to_string(),
            bt.rule.to_string(),
            fixed(bt.ratio, 4),
            bt.met_word().to_string(),
        ]);
        csv.push(cells);
    }
    Ok(std::fs::write(path, csv.csv())?)
}

/// One direction's CSV cells: its modeled µs, bound and slowest kernel, then
/// CUTLASS's time and the ratio to it, the floor and the ratio to it.
fn direction_cells(summed: &Summed, cutlass: f64, floor: f64) -> [String; 7] {
    [
        fixed(summed.us, 3),
        summed.bound.clone(),
        summed.slowest.clone(),
        fixed(cutlass, 3),
        fixed(summed.us / cutlass, 4),
        fixed(floor, 3),
        fixed(summed.us / floor, 4),
    ]
}

/// A console table column: its width and how a cell sits in it.
type Column = (usize, Align);

/// One direction's columns in the console table: its modeled µs, CUTLASS's,
/// the ratio to it, the floor, the ratio to it, and what binds it.
const DIRECTION_COLUMNS: [Column; 6] = [(9, Right), (9, Right), (7, Right), (9, Right), (7, Right), (8, Left)];

/// One direction's target columns in the console table: the ratio the
/// target judges, and whether it is met.
const TARGET_COLUMNS: [Column; 2] = [(8, Right), (4, Right)];

/// Writes one column group of the console table: each cell after a space,
/// padded to its column.
fn write_group(t: &mut String, columns: &[Column], cells: &[&dyn std::fmt::Display]) {
    for (&(width, align), cell) in columns.iter().zip(cells) {
        let _ = match align {
            Left => write!(t, " {cell:<width$}"),
            Right => write!(t, " {cell:>width$}"),
        };
    }
}

/// The table as printed (and as README shows it): modeled microseconds.
pub fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    let _ = write!(t, "{:<36} {:<5}", "case (bf16, modeled)", "gpu");
    for direction in ["fwd us", "bwd us"] {
        write_group(&mut t, &DIRECTION_COLUMNS, &[&direction, &"CUTLASS", &"ratio", &"floor", &"ratio", &"binds"]);
    }
    for target in ["fwd tgt", "bwd tgt"] {
        write_group(&mut t, &TARGET_COLUMNS, &[&target, &"met"]);
    }
    t.push('\n');
    for r in rows {
        let _ = write!(t, "{:<36} {:<5}", r.label(), r.gpu);
        for (summed, cutlass, floor) in
            [(&r.forward, r.cutlass, r.forward_floor), (&r.backward, r.cutlass_dx, r.backward_floor)]
        {
            write_group(
                &mut t,
                &DIRECTION_COLUMNS,
                &[
                    &fixed(summed.us, 1),
                    &fixed(cutlass, 1),
                    &fixed(summed.us / cutlass, 2),
                    &fixed(floor, 1),
                    &fixed(summed.us / floor, 2),
                    &summed.bound,
                ],
            );
        }
        for target in [targets::forward(r), targets::backward(r)] {
            write_group(&mut t, &TARGET_COLUMNS, &[&times(target.ratio), &target.met_word()]);
        }
        t.push('\n');
    }
    let _ = writeln!(
        t,
        "targets: forward <=1.05x CUTLASS at M >= 4096, <=1.10x below; decode (M <= {}) <=1.10x the W0 read in <=2 \
         launches; backward <=1.15x CUTLASS's dX GEMM",
        targets::DECODE_TOKENS
    );
    t
}

const BARS: [(&str, &str); 4] =
    [("forward", "#1f77b4"), ("CUTLASS GEMM", "#7f7f7f"), ("forward floor", "#2ca02c"), ("backward", "#d62728")];

/// Grouped bars per case, one panel per GPU, modeled µs on a log scale.
pub fn write_svg(path: &Path, rows: &[Row], gpus: &[String]) -> Result<(), Box<dyn Error>> {
    let groups: Vec<&Row> = rows.iter().filter(|r| Some(&r.gpu) == gpus.first()).collect();
    let (bar_w, gap, panel_h, left, top) = (9.0, 14.0, 260.0, 60.0, 40.0);
    let group_w = BARS.len() as f64 * bar_w + gap;
    let (label_h, right) = (150.0, 110.0);
    let width = left + groups.len() as f64 * group_w + right;
    let height = top + gpus.len() as f64 * (panel_h + label_h) + 30.0;
    let values = rows.iter().flat_map(|r| [r.forward.us, r.cutlass, r.forward_floor, r.backward.us]);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo.max(1e-3).log10().floor(), hi.max(1e-3).log10().ceil().max(lo.log10().floor() + 1.0));
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"10\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"18\" font-size=\"13\" font-weight=\"bold\">fused-lora vs CUTLASS Sm80 GEMM, bf16 — modeled time (µs, log scale), not measured on a GPU</text>\n"
    );
    for (i, (name, colour)) in BARS.iter().enumerate() {
        let x = left + i as f64 * 130.0;
        writeln!(svg, "<rect x=\"{x}\" y=\"26\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{}\" y=\"35\">{name}</text>", x + 14.0)?;
    }
    for (p, gpu) in gpus.iter().enumerate() {
        let y0 = top + 20.0 + p as f64 * (panel_h + label_h);
        let y_of = |v: f64| y0 + panel_h - (v.max(1e-3).log10() - lo) / (hi - lo) * panel_h;
        writeln!(svg, "<text x=\"{left}\" y=\"{}\" font-size=\"12\" font-weight=\"bold\">{gpu}</text>", y0 - 4.0)?;
        for decade in lo as i32..=hi as i32 {
            let y = y_of(10f64.powi(decade));
            writeln!(svg, "<line x1=\"{left}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#ddd\"/>", width - right)?;
            writeln!(svg, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">1e{decade}</text>", left - 4.0, y + 3.0)?;
        }
        for (g, row) in rows.iter().filter(|r| &r.gpu == gpu).enumerate() {
            let gx = left + 6.0 + g as f64 * group_w;
            let values = [row.forward.us, row.cutlass, row.forward_floor, row.backward.us];
            for (b, (&v, (_, colour))) in values.iter().zip(BARS.iter()).enumerate() {
                let (x, y) = (gx + b as f64 * bar_w, y_of(v));
                writeln!(
                    svg,
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{v:.1} us</title></rect>",
                    bar_w - 1.0,
                    (y0 + panel_h - y).max(0.5)
                )?;
            }
            let (lx, ly) = (gx + 2.0 * bar_w, y0 + panel_h + 8.0);
            writeln!(
                svg,
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" transform=\"rotate(50 {lx:.1} {ly:.1})\">{}</text>",
                short_label(row)
            )?;
        }
    }
    svg.push_str("</svg>\n");
    Ok(std::fs::write(path, svg)?)
}

/// Every launch of the report, one CSV line each, with what the model used.
pub fn write_launches_csv(path: &Path, launches: &[(String, Launch)], gpus: &[String]) -> Result<(), Box<dyn Error>> {
    let mut csv =
        Table::csv_header("case,kernel,grid,total_ctas,sampled_ctas,warp_instructions,mma,warp_instructions_per_mma");
    for gpu in gpus {
        csv.add_columns(
            ["us", "bound", "registers", "ctas_per_sm"].map(|column| (format!("{gpu}_{column}"), Align::Left)),
        );
    }
    for (case, l) in launches {
        let per_mma =
            if l.mma > 0 { format!("{:.2}", l.warp_instructions as f64 / l.mma as f64) } else { String::new() };
        let mut cells = vec![
            case.clone(),
            l.kernel.to_string(),
            format!("{}x{}x{}", l.grid[0], l.grid[1], l.grid[2]),
            l.total_ctas.to_string(),
            l.sampled_ctas.to_string(),
            l.warp_instructions.to_string(),
            l.mma.to_string(),
            per_mma,
        ];
        for gpu in gpus {
            match l.modeled.get(gpu) {
                Some(m) => cells.extend([
                    fixed(m.us, 3),
                    m.bound.to_string(),
                    m.registers.to_string(),
                    m.ctas_per_sm.to_string(),
                ]),
                None => cells.extend([String::new(), String::new(), String::new(), String::new()]),
            }
        }
        csv.push(cells);
    }
    Ok(std::fs::write(path, csv.csv())?)
}

/// The table as markdown (for README and notes): one line per case, each
/// GPU's modeled forward and backward against CUTLASS and the floor.
pub fn write_markdown(path: &Path, rows: &[Row], gpus: &[String]) -> Result<(), Box<dyn Error>> {
    let mut table = Table::new(columns(Left, &["case (bf16)"]));
    for gpu in gpus {
        let (fwd, bwd) = (format!("{gpu} fwd µs"), format!("{gpu} bwd µs"));
        table.add_columns([
            (fwd.as_str(), Right),
            ("fwd / CUTLASS", Right),
            ("fwd / floor", Right),
            ("fwd binds", Left),
            (bwd.as_str(), Right),
            ("bwd / CUTLASS dX", Right),
            ("bwd / floor", Right),
        ]);
    }
    let first = gpus.first().ok_or("no GPU modeled")?;
    for row in rows.iter().filter(|r| &r.gpu == first) {
        let mut cells = vec![row.label()];
        for gpu in gpus {
            let r = rows
                .iter()
                .find(|r| &r.gpu == gpu && r.label() == row.label())
                .ok_or_else(|| format!("{} not modeled on {gpu}", row.label()))?;
            cells.extend([
                fixed(r.forward.us, 1),
                fixed(r.forward.us / r.cutlass, 2),
                fixed(r.forward.us / r.forward_floor, 2),
                r.forward.bound.to_string(),
                fixed(r.backward.us, 1),
                fixed(r.backward.us / r.cutlass_dx, 2),
                fixed(r.backward.us / r.backward_floor, 2),
            ]);
        }
        table.push(cells);
    }
    Ok(std::fs::write(path, table.markdown() + &targets_markdown(rows))?)
}

/// The targets, one line per case and GPU: the forward's rule, ratio and
/// whether it is met (with its launches, and at decode the ratio with the
/// model's per-launch overhead taken out), the backward's likewise.
fn targets_markdown(rows: &[Row]) -> String {
    let mut table = Table::new([
        ("case (bf16)", Left),
        ("gpu", Left),
        ("forward target", Left),
        ("forward", Right),
        ("met", Left),
        ("launches", Right),
        ("decode: without launch overhead", Right),
        ("backward target", Left),
        ("backward", Right),
        ("met", Left),
    ]);
    for r in rows {
        let (ft, bt) = (targets::forward(r), targets::backward(r));
        let bare = if r.case.m <= targets::DECODE_TOKENS {
            times((r.forward.us - r.forward.overhead_us) / r.w0_floor)
        } else {
            String::from("—")
        };
        table.row(&[
            &r.label(),
            &r.gpu,
            &ft.rule,
            &times(ft.ratio),
            &ft.met_word(),
            &r.forward.launches,
            &bare,
            &bt.rule,
            &times(bt.ratio),
            &bt.met_word(),
        ]);
    }
    format!("\n{}", table.markdown())
}

/// A case's label without the model's name, short enough for the chart.
fn short_label(row: &Row) -> String {
    let projection = row.case.projection.split_once(' ').map_or(row.case.projection, |(_, rest)| rest);
    format!("{projection} M={} r={}", row.case.m, row.case.r)
}

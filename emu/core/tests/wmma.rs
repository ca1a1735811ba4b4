//! `wmma.load` / `wmma.mma` / `wmma.store` (CUDA C++'s `nvcuda::wmma`,
//! kernels/wmma.cu, one warp): D = A·B + C for m16n16k16, m8n32k16 and
//! m32n8k16 with f16 and bf16 inputs, f32 (and f16) accumulators, A and B in
//! either layout, D stored row- or column-major, leading dimensions wider
//! than the matrices, against a CPU product. The inputs lie on a grid where
//! every sum is exact, so the comparison is bit for bit; outputs are
//! poisoned, and the padding between D's rows must stay poisoned.

mod common;

use common::{assert_no_findings, grid_1d, Device, Rng};
use half::{bf16, f16};
use ptx_emu::CheckOptions;

const SRC: &str = "wmma.cu";

/// A value on a grid of 1/`steps` in [-1, 1].
fn grid(rng: &mut Rng, steps: i32) -> f32 {
    (rng.next_u32() % (2 * steps as u32 + 1)) as i32 as f32 / steps as f32 - 1.0
}

/// A `rows` x `cols` matrix in `row`-major (else column-major) order with leading dimension `ld`,
/// as f32 values, and the element at (r, c).
struct Matrix {
    values: Vec<f32>,
    ld: usize,
    row: bool,
}

impl Matrix {
    fn random(rng: &mut Rng, rows: usize, cols: usize, row: bool, ld: usize, steps: i32) -> Matrix {
        let outer = if row { rows } else { cols };
        let values = (0..outer * ld).map(|_| grid(rng, steps)).collect();
        Matrix { values, ld, row }
    }
    fn at(&self, r: usize, c: usize) -> f32 {
        self.values[if self.row { r * self.ld + c } else { c * self.ld + r }]
    }
}

struct Case {
    kernel: &'static str,
    m: usize,
    n: usize,
    bf16: bool,
    a_row: bool,
    f16_acc: bool,
}

fn run(case: &Case, d_row: bool) {
    let Case { kernel, m, n, bf16: is_bf16, a_row, f16_acc } = *case;
    let k = 16;
    let mut rng = Rng::new(0x5eed ^ (m * 131 + n) as u64 ^ u64::from(is_bf16) << 20);
    // Inputs on 1/8 (f16 accumulators: every sum fits f16) or 1/64 steps.
    let steps = if f16_acc { 8 } else { 64 };
    let a = Matrix::random(&mut rng, m, k, a_row, k + 8, steps);
    let b = Matrix::random(&mut rng, k, n, !a_row, k + 8, steps);
    let c = Matrix::random(&mut rng, m, n, true, n + 4, steps);
    let dev = Device::load(SRC);
    let input = |values: &[f32]| {
        if is_bf16 {
            dev.upload(&values.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>())
        } else {
            dev.upload(&values.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>())
        }
    };
    let (da, db) = (input(&a.values), input(&b.values));
    let dc = if f16_acc { input(&c.values) } else { dev.upload(&c.values) };
    let ldd = if d_row { n + 3 } else { m + 3 };
    let d_len = ldd * if d_row { m } else { n };
    let dd = if f16_acc { dev.alloc_poisoned::<f16>(d_len) } else { dev.alloc_poisoned::<f32>(d_len) };
    let params = dev
        .params(kernel)
        .ptr(da)
        .i32(a.ld as i32)
        .ptr(db)
        .i32(b.ld as i32)
        .ptr(dc)
        .i32(c.ld as i32)
        .ptr(dd)
        .i32(ldd as i32)
        .i32(i32::from(d_row))
        .finish();
    let report = dev.launch_with(kernel, grid_1d(1, 32), &params, &CheckOptions::default());
    assert_no_findings(&report);
    let counted: u64 =
        report.counters.tensor_instructions.iter().filter(|(k, _)| k.starts_with("wmma.")).map(|(_, n)| n).sum();
    assert_eq!(counted, 1, "{kernel}: one wmma.mma per warp: {:?}", report.counters.tensor_instructions);
    let got: Vec<u32> = if f16_acc {
        dev.download::<f16>(dd, d_len).iter().map(|v| u32::from(v.to_bits())).collect()
    } else {
        dev.download::<f32>(dd, d_len).iter().map(|v| v.to_bits()).collect()
    };
    let mut written = vec![false; d_len];
    for r in 0..m {
        for col in 0..n {
            let exact: f64 =
                (0..k).map(|i| f64::from(a.at(r, i)) * f64::from(b.at(i, col))).sum::<f64>() + f64::from(c.at(r, col));
            let want = if f16_acc { u32::from(f16::from_f64(exact).to_bits()) } else { (exact as f32).to_bits() };
            let at = if d_row { r * ldd + col } else { col * ldd + r };
            written[at] = true;
            assert_eq!(got[at], want, "{kernel} (D row-major: {d_row}): D[{r}][{col}] = {exact}");
        }
    }
    let poison = if f16_acc { 0xffff } else { 0xffff_ffff };
    for (i, _) in written.iter().enumerate().filter(|(_, w)| !**w) {
        assert_eq!(got[i], poison, "{kernel}: padding element {i} of D was written");
    }
}

#[test]
fn every_shape_and_type_matches_the_cpu_product() {
    let cases = [
        Case { kernel: "wmma_f16_m16n16_rc", m: 16, n: 16, bf16: false, a_row: true, f16_acc: false },
        Case { kernel: "wmma_f16_m8n32_rc", m: 8, n: 32, bf16: false, a_row: true, f16_acc: false },
        Case { kernel: "wmma_f16_m32n8_rc", m: 32, n: 8, bf16: false, a_row: true, f16_acc: false },
        Case { kernel: "wmma_f16_m16n16_cr", m: 16, n: 16, bf16: false, a_row: false, f16_acc: false },
        Case { kernel: "wmma_f16_m16n16_rc_f16acc", m: 16, n: 16, bf16: false, a_row: true, f16_acc: true },
        Case { kernel: "wmma_bf16_m16n16_rc", m: 16, n: 16, bf16: true, a_row: true, f16_acc: false },
        Case { kernel: "wmma_bf16_m8n32_rc", m: 8, n: 32, bf16: true, a_row: true, f16_acc: false },
        Case { kernel: "wmma_bf16_m32n8_rc", m: 32, n: 8, bf16: true, a_row: true, f16_acc: false },
    ];
    for case in &cases {
        for d_row in [true, false] {
            run(case, d_row);
        }
    }
}

#[test]
fn operands_staged_in_shared_memory_as_candles_moe_kernels_do() {
    let mut rng = Rng::new(77);
    let a: Vec<f32> = (0..256).map(|_| grid(&mut rng, 64)).collect();
    let b: Vec<f32> = (0..256).map(|_| grid(&mut rng, 64)).collect();
    let dev = Device::load(SRC);
    let to_bf16 = |v: &[f32]| v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
    let (da, db, dd) = (dev.upload(&to_bf16(&a)), dev.upload(&to_bf16(&b)), dev.alloc_poisoned::<f32>(256));
    let params = dev.params("wmma_bf16_through_shared").ptr(da).ptr(db).ptr(dd).finish();
    // Every check on, shared-memory initcheck too.
    let strict = CheckOptions { shared_initcheck: true, ..CheckOptions::default() };
    assert_no_findings(&dev.launch_with("wmma_bf16_through_shared", grid_1d(1, 32), &params, &strict));
    let got = dev.download::<f32>(dd, 256);
    for r in 0..16 {
        for c in 0..16 {
            // A row-major, B column-major (element (k, c) at c * 16 + k).
            let want: f64 = (0..16).map(|k| f64::from(a[r * 16 + k]) * f64::from(b[c * 16 + k])).sum();
            assert_eq!(got[r * 16 + c].to_bits(), (want as f32).to_bits(), "D[{r}][{c}]");
        }
    }
}

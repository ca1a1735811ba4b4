//! Planted bugs (kernels/planted_bugs.cu, kernels/async_copy_bugs.cu): each
//! caught by the right check with the right kind, naming the kernel, the
//! faulting PTX instruction and a thread that can commit the fault; each
//! corrected twin runs clean; and each check, switched off, reports nothing.

mod common;

use common::{assert_bit_exact, assert_no_findings, grid_1d, Device, Rng};
use ptx_emu::{CheckOptions, Finding, FindingKind, LaunchReport};

const BUGS: &str = "planted_bugs.cu";
const ASYNC_BUGS: &str = "async_copy_bugs.cu";

/// Asserts that `report` has a finding, that every finding is of `kind` and
/// names `kernel`, and that the PTX line each names holds an instruction
/// containing `opcode`. Returns the first.
#[track_caller]
fn expect_findings<'r>(
    dev: &Device,
    report: &'r LaunchReport,
    kind: FindingKind,
    kernel: &str,
    opcode: &str,
) -> &'r Finding {
    expect_findings_of(dev, report, &[kind], kernel, opcode)
}

/// As [`expect_findings`], for a fault that either of several checks may
/// rightly report: every finding must be of one of `kinds`.
#[track_caller]
fn expect_findings_of<'r>(
    dev: &Device,
    report: &'r LaunchReport,
    kinds: &[FindingKind],
    kernel: &str,
    opcode: &str,
) -> &'r Finding {
    let listed: Vec<String> = report.findings.iter().map(|f| format!("  {f}")).collect();
    let listed = listed.join("\n");
    let first = report.findings.first().unwrap_or_else(|| panic!("`{kernel}`: expected a {kinds:?} finding, got none"));
    for finding in &report.findings {
        assert!(kinds.contains(&finding.kind), "`{kernel}`: expected only {kinds:?} findings, got:\n{listed}");
        assert_eq!(finding.kernel, kernel, "finding names the wrong kernel: {finding}");
        let line = dev
            .ptx
            .lines()
            .nth(finding.ptx_line.saturating_sub(1) as usize)
            .filter(|_| finding.ptx_line > 0)
            .unwrap_or_else(|| panic!("finding names PTX line {}, not in the module: {finding}", finding.ptx_line));
        assert!(
            line.contains(opcode),
            "finding's PTX line {} is `{}`, not a `{opcode}`: {finding}",
            finding.ptx_line,
            line.trim()
        );
        assert!(
            finding.instruction.contains(opcode),
            "finding's instruction `{}` is not a `{opcode}`: {finding}",
            finding.instruction
        );
    }
    first
}

/// The x-index of the finding's thread in a 1-D launch of `block` threads per CTA.
fn global_thread(finding: &Finding, block: u32) -> u32 {
    finding.cta[0] * block + finding.thread[0]
}

/// Every check on except `off`.
fn all_checks_but(off: &str) -> CheckOptions {
    let mut opts = CheckOptions::default();
    match off {
        "memcheck" => opts.memcheck = false,
        "racecheck" => opts.racecheck = false,
        "initcheck" => opts.initcheck = false,
        "synccheck" => opts.synccheck = false,
        other => panic!("no check named {other}"),
    }
    opts
}

fn no_checks() -> CheckOptions {
    CheckOptions { memcheck: false, racecheck: false, initcheck: false, synccheck: false, ..CheckOptions::default() }
}

// ---------------------------------------------------------------- memcheck

/// out has 100 floats (400 bytes: its 256-byte-aligned neighbour, if any,
/// starts at 512 or later, so out[100] lies in no allocation).
struct WritePastEnd {
    dev: Device,
    out: u64,
    params: Vec<u8>,
}

const PAST_END_N: u32 = 100;

fn write_past_end(kernel: &str) -> WritePastEnd {
    let dev = Device::load(BUGS);
    let out = dev.alloc_poisoned::<f32>(PAST_END_N as usize);
    let params = dev.params(kernel).ptr(out).i32(PAST_END_N as i32).finish();
    WritePastEnd { dev, out, params }
}

#[test]
fn memcheck_catches_a_write_one_past_the_end() {
    let case = write_past_end("write_past_end");
    let report = case.dev.launch_with("write_past_end", grid_1d(2, 64), &case.params, &CheckOptions::default());
    let finding = expect_findings(&case.dev, &report, FindingKind::OutOfBounds, "write_past_end", "st.global");
    assert_eq!(finding.address, case.out + 4 * u64::from(PAST_END_N), "{finding}");
    assert_eq!(global_thread(finding, 64), PAST_END_N, "only thread 100 writes out of bounds: {finding}");
    let distance = format!("0 bytes after the end of a 400-byte allocation at {:#x}", case.out);
    assert!(finding.detail.contains(&distance), "names the distance to the allocation: {finding}");
    assert_eq!(FindingKind::OutOfBounds.cuda_error_code(), 700);
}

#[test]
fn write_within_bounds_is_clean() {
    let case = write_past_end("write_within_bounds");
    case.dev.launch_clean("write_within_bounds", grid_1d(2, 64), &case.params);
    let want: Vec<f32> = (0..PAST_END_N).map(|i| i as f32).collect();
    assert_bit_exact("out", &case.dev.download::<f32>(case.out, PAST_END_N as usize), &want);
}

#[test]
fn memcheck_off_reports_nothing_for_the_write_past_the_end() {
    let case = write_past_end("write_past_end");
    let report = case.dev.launch_with("write_past_end", grid_1d(2, 64), &case.params, &all_checks_but("memcheck"));
    assert_no_findings(&report);
}

#[test]
fn memcheck_catches_a_misaligned_load_and_not_an_aligned_one() {
    let dev = Device::load(BUGS);
    let input = Rng::new(21).uniform_vec(40, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(32));

    let params = dev.params("load_at_byte_offset").ptr(din).ptr(dout).i32(2).finish();
    let report = dev.launch_with("load_at_byte_offset", grid_1d(1, 32), &params, &CheckOptions::default());
    let finding = expect_findings(&dev, &report, FindingKind::Misaligned, "load_at_byte_offset", "ld.global");
    assert_eq!(finding.address % 4, 2, "{finding}");
    assert!(finding.address >= din && finding.address < din + 4 * 40, "{finding}");
    assert_eq!(FindingKind::Misaligned.cuda_error_code(), 716);

    let params = dev.params("load_at_byte_offset").ptr(din).ptr(dout).i32(4).finish();
    dev.launch_clean("load_at_byte_offset", grid_1d(1, 32), &params);
    assert_bit_exact("shifted by one element", &dev.download::<f32>(dout, 32), &input[1..33]);
}

#[test]
fn memcheck_catches_a_use_after_free() {
    let dev = Device::load(BUGS);
    let n = 64;
    let input = Rng::new(22).uniform_vec(n, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(n));
    dev.mem.free(din).expect("free a live allocation");
    let params = dev.params("copy_f32").ptr(din).ptr(dout).i32(n as i32).finish();
    let report = dev.launch_with("copy_f32", grid_1d(1, 64), &params, &CheckOptions::default());
    let finding = expect_findings(&dev, &report, FindingKind::OutOfBounds, "copy_f32", "ld.global");
    assert!(finding.address >= din && finding.address < din + 4 * n as u64, "not in the freed buffer: {finding}");

    // The twin: the same kernel on a live buffer.
    let live = dev.upload(&input);
    let params = dev.params("copy_f32").ptr(live).ptr(dout).i32(n as i32).finish();
    dev.launch_clean("copy_f32", grid_1d(1, 64), &params);
    assert_bit_exact("copy", &dev.download::<f32>(dout, n), &input);
}

#[test]
fn memcheck_catches_a_shared_index_past_the_end() {
    let dev = Device::load(BUGS);
    assert_eq!(dev.kernel_info("shared_index_past_end").static_shared_bytes, 256, "one 64-float array");
    let input = Rng::new(23).uniform_vec(64, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(64));
    let params = dev.params("shared_index_past_end").ptr(din).ptr(dout).finish();
    let report = dev.launch_with("shared_index_past_end", grid_1d(1, 64), &params, &CheckOptions::default());
    let finding = expect_findings(&dev, &report, FindingKind::OutOfBounds, "shared_index_past_end", "ld.shared");
    assert_eq!(finding.thread[0], 63, "only thread 63 reads staged[64]: {finding}");

    let params = dev.params("shared_index_wrapped").ptr(din).ptr(dout).finish();
    dev.launch_clean("shared_index_wrapped", grid_1d(1, 64), &params);
    let want: Vec<f32> = (0..64).map(|i| input[(i + 1) % 64]).collect();
    assert_bit_exact("rotated", &dev.download::<f32>(dout, 64), &want);
}

// ---------------------------------------------------------------- racecheck

fn rotate_case(kernel: &str) -> (Device, Vec<f32>, u64, Vec<u8>) {
    let dev = Device::load(BUGS);
    let input = Rng::new(24).uniform_vec(64, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(64));
    let params = dev.params(kernel).ptr(din).ptr(dout).finish();
    (dev, input, dout, params)
}

#[test]
fn racecheck_catches_a_missing_barrier() {
    let (dev, _, _, params) = rotate_case("rotate_without_barrier");
    let report = dev.launch_with("rotate_without_barrier", grid_1d(1, 64), &params, &CheckOptions::default());
    let finding = expect_findings(&dev, &report, FindingKind::Race, "rotate_without_barrier", ".shared");
    assert!(finding.thread[0] < 64, "{finding}");
    assert_eq!(FindingKind::Race.cuda_error_code(), 719);
}

#[test]
fn the_barrier_removes_the_race() {
    let (dev, input, dout, params) = rotate_case("rotate_with_barrier");
    dev.launch_clean("rotate_with_barrier", grid_1d(1, 64), &params);
    let want: Vec<f32> = (0..64).map(|i| input[(i + 32) % 64]).collect();
    assert_bit_exact("rotated", &dev.download::<f32>(dout, 64), &want);
}

#[test]
fn racecheck_off_reports_nothing_for_the_missing_barrier() {
    let (dev, _, _, params) = rotate_case("rotate_without_barrier");
    let report = dev.launch_with("rotate_without_barrier", grid_1d(1, 64), &params, &all_checks_but("racecheck"));
    assert_no_findings(&report);
}

// ---------------------------------------------------------------- initcheck

/// copy_f32 over 64 elements of which only the first 32 were ever written.
fn half_written_copy() -> (Device, u64, Vec<f32>, u64, Vec<u8>) {
    let dev = Device::load(BUGS);
    let n = 64;
    let input = Rng::new(25).uniform_vec(n / 2, -1.0, 1.0);
    let din = dev.alloc_unwritten(4 * n as u64);
    dev.mem.write(din, &common::to_bytes(&input)).expect("write the first half");
    let dout = dev.alloc_poisoned::<f32>(n);
    let params = dev.params("copy_f32").ptr(din).ptr(dout).i32(n as i32).finish();
    (dev, din, input, dout, params)
}

#[test]
fn initcheck_catches_a_read_of_never_written_global_memory() {
    let (dev, din, _, _, params) = half_written_copy();
    let report = dev.launch_with("copy_f32", grid_1d(2, 32), &params, &CheckOptions::default());
    let finding = expect_findings(&dev, &report, FindingKind::Uninitialized, "copy_f32", "ld.global");
    assert!(finding.address >= din + 4 * 32 && finding.address < din + 4 * 64, "not in the unwritten half: {finding}");
    assert!(global_thread(finding, 32) >= 32, "{finding}");
}

#[test]
fn initcheck_passes_once_the_memory_is_written() {
    let (dev, din, mut input, dout, params) = half_written_copy();
    input.extend(Rng::new(26).uniform_vec(32, -1.0, 1.0));
    dev.mem.write(din, &common::to_bytes(&input)).expect("write all of it");
    dev.launch_clean("copy_f32", grid_1d(2, 32), &params);
    assert_bit_exact("copy", &dev.download::<f32>(dout, 64), &input);
}

#[test]
fn initcheck_off_reports_nothing_for_the_unwritten_read() {
    let (dev, _, _, _, params) = half_written_copy();
    let report = dev.launch_with("copy_f32", grid_1d(2, 32), &params, &all_checks_but("initcheck"));
    assert_no_findings(&report);
}

#[test]
fn initcheck_catches_a_read_of_never_written_shared_memory() {
    let dev = Device::load(BUGS);
    let input = Rng::new(27).uniform_vec(64, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(64));
    let params = dev.params("read_shared_partly_written").ptr(din).ptr(dout).i32(32).finish();
    let strict = CheckOptions { shared_initcheck: true, ..CheckOptions::default() };
    let report = dev.launch_with("read_shared_partly_written", grid_1d(1, 64), &params, &strict);
    let finding = expect_findings(&dev, &report, FindingKind::Uninitialized, "read_shared_partly_written", "ld.shared");
    assert!(finding.thread[0] >= 32, "threads 0-31 read written elements: {finding}");

    // By default (compute-sanitizer's initcheck covers global memory only)
    // no finding: the unwritten half reads as 0xff, NaN in the output.
    let report = dev.launch_with("read_shared_partly_written", grid_1d(1, 64), &params, &CheckOptions::default());
    assert_no_findings(&report);
    let out = dev.download::<f32>(dout, 64);
    assert_bit_exact("written half", &out[..32], &input[..32]);
    assert!(out[32..].iter().all(|v| v.to_bits() == 0xffff_ffff), "unwritten half: {:?}", &out[32..]);

    let params = dev.params("read_shared_partly_written").ptr(din).ptr(dout).i32(64).finish();
    dev.launch_clean("read_shared_partly_written", grid_1d(1, 64), &params);
    assert_bit_exact("copy", &dev.download::<f32>(dout, 64), &input);
}

// ---------------------------------------------------------------- synccheck

#[test]
fn synccheck_catches_a_barrier_in_a_divergent_branch() {
    let dev = Device::load(BUGS);
    let out = dev.alloc_poisoned::<f32>(32);
    let params = dev.params("barrier_in_divergent_branch").ptr(out).finish();
    let report = dev.launch_with("barrier_in_divergent_branch", grid_1d(1, 32), &params, &CheckOptions::default());
    let finding = expect_findings(&dev, &report, FindingKind::DivergentSync, "barrier_in_divergent_branch", "bar");
    assert!(finding.thread[0] < 32, "{finding}");
    assert_eq!(FindingKind::DivergentSync.cuda_error_code(), 719);

    let params = dev.params("barrier_in_uniform_code").ptr(out).finish();
    dev.launch_clean("barrier_in_uniform_code", grid_1d(1, 32), &params);
    let want: Vec<f32> = (0..32).map(|i| i as f32).collect();
    assert_bit_exact("out", &dev.download::<f32>(out, 32), &want);
}

#[test]
fn synccheck_off_reports_nothing_for_the_divergent_barrier() {
    let dev = Device::load(BUGS);
    let out = dev.alloc_poisoned::<f32>(32);
    let params = dev.params("barrier_in_divergent_branch").ptr(out).finish();
    let report = dev.launch_with("barrier_in_divergent_branch", grid_1d(1, 32), &params, &all_checks_but("synccheck"));
    assert_no_findings(&report);
}

#[test]
fn synccheck_catches_a_full_mask_shuffle_reached_by_half_the_warp() {
    let dev = Device::load(BUGS);
    let input = Rng::new(28).uniform_vec(32, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(32));
    let params = dev.params("shuffle_full_mask_half_warp").ptr(din).ptr(dout).finish();
    let report = dev.launch_with("shuffle_full_mask_half_warp", grid_1d(1, 32), &params, &CheckOptions::default());
    let finding =
        expect_findings(&dev, &report, FindingKind::DivergentSync, "shuffle_full_mask_half_warp", "shfl.sync");
    assert!(finding.thread[0] < 16, "only lanes 0-15 reach the shuffle: {finding}");

    let params = dev.params("shuffle_half_mask_half_warp").ptr(din).ptr(dout).finish();
    dev.launch_clean("shuffle_half_mask_half_warp", grid_1d(1, 32), &params);
    let want: Vec<f32> = (0..32).map(|l| if l < 16 { input[0] } else { input[l] }).collect();
    assert_bit_exact("broadcast to lanes 0-15", &dev.download::<f32>(dout, 32), &want);
}

#[test]
fn synccheck_reports_a_deadlock_instead_of_hanging() {
    let dev = Device::load(BUGS);
    let out = dev.alloc_poisoned::<f32>(64);
    let params = dev.params("barriers_never_complete").ptr(out).finish();
    let report = dev.launch_with("barriers_never_complete", grid_1d(1, 64), &params, &CheckOptions::default());
    let finding = expect_findings(&dev, &report, FindingKind::Deadlock, "barriers_never_complete", "bar.sync");
    assert!(finding.thread[0] < 64, "{finding}");

    let params = dev.params("barriers_complete").ptr(out).finish();
    dev.launch_clean("barriers_complete", grid_1d(1, 64), &params);
    assert_bit_exact("out", &dev.download::<f32>(out, 64), &[1.0f32; 64]);
}

// ---------------------------------------------------------------- cp.async ordering

/// 64 threads, each copying 16 bytes (4 floats) through shared memory.
fn async_copy_case(prefill: bool, wait_first: bool) -> (Device, Vec<f32>, u64, Vec<u8>) {
    let dev = Device::load(ASYNC_BUGS);
    let input = Rng::new(29).uniform_vec(256, 0.0, 1.0); // never -1
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(256));
    let params = dev
        .params("async_copy_then_read")
        .ptr(din)
        .ptr(dout)
        .i32(i32::from(prefill))
        .i32(i32::from(wait_first))
        .finish();
    (dev, input, dout, params)
}

#[test]
fn reading_a_cp_async_destination_before_the_wait_is_caught() {
    // The copy lands no earlier than the wait, so the early read touches
    // shared bytes a copy in flight is still to write (racecheck) and that
    // nothing has written yet (initcheck): either check may report it.
    let (dev, _, _, params) = async_copy_case(false, false);
    let report = dev.launch_with("async_copy_then_read", grid_1d(1, 64), &params, &CheckOptions::default());
    let kinds = [FindingKind::Race, FindingKind::Uninitialized];
    expect_findings_of(&dev, &report, &kinds, "async_copy_then_read", "ld.shared");
}

#[test]
fn reading_a_cp_async_destination_before_the_wait_sees_the_old_data() {
    let (dev, _, dout, params) = async_copy_case(true, false);
    let report = dev.launch_with("async_copy_then_read", grid_1d(1, 64), &params, &no_checks());
    assert_no_findings(&report);
    assert_bit_exact("slots read early", &dev.download::<f32>(dout, 256), &[-1.0f32; 256]);
}

#[test]
fn reading_a_cp_async_destination_after_the_wait_is_clean() {
    for prefill in [false, true] {
        let (dev, input, dout, params) = async_copy_case(prefill, true);
        dev.launch_clean("async_copy_then_read", grid_1d(1, 64), &params);
        assert_bit_exact("slots read after the wait", &dev.download::<f32>(dout, 256), &input);
    }
}

// ---------------------------------------------------------------- switches

#[test]
fn each_switched_off_check_leaves_the_others_on() {
    // memcheck off: the race is still found by racecheck.
    let (dev, _, _, params) = rotate_case("rotate_without_barrier");
    let report = dev.launch_with("rotate_without_barrier", grid_1d(1, 64), &params, &all_checks_but("memcheck"));
    expect_findings(&dev, &report, FindingKind::Race, "rotate_without_barrier", ".shared");
    // racecheck off: the write past the end is still found by memcheck.
    let case = write_past_end("write_past_end");
    let report = case.dev.launch_with("write_past_end", grid_1d(2, 64), &case.params, &all_checks_but("racecheck"));
    expect_findings(&case.dev, &report, FindingKind::OutOfBounds, "write_past_end", "st.global");
}

#[test]
fn every_check_is_on_by_default() {
    let opts = CheckOptions::default();
    assert!(opts.memcheck && opts.racecheck && opts.initcheck && opts.synccheck, "{opts:?}");
}

#[test]
fn racecheck_reports_each_pair_of_racing_instructions_with_both_lines() {
    let dev = Device::load(BUGS);
    let input = Rng::new(29).uniform_vec(64, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(64));
    let params = dev.params("two_separate_races").ptr(din).ptr(dout).finish();
    let report = dev.launch_with("two_separate_races", grid_1d(1, 64), &params, &CheckOptions::default());
    assert!(report.findings.iter().all(|f| f.kind == FindingKind::Race), "{:#?}", report.findings);
    let mut pairs: Vec<(u32, String)> = Vec::new();
    for f in &report.findings {
        let other = f.detail.split("at PTX line ").nth(1).and_then(|s| s.split(' ').next()).unwrap_or_default();
        let other: u32 = other.parse().unwrap_or_else(|_| panic!("names the other instruction's line: {f}"));
        let key = (f.ptx_line, other.to_string());
        assert!(!pairs.contains(&key), "pair reported twice: {f}");
        pairs.push(key);
        let other_text = dev.ptx.lines().nth(other as usize - 1).unwrap_or_default();
        assert!(other_text.contains(".shared"), "the other line is a shared access: {f}");
    }
    let writes_flag = report.findings.iter().any(|f| f.instruction.contains("st.shared.u32"));
    let reads_staged = report.findings.iter().any(|f| f.instruction.contains("ld.shared.f32"));
    assert!(writes_flag && reads_staged, "both hazards reported: {:#?}", report.findings);
    assert!(report.findings.len() <= 8, "once per pair, not per thread or byte: {:#?}", report.findings);
}

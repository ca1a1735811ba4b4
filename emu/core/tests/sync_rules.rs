//! synccheck's rules (docs/emulator.md, "synccheck"), one test per pattern:
//! the ones that are findings and the ones that are legal.

mod common;

use common::{assert_bit_exact, grid_1d, Device, Rng};
use ptx_emu::{CheckOptions, FindingKind, LaunchReport};

const SRC: &str = "sync_rules.cu";

#[track_caller]
fn expect_sync_finding(dev: &Device, report: &LaunchReport, kinds: &[FindingKind], kernel: &str, opcode: &str) {
    let first = report.findings.first().unwrap_or_else(|| panic!("`{kernel}`: expected a synccheck finding, got none"));
    for f in &report.findings {
        assert!(kinds.contains(&f.kind), "`{kernel}`: expected {kinds:?}, got {f}");
        assert_eq!(f.kernel, kernel, "{f}");
        assert!(f.instruction.contains(opcode), "`{kernel}`: finding names `{}`, not a `{opcode}`: {f}", f.instruction);
        let line = dev.ptx.lines().nth(f.ptx_line as usize - 1).unwrap_or_default();
        assert!(line.contains(opcode), "PTX line {} is `{}`: {f}", f.ptx_line, line.trim());
    }
    eprintln!("{first}");
}

const DIVERGENT: &[FindingKind] = &[FindingKind::DivergentSync];

fn sync_off() -> CheckOptions {
    CheckOptions { synccheck: false, ..CheckOptions::default() }
}

fn reversal(dev: &Device, kernel: &str, n: i32) -> (LaunchReport, u64, Vec<f32>) {
    let input = Rng::new(16).uniform_vec(64, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(64));
    let params = dev.params(kernel).ptr(din).ptr(dout).i32(n).finish();
    (dev.launch_with(kernel, grid_1d(1, 64), &params, &CheckOptions::default()), dout, input)
}

#[test]
fn part_of_a_warp_returning_before_a_cta_barrier_is_a_finding() {
    let dev = Device::load(SRC);
    let (report, _, _) = reversal(&dev, "early_return_in_part_of_a_warp", 40);
    expect_sync_finding(&dev, &report, DIVERGENT, "early_return_in_part_of_a_warp", "bar.sync");
    let f = &report.findings[0];
    assert!((32..40).contains(&f.thread[0]), "a waiting lane of the split warp is named: {f}");
    assert!(f.detail.contains("exited"), "{f}");
}

#[test]
fn whole_warps_returning_before_a_cta_barrier_are_legal() {
    let dev = Device::load(SRC);
    let (report, dout, input) = reversal(&dev, "early_return_of_whole_warps", 32);
    common::assert_no_findings(&report);
    let got = dev.download::<f32>(dout, 64);
    let want: Vec<f32> = (0..32).map(|t| input[31 - t]).collect();
    assert_bit_exact("reversed first warp", &got[..32], &want);
}

#[test]
fn the_same_early_return_with_n_a_multiple_of_32_is_legal() {
    // The buggy kernel is only wrong for an n that splits a warp.
    let dev = Device::load(SRC);
    let (report, _, _) = reversal(&dev, "early_return_in_part_of_a_warp", 32);
    common::assert_no_findings(&report);
}

#[test]
fn a_named_barrier_count_not_a_multiple_of_the_warp_size_is_a_finding() {
    let dev = Device::load(SRC);
    let out = dev.alloc_poisoned::<f32>(64);
    let params = dev.params("named_barrier_count_not_warp_multiple").ptr(out).finish();
    let report = dev.launch_with("named_barrier_count_not_warp_multiple", grid_1d(1, 64), &params, &Default::default());
    expect_sync_finding(&dev, &report, DIVERGENT, "named_barrier_count_not_warp_multiple", "bar.sync");
    assert!(report.findings[0].detail.contains("multiple of the warp size"), "{}", report.findings[0]);
}

#[test]
fn mismatched_named_barrier_counts_are_a_finding() {
    let dev = Device::load(SRC);
    let out = dev.alloc_poisoned::<f32>(64);
    let params = dev.params("named_barrier_mismatched_counts").ptr(out).finish();
    let report = dev.launch_with("named_barrier_mismatched_counts", grid_1d(1, 64), &params, &Default::default());
    expect_sync_finding(&dev, &report, DIVERGENT, "named_barrier_mismatched_counts", "bar.sync");
    assert!(report.findings[0].detail.contains("elsewhere for"), "{}", report.findings[0]);
    let report = dev.launch_with("named_barrier_mismatched_counts", grid_1d(1, 64), &params, &sync_off());
    assert!(report.findings.iter().all(|f| f.kind != FindingKind::DivergentSync), "synccheck off");
}

#[test]
fn a_named_barrier_for_part_of_the_cta_is_legal() {
    let dev = Device::load(SRC);
    let input = Rng::new(17).uniform_vec(64, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(64));
    let params = dev.params("named_barrier_for_two_of_three_warps").ptr(din).ptr(dout).finish();
    // Racecheck on too: the named barrier orders the two warps' accesses.
    dev.launch_clean("named_barrier_for_two_of_three_warps", grid_1d(1, 96), &params);
    assert_bit_exact("copied through shared", &dev.download::<f32>(dout, 64), &input);
}

#[test]
fn a_syncwarp_mask_without_the_calling_lane_is_a_finding() {
    let dev = Device::load(SRC);
    let out = dev.alloc_poisoned::<f32>(32);
    let params = dev.params("syncwarp_mask_excludes_caller").ptr(out).finish();
    let report = dev.launch_with("syncwarp_mask_excludes_caller", grid_1d(1, 32), &params, &Default::default());
    expect_sync_finding(&dev, &report, DIVERGENT, "syncwarp_mask_excludes_caller", "bar.warp.sync");
    assert!(report.findings[0].thread[0] >= 16, "{}", report.findings[0]);
}

fn shuffle(kernel: &str) -> (Device, LaunchReport, u64, Vec<f32>) {
    let dev = Device::load(SRC);
    let input = Rng::new(18).uniform_vec(32, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(32));
    let params = dev.params(kernel).ptr(din).ptr(dout).finish();
    let report = dev.launch_with(kernel, grid_1d(1, 32), &params, &Default::default());
    (dev, report, dout, input)
}

#[test]
fn members_of_a_shuffle_naming_different_masks_are_a_finding() {
    let (dev, report, _, _) = shuffle("shuffle_members_disagree_on_mask");
    expect_sync_finding(&dev, &report, DIVERGENT, "shuffle_members_disagree_on_mask", "shfl.sync");
}

#[test]
fn a_shuffle_split_into_two_disjoint_groups_is_legal() {
    let (dev, report, dout, input) = shuffle("shuffle_in_two_disjoint_halves");
    common::assert_no_findings(&report);
    let want: Vec<f32> = (0..32).map(|l| input[l / 16 * 16]).collect();
    assert_bit_exact("broadcast per half", &dev.download::<f32>(dout, 32), &want);
}

fn ballot(kernel: &str) -> (Device, LaunchReport, u64, Vec<f32>) {
    let dev = Device::load(SRC);
    let input = Rng::new(19).uniform_vec(32, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<u32>(32));
    let params = dev.params(kernel).ptr(din).ptr(dout).finish();
    let report = dev.launch_with(kernel, grid_1d(1, 32), &params, &Default::default());
    (dev, report, dout, input)
}

#[test]
fn a_full_mask_ballot_after_half_the_warp_returned_is_a_finding() {
    let (dev, report, _, _) = ballot("ballot_full_mask_after_half_warp_exit");
    expect_sync_finding(&dev, &report, DIVERGENT, "ballot_full_mask_after_half_warp_exit", "vote.sync");
}

#[test]
fn a_ballot_of_the_lanes_still_running_is_legal() {
    let (dev, report, dout, input) = ballot("ballot_of_the_lanes_left");
    common::assert_no_findings(&report);
    let want = (0..16).filter(|&l| input[l] > 0.0).fold(0u32, |m, l| m | 1 << l);
    assert_eq!(dev.download::<u32>(dout, 16), vec![want; 16]);
}

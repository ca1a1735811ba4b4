//! The kernel-test harness refuses to run while the emulator's CTA sampling
//! is on: a sampled launch leaves most outputs unwritten, so no result check
//! would mean anything.

mod device;

use std::process::Command;

const SELF: &str = "kernel_tests_refuse_a_sampled_emulator";

#[test]
fn kernel_tests_refuse_a_sampled_emulator() {
    if std::env::var_os("PTX_EMU_SAMPLE_CTAS").is_some() {
        // The child run: asking for a device must fail here, device or not.
        let _ = device::device();
        return;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let output = Command::new(exe)
        .args(["--exact", SELF, "--test-threads=1", "--nocapture"])
        .env("PTX_EMU_SAMPLE_CTAS", "4")
        .output()
        .expect("rerun the test binary");
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a sampled run was not refused:\n{text}");
    assert!(text.contains("PTX_EMU_SAMPLE_CTAS=4 is set"), "refused for another reason:\n{text}");
}

#[test]
fn no_refusal_without_sampling() {
    if std::env::var_os("PTX_EMU_SAMPLE_CTAS").is_none() {
        assert_eq!(device::sampling_refusal(), None);
    }
}

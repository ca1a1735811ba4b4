//! `ptxas -v` on every PTX module the crate ships, the `compute_80` ones for
//! sm_80 and sm_90 and the Hopper ones (`compute_90a`) for sm_90a, the one
//! target they load on: each
//! entry point compiles without spills and without a stack frame (a spill or
//! a dynamically indexed local array would put per-thread traffic in local
//! memory). Skips where no ptxas is installed (`scripts/setup.sh` puts one on
//! PATH, and the README's test command sources it).

use fused_lora::ptx;

/// Where the `compute_80` modules run (any GPU from 8.0 up; 9.0 covers Hopper).
const ANY_AMPERE_OR_LATER: &[&str] = &["sm_80", "sm_90"];
/// Architecture-specific PTX runs on exactly this target.
const HOPPER_ONLY: &[&str] = &["sm_90a"];

const MODULES: &[(&str, &str, &[&str])] = &[
    ("merge", ptx::MERGE, ANY_AMPERE_OR_LATER),
    ("forward", ptx::FORWARD, ANY_AMPERE_OR_LATER),
    ("backward", ptx::BACKWARD, ANY_AMPERE_OR_LATER),
    ("init", ptx::INIT, ANY_AMPERE_OR_LATER),
    ("optim", ptx::OPTIM, ANY_AMPERE_OR_LATER),
    ("decode", ptx::DECODE, ANY_AMPERE_OR_LATER),
    ("forward_sm90a", ptx::FORWARD_SM90A, HOPPER_ONLY),
    ("backward_dx_sm90a", ptx::BACKWARD_DX_SM90A, HOPPER_ONLY),
    ("decode_sm90a", ptx::DECODE_SM90A, HOPPER_ONLY),
];

#[test]
fn every_entry_point_compiles_without_spills_or_stack() {
    let dir = std::env::temp_dir().join(format!("fused-lora-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Every (module, architecture) pair's ptxas at once: each is one
    // single-threaded process, and the whole check is one test.
    let mut runs = Vec::new();
    for &(name, text, archs) in MODULES {
        let ptx = dir.join(format!("{name}.ptx"));
        std::fs::write(&ptx, text).expect("write PTX");
        let entries = text.lines().filter(|l| l.contains(".entry ")).count();
        assert!(entries > 0, "{name}: no entry point in the PTX");
        for &arch in archs {
            let child = match std::process::Command::new("ptxas")
                .args([&format!("-arch={arch}"), "-v", "-o"])
                .arg(dir.join(format!("{name}_{arch}.cubin")))
                .arg(&ptx)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
            {
                Ok(child) => child,
                Err(e) => {
                    eprintln!("SKIPPED: ptxas not runnable ({e}); run `. scripts/setup.sh` first");
                    return;
                }
            };
            runs.push((name, arch, entries, child));
        }
    }
    for (name, arch, entries, child) in runs {
        let output = child.wait_with_output().expect("wait for ptxas");
        let report = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "ptxas failed on {name} for {arch}: {report}");
        let frames: Vec<&str> = report.lines().filter(|l| l.contains("spill stores")).collect();
        assert_eq!(frames.len(), entries, "one report per entry point of {name} for {arch}: {report}");
        for line in frames {
            assert!(
                line.contains("0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"),
                "{name} {arch}: {line}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

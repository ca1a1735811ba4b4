//! The counters line of a sampled launch with the model on
//! (`PTX_EMU_COUNTERS_FILE`, `PTX_EMU_MODEL`). A test binary of its own: the
//! variables are set before any launch of the process.

mod common;

use common::{cuda_root, grid_1d, Device, Rng};
use ptx_emu::CheckOptions;

/// The text of the JSON object after `"key":` (up to its matching brace).
fn json_object<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":{{"))? + key.len() + 3;
    let mut depth = 0;
    for (i, ch) in line[start..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' if depth == 1 => return Some(&line[start..start + i + 1]),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

#[test]
fn a_sampled_launch_with_the_model_on_records_both() {
    let dir = std::env::temp_dir().join(format!("ptx-emu-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("counters.jsonl");
    let _ = std::fs::remove_file(&file);
    std::env::set_var("PTX_EMU_COUNTERS_FILE", &file);
    std::env::set_var("PTX_EMU_MODEL", "a100, h100,unknown-gpu");
    std::env::set_var("PTX_EMU_PTXAS", cuda_root().join("bin").join("ptxas"));

    let dev = Device::load("counted.cu");
    let input = Rng::new(43).uniform_vec(4, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(10 * 32));
    let params = dev.params("broadcast_first").ptr(din).ptr(dout).finish();
    let opts = CheckOptions { sample_ctas: Some(3), ..CheckOptions::default() };
    let report = dev.launch_with("broadcast_first", grid_1d(10, 32), &params, &opts);
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let c = &report.counters;
    assert_eq!((c.total_ctas, c.sampled_ctas, c.sampled), (10, 3, true));
    // Each CTA writes its own 128 bytes: scaled exactly; all read in[0]:
    // capped at the 4 bytes the sample touched.
    assert_eq!(c.global_bytes_written, 10 * 32 * 4);
    assert_eq!(c.global_bytes_read, 4);
    assert_eq!(c.global_store_requests, 10);

    let text = std::fs::read_to_string(&file).expect("PTX_EMU_COUNTERS_FILE written");
    let line = text.lines().next().expect("one line");
    assert!(line.contains("\"total_ctas\":10,\"sampled_ctas\":3,\"sampled\":true"), "{line}");
    let model = json_object(line, "model").unwrap_or_else(|| panic!("no model object: {line}"));
    assert!(!model.contains("unknown-gpu"), "{model}");
    for (gpu, arch) in [("a100", "sm_80"), ("h100", "sm_90")] {
        let m = json_object(model, gpu).unwrap_or_else(|| panic!("no {gpu}: {model}"));
        for key in [
            "\"us\":",
            "\"bound\":\"",
            "\"registers\":",
            "\"static_shared\":",
            "\"dynamic_shared\":0",
            "\"ctas_per_sm\":",
            "\"limiter\":\"",
            "\"waves\":",
        ] {
            assert!(m.contains(key), "{gpu} lacks {key}: {m}");
        }
        assert!(m.contains(&format!("\"registers_source\":\"ptxas {arch}\"")), "{m}");
        let util = json_object(m, "utilization").unwrap_or_else(|| panic!("no utilization: {m}"));
        for key in ["issue", "tensor", "shared", "l2", "dram"] {
            assert!(util.contains(&format!("\"{key}\":")), "{util}");
        }
        // A 10-CTA launch of one load and one store per thread is launch-bound.
        assert!(m.contains("\"bound\":\"launch\""), "{m}");
    }
    assert!(!model.contains("\"h200\""), "only the GPUs asked for: {model}");
    std::fs::remove_dir_all(&dir).ok();
}

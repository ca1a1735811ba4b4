//! The counters' JSON line file, named by `PTX_EMU_COUNTERS_FILE`. A test
//! binary of its own: the variable is set before any launch of the process,
//! and no other test's launches write to the file.

mod common;

use common::{grid_1d, Device, Rng};

/// The unsigned integer after `"key":` in a one-line JSON object.
fn json_u64(line: &str, key: &str) -> Option<u64> {
    let after_key = &line[line.find(&format!("\"{key}\""))? + key.len() + 2..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[test]
fn every_launch_appends_its_counters_as_one_json_line() {
    let dir = std::env::temp_dir().join(format!("ptx-emu-counters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("counters.jsonl");
    let _ = std::fs::remove_file(&file);
    std::env::set_var("PTX_EMU_COUNTERS_FILE", &file);

    let dev = Device::load("counted.cu");
    let input = Rng::new(41).uniform_vec(64, -1.0, 1.0);
    let (din, dout) = (dev.upload(&input), dev.alloc_poisoned::<f32>(64));
    let strided = dev.params("load_with_stride").ptr(din).ptr(dout).i32(2).finish();
    let first = dev.launch_clean("load_with_stride", grid_1d(1, 32), &strided);
    let broadcast = dev.params("broadcast_first").ptr(din).ptr(dout).finish();
    let second = dev.launch_clean("broadcast_first", grid_1d(2, 32), &broadcast);

    let text = std::fs::read_to_string(&file).expect("PTX_EMU_COUNTERS_FILE written");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per launch:\n{text}");
    for (line, counters) in lines.iter().zip([&first, &second]) {
        assert_eq!(*line, counters.to_json_line(), "the file holds the launch's own counters");
        assert!(line.starts_with('{') && line.ends_with('}'), "not one JSON object: {line}");
        assert!(line.contains(&format!("\"{}\"", counters.kernel)), "kernel not named: {line}");
        assert_eq!(json_u64(line, "thread_instructions"), Some(counters.thread_instructions), "{line}");
        assert_eq!(json_u64(line, "global_load_sectors"), Some(counters.global_load_sectors), "{line}");
    }
    assert_eq!(json_u64(lines[0], "global_load_sectors"), Some(8), "stride 2: 8 sectors");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn json_number_lookup_reads_the_value_after_the_key() {
    let line = r#"{"kernel":"k","thread_instructions": 1234,"global_load_sectors":8}"#;
    assert_eq!(json_u64(line, "thread_instructions"), Some(1234));
    assert_eq!(json_u64(line, "global_load_sectors"), Some(8));
    assert_eq!(json_u64(line, "barriers"), None);
}

//! The leak check, compute-sanitizer's `--leak-check full` for the emulated
//! device: with `PTX_EMU_LEAK_CHECK=1`, destroying a context (`cuCtxDestroy`,
//! the last `cuDevicePrimaryCtxRelease`, `cuDevicePrimaryCtxReset`) prints
//! every `cuMemAlloc` allocation of it still live, with its size, address,
//! the call that made it and the host stack at that call, then a summary
//! line (also when nothing leaked). Module globals are not leaks: they go
//! with their module. The stack is captured only when the check is on.

use std::backtrace::Backtrace;
use std::fmt::Write;

/// The variable that turns the leak check on.
pub const LEAK_CHECK_ENV: &str = "PTX_EMU_LEAK_CHECK";

/// Whether `PTX_EMU_LEAK_CHECK=1`.
pub(crate) fn enabled() -> bool {
    std::env::var(LEAK_CHECK_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Where a live device allocation came from.
pub(crate) struct AllocationSite {
    /// The driver call (`cuMemAlloc_v2`, `cuMemAllocAsync`).
    pub call: &'static str,
    /// 1 for the process's first allocation, 2 for the next, ...
    pub ordinal: u64,
    pub size: u64,
    /// The host stack at the call, when the leak check is on.
    stack: Option<Backtrace>,
}

impl AllocationSite {
    pub fn record(call: &'static str, ordinal: u64, size: u64) -> Self {
        let stack = enabled().then(Backtrace::force_capture);
        AllocationSite { call, ordinal, size, stack }
    }

    /// The frames of the caller, outermost last: the stack below the driver
    /// entry point (compute-sanitizer's "host backtrace up to driver entry
    /// point"), at most `max` frames.
    fn caller_frames(&self, max: usize) -> Vec<String> {
        let Some(stack) = &self.stack else { return Vec::new() };
        let text = stack.to_string();
        let mut frames: Vec<String> = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            match trimmed.split_once(": ") {
                Some((index, name)) if index.chars().all(|c| c.is_ascii_digit()) => frames.push(name.to_string()),
                _ if trimmed.starts_with("at ") => {
                    if let Some(last) = frames.last_mut() {
                        let _ = write!(last, " ({trimmed})");
                    }
                }
                _ => {}
            }
        }
        // Drop the frames up to and including the driver's entry point.
        let entry = frames.iter().position(|f| f.starts_with(self.call));
        let start = entry.map_or(0, |i| i + 1);
        // The runtime's own frames (thread start, the test harness) say nothing.
        const RUNTIME: [&str; 9] =
            ["std::", "core::", "<std::", "<core::", "test::", "start_thread", "clone", "__libc_start", "_start"];
        frames.into_iter().skip(start).filter(|f| !RUNTIME.iter().any(|r| f.starts_with(r))).take(max).collect()
    }
}

/// The report for the allocations `(address, site)` still live when
/// `context` is destroyed.
pub(crate) fn report(context: u64, mut leaked: Vec<(u64, &AllocationSite)>) -> String {
    leaked.sort_by_key(|(_, site)| site.ordinal);
    let mut out = String::new();
    let total: u64 = leaked.iter().map(|(_, site)| site.size).sum();
    for (address, site) in &leaked {
        let _ = writeln!(
            out,
            "ptx-emu: leak check: leaked {} bytes at {address:#x} (allocation #{} by {}) when context {context:#x} was destroyed",
            site.size, site.ordinal, site.call
        );
        for frame in site.caller_frames(8) {
            let _ = writeln!(out, "ptx-emu:     allocated from {frame}");
        }
    }
    let _ = writeln!(out, "ptx-emu: LEAK SUMMARY: {total} bytes leaked in {} allocations", leaked.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_each_allocation_in_order_and_sums() {
        let first = AllocationSite { call: "cuMemAlloc_v2", ordinal: 3, size: 1024, stack: None };
        let second = AllocationSite { call: "cuMemAllocAsync", ordinal: 7, size: 12, stack: None };
        let text = report(0x1000, vec![(0x7f00_0000_0400, &second), (0x7f00_0000_0000, &first)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("leaked 1024 bytes at 0x7f0000000000 (allocation #3 by cuMemAlloc_v2)"), "{text}");
        assert!(lines[1].contains("leaked 12 bytes at 0x7f0000000400 (allocation #7 by cuMemAllocAsync)"), "{text}");
        assert_eq!(lines[2], "ptx-emu: LEAK SUMMARY: 1036 bytes leaked in 2 allocations");
        assert_eq!(report(0x1000, Vec::new()), "ptx-emu: LEAK SUMMARY: 0 bytes leaked in 0 allocations\n");
    }
}

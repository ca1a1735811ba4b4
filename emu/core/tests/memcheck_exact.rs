//! memcheck is exact to the byte against every live allocation: buffers,
//! a module's `.global` variables (a finding past one names it) and each
//! thread's local window; an access into a freed allocation is named a use
//! after free.

mod common;

use common::{grid_1d, Device};
use ptx_emu::{CheckOptions, FindingKind, LaunchReport};

/// `table` is a 16-byte module global. `global_byte(off)` reads the byte at
/// `table + off`; `local_byte(off, generic)` writes a 16-byte local array,
/// then reads the byte at offset `off` of it, through a `.local` address or
/// (generic != 0) a generic one; `buffer_byte(p, off)` reads `p[off]`.
/// Each stores what it read to `out`.
const PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64

.global .align 4 .b8 table[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

.visible .entry global_byte(.param .u64 out, .param .u64 off)
{
    .reg .b16 %h<2>;
    .reg .b64 %rd<6>;
    mov.u64 %rd1, table;
    ld.param.u64 %rd2, [off];
    add.u64 %rd3, %rd1, %rd2;
    ld.global.u8 %h1, [%rd3];
    ld.param.u64 %rd4, [out];
    st.global.u8 [%rd4], %h1;
    ret;
}

.visible .entry local_byte(.param .u64 out, .param .u32 off, .param .u32 generic)
{
    .reg .pred %p<2>;
    .reg .b16 %h<2>;
    .reg .b32 %r<6>;
    .reg .b64 %rd<8>;
    .local .align 4 .b8 buf[16];
    mov.u32 %r1, buf;
    st.local.u32 [%r1], 1;
    st.local.u32 [%r1+4], 2;
    st.local.u32 [%r1+8], 3;
    st.local.u32 [%r1+12], 4;
    ld.param.u32 %r2, [off];
    ld.param.u32 %r3, [generic];
    setp.ne.u32 %p1, %r3, 0;
    @%p1 bra GENERIC;
    add.u32 %r4, %r1, %r2;
    ld.local.u8 %h1, [%r4];
    bra DONE;
GENERIC:
    mov.u64 %rd1, buf;
    cvta.local.u64 %rd2, %rd1;
    cvt.u64.u32 %rd3, %r2;
    add.u64 %rd4, %rd2, %rd3;
    ld.u8 %h1, [%rd4];
DONE:
    ld.param.u64 %rd5, [out];
    st.global.u8 [%rd5], %h1;
    ret;
}

.visible .entry buffer_byte(.param .u64 out, .param .u64 p, .param .u64 off)
{
    .reg .b16 %h<2>;
    .reg .b64 %rd<6>;
    ld.param.u64 %rd1, [p];
    ld.param.u64 %rd2, [off];
    add.u64 %rd3, %rd1, %rd2;
    ld.global.u8 %h1, [%rd3];
    ld.param.u64 %rd4, [out];
    st.global.u8 [%rd4], %h1;
    ret;
}
"#;

fn run(dev: &Device, kernel: &str, params: Vec<u8>) -> LaunchReport {
    dev.launch_with(kernel, grid_1d(1, 1), &params, &CheckOptions::default())
}

/// The single OutOfBounds finding of `report`, at a `ld` instruction.
#[track_caller]
fn out_of_bounds(report: &LaunchReport) -> String {
    assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
    let finding = &report.findings[0];
    assert_eq!(finding.kind, FindingKind::OutOfBounds, "{finding}");
    assert!(finding.instruction.starts_with("ld."), "{finding}");
    finding.detail.clone()
}

#[test]
fn module_global_every_byte_inside_is_clean_one_past_is_a_finding_naming_it() {
    let dev = Device::from_ptx(PTX.to_string());
    let (table, size) = dev.module.global("table").expect("table is a module global");
    assert_eq!(size, 16);
    let out = dev.alloc_poisoned::<u8>(1);
    for off in 0..16u64 {
        let report = run(&dev, "global_byte", dev.params("global_byte").ptr(out).u64(off).finish());
        assert!(report.findings.is_empty(), "byte {off}: {:?}", report.findings);
        assert_eq!(dev.download::<u8>(out, 1), [off as u8 + 1]);
    }
    let detail = out_of_bounds(&run(&dev, "global_byte", dev.params("global_byte").ptr(out).u64(16).finish()));
    let want = format!("0 bytes after the end of module global `table` (a 16-byte allocation at {table:#x})");
    assert!(detail.contains(&want), "{detail}");
    let before = out_of_bounds(&run(&dev, "global_byte", dev.params("global_byte").ptr(out).u64(u64::MAX).finish()));
    assert!(before.contains("1 bytes before the start of module global `table`"), "{before}");
}

#[test]
fn local_window_every_byte_inside_is_clean_one_past_is_a_finding() {
    let dev = Device::from_ptx(PTX.to_string());
    let out = dev.alloc_poisoned::<u8>(1);
    for generic in [0u32, 1] {
        for off in 0..16u32 {
            let params = dev.params("local_byte").ptr(out).u32(off).u32(generic).finish();
            let report = run(&dev, "local_byte", params);
            assert!(report.findings.is_empty(), "byte {off}, generic {generic}: {:?}", report.findings);
            let want = if off % 4 == 0 { off / 4 + 1 } else { 0 };
            assert_eq!(dev.download::<u8>(out, 1), [want as u8], "byte {off}");
        }
        let params = dev.params("local_byte").ptr(out).u32(16).u32(generic).finish();
        let detail = out_of_bounds(&run(&dev, "local_byte", params));
        assert!(detail.contains("local access at offset 0x10 outside the 16 bytes declared"), "{detail}");
    }
}

#[test]
fn buffers_are_exact_to_the_byte_and_freed_ones_are_named() {
    let dev = Device::from_ptx(PTX.to_string());
    let out = dev.alloc_poisoned::<u8>(1);
    // 13 bytes: allocations are 256-byte aligned, so the next 243 bytes are
    // padding no access may touch.
    let buffer = dev.upload(&(0..13u8).collect::<Vec<_>>());
    let params = |off: u64| dev.params("buffer_byte").ptr(out).ptr(buffer).u64(off).finish();
    assert!(run(&dev, "buffer_byte", params(12)).findings.is_empty());
    let detail = out_of_bounds(&run(&dev, "buffer_byte", params(13)));
    assert!(detail.contains(&format!("0 bytes after the end of a 13-byte allocation at {buffer:#x}")), "{detail}");
    dev.mem.free(buffer).unwrap();
    let detail = out_of_bounds(&run(&dev, "buffer_byte", params(3)));
    assert!(
        detail.contains(&format!("inside a 13-byte allocation at {buffer:#x} that was freed (use after free)")),
        "{detail}"
    );
}

#[test]
fn bad_frees_say_why() {
    let dev = Device::from_ptx(PTX.to_string());
    let buffer = dev.alloc_unwritten(64);
    assert!(dev
        .mem
        .describe_bad_free(buffer + 8)
        .contains(&format!("8 bytes inside a 64-byte allocation at {buffer:#x}, not its base")));
    dev.mem.free(buffer).unwrap();
    assert!(dev.mem.free(buffer).is_err());
    assert!(dev.mem.describe_bad_free(buffer).contains("was already freed (double free)"));
    assert!(dev.mem.describe_bad_free(0x1000).starts_with("never allocated"));
}

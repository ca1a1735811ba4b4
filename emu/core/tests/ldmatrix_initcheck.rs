//! initcheck of the shared rows `ldmatrix` reads (docs/emulator.md,
//! "initcheck and ldmatrix"): only the 8 rows of 16 bytes per matrix that
//! lanes 0-7 (`.x1`), 0-15 (`.x2`) or 0-31 (`.x4`) name are read; a row with
//! bytes never written reads as 0xff bytes (NaN) by default, so exactly the
//! fragment words taken from it are poisoned, and is a finding naming the
//! row and the lane with `ldmatrix_initcheck` (`PTX_EMU_INITCHECK_LDMATRIX=1`).

mod common;

use common::{grid_1d, Device};
use ptx_emu::{CheckOptions, FindingKind};

/// One warp: lanes below `written` (at most 8) write row `lane` of an 8x16-byte
/// tile, the word at byte `4c` of row `r` holding `0x0100 * r + c + 1`; after a
/// barrier `ldmatrix.x1` reads it, lanes 0-7 naming row `lane` and lanes 8-31
/// an address past the tile (ignored by `.x1`), and lane `l` stores its word.
const PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64

.visible .entry ldmatrix_rows(.param .u64 out, .param .u32 written)
{
    .reg .pred %p<3>;
    .reg .b32 %r<12>;
    .reg .b64 %rd<4>;
    .shared .align 16 .b8 tile[128];

    mov.u32 %r1, %tid.x;
    ld.param.u32 %r2, [written];
    setp.ge.u32 %p1, %r1, %r2;
    mov.u32 %r3, tile;
    shl.b32 %r4, %r1, 4;
    add.u32 %r5, %r3, %r4;
    shl.b32 %r6, %r1, 8;
    @%p1 bra SKIP;
    add.u32 %r7, %r6, 1;
    st.shared.u32 [%r5], %r7;
    add.u32 %r7, %r6, 2;
    st.shared.u32 [%r5+4], %r7;
    add.u32 %r7, %r6, 3;
    st.shared.u32 [%r5+8], %r7;
    add.u32 %r7, %r6, 4;
    st.shared.u32 [%r5+12], %r7;
SKIP:
    bar.sync 0;
    setp.ge.u32 %p2, %r1, 8;
    add.u32 %r8, %r3, 4096;
    selp.b32 %r9, %r8, %r5, %p2;
    ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%r10}, [%r9];
    ld.param.u64 %rd1, [out];
    mul.wide.u32 %rd2, %r1, 4;
    add.u64 %rd3, %rd1, %rd2;
    st.global.u32 [%rd3], %r10;
    ret;
}
"#;

/// Runs the kernel with `written` rows written; returns the findings and the 32 words.
fn run(written: u32, opts: &CheckOptions) -> (Vec<ptx_emu::Finding>, Vec<u32>) {
    let dev = Device::from_ptx(PTX.to_string());
    let out = dev.alloc_poisoned::<u32>(32);
    let params = dev.params("ldmatrix_rows").ptr(out).u32(written).finish();
    let report = dev.launch_with("ldmatrix_rows", grid_1d(1, 32), &params, opts);
    (report.findings, dev.download::<u32>(out, 32))
}

/// Lane `l` receives row `l / 4`, bytes `4 (l % 4)..+4` (the PTX ISA's x1 layout).
fn expected(lane: u32) -> u32 {
    0x0100 * (lane / 4) + lane % 4 + 1
}

#[test]
fn every_row_written_is_clean_and_ignored_lanes_addresses_are_not_read() {
    for opts in [CheckOptions::default(), CheckOptions { ldmatrix_initcheck: true, ..CheckOptions::default() }] {
        let (findings, words) = run(8, &opts);
        assert!(findings.is_empty(), "{findings:?}");
        assert_eq!(words, (0..32).map(expected).collect::<Vec<_>>());
    }
}

#[test]
fn unwritten_rows_poison_exactly_their_fragment_words_by_default() {
    // Rows 6 and 7 never written: lanes 24-31 receive them.
    let (findings, words) = run(6, &CheckOptions::default());
    assert!(findings.is_empty(), "{findings:?}");
    for (lane, &word) in words.iter().enumerate() {
        let want = if lane >= 24 { 0xffff_ffff } else { expected(lane as u32) };
        assert_eq!(word, want, "lane {lane}");
    }
    // bf16 and f16 halves of the poisoned word are NaN, as is the f32.
    assert!(f32::from_bits(words[31]).is_nan());
    assert!(half::bf16::from_bits(words[31] as u16).is_nan() && half::f16::from_bits(words[31] as u16).is_nan());
}

#[test]
fn unwritten_row_is_a_finding_naming_row_and_lane_when_asked() {
    let strict = CheckOptions { ldmatrix_initcheck: true, ..CheckOptions::default() };
    let (findings, _) = run(6, &strict);
    let first = findings.first().expect("row 6 was never written");
    assert!(findings.iter().all(|f| f.kind == FindingKind::Uninitialized && f.instruction.contains("ldmatrix")));
    assert_eq!(first.thread, [6, 0, 0], "{first}");
    assert_eq!(first.address % 128, 6 * 16, "{first}");
    assert!(first.detail.contains("row 6 of matrix 0 (the address of lane 6)"), "{first}");
    assert!(first.detail.contains("16 of its 16 bytes never written"), "{first}");
}

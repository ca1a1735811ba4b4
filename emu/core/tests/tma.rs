//! sm_90a's mbarrier and TMA on the emulator (kernels/tma.cu, compiled by
//! nvcc for sm_90a): 2-D tensor-map boxes in every swizzle mode with ragged
//! and negative out-of-bounds edges, checked byte by byte against a CPU
//! model of the swizzle; tensor stores; plain bulk copies; mbarrier phases,
//! arrive_drop and the cluster registers of a cluster of one CTA; and one
//! planted bug per new finding, each beside its clean twin.

mod common;

use common::{assert_no_findings, Device, Rng};
use ptx_emu::tensor_map::TensorMap;
use ptx_emu::{CheckOptions, FindingKind, LaunchConfig, LaunchReport};

const SOURCE: &str = "tma.cu";

fn device() -> Device {
    Device::from_ptx(common::compile_ptx_with(SOURCE, "sm_90a", &[]))
}

/// A `width` x `height` tensor of `esize`-byte elements with rows `pitch`
/// bytes apart, random bytes (so every byte's origin is checkable).
struct Tensor {
    width: u64,
    height: u64,
    pitch: u64,
    esize: u64,
    bytes: Vec<u8>,
}

impl Tensor {
    fn random(width: u64, height: u64, esize: u64, seed: u64) -> Self {
        let pitch = (width * esize).div_ceil(16) * 16 + 16;
        let mut rng = Rng::new(seed);
        let bytes = (0..pitch * height).map(|_| rng.next_u32() as u8).collect();
        Tensor { width, height, pitch, esize, bytes }
    }
}

/// Where byte `o` of a box (row-major, rows of the box's inner bytes) lands
/// in shared memory, for a destination aligned to the swizzle's pattern:
/// the 16-byte chunk index inside each 128-byte line XORed with the line
/// number modulo span / 16 (32B: 2 chunks, 64B: 4, 128B: 8).
fn swizzled(o: u64, span: u64) -> u64 {
    if span == 0 {
        return o;
    }
    let chunks = span / 16;
    let line = o / 128;
    let chunk = (o / 16) % 8;
    (o & !0x70) | (((chunk ^ (line % chunks)) % 8) << 4)
}

/// The shared bytes of a box at (c0, c1) as the hardware lays them out.
fn box_model(t: &Tensor, box_w: u64, box_h: u64, c0: i64, c1: i64, span: u64, oob: u8) -> Vec<u8> {
    let row_bytes = box_w * t.esize;
    let mut out = vec![0u8; (row_bytes * box_h) as usize];
    for r in 0..box_h {
        for x in 0..box_w {
            let (gx, gy) = (c0 + x as i64, c1 + r as i64);
            let inside = gx >= 0 && gy >= 0 && (gx as u64) < t.width && (gy as u64) < t.height;
            for k in 0..t.esize {
                let o = r * row_bytes + x * t.esize + k;
                let v = if inside {
                    t.bytes[(gy as u64 * t.pitch + gx as u64 * t.esize + k) as usize]
                } else if oob == 0xff && k + 1 == t.esize {
                    0x7f
                } else {
                    oob
                };
                out[swizzled(o, span) as usize] = v;
            }
        }
    }
    out
}

struct Load {
    data_type: u32,
    box_w: u32,
    box_h: u32,
    swizzle: u32,
    c0: i32,
    c1: i32,
    oob_nan: bool,
}

fn map_for(dev: &Device, t: &Tensor, l: &Load) -> (u64, TensorMap) {
    let addr = dev.upload(&t.bytes);
    let map = TensorMap::tiled(
        l.data_type,
        2,
        addr,
        &[t.width, t.height],
        &[t.pitch],
        &[l.box_w, l.box_h],
        &[1, 1],
        0,
        l.swizzle,
        2,
        l.oob_nan as u32,
    )
    .expect("valid tensor map");
    (addr, map)
}

fn one_cta(threads: u32, shared: u32) -> LaunchConfig {
    LaunchConfig { grid: [1, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: shared }
}

/// Launches `tma_load_2d` with `mode`, `dst_off` and `tx_bytes` (None: the box's bytes).
fn launch_load(
    dev: &Device,
    map: &TensorMap,
    l: &Load,
    mode: i32,
    dst_off: u32,
    tx_bytes: Option<u32>,
    shared: u32,
) -> (LaunchReport, u64) {
    let bytes = map.box_bytes() as u32;
    let out = dev.alloc_poisoned::<u8>(bytes as usize);
    let params = dev
        .params("tma_load_2d")
        .bytes(&map.encode())
        .ptr(out)
        .i32(l.c0)
        .i32(l.c1)
        .u32(tx_bytes.unwrap_or(bytes))
        .u32(bytes)
        .u32(dst_off)
        .i32(mode)
        .finish();
    (dev.launch_with("tma_load_2d", one_cta(128, shared), &params, &CheckOptions::default()), out)
}

fn check_load(dev: &Device, esize: u64, l: Load, seed: u64) {
    let t = Tensor::random(100, 37, esize, seed);
    let (_, map) = map_for(dev, &t, &l);
    let span = [0, 32, 64, 128][l.swizzle as usize];
    let want =
        box_model(&t, l.box_w as u64, l.box_h as u64, l.c0 as i64, l.c1 as i64, span, if l.oob_nan { 0xff } else { 0 });
    for mode in [0, 1] {
        let (report, out) = launch_load(dev, &map, &l, mode, 0, None, 4096 * 4);
        assert_no_findings(&report);
        let got = dev.download::<u8>(out, want.len());
        if let Some(i) = (0..want.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "swizzle {span}B box {}x{} at ({}, {}), mode {mode}: shared byte {i} is {:#04x}, the model says {:#04x}",
                l.box_w, l.box_h, l.c0, l.c1, got[i], want[i]
            );
        }
        assert_eq!(report.counters.bulk_copies, 1);
        assert_eq!(report.counters.bulk_bytes, want.len() as u64);
    }
}

#[test]
fn tensor_loads_every_swizzle_with_ragged_and_negative_edges() {
    let dev = device();
    let mut seed = 1;
    // u16 elements: a box row of 16, 32, 64 bytes and the 128-byte span.
    for (swizzle, box_w) in [(0u32, 40u32), (1, 16), (2, 32), (3, 64)] {
        for (c0, c1) in [(0, 0), (72, 33), (-8, -3), (100 - box_w as i32, 29)] {
            check_load(&dev, 2, Load { data_type: 1, box_w, box_h: 8, swizzle, c0, c1, oob_nan: false }, seed);
            seed += 1;
        }
    }
    // f32 elements, 128-byte swizzle, 16 rows crossing the bottom edge.
    check_load(&dev, 4, Load { data_type: 7, box_w: 32, box_h: 16, swizzle: 3, c0: 80, c1: 30, oob_nan: false }, 99);
}

#[test]
fn tensor_load_fills_out_of_bounds_bf16_with_nan() {
    let dev = device();
    check_load(&dev, 2, Load { data_type: 9, box_w: 64, box_h: 8, swizzle: 3, c0: 60, c1: 33, oob_nan: true }, 7);
}

#[test]
fn tensor_store_writes_in_bounds_elements_and_needs_a_proxy_fence() {
    let dev = device();
    let t = Tensor::random(100, 37, 2, 11);
    let (addr, map) =
        map_for(&dev, &t, &Load { data_type: 1, box_w: 64, box_h: 8, swizzle: 3, c0: 0, c1: 0, oob_nan: false });
    let bytes = map.box_bytes() as usize;
    let mut rng = Rng::new(5);
    let shared: Vec<u8> = (0..bytes).map(|_| rng.next_u32() as u8).collect();
    let input = dev.upload(&shared);
    let (c0, c1) = (60i64, 33i64);
    let run = |fence: i32| {
        let params = dev
            .params("tma_store_2d")
            .bytes(&map.encode())
            .ptr(input)
            .i32(c0 as i32)
            .i32(c1 as i32)
            .u32(bytes as u32)
            .i32(fence)
            .finish();
        dev.launch_with("tma_store_2d", one_cta(128, 16384), &params, &CheckOptions::default())
    };
    let report = run(1);
    assert_no_findings(&report);
    let got = dev.download::<u8>(addr, t.bytes.len());
    for y in 0..t.height {
        for xb in 0..t.pitch {
            let i = (y * t.pitch + xb) as usize;
            let x = xb / 2;
            let inside_box =
                xb < t.width * 2 && (c0..c0 + 64).contains(&(x as i64)) && (c1..c1 + 8).contains(&(y as i64));
            let want = if inside_box {
                let o = (y as i64 - c1) as u64 * 128 + (xb - c0 as u64 * 2);
                shared[swizzled(o, 128) as usize]
            } else {
                t.bytes[i]
            };
            assert_eq!(got[i], want, "global byte ({xb}, {y})");
        }
    }
    assert_eq!(report.counters.bulk_copies, 1);
    let report = run(0);
    let f = report.findings.first().expect("a generic write read by the async proxy without a proxy fence");
    assert_eq!(f.kind, FindingKind::Race, "{f}");
    assert!(f.detail.contains("fence.proxy.async") && f.instruction.contains("cp.async.bulk.tensor"), "{f}");
}

#[test]
fn plain_bulk_copies_round_trip() {
    let dev = device();
    let mut rng = Rng::new(3);
    let data: Vec<u8> = (0..1024 + 48).map(|_| rng.next_u32() as u8).collect();
    let src = dev.upload(&data);
    let dst = dev.alloc_poisoned::<u8>(data.len());
    let params = dev.params("bulk_round_trip").ptr(src).ptr(dst).u32(data.len() as u32).finish();
    let report = dev.launch_with("bulk_round_trip", one_cta(32, 2048), &params, &CheckOptions::default());
    assert_no_findings(&report);
    assert_eq!(dev.download::<u8>(dst, data.len()), data);
    assert_eq!(report.counters.bulk_copies, 2);
    assert_eq!(report.counters.bulk_bytes, 2 * data.len() as u64);
}

#[test]
fn mbarrier_phases_arrive_drop_elect_and_cluster_registers() {
    let dev = device();
    let threads = 96u32;
    let phases = 5u32;
    let ctas = 3usize;
    let n = ctas * threads as usize;
    let out = dev.alloc_poisoned::<u32>(n * 11);
    let params = dev.params("mbarrier_phases").ptr(out).u32(phases).finish();
    let config = LaunchConfig { grid: [ctas as u32, 1, 1], block: [threads, 1, 1], dynamic_shared_bytes: 0 };
    let report = dev.launch_with("mbarrier_phases", config, &params, &CheckOptions::default());
    assert_no_findings(&report);
    let got = dev.download::<u32>(out, n * 11);
    for g in 0..n {
        let (cta, t) = (g / threads as usize, g % threads as usize);
        let o = &got[g * 11..g * 11 + 11];
        let lane = t as u32 % 32;
        assert_eq!(o[0], 0, "thread {t}: elect.sync's leader is lane 0");
        assert_eq!(o[1], (lane == 0) as u32, "thread {t}: elected");
        assert_eq!(
            &o[2..7],
            &[0, 1, 1, cta as u32, 0],
            "CTA {cta} thread {t}: ctarank, nctarank, cluster_nctaid, clusterid, getctarank"
        );
        assert_eq!(o[7], 1, "thread {t}: mapa to rank 0 is the identity");
        assert!(o[8] < threads, "thread {t}: pending count {} after its arrival", o[8]);
        assert_eq!(o[9], 1, "thread {t}: test_wait on the state of a completed phase");
        assert_eq!(o[10], phases + if t == 0 { 100 } else { 0 }, "thread {t}: phases seen complete");
    }
    // The last arrival of a phase sees none pending.
    assert!((0..threads as usize).any(|t| got[t * 11 + 8] == 0));
}

// ---------------------------------------------------------------- planted bugs

fn load_case() -> Load {
    Load { data_type: 1, box_w: 64, box_h: 8, swizzle: 3, c0: 8, c1: 4, oob_nan: false }
}

#[track_caller]
fn expect(report: &LaunchReport, kind: FindingKind, opcode: &str, detail: &str) {
    let listed: Vec<String> = report.findings.iter().map(|f| format!("  {f}")).collect();
    let f = report.findings.first().unwrap_or_else(|| panic!("expected a {kind:?} finding ({detail}), got none"));
    assert_eq!(f.kind, kind, "{}", listed.join("\n"));
    assert!(f.instruction.contains(opcode), "finding at `{}`, not a `{opcode}`:\n{}", f.instruction, listed.join("\n"));
    assert!(f.detail.contains(detail), "finding does not say `{detail}`:\n{}", listed.join("\n"));
}

#[test]
fn planted_mbarrier_and_tma_bugs_are_found() {
    let dev = device();
    let t = Tensor::random(100, 37, 2, 21);
    let l = load_case();
    let (_, map) = map_for(&dev, &t, &l);
    let shared = 16384;
    // Clean twins: mode 0 and 1 at an aligned offset.
    assert_no_findings(&launch_load(&dev, &map, &l, 0, 1024, None, shared).0);
    assert_no_findings(&launch_load(&dev, &map, &l, 1, 0, None, shared).0);

    let (r, _) = launch_load(&dev, &map, &l, 2, 0, None, shared);
    expect(&r, FindingKind::Race, "ld.shared", "TMA bytes not yet landed");
    let (r, _) = launch_load(&dev, &map, &l, 3, 0, None, shared);
    expect(&r, FindingKind::Deadlock, "mbarrier.try_wait", "can never complete");
    let (r, _) = launch_load(&dev, &map, &l, 4, 0, None, shared);
    expect(&r, FindingKind::DivergentSync, "mbarrier.arrive", "not initialised");
    let (r, _) = launch_load(&dev, &map, &l, 5, 0, None, shared);
    expect(&r, FindingKind::DivergentSync, "mbarrier.arrive", "more arrivals than the phase expects");
    let (r, _) = launch_load(&dev, &map, &l, 6, 0, None, shared);
    expect(&r, FindingKind::DivergentSync, "mbarrier.init", "re-initialised while in use");
    let (r, _) = launch_load(&dev, &map, &l, 0, 0, Some(map.box_bytes() as u32 - 16), shared);
    expect(&r, FindingKind::DivergentSync, "cp.async.bulk.tensor", "more transaction bytes");
    // A 128B-swizzled box needs a 1024-byte-aligned destination.
    let (r, _) = launch_load(&dev, &map, &l, 0, 128, None, shared);
    expect(&r, FindingKind::Misaligned, "cp.async.bulk.tensor", "not aligned to 1024");
    // The box runs past the end of shared memory.
    let (r, _) = launch_load(&dev, &map, &l, 0, 1024, None, 1024 + 512);
    expect(&r, FindingKind::OutOfBounds, "cp.async.bulk.tensor", "outside the CTA's");
}

// ---------------------------------------------------------------- through the driver

mod driver {
    use super::*;
    use cuda::context::{cuCtxSetCurrent, cuDevicePrimaryCtxRelease_v2, cuDevicePrimaryCtxRetain, cuInit};
    use cuda::launch::cuLaunchKernel;
    use cuda::launch_ex::{cuLaunchKernelEx, CUlaunchAttribute, CUlaunchConfig};
    use cuda::memory::{cuMemAlloc_v2, cuMemFree_v2, cuMemcpyDtoH_v2, cuMemcpyHtoD_v2};
    use cuda::module::{cuModuleGetFunction, cuModuleLoadData, cuModuleUnload};
    use cuda::result::*;
    use cuda::tensor_map::{cuTensorMapEncodeIm2col, cuTensorMapEncodeTiled, cuTensorMapReplaceAddress, CUtensorMap};
    use std::ffi::{c_void, CString};
    use std::ptr::{null, null_mut};

    fn ok(code: CUresult) {
        assert_eq!(code, CUDA_SUCCESS);
    }

    fn with_context(body: impl FnOnce()) {
        // The kernels are sm_90a PTX, which the driver loads only on a device
        // presenting compute capability 9.0 (it reads the variable at each
        // query; only these tests of this binary go through the driver).
        std::env::set_var("PTX_EMU_COMPUTE_CAPABILITY", "90");
        let mut context = null_mut();
        unsafe {
            ok(cuInit(0));
            ok(cuDevicePrimaryCtxRetain(&mut context, 0));
            ok(cuCtxSetCurrent(context));
        }
        body();
        unsafe { ok(cuDevicePrimaryCtxRelease_v2(0)) }
    }

    /// `cuTensorMapEncodeTiled` for a 2-D map over `address`.
    #[allow(clippy::too_many_arguments)]
    fn encode(
        map: &mut CUtensorMap,
        data_type: u32,
        address: u64,
        dims: [u64; 2],
        pitch: u64,
        boxes: [u32; 2],
        estrides: [u32; 2],
        swizzle: u32,
        oob: u32,
    ) -> CUresult {
        unsafe {
            cuTensorMapEncodeTiled(
                map,
                data_type,
                2,
                address as *mut c_void,
                dims.as_ptr(),
                [pitch].as_ptr(),
                boxes.as_ptr(),
                estrides.as_ptr(),
                0,
                swizzle,
                0,
                oob,
            )
        }
    }

    #[test]
    fn invalid_tensor_maps_are_refused() {
        with_context(|| {
            let mut map = CUtensorMap { opaque: [0; 16] };
            let a = 0x1000u64;
            ok(encode(&mut map, 9, a, [100, 50], 256, [64, 8], [1, 1], 3, 1));
            let bad = [
                ("address not 16-byte aligned", encode(&mut map, 9, a + 8, [100, 50], 256, [64, 8], [1, 1], 3, 0)),
                ("stride not a multiple of 16", encode(&mut map, 9, a, [100, 50], 200, [64, 8], [1, 1], 3, 0)),
                ("stride at 2^40", encode(&mut map, 9, a, [100, 50], 1 << 40, [64, 8], [1, 1], 3, 0)),
                ("box above 256", encode(&mut map, 9, a, [100, 500], 256, [64, 257], [1, 1], 3, 0)),
                ("box row wider than the swizzle", encode(&mut map, 9, a, [100, 50], 256, [64, 8], [1, 1], 2, 0)),
                ("box row not a multiple of 16 bytes", encode(&mut map, 9, a, [100, 50], 256, [12, 8], [1, 1], 0, 0)),
                ("element stride above 8", encode(&mut map, 9, a, [100, 50], 256, [64, 8], [1, 9], 3, 0)),
                ("zero dimension", encode(&mut map, 9, a, [0, 50], 256, [64, 8], [1, 1], 3, 0)),
                ("NaN fill of integers", encode(&mut map, 1, a, [100, 50], 256, [64, 8], [1, 1], 3, 1)),
                ("unknown data type", encode(&mut map, 99, a, [100, 50], 256, [64, 8], [1, 1], 3, 0)),
                ("unknown swizzle", encode(&mut map, 9, a, [100, 50], 256, [64, 8], [1, 1], 9, 0)),
            ];
            for (why, code) in bad {
                assert_eq!(code, CUDA_ERROR_INVALID_VALUE, "{why}");
            }
            let mut misaligned = [0u64; 17];
            let unaligned = (misaligned.as_mut_ptr() as usize + 8) as *mut CUtensorMap;
            let dims = [100u64, 50];
            let code = unsafe {
                cuTensorMapEncodeTiled(
                    unaligned,
                    9,
                    2,
                    a as *mut c_void,
                    dims.as_ptr(),
                    [256u64].as_ptr(),
                    [64u32, 8].as_ptr(),
                    [1u32, 1].as_ptr(),
                    0,
                    3,
                    0,
                    0,
                )
            };
            assert_eq!(code, CUDA_ERROR_INVALID_VALUE, "a map not 64-byte aligned");
            let code = unsafe {
                cuTensorMapEncodeIm2col(
                    &mut map,
                    9,
                    3,
                    a as *mut c_void,
                    null(),
                    null(),
                    null(),
                    null(),
                    1,
                    1,
                    null(),
                    0,
                    0,
                    0,
                    0,
                )
            };
            assert_eq!(code, CUDA_ERROR_NOT_SUPPORTED);
            unsafe {
                ok(cuTensorMapReplaceAddress(&mut map, 0x2000 as *mut c_void));
                assert_eq!(cuTensorMapReplaceAddress(&mut map, 0x2004 as *mut c_void), CUDA_ERROR_INVALID_VALUE);
                let mut garbage = CUtensorMap { opaque: [7; 16] };
                assert_eq!(cuTensorMapReplaceAddress(&mut garbage, 0x2000 as *mut c_void), CUDA_ERROR_INVALID_VALUE);
            }
        });
    }

    /// A 128B-swizzled box at a ragged corner through cuModuleLoadData,
    /// cuTensorMapEncodeTiled and cuLaunchKernel (the map as a 128-byte
    /// `__grid_constant__` parameter); then the same map re-pointed at a
    /// second copy of the tensor by cuTensorMapReplaceAddress and launched
    /// by cuLaunchKernelEx with a cluster-dimension attribute.
    #[test]
    fn tma_kernel_launched_through_the_driver() {
        let ptx = CString::new(common::compile_ptx_with(SOURCE, "sm_90a", &[])).unwrap();
        with_context(|| unsafe {
            let t = Tensor::random(100, 37, 2, 31);
            let (box_w, box_h, c0, c1) = (64u32, 8u32, 72i32, 33i32);
            let want = box_model(&t, box_w as u64, box_h as u64, c0 as i64, c1 as i64, 128, 0);
            let mut module = null_mut();
            ok(cuModuleLoadData(&mut module, ptx.as_ptr().cast()));
            let mut function = null_mut();
            ok(cuModuleGetFunction(&mut function, module, c"tma_load_2d".as_ptr()));
            let (mut tensor, mut other, mut out) = (0u64, 0u64, 0u64);
            ok(cuMemAlloc_v2(&mut tensor, t.bytes.len()));
            ok(cuMemAlloc_v2(&mut other, t.bytes.len()));
            ok(cuMemAlloc_v2(&mut out, want.len()));
            ok(cuMemcpyHtoD_v2(tensor, t.bytes.as_ptr().cast(), t.bytes.len()));
            let mut map = CUtensorMap { opaque: [0; 16] };
            ok(encode(&mut map, 1, tensor, [t.width, t.height], t.pitch, [box_w, box_h], [1, 1], 3, 0));
            for base in [tensor, other] {
                if base == other {
                    let shifted: Vec<u8> = t.bytes.iter().map(|b| b.wrapping_add(1)).collect();
                    ok(cuMemcpyHtoD_v2(other, shifted.as_ptr().cast(), shifted.len()));
                    ok(cuTensorMapReplaceAddress(&mut map, other as *mut c_void));
                }
                let (mut x, mut y) = (c0, c1);
                let (mut tx, mut bytes, mut dst_off, mut mode) = (want.len() as u32, want.len() as u32, 0u32, 0i32);
                let mut params: [*mut c_void; 8] = [
                    (&mut map as *mut CUtensorMap).cast(),
                    (&mut out as *mut u64).cast(),
                    (&mut x as *mut i32).cast(),
                    (&mut y as *mut i32).cast(),
                    (&mut tx as *mut u32).cast(),
                    (&mut bytes as *mut u32).cast(),
                    (&mut dst_off as *mut u32).cast(),
                    (&mut mode as *mut i32).cast(),
                ];
                if base == tensor {
                    ok(cuLaunchKernel(
                        function,
                        1,
                        1,
                        1,
                        128,
                        1,
                        1,
                        16384,
                        null_mut(),
                        params.as_mut_ptr(),
                        null_mut(),
                    ));
                } else {
                    // cuLaunchKernelEx with a cluster of one CTA, as CUTLASS's launcher does;
                    // clusters of more than 8 CTAs, or not dividing the grid, are refused.
                    let launch_ex = |grid: u32, cluster_x: u64, params: *mut *mut c_void| {
                        let mut attrs = [CUlaunchAttribute {
                            id: 4,
                            pad: [0; 4],
                            value: [cluster_x | 1 << 32, 1, 0, 0, 0, 0, 0, 0],
                        }];
                        let config = CUlaunchConfig {
                            grid_dim: [grid, 1, 1],
                            block_dim: [128, 1, 1],
                            shared_mem_bytes: 16384,
                            stream: null_mut(),
                            attrs: attrs.as_mut_ptr(),
                            num_attrs: 1,
                        };
                        cuLaunchKernelEx(&config, function, params, null_mut())
                    };
                    assert_eq!(launch_ex(16, 16, params.as_mut_ptr()), 912, "CUDA_ERROR_INVALID_CLUSTER_SIZE");
                    assert_eq!(launch_ex(2, 3, params.as_mut_ptr()), 912, "CUDA_ERROR_INVALID_CLUSTER_SIZE");
                    ok(launch_ex(1, 1, params.as_mut_ptr()));
                }
                let mut got = vec![0u8; want.len()];
                ok(cuMemcpyDtoH_v2(got.as_mut_ptr().cast(), out, got.len()));
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    // Out-of-bounds bytes stay zero; in-bounds ones come from the current base.
                    let w = if base == other && box_byte_inside(&t, i as u64, box_w as u64, c0, c1) {
                        w.wrapping_add(1)
                    } else {
                        *w
                    };
                    assert_eq!(*g, w, "shared byte {i} (base {base:#x})");
                }
            }
            for p in [tensor, other, out] {
                ok(cuMemFree_v2(p));
            }
            ok(cuModuleUnload(module));
        });
    }

    /// Whether shared byte `s` of a 128B-swizzled box holds an in-bounds element.
    fn box_byte_inside(t: &Tensor, s: u64, box_w: u64, c0: i32, c1: i32) -> bool {
        let o = swizzled(s, 128);
        let (r, x) = (o / (box_w * t.esize), (o % (box_w * t.esize)) / t.esize);
        let (gx, gy) = (c0 as i64 + x as i64, c1 as i64 + r as i64);
        gx >= 0 && gy >= 0 && (gx as u64) < t.width && (gy as u64) < t.height
    }
}

/// A producer warp and two consumer warps through a 3-stage ring of full
/// and empty barriers (the ring wraps, the parities flip), the last box
/// ragged: every box's sum right, no finding.
#[test]
fn warp_specialized_pipeline_through_a_stage_ring() {
    let dev = device();
    let (tiles, height) = (8u32, 8 * 8 - 3);
    let mut rng = Rng::new(41);
    let words: Vec<u32> = (0..32 * height).map(|_| rng.next_u32() >> 8).collect();
    let addr = dev.upload(&words);
    let map = TensorMap::tiled(2, 2, addr, &[32, height as u64], &[128], &[32, 8], &[1, 1], 0, 3, 2, 0).unwrap();
    let out = dev.upload(&vec![0u32; tiles as usize]);
    let params = dev.params("tma_pipeline_sum").bytes(&map.encode()).ptr(out).i32(tiles as i32).finish();
    let report = dev.launch_with("tma_pipeline_sum", one_cta(96, 3 * 1024), &params, &CheckOptions::default());
    assert_no_findings(&report);
    let got = dev.download::<u32>(out, tiles as usize);
    for (k, got) in got.iter().enumerate() {
        let rows = (k * 8..(k * 8 + 8).min(height as usize)).collect::<Vec<_>>();
        let want = rows.iter().flat_map(|r| &words[r * 32..r * 32 + 32]).fold(0u32, |a, w| a.wrapping_add(*w));
        assert_eq!(*got, want, "box {k}");
    }
    assert_eq!(report.counters.bulk_copies, tiles as u64);
}

/// ldmatrix reads a landed box (each lane's fragment: row lane / 4, columns
/// 2 (lane % 4) and the next); without the barrier wait the same read is a
/// "TMA bytes not yet landed" finding at the ldmatrix.
#[test]
fn ldmatrix_of_a_tma_box_and_its_planted_early_read() {
    let dev = device();
    let t = Tensor::random(100, 37, 2, 51);
    let (c0, c1) = (20i32, 9i32);
    let (_, map) = map_for(&dev, &t, &Load { data_type: 1, box_w: 64, box_h: 8, swizzle: 0, c0, c1, oob_nan: false });
    let run = |wait: i32| {
        let out = dev.alloc_poisoned::<u32>(32);
        let params = dev.params("tma_ldmatrix").bytes(&map.encode()).ptr(out).i32(c0).i32(c1).i32(wait).finish();
        (dev.launch_with("tma_ldmatrix", one_cta(32, 2048), &params, &CheckOptions::default()), out)
    };
    let (report, out) = run(1);
    assert_no_findings(&report);
    let element = |r: u64, x: u64| {
        let at = ((c1 as u64 + r) * t.pitch + (c0 as u64 + x) * 2) as usize;
        u16::from_le_bytes([t.bytes[at], t.bytes[at + 1]]) as u32
    };
    for (lane, got) in dev.download::<u32>(out, 32).iter().enumerate() {
        let (r, c) = (lane as u64 / 4, 2 * (lane as u64 % 4));
        assert_eq!(*got, element(r, c) | element(r, c + 1) << 16, "lane {lane}");
    }
    let (report, _) = run(0);
    expect(&report, FindingKind::Race, "ldmatrix", "TMA bytes not yet landed");
}

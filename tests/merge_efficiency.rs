//! Counted efficiency of the merge kernel on the emulator: what it moves and
//! how, against the minimum. (On a GPU there are no counters: skipped.)

mod device;

use device::counter;
use fused_lora::{Adapter, Direction, FiniteCheck, LoraDType};
use half::bf16;

/// One tile-aligned layer (the tile is 64 × 128, the rank chunk 32).
const N: usize = 128;
const K: usize = 256;
const R: usize = 32;

/// `sizeof(LoraMergeLayer)`: the per-layer descriptor every CTA reads.
const DESCRIPTOR_BYTES: u64 = 56;

/// Merges one layer (unchecked: a single launch) and returns its counters.
fn merge_counters<T: LoraDType>() -> Option<serde_json::Value> {
    let dev = device::device()?;
    if !device::is_emulator() {
        eprintln!("SKIPPED: counters exist only on the emulator");
        return None;
    }
    let mut w = dev.stream.clone_htod(&vec![T::from_f32(0.5); N * K]).unwrap();
    let a = dev.stream.clone_htod(&vec![T::from_f32(0.25); R * K]).unwrap();
    let b = dev.stream.clone_htod(&vec![T::from_f32(0.125); N * R]).unwrap();
    let mut layers = [fused_lora::MergeLayer {
        weight: w.as_view_mut(),
        n: N,
        k: K,
        adapter: Adapter { a: a.as_view(), b: b.as_view(), rank: R, scale: 2.0 },
    }];
    dev.kernels.merge(&dev.stream, &mut layers, Direction::Merge, FiniteCheck::Unchecked).unwrap();
    let counters = device::last_launch_counters().expect("the emulator reports every launch");
    assert!(counters["kernel"].as_str().unwrap().starts_with("lora_merge_"), "{counters}");
    Some(counters)
}

fn check_traffic<T: LoraDType>() {
    let Some(c) = merge_counters::<T>() else { return };
    let elem = T::DTYPE.size_bytes() as u64;
    let (n, k, r) = (N as u64, K as u64, R as u64);

    // W is written exactly once and nothing else is written.
    assert_eq!(counter(&c, "global_bytes_written"), n * k * elem, "{c}");
    // W, A and B are each read, plus the layer descriptor; nothing twice counts here
    // (distinct bytes), so this is the DRAM floor of the operation.
    let inputs = (n * k + r * k + n * r) * elem;
    let read = counter(&c, "global_bytes_read");
    assert!(read >= inputs && read <= inputs + DESCRIPTOR_BYTES, "read {read} bytes, inputs are {inputs}: {c}");

    // Coalescing: a warp's request covers 32 consecutive elements (128 bytes in
    // f32, 64 in f16/bf16), i.e. 4 or 2 sectors of 32 bytes; descriptor loads are
    // warp-uniform (1 sector). No request may touch more.
    let sectors_per_request = 32 * elem / 32;
    let loads = counter(&c, "global_load_requests");
    assert!(counter(&c, "global_load_sectors") <= sectors_per_request * loads, "{c}");
    let stores = counter(&c, "global_store_requests");
    assert_eq!(counter(&c, "global_store_sectors"), sectors_per_request * stores, "{c}");

    // Shared memory: A-tile reads hit 32 distinct banks, B reads are broadcasts.
    assert_eq!(counter(&c, "shared_bank_conflicts"), 0, "{c}");
    // The update is f32 FMA work: no tensor-core instructions.
    assert!(c["tensor_instructions"].as_object().is_some_and(|m| m.is_empty()), "{c}");
}

#[test]
fn f32_merge_moves_the_minimum_coalesced() {
    check_traffic::<f32>();
}

#[test]
fn bf16_merge_moves_the_minimum_coalesced() {
    check_traffic::<bf16>();
}

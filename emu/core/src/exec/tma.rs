//! Bulk copies (the Tensor Memory Accelerator): `cp.async.bulk.tensor` boxes
//! between global memory, described by a `CUtensorMap`, and shared memory in
//! the map's swizzle pattern, with out-of-bounds elements filled (zero or
//! NaN) on loads and skipped on stores; plain `cp.async.bulk` byte ranges.
//! Loads complete their bytes on the mbarrier named by the instruction
//! (`async_proxy`); everything lands when issued.

use super::cta::{generic_space, Cta};
use super::Stop;
use crate::findings::FindingKind;
use crate::ptx::ir::{AsyncOp, Inst, Space};
use crate::tensor_map::{TensorMap, TENSOR_MAP_BYTES};

/// The bit pattern an out-of-bounds element reads as with the NaN fill.
fn nan_bits(esize: u32) -> u64 {
    match esize {
        2 => 0x7fff,
        4 => 0x7fff_ffff,
        _ => 0x7fff_ffff_ffff_ffff,
    }
}

impl Cta<'_> {
    /// The tensor map at generic address `raw` (a kernel parameter or global memory).
    fn tensor_map(&mut self, pc: u32, tid: u32, raw: u64) -> Result<TensorMap, Stop> {
        let sp = generic_space(raw);
        if !matches!(sp, Space::Param | Space::Global) || raw % 64 != 0 {
            return Err(self.report(
                FindingKind::Misaligned,
                pc,
                tid,
                raw,
                "tensor map operand is not a 64-byte-aligned kernel parameter or global address".into(),
            ));
        }
        let off = raw - sp.window();
        let mut bytes = [0u8; TENSOR_MAP_BYTES];
        for (i, chunk) in bytes.chunks_mut(8).enumerate() {
            let v = self.read(pc, tid, sp, off + 8 * i as u64, 8)?;
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        TensorMap::decode(&bytes).ok_or_else(|| {
            self.report(
                FindingKind::Trap,
                pc,
                tid,
                raw,
                "the tensor map operand holds no map made by cuTensorMapEncodeTiled".into(),
            )
        })
    }

    /// Checks a bulk copy's shared range: inside the CTA's shared memory and aligned.
    fn bulk_shared_range(&self, pc: u32, tid: u32, off: u64, len: u64, align: u64, what: &str) -> Result<(), Stop> {
        if off % align != 0 {
            return Err(self.report(
                FindingKind::Misaligned,
                pc,
                tid,
                off,
                format!("{what}: shared address {off:#x} is not aligned to {align} bytes"),
            ));
        }
        if off.checked_add(len).map_or(true, |e| e > self.shared.len() as u64) {
            return Err(self.report(
                FindingKind::OutOfBounds,
                pc,
                tid,
                off,
                format!(
                    "{what}: {len} bytes at shared offset {off:#x} run outside the CTA's {} bytes of shared memory",
                    self.shared.len()
                ),
            ));
        }
        Ok(())
    }

    /// Writes one byte of a bulk copy into shared memory, published by the
    /// phase `write` (an index into `asy.writes`) completes.
    #[inline]
    fn bulk_store_shared(&mut self, off: usize, byte: u8, write: u32) {
        self.shared[off] = byte;
        self.shared_init[off] = true;
        self.asy.landed[off] = write + 1;
        if !self.asy.generic.is_empty() {
            self.asy.generic[off] = (0, 0);
        }
    }

    /// Registers a bulk copy into shared memory completing on mbarrier `mbar`.
    fn new_bulk_write(&mut self, mbar: usize, pc: u32) -> u32 {
        if self.asy.landed.is_empty() {
            self.asy.landed.resize(self.shared.len(), 0);
        }
        self.asy.writes.push((mbar as u32, self.asy.mbars[mbar].seq, pc));
        self.asy.writes.len() as u32 - 1
    }

    /// A shared byte the async proxy reads must not hold a generic-proxy
    /// write its writer has not fenced (`fence.proxy.async`).
    fn check_proxy_fence(&self, pc: u32, tid: u32, off: usize) -> Result<(), Stop> {
        if let Some(&(writer, epoch)) = self.asy.generic.get(off) {
            if writer != 0 && self.asy.fences[writer as usize - 1] <= epoch {
                return Err(self.report(
                    FindingKind::Race,
                    pc,
                    tid,
                    off as u64,
                    format!(
                        "bulk copy reads shared byte {off:#x}, which thread {:?} wrote through the generic proxy without a fence.proxy.async after it",
                        self.thread_xyz(writer - 1)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Reads a shared byte for a bulk copy out of shared memory.
    fn bulk_read_shared(&self, pc: u32, tid: u32, off: usize) -> Result<u8, Stop> {
        self.check_proxy_fence(pc, tid, off)?;
        let v = self.shared[off];
        if self.l.opts.initcheck {
            return Ok(self.unwritten_shared(pc, tid, off, 1, u64::from(v), "bulk copy read")? as u8);
        }
        Ok(v)
    }

    fn count_bulk(&mut self, global_bytes: &[(u64, u64)], shared_bytes: u64, store: bool) {
        let mut sectors: Vec<u64> =
            global_bytes.iter().flat_map(|&(a, n)| (a >> 5)..=((a + n.max(1) - 1) >> 5)).collect();
        sectors.sort_unstable();
        sectors.dedup();
        if store {
            self.stats.global_store_requests += 1;
            self.stats.global_store_sectors += sectors.len() as u64;
        } else {
            self.stats.global_load_requests += 1;
            self.stats.global_load_sectors += sectors.len() as u64;
        }
        // The async proxy moves 128 bytes of shared memory per wavefront.
        self.stats.shared_requests += 1;
        self.stats.shared_wavefronts += shared_bytes.div_ceil(128);
        self.stats.bulk_copies += 1;
        self.stats.bulk_bytes += shared_bytes;
    }

    /// One lane's bulk copy.
    pub(super) fn bulk_copy(&mut self, w: usize, pc: u32, l: usize, inst: &Inst, op: AsyncOp) -> Result<(), Stop> {
        let tid = self.tid_of(w, l);
        match op {
            AsyncOp::TensorLoad { dims } | AsyncOp::TensorStore { dims } => {
                let load = matches!(op, AsyncOp::TensorLoad { .. });
                let (map_opd, coord_opd, smem_opd) =
                    if load { (&inst.s[1], &inst.s[2], &inst.s[0]) } else { (&inst.s[0], &inst.s[1], &inst.s[2]) };
                let map = self.tensor_map(pc, tid, self.val(w, map_opd, l))?;
                if map.interleave != 0 {
                    return Err(self.report(
                        FindingKind::Trap,
                        pc,
                        tid,
                        0,
                        "bulk tensor copies through interleaved tensor maps are not supported".into(),
                    ));
                }
                if map.rank != dims as u32 {
                    return Err(self.report(
                        FindingKind::Trap,
                        pc,
                        tid,
                        0,
                        format!("a .{dims}d bulk tensor copy with a tensor map of rank {}", map.rank),
                    ));
                }
                let mut coords = [0i64; 5];
                for (d, c) in coords.iter_mut().enumerate().take(dims as usize) {
                    *c = self.val(w, Cta::elem(coord_opd, d), l) as u32 as i32 as i64;
                }
                let what = if load { "cp.async.bulk.tensor load" } else { "cp.async.bulk.tensor store" };
                let smem = self.shared_offset(pc, tid, self.val(w, smem_opd, l), what)?;
                let bytes = map.box_bytes();
                self.bulk_shared_range(pc, tid, smem, bytes, map.swizzle.shared_alignment() as u64, what)?;
                let mbar = if load {
                    let raw = self.val(w, &inst.s[3], l);
                    let off = self.shared_offset(pc, tid, raw, "mbarrier")? as u32;
                    Some(self.valid_mbar(pc, tid, off, "complete_tx of a bulk copy")?)
                } else {
                    None
                };
                let write = mbar.map(|m| self.new_bulk_write(m, pc));
                let global = self.tensor_box(pc, tid, &map, &coords, smem as u32, write)?;
                self.count_bulk(&global, bytes, !load);
                if let Some(m) = mbar {
                    self.mbar_tx(pc, tid, m, bytes as i64, true)?;
                }
            }
            AsyncOp::BulkLoad { from_shared } => {
                let dst = self.shared_offset(pc, tid, self.val(w, &inst.s[0], l), "cp.async.bulk destination")?;
                let src = self.val(w, &inst.s[1], l);
                let size = self.val(w, &inst.s[2], l);
                let what = "cp.async.bulk";
                if size % 16 != 0 || src % 16 != 0 {
                    return Err(self.report(
                        FindingKind::Misaligned,
                        pc,
                        tid,
                        src,
                        format!("{what}: size {size} and source address must be multiples of 16"),
                    ));
                }
                self.bulk_shared_range(pc, tid, dst, size, 16, what)?;
                let off = self.shared_offset(pc, tid, self.val(w, &inst.s[3], l), "mbarrier")? as u32;
                let mbar = self.valid_mbar(pc, tid, off, "complete_tx of a bulk copy")?;
                let write = self.new_bulk_write(mbar, pc);
                let src = if from_shared {
                    let s = self.shared_offset(pc, tid, src, what)?;
                    self.bulk_shared_range(pc, tid, s, size, 16, what)?;
                    s
                } else {
                    src
                };
                for i in 0..size {
                    let b = if from_shared {
                        self.bulk_read_shared(pc, tid, (src + i) as usize)?
                    } else {
                        self.read(pc, tid, Space::Global, src + i, 1)? as u8
                    };
                    self.bulk_store_shared((dst + i) as usize, b, write);
                }
                let global = if from_shared { vec![] } else { vec![(src, size)] };
                self.count_bulk(&global, size, false);
                self.mbar_tx(pc, tid, mbar, size as i64, true)?;
            }
            AsyncOp::BulkStore => {
                let dst = self.val(w, &inst.s[0], l);
                let src = self.shared_offset(pc, tid, self.val(w, &inst.s[1], l), "cp.async.bulk source")?;
                let size = self.val(w, &inst.s[2], l);
                let what = "cp.async.bulk store";
                if size % 16 != 0 || dst % 16 != 0 {
                    return Err(self.report(
                        FindingKind::Misaligned,
                        pc,
                        tid,
                        dst,
                        format!("{what}: size {size} and destination address must be multiples of 16"),
                    ));
                }
                self.bulk_shared_range(pc, tid, src, size, 16, what)?;
                for i in 0..size {
                    let b = self.bulk_read_shared(pc, tid, (src + i) as usize)?;
                    self.write(pc, tid, Space::Global, dst + i, 1, b as u64)?;
                }
                self.count_bulk(&[(dst, size)], size, true);
            }
            _ => unreachable!("not a bulk copy"),
        }
        Ok(())
    }

    /// Moves one box between global memory and shared memory at `smem`
    /// (a load when `write` names the bulk write that lands it, else a
    /// store). Returns the global byte ranges touched.
    fn tensor_box(
        &mut self,
        pc: u32,
        tid: u32,
        map: &TensorMap,
        coords: &[i64; 5],
        smem: u32,
        write: Option<u32>,
    ) -> Result<Vec<(u64, u64)>, Stop> {
        let rank = map.rank as usize;
        let esize = map.element_bytes();
        let counts: Vec<u64> = (0..rank).map(|d| map.box_elements(d) as u64).collect();
        let total: u64 = counts.iter().product();
        let mut global = Vec::new();
        let mut idx = [0u64; 5];
        for e in 0..total {
            let mut rest = e;
            for d in 0..rank {
                idx[d] = rest % counts[d];
                rest /= counts[d];
            }
            let mut inside = true;
            let mut addr = map.global_address;
            for d in 0..rank {
                let step = if d == 0 { 1 } else { map.element_strides[d] as i64 };
                let c = coords[d] + idx[d] as i64 * step;
                if c < 0 || c as u64 >= map.global_dim[d] {
                    inside = false;
                    break;
                }
                let stride = if d == 0 { esize as u64 } else { map.global_strides[d - 1] };
                addr = addr.wrapping_add(c as u64 * stride);
            }
            let at = map.swizzle.apply(smem + (e * esize as u64) as u32) as usize;
            match write {
                Some(wr) => {
                    let v = if inside {
                        global.push((addr, esize as u64));
                        self.read(pc, tid, Space::Global, addr, esize)?
                    } else if map.oob_nan {
                        nan_bits(esize)
                    } else {
                        0
                    };
                    for k in 0..esize as usize {
                        self.bulk_store_shared(at + k, (v >> (8 * k)) as u8, wr);
                    }
                }
                None if inside => {
                    let mut v = 0u64;
                    for k in 0..esize as usize {
                        v |= (self.bulk_read_shared(pc, tid, at + k)? as u64) << (8 * k);
                    }
                    global.push((addr, esize as u64));
                    self.write(pc, tid, Space::Global, addr, esize, v)?;
                }
                None => {}
            }
        }
        Ok(global)
    }

    /// A read of shared bytes that a bulk copy wrote: the reading thread
    /// must have seen the phase that publishes them complete.
    pub(super) fn check_landed(&self, pc: u32, tid: u32, off: u64, len: u64) {
        if !self.l.opts.racecheck {
            return;
        }
        for b in off..(off + len).min(self.asy.landed.len() as u64) {
            let i = self.asy.landed[b as usize];
            if i == 0 {
                continue;
            }
            let (mbar, seq, copy_pc) = self.asy.writes[i as usize - 1];
            let m = &self.asy.mbars[mbar as usize];
            if seq != u64::MAX && m.observed[tid as usize] <= seq {
                let detail = format!(
                    "TMA bytes not yet landed: shared byte {b:#x} is read before this thread saw phase {seq} of the mbarrier at shared offset {:#x} complete, the phase that publishes the bulk copy at PTX line {} (`{}`)",
                    m.off,
                    self.line_of(copy_pc),
                    self.l.module.line_text(self.line_of(copy_pc)).trim()
                );
                self.report_race(pc, copy_pc, tid, b, detail);
                return;
            }
        }
    }
}

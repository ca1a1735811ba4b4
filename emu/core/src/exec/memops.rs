//! Memory instructions of a CTA: loads, stores, atomics and async copies in
//! every state space, with memcheck, initcheck and racecheck on each access
//! and the request/sector/wavefront counting of each warp instruction.

use super::cta::{generic_space, Cta, Lanes, PendingCopy};
use super::race::Conflict;
use super::Stop;
use crate::findings::FindingKind;
use crate::numerics::{self, FloatOp, Rounding};
use crate::ptx::ir::*;
use crate::types::ScalarType;

/// The concrete space and space-relative address of an access.
pub(super) fn resolve(space: Space, a: u64) -> (Space, u64) {
    match space {
        Space::Generic => {
            let s = generic_space(a);
            (s, a - s.window())
        }
        Space::Const => (Space::Global, a),
        s => (s, a),
    }
}

fn space_name(s: Space) -> &'static str {
    match s {
        Space::Global | Space::Const | Space::Generic => "global",
        Space::Shared => "shared",
        Space::Local => "local",
        Space::Param => "param",
    }
}

/// Distinct 32-byte sectors touched by the `(addr, len)` accesses.
fn count_sectors(acc: &mut [u64]) -> u64 {
    // Entries are sector ids already; sort and count distinct.
    acc.sort_unstable();
    let mut n = 0;
    let mut last = u64::MAX;
    for &s in acc.iter() {
        if s != last {
            n += 1;
            last = s;
        }
    }
    n
}

/// Shared-memory wavefronts of one warp request: accesses are packed as
/// `addr | len << 32 | lane << 40`. Wider accesses are served in phases
/// (half-warps for 8 bytes, quarter-warps for 16), each needing as many
/// wavefronts as the most distinct 4-byte words any one of the 32 banks holds.
/// Returns `(wavefronts, ideal)`.
pub(super) fn shared_wavefronts(acc: &[u64]) -> (u64, u64) {
    let mut total = 0;
    let mut ideal = 0;
    let len = acc.iter().map(|a| (a >> 32) & 0xff).max().unwrap_or(4);
    let lanes_per_phase = match len {
        0..=4 => 32,
        5..=8 => 16,
        _ => 8,
    };
    // At most 32 lanes × 4 words per phase; kept on the stack (hot path).
    let mut words = [0u64; 128];
    for phase in 0..(32 / lanes_per_phase) {
        let mut n = 0;
        for &a in acc {
            let lane = ((a >> 40) & 0xff) as usize;
            if lane / lanes_per_phase != phase {
                continue;
            }
            let addr = a & 0xffff_ffff;
            let l = (a >> 32) & 0xff;
            for wd in (addr / 4)..=((addr + l.max(1) - 1) / 4) {
                if n < words.len() {
                    words[n] = wd;
                    n += 1;
                }
            }
        }
        if n == 0 {
            continue;
        }
        let ws = &mut words[..n];
        ws.sort_unstable();
        let mut per_bank = [0u8; 32];
        let mut last = u64::MAX;
        for &wd in ws.iter() {
            if wd != last {
                per_bank[(wd % 32) as usize] += 1;
                last = wd;
            }
        }
        total += per_bank.iter().copied().max().unwrap_or(1).max(1) as u64;
        ideal += 1;
    }
    (total, ideal)
}

fn atom_apply(op: AtomOp, ty: ScalarType, old: u64, b: u64, c: u64) -> u64 {
    let mut carry = 0;
    match op {
        AtomOp::Add => match ty {
            ScalarType::F32 => (f32::from_bits(old as u32) + f32::from_bits(b as u32)).to_bits() as u64,
            ScalarType::F64 => (f64::from_bits(old) + f64::from_bits(b)).to_bits(),
            ScalarType::F16 | ScalarType::F16x2 | ScalarType::Bf16 | ScalarType::Bf16x2 => {
                numerics::half_op(FloatOp::Add, ty, Some(Rounding::Rn), false, false, old as u32, b as u32, 0) as u64
            }
            _ => old.wrapping_add(b),
        },
        AtomOp::Min | AtomOp::Max if ty == ScalarType::F32 => {
            let (x, y) = (f32::from_bits(old as u32), f32::from_bits(b as u32));
            let r = if op == AtomOp::Min { x.min(y) } else { x.max(y) };
            r.to_bits() as u64
        }
        AtomOp::Min => super::arith::int_op(IntOp::Min, ty, old, b, 0, &mut carry),
        AtomOp::Max => super::arith::int_op(IntOp::Max, ty, old, b, 0, &mut carry),
        AtomOp::Inc => {
            if (old as u32) >= (b as u32) {
                0
            } else {
                old + 1
            }
        }
        AtomOp::Dec => {
            if old as u32 == 0 || (old as u32) > (b as u32) {
                b
            } else {
                old - 1
            }
        }
        AtomOp::And => old & b,
        AtomOp::Or => old | b,
        AtomOp::Xor => old ^ b,
        AtomOp::Exch => b,
        AtomOp::Cas => {
            if old == b & super::arith::mask(super::arith::bits_of(ty)) {
                c
            } else {
                old
            }
        }
    }
}

impl<'l> Cta<'l> {
    pub(super) fn misaligned_at(&self, pc: u32, tid: u32, sp: Space, addr: u64, len: u32) -> Result<(), Stop> {
        self.misaligned(pc, tid, sp, addr, len)
    }

    fn misaligned(&self, pc: u32, tid: u32, sp: Space, addr: u64, len: u32) -> Result<(), Stop> {
        if self.l.opts.memcheck && len > 1 && addr % len as u64 != 0 {
            return Err(self.report(
                FindingKind::Misaligned,
                pc,
                tid,
                addr,
                format!("{}-byte {} access at an address not aligned to {len}", len, space_name(sp)),
            ));
        }
        Ok(())
    }

    /// The allocation index and offset for a global access, or `None` when
    /// memcheck is off and the access is invalid (it is then skipped).
    fn global_locate(&mut self, pc: u32, tid: u32, addr: u64, len: u64) -> Result<Option<(usize, u64)>, Stop> {
        let allocs = &self.l.allocs;
        let hit = |i: usize| {
            allocs.get(i).is_some_and(|a| {
                addr >= a.base && addr.wrapping_add(len) <= a.base + a.size && addr.checked_add(len).is_some()
            })
        };
        if !hit(self.cache) {
            let i = allocs.partition_point(|a| a.base <= addr).wrapping_sub(1);
            if !hit(i) {
                if !self.l.opts.memcheck {
                    return Ok(None);
                }
                let near = self.l.mem.describe_outside(addr, len);
                return Err(self.report(
                    FindingKind::OutOfBounds,
                    pc,
                    tid,
                    addr,
                    format!("{len}-byte global access outside every live allocation; {near}"),
                ));
            }
            self.cache = i;
        }
        Ok(Some((self.cache, addr - allocs[self.cache].base)))
    }

    fn shared_range(&self, pc: u32, tid: u32, sp: Space, off: u64, len: u64, limit: usize) -> Result<bool, Stop> {
        if off.checked_add(len).is_some_and(|e| e <= limit as u64) {
            return Ok(true);
        }
        if !self.l.opts.memcheck {
            return Ok(false);
        }
        Err(self.report(
            FindingKind::OutOfBounds,
            pc,
            tid,
            off,
            format!("{len}-byte {} access at offset {off:#x} outside the {limit} bytes declared", space_name(sp)),
        ))
    }

    /// Racecheck for an access of `len` shared bytes at `off`, a read, or a
    /// write of `stored` (called before the bytes are stored): each hazard
    /// is reported once per pair of instructions (the launch goes on, as
    /// compute-sanitizer's racecheck does, and fails at its end). A byte
    /// written with the value it already holds races with no earlier write
    /// (see [`RaceShadow::access`]).
    fn race_check(&mut self, pc: u32, tid: u32, off: u64, len: u64, stored: Option<&[u8]>) -> Result<(), Stop> {
        if !self.l.opts.racecheck {
            return Ok(());
        }
        let now = self.race.stamp(tid, pc, self.warps[(tid / 32) as usize].wsync);
        let write = stored.is_some();
        let mut found: Vec<(u64, Conflict)> = Vec::new();
        for b in off..off + len {
            let i = b as usize;
            let same_value =
                stored.is_some_and(|v| self.shared_init[i] && v.get((b - off) as usize) == Some(&self.shared[i]));
            self.race.access(i, now, write, same_value, &mut |c| {
                if !found.iter().any(|(_, f)| f == &c) {
                    found.push((b, c));
                }
            });
        }
        for (b, c) in found {
            self.report_conflict(pc, tid, off, b, write, c);
        }
        Ok(())
    }

    /// Reports the conflict `c` of an access by `tid` at `pc` (at `off`) to byte `b`.
    fn report_conflict(&self, pc: u32, tid: u32, off: u64, b: u64, write: bool, c: Conflict) {
        {
            let (other_pc, detail) = match c {
                Conflict::With { other, other_wrote } => (
                    other.pc,
                    format!(
                        "shared {} of byte {b:#x} races with a {} at PTX line {} (`{}`) by thread {:?}, not ordered by a barrier or a warp synchronisation",
                        if write { "write" } else { "read" },
                        if other_wrote { "write" } else { "read" },
                        self.line_of(other.pc),
                        self.l.module.line_text(self.line_of(other.pc)).trim(),
                        self.thread_xyz(other.tid)
                    ),
                ),
                Conflict::AsyncPending { other, pc: copy_pc } => (
                    copy_pc,
                    format!(
                        "shared byte {b:#x} is accessed before the cp.async at PTX line {} (`{}`) of thread {:?} that writes it was waited for",
                        self.line_of(copy_pc),
                        self.l.module.line_text(self.line_of(copy_pc)).trim(),
                        self.thread_xyz(other)
                    ),
                ),
            };
            self.report_race(pc, other_pc, tid, off, detail);
        }
    }

    /// Racecheck for the shared reads of one warp instruction, `(lane, addr,
    /// len)` each, after their values were read: lanes reading the same
    /// bytes are one visit of each byte's history (a broadcast read by 32
    /// lanes costs what one lane's does), as [`RaceShadow::read_lanes`] says.
    fn race_check_warp_reads(&mut self, w: usize, pc: u32, reads: &[(usize, u64, u64)]) {
        // Aligned accesses of one size are equal or disjoint: group by
        // address (at most 32 groups, on the stack: this is the hot path).
        let mut groups = [(0u64, 0u64, 0u32); 32];
        let mut n = 0;
        for &(lane, addr, len) in reads {
            match groups[..n].iter_mut().find(|g| g.0 == addr && g.1 == len) {
                Some(g) => g.2 |= 1 << lane,
                None => {
                    groups[n] = (addr, len, 1 << lane);
                    n += 1;
                }
            }
        }
        let wsync = self.warps[w].wsync;
        let mut found: Vec<(u64, Conflict, u32)> = Vec::new();
        for &(addr, len, lanes) in &groups[..n] {
            let now = self.race.stamp(self.tid_of(w, lanes.trailing_zeros() as usize), pc, wsync);
            for b in addr..addr + len {
                self.race.read_lanes(b as usize, now, lanes, &mut |c, tid| {
                    if !found.iter().any(|(_, f, _)| f == &c) {
                        found.push((b, c, tid));
                    }
                });
            }
        }
        for (b, c, tid) in found {
            self.report_conflict(pc, tid, b, b, false, c);
        }
    }

    /// Reads `len` ≤ 8 bytes at a resolved address.
    #[inline]
    pub(super) fn read(&mut self, pc: u32, tid: u32, sp: Space, addr: u64, len: u32) -> Result<u64, Stop> {
        self.read_checked(pc, tid, sp, addr, len, true, true)
    }

    /// `read`, with the shared-memory initcheck optional (see `Op::Ldmatrix`)
    /// and the shared-memory racecheck optional (done for the whole warp by
    /// the caller).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn read_checked(
        &mut self,
        pc: u32,
        tid: u32,
        sp: Space,
        addr: u64,
        len: u32,
        shared_initcheck: bool,
        shared_racecheck: bool,
    ) -> Result<u64, Stop> {
        let n = len as u64;
        match sp {
            Space::Global | Space::Const | Space::Generic => {
                let Some((i, off)) = self.global_locate(pc, tid, addr, n)? else {
                    return Ok(0);
                };
                let a = &self.l.allocs[i];
                if self.l.opts.initcheck && !a.is_init(off, n) {
                    return Err(self.report(
                        FindingKind::Uninitialized,
                        pc,
                        tid,
                        addr,
                        format!(
                            "{len}-byte global read of bytes never written (allocation [{:#x}, +{}))",
                            a.base, a.size
                        ),
                    ));
                }
                self.l.touch(i, off, n, false);
                Ok(a.load(off, len))
            }
            Space::Shared => {
                if !self.shared_range(pc, tid, sp, addr, n, self.shared.len())? {
                    return Ok(0);
                }
                if shared_racecheck {
                    self.race_check(pc, tid, addr, n, None)?;
                }
                if self.cl.shadow.is_some() {
                    self.cluster_race(pc, tid, self.cl.rank, addr, n, false);
                }
                if !self.asy.landed.is_empty() {
                    self.check_landed(pc, tid, addr, n);
                }
                let o = addr as usize;
                let v = le(&self.shared[o..o + len as usize]);
                if shared_initcheck && self.l.opts.initcheck {
                    return self.unwritten_shared(pc, tid, o, len as usize, v, "shared read");
                }
                Ok(v)
            }
            Space::Local => {
                let lb = self.k.info.local_bytes as usize;
                if !self.shared_range(pc, tid, sp, addr, n, lb)? {
                    return Ok(0);
                }
                let o = tid as usize * lb + addr as usize;
                Ok(le(&self.local[o..o + len as usize]))
            }
            Space::Param => {
                let p = self.l.params;
                if !self.shared_range(pc, tid, sp, addr, n, p.len())? {
                    return Ok(0);
                }
                Ok(le(&p[addr as usize..addr as usize + len as usize]))
            }
        }
    }

    /// `v`, the `len` ≤ 8 bytes at shared offset `o` a `what` read, with
    /// initcheck applied: bytes never written are a finding with
    /// `shared_initcheck`, else they read as 0xff (compute-sanitizer's
    /// initcheck looks at global memory only; the poison makes a float built
    /// from them NaN wherever it is stored).
    pub(super) fn unwritten_shared(
        &self,
        pc: u32,
        tid: u32,
        o: usize,
        len: usize,
        mut v: u64,
        what: &str,
    ) -> Result<u64, Stop> {
        let written = &self.shared_init[o..o + len];
        if written.iter().all(|b| *b) {
            return Ok(v);
        }
        if self.l.opts.shared_initcheck {
            return Err(self.report(
                FindingKind::Uninitialized,
                pc,
                tid,
                o as u64,
                format!("{len}-byte {what} at offset {o:#x} of bytes never written"),
            ));
        }
        for (i, _) in written.iter().enumerate().filter(|(_, w)| !**w) {
            v |= 0xff << (8 * i);
        }
        Ok(v)
    }

    /// Writes the low `len` ≤ 8 bytes of `v` at a resolved address.
    pub(super) fn write(&mut self, pc: u32, tid: u32, sp: Space, addr: u64, len: u32, v: u64) -> Result<(), Stop> {
        let n = len as u64;
        match sp {
            Space::Global | Space::Const | Space::Generic => {
                let Some((i, off)) = self.global_locate(pc, tid, addr, n)? else {
                    return Ok(());
                };
                let a = &self.l.allocs[i];
                a.store(off, len, v);
                a.set_init(off, n);
                self.l.touch(i, off, n, true);
            }
            Space::Shared => {
                if !self.shared_range(pc, tid, sp, addr, n, self.shared.len())? {
                    return Ok(());
                }
                let bytes = v.to_le_bytes();
                let bytes = &bytes[..len as usize];
                self.race_check(pc, tid, addr, n, Some(bytes))?;
                if self.cl.shadow.is_some() {
                    self.cluster_race(pc, tid, self.cl.rank, addr, n, true);
                }
                self.wgmma_guard_shared_write(pc, tid, addr, n)?;
                let o = addr as usize;
                self.asy.note_generic_write(tid, o, len as usize);
                self.shared[o..o + len as usize].copy_from_slice(bytes);
                self.shared_init[o..o + len as usize].fill(true);
            }
            Space::Local => {
                let lb = self.k.info.local_bytes as usize;
                if !self.shared_range(pc, tid, sp, addr, n, lb)? {
                    return Ok(());
                }
                let o = tid as usize * lb + addr as usize;
                self.local[o..o + len as usize].copy_from_slice(&v.to_le_bytes()[..len as usize]);
            }
            Space::Param => {
                if self.l.opts.memcheck {
                    return Err(self.report(
                        FindingKind::OutOfBounds,
                        pc,
                        tid,
                        addr,
                        "store to kernel parameter space".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Adds one warp request's accounting (accesses gathered in `scratch`).
    fn account(&mut self, sp: Space, store: bool) {
        match sp {
            Space::Global | Space::Const | Space::Generic => {
                let mut sectors = std::mem::take(&mut self.sectors);
                sectors.clear();
                for &a in &self.scratch {
                    let (addr, len) = (a & 0x00ff_ffff_ffff_ffff, a >> 56);
                    for s in (addr >> 5)..=((addr + len.max(1) - 1) >> 5) {
                        sectors.push(s);
                    }
                }
                let n = count_sectors(&mut sectors);
                self.sectors = sectors;
                if store {
                    self.stats.global_store_requests += 1;
                    self.stats.global_store_sectors += n;
                } else {
                    self.stats.global_load_requests += 1;
                    self.stats.global_load_sectors += n;
                }
            }
            Space::Shared => {
                let (waves, ideal) = shared_wavefronts(&self.scratch);
                self.stats.shared_requests += 1;
                self.stats.shared_wavefronts += waves;
                self.stats.shared_bank_conflicts += waves - ideal;
            }
            _ => {}
        }
    }

    fn note_access(&mut self, sp: Space, lane: usize, addr: u64, len: u32) {
        match sp {
            Space::Shared => self.scratch.push((addr & 0xffff_ffff) | (len as u64) << 32 | (lane as u64) << 40),
            _ => self.scratch.push((addr & 0x00ff_ffff_ffff_ffff) | (len as u64) << 56),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn load(
        &mut self,
        w: usize,
        pc: u32,
        exec: u32,
        inst: &Inst,
        space: Space,
        vec: u8,
        cluster: bool,
    ) -> Result<(), Stop> {
        let ty = inst.ty;
        let size = ty.size_bytes();
        let total = size * vec as u32;
        self.scratch.clear();
        let mut req_space = None;
        let mut remote = false;
        // Narrow signed loads sign-extend into the 32-bit register they fill.
        let (store_ty, signed_narrow) = match ty {
            ScalarType::S8 | ScalarType::S16 => (ScalarType::B32, true),
            t => (t, false),
        };
        // Shared reads are race-checked for the whole warp at once, first
        // (a read racing with a write is reported before what it then reads).
        let warp_race = self.l.opts.racecheck;
        let mut addrs = self.vals(w, &inst.s[0], exec);
        let may_be_remote = super::cluster::may_be_remote(space, cluster);
        if may_be_remote {
            self.own_cluster_addresses(space, exec, &mut addrs);
        }
        if warp_race {
            let limit = self.shared.len() as u64;
            let mut shared_reads = [(0usize, 0u64, 0u64); 32];
            let mut n = 0;
            for l in Lanes(exec) {
                let (sp, addr) = resolve(space, addrs[l]);
                if sp == Space::Shared && addr.checked_add(total as u64).is_some_and(|e| e <= limit) {
                    shared_reads[n] = (l, addr, total as u64);
                    n += 1;
                }
            }
            if n > 0 {
                self.race_check_warp_reads(w, pc, &shared_reads[..n]);
            }
        }
        for l in Lanes(exec) {
            let tid = self.tid_of(w, l);
            let (sp, addr) = resolve(space, addrs[l]);
            if may_be_remote && sp == Space::Shared {
                if let Some((rank, off)) = super::cluster::split_cluster_address(addr) {
                    self.misaligned(pc, tid, sp, off, total)?;
                    remote = true;
                    for i in 0..vec as usize {
                        let v = self.remote_read(pc, tid, rank as u32, off + (i as u64 * size as u64), size)?;
                        let v = if signed_narrow { super::arith::sext(v, size * 8) as u64 } else { v };
                        if let Opd::Reg(r) = Self::elem(&inst.d, i) {
                            self.warps[w].regs[*r as usize * 32 + l] =
                                v & super::arith::mask(super::arith::bits_of(store_ty));
                        }
                    }
                    continue;
                }
            }
            req_space.get_or_insert(sp);
            self.misaligned(pc, tid, sp, addr, total)?;
            self.note_access(sp, l, addr, total);
            let race_here = !(warp_race && sp == Space::Shared);
            for i in 0..vec as usize {
                let a = addr.wrapping_add(i as u64 * size as u64);
                let mut v = self.read_checked(pc, tid, sp, a, size, true, race_here)?;
                if signed_narrow {
                    v = super::arith::sext(v, size * 8) as u64;
                }
                if let Opd::Reg(r) = Self::elem(&inst.d, i) {
                    self.warps[w].regs[*r as usize * 32 + l] = v & super::arith::mask(super::arith::bits_of(store_ty));
                }
            }
        }
        if let Some(sp) = req_space {
            self.account(sp, false);
        }
        self.stats.cluster_shared_requests += remote as u64;
        Ok(())
    }

    /// Makes addresses of the executing CTA's own shared memory in the
    /// `.shared::cluster` form plain ones (they are local accesses).
    fn own_cluster_addresses(&self, space: Space, exec: u32, addrs: &mut [u64; 32]) {
        for l in Lanes(exec) {
            let (sp, mut addr) = resolve(space, addrs[l]);
            if sp == Space::Shared && self.remote_target(&mut addr).is_none() {
                addrs[l] = addr + if space == Space::Generic { Space::Shared.window() } else { 0 };
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn store(
        &mut self,
        w: usize,
        pc: u32,
        exec: u32,
        inst: &Inst,
        space: Space,
        vec: u8,
        cluster: bool,
    ) -> Result<(), Stop> {
        let size = inst.ty.size_bytes();
        let total = size * vec as u32;
        self.scratch.clear();
        let mut req_space = None;
        let mut remote = false;
        let mut addrs = self.vals(w, &inst.s[0], exec);
        let may_be_remote = super::cluster::may_be_remote(space, cluster);
        if may_be_remote {
            self.own_cluster_addresses(space, exec, &mut addrs);
        }
        for l in Lanes(exec) {
            let tid = self.tid_of(w, l);
            let (sp, addr) = resolve(space, addrs[l]);
            if may_be_remote && sp == Space::Shared {
                if let Some((rank, off)) = super::cluster::split_cluster_address(addr) {
                    self.misaligned(pc, tid, sp, off, total)?;
                    remote = true;
                    for i in 0..vec as usize {
                        let v = self.val(w, Self::elem(&inst.s[1], i), l);
                        self.remote_write(pc, tid, rank as u32, off + (i as u64 * size as u64), size, v)?;
                    }
                    continue;
                }
            }
            req_space.get_or_insert(sp);
            self.misaligned(pc, tid, sp, addr, total)?;
            self.note_access(sp, l, addr, total);
            for i in 0..vec as usize {
                let v = self.val(w, Self::elem(&inst.s[1], i), l);
                self.write(pc, tid, sp, addr.wrapping_add(i as u64 * size as u64), size, v)?;
            }
        }
        if let Some(sp) = req_space {
            self.account(sp, true);
        }
        self.stats.cluster_shared_requests += remote as u64;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn atomic(
        &mut self,
        w: usize,
        pc: u32,
        exec: u32,
        inst: &Inst,
        space: Space,
        op: AtomOp,
        ret: bool,
    ) -> Result<(), Stop> {
        let ty = inst.ty;
        let size = ty.size_bytes();
        self.scratch.clear();
        let mut req_space = None;
        for l in Lanes(exec) {
            let tid = self.tid_of(w, l);
            let (sp, addr) = resolve(space, self.val(w, &inst.s[0], l));
            req_space.get_or_insert(sp);
            let b = self.val(w, &inst.s[1], l);
            let c = inst.s.get(2).map_or(0, |o| self.val(w, o, l));
            self.misaligned(pc, tid, sp, addr, size)?;
            self.note_access(sp, l, addr, size);
            let old = match sp {
                Space::Global => {
                    let Some((i, off)) = self.global_locate(pc, tid, addr, size as u64)? else {
                        continue;
                    };
                    let a = &self.l.allocs[i];
                    if self.l.opts.initcheck && op != AtomOp::Exch && !a.is_init(off, size as u64) {
                        return Err(self.report(
                            FindingKind::Uninitialized,
                            pc,
                            tid,
                            addr,
                            format!("atomic on global bytes never written (allocation [{:#x}, +{}))", a.base, a.size),
                        ));
                    }
                    let old = a.atomic_rmw(off, size, &mut |old| atom_apply(op, ty, old, b, c));
                    a.set_init(off, size as u64);
                    self.l.touch(i, off, size as u64, false);
                    self.l.touch(i, off, size as u64, true);
                    old
                }
                Space::Shared => {
                    if !self.shared_range(pc, tid, sp, addr, size as u64, self.shared.len())? {
                        continue;
                    }
                    let o = addr as usize;
                    let n = size as usize;
                    // Atomics are ordered among themselves: no racecheck here.
                    self.wgmma_guard_shared_write(pc, tid, addr, size as u64)?;
                    let mut old = le(&self.shared[o..o + n]);
                    if self.l.opts.initcheck && op != AtomOp::Exch {
                        old = self.unwritten_shared(pc, tid, o, n, old, "shared atomic")?;
                    }
                    let new = atom_apply(op, ty, old, b, c);
                    self.shared[o..o + n].copy_from_slice(&new.to_le_bytes()[..n]);
                    self.shared_init[o..o + n].fill(true);
                    old
                }
                _ => {
                    return Err(self.report(
                        FindingKind::OutOfBounds,
                        pc,
                        tid,
                        addr,
                        "atomic on a local or param address".into(),
                    ));
                }
            };
            if ret {
                let d = inst.d.clone();
                self.set(w, &d, l, old, ty);
            }
        }
        if let Some(sp) = req_space {
            self.account(sp, !ret);
        }
        Ok(())
    }

    /// `cp.async`: reads the source now, lands in shared memory at the
    /// `cp.async.wait_*` that covers its group.
    pub(super) fn cp_async(&mut self, w: usize, pc: u32, exec: u32, inst: &Inst, bytes: u8) -> Result<(), Stop> {
        self.scratch.clear();
        let mut global_acc = Vec::new();
        for l in Lanes(exec) {
            let tid = self.tid_of(w, l);
            let (dsp, dst) = resolve(Space::Shared, self.val(w, &inst.s[0], l));
            let (_, src) = resolve(Space::Global, self.val(w, &inst.s[1], l));
            let src_size = inst.s.get(2).map_or(bytes as u64, |o| self.val(w, o, l)).min(bytes as u64);
            self.misaligned(pc, tid, dsp, dst, bytes as u32)?;
            if src_size > 0 {
                // A zero-fill copy (src-size 0) never touches its source.
                self.misaligned(pc, tid, Space::Global, src, bytes as u32)?;
            }
            if !self.shared_range(pc, tid, dsp, dst, bytes as u64, self.shared.len())? {
                continue;
            }
            let mut data = [0u8; 16];
            for (i, b) in data.iter_mut().enumerate().take(src_size as usize) {
                *b = self.read(pc, tid, Space::Global, src.wrapping_add(i as u64), 1)? as u8;
            }
            if src_size > 0 {
                global_acc.push((src & 0x00ff_ffff_ffff_ffff) | src_size << 56);
            }
            self.note_access(Space::Shared, l, dst, bytes as u32);
            if self.l.opts.racecheck {
                for b in dst..dst + bytes as u64 {
                    self.race.set_pending(b as usize, tid, pc);
                }
            }
            let group = self.groups[tid as usize];
            self.pending[tid as usize].push(PendingCopy { tid, group, dst: dst as u32, len: bytes, data, pc });
        }
        if !self.scratch.is_empty() {
            self.account(Space::Shared, true);
        }
        if !global_acc.is_empty() {
            self.scratch = global_acc;
            self.account(Space::Global, false);
        }
        Ok(())
    }

    /// Lands `tid`'s pending copies of groups below `limit`, in issue order.
    pub(super) fn land_copies(&mut self, tid: u32, limit: u32) -> Result<(), Stop> {
        let queue = &mut self.pending[tid as usize];
        let n = queue.iter().take_while(|p| p.group < limit).count();
        if n == 0 {
            return Ok(());
        }
        let landed: Vec<PendingCopy> = queue.drain(..n).collect();
        for p in landed {
            let o = p.dst as usize;
            let len = p.len as usize;
            self.wgmma_guard_shared_write(p.pc, p.tid, o as u64, len as u64)?;
            if self.l.opts.racecheck {
                for b in o..o + len {
                    self.race.clear_pending(b);
                }
                self.race_check(p.pc, p.tid, o as u64, len as u64, Some(&p.data[..len]))?;
            }
            self.shared[o..o + len].copy_from_slice(&p.data[..len]);
            self.shared_init[o..o + len].fill(true);
        }
        Ok(())
    }
}

pub(super) fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| acc << 8 | x as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(lane: u64, addr: u64, len: u64) -> u64 {
        addr | len << 32 | lane << 40
    }

    #[test]
    fn bank_conflicts() {
        let linear: Vec<u64> = (0..32).map(|l| pack(l, l * 4, 4)).collect();
        assert_eq!(shared_wavefronts(&linear), (1, 1));
        let stride2: Vec<u64> = (0..32).map(|l| pack(l, l * 8, 4)).collect();
        assert_eq!(shared_wavefronts(&stride2), (2, 1));
        let broadcast: Vec<u64> = (0..32).map(|l| pack(l, 0, 4)).collect();
        assert_eq!(shared_wavefronts(&broadcast), (1, 1));
        let column: Vec<u64> = (0..32).map(|l| pack(l, l * 128, 4)).collect();
        assert_eq!(shared_wavefronts(&column), (32, 1));
        let v4: Vec<u64> = (0..32).map(|l| pack(l, l * 16, 16)).collect();
        assert_eq!(shared_wavefronts(&v4), (4, 4));
    }

    #[test]
    fn sectors_count_distinct() {
        let mut s = vec![3, 1, 3, 2, 1];
        assert_eq!(count_sectors(&mut s), 3);
    }
}

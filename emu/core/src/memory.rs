//! Device global memory: a set of live allocations in a 64-bit device address
//! space, shared by every CTA of a launch running on several host threads.
//!
//! Contract (relied on by `launch` and `driver`):
//! - Addresses are never reused: each allocation gets fresh, 256-byte aligned
//!   addresses above a non-zero base, so a use after free or a stale pointer
//!   lands outside every live allocation and is caught by memcheck.
//! - Every byte has an init bit (initcheck). Host writes, memsets, copies and
//!   device stores set it; `alloc` leaves it clear.
//! - All methods take `&self` and are safe to call from many threads at once
//!   (kernels on several cores); concurrent device accesses to distinct bytes
//!   never block each other.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Why a host-side memory operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemError {
    /// Not enough capacity left (`cuMemAlloc` → CUDA_ERROR_OUT_OF_MEMORY).
    OutOfMemory { requested: u64, available: u64 },
    /// The address is not the base of a live allocation (`free`).
    NotAnAllocation { addr: u64 },
    /// `[addr, addr+len)` is not inside one live allocation.
    OutOfBounds { addr: u64, len: u64 },
}

impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemError::OutOfMemory { requested, available } => {
                write!(f, "out of device memory: requested {requested} bytes, {available} available")
            }
            MemError::NotAnAllocation { addr } => write!(f, "{addr:#x} is not the base of a live allocation"),
            MemError::OutOfBounds { addr, len } => {
                write!(f, "[{addr:#x}, +{len}) is not inside one live allocation")
            }
        }
    }
}

impl std::error::Error for MemError {}

/// First device address handed out: high, non-zero and far from the generic
/// windows of shared/local/param memory (see `exec::space`).
const FIRST_BASE: u64 = 0x7f00_0000_0000;
/// Every allocation starts on this boundary (as `cuMemAlloc` guarantees).
const ALLOC_ALIGN: u64 = 256;

/// One live allocation. Data is kept in atomic words so that CTAs running on
/// several host threads may touch it concurrently without undefined behaviour;
/// relaxed loads and stores compile to plain moves.
pub(crate) struct Allocation {
    pub(crate) base: u64,
    pub(crate) size: u64,
    /// What it holds, when known (a module's `.global` variable), for reports.
    pub(crate) name: Option<Box<str>>,
    words: Box<[AtomicU64]>,
    /// One byte per data byte: 1 once something wrote it (initcheck).
    init: Box<[AtomicU8]>,
}

fn mask_of(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

impl Allocation {
    fn new(base: u64, size: u64, name: Option<Box<str>>) -> Allocation {
        Allocation { base, size, name, words: zeroed(size.div_ceil(8)), init: zeroed(size) }
    }

    /// "a 1024-byte allocation at 0x..." or "module global `x` (a 4-byte
    /// allocation at 0x...)", for reports.
    fn describe(&self) -> String {
        describe_allocation(self.base, self.size, self.name.as_deref())
    }

    fn load_byte(&self, off: u64) -> u8 {
        let w = self.words[(off / 8) as usize].load(Ordering::Relaxed);
        (w >> ((off % 8) * 8)) as u8
    }

    fn store_byte(&self, off: u64, v: u8) {
        self.store_in_word(off, 1, v as u64);
    }

    /// Stores `size` (≤ 8) bytes that lie inside one word, leaving the other
    /// bytes of the word alone even if another thread stores to them meanwhile.
    fn store_in_word(&self, off: u64, size: u32, v: u64) {
        let word = &self.words[(off / 8) as usize];
        if size == 8 {
            word.store(v, Ordering::Relaxed);
            return;
        }
        let shift = (off % 8) * 8;
        let mask = mask_of(size) << shift;
        let bits = (v << shift) & mask;
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let new = (cur & !mask) | bits;
            match word.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Loads `size` ∈ {1,2,4,8} bytes at offset `off` (little-endian). The
    /// caller checked the range; unaligned offsets are read byte by byte.
    pub(crate) fn load(&self, off: u64, size: u32) -> u64 {
        if off % size as u64 == 0 {
            let w = self.words[(off / 8) as usize].load(Ordering::Relaxed);
            (w >> ((off % 8) * 8)) & mask_of(size)
        } else {
            (0..size as u64).fold(0, |acc, i| acc | (self.load_byte(off + i) as u64) << (8 * i))
        }
    }

    /// Stores the low `size` ∈ {1,2,4,8} bytes of `v` at `off`.
    pub(crate) fn store(&self, off: u64, size: u32, v: u64) {
        if off % size as u64 == 0 {
            self.store_in_word(off, size, v);
        } else {
            for i in 0..size as u64 {
                self.store_byte(off + i, (v >> (8 * i)) as u8);
            }
        }
    }

    /// Atomic read-modify-write of `size` ∈ {2,4,8} aligned bytes: stores
    /// `f(old)` and returns `old`. Really atomic across host threads.
    pub(crate) fn atomic_rmw(&self, off: u64, size: u32, f: &mut dyn FnMut(u64) -> u64) -> u64 {
        let word = &self.words[(off / 8) as usize];
        let shift = (off % 8) * 8;
        let mask = mask_of(size);
        let mut cur = word.load(Ordering::Relaxed);
        loop {
            let old = (cur >> shift) & mask;
            let new = (cur & !(mask << shift)) | ((f(old) & mask) << shift);
            match word.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return old,
                Err(seen) => cur = seen,
            }
        }
    }

    /// Whether every byte of `[off, off+len)` was written.
    pub(crate) fn is_init(&self, off: u64, len: u64) -> bool {
        (off..off + len).all(|i| self.init[i as usize].load(Ordering::Relaxed) != 0)
    }

    pub(crate) fn set_init(&self, off: u64, len: u64) {
        for i in off..off + len {
            let b = &self.init[i as usize];
            // Skip the store when already set: keeps cache lines shared between cores.
            if b.load(Ordering::Relaxed) == 0 {
                b.store(1, Ordering::Relaxed);
            }
        }
    }
}

/// The atomics whose all-zero bit pattern is zero.
///
/// # Safety
/// Implementors must be valid when every byte is zero.
pub(crate) unsafe trait Zeroable {}
// SAFETY: both are plain integers in memory.
unsafe impl Zeroable for AtomicU64 {}
// SAFETY: as above.
unsafe impl Zeroable for AtomicU8 {}

/// `len` zeroed atomics from the allocator's zeroed memory (calloc) rather
/// than written one by one: a large request is then a fresh anonymous
/// mapping whose pages the kernel commits only when first written, so a
/// device allocation of many GiB (and its init bits) costs host memory only
/// where a test touches it (sizes past 2^31 elements, sampled launches).
pub(crate) fn zeroed<A: Zeroable>(len: u64) -> Box<[A]> {
    let len = usize::try_from(len).expect("allocation sizes are checked against isize::MAX");
    let layout = std::alloc::Layout::array::<A>(len).expect("allocation sizes are checked against isize::MAX");
    if layout.size() == 0 {
        return Vec::new().into_boxed_slice();
    }
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<A>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` holds `len` zeroed `A`s, valid when zero (`Zeroable`),
    // allocated by the global allocator with the layout of `[A; len]`,
    // which is what the box frees it with.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }
}

struct State {
    allocs: BTreeMap<u64, Arc<Allocation>>,
    /// Freed allocations, base → (size, name): addresses are never reused,
    /// so an access or a free there is named a use after free or a double
    /// free (a few dozen bytes per allocation ever freed).
    freed: BTreeMap<u64, (u64, Option<Box<str>>)>,
    next_base: u64,
    used: u64,
}

/// The device's global memory.
pub struct GlobalMemory {
    capacity: u64,
    state: RwLock<State>,
}

impl GlobalMemory {
    /// A device with `capacity` bytes of global memory.
    pub fn new(capacity: u64) -> Self {
        GlobalMemory {
            capacity,
            state: RwLock::new(State {
                allocs: BTreeMap::new(),
                freed: BTreeMap::new(),
                next_base: FIRST_BASE,
                used: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic elsewhere cannot leave `State` half-updated (every update is
        // a single insert/remove), so a poisoned lock is still usable.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Total capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes currently allocated (for `cuMemGetInfo`).
    pub fn used(&self) -> u64 {
        self.state().used
    }

    /// Allocates `size` bytes (size 0 is refused by the driver before this).
    pub fn alloc(&self, size: u64) -> Result<u64, MemError> {
        self.alloc_named(size, None)
    }

    /// Allocates `size` bytes for what `name` says (a module's `.global`
    /// variable: "module global `x`"), which reports then name.
    pub fn alloc_named(&self, size: u64, name: Option<&str>) -> Result<u64, MemError> {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let available = self.capacity - st.used;
        if size > available || size > isize::MAX as u64 / 2 {
            return Err(MemError::OutOfMemory { requested: size, available });
        }
        let base = st.next_base;
        // Leave a gap of at least one alignment unit so that running off the
        // end of one allocation never lands in the next one.
        st.next_base = (base + size.max(1)).div_ceil(ALLOC_ALIGN) * ALLOC_ALIGN + ALLOC_ALIGN;
        st.used += size;
        st.allocs.insert(base, Arc::new(Allocation::new(base, size, name.map(Into::into))));
        Ok(base)
    }

    /// Frees the allocation whose base is `addr`.
    pub fn free(&self, addr: u64) -> Result<(), MemError> {
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        match st.allocs.remove(&addr) {
            Some(a) => {
                st.used -= a.size;
                st.freed.insert(a.base, (a.size, a.name.clone()));
                Ok(())
            }
            None => Err(MemError::NotAnAllocation { addr }),
        }
    }

    /// Every live allocation, by base (a launch's view of memory).
    pub(crate) fn snapshot(&self) -> Vec<Arc<Allocation>> {
        self.state().allocs.values().cloned().collect()
    }

    /// The live allocation holding all of `[addr, addr+len)`.
    pub(crate) fn find(&self, addr: u64, len: u64) -> Option<Arc<Allocation>> {
        let st = self.state();
        let (_, a) = st.allocs.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        (end <= a.base + a.size).then(|| a.clone())
    }

    fn find_range(&self, addr: u64, len: u64) -> Result<Arc<Allocation>, MemError> {
        self.find(addr, len).ok_or(MemError::OutOfBounds { addr, len })
    }

    /// The live allocation with the highest base ≤ `addr` (the one an
    /// out-of-bounds access most likely meant), as `(base, size)`.
    pub(crate) fn nearest(&self, addr: u64) -> Option<(u64, u64)> {
        let st = self.state();
        let below = st.allocs.range(..=addr).next_back();
        let above = st.allocs.range(addr..).next();
        match (below, above) {
            (Some((_, b)), Some((_, a))) => {
                let db = addr - (b.base + b.size);
                let da = a.base - addr;
                Some(if db <= da { (b.base, b.size) } else { (a.base, a.size) })
            }
            (Some((_, x)), None) | (None, Some((_, x))) => Some((x.base, x.size)),
            (None, None) => None,
        }
    }

    /// Host → device copy; marks the bytes initialised.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let a = self.find_range(addr, data.len() as u64)?;
        let off = addr - a.base;
        for (i, &b) in data.iter().enumerate() {
            a.store_byte(off + i as u64, b);
        }
        a.set_init(off, data.len() as u64);
        Ok(())
    }

    /// Device → host copy (no initcheck: copying out uninitialised bytes is legal).
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemError> {
        let a = self.find_range(addr, out.len() as u64)?;
        let off = addr - a.base;
        for (i, b) in out.iter_mut().enumerate() {
            *b = a.load_byte(off + i as u64);
        }
        Ok(())
    }

    /// Device → device copy of `len` bytes; the init bits travel with the data.
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), MemError> {
        let s = self.find_range(src, len)?;
        let d = self.find_range(dst, len)?;
        let (so, dof) = (src - s.base, dst - d.base);
        // Through a buffer, so overlapping ranges copy as memmove does.
        let bytes: Vec<(u8, u8)> =
            (0..len).map(|i| (s.load_byte(so + i), s.init[(so + i) as usize].load(Ordering::Relaxed))).collect();
        for (i, (b, init)) in bytes.into_iter().enumerate() {
            d.store_byte(dof + i as u64, b);
            d.init[dof as usize + i].store(init, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Fills `count` elements of `elem_size` (1, 2 or 4) bytes with `value`
    /// (little-endian low bytes), marking them initialised (`cuMemsetD8/D16/D32`).
    pub fn memset(&self, addr: u64, value: u32, elem_size: u32, count: u64) -> Result<(), MemError> {
        if !matches!(elem_size, 1 | 2 | 4) {
            return Err(MemError::OutOfBounds { addr, len: 0 });
        }
        let len = count.checked_mul(elem_size as u64).ok_or(MemError::OutOfBounds { addr, len: u64::MAX })?;
        let a = self.find_range(addr, len)?;
        let off = addr - a.base;
        let bytes = value.to_le_bytes();
        for i in 0..len {
            a.store_byte(off + i, bytes[(i % elem_size as u64) as usize]);
        }
        a.set_init(off, len);
        Ok(())
    }

    /// The live allocation containing `addr`, as `(base, size)`.
    pub fn allocation_containing(&self, addr: u64) -> Option<(u64, u64)> {
        self.find(addr, 1).map(|a| (a.base, a.size))
    }

    /// The live allocation an access at `addr` most likely meant, as
    /// `(base, size)` (for reports of accesses outside every allocation).
    pub fn nearest_allocation(&self, addr: u64) -> Option<(u64, u64)> {
        self.nearest(addr)
    }

    /// Where a `len`-byte access at `addr` that is not inside one live
    /// allocation lies, in compute-sanitizer's words: inside a freed
    /// allocation (use after free), or its distance to the nearest live one
    /// ("4 bytes after the end of a 1024-byte allocation at 0x..."), naming
    /// a module global by its variable.
    pub fn describe_outside(&self, addr: u64, len: u64) -> String {
        let st = self.state();
        let freed = st
            .freed
            .range(..=addr)
            .next_back()
            .filter(|(base, (size, _))| addr < **base + (*size).max(1))
            .map(|(base, (size, name))| {
                format!(
                    "inside {} that was freed (use after free); ",
                    describe_allocation(*base, *size, name.as_deref())
                )
            })
            .unwrap_or_default();
        let below = st.allocs.range(..=addr).next_back().map(|(_, a)| a);
        let above = st.allocs.range(addr.saturating_add(1)..).next().map(|(_, a)| a);
        let nearest = match (below, above) {
            (Some(b), Some(a)) => Some(if addr - (b.base + b.size) <= a.base - addr { b } else { a }),
            (b, a) => b.or(a),
        };
        match nearest {
            Some(a) => format!("{freed}nearest allocation: {}", distance(addr, len, a)),
            None => format!("{freed}no live allocation"),
        }
    }

    /// Why `addr` cannot be freed: never allocated, already freed, or not
    /// the base of the live allocation it lies in.
    pub fn describe_bad_free(&self, addr: u64) -> String {
        if let Some(a) = self.find(addr, 1) {
            return format!("{} bytes inside {}, not its base", addr - a.base, a.describe());
        }
        let st = self.state();
        match st.freed.get(&addr) {
            Some((size, name)) => {
                format!("{} was already freed (double free)", describe_allocation(addr, *size, name.as_deref()))
            }
            None => {
                drop(st);
                format!("never allocated; {}", self.describe_outside(addr, 1))
            }
        }
    }

    /// The first byte of `[addr, addr+len)` nothing has written (initcheck
    /// for host-side readers of device memory, such as the emulated
    /// libraries), or `None` if every byte was written.
    pub fn first_uninitialized(&self, addr: u64, len: u64) -> Result<Option<u64>, MemError> {
        let a = self.find_range(addr, len)?;
        let off = addr - a.base;
        Ok((off..off + len).find(|&i| !a.is_init(i, 1)).map(|i| a.base + i))
    }
}

fn describe_allocation(base: u64, size: u64, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{name} (a {size}-byte allocation at {base:#x})"),
        None => format!("a {size}-byte allocation at {base:#x}"),
    }
}

/// Where a `len`-byte access at `addr` lies relative to allocation `a`, in
/// compute-sanitizer's words.
fn distance(addr: u64, len: u64, a: &Allocation) -> String {
    let (base, end) = (a.base, a.base + a.size);
    let what = a.describe();
    if addr >= end {
        format!("{} bytes after the end of {what}", addr - end)
    } else if addr.saturating_add(len) <= base {
        format!("{} bytes before the start of {what}", base - addr)
    } else if addr < base {
        format!("starts {} bytes before {what}", base - addr)
    } else {
        format!("{} bytes inside {what}, running past its end", addr - base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident memory in bytes (Linux), if known.
    fn resident_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    #[test]
    fn a_huge_allocation_costs_memory_only_where_written() {
        // 6 GiB of device memory (6 GiB of data, 6 GiB of init bits):
        // only the pages written at both ends may become resident.
        const SIZE: u64 = 6 << 30;
        let m = GlobalMemory::new(8 << 30);
        let before = resident_bytes();
        let base = m.alloc(SIZE).unwrap();
        m.write(base, &[1, 2, 3]).unwrap();
        m.write(base + SIZE - 4, &[4, 5, 6, 7]).unwrap();
        let mut tail = [0u8; 6];
        m.read(base + SIZE - 6, &mut tail).unwrap();
        assert_eq!(tail, [0, 0, 4, 5, 6, 7]);
        assert_eq!(m.first_uninitialized(base + SIZE - 6, 6).unwrap(), Some(base + SIZE - 6));
        if let (Some(before), Some(after)) = (before, resident_bytes()) {
            let grown = after.saturating_sub(before);
            assert!(grown < 256 << 20, "a 6 GiB allocation made {grown} bytes resident");
        }
        m.free(base).unwrap();
    }

    #[test]
    fn allocations_are_aligned_fresh_and_bounded() {
        let m = GlobalMemory::new(1 << 20);
        let a = m.alloc(100).unwrap();
        let b = m.alloc(8).unwrap();
        assert_eq!(a % 256, 0);
        assert_eq!(b % 256, 0);
        assert!(a >= FIRST_BASE && b > a + 100);
        assert_eq!(m.used(), 108);
        assert_eq!(m.allocation_containing(a + 99), Some((a, 100)));
        assert_eq!(m.allocation_containing(a + 100), None);
        m.free(a).unwrap();
        assert_eq!(m.free(a), Err(MemError::NotAnAllocation { addr: a }));
        let c = m.alloc(100).unwrap();
        assert_ne!(c, a, "addresses are never reused");
        assert!(matches!(m.alloc(2 << 20), Err(MemError::OutOfMemory { .. })));
    }

    #[test]
    fn write_read_copy_memset_keep_data_and_init_bits() {
        let m = GlobalMemory::new(1 << 20);
        let a = m.alloc(64).unwrap();
        let b = m.alloc(64).unwrap();
        let data: Vec<u8> = (0..13).map(|i| i * 7 + 1).collect();
        m.write(a + 3, &data).unwrap();
        let mut out = vec![0u8; 13];
        m.read(a + 3, &mut out).unwrap();
        assert_eq!(out, data);
        let al = m.find(a, 1).unwrap();
        assert!(al.is_init(3, 13));
        assert!(!al.is_init(2, 2));
        m.copy(b + 1, a + 3, 13).unwrap();
        m.read(b + 1, &mut out).unwrap();
        assert_eq!(out, data);
        assert!(m.find(b, 1).unwrap().is_init(1, 13) && !m.find(b, 1).unwrap().is_init(0, 1));
        m.memset(b + 20, 0xA1B2, 2, 4).unwrap();
        let mut o = [0u8; 8];
        m.read(b + 20, &mut o).unwrap();
        assert_eq!(o, [0xB2, 0xA1, 0xB2, 0xA1, 0xB2, 0xA1, 0xB2, 0xA1]);
        assert_eq!(m.write(a + 60, &[0; 8]), Err(MemError::OutOfBounds { addr: a + 60, len: 8 }));
    }

    #[test]
    fn word_accesses_and_atomics() {
        let m = GlobalMemory::new(1 << 20);
        let a = m.alloc(32).unwrap();
        let al = m.find(a, 32).unwrap();
        al.store(4, 4, 0xdead_beef);
        al.store(2, 2, 0x1234);
        al.store(9, 4, 0x0102_0304); // unaligned: byte path
        assert_eq!(al.load(4, 4), 0xdead_beef);
        assert_eq!(al.load(0, 8), 0xdead_beef_1234_0000);
        assert_eq!(al.load(9, 4), 0x0102_0304);
        let old = al.atomic_rmw(4, 4, &mut |x| x.wrapping_add(1));
        assert_eq!(old, 0xdead_beef);
        assert_eq!(al.load(4, 4), 0xdead_bef0);
        assert_eq!(al.load(2, 2), 0x1234);
    }

    #[test]
    fn atomics_are_atomic_across_threads() {
        let m = GlobalMemory::new(1 << 20);
        let a = m.alloc(8).unwrap();
        let al = m.find(a, 8).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        al.atomic_rmw(4, 4, &mut |x| x + 1);
                        al.atomic_rmw(0, 2, &mut |x| x + 1);
                    }
                });
            }
        });
        assert_eq!(al.load(4, 4), 40_000);
        assert_eq!(al.load(0, 2), 40_000);
    }
}

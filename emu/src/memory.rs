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

/// The device's global memory.
pub struct GlobalMemory {
    // implementation: `launch`'s owner fills this in
}

impl GlobalMemory {
    /// A device with `capacity` bytes of global memory.
    pub fn new(capacity: u64) -> Self {
        let _ = capacity;
        todo!()
    }

    /// Total capacity in bytes.
    pub fn capacity(&self) -> u64 {
        todo!()
    }

    /// Bytes currently allocated (for `cuMemGetInfo`).
    pub fn used(&self) -> u64 {
        todo!()
    }

    /// Allocates `size` bytes (size 0 is refused by the driver before this).
    pub fn alloc(&self, size: u64) -> Result<u64, MemError> {
        let _ = size;
        todo!()
    }

    /// Frees the allocation whose base is `addr`.
    pub fn free(&self, addr: u64) -> Result<(), MemError> {
        let _ = addr;
        todo!()
    }

    /// Host → device copy; marks the bytes initialised.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let _ = (addr, data);
        todo!()
    }

    /// Device → host copy (no initcheck: copying out uninitialised bytes is legal).
    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemError> {
        let _ = (addr, out);
        todo!()
    }

    /// Device → device copy of `len` bytes; the init bits travel with the data.
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), MemError> {
        let _ = (dst, src, len);
        todo!()
    }

    /// Fills `count` elements of `elem_size` (1, 2 or 4) bytes with `value`
    /// (little-endian low bytes), marking them initialised (`cuMemsetD8/D16/D32`).
    pub fn memset(&self, addr: u64, value: u32, elem_size: u32, count: u64) -> Result<(), MemError> {
        let _ = (addr, value, elem_size, count);
        todo!()
    }

    /// The live allocation containing `addr`, as `(base, size)`.
    pub fn allocation_containing(&self, addr: u64) -> Option<(u64, u64)> {
        let _ = addr;
        todo!()
    }
}

//! `CUtensorMap`: the 128-byte opaque descriptor `cuTensorMapEncodeTiled`
//! fills and `cp.async.bulk.tensor` reads. The layout is this emulator's own
//! (the hardware's is undocumented); the driver validates its arguments with
//! the rules `cuda.h` documents, and the executor decodes the same bytes.
//!
//! Layout (little-endian): bytes 0..4 the magic `TMAP`, 4 the version, 5 the
//! rank, 6 the data type, 7 the interleave, 8 the swizzle, 9 the L2
//! promotion, 10 the OOB fill; 16..24 the global address; 24..64 the five
//! global dimensions (u64 each); 64..96 the four strides of dimensions 1..5
//! in bytes; 96..101 the box dimensions minus one; 101..106 the element
//! strides. Everything else is zero.

pub const TENSOR_MAP_BYTES: usize = 128;
const MAGIC: &[u8; 4] = b"TMAP";
const VERSION: u8 = 1;
pub const MAX_RANK: usize = 5;

/// `CUtensorMapSwizzle`'s first four modes (the ones sm_90 has).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swizzle {
    None,
    B32,
    B64,
    B128,
}

impl Swizzle {
    pub fn from_raw(v: u32) -> Option<Swizzle> {
        Some(match v {
            0 => Swizzle::None,
            1 => Swizzle::B32,
            2 => Swizzle::B64,
            3 => Swizzle::B128,
            _ => return None,
        })
    }
    /// The span whose 16-byte chunks are permuted (0 for none).
    pub fn span(self) -> u32 {
        match self {
            Swizzle::None => 0,
            Swizzle::B32 => 32,
            Swizzle::B64 => 64,
            Swizzle::B128 => 128,
        }
    }
    /// The shared-memory byte address a box byte at `addr` lands at: the
    /// 16-byte chunk index (bits 4..) XORed with the 128-byte row index
    /// (bits 7..), over 1, 2 or 3 bits — CUTLASS's `Swizzle<B, 4, 3>` with
    /// B = 1, 2, 3 for 32, 64, 128 bytes. It acts on the address itself,
    /// which is why swizzled destinations need an aligned base.
    pub fn apply(self, addr: u32) -> u32 {
        let bits = match self {
            Swizzle::None => return addr,
            Swizzle::B32 => 1,
            Swizzle::B64 => 2,
            Swizzle::B128 => 3,
        };
        let mask = ((1u32 << bits) - 1) << 7;
        addr ^ ((addr & mask) >> 3)
    }
    /// The alignment the shared destination of a box needs.
    pub fn shared_alignment(self) -> u32 {
        match self {
            Swizzle::B128 => 1024,
            _ => 128,
        }
    }
}

/// `CUtensorMapDataType`: the element size in bytes and whether it is a float.
pub fn data_type_info(v: u32) -> Option<(u32, bool)> {
    Some(match v {
        0 => (1, false),
        1 => (2, false),
        2 | 3 => (4, false),
        4 | 5 => (8, false),
        6 | 9 => (2, true),
        7 | 10..=12 => (4, true),
        8 => (8, true),
        _ => return None,
    })
}

/// A decoded tiled tensor map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMap {
    pub data_type: u32,
    pub rank: u32,
    pub global_address: u64,
    pub global_dim: [u64; MAX_RANK],
    /// Byte strides of dimensions 1..rank (dimension 0 is the element size).
    pub global_strides: [u64; MAX_RANK - 1],
    pub box_dim: [u32; MAX_RANK],
    pub element_strides: [u32; MAX_RANK],
    pub interleave: u32,
    pub swizzle: Swizzle,
    pub l2_promotion: u32,
    /// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NAN_REQUEST_ZERO_FMA`: out-of-bounds elements read as NaN.
    pub oob_nan: bool,
}

/// Why `cuTensorMapEncodeTiled` refuses its arguments (`CUDA_ERROR_INVALID_VALUE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidTensorMap(pub String);

impl std::fmt::Display for InvalidTensorMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid tensor map: {}", self.0)
    }
}

fn bad<T>(why: String) -> Result<T, InvalidTensorMap> {
    Err(InvalidTensorMap(why))
}

impl TensorMap {
    /// The element size in bytes.
    pub fn element_bytes(&self) -> u32 {
        data_type_info(self.data_type).map_or(1, |(b, _)| b)
    }

    /// Elements the box holds in dimension `d` (`ceil(box / element stride)`).
    pub fn box_elements(&self, d: usize) -> u32 {
        self.box_dim[d].div_ceil(if d == 0 { 1 } else { self.element_strides[d].max(1) })
    }

    /// Bytes one box occupies in shared memory (what its `complete_tx` counts).
    pub fn box_bytes(&self) -> u64 {
        (0..self.rank as usize).map(|d| self.box_elements(d) as u64).product::<u64>() * self.element_bytes() as u64
    }

    /// Checks the arguments by the rules of `cuTensorMapEncodeTiled` (the
    /// ones for the packed sub-byte types and the 128B-atom swizzles aside:
    /// those are refused outright).
    #[allow(clippy::too_many_arguments)]
    pub fn tiled(
        data_type: u32,
        rank: u32,
        global_address: u64,
        global_dim: &[u64],
        global_strides: &[u64],
        box_dim: &[u32],
        element_strides: &[u32],
        interleave: u32,
        swizzle: u32,
        l2_promotion: u32,
        oob_fill: u32,
    ) -> Result<TensorMap, InvalidTensorMap> {
        let Some((esize, is_float)) = data_type_info(data_type) else {
            return bad(format!("data type {data_type} is not one the emulator supports"));
        };
        let r = rank as usize;
        if !(1..=MAX_RANK).contains(&r) {
            return bad(format!("rank {rank} outside 1..=5"));
        }
        if interleave > 2 {
            return bad(format!("interleave {interleave} is not a CUtensorMapInterleave"));
        }
        if interleave != 0 && r < 3 {
            return bad("an interleaved layout needs rank 3 or more".into());
        }
        let Some(sw) = Swizzle::from_raw(swizzle) else {
            return bad(format!("swizzle {swizzle} is not supported (only NONE, 32B, 64B, 128B)"));
        };
        if l2_promotion > 3 {
            return bad(format!("L2 promotion {l2_promotion} is not a CUtensorMapL2promotion"));
        }
        if oob_fill > 1 {
            return bad(format!("OOB fill {oob_fill} is not a CUtensorMapFloatOOBfill"));
        }
        if oob_fill == 1 && !is_float {
            return bad("NaN OOB fill needs a floating-point data type".into());
        }
        let addr_align = if interleave == 2 { 32 } else { 16 };
        if global_address % addr_align != 0 {
            return bad(format!("global address {global_address:#x} is not {addr_align}-byte aligned"));
        }
        if global_dim.len() < r || box_dim.len() < r || element_strides.len() < r || global_strides.len() < r - 1 {
            return bad("an array is shorter than the rank".into());
        }
        for (d, &n) in global_dim[..r].iter().enumerate() {
            if n == 0 || n > 1 << 32 {
                return bad(format!("globalDim[{d}] = {n} is outside 1..=2^32"));
            }
        }
        let stride_align = if interleave == 2 { 32 } else { 16 };
        for (d, &s) in global_strides[..r - 1].iter().enumerate() {
            if s % stride_align != 0 || s >= 1 << 40 {
                return bad(format!("globalStrides[{d}] = {s} is not a multiple of {stride_align} below 2^40"));
            }
        }
        for (d, &b) in box_dim[..r].iter().enumerate() {
            if b == 0 || b > 256 {
                return bad(format!("boxDim[{d}] = {b} is outside 1..=256"));
            }
        }
        for (d, &e) in element_strides[..r].iter().enumerate() {
            if e == 0 || e > 8 {
                return bad(format!("elementStrides[{d}] = {e} is outside 1..=8"));
            }
        }
        let inner = box_dim[0] as u64 * esize as u64;
        if interleave == 0 {
            if inner % 16 != 0 {
                return bad(format!("boxDim[0] * element size = {inner} bytes is not a multiple of 16"));
            }
            if sw != Swizzle::None && inner > sw.span() as u64 {
                return bad(format!(
                    "box inner dimension of {inner} bytes exceeds the {}-byte swizzle span",
                    sw.span()
                ));
            }
        }
        if interleave == 2 && sw != Swizzle::B32 {
            return bad("a 32B interleave needs the 32B swizzle".into());
        }
        let mut m = TensorMap {
            data_type,
            rank,
            global_address,
            global_dim: [1; MAX_RANK],
            global_strides: [0; MAX_RANK - 1],
            box_dim: [1; MAX_RANK],
            element_strides: [1; MAX_RANK],
            interleave,
            swizzle: sw,
            l2_promotion,
            oob_nan: oob_fill == 1,
        };
        m.global_dim[..r].copy_from_slice(&global_dim[..r]);
        m.global_strides[..r - 1].copy_from_slice(&global_strides[..r - 1]);
        m.box_dim[..r].copy_from_slice(&box_dim[..r]);
        m.element_strides[..r].copy_from_slice(&element_strides[..r]);
        Ok(m)
    }

    /// The 128 opaque bytes.
    pub fn encode(&self) -> [u8; TENSOR_MAP_BYTES] {
        let mut b = [0u8; TENSOR_MAP_BYTES];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = self.rank as u8;
        b[6] = self.data_type as u8;
        b[7] = self.interleave as u8;
        b[8] = self.swizzle as u8;
        b[9] = self.l2_promotion as u8;
        b[10] = self.oob_nan as u8;
        b[16..24].copy_from_slice(&self.global_address.to_le_bytes());
        for d in 0..MAX_RANK {
            b[24 + 8 * d..32 + 8 * d].copy_from_slice(&self.global_dim[d].to_le_bytes());
            b[96 + d] = (self.box_dim[d] - 1) as u8;
            b[101 + d] = self.element_strides[d] as u8;
        }
        for d in 0..MAX_RANK - 1 {
            b[64 + 8 * d..72 + 8 * d].copy_from_slice(&self.global_strides[d].to_le_bytes());
        }
        b
    }

    /// The map `encode` wrote, or `None` for bytes it did not write.
    pub fn decode(b: &[u8]) -> Option<TensorMap> {
        if b.len() < TENSOR_MAP_BYTES || &b[0..4] != MAGIC || b[4] != VERSION {
            return None;
        }
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let mut m = TensorMap {
            data_type: b[6] as u32,
            rank: b[5] as u32,
            global_address: u64_at(16),
            global_dim: [1; MAX_RANK],
            global_strides: [0; MAX_RANK - 1],
            box_dim: [1; MAX_RANK],
            element_strides: [1; MAX_RANK],
            interleave: b[7] as u32,
            swizzle: Swizzle::from_raw(b[8] as u32)?,
            l2_promotion: b[9] as u32,
            oob_nan: b[10] != 0,
        };
        data_type_info(m.data_type)?;
        if !(1..=MAX_RANK as u32).contains(&m.rank) {
            return None;
        }
        for d in 0..MAX_RANK {
            m.global_dim[d] = u64_at(24 + 8 * d);
            m.box_dim[d] = b[96 + d] as u32 + 1;
            m.element_strides[d] = b[101 + d] as u32;
        }
        for d in 0..MAX_RANK - 1 {
            m.global_strides[d] = u64_at(64 + 8 * d);
        }
        Some(m)
    }

    /// `cuTensorMapReplaceAddress`: the same map over another base.
    pub fn replace_address(bytes: &mut [u8], address: u64) -> Result<(), InvalidTensorMap> {
        let Some(m) = TensorMap::decode(bytes) else {
            return bad("not a tensor map made by cuTensorMapEncodeTiled".into());
        };
        let align = if m.interleave == 2 { 32 } else { 16 };
        if address % align != 0 {
            return bad(format!("global address {address:#x} is not {align}-byte aligned"));
        }
        bytes[16..24].copy_from_slice(&address.to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_2d(swizzle: u32, box0: u32) -> Result<TensorMap, InvalidTensorMap> {
        TensorMap::tiled(9, 2, 0x1000, &[100, 50], &[256], &[box0, 8], &[1, 1], 0, swizzle, 2, 0)
    }

    #[test]
    fn round_trip() {
        let m = map_2d(3, 64).unwrap();
        assert_eq!(TensorMap::decode(&m.encode()), Some(m.clone()));
        assert_eq!(m.box_bytes(), 64 * 8 * 2);
        let mut b = m.encode();
        TensorMap::replace_address(&mut b, 0x2000).unwrap();
        assert_eq!(TensorMap::decode(&b).unwrap().global_address, 0x2000);
        assert!(TensorMap::replace_address(&mut b, 0x2008).is_err());
        assert_eq!(TensorMap::decode(&[0u8; 128]), None);
    }

    #[test]
    fn validation() {
        assert!(map_2d(1, 16).is_ok());
        assert!(map_2d(1, 32).is_err(), "64-byte rows exceed the 32B swizzle");
        assert!(map_2d(0, 12).is_err(), "24-byte rows are not a multiple of 16");
        assert!(map_2d(0, 257).is_err());
        assert!(TensorMap::tiled(9, 2, 0x1008, &[100, 50], &[256], &[8, 8], &[1, 1], 0, 0, 0, 0).is_err());
        assert!(TensorMap::tiled(9, 2, 0x1000, &[100, 50], &[200], &[8, 8], &[1, 1], 0, 0, 0, 0).is_err());
        assert!(TensorMap::tiled(9, 2, 0x1000, &[100, 50], &[1 << 40], &[8, 8], &[1, 1], 0, 0, 0, 0).is_err());
        assert!(TensorMap::tiled(9, 2, 0x1000, &[0, 50], &[256], &[8, 8], &[1, 1], 0, 0, 0, 0).is_err());
        assert!(TensorMap::tiled(9, 6, 0x1000, &[100; 6], &[256; 5], &[8; 6], &[1; 6], 0, 0, 0, 0).is_err());
        assert!(TensorMap::tiled(1, 2, 0x1000, &[100, 50], &[256], &[8, 8], &[1, 1], 0, 0, 0, 1).is_err());
        assert!(TensorMap::tiled(9, 2, 0x1000, &[100, 50], &[256], &[8, 8], &[1, 9], 0, 0, 0, 0).is_err());
    }

    #[test]
    fn swizzle_128b_permutes_chunks_by_row() {
        let s = Swizzle::B128;
        // Row 0 unchanged; row 1's chunk 0 goes to chunk 1; row 7's chunk 0 to chunk 7.
        assert_eq!(s.apply(0x00), 0x00);
        assert_eq!(s.apply(0x80), 0x90);
        assert_eq!(s.apply(0x380 + 0x05), 0x3f5);
        assert_eq!(Swizzle::B32.apply(0x80), 0x90);
        assert_eq!(Swizzle::B32.apply(0x100), 0x100);
        assert_eq!(Swizzle::B64.apply(0x100), 0x120);
    }
}

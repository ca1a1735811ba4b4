//! NVIDIA's fat-binary container, as nvcc embeds it in a host object: the
//! wrapper (`__fatbinwrap_*`, section `.nvFatBinSegment`) that nvcc's
//! generated code hands to `__cudaRegisterFatBinary`, pointing at the fat
//! binary (section `.nv_fatbin`): a header, then entries, each machine code
//! (ELF, for one `sm_XX`) or PTX (for one `compute_XX`). The emulator runs
//! PTX, so this finds the PTX entry for the device and returns its text.
//!
//! The layout (little-endian, as nvcc 13 writes it; it is not documented by
//! NVIDIA, these are the fields read here):
//! - wrapper: `u32 magic = 0x466243b1`, `u32 version = 1`, `u64 data`
//!   (address of the fat binary), `u64 unused`;
//! - fat binary header: `u32 magic = 0xba55ed50`, `u16 version = 1`,
//!   `u16 header_size`, `u64 entries_size` (bytes of entries after the header);
//! - entry header: `u16 kind` (1 PTX, 2 ELF), `u16 version`, `u32 header_size`,
//!   `u64 payload_size` (padded), `u32 compressed_size` at 16, `u32 arch`
//!   at 28 (80 for compute_80), `u64 flags` at 40, `u64 uncompressed_size`
//!   at 56; the payload follows the entry header.
//!
//! nvcc 13 compresses PTX payloads with zstd by default (flag `0x8000`, the
//! payload a zstd frame of `compressed_size` bytes), decoded here; older
//! toolkits' own LZ-style compression (flag `0x2000`) is refused with a
//! message naming nvcc's `--no-compress`.

use std::fmt;
use std::io::Read;

pub const WRAPPER_MAGIC: u32 = 0x466243b1;
pub const FATBIN_MAGIC: u32 = 0xba55ed50;
const FATBIN_HEADER_BYTES: usize = 16;
const ENTRY_HEADER_MIN_BYTES: usize = 64;
const KIND_PTX: u16 = 1;
const KIND_ELF: u16 = 2;
/// The payload is one zstd frame (nvcc 12.8 and later).
const FLAG_COMPRESSED_ZSTD: u64 = 0x8000;
/// The payload uses the older toolkits' own LZ-style compression.
const FLAG_COMPRESSED_OLD: u64 = 0x2000;

/// Why no PTX came out of a fat binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatbinError {
    /// Not a fat binary, or cut short: what was wrong.
    Malformed(String),
    /// Only machine code: the `sm_XX` architectures it holds.
    NoPtx { machine_code: Vec<u32> },
    /// PTX only for architectures newer than the device's.
    NoPtxForDevice { ptx: Vec<u32>, device: u32 },
    /// Compressed with the pre-zstd scheme, which is not decoded here.
    OldCompression,
    /// A zstd payload that did not decode.
    Decompression(String),
}

impl fmt::Display for FatbinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FatbinError::Malformed(what) => write!(f, "not a valid fat binary: {what}"),
            FatbinError::NoPtx { machine_code } => write!(
                f,
                "it holds machine code only ({}) and no PTX, which is what the emulator runs: \
                 compile with a PTX target as well, e.g. `-gencode=arch=compute_80,code=compute_80` \
                 (for a build you do not control, through NVCC_APPEND_FLAGS), or with `-arch=sm_80`, \
                 which embeds compute_80 PTX",
                archs("sm", machine_code)
            ),
            FatbinError::NoPtxForDevice { ptx, device } => {
                write!(f, "its PTX targets {}, all newer than the device's compute_{device}", archs("compute", ptx))
            }
            FatbinError::OldCompression => write!(
                f,
                "its PTX is compressed with the pre-CUDA-12.8 scheme, which the emulator does not decode: \
                 compile with nvcc's `--no-compress`, or with nvcc 12.8 or newer (zstd)"
            ),
            FatbinError::Decompression(why) => write!(f, "its zstd-compressed PTX did not decode: {why}"),
        }
    }
}

/// `sm_80, sm_90`.
fn archs(prefix: &str, archs: &[u32]) -> String {
    archs.iter().map(|arch| format!("{prefix}_{arch}")).collect::<Vec<_>>().join(", ")
}

/// One entry's header fields.
struct Entry<'a> {
    kind: u16,
    arch: u32,
    flags: u64,
    compressed_size: usize,
    uncompressed_size: usize,
    payload: &'a [u8],
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn malformed(what: &str) -> FatbinError {
    FatbinError::Malformed(what.to_string())
}

/// The fat binary's total length (header and entries), from its header.
pub fn fatbin_len(header: &[u8; FATBIN_HEADER_BYTES]) -> Result<usize, FatbinError> {
    if u32_at(header, 0) != Some(FATBIN_MAGIC) {
        return Err(malformed("bad fat binary magic"));
    }
    let header_size = usize::from(u16_at(header, 6).unwrap_or(0));
    let entries = u64_at(header, 8).and_then(|n| usize::try_from(n).ok()).ok_or_else(|| malformed("size"))?;
    header_size.checked_add(entries).filter(|_| header_size >= FATBIN_HEADER_BYTES).ok_or_else(|| malformed("size"))
}

fn entries(fatbin: &[u8]) -> Result<Vec<Entry<'_>>, FatbinError> {
    let header: &[u8; FATBIN_HEADER_BYTES] =
        fatbin.get(..FATBIN_HEADER_BYTES).and_then(|h| h.try_into().ok()).ok_or_else(|| malformed("short header"))?;
    let end = fatbin_len(header)?;
    let fatbin = fatbin.get(..end).ok_or_else(|| malformed("entries run past the fat binary"))?;
    let mut at = usize::from(u16_at(fatbin, 6).unwrap_or(0));
    let mut found = Vec::new();
    while at < end {
        let field = |offset: usize| at + offset;
        let kind = u16_at(fatbin, field(0)).ok_or_else(|| malformed("short entry"))?;
        let header_size = u32_at(fatbin, field(4)).ok_or_else(|| malformed("short entry"))? as usize;
        let payload_size = u64_at(fatbin, field(8)).and_then(|n| usize::try_from(n).ok());
        let payload_size = payload_size.ok_or_else(|| malformed("short entry"))?;
        if header_size < ENTRY_HEADER_MIN_BYTES {
            return Err(malformed("entry header too small"));
        }
        let start = at.checked_add(header_size).ok_or_else(|| malformed("entry size"))?;
        let stop = start.checked_add(payload_size).ok_or_else(|| malformed("entry size"))?;
        let payload = fatbin.get(start..stop).ok_or_else(|| malformed("entry runs past the fat binary"))?;
        found.push(Entry {
            kind,
            arch: u32_at(fatbin, field(28)).unwrap_or(0),
            flags: u64_at(fatbin, field(40)).unwrap_or(0),
            compressed_size: u32_at(fatbin, field(16)).unwrap_or(0) as usize,
            uncompressed_size: u64_at(fatbin, field(56)).unwrap_or(0) as usize,
            payload,
        });
        at = stop;
    }
    Ok(found)
}

/// The PTX for a device of compute capability `device_arch` (80 for 8.0):
/// of the PTX entries, the newest architecture the device runs.
pub fn ptx_for(fatbin: &[u8], device_arch: u32) -> Result<String, FatbinError> {
    let all = entries(fatbin)?;
    let ptx: Vec<&Entry> = all.iter().filter(|e| e.kind == KIND_PTX).collect();
    if ptx.is_empty() {
        let machine_code = all.iter().filter(|e| e.kind == KIND_ELF).map(|e| e.arch).collect();
        return Err(FatbinError::NoPtx { machine_code });
    }
    let entry = ptx.iter().filter(|e| e.arch <= device_arch).max_by_key(|e| e.arch).ok_or_else(|| {
        FatbinError::NoPtxForDevice { ptx: ptx.iter().map(|e| e.arch).collect(), device: device_arch }
    })?;
    let text = payload_bytes(entry)?;
    // The payload is padded with NULs (and nvcc terminates the text with one).
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8(text.to_vec()).map_err(|_| malformed("PTX that is not UTF-8"))
}

fn payload_bytes(entry: &Entry) -> Result<Vec<u8>, FatbinError> {
    if entry.flags & FLAG_COMPRESSED_ZSTD != 0 {
        let frame = entry.payload.get(..entry.compressed_size).ok_or_else(|| malformed("compressed size"))?;
        let mut decoder =
            ruzstd::StreamingDecoder::new(frame).map_err(|e| FatbinError::Decompression(e.to_string()))?;
        let mut text = Vec::with_capacity(entry.uncompressed_size);
        decoder.read_to_end(&mut text).map_err(|e| FatbinError::Decompression(e.to_string()))?;
        Ok(text)
    } else if entry.flags & FLAG_COMPRESSED_OLD != 0 {
        Err(FatbinError::OldCompression)
    } else {
        Ok(entry.payload.to_vec())
    }
}

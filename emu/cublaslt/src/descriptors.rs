//! cuBLASLt's opaque objects — handles, matmul descriptors, matrix layouts,
//! preferences — as small integers disguised as pointers, looked up in one
//! table, so a destroyed or forged one is an error rather than a crash; and
//! their attributes, read and written with the exact sizes cuBLASLt uses.

use ptx_emu_blas::status::{CUBLAS_STATUS_INVALID_VALUE, CUBLAS_STATUS_NOT_INITIALIZED, CUBLAS_STATUS_NOT_SUPPORTED};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// `cublasLtMatmulDesc_t`'s state.
#[derive(Clone, Copy, Debug)]
pub struct MatmulDesc {
    pub compute_type: i32,
    pub scale_type: i32,
    pub pointer_mode: i32,
    pub transa: i32,
    pub transb: i32,
    pub transc: i32,
    pub epilogue: u32,
    pub bias_pointer: u64,
    pub bias_batch_stride: i64,
    /// -1: C's type, cuBLASLt's default.
    pub bias_data_type: i32,
}

impl MatmulDesc {
    pub fn new(compute_type: i32, scale_type: i32) -> MatmulDesc {
        MatmulDesc {
            compute_type,
            scale_type,
            pointer_mode: 0,
            transa: 0,
            transb: 0,
            transc: 0,
            epilogue: 1,
            bias_pointer: 0,
            bias_batch_stride: 0,
            bias_data_type: -1,
        }
    }

    /// The attribute's value as bytes (little-endian, its C type's size),
    /// or `NOT_SUPPORTED` for attributes this emulation does not keep.
    pub fn get(&self, attribute: u32) -> Result<Vec<u8>, u32> {
        Ok(match attribute {
            0 => self.compute_type.to_le_bytes().to_vec(),
            1 => self.scale_type.to_le_bytes().to_vec(),
            2 => self.pointer_mode.to_le_bytes().to_vec(),
            3 => self.transa.to_le_bytes().to_vec(),
            4 => self.transb.to_le_bytes().to_vec(),
            5 => self.transc.to_le_bytes().to_vec(),
            7 => self.epilogue.to_le_bytes().to_vec(),
            8 => self.bias_pointer.to_le_bytes().to_vec(),
            10 => self.bias_batch_stride.to_le_bytes().to_vec(),
            26 => self.bias_data_type.to_le_bytes().to_vec(),
            _ => return Err(CUBLAS_STATUS_NOT_SUPPORTED),
        })
    }

    /// Sets the attribute from `bytes`, which must be exactly its size.
    pub fn set(&mut self, attribute: u32, bytes: &[u8]) -> Result<(), u32> {
        let expected = self.get(attribute)?.len();
        if bytes.len() != expected {
            return Err(CUBLAS_STATUS_INVALID_VALUE);
        }
        let i32_value = || i32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
        let i64_value = || i64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
        match attribute {
            0 => self.compute_type = i32_value(),
            1 => self.scale_type = i32_value(),
            2 => self.pointer_mode = i32_value(),
            3 => self.transa = i32_value(),
            4 => self.transb = i32_value(),
            5 => self.transc = i32_value(),
            7 => self.epilogue = i32_value() as u32,
            8 => self.bias_pointer = i64_value() as u64,
            10 => self.bias_batch_stride = i64_value(),
            _ => self.bias_data_type = i32_value(),
        }
        Ok(())
    }
}

/// `cublasLtMatrixLayout_t`'s state.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub data_type: i32,
    /// `CUBLASLT_ORDER_COL` (0) is the only order emulated.
    pub order: i32,
    pub rows: u64,
    pub cols: u64,
    pub ld: i64,
    pub batch_count: i32,
    pub batch_stride: i64,
}

impl Layout {
    pub fn new(data_type: i32, rows: u64, cols: u64, ld: i64) -> Layout {
        Layout { data_type, order: 0, rows, cols, ld, batch_count: 1, batch_stride: 0 }
    }

    pub fn get(&self, attribute: u32) -> Result<Vec<u8>, u32> {
        Ok(match attribute {
            0 => (self.data_type as u32).to_le_bytes().to_vec(),
            1 => self.order.to_le_bytes().to_vec(),
            2 => self.rows.to_le_bytes().to_vec(),
            3 => self.cols.to_le_bytes().to_vec(),
            4 => self.ld.to_le_bytes().to_vec(),
            5 => self.batch_count.to_le_bytes().to_vec(),
            6 => self.batch_stride.to_le_bytes().to_vec(),
            _ => return Err(CUBLAS_STATUS_NOT_SUPPORTED),
        })
    }

    pub fn set(&mut self, attribute: u32, bytes: &[u8]) -> Result<(), u32> {
        if bytes.len() != self.get(attribute)?.len() {
            return Err(CUBLAS_STATUS_INVALID_VALUE);
        }
        let i32_value = || i32::from_le_bytes(bytes[..4].try_into().unwrap_or_default());
        let i64_value = || i64::from_le_bytes(bytes[..8].try_into().unwrap_or_default());
        match attribute {
            0 => self.data_type = i32_value(),
            1 => self.order = i32_value(),
            2 => self.rows = i64_value() as u64,
            3 => self.cols = i64_value() as u64,
            4 => self.ld = i64_value(),
            5 => self.batch_count = i32_value(),
            _ => self.batch_stride = i64_value(),
        }
        Ok(())
    }
}

/// `cublasLtMatmulPreference_t`: its attributes are accepted with their
/// sizes and kept; the one algorithm here needs no workspace, so none of
/// them changes the answer.
#[derive(Clone, Debug, Default)]
pub struct Preference {
    pub values: HashMap<u32, Vec<u8>>,
}

impl Preference {
    /// The size of each attribute cuBLASLt 13.0 documents.
    pub fn size_of(attribute: u32) -> Result<usize, u32> {
        match attribute {
            0 | 3 | 5..=8 | 9 => Ok(4),
            1 | 12 => Ok(8),
            _ => Err(CUBLAS_STATUS_INVALID_VALUE),
        }
    }
}

/// One of the objects.
#[derive(Clone, Debug)]
pub enum Object {
    Handle,
    Desc(MatmulDesc),
    Layout(Layout),
    Preference(Preference),
}

#[derive(Default)]
struct Table {
    next: usize,
    objects: HashMap<usize, Object>,
}

fn table() -> MutexGuard<'static, Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn create(object: Object) -> usize {
    let mut table = table();
    table.next += 0x10;
    let key = 0x1000 + table.next;
    table.objects.insert(key, object);
    key
}

/// Removes the object if it is of the kind `is_kind` accepts.
pub fn destroy(key: usize, is_kind: fn(&Object) -> bool, missing: u32) -> Result<(), u32> {
    let mut table = table();
    match table.objects.get(&key) {
        Some(object) if is_kind(object) => {
            table.objects.remove(&key);
            Ok(())
        }
        _ => Err(missing),
    }
}

pub fn handle(key: usize) -> Result<(), u32> {
    match table().objects.get(&key) {
        Some(Object::Handle) => Ok(()),
        _ => Err(CUBLAS_STATUS_NOT_INITIALIZED),
    }
}

pub fn with_desc<T>(key: usize, f: impl FnOnce(&mut MatmulDesc) -> Result<T, u32>) -> Result<T, u32> {
    match table().objects.get_mut(&key) {
        Some(Object::Desc(desc)) => f(desc),
        _ => Err(CUBLAS_STATUS_INVALID_VALUE),
    }
}

pub fn with_layout<T>(key: usize, f: impl FnOnce(&mut Layout) -> Result<T, u32>) -> Result<T, u32> {
    match table().objects.get_mut(&key) {
        Some(Object::Layout(layout)) => f(layout),
        _ => Err(CUBLAS_STATUS_INVALID_VALUE),
    }
}

pub fn with_preference<T>(key: usize, f: impl FnOnce(&mut Preference) -> Result<T, u32>) -> Result<T, u32> {
    match table().objects.get_mut(&key) {
        Some(Object::Preference(preference)) => f(preference),
        _ => Err(CUBLAS_STATUS_INVALID_VALUE),
    }
}

//! `cublasHandle_t`: small non-zero integers disguised as pointers, looked
//! up in a table, so a destroyed or forged handle is
//! `CUBLAS_STATUS_NOT_INITIALIZED` rather than a crash.

use ptx_emu_blas::status::CUBLAS_STATUS_NOT_INITIALIZED;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// What a handle holds. The workspace and math mode are kept and reported
/// back; the CPU computation needs neither.
#[derive(Clone, Copy, Debug, Default)]
pub struct Settings {
    /// `CUstream` as an integer (0: the legacy default stream).
    pub stream: usize,
    pub workspace: (u64, usize),
    /// `CUBLAS_POINTER_MODE_HOST` (0) or `_DEVICE` (1).
    pub pointer_mode: i32,
    pub math_mode: i32,
}

#[derive(Default)]
struct Table {
    next: usize,
    handles: HashMap<usize, Settings>,
}

fn table() -> MutexGuard<'static, Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    // The table stays consistent across a panic (single inserts/removes).
    TABLE.get_or_init(Mutex::default).lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A new handle with the defaults: the legacy stream, host pointer mode,
/// default math.
pub fn create() -> usize {
    let mut table = table();
    table.next += 0x10;
    let handle = 0x1000 + table.next;
    table.handles.insert(handle, Settings::default());
    handle
}

pub fn destroy(handle: usize) -> Result<(), u32> {
    table().handles.remove(&handle).map(|_| ()).ok_or(CUBLAS_STATUS_NOT_INITIALIZED)
}

pub fn settings(handle: usize) -> Result<Settings, u32> {
    table().handles.get(&handle).copied().ok_or(CUBLAS_STATUS_NOT_INITIALIZED)
}

pub fn update(handle: usize, change: impl FnOnce(&mut Settings)) -> Result<(), u32> {
    change(table().handles.get_mut(&handle).ok_or(CUBLAS_STATUS_NOT_INITIALIZED)?);
    Ok(())
}
